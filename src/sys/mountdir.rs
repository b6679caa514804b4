//! The mount point directory: claimed under a lock before anything is
//! mounted, made if missing, and removed again at the end if a pilfered
//! daemon made it.
//!
//! The lock is an exclusive `flock` on the directory itself, held for the
//! daemon's life (and dropped by the kernel if it crashes). Of several
//! daemons started on one directory at the same moment, one takes the lock
//! and the others are refused; a daemon started while another's mount is
//! there finds it mounted and is refused too. So at most one pilfered mount
//! is ever at a directory.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::Error;
use crate::sys::mounts;
use crate::sys::records::{self, Identity, Kind};
use crate::sys::trust::{self, Dir, Untrusted};

/// A claimed mount point directory.
#[derive(Debug)]
pub(crate) struct MountDir {
    /// The directory, open and locked.
    pub dir: Flock<OwnedFd>,
    /// Absolute and free of symlinks.
    pub path: PathBuf,
    parent: Dir,
    name: OsString,
    /// `(dev, ino)` of the directory if a pilfered daemon made it.
    made: Option<(u64, u64)>,
}

impl MountDir {
    /// Makes the directory `name` in `parent` if `create`, opens it and
    /// locks it; refuses it if another daemon holds it or something is
    /// mounted there.
    pub(crate) fn claim(parent: Dir, name: OsString, create: bool) -> Result<MountDir, Error> {
        let path = parent.path.join(&name);
        let shown = path.display().to_string();
        let made_now = create && make(&parent, &name, &shown)?;
        let undo = |e: Error| {
            if made_now {
                let _ = unlinkat(&parent.fd, name.as_os_str(), UnlinkatFlags::RemoveDir);
            }
            e
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&parent.fd, name.as_os_str(), flags, Mode::empty())
            .map_err(|e| undo(Error::runtime(format!("--mount {shown}: {}", e.desc()))))?;
        let dir = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Ok(dir) => dir,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(undo(Error::runtime(format!(
                    "--mount {shown}: another pilfered is starting or serving there; stop it or choose another directory"
                ))));
            }
            Err((_, e)) => {
                return Err(undo(Error::runtime(format!(
                    "--mount {shown}: flock: {}",
                    e.desc()
                ))));
            }
        };
        // Under the lock: nothing may be mounted there, and the directory
        // must still be one we may work in.
        if let Some(m) = mounts::mount_at(&path).ok().flatten() {
            return Err(undo(Error::runtime(format!(
                "--mount {shown}: {} ({}) is already mounted there; unmount it first or choose another directory",
                m.source, m.fs_type
            ))));
        }
        let st = fstat(&*dir)
            .map_err(|e| undo(Error::runtime(format!("--mount {shown}: {}", e.desc()))))?;
        if let Err(why) = trust::trusted_dir(st.st_uid, st.st_mode, trust::me()) {
            return Err(undo(untrusted(&shown, &path, why)));
        }
        let (dev, ino) = (st.st_dev, st.st_ino);
        let id = Identity::of(dir.as_fd());
        if made_now && let Some(id) = id {
            records::note(Kind::Directory, &path, id);
        }
        let made = (made_now
            || id.is_some_and(|id| records::was_created(Kind::Directory, &path, id)))
        .then_some((dev, ino));
        Ok(MountDir {
            dir,
            path,
            parent,
            name,
            made,
        })
    }

    /// Takes over the mount point `name` in `parent` from the daemon we
    /// replace: `dir` is its directory as that daemon opened and locked it
    /// (the lock belongs to the open file, so it is ours now too), under
    /// the live mount we take over.
    pub(crate) fn adopt(parent: Dir, name: OsString, dir: OwnedFd) -> Result<MountDir, Error> {
        let path = parent.path.join(&name);
        let shown = path.display().to_string();
        let dir = Flock::lock(dir, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            Error::runtime(format!(
                "--mount {shown}: the directory handed over is not locked by its daemon: {}",
                e.desc()
            ))
        })?;
        let st =
            fstat(&*dir).map_err(|e| Error::runtime(format!("--mount {shown}: {}", e.desc())))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return Err(Error::runtime(format!(
                "--mount {shown}: what was handed over as the mount point is not a directory"
            )));
        }
        let made = Identity::of(dir.as_fd())
            .is_some_and(|id| records::was_created(Kind::Directory, &path, id))
            .then_some((st.st_dev, st.st_ino));
        Ok(MountDir {
            dir,
            path,
            parent,
            name,
            made,
        })
    }

    /// Removes the directory if a pilfered daemon made it and it is still
    /// the same (empty) directory; called once it is unmounted.
    pub(crate) fn remove_if_made(&self) {
        let Some((dev, ino)) = self.made else {
            return;
        };
        let (at, name) = (&self.parent.fd, self.name.as_os_str());
        match fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_dev == dev && st.st_ino == ino => {
                match unlinkat(at, name, UnlinkatFlags::RemoveDir) {
                    Ok(()) => records::forget(&self.path),
                    Err(e) => log::debug!("leaving {}: {}", self.path.display(), e.desc()),
                }
            }
            _ => log::debug!("{} was replaced; leaving it alone", self.path.display()),
        }
    }
}

/// Makes the directory `name` in `parent`; false if it appeared meanwhile
/// (a daemon starting at the same moment made it: the lock decides).
fn make(parent: &Dir, name: &OsString, shown: &str) -> Result<bool, Error> {
    match mkdirat(
        &parent.fd,
        name.as_os_str(),
        Mode::from_bits_truncate(0o755),
    ) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(Error::runtime(format!(
            "--mount {shown}: cannot create it: {}",
            e.desc()
        ))),
    }
}

/// The refusal for a directory another user could tamper with.
pub(crate) fn untrusted(shown: &str, path: &std::path::Path, why: Untrusted) -> Error {
    Error::usage(format!(
        "--mount {shown}: {}",
        trust::WalkError::Untrusted(path.to_path_buf(), why)
    ))
}
