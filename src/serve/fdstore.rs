//! systemd's file descriptor store: where a daemon under systemd leaves
//! its FUSE connection, so that the next start of the service (after
//! `systemctl restart`, an upgrade or a crash) takes the mount over
//! instead of making another.
//!
//! A daemon that made the mount stores two entries with `FDSTORE=1`
//! (`FileDescriptorStoreMax=` in the unit must allow them):
//! - [`STATE`]: a sealed memfd (`pilfered-init`) holding what the next
//!   daemon must know of the connection, written first so that a stored
//!   connection always has one: the [`Init`] record of [`handover`], then
//!   the mount's ID (u64, little-endian), 48 bytes;
//! - [`FUSE`]: the `/dev/fuse` descriptor;
//! - [`DIR`]: the mount point directory, open and locked as the daemon
//!   that mounted it claimed it (the lock belongs to the open file, so the
//!   store keeps it held until the next daemon takes it).
//!
//! systemd keeps them across restarts and crashes (not across a stop) and
//! passes them to every later start after the socket unit's FIFO, named
//! in `LISTEN_FDNAMES`; [`sort`] tells them apart. A daemon that was given
//! them stores nothing again (systemd still holds them); a stop that is
//! not a handover removes them ([`forget_connection`]).
//!
//! Messages go to `NOTIFY_SOCKET` as `sd_notify(3)` sends them, a path or
//! an abstract socket (`@...`, which the `sd-notify` crate cannot reach).
//!
//! [`handover`]: super::handover

use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};

use super::handover::Init;
use crate::error::{Error, printable};

/// The store's name for the `/dev/fuse` descriptor.
pub(crate) const FUSE: &str = "fuse";
/// The store's name for the mount point directory.
pub(crate) const DIR: &str = "fuse-dir";
/// The store's name for the memfd that says what [`FUSE`] negotiated.
pub(crate) const STATE: &str = "fuse-state";
/// The memfd's own name (`/proc/PID/fd` shows `memfd:pilfered-init`).
const MEMFD_NAME: &str = "pilfered-init";
/// The memfd's length: the INIT record and the mount ID.
const STATE_LEN: usize = Init::LEN + 8;
/// The seals a state memfd must carry: nobody changes it once written.
fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// What a stored connection carries besides its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) init: Init,
    /// `statx`'s `stx_mnt_id` of the mount point when it was stored.
    pub(crate) mount_id: u64,
}

/// A sealed memfd holding `state` ([`STATE`]'s content).
pub(crate) fn state_memfd(state: &State) -> Result<OwnedFd, Error> {
    let failed = |e: Errno| Error::runtime(format!("memfd {MEMFD_NAME}: {}", e.desc()));
    let fd = memfd_create(
        MEMFD_NAME,
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(failed)?;
    let mut bytes = state.init.encode().to_vec();
    bytes.extend_from_slice(&state.mount_id.to_le_bytes());
    let mut at = 0;
    while at < bytes.len() {
        let off = i64::try_from(at).expect("a few bytes");
        at += nix::sys::uio::pwrite(&fd, &bytes[at..], off).map_err(failed)?;
    }
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals())).map_err(failed)?;
    Ok(fd)
}

/// The state a [`STATE`] memfd holds, or why `fd` is not one.
pub(crate) fn read_state(fd: BorrowedFd<'_>) -> Result<State, String> {
    let sealed = fcntl(fd, FcntlArg::F_GET_SEALS)
        .map_err(|e| format!("not a sealed memfd ({})", e.desc()))?;
    if !SealFlag::from_bits_truncate(sealed).contains(seals()) {
        return Err("a memfd that is not sealed against change".into());
    }
    let mut buf = [0u8; STATE_LEN + 1];
    let mut len = 0;
    loop {
        let off = i64::try_from(len).expect("a few bytes");
        match nix::sys::uio::pread(fd, &mut buf[len..], off) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.desc().into()),
        }
        if len == buf.len() {
            break;
        }
    }
    if len != STATE_LEN {
        return Err(format!("{len} bytes, not {STATE_LEN}"));
    }
    let init = Init::decode(&buf[..Init::LEN])?;
    let id = buf[Init::LEN..STATE_LEN].try_into().expect("8 bytes");
    Ok(State {
        init,
        mount_id: u64::from_le_bytes(id),
    })
}

/// Sends the `sd_notify` text `text` (lines `KEY=VALUE\n`) with `fds` to
/// the notify socket `addr` (a path, or `@NAME` for an abstract socket).
pub(crate) fn notify_to(addr: &OsStr, text: &str, fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
    let bytes = addr.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name)?,
        None => UnixAddr::new(bytes)?,
    };
    let socket = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs = if raw.is_empty() { &[][..] } else { &cmsg[..] };
    let iov = [IoSlice::new(text.as_bytes())];
    loop {
        match socket::sendmsg(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::empty(),
            Some(&addr),
        ) {
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

/// Sends `text` with `fds` to the service manager, if `NOTIFY_SOCKET`
/// names one; whether it did.
fn notify(text: &str, fds: &[BorrowedFd<'_>]) -> Result<bool, Error> {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET").filter(|a| !a.is_empty()) else {
        return Ok(false);
    };
    notify_to(&addr, text, fds).map_err(|e| {
        Error::runtime(format!(
            "NOTIFY_SOCKET {}: {}",
            printable(&addr.to_string_lossy()),
            e.desc()
        ))
    })?;
    Ok(true)
}

/// The message that stores `fds` under `name`.
fn store_text(name: &str) -> String {
    format!("FDSTORE=1\nFDNAME={name}\n")
}

/// The message that drops what is stored under `name`.
fn remove_text(name: &str) -> String {
    format!("FDSTOREREMOVE=1\nFDNAME={name}\n")
}

/// Leaves the FUSE connection `fuse` and its `state` in the service
/// manager's store; `false` if there is no manager to hold them. Called
/// once per connection, by the daemon that mounted it.
pub(crate) fn store_connection(
    fuse: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    state: &State,
) -> Result<bool, Error> {
    let memfd = state_memfd(state)?;
    Ok(notify(&store_text(STATE), &[memfd.as_fd()])?
        && notify(&store_text(DIR), &[dir])?
        && notify(&store_text(FUSE), &[fuse])?)
}

/// Drops the stored connection and its state (a stop that is not a
/// handover: the mount goes).
pub(crate) fn forget_connection() -> Result<bool, Error> {
    Ok(notify(&remove_text(FUSE), &[])?
        && notify(&remove_text(DIR), &[])?
        && notify(&remove_text(STATE), &[])?)
}

/// The descriptors systemd passed ([`crate::sys::raw::listen_fds`]), by
/// what they are.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    /// The socket unit's (any name but the two stored ones), with its
    /// name; checking that it is a FIFO is the caller's.
    pub(crate) fifo: Option<(OwnedFd, String)>,
    /// A stored connection, `/dev/fuse`, with its state and its mount
    /// point directory.
    pub(crate) fuse: Option<(OwnedFd, State, OwnedFd)>,
}

const LISTEN: &str = "LISTEN_FDS";

/// Sorts what systemd passed. Refused, with a line that says why: more
/// than one descriptor from the socket unit, a stored connection that is
/// not `/dev/fuse` or comes without its state (or the other way round),
/// and any name twice.
pub(crate) fn sort(fds: Vec<(OwnedFd, String)>) -> Result<Passed, Error> {
    let mut passed = Passed::default();
    let mut fuse = None;
    let mut state = None;
    let mut dir = None;
    let mut others = Vec::new();
    for (fd, name) in fds {
        let slot = match name.as_str() {
            FUSE => &mut fuse,
            STATE => &mut state,
            DIR => &mut dir,
            _ => {
                others.push((fd, name));
                continue;
            }
        };
        if slot.replace(fd).is_some() {
            return Err(Error::usage(format!(
                "{LISTEN}: systemd passed two descriptors named {name}; was FileDescriptorStoreMax= raised while an old daemon stored its own? `systemctl clean --what=fdstore pilfered` drops them"
            )));
        }
    }
    if others.len() > 1 {
        return Err(Error::usage(format!(
            "{LISTEN}: systemd passed {} descriptors from the socket unit; pilfered serves one FIFO, so give the socket unit one ListenFIFO= and nothing else",
            others.len()
        )));
    }
    passed.fifo = others.pop();
    passed.fuse = match (fuse, state) {
        (None, None) if dir.is_none() => None,
        (None, None) => {
            return Err(Error::usage(format!(
                "{LISTEN}: systemd passed a stored {DIR} without its FUSE connection ({FUSE})"
            )));
        }
        (Some(fd), Some(memfd)) => {
            super::handover::check_dev_fuse(fd.as_fd()).map_err(|e| {
                Error::usage(format!("{LISTEN}: the descriptor stored as {FUSE} {e}"))
            })?;
            let state = read_state(memfd.as_fd()).map_err(|e| {
                Error::usage(format!(
                    "{LISTEN}: the stored {STATE} is not what a pilfered daemon stored: {e}"
                ))
            })?;
            let Some(dir) = dir else {
                return Err(Error::usage(format!(
                    "{LISTEN}: systemd passed a stored FUSE connection ({FUSE}) without its mount point ({DIR})"
                )));
            };
            Some((fd, state, dir))
        }
        (Some(_), None) => {
            return Err(Error::usage(format!(
                "{LISTEN}: systemd passed a stored FUSE connection ({FUSE}) without its {STATE}, so what its FUSE_INIT settled is unknown"
            )));
        }
        (None, Some(_)) => {
            return Err(Error::usage(format!(
                "{LISTEN}: systemd passed a stored {STATE} without its FUSE connection ({FUSE})"
            )));
        }
    };
    Ok(passed)
}

#[cfg(test)]
mod tests;
