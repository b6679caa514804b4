//! Where generator keys come from: the OS, plus optional extra sources
//! (`--source`), mixed so that a key is at least as unpredictable as the best
//! of them.
//!
//! Every key is SHA-256 over a domain tag, 32 bytes from `getrandom` and 32
//! bytes from each extra source. A source that is stuck, broken or slow does
//! not stop the daemon: it is dropped with a warning and keys come from the
//! remaining sources and the OS. Each extra source is watched by the
//! SP 800-90B repetition count test (section 4.4.1).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::warn;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, describe};
use crate::sys::raw;

/// A 256-bit ChaCha key. Its bytes are only ever lent out by reference,
/// `Debug` never shows them, and they are wiped when the key is dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<hidden>)")
    }
}

impl Key {
    /// An all-zero key, to be filled in place with [`Key::bytes_mut`].
    pub(crate) fn zeroed() -> Key {
        Key([0; 32])
    }

    /// 32 fresh bytes from the OS.
    pub fn from_os() -> Result<Key, getrandom::Error> {
        let mut key = Key::zeroed();
        getrandom::fill(&mut key.0)?;
        Ok(key)
    }

    /// The key's bytes, lent for as long as the key lives.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key's bytes, to fill in place.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }
    /// 64 hex digits (either case) as a key; `None` if there are not
    /// exactly 64 or one is not a hex digit.
    pub(crate) fn from_hex(digits: &[u8]) -> Option<Key> {
        if digits.len() != 64 {
            return None;
        }
        let mut key = Key::zeroed();
        for (byte, pair) in key.0.iter_mut().zip(digits.chunks_exact(2)) {
            let hex = |b: u8| char::from(b).to_digit(16);
            *byte = u8::try_from(hex(pair[0])? * 16 + hex(pair[1])?).ok()?;
        }
        Some(key)
    }

    /// A second key with the same bytes (both are wiped when dropped).
    fn copy(&self) -> Key {
        Key(self.0)
    }
}

/// Where seeded mode's fixed key comes from.
pub(crate) enum Seed {
    /// `--seed KEY`, already parsed; every user can read it in
    /// `/proc/PID/cmdline`.
    Argv(Key),
    /// `--seed-file PATH` (`-` for standard input), read by [`Seed::key`].
    File(PathBuf),
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seed::Argv(_) => f.write_str("Seed::Argv(<hidden>)"),
            Seed::File(p) => write!(f, "Seed::File({})", p.display()),
        }
    }
}

impl Seed {
    /// The key: given, or read from its file (which may take up to
    /// [`SEED_FILE_TIMEOUT`] for a FIFO).
    pub(crate) fn key(&self) -> Result<Key, Error> {
        match self {
            Seed::Argv(key) => Ok(key.copy()),
            Seed::File(path) => read_key_file(path, SEED_FILE_TIMEOUT),
        }
    }
}

/// How long `--seed-file` waits for its key: only a FIFO whose writer has
/// not (yet) sent it can take any time.
pub(crate) const SEED_FILE_TIMEOUT: Duration = Duration::from_secs(10);

/// A key file holds 64 hex digits and at most a newline.
const KEY_FILE_MAX: usize = 65;

/// Reads `--seed-file PATH` (standard input for `-`), refusing a file that
/// others may read, or that another user owns (they could change the key).
/// No message repeats any of its content, and the buffer that held it is
/// wiped. A key is complete once 64 hex digits and a newline are in: a FIFO
/// whose writer stays open after sending them is not waited on for more.
///
/// A path is opened non-blocking and read with a deadline of `timeout`, so
/// a FIFO nobody writes to is refused instead of hanging the start. Standard
/// input is read as it is, until end-of-file: it is the caller's own pipe or
/// terminal, and making it non-blocking would change it for the caller too.
fn read_key_file(path: &Path, timeout: Duration) -> Result<Key, Error> {
    let shown = path.display().to_string();
    let fail = |what: String| Error::usage(format!("--seed-file {shown}: {what}"));
    let stdin = path == Path::new("-");
    let stdin_handle = io::stdin();
    let opened = if stdin {
        None
    } else {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| fail(describe(&e)))?;
        Some(f)
    };
    // Not `Stdin`'s own reads: its buffer would keep a copy of the key.
    let fd = match &opened {
        Some(f) => f.as_fd(),
        None => stdin_handle.as_fd(),
    };
    let st = nix::sys::stat::fstat(fd).map_err(|e| fail(e.desc().to_string()))?;
    let mode = st.st_mode;
    // A file's or FIFO's owner and mode say who else may read or write the
    // key; a terminal's or /dev/null's say nothing about it.
    let kind = mode & libc::S_IFMT;
    if kind == libc::S_IFREG || kind == libc::S_IFIFO {
        let (what, fix) = if stdin {
            (
                "standard input",
                "run 'chmod 600' on the file it comes from".to_string(),
            )
        } else {
            ("the key file", format!("run 'chmod 600 {shown}'"))
        };
        if mode & 0o044 != 0 {
            return Err(fail(format!(
                "{what} is readable by other users (mode {:04o}), who could predict every byte; {fix}",
                mode & 0o7777
            )));
        }
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me && st.st_uid != 0 {
            return Err(fail(format!(
                "{what} is owned by uid {}, who could change the key; use a key file owned by you (uid {me}) or root",
                st.st_uid
            )));
        }
    }
    // One byte more than a key file may hold, to tell a longer one.
    let mut text = Zeroizing::new([0u8; KEY_FILE_MAX + 1]);
    let deadline = (!stdin).then(|| Instant::now() + timeout);
    let read = read_within(fd, &mut text[..KEY_FILE_MAX], deadline).map(|n| {
        // A whole key file's worth came: one more byte waiting means a
        // longer file; none waiting (a FIFO's writer still open, or the
        // end) means the key is complete.
        let more = n == KEY_FILE_MAX
            && poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], PollTimeout::ZERO)
                .is_ok_and(|ready| ready > 0)
            && matches!(nix::unistd::read(fd, &mut text[n..]), Ok(1..));
        n + usize::from(more)
    });
    let len = read.map_err(|e| match e {
        ReadFail::TimedOut(_) => fail(format!(
            "no key arrived within {} s; a FIFO needs a writer that sends the key and closes it",
            timeout.as_secs_f64()
        )),
        ReadFail::Os(e) => fail(e.desc().to_string()),
    })?;
    let expected = "expected exactly 64 hex digits and at most a newline";
    if len > KEY_FILE_MAX {
        return Err(fail(format!(
            "got more than {KEY_FILE_MAX} bytes; {expected}"
        )));
    }
    let digits = text[..len].strip_suffix(b"\n").unwrap_or(&text[..len]);
    if digits.len() != 64 {
        return Err(fail(format!("got {len} bytes; {expected}")));
    }
    Key::from_hex(digits).ok_or_else(|| fail(format!("not a hex digit in the file; {expected}")))
}

/// What `--source` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceSpec {
    /// The CPU's RDSEED instruction.
    Rdseed,
    /// The kernel's hardware RNG device, `/dev/hwrng`.
    Hwrng,
    /// Any file or FIFO that delivers random bytes.
    Path(PathBuf),
}

impl SourceSpec {
    /// Parses `rdseed`, `hwrng` or a path (anything with a `/`).
    pub(crate) fn parse(s: &str) -> Result<SourceSpec, String> {
        match s {
            "rdseed" => Ok(SourceSpec::Rdseed),
            "hwrng" => Ok(SourceSpec::Hwrng),
            p if p.contains('/') => Ok(SourceSpec::Path(PathBuf::from(p))),
            _ => Err("expected rdseed, hwrng, or a path to a file or FIFO (containing '/')".into()),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Rdseed => f.write_str("rdseed"),
            SourceSpec::Hwrng => f.write_str("hwrng"),
            SourceSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How long one source may take to deliver its 32 bytes.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(1);

/// The SP 800-90B repetition count test over bytes, continuous across
/// deliveries. Its cutoff C = 1 + ceil(20 / H) with H = 1 bit of
/// min-entropy per byte, a deliberately low claim, makes the chance that a
/// healthy source fails at most 2^-20 per run of bytes (for a source as good
/// as it should be, 8 bits per byte, about 2^-160); a stuck source fails
/// within 21 bytes.
#[derive(Debug, Default)]
pub(crate) struct RepetitionCount {
    last: Option<u8>,
    run: u32,
}

impl RepetitionCount {
    /// Cutoff for H = 1 bit per byte and a false-alarm rate of 2^-20.
    pub(crate) const CUTOFF: u32 = 21;

    /// Feeds bytes; `false` once some byte has repeated `CUTOFF` times in a
    /// row.
    pub(crate) fn check(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if self.last == Some(b) {
                self.run += 1;
                if self.run >= Self::CUTOFF {
                    return false;
                }
            } else {
                self.last = Some(b);
                self.run = 1;
            }
        }
        true
    }
}

enum Reader {
    Rdseed,
    File(File),
}

struct Source {
    spec: SourceSpec,
    reader: Reader,
    health: RepetitionCount,
}

impl Source {
    fn open(spec: &SourceSpec) -> Result<Source, Error> {
        let reader = match spec {
            SourceSpec::Rdseed => {
                if !raw::rdseed_available() {
                    return Err(Error::usage(
                        "--source rdseed: this CPU has no RDSEED instruction",
                    ));
                }
                Reader::Rdseed
            }
            SourceSpec::Hwrng => Reader::File(open_source(Path::new("/dev/hwrng"), spec)?),
            SourceSpec::Path(p) => Reader::File(open_source(p, spec)?),
        };
        Ok(Source {
            spec: spec.clone(),
            reader,
            health: RepetitionCount::default(),
        })
    }

    /// 32 bytes, or why not.
    fn read(&mut self, out: &mut [u8; 32]) -> Result<(), String> {
        match &mut self.reader {
            Reader::Rdseed => rdseed_fill(out),
            Reader::File(f) => {
                match read_within(f.as_fd(), out, Some(Instant::now() + SOURCE_TIMEOUT)) {
                    Ok(32) => Ok(()),
                    Ok(_) => Err("end of file".to_string()),
                    Err(ReadFail::TimedOut(_)) => {
                        Err(format!("too slow: no data within {SOURCE_TIMEOUT:?}"))
                    }
                    Err(ReadFail::Os(e)) => Err(e.desc().to_string()),
                }
            }
        }?;
        if self.health.check(out) {
            Ok(())
        } else {
            Err(format!(
                "failed the repetition count test ({} identical bytes in a row)",
                RepetitionCount::CUTOFF
            ))
        }
    }
}

fn open_source(path: &Path, spec: &SourceSpec) -> Result<File, Error> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            Error::usage(format!(
                "--source {spec}: {}: {}",
                path.display(),
                describe(&e)
            ))
        })
}

/// Why [`read_within`] stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFail {
    /// The deadline passed after this many bytes.
    TimedOut(usize),
    /// The read or the wait failed.
    Os(Errno),
}

/// Reads from `fd` into `buf` until it is full or the file ends, and
/// returns how many bytes came. With a `deadline`, `fd` must be
/// non-blocking: each read waits in `poll` first (so that a FIFO whose
/// writer has not come yet is waited for, not taken for ended), and the
/// read gives up once the deadline has passed, never before (a wait is
/// rounded up to whole milliseconds). Without one it waits as long as it
/// takes. Short reads and `EINTR` are retried.
fn read_within(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<usize, ReadFail> {
    let mut got = 0;
    while got < buf.len() {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadFail::TimedOut(got));
            }
            let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            let wait = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            match poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], wait) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(ReadFail::Os(e)),
            }
        }
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            // Without a deadline: a descriptor someone made non-blocking.
            Err(Errno::EAGAIN) if deadline.is_none() => {
                let _ = poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], PollTimeout::NONE);
            }
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(ReadFail::Os(e)),
        }
    }
    Ok(got)
}

/// Fills `out` from the CPU's RDSEED instruction, retrying a word that is
/// momentarily exhausted, as Intel advises.
fn rdseed_fill(out: &mut [u8; 32]) -> Result<(), String> {
    for piece in out.chunks_exact_mut(8) {
        let Some(mut word) = (0..1000).find_map(|_| raw::rdseed64()) else {
            return Err("RDSEED returned no data after 1000 tries".into());
        };
        piece.copy_from_slice(&word.to_le_bytes());
        word.zeroize();
    }
    Ok(())
}

/// Hands out fresh generator keys; shared by all generator threads.
pub(crate) struct Seeder {
    sources: Mutex<Vec<Source>>,
}

impl fmt::Debug for Seeder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seeder { .. }")
    }
}

impl Seeder {
    /// Opens every source, failing with a usage error if one is unusable
    /// from the start.
    pub(crate) fn new(specs: &[SourceSpec]) -> Result<Seeder, Error> {
        let sources = specs.iter().map(Source::open).collect::<Result<_, _>>()?;
        Ok(Seeder {
            sources: Mutex::new(sources),
        })
    }

    /// Names of the sources still in use.
    pub(crate) fn source_names(&self) -> Vec<String> {
        self.lock().iter().map(|s| s.spec.to_string()).collect()
    }

    /// Where keys come from, for the log: `the OS and rdseed, /dev/x`.
    pub(crate) fn describe(&self) -> String {
        let sources = self.source_names();
        if sources.is_empty() {
            "the OS".to_string()
        } else {
            format!("the OS and {}", sources.join(", "))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Source>> {
        self.sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new key: SHA-256 over the OS's 32 bytes and each healthy source's.
    /// Sources that fail are dropped with a warning.
    pub(crate) fn key(&self) -> Result<Key, Error> {
        let mut hasher = Sha256::new();
        hasher.update(b"pilfered seed v1");
        let os = Key::from_os().map_err(|e| Error::runtime(format!("getrandom: {e}")))?;
        hasher.update(os.as_bytes());
        drop(os);
        let mut sources = self.lock();
        let mut buf = [0u8; 32];
        sources.retain_mut(|source| match source.read(&mut buf) {
            Ok(()) => {
                hasher.update(buf);
                true
            }
            Err(why) => {
                warn!(
                    "--source {}: {why}; dropping it and carrying on with the others and the OS",
                    source.spec
                );
                false
            }
        });
        buf.zeroize();
        let mut digest = hasher.finalize();
        let mut key = Key::zeroed();
        key.bytes_mut().copy_from_slice(&digest);
        digest.zeroize();
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file of mode 0600 in a fresh directory.
    fn key_file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir, path)
    }

    #[test]
    fn seed_file_contents() {
        let key = "00".repeat(31) + "ff";
        for text in [key.clone(), key.clone() + "\n", key.to_uppercase()] {
            let (_dir, path) = key_file(text.as_bytes());
            let got = read_key_file(&path, SEED_FILE_TIMEOUT).unwrap();
            assert_eq!(got.as_bytes()[31], 0xff, "{text:?}");
        }
        let expected = "expected exactly 64 hex digits and at most a newline";
        for (text, why) in [
            (key.clone() + "\n\n", "got more than 65 bytes".to_string()),
            (key.clone() + "\r\n", "got more than 65 bytes".to_string()),
            (key.clone() + " ", "got 65 bytes".to_string()),
            ("\n".to_string() + &key, "got 65 bytes".to_string()),
            (String::new(), "got 0 bytes".to_string()),
            ("abc123\n".to_string(), "got 7 bytes".to_string()),
            ("zz".repeat(32), "not a hex digit in the file".to_string()),
            (
                "+1".repeat(32) + "\n",
                "not a hex digit in the file".to_string(),
            ),
        ] {
            let (_dir, path) = key_file(text.as_bytes());
            assert_eq!(
                read_key_file(&path, SEED_FILE_TIMEOUT).unwrap_err(),
                Error::usage(format!("--seed-file {}: {why}; {expected}", path.display())),
                "{text:?}"
            );
        }
    }

    /// A FIFO's key arrives from its writer; a FIFO without one is refused
    /// once the deadline passes instead of hanging.
    #[test]
    fn seed_file_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let key = "0f".repeat(32);
        let writer = {
            let (fifo, key) = (fifo.clone(), key.clone());
            // Opening for writing waits until the reader below has opened.
            std::thread::spawn(move || std::fs::write(fifo, key + "\n").unwrap())
        };
        let got = read_key_file(&fifo, SEED_FILE_TIMEOUT).unwrap();
        assert_eq!(got.as_bytes(), &[0x0f; 32]);
        writer.join().unwrap();

        let started = Instant::now();
        let e = read_key_file(&fifo, Duration::from_millis(100)).unwrap_err();
        assert_eq!(
            e,
            Error::usage(format!(
                "--seed-file {}: no key arrived within 0.1 s; a FIFO needs a writer that sends the key and closes it",
                fifo.display()
            ))
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    /// Issue 20: a FIFO whose writer sent a whole key and its newline, and
    /// keeps the FIFO open, has delivered the key: no waiting for the end.
    #[test]
    fn seed_file_fifo_complete_before_its_writer_closes() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (sent, hold) = std::sync::mpsc::channel::<()>();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
                w.write_all(("ab".repeat(32) + "\n").as_bytes()).unwrap();
                // Held open until the key has been read.
                let _ = hold.recv();
            })
        };
        let started = Instant::now();
        let got = read_key_file(&fifo, SEED_FILE_TIMEOUT);
        drop(sent);
        writer.join().unwrap();
        assert_eq!(got.unwrap().as_bytes(), &[0xab; 32]);
        assert!(
            started.elapsed() < SEED_FILE_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
    }

    /// The key file's owner must be us or root: another user could change
    /// the key under us, whatever its mode.
    #[test]
    fn seed_file_of_another_user_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = key_file(("00".repeat(32) + "\n").as_bytes());
        let me = nix::unistd::geteuid().as_raw();
        if me == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            assert_eq!(
                read_key_file(&path, SEED_FILE_TIMEOUT).unwrap_err(),
                Error::usage(format!(
                    "--seed-file {}: the key file is owned by uid 65534, who could change the key; use a key file owned by you (uid 0) or root",
                    path.display()
                ))
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read_key_file(&path, SEED_FILE_TIMEOUT).unwrap_err(),
            Error::usage(format!(
                "--seed-file {p}: the key file is readable by other users (mode 0640), who could predict every byte; run 'chmod 600 {p}'",
                p = path.display()
            ))
        );
    }

    #[test]
    fn parses_source_names() {
        assert_eq!(SourceSpec::parse("rdseed"), Ok(SourceSpec::Rdseed));
        assert_eq!(SourceSpec::parse("hwrng"), Ok(SourceSpec::Hwrng));
        assert_eq!(
            SourceSpec::parse("./x"),
            Ok(SourceSpec::Path(PathBuf::from("./x")))
        );
        assert!(SourceSpec::parse("lava-lamp").is_err());
    }

    #[test]
    fn repetition_count_trips_on_the_cutoff_only() {
        let mut rct = RepetitionCount::default();
        assert!(rct.check(&[7; 20]));
        // Continuous across deliveries: the 21st 7 in a row fails.
        assert!(!rct.check(&[7]));
        let mut rct = RepetitionCount::default();
        assert!(rct.check(&[1; 20]));
        assert!(rct.check(&[2; 20]));
        assert!(rct.check(&(0..=255).collect::<Vec<u8>>()));
    }

    #[test]
    fn keys_differ_and_mix_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("entropy");
        std::fs::write(&file, (0..64u8).collect::<Vec<_>>()).unwrap();
        let seeder = Seeder::new(&[SourceSpec::Path(file.clone())]).unwrap();
        let a = seeder.key().unwrap();
        let b = seeder.key().unwrap();
        assert_ne!(a, b);
        assert_eq!(seeder.source_names(), [file.display().to_string()]);
        // 64 bytes feed two keys; the third read hits end of file and the
        // source is dropped, but keys keep coming from the OS.
        let c = seeder.key().unwrap();
        assert_ne!(b, c);
        assert!(seeder.source_names().is_empty());
    }

    #[test]
    fn a_stuck_source_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("zeros");
        std::fs::write(&file, [0u8; 4096]).unwrap();
        let seeder = Seeder::new(&[SourceSpec::Path(file)]).unwrap();
        seeder.key().unwrap();
        assert!(seeder.source_names().is_empty());
    }

    #[test]
    fn a_silent_fifo_times_out_and_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Keep a writer so reads would block rather than end.
        let _writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let seeder = Seeder::new(&[SourceSpec::Path(fifo)]).unwrap();
        let t = Instant::now();
        seeder.key().unwrap();
        assert!(t.elapsed() < SOURCE_TIMEOUT * 3);
        assert!(seeder.source_names().is_empty());
    }

    #[test]
    fn missing_sources_are_refused_at_start() {
        let e = Seeder::new(&[SourceSpec::Path("/nonexistent/rng".into())]).unwrap_err();
        assert_eq!(
            e,
            Error::usage("--source /nonexistent/rng: /nonexistent/rng: No such file or directory")
        );
    }

    #[test]
    fn rdseed_when_present() {
        if !raw::rdseed_available() {
            let e = Seeder::new(&[SourceSpec::Rdseed]).unwrap_err();
            assert_eq!(
                e,
                Error::usage("--source rdseed: this CPU has no RDSEED instruction")
            );
            return;
        }
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        rdseed_fill(&mut a).unwrap();
        rdseed_fill(&mut b).unwrap();
        assert_ne!(a, b);
        let seeder = Seeder::new(&[SourceSpec::Rdseed]).unwrap();
        seeder.key().unwrap();
        assert_eq!(seeder.source_names(), ["rdseed"]);
    }
}
