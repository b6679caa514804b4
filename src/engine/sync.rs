//! The synchronisation primitives the chunk queue is built on.
//!
//! The queue names its primitives through this module only, so that
//! `tests/queue_shuttle.rs` can compile the very same `queue.rs` against
//! `shuttle::sync` and run it under a randomized scheduler.

pub(super) use std::sync::{Condvar, Mutex, MutexGuard};
