//! What `pilfered serve` is told to do: [`Config`], built and checked by
//! the command line (`cli`), and the defaults and limits of what it
//! configures.

use std::path::PathBuf;
use std::time::Duration;

use crate::engine::generator::Rounds;
use crate::engine::seeding::{Seed, SourceSpec};

/// Where the daemon mounts the FUSE file system by default; the clients
/// look for `bits` there.
pub const DEFAULT_MOUNT: &str = "/mnt/pilfered";
/// Where the daemon makes the named pipe by default; the clients fall back
/// to it.
pub const DEFAULT_FIFO: &str = "/tmp/pilferedbits";

/// Largest chunk accepted: bigger chunks only cost cache misses.
pub(crate) const MAX_CHUNK_SIZE: u64 = 16 << 20;
/// Largest queue accepted: the queue lives in memory.
pub(crate) const MAX_QUEUE_CAPACITY: u64 = 4 << 30;
/// Most threads of one kind (generators, `/dev/fuse` threads).
pub(crate) const MAX_THREADS: u16 = 64;

/// One generator per two CPUs: measured on 2 cores, one generator moved
/// more through the FIFO than two (1.5 against 1.2 GB/s), because readers,
/// the FIFO writer and the kernel's copies need a core too.
pub(crate) fn default_generators() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// How the FUSE file is to be served: asked once, by `--fuse-transport`,
/// and decided by the session (`fuse::Session::start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportChoice {
    /// io_uring if the kernel offers it, else `/dev/fuse`, with one line
    /// saying why.
    Auto,
    /// FUSE over io_uring, or refuse to start.
    IoUring,
    /// `/dev/fuse`.
    Legacy,
}

/// What the FUSE file serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bits {
    /// Random bytes from the queue: the product.
    Random,
    /// Zeros at once, and no generator: the benchmarks' null server, the
    /// ceiling of what FUSE allows (`internal::null_server`).
    Zeros,
}

/// Everything `serve` needs, checked by the command line.
#[derive(Debug)]
pub(crate) struct Config {
    /// `None` with `--no-fuse`.
    pub mount: Option<PathBuf>,
    /// `--nonempty`: a mount point with files in it is mounted over.
    pub nonempty: bool,
    /// `None` with `--no-fifo`.
    pub fifo: Option<PathBuf>,
    pub chunk_size: usize,
    pub queue_capacity: usize,
    /// `None`: use the system's pipe-max-size.
    pub pipe_size: Option<usize>,
    /// `--seed` or `--seed-file`: a fixed key, read by the preflight.
    pub seed: Option<Seed>,
    pub generators: usize,
    pub fuse_transport: TransportChoice,
    pub fuse_threads: usize,
    pub rounds: Rounds,
    /// `None`: 0600 for a FIFO we create (0640 with `group`), and leave a
    /// reused one alone (unless `group` is given).
    pub fifo_mode: Option<u32>,
    /// Mount with allow_other: `--allow-other`, or `--group`, whose files'
    /// modes then keep out everyone else (default_permissions).
    pub allow_other: bool,
    /// `--group`: the group to share the device with, looked up by the
    /// preflight.
    pub group: Option<String>,
    pub reseed_interval: Duration,
    pub reseed_bytes: u64,
    pub sources: Vec<SourceSpec>,
    pub mlock: bool,
    /// Log a throughput line this often (set by `-v`).
    pub report_every: Option<Duration>,
    pub bits: Bits,
    /// `--replace`: take the mount and the FIFO over from the daemon that
    /// serves these very paths, if one does.
    pub replace: bool,
}

impl Config {
    /// The benchmarks' null server at `mount`: zeros over `transport` with
    /// `threads` `/dev/fuse` threads, and nothing else.
    pub(crate) fn null_server(
        mount: &std::path::Path,
        transport: TransportChoice,
        threads: usize,
    ) -> Config {
        Config {
            mount: Some(mount.to_path_buf()),
            nonempty: false,
            fifo: None,
            chunk_size: 4096,
            queue_capacity: 4096,
            pipe_size: None,
            seed: None,
            generators: 0,
            fuse_transport: transport,
            fuse_threads: threads,
            rounds: Rounds::R20,
            fifo_mode: None,
            allow_other: false,
            group: None,
            reseed_interval: Duration::MAX,
            reseed_bytes: u64::MAX,
            sources: Vec::new(),
            mlock: false,
            report_every: None,
            bits: Bits::Zeros,
            replace: false,
        }
    }
}
