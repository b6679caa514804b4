//! Who may write what pilfered serves or reads, and the paths it works in.
//!
//! Whoever can write into a FIFO can feed chosen bytes to readers who take
//! them for random: nobody but the owner may write, and the owner is us or
//! root ([`writers`]). Whoever can rename or replace a directory on the way
//! to the mount point or the FIFO can redirect the daemon's mount or FIFO
//! elsewhere: every directory on the way must be owned by us or root and not
//! writable by others unless it is sticky (as OpenSSH's StrictModes walks a
//! path), and is opened component by component without following a symlink
//! that another user could have planted ([`walk`]). What the walk returns is
//! an open directory: the daemon then creates, opens and mounts relative to
//! it, so what was checked is what is used.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};

use crate::error::describe;

/// Why other users could choose the bytes of a file, if they could.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Untrusted {
    /// Owned by this uid, neither us nor root.
    Owner(u32),
    /// Its mode (shown) lets group or others write.
    Mode(u32),
}

/// Checks a file's owner `uid` and `mode` for the user `me`.
pub(crate) fn writers(uid: u32, mode: u32, me: u32) -> Result<(), Untrusted> {
    if uid != me && uid != 0 {
        Err(Untrusted::Owner(uid))
    } else if mode & 0o022 != 0 {
        Err(Untrusted::Mode(mode & 0o7777))
    } else {
        Ok(())
    }
}

/// The effective uid of this process.
pub(crate) fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A group to share the device with (`--group`), by name and ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub name: String,
    pub gid: u32,
}

/// Looks up the group `name` and checks that we may give files to it: root
/// may give them to any group, anyone else only to a group of their own.
/// The error says why, for a message about the option.
pub(crate) fn group(name: &str) -> Result<Group, String> {
    use nix::unistd::{getegid, getgroups};
    let found = nix::unistd::Group::from_name(name)
        .map_err(|e| format!("cannot look the group up: {}", e.desc()))?
        .ok_or("no such group; give the name of an existing group (see 'getent group')")?;
    let gid = found.gid;
    let mine = || gid == getegid() || getgroups().is_ok_and(|g| g.contains(&gid));
    if me() != 0 && !mine() {
        return Err(format!(
            "you (uid {}) are not a member of group {name} (gid {gid}), so you cannot give it the device; join the group (and log in again) or run as root",
            me()
        ));
    }
    Ok(Group {
        name: name.to_string(),
        gid: gid.as_raw(),
    })
}

/// Whether a directory with this owner and mode is safe to work in for
/// `me`: owned by us or root, and writable by nobody else unless sticky
/// (then others may add entries, but not rename or remove ours).
pub(crate) fn trusted_dir(uid: u32, mode: u32, me: u32) -> Result<(), Untrusted> {
    match writers(uid, mode, me) {
        Err(Untrusted::Mode(_)) if mode & libc::S_ISVTX != 0 => Ok(()),
        other => other,
    }
}

/// Why a path could not be walked safely.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component (the path up to and including it) does not exist or
    /// cannot be opened.
    Missing(PathBuf, io::Error),
    /// A component is not a directory (nor a symlink to one).
    NotDirectory(PathBuf),
    /// A component (directory or symlink) is not to be trusted.
    Untrusted(PathBuf, Untrusted),
    /// Too many symlinks.
    Loop(PathBuf),
}

impl fmt::Display for WalkError {
    /// The path and what is wrong with it, e.g. `/tmp/x is owned by uid
    /// 65534, who could swap what the daemon makes there; ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Missing(p, e) => write!(f, "{}: {}", p.display(), describe(e)),
            WalkError::NotDirectory(p) => write!(f, "{} is not a directory", p.display()),
            WalkError::Untrusted(p, Untrusted::Owner(uid)) => write!(
                f,
                "{} is owned by uid {uid}, who could swap what the daemon makes there; use a directory owned by you or root",
                p.display()
            ),
            WalkError::Untrusted(p, Untrusted::Mode(mode)) => write!(
                f,
                "{} is writable by other users (mode {mode:04o}) and not sticky, so they could swap what the daemon makes there; use another directory",
                p.display()
            ),
            WalkError::Loop(p) => write!(f, "{}: too many levels of symbolic links", p.display()),
        }
    }
}

/// An open directory reached by [`walk`], with the path it was reached by
/// (absolute, symlinks resolved).
#[derive(Debug)]
pub(crate) struct Dir {
    pub fd: OwnedFd,
    pub path: PathBuf,
}

/// Opens the directory `path` (made absolute against the working directory)
/// one component at a time from `/`, checking each with [`trusted_dir`]. A
/// symlink is followed only if it is owned by us or root (it sits in a
/// directory already found trusted); `..` goes to the real parent.
pub(crate) fn walk(path: &Path) -> Result<Dir, WalkError> {
    let abs = std::path::absolute(path).map_err(|e| WalkError::Missing(path.into(), e))?;
    let me = me();
    let root = open_dir(None, Path::new("/")).map_err(|e| WalkError::Missing("/".into(), e))?;
    let mut dir = Dir {
        fd: root,
        path: PathBuf::from("/"),
    };
    check_dir(&dir, me)?;
    let mut pending: Vec<OsString> = components(&abs);
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            let parent = open_dir(Some(&dir.fd), Path::new(".."))
                .map_err(|e| WalkError::Missing(dir.path.clone(), e))?;
            dir.path.pop();
            dir.fd = parent;
            check_dir(&dir, me)?;
            continue;
        }
        let here = dir.path.join(&name);
        let st = fstatat(&dir.fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| WalkError::Missing(here.clone(), e.into()))?;
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(WalkError::Loop(here));
                }
                writers(st.st_uid, 0, me).map_err(|why| WalkError::Untrusted(here.clone(), why))?;
                let target = readlinkat(&dir.fd, name.as_os_str())
                    .map_err(|e| WalkError::Missing(here.clone(), e.into()))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    dir = Dir {
                        fd: open_dir(None, Path::new("/"))
                            .map_err(|e| WalkError::Missing("/".into(), e))?,
                        path: PathBuf::from("/"),
                    };
                }
                pending.extend(components(&target));
            }
            SFlag::S_IFDIR => {
                let fd = open_dir(Some(&dir.fd), Path::new(&name))
                    .map_err(|e| WalkError::Missing(here.clone(), e))?;
                dir = Dir { fd, path: here };
                check_dir(&dir, me)?;
            }
            _ => return Err(WalkError::NotDirectory(here)),
        }
    }
    Ok(dir)
}

/// Most symlinks one walk follows, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;

/// The components of `path` to visit, last first (a stack).
fn components(path: &Path) -> Vec<OsString> {
    use std::path::Component;
    let mut names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    names.reverse();
    names
}

fn check_dir(dir: &Dir, me: u32) -> Result<(), WalkError> {
    let st = fstat(&dir.fd).map_err(|e| WalkError::Missing(dir.path.clone(), e.into()))?;
    trusted_dir(st.st_uid, st.st_mode, me)
        .map_err(|why| WalkError::Untrusted(dir.path.clone(), why))
}

/// Opens a directory for walking (`O_PATH`: no read permission needed, and
/// never a symlink).
fn open_dir(at: Option<&OwnedFd>, name: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match at {
        Some(at) => openat(at, name, flags, Mode::empty()),
        None => openat(AT_FDCWD, name, flags, Mode::empty()),
    };
    fd.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_may_be_sticky() {
        assert_eq!(trusted_dir(0, 0o1777, 1000), Ok(()));
        assert_eq!(trusted_dir(1000, 0o755, 1000), Ok(()));
        assert_eq!(trusted_dir(0, 0o777, 1000), Err(Untrusted::Mode(0o777)));
        assert_eq!(trusted_dir(1001, 0o1777, 1000), Err(Untrusted::Owner(1001)));
    }

    #[test]
    fn walks_to_the_real_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("a")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        std::os::unix::fs::symlink("a", real.join("rel")).unwrap();
        for p in ["link", "rel", "a/../a", "./a"] {
            assert_eq!(walk(&real.join(p)).unwrap().path, real.join("a"), "{p}");
        }
        assert!(matches!(
            walk(&real.join("nope/x")),
            Err(WalkError::Missing(p, _)) if p == real.join("nope")
        ));
        std::fs::write(real.join("file"), b"").unwrap();
        assert!(matches!(
            walk(&real.join("file/x")),
            Err(WalkError::NotDirectory(p)) if p == real.join("file")
        ));
        std::os::unix::fs::symlink("loop", real.join("loop")).unwrap();
        assert!(matches!(walk(&real.join("loop")), Err(WalkError::Loop(_))));
    }

    #[test]
    fn only_the_owner_may_write_and_the_owner_is_us_or_root() {
        assert_eq!(writers(1000, 0o600, 1000), Ok(()));
        assert_eq!(writers(1000, 0o644, 1000), Ok(()));
        assert_eq!(writers(0, 0o644, 1000), Ok(()));
        assert_eq!(writers(1001, 0o600, 1000), Err(Untrusted::Owner(1001)));
        assert_eq!(writers(1000, 0o620, 1000), Err(Untrusted::Mode(0o620)));
        assert_eq!(writers(1000, 0o602, 1000), Err(Untrusted::Mode(0o602)));
        assert_eq!(
            writers(1000, 0o10666, 1000),
            Err(Untrusted::Mode(0o666)),
            "the file type bits are not shown"
        );
    }
}
