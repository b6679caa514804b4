//! What pilfered created, recorded so that it is removed even after a crash.
//!
//! When the daemon creates its FIFO or its mount directory it writes a small
//! record naming the path and the object's identity: device and inode
//! numbers, and its birth time where the file system keeps one. A clean
//! stop removes the object and its record. After `kill -9` the record stays;
//! the next daemon on the same path finds that the object there is the very
//! one recorded, takes it over as its own, and removes it when it stops. An
//! object the user made is never recorded, so it is never removed.
//!
//! Records live in the state directory shared with the mount scripts:
//! `$PILFERED_RUNDIR` if set, else `/run/pilfered` for root, else
//! `$XDG_RUNTIME_DIR/pilfered`, else `/tmp/pilfered-UID`; it must be a
//! directory of ours that nobody else can write. Where it cannot be used,
//! the daemon says so once and carries on without records.

use std::fmt::Write as _;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use log::warn;
use sha2::{Digest, Sha256};

use crate::error::describe;
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

/// The state directory (see the module docs), made if missing.
pub(crate) fn state_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| match open_state_dir() {
        Ok(dir) => Some(dir),
        Err(why) => {
            warn!(
                "{why}; what this daemon creates will not be recorded, so after a crash it stays behind"
            );
            None
        }
    })
    .as_deref()
}

fn open_state_dir() -> Result<PathBuf, String> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = match (env("PILFERED_RUNDIR"), env("XDG_RUNTIME_DIR")) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, _) if trust::me() == 0 => PathBuf::from("/run/pilfered"),
        (None, Some(run)) => Path::new(&run).join("pilfered"),
        (None, None) => PathBuf::from(format!("/tmp/pilfered-{}", trust::me())),
    };
    let shown = dir.display();
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("state directory {shown}: {}", describe(&e))),
    }
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| format!("state directory {shown}: {}", describe(&e)))?;
    if !meta.is_dir() || meta.uid() != trust::me() || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "state directory {shown} is not a directory of ours that only we can write"
        ));
    }
    Ok(dir)
}

/// The record file for `path` in `dir`: named by a hash of the path, so
/// any path fits in one file name.
fn record_file(dir: &Path, path: &Path) -> PathBuf {
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let mut name = String::from("created-");
    for b in &digest[..16] {
        write!(name, "{b:02x}").expect("writing to a String");
    }
    dir.join(name)
}

fn content(kind: Kind, path: &Path, id: Identity) -> String {
    let Identity { dev, ino, born } = id;
    let born = born.map_or("-".to_string(), |(s, ns)| format!("{s}.{ns:09}"));
    format!("{} {dev} {ino} {born} {}\n", kind.name(), path.display())
}

/// Records that we created the `kind` at `path` (or, after a change of its
/// mode, that it is still ours).
pub(crate) fn note(kind: Kind, path: &Path, id: Identity) {
    if let Some(dir) = state_dir() {
        note_in(dir, kind, path, id);
    }
}

fn note_in(dir: &Path, kind: Kind, path: &Path, id: Identity) {
    let file = record_file(dir, path);
    let tmp = file.with_extension("tmp");
    let written =
        std::fs::write(&tmp, content(kind, path, id)).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        warn!("cannot record {}: {}", file.display(), describe(&e));
    }
}

/// Whether the `kind` at `path` is the very object a pilfered daemon
/// created and recorded. A record about anything else there (the object
/// is gone, or was replaced or changed since) is stale and is dropped.
pub(crate) fn was_created(kind: Kind, path: &Path, id: Identity) -> bool {
    state_dir().is_some_and(|dir| was_created_in(dir, kind, path, id))
}

fn was_created_in(dir: &Path, kind: Kind, path: &Path, id: Identity) -> bool {
    let file = record_file(dir, path);
    match std::fs::read_to_string(&file) {
        Ok(text) if text == content(kind, path, id) => true,
        Ok(_) => {
            let _ = std::fs::remove_file(&file);
            false
        }
        Err(_) => false,
    }
}

/// Forgets the record for `path`, once the object is gone.
pub(crate) fn forget(path: &Path) {
    if let Some(dir) = state_dir() {
        let _ = std::fs::remove_file(record_file(dir, path));
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
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let path = Path::new("/tmp/pilferedbits");
        let other = Path::new("/tmp/other");
        assert!(!was_created_in(d, Kind::Fifo, path, id(2, 5)));
        note_in(d, Kind::Fifo, path, id(2, 5));
        assert!(was_created_in(d, Kind::Fifo, path, id(2, 5)));
        assert!(!was_created_in(d, Kind::Fifo, other, id(2, 5)));
        assert!(was_created_in(d, Kind::Fifo, path, id(2, 5)), "kept");
        // The same inode number born at another time is another object (a
        // reused inode): the stale record goes.
        assert!(!was_created_in(d, Kind::Fifo, path, id(2, 6)));
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "stale record");
        assert!(!was_created_in(d, Kind::Fifo, path, id(2, 5)));
        note_in(d, Kind::Fifo, path, id(2, 5));
        assert!(!was_created_in(d, Kind::Directory, path, id(2, 5)));
        note_in(d, Kind::Fifo, path, id(3, 5));
        assert!(!was_created_in(d, Kind::Fifo, path, id(2, 5)), "inode");
    }
}
