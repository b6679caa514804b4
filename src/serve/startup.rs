//! What the daemon starts besides its two interfaces, and what it says
//! when it has: its threads, the generators, and the one serving line.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::engine::generator::{self, Generator, ReseedPolicy};
use crate::engine::queue::ChunkQueue;
use crate::engine::seeding::{Key, Seed, Seeder};
use crate::engine::stats::Stats;
use crate::error::{Error, describe};
use crate::serve::config::Config;
use crate::serve::fifo;
use crate::serve::mounted::FusePart;
use crate::units::format_size;

/// Starts a thread named `name`, or says which could not be had.
pub(super) fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::runtime(format!("cannot start thread {name}: {}", describe(&e))))
}

/// Starts `cfg.generators` generator threads filling `queue`: keyed by
/// `seed` (seeded mode, which runs one), else each from `seeder`.
pub(super) fn generators(
    cfg: &Config,
    seed: Option<&Key>,
    seeder: &Arc<Seeder>,
    queue: &Arc<ChunkQueue>,
    stats: &Arc<Stats>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let policy = ReseedPolicy {
        interval: cfg.reseed_interval,
        bytes: cfg.reseed_bytes,
    };
    let mut threads = Vec::with_capacity(cfg.generators);
    for i in 0..cfg.generators {
        let generator = match seed {
            Some(key) => Generator::from_key(key, cfg.rounds),
            None => Generator::from_key_erasing(&seeder.key()?, cfg.rounds),
        };
        let (queue, stats, seeder) = (queue.clone(), stats.clone(), seeder.clone());
        threads.push(spawn(&format!("generator-{i}"), move || {
            generator.run(&queue, &stats, &seeder, policy)
        })?);
    }
    Ok(threads)
}

/// The one line that says what is being served, with which settings.
pub(super) fn serving_line(
    cfg: &Config,
    fuse: Option<&FusePart>,
    fifo: Option<&fifo::Writer>,
    seeder: &Seeder,
    vmfork: &str,
) -> String {
    let fuse = fuse.map_or("off".into(), |f| {
        let bits = f.path().join("bits");
        format!("{} ({})", bits.display(), f.transport())
    });
    let fifo = fifo.map_or("off".into(), |f| {
        let size = f.fifo().pipe_size().map(|n| format_size(n as u64));
        format!(
            "{} (pipe {}{})",
            f.fifo().path().display(),
            size.unwrap_or_default(),
            if f.fifo().held_by_systemd() {
                ", from systemd"
            } else {
                ""
            }
        )
    });
    // Seeded mode's generator never takes a key from the OS.
    let sources = match cfg.seed {
        Some(Seed::Argv(_)) => "the --seed key (predictable)".into(),
        Some(Seed::File(_)) => "the --seed-file key (predictable)".into(),
        None => seeder.describe(),
    };
    format!(
        "serving: FUSE {fuse}, FIFO {fifo}; chunk {}, queue {}, {} ChaCha{} ({}) generator(s) keyed from {sources}; VM-fork detection {vmfork}",
        format_size(cfg.chunk_size as u64),
        format_size(cfg.queue_capacity as u64),
        cfg.generators,
        cfg.rounds.count(),
        generator::backend(),
    )
}

/// The refusal of a queue that memory cannot hold.
pub(super) fn queue_oom(capacity: usize) -> Error {
    Error::runtime(format!(
        "--queue-capacity {}: not enough memory for the queue; choose a smaller --queue-capacity or raise the memory limit ('ulimit -v', or MemoryMax= in a systemd unit)",
        format_size(capacity as u64)
    ))
}
