//! `FUSE_NOTIFY_RESEND` against this machine's kernel, on a real mount:
//! what crash failover relies on, and where it stops.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::*;
use crate::serve::fuse::legacy::write_reply;
use crate::sys::{mounts, raw};

/// Detaches the mount even if the test panics.
struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = mounts::detach(&self.0);
    }
}

/// The next request on `fd`, waiting at most 10 s.
fn next(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
        assert!(ready > 0, "the kernel sent no request within 10 s");
        match nix::unistd::read(fd, &mut buf) {
            Ok(n) => return buf[..n].to_vec(),
            Err(Errno::EINTR | Errno::ENOENT) => {}
            Err(e) => panic!("reading /dev/fuse: {e}"),
        }
    }
}

/// Answers what a lookup under the root needs (the root's attributes,
/// other names: ENOENT) until `LOOKUP name` comes, and returns its
/// `unique` unanswered.
fn lookup_of(fd: BorrowedFd<'_>, name: &str) -> u64 {
    loop {
        let req = next(fd);
        let (h, op_in, payload) = split(&req).unwrap();
        match parse(h.opcode, op_in, payload).unwrap() {
            Op::Lookup { name: n } if n == name => return h.unique,
            Op::Lookup { .. } => write_reply(fd, h.unique, libc::ENOENT, &[]),
            Op::GetAttr => {
                let root = Attr {
                    ino: 1,
                    mode: libc::S_IFDIR | 0o755,
                    nlink: 2,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    time: (0, 0),
                    blksize: 4096,
                };
                write_reply(fd, h.unique, 0, &attr_out(&root, 0));
            }
            Op::Forget | Op::Interrupt => {}
            _ => write_reply(fd, h.unique, libc::ENOSYS, &[]),
        }
    }
}

/// Mounts a FUSE file system on a new directory in `tmp` and answers its
/// INIT, granting FUSE_HAS_RESEND: the connection.
fn mounted(tmp: &Path) -> (OwnedFd, Detach) {
    let mnt = tmp.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let dir: OwnedFd = std::fs::File::open(&mnt).unwrap().into();
    let (dev, _) = mounts::mount_fuse(&dir, &mnt, false).expect("mount");
    let detach = Detach(mnt);
    let req = next(dev.as_fd());
    let (h, op_in, payload) = split(&req).unwrap();
    let Ok(Op::Init {
        max_readahead,
        flags,
        ..
    }) = parse(h.opcode, op_in, payload)
    else {
        panic!("the first request is not INIT");
    };
    assert!(
        flags & init::HAS_RESEND != 0,
        "this kernel ({}) does not offer FUSE_HAS_RESEND (Linux 6.9+): a daemon restarted after a crash cannot have its predecessor's requests sent again",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let reply = InitReply {
        max_readahead,
        flags: flags & (init::INIT_EXT | init::MAX_PAGES | init::HAS_RESEND),
        max_background: 16,
        congestion_threshold: 12,
        max_write: 4096,
        max_pages: 256,
    };
    write_reply(dev.as_fd(), h.unique, 0, &init_out(&reply));
    (dev, detach)
}

/// A request a daemon took and never answered, before it died with its
/// descriptor still held elsewhere (as systemd's store holds it), is sent
/// again, marked, on FUSE_NOTIFY_RESEND from the next daemon; answered
/// then, its reader sees that answer alone.
#[test]
fn the_kernel_sends_again_what_a_dead_daemon_had_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let (dev, detach) = mounted(tmp.path());
    let stored = dev.try_clone().unwrap();
    let path = detach.0.join("x");
    std::thread::scope(|s| {
        let reader = s.spawn(|| std::fs::symlink_metadata(&path).unwrap_err());
        let first = lookup_of(dev.as_fd(), "x");
        assert_eq!(first & UNIQUE_RESEND, 0);
        drop(dev);
        let n = nix::unistd::write(&stored, &notification(notify::RESEND, 0)).unwrap();
        assert_eq!(n, OUT_HEADER, "the kernel took the notification");
        let again = lookup_of(stored.as_fd(), "x");
        assert_eq!(again, first | UNIQUE_RESEND);
        write_reply(stored.as_fd(), again, libc::ENOENT, &[]);
        assert_eq!(reader.join().unwrap().raw_os_error(), Some(libc::ENOENT));
    });
}

/// What resend cannot save: a request read on a cloned descriptor
/// (FUSE_DEV_IOC_CLONE, one per serving thread) ends with ECONNABORTED
/// the moment that descriptor closes, as when its daemon dies; only
/// requests on descriptors still open somewhere (the one in systemd's
/// store) wait to be sent again.
#[test]
fn a_request_on_a_closed_clone_is_aborted() {
    let tmp = tempfile::tempdir().unwrap();
    let (dev, detach) = mounted(tmp.path());
    let path = detach.0.join("y");
    let clone = raw::clone_fuse(dev.as_fd()).unwrap();
    std::thread::scope(|s| {
        let reader = s.spawn(|| std::fs::symlink_metadata(&path).unwrap_err());
        lookup_of(clone.as_fd(), "y");
        drop(clone);
        assert_eq!(
            reader.join().unwrap().raw_os_error(),
            Some(libc::ECONNABORTED)
        );
        // Nothing is left to send again.
        nix::unistd::write(&dev, &notification(notify::RESEND, 0)).unwrap();
        let mut fds = [PollFd::new(dev.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(200u16)).unwrap(), 0);
    });
}
