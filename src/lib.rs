//! pilfered: a virtual entropy device. ChaCha20 generators fill a bounded
//! queue of random-byte chunks, served through a FUSE file and a named pipe.
//!
//! The library's public face for other programs is [`DeviceReader`] (exact
//! reads from the device), [`Uniform`] (unbiased integers from its bytes)
//! and their [`ReadError`], which converts into an `io::Error`. See
//! docs/ARCHITECTURE.md for the design.
//!
//! ```no_run
//! use pilfered::{DeviceReader, Uniform};
//!
//! let mut dev = DeviceReader::open("/mnt/pilfered/bits".as_ref())?;
//! let mut key = [0u8; 32];
//! dev.read_exact(&mut key)?; // exactly 32 bytes
//! let card = Uniform::new(52).sample(&mut dev)?; // fair, in 0..52
//! # Ok::<(), pilfered::ReadError>(())
//! ```
//!
//! The code is in layers, each a folder (docs/ARCHITECTURE.md draws them):
//! `sys` (system calls, trust, mounts), `engine` (queue, generators,
//! keys, counters), `serve` (the daemon and its two interfaces) and
//! `client` (readers and the commands), under `cli` (the command line, on
//! top); `units` and `error` are used by every layer.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
// `unsafe` only in the leaf modules that allow it: `sys::raw`, `sys::uring`
// and `sys::memory`.
#![deny(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

mod cli;
mod client;
mod engine;
mod error;
mod serve;
mod sys;
mod units;

pub use client::reader::{DeviceReader, ReadError};
pub use client::uniform::Uniform;

/// Not part of the public API: what the `pilfered` binary, its tests,
/// benchmarks and asset generator need from the library. It may change in
/// any release.
#[doc(hidden)]
pub mod internal {
    pub use crate::cli::{Cli, null_server, run};
    pub use crate::engine::generator::{BATCH_BYTES, Generator, Rounds};
    pub use crate::engine::seeding::Key;
    pub use crate::engine::stats::Snapshot;
    pub use crate::error::Error;
    pub use crate::serve::config::{DEFAULT_FIFO, DEFAULT_MOUNT};
    pub use crate::serve::fuse::REQUEST_LOG as FUSE_REQUEST_LOG;
    pub use crate::units::format_bytes;

    /// What `roll` says of `expr` if it is not dice notation.
    pub fn dice_error(expr: &str) -> Option<Error> {
        crate::client::dice::Dice::parse(expr).err()
    }

    /// The mount table, and mounting as pilfered does.
    pub mod mounts {
        pub use crate::sys::mounts::{detach, mount_at, mount_fuse, parse_mountinfo};
    }
}
