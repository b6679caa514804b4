//! The daemon's life from outside: unmounted by others, killed, restarted.

use std::fs::File;
use std::io::Read;
use std::process::Command;
use std::time::Duration;

use crate::common::{Daemon, fuse_available, on_both_transports, wait_until};
use nix::sys::signal::{Signal, kill};

fn read_some(path: &std::path::Path) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    File::open(path).unwrap().read_exact(&mut buf).unwrap();
    buf
}

on_both_transports! {
    /// `umount` or `fusermount3 -u` from outside: the daemon notices, removes
    /// its FIFO and exits 0.
    fn outside_unmount_stops_the_daemon_cleanly(t: Transport) {
        if !fuse_available() {
            return;
        }
        for tool in [&["umount"][..], &["fusermount3", "-u"][..]] {
            let mut d = Daemon::start_on(t, &[]);
            read_some(&d.bits());
            let out = Command::new(tool[0])
                .args(&tool[1..])
                .arg(&d.mount)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{tool:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let child = d.child.as_mut().unwrap();
            let exited = wait_until(Duration::from_secs(2), || {
                child.try_wait().unwrap().is_some()
            });
            assert!(
                exited,
                "{tool:?}: daemon still running; log: {}",
                d.log_text()
            );
            let status = d.child.take().unwrap().wait().unwrap();
            assert_eq!(status.code(), Some(0), "{tool:?}: log: {}", d.log_text());
            assert!(!d.fifo.exists(), "{tool:?}: FIFO left behind");
            assert!(!d.is_mounted());
        }
    }
}

on_both_transports! {
    /// After kill -9 the mount is dead ("Transport endpoint is not connected")
    /// and the FIFO is left; starting again on the same paths just works.
    fn restart_after_kill_9_clears_the_stale_mount(t: Transport) {
        if !fuse_available() {
            return;
        }
        let mut d = Daemon::start_on(t, &[]);
        let before = read_some(&d.bits());
        kill(d.pid(), Signal::SIGKILL).unwrap();
        d.child.take().unwrap().wait().unwrap();
        // statfs always reaches the (dead) daemon; stat may answer from
        // cache. A request caught in the teardown of a ring ends with
        // ECONNABORTED; once the connection is gone, ENOTCONN.
        let err = nix::sys::statvfs::statvfs(&d.mount).unwrap_err();
        assert!(
            matches!(
                err,
                nix::errno::Errno::ENOTCONN
                    | nix::errno::Errno::ECONNABORTED
                    | nix::errno::Errno::ECANCELED
            ),
            "{err}"
        );
        assert!(d.fifo.exists());

        let (dir, mount, fifo) = d.abandon();
        let d = Daemon::start_at(dir, mount, fifo, &t.args());
        let after = read_some(&d.bits());
        assert_ne!(before, after);
        let mut fifo_bytes = [0u8; 100];
        File::open(&d.fifo)
            .unwrap()
            .read_exact(&mut fifo_bytes)
            .unwrap();
        assert!(
            d.log_text()
                .contains("clearing the stale mount of a pilfered daemon that is gone"),
            "{}",
            d.log_text()
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert_eq!(
            mounts.matches(&format!(" {} ", d.mount.display())).count(),
            1
        );
    }
}

/// A second daemon on a FIFO that a live one serves is refused.
#[test]
fn a_second_daemon_on_the_same_fifo_is_refused() {
    let d = Daemon::start(&["--no-fuse"]);
    let f = d.fifo.display().to_string();
    let (status, _, stderr) = crate::common::run(&["serve", "--no-fuse", "--fifo", &f]);
    assert_eq!(
        stderr,
        format!(
            "pilfered: --fifo {f}: another pilfered is already serving this FIFO; stop it or choose another path\n"
        )
    );
    assert_eq!(status, 1, "a runtime conflict, not a usage error");
    assert!(d.fifo.exists());
    let mut buf = [0u8; 100];
    File::open(&d.fifo).unwrap().read_exact(&mut buf).unwrap();
}

/// With -v the daemon logs its throughput per interface now and then.
#[test]
fn verbose_logs_throughput() {
    let d = Daemon::start(&["--no-fuse", "-v"]);
    let mut f = File::open(&d.fifo).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    f.read_exact(&mut buf).unwrap();
    let logged = wait_until(Duration::from_secs(12), || {
        d.log_text().contains("throughput: FUSE ")
    });
    assert!(logged, "{}", d.log_text());
    let line = d
        .log_text()
        .lines()
        .find(|l| l.contains("throughput:"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(" INFO ") && line.contains("MB/s, FIFO ") && line.contains("queue "),
        "{line}"
    );
}
