//! The ceiling for pilfered's FIFO: `zerofifo NEW_FIFO MODEL_FIFO` creates
//! the FIFO `NEW_FIFO`, gives its pipe the size of `MODEL_FIFO`'s (pilfered's
//! FIFO), prints that size, and keeps it full of zeros, opened read-write as
//! pilfered opens its own. A reader of it measures what a pipe of that size
//! can move when the writer costs nothing. It runs until killed.
//!
//! The zeros go in with `vmsplice`: the pipe refers to this process's zero
//! pages instead of copying them, so the only copy left is the reader's.
//! (A writer that copies, even from a buffer of zeros, takes half the CPU
//! work, and on a machine with few CPUs measured slower than pilfered.)
//! Used by `benches/throughput.sh`; not part of pilfered.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: zerofifo NEW_FIFO MODEL_FIFO");
        std::process::exit(2);
    }
    let model = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&args[2])
        .expect("open MODEL_FIFO");
    // SAFETY: F_GETPIPE_SZ on a descriptor we own; no memory is passed.
    let size = unsafe { libc::fcntl(model.as_raw_fd(), libc::F_GETPIPE_SZ) };
    assert!(size > 0, "F_GETPIPE_SZ failed on MODEL_FIFO");
    drop(model);
    nix::unistd::mkfifo(
        args[1].as_str(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo NEW_FIFO");
    let fifo: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args[1])
        .expect("open NEW_FIFO");
    // SAFETY: F_SETPIPE_SZ on a descriptor we own; no memory is passed.
    let set = unsafe { libc::fcntl(fifo.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    assert_eq!(set, size, "F_SETPIPE_SZ to {size} bytes failed");
    println!("{size}");
    std::io::stdout().flush().expect("stdout");
    // Never written again and never freed, as vmsplice requires: the pipe
    // may refer to these pages long after the call.
    let zeros: &'static [u8] = Box::leak(vec![0u8; size as usize].into_boxed_slice());
    let mut at = 0;
    loop {
        let rest = &zeros[at..];
        let iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: one iovec over `rest`, valid for the call; `zeros` lives
        // for the rest of the process and is never modified, so the pages
        // the pipe refers to stay zeros.
        let n = unsafe { libc::vmsplice(fifo.as_raw_fd(), &iov, 1, 0) };
        assert!(n > 0, "vmsplice: {}", std::io::Error::last_os_error());
        at = (at + n as usize) % zeros.len();
    }
}
