//! The file system itself: a root directory holding `bits` (endless random
//! bytes) and `stats` (the daemon's counters), as plain methods that return
//! a `Result` and know nothing of the transport, so that they are tested
//! without a mount.
//!
//! `bits` is opened with direct I/O and as a stream: the kernel then
//! passes every read straight to us (no page cache, so no byte is served
//! twice), keeps no file position and refuses `lseek` and shared `mmap`.
//! Its size is [`BITS_SIZE`], not 0, because the kernel ends asynchronous
//! reads (io_uring, Linux AIO) at the size even with direct I/O; what
//! would read through the page cache up to that size (`splice`,
//! `sendfile`, a private `mmap`, readahead) is refused request by request
//! ([`FsError::PageCache`]), so the page cache never holds a byte of it.
//!
//! A read hands its reply to an [`Out`], the transport's way of sending
//! bytes: a read of exactly what the queue's front chunk holds is sent from
//! the chunk itself ([`Out::send`]); any other is copied from the queue
//! straight into the transport's own reply buffer ([`Out::buffer`]), which
//! the transport wipes once the reply is gone.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{debug, warn};

use super::proto::{Attr, FOPEN_DIRECT_IO, FOPEN_NOFLUSH, FOPEN_NONSEEKABLE, FOPEN_STREAM};
use crate::engine::queue::{ChunkQueue, Closed};
use crate::engine::stats::{self, Stats};

/// Inodes: the root, `bits` and `stats`.
pub(crate) const ROOT: u64 = 1;
pub(crate) const BITS: u64 = 2;
pub(crate) const STATS: u64 = 3;

/// Mode of `bits` and `stats`: readable by all whom the mount lets in.
pub(crate) const MODE: u32 = 0o444;
/// Their mode with `--group`: the mount lets everyone in (allow_other), and
/// the kernel (default_permissions) lets the owner and the group read.
pub(crate) const GROUP_MODE: u32 = 0o440;

/// How long the kernel may cache names and attributes, in seconds: they
/// never change while mounted.
pub(crate) const TTL: u64 = 1;

/// How `bits` is opened: direct I/O, so that the kernel passes each read
/// to us and never serves bytes from (or keeps them in) its page cache; as
/// a stream, so that it has no file position (no `lseek`, `pread` or
/// position lock: threads sharing a descriptor read side by side); and
/// with nothing to flush, so that `close()` costs no request.
pub(crate) const BITS_OPEN: u32 = FOPEN_DIRECT_IO | FOPEN_STREAM | FOPEN_NOFLUSH;
/// How `stats` is opened: the same, but with a file position, as its reads
/// go on at growing offsets of one snapshot (non-seekable all the same).
pub(crate) const STATS_OPEN: u32 = FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE | FOPEN_NOFLUSH;

/// The size `bits` shows: as large as a file can be (the kernel ends
/// asynchronous reads at the size), with the low half `i32::MAX`, so that
/// `FIONREAD`, which the kernel truncates to an `int`, says "plenty" rather
/// than a negative number.
pub(crate) const BITS_SIZE: u64 = 0x7fff_ffff_7fff_ffff;

/// How many opens of `stats` may be held at once. Each keeps its snapshot
/// (under 1 KiB) until released; past this many, an open fails with
/// ENFILE, as any open does when the kernel's own file table is full, so
/// that whoever may read the mount cannot grow the daemon without bound.
pub(crate) const MAX_STATS_OPENS: usize = 1024;

/// `d_type` of a directory and of a regular file, for `readdir`.
pub(crate) const DT_DIR: u32 = 4;
pub(crate) const DT_REG: u32 = 8;

const ENTRIES: [(u64, u32, &str); 4] = [
    (ROOT, DT_DIR, "."),
    (ROOT, DT_DIR, ".."),
    (BITS, DT_REG, "bits"),
    (STATS, DT_REG, "stats"),
];

/// The name of inode `ino`, for messages: `bits`, `stats` or `the root`.
pub(crate) fn name(ino: u64) -> &'static str {
    match ENTRIES[2..].iter().find(|e| e.0 == ino) {
        Some(&(_, _, name)) => name,
        None if ino == ROOT => "the root",
        None => "an unknown inode",
    }
}

/// Why [`Filesystem`] refused a request: one case per cause, so that the
/// adapter logs the cause and [`FsError::errno`] alone picks what the
/// kernel (and the reader) is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FsError {
    /// No such name in the directory, or no such inode.
    NotFound,
    /// A lookup or listing inside something that is not the root.
    NotADirectory,
    /// The root opened or read as a file.
    IsADirectory,
    /// A read of `bits` for the kernel's page cache (`splice`, `sendfile`,
    /// a private `mmap`, readahead): its bytes go to `read()` alone, so
    /// that no cache ever holds one to hand out again.
    PageCache,
    /// Opened for writing: the device is read-only.
    ReadOnly,
    /// `stats` opened while [`MAX_STATS_OPENS`] opens of it are held.
    TooManyOpens,
    /// A `stats` read on a handle that was never opened or already released.
    UnknownHandle,
    /// The queue is closed: the daemon is shutting down.
    ShuttingDown,
    /// A reply buffer could not grow: memory is short.
    OutOfMemory,
}

impl FsError {
    /// The errno the request fails with.
    pub(crate) fn errno(self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            // What splice(2) says of a file that does not support it.
            FsError::PageCache => libc::EINVAL,
            // A judgement call: the mount is read-only too (EROFS), but the
            // kernel asks us only after its own permission check, and the
            // file's mode (0444) is what refuses writing.
            FsError::ReadOnly => libc::EACCES,
            FsError::TooManyOpens => libc::ENFILE,
            FsError::UnknownHandle => libc::EBADF,
            // What a reader of a device that went away gets.
            FsError::ShuttingDown => libc::EIO,
            FsError::OutOfMemory => libc::ENOMEM,
        }
    }

    /// Logs a refusal of `what` (such as "read of 4096 bytes of bits") if
    /// its cause is worth a line: a shutdown (at debug level, as every
    /// waiting reader gets one) or short memory. The other causes are a
    /// program's ordinary questions answered no.
    pub(crate) fn log(self, what: &str) {
        match self {
            FsError::ShuttingDown => debug!("{what} refused: the daemon is shutting down"),
            FsError::OutOfMemory => warn!("{what} refused: out of memory"),
            FsError::NotFound
            | FsError::NotADirectory
            | FsError::IsADirectory
            | FsError::PageCache
            | FsError::ReadOnly
            | FsError::TooManyOpens
            | FsError::UnknownHandle => {}
        }
    }
}

/// Where a read's reply goes: the transport's way of sending bytes. Each
/// read ends in exactly one `send` or one `buffer` then `send_filled`.
pub(crate) trait Out {
    /// Sends `bytes` as the reply.
    fn send(&mut self, bytes: &[u8]);
    /// The transport's reply buffer, `len` bytes of it, to fill and send
    /// with [`Out::send_filled`]. The transport wipes what was written once
    /// it is sent (or the read fails).
    fn buffer(&mut self, len: usize) -> Result<&mut [u8], FsError>;
    /// Sends the first `len` bytes of the buffer.
    fn send_filled(&mut self, len: usize);
}

/// What `bits` serves: the queue, or (for the benchmark's null server, the
/// ceiling pilfered is measured against) zeros at once.
#[derive(Debug)]
pub(crate) enum Source {
    Queue(Arc<ChunkQueue>),
    Zeros,
}

/// Zeros for [`Source::Zeros`]: as much as one request asks for at most.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// The file system: its state and logic, independent of FUSE plumbing.
#[derive(Debug)]
pub(crate) struct Filesystem {
    bits: Source,
    stats: Arc<Stats>,
    uid: u32,
    gid: u32,
    /// Of the files; the root adds search (x) where it may be read.
    mode: u32,
    mounted_at: (u64, u32),
    /// Text of `stats` frozen at open, so that reads at growing offsets see
    /// one consistent snapshot.
    snapshots: Mutex<HashMap<u64, Arc<[u8]>>>,
    next_fh: AtomicU64,
    /// Kernel queues served over io_uring (0: over `/dev/fuse`), for the
    /// `stats` file; set once the session's transport is up.
    uring_queues: AtomicU64,
}

impl Filesystem {
    /// A file system serving `bits` from `bits`, owned by `uid`/`gid`, its files of `mode`
    /// ([`MODE`] or [`GROUP_MODE`]).
    pub(crate) fn new(bits: Source, stats: Arc<Stats>, uid: u32, gid: u32, mode: u32) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Filesystem {
            bits,
            stats,
            uid,
            gid,
            mode,
            mounted_at: (now.as_secs(), now.subsec_nanos()),
            snapshots: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uring_queues: AtomicU64::new(0),
        }
    }

    /// The counters this file system adds to.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Records that the file is served over io_uring on `queues` queues.
    pub(crate) fn set_uring_queues(&self, queues: usize) {
        self.uring_queues.store(queues as u64, Ordering::Relaxed);
    }

    /// The user who owns the files (and mounted them).
    pub(crate) fn owner(&self) -> u32 {
        self.uid
    }

    /// Attributes of inode `ino`.
    pub(crate) fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        let (mode, nlink, size) = match ino {
            ROOT => (libc::S_IFDIR | self.mode | (self.mode & 0o444) >> 2, 2, 0),
            BITS => (libc::S_IFREG | self.mode, 1, BITS_SIZE),
            STATS => (libc::S_IFREG | self.mode, 1, 0),
            _ => return Err(FsError::NotFound),
        };
        Ok(Attr {
            ino,
            mode,
            size,
            nlink,
            uid: self.uid,
            gid: self.gid,
            time: self.mounted_at,
            blksize: 4096,
        })
    }

    /// Looks `name` up in directory `parent`.
    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        if parent != ROOT {
            return Err(FsError::NotADirectory);
        }
        match ENTRIES[2..].iter().find(|e| OsStr::new(e.2) == name) {
            Some(&(ino, _, _)) => self.attr(ino),
            None => Err(FsError::NotFound),
        }
    }

    /// Opens `bits` or `stats` for reading (`flags` as `open(2)` got them);
    /// writing is refused. Returns the handle and the open flags.
    pub(crate) fn open(&self, ino: u64, flags: u32) -> Result<(u64, u32), FsError> {
        if ino == ROOT {
            return Err(FsError::IsADirectory);
        }
        self.attr(ino)?;
        if flags & u32::try_from(libc::O_ACCMODE).expect("a small mask")
            != u32::try_from(libc::O_RDONLY).expect("0")
        {
            return Err(FsError::ReadOnly);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if ino != STATS {
            return Ok((fh, BITS_OPEN));
        }
        let text = self.stats_text();
        let mut snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshots.len() >= MAX_STATS_OPENS {
            return Err(FsError::TooManyOpens);
        }
        snapshots.insert(fh, text);
        Ok((fh, STATS_OPEN))
    }

    fn stats_text(&self) -> Arc<[u8]> {
        match &self.bits {
            Source::Queue(queue) => {
                let mut snapshot = self.stats.snapshot(queue);
                snapshot.fuse_uring_queues = self.uring_queues.load(Ordering::Relaxed);
                snapshot.render().into_bytes().into()
            }
            Source::Zeros => Arc::from(&b""[..]),
        }
    }

    /// Forgets what `open` kept for `fh`.
    pub(crate) fn release(&self, fh: u64) {
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&fh);
    }

    /// Reads `size` bytes of `ino` at `offset` into `out`; `for_cache`
    /// when the kernel reads for its page cache, not for a `read()`.
    ///
    /// For `bits` that is always exactly `size` fresh bytes from the queue,
    /// waiting for the generator if need be; the offset is meaningless.
    pub(crate) fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        for_cache: bool,
        out: &mut impl Out,
    ) -> Result<(), FsError> {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        match ino {
            BITS if for_cache => Err(FsError::PageCache),
            BITS => self.read_bits(size, out),
            STATS => {
                let text = self
                    .snapshots
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&fh)
                    .cloned()
                    .ok_or(FsError::UnknownHandle)?;
                let start = usize::try_from(offset).map_or(text.len(), |o| o.min(text.len()));
                let end = start.saturating_add(size).min(text.len());
                out.send(&text[start..end]);
                Ok(())
            }
            ROOT => Err(FsError::IsADirectory),
            _ => Err(FsError::NotFound),
        }
    }

    fn read_bits(&self, size: usize, out: &mut impl Out) -> Result<(), FsError> {
        let served = || {
            stats::add(&self.stats.fuse_reads, 1);
            stats::add(&self.stats.bytes_served_fuse, size as u64);
        };
        let queue = match &self.bits {
            Source::Queue(queue) => queue,
            Source::Zeros => {
                served();
                out.send(&ZEROS[..size.min(ZEROS.len())]);
                return Ok(());
            }
        };
        // A read the front chunk answers whole is sent from it.
        if let Some(mut chunk) = queue.take_front(size) {
            served();
            out.send(chunk.unread());
            chunk.consume(size);
            queue.recycle([chunk]);
            return Ok(());
        }
        let buf = out.buffer(size)?;
        let discarded = queue
            .take_exact(buf)
            .map_err(|Closed| FsError::ShuttingDown)?;
        stats::add(&self.stats.bytes_discarded, discarded as u64);
        served();
        out.send_filled(size);
        Ok(())
    }

    /// The directory entries of `ino` from `offset` on, each with the offset
    /// at which the next `readdir` resumes after it.
    pub(crate) fn readdir(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = (u64, u64, u32, &'static str)>, FsError> {
        if ino != ROOT {
            return Err(FsError::NotADirectory);
        }
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(ENTRIES
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, &(ino, kind, name))| (ino, (i + 1) as u64, kind, name)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::units::low_byte;

    /// An [`Out`] that keeps what was sent, and how.
    #[derive(Debug, Default)]
    pub(crate) struct Kept {
        pub(crate) bytes: Vec<u8>,
        /// Whether the reply went through the reply buffer.
        pub(crate) buffered: bool,
        buffer: Vec<u8>,
    }

    impl Out for Kept {
        fn send(&mut self, bytes: &[u8]) {
            self.bytes = bytes.to_vec();
        }
        fn buffer(&mut self, len: usize) -> Result<&mut [u8], FsError> {
            self.buffered = true;
            self.buffer.resize(len, 0);
            Ok(&mut self.buffer)
        }
        fn send_filled(&mut self, len: usize) {
            self.bytes = self.buffer[..len].to_vec();
        }
    }

    /// Reads `size` bytes of `ino` into a fresh [`Kept`].
    pub(crate) fn read(
        d: &Filesystem,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Kept, FsError> {
        let mut out = Kept::default();
        d.read(ino, fh, offset, size, false, &mut out).map(|()| out)
    }

    /// A file system over a queue of four 64-byte chunks holding 0..64 each.
    pub(crate) fn filesystem() -> (Filesystem, Arc<ChunkQueue>) {
        let queue = Arc::new(ChunkQueue::new(64, 4096));
        let mut chunks = Vec::new();
        queue.reserve(4, &mut chunks).unwrap();
        for c in &mut chunks {
            c.refill(|b| b.iter_mut().enumerate().for_each(|(i, x)| *x = low_byte(i)));
        }
        queue.push(&mut chunks);
        let d = Filesystem::new(
            Source::Queue(queue.clone()),
            Arc::new(Stats::default()),
            1000,
            1000,
            MODE,
        );
        (d, queue)
    }

    const RDONLY: u32 = 0;

    /// `--group`: the files and the root are the group's, and nobody
    /// else's to read or search.
    #[test]
    fn a_group_device_is_the_groups_alone() {
        let queue = Arc::new(ChunkQueue::new(64, 4096));
        let d = Filesystem::new(
            Source::Queue(queue),
            Arc::new(Stats::default()),
            0,
            100,
            GROUP_MODE,
        );
        for ino in [BITS, STATS] {
            let a = d.attr(ino).unwrap();
            assert_eq!((a.uid, a.gid, a.mode), (0, 100, libc::S_IFREG | 0o440));
        }
        assert_eq!(d.attr(ROOT).unwrap().mode, libc::S_IFDIR | 0o550);
    }

    #[test]
    fn lookup_and_attributes() {
        let (d, _) = filesystem();
        let bits = d.lookup(ROOT, OsStr::new("bits")).unwrap();
        assert_eq!((bits.ino, bits.mode), (BITS, libc::S_IFREG | 0o444));
        assert_eq!((bits.uid, bits.gid), (1000, 1000));
        assert_eq!(d.lookup(ROOT, OsStr::new("stats")).unwrap().ino, STATS);
        assert_eq!(d.lookup(ROOT, OsStr::new("nope")), Err(FsError::NotFound));
        assert_eq!(d.lookup(ROOT, OsStr::new(".")), Err(FsError::NotFound));
        assert_eq!(d.lookup(BITS, OsStr::new("x")), Err(FsError::NotADirectory));
        assert_eq!(d.attr(99), Err(FsError::NotFound));
        assert_eq!(d.attr(ROOT).unwrap().mode, libc::S_IFDIR | 0o555);
    }

    #[test]
    fn each_cause_has_its_errno() {
        for (cause, errno) in [
            (FsError::NotFound, libc::ENOENT),
            (FsError::NotADirectory, libc::ENOTDIR),
            (FsError::IsADirectory, libc::EISDIR),
            (FsError::PageCache, libc::EINVAL),
            (FsError::ReadOnly, libc::EACCES),
            (FsError::TooManyOpens, libc::ENFILE),
            (FsError::UnknownHandle, libc::EBADF),
            (FsError::ShuttingDown, libc::EIO),
            (FsError::OutOfMemory, libc::ENOMEM),
        ] {
            assert_eq!(cause.errno(), errno, "{cause:?}");
        }
        assert_eq!(
            [name(BITS), name(STATS), name(ROOT), name(9)],
            ["bits", "stats", "the root", "an unknown inode"]
        );
    }

    #[test]
    fn open_is_direct_unflushed_and_read_only() {
        let (d, _) = filesystem();
        let (_, flags) = d.open(BITS, RDONLY).unwrap();
        assert_eq!(flags, FOPEN_DIRECT_IO | FOPEN_STREAM | FOPEN_NOFLUSH);
        let (_, flags) = d.open(STATS, RDONLY).unwrap();
        assert_eq!(flags, FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE | FOPEN_NOFLUSH);
        let wronly = u32::try_from(libc::O_WRONLY).unwrap();
        let rdwr = u32::try_from(libc::O_RDWR).unwrap();
        assert_eq!(d.open(BITS, wronly), Err(FsError::ReadOnly));
        assert_eq!(d.open(BITS, rdwr), Err(FsError::ReadOnly));
        assert_eq!(d.open(ROOT, RDONLY), Err(FsError::IsADirectory));
        assert_eq!(d.open(9, RDONLY), Err(FsError::NotFound));
    }

    #[test]
    fn bits_reads_hand_out_each_byte_once() {
        let (d, queue) = filesystem();
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        let a = read(&d, BITS, fh, 0, 100).unwrap().bytes;
        // The offset is ignored: the next read continues the stream.
        let b = read(&d, BITS, fh, 0, 28).unwrap().bytes;
        assert_eq!(a.len(), 100);
        assert_eq!(b.len(), 28);
        let expected: Vec<u8> = (0..128).map(|i| low_byte(i % 64)).collect();
        assert_eq!([a, b].concat(), expected);
        let text = d.stats.snapshot(&queue).render();
        assert!(text.contains("bytes_served_fuse 128\n"), "{text}");
        assert!(text.contains("fuse_reads 2\n"), "{text}");
    }

    /// `bits` shows a size, but the page cache gets none of its bytes: a
    /// read for it is refused and takes nothing from the queue.
    #[test]
    fn bits_has_a_size_but_no_page_cache_reads() {
        let (d, queue) = filesystem();
        assert_eq!(d.attr(BITS).unwrap().size, BITS_SIZE);
        assert_eq!(d.attr(STATS).unwrap().size, 0);
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        let mut out = Kept::default();
        assert_eq!(
            d.read(BITS, fh, 0, 64, true, &mut out),
            Err(FsError::PageCache)
        );
        assert_eq!(queue.queued_bytes(), 256, "nothing taken");
        assert_eq!(read(&d, BITS, fh, 0, 64).unwrap().bytes.len(), 64);
    }

    /// Held opens of `stats` are bounded: one past the limit fails, and
    /// a release makes room again.
    #[test]
    fn held_opens_of_stats_are_bounded() {
        let (d, _) = filesystem();
        let held: Vec<u64> = (0..MAX_STATS_OPENS)
            .map(|_| d.open(STATS, RDONLY).unwrap().0)
            .collect();
        assert_eq!(d.open(STATS, RDONLY), Err(FsError::TooManyOpens));
        assert!(d.open(BITS, RDONLY).is_ok(), "bits keeps nothing");
        d.release(held[0]);
        assert!(d.open(STATS, RDONLY).is_ok());
    }

    #[test]
    fn stats_reads_a_frozen_snapshot() {
        let (d, _) = filesystem();
        let (fh, _) = d.open(STATS, RDONLY).unwrap();
        let whole = read(&d, STATS, fh, 0, 1 << 16).unwrap().bytes;
        let text = String::from_utf8(whole.clone()).unwrap();
        assert!(text.starts_with("bytes_generated "), "{text}");
        // Reading in pieces gives the same snapshot, then end of file.
        let (fh2, _) = d.open(STATS, RDONLY).unwrap();
        let mut pieces = Vec::new();
        loop {
            let piece = read(&d, STATS, fh2, pieces.len() as u64, 7).unwrap().bytes;
            if piece.is_empty() {
                break;
            }
            pieces.extend(piece);
        }
        assert_eq!(pieces, whole);
        d.release(fh2);
        assert_eq!(
            read(&d, STATS, fh2, 0, 10).unwrap_err(),
            FsError::UnknownHandle
        );
    }

    #[test]
    fn readdir_lists_entries_from_an_offset() {
        let (d, _) = filesystem();
        let names = |offset| -> Vec<(&str, u64)> {
            d.readdir(ROOT, offset)
                .unwrap()
                .map(|(_, next, _, name)| (name, next))
                .collect()
        };
        assert_eq!(names(0), [(".", 1), ("..", 2), ("bits", 3), ("stats", 4)]);
        // Resuming at an entry's offset gives the entries after it.
        assert_eq!(names(3), [("stats", 4)]);
        assert!(names(4).is_empty());
        assert!(names(u64::MAX).is_empty());
        let (ino, _, kind, _) = d.readdir(ROOT, 2).unwrap().next().unwrap();
        assert_eq!((ino, kind), (BITS, DT_REG));
        assert!(matches!(d.readdir(BITS, 0), Err(FsError::NotADirectory)));
        assert!(matches!(d.readdir(9, 0), Err(FsError::NotADirectory)));
    }

    /// A read of what the front chunk holds is answered from the chunk
    /// itself: the reply buffer is never touched. The stream goes on in
    /// order across both kinds of read.
    #[test]
    fn a_read_of_one_whole_chunk_is_sent_from_the_chunk() {
        let (d, queue) = filesystem();
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        let whole = read(&d, BITS, fh, 0, 64).unwrap();
        assert!(!whole.buffered, "copied through the reply buffer");
        let part = read(&d, BITS, fh, 0, 10).unwrap();
        assert!(part.buffered);
        // The rest of the front chunk: from the chunk again.
        let rest = read(&d, BITS, fh, 0, 54).unwrap();
        assert!(!rest.buffered);
        let expected: Vec<u8> = (0..128).map(|i| low_byte(i % 64)).collect();
        assert_eq!([whole.bytes, part.bytes, rest.bytes].concat(), expected);
        let text = d.stats.snapshot(&queue).render();
        assert!(text.contains("bytes_served_fuse 128\n"), "{text}");
        assert!(text.contains("fuse_reads 3\n"), "{text}");
    }

    #[test]
    fn reads_fail_with_eio_after_close() {
        let (d, queue) = filesystem();
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        queue.close();
        assert_eq!(
            read(&d, BITS, fh, 0, 10).unwrap_err(),
            FsError::ShuttingDown
        );
    }

    #[test]
    fn the_null_device_serves_zeros_and_counts_them() {
        let d = Filesystem::new(Source::Zeros, Arc::new(Stats::default()), 0, 0, MODE);
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        let got = read(&d, BITS, fh, 0, 4096).unwrap();
        assert_eq!(got.bytes, vec![0u8; 4096]);
        assert_eq!(d.stats.fuse_reads.load(Ordering::Relaxed), 1);
    }
}
