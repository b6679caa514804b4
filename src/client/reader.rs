//! Reading the device as a consumer: [`DeviceReader`] reads exactly the bytes
//! asked for from the FUSE file or the FIFO (the `uniform` module turns them
//! into unbiased integers).
//!
//! # Exact reads
//! A `DeviceReader` has no buffer of its own: every byte it reads is one its
//! caller asked for, so nothing is read ahead, wasted or kept around (each
//! byte served by the device is used once, by one consumer). Short reads
//! (normal on a pipe) and `EINTR` are retried; end of file is an error,
//! never a silent short result: on the device it means the daemon went
//! away, and a plain file given with `--from` just ended.
//!
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use zeroize::Zeroizing;

use crate::error::describe;
use crate::sys::trust::{self, Untrusted};

/// Why [`DeviceReader`] could not open or read the device: the path and
/// the cause, said in one line by [`fmt::Display`].
#[derive(Debug)]
pub struct ReadError {
    path: PathBuf,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    /// Opening failed.
    Open(io::Error),
    /// The path is a directory.
    IsADirectory,
    /// Neither default source could be opened: why not, for each.
    NoSource {
        fuse: String,
        fifo: String,
        fifo_path: PathBuf,
    },
    /// A plain file (not the device) ended after `read` bytes.
    FileEnded { read: u64 },
    /// End of file after `got` of the `want` bytes of a read; `first`: no
    /// byte had been read before.
    Ended {
        got: usize,
        want: usize,
        first: bool,
    },
    /// A read failed.
    Read(io::Error),
}

impl ReadError {
    /// The path that was being opened or read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The OS error behind it, if there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.cause {
            Cause::Open(e) | Cause::Read(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.cause {
            Cause::Open(e) => write!(f, "{path}: {}", describe(e)),
            Cause::IsADirectory => write!(f, "{path}: is a directory"),
            Cause::NoSource {
                fuse,
                fifo,
                fifo_path,
            } => write!(
                f,
                "no random source: cannot read {path} ({fuse}) or {} ({fifo}); start the device with 'pilfered serve'",
                fifo_path.display()
            ),
            Cause::Ended { first: true, .. } => write!(
                f,
                "{path}: end of file before the first byte: no daemon is serving it; start the device with 'pilfered serve'"
            ),
            Cause::FileEnded { read } => write!(
                f,
                "{path}: the file ended after {read} bytes (a plain file, not the device)"
            ),
            Cause::Ended { got, want, .. } => write!(
                f,
                "{path}: end of file after {got} of {want} bytes: the daemon went away"
            ),
            Cause::Read(e) => {
                let hint = match e.raw_os_error() {
                    // What a FUSE reader gets once the daemon has stopped.
                    Some(libc::EIO | libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED) => {
                        ": the daemon went away"
                    }
                    _ => "",
                };
                write!(f, "{path}: {}{hint}", describe(e))
            }
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Open(e) | Cause::Read(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        let kind = match &e.cause {
            Cause::Open(e) | Cause::Read(e) => e.kind(),
            Cause::IsADirectory => io::ErrorKind::IsADirectory,
            Cause::NoSource { .. } => io::ErrorKind::NotFound,
            Cause::Ended { .. } | Cause::FileEnded { .. } => io::ErrorKind::UnexpectedEof,
        };
        io::Error::new(kind, e)
    }
}

fn error(path: &Path, cause: Cause) -> ReadError {
    ReadError {
        path: path.to_path_buf(),
        cause,
    }
}

/// Most bytes requested from the device in one read by [`DeviceReader::read_each`].
pub(crate) const MAX_READ_BYTES: usize = 64 << 10;

/// Reads exact amounts of random bytes from a path (or, for tests, any
/// [`Read`]), never more than asked for.
#[derive(Debug)]
pub struct DeviceReader<R = File> {
    inner: R,
    path: PathBuf,
    /// Bytes read so far.
    consumed: u64,
    /// Whether `path` is the device (a FIFO or a FUSE file), whose end of
    /// file means its daemon is gone, or a plain file, which just ends.
    device: bool,
}

impl DeviceReader<File> {
    /// Opens `path` for reading.
    ///
    /// Never blocks: a FIFO is opened non-blocking, so opening one that no
    /// daemon holds returns at once, and the first read then reports end of
    /// file. Reads themselves block as usual.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let fail = |e| error(path, Cause::Open(e));
        let file = open_nonblocking(path, false).map_err(fail)?;
        let meta = file.metadata().map_err(fail)?;
        if meta.is_dir() {
            return Err(error(path, Cause::IsADirectory));
        }
        let device = meta.file_type().is_fifo()
            || nix::sys::statfs::fstatfs(&file)
                .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC);
        let mut reader = Self::blocking(file, path).map_err(fail)?;
        reader.device = device;
        Ok(reader)
    }

    /// Opens the default device: `fuse_file` (normally `/mnt/pilfered/bits`)
    /// if it can be opened, else `fifo` (normally `/tmp/pilferedbits`) if it
    /// is a FIFO that only we or root can write to; else an error that says
    /// why neither worked and how to start the device.
    pub fn open_default(fuse_file: &Path, fifo: &Path) -> Result<Self, ReadError> {
        let fuse_err = match open_nonblocking(fuse_file, false) {
            Ok(file) => {
                return Self::blocking(file, fuse_file)
                    .map_err(|e| error(fuse_file, Cause::Open(e)));
            }
            Err(e) => describe(&e),
        };
        let fifo_err = match open_nonblocking(fifo, true) {
            Ok(file) => match trusted_fifo(&file) {
                Ok(()) => {
                    return Self::blocking(file, fifo).map_err(|e| error(fifo, Cause::Open(e)));
                }
                Err(why) => why,
            },
            // O_NOFOLLOW met a symlink, which could point anywhere.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => "a symbolic link".to_string(),
            Err(e) => describe(&e),
        };
        Err(error(
            fuse_file,
            Cause::NoSource {
                fuse: fuse_err,
                fifo: fifo_err,
                fifo_path: fifo.to_path_buf(),
            },
        ))
    }

    /// Clears `O_NONBLOCK`, which was only there so that `open` could not hang.
    fn blocking(file: File, path: &Path) -> io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(file.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(file.as_fd(), FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
        Ok(Self::from_reader(path, file))
    }
}

/// Opens `path` read-only without blocking (a FIFO with no writer would
/// otherwise block `open` forever), optionally refusing symlinks.
fn open_nonblocking(path: &Path, no_follow: bool) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK;
    if no_follow {
        flags |= libc::O_NOFOLLOW;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// Whether the default FIFO, a well-known name in a world-writable
/// directory, is safe to read: a FIFO that nobody but us or root can write
/// to, so nobody else can choose the bytes we get.
fn trusted_fifo(file: &File) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| describe(&e))?;
    if !meta.file_type().is_fifo() {
        return Err("not a FIFO".to_string());
    }
    trust::writers(meta.uid(), meta.mode(), trust::me()).map_err(|why| match why {
        Untrusted::Owner(uid) => format!("owned by uid {uid}, who could choose its bytes"),
        Untrusted::Mode(mode) => {
            format!("writable by other users (mode {mode:04o}), who could choose its bytes")
        }
    })
}

impl<R: Read> DeviceReader<R> {
    /// Wraps any reader; `path` names it in error messages.
    pub fn from_reader(path: impl Into<PathBuf>, inner: R) -> Self {
        DeviceReader {
            inner,
            path: path.into(),
            consumed: 0,
            device: true,
        }
    }

    /// The path being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many bytes have been read so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Fills `buf` completely, looping over short reads and `EINTR`. End of
    /// file is an error (the device never ends while its daemon runs).
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if !self.device => {
                    let read = self.consumed;
                    return Err(error(&self.path, Cause::FileEnded { read }));
                }
                Ok(0) => {
                    let (want, first) = (buf.len(), self.consumed == 0);
                    return Err(error(&self.path, Cause::Ended { got, want, first }));
                }
                Ok(n) => {
                    got += n;
                    self.consumed += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(error(&self.path, Cause::Read(e))),
            }
        }
        Ok(())
    }

    /// Reads `count` groups of `size` bytes and hands each group, in order,
    /// to `each`. The groups are read in batches of up to 64 KiB
    /// (fewer reads, same bytes), never more than `count * size` bytes in
    /// all; the batch buffer is wiped afterwards.
    pub fn read_each<E: From<ReadError>>(
        &mut self,
        count: u64,
        size: usize,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if size == 0 {
            for _ in 0..count {
                each(&[])?;
            }
            return Ok(());
        }
        let per_batch = (MAX_READ_BYTES / size).max(1);
        // How many groups the next batch holds, when `left` are still due.
        let next = |left: u64| usize::try_from(left).map_or(per_batch, |l| l.min(per_batch));
        let mut buf = Zeroizing::new(vec![0u8; size * next(count)]);
        let mut left = count;
        while left > 0 {
            let groups = next(left);
            let batch = &mut buf[..groups * size];
            self.read_exact(batch)?;
            for group in batch.chunks_exact(size) {
                each(group)?;
            }
            left -= groups as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::low_byte;

    /// A reader that hands out its bytes in pieces of 1 to 3 bytes, with an
    /// `EINTR` before every other piece, then ends.
    struct Stingy {
        bytes: Vec<u8>,
        pos: usize,
        calls: usize,
    }

    impl Read for Stingy {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = (1 + self.calls % 3)
                .min(buf.len())
                .min(self.bytes.len() - self.pos);
            buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn source(bytes: &[u8]) -> DeviceReader<&[u8]> {
        DeviceReader::from_reader("/test/bits", bytes)
    }

    #[test]
    fn read_exact_loops_over_short_reads_and_eintr() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut r = DeviceReader::from_reader(
            "/test/fifo",
            Stingy {
                bytes: bytes.clone(),
                pos: 0,
                calls: 0,
            },
        );
        let mut a = [0u8; 100];
        let mut b = [0u8; 156];
        r.read_exact(&mut a).unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!([&a[..], &b[..]].concat(), bytes);
        assert_eq!(r.consumed(), 256);
        let mut c = [0u8; 1];
        assert_eq!(
            r.read_exact(&mut c).unwrap_err().to_string(),
            "/test/fifo: end of file after 0 of 1 bytes: the daemon went away"
        );
    }

    /// A plain file given with `--from` just ends; no daemon is blamed.
    #[test]
    fn a_plain_file_just_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.bin");
        std::fs::write(&path, b"abc").unwrap();
        let mut r = DeviceReader::open(&path).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            r.read_exact(&mut buf).unwrap_err().to_string(),
            format!(
                "{}: the file ended after 3 bytes (a plain file, not the device)",
                path.display()
            )
        );
    }

    #[test]
    fn end_of_file_says_how_far_it_got() {
        let mut r = source(&[1, 2, 3, 4, 5]);
        let mut buf = [0u8; 8];
        r.read_exact(&mut buf[..2])
            .expect("a read within the data succeeds");
        let ended = r.read_exact(&mut buf).unwrap_err();
        assert_eq!(
            ended.to_string(),
            "/test/bits: end of file after 3 of 8 bytes: the daemon went away"
        );
        assert_eq!(io::Error::from(ended).kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            source(&[]).read_exact(&mut buf).unwrap_err().to_string(),
            "/test/bits: end of file before the first byte: no daemon is serving it; start the device with 'pilfered serve'"
        );
    }

    #[test]
    fn read_errors_name_the_path() {
        struct Failing(i32);
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(self.0))
            }
        }
        let mut buf = [0u8; 4];
        let mut r = DeviceReader::from_reader("/mnt/p/bits", Failing(libc::ENOTCONN));
        let e = r.read_exact(&mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/mnt/p/bits: Transport endpoint is not connected: the daemon went away"
        );
        assert_eq!(
            e.io_error().and_then(io::Error::raw_os_error),
            Some(libc::ENOTCONN)
        );
        let mut r = DeviceReader::from_reader("/x", Failing(libc::EISDIR));
        assert_eq!(
            r.read_exact(&mut buf).unwrap_err().to_string(),
            "/x: Is a directory"
        );
    }

    #[test]
    fn read_each_reads_exactly_what_is_asked_in_batches() {
        let bytes: Vec<u8> = (0..3 * MAX_READ_BYTES + 100)
            .map(|i| low_byte(i ^ (i >> 8)))
            .collect();
        let mut r = source(&bytes);
        let mut got = Vec::new();
        let count = (MAX_READ_BYTES as u64 * 2 + 10) / 3;
        r.read_each(count, 3, |g| {
            got.extend_from_slice(g);
            Ok::<_, ReadError>(())
        })
        .unwrap();
        assert_eq!(got, bytes[..count as usize * 3]);
        assert_eq!(r.consumed(), count * 3);
        // Nothing was read ahead: the rest is still there, then the end.
        let mut rest = vec![0u8; bytes.len() - count as usize * 3];
        r.read_exact(&mut rest).unwrap();
        assert_eq!(rest, bytes[count as usize * 3..]);
        assert!(r.read_exact(&mut [0u8; 1]).is_err());

        let mut r = source(&bytes);
        let mut calls = 0;
        r.read_each(5, 0, |g| {
            assert!(g.is_empty());
            calls += 1;
            Ok::<_, ReadError>(())
        })
        .unwrap();
        assert_eq!((calls, r.consumed()), (5, 0));
    }
}
