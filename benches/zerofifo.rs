//! The ceiling for pilfered's FIFO: `zerofifo NEW_FIFO MODEL_FIFO` creates
//! the FIFO `NEW_FIFO`, gives its pipe the size of `MODEL_FIFO`'s (pilfered's
//! FIFO), prints that size, and keeps it full of zeros, opened read-write as
//! pilfered opens its own. A reader of it measures what a pipe of that size
//! can move when the writer costs nothing. It runs until killed.
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
    let mut fifo: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args[1])
        .expect("open NEW_FIFO");
    // SAFETY: F_SETPIPE_SZ on a descriptor we own; no memory is passed.
    let set = unsafe { libc::fcntl(fifo.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    assert_eq!(set, size, "F_SETPIPE_SZ to {size} bytes failed");
    println!("{size}");
    std::io::stdout().flush().expect("stdout");
    let zeros = vec![0u8; size as usize];
    loop {
        fifo.write_all(&zeros).expect("write");
    }
}
