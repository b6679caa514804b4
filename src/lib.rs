//! pilfered: a virtual entropy device. ChaCha20 generators fill a bounded
//! queue of random-byte chunks, served through a FUSE file and a named pipe.
//!
//! The library's public face for other programs is [`DeviceReader`] (exact
//! reads from the device), [`Uniform`] (unbiased integers from its bytes)
//! and their [`Error`]. See docs/ARCHITECTURE.md for the design.
//!
//! ```no_run
//! use pilfered::{DeviceReader, Uniform};
//!
//! let mut dev = DeviceReader::open("/mnt/pilfered/bits".as_ref())?;
//! let mut key = [0u8; 32];
//! dev.read_exact(&mut key)?; // exactly 32 bytes
//! let card = Uniform::new(52).sample(&mut dev)?; // fair, in 0..52
//! # Ok::<(), pilfered::Error>(())
//! ```
//!
//! The code is in layers, each a folder (docs/ARCHITECTURE.md draws them):
//! `sys` (system calls, trust, mounts), `engine` (queue, generators,
//! keys, counters), `serve` (the daemon and its two interfaces) and
//! `client` (readers and the commands), with `cli`, `units` and `error` at
//! the top.

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

pub use client::reader::DeviceReader;
pub use client::uniform::Uniform;
pub use error::Error;

/// Not part of the public API: what the `pilfered` binary, its tests,
/// benchmarks and asset generator need from the library. It may change in
/// any release.
#[doc(hidden)]
pub mod internal {
    use std::time::Duration;

    pub use crate::cli::{Cli, DEFAULT_FIFO, DEFAULT_MOUNT};
    pub use crate::engine::generator::{BATCH_BYTES, Generator, Rounds};
    pub use crate::engine::seeding::Key;
    pub use crate::engine::stats::Snapshot;
    pub use crate::serve::fuse::REQUEST_LOG as FUSE_REQUEST_LOG;
    pub use crate::units::format_bytes;

    use crate::Error;
    use crate::cli::Command;

    /// Runs the command `cli` parsed; `serve` logs its throughput every
    /// `report_every` if given (`-v`).
    pub fn run(cli: Cli, report_every: Option<Duration>) -> Result<(), Error> {
        use crate::client::{status, tools};
        match cli.command {
            Command::Serve(args) => args.validate().and_then(|mut cfg| {
                cfg.report_every = report_every;
                crate::serve::daemon::serve(&cfg)
            }),
            Command::Roll(args) => tools::roll(&args.exprs, args.source.from.as_deref()),
            Command::Nonce(args) => tools::nonce(args.count, args.source.from.as_deref()),
            Command::Status(args) => status::run(&args),
        }
    }

    /// The benchmark's null FUSE server, the ceiling of pilfered's FUSE
    /// reads: pilfered's own mount call, transport and `Device`, serving
    /// zeros from `bits` at once, on the existing directory `mount`, until
    /// SIGINT or SIGTERM; then it unmounts. `transport` is as
    /// `--fuse-transport` takes it. Calls `started` with the transport in
    /// use once it serves.
    pub fn null_server(
        mount: &std::path::Path,
        transport: &str,
        threads: usize,
        started: impl FnOnce(&str),
    ) -> Result<(), String> {
        use crate::serve::fuse::{self, Bits, Device};
        use clap::ValueEnum;
        use nix::sys::signal::{SigSet, Signal};
        use std::sync::Arc;
        let choice = crate::cli::FuseTransport::from_str(transport, false)?;
        let mut signals = SigSet::empty();
        signals.add(Signal::SIGINT);
        signals.add(Signal::SIGTERM);
        signals.thread_block().map_err(|e| e.to_string())?;
        let dir: std::os::fd::OwnedFd = std::fs::File::open(mount)
            .map_err(|e| e.to_string())?
            .into();
        let want = crate::serve::preflight::plan_transport(choice).map_err(|e| e.to_string())?;
        let (fd, mounted) =
            crate::sys::mounts::mount_fuse(&dir, mount, false).map_err(|e| e.to_string())?;
        let uid = nix::unistd::geteuid().as_raw();
        let device = Device::new(
            Bits::Zeros,
            Arc::default(),
            uid,
            nix::unistd::getegid().as_raw(),
            fuse::MODE,
        );
        let options = fuse::Options {
            want,
            threads,
            acl: fuse::Acl {
                owner: uid,
                everyone: false,
            },
        };
        let server = match fuse::start(fd, &Arc::new(device), &options) {
            Ok(server) => server,
            Err(e) => {
                let _ = mounted.unmount();
                return Err(format!("{e:?}"));
            }
        };
        started(&server.transport().to_string());
        std::thread::spawn(move || server.wait());
        signals.wait().map_err(|e| e.to_string())?;
        mounted.unmount().map(drop).map_err(|e| e.to_string())
    }

    /// The mount table, and mounting as pilfered does.
    pub mod mounts {
        pub use crate::sys::mounts::{detach, mount_at, mount_fuse, parse_mountinfo};
    }
}
