//! The FUSE file system and its two transports.
//!
//! - [`session`]: one mounted connection: the `FUSE_INIT` handshake, who
//!   may use the mount, choosing the transport, starting and ending its
//!   threads;
//! - [`filesystem`]: the file system itself (`Filesystem`): `bits`,
//!   `stats`, the root, with one error per cause; tested without a mount;
//! - [`proto`]: the wire format of requests and replies;
//! - [`adapter`]: the one translation from requests to `Filesystem` calls
//!   and back, used by both transports;
//! - [`legacy`]: `/dev/fuse` read by threads, a `read` and a `writev` per
//!   request;
//! - [`ring`]: FUSE over io_uring (Linux 6.14+): two threads per kernel
//!   queue, `io_uring_enter` to reply and to wait.
//!
//! This replaces the `fuser` crate, which has no io_uring transport (its
//! issue 380) and keeps its request parser private: with one parser and one
//! adapter of our own, both transports run the very same request handling.

mod adapter;
mod filesystem;
mod legacy;
mod proto;
mod ring;
mod session;

pub use adapter::REQUEST_LOG;
pub(crate) use filesystem::{Filesystem, GROUP_MODE, MODE, Source};
pub(crate) use ring::{THREADS_PER_QUEUE as RING_THREADS_PER_QUEUE, pin_to};
pub(crate) use session::{Init, Options, Session, StartError, Transport, io_uring_unavailable};
