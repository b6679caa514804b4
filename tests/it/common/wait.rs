//! Waiting on a condition, shared by the tests and `benches/stall.rs`.

use std::time::{Duration, Instant};

/// Polls `cond` every `every` until it holds (true) or `limit` passes
/// (false).
pub fn poll_until(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
