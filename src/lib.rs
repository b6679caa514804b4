//! pilfered: a virtual entropy device. ChaCha20 generators fill a bounded
//! queue of random-byte chunks, served through a FUSE file and a named pipe.
//!
//! The library's public face for other programs is [`reader::DeviceReader`]
//! (exact reads from the device) and [`uniform::Uniform`] (unbiased integers
//! from its bytes). The other public modules serve the `pilfered` binary,
//! its tests and benchmarks. See docs/ARCHITECTURE.md for the design.
//!
//! ```no_run
//! use pilfered::reader::DeviceReader;
//! use pilfered::uniform::Uniform;
//!
//! let mut dev = DeviceReader::open("/mnt/pilfered/bits".as_ref())?;
//! let mut key = [0u8; 32];
//! dev.read_exact(&mut key)?; // exactly 32 bytes
//! let card = Uniform::new(52).sample(&mut dev)?; // fair, in 0..52
//! # Ok::<(), pilfered::error::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod daemon;
mod dice;
pub mod error;
mod fifo;
pub mod fs;
pub mod generator;
mod mountdir;
pub mod mounts;
mod output;
mod preflight;
pub mod queue;
pub mod reader;
mod records;
pub mod seeding;
pub mod stats;
pub mod status;
mod sync;
pub mod tools;
mod trust;
pub mod uniform;
pub mod units;
pub mod vmfork;
