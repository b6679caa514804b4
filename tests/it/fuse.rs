//! The FUSE transports themselves: which one serves and how it is named,
//! readers interrupted or killed mid-read, every CPU answering a read
//! beside one that waits for the generator, no CPU spent while idle, and
//! no served byte left in the daemon's memory. The other FUSE tests run
//! over both transports too (`on_both_transports!`).

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::stretch::Index;
use crate::common::{
    Daemon, ENABLE_URING, assert_no_repeated_stretch, fuse_available, kernel_queues,
    on_both_transports, parse_stats, refused, run, thread_named, uring_available, uring_off,
    uring_on, wait_until, wait_until_reading,
};

/// The part of the serving line that names the FUSE transport.
fn transport_of(d: &Daemon) -> String {
    serving_transport(&d.log_text()).to_string()
}

fn serving_transport(log: &str) -> &str {
    let line = log
        .lines()
        .find(|l| l.contains("] serving: "))
        .unwrap_or("");
    let start = line.find("/bits (").map_or(line.len(), |i| i + 7);
    let end = line[start..].find(')').map_or(line.len(), |i| start + i);
    &line[start..end]
}

/// `auto` takes io_uring when the kernel offers it and says so; with the
/// switch off it serves over /dev/fuse and says why and how to turn it on;
/// an explicit `io-uring` is then refused before anything is mounted; an
/// explicit `legacy` never uses the ring.
#[test]
fn the_transport_is_chosen_and_named() {
    if !fuse_available() || !uring_available() {
        return;
    }
    let queues = kernel_queues();
    {
        let _on = uring_on();
        let d = Daemon::start(&["--no-fifo"]);
        assert_eq!(transport_of(&d), format!("io_uring, {queues} queues"));
        assert_eq!(d.stats()["fuse_uring_queues"], queues);
        let mut buf = [0u8; 4096];
        File::open(d.bits()).unwrap().read_exact(&mut buf).unwrap();
        assert!(
            d.stats()["fuse_uring_requests"] > 0,
            "the read did not go over the ring"
        );
        let m = d.mount.display().to_string();
        let (status, out, _) = run(&["status", "--mount", &m, "--interval", "0"]);
        assert_eq!(status, 0);
        assert!(
            out.contains(&format!("FUSE transport:  io_uring ({queues} queues), ")),
            "{out}"
        );

        let d = Daemon::start(&["--no-fifo", "--fuse-transport", "legacy"]);
        assert_eq!(transport_of(&d), "/dev/fuse, 2 threads");
        File::open(d.bits()).unwrap().read_exact(&mut buf).unwrap();
        assert_eq!(d.stats()["fuse_uring_requests"], 0);
        assert!(!d.log_text().contains("not io_uring"), "{}", d.log_text());
    }
    let _off = uring_off();
    let d = Daemon::start(&["--no-fifo", "--fuse-transport", "auto"]);
    let for_every_boot = if Path::new("/sys/module/fuse/initstate").exists() {
        "the line 'options fuse enable_uring=1' in /etc/modprobe.d/fuse.conf"
    } else {
        "the kernel command line option fuse.enable_uring=1"
    };
    let off = format!(
        "FUSE over io_uring is off in this kernel; turn it on as root with 'echo 1 > {ENABLE_URING}' (or for every boot, {for_every_boot})"
    );
    let why = format!("serving the FUSE file over /dev/fuse, not io_uring: {off}");
    assert_eq!(transport_of(&d), "/dev/fuse, 2 threads");
    let log = d.log_text();
    assert_eq!(log.matches(&why).count(), 1, "{log}");
    assert_eq!(d.stats()["fuse_uring_queues"], 0);
    drop(d);

    let dir = tempfile::tempdir().unwrap();
    let (mnt, fifo) = (dir.path().join("mnt"), dir.path().join("fifo"));
    let (m, f) = (mnt.to_str().unwrap(), fifo.to_str().unwrap());
    refused(
        &[
            "serve",
            "--mount",
            m,
            "--fifo",
            f,
            "--fuse-transport",
            "io-uring",
        ],
        1,
        &format!("--fuse-transport io-uring: {off}; or use --fuse-transport auto"),
    );
    assert!(
        !mnt.exists() && !fifo.exists(),
        "made something before refusing"
    );
}

/// Bytes in `/proc/PID/io`'s `rchar`: what a process has read so far.
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("rchar: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The daemon's generator, stopped by ptrace (`PTRACE_INTERRUPT`, which
/// stops that thread alone) until this is dropped, panics included. It is
/// stopped once the queue is full and it rests, inside its futex wait, so that
/// it holds no lock a reader needs: a generator stopped while it pushed a
/// chunk would hold the queue's lock, and every read and `stats` would
/// wait for it (stopped anywhere else, it is let go and stopped again).
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn generator(d: &Daemon) -> Stopped {
        use nix::sys::ptrace;
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let name = "generator-0";
        assert!(
            wait_until(Duration::from_secs(60), generators_asleep(d)),
            "the generator never rested with the queue full"
        );
        let task = thread_named(d.pid().as_raw().unsigned_abs(), name);
        let tid: i32 = task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let tid = nix::unistd::Pid::from_raw(tid);
        let futex = libc::SYS_futex.to_string();
        for _ in 0..10_000 {
            ptrace::seize(tid, ptrace::Options::empty()).unwrap();
            let stopped = Stopped(tid);
            ptrace::interrupt(tid).unwrap();
            let status = waitpid(tid, Some(WaitPidFlag::__WALL)).unwrap();
            assert!(
                matches!(
                    status,
                    WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..)
                ),
                "{name} did not stop: {status:?}"
            );
            // The system call it was stopped in (its number first), or -1
            // if it ran its own code.
            let syscall = std::fs::read_to_string(task.join("syscall")).unwrap();
            if syscall.split_whitespace().next() == Some(futex.as_str()) {
                return stopped;
            }
        }
        panic!("{name} was never stopped inside a futex wait in 10000 tries");
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::ptrace::detach(self.0, None);
    }
}

/// The CPUs this process may run on (a container's cpuset may hold fewer
/// than the kernel's queues).
fn usable_cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// Checks that a read on `cpu` is answered while a bulk read on the same
/// CPU waits for the generator: with the generator stopped, a reader of
/// 1 MiB - 4 KiB reads (one request each) drains the queue down to the
/// small-read reserve and waits in a daemon thread; then the stats file
/// and 4 KiB of `bits` must still be read on that CPU, from the reserve,
/// by another thread: over io_uring the second thread of that CPU's queue,
/// over `/dev/fuse` the second thread reading it. With `shared`, the small
/// read is made on the bulk reader's own descriptor.
fn answers_beside_a_waiting_read(d: &Daemon, cpu: usize, shared: bool) {
    use std::sync::{Arc, mpsc};
    let capacity = usize::try_from(d.stats()["queue_capacity"]).unwrap();
    let stopped = Stopped::generator(d);
    let (bits, stats) = (d.bits(), d.mount.join("stats"));
    let waits =
        |stats: &Path| parse_stats(&std::fs::read_to_string(stats).unwrap())["consumer_waits"];
    let waits_before = waits(&stats);
    let (bulk_tx, bulk_done) = mpsc::channel();
    let bulk_file = Arc::new(File::open(&bits).unwrap());
    let probe_file = shared.then(|| bulk_file.clone());
    let bulk = std::thread::spawn(move || {
        pin_to(cpu);
        let mut f = &*bulk_file;
        let mut buf = vec![0u8; (1 << 20) - 4096];
        // More than the queue holds: the last reads wait for the generator.
        for _ in 0..=capacity / buf.len() {
            f.read_exact(&mut buf).unwrap();
        }
        bulk_tx.send(()).unwrap();
    });
    let (probe_tx, probe) = mpsc::channel();
    let bits = d.bits();
    std::thread::spawn(move || {
        pin_to(cpu);
        // Until the bulk read waits in the daemon.
        let waiting = wait_until(Duration::from_secs(10), || waits(&stats) > waits_before);
        let mut small = vec![0u8; 4096];
        let got = match probe_file {
            Some(f) => (&*f).read_exact(&mut small),
            None => File::open(bits).and_then(|mut f| f.read_exact(&mut small)),
        };
        let _ = probe_tx.send((waiting, got.map(|()| small)));
    });
    let (waiting, got) = probe
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!("CPU {cpu}: a read waited behind a bulk read waiting for the generator")
        });
    assert!(
        waiting,
        "CPU {cpu}: the bulk read never waited for the generator"
    );
    let small = got.unwrap();
    assert!(small.iter().any(|&b| b != 0));
    assert!(
        bulk_done.try_recv().is_err(),
        "CPU {cpu}: the bulk read did not wait for the generator"
    );
    drop(stopped);
    bulk.join()
        .expect("the bulk reader failed once the generator ran again");
}

on_both_transports! {
    /// A read that has to wait for the generator (a bulk read of an empty
    /// queue) holds up one daemon thread, never the next request on its
    /// CPU: a small read there is answered from the small-read reserve at
    /// once, on every CPU.
    fn a_read_is_answered_beside_one_that_waits(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &["--no-fifo", "--queue-capacity", "2M", "--generators", "1"]);
        for cpu in usable_cpus() {
            answers_beside_a_waiting_read(&d, cpu, false);
        }
    }
}

on_both_transports! {
    /// Issue 27: threads sharing one descriptor read side by side. `bits`
    /// is a stream (`FOPEN_STREAM`): no file position, so no position lock
    /// that a read waiting for the generator would hold against a small
    /// read on the same descriptor (with `FOPEN_NONSEEKABLE` the small read
    /// waited, and the position advanced).
    fn threads_sharing_a_descriptor_are_not_serialised(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &["--no-fifo", "--queue-capacity", "2M", "--generators", "1"]);
        answers_beside_a_waiting_read(&d, usable_cpus()[0], true);
        let f = File::open(d.bits()).unwrap();
        let mut buf = [0u8; 100];
        (&f).read_exact(&mut buf).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        assert!(fdinfo.starts_with("pos:\t0\n"), "{fdinfo}");
    }
}

extern "C" fn ignore(_: libc::c_int) {}

on_both_transports! {
    /// Readers interrupted by a signal mid-read (a handler without
    /// SA_RESTART) get all their bytes or EINTR, never a short read;
    /// readers killed mid-read take nothing from the others; and after it
    /// all, every CPU still answers a read beside one that waits, so no
    /// queue lost either of its two ring entries.
    fn interrupted_and_killed_readers_leave_every_queue_serving(t: Transport) {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
        if !fuse_available() {
            return;
        }
        // A small queue, so that 1 MiB reads wait for the generator.
        let d = Daemon::start_on(t, &["--no-fifo", "--queue-capacity", "256K", "--generators", "1"]);
        let action = SigAction::new(SigHandler::Handler(ignore), SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler does nothing, which is async-signal-safe.
        unsafe { sigaction(Signal::SIGUSR1, &action) }.unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tids) = std::sync::mpsc::channel();
        let readers: Vec<_> = [1usize << 20, (1 << 20) + 1, 4096, 65536]
            .into_iter()
            .map(|block| {
                let (bits, stop, tid_tx) = (d.bits(), stop.clone(), tid_tx.clone());
                std::thread::spawn(move || {
                    tid_tx.send(nix::unistd::gettid()).unwrap();
                    let mut f = File::open(bits).unwrap();
                    let (mut got, mut interrupted) = (Vec::new(), 0u32);
                    let mut buf = vec![0u8; block];
                    while !stop.load(Ordering::Relaxed) {
                        match f.read(&mut buf) {
                            Ok(n) => {
                                assert_eq!(n, block, "a short read of {block} bytes");
                                got.extend_from_slice(&buf[..16.min(n)]);
                                got.extend_from_slice(&buf[n - 16.min(n)..n]);
                            }
                            Err(e) if e.kind() == ErrorKind::Interrupted => interrupted += 1,
                            Err(e) => panic!("read of {block} bytes: {e}"),
                        }
                    }
                    (got, interrupted)
                })
            })
            .collect();
        drop(tid_tx);
        let tids: Vec<_> = tids.iter().take(readers.len()).collect();
        // Readers killed mid-read, one per CPU, each really reading.
        let killed: Vec<_> = (0..kernel_queues())
            .map(|cpu| {
                Command::new("taskset")
                    .args(["-c", &cpu.to_string(), "dd", "bs=1M", "of=/dev/null"])
                    .arg(format!("if={}", d.bits().display()))
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for k in &killed {
            wait_until_reading(k.id());
        }
        let pid = nix::unistd::getpid();
        let started = Instant::now();
        let mut signals = 0;
        while started.elapsed() < Duration::from_secs(2) {
            for &tid in &tids {
                // SAFETY: tgkill sends a signal to a thread of this process.
                let r = unsafe {
                    libc::syscall(libc::SYS_tgkill, pid.as_raw(), tid.as_raw(), libc::SIGUSR1)
                };
                assert_eq!(r, 0);
                signals += 1;
            }
            std::thread::yield_now();
        }
        for mut k in killed {
            assert!(rchar(k.id()) > 0);
            k.kill().unwrap();
            k.wait().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let outputs: Vec<Vec<u8>> = readers
            .into_iter()
            .map(|r| r.join().expect("a reader failed").0)
            .collect();
        assert!(signals > 100, "only {signals} signals sent");
        assert!(outputs.iter().all(|o| !o.is_empty()), "a reader got nothing");
        assert_no_repeated_stretch(&outputs);
        for cpu in usable_cpus() {
            answers_beside_a_waiting_read(&d, cpu, false);
        }
    }
}

/// A check that the daemon's generators sleep: its queue is within 128 KiB
/// of full (where a full queue that readers took a little from rests until
/// they take more), and nothing was made since the last call.
fn generators_asleep(d: &Daemon) -> impl FnMut() -> bool + '_ {
    let mut last = None;
    move || {
        let s = d.stats();
        let made = Some(s["bytes_generated"]);
        let same = std::mem::replace(&mut last, made) == made;
        same && s["queue_bytes"] + (128 << 10) >= s["queue_capacity"]
    }
}

/// Nanoseconds the threads of process `pid` have run, from
/// `/proc/PID/task/*/schedstat`.
fn cpu_time_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

on_both_transports! {
    /// An idle daemon spends (next to) no CPU: no thread polls.
    fn idle_costs_no_cpu(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &[]);
        let mut buf = vec![0u8; 1 << 20];
        File::open(d.bits()).unwrap().read_exact(&mut buf).unwrap();
        // Until the queue has refilled and the generators sleep.
        assert!(wait_until(Duration::from_secs(10), generators_asleep(&d)));
        let pid = d.pid().as_raw().unsigned_abs();
        let (before, at) = (cpu_time_ns(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let used = cpu_time_ns(pid) - before;
        let window = u64::try_from(at.elapsed().as_nanos()).unwrap();
        assert!(used * 100 < window, "used {used} ns of CPU in {window} ns idle");
    }
}

/// Every readable anonymous mapping of process `pid` (heap, stacks, the
/// queue's chunks, ring buffers), read through `/proc/PID/mem`.
fn anonymous_memory(pid: u32) -> Vec<(String, Vec<u8>)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut regions = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let name = fields.get(5).copied().unwrap_or("");
        let anonymous = name.is_empty()
            || name == "[heap]"
            || name.starts_with("[stack")
            || name.starts_with("[anon");
        if !fields[1].starts_with('r') || !anonymous {
            continue;
        }
        let (start, end) = fields[0].split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut bytes = vec![0u8; usize::try_from(end - start).unwrap()];
        if mem.read_exact_at(&mut bytes, start).is_ok() {
            regions.push((line.to_string(), bytes));
        }
    }
    regions
}

/// The index [`served_in`] looks `served` up in: every 32-byte-aligned
/// block of it by its first 8 bytes. Built once for all the regions.
fn index_of(served: &[u8]) -> Index<usize> {
    let key = |b: &[u8]| u64::from_ne_bytes(b[..8].try_into().unwrap());
    let mut index = Index::default();
    for s in (0..served.len().saturating_sub(31)).step_by(32) {
        index.entry(key(&served[s..])).or_insert(s);
    }
    index
}

/// Every place in `memory` that holds a stretch of `served`, as
/// (offset in `memory`, offset in `served`): a window slides over `memory`
/// and is looked up in `index` (`index_of(served)`), so any copy of 63
/// bytes or more is found (the copies looked for are 4000 bytes and more),
/// once every 32 bytes of it. (The other way round, a window over
/// `served` for each of the daemon's forty-odd regions, took ten times as
/// many look-ups.)
fn served_in(memory: &[u8], served: &[u8], index: &Index<usize>) -> Vec<(usize, usize)> {
    let key = |b: &[u8]| u64::from_ne_bytes(b[..8].try_into().unwrap());
    (0..memory.len().saturating_sub(31))
        .filter_map(|at| {
            let s = *index.get(&key(&memory[at..]))?;
            (memory[at..at + 32] == served[s..s + 32]).then_some((at, s))
        })
        .collect()
}

/// Whether the copy of `served[s..]` at `memory[at..]` is a chunk of the
/// queue: a seeded stream's chunks are its whole 4 KiB blocks, so a chunk
/// holds `served` from a multiple of 4096 (up to 4096 bytes of it: the
/// front chunk is read only in part), and the copy sits at its place in
/// one.
fn in_a_chunk(memory: &[u8], at: usize, served: &[u8], s: usize) -> bool {
    let (back, from) = (s % 4096, s - s % 4096);
    let len = 4096.min(served.len() - from);
    at >= back && memory.get(at - back..at - back + len) == Some(&served[from..from + len])
}

on_both_transports! {
    /// Once a reader is done, no byte it was sent is left in the daemon's
    /// reply buffers: not in `/dev/fuse`'s thread buffers, not in the ring
    /// entries' payloads over io_uring. (The queue's emptied chunks keep
    /// theirs until the generator refills them, as docs/SECURITY.md says;
    /// the scan tells them apart, with a seeded stream whose chunks are its
    /// whole 4 KiB blocks, and reads that never start on one.)
    fn served_bytes_do_not_stay_in_reply_buffers(t: Transport) {
        if !fuse_available() {
            return;
        }
        let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let d = Daemon::start_on(t, &["--no-fifo", "--seed", key, "--queue-capacity", "4M"]);
        let mut f = File::open(d.bits()).unwrap();
        let mut served = vec![0u8; 1];
        f.read_exact(&mut served).unwrap();
        // 1 + 4000k and 1 + 12345k are never multiples of 4096: every read
        // is copied, and no copy can pass for a chunk.
        for (block, count) in [(4000usize, 1500), (12345, 200), (4000, 1)] {
            for _ in 0..count {
                let mut buf = vec![0u8; block];
                f.read_exact(&mut buf).unwrap();
                served.extend_from_slice(&buf);
            }
        }
        drop(f);
        // Until the generator has stopped refilling.
        let mut last = u64::MAX;
        assert!(wait_until(Duration::from_secs(10), || {
            let now = d.stats()["bytes_generated"];
            std::mem::replace(&mut last, now) == now
        }));
        let pid = d.pid().as_raw().unsigned_abs();
        let regions = anonymous_memory(pid);
        let capacity = usize::try_from(d.stats()["queue_capacity"]).unwrap();
        assert!(regions.iter().map(|r| r.1.len()).sum::<usize>() > capacity);
        let index = index_of(&served);
        let mut chunks = 0;
        for (mapping, bytes) in &regions {
            for (at, s) in served_in(bytes, &served, &index) {
                if in_a_chunk(bytes, at, &served, s) {
                    chunks += 1;
                    continue;
                }
                panic!("served bytes {s}.. left at offset {at} of {mapping}, not in a chunk");
            }
        }
        eprintln!("{chunks} stretches found in chunks not yet refilled");
    }
}

/// The scanner finds what it is meant to find, and tells a chunk from
/// another copy.
#[test]
fn the_memory_scan_finds_a_planted_copy() {
    // xorshift: no stretch repeats.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let served: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32).to_le_bytes()[0]
        })
        .collect();
    let index = index_of(&served);
    let mut memory = vec![0u8; 1 << 20];
    assert!(served_in(&memory, &served, &index).is_empty());
    // A reply's copy: served[50_001..54_001] at a page start.
    memory[300 << 10..(300 << 10) + 4000].copy_from_slice(&served[50_001..54_001]);
    // A chunk: the whole block served[8192..12288] at a page start.
    memory[500 << 10..(500 << 10) + 4096].copy_from_slice(&served[8192..12288]);
    let hits = served_in(&memory, &served, &index);
    // Found where it lies: a hit inside the copy, at its place in it.
    assert!(
        hits.iter()
            .any(|&(at, s)| (50_001..54_001 - 32).contains(&s)
                && at.checked_sub(300 << 10) == Some(s - 50_001))
    );
    for (at, s) in hits {
        let chunk = in_a_chunk(&memory, at, &served, s);
        assert_eq!(chunk, at >= 500 << 10, "at {at}, served {s}");
    }
    // And a live process's memory can be read.
    assert!(!anonymous_memory(std::process::id()).is_empty());
}

/// The control directory of the FUSE mount at `mount`,
/// `/sys/fs/fuse/connections/N` (N the minor of its device), with the
/// fusectl file system mounted there first if nothing has.
fn connection_of(mount: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let connections = Path::new("/sys/fs/fuse/connections");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /sys/fs/fuse/connections ") && l.contains(" - fusectl "));
    if !mounted {
        let status = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(connections)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount fusectl on {}",
            connections.display()
        );
    }
    let dev = std::fs::metadata(mount).unwrap().dev();
    connections.join(nix::sys::stat::minor(dev).to_string())
}

on_both_transports! {
    /// A connection aborted under the daemon (`/sys/fs/fuse/connections/N/abort`)
    /// leaves no dead mount: the daemon detaches it, says what happened
    /// (not that it was unmounted) and exits with status 1; readers got an
    /// error, never a hang, and the mount point it made is gone.
    fn an_aborted_connection_is_detached_and_said(t: Transport) {
        if !fuse_available() {
            return;
        }
        let mut d = Daemon::start_on(t, &["--no-fifo"]);
        let mut reader = File::open(d.bits()).unwrap();
        let mut buf = [0u8; 64];
        reader.read_exact(&mut buf).unwrap();
        let abort = connection_of(&d.mount).join("abort");
        std::fs::write(&abort, "1").unwrap_or_else(|e| panic!("{}: {e}", abort.display()));
        let status = d.stop_with_nothing(Duration::from_secs(10));
        let log = d.log_text();
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(
            log.contains("pilfered: the FUSE connection was aborted (/sys/fs/fuse/connections/N/abort) while mounted; detaching the dead mount"),
            "{log}"
        );
        assert!(!log.contains("was unmounted"), "{log}");
        assert!(!d.is_mounted(), "a dead mount stayed at {}", d.mount.display());
        assert!(!d.mount.exists(), "the mount point it made stayed");
        let err = reader.read(&mut buf).expect_err("a read of an aborted connection");
        assert!(
            matches!(err.raw_os_error(), Some(libc::ECONNABORTED | libc::ENOTCONN)),
            "{err}"
        );
    }
}

/// A start whose own threads cannot be had (a pids cgroup's limit) says so
/// in one line, never that the kernel refused a ring, and leaves nothing
/// mounted or made. Limits from 3 threads up are tried until one lets the
/// rings start; at least one stops exactly while they start.
#[test]
fn a_thread_limit_while_the_rings_start_is_said_for_what_it_is() {
    if !fuse_available() || !uring_available() {
        return;
    }
    let _on = uring_on();
    let pids = Path::new("/sys/fs/cgroup/pids");
    assert!(
        pids.join("cgroup.procs").exists(),
        "no pids cgroup controller at {}: this test cannot limit threads",
        pids.display()
    );
    let group = pids.join(format!("pilfered-test-{}", std::process::id()));
    std::fs::create_dir(&group).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _remove = Remove(group.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut while_rings_start = 0;
    for limit in 3..64 {
        std::fs::write(group.join("pids.max"), limit.to_string()).unwrap();
        let mount = dir.path().join(format!("mnt-{limit}"));
        // (timeout: a limit the whole start fits in serves until stopped.)
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec timeout -s TERM 5 "$@""#)
            .arg(&group)
            .arg(crate::common::BIN)
            .args([
                "serve",
                "--no-fifo",
                "--generators",
                "1",
                "--fuse-transport",
                "io-uring",
            ])
            .arg("--mount")
            .arg(&mount)
            .env("PILFERED_RUNDIR", dir.path().join("run"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("refused a ring"),
            "limit {limit}: {stderr}"
        );
        let at_the_rings = stderr.contains(&format!(
            "pilfered: --mount {}: cannot start the FUSE threads: Try again; this is a limit of this process (threads, memory), not of the kernel's FUSE",
            mount.display()
        ));
        while_rings_start += u32::from(at_the_rings);
        let past_the_rings = out.status.success() || (while_rings_start > 0 && !at_the_rings);
        let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounted.contains(mount.to_str().unwrap()),
            "limit {limit}: left mounted"
        );
        assert!(
            !mount.exists(),
            "limit {limit}: the mount point it made stayed"
        );
        if past_the_rings {
            break;
        }
    }
    assert!(
        while_rings_start > 0,
        "no limit stopped the start while the rings started"
    );
}
