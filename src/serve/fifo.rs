//! The named-pipe interface, in three parts:
//!
//! - [`path`]: checking the `--fifo` path, making or reusing the FIFO,
//!   opening it read-write and locked, and removing what we made;
//! - [`wipe`]: the handshake with which a VM-fork handler has the writer
//!   drop everything from before the fork, and waits until it has;
//! - [`writer`]: the thread that moves queued chunks into the pipe with
//!   `writev`, without ever blocking on a full pipe.
//!
//! The FIFO is held open read-write, so readers can come and go and never see
//! end-of-file while the daemon lives, and a write can never fail with EPIPE.

mod path;
mod wipe;
mod writer;

pub(crate) use path::{Fifo, Given, KERNEL_MAX_PIPE_SIZE, Spot, inspect, system_pipe_max_size};
pub(crate) use wipe::WipeHandle;
pub(crate) use writer::Writer;
