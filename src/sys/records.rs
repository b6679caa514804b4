//! What pilfered created, recorded so that it is removed even after a crash,
//! and which daemon serves a mount point.
//!
//! When the daemon creates its FIFO or its mount directory it writes a small
//! record naming the path and the object's identity: device and inode
//! numbers, and its birth time where the file system keeps one. A clean
//! stop removes the object and its record. After `kill -9` the record stays;
//! the next daemon on the same path finds that the object there is the very
//! one recorded, takes it over as its own, and removes it when it stops. An
//! object the user made is never recorded, so it is never removed.
//!
//! Once it serves a mount, the daemon also writes `NAME.pid` (NAME is the
//! mount point as `systemd-escape --path` writes it): its PID and its start
//! time in clock ticks since boot (field 22 of `/proc/PID/stat`), which
//! together name one process even after its PID is reused. The mount
//! scripts find the daemon by it. Every orderly exit removes it; a clean
//! stop (exit status 0) also removes `NAME.log`, the log `pilfered-mount`
//! gave the daemon as its standard error, if that is what fd 2 is.
//!
//! Records live in the state directory shared with the mount scripts:
//! `$PILFERED_RUNDIR` if set, else `/run/pilfered` for root, else
//! `$XDG_RUNTIME_DIR/pilfered`, else `/tmp/pilfered-UID`. Every directory
//! on the way to it is checked with [`trust::walk`]; it must itself be a
//! directory of ours that nobody else can write, and every record is made,
//! read and removed relative to that open directory without following a
//! symlink. A `PILFERED_RUNDIR` that cannot be used refuses the start (it
//! was asked for); where a default one cannot be used, the daemon says so
//! in one line and carries on without records.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use log::warn;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use sha2::{Digest, Sha256};

use crate::error::{Error, describe, printable};
use crate::sys::{raw, trust};

/// Which object a record is about: device and inode, and its birth time
/// where the file system keeps one (a new object reusing the inode number
/// is then told apart). Not its ctime: writing into a FIFO changes that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    born: Option<(i64, u32)>,
}

impl Identity {
    /// The identity of the open file `fd`.
    pub(crate) fn of(fd: BorrowedFd<'_>) -> Option<Identity> {
        let st = raw::statx(
            fd,
            c"",
            libc::AT_EMPTY_PATH,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
        )
        .ok()?;
        let born = (st.stx_mask & libc::STATX_BTIME != 0)
            .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec));
        Some(Identity {
            dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            born,
        })
    }
}

/// What kind of object a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Fifo,
    Directory,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fifo => "fifo",
            Kind::Directory => "directory",
        }
    }
}

/// The state directory, open and checked (see the module docs).
#[derive(Debug)]
pub(crate) struct StateDir {
    fd: OwnedFd,
    path: PathBuf,
}

static STATE: OnceLock<Option<StateDir>> = OnceLock::new();

/// Opens the state directory, made if missing, for the records of this
/// run. A `PILFERED_RUNDIR` that cannot be used is an error (it was asked
/// for); a default one that cannot be used is said in one warning, and
/// nothing is recorded.
pub(crate) fn open() -> Result<(), Error> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let (path, asked) = match (env("PILFERED_RUNDIR"), env("XDG_RUNTIME_DIR")) {
        (Some(dir), _) => (PathBuf::from(dir), true),
        (None, _) if trust::me() == 0 => (PathBuf::from("/run/pilfered"), false),
        (None, Some(run)) => (Path::new(&run).join("pilfered"), false),
        (None, None) => (
            PathBuf::from(format!("/tmp/pilfered-{}", trust::me())),
            false,
        ),
    };
    let dir = match StateDir::open(&path) {
        Ok(dir) => Some(dir),
        Err(why) if asked => {
            return Err(Error::usage(format!(
                "PILFERED_RUNDIR={}: {why}; choose a directory of your own",
                printable(&path.display().to_string())
            )));
        }
        Err(why) => {
            warn!(
                "state directory {why}; set PILFERED_RUNDIR to a directory of your own: until then what this daemon creates is not recorded, so after a crash it stays behind"
            );
            None
        }
    };
    let _ = STATE.set(dir);
    Ok(())
}

fn state() -> Option<&'static StateDir> {
    STATE.get().and_then(Option::as_ref)
}

/// The state directory [`open`] opened, if it could.
pub(crate) fn state_dir() -> Option<&'static StateDir> {
    state()
}

impl StateDir {
    /// Opens `path` as a state directory, made (mode 0700) if missing:
    /// every directory on the way is walked with [`trust::walk`], and it
    /// must be ours and writable by nobody else.
    pub(crate) fn open(path: &Path) -> Result<StateDir, String> {
        let shown = |p: &Path| printable(&p.display().to_string());
        let abs =
            std::path::absolute(path).map_err(|e| format!("{}: {}", shown(path), describe(&e)))?;
        let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
            return Err(format!("{} is not a directory", shown(&abs)));
        };
        let parent = trust::walk(parent).map_err(|e| printable(&e.to_string()))?;
        let path = parent.path.join(name);
        match mkdirat(&parent.fd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("{}: cannot create it: {}", shown(&path), e.desc())),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&parent.fd, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => format!("{} is not a directory", shown(&path)),
            e => format!("{}: {}", shown(&path), e.desc()),
        })?;
        let st = fstat(&fd).map_err(|e| format!("{}: {}", shown(&path), e.desc()))?;
        let me = trust::me();
        if st.st_uid != me {
            return Err(format!(
                "{} is owned by uid {}, not by us (uid {me})",
                shown(&path),
                st.st_uid
            ));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(format!(
                "{} is writable by other users (mode {:04o})",
                shown(&path),
                st.st_mode & 0o7777
            ));
        }
        Ok(StateDir { fd, path })
    }

    /// The open directory, to make or find files in it relative to it.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where it is, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the file `name` whole (through a temporary file renamed over
    /// it), never following a symlink.
    fn write(&self, name: &str, text: &str) {
        let tmp = format!("{name}.tmp");
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_TRUNC
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC;
        let written = openat(
            &self.fd,
            tmp.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io::Error::from)
        .and_then(|fd| File::from(fd).write_all(text.as_bytes()))
        .and_then(|()| renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(io::Error::from));
        if let Err(e) = written {
            self.remove(&tmp);
            warn!(
                "cannot record {}: {}",
                self.path.join(name).display(),
                describe(&e)
            );
        }
    }

    /// The small regular file `name`, if there is one (never through a
    /// symlink, and never more than [`RECORD_MAX`] bytes).
    fn read(&self, name: &str) -> Option<String> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = File::from(openat(&self.fd, name, flags, Mode::empty()).ok()?);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        file.take(RECORD_MAX).read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn remove(&self, name: &str) {
        let _ = unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir);
    }
}

/// Longest record read back; real ones are well under a hundred bytes.
const RECORD_MAX: u64 = 4096;

/// The record file's name for `path`.
fn record_file(path: &Path) -> String {
    hashed_name("created-", path)
}

/// `prefix` followed by a hash of `path`, so that a file about any path
/// has a short name of fixed length.
pub(crate) fn hashed_name(prefix: &str, path: &Path) -> String {
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let mut name = String::from(prefix);
    for b in &digest[..16] {
        write!(name, "{b:02x}").expect("writing to a String");
    }
    name
}

fn content(kind: Kind, path: &Path, id: Identity) -> String {
    let Identity { dev, ino, born } = id;
    let born = born.map_or("-".to_string(), |(s, ns)| format!("{s}.{ns:09}"));
    format!("{} {dev} {ino} {born} {}\n", kind.name(), path.display())
}

/// Records that we created the `kind` at `path` (or, after a change of its
/// mode, that it is still ours).
pub(crate) fn note(kind: Kind, path: &Path, id: Identity) {
    if let Some(dir) = state() {
        dir.note(kind, path, id);
    }
}

/// Whether the `kind` at `path` is the very object a pilfered daemon
/// created and recorded. A record about anything else there (the object
/// is gone, or was replaced or changed since) is stale and is dropped.
pub(crate) fn was_created(kind: Kind, path: &Path, id: Identity) -> bool {
    state().is_some_and(|dir| dir.was_created(kind, path, id))
}

/// Forgets the record for `path`, once the object is gone.
pub(crate) fn forget(path: &Path) {
    if let Some(dir) = state() {
        dir.remove(&record_file(path));
    }
}

impl StateDir {
    fn note(&self, kind: Kind, path: &Path, id: Identity) {
        self.write(&record_file(path), &content(kind, path, id));
    }

    fn was_created(&self, kind: Kind, path: &Path, id: Identity) -> bool {
        let file = record_file(path);
        match self.read(&file) {
            Some(text) if text == content(kind, path, id) => true,
            Some(_) => {
                self.remove(&file);
                false
            }
            None => false,
        }
    }
}

/// The name the mount scripts give the state of the mount point `path`
/// (absolute): as `systemd-escape --path` writes it, with no leading or
/// trailing slash, `/` as `-`, and every byte but `[A-Za-z0-9:_.]` (and a
/// leading `.`) as `\xNN`; `-` for `/` itself.
pub(crate) fn escape_path(path: &Path) -> String {
    let bytes = path.as_os_str().as_encoded_bytes();
    let trimmed = bytes.strip_prefix(b"/").unwrap_or(bytes);
    let trimmed = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, &b) in trimmed.iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i > 0 => out.push('.'),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' => out.push(char::from(b)),
            b => write!(out, "\\x{b:02x}").expect("writing to a String"),
        }
    }
    out
}

/// This process's start time in clock ticks since boot (field 22 of
/// `/proc/self/stat`, after the parenthesised command name).
fn start_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// What `NAME.pid` says for this process.
fn pid_record() -> Option<String> {
    Some(format!("{} {}\n", std::process::id(), start_time()?))
}

/// Records that this daemon serves the mount point `mount` (`NAME.pid`).
pub(crate) fn serving(mount: &Path) {
    if let (Some(dir), Some(text)) = (state(), pid_record()) {
        dir.write(&format!("{}.pid", escape_path(mount)), &text);
    }
}

/// On an orderly exit of the daemon that served `mount`: removes its
/// `NAME.pid`, and after a clean stop also `NAME.log` if that is this
/// process's standard error.
pub(crate) fn stopped(mount: &Path, clean: bool) {
    let Some(dir) = state() else { return };
    let name = escape_path(mount);
    let pidfile = format!("{name}.pid");
    if dir.read(&pidfile).is_some_and(|t| Some(t) == pid_record()) {
        dir.remove(&pidfile);
    }
    let log = format!("{name}.log");
    let stderr = fstat(std::io::stderr().as_fd()).ok();
    let file = fstatat(&dir.fd, log.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).ok();
    if let (true, Some(e), Some(f)) = (clean, stderr, file)
        && (e.st_dev, e.st_ino) == (f.st_dev, f.st_ino)
    {
        dir.remove(&log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ino: u64, born_nsec: u32) -> Identity {
        Identity {
            dev: 1,
            ino,
            born: Some((1_700_000_000, born_nsec)),
        }
    }

    #[test]
    fn a_record_matches_only_the_same_object() {
        let tmp = tempfile::tempdir().unwrap();
        let d = StateDir::open(&tmp.path().join("run")).unwrap();
        let path = Path::new("/tmp/pilferedbits");
        let other = Path::new("/tmp/other");
        assert!(!d.was_created(Kind::Fifo, path, id(2, 5)));
        d.note(Kind::Fifo, path, id(2, 5));
        assert!(d.was_created(Kind::Fifo, path, id(2, 5)));
        assert!(!d.was_created(Kind::Fifo, other, id(2, 5)));
        assert!(d.was_created(Kind::Fifo, path, id(2, 5)), "kept");
        // The same inode number born at another time is another object (a
        // reused inode): the stale record goes.
        assert!(!d.was_created(Kind::Fifo, path, id(2, 6)));
        let entries = || std::fs::read_dir(&d.path).unwrap().count();
        assert_eq!(entries(), 0, "stale record");
        assert!(!d.was_created(Kind::Fifo, path, id(2, 5)));
        d.note(Kind::Fifo, path, id(2, 5));
        assert!(!d.was_created(Kind::Directory, path, id(2, 5)));
        d.note(Kind::Fifo, path, id(3, 5));
        assert!(!d.was_created(Kind::Fifo, path, id(2, 5)), "inode");
    }

    /// A symlink planted where a record goes is neither followed when the
    /// record is written nor read as one.
    #[test]
    fn records_never_follow_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let d = StateDir::open(&tmp.path().join("run")).unwrap();
        let target = tmp.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let path = Path::new("/tmp/pilferedbits");
        let name = record_file(path);
        std::os::unix::fs::symlink(&target, d.path.join(format!("{name}.tmp"))).unwrap();
        d.note(Kind::Fifo, path, id(2, 5));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        std::fs::remove_file(d.path.join(&name)).ok();
        std::os::unix::fs::symlink(&target, d.path.join(&name)).unwrap();
        assert_eq!(d.read(&name), None);
    }

    #[test]
    fn a_state_directory_must_be_ours_alone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let open = |p: &Path| StateDir::open(p).map(|_| ());
        let run = base.join("run");
        assert_eq!(open(&run), Ok(()));
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            open(&run),
            Err(format!(
                "{} is writable by other users (mode 0777)",
                run.display()
            ))
        );
        std::os::unix::fs::symlink(&run, base.join("link")).unwrap();
        assert_eq!(
            open(&base.join("link")),
            Err(format!(
                "{} is not a directory",
                base.join("link").display()
            ))
        );
        if trust::me() == 0 {
            let theirs = base.join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            assert_eq!(
                open(&theirs),
                Err(format!(
                    "{} is owned by uid 65534, not by us (uid 0)",
                    theirs.display()
                ))
            );
            // Only the last component was checked before: a parent another
            // user owns could swap it.
            let below = theirs.join("run");
            std::fs::create_dir(&below).unwrap();
            assert_eq!(
                open(&below),
                Err(format!(
                    "{} is owned by uid 65534, who could swap what the daemon makes there; use a directory owned by you or root",
                    theirs.display()
                ))
            );
        }
    }

    #[test]
    fn escapes_paths_as_systemd_escape_does() {
        for (path, want) in [
            ("/mnt/pilfered", "mnt-pilfered"),
            ("/", "-"),
            ("/tmp/a b/.x-y/\u{e9}", "tmp-a\\x20b-.x\\x2dy-\\xc3\\xa9"),
            ("/.hidden/x.y", "\\x2ehidden-x.y"),
        ] {
            assert_eq!(escape_path(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn the_pid_record_names_this_process() {
        let text = pid_record().unwrap();
        let (pid, start) = text.trim_end().split_once(' ').unwrap();
        assert_eq!(pid, std::process::id().to_string());
        assert!(start.parse::<u64>().unwrap() > 0, "{text}");
    }
}
