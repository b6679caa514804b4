//! The FUSE file system: a root directory holding `bits` (endless random
//! bytes) and `stats` (the daemon's counters).
//!
//! [`Device`] is the core: plain methods returning `Result<_, FsError>`, tested
//! without a mount. The `fuser::Filesystem` impl below only translates
//! requests into those calls and replies.
//!
//! `bits` is opened with direct I/O and as non-seekable: the kernel then
//! passes every read straight to us (no page cache, so no byte is served
//! twice and its size of 0 does not end reads) and refuses `lseek` and `mmap`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    IoctlFlags, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyXattr, Request, Session, SessionACL,
};
use log::{debug, warn};
use zeroize::Zeroize;

use crate::engine::queue::{ChunkQueue, Closed};
use crate::engine::stats::{self, Stats};

/// Inode of `bits`.
pub(crate) const BITS: INodeNo = INodeNo(2);
/// Inode of `stats`.
pub(crate) const STATS: INodeNo = INodeNo(3);

/// Mode of `bits` and `stats`: readable by all whom the mount lets in.
pub(crate) const MODE: u16 = 0o444;
/// Their mode with `--group`: the mount lets everyone in (allow_other), and
/// the kernel (default_permissions) lets the owner and the group read.
pub(crate) const GROUP_MODE: u16 = 0o440;

/// The attributes never change while mounted, so the kernel may cache them.
const TTL: Duration = Duration::from_secs(1);

/// How every file is opened: direct I/O, so that the kernel passes each read
/// to us and never serves bytes from (or keeps them in) its page cache, and
/// non-seekable.
pub const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO.union(FopenFlags::FOPEN_NONSEEKABLE);

/// A FUSE session serving `fs` (pilfered's is `Fs(device)`; the
/// benchmark's null server uses the same) on the connection `fd` from
/// `mounts::mount_fuse`, with `threads` session threads, each with
/// its own cloned `/dev/fuse` descriptor where this process may open
/// `/dev/fuse` (else they share one), and only the mounting user let in
/// unless `allow_other`.
pub fn session<F: Filesystem>(
    fs: F,
    fd: OwnedFd,
    threads: usize,
    allow_other: bool,
) -> io::Result<Session<F>> {
    let acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let mut config = Config::default();
    config.acl = acl;
    config.n_threads = Some(threads);
    config.clone_fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    Session::from_fd(fs, fd, acl, config)
}

/// Why [`Device`] refused a request: one case per cause, so that the
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
    /// Opened for writing: the device is read-only.
    ReadOnly,
    /// A `stats` read on a handle that was never opened or already released.
    UnknownHandle,
    /// The queue is closed: the daemon is shutting down.
    ShuttingDown,
    /// A reply buffer could not grow: memory is short.
    OutOfMemory,
}

impl FsError {
    /// The errno the request fails with.
    pub(crate) fn errno(self) -> Errno {
        match self {
            FsError::NotFound => Errno::ENOENT,
            FsError::NotADirectory => Errno::ENOTDIR,
            FsError::IsADirectory => Errno::EISDIR,
            // A judgement call: the mount is read-only too (EROFS), but the
            // kernel asks us only after its own permission check, and the
            // file's mode (0444) is what refuses writing.
            FsError::ReadOnly => Errno::EACCES,
            FsError::UnknownHandle => Errno::EBADF,
            // What a reader of a device that went away gets.
            FsError::ShuttingDown => Errno::EIO,
            FsError::OutOfMemory => Errno::ENOMEM,
        }
    }

    /// Logs a refusal of `what` (such as "read of 4096 bytes of bits") if
    /// its cause is worth a line: a shutdown (at debug level, as every
    /// waiting reader gets one) or short memory. The other causes are a
    /// program's ordinary questions answered no.
    fn log(self, what: &str) {
        match self {
            FsError::ShuttingDown => debug!("{what} refused: the daemon is shutting down"),
            FsError::OutOfMemory => warn!("{what} refused: out of memory"),
            FsError::NotFound
            | FsError::NotADirectory
            | FsError::IsADirectory
            | FsError::ReadOnly
            | FsError::UnknownHandle => {}
        }
    }
}

const ENTRIES: [(INodeNo, FileType, &str); 4] = [
    (INodeNo::ROOT, FileType::Directory, "."),
    (INodeNo::ROOT, FileType::Directory, ".."),
    (BITS, FileType::RegularFile, "bits"),
    (STATS, FileType::RegularFile, "stats"),
];

/// The name of inode `ino`, for messages: `bits`, `stats` or `the root`.
fn name(ino: INodeNo) -> &'static str {
    match ENTRIES[2..].iter().find(|e| e.0 == ino) {
        Some(&(_, _, name)) => name,
        None if ino == INodeNo::ROOT => "the root",
        None => "an unknown inode",
    }
}

/// The file system's state and logic, independent of FUSE plumbing.
#[derive(Debug)]
pub(crate) struct Device {
    queue: Arc<ChunkQueue>,
    stats: Arc<Stats>,
    uid: u32,
    gid: u32,
    /// Of the files; the root adds search (x) where it may be read.
    mode: u16,
    mounted_at: SystemTime,
    /// Text of `stats` frozen at open, so that reads at growing offsets see
    /// one consistent snapshot.
    snapshots: Mutex<HashMap<u64, Arc<[u8]>>>,
    next_fh: AtomicU64,
}

thread_local! {
    /// Each FUSE thread's reply buffer for reads that no one chunk answers,
    /// grown once to the largest read and wiped after every reply. (The
    /// emptied chunks its bytes came from keep them until they are refilled
    /// or dropped, as do the chunks replied from directly: see `queue`.)
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Device {
    /// A device serving `queue`, owned by `uid`/`gid`, its files of `mode`
    /// ([`MODE`] or [`GROUP_MODE`]).
    pub(crate) fn new(
        queue: Arc<ChunkQueue>,
        stats: Arc<Stats>,
        uid: u32,
        gid: u32,
        mode: u16,
    ) -> Self {
        Device {
            queue,
            stats,
            uid,
            gid,
            mode,
            mounted_at: SystemTime::now(),
            snapshots: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    /// Attributes of inode `ino`.
    pub(crate) fn attr(&self, ino: INodeNo) -> Result<FileAttr, FsError> {
        let (kind, perm, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, self.mode | (self.mode & 0o444) >> 2, 2),
            BITS | STATS => (FileType::RegularFile, self.mode, 1),
            _ => return Err(FsError::NotFound),
        };
        Ok(FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }

    /// Looks `name` up in directory `parent`.
    pub(crate) fn lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, FsError> {
        if parent != INodeNo::ROOT {
            return Err(FsError::NotADirectory);
        }
        match ENTRIES[2..].iter().find(|e| OsStr::new(e.2) == name) {
            Some(&(ino, _, _)) => self.attr(ino),
            None => Err(FsError::NotFound),
        }
    }

    /// Opens `bits` or `stats` for reading; writing is refused.
    pub(crate) fn open(
        &self,
        ino: INodeNo,
        flags: OpenFlags,
    ) -> Result<(FileHandle, FopenFlags), FsError> {
        if ino == INodeNo::ROOT {
            return Err(FsError::IsADirectory);
        }
        self.attr(ino)?;
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return Err(FsError::ReadOnly);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if ino == STATS {
            let text: Arc<[u8]> = self
                .stats
                .snapshot(&self.queue)
                .render()
                .into_bytes()
                .into();
            self.snapshots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(fh, text);
        }
        Ok((FileHandle(fh), OPEN_FLAGS))
    }

    /// Forgets what `open` kept for `fh`.
    pub(crate) fn release(&self, fh: FileHandle) {
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&fh.0);
    }

    /// Reads `size` bytes of `ino` at `offset` and hands them to `send`.
    ///
    /// For `bits` that is always exactly `size` fresh bytes from the queue,
    /// waiting for the generator if need be; the offset is meaningless.
    pub(crate) fn read<R>(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        send: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, FsError> {
        match ino {
            BITS => {
                let size = size as usize;
                let served = || {
                    stats::add(&self.stats.fuse_reads, 1);
                    stats::add(&self.stats.bytes_served_fuse, size as u64);
                };
                // A read the front chunk answers whole is sent from it.
                if let Some(mut chunk) = self.queue.take_front(size) {
                    served();
                    let sent = send(chunk.unread());
                    chunk.consume(size);
                    self.queue.recycle([chunk]);
                    return Ok(sent);
                }
                READ_BUF.with_borrow_mut(|buf| {
                    grow(buf, size)?;
                    let out = &mut buf[..size];
                    let discarded = self
                        .queue
                        .take_exact(out)
                        .map_err(|Closed| FsError::ShuttingDown)?;
                    stats::add(&self.stats.bytes_discarded, discarded as u64);
                    served();
                    let sent = send(out);
                    // The reply has been written to the kernel: wipe our copy.
                    out.zeroize();
                    Ok(sent)
                })
            }
            STATS => {
                let text = self
                    .snapshots
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&fh.0)
                    .cloned()
                    .ok_or(FsError::UnknownHandle)?;
                let start = usize::try_from(offset).map_or(text.len(), |o| o.min(text.len()));
                let end = start.saturating_add(size as usize).min(text.len());
                Ok(send(&text[start..end]))
            }
            INodeNo::ROOT => Err(FsError::IsADirectory),
            _ => Err(FsError::NotFound),
        }
    }

    /// The directory entries of `ino` from `offset` on, each with the offset
    /// at which the next `readdir` resumes after it.
    pub(crate) fn readdir(
        &self,
        ino: INodeNo,
        offset: u64,
    ) -> Result<impl Iterator<Item = (INodeNo, u64, FileType, &'static str)>, FsError> {
        if ino != INodeNo::ROOT {
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

/// Grows a reply buffer to at least `size` bytes without aborting when
/// memory is short: the read then fails with ENOMEM instead.
fn grow(buf: &mut Vec<u8>, size: usize) -> Result<(), FsError> {
    if buf.len() < size {
        buf.try_reserve_exact(size - buf.len())
            .map_err(|_| FsError::OutOfMemory)?;
        // Within the capacity just reserved: cannot allocate.
        buf.resize(size, 0);
    }
    Ok(())
}

/// The `fuser` adapter around [`Device`].
#[derive(Debug)]
pub(crate) struct Fs(pub Device);

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.0.lookup(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.attr(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.0.open(ino, flags) {
            Ok((fh, open_flags)) => reply.opened(fh, open_flags),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // `reply` moves into the closure only on success; keep a way to
        // answer errors by routing both through one Result.
        let mut reply = Some(reply);
        let result = self.0.read(ino, fh, offset, size, |data| {
            reply.take().expect("replied once").data(data)
        });
        if let (Err(e), Some(reply)) = (result, reply) {
            e.log(&format!("read of {size} bytes of {}", name(ino)));
            reply.error(e.errno());
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush.
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        // No extended attributes: an empty list.
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // Programs probe files with ioctls (Python asks TCGETS: "is this a
        // terminal?"); ENOTTY is the standard "no such ioctl here".
        reply.error(Errno::ENOTTY);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0.release(fh);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.0.readdir(ino, offset) {
            Ok(entries) => {
                for (ino, next, kind, name) in entries {
                    // True once the kernel's buffer is full.
                    if reply.add(ino, next, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e.errno()),
        }
    }
}

#[cfg(test)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "test data: byte patterns that wrap on purpose"
)]
mod tests {
    use super::*;

    fn device() -> Device {
        let queue = Arc::new(ChunkQueue::new(64, 4096));
        let mut chunks = Vec::new();
        queue.reserve(4, &mut chunks).unwrap();
        for c in &mut chunks {
            c.refill(|b| b.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8));
        }
        queue.push(&mut chunks);
        Device::new(queue, Arc::new(Stats::default()), 1000, 1000, MODE)
    }

    const RDONLY: OpenFlags = OpenFlags(libc::O_RDONLY);

    /// `--group`: the files and the root are the group's, and nobody
    /// else's to read or search.
    #[test]
    fn a_group_device_is_the_groups_alone() {
        let queue = Arc::new(ChunkQueue::new(64, 4096));
        let d = Device::new(queue, Arc::new(Stats::default()), 0, 100, GROUP_MODE);
        for ino in [BITS, STATS] {
            let a = d.attr(ino).unwrap();
            assert_eq!((a.uid, a.gid, a.perm), (0, 100, 0o440));
        }
        assert_eq!(d.attr(INodeNo::ROOT).unwrap().perm, 0o550);
    }

    #[test]
    fn lookup_and_attributes() {
        let d = device();
        let bits = d.lookup(INodeNo::ROOT, OsStr::new("bits")).unwrap();
        assert_eq!((bits.ino, bits.perm, bits.size), (BITS, 0o444, 0));
        assert_eq!(bits.kind, FileType::RegularFile);
        assert_eq!((bits.uid, bits.gid), (1000, 1000));
        assert_eq!(
            d.lookup(INodeNo::ROOT, OsStr::new("stats")).unwrap().ino,
            STATS
        );
        assert_eq!(d.attr(INodeNo::ROOT).unwrap().perm, 0o555);
        assert_eq!(
            d.lookup(INodeNo::ROOT, OsStr::new("nope")),
            Err(FsError::NotFound)
        );
        assert_eq!(
            d.lookup(INodeNo::ROOT, OsStr::new(".")),
            Err(FsError::NotFound)
        );
        assert_eq!(d.lookup(BITS, OsStr::new("x")), Err(FsError::NotADirectory));
        assert_eq!(d.attr(INodeNo(99)), Err(FsError::NotFound));
        assert_eq!(d.attr(INodeNo::ROOT).unwrap().kind, FileType::Directory);
    }

    #[test]
    fn each_cause_has_its_errno() {
        for (cause, errno) in [
            (FsError::NotFound, Errno::ENOENT),
            (FsError::NotADirectory, Errno::ENOTDIR),
            (FsError::IsADirectory, Errno::EISDIR),
            (FsError::ReadOnly, Errno::EACCES),
            (FsError::UnknownHandle, Errno::EBADF),
            (FsError::ShuttingDown, Errno::EIO),
            (FsError::OutOfMemory, Errno::ENOMEM),
        ] {
            assert_eq!(cause.errno(), errno, "{cause:?}");
        }
        assert_eq!(
            [
                name(BITS),
                name(STATS),
                name(INodeNo::ROOT),
                name(INodeNo(9))
            ],
            ["bits", "stats", "the root", "an unknown inode"]
        );
    }

    #[test]
    fn open_is_direct_nonseekable_and_read_only() {
        let d = device();
        let (_, flags) = d.open(BITS, RDONLY).unwrap();
        assert!(flags.contains(FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE));
        assert_eq!(
            d.open(BITS, OpenFlags(libc::O_WRONLY)),
            Err(FsError::ReadOnly)
        );
        assert_eq!(
            d.open(BITS, OpenFlags(libc::O_RDWR)),
            Err(FsError::ReadOnly)
        );
        assert_eq!(d.open(INodeNo::ROOT, RDONLY), Err(FsError::IsADirectory));
        assert_eq!(d.open(INodeNo(9), RDONLY), Err(FsError::NotFound));
    }

    #[test]
    fn bits_reads_hand_out_each_byte_once() {
        let d = device();
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        let a = d.read(BITS, fh, 0, 100, <[u8]>::to_vec).unwrap();
        // The offset is ignored: the next read continues the stream.
        let b = d.read(BITS, fh, 0, 28, <[u8]>::to_vec).unwrap();
        assert_eq!(a.len(), 100);
        assert_eq!(b.len(), 28);
        let expected: Vec<u8> = (0..128).map(|i| (i % 64) as u8).collect();
        assert_eq!([a, b].concat(), expected);
        let text = d.stats.snapshot(&d.queue).render();
        assert!(text.contains("bytes_served_fuse 128\n"), "{text}");
        assert!(text.contains("fuse_reads 2\n"), "{text}");
    }

    #[test]
    fn stats_reads_a_frozen_snapshot() {
        let d = device();
        let (fh, _) = d.open(STATS, RDONLY).unwrap();
        let whole = d.read(STATS, fh, 0, 1 << 16, <[u8]>::to_vec).unwrap();
        let text = String::from_utf8(whole.clone()).unwrap();
        assert!(text.starts_with("bytes_generated "), "{text}");
        // Reading in pieces gives the same snapshot, then end of file.
        let (fh2, _) = d.open(STATS, RDONLY).unwrap();
        let mut pieces = Vec::new();
        loop {
            let piece = d
                .read(STATS, fh2, pieces.len() as u64, 7, <[u8]>::to_vec)
                .unwrap();
            if piece.is_empty() {
                break;
            }
            pieces.extend(piece);
        }
        assert_eq!(pieces, whole);
        d.release(fh2);
        assert_eq!(
            d.read(STATS, fh2, 0, 10, <[u8]>::len),
            Err(FsError::UnknownHandle)
        );
    }

    #[test]
    fn readdir_lists_entries_from_an_offset() {
        let d = device();
        let names = |offset| -> Vec<(&str, u64)> {
            d.readdir(INodeNo::ROOT, offset)
                .unwrap()
                .map(|(_, next, _, name)| (name, next))
                .collect()
        };
        assert_eq!(names(0), [(".", 1), ("..", 2), ("bits", 3), ("stats", 4)]);
        // Resuming at an entry's offset gives the entries after it.
        assert_eq!(names(3), [("stats", 4)]);
        assert!(names(4).is_empty());
        assert!(names(u64::MAX).is_empty());
        let (ino, _, kind, _) = d.readdir(INodeNo::ROOT, 2).unwrap().next().unwrap();
        assert_eq!((ino, kind), (BITS, FileType::RegularFile));
        assert!(matches!(d.readdir(BITS, 0), Err(FsError::NotADirectory)));
        assert!(matches!(
            d.readdir(INodeNo(9), 0),
            Err(FsError::NotADirectory)
        ));
    }

    /// A read of what the front chunk holds is answered from the chunk
    /// itself: the reply buffer is never touched. The stream goes on in
    /// order across both kinds of read.
    #[test]
    fn a_read_of_one_whole_chunk_is_sent_from_the_chunk() {
        let d = device();
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        let whole = d.read(BITS, fh, 0, 64, <[u8]>::to_vec).unwrap();
        READ_BUF.with_borrow(|buf| assert!(buf.is_empty(), "copied through the reply buffer"));
        let part = d.read(BITS, fh, 0, 10, <[u8]>::to_vec).unwrap();
        // The rest of the front chunk: from the chunk again.
        let rest = d.read(BITS, fh, 0, 54, <[u8]>::to_vec).unwrap();
        READ_BUF.with_borrow(|buf| assert_eq!(buf.len(), 10));
        let expected: Vec<u8> = (0..128).map(|i| (i % 64) as u8).collect();
        assert_eq!([whole, part, rest].concat(), expected);
        let text = d.stats.snapshot(&d.queue).render();
        assert!(text.contains("bytes_served_fuse 128\n"), "{text}");
        assert!(text.contains("fuse_reads 3\n"), "{text}");
    }

    /// What a thread served is not left in its reply buffer.
    #[test]
    fn the_reply_buffer_is_wiped_after_each_read() {
        let d = device();
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        let served = d.read(BITS, fh, 0, 100, <[u8]>::to_vec).unwrap();
        assert!(served.iter().any(|&b| b != 0));
        READ_BUF.with_borrow(|buf| {
            assert!(buf.len() >= 100);
            assert!(buf.iter().all(|&b| b == 0), "served bytes left behind");
        });
    }

    /// A reply buffer that cannot grow makes the read fail with ENOMEM
    /// rather than abort the daemon.
    #[test]
    fn reply_buffer_growth_is_fallible() {
        let mut buf = vec![1u8; 10];
        assert_eq!(grow(&mut buf, usize::MAX), Err(FsError::OutOfMemory));
        assert_eq!(buf.len(), 10);
        assert_eq!(grow(&mut buf, 100), Ok(()));
        assert_eq!(buf.len(), 100);
    }

    #[test]
    fn reads_fail_with_eio_after_close() {
        let d = device();
        let (fh, _) = d.open(BITS, RDONLY).unwrap();
        d.queue.close();
        assert_eq!(
            d.read(BITS, fh, 0, 10, <[u8]>::len),
            Err(FsError::ShuttingDown)
        );
    }
}
