//! The FIFO's path: checked without changing anything ([`inspect`]), then
//! made or reused, opened read-write and non-blocking, locked against a
//! second daemon and its pipe grown ([`Fifo::open`]); removed again when
//! dropped, if we made it (in this run, or a pilfered that crashed did).
//!
//! Under systemd's socket activation (`ListenFIFO=`) the FIFO is given
//! instead, already open: it must be the FIFO at the `--fifo` path and pass
//! the same checks, and it is never removed, so that systemd keeps it (and
//! its readers) across restarts.
//!
//! Every directory on the way must be ours or root's and not writable by
//! others unless sticky, and everything happens relative to the directory
//! that was checked, so that nobody can swap the path in between.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use log::{debug, warn};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, Flock, FlockArg, OFlag, fcntl, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, mkfifoat, unlinkat};

use crate::error::{Error, describe};
use crate::sys::records::{self, Identity};
use crate::sys::trust::{self, Group, Untrusted, WalkError};

/// Mode of a FIFO we create, unless `--fifo-mode` says otherwise.
pub(crate) const DEFAULT_MODE: u32 = 0o600;
/// Mode of the FIFO with `--group`, unless `--fifo-mode` says otherwise.
pub(crate) const DEFAULT_GROUP_MODE: u32 = 0o640;

/// Largest pipe the kernel will make (`round_pipe_size` refuses more).
pub(crate) const KERNEL_MAX_PIPE_SIZE: usize = 1 << 31;
/// What sits at the `--fifo` path, found without following symlinks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing: the FIFO will be created.
    Missing,
    /// A FIFO we may reuse.
    Fifo { dev: u64, ino: u64 },
}

/// Where the FIFO goes, as [`inspect`] found it: the directory it lives in
/// (open, and checked with [`trust::walk`]), its name there, and what is
/// there now. Everything later happens relative to that open directory.
#[derive(Debug)]
pub(crate) struct Spot {
    dir: trust::Dir,
    name: OsString,
    pub existing: Existing,
    /// The FIFO systemd or the daemon we replace passed, already open: the
    /// one at this path.
    given: Option<Given>,
}

/// A FIFO passed to us already open: by systemd (socket activation), which
/// keeps it, or by the daemon we replace (`--replace`), whose it was.
#[derive(Debug)]
pub(crate) struct Given {
    pub(crate) file: File,
    pub(crate) by_systemd: bool,
}

impl Spot {
    /// The FIFO's path, absolute and free of symlinks.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }
}

/// Checks the `--fifo` path without changing anything; `given` is the FIFO
/// systemd passed, which must be the one at `path`.
///
/// Every directory on the way must be ours or root's and not writable by
/// others unless sticky, and a FIFO is reused only if it belongs to us and
/// nobody else can write to it: otherwise another user could redirect the
/// FIFO or feed chosen bytes to our readers.
pub(crate) fn inspect(path: &Path, given: Option<Given>) -> Result<Spot, Error> {
    let shown = path.display();
    let name = match path.file_name() {
        Some(name) => name.to_os_string(),
        None => return Err(Error::usage(format!("--fifo {shown}: not a file name"))),
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = trust::walk(parent).map_err(|e| {
        let why = match e {
            WalkError::Missing(..) => format!("directory {e}"),
            e => e.to_string(),
        };
        Error::usage(format!("--fifo {shown}: {why}"))
    })?;
    let st = match fstatat(&dir.fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) if given.is_none() => {
            return Ok(Spot {
                dir,
                name,
                existing: Existing::Missing,
                given,
            });
        }
        Err(Errno::ENOENT) => return Err(not_given(&shown)),
        Err(e) => return Err(Error::usage(format!("--fifo {shown}: {}", e.desc()))),
    };
    let what = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFIFO => None,
        SFlag::S_IFLNK => Some("is a symbolic link"),
        SFlag::S_IFREG => Some("is a regular file"),
        SFlag::S_IFDIR => Some("is a directory"),
        SFlag::S_IFSOCK => Some("is a socket"),
        _ => Some("is a device"),
    };
    if let Some(what) = what {
        return Err(Error::usage(format!(
            "--fifo {shown}: {what}, not a FIFO; refusing to touch it"
        )));
    }
    match trust::writers(st.st_uid, st.st_mode, trust::me()) {
        Ok(()) if st.st_uid == trust::me() => {}
        // A FIFO we cannot chmod is not ours to reuse, root's included.
        Ok(()) | Err(Untrusted::Owner(_)) => {
            return Err(Error::usage(format!(
                "--fifo {shown}: FIFO is owned by uid {}, not by us (uid {}); remove it or choose another path",
                st.st_uid,
                trust::me()
            )));
        }
        Err(Untrusted::Mode(mode)) => {
            return Err(Error::usage(format!(
                "--fifo {shown}: FIFO is writable by other users (mode {mode:04o}), who could inject chosen bytes; remove it or run 'chmod go-w' on it"
            )));
        }
    }
    if let Some(Given { file, .. }) = &given {
        let meta = file
            .metadata()
            .map_err(|e| Error::runtime(format!("LISTEN_FDS: {}", describe(&e))))?;
        if (meta.dev(), meta.ino()) != (st.st_dev, st.st_ino) {
            return Err(not_given(&shown));
        }
    }
    Ok(Spot {
        dir,
        name,
        existing: Existing::Fifo {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        given,
    })
}

/// The FIFO at `--fifo` is not the one systemd passed.
fn not_given(shown: &impl std::fmt::Display) -> Error {
    Error::usage(format!(
        "--fifo {shown}: not the FIFO systemd passed (LISTEN_FDS); give --fifo the path of the socket unit's ListenFIFO="
    ))
}

/// The open FIFO, locked (flock) against a second daemon. Dropping it
/// closes it and, if we created it (in this run, or a crashed pilfered did),
/// removes it.
#[derive(Debug)]
pub(crate) struct Fifo {
    file: Flock<File>,
    spot: Spot,
    path: PathBuf,
    /// `(dev, ino)` of the FIFO we created, to remove on drop.
    created: Option<(u64, u64)>,
    /// Passed by systemd (socket activation), which keeps it.
    held_by_systemd: bool,
    /// Handed over to a successor, whose it now is: never removed.
    kept: std::sync::atomic::AtomicBool,
}

impl Fifo {
    /// Creates or reuses the FIFO [`inspect`] found (or takes the one
    /// systemd passed), opens it read-write and non-blocking, and grows its
    /// buffer towards `pipe_size`. A FIFO we create gets `mode` (default
    /// [`DEFAULT_MODE`]); a reused or given one gets it only if `mode` is
    /// given. With `group`, any of them becomes that group's, with `mode`
    /// (default [`DEFAULT_GROUP_MODE`]).
    pub(crate) fn open(
        mut spot: Spot,
        mode: Option<u32>,
        group: Option<&Group>,
        pipe_size: usize,
    ) -> Result<Fifo, Error> {
        let path = spot.path();
        let shown = path.display().to_string();
        let given = spot.given.take();
        let by_systemd = given.as_ref().is_some_and(|g| g.by_systemd);
        let (file, made) = match given {
            Some(Given { file, .. }) => (nonblocking(file, &shown)?, false),
            None => make_and_open(&spot, &shown)?,
        };
        let undo = |msg: String| {
            if made {
                let _ = unlinkat(
                    &spot.dir.fd,
                    spot.name.as_os_str(),
                    UnlinkatFlags::NoRemoveDir,
                );
            }
            Error::runtime(msg)
        };
        let meta = file
            .metadata()
            .map_err(|e| undo(format!("--fifo {shown}: {}", describe(&e))))?;
        let (dev, ino) = (meta.dev(), meta.ino());
        // Two daemons feeding one FIFO would each remove it from under the
        // other on exit; the lock lives as long as the daemon (crash included).
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(Error::runtime(format!(
                    "--fifo {shown}: another pilfered is already serving this FIFO; stop it or choose another path"
                )));
            }
            Err((_, e)) => return Err(undo(format!("--fifo {shown}: flock: {}", e.desc()))),
        };
        // Ours if we made it now, or a pilfered (crashed, or the one we
        // replace) made it; never one systemd passed, which systemd keeps.
        let id = Identity::of(file.as_fd());
        let ours = made
            || !by_systemd
                && id.is_some_and(|id| records::was_created(records::Kind::Fifo, &path, id));
        let fifo = Fifo {
            created: ours.then_some((dev, ino)),
            file,
            spot,
            path,
            held_by_systemd: by_systemd,
            kept: std::sync::atomic::AtomicBool::new(false),
        };
        // The group first, so that the group may read only once it is the
        // group's; all through the open descriptor, so that no other path can
        // be affected.
        if let Some(g) = group {
            nix::unistd::fchown(fifo.file.as_fd(), None, Some(g.gid.into())).map_err(|e| {
                Error::runtime(format!(
                    "--group {}: cannot give the FIFO {shown} to it: {}",
                    g.name,
                    e.desc()
                ))
            })?;
        }
        // mkfifo's mode is filtered by the umask; set exactly what was asked.
        let mode = match group {
            Some(_) => mode.or(Some(DEFAULT_GROUP_MODE)),
            None => mode.or(made.then_some(DEFAULT_MODE)),
        };
        if let Some(mode) = mode {
            fifo.file
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::runtime(format!("--fifo {shown}: chmod: {}", describe(&e))))?;
        }
        if made && let Some(id) = id {
            records::note(records::Kind::Fifo, &fifo.path, id);
        }
        fifo.grow(pipe_size)?;
        Ok(fifo)
    }

    /// The open FIFO (read-write, non-blocking).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The FIFO's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the FIFO to the daemon it was handed to: dropping it then
    /// only closes it.
    pub(crate) fn keep(&self) {
        self.kept.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether systemd passed it (and keeps it).
    pub(crate) fn held_by_systemd(&self) -> bool {
        self.held_by_systemd
    }

    /// The pipe's current buffer size.
    pub(crate) fn pipe_size(&self) -> Result<usize, Error> {
        fcntl(self.file.as_fd(), FcntlArg::F_GETPIPE_SZ)
            .map(|n| n as usize)
            .map_err(|e| {
                Error::runtime(format!(
                    "F_GETPIPE_SZ on {}: {}",
                    self.path.display(),
                    e.desc()
                ))
            })
    }

    fn grow(&self, want: usize) -> Result<(), Error> {
        if self.pipe_size()? >= want {
            return Ok(());
        }
        let want_c = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
        match fcntl(self.file.as_fd(), FcntlArg::F_SETPIPE_SZ(want_c)) {
            Ok(_) => Ok(()),
            Err(Errno::EPERM) => {
                let max = system_pipe_max_size().unwrap_or(0);
                warn!(
                    "--pipe-size {want}: above the system limit of {max} bytes (/proc/sys/fs/pipe-max-size), which only a privileged process may exceed; using {max}"
                );
                if max > self.pipe_size()? {
                    let max_c = libc::c_int::try_from(max).unwrap_or(libc::c_int::MAX);
                    let _ = fcntl(self.file.as_fd(), FcntlArg::F_SETPIPE_SZ(max_c));
                }
                Ok(())
            }
            Err(e) => {
                warn!(
                    "could not grow the pipe buffer of {} to {want} bytes ({}); keeping {}",
                    self.path.display(),
                    e.desc(),
                    self.pipe_size()?
                );
                Ok(())
            }
        }
    }
}

/// The FIFO systemd passed, made non-blocking (the writer must never block);
/// it must be open for reading and writing, as systemd opens it, so that
/// readers never see end-of-file and a VM fork's wipe can read the pipe.
fn nonblocking(file: File, shown: &str) -> Result<File, Error> {
    let failed = |e: Errno| Error::runtime(format!("--fifo {shown}: LISTEN_FDS: {}", e.desc()));
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL).map_err(failed)?);
    if flags & OFlag::O_ACCMODE != OFlag::O_RDWR {
        return Err(Error::usage(format!(
            "--fifo {shown}: the FIFO systemd passed (LISTEN_FDS) is not open for reading and writing"
        )));
    }
    fcntl(&file, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(failed)?;
    Ok(file)
}

/// Makes the FIFO if [`inspect`] found nothing, and opens it read-write and
/// non-blocking, checking it is the FIFO that was found or made. Returns it
/// and whether we made it (then it is removed again on failure).
fn make_and_open(spot: &Spot, shown: &str) -> Result<(File, bool), Error> {
    let (dir, name) = (&spot.dir.fd, spot.name.as_os_str());
    let made = spot.existing == Existing::Missing;
    if made {
        mkfifoat(dir, name, Mode::from_bits_truncate(DEFAULT_MODE)).map_err(|e| {
            Error::runtime(format!("--fifo {shown}: cannot create FIFO: {}", e.desc()))
        })?;
    }
    let undo = |msg: String| {
        if made {
            let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        }
        Error::runtime(msg)
    };
    let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = openat(dir, name, flags, Mode::empty())
        .map(File::from)
        .map_err(|e| undo(format!("--fifo {shown}: cannot open: {}", e.desc())))?;
    let meta = file
        .metadata()
        .map_err(|e| undo(format!("--fifo {shown}: {}", describe(&e))))?;
    let same = match spot.existing {
        Existing::Fifo { dev, ino } => meta.dev() == dev && meta.ino() == ino,
        Existing::Missing => meta.file_type().is_fifo(),
    };
    if !same {
        return Err(undo(format!(
            "--fifo {shown}: the path changed while it was being opened; refusing to use it"
        )));
    }
    Ok((file, made))
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let Some((dev, ino)) = self.created else {
            return;
        };
        if self.kept.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // Remove it only if its name still holds the FIFO we made.
        let (dir, name) = (&self.spot.dir.fd, self.spot.name.as_os_str());
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_dev == dev && st.st_ino == ino => {
                match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => records::forget(&self.path),
                    Err(e) => warn!(
                        "could not remove FIFO {}: {}",
                        self.path.display(),
                        e.desc()
                    ),
                }
            }
            _ => debug!(
                "FIFO {} was replaced; leaving the path alone",
                self.path.display()
            ),
        }
    }
}

/// `/proc/sys/fs/pipe-max-size`: the largest pipe an unprivileged process
/// may ask for.
pub(crate) fn system_pipe_max_size() -> io::Result<usize> {
    let text = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::other("unreadable /proc/sys/fs/pipe-max-size"))
}
