//! The system layer: what pilfered asks of the kernel and the file system,
//! and the rules about whom to trust with it.
//!
//! - [`raw`]: every raw system call and CPU instruction pilfered makes
//!   without a safe wrapper from `nix` or `std`, and so nearly all of its
//!   `unsafe`;
//! - [`uring`]: FUSE over io_uring at the kernel's interface: ring entries,
//!   their buffers (shared with the kernel, hence `unsafe`) and commands;
//! - [`memory`]: memory mappings of pilfered's own (the ring buffers, the
//!   queue's chunks), and the page size;
//! - [`trust`]: who may write what pilfered serves, and the checked walk
//!   along a path;
//! - [`mounts`]: the mount table, and pilfered's own FUSE mounts;
//! - [`mountdir`]: claiming (and making) the mount point;
//! - [`records`]: what a daemon made, so that a restart after a crash can
//!   take it over.

#[expect(unsafe_code, reason = "a leaf: the mappings and their pieces")]
pub(crate) mod memory;
pub(crate) mod mountdir;
pub(crate) mod mounts;
#[expect(unsafe_code, reason = "a leaf: system calls without a safe wrapper")]
pub(crate) mod raw;
pub(crate) mod records;
pub(crate) mod trust;
#[expect(unsafe_code, reason = "a leaf: buffers the kernel shares")]
pub(crate) mod uring;
