//! Faults and attacks from outside the daemon: readers resizing the FIFO's
//! pipe, and memory running out.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{BIN, Daemon, fuse_available, thread_named, wait_until};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

nix::ioctl_read_bad!(fionread, libc::FIONREAD, libc::c_int);

/// A non-reading look at the pipe: a descriptor that never reads unless told.
fn peek_fd(fifo: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .unwrap()
}

fn unread(f: &File) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through a pointer to a live c_int.
    unsafe { fionread(f.as_raw_fd(), &mut n) }.unwrap();
    n as usize
}

fn pipe_size(f: &File) -> usize {
    fcntl(f.as_fd(), FcntlArg::F_GETPIPE_SZ).unwrap() as usize
}

/// CPU clock ticks (user + system, in USER_HZ, 100 per second) a thread
/// has used.
fn ticks(task: &Path) -> u64 {
    let stat = std::fs::read_to_string(task.join("stat")).unwrap();
    // The name in parentheses may hold spaces: count fields after it.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A thread that spins accrues about 100 ticks a second when it has a CPU
/// to itself, and still several tens on this 2-CPU machine shared with
/// builds; an idle one accrues none. Half a second's worth of a spinning
/// thread is far above the bound, a stray wake-up or two far below it.
const IDLE_TICKS_PER_SECOND: u64 = 5;

fn assert_idle(task: &Path, what: &str) {
    let before = ticks(task);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = ticks(task) - before;
    let secs = start.elapsed().as_secs_f64();
    assert!(
        used as f64 <= IDLE_TICKS_PER_SECOND as f64 * secs,
        "{what}: the FIFO writer used {used} CPU ticks in {secs:.2} s: it is busy-looping"
    );
}

/// Waits until the writer has filled the pipe to its (new) size.
fn wait_full(peek: &File, what: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || unread(peek) == pipe_size(peek)),
        "{what}: pipe holds {} of {} bytes",
        unread(peek),
        pipe_size(peek)
    );
}

fn read_some(fifo: &Path, n: usize) {
    let mut buf = vec![0u8; n];
    File::open(fifo).unwrap().read_exact(&mut buf).unwrap();
    assert!(buf.iter().any(|&b| b != 0));
}

/// A reader may resize the pipe at any time (F_SETPIPE_SZ), up or down,
/// as another user or as the daemon's own. The writer must notice: a size
/// read once at start left it spinning at 100% CPU forever after a reader
/// enlarged the pipe (poll said writable, its free space said 0). After
/// each resize the pipe fills to its new size, the writer is idle, and
/// readers still get bytes.
#[test]
fn pipe_resizes_by_readers_leave_the_writer_idle() {
    let d = Daemon::start(&["--no-fuse", "--pipe-size", "64K", "--fifo-mode", "0644"]);
    // Let user nobody reach the FIFO.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let writer = thread_named(d.pid().as_raw() as u32, "fifo-writer");
    let peek = peek_fd(&d.fifo);
    wait_full(&peek, "at start");
    assert_eq!(pipe_size(&peek), 64 << 10);
    assert_idle(&writer, "at start");

    // Exactly the report: user nobody enlarges the pipe to 1 MiB and exits.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c"])
        .arg(format!(
            "import os,fcntl;fd=os.open('{}',os.O_RDONLY|os.O_NONBLOCK);fcntl.fcntl(fd,1031,1<<20)",
            d.fifo.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setpriv python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pipe_size(&peek), 1 << 20);
    wait_full(&peek, "after nobody enlarged the pipe");
    assert_idle(&writer, "after nobody enlarged the pipe");
    read_some(&d.fifo, 100 << 10);

    // Down, as the daemon's own user: the kernel refuses to shrink a pipe below what it holds, so
    // empty it and shrink before the writer refills it.
    let mut buf = vec![0u8; 4 << 20];
    let shrunk = (0..10_000).any(|_| {
        while (&peek).read(&mut buf).is_ok_and(|n| n > 0) {}
        match fcntl(peek.as_fd(), FcntlArg::F_SETPIPE_SZ(16 << 10)) {
            Ok(_) => true,
            Err(Errno::EBUSY) => false,
            Err(e) => panic!("F_SETPIPE_SZ: {e}"),
        }
    });
    assert!(shrunk, "could not shrink the pipe in 10000 tries");
    assert_eq!(pipe_size(&peek), 16 << 10);
    wait_full(&peek, "after the pipe shrank");
    assert_idle(&writer, "after the pipe shrank");
    read_some(&d.fifo, 100 << 10);
    wait_full(&peek, "after reading from the shrunk pipe");
    assert_idle(&writer, "after reading from the shrunk pipe");

    // Up again, as the daemon's own user.
    fcntl(peek.as_fd(), FcntlArg::F_SETPIPE_SZ(256 << 10)).unwrap();
    assert_eq!(pipe_size(&peek), 256 << 10);
    wait_full(&peek, "after the daemon's user enlarged the pipe");
    assert_idle(&writer, "after the daemon's user enlarged the pipe");
    read_some(&d.fifo, 100 << 10);
}

/// A queue larger than the memory the daemon may use: one line on stderr
/// naming --queue-capacity, exit status 1, and nothing left behind (it used
/// to log "serving", then abort with "memory allocation of 4096 bytes
/// failed", leaving its mount and FIFO).
#[test]
fn a_queue_too_large_for_memory_refuses_the_start_cleanly() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mnt");
    let fifo = dir.path().join("bits.fifo");
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "ulimit -v 1500000; exec \"$0\" serve --mount \"$1\" --fifo \"$2\" --queue-capacity 4G",
        )
        .arg(BIN)
        .arg(&mount)
        .arg(&fifo)
        .env("PILFERED_RUNDIR", dir.path().join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        "pilfered: --queue-capacity 4G: not enough memory for the queue; choose a smaller --queue-capacity or raise the memory limit ('ulimit -v', or MemoryMax= in a systemd unit)\n"
    );
    assert_eq!(out.status.code(), Some(1), "{:?}", out.status);
    assert!(!fifo.exists(), "FIFO left behind");
    assert!(!mount.exists(), "mount directory left behind");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&mount.display().to_string()),
        "mount left behind"
    );
}
