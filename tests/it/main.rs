//! The integration tests: one binary, so that the suite links once. Each
//! module is one area; `common` holds the helpers they share. Two tests live
//! in binaries of their own: `queue_shuttle` (it compiles the queue against
//! shuttle's primitives) and `vmfork` (its trigger wipes every daemon on the
//! machine, so it must not run beside the others).

mod common;

mod activation;
mod attacks;
mod cli;
mod docs;
mod faults;
mod fuse;
mod group;
mod handover;
mod hardening;
mod install;
mod layers;
mod lifecycle;
mod load;
mod logging;
mod manager;
mod qemu;
mod quality;
mod readers;
mod scripts;
mod serve;
mod soak;
mod status;
mod tools;
mod unit;
