//! What is mounted where (`/proc/self/mountinfo`), and pilfered's own FUSE
//! mounts: made on an open directory, known by their mount ID, unmounted
//! only if they are still ours, and watched for being detached from outside.
//!
//! As root a mount is made with the kernel's mount API (`fsopen`,
//! `fsconfig`, `fsmount`, `move_mount`) onto the very directory that was
//! checked, so no path is resolved twice. A normal user mounts through the
//! setuid `fusermount3`, as every FUSE file system does. Either way the
//! mount's ID is kept, and the daemon unmounts only if the mount at its
//! path still has that ID. (It keeps no descriptor of the mount itself:
//! that would make a plain `umount` from outside fail as busy.)

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use crate::sys::raw;

/// The file system type of a pilfered mount, as `/proc/self/mountinfo`
/// shows it.
pub(crate) const FS_TYPE: &str = "fuse.pilfered";

/// One line of `/proc/self/mountinfo`, reduced to what we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's ID, as `statx` gives it (`STATX_MNT_ID`).
    pub id: u64,
    pub mount_point: PathBuf,
    /// e.g. `fuse.pilfered`, `tmpfs`.
    pub fs_type: String,
    pub source: String,
    /// The file system's own options, e.g. `ro,user_id=0,group_id=0`.
    pub options: String,
}

impl MountEntry {
    /// The value of the file system option `name` (`user_id`, say).
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .split(',')
            .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
    }
}

/// Whether `errno`, from a request to a FUSE mount, says that its daemon is
/// gone: `ENOTCONN` once the connection has ended; `ECONNABORTED` or
/// `ECANCELED` for a request caught while it was being torn down (over
/// io_uring, requests queued on a ring end so). A daemon never answers
/// either.
pub(crate) fn daemon_gone(errno: i32) -> bool {
    matches!(errno, libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a mountinfo file.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - type source super-options
            let (left, right) = line.split_once(" - ")?;
            let id = left.split(' ').next()?.parse().ok()?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fs_type = r.next()?;
            let source = r.next().unwrap_or("");
            let options = r.next().unwrap_or("");
            Some(MountEntry {
                id,
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: unescape(fs_type),
                source: unescape(source),
                options: unescape(options),
            })
        })
        .collect()
}

/// The topmost mount at exactly `path` (which should be absolute and free of
/// symlinks), if any.
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path))
}

/// Lazily detaches the mount at `path`: it leaves the namespace at once and
/// goes away for good when its last user lets go. Uses umount2(2) when
/// allowed, else `fusermount3 -u -z`.
pub fn detach(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let out = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(path)
                .output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(io::Error::other(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// A pilfered FUSE mount this process made, known by its mount ID.
#[derive(Debug)]
pub struct FuseMount {
    /// Where it was mounted, absolute and free of symlinks.
    pub mount_point: PathBuf,
    /// The kernel's ID for the mount (the first field of mountinfo).
    pub id: u64,
}

/// Mounts a pilfered FUSE file system on the open directory `dir`, reached
/// as `path`: read-only, `nosuid,nodev,noexec,noatime`, permissions checked
/// by the kernel, and only the mounting user let in unless `allow_other`.
/// Returns the `/dev/fuse` connection to serve, and the mount.
pub fn mount_fuse(
    dir: &OwnedFd,
    path: &Path,
    allow_other: bool,
) -> io::Result<(OwnedFd, FuseMount)> {
    if nix::unistd::geteuid().is_root() {
        mount_with_api(dir, path, allow_other)
    } else {
        mount_with_fusermount3(path, allow_other)
    }
}

fn mount_with_api(
    dir: &OwnedFd,
    path: &Path,
    allow_other: bool,
) -> io::Result<(OwnedFd, FuseMount)> {
    use raw::FsConfig::{Create, Flag, String as Set};
    let dev: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")?
        .into();
    let fs = raw::fsopen(c"fuse")?;
    let config = |step: raw::FsConfig<'_>| raw::fsconfig(fs.as_fd(), step);
    config(Set("source", "pilfered"))?;
    config(Set("subtype", FS_TYPE.trim_start_matches("fuse.")))?;
    config(Set("fd", &dev.as_raw_fd().to_string()))?;
    config(Set("rootmode", "40000"))?;
    config(Set("user_id", &nix::unistd::getuid().to_string()))?;
    config(Set("group_id", &nix::unistd::getgid().to_string()))?;
    config(Flag("default_permissions"))?;
    if allow_other {
        config(Flag("allow_other"))?;
    }
    config(Create)?;
    let attrs = raw::MOUNT_ATTR_RDONLY
        | raw::MOUNT_ATTR_NOSUID
        | raw::MOUNT_ATTR_NODEV
        | raw::MOUNT_ATTR_NOEXEC
        | raw::MOUNT_ATTR_NOATIME;
    let root = raw::fsmount(fs.as_fd(), attrs)?;
    raw::move_mount_onto(root.as_fd(), dir.as_fd())?;
    let id = mount_id(root.as_fd(), c"", libc::AT_EMPTY_PATH)?;
    let mount = FuseMount {
        mount_point: path.to_path_buf(),
        id,
    };
    Ok((dev, mount))
}

/// The mount ID of what `path` (relative to `at`) names.
fn mount_id(at: BorrowedFd<'_>, path: &CStr, flags: libc::c_int) -> io::Result<u64> {
    let st = raw::statx(
        at,
        path,
        flags | libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
        libc::STATX_MNT_ID,
    )?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::other("the kernel does not report mount IDs"));
    }
    Ok(st.stx_mnt_id)
}

/// The mount ID of the mount at `path` now.
fn mount_id_at(path: &Path) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    mount_id(nix::fcntl::AT_FDCWD, &c, 0)
}

fn mount_with_fusermount3(path: &Path, allow_other: bool) -> io::Result<(OwnedFd, FuseMount)> {
    // fusermount3 sends the /dev/fuse descriptor back over this socket; its
    // end must survive exec, ours must not.
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::empty(),
    )?;
    fcntl(ours.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let mut options = format!(
        "ro,nosuid,nodev,noexec,noatime,default_permissions,fsname=pilfered,subtype={}",
        FS_TYPE.trim_start_matches("fuse.")
    );
    if allow_other {
        options.push_str(",allow_other");
    }
    let out = Command::new("fusermount3")
        .args(["-o", &options, "--"])
        .arg(path)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .output();
    drop(theirs);
    let out = out?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.lines().next().unwrap_or("failed").trim();
        return Err(io::Error::other(format!(
            "fusermount3: {}",
            line.trim_start_matches("fusermount3: ")
        )));
    }
    let dev = raw::receive_fd(ours.as_fd())?
        .ok_or_else(|| io::Error::other("fusermount3 sent no /dev/fuse descriptor"))?;
    let id = mount_id_at(path)?;
    let mount = FuseMount {
        mount_point: path.to_path_buf(),
        id,
    };
    if !mount.is_attached()? {
        return Err(io::Error::other(
            "fusermount3 reported success, but no pilfered mount is there",
        ));
    }
    Ok((dev, mount))
}

impl FuseMount {
    /// Whether this very mount is still in the mount table (not unmounted or
    /// detached).
    pub fn is_attached(&self) -> io::Result<bool> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(lists_mount(&text, self.id))
    }

    /// Unmounts this mount if it is still what is mounted at its path,
    /// lazily if it is busy, and says which it did. Another mount at the
    /// same path is never touched: the path's directories are ours or
    /// root's (checked before mounting), so only we or root could swap one
    /// in between.
    pub fn unmount(&self) -> io::Result<Unmounted> {
        if mount_id_at(&self.mount_point).ok() != Some(self.id) {
            return Ok(Unmounted::NotThere);
        }
        if nix::unistd::geteuid().is_root() {
            let path = &self.mount_point;
            return match nix::mount::umount2(path, nix::mount::MntFlags::empty()) {
                Err(Errno::EBUSY) => {
                    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)?;
                    Ok(Unmounted::Detached)
                }
                other => other.map(|()| Unmounted::Gone).map_err(io::Error::from),
            };
        }
        let run = |flag: &str| {
            Command::new("fusermount3")
                .args([flag, "--"])
                .arg(&self.mount_point)
                .stdin(Stdio::null())
                .output()
        };
        let out = run("-u")?;
        if out.status.success() {
            return Ok(Unmounted::Gone);
        }
        let out = run("-uz")?;
        if out.status.success() {
            Ok(Unmounted::Detached)
        } else {
            Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
}

/// What [`FuseMount::unmount`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// The mount is gone, and with it the FUSE connection.
    Gone,
    /// It was busy (a reader holds a file open): detached from the mount
    /// table, while the connection lives on until the last file is closed.
    Detached,
    /// Ours was no longer there (unmounted or detached from outside).
    NotThere,
}

/// Whether mountinfo `text` lists the mount `id`.
fn lists_mount(text: &str, id: u64) -> bool {
    text.lines()
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .any(|m| m == id)
}

/// A thread that calls `on_gone` once if mount `id` leaves the mount table
/// while it watches.
pub(crate) struct Watch {
    stop: std::sync::Arc<EventFd>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    /// Starts watching.
    pub(crate) fn start(id: u64, on_gone: impl FnOnce() + Send + 'static) -> io::Result<Watch> {
        let stop = std::sync::Arc::new(EventFd::new()?);
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mount-watch".into())
            .spawn(move || match wait_until_gone(id, &s) {
                Ok(true) => on_gone(),
                Ok(false) => {}
                Err(e) => log::warn!("cannot watch the mount table: {e}"),
            })?;
        Ok(Watch { stop, thread })
    }

    /// Stops watching and waits for the thread.
    pub(crate) fn stop(self) {
        let _ = self.stop.write(1);
        let _ = self.thread.join();
    }
}

/// Blocks until the mount `id` leaves the mount table (`Ok(true)`) or `stop`
/// is signalled (`Ok(false)`). The kernel flags `/proc/self/mountinfo` with
/// POLLPRI whenever the mount table changes, so this costs nothing while
/// nothing changes.
pub(crate) fn wait_until_gone(id: u64, stop: &EventFd) -> io::Result<bool> {
    let mut file = File::open("/proc/self/mountinfo")?;
    let mut text = String::new();
    loop {
        text.clear();
        file.rewind()?;
        file.read_to_string(&mut text)?;
        if !lists_mount(&text, id) {
            return Ok(true);
        }
        let mut fds = [
            PollFd::new(file.as_fd(), PollFlags::POLLPRI),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if fds[1].any().unwrap_or(false) {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:50 / /mnt/with\\040space rw,nosuid,nodev,relatime shared:60 - fuse.pilfered pilfered rw,user_id=0,group_id=0
99 22 0:51 / /tmp/x rw - tmpfs tmpfs rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].fs_type, "fuse.pilfered");
        assert_eq!(m[1].source, "pilfered");
        assert_eq!(m[2].fs_type, "tmpfs");
    }

    #[test]
    fn mounts_are_found_by_id() {
        let text = "22 1 0:21 / / rw - ext4 /dev/vda rw\n98 22 0:50 / /mnt rw - fuse.pilfered pilfered rw\n";
        assert!(lists_mount(text, 98));
        assert!(lists_mount(text, 22));
        assert!(!lists_mount(text, 9), "a prefix of an ID is not the ID");
        assert!(!lists_mount(text, 50));
        let root = mount_at(Path::new("/")).unwrap().unwrap();
        let _ = root;
        let here = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(lists_mount(&here, mount_id_at(Path::new("/")).unwrap()));
    }

    #[test]
    fn a_gone_daemon_is_told_by_either_errno() {
        assert!(daemon_gone(libc::ENOTCONN) && daemon_gone(libc::ECONNABORTED));
        assert!(daemon_gone(libc::ECANCELED));
        assert!(!daemon_gone(libc::EIO) && !daemon_gone(libc::ENOENT));
    }

    #[test]
    fn root_is_a_mount_point() {
        let root = mount_at(Path::new("/")).unwrap();
        assert!(root.is_some());
    }
}
