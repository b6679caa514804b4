//! A null FUSE server, the ceiling for pilfered's FUSE reads:
//! `nullfs MOUNTPOINT [THREADS]` serves one file, `bits`, whose reads return
//! zeros at once. It is mounted by pilfered's own [`mounts::mount_fuse`]
//! (the same mount call and options) and served by pilfered's own
//! [`session`] (`THREADS` session threads, default 2 as pilfered's
//! `--fuse-threads`, each with a cloned `/dev/fuse` descriptor), and opens
//! `bits` with pilfered's own [`OPEN_FLAGS`], so it differs from
//! pilfered only in the bytes it returns. Whatever pilfered reaches against it is the share of
//! what FUSE allows. It runs until SIGINT or SIGTERM, then unmounts.
//! Used by `benches/throughput.sh`; not part of pilfered.

use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
};
use pilfered::internal::{OPEN_FLAGS, mounts, session};

const BITS: INodeNo = INodeNo(2);
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

fn attr(ino: INodeNo) -> FileAttr {
    let (kind, perm) = if ino == INodeNo::ROOT {
        (FileType::Directory, 0o555)
    } else {
        (FileType::RegularFile, 0o444)
    };
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

struct Null;

impl Filesystem for Null {
    fn lookup(&self, _req: &Request, _parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if name == "bits" {
            reply.entry(&Duration::from_secs(1), &attr(BITS), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&Duration::from_secs(1), &attr(ino));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), OPEN_FLAGS);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.data(&ZEROS[..(size as usize).min(ZEROS.len())]);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mount = args.next().expect("usage: nullfs MOUNTPOINT [THREADS]");
    let threads = args
        .next()
        .map_or(2, |t| t.parse().expect("THREADS is a number"));
    let mount = std::path::absolute(&mount).expect("an absolute path");
    let dir: std::os::fd::OwnedFd = std::fs::File::open(&mount).expect("open MOUNTPOINT").into();
    // pilfered's own mount and session: only the bytes differ.
    let (fd, mounted) = mounts::mount_fuse(&dir, &mount, false).expect("mount");
    let session = session(Null, fd, threads, false).expect("FUSE session");
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.thread_block().expect("block signals");
    std::thread::spawn(move || session.run());
    signals.wait().expect("wait for a signal");
    mounted.unmount().expect("unmount");
}
