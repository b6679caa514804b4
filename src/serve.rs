//! `pilfered serve`: the daemon, which wires the engine to its two
//! interfaces and takes them down in order.
//!
//! - [`config`]: what the daemon is told (`Config`), with the defaults and
//!   limits of what it configures;
//! - [`daemon`]: start and shutdown order, signals, the event loop;
//! - [`preflight`]: every check that can refuse a start, as one `Plan`;
//! - [`mounted`]: the daemon's FUSE mount: mounting, serving, unmounting;
//! - [`fuse`]: the FUSE file system (`bits`, `stats`), its adapter and its
//!   two transports, `/dev/fuse` and io_uring;
//! - [`fifo`]: the named pipe: its path, the VM-fork wipe, the writer;
//! - [`vmfork`]: hearing the kernel announce a VM fork;
//! - [`handover`]: passing the FUSE connection and the FIFO to a
//!   successor (`--replace`);
//! - [`fdstore`]: leaving the FUSE connection in systemd's file
//!   descriptor store, and sorting what systemd passes back.

pub(crate) mod config;
mod daemon;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the daemon takes it up with issue 26")
)]
mod fdstore;
pub(crate) mod fifo;
pub(crate) mod fuse;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the daemon takes it up with issue 26")
)]
mod handover;
mod mounted;
mod preflight;
mod vmfork;

pub(crate) use daemon::serve;
