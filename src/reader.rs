//! Reading the device as a consumer: [`DeviceReader`] reads exactly the bytes
//! asked for from the FUSE file or the FIFO, and [`Uniform`] turns them into
//! unbiased integers in `[0, n)`.
//!
//! # Exact reads
//! A `DeviceReader` has no buffer of its own: every byte it reads is one its
//! caller asked for, so nothing is read ahead, wasted or kept around (each
//! byte served by the device is used once, by one consumer). Short reads
//! (normal on a pipe) and `EINTR` are retried; end of file means the daemon
//! went away and is an error, never a silent short result.
//!
//! # Uniform integers
//! [`Uniform::new`]`(n)` draws from the fewest bytes that can hold `n - 1`
//! (`k` bytes, read as a little-endian number `v` in `[0, 2^(8k))`) and uses
//! rejection sampling: with `R = 2^(8k)`, values `v >= R - (R mod n)` (the
//! part above the largest multiple of `n` that fits) are thrown away and the
//! draw is repeated with fresh bytes; an accepted `v` gives `v mod n`. The
//! accepted range holds every residue exactly `R / n` times (rounded down),
//! so each result in `[0, n)` is equally likely: there is no modulo bias.
//!
//! Fewer than half of all draws are rejected (the `R mod n` rejected values
//! are fewer than `n` and at most `R - n`, so fewer than `R / 2`): the
//! expected number of draws is `R / (R - (R mod n))`, below 2 and usually
//! far less (a d6 rejects 4 of 256 byte values, 1.016 draws expected; a d100
//! rejects 56 of 256, 1.28 draws expected). `n = 1` needs no
//! bytes at all; `n = 2^64 - 1` takes 8 bytes and rejects only `2^64 - 1`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::geteuid;
use zeroize::Zeroizing;

use crate::error::{Error, describe};

/// Most bytes requested from the device in one read by [`DeviceReader::read_each`].
pub const BATCH_BYTES: usize = 64 << 10;

/// Reads exact amounts of random bytes from a path (or, for tests, any
/// [`Read`]), never more than asked for.
#[derive(Debug)]
pub struct DeviceReader<R = File> {
    inner: R,
    path: PathBuf,
    /// Bytes read so far.
    consumed: u64,
}

impl DeviceReader<File> {
    /// Opens `path` (given with `--from`) for reading.
    ///
    /// Never blocks: a FIFO is opened non-blocking, so opening one that no
    /// daemon holds returns at once, and the first read then reports end of
    /// file. Reads themselves block as usual.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let fail = |why: String| Error::runtime(format!("--from {}: {why}", path.display()));
        let file = open_nonblocking(path, false).map_err(|e| fail(describe(&e)))?;
        let meta = file.metadata().map_err(|e| fail(describe(&e)))?;
        if meta.is_dir() {
            return Err(fail("is a directory".to_string()));
        }
        Self::blocking(file, path).map_err(|e| fail(describe(&e)))
    }

    /// Opens the default device: `fuse_file` (normally `/mnt/pilfered/bits`)
    /// if it can be opened, else `fifo` (normally `/tmp/pilferedbits`) if it
    /// is a FIFO that only we or root can write to; else an error that says
    /// why neither worked and how to start the device.
    pub fn open_default(fuse_file: &Path, fifo: &Path) -> Result<Self, Error> {
        let fuse_err = match open_nonblocking(fuse_file, false) {
            Ok(file) => {
                return Self::blocking(file, fuse_file).map_err(|e| read_error(fuse_file, &e));
            }
            Err(e) => describe(&e),
        };
        let fifo_err = match open_nonblocking(fifo, true) {
            Ok(file) => match trusted_fifo(&file) {
                Ok(()) => return Self::blocking(file, fifo).map_err(|e| read_error(fifo, &e)),
                Err(why) => why,
            },
            // O_NOFOLLOW met a symlink, which could point anywhere.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => "a symbolic link".to_string(),
            Err(e) => describe(&e),
        };
        Err(Error::runtime(format!(
            "no random source: cannot read {} ({fuse_err}) or {} ({fifo_err}); start the device with 'pilfered serve' or pass --from PATH",
            fuse_file.display(),
            fifo.display()
        )))
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
    let me = geteuid().as_raw();
    if !meta.file_type().is_fifo() {
        Err("not a FIFO".to_string())
    } else if meta.uid() != 0 && meta.uid() != me {
        Err(format!(
            "owned by uid {}, who could choose its bytes",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Err(format!(
            "writable by other users (mode {:04o}), who could choose its bytes",
            meta.mode() & 0o7777
        ))
    } else {
        Ok(())
    }
}

/// A failed read of `path`, worded for the user.
fn read_error(path: &Path, e: &io::Error) -> Error {
    let hint = match e.raw_os_error() {
        // What a FUSE reader gets once the daemon has stopped.
        Some(libc::EIO | libc::ENOTCONN) => ": the daemon went away",
        _ => "",
    };
    Error::runtime(format!("{}: {}{hint}", path.display(), describe(e)))
}

impl<R: Read> DeviceReader<R> {
    /// Wraps any reader; `path` names it in error messages.
    pub fn from_reader(path: impl Into<PathBuf>, inner: R) -> Self {
        DeviceReader {
            inner,
            path: path.into(),
            consumed: 0,
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

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Fills `buf` completely, looping over short reads and `EINTR`. End of
    /// file is an error (the device never ends while its daemon runs).
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => return Err(self.end_of_file(got, buf.len())),
                Ok(n) => {
                    got += n;
                    self.consumed += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(&self.path, &e)),
            }
        }
        Ok(())
    }

    fn end_of_file(&self, got: usize, want: usize) -> Error {
        let path = self.path.display();
        if self.consumed == 0 {
            Error::runtime(format!(
                "{path}: end of file before the first byte: no daemon is serving it; start the device with 'pilfered serve'"
            ))
        } else {
            Error::runtime(format!(
                "{path}: end of file after {got} of {want} bytes: the daemon went away"
            ))
        }
    }

    /// Reads `count` groups of `size` bytes and hands each group, in order,
    /// to `each`. The groups are read in batches of up to [`BATCH_BYTES`]
    /// (fewer reads, same bytes), never more than `count * size` bytes in
    /// all; the batch buffer is wiped afterwards.
    pub fn read_each<E: From<Error>>(
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
        let per_batch = (BATCH_BYTES / size).max(1) as u64;
        let mut buf = Zeroizing::new(vec![0u8; size * count.min(per_batch) as usize]);
        let mut left = count;
        while left > 0 {
            let groups = left.min(per_batch) as usize;
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

/// Uniform integers in `[0, n)` by rejection sampling (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uniform {
    n: u64,
    /// Bytes per draw: the fewest that can hold `n - 1`.
    bytes: usize,
    /// Largest accepted draw: `R - (R mod n) - 1` with `R = 2^(8 * bytes)`.
    max_accepted: u64,
}

impl Uniform {
    /// Integers in `[0, n)`.
    ///
    /// # Panics
    /// If `n` is 0: the range would be empty.
    pub fn new(n: u64) -> Self {
        assert!(n > 0, "Uniform::new(0): the range [0, 0) is empty");
        let bits = 64 - (n - 1).leading_zeros() as usize;
        let bytes = bits.div_ceil(8);
        let range = 1u128 << (8 * bytes);
        let max_accepted = (range - range % u128::from(n) - 1) as u64;
        Uniform {
            n,
            bytes,
            max_accepted,
        }
    }

    /// The `n` of `[0, n)`.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Bytes read per draw (accepted or not).
    pub fn bytes_per_draw(&self) -> usize {
        self.bytes
    }

    /// The result of one draw of [`Self::bytes_per_draw`] bytes, or `None` if
    /// the draw falls above the largest multiple of `n` and is rejected.
    pub fn accept(&self, draw: &[u8]) -> Option<u64> {
        let mut le = [0u8; 8];
        le[..draw.len()].copy_from_slice(draw);
        let v = u64::from_le_bytes(le);
        (v <= self.max_accepted).then(|| v % self.n)
    }

    /// One uniform integer in `[0, n)`.
    pub fn sample<R: Read>(&self, src: &mut DeviceReader<R>) -> Result<u64, Error> {
        let mut value = 0;
        self.sample_each(src, 1, |v| {
            value = v;
            Ok::<_, Error>(())
        })?;
        Ok(value)
    }

    /// `count` uniform integers, handed to `each` in order.
    ///
    /// Reads the same bytes as `count` calls of [`Self::sample`] would, but
    /// in batches: first `count` draws at once, then one more for each
    /// rejected draw, until `count` are accepted.
    pub fn sample_each<R: Read, E: From<Error>>(
        &self,
        src: &mut DeviceReader<R>,
        count: u64,
        mut each: impl FnMut(u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut missing = count;
        while missing > 0 {
            let mut accepted = 0;
            src.read_each(missing, self.bytes, |draw| {
                if let Some(v) = self.accept(draw) {
                    accepted += 1;
                    each(v)?;
                }
                Ok::<_, E>(())
            })?;
            missing -= accepted;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// `count` values of `u` drawn from `src` in one `sample_each`.
    fn draws(u: &Uniform, src: &mut DeviceReader<&[u8]>, count: u64) -> Vec<u64> {
        let mut got = Vec::with_capacity(count as usize);
        u.sample_each(src, count, |v| {
            got.push(v);
            Ok::<_, Error>(())
        })
        .unwrap();
        got
    }

    /// Deterministic bytes that look random enough to exercise rejection.
    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
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
            r.read_exact(&mut c).unwrap_err(),
            Error::runtime("/test/fifo: end of file after 0 of 1 bytes: the daemon went away")
        );
    }

    #[test]
    fn end_of_file_says_how_far_it_got() {
        let mut r = source(&[1, 2, 3, 4, 5]);
        let mut buf = [0u8; 8];
        assert_eq!(
            r.read_exact(&mut buf[..2]),
            Ok(()),
            "a read within the data succeeds"
        );
        assert_eq!(
            r.read_exact(&mut buf).unwrap_err(),
            Error::runtime("/test/bits: end of file after 3 of 8 bytes: the daemon went away")
        );
        assert_eq!(
            source(&[]).read_exact(&mut buf).unwrap_err(),
            Error::runtime(
                "/test/bits: end of file before the first byte: no daemon is serving it; start the device with 'pilfered serve'"
            )
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
        assert_eq!(
            r.read_exact(&mut buf).unwrap_err(),
            Error::runtime(
                "/mnt/p/bits: Transport endpoint is not connected: the daemon went away"
            )
        );
        let mut r = DeviceReader::from_reader("/x", Failing(libc::EISDIR));
        assert_eq!(
            r.read_exact(&mut buf).unwrap_err(),
            Error::runtime("/x: Is a directory")
        );
    }

    #[test]
    fn read_each_reads_exactly_what_is_asked_in_batches() {
        let bytes = pseudo_random(3 * BATCH_BYTES + 100);
        let mut r = source(&bytes);
        let mut got = Vec::new();
        let count = (BATCH_BYTES as u64 * 2 + 10) / 3;
        r.read_each(count, 3, |g| {
            got.extend_from_slice(g);
            Ok::<_, Error>(())
        })
        .unwrap();
        assert_eq!(got, bytes[..count as usize * 3]);
        assert_eq!(r.consumed(), count * 3);
        assert_eq!(r.into_inner().len(), bytes.len() - count as usize * 3);

        let mut r = source(&bytes);
        let mut calls = 0;
        r.read_each(5, 0, |g| {
            assert!(g.is_empty());
            calls += 1;
            Ok::<_, Error>(())
        })
        .unwrap();
        assert_eq!((calls, r.consumed()), (5, 0));
    }

    #[test]
    fn bytes_per_draw_is_the_fewest_that_hold_n_minus_1() {
        for (n, k) in [
            (1, 0),
            (2, 1),
            (6, 1),
            (256, 1),
            (257, 2),
            (65_536, 2),
            (65_537, 3),
            (1 << 32, 4),
            ((1 << 32) + 1, 5),
            (1 << 56, 7),
            ((1 << 56) + 1, 8),
            (u64::MAX, 8),
        ] {
            assert_eq!(Uniform::new(n).bytes_per_draw(), k, "n = {n}");
        }
    }

    /// Over every possible draw, each result is accepted equally often and
    /// exactly `R mod n` draws are rejected: no modulo bias, by counting.
    #[test]
    fn every_result_is_equally_likely() {
        for n in [
            2u64, 3, 6, 7, 20, 100, 128, 129, 255, 256, 257, 1000, 65_535,
        ] {
            let u = Uniform::new(n);
            let k = u.bytes_per_draw();
            let range = 1u64 << (8 * k);
            let mut hits = vec![0u64; n as usize];
            let mut rejected = 0;
            for v in 0..range {
                match u.accept(&v.to_le_bytes()[..k]) {
                    Some(x) => hits[x as usize] += 1,
                    None => rejected += 1,
                }
            }
            assert!(hits.iter().all(|&h| h == range / n), "n = {n}: {hits:?}");
            assert_eq!(rejected, range % n, "n = {n}");
            assert!(rejected < range / 2, "n = {n}: rejects half or more");
        }
    }

    #[test]
    fn one_needs_no_bytes() {
        let u = Uniform::new(1);
        let mut r = source(&[]);
        assert_eq!(u.sample(&mut r), Ok(0));
        assert_eq!(draws(&u, &mut r, 1000), [0; 1000]);
        assert_eq!(r.consumed(), 0);
    }

    #[test]
    fn two_uses_one_byte_and_never_rejects() {
        let u = Uniform::new(2);
        let mut r = source(&[0, 1, 0xfe, 0xff, 0x80]);
        let got: Vec<u64> = (0..5).map(|_| u.sample(&mut r).unwrap()).collect();
        assert_eq!(got, [0, 1, 0, 1, 0]);
        assert!(u.sample(&mut r).is_err());
    }

    #[test]
    fn largest_n_rejects_only_the_top_value() {
        let n = u64::MAX;
        let u = Uniform::new(n);
        assert_eq!(u.accept(&[0xff; 8]), None);
        assert_eq!(u.accept(&(n - 1).to_le_bytes()), Some(n - 1));
        assert_eq!(u.accept(&[0; 8]), Some(0));
        assert_eq!(u.accept(&[1, 0, 0, 0, 0, 0, 0, 0x80]), Some((1 << 63) + 1));
        // A rejected draw costs its 8 bytes; the next draw decides.
        let bytes = [[0xff; 8], [0xff; 8], 5u64.to_le_bytes()].concat();
        let mut r = source(&bytes);
        assert_eq!(u.sample(&mut r), Ok(5));
        assert_eq!(r.consumed(), 24);
    }

    #[test]
    fn d6_rejects_the_top_four_byte_values() {
        let u = Uniform::new(6);
        // 252 = 42 * 6 is the largest multiple of 6 that fits in a byte.
        let mut r = source(&[252, 253, 254, 255, 251, 0, 6, 11]);
        assert_eq!(u.sample(&mut r), Ok(251 % 6));
        assert_eq!(r.consumed(), 5);
        assert_eq!(draws(&u, &mut r, 3), [0, 0, 5]);
    }

    /// Batched sampling reads the same bytes and gives the same values as
    /// one draw at a time, across batch boundaries and with many rejections.
    #[test]
    fn batches_match_one_draw_at_a_time() {
        let bytes = pseudo_random(400_000);
        for n in [3u64, 6, 100, 129, 1000, 40_000, 1 << 32, u64::MAX] {
            let u = Uniform::new(n);
            let count = (150_000 / u.bytes_per_draw()) as u64;
            let mut one = source(&bytes);
            let expected: Vec<u64> = (0..count).map(|_| u.sample(&mut one).unwrap()).collect();
            let mut batched = source(&bytes);
            let got = draws(&u, &mut batched, count);
            assert_eq!(got, expected, "n = {n}");
            assert_eq!(batched.consumed(), one.consumed(), "n = {n}");
            assert!(got.iter().all(|&v| v < n));
        }
    }

    #[test]
    #[should_panic(expected = "empty")]
    fn zero_is_refused() {
        Uniform::new(0);
    }
}
