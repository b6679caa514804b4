//! `--group NAME`: the FIFO becomes owner:NAME 0640 and the FUSE files
//! owner:NAME 0440, with the mount open to all (allow_other) and the kernel
//! enforcing the modes (default_permissions). Tried as a member of the
//! group and as a user who is not one.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{
    BIN, Daemon, MEMBER, NON_MEMBER, SHARED_GROUP, fuse_available, open_dir, read_as, refused,
    wait_until,
};

/// (uid, gid, mode) of a path, not following a symlink.
fn owner_and_mode(path: &std::path::Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
}

/// A root daemon with `--group users`: members read both interfaces,
/// others are refused by the kernel with EACCES, root (the owner) reads.
#[test]
fn members_read_the_device_and_others_do_not() {
    if !fuse_available() {
        return;
    }
    let dir = open_dir();
    let (mount, fifo) = (dir.path().join("mnt"), dir.path().join("fifo"));
    let d = Daemon::start_at(dir, mount, fifo, &["--group", SHARED_GROUP]);
    assert_eq!(owner_and_mode(&d.fifo), (0, 100, 0o640));
    assert_eq!(owner_and_mode(&d.bits()), (0, 100, 0o440));
    assert_eq!(owner_and_mode(&d.mount.join("stats")), (0, 100, 0o440));
    assert_eq!(owner_and_mode(&d.mount), (0, 100, 0o550));

    for path in [d.bits(), d.fifo.clone()] {
        let member = read_as(&MEMBER, &path, 4096);
        assert!(member.is_ok(), "a member cannot read {path:?}: {member:?}");
        let other = read_as(&NON_MEMBER, &path, 16).unwrap_err();
        assert!(
            other.contains("Permission denied"),
            "a non-member read {path:?}: {other}"
        );
    }
    let stats = read_as(&NON_MEMBER, &d.mount.join("stats"), 1).unwrap_err();
    assert!(stats.contains("Permission denied"), "{stats}");
    assert_eq!(
        crate::common::read_blocks(&d.bits(), 4096, 4096, true).len(),
        4096
    );
}

/// Stops a daemon started as another user when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        if !wait_until(Duration::from_secs(5), || {
            self.0.try_wait().unwrap().is_some()
        }) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A normal user may give the FIFO to a group of their own, and not to
/// one they are not a member of: that is refused before anything is made.
#[test]
fn a_normal_user_shares_only_with_their_own_group() {
    let dir = open_dir();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let fifo = dir.path().join("fifo");
    let serve = |who: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(who)
            .arg(BIN)
            .args(["serve", "--no-fuse", "--group", SHARED_GROUP, "--fifo"])
            .arg(&fifo)
            .env("PILFERED_RUNDIR", dir.path().join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };

    let out = serve(&NON_MEMBER).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "pilfered: --group {SHARED_GROUP}: you (uid 65534) are not a member of group {SHARED_GROUP} (gid 100), so you cannot give it the device; join the group (and log in again) or run as root\n"
        )
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!fifo.exists(), "a refused start made the FIFO");

    let daemon = Running(serve(&MEMBER).spawn().unwrap());
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::symlink_metadata(&fifo).is_ok_and(|m| m.gid() == 100)
        }),
        "the FIFO never became the group's"
    );
    assert_eq!(owner_and_mode(&fifo), (65534, 100, 0o640));
    assert!(read_as(&MEMBER, &fifo, 64).is_ok());
    drop(daemon);
    assert!(!fifo.exists(), "the daemon left its FIFO");
}

#[test]
fn a_group_is_checked_before_anything_is_made() {
    let dir = open_dir();
    let fifo = dir.path().join("fifo");
    let f = fifo.to_str().unwrap();
    refused(
        &[
            "serve",
            "--no-fuse",
            "--fifo",
            f,
            "--group",
            "no-such-group-x",
        ],
        2,
        "--group no-such-group-x: no such group; give the name of an existing group (see 'getent group')",
    );
    refused(
        &[
            "serve",
            "--fifo",
            f,
            "--group",
            SHARED_GROUP,
            "--allow-other",
        ],
        2,
        "the argument '--group <NAME>' cannot be used with '--allow-other'",
    );
    assert!(!fifo.exists());
}
