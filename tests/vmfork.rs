//! VM forks, for real: the kernel's vmgenid uevent (`echo change >
//! /sys/bus/platform/devices/VMGENCTR:00/uevent`, as root, emits exactly the
//! uevent a restore from a snapshot does) makes the daemon wipe everything
//! queued and pending and rekey every generator before serving again.
//!
//! A binary of its own, not a module of `tests/it`: the trigger reaches
//! every pilfered daemon on the machine, and would wipe the queues of the
//! other tests' daemons (seeded ones among them) mid-read. Cargo runs test
//! binaries one after another.

#[path = "it/common/mod.rs"]
#[expect(
    dead_code,
    unused_imports,
    reason = "these tests use a few of the shared helpers"
)]
mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, Transport, assert_no_repeated_stretch, fuse_available, on_both_transports, wait_until,
};

/// One trigger at a time: every daemon of this binary hears every uevent.
static TRIGGER: Mutex<()> = Mutex::new(());

const DRIVER: &str = "/sys/bus/platform/drivers/vmgenid";

/// The bound vmgenid device. Fails the test unless there is one; outside
/// CI a developer may opt out with PILFERED_SKIP_VMFORK_TESTS=1, and the
/// test then says so.
fn vmgenid_device() -> Option<String> {
    let found = std::fs::read_dir(DRIVER).ok().and_then(|d| {
        d.filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|n| n.contains(':'))
    });
    if found.is_some() {
        return found;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("PILFERED_SKIP_VMFORK_TESTS").is_ok_and(|v| v == "1");
    if skip && !ci {
        eprintln!("SKIPPED: no vmgenid device in {DRIVER} and PILFERED_SKIP_VMFORK_TESTS=1");
        return None;
    }
    panic!(
        "no vmgenid device bound in {DRIVER}: VM-fork tests cannot run (CI={ci}); they need a VM with a vmgenid device (Firecracker, QEMU -device vmgenid, Hyper-V)"
    );
}

/// Makes the kernel emit `ACTION` for a platform device, as a restore does.
fn uevent(device: &str, action: &str) {
    std::fs::write(format!("/sys/bus/platform/devices/{device}/uevent"), action)
        .unwrap_or_else(|e| panic!("echo {action} > {device}/uevent (root needed): {e}"));
}

fn wait_stats(d: &Daemon, what: &str, mut cond: impl FnMut(&HashMap<String, u64>) -> bool) {
    let mut last = HashMap::new();
    let ok = wait_until(Duration::from_secs(20), || {
        last = d.stats();
        cond(&last)
    });
    assert!(
        ok,
        "{what}: not reached in 20 s; stats {last:?}; log: {}",
        d.log_text()
    );
}

/// The queue is full.
fn full(s: &HashMap<String, u64>) -> bool {
    s["queue_bytes"] == s["queue_capacity"]
}

/// Without the FIFO: every byte made is served, queued or discarded, so no
/// batch is in flight (a generator counts a batch before pushing it).
fn balanced(s: &HashMap<String, u64>) -> bool {
    s["bytes_generated"] == s["bytes_served_fuse"] + s["queue_bytes"] + s["bytes_discarded"]
}

/// Idle: no counter moved since the previous poll (generators wait for the
/// queue to drain; the clock and the requests that reading `stats` makes
/// over io_uring do not count), and with the FIFO its pipe is full.
fn settled(d: &Daemon) -> impl FnMut(&HashMap<String, u64>) -> bool + '_ {
    let fifo = d.fifo.exists();
    let mut last: Option<HashMap<String, u64>> = None;
    move |s| {
        let mut s = s.clone();
        s.remove("uptime_seconds");
        // Reading the stats file is itself a few requests over the ring.
        s.remove("fuse_uring_requests");
        let same = last.as_ref() == Some(&s);
        last = Some(s);
        same && (!fifo || in_pipe(&d.fifo) == 1 << 20)
    }
}

nix::ioctl_read_bad!(fionread, libc::FIONREAD, libc::c_int);

/// Bytes waiting in the FIFO's pipe, seen through a descriptor that never
/// reads.
fn in_pipe(fifo: &Path) -> usize {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .unwrap();
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through a pointer to a live c_int.
    unsafe { fionread(f.as_raw_fd(), &mut n) }.unwrap();
    n as usize
}

/// The numbers of the daemon's "VM fork: discarded ..." line:
/// (queued, pending for the FIFO, in the pipe).
fn fork_line(d: &Daemon) -> (u64, u64, u64) {
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("VM fork: discarded "))
        .unwrap_or_else(|| panic!("no VM fork line: {log}"));
    let nums: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    match nums[..] {
        [queued] => (queued, 0, 0),
        [queued, pending, pipe] => (queued, pending, pipe),
        _ => panic!("unexpected line {line}"),
    }
}

/// Triggers a VM fork and waits for the daemon to count it; returns how
/// long that took.
fn fork_and_wait(d: &Daemon, device: &str) -> Duration {
    let start = Instant::now();
    uevent(device, "change");
    wait_stats(d, "vm_forks 1", |s| s["vm_forks"] == 1);
    start.elapsed()
}

fn start(extra: &[&str]) -> Daemon {
    start_on(None, extra)
}

/// A daemon of two generators that reseed only on a fork, over
/// `transport` (or the default).
fn start_on(transport: Option<Transport>, extra: &[&str]) -> Daemon {
    let mut args = vec!["--generators", "2", "--reseed-interval", "1h"];
    args.extend_from_slice(extra);
    match transport {
        Some(t) => Daemon::start_on(t, &args),
        None => Daemon::start(&args),
    }
}

fn read_file(path: &Path, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    File::open(path).unwrap().read_exact(&mut buf).unwrap();
    assert!(buf.iter().any(|&b| b != 0));
    buf
}

on_both_transports! {
    /// FUSE only, queue full and idle: exactly the queued bytes are discarded,
    /// both generators reseed, and the books balance.
    fn a_vm_fork_wipes_the_idle_queue_and_rekeys(t: Transport) {
        let Some(device) = vmgenid_device() else {
            return;
        };
        if !fuse_available() {
            return;
        }
        let _one = TRIGGER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let d = start_on(Some(t), &["--no-fifo"]);
        assert!(
            d.log_text()
                .contains(&format!("VM-fork detection on (vmgenid {device})")),
            "{}",
            d.log_text()
        );
        // Full (the generators wait) and balanced (no batch in flight): idle.
        wait_stats(&d, "idle", |s| full(s) && balanced(s));
        let s0 = d.stats();
        assert!(balanced(&s0));
        assert_eq!((s0["vm_forks"], s0["bytes_discarded"]), (0, 0));

        let latency = fork_and_wait(&d, &device);
        eprintln!("VM fork handled {latency:?} after the uevent was triggered");
        wait_stats(&d, "refilled and both generators reseeded", |s| {
            full(s) && balanced(s) && s["reseeds"] == s0["reseeds"] + 2
        });
        let s1 = d.stats();
        assert_eq!(s1["bytes_discarded"], s0["queue_bytes"]);
        assert_eq!(fork_line(&d), (s0["queue_bytes"], 0, 0));
        assert_eq!(
            s1["bytes_generated"],
            s1["bytes_served_fuse"] + s1["queue_bytes"] + s1["bytes_discarded"]
        );
        read_file(&d.bits(), 1 << 20);
        // Every byte made is accounted for (balanced is the identity).
        wait_stats(&d, "balanced after reading", balanced);
        let s2 = d.stats();
        assert_eq!(s2["bytes_discarded"], s1["bytes_discarded"]);
        assert_eq!(s2["reseeds"], s1["reseeds"]);
    }
}

/// With the FIFO: the bytes sitting in its pipe and pending in its writer
/// are discarded too, exactly: the pending bytes are what the counters do
/// not place elsewhere, the pipe's are what FIONREAD shows.
#[test]
fn a_vm_fork_drains_the_fifo_pipe() {
    let Some(device) = vmgenid_device() else {
        return;
    };
    if !fuse_available() {
        return;
    }
    let _one = TRIGGER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = start(&[]);
    let pipe_size = 1 << 20;
    // The pipe fills from the first megabytes made and the queue fills. If
    // the writer took its megabyte after the queue was full, the queue rests
    // that much below full (producers wait for the low-water mark): either
    // way the generators and the writer end up waiting.
    let mut idle = settled(&d);
    wait_stats(&d, "pipe full and everything idle", |s| {
        s["queue_bytes"] >= s["queue_capacity"] / 4 * 3 && idle(s)
    });
    let s0 = d.stats();
    let pipe0 = in_pipe(&d.fifo) as u64;
    // Idle: generated = FUSE + written to the pipe + queued + pending.
    let pending0 = s0["bytes_generated"]
        - s0["bytes_served_fuse"]
        - s0["bytes_served_fifo"]
        - s0["queue_bytes"];
    assert!(pending0 < s0["chunk_size"] + pipe_size as u64);

    fork_and_wait(&d, &device);
    let mut idle = settled(&d);
    wait_stats(&d, "refilled and both generators reseeded", |s| {
        idle(s) && s["reseeds"] == s0["reseeds"] + 2
    });
    let s1 = d.stats();
    assert_eq!(fork_line(&d), (s0["queue_bytes"], pending0, pipe0));
    assert_eq!(s1["bytes_discarded"], s0["queue_bytes"] + pending0 + pipe0);
    // Pipe bytes count as written and as discarded; what is left is the
    // writer's pending bytes, fewer than a chunk beyond the pipe's size.
    let pending1 = (s1["bytes_generated"] + pipe0)
        .checked_sub(
            s1["bytes_served_fuse"]
                + s1["bytes_served_fifo"]
                + s1["queue_bytes"]
                + s1["bytes_discarded"],
        )
        .expect("more accounted for than generated");
    assert!(pending1 < s1["chunk_size"] + pipe_size as u64, "{pending1}");
    let after_fifo = read_file(&d.fifo, 1 << 20);
    let after_fuse = read_file(&d.bits(), 1 << 20);
    assert_no_repeated_stretch(&[after_fifo, after_fuse]);
}

/// Forged and unrelated uevents do nothing: the same bytes from a netlink
/// port that is not the kernel's, another action of the vmgenid device,
/// and a change of another device.
#[test]
fn other_uevents_are_ignored() {
    let Some(device) = vmgenid_device() else {
        return;
    };
    if !fuse_available() {
        return;
    }
    let _one = TRIGGER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = start(&["--no-fifo", "-v"]);
    wait_stats(&d, "queue full", full);

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, getsockname,
        sendto, socket,
    };
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .unwrap();
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0)).unwrap();
    let me: NetlinkAddr = getsockname(sock.as_raw_fd()).unwrap();
    let forged = format!(
        "change@/devices/platform/{device}\0ACTION=change\0DEVPATH=/devices/platform/{device}\0SUBSYSTEM=platform\0DRIVER=vmgenid\0NEW_VMGENID=1\0"
    );
    // To the kernel's group, and to ourselves (not to port 0: the kernel
    // would rebroadcast a root's message as its own).
    sendto(
        sock.as_raw_fd(),
        forged.as_bytes(),
        &NetlinkAddr::new(me.pid(), 1),
        MsgFlags::empty(),
    )
    .unwrap();
    uevent(&device, "add");
    let other = std::fs::read_dir("/sys/bus/platform/devices")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| {
            *n != device && Path::new(&format!("/sys/bus/platform/devices/{n}/uevent")).exists()
        })
        .expect("another platform device");
    uevent(&other, "change");
    let seen = wait_until(Duration::from_secs(20), || {
        let log = d.log_text();
        log.contains(&format!(
            "uevent from netlink port {} ignored: not the kernel",
            me.pid()
        )) && log
            .lines()
            .any(|l| l.contains("uevent ignored: add of ") && l.contains(&device))
            && log
                .lines()
                .any(|l| l.contains("uevent ignored: change of ") && l.contains(&other))
    });
    assert!(seen, "uevents not seen: {}", d.log_text());
    let s = d.stats();
    assert_eq!(
        (s["vm_forks"], s["bytes_discarded"], s["reseeds"]),
        (0, 0, 0)
    );
    assert!(full(&s));
    assert!(!d.log_text().contains("VM fork:"));
}

on_both_transports! {
    /// The race: a VM fork while readers of both interfaces stream and the
    /// generators are busy. Afterwards the books balance, and no 32-byte
    /// stretch read after the fork was handled equals one read before.
    fn a_vm_fork_under_load(t: Transport) {
        let Some(device) = vmgenid_device() else {
            return;
        };
        if !fuse_available() {
            return;
        }
        let _one = TRIGGER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let d = start_on(Some(t), &[]);
        // Set once the daemon has counted the fork; a block read after that
        // was started after the fork was handled.
        let handled = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        // Blocks each reader has read since the fork was handled.
        let late_blocks: Vec<_> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let readers: Vec<_> = [d.bits(), d.bits(), d.fifo.clone()]
            .into_iter()
            .zip(late_blocks.iter().cloned())
            .map(|(path, late_blocks): (PathBuf, _)| {
                let (handled, stop) = (handled.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut f = File::open(&path).unwrap();
                    let (mut before, mut after) = (Vec::new(), Vec::new());
                    let mut block = vec![0u8; 64 << 10];
                    while !stop.load(Ordering::SeqCst) {
                        let late = handled.load(Ordering::SeqCst);
                        f.read_exact(&mut block).unwrap();
                        if late { &mut after } else { &mut before }.extend_from_slice(&block);
                        if late {
                            late_blocks.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    (before, after)
                })
            })
            .collect();
        wait_stats(&d, "readers streaming", |s| {
            s["bytes_served_fuse"] > 8 << 20 && s["bytes_served_fifo"] > 8 << 20
        });
        let latency = fork_and_wait(&d, &device);
        eprintln!("VM fork under load handled {latency:?} after the uevent was triggered");
        handled.store(true, Ordering::SeqCst);
        // Until every reader has read a few blocks begun after the fork,
        // and the interfaces have served 16 MiB more each (the totals alone
        // may be reached by the fork already).
        let at_fork = d.stats();
        wait_stats(&d, "every reader reading after the fork", |s| {
            late_blocks.iter().all(|n| n.load(Ordering::SeqCst) >= 4)
                && s["bytes_served_fuse"] > at_fork["bytes_served_fuse"] + (16 << 20)
                && s["bytes_served_fifo"] > at_fork["bytes_served_fifo"] + (16 << 20)
        });
        stop.store(true, Ordering::SeqCst);
        let mut outputs = Vec::new();
        for r in readers {
            let (before, after) = r.join().unwrap();
            outputs.push(before);
            outputs.push(after);
        }
        assert_no_repeated_stretch(&outputs);
        wait_stats(&d, "idle", settled(&d));
        let s = d.stats();
        assert_eq!(s["vm_forks"], 1);
        assert!(s["reseeds"] >= 2, "{s:?}");
        let (queued, pending, pipe) = fork_line(&d);
        assert!(s["bytes_discarded"] >= queued + pending + pipe);
        // Pipe bytes count as written and as discarded; what is left is the
        // writer's pending bytes, fewer than a chunk beyond the pipe's size.
        let pending_now = (s["bytes_generated"] + pipe)
            .checked_sub(
                s["bytes_served_fuse"]
                    + s["bytes_served_fifo"]
                    + s["queue_bytes"]
                    + s["bytes_discarded"],
            )
            .expect("more accounted for than generated");
        assert!(pending_now < s["chunk_size"] + (1 << 20), "{pending_now}");
    }
}
