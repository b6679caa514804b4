//! Readers of `bits` beyond one `read()` loop: sendfile, splice, io_uring
//! and Linux AIO, and descriptors handed to another user.
//!
//! `bits` is opened with direct I/O and as a stream, and shows a size
//! (the kernel ends asynchronous reads at the size). What each of these
//! paths does with such a file is the kernel's business; these tests pin
//! down what this kernel does, and above all that no path ever hands out a
//! byte that `read()` also hands out, or a byte the daemon does not count.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::common::{Daemon, fuse_available, on_both_transports};

/// `sendfile(out, bits, NULL, n)`: from the file position of `bits`.
fn sendfile(out: &impl AsRawFd, bits: &File, n: usize) -> io::Result<usize> {
    // SAFETY: both descriptors stay open for the call; a null offset makes
    // the kernel use (and advance) the file position, no pointer of ours.
    let r = unsafe { libc::sendfile(out.as_raw_fd(), bits.as_raw_fd(), std::ptr::null_mut(), n) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `splice(bits, NULL, pipe, NULL, n, 0)`.
fn splice(bits: &File, pipe: &OwnedFd, n: usize) -> io::Result<usize> {
    // SAFETY: both descriptors stay open for the call; null offsets make the
    // kernel use the file position and the pipe, no pointer of ours.
    let r = unsafe {
        libc::splice(
            bits.as_raw_fd(),
            std::ptr::null_mut(),
            pipe.as_raw_fd(),
            std::ptr::null_mut(),
            n,
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `struct iocb` of `<linux/aio_abi.h>` (little-endian field order).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event` of `<linux/aio_abi.h>`.
#[repr(C)]
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const IOCB_CMD_PREAD: u16 = 0;

/// One Linux AIO `IOCB_CMD_PREAD` of `buf.len()` bytes at offset 0 of
/// `file`, submitted and waited for; returns the event's result.
fn aio_pread(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes the new context into `ctx`, which outlives it.
    if unsafe { libc::syscall(libc::SYS_io_setup, 1, &mut ctx as *mut libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut iocb = Iocb {
        aio_lio_opcode: IOCB_CMD_PREAD,
        aio_fildes: file.as_raw_fd() as u32,
        aio_buf: buf.as_mut_ptr() as u64,
        aio_nbytes: buf.len() as u64,
        ..Iocb::default()
    };
    let mut list = [&mut iocb as *mut Iocb];
    // SAFETY: `list` points at one valid iocb whose buffer `buf` stays
    // borrowed, and so alive and unaliased, until io_getevents below has
    // returned its completion (or io_destroy has waited for it).
    let submitted = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, list.as_mut_ptr()) };
    let result = if submitted != 1 {
        Err(io::Error::last_os_error())
    } else {
        let mut event = IoEvent::default();
        // SAFETY: room for exactly the one event asked for; no timeout.
        let got = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                ctx,
                1,
                1,
                &mut event as *mut IoEvent,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        match (got, event.res) {
            (1, res) => match usize::try_from(res) {
                Ok(n) => Ok(n),
                Err(_) => Err(io::Error::from_raw_os_error(
                    i32::try_from(-res).unwrap_or(libc::EIO),
                )),
            },
            _ => Err(io::Error::last_os_error()),
        }
    };
    // SAFETY: `ctx` came from io_setup and is destroyed once; io_destroy
    // waits for any request still in flight, so `buf` is no longer used.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    result
}

/// One io_uring `IORING_OP_READ` of `buf.len()` bytes of `file` at
/// `offset` (`u64::MAX`: the file position, as liburing's -1), submitted
/// and waited for; returns the completion's result.
fn uring_read(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut ring = io_uring::IoUring::new(2)?;
    let read = io_uring::opcode::Read::new(
        io_uring::types::Fd(file.as_raw_fd()),
        buf.as_mut_ptr(),
        u32::try_from(buf.len()).unwrap(),
    )
    .offset(offset)
    .build();
    // SAFETY: `buf` stays borrowed, so alive and unaliased, until the
    // completion is reaped below (or the ring, dropped first, is gone).
    unsafe { ring.submission().push(&read) }.expect("an empty ring has room");
    ring.submit_and_wait(1)?;
    let res = ring.completion().next().expect("one completion").result();
    usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res))
}

/// What is left in the pipe read by `r`, without waiting.
fn drain(r: &OwnedFd) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match nix::unistd::read(r, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => return total,
            Ok(n) => total += n,
            Err(e) => panic!("reading the pipe: {e}"),
        }
    }
}

on_both_transports! {
    /// sendfile and splice of `bits` fail with EINVAL and take nothing:
    /// they read through the page cache, whose reads the daemon refuses.
    /// `read()` on the same file still gets fresh bytes.
    fn sendfile_and_splice_get_nothing_and_take_nothing(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &["--no-fifo"]);
        let bits = d.bits();
        let counters = || {
            let s = d.stats();
            (s["bytes_served_fuse"], s["fuse_reads"])
        };
        let before = counters();
        let open = || File::open(&bits).unwrap();
        let out_path = d.dir.path().join("out");
        let out = File::create(&out_path).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        let errno = |r: io::Result<usize>| r.map_err(|e| e.raw_os_error());

        let to_file = errno(sendfile(&out, &open(), 4096));
        assert_eq!(to_file, Err(Some(libc::EINVAL)), "sendfile into a regular file");
        assert_eq!(std::fs::metadata(&out_path).unwrap().len(), 0);
        assert_eq!(
            errno(sendfile(&w, &open(), 4096)),
            Err(Some(libc::EINVAL)),
            "sendfile into a pipe"
        );
        assert_eq!(
            errno(splice(&open(), &w, 4096)),
            Err(Some(libc::EINVAL)),
            "splice into a pipe"
        );
        assert_eq!(drain(&r), 0, "bytes in the pipe");
        // With an offset, as Python's shutil.copyfile calls it: not seekable.
        let mut offset: libc::off_t = 0;
        // SAFETY: both descriptors are open; `offset` outlives the call.
        let with_offset =
            unsafe { libc::sendfile(out.as_raw_fd(), open().as_raw_fd(), &mut offset, 4096) };
        assert_eq!(
            (with_offset, io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ESPIPE))
        );
        let mut buf = vec![0u8; 4096];
        let pread = std::os::unix::fs::FileExt::read_at(&open(), &mut buf, 0);
        assert_eq!(errno(pread), Err(Some(libc::ESPIPE)), "pread");
        assert_eq!(counters(), before, "the daemon served a request");

        // The control: read() gets fresh bytes and is counted, exactly.
        let mut f = open();
        f.read_exact(&mut buf).unwrap();
        assert!(buf.iter().any(|&b| b != 0));
        assert_eq!(counters(), (before.0 + 4096, before.1 + 1));
    }
}

on_both_transports! {
    /// A descriptor opened by root and then used by another user, as a
    /// service that drops its privileges after opening (or QEMU with a file
    /// libvirt opened) uses it: it reads, and `close()` succeeds. The close
    /// costs the daemon no request (`FOPEN_NOFLUSH`).
    fn a_descriptor_handed_to_another_user_reads_and_closes(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &["--no-fifo"]);
        let script = format!(
            "import os\n\
             fd = os.open('{}', os.O_RDONLY)\n\
             os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n\
             print(len(os.read(fd, 32)), os.getuid())\n\
             fd2 = os.dup(fd)\n\
             os.close(fd2)\n\
             os.close(fd)\n\
             print('closed')",
            d.bits().display()
        );
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .output()
            .expect("python3");
        assert_eq!(
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                out.status.success()
            ),
            ("32 65534\nclosed\n".to_string(), String::new(), true)
        );
    }
}

on_both_transports! {
    /// Asynchronous readers get their bytes, all of them fresh and counted:
    /// io_uring reads at the file position (liburing's offset -1), at 0 and
    /// at any offset (the offset means nothing to a stream), and a Linux AIO
    /// read. With a size of 0 the kernel ended each of them at once.
    fn io_uring_and_aio_reads_get_bytes(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &["--no-fifo"]);
        let before = d.stats()["bytes_served_fuse"];
        let bits = File::open(d.bits()).unwrap();
        let mut got = Vec::new();
        for offset in [u64::MAX, 0, 1 << 40] {
            for size in [32, 4096, 1 << 20] {
                let mut buf = vec![0u8; size];
                let n = uring_read(&bits, &mut buf, offset);
                assert_eq!(
                    n.map_err(|e| e.to_string()),
                    Ok(size),
                    "io_uring read of {size} at offset {offset:#x}"
                );
                got.push(buf);
            }
        }
        let mut buf = vec![0u8; 4096];
        assert_eq!(aio_pread(&bits, &mut buf).map_err(|e| e.to_string()), Ok(4096), "AIO IOCB_CMD_PREAD");
        got.push(buf);
        assert!(got.iter().all(|b| b.iter().any(|&x| x != 0)), "zeros");
        crate::common::assert_no_repeated_stretch(&got);
        let total: usize = got.iter().map(Vec::len).sum();
        assert_eq!(d.stats()["bytes_served_fuse"], before + total as u64);
        // stats keeps its size of 0 (programs read it to its end), so over
        // io_uring it ends at once, as docs/USAGE.md says.
        let stats = File::open(d.mount.join("stats")).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(uring_read(&stats, &mut buf, 0).map_err(|e| e.to_string()), Ok(0), "stats");
    }
}
