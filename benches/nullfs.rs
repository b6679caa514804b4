//! A null FUSE server, the yardstick for pilfered's FUSE reads:
//! `nullfs MOUNTPOINT` serves one file, `bits`, whose reads return zeros at
//! once, mounted and opened exactly as pilfered's (direct I/O,
//! non-seekable, 2 session threads, cloned fds). Whatever it cannot beat is
//! the cost of FUSE itself. It runs until SIGINT or SIGTERM, then unmounts.
//! Used by `benches/throughput.sh`; not part of pilfered.

use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
    Session,
};

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
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE,
        );
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
    let mount = std::env::args().nth(1).expect("usage: nullfs MOUNTPOINT");
    let mut config = Config::default();
    config.mount_options = vec![MountOption::RO, MountOption::FSName("nullfs".into())];
    config.n_threads = Some(2);
    config.clone_fd = true;
    let mut session = Session::new(Null, &mount, &config).expect("mount");
    let mut unmounter = session.unmount_callable();
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.thread_block().expect("block signals");
    std::thread::spawn(move || session.run());
    signals.wait().expect("wait for a signal");
    unmounter.unmount().expect("unmount");
}
