//! The running daemon's side of a `--replace`: a thread that waits on the
//! handover socket ([`handover::Listener`]) and tells the daemon when a
//! successor asks, and the offer of what the daemon serves.

use std::os::fd::AsFd;
use std::path::Path;
use std::thread::JoinHandle;

use log::warn;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::EventFd;

use crate::error::{Error, describe};
use crate::serve::config::Config;
use crate::serve::fifo;
use crate::serve::handover::{Listener, Offer, Paths, Pending};
use crate::serve::mounted::FusePart;
use crate::sys::records;

/// The paths `cfg` serves, as the handover names and compares them.
pub(super) fn paths(cfg: &Config) -> Paths {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    Paths {
        mount: cfg.mount.as_deref().map(absolute),
        fifo: cfg.fifo.as_deref().map(absolute),
    }
}

/// The thread waiting for successors; dropping it stops the thread and
/// removes the socket.
pub(super) struct Watch {
    paths: Paths,
    stop: std::sync::Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Listens for a successor of the daemon serving `cfg`'s paths and
    /// calls `on_successor` for each that asks for them; `None` if there is
    /// no state directory to listen in.
    pub(super) fn start(
        cfg: &Config,
        on_successor: impl Fn(Pending) + Send + 'static,
    ) -> Result<Option<Watch>, Error> {
        let Some(dir) = records::state_dir() else {
            warn!("no state directory: this daemon cannot be replaced with --replace");
            return Ok(None);
        };
        let paths = paths(cfg);
        let listener = Listener::bind(dir, &paths, cfg.replace)?;
        let stop = std::sync::Arc::new(
            EventFd::new().map_err(|e| Error::runtime(format!("eventfd: {}", e.desc())))?,
        );
        let woken = stop.clone();
        let thread = super::startup::spawn("handover", move || {
            loop {
                let mut fds = [
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(woken.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        warn!("the handover socket: {}; --replace is off", e.desc());
                        return;
                    }
                    Ok(_) => {}
                }
                if fds[1].any().unwrap_or(true) {
                    return;
                }
                match listener.accept() {
                    Ok(Some(p)) => on_successor(p),
                    Ok(None) => {}
                    Err(e) => warn!("{e}"),
                }
            }
        })?;
        Ok(Some(Watch {
            paths,
            stop,
            thread: Some(thread),
        }))
    }

    /// Offers `successor` the connection and the FIFO, and waits until it
    /// says it holds them (it then serves them already); an error means it
    /// does not, and we serve on.
    pub(super) fn offer(
        &self,
        successor: Pending,
        fuse: Option<&FusePart>,
        fifo: Option<&fifo::Writer>,
    ) -> Result<(), Error> {
        let served = fuse.map(FusePart::offer);
        let offer = Offer {
            fuse: served.map(|(channel, init, dir, _)| (channel, init, dir)),
            mount_id: served.map_or(0, |s| s.3),
            fifo: fifo.map(|w| w.fifo().fd()),
        };
        successor.offer(&offer)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            warn!("cannot stop the handover thread: {}", describe(&e.into()));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("paths", &self.paths).finish()
    }
}
