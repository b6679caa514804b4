//! The synchronisation primitives the chunk queue is built on.
//!
//! The queue names its primitives through this module only (as
//! `super::sync`), so that `tests/queue_shuttle.rs` can compile the very
//! same `engine/queue.rs` with shuttle's primitives in this module's place
//! and run it under a randomized scheduler.

pub(super) use std::sync::{Condvar, Mutex, MutexGuard};
