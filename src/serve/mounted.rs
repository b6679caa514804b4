//! The daemon's FUSE side: claiming the mount point, mounting, starting the
//! session and the thread that notices an outside detach, and taking them
//! down again, this very mount only.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use log::warn;

use crate::engine::stats::Stats;
use crate::error::{Error, describe};
use crate::serve::config::Config;
use crate::serve::fdstore;
use crate::serve::fuse::{self, Filesystem, Init, Session, Source, Transport};
use crate::serve::preflight::MountPlan;
use crate::serve::startup::spawn;
use crate::sys::mountdir::MountDir;
use crate::sys::mounts::{self, FuseMount, Unmounted};

/// The files to serve: `bits` from `source`, owned by us; with `group`,
/// that group's and readable by it alone.
pub(super) fn files(source: Source, stats: Arc<Stats>, group: Option<u32>) -> Filesystem {
    let uid = nix::unistd::geteuid().as_raw();
    let (gid, mode) = match group {
        Some(gid) => (gid, fuse::GROUP_MODE),
        None => (nix::unistd::getegid().as_raw(), fuse::MODE),
    };
    Filesystem::new(source, stats, uid, gid, mode)
}

/// A mounted, served FUSE file system.
pub(super) struct FusePart {
    mount: FuseMount,
    /// Claimed (locked) until the daemon exits or hands it over.
    dir: MountDir,
    /// The thread watching for the mount to be detached.
    watch: mounts::Watch,
    session: Session,
    /// Whether its connection is in systemd's store (we stored it, or
    /// systemd passed it from there).
    stored: bool,
}

/// How long a stop waits for the FUSE threads to finish the requests they
/// hold.
const STOP_WITHIN: Duration = Duration::from_secs(5);

impl FusePart {
    /// Claims the mount point, mounts, and serves `fs` there; or, with a
    /// [`MountPlan::takeover`], serves the live mount handed over. `on_end`
    /// is called with how the session ended, and `on_gone` if the mount is
    /// detached from outside while the session lives. A failure leaves
    /// nothing mounted or made (and a mount handed over as it was).
    pub(super) fn start(
        plan: MountPlan,
        fs: Filesystem,
        cfg: &Config,
        on_end: impl FnOnce(io::Result<()>) + Send + 'static,
        on_gone: impl FnOnce() + Send + 'static,
    ) -> Result<FusePart, Error> {
        let options = fuse::Options {
            choice: cfg.fuse_transport,
            threads: cfg.fuse_threads,
            everyone: cfg.allow_other,
        };
        let (part, mut session, stored) = match plan.takeover {
            Some(t) => {
                let dir = MountDir::adopt(plan.parent, plan.name, t.dir)?;
                let failed = |e: fuse::StartError| {
                    Error::runtime(format!("--mount {}: {e}", dir.path.display()))
                };
                let session = Session::resume(t.channel, t.init, fs, options).map_err(failed)?;
                if let Transport::IoUring { queues } = session.transport() {
                    wake_queues(&dir.path, queues);
                }
                let mount = FuseMount {
                    mount_point: dir.path.clone(),
                    id: t.mount_id,
                };
                let part = Starting {
                    parts: Some((mount, dir)),
                    ours: false,
                };
                (part, session, t.stored)
            }
            None => {
                let (fd, part) = mount(plan, cfg)?;
                let failed = |e: fuse::StartError| {
                    Error::runtime(format!("--mount {}: {e}", part.path().display()))
                };
                let session = Session::start(fd, fs, options).map_err(failed)?;
                (part, session, false)
            }
        };
        let ended = session.ended();
        spawn("fuse-session", move || on_end(ended.wait()))?;
        let watch = mounts::Watch::start(part.mount().id, on_gone).map_err(|e| {
            Error::runtime(format!(
                "--mount {}: {}",
                part.path().display(),
                describe(&e)
            ))
        })?;
        let (mount, dir) = part.keep();
        Ok(FusePart {
            mount,
            dir,
            watch,
            session,
            stored,
        })
    }

    /// Where it is mounted.
    pub(super) fn path(&self) -> &Path {
        &self.dir.path
    }

    /// How the file is served.
    pub(super) fn transport(&self) -> Transport {
        self.session.transport()
    }

    /// Whether its connection is in systemd's store.
    pub(super) fn stored(&self) -> bool {
        self.stored
    }

    /// Whether the mount is still in the mount table.
    pub(super) fn is_attached(&self) -> bool {
        self.mount.is_attached().unwrap_or(false)
    }

    /// What a successor needs to take the mount over: the connection, what
    /// its `FUSE_INIT` settled, the mount point directory (locked) and the
    /// mount's ID.
    pub(super) fn offer(&self) -> (BorrowedFd<'_>, Init, BorrowedFd<'_>, u64) {
        let dir = self.dir.dir.as_fd();
        (
            self.session.channel(),
            self.session.init(),
            dir,
            self.mount.id,
        )
    }

    /// Leaves the connection in systemd's store, if a manager listens
    /// (`NOTIFY_SOCKET`) and it is not there already, so that the next
    /// start takes the mount over after a restart or a crash.
    pub(super) fn store(&mut self) {
        if self.stored {
            return;
        }
        let (channel, init, dir, mount_id) = self.offer();
        match fdstore::store_connection(channel, dir, &fdstore::State { init, mount_id }) {
            Ok(stored) => self.stored = stored,
            Err(e) => warn!("{e}: a restart of the service will mount anew"),
        }
    }

    /// Stops serving, between two requests and with every request taken
    /// answered, and leaves the mount, its directory and the connection to
    /// the daemon that takes it over (which holds them already).
    pub(super) fn let_go(mut self) {
        self.watch.stop();
        if !self.session.stop(STOP_WITHIN) {
            warn!(
                "the FUSE threads did not stop within {STOP_WITHIN:?}; exiting ends what they hold"
            );
        }
    }

    /// Unmounts (a dead mount too), drops the connection from systemd's
    /// store and removes the mount point if we made it; returns whether the
    /// connection ended with the mount, so that the session's threads are
    /// done in moments.
    pub(super) fn take_down(self) -> bool {
        let attached = self.is_attached();
        self.watch.stop();
        let mut ended = false;
        if attached {
            // Only this very mount, never another one at the same path.
            match self.mount.unmount() {
                Ok(Unmounted::Gone) => ended = true,
                // A reader holds a file open, so the connection lives on
                // until the process exits: nothing to wait for.
                Ok(Unmounted::Detached | Unmounted::NotThere) => {}
                Err(e) => warn!(
                    "could not unmount {}: {}",
                    self.dir.path.display(),
                    describe(&e)
                ),
            }
        }
        if self.stored
            && let Err(e) = fdstore::forget_connection()
        {
            warn!("{e}");
        }
        self.dir.remove_if_made();
        ended
    }
}

/// Asks the mount one question from each CPU, so that every kernel queue
/// hands a request to one of our new ring entries: the kernel gives a
/// newly registered entry only requests that come after it, and fetches
/// those that queued up while no entry was there (between two daemons)
/// only as an entry commits a reply. `statfs` is never answered from a
/// cache.
fn wake_queues(mount: &Path, queues: usize) {
    std::thread::scope(|s| {
        for cpu in 0..queues {
            s.spawn(move || {
                fuse::pin_to(cpu);
                if let Err(e) = nix::sys::statvfs::statvfs(mount) {
                    warn!("statfs of {} from CPU {cpu}: {}", mount.display(), e.desc());
                }
            });
        }
    });
}

/// Claims the mount point and mounts; the mount, unmounted again on a
/// failure until it is kept.
fn mount(plan: MountPlan, cfg: &Config) -> Result<(OwnedFd, Starting), Error> {
    let dir = MountDir::claim(plan.parent, plan.name, plan.create)?;
    match mounts::mount_fuse(&dir.dir, &dir.path, cfg.allow_other) {
        Ok((fd, mount)) => Ok((
            fd,
            Starting {
                parts: Some((mount, dir)),
                ours: true,
            },
        )),
        Err(e) => {
            dir.remove_if_made();
            Err(Error::runtime(format!(
                "--mount {}: cannot mount the FUSE file system: {}; run with --no-fuse to serve only the FIFO",
                dir.path.display(),
                describe(&e)
            )))
        }
    }
}

/// A mount being started, and its directory: unmounted and removed (if
/// made) on drop if we mounted it, left as they are if they were handed
/// over (the connection is the other daemon's or systemd's), unless
/// [`Starting::keep`] takes them.
struct Starting {
    parts: Option<(FuseMount, MountDir)>,
    ours: bool,
}

impl Starting {
    fn mount(&self) -> &FuseMount {
        &self.parts.as_ref().expect("until kept").0
    }

    fn path(&self) -> &Path {
        &self.parts.as_ref().expect("until kept").1.path
    }

    fn keep(mut self) -> (FuseMount, MountDir) {
        self.parts.take().expect("kept once")
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some((mount, dir)) = self.parts.take()
            && self.ours
        {
            let _ = mount.unmount();
            dir.remove_if_made();
        }
    }
}
