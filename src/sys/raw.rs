//! The raw system calls and CPU instructions that neither `std` nor `nix`
//! wraps, each behind a safe function: `statx`, the kernel's new mount API
//! (`fsopen`, `fsconfig`, `fsmount`, `move_mount`), `FIONREAD`,
//! `FUSE_DEV_IOC_CLONE`, taking a descriptor out of an `SCM_RIGHTS`
//! message, taking the descriptors of systemd's socket activation,
//! `RDSEED`, and glibc's `mallopt`.
//!
//! This is where the `unsafe` of the system layer lives, so that it can be
//! read in one place. Each function's only obligations are the ones its
//! `SAFETY` comments name: pointers to live buffers of the right type and
//! size, NUL-terminated strings, and descriptors owned by exactly one
//! `OwnedFd`.

use std::ffi::{CStr, CString};
use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

/// `statx(2)` of `path` relative to `at` (with `flags`, such as
/// `AT_EMPTY_PATH`), asking for the fields in `mask`; the caller checks
/// `stx_mask` for those it needs.
pub(crate) fn statx(
    at: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mask: libc::c_uint,
) -> io::Result<libc::statx> {
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx writes one statx struct into `buf`, which is live and
    // of that type; `path` is NUL-terminated and `at` is open.
    let ret = unsafe { libc::statx(at.as_raw_fd(), path.as_ptr(), flags, mask, buf.as_mut_ptr()) };
    check(libc::c_long::from(ret))?;
    // SAFETY: statx succeeded, so it filled the struct (and it started
    // zeroed, so even fields it skipped are initialised).
    Ok(unsafe { buf.assume_init() })
}

// The kernel's mount API (include/uapi/linux/mount.h); `libc` does not
// export these constants.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Mount attributes for [`fsmount`].
pub(crate) const MOUNT_ATTR_RDONLY: libc::c_uint = 0x01;
pub(crate) const MOUNT_ATTR_NOSUID: libc::c_uint = 0x02;
pub(crate) const MOUNT_ATTR_NODEV: libc::c_uint = 0x04;
pub(crate) const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x08;
pub(crate) const MOUNT_ATTR_NOATIME: libc::c_uint = 0x10;

/// A new file system context for `fs_type` (`fsopen(2)`).
pub(crate) fn fsopen(fs_type: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: fsopen reads one NUL-terminated string.
    fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fs_type.as_ptr(), FSOPEN_CLOEXEC) })
}

/// One `fsconfig(2)` step on a file system context.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FsConfig<'a> {
    /// A parameter with a value, like `source=pilfered`.
    String(&'a str, &'a str),
    /// A flag, like `allow_other`.
    Flag(&'a str),
    /// Create the superblock from the parameters set so far.
    Create,
}

/// Applies `step` to the file system context `fs`.
pub(crate) fn fsconfig(fs: BorrowedFd<'_>, step: FsConfig<'_>) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let (cmd, key, value) = match step {
        FsConfig::String(k, v) => (FSCONFIG_SET_STRING, Some(c(k)?), Some(c(v)?)),
        FsConfig::Flag(k) => (FSCONFIG_SET_FLAG, Some(c(k)?), None),
        FsConfig::Create => (FSCONFIG_CMD_CREATE, None, None),
    };
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: fsconfig reads the two NUL-terminated strings (or nulls),
    // which live until the call returns; `fs` is open.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            ptr(&key),
            ptr(&value),
            0,
        )
    })
}

/// The detached mount of a created context, with `attrs` (`fsmount(2)`).
pub(crate) fn fsmount(fs: BorrowedFd<'_>, attrs: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments; `fs` is open.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// Attaches the detached `mount` onto the open directory `dir`
/// (`move_mount(2)` with both paths empty): no path is resolved again.
pub(crate) fn move_mount_onto(mount: BorrowedFd<'_>, dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both paths are empty NUL-terminated strings; the descriptors
    // are open.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

nix::ioctl_read_bad!(fionread_ioctl, libc::FIONREAD, libc::c_int);

/// Bytes buffered in the pipe (or socket) `fd` and not yet read.
pub(crate) fn fionread(fd: BorrowedFd<'_>) -> nix::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to
    // a live, properly aligned c_int.
    unsafe { fionread_ioctl(fd.as_raw_fd(), &raw mut n) }?;
    Ok(usize::try_from(n).unwrap_or(0))
}

nix::ioctl_read!(fuse_dev_ioc_clone, 229, 0, u32);

/// A new `/dev/fuse` descriptor attached to the same connection as
/// `session` (`FUSE_DEV_IOC_CLONE`), so that a thread reading requests has
/// a queue of its own in the kernel.
#[cfg(test)]
pub(crate) fn clone_fuse(session: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let clone: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")?
        .into();
    let mut fd = u32::try_from(session.as_raw_fd())
        .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the descriptor to clone)
    // through the pointer, which points to a live u32; `clone` is open.
    unsafe { fuse_dev_ioc_clone(clone.as_raw_fd(), &raw mut fd) }?;
    Ok(clone)
}

/// Receives one message on `socket` and takes the first descriptor it
/// carries (`SCM_RIGHTS`), as `fusermount3` sends the `/dev/fuse` one.
pub(crate) fn receive_fd(socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    Ok(receive_with_fds(socket, &mut byte)?.fds.into_iter().next())
}

/// The most descriptors one message can carry (the kernel's
/// `SCM_MAX_FD`): [`receive_with_fds`] has room for them all, so that none
/// is ever cut off (`MSG_CTRUNC`, which leaves those that came unreadable
/// to `nix`, and so open).
pub(crate) const MAX_RECEIVED_FDS: usize = 253;

/// One message taken by [`receive_with_fds`].
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes of it now at the start of the buffer.
    pub(crate) len: usize,
    /// The descriptors it carried (`SCM_RIGHTS`), now close-on-exec.
    pub(crate) fds: Vec<OwnedFd>,
    /// Part of it was lost: more bytes than the buffer held (`MSG_TRUNC`).
    pub(crate) truncated: bool,
}

/// Receives one message on `socket` into `buf`, with the descriptors it
/// carries. On a datagram or seqpacket socket that is one whole message,
/// its excess cut off and flagged; on a stream socket, what is there.
pub(crate) fn receive_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_RECEIVED_FDS]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us,
            // and nothing else refers to them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
    Ok(Received {
        len: msg.bytes,
        fds,
        truncated,
    })
}

/// Whether this CPU has the `RDSEED` instruction.
pub(crate) fn rdseed_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("rdseed")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One 64-bit word from `RDSEED`, or `None` if the CPU has no such
/// instruction or returned no data (it may be momentarily exhausted; the
/// caller retries).
pub(crate) fn rdseed64() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "rdseed")]
        fn step(word: &mut u64) -> i32 {
            std::arch::x86_64::_rdseed64_step(word)
        }
        if !rdseed_available() {
            return None;
        }
        let mut word = 0u64;
        // SAFETY: `step` needs the RDSEED instruction, which the CPU has
        // (checked just above).
        (unsafe { step(&mut word) } == 1).then_some(word)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// A system call's result as a new descriptor, or its error.
fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    check(ret)?;
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the system call returned a new descriptor, which nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The descriptors systemd passed to this very process for socket
/// activation (`LISTEN_FDS`, checked against `LISTEN_PID`), each with its
/// name from `LISTEN_FDNAMES` (`unknown` without one), now close-on-exec.
/// Only the first call takes them; any later call gets none.
pub(crate) fn listen_fds() -> io::Result<Vec<(OwnedFd, String)>> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    Ok(sd_notify::listen_fds_with_names()?
        .map(|(fd, name)| {
            // SAFETY: systemd opened these descriptors for this process
            // (LISTEN_PID names it), so nothing in it owns them yet, and
            // TAKEN makes this the only place that ever wraps them.
            (unsafe { OwnedFd::from_raw_fd(fd) }, name)
        })
        .collect())
}

/// The signal that wakes a serving thread from a blocking system call
/// ([`wake`]), handled by a handler that does nothing and installed
/// without `SA_RESTART`, so that the call fails with `EINTR`.
const WAKE: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR2;

extern "C" fn woken(_: libc::c_int) {}

/// Installs the handler of [`wake`]'s signal (once is enough; again is
/// harmless).
pub(crate) fn install_wake() -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(woken),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, which is async-signal-safe, and no
    // other handler of this signal is replaced (pilfered installs none).
    unsafe { sigaction(WAKE, &action) }?;
    Ok(())
}

/// Interrupts whatever blocking call `thread` is in (`read` of
/// `/dev/fuse`, `io_uring_enter`): it fails with `EINTR`, so that the
/// thread looks at what it was told to do. [`install_wake`] must have run.
pub(crate) fn wake(thread: &std::thread::JoinHandle<()>) {
    use std::os::unix::thread::JoinHandleExt;
    let _ = nix::sys::pthread::pthread_kill(thread.as_pthread_t(), WAKE);
}

/// Lets glibc's malloc use its main arena only (`M_ARENA_MAX` 1), instead
/// of making one per thread, each of which reserves 64 MiB that
/// `mlockall(MCL_FUTURE)` counts as locked. For threads started after
/// this; false if glibc refused.
pub(crate) fn single_malloc_arena() -> bool {
    // SAFETY: mallopt takes two integers and touches no memory of ours.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statx_reports_this_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsFd;
        let st = statx(file.as_fd(), c"", libc::AT_EMPTY_PATH, libc::STATX_SIZE).unwrap();
        assert_eq!(st.stx_size, 3);
        let e = statx(nix::fcntl::AT_FDCWD, c"/nonexistent/x", 0, libc::STATX_SIZE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn fionread_counts_unread_bytes() {
        let (r, w) = nix::unistd::pipe().unwrap();
        use std::os::fd::AsFd;
        assert_eq!(fionread(r.as_fd()), Ok(0));
        nix::unistd::write(&w, b"hello").unwrap();
        assert_eq!(fionread(r.as_fd()), Ok(5));
    }

    #[test]
    fn rdseed_gives_words_where_the_cpu_has_it() {
        if rdseed_available() {
            let words: Vec<u64> = (0..4).filter_map(|_| rdseed64()).collect();
            assert!(!words.is_empty(), "RDSEED never returned data");
        } else {
            assert_eq!(rdseed64(), None);
        }
    }
}
