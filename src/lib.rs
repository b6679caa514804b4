//! pilfered: a virtual entropy device. One ChaCha20 generator fills a bounded
//! queue of random-byte chunks, served through a FUSE file and a named pipe.
//! Consumers read it with [`reader::DeviceReader`]; `roll` and `nonce` are
//! built on it.
//!
//! See the README for the user's view and the architecture.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod daemon;
pub mod dice;
pub mod error;
pub mod fifo;
pub mod fs;
pub mod generator;
pub mod mounts;
pub mod preflight;
pub mod queue;
pub mod reader;
pub mod seeding;
pub mod stats;
pub mod status;
mod sync;
pub mod tools;
pub mod units;
