//! The scripts in `mount-scripts/`, run for real with the built daemon on
//! temporary mount points, FIFOs and state directories.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{
    BIN, Daemon, MEMBER, NON_MEMBER, SHARED_GROUP, fuse_available, read_as, wait_until,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pilfered::internal::mounts;
use tempfile::TempDir;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-scripts");

/// A temporary directory for mount points, FIFOs and the scripts' state.
/// Dropping it stops every daemon whose command line names a path inside it
/// and detaches every mount left inside it, whatever the scripts did.
struct Env {
    dir: TempDir,
}

/// What a script printed and returned.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("pilfered-scripts")
            .tempdir()
            .unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn rundir(&self) -> PathBuf {
        self.path("run")
    }

    /// Runs `mount-scripts/SCRIPT ARGS` with the test's daemon and state
    /// directory.
    fn run<S: AsRef<OsStr>>(&self, script: &str, args: &[S]) -> Ran {
        let out = Command::new(Path::new(SCRIPTS).join(script))
            .args(args)
            .env("PILFERED", BIN)
            .env("PILFERED_RUNDIR", self.rundir())
            .env("PILFERED_TIMEOUT", "20")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `mount.fuse.pilfered pilfered MNT -o OPTS`, as mount(8) runs it.
    fn mount_helper(&self, mnt: &Path, opts: &str) -> Ran {
        let args: [&OsStr; 4] = [
            "pilfered".as_ref(),
            mnt.as_os_str(),
            "-o".as_ref(),
            opts.as_ref(),
        ];
        self.run("mount.fuse.pilfered", &args)
    }

    /// `pilfered-mount MNT -- --fifo FIFO`.
    fn mount_with_fifo(&self, mnt: &Path, fifo: &Path) -> Ran {
        self.run(
            "pilfered-mount",
            &[
                mnt.as_os_str(),
                "--".as_ref(),
                "--fifo".as_ref(),
                fifo.as_os_str(),
            ],
        )
    }

    /// `pilfered-mount DIR/NAME -- --fifo DIR/fifo`, which must succeed:
    /// the mount point, the FIFO and what the script printed.
    fn start(&self, name: &str) -> (PathBuf, PathBuf, Ran) {
        let (mnt, fifo) = (self.path(name), self.path("fifo"));
        let ran = self.mount_with_fifo(&mnt, &fifo);
        assert_eq!(ran.code, 0, "{ran:?}");
        (mnt, fifo, ran)
    }

    /// The PID recorded for `mount_point` (named as systemd-escape does).
    fn recorded_pid(&self, mount_point: &Path) -> Option<Pid> {
        let name = escape(mount_point);
        let text = std::fs::read_to_string(self.rundir().join(format!("{name}.pid"))).ok()?;
        let pid = text.split_whitespace().next().unwrap();
        Some(Pid::from_raw(pid.parse().unwrap()))
    }

    /// The state files (NAME.pid, NAME.log, ...) left in the state
    /// directory, besides the daemon's records of what it created.
    fn state_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.rundir()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Live `pilfered serve` processes whose command line names a path in
    /// this directory.
    fn daemons(&self) -> Vec<Pid> {
        let prefix = self.dir.path().as_os_str().as_bytes();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
                alive(Pid::from_raw(pid))
                    && args.contains(&&b"serve"[..])
                    && args.iter().any(|a| a.starts_with(prefix))
            })
            .map(Pid::from_raw)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for pid in self.daemons() {
            let _ = kill(pid, Signal::SIGTERM);
            if !wait_until(Duration::from_secs(5), || !alive(pid)) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mounts::parse_mountinfo(&text).into_iter().rev() {
            if m.mount_point.starts_with(self.dir.path()) {
                let _ = mounts::detach(&m.mount_point);
            }
        }
    }
}

/// Whether `pid` runs (a zombie, not yet reaped by init, does not).
fn alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map_or("", |(_, rest)| &rest[..1]);
            !matches!(state, "Z" | "X")
        }
        Err(_) => false,
    }
}

/// `systemd-escape --path`, as the scripts name their state files.
fn escape(path: &Path) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "PROG=test; . {SCRIPTS}/pilfered-lib.sh; escape_path \"$1\"; printf %s \"$ESCAPED\""
        ))
        .arg("escape")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn pilfered_mounted(mount_point: &Path) -> bool {
    mounts::mount_at(mount_point)
        .unwrap()
        .is_some_and(|m| m.fs_type == "fuse.pilfered")
}

fn read_n(path: &Path, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

fn stats_of(mount_point: &Path) -> std::collections::HashMap<String, u64> {
    crate::common::parse_stats(&std::fs::read_to_string(mount_point.join("stats")).unwrap())
}

/// Kills the daemon with SIGKILL, leaving a stale mount and its FIFO.
fn crash(pid: Pid, mount_point: &Path) {
    kill(pid, Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    // statfs always reaches the (dead) connection; stat may be answered
    // from the attribute cache for a while. A request caught in flight as
    // the connection dies fails with ECONNABORTED or ECANCELED instead.
    let err = nix::sys::statfs::statfs(mount_point).unwrap_err();
    assert!(
        matches!(
            err,
            nix::errno::Errno::ENOTCONN
                | nix::errno::Errno::ECONNABORTED
                | nix::errno::Errno::ECANCELED
        ),
        "statfs after kill -9: {err}"
    );
}

#[test]
fn escape_path_matches_systemd_escape() {
    for (path, want) in [
        ("/mnt/pilfered", "mnt-pilfered"),
        ("/", "-"),
        ("/tmp/a b/.x-y/é", "tmp-a\\x20b-.x\\x2dy-\\xc3\\xa9"),
        ("/.hidden/x.y", "\\x2ehidden-x.y"),
    ] {
        assert_eq!(escape(Path::new(path)), want, "{path}");
    }
}

/// pilfered-mount returns once the device is readable, records the daemon,
/// refuses a second start; pilfered-umount stops it and leaves nothing.
#[test]
fn mount_read_and_umount() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    let (mnt, fifo, ran) = env.start("mnt with space");
    let pid = env.recorded_pid(&mnt).expect("pidfile");
    let log = env.rundir().join(format!("{}.log", escape(&mnt)));
    assert_eq!(
        ran.stdout,
        format!(
            "pilfered-mount: pilfered (pid {pid}) serves {}/bits and {}; log: {}\n",
            mnt.display(),
            fifo.display(),
            log.display()
        )
    );
    assert!(log.exists());
    // Ready on return: no waiting needed.
    assert!(pilfered_mounted(&mnt));
    assert!(fifo.exists());
    assert_eq!(read_n(&mnt.join("bits"), 1 << 20).len(), 1 << 20);
    assert_eq!(read_n(&fifo, 65536).len(), 65536);

    let again = env.run("pilfered-mount", &[mnt.as_os_str()]);
    assert_eq!(again.code, 1);
    assert_eq!(
        again.stderr,
        format!(
            "pilfered-mount: {m} is already served by pilfered (pid {pid}); stop it first with 'pilfered-umount {m}'\n",
            m = mnt.display()
        )
    );
    assert!(alive(pid), "the refused start disturbed the running daemon");

    let ran = env.run("pilfered-umount", &[&mnt]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!(
            "pilfered-umount: stopped pilfered (pid {pid}) serving {}\n",
            mnt.display()
        )
    );
    assert!(!alive(pid));
    assert!(!pilfered_mounted(&mnt));
    assert!(!fifo.exists(), "FIFO left behind");
    assert!(!mnt.exists(), "the mount directory the daemon made is left");
    assert!(env.recorded_pid(&mnt).is_none(), "pidfile left behind");
    assert!(!log.exists(), "the log of a clean stop is left behind");
    assert_eq!(env.state_files(), Vec::<String>::new());

    let ran = env.run("pilfered-umount", &[&mnt]);
    assert_eq!(ran.code, 1);
    assert_eq!(
        ran.stderr,
        format!(
            "pilfered-umount: no pilfered daemon serves {}, and nothing is mounted there\n",
            mnt.display()
        )
    );
}

/// A start the daemon refuses: its own one-line error, its exit status,
/// and nothing left running, mounted or recorded.
#[test]
fn failed_start_reports_the_daemons_error() {
    let env = Env::new();
    let mnt = env.path("mnt");
    let not_fifo = env.path("notes.txt");
    std::fs::write(&not_fifo, "precious").unwrap();
    let ran = env.run(
        "pilfered-mount",
        &[
            mnt.as_os_str(),
            "--".as_ref(),
            "--fifo".as_ref(),
            not_fifo.as_os_str(),
        ],
    );
    let log = env.rundir().join(format!("{}.log", escape(&mnt)));
    assert_eq!(ran.code, 2, "{ran:?}");
    assert_eq!(
        ran.stderr,
        format!(
            "pilfered: --fifo {}: is a regular file, not a FIFO; refusing to touch it\n\
             pilfered-mount: pilfered failed to start (exit status 2); log: {}\n",
            not_fifo.display(),
            log.display()
        )
    );
    assert_eq!(ran.stdout, "");
    assert_eq!(std::fs::read_to_string(&not_fifo).unwrap(), "precious");

    let ran = env.run(
        "pilfered-mount",
        &[
            mnt.as_os_str(),
            "--".as_ref(),
            "--chunk-size".as_ref(),
            "4Q".as_ref(),
        ],
    );
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.starts_with(
            "pilfered: invalid value '4Q' for '--chunk-size <SIZE>': unknown suffix 'Q'"
        ),
        "{ran:?}"
    );
    // Only this start's output is shown, not the earlier failure's.
    assert!(!ran.stderr.contains("notes.txt"), "{ran:?}");
    // Issue 27: and only this start's is kept, in the one log the message
    // names; failed starts do not pile up in the state directory.
    for _ in 0..3 {
        let again = env.run(
            "pilfered-mount",
            &[
                mnt.as_os_str(),
                "--".as_ref(),
                "--chunk-size".as_ref(),
                "4Q".as_ref(),
            ],
        );
        assert_eq!(again.code, 2, "{again:?}");
    }
    let kept = std::fs::read_to_string(&log).unwrap();
    assert_eq!(kept.matches(": starting ").count(), 1, "{kept}");
    assert!(
        kept.contains("unknown suffix 'Q'") && !kept.contains("notes.txt"),
        "{kept}"
    );
    let logs: Vec<_> = std::fs::read_dir(env.rundir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");

    assert!(env.daemons().is_empty());
    assert!(env.recorded_pid(&mnt).is_none());
    assert!(!mnt.exists());

    // The script's own usage errors.
    let ran = env.run("pilfered-mount", &["/x", "--", "--mount", "/y"]);
    assert_eq!(ran.code, 2);
    assert_eq!(
        ran.stderr,
        "pilfered-mount: give the mount point as pilfered-mount's MOUNTPOINT argument, not as --mount; see 'pilfered-mount --help'\n"
    );
    let ran = env.run("pilfered-mount", &["/x", "/y"]);
    assert_eq!(ran.code, 2);
    assert!(ran.stderr.contains("one MOUNTPOINT at most"), "{ran:?}");
}

/// The binary comes from $PILFERED, else PATH; a clear error if neither.
#[test]
fn missing_binary_is_explained() {
    let env = Env::new();
    let out = Command::new(Path::new(SCRIPTS).join("pilfered-mount"))
        .arg(env.path("mnt"))
        .env("PILFERED_RUNDIR", env.rundir())
        .env_remove("PILFERED")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pilfered-mount: cannot find the pilfered binary: it is not on PATH; install it (make install) or set PILFERED=/path/to/pilfered\n"
    );
    let ran = Command::new(Path::new(SCRIPTS).join("pilfered-mount"))
        .env("PILFERED", env.path("nope"))
        .env("PILFERED_RUNDIR", env.rundir())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ran.stderr),
        format!(
            "pilfered-mount: PILFERED={} is not an executable file\n",
            env.path("nope").display()
        )
    );
}

/// mount(8)'s call with fstab-style options: mapped to serve flags, generic
/// ones ignored, ready on return; `umount` from outside stops the daemon.
#[test]
fn mount_helper_maps_options_and_outside_umount_stops_the_daemon() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    let mnt = env.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let fifo = env.path("bits.fifo");
    let opts = format!(
        "rw,noauto,_netdev,defaults,nofail,x-systemd.automount,fifo={},chunk_size=64K,queue_capacity=1M,pipe_size=64K",
        fifo.display()
    );
    let ran = env.mount_helper(&mnt, &opts);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(ran.stdout, "", "mount helpers are quiet unless -v");
    assert!(pilfered_mounted(&mnt));
    assert!(fifo.exists());
    let stats = stats_of(&mnt);
    assert_eq!(stats["chunk_size"], 64 << 10);
    assert_eq!(stats["queue_capacity"], 1 << 20);
    assert_eq!(read_n(&fifo, 1000).len(), 1000);

    let pid = env.recorded_pid(&mnt).unwrap();
    let status = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(status.success());
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "the daemon did not exit after umount"
    );
    assert!(!fifo.exists(), "FIFO left behind after umount");
    assert!(mnt.is_dir(), "a mount point made by the user must stay");
    assert_eq!(
        env.state_files(),
        Vec::<String>::new(),
        "state after umount"
    );
}

/// `group=` in an fstab line reaches the daemon through the helper and
/// pilfered-mount: members of the group read both interfaces, nobody else.
#[test]
fn mount_helper_shares_with_a_group() {
    use std::os::unix::fs::PermissionsExt;
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mnt, fifo) = (env.path("mnt"), env.path("fifo"));
    let opts = format!("fifo={},group={SHARED_GROUP}", fifo.display());
    let ran = env.mount_helper(&mnt, &opts);
    assert_eq!(ran.code, 0, "{ran:?}");
    for path in [mnt.join("bits"), fifo.clone()] {
        assert!(read_as(&MEMBER, &path, 4096).is_ok(), "{path:?}");
        let other = read_as(&NON_MEMBER, &path, 16).unwrap_err();
        assert!(other.contains("Permission denied"), "{path:?}: {other}");
    }
    let ran = env.run("pilfered-umount", &[&mnt]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(!fifo.exists(), "FIFO left behind");
}

/// nofifo: no FIFO; the script waits only for the file.
#[test]
fn mount_helper_without_fifo() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    let mnt = env.path("mnt");
    let ran = env.run(
        "mount.fuse.pilfered",
        &[
            "pilfered".as_ref(),
            mnt.as_os_str(),
            "-v".as_ref(),
            "-o".as_ref(),
            "nofifo,ro".as_ref(),
        ],
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stderr.contains("-- --no-fifo\n"),
        "-v shows the command: {ran:?}"
    );
    assert!(
        ran.stdout.contains("serves"),
        "-v keeps pilfered-mount's line: {ran:?}"
    );
    let pid = env.recorded_pid(&mnt).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.split(|&b| b == 0).any(|a| a == b"--no-fifo"));
    assert_eq!(read_n(&mnt.join("bits"), 4096).len(), 4096);
    assert_eq!(stats_of(&mnt)["bytes_served_fifo"], 0);
    let ran = env.run("pilfered-umount", &["-q".as_ref(), mnt.as_os_str()]);
    assert_eq!((ran.code, ran.stdout.as_str()), (0, ""), "{ran:?}");
    assert!(!pilfered_mounted(&mnt));
}

/// Every option is mapped as documented (checked with -f, which runs
/// nothing); unknown ones are refused, or ignored with -s.
#[test]
fn mount_helper_option_mapping() {
    let env = Env::new();
    let fake = |opts: &str, flags: &str| {
        let mut args = vec!["pilfered", "/mnt/p", "-f"];
        if !flags.is_empty() {
            args.push(flags);
        }
        args.extend(["-o", opts]);
        env.run("mount.fuse.pilfered", &args)
    };
    let ran = fake(
        "rw,defaults,auto,user,users,owner,group,_netdev,nofail,nosuid,nodev,noexec,noatime,relatime,comment=x,x-systemd.requires=a.service,\
         allow_other,nonempty,fifo=/run/pilferedbits,chunk_size=64K,queue_capacity=32M,pipe_size=1M,fifo_mode=0640,generators=2,fuse_threads=4,fuse_transport=io-uring,rounds=12,log=/var/log/p.log,group=users",
        "",
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.stderr,
        format!(
            "mount.fuse.pilfered: would run (-f) {SCRIPTS}/pilfered-mount -q --log /var/log/p.log /mnt/p -- \
             --allow-other --nonempty --fifo /run/pilferedbits --chunk-size 64K --queue-capacity 32M --pipe-size 1M \
             --fifo-mode 0640 --generators 2 --fuse-threads 4 --fuse-transport io-uring --rounds 12 --group users\n"
        )
    );
    // Options may also come glued to -o, and in several -o.
    let ran = env.run(
        "mount.fuse.pilfered",
        &[
            "pilfered",
            "/mnt/p",
            "-fn",
            "-onofifo",
            "-o",
            "chunk_size=8K",
        ],
    );
    assert!(
        ran.stderr
            .ends_with("/mnt/p -- --no-fifo --chunk-size 8K\n"),
        "{ran:?}"
    );

    let ran = fake("rw,bogus=1", "");
    assert_eq!(ran.code, 2);
    assert_eq!(
        ran.stderr,
        "mount.fuse.pilfered: unknown option 'bogus=1' for a fuse.pilfered mount (known: fifo=PATH, nofifo, allow_other, nonempty, group=NAME, chunk_size=SIZE, queue_capacity=SIZE, pipe_size=SIZE, fifo_mode=OCTAL, generators=N, fuse_threads=N, fuse_transport=T, rounds=N, log=FILE); see 'mount.fuse.pilfered --help'\n"
    );
    let ran = fake("bogus,nofifo", "-s");
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stderr
            .starts_with("mount.fuse.pilfered: ignoring unknown option 'bogus' (-s)\n"),
        "{ran:?}"
    );
    let ran = fake("chunk_size=", "");
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr
            .starts_with("mount.fuse.pilfered: option chunk_size= needs a value"),
        "{ran:?}"
    );
    let ran = fake(&format!("seed={}", "0".repeat(64)), "");
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .starts_with("mount.fuse.pilfered: option seed= is refused"),
        "{ran:?}"
    );
    assert!(
        !ran.stderr.contains(&"0".repeat(64)),
        "the key is echoed: {ran:?}"
    );
    // Safe for the key, which stays in its file, but a mount is a system's
    // device, and seeded output is predictable.
    let ran = fake("seed_file=/root/key,nofifo", "");
    assert_eq!(ran.code, 1);
    assert_eq!(
        ran.stderr,
        "mount.fuse.pilfered: option seed_file= is refused: seeded output is predictable and for tests only, never for a system's device; run 'pilfered serve --seed-file' by hand instead\n"
    );
    let ran = env.run("mount.fuse.pilfered", &["pilfered"]);
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr.contains("expected SOURCE and MOUNTPOINT"),
        "{ran:?}"
    );
}

/// A daemon killed with SIGKILL leaves a stale mount and its FIFO;
/// pilfered-umount detaches the mount, and the next daemon on the same
/// paths takes over the FIFO and removes it when it stops.
#[test]
fn umount_clears_a_stale_mount_after_kill_9() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    let (mnt, fifo, _) = env.start("mnt");
    crash(env.recorded_pid(&mnt).unwrap(), &mnt);
    assert!(pilfered_mounted(&mnt));

    let ran = env.run("pilfered-umount", &[&mnt]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!(
            "pilfered-umount: cleared the stale mount at {} left by a pilfered daemon that died\n",
            mnt.display(),
        )
    );
    assert!(!pilfered_mounted(&mnt));
    assert!(env.recorded_pid(&mnt).is_none());
    assert!(
        fifo.exists(),
        "the dead daemon's FIFO waits for the next one"
    );
    env.start("mnt");
    assert_eq!(env.run("pilfered-umount", &[&mnt]).code, 0);
    assert!(!fifo.exists(), "the FIFO the dead daemon made is left");
}

/// Issue 20: after a stop that did not go through pilfered-umount (an
/// outside umount, a SIGTERM) another user makes their own FIFO at the path
/// in a sticky directory. The next pilfered-mount must not remove it: the
/// daemon refuses it, and nothing of the stopped daemon's state is left.
#[test]
fn another_users_fifo_at_the_path_is_left_alone() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    let sticky = env.path("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mnt, fifo) = (env.path("mnt"), sticky.join("fifo"));
    assert_eq!(env.mount_with_fifo(&mnt, &fifo).code, 0);
    let pid = env.recorded_pid(&mnt).unwrap();
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    assert_eq!(env.state_files(), Vec::<String>::new(), "after umount");

    let made = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "mkfifo",
            "-m",
            "0600",
        ])
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let ran = env.mount_with_fifo(&mnt, &fifo);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.starts_with(&format!(
            "pilfered: --fifo {}: FIFO is owned by uid 65534, not by us (uid 0); remove it or choose another path\n",
            fifo.display()
        )),
        "{ran:?}"
    );
    let meta = std::fs::symlink_metadata(&fifo).expect("the other user's FIFO is gone");
    assert_eq!(meta.uid(), 65534);

    // The same after a SIGTERM.
    std::fs::remove_file(&fifo).unwrap();
    assert_eq!(env.mount_with_fifo(&mnt, &fifo).code, 0);
    let pid = env.recorded_pid(&mnt).unwrap();
    kill(pid, Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    assert!(!fifo.exists());
    assert_eq!(env.state_files(), Vec::<String>::new(), "after SIGTERM");
}

/// Issue 20: a process of another user posing as the daemon (argv[0]
/// `pilfered`, `serve --mount MOUNTPOINT` among its arguments, SIGTERM
/// ignored) is never taken for it: pilfered-umount stops the real daemon
/// (here one it cannot see by its command line) and leaves the impostor be.
#[test]
fn umount_is_not_misdirected_by_another_users_process() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    let mnt = env.path("mnt");
    let mut real = KillOnDrop(
        Command::new(BIN)
            .current_dir(env.dir.path())
            .env("PILFERED_RUNDIR", env.path("own-run"))
            .args(["serve", "--mount", "mnt", "--fifo", "fifo"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(20), || pilfered_mounted(
        &mnt
    ) && mnt
        .join("stats")
        .exists()));
    let fake = KillOnDrop(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c"])
            .arg(r#"trap "" TERM; exec -a pilfered bash -c 'while sleep 1; do :; done' pilfered serve --mount "$0""#)
            .arg(&mnt)
            .spawn()
            .unwrap(),
    );
    let fake_pid = Pid::from_raw(fake.0.id() as i32);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read(format!("/proc/{fake_pid}/cmdline"))
            .is_ok_and(|c| c.starts_with(b"pilfered\0"))
    }));

    let ran = env.run("pilfered-umount", &[&mnt]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!(
            "pilfered-umount: unmounted {}; its pilfered daemon (not found among this system's processes) stops by itself\n",
            mnt.display()
        )
    );
    let mut status = None;
    assert!(wait_until(Duration::from_secs(5), || {
        status = real.0.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(0));
    assert!(alive(fake_pid), "the impostor was killed");
}

/// A process the test started, killed when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// After kill -9, pilfered-mount on the same paths just works: the daemon
/// detaches the stale mount and takes over the FIFO the dead daemon made
/// (its record says so), which is gone again after pilfered-umount.
#[test]
fn restart_on_the_same_paths_after_kill_9() {
    if !fuse_available() {
        return;
    }
    let env = Env::new();
    let (mnt, fifo, _) = env.start("mnt");
    crash(env.recorded_pid(&mnt).unwrap(), &mnt);

    let ran = env.mount_with_fifo(&mnt, &fifo);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(read_n(&mnt.join("bits"), 4096).len(), 4096);
    assert_eq!(read_n(&fifo, 4096).len(), 4096);
    assert_eq!(env.run("pilfered-umount", &[&mnt]).code, 0);
    assert!(!pilfered_mounted(&mnt));
    assert!(!fifo.exists());
}

/// pilfered-umount also finds a daemon it did not start, from its command
/// line, and stops it cleanly (exit status 0); it leaves foreign mounts
/// alone.
#[test]
fn umount_stops_a_daemon_started_by_hand_and_leaves_others_alone() {
    if !fuse_available() {
        return;
    }
    let mut d = Daemon::start(&[]);
    let env = Env::new();
    let ran = env.run("pilfered-umount", &[&d.mount]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!(
            "pilfered-umount: stopped pilfered (pid {}) serving {}\n",
            d.pid(),
            d.mount.display()
        )
    );
    let status = d.child.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    assert!(!d.is_mounted());
    assert!(!d.fifo.exists());

    let ran = env.run("pilfered-umount", &["/proc"]);
    assert_eq!(ran.code, 1);
    assert_eq!(
        ran.stderr,
        "pilfered-umount: /proc: proc is mounted there, not pilfered; leaving it alone\n"
    );
}

/// The scripts name serve's defaults once, in pilfered-lib.sh; they must be
/// the binary's.
#[test]
fn script_defaults_are_the_binarys() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-scripts/pilfered-lib.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"PROG=test; . "$1"; printf '%s\n%s\n' "$DEFAULT_MOUNT" "$DEFAULT_FIFO""#)
        .arg("bash")
        .arg(&lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{}\n{}\n",
            pilfered::internal::DEFAULT_MOUNT,
            pilfered::internal::DEFAULT_FIFO
        )
    );
}

/// The scripts' wait after SIGTERM follows the process, not a clock: one
/// still working (as a daemon wiping and freeing a large queue on a busy
/// machine is) is waited for past PILFERED_TIMEOUT, and only one that does
/// nothing for that long is given up on as stuck.
#[test]
fn the_wait_after_sigterm_lasts_while_the_process_makes_progress() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-scripts/pilfered-lib.sh");
    let script = r#"PROG=test; . "$1"; TIMEOUT=1
        bash -c 'end=$((SECONDS + 4)); while [ $SECONDS -lt $end ]; do :; done' & busy=$!
        start=$SECONDS; status=0; wait_gone $busy || status=$?
        echo "working $status $((SECONDS - start))"
        sleep 60 & stuck=$!; trap 'kill $stuck' EXIT
        start=$SECONDS; status=0; wait_gone $stuck || status=$?
        echo "stuck $status $((SECONDS - start))""#;
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .arg(&lib)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split(' ').collect()).collect();
    assert!(
        out.status.success() && lines.len() == 2,
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = |l: &[&str]| l[2].parse::<u64>().unwrap();
    assert_eq!(lines[0][..2], ["working", "0"], "{stdout}");
    assert!(
        secs(&lines[0]) >= 2,
        "returned before the process exited: {stdout}"
    );
    assert_eq!(lines[1][..2], ["stuck", "1"], "{stdout}");
    assert!(
        secs(&lines[1]) <= 10,
        "waited too long for a stuck process: {stdout}"
    );
}
