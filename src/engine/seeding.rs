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
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::warn;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

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
    pub fn zeroed() -> Key {
        Key([0; 32])
    }

    /// 32 fresh bytes from the OS.
    pub fn from_os() -> Result<Key, getrandom::Error> {
        let mut key = Key::zeroed();
        getrandom::fill(&mut key.0)?;
        Ok(key)
    }

    /// The key's bytes, lent for as long as the key lives.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key's bytes, to fill in place.
    pub fn bytes_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }
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
            Reader::File(f) => read_within(f, out, SOURCE_TIMEOUT),
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

/// Fills `out` from a non-blocking file, waiting at most `limit` in all.
fn read_within(f: &mut File, out: &mut [u8], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut got = 0;
    while got < out.len() {
        match f.read(&mut out[got..]) {
            Ok(0) => return Err("end of file".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::ZERO);
                let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, ms) {
                    Ok(0) => return Err(format!("too slow: no data within {limit:?}")),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.desc().into()),
                }
            }
            Err(e) => return Err(describe(&e)),
        }
    }
    Ok(())
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
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
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
