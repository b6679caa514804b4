//! The stand-in for systemd of `common::manager`, proven against a small
//! service of its own before the daemon's tests rely on it: this test
//! binary run again as [`service`], which reports what it was passed and
//! stores a descriptor of its own.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::MsgFlags;

use crate::common::manager::{Manager, Service};

const PATIENCE: Duration = Duration::from_secs(20);

use std::io::{IoSlice, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;

use nix::sys::socket::{ControlMessage, UnixAddr, sendmsg};

const MODE: &str = "PILFERED_TEST_MANAGER_SERVICE";

fn start(m: &Manager, mode: &str) -> Service {
    let exe = std::env::current_exe().unwrap();
    let args = [
        "--exact",
        "manager::service",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
    .map(OsStr::new);
    m.start(&exe, &args, |cmd| {
        cmd.env(MODE, mode)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    })
}

fn status(texts: &[String]) -> String {
    texts
        .iter()
        .find_map(|t| t.lines().find_map(|l| l.strip_prefix("STATUS=")))
        .expect("a STATUS= line")
        .to_string()
}

/// A stored descriptor outlives the service that stored it (kill -9),
/// reaches the next start with its name after the socket unit's, is
/// kept once however often it is stored, and goes with FDSTOREREMOVE.
#[test]
fn the_store_outlives_a_killed_service() {
    let mut m = Manager::new();
    let mut socket = tempfile::tempfile_in(m.dir()).unwrap();
    socket.write_all(b"socket unit").unwrap();
    m.listen("pilfered.socket", socket.into());

    let mut first = start(&m, "store");
    let texts = m.await_ready(&mut first).unwrap();
    assert_eq!(status(&texts), "pilfered.socket=socket unit");
    assert_eq!(m.stored(), ["probe"]);
    let status_code = first.stop(Signal::SIGKILL, PATIENCE);
    assert_eq!(status_code.code(), None, "killed");

    let mut second = start(&m, "store");
    let texts = m.await_ready(&mut second).unwrap();
    assert_eq!(
        status(&texts),
        "pilfered.socket=socket unit probe=stored by the first"
    );
    assert_eq!(m.stored(), ["probe"], "stored again, kept once");
    let mut probe =
        std::fs::File::from(m.stored_fd("probe").unwrap().try_clone_to_owned().unwrap());
    let mut text = String::new();
    probe.rewind().unwrap();
    probe.read_to_string(&mut text).unwrap();
    assert_eq!(text, "stored by the first");
    second.stop(Signal::SIGTERM, PATIENCE);

    let mut third = start(&m, "remove");
    m.await_ready(&mut third).unwrap();
    assert!(m.stored().is_empty(), "{:?}", m.stored());
}

/// Sends one notification as a service does, with its own code.
fn notify(text: &str, fds: &[RawFd]) {
    let path = std::env::var_os("NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    let addr = UnixAddr::new(path.as_bytes()).unwrap();
    let sock = UnixDatagram::unbound().unwrap();
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs = if fds.is_empty() { &[][..] } else { &cmsg[..] };
    sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(text.as_bytes())],
        cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
    .unwrap();
}

/// The service [`the_store_outlives_a_killed_service`] starts: says in
/// STATUS= what each passed descriptor holds, stores a file as
/// `probe` (again, if it was given one), or removes it; then READY=1,
/// and waits to be stopped.
#[test]
#[ignore = "run by the_store_outlives_a_killed_service, as its service"]
fn service() {
    let mode = std::env::var(MODE).expect("run by the_store_outlives_a_killed_service");
    let pid: u32 = std::env::var("LISTEN_PID").unwrap().parse().unwrap();
    assert_eq!(pid, std::process::id(), "LISTEN_PID");
    let n: RawFd = std::env::var("LISTEN_FDS").unwrap().parse().unwrap();
    let names = std::env::var("LISTEN_FDNAMES").unwrap();
    let names: Vec<&str> = names.split(':').collect();
    assert_eq!(names.len(), usize::try_from(n).unwrap());
    let mut report = Vec::new();
    let mut probe = None;
    for (i, name) in names.iter().enumerate() {
        let fd = 3 + RawFd::try_from(i).unwrap();
        // SAFETY: the manager passed this descriptor to this process.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        report.push(format!("{name}={text}"));
        if *name == "probe" {
            probe = Some(file);
        }
    }
    notify(&format!("STATUS={}\n", report.join(" ")), &[]);
    match mode.as_str() {
        "store" => {
            let file = probe.unwrap_or_else(|| {
                let mut f = tempfile::tempfile().unwrap();
                f.write_all(b"stored by the first").unwrap();
                f
            });
            notify("FDSTORE=1\nFDNAME=probe\n", &[file.as_raw_fd()]);
        }
        "remove" => notify("FDSTOREREMOVE=1\nFDNAME=probe\n", &[]),
        m => panic!("mode {m}"),
    }
    notify("READY=1\n", &[]);
    loop {
        std::thread::park();
    }
}

/// The daemon itself under the manager, as the handover tests will run
/// it: given the socket unit's FIFO, it says READY=1 and stops on SIGTERM.
#[test]
fn the_daemon_starts_and_stops_under_the_manager() {
    let mut m = Manager::new();
    let fifo = m.dir().join("bits.fifo");
    m.listen_fifo(&fifo);
    let run = m.dir().join("run");
    let args = [
        OsStr::new("serve"),
        OsStr::new("--no-fuse"),
        OsStr::new("--fifo"),
        fifo.as_os_str(),
    ];
    let mut daemon = m.start(crate::common::BIN.as_ref(), &args, |cmd| {
        cmd.env("PILFERED_RUNDIR", &run);
    });
    let texts = m.await_ready(&mut daemon).unwrap();
    assert!(texts.iter().any(|t| t.contains("READY=1")), "{texts:?}");
    assert!(daemon.stop(Signal::SIGTERM, PATIENCE).success());
}
