//! The VM-fork wipe handshake. After a VM fork the queue is wiped (see
//! `engine::queue`); the handler then wakes the FIFO writer through
//! [`WipeHandle::wipe`] and waits until the writer has wiped its pending
//! chunks from before and drained the bytes already in the pipe (it holds
//! the FIFO read-write, so it can read them back), before it writes
//! anything else.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::Error;

/// What the writer wiped after a VM fork.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wiped {
    /// Pending bytes taken from the queue and not yet written.
    pub pending: usize,
    /// Bytes drained from the pipe.
    pub pipe: usize,
}

#[derive(Debug, Default)]
struct WipeAck {
    /// The last queue epoch the writer has dealt with.
    epoch: u64,
    wiped: Wiped,
    /// The writer has stopped.
    ended: bool,
}

/// Asks the FIFO writer to drop everything from before a VM fork, and waits
/// until it has.
#[derive(Debug, Clone)]
pub(crate) struct WipeHandle(Arc<WipeSync>);

#[derive(Debug)]
struct WipeSync {
    /// Wakes the writer from its poll.
    wake: EventFd,
    ack: Mutex<WipeAck>,
    acked: Condvar,
}

impl WipeHandle {
    /// A handle for one writer.
    pub(super) fn new() -> Result<WipeHandle, Error> {
        let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| Error::runtime(format!("eventfd: {}", e.desc())))?;
        Ok(WipeHandle(Arc::new(WipeSync {
            wake,
            ack: Mutex::new(WipeAck::default()),
            acked: Condvar::new(),
        })))
    }

    /// After the queue moved to `epoch` (see `ChunkQueue::wipe`): wakes the
    /// writer and waits up to `limit` until it has wiped its pending bytes
    /// and drained the pipe. `None` if it did not answer in time; once the
    /// writer has stopped, what it last reported.
    pub(crate) fn wipe(&self, epoch: u64, limit: Duration) -> Option<Wiped> {
        let _ = self.0.wake.write(1);
        let deadline = Instant::now() + limit;
        let mut ack = self
            .0
            .ack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while ack.epoch < epoch && !ack.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            ack = self
                .0
                .acked
                .wait_timeout(ack, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        Some(ack.wiped)
    }

    /// The writer's side: a descriptor that polls readable while a wipe
    /// has been asked for; see [`WipeHandle::take_request`].
    pub(super) fn request_fd(&self) -> BorrowedFd<'_> {
        self.0.wake.as_fd()
    }

    /// The writer's side: clears the request once its poll saw it. (The
    /// writer then compares the queue's epoch with its own, which is what
    /// says whether there is anything to wipe.)
    pub(super) fn take_request(&self) {
        let _ = self.0.wake.read();
    }

    /// The writer's side: it has dealt with `epoch`, wiping `wiped`.
    pub(super) fn acknowledge(&self, epoch: u64, wiped: Wiped) {
        let mut ack = self
            .0
            .ack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ack.epoch = epoch;
        ack.wiped = wiped;
        self.0.acked.notify_all();
    }

    /// The writer's side: it has stopped, so nobody waits for it in vain.
    pub(super) fn ended(&self) {
        self.0
            .ack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ended = true;
        self.0.acked.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    /// The writer's side of one round: waits for a request, clears it, and
    /// acknowledges `epoch`.
    fn answer(handle: &WipeHandle, epoch: u64, wiped: Wiped) {
        let mut fds = [PollFd::new(handle.request_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::NONE), Ok(1));
        handle.take_request();
        handle.acknowledge(epoch, wiped);
    }

    #[test]
    fn a_wipe_waits_for_the_writers_answer() {
        let handle = WipeHandle::new().unwrap();
        let wiped = Wiped {
            pending: 3,
            pipe: 5,
        };
        let writer = {
            let h = handle.clone();
            std::thread::spawn(move || answer(&h, 1, wiped))
        };
        assert_eq!(handle.wipe(1, Duration::from_secs(60)), Some(wiped));
        writer.join().unwrap();
        // The request was cleared: nothing polls readable any more.
        let mut fds = [PollFd::new(handle.request_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::ZERO), Ok(0));
    }

    #[test]
    fn no_answer_in_time_is_none_and_a_stopped_writer_answers_what_it_last_did() {
        let handle = WipeHandle::new().unwrap();
        let started = Instant::now();
        assert_eq!(handle.wipe(1, Duration::from_millis(50)), None);
        assert!(started.elapsed() >= Duration::from_millis(50));
        handle.acknowledge(
            1,
            Wiped {
                pending: 7,
                pipe: 0,
            },
        );
        handle.ended();
        // Epoch 2 will never be acknowledged, but the writer is gone.
        assert_eq!(
            handle.wipe(2, Duration::from_secs(60)),
            Some(Wiped {
                pending: 7,
                pipe: 0
            })
        );
    }
}
