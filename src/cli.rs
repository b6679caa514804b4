//! The command line, on top of everything: clap definitions, size parsing,
//! and the checks that turn raw arguments into the layers' own plain
//! settings (`serve::Config`, the clients' arguments) before anything
//! touches the system.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::engine::generator::Rounds;
use crate::engine::seeding::{Key, Seed, SourceSpec};
use crate::error::Error;
use crate::serve::config::{
    Bits, Config, DEFAULT_FIFO, DEFAULT_MOUNT, MAX_CHUNK_SIZE, MAX_QUEUE_CAPACITY, MAX_THREADS,
    TransportChoice, default_generators,
};
use crate::sys::trust::{self, Untrusted};
use crate::units::{format_size, parse_duration, parse_interval, parse_size};

/// A virtual entropy device: fresh ChaCha20 random bytes through a FUSE file
/// and a named pipe.
#[derive(Debug, Parser)]
#[command(
    name = "pilfered",
    version,
    propagate_version = true,
    max_term_width = 80
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Log more (repeat for more detail); RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true, help_heading = "Logging")]
    pub verbose: u8,

    /// Log less (repeat to silence warnings too).
    #[arg(short, long, action = ArgAction::Count, global = true, help_heading = "Logging")]
    pub quiet: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the device in the foreground until SIGINT, SIGTERM or SIGHUP.
    ///
    /// Started by systemd with a socket unit (ListenFIFO=, as
    /// pilfered.socket has it), it serves the FIFO systemd passes
    /// (LISTEN_FDS), which must be the one at --fifo, and never removes it,
    /// so that readers holding it survive restarts; it tells systemd it is
    /// ready (READY=1, for Type=notify) once the file and the FIFO serve.
    Serve(ServeArgs),
    /// Roll dice like 3d6, d20 or 2d20-1 with random bytes from the device.
    ///
    /// Prints one line per expression: the rolls, then " = " and their sum,
    /// like "4 1 6 = 11" for 3d6; a modifier is shown before the sum, like
    /// "4 1 6 +2 = 13" for 3d6+2. Every die is fair: rejection sampling, no
    /// modulo bias.
    Roll(RollArgs),
    /// Print random 64-bit nonces from the device, one per line in decimal.
    Nonce(NonceArgs),
    /// Show a running daemon's throughput, queue fill and uptime.
    Status(StatusArgs),
}

/// Runs the command `cli` parsed; `serve` logs its throughput every
/// `report_every` if given (`-v`).
pub fn run(cli: Cli, report_every: Option<Duration>) -> Result<(), Error> {
    use crate::client::{status, tools};
    match cli.command {
        Command::Serve(args) => args.validate().and_then(|mut cfg| {
            cfg.report_every = report_every;
            crate::serve::serve(&cfg)
        }),
        Command::Roll(args) => tools::roll(&args.exprs, args.source.from.as_deref()),
        Command::Nonce(args) => tools::nonce(args.count, args.source.from.as_deref()),
        Command::Status(args) => status::run(&args.mount, args.interval),
    }
}

/// The benchmarks' null FUSE server, the ceiling of pilfered's FUSE reads:
/// the daemon itself serving zeros from `MOUNT/bits`, with no generator and
/// no FIFO, over `transport` (as `--fuse-transport` takes it) with
/// `threads` `/dev/fuse` threads, until SIGINT or SIGTERM.
pub fn null_server(mount: &std::path::Path, transport: &str, threads: u16) -> Result<(), Error> {
    use clap::ValueEnum;
    let choice = FuseTransport::from_str(transport, false)
        .map_err(|e| Error::usage(format!("transport {transport}: {e}")))?;
    let threads = parse_threads(&threads.to_string()).map_err(Error::usage)?;
    crate::serve::serve(&Config::null_server(mount, choice.into(), threads.into()))
}

/// `--fuse-transport`, as clap lists it (`serve::config::TransportChoice`
/// is what the daemon is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FuseTransport {
    /// io_uring if the kernel offers it, else /dev/fuse.
    Auto,
    /// FUSE over io_uring, or refuse to start.
    IoUring,
    /// /dev/fuse.
    Legacy,
}

impl From<FuseTransport> for TransportChoice {
    fn from(t: FuseTransport) -> Self {
        match t {
            FuseTransport::Auto => TransportChoice::Auto,
            FuseTransport::IoUring => TransportChoice::IoUring,
            FuseTransport::Legacy => TransportChoice::Legacy,
        }
    }
}

/// Options of `pilfered serve`. Its `Debug` shows none of them: `--seed`
/// is key material.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Directory to mount the FUSE file system on (created if missing); random
    /// bytes are read from DIR/bits.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MOUNT)]
    pub mount: PathBuf,

    /// Named pipe to serve random bytes through (created with mode 0600 if
    /// missing, reused if it is already a FIFO).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_FIFO)]
    pub fifo: PathBuf,

    /// Serve only the named pipe, without mounting anything.
    #[arg(long, conflicts_with = "no_fifo")]
    pub no_fuse: bool,

    /// Serve only the FUSE file, without a named pipe.
    #[arg(long)]
    pub no_fifo: bool,

    /// Mount even on a directory that is not empty, hiding its files until
    /// the daemon stops (libfuse's old '-o nonempty'). Never below /proc,
    /// /sys or /dev.
    #[arg(long, conflicts_with = "no_fuse")]
    pub nonempty: bool,

    /// Size of each chunk of random bytes the generator produces (a multiple
    /// of 64 bytes).
    #[arg(long, value_name = "SIZE", default_value = "4K", value_parser = parse_size, allow_hyphen_values = true)]
    pub chunk_size: u64,

    /// Most random bytes kept ready in memory.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size, allow_hyphen_values = true)]
    pub queue_capacity: u64,

    /// Pipe buffer size to ask for with F_SETPIPE_SZ [default: the system's
    /// /proc/sys/fs/pipe-max-size].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
    pub pipe_size: Option<u64>,

    /// Mode of a FIFO we create (octal), e.g. 0644 to let others read. Never
    /// writable by group or others: they could inject chosen bytes. Given
    /// explicitly, it is also applied to a reused FIFO [default: 0600].
    #[arg(long, value_name = "OCTAL", value_parser = parse_fifo_mode, allow_hyphen_values = true)]
    pub fifo_mode: Option<u32>,

    /// Let every user read the FUSE file (mount option allow_other). A normal
    /// user needs 'user_allow_other' in /etc/fuse.conf for this.
    #[arg(long)]
    pub allow_other: bool,

    /// Let the members of group NAME read the device, and nobody else: the
    /// FIFO becomes owner:NAME 0640 (unless --fifo-mode says otherwise) and
    /// the FUSE files owner:NAME 0440, which the kernel enforces (the mount
    /// gets allow_other, so a normal user needs 'user_allow_other' in
    /// /etc/fuse.conf, and must be a member of NAME).
    #[arg(long, value_name = "NAME", conflicts_with = "allow_other")]
    pub group: Option<String>,

    /// Reseed each generator from the OS (and any --source) this often:
    /// seconds, or with an s, m or h suffix.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub reseed_interval: Duration,

    /// Also reseed each generator after it has produced this many bytes.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size, allow_hyphen_values = true)]
    pub reseed_bytes: u64,

    /// Mix an extra entropy source into every key: rdseed (the CPU
    /// instruction), hwrng (/dev/hwrng), or a path to a file or FIFO.
    /// Repeatable. A source that fails its health test is dropped.
    #[arg(long, value_name = "NAME", value_parser = SourceSpec::parse)]
    pub source: Vec<SourceSpec>,

    /// Lock the daemon's memory (queue, keys) so it is never swapped out.
    /// Needs a locked-memory limit ('ulimit -l') of what the daemon
    /// estimates it locks (a refusal says how much), or CAP_IPC_LOCK.
    #[arg(long)]
    pub mlock: bool,

    /// Generator threads (1 to 64), each an independent ChaCha instance keyed
    /// from the OS [default: half the CPUs, at least 1; 1 with --seed].
    #[arg(long, value_name = "N", value_parser = parse_threads, allow_hyphen_values = true)]
    pub generators: Option<u16>,

    /// How the kernel hands FUSE requests over: io-uring (FUSE over
    /// io_uring, Linux 6.14+ with /sys/module/fuse/parameters/enable_uring
    /// on; faster for small reads, see docs/PERFORMANCE.md), legacy
    /// (/dev/fuse), or auto: io-uring where the kernel offers it, else
    /// legacy with a line saying why.
    #[arg(long, value_name = "TRANSPORT", default_value = "auto")]
    fuse_transport: FuseTransport,

    /// Threads reading /dev/fuse when the FUSE file is served over it
    /// (1 to 64; over io_uring there are two threads per CPU instead, and
    /// one for the few requests that still come through /dev/fuse).
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_threads, allow_hyphen_values = true)]
    pub fuse_threads: u16,

    /// ChaCha rounds. 20 is the default and the conservative choice; 12 (what
    /// rand's StdRng uses) and 8 trade security margin for speed.
    #[arg(long, value_name = "N", default_value = "20", value_parser = rounds_parser(), allow_hyphen_values = true)]
    pub rounds: Rounds,

    /// Use this 256-bit ChaCha20 key (64 hex digits) instead of one from the
    /// OS: the output becomes the predictable RFC 8439 keystream of KEY (nonce
    /// 0, counter 0). For tests and reproducibility only; needs --no-fuse or
    /// --no-fifo so that one reader gets the whole stream. Every user can read
    /// it in /proc/PID/cmdline: prefer --seed-file.
    #[arg(long, value_name = "KEY")]
    pub seed: Option<String>,

    /// Take over the mount and the FIFO of the daemon serving these very
    /// paths (same --mount and --fifo), as window managers' --replace does:
    /// it answers what it holds, hands both over and exits; readers never
    /// notice. With no daemon to replace, start as usual.
    #[arg(long, conflicts_with_all = ["seed", "seed_file"])]
    pub replace: bool,

    /// Like --seed, but read KEY (64 hex digits and an optional newline) from
    /// PATH, or from standard input with -. A file or FIFO must be readable by
    /// its owner only (chmod 600); a FIFO must deliver the key within 10 s.
    #[arg(long, value_name = "PATH", conflicts_with = "seed")]
    pub seed_file: Option<PathBuf>,
}

/// Options of `pilfered status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Mount point of the daemon to report on (the directory holding bits
    /// and stats).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MOUNT)]
    pub mount: PathBuf,

    /// Seconds between the two samples that the current rates are measured
    /// over; 0 takes one sample and shows only averages since start.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval, allow_negative_numbers = true)]
    pub interval: Duration,
}

/// Where `roll` and `nonce` read random bytes from.
#[derive(Debug, Args)]
pub(crate) struct SourceArgs {
    /// Read random bytes from PATH: the device's FUSE file or FIFO (or any
    /// file) [default: /mnt/pilfered/bits if it can be opened, else the FIFO
    /// /tmp/pilferedbits].
    #[arg(long, value_name = "PATH")]
    pub from: Option<PathBuf>,
}

/// Arguments of `pilfered roll`.
#[derive(Debug, Args)]
pub(crate) struct RollArgs {
    /// Dice in NdS notation: N dice (default 1, at most 10000000) of S sides
    /// (at most 4294967296), like 3d6, d20 or 100d100, with an optional +M or
    /// -M added to the sum (M at most 1000000000), like 3d6+2 or 2d20-1.
    #[arg(value_name = "EXPR", required = true)]
    pub exprs: Vec<String>,

    #[command(flatten)]
    pub source: SourceArgs,
}

/// Arguments of `pilfered nonce`.
#[derive(Debug, Args)]
pub(crate) struct NonceArgs {
    /// How many nonces to print (at least 1).
    #[arg(short = 'n', long = "count", value_name = "COUNT", default_value_t = 1,
          value_parser = parse_count, allow_hyphen_values = true)]
    pub count: u64,

    #[command(flatten)]
    pub source: SourceArgs,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServeArgs { .. }")
    }
}

impl ServeArgs {
    /// Checks the values against each other; touches nothing on disk.
    pub(crate) fn validate(self) -> Result<Config, Error> {
        self.check_sizes()?;
        // Which option seeds, for the messages; --seed and --seed-file
        // conflict, so at most one is given.
        let seeded_by = match (&self.seed, &self.seed_file) {
            (_, Some(_)) => Some("--seed-file"),
            (Some(_), None) => Some("--seed"),
            (None, None) => None,
        };
        let key = self.seed.as_deref().map(parse_seed).transpose()?;
        if let Some(opt) = seeded_by
            && !self.no_fuse
            && !self.no_fifo
        {
            return Err(Error::usage(format!(
                "{opt} needs --no-fuse or --no-fifo: one reproducible keystream cannot be split between two interfaces"
            )));
        }
        let generators = match (self.generators, seeded_by) {
            (Some(n), Some(opt)) if n > 1 => {
                return Err(Error::usage(format!(
                    "--generators {n}: {opt} needs a single generator to keep its keystream in order"
                )));
            }
            (Some(n), _) => n as usize,
            (None, Some(_)) => 1,
            (None, None) => default_generators(),
        };
        let seed = match (key, self.seed_file) {
            (Some(key), _) => Some(Seed::Argv(key)),
            (None, Some(path)) => Some(Seed::File(path)),
            (None, None) => None,
        };
        Ok(Config {
            mount: (!self.no_fuse).then_some(self.mount),
            nonempty: self.nonempty,
            fifo: (!self.no_fifo).then_some(self.fifo),
            chunk_size: in_memory("--chunk-size", self.chunk_size)?,
            queue_capacity: in_memory("--queue-capacity", self.queue_capacity)?,
            pipe_size: self
                .pipe_size
                .map(|s| usize::try_from(s).unwrap_or(usize::MAX)),
            seed,
            generators,
            fuse_transport: self.fuse_transport.into(),
            fuse_threads: self.fuse_threads as usize,
            rounds: self.rounds,
            fifo_mode: self.fifo_mode,
            allow_other: self.allow_other || self.group.is_some(),
            group: self.group,
            reseed_interval: self.reseed_interval,
            reseed_bytes: self.reseed_bytes,
            sources: self.source,
            mlock: self.mlock,
            report_every: None,
            bits: Bits::Random,
            replace: self.replace,
        })
    }

    /// Chunk and queue sizes, against their limits and each other.
    fn check_sizes(&self) -> Result<(), Error> {
        if !(64..=MAX_CHUNK_SIZE).contains(&self.chunk_size) || !self.chunk_size.is_multiple_of(64)
        {
            return Err(Error::usage(format!(
                "--chunk-size {}: must be a multiple of 64 bytes (one ChaCha block) between 64 and {}",
                format_size(self.chunk_size),
                format_size(MAX_CHUNK_SIZE)
            )));
        }
        if self.queue_capacity > MAX_QUEUE_CAPACITY {
            return Err(Error::usage(format!(
                "--queue-capacity {}: must be at most {}",
                format_size(self.queue_capacity),
                format_size(MAX_QUEUE_CAPACITY)
            )));
        }
        if self.chunk_size > self.queue_capacity {
            return Err(Error::usage(format!(
                "--chunk-size {} is larger than --queue-capacity {}: the queue must hold at least one chunk",
                format_size(self.chunk_size),
                format_size(self.queue_capacity)
            )));
        }
        Ok(())
    }
}

/// A size given as `option` as a byte count in memory; only a 32-bit
/// machine can refuse one the limits let through.
fn in_memory(option: &str, size: u64) -> Result<usize, Error> {
    usize::try_from(size).map_err(|_| {
        Error::usage(format!(
            "{option} {}: larger than this machine's memory",
            format_size(size)
        ))
    })
}

/// `--rounds`: one of [`Rounds::ALL`] by its count, with clap listing them
/// (the engine itself knows nothing of clap).
fn rounds_parser() -> impl clap::builder::TypedValueParser<Value = Rounds> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(Rounds::ALL.map(|r| r.count().to_string())).map(|s| {
        Rounds::ALL
            .into_iter()
            .find(|r| r.count().to_string() == s)
            .expect("one of the possible values")
    })
}

/// Parses a thread count, from 1 to [`MAX_THREADS`].
fn parse_threads(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {MAX_THREADS}")),
    }
}

/// Parses `nonce --count`: a whole number, at least 1.
fn parse_count(s: &str) -> Result<u64, String> {
    use std::num::IntErrorKind;
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        Err(e) if e.kind() == &IntErrorKind::PosOverflow => {
            Err(format!("too large: at most {}", u64::MAX))
        }
        _ => Err("expected a whole number of at least 1".into()),
    }
}

/// Parses a FIFO mode in octal (`0644`, `600`). The owner must be able to
/// read and write; group and others may at most read.
pub(crate) fn parse_fifo_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or("expected an octal mode such as 0600 or 0644")?;
    if let Err(Untrusted::Mode(_)) = trust::writers(0, mode, 0) {
        return Err(format!(
            "{mode:04o} lets other users write into the FIFO and inject chosen bytes; give them read access at most (e.g. 0644)"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!("{mode:04o}: the owner needs read and write (0600)"));
    }
    Ok(mode)
}

/// Parses `--seed`. The message never repeats the value: it is key material.
fn parse_seed(s: &str) -> Result<Key, Error> {
    let bad =
        |what: String| Error::usage(format!("--seed: {what}; expected exactly 64 hex digits"));
    if s.len() != 64 {
        return Err(bad(format!("got {} characters", s.chars().count())));
    }
    Key::from_hex(s.as_bytes()).ok_or_else(|| bad("not a hex digit in the value".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_modes() {
        assert_eq!(parse_fifo_mode("0644"), Ok(0o644));
        assert_eq!(parse_fifo_mode("600"), Ok(0o600));
        assert_eq!(parse_fifo_mode("0640"), Ok(0o640));
        assert!(
            parse_fifo_mode("0666")
                .unwrap_err()
                .contains("inject chosen bytes")
        );
        assert!(
            parse_fifo_mode("0620")
                .unwrap_err()
                .contains("inject chosen bytes")
        );
        assert!(
            parse_fifo_mode("0400")
                .unwrap_err()
                .contains("owner needs read and write")
        );
        assert!(parse_fifo_mode("0999").unwrap_err().contains("octal"));
        assert!(parse_fifo_mode("01644").unwrap_err().contains("octal"));
        assert!(parse_fifo_mode("rw").unwrap_err().contains("octal"));
    }

    #[test]
    fn seed_parsing_never_echoes_the_value() {
        let good = "00".repeat(31) + "ff";
        assert_eq!(parse_seed(&good).unwrap().as_bytes()[31], 0xff);
        let short = "abc123";
        let e = parse_seed(short).unwrap_err();
        assert_eq!(
            e,
            Error::usage("--seed: got 6 characters; expected exactly 64 hex digits")
        );
        let bad = "zz".repeat(32);
        let e = parse_seed(&bad).unwrap_err();
        assert!(!e.to_string().contains("zz"));
    }

    fn serve(args: &[&str]) -> Result<Config, Error> {
        let mut argv = vec!["pilfered", "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("clap accepts");
        let Command::Serve(a) = cli.command else {
            unreachable!("parsed as serve")
        };
        a.validate()
    }

    #[test]
    fn defaults() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.mount, Some(PathBuf::from("/mnt/pilfered")));
        assert_eq!(c.fifo, Some(PathBuf::from("/tmp/pilferedbits")));
        assert_eq!(c.chunk_size, 4096);
        assert_eq!(c.queue_capacity, 16 << 20);
        assert_eq!(c.pipe_size, None);
        assert!(c.seed.is_none());
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.generators, (cpus / 2).max(1));
        assert_eq!(c.fuse_threads, 2);
        assert_eq!(c.fuse_transport, TransportChoice::Auto);
        assert_eq!(c.rounds, Rounds::R20);
        assert_eq!(c.fifo_mode, None);
        assert!(!c.allow_other && !c.mlock);
        assert_eq!(c.group, None);
        assert_eq!(c.reseed_interval, Duration::from_secs(60));
        assert_eq!(c.reseed_bytes, 1 << 30);
        assert!(c.sources.is_empty());
    }

    #[test]
    fn cross_checks() {
        assert_eq!(
            serve(&["--chunk-size", "1M", "--queue-capacity", "64K"]).unwrap_err(),
            Error::usage(
                "--chunk-size 1M is larger than --queue-capacity 64K: the queue must hold at least one chunk"
            )
        );
        assert_eq!(
            serve(&["--chunk-size", "100"]).unwrap_err(),
            Error::usage(
                "--chunk-size 100: must be a multiple of 64 bytes (one ChaCha block) between 64 and 16M"
            )
        );
        assert!(serve(&["--chunk-size", "32M"]).is_err());
        // The value as typed, not in bytes.
        assert_eq!(
            serve(&["--queue-capacity", "5G"]).unwrap_err(),
            Error::usage("--queue-capacity 5G: must be at most 4G")
        );
        assert_eq!(parse_threads("64"), Ok(64));
        for bad in ["0", "65", "-1", "two"] {
            assert_eq!(
                parse_threads(bad),
                Err("expected a whole number from 1 to 64".into()),
                "{bad}"
            );
        }
        let seed = "00".repeat(32);
        assert!(matches!(
            serve(&["--seed", &seed]).unwrap_err(),
            Error::Usage(m) if m.starts_with("--seed needs --no-fuse or --no-fifo")
        ));
        let seeded = serve(&["--seed", &seed, "--no-fifo", "--rounds", "12"]).unwrap();
        assert_eq!((seeded.generators, seeded.rounds), (1, Rounds::R12));
        assert!(matches!(
            serve(&["--seed", &seed, "--no-fifo", "--generators", "2"]).unwrap_err(),
            Error::Usage(m) if m == "--generators 2: --seed needs a single generator to keep its keystream in order"
        ));
        assert_eq!(serve(&["--generators", "3"]).unwrap().generators, 3);
        // --group mounts with allow_other; the files' modes keep others out.
        let shared = serve(&["--group", "users"]).unwrap();
        assert!(shared.allow_other);
        assert_eq!(shared.group.as_deref(), Some("users"));
        assert!(
            Cli::try_parse_from(["pilfered", "serve", "--group", "x", "--allow-other"]).is_err()
        );
        assert!(matches!(
            serve(&["--seed", &seed, "--no-fifo"]).unwrap().seed,
            Some(Seed::Argv(k)) if k == Key::zeroed()
        ));
        // --seed-file is checked like --seed, before its file is read.
        let missing = "/nonexistent/key";
        assert_eq!(
            serve(&["--seed-file", missing]).unwrap_err(),
            Error::usage(
                "--seed-file needs --no-fuse or --no-fifo: one reproducible keystream cannot be split between two interfaces"
            )
        );
        assert_eq!(
            serve(&["--seed-file", missing, "--no-fifo", "--generators", "2"]).unwrap_err(),
            Error::usage(
                "--generators 2: --seed-file needs a single generator to keep its keystream in order"
            )
        );
        // Validating touches nothing on disk: the file is read by the
        // preflight, so a missing one is not noticed here.
        let from_file = serve(&["--seed-file", missing, "--no-fuse"]).unwrap();
        assert!(matches!(
            from_file.seed,
            Some(Seed::File(p)) if p == std::path::Path::new(missing)
        ));
        assert_eq!(from_file.generators, 1);
        assert!(Cli::try_parse_from(["pilfered", "serve", "--no-fuse", "--no-fifo"]).is_err());
    }
}
