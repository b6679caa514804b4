//! Running as systemd runs the unit with its socket, without systemd: this
//! test plays systemd's part. It makes the FIFO and holds it open read-write
//! (as `ListenFIFO=` does), hands it to each start of the daemon as fd 3
//! with `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`, and listens on a
//! `NOTIFY_SOCKET` for `READY=1`. A reader that opened the FIFO once, as the
//! seed's origin readers do, must see the daemon restart without an
//! end-of-file, get only fresh bytes and no byte twice.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pilfered::internal::mounts;
use tempfile::TempDir;

use crate::common::{BIN, assert_no_repeated_stretch, fuse_available, wait_until};

/// What systemd keeps for the socket unit: the FIFO, open read-write and
/// non-blocking, and the notify socket the service reports to.
struct Systemd {
    dir: TempDir,
    fifo: PathBuf,
    held: OwnedFd,
    notify: UnixDatagram,
}

impl Systemd {
    /// A FIFO made with `mode`, as `SocketMode=` makes it.
    fn new(mode: u32) -> Systemd {
        let dir = tempfile::Builder::new()
            .prefix("pilfered-test")
            .tempdir()
            .unwrap();
        let fifo = dir.path().join("bits.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(mode)).unwrap();
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap()
            .into();
        let notify = UnixDatagram::bind(dir.path().join("notify")).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Systemd {
            dir,
            fifo,
            held,
            notify,
        }
    }

    /// Starts `pilfered serve ARGS` with `fd` as fd 3 (the held FIFO unless
    /// another is given), the way systemd starts a socket-activated
    /// service.
    fn start_with(&self, fd: &OwnedFd, args: &[&str]) -> Service {
        let log = self.dir.path().join("daemon.log");
        let raw = fd.as_raw_fd();
        let mut cmd = Command::new("sh");
        // LISTEN_PID must be the daemon's own PID: the shell's, which exec
        // keeps.
        cmd.arg("-c")
            .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
            .arg(BIN)
            .arg("serve")
            .args(args)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "pilfered.socket")
            .env("NOTIFY_SOCKET", self.dir.path().join("notify"))
            .env("PILFERED_RUNDIR", self.dir.path().join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            );
        // SAFETY: between fork and exec this only calls dup2 and fcntl,
        // which are async-signal-safe, on descriptors this process holds.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec: clear it then.
                let ret = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if ret < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Service {
            child: Some(cmd.spawn().expect("start pilfered")),
            log,
        }
    }

    fn start(&self, args: &[&str]) -> Service {
        self.start_with(&self.held, args)
    }

    /// Waits for the next notification and returns it.
    fn notified(&self, service: &mut Service) -> String {
        let mut buf = [0u8; 4096];
        match self.notify.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => panic!(
                "no notification from pilfered ({e}); status {:?}; log: {}",
                service.child.as_mut().unwrap().try_wait(),
                service.log_text()
            ),
        }
    }

    /// Bytes in the FIFO's pipe now.
    fn in_pipe(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int into `n`, which is live.
        let ret = unsafe { libc::ioctl(self.held.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(ret, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        usize::try_from(n).unwrap()
    }

    /// Waits until the daemon has filled the pipe.
    fn await_full_pipe(&self) {
        let size = nix::fcntl::fcntl(&self.held, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
        let size = usize::try_from(size).unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || self.in_pipe() == size),
            "the pipe holds {} of {size} bytes",
            self.in_pipe()
        );
    }

    fn fifo_id(&self) -> (u64, u64) {
        let meta = std::fs::symlink_metadata(&self.fifo).expect("the FIFO is still there");
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
        (meta.dev(), meta.ino())
    }
}

/// One start of the daemon; dropping it stops it.
struct Service {
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as `systemctl stop` or a restart sends; waits for the exit.
    fn stop(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
        self.exited()
    }

    /// Waits for the daemon to exit.
    fn exited(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let mut status = None;
        let exited = wait_until(Duration::from_secs(20), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        assert!(exited, "pilfered did not exit; log: {}", self.log_text());
        status.unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if !wait_until(Duration::from_secs(5), || {
                child.try_wait().unwrap().is_some()
            }) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A reader that opens the FIFO once, blocking, and never reopens it; told
/// how much to read next, it reads exactly that, recording every read that
/// returned end-of-file.
struct Reader {
    orders: Option<mpsc::Sender<usize>>,
    done: mpsc::Receiver<Result<Vec<u8>, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn open(fifo: &Path) -> Reader {
        let mut f = File::open(fifo).unwrap();
        let (orders, todo) = mpsc::channel::<usize>();
        let (report, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for n in todo {
                let mut buf = vec![0u8; n];
                let mut got = 0;
                let outcome = loop {
                    if got == n {
                        break Ok(std::mem::take(&mut buf));
                    }
                    match f.read(&mut buf[got..]) {
                        Ok(0) => break Err(format!("end of file after {got} of {n} bytes")),
                        Ok(r) => got += r,
                        Err(e) => break Err(e.to_string()),
                    }
                };
                if report.send(outcome).is_err() {
                    return;
                }
            }
        });
        Reader {
            orders: Some(orders),
            done,
            thread: Some(thread),
        }
    }

    fn order(&self, n: usize) {
        self.orders.as_ref().unwrap().send(n).unwrap();
    }

    fn wait(&self) -> Vec<u8> {
        match self.done.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => panic!("the FIFO reader failed: {e}"),
            Err(e) => panic!("the FIFO reader did not finish: {e}"),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Hanging up ends the thread once its read returns; a thread still
        // blocked (a failed test) is left to the process's end.
        self.orders = None;
        if let Some(t) = self.thread.take()
            && t.is_finished()
        {
            let _ = t.join();
        }
    }
}

const MIB: usize = 1 << 20;

/// The daemon restarts three times under a reader holding the FIFO: after
/// the reader drained the pipe and waited, and while the pipe was full. The
/// reader never sees end-of-file, every byte it gets is fresh (no 32-byte
/// stretch twice), each daemon leaves the FIFO alone (the same inode
/// throughout), and each says READY=1.
#[test]
fn readers_survive_restarts_of_a_socket_activated_daemon() {
    let systemd = Systemd::new(0o600);
    let fifo = systemd.fifo.to_str().unwrap().to_string();
    let args = ["--no-fuse", "--fifo", &fifo];
    let id = systemd.fifo_id();
    let reader = Reader::open(&systemd.fifo);
    let mut outputs = Vec::new();

    let mut first = systemd.start(&args);
    assert_eq!(systemd.notified(&mut first), "READY=1\n");
    reader.order(MIB);
    outputs.push(reader.wait());
    systemd.await_full_pipe();
    assert!(first.stop().success(), "{}", first.log_text());
    assert_eq!(
        systemd.fifo_id(),
        id,
        "the daemon removed or replaced the FIFO"
    );
    let left = systemd.in_pipe();

    // The reader drains what the pipe holds, then waits: no end-of-file.
    reader.order(left + MIB);
    assert!(
        wait_until(Duration::from_secs(20), || systemd.in_pipe() == 0),
        "the reader did not drain the pipe"
    );
    assert!(
        reader.done.try_recv().is_err(),
        "the reader finished or failed while no daemon ran"
    );
    let mut second = systemd.start(&args);
    assert_eq!(systemd.notified(&mut second), "READY=1\n");
    outputs.push(reader.wait());

    // Restarted at once, with a full pipe and the reader paused.
    systemd.await_full_pipe();
    assert!(second.stop().success(), "{}", second.log_text());
    let mut third = systemd.start(&args);
    assert_eq!(systemd.notified(&mut third), "READY=1\n");
    reader.order(3 * MIB);
    outputs.push(reader.wait());
    assert!(third.stop().success(), "{}", third.log_text());

    assert_eq!(systemd.fifo_id(), id);
    assert_no_repeated_stretch(&outputs);
    // Each start served the FIFO systemd passed, not one it opened itself.
    let log = third.log_text();
    assert_eq!(log.matches(", from systemd)").count(), 3, "{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

/// READY=1 comes once both interfaces serve: `bits` can be read and the FIFO
/// has bytes the moment it arrives, with no waiting.
#[test]
fn ready_once_bits_and_the_fifo_serve() {
    if !fuse_available() {
        return;
    }
    let systemd = Systemd::new(0o600);
    let mount = systemd.dir.path().join("mnt");
    let (fifo, mnt) = (systemd.fifo.to_str().unwrap(), mount.to_str().unwrap());
    let mut service = systemd.start(&["--mount", mnt, "--fifo", fifo]);
    let _unmount = Unmount(mount.clone());
    // The FUSE connection goes to the store first (three entries), then
    // READY=1.
    for _ in 0..3 {
        let note = systemd.notified(&mut service);
        assert!(note.starts_with("FDSTORE=1\n"), "{note}");
    }
    assert_eq!(systemd.notified(&mut service), "READY=1\n");
    let mut buf = [0u8; 64];
    File::open(mount.join("bits"))
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    File::open(&systemd.fifo)
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    assert!(service.stop().success(), "{}", service.log_text());
    assert!(systemd.fifo.exists(), "the daemon removed systemd's FIFO");
}

/// Clears a mount left by a failed test.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mounts::mount_at(&self.0).is_ok_and(|m| m.is_some()) {
            let _ = mounts::detach(&self.0);
        }
    }
}

/// The FIFO systemd passes is checked like any other: the FIFO at
/// `--fifo`, writable by nobody else (systemd's default SocketMode=0666 is
/// refused), and a FIFO at all. Each refusal is one line, status 2, and
/// leaves the paths as they were.
#[test]
fn a_given_fifo_is_checked_like_any_other() {
    let refused = |systemd: &Systemd, fd: &OwnedFd, args: &[&str], line: &str| {
        let mut service = systemd.start_with(fd, args);
        let status = service.exited();
        assert_eq!(service.log_text(), format!("pilfered: {line}\n"));
        assert_eq!(status.code(), Some(2));
        std::fs::remove_file(&service.log).unwrap();
    };
    let systemd = Systemd::new(0o600);
    let fifo = systemd.fifo.to_str().unwrap();
    let other = systemd.dir.path().join("other.fifo");
    let other = other.to_str().unwrap();
    refused(
        &systemd,
        &systemd.held,
        &["--no-fuse", "--fifo", other],
        &format!(
            "--fifo {other}: not the FIFO systemd passed (LISTEN_FDS); give --fifo the path of the socket unit's ListenFIFO="
        ),
    );
    assert!(!Path::new(other).exists(), "a FIFO was made at {other}");
    refused(
        &systemd,
        &systemd.held,
        &["--no-fifo", "--mount", "/nonexistent/m"],
        "--no-fifo: systemd passed a FIFO to serve (LISTEN_FDS); drop --no-fifo or the socket unit",
    );
    let file: OwnedFd = File::create(systemd.dir.path().join("plain"))
        .unwrap()
        .into();
    refused(
        &systemd,
        &file,
        &["--no-fuse", "--fifo", fifo],
        "LISTEN_FDS: the descriptor systemd passed (pilfered.socket) is not a FIFO; give the socket unit a ListenFIFO= line",
    );

    let open = Systemd::new(0o666);
    let fifo = open.fifo.to_str().unwrap();
    refused(
        &open,
        &open.held,
        &["--no-fuse", "--fifo", fifo],
        &format!(
            "--fifo {fifo}: FIFO is writable by other users (mode 0666), who could inject chosen bytes; remove it or run 'chmod go-w' on it"
        ),
    );
    assert_eq!(
        std::fs::metadata(&open.fifo).unwrap().permissions().mode() & 0o777,
        0o666
    );
}
