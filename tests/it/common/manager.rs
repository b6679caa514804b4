//! A stand-in for systemd as a service's manager, for tests that restart
//! the daemon as systemd does: a `NOTIFY_SOCKET` that hears `READY=1` and
//! keeps what `FDSTORE=1` sends (like systemd's file descriptor store:
//! named by `FDNAME=`, the same open file once, dropped by
//! `FDSTOREREMOVE=1`), and starts of the service with the socket unit's
//! descriptors and then the stored ones as fd 3 on, named in
//! `LISTEN_FDNAMES`, with `LISTEN_PID` the service's own PID.

use std::ffi::OsStr;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::wait_until;

/// How long [`Manager::await_ready`] waits for each notification.
const PATIENCE: Duration = Duration::from_secs(20);

/// The manager: its notify socket, the socket unit's descriptors and the
/// store.
pub struct Manager {
    dir: TempDir,
    notify: UnixDatagram,
    sockets: Vec<(String, OwnedFd)>,
    store: Vec<(String, OwnedFd)>,
}

impl Manager {
    pub fn new() -> Manager {
        let dir = tempfile::Builder::new()
            .prefix("pilfered-manager")
            .tempdir()
            .unwrap();
        let notify = UnixDatagram::bind(dir.path().join("notify")).unwrap();
        notify.set_read_timeout(Some(PATIENCE)).unwrap();
        Manager {
            dir,
            notify,
            sockets: Vec::new(),
            store: Vec::new(),
        }
    }

    /// A directory of the manager's own, removed with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The notify socket's path (`NOTIFY_SOCKET`).
    pub fn notify_socket(&self) -> PathBuf {
        self.dir.path().join("notify")
    }

    /// Holds `fd` as a socket unit's descriptor named `name` (as
    /// `ListenFIFO=` and `FileDescriptorName=` make one): passed to every
    /// start, before the stored ones.
    pub fn listen(&mut self, name: &str, fd: OwnedFd) {
        self.sockets.push((name.to_string(), fd));
    }

    /// Makes the FIFO `path` (0600) and holds it open read-write as the
    /// socket unit `pilfered.socket` does (`ListenFIFO=`).
    pub fn listen_fifo(&mut self, path: &Path) {
        use std::os::unix::fs::OpenOptionsExt;
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        self.listen("pilfered.socket", held.into());
    }

    /// The names in the store, in order.
    pub fn stored(&self) -> Vec<&str> {
        self.store.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The stored descriptor named `name`, if one is.
    pub fn stored_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.store
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, fd)| fd.as_fd())
    }

    /// Starts `program ARGS` as a service: `NOTIFY_SOCKET`, then the
    /// socket unit's descriptors and the stored ones from fd 3 on with
    /// `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`. `prepare` may set
    /// more (environment, standard error) first.
    pub fn start(
        &self,
        program: &Path,
        args: &[&OsStr],
        prepare: impl FnOnce(&mut Command),
    ) -> Service {
        let passed: Vec<&(String, OwnedFd)> = self.sockets.iter().chain(&self.store).collect();
        let raw: Vec<RawFd> = passed.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        let names: Vec<&str> = passed.iter().map(|(n, _)| n.as_str()).collect();
        let mut cmd = Command::new("sh");
        // LISTEN_PID must be the service's own PID: the shell's, which exec
        // keeps.
        cmd.arg("-c")
            .arg(r#"[ -z "$LISTEN_FDS" ] || export LISTEN_PID=$$; exec "$0" "$@""#)
            .arg(program)
            .args(args)
            .env("NOTIFY_SOCKET", self.notify_socket())
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("LISTEN_PID");
        if !raw.is_empty() {
            cmd.env("LISTEN_FDS", raw.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        prepare(&mut cmd);
        // Each descriptor is first copied above them all (close-on-exec),
        // so that none is overwritten before it is moved to 3 + i.
        const MAX: usize = 64;
        assert!(raw.len() <= MAX, "more than {MAX} descriptors");
        let above = 3 + RawFd::try_from(raw.len()).unwrap();
        // SAFETY: between fork and exec this only calls fcntl and dup2,
        // which are async-signal-safe, on descriptors this process holds,
        // and allocates nothing (`raw` was built before).
        unsafe {
            cmd.pre_exec(move || {
                let mut copies = [0 as RawFd; MAX];
                for (i, &fd) in raw.iter().enumerate() {
                    copies[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
                    if copies[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (&copy, to) in copies[..raw.len()].iter().zip(3..) {
                    if libc::dup2(copy, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Service {
            child: Some(cmd.spawn().expect("start the service")),
        }
    }

    /// Takes one notification, applying what it asks of the store, and
    /// returns its text. Descriptors sent without `FDSTORE=1` are closed,
    /// as systemd closes them.
    pub fn receive(&mut self) -> Result<String, String> {
        let mut buf = vec![0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 253]);
        let msg = recvmsg::<()>(
            self.notify.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("no notification within {PATIENCE:?}: {e}"))?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let name = lines
            .iter()
            .find_map(|l| l.strip_prefix("FDNAME="))
            .unwrap_or("stored")
            .to_string();
        if lines.contains(&"FDSTOREREMOVE=1") {
            self.store.retain(|(n, _)| *n != name);
        }
        if lines.contains(&"FDSTORE=1") {
            for fd in fds {
                if !self.store.iter().any(|(_, s)| same_open_file(s, &fd)) {
                    self.store.push((name.clone(), fd));
                }
            }
        }
        Ok(text)
    }

    /// Takes notifications until one says `READY=1`, and returns them all.
    pub fn await_ready(&mut self, service: &mut Service) -> Result<Vec<String>, String> {
        let mut texts = Vec::new();
        loop {
            let text = self
                .receive()
                .map_err(|e| format!("{e}; the service: {:?}", service.child_mut().try_wait()))?;
            let ready = text.lines().any(|l| l == "READY=1");
            texts.push(text);
            if ready {
                return Ok(texts);
            }
        }
    }
}

/// Whether `a` and `b` are the same open file (`kcmp`), as systemd tells
/// a descriptor already in its store.
fn same_open_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    let pid = libc::pid_t::try_from(std::process::id()).unwrap();
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: kcmp takes plain integers and reads no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            a.as_raw_fd(),
            b.as_raw_fd(),
        )
    };
    assert!(r >= 0, "kcmp: {}", std::io::Error::last_os_error());
    r == 0
}

/// One start of a service; dropping it kills it (SIGKILL) and reaps it.
pub struct Service {
    child: Option<Child>,
}

impl Service {
    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.as_ref().expect("running").id()).unwrap())
    }

    /// Sends `sig` (SIGTERM as `systemctl stop` does, SIGKILL as a crash
    /// or `kill -9`) and waits up to `within` for the exit.
    pub fn stop(&mut self, sig: Signal, within: Duration) -> ExitStatus {
        kill(self.pid(), sig).unwrap();
        let mut child = self.child.take().expect("running");
        let mut status = None;
        let exited = wait_until(within, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the service did not exit within {within:?} of {sig}");
        }
        status.unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
