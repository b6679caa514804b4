//! Every check that can refuse `pilfered serve`, run before anything is
//! created or mounted, producing one checked [`Plan`].
//!
//! The only changes a preflight makes are clearing the dead mount of a
//! pilfered daemon that is gone, making the state directory if missing
//! (and, with `--mlock`, locking memory). A
//! refused start therefore leaves no FIFO, directory or mount behind. The
//! decisions themselves are pure functions, unit-tested below without root.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{SFlag, fstatat};

use log::{info, warn};

use crate::engine::generator;
use crate::engine::seeding::{Key, Seed, Seeder};
use crate::error::{Error, describe};
use crate::serve::config::{Config, TransportChoice};
use crate::serve::fifo::{self, Given, KERNEL_MAX_PIPE_SIZE};
use crate::serve::fuse::{self, Init};
use crate::serve::{fdstore, handover};
use crate::sys::mounts::{self, FS_TYPE, MountEntry};
use crate::sys::trust::{self, Group, WalkError};
use crate::sys::{mountdir, raw, records};
use crate::units::format_size;

/// What `serve` will serve and where, already checked.
#[derive(Debug)]
pub(super) struct Plan {
    /// `None` with `--no-fifo`.
    pub fifo: Option<FifoPlan>,
    /// `None` with `--no-fuse`.
    pub mount: Option<MountPlan>,
    /// Where keys come from, every `--source` already opened.
    pub seeder: Seeder,
    /// The fixed key of seeded mode (`--seed` or `--seed-file`).
    pub seed: Option<Key>,
    /// `--group`: who besides us may read the FIFO and the FUSE files.
    pub group: Option<Group>,
    /// The daemon `--replace` took over from, waiting for our word that we
    /// serve.
    pub predecessor: Option<handover::Taken>,
}

/// The FIFO to serve.
#[derive(Debug)]
pub(super) struct FifoPlan {
    /// Where it goes and what is there now.
    pub spot: fifo::Spot,
    /// Pipe buffer to ask for.
    pub pipe_size: usize,
}

/// Where to mount: the checked directory that holds the mount point, its
/// name there, and whether it must be made; or the live mount there to
/// take over.
#[derive(Debug)]
pub(super) struct MountPlan {
    pub parent: trust::Dir,
    pub name: OsString,
    pub create: bool,
    pub takeover: Option<Takeover>,
}

/// A live pilfered mount to serve instead of mounting: its connection,
/// what that connection's `FUSE_INIT` settled, its mount point directory
/// (open, and locked by the daemon that claimed it) and its mount ID.
#[derive(Debug)]
pub(super) struct Takeover {
    pub channel: OwnedFd,
    pub init: Init,
    pub dir: OwnedFd,
    pub mount_id: u64,
    /// From systemd's store (else from the daemon `--replace` replaces).
    pub stored: bool,
}

/// Runs every check for `cfg`; see the module docs.
pub(super) fn plan(cfg: &Config) -> Result<Plan, Error> {
    records::open()?;
    let passed = passed_by_systemd()?;
    let mut predecessor = if cfg.replace {
        ask_predecessor(cfg)?
    } else {
        None
    };
    let given = match predecessor.as_mut().and_then(|p| p.fifo.take()) {
        Some(fd) => Some(Given {
            file: fd.into(),
            by_systemd: false,
        }),
        None => passed.fifo,
    };
    let fifo = match &cfg.fifo {
        Some(path) => Some(FifoPlan {
            spot: fifo::inspect(path, given)?,
            pipe_size: resolve_pipe_size(cfg.pipe_size)?,
        }),
        None if given.is_some() => {
            return Err(Error::usage(
                "--no-fifo: systemd passed a FIFO to serve (LISTEN_FDS); drop --no-fifo or the socket unit",
            ));
        }
        None => None,
    };
    let group = cfg
        .group
        .as_deref()
        .map(|name| {
            trust::group(name).map_err(|why| Error::usage(format!("--group {name}: {why}")))
        })
        .transpose()?;
    let takeover = match predecessor
        .as_mut()
        .and_then(|p| Some((p.fuse.take()?, p.mount_id)))
    {
        Some(((channel, init, dir), mount_id)) => Some(Takeover {
            channel,
            init,
            dir,
            mount_id,
            stored: false,
        }),
        None => passed.fuse,
    };
    let mount = cfg
        .mount
        .as_deref()
        .map(|path| plan_mount(path, takeover, cfg.nonempty))
        .transpose()?;
    if mount.is_some() {
        check_transport(cfg.fuse_transport)?;
    }
    if cfg.allow_other && mount.is_some() {
        check_allow_other(if group.is_some() {
            "--group"
        } else {
            "--allow-other"
        })?;
    }
    let seeder = Seeder::new(&cfg.sources)?;
    // Last of the checks, as a key file that is a FIFO may make it wait for
    // its writer: every cheaper check came first.
    let seed = cfg.seed.as_ref().map(Seed::key).transpose()?;
    if cfg.mlock {
        let uring = mount.is_some()
            && cfg.fuse_transport != TransportChoice::Legacy
            && fuse::io_uring_unavailable().is_none();
        let rings = if uring {
            crate::sys::uring::kernel_queues()
                .map_err(|e| Error::runtime(format!("--mlock: {}", describe(&e))))?
        } else {
            0
        };
        lock_memory(cfg, rings * crate::serve::fuse::RING_THREADS_PER_QUEUE)?;
    }
    Ok(Plan {
        fifo,
        mount,
        seeder,
        seed,
        group,
        predecessor,
    })
}

/// What systemd passed (`LISTEN_FDS`): the socket unit's FIFO, and a FUSE
/// connection its store kept for us.
struct Passed {
    fifo: Option<Given>,
    fuse: Option<Takeover>,
}

fn passed_by_systemd() -> Result<Passed, Error> {
    let fds =
        raw::listen_fds().map_err(|e| Error::usage(format!("LISTEN_FDS: {}", describe(&e))))?;
    let passed = fdstore::sort(fds)?;
    let fifo = match passed.fifo {
        Some((fd, name)) => {
            let file = std::fs::File::from(fd);
            let is_fifo = file
                .metadata()
                .map_err(|e| Error::runtime(format!("LISTEN_FDS: {}", describe(&e))))?
                .file_type();
            if !std::os::unix::fs::FileTypeExt::is_fifo(&is_fifo) {
                return Err(Error::usage(format!(
                    "LISTEN_FDS: the descriptor systemd passed ({name}) is not a FIFO; give the socket unit a ListenFIFO= line"
                )));
            }
            Some(Given {
                file,
                by_systemd: true,
            })
        }
        None => None,
    };
    let fuse = passed.fuse.map(|(channel, state, dir)| Takeover {
        channel,
        init: state.init,
        dir,
        mount_id: state.mount_id,
        stored: true,
    });
    Ok(Passed { fifo, fuse })
}

/// `--replace`: asks the daemon serving `cfg`'s paths to hand them over.
fn ask_predecessor(cfg: &Config) -> Result<Option<handover::Taken>, Error> {
    let paths = super::successor::paths(cfg);
    let Some(dir) = records::state_dir() else {
        return Err(Error::runtime(
            "--replace: the state directory cannot be used, so no daemon can be asked to hand over",
        ));
    };
    let taken = handover::request(dir, &paths)?;
    if taken.is_none() {
        info!("--replace: no daemon serves these paths; starting as usual");
    }
    Ok(taken)
}

/// The pipe size to ask for: `--pipe-size`, else the system's maximum.
fn resolve_pipe_size(requested: Option<usize>) -> Result<usize, Error> {
    match requested {
        Some(n) if n > KERNEL_MAX_PIPE_SIZE => Err(Error::usage(format!(
            "--pipe-size {}: the kernel allows at most {}",
            format_size(n as u64),
            format_size(KERNEL_MAX_PIPE_SIZE as u64)
        ))),
        Some(n) => Ok(n),
        None => fifo::system_pipe_max_size()
            .map_err(|e| Error::runtime(format!("/proc/sys/fs/pipe-max-size: {}", describe(&e)))),
    }
}

/// The kernel's own file systems, never mounted on, even by root and with
/// `--nonempty`.
const KERNELS_OWN: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Checks `--mount`, clearing a dead pilfered mount there (a directory
/// with files in it is refused unless `nonempty`); or checks that the
/// connection to take over is the live pilfered mount there.
fn plan_mount(path: &Path, takeover: Option<Takeover>, nonempty: bool) -> Result<MountPlan, Error> {
    let shown = path.display().to_string();
    let abs = std::path::absolute(path)
        .map_err(|e| Error::usage(format!("--mount {shown}: {}", describe(&e))))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(Error::usage(format!(
            "--mount {shown}: not a directory one can mount on"
        )));
    };
    let name = name.to_os_string();
    let parent = trust::walk(parent).map_err(|e| match e {
        WalkError::Missing(..) | WalkError::NotDirectory(_) => {
            Error::usage(format!("--mount {shown}: cannot create it: {e}"))
        }
        e => Error::usage(format!("--mount {shown}: {e}")),
    })?;
    let path = parent.path.join(&name);
    if let Some(top) = KERNELS_OWN.iter().find(|top| path.starts_with(top)) {
        return Err(Error::usage(format!(
            "--mount {shown}: {top} and everything below it belong to the kernel; pilfered never mounts there, choose another directory"
        )));
    }
    if let Some(t) = takeover {
        match live_mount_of(&path, &t) {
            Ok(()) => {
                return Ok(MountPlan {
                    parent,
                    name,
                    create: false,
                    takeover: Some(t),
                });
            }
            Err(why) if t.stored => {
                // Not ours to serve: drop it from the store, and mount anew.
                warn!(
                    "--mount {shown}: refusing the FUSE connection systemd kept: {why}; mounting anew"
                );
                if let Err(e) = fdstore::forget_connection() {
                    warn!("{e}");
                }
                drop(t);
            }
            Err(why) => {
                return Err(Error::runtime(format!("--mount {shown}: --replace: {why}")));
            }
        }
    }
    let create = match fstatat(&parent.fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => true,
        Err(e) if mounts::daemon_gone(e as i32) => {
            clear_stale_mount(&path, &shown)?;
            return plan_mount(&path, None, nonempty);
        }
        Err(e) => return Err(Error::usage(format!("--mount {shown}: {}", e.desc()))),
        Ok(st) => match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => {
                // A dead pilfered mount may still answer stat from cached
                // attributes; statfs always asks the daemon.
                let dead = || {
                    nix::sys::statvfs::statvfs(&path).is_err_and(|e| mounts::daemon_gone(e as i32))
                };
                if occupant(mounted_at(&path)?.as_ref(), dead, &shown)? == Occupant::DeadPilfered {
                    clear_stale_mount(&path, &shown)?;
                    return plan_mount(&path, None, nonempty);
                }
                trust::trusted_dir(st.st_uid, st.st_mode, trust::me())
                    .map_err(|why| mountdir::untrusted(&shown, &path, why))?;
                if !nonempty && !is_empty(&path, &shown)? {
                    return Err(Error::runtime(format!(
                        "--mount {shown}: the directory is not empty, and mounting would hide its files; empty it, choose another directory, or pass --nonempty"
                    )));
                }
                false
            }
            SFlag::S_IFLNK => return Err(not_a_directory(&shown, "is a symbolic link")),
            _ => return Err(not_a_directory(&shown, "is a regular file")),
        },
    };
    check_fuse_available(&shown)?;
    Ok(MountPlan {
        parent,
        name,
        create,
        takeover: None,
    })
}

/// Whether the connection `t` is the live pilfered mount at `path`: the
/// topmost mount there is a pilfered one, of our uid, with the very mount
/// ID the connection came with. Read from the mount table alone: asking
/// the mount itself would wait for the daemon that is to serve it.
fn live_mount_of(path: &Path, t: &Takeover) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw().to_string();
    match mounted_at(path).map_err(|e| e.to_string())? {
        None => Err("nothing is mounted there any more".into()),
        Some(m) if m.fs_type != FS_TYPE => Err(format!(
            "{} ({}) is mounted there, not pilfered",
            m.source, m.fs_type
        )),
        Some(m) if m.id != t.mount_id => Err(format!(
            "the pilfered mount there (ID {}) is not the one the connection served (ID {})",
            m.id, t.mount_id
        )),
        Some(m) if m.option("user_id") != Some(me.as_str()) => Err(format!(
            "the mount there belongs to uid {}, not to us (uid {me})",
            m.option("user_id").unwrap_or("?")
        )),
        Some(_) => Ok(()),
    }
}

/// Refuses an explicit `--fuse-transport io-uring` that this kernel cannot
/// give, here, before anything is mounted (after `/dev/fuse`, and so the
/// module, is there); `auto` is decided by the session, which falls back
/// with one line saying why.
fn check_transport(choice: TransportChoice) -> Result<(), Error> {
    if choice != TransportChoice::IoUring {
        return Ok(());
    }
    match fuse::io_uring_unavailable() {
        Some(why) => Err(Error::runtime(format!(
            "--fuse-transport io-uring: {why}; or use --fuse-transport auto"
        ))),
        None => Ok(()),
    }
}

/// Whether the directory at `path` (checked: only we or root can change
/// what leads there) holds nothing.
fn is_empty(path: &Path, shown: &str) -> Result<bool, Error> {
    let failed = |e: std::io::Error| Error::runtime(format!("--mount {shown}: {}", describe(&e)));
    Ok(std::fs::read_dir(path)
        .map_err(failed)?
        .next()
        .transpose()
        .map_err(failed)?
        .is_none())
}

fn not_a_directory(shown: &str, what: &str) -> Error {
    Error::usage(format!("--mount {shown}: {what}, not a directory"))
}

fn mounted_at(path: &Path) -> Result<Option<MountEntry>, Error> {
    mounts::mount_at(path)
        .map_err(|e| Error::runtime(format!("/proc/self/mountinfo: {}", describe(&e))))
}

/// What is mounted at the mount point, as far as starting goes.
#[derive(Debug, PartialEq, Eq)]
enum Occupant {
    Nothing,
    /// The mount of a pilfered daemon that is gone: ours to clear.
    DeadPilfered,
}

/// Decides about the topmost mount `entry` at the mount point (`dead` asks
/// whether its daemon is gone): anything alive, or not pilfered's, is
/// refused rather than stacked on.
fn occupant(
    entry: Option<&MountEntry>,
    dead: impl FnOnce() -> bool,
    shown: &str,
) -> Result<Occupant, Error> {
    match entry {
        None => Ok(Occupant::Nothing),
        Some(m) if m.fs_type == FS_TYPE && dead() => Ok(Occupant::DeadPilfered),
        Some(m) => Err(Error::runtime(format!(
            "--mount {shown}: {} ({}) is already mounted there; unmount it first or choose another directory",
            m.source, m.fs_type
        ))),
    }
}

/// A FUSE mount whose daemon died answers "Transport endpoint is not
/// connected". If it was a pilfered mount, detach it; anything else is not
/// ours to touch.
fn clear_stale_mount(path: &Path, shown: &str) -> Result<(), Error> {
    match mounted_at(path)? {
        Some(m) if m.fs_type == FS_TYPE => {
            warn!("--mount {shown}: clearing the stale mount of a pilfered daemon that is gone");
            mounts::detach(path).map_err(|e| {
                Error::runtime(format!(
                    "--mount {shown}: cannot clear the stale mount there: {}",
                    describe(&e)
                ))
            })
        }
        Some(m) => Err(Error::usage(format!(
            "--mount {shown}: a dead {} mount is there (Transport endpoint is not connected); unmount it first ('fusermount3 -u {shown}' or 'umount -l {shown}')",
            m.fs_type
        ))),
        None => Err(Error::usage(format!(
            "--mount {shown}: Transport endpoint is not connected"
        ))),
    }
}

/// Fails early, with advice, when a FUSE mount cannot work here. Root
/// mounts itself; a normal user mounts through the setuid `fusermount3`,
/// which opens `/dev/fuse` with the user's own permissions (and then the
/// session's extra threads open it too): either way this user must be able
/// to open `/dev/fuse` for reading and writing.
fn check_fuse_available(shown: &str) -> Result<(), Error> {
    const HINT: &str = "or run with --no-fuse to serve only the FIFO";
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::runtime(format!(
                "--mount {shown}: /dev/fuse does not exist; load the fuse module ('modprobe fuse'), {HINT}"
            )));
        }
        Err(e) => {
            let who = if nix::unistd::geteuid().is_root() {
                ""
            } else {
                " (fusermount3 opens it as you too)"
            };
            return Err(Error::runtime(format!(
                "--mount {shown}: cannot open /dev/fuse: {}{who}; run as root or get read-write access to it, {HINT}",
                describe(&e)
            )));
        }
    }
    if !nix::unistd::geteuid().is_root() && find_in_path("fusermount3").is_none() {
        return Err(Error::runtime(format!(
            "--mount {shown}: mounting as a normal user needs fusermount3, which is not installed; install the fuse3 package, run as root, {HINT}"
        )));
    }
    Ok(())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Refuses `option` (--allow-other, or --group, which mounts with
/// allow_other) early when fusermount3 would refuse it.
fn check_allow_other(option: &str) -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let text = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if fuse_conf_allows_other(&text) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{option}: a normal user may use it only if /etc/fuse.conf contains the line 'user_allow_other'; add it (as root) or run as root"
        )))
    }
}

/// Whether a `fuse.conf` lets normal users mount with `allow_other`.
fn fuse_conf_allows_other(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "user_allow_other")
}

/// `--mlock`: locks all current and future memory, after checking that the
/// locked-memory limit can hold what the daemon will allocate with
/// `ring_threads` io_uring threads, unless CAP_IPC_LOCK lifts the limit.
/// malloc is kept to one arena first: one per thread reserved 64 MiB each,
/// all of it counted as locked (497 MiB over /dev/fuse, 704 MiB over
/// io_uring, against about 80 MiB used).
fn lock_memory(cfg: &Config, ring_threads: usize) -> Result<(), Error> {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    use nix::sys::resource::{Resource, getrlimit};
    let need = memlock_need(cfg, ring_threads);
    let (limit, _) = getrlimit(Resource::RLIMIT_MEMLOCK)
        .map_err(|e| Error::runtime(format!("--mlock: getrlimit: {}", e.desc())))?;
    if !has_cap_ipc_lock() && limit < need {
        return Err(Error::runtime(format!(
            "--mlock: the locked-memory limit ('ulimit -l') is {} but the daemon needs about {}, and it lacks CAP_IPC_LOCK; raise the limit (LimitMEMLOCK= in a systemd unit), grant CAP_IPC_LOCK, or drop --mlock",
            format_size(limit),
            format_size(need)
        )));
    }
    if !raw::single_malloc_arena() {
        warn!(
            "--mlock: malloc kept its per-thread arenas; more memory than estimated may be locked"
        );
    }
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| {
        Error::runtime(format!(
            "--mlock: cannot lock memory: {}; raise the locked-memory limit ('ulimit -l'), grant CAP_IPC_LOCK, or drop --mlock",
            e.desc()
        ))
    })
}

/// Whether CAP_IPC_LOCK is in this process's effective set (as root in a
/// container it often is not): the one thing that lifts `ulimit -l`.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
    })
}

/// Memory the daemon will lock, rounded up to whole MiB: the queue, the
/// generators' batches, a 1 MiB read buffer and a 2 MiB stack per thread
/// (`ring_threads` io_uring threads among them), and slack for the program
/// itself.
fn memlock_need(cfg: &Config, ring_threads: usize) -> u64 {
    let threads = cfg.generators + cfg.fuse_threads + ring_threads + 4;
    let bytes = cfg.queue_capacity as u64
        + (cfg.generators * generator::BATCH_BYTES) as u64
        + threads as u64 * (3 << 20)
        + (32 << 20);
    bytes.next_multiple_of(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mounts::parse_mountinfo;

    /// A configuration with `generators` generators, a queue of
    /// `queue_capacity` and 2 `/dev/fuse` threads.
    fn config(generators: usize, queue_capacity: usize) -> Config {
        let mut cfg = Config::null_server(Path::new("/x"), TransportChoice::Auto, 2);
        (cfg.generators, cfg.queue_capacity) = (generators, queue_capacity);
        cfg
    }

    #[test]
    fn memlock_estimate() {
        // 16 MiB queue, 1 generator (64 KiB batch), 2 FUSE threads: 7
        // threads of 3 MiB, 32 MiB of slack; the batches round up to 1 MiB.
        let cfg = config(1, 16 << 20);
        assert_eq!(memlock_need(&cfg, 0), (16 + 1 + 21 + 32) << 20);
        // Over io_uring on 2 CPUs, 4 ring threads more.
        assert_eq!(memlock_need(&cfg, 4), (16 + 1 + 33 + 32) << 20);
        let cfg = config(4, 1 << 30);
        // 1 GiB + 256 KiB of batches + 10 threads of 3 MiB + 32 MiB.
        assert_eq!(memlock_need(&cfg, 0), (1024 + 1 + 30 + 32) << 20);
    }

    #[test]
    fn fuse_conf_parsing() {
        assert!(fuse_conf_allows_other("user_allow_other\n"));
        assert!(fuse_conf_allows_other(
            "# mount_max = 1000\n  user_allow_other  \n"
        ));
        assert!(!fuse_conf_allows_other(""));
        assert!(!fuse_conf_allows_other("#user_allow_other\n"));
        assert!(!fuse_conf_allows_other("user_allow_other_not\n"));
    }

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:50 / /mnt/pilfered ro,nosuid,nodev,noexec,noatime shared:60 - fuse.pilfered pilfered ro,user_id=0,group_id=0
99 22 0:51 / /mnt/other rw - tmpfs tmpfs rw
";

    fn occupant_of(path: &str, dead: bool) -> Result<Occupant, Error> {
        let entries = parse_mountinfo(MOUNTINFO);
        let entry = entries
            .iter()
            .rev()
            .find(|m| m.mount_point == Path::new(path));
        occupant(entry, || dead, path)
    }

    #[test]
    fn mount_planning_from_a_mountinfo_snapshot() {
        assert_eq!(occupant_of("/mnt/free", false), Ok(Occupant::Nothing));
        assert_eq!(
            occupant_of("/mnt/pilfered", true),
            Ok(Occupant::DeadPilfered)
        );
        assert_eq!(
            occupant_of("/mnt/pilfered", false),
            Err(Error::runtime(
                "--mount /mnt/pilfered: pilfered (fuse.pilfered) is already mounted there; unmount it first or choose another directory"
            ))
        );
        // A dead mount of another file system is not ours to clear.
        assert_eq!(
            occupant_of("/mnt/other", true),
            Err(Error::runtime(
                "--mount /mnt/other: tmpfs (tmpfs) is already mounted there; unmount it first or choose another directory"
            ))
        );
    }
}
