//! The daemon's FUSE side: claiming the mount point, mounting, starting the
//! session and the thread that notices an outside detach, and taking them
//! down again, this very mount only.

use std::io;
use std::path::Path;
use std::sync::Arc;

use log::warn;

use crate::engine::stats::Stats;
use crate::error::{Error, describe};
use crate::serve::config::Config;
use crate::serve::daemon::spawn;
use crate::serve::fuse::{self, Filesystem, Session, Source, Transport};
use crate::serve::preflight::MountPlan;
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
    /// Claimed (locked) until the daemon exits.
    dir: MountDir,
    /// The thread watching for the mount to be detached.
    watch: mounts::Watch,
    transport: Transport,
}

impl FusePart {
    /// Claims the mount point, mounts, and serves `fs` there; `on_end` is
    /// called with how the session ended, and `on_gone` if the mount is
    /// detached from outside while the session lives. A failure leaves
    /// nothing mounted or made.
    pub(super) fn start(
        plan: MountPlan,
        fs: Filesystem,
        cfg: &Config,
        on_end: impl FnOnce(io::Result<()>) + Send + 'static,
        on_gone: impl FnOnce() + Send + 'static,
    ) -> Result<FusePart, Error> {
        let dir = MountDir::claim(plan.parent, plan.name, plan.create)?;
        let shown = dir.path.display().to_string();
        let failed = |why: String| Error::runtime(format!("--mount {shown}: {why}"));
        let (fd, mount) = match mounts::mount_fuse(&dir.dir, &dir.path, cfg.allow_other) {
            Ok(mounted) => mounted,
            Err(e) => {
                dir.remove_if_made();
                return Err(failed(format!(
                    "cannot mount the FUSE file system: {}; run with --no-fuse to serve only the FIFO",
                    describe(&e)
                )));
            }
        };
        // From here until the part is whole, a failure unmounts.
        let part = Unmounting(Some((mount, dir)));
        let options = fuse::Options {
            choice: cfg.fuse_transport,
            threads: cfg.fuse_threads,
            everyone: cfg.allow_other,
        };
        let session = Session::start(fd, fs, options).map_err(|e| failed(e.to_string()))?;
        let transport = session.transport();
        spawn("fuse-session", move || on_end(session.wait()))?;
        let watch =
            mounts::Watch::start(part.mount().id, on_gone).map_err(|e| failed(describe(&e)))?;
        let (mount, dir) = part.keep();
        Ok(FusePart {
            mount,
            dir,
            watch,
            transport,
        })
    }

    /// Where it is mounted.
    pub(super) fn path(&self) -> &Path {
        &self.dir.path
    }

    /// How the file is served.
    pub(super) fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether the mount is still in the mount table.
    pub(super) fn is_attached(&self) -> bool {
        self.mount.is_attached().unwrap_or(false)
    }

    /// Unmounts (a dead mount too) and removes the mount point if we made
    /// it; returns whether the connection ended with the mount, so that the
    /// session's threads are done in moments.
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
        self.dir.remove_if_made();
        ended
    }
}

/// A mount and its directory that are unmounted and removed (if made) on
/// drop, unless [`Unmounting::keep`] takes them: what a start that fails
/// half-way must leave behind is nothing.
struct Unmounting(Option<(FuseMount, MountDir)>);

impl Unmounting {
    fn mount(&self) -> &FuseMount {
        &self.0.as_ref().expect("until kept").0
    }

    fn keep(mut self) -> (FuseMount, MountDir) {
        self.0.take().expect("kept once")
    }
}

impl Drop for Unmounting {
    fn drop(&mut self) {
        if let Some((mount, dir)) = self.0.take() {
            let _ = mount.unmount();
            dir.remove_if_made();
        }
    }
}
