//! Noticing that the VM was cloned from a snapshot (a "VM fork").
//!
//! Every clone of a snapshot starts with the daemon's memory as it was: the
//! same queued bytes and the same generator keys, so without help each
//! clone would serve what the others serve. Linux announces a VM fork through
//! the `vmgenid` driver, which (besides reseeding the kernel's own RNG) emits
//! a `change` uevent for its device (`ACTION=change`, `DRIVER=vmgenid`,
//! `NEW_VMGENID=1`). [`Watcher`] listens for kernel uevents on a netlink
//! socket and calls back on each VM fork; the daemon then wipes the queue
//! and the FIFO and has every generator reseed from the OS.
//!
//! Only messages from the kernel count: a netlink message's sender port is
//! 0 only for the kernel, and anything else (udev's rebroadcasts, a process
//! sending forged uevents) is ignored. Should the socket overflow and drop
//! messages, a VM fork may have been among them, so that is handled as one.
//!
//! Between a restore and the uevent's handling, a clone still serves what
//! the original serves; see docs/ARCHITECTURE.md for how long that is.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use log::{debug, warn};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recvfrom, setsockopt,
    socket, sockopt,
};

use crate::engine::queue::ChunkQueue;
use crate::engine::stats::{self, Stats};
use crate::error::{Error, describe};
use crate::serve::fifo::WipeHandle;

/// How long a VM-fork handler waits for the FIFO writer to confirm its
/// wipe (it answers within a round of its loop) before going on.
const WIPE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts listening for VM forks if the kernel can announce them (a vmgenid
/// device is bound): on each, wipes the queue and (through `fifo`) the
/// FIFO's pending bytes and pipe, and counts it; the generators rekey when
/// they see the queue's new epoch. Returns the watcher, if any, and what
/// the serving line says of it.
pub(super) fn watch(
    queue: Arc<ChunkQueue>,
    stats: Arc<Stats>,
    fifo: Option<WipeHandle>,
    seeded: bool,
) -> Result<(Option<Watcher>, String), Error> {
    let device = match device() {
        Ok(device) => device,
        Err(why) => {
            warn!(
                "VM-fork detection unavailable: {why}; should this machine be cloned from a VM snapshot, every clone would serve the bytes queued at the snapshot and continue the same keystreams"
            );
            return Ok((None, "off".into()));
        }
    };
    let on_fork = move || {
        let (epoch, queued) = queue.wipe();
        stats::add(&stats.bytes_discarded, queued as u64);
        let wiped = fifo.as_ref().map(|f| f.wipe(epoch, WIPE_LIMIT));
        stats::add(&stats.vm_forks, 1);
        let fifo = match wiped {
            None => String::new(),
            Some(Some(w)) => format!(
                ", {} pending for the FIFO and {} in its pipe",
                w.pending, w.pipe
            ),
            Some(None) => ", but the FIFO writer did not confirm its wipe in time".into(),
        };
        let keys = if seeded {
            "--seed: the generators keep their fixed key"
        } else {
            "every generator reseeds from the OS before making more"
        };
        warn!("VM fork: discarded {queued} queued bytes{fifo}; {keys}");
    };
    Ok((
        Some(Watcher::start(&device, on_fork)?),
        format!("on (vmgenid {device})"),
    ))
}

/// Where bound vmgenid devices appear.
pub(super) const VMGENID_DRIVER: &str = "/sys/bus/platform/drivers/vmgenid";

/// The netlink multicast group the kernel sends uevents to.
const KERNEL_GROUP: u32 = 1;

/// Largest uevent we read; the kernel's are at most a few KiB.
const MAX_UEVENT: usize = 16 << 10;

/// The fields of a kernel uevent that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Uevent<'a> {
    /// `ACTION`: add, remove, change, ...
    pub action: &'a str,
    /// `DEVPATH`, e.g. `/devices/platform/VMGENCTR:00`.
    pub devpath: &'a str,
    /// `DRIVER`, if the device is bound to one.
    pub driver: Option<&'a str>,
    /// `SUBSYSTEM`.
    pub subsystem: Option<&'a str>,
}

/// Parses a kernel uevent: `ACTION@DEVPATH`, then `KEY=VALUE` fields, all
/// NUL-separated. `None` for anything else (udev's own messages start with
/// `libudev`, and a header that disagrees with its fields is refused).
pub(super) fn parse(payload: &[u8]) -> Option<Uevent<'_>> {
    let mut fields = payload.split(|&b| b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    let mut ev = Uevent {
        action,
        devpath,
        ..Uevent::default()
    };
    for field in fields {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "ACTION" if value != action => return None,
            "DEVPATH" if value != devpath => return None,
            "DRIVER" => ev.driver = Some(value),
            "SUBSYSTEM" => ev.subsystem = Some(value),
            _ => {}
        }
    }
    (!action.is_empty() && devpath.starts_with('/')).then_some(ev)
}

/// What one netlink message means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The kernel says the VM was forked.
    VmFork,
    /// Not from the kernel (sender port shown): ignored.
    NotKernel(u32),
    /// A kernel uevent about something else: ignored.
    Other,
}

/// Classifies a message received from netlink port `sender` (0 is the
/// kernel).
pub(super) fn classify(sender: u32, payload: &[u8]) -> Verdict {
    if sender != 0 {
        return Verdict::NotKernel(sender);
    }
    match parse(payload) {
        Some(ev) if ev.action == "change" && ev.driver == Some("vmgenid") => Verdict::VmFork,
        _ => Verdict::Other,
    }
}

/// The bound vmgenid device (e.g. `VMGENCTR:00`), or why there is none.
pub(super) fn device() -> Result<String, String> {
    device_in(Path::new(VMGENID_DRIVER))
}

fn device_in(driver: &Path) -> Result<String, String> {
    let entries = std::fs::read_dir(driver)
        .map_err(|e| format!("no vmgenid driver ({}: {})", driver.display(), describe(&e)))?;
    // Bound devices are the links named BUS:ID; the rest are bind, unbind,
    // uevent and module.
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|name| name.contains(':'))
        .ok_or_else(|| {
            format!(
                "no device is bound to the vmgenid driver ({})",
                driver.display()
            )
        })
}

/// The thread listening for VM forks. Dropping it without [`Watcher::stop`]
/// leaves the thread running until the process exits.
pub(super) struct Watcher {
    stop: Arc<EventFd>,
    thread: JoinHandle<()>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watcher { .. }")
    }
}

impl Watcher {
    /// Opens the kernel's uevent socket and starts a thread that calls
    /// `on_fork` for every VM fork of the vmgenid `device`, until stopped.
    /// Without the socket the start is refused: a clone of this VM would
    /// serve the very bytes the others serve.
    pub(super) fn start(
        device: &str,
        on_fork: impl FnMut() + Send + 'static,
    ) -> Result<Watcher, Error> {
        let sock = open_socket().map_err(|e| {
            Error::runtime(format!(
                "this machine has a vmgenid device ({device}) but no netlink uevent socket to hear its VM forks on: {}; allow AF_NETLINK sockets (in a systemd unit: RestrictAddressFamilies=AF_UNIX AF_NETLINK), or clones of this VM would serve the same bytes",
                e.desc()
            ))
        })?;
        let stop = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC)
                .map_err(|e| Error::runtime(format!("eventfd: {}", e.desc())))?,
        );
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vmfork".into())
            .spawn(move || listen(&sock, &s, on_fork))
            .map_err(|e| {
                Error::runtime(format!(
                    "cannot start the VM-fork watcher: {}",
                    describe(&e)
                ))
            })?;
        Ok(Watcher { stop, thread })
    }

    /// Stops the thread (after the fork it may be handling) and waits for it.
    pub(super) fn stop(self) {
        let _ = self.stop.write(1);
        let _ = self.thread.join();
    }
}

fn open_socket() -> nix::Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    // Room for a burst of uevents (hotplug storms): beyond the buffer the
    // kernel drops messages, which we must then treat as a possible fork.
    let big = 1 << 20;
    if setsockopt(&sock, sockopt::RcvBufForce, &big).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &big);
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &NetlinkAddr::new(0, KERNEL_GROUP),
    )?;
    Ok(sock)
}

fn listen(sock: &OwnedFd, stop: &EventFd, mut on_fork: impl FnMut()) {
    let mut buf = vec![0u8; MAX_UEVENT];
    let raw = std::os::fd::AsRawFd::as_raw_fd(sock);
    loop {
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                warn!(
                    "VM-fork detection stopped: poll: {}; clones of this VM may serve the same bytes",
                    e.desc()
                );
                return;
            }
        }
        if fds[1].any().unwrap_or(false) {
            return;
        }
        // Everything queued on the socket, then back to poll.
        loop {
            match recvfrom::<NetlinkAddr>(raw, &mut buf) {
                Ok((n, addr)) => {
                    let sender = addr.map_or(u32::MAX, |a| a.pid());
                    match classify(sender, &buf[..n]) {
                        Verdict::VmFork => on_fork(),
                        Verdict::NotKernel(port) => {
                            debug!("uevent from netlink port {port} ignored: not the kernel");
                        }
                        Verdict::Other => debug!(
                            "uevent ignored: {}",
                            parse(&buf[..n]).map_or("unparsable".to_string(), |e| format!(
                                "{} of {}",
                                e.action, e.devpath
                            ))
                        ),
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => {
                    warn!(
                        "uevents were lost (the socket overflowed); handling it as a VM fork, which may have been among them"
                    );
                    on_fork();
                }
                Err(e) => {
                    warn!(
                        "VM-fork detection stopped: recvfrom: {}; clones of this VM may serve the same bytes",
                        e.desc()
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel sends for `echo change > .../VMGENCTR:00/uevent`, and
    /// (with NEW_VMGENID=1) for a real VM fork.
    const VMGENID_CHANGE: &[u8] = b"change@/devices/platform/VMGENCTR:00\0ACTION=change\0DEVPATH=/devices/platform/VMGENCTR:00\0SUBSYSTEM=platform\0DRIVER=vmgenid\0NEW_VMGENID=1\0MODALIAS=acpi:VMGENCTR:\0SEQNUM=2301\0";

    #[test]
    fn parses_a_kernel_uevent() {
        assert_eq!(
            parse(VMGENID_CHANGE),
            Some(Uevent {
                action: "change",
                devpath: "/devices/platform/VMGENCTR:00",
                driver: Some("vmgenid"),
                subsystem: Some("platform"),
            })
        );
        // Without a trailing NUL, and without optional fields.
        assert_eq!(
            parse(b"add@/devices/x\0ACTION=add"),
            Some(Uevent {
                action: "add",
                devpath: "/devices/x",
                driver: None,
                subsystem: None,
            })
        );
    }

    #[test]
    fn refuses_what_is_not_a_kernel_uevent() {
        // udev's rebroadcasts start with a binary "libudev" header.
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe\0ACTION=change\0"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"\0\0"), None);
        assert_eq!(parse(b"change@relative\0"), None);
        assert_eq!(parse(b"@/devices/x\0"), None);
        // A header that disagrees with its own fields.
        assert_eq!(parse(b"change@/devices/x\0ACTION=add\0"), None);
        assert_eq!(parse(b"change@/devices/x\0DEVPATH=/devices/y\0"), None);
        assert_eq!(parse(b"\xff@/x\0"), None);
    }

    #[test]
    fn only_a_kernel_change_of_vmgenid_is_a_fork() {
        assert_eq!(classify(0, VMGENID_CHANGE), Verdict::VmFork);
        // The same bytes from any other netlink port: a process, not the
        // kernel.
        assert_eq!(classify(1234, VMGENID_CHANGE), Verdict::NotKernel(1234));
        assert_eq!(
            classify(u32::MAX, VMGENID_CHANGE),
            Verdict::NotKernel(u32::MAX)
        );
        // Another action on the vmgenid device.
        let add = b"add@/devices/platform/VMGENCTR:00\0ACTION=add\0DEVPATH=/devices/platform/VMGENCTR:00\0DRIVER=vmgenid\0";
        assert_eq!(classify(0, add), Verdict::Other);
        // A change of another device.
        let other = b"change@/devices/platform/pcspkr\0ACTION=change\0DEVPATH=/devices/platform/pcspkr\0SUBSYSTEM=platform\0DRIVER=pcspkr\0";
        assert_eq!(classify(0, other), Verdict::Other);
        // A change with no driver.
        assert_eq!(
            classify(0, b"change@/devices/x\0ACTION=change\0"),
            Verdict::Other
        );
        // DRIVER=vmgenid must be a whole field.
        assert_eq!(
            classify(0, b"change@/devices/x\0ACTION=change\0XDRIVER=vmgenid\0"),
            Verdict::Other
        );
    }

    #[test]
    fn finds_a_bound_device_or_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let driver = dir.path().join("vmgenid");
        let missing = device_in(&driver).unwrap_err();
        assert!(missing.starts_with("no vmgenid driver ("), "{missing}");
        std::fs::create_dir(&driver).unwrap();
        for f in ["bind", "unbind", "uevent"] {
            std::fs::write(driver.join(f), "").unwrap();
        }
        let unbound = device_in(&driver).unwrap_err();
        assert!(unbound.starts_with("no device is bound"), "{unbound}");
        std::fs::write(driver.join("VMGENCTR:00"), "").unwrap();
        assert_eq!(device_in(&driver), Ok("VMGENCTR:00".to_string()));
    }
}
