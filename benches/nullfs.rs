//! A null FUSE server, the ceiling for pilfered's FUSE reads:
//! `nullfs MOUNTPOINT [THREADS]` serves one file, `bits`, whose reads return
//! zeros at once. It is mounted with pilfered's own [`fs::mount_config`]
//! (the same options, `THREADS` session threads, default 2 as pilfered's
//! `--fuse-threads`, each with a cloned `/dev/fuse` descriptor) and opens
//! `bits` with pilfered's own [`fs::OPEN_FLAGS`], so it differs from
//! pilfered only in the bytes it returns (and in the name it shows in
//! `/proc/mounts`). Whatever pilfered reaches against it is the share of
//! what FUSE allows. It runs until SIGINT or SIGTERM, then unmounts.
//! Used by `benches/throughput.sh`; not part of pilfered.

use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request, Session,
};
use pilfered::fs;

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
        reply.opened(FileHandle(0), fs::OPEN_FLAGS);
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
    let mut config = fs::mount_config(threads, false);
    // Only the names differ, so that nothing takes this for a pilfered mount.
    for option in config.mount_options.iter_mut() {
        match option {
            MountOption::FSName(_) => *option = MountOption::FSName("nullfs".into()),
            MountOption::CUSTOM(o) if o.starts_with("subtype=") => {
                *option = MountOption::CUSTOM("subtype=nullfs".into())
            }
            _ => {}
        }
    }
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
