//! `pilfered serve`: the daemon, which wires the engine to its two
//! interfaces and takes them down in order.
//!
//! - [`config`]: what the daemon is told (`Config`), with the defaults and
//!   limits of what it configures;
//! - [`daemon`]: start and shutdown order, signals, the event loop;
//! - [`startup`]: its threads, the generators, the serving line;
//! - [`preflight`]: every check that can refuse a start, as one `Plan`;
//! - [`mounted`]: the daemon's FUSE mount: mounting, serving, unmounting;
//! - [`fuse`]: the FUSE file system (`bits`, `stats`), its adapter and its
//!   two transports, `/dev/fuse` and io_uring;
//! - [`fifo`]: the named pipe: its path, the VM-fork wipe, the writer;
//! - [`vmfork`]: hearing the kernel announce a VM fork;
//! - [`handover`]: passing the FUSE connection and the FIFO to a
//!   successor (`--replace`);
//! - [`successor`]: the running daemon's side of a `--replace`;
//! - [`fdstore`]: leaving the FUSE connection in systemd's file
//!   descriptor store, and sorting what systemd passes back.

pub(crate) mod config;
mod daemon;
mod fdstore;
pub(crate) mod fifo;
pub(crate) mod fuse;
mod handover;
mod mounted;
mod preflight;
mod startup;
mod successor;
mod vmfork;

pub(crate) use daemon::serve;
