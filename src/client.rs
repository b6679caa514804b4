//! The consumer side: programs reading the device, and the commands that do
//! it for people.
//!
//! - [`reader`]: `DeviceReader`, exact reads from the FUSE file or the FIFO;
//! - [`uniform`]: `Uniform`, unbiased integers from those bytes;
//! - [`dice`]: `NdS` expressions, rolled fairly;
//! - [`output`]: one buffered stdout, quiet on a closed pipe;
//! - [`tools`]: the `roll` and `nonce` commands;
//! - [`status`]: `pilfered status`, a running daemon's counters for people.

pub(crate) mod dice;
pub(crate) mod output;
pub(crate) mod reader;
pub(crate) mod status;
pub(crate) mod tools;
pub(crate) mod uniform;
