//! The engine: what makes the random bytes and holds them until a consumer
//! takes them. Nothing here knows FUSE, FIFOs or the command line.
//!
//! - [`queue`]: `ChunkQueue`, the one piece of state shared by producers and
//!   consumers (its page-mapped `Block` is the engine's only `unsafe`);
//! - [`sync`]: the lock and condition variable the queue is built on, so
//!   that the shuttle tests can swap them;
//! - [`generator`]: the ChaCha20 generator threads that fill the queue;
//! - [`seeding`]: keys from the OS and the extra sources, and `--seed-file`;
//! - [`stats`]: the counters, named once.

pub(crate) mod generator;
pub(crate) mod queue;
#[cfg(test)]
mod queue_tests;
pub(crate) mod seeding;
pub(crate) mod stats;
mod sync;
