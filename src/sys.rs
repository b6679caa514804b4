//! The system layer: what pilfered asks of the kernel and the file system,
//! and the rules about whom to trust with it.
//!
//! - [`raw`]: every raw system call and CPU instruction pilfered makes
//!   without a safe wrapper from `nix` or `std`, and so nearly all of its
//!   `unsafe`;
//! - [`uring`]: FUSE over io_uring at the kernel's interface: ring entries,
//!   their buffers (shared with the kernel, hence `unsafe`) and commands;
//! - [`trust`]: who may write what pilfered serves, and the checked walk
//!   along a path;
//! - [`mounts`]: the mount table, and pilfered's own FUSE mounts;
//! - [`mountdir`]: claiming (and making) the mount point;
//! - [`records`]: what a daemon made, so that a restart after a crash can
//!   take it over.

pub(crate) mod mountdir;
pub(crate) mod mounts;
#[expect(unsafe_code, reason = "system calls without a safe wrapper")]
pub(crate) mod raw;
pub(crate) mod records;
pub(crate) mod trust;
#[expect(unsafe_code, reason = "ring buffers the kernel shares")]
pub(crate) mod uring;

/// The size of a memory page.
pub(crate) fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}
