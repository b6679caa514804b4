//! The named-pipe interface: preparing the FIFO, and the writer that moves
//! queued chunks into it with `writev` without ever blocking on a full pipe.
//!
//! The FIFO is held open read-write, so readers can come and go and never see
//! end-of-file while the daemon lives, and a write can never fail with EPIPE.
//! Each round the writer waits for the pipe to be writable, computes its free
//! space (`F_GETPIPE_SZ` minus `FIONREAD`), makes sure it holds that many
//! bytes taken from the queue, and writes them with one `writev`. What the
//! pipe did not take stays pending, and the next round continues from the
//! cursor inside the first pending chunk: no byte is written twice.
//!
//! The pipe's size is read again every round: a reader of the FIFO may
//! resize the pipe (`F_SETPIPE_SZ`) at any time, and a size read once would
//! leave the writer either spinning on a pipe it thinks full while poll says
//! writable, or holding more bytes than the pipe can take.
//!
//! After a VM fork the queue is wiped (see `queue`); the writer then wipes
//! its pending chunks from before and drains the bytes already in the pipe
//! (it holds the FIFO open read-write, so it can read them back), before it
//! writes anything else, and acknowledges through [`WipeHandle`].

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, Flock, FlockArg, OFlag, fcntl, openat};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, mkfifoat, unlinkat};
use zeroize::Zeroize;

use crate::engine::queue::{Chunk, ChunkQueue, Closed};
use crate::engine::stats::{self, Stats};
use crate::error::{Error, describe};
use crate::sys::raw;
use crate::sys::records::{self, Identity};
use crate::sys::trust::{self, Untrusted, WalkError};

/// Most iovecs one `writev` accepts (`IOV_MAX` on Linux).
pub(crate) const IOV_MAX: usize = 1024;

/// Mode of a FIFO we create, unless `--fifo-mode` says otherwise.
pub(crate) const DEFAULT_MODE: u32 = 0o600;

/// Largest pipe the kernel will make (`round_pipe_size` refuses more).
pub(crate) const KERNEL_MAX_PIPE_SIZE: usize = 1 << 31;

/// What sits at the `--fifo` path, found without following symlinks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing: the FIFO will be created.
    Missing,
    /// A FIFO we may reuse.
    Fifo { dev: u64, ino: u64 },
}

/// Where the FIFO goes, as [`inspect`] found it: the directory it lives in
/// (open, and checked with [`trust::walk`]), its name there, and what is
/// there now. Everything later happens relative to that open directory.
#[derive(Debug)]
pub(crate) struct Spot {
    dir: trust::Dir,
    name: OsString,
    pub existing: Existing,
}

impl Spot {
    /// The FIFO's path, absolute and free of symlinks.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }
}

/// Checks the `--fifo` path without changing anything.
///
/// Every directory on the way must be ours or root's and not writable by
/// others unless sticky, and a FIFO is reused only if it belongs to us and
/// nobody else can write to it: otherwise another user could redirect the
/// FIFO or feed chosen bytes to our readers.
pub(crate) fn inspect(path: &Path) -> Result<Spot, Error> {
    let shown = path.display();
    let name = match path.file_name() {
        Some(name) => name.to_os_string(),
        None => return Err(Error::usage(format!("--fifo {shown}: not a file name"))),
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = trust::walk(parent).map_err(|e| {
        let why = match e {
            WalkError::Missing(..) => format!("directory {e}"),
            e => e.to_string(),
        };
        Error::usage(format!("--fifo {shown}: {why}"))
    })?;
    let st = match fstatat(&dir.fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => {
            return Ok(Spot {
                dir,
                name,
                existing: Existing::Missing,
            });
        }
        Err(e) => return Err(Error::usage(format!("--fifo {shown}: {}", e.desc()))),
    };
    let what = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFIFO => None,
        SFlag::S_IFLNK => Some("is a symbolic link"),
        SFlag::S_IFREG => Some("is a regular file"),
        SFlag::S_IFDIR => Some("is a directory"),
        SFlag::S_IFSOCK => Some("is a socket"),
        _ => Some("is a device"),
    };
    if let Some(what) = what {
        return Err(Error::usage(format!(
            "--fifo {shown}: {what}, not a FIFO; refusing to touch it"
        )));
    }
    match trust::writers(st.st_uid, st.st_mode, trust::me()) {
        Ok(()) if st.st_uid == trust::me() => {}
        // A FIFO we cannot chmod is not ours to reuse, root's included.
        Ok(()) | Err(Untrusted::Owner(_)) => {
            return Err(Error::usage(format!(
                "--fifo {shown}: FIFO is owned by uid {}, not by us (uid {}); remove it or choose another path",
                st.st_uid,
                trust::me()
            )));
        }
        Err(Untrusted::Mode(mode)) => {
            return Err(Error::usage(format!(
                "--fifo {shown}: FIFO is writable by other users (mode {mode:04o}), who could inject chosen bytes; remove it or run 'chmod go-w' on it"
            )));
        }
    }
    Ok(Spot {
        dir,
        name,
        existing: Existing::Fifo {
            dev: st.st_dev,
            ino: st.st_ino,
        },
    })
}

/// The open FIFO, locked (flock) against a second daemon. Dropping it
/// closes it and, if we created it (in this run, or a crashed pilfered did),
/// removes it.
#[derive(Debug)]
pub(crate) struct Fifo {
    file: Flock<File>,
    spot: Spot,
    path: PathBuf,
    /// `(dev, ino)` of the FIFO we created, to remove on drop.
    created: Option<(u64, u64)>,
}

impl Fifo {
    /// Creates or reuses the FIFO [`inspect`] found, opens it read-write and
    /// non-blocking, and grows its buffer towards `pipe_size`. A FIFO we
    /// create gets `mode` (default [`DEFAULT_MODE`]); a reused one gets it
    /// only if `mode` is given.
    pub(crate) fn open(spot: Spot, mode: Option<u32>, pipe_size: usize) -> Result<Fifo, Error> {
        let path = spot.path();
        let shown = path.display().to_string();
        let (file, made) = make_and_open(&spot, &shown)?;
        let undo = |msg: String| {
            if made {
                let _ = unlinkat(
                    &spot.dir.fd,
                    spot.name.as_os_str(),
                    UnlinkatFlags::NoRemoveDir,
                );
            }
            Error::runtime(msg)
        };
        let meta = file
            .metadata()
            .map_err(|e| undo(format!("--fifo {shown}: {}", describe(&e))))?;
        let (dev, ino) = (meta.dev(), meta.ino());
        // Two daemons feeding one FIFO would each remove it from under the
        // other on exit; the lock lives as long as the daemon (crash included).
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(Error::usage(format!(
                    "--fifo {shown}: another pilfered is already serving this FIFO; stop it or choose another path"
                )));
            }
            Err((_, e)) => return Err(undo(format!("--fifo {shown}: flock: {}", e.desc()))),
        };
        // Ours if we made it now, or a pilfered that crashed made it.
        let id = Identity::of(file.as_fd());
        let ours =
            made || id.is_some_and(|id| records::was_created(records::Kind::Fifo, &path, id));
        let fifo = Fifo {
            created: ours.then_some((dev, ino)),
            file,
            spot,
            path,
        };
        // mkfifo's mode is filtered by the umask; set exactly what was asked,
        // through the open descriptor so that no other path can be affected.
        let mode = mode.or(made.then_some(DEFAULT_MODE));
        if let Some(mode) = mode {
            fifo.file
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::runtime(format!("--fifo {shown}: chmod: {}", describe(&e))))?;
        }
        if made && let Some(id) = id {
            records::note(records::Kind::Fifo, &fifo.path, id);
        }
        fifo.grow(pipe_size)?;
        Ok(fifo)
    }

    /// The FIFO's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The pipe's current buffer size.
    pub(crate) fn pipe_size(&self) -> Result<usize, Error> {
        fcntl(self.file.as_fd(), FcntlArg::F_GETPIPE_SZ)
            .map(|n| n as usize)
            .map_err(|e| {
                Error::runtime(format!(
                    "F_GETPIPE_SZ on {}: {}",
                    self.path.display(),
                    e.desc()
                ))
            })
    }

    fn grow(&self, want: usize) -> Result<(), Error> {
        if self.pipe_size()? >= want {
            return Ok(());
        }
        let want_c = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
        match fcntl(self.file.as_fd(), FcntlArg::F_SETPIPE_SZ(want_c)) {
            Ok(_) => Ok(()),
            Err(Errno::EPERM) => {
                let max = system_pipe_max_size().unwrap_or(0);
                warn!(
                    "--pipe-size {want}: above the system limit of {max} bytes (/proc/sys/fs/pipe-max-size), which only a privileged process may exceed; using {max}"
                );
                if max > self.pipe_size()? {
                    let max_c = libc::c_int::try_from(max).unwrap_or(libc::c_int::MAX);
                    let _ = fcntl(self.file.as_fd(), FcntlArg::F_SETPIPE_SZ(max_c));
                }
                Ok(())
            }
            Err(e) => {
                warn!(
                    "could not grow the pipe buffer of {} to {want} bytes ({}); keeping {}",
                    self.path.display(),
                    e.desc(),
                    self.pipe_size()?
                );
                Ok(())
            }
        }
    }
}

/// Makes the FIFO if [`inspect`] found nothing, and opens it read-write and
/// non-blocking, checking it is the FIFO that was found or made. Returns it
/// and whether we made it (then it is removed again on failure).
fn make_and_open(spot: &Spot, shown: &str) -> Result<(File, bool), Error> {
    let (dir, name) = (&spot.dir.fd, spot.name.as_os_str());
    let made = spot.existing == Existing::Missing;
    if made {
        mkfifoat(dir, name, Mode::from_bits_truncate(DEFAULT_MODE)).map_err(|e| {
            Error::runtime(format!("--fifo {shown}: cannot create FIFO: {}", e.desc()))
        })?;
    }
    let undo = |msg: String| {
        if made {
            let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        }
        Error::runtime(msg)
    };
    let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = openat(dir, name, flags, Mode::empty())
        .map(File::from)
        .map_err(|e| undo(format!("--fifo {shown}: cannot open: {}", e.desc())))?;
    let meta = file
        .metadata()
        .map_err(|e| undo(format!("--fifo {shown}: {}", describe(&e))))?;
    let same = match spot.existing {
        Existing::Fifo { dev, ino } => meta.dev() == dev && meta.ino() == ino,
        Existing::Missing => meta.file_type().is_fifo(),
    };
    if !same {
        return Err(undo(format!(
            "--fifo {shown}: the path changed while it was being opened; refusing to use it"
        )));
    }
    Ok((file, made))
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let Some((dev, ino)) = self.created else {
            return;
        };
        // Remove it only if its name still holds the FIFO we made.
        let (dir, name) = (&self.spot.dir.fd, self.spot.name.as_os_str());
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_dev == dev && st.st_ino == ino => {
                match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => records::forget(&self.path),
                    Err(e) => warn!(
                        "could not remove FIFO {}: {}",
                        self.path.display(),
                        e.desc()
                    ),
                }
            }
            _ => debug!(
                "FIFO {} was replaced; leaving the path alone",
                self.path.display()
            ),
        }
    }
}

/// The FIFO with its writer thread running: see [`serve`].
#[derive(Debug)]
pub(crate) struct Writer {
    fifo: Arc<Fifo>,
    stop: Arc<EventFd>,
    wipe: WipeHandle,
    thread: JoinHandle<()>,
}

/// What the writer wiped after a VM fork.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wiped {
    /// Pending bytes taken from the queue and not yet written.
    pub pending: usize,
    /// Bytes drained from the pipe.
    pub pipe: usize,
}

#[derive(Debug, Default)]
struct WipeAck {
    /// The last queue epoch the writer has dealt with.
    epoch: u64,
    wiped: Wiped,
    /// The writer has stopped.
    ended: bool,
}

/// Asks the FIFO writer to drop everything from before a VM fork, and waits
/// until it has.
#[derive(Debug, Clone)]
pub(crate) struct WipeHandle(Arc<WipeSync>);

#[derive(Debug)]
struct WipeSync {
    /// Wakes the writer from its poll.
    wake: EventFd,
    ack: Mutex<WipeAck>,
    acked: Condvar,
}

impl WipeHandle {
    fn new() -> Result<WipeHandle, Error> {
        let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| Error::runtime(format!("eventfd: {}", e.desc())))?;
        Ok(WipeHandle(Arc::new(WipeSync {
            wake,
            ack: Mutex::new(WipeAck::default()),
            acked: Condvar::new(),
        })))
    }

    /// After the queue moved to `epoch` (see `ChunkQueue::wipe`): wakes the
    /// writer and waits up to `limit` until it has wiped its pending bytes
    /// and drained the pipe. `None` if it did not answer in time; once the
    /// writer has stopped, what it last reported.
    pub(crate) fn wipe(&self, epoch: u64, limit: Duration) -> Option<Wiped> {
        let _ = self.0.wake.write(1);
        let deadline = Instant::now() + limit;
        let mut ack = self.0.ack.lock().unwrap_or_else(|e| e.into_inner());
        while ack.epoch < epoch && !ack.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            ack = self
                .0
                .acked
                .wait_timeout(ack, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Some(ack.wiped)
    }

    fn acknowledge(&self, epoch: u64, wiped: Wiped) {
        let mut ack = self.0.ack.lock().unwrap_or_else(|e| e.into_inner());
        ack.epoch = epoch;
        ack.wiped = wiped;
        self.0.acked.notify_all();
    }

    fn ended(&self) {
        self.0.ack.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
        self.0.acked.notify_all();
    }
}

impl Writer {
    /// Starts moving bytes from `queue` into `fifo` on a thread of its own.
    /// Should the writer stop by itself (only an unexpected pipe error does
    /// that), it hands its result to `on_end`.
    pub(crate) fn start(
        fifo: Fifo,
        queue: Arc<ChunkQueue>,
        stats: Arc<Stats>,
        on_end: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) -> Result<Writer, Error> {
        let fifo = Arc::new(fifo);
        let stop =
            Arc::new(EventFd::new().map_err(|e| Error::runtime(format!("eventfd: {}", e.desc())))?);
        let wipe = WipeHandle::new()?;
        let (f, s, w) = (fifo.clone(), stop.clone(), wipe.clone());
        let thread = std::thread::Builder::new()
            .name("fifo-writer".into())
            .spawn(move || {
                let result = serve(&f, &queue, &stats, &s, &w);
                w.ended();
                on_end(result);
            })
            .map_err(|e| {
                Error::runtime(format!("cannot start the FIFO writer: {}", describe(&e)))
            })?;
        Ok(Writer {
            fifo,
            stop,
            wipe,
            thread,
        })
    }

    /// The handle that asks the writer to wipe after a VM fork.
    pub(crate) fn wipe_handle(&self) -> WipeHandle {
        self.wipe.clone()
    }

    /// The FIFO being served.
    pub(crate) fn fifo(&self) -> &Fifo {
        &self.fifo
    }

    /// Stops the writer and waits for it; then the FIFO is closed, and
    /// removed if we created it.
    pub(crate) fn stop(self) {
        let _ = self.stop.write(1);
        let _ = self.thread.join();
    }
}

/// `/proc/sys/fs/pipe-max-size`: the largest pipe an unprivileged process
/// may ask for.
pub(crate) fn system_pipe_max_size() -> io::Result<usize> {
    let text = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::other("unreadable /proc/sys/fs/pipe-max-size"))
}

/// Reads (and wipes) every byte buffered in the pipe; returns how many.
fn drain_pipe(fd: std::os::fd::BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut buf = [0u8; 16 << 10];
    let mut total = 0;
    let result = loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => break Ok(total),
            Ok(n) => total += n,
            Err(Errno::EINTR) => continue,
            Err(e) => break Err(e),
        }
    };
    buf.zeroize();
    result
}

/// Fills `iov` with slices over the unread bytes of `pending`, in order,
/// covering at most `free` bytes and at most `iov.len()` chunks. Returns how
/// many iovecs were filled and how many bytes they cover.
pub(crate) fn plan<'a>(
    pending: &'a VecDeque<Chunk>,
    free: usize,
    iov: &mut [IoSlice<'a>],
) -> (usize, usize) {
    let mut bytes = 0;
    let mut count = 0;
    for chunk in pending {
        if bytes == free || count == iov.len() {
            break;
        }
        let unread = chunk.unread();
        let n = unread.len().min(free - bytes);
        if n == 0 {
            continue;
        }
        iov[count] = IoSlice::new(&unread[..n]);
        count += 1;
        bytes += n;
    }
    (count, bytes)
}

/// Marks the first `written` pending bytes as handed out: fully written chunks
/// move to `done`, and the first remaining chunk keeps a cursor at the first
/// unwritten byte.
///
/// # Panics
/// If `written` exceeds the pending bytes.
pub(crate) fn advance(pending: &mut VecDeque<Chunk>, mut written: usize, done: &mut Vec<Chunk>) {
    while written > 0 {
        let front = pending.front_mut().expect("wrote more than was pending");
        let n = front.len().min(written);
        front.consume(n);
        written -= n;
        if front.is_empty() {
            done.push(pending.pop_front().expect("front exists"));
        }
    }
}

/// Moves bytes from `queue` into the FIFO until `stop` is signalled or the
/// queue is closed. Only an unexpected error from the pipe ends it early.
fn serve(
    fifo: &Fifo,
    queue: &ChunkQueue,
    stats: &Stats,
    stop: &EventFd,
    wipe: &WipeHandle,
) -> Result<(), Error> {
    let fd = fifo.file.as_fd();
    let fail = |what: &str, e: Errno| {
        Error::runtime(format!(
            "{what} on FIFO {}: {}",
            fifo.path.display(),
            e.desc()
        ))
    };
    let mut pending = Pending::new(queue.epoch());
    loop {
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLOUT),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(wipe.0.wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(fail("poll", e)),
        }
        if fds[1].any().unwrap_or(false) {
            return Ok(());
        }
        if fds[2].any().unwrap_or(false) {
            let _ = wipe.0.wake.read();
        }
        pending
            .after_fork(queue, stats, fd, wipe)
            .map_err(|e| fail("read", e))?;
        if !fds[0].any().unwrap_or(false) {
            continue;
        }
        // Read every round: readers may resize the pipe at any time.
        let pipe_size = fifo.pipe_size()?;
        let unread = raw::fionread(fd).map_err(|e| fail("FIONREAD", e))?;
        let free = pipe_size.saturating_sub(unread);
        if free == 0 {
            continue;
        }
        if pending.bytes < free {
            match queue.take_chunks(free - pending.bytes, &mut pending.chunks) {
                Ok(n) => pending.bytes += n,
                Err(Closed) => return Ok(()),
            }
        }
        // The queue may have been wiped while we waited for it.
        pending
            .after_fork(queue, stats, fd, wipe)
            .map_err(|e| fail("read", e))?;
        pending
            .write(fd, free, queue, stats)
            .map_err(|e| fail("writev", e))?;
    }
}

/// The chunks the writer has taken from the queue and not yet written.
struct Pending {
    chunks: VecDeque<Chunk>,
    /// Unread bytes in `chunks`.
    bytes: usize,
    /// Fully written chunks, to recycle.
    done: Vec<Chunk>,
    /// The queue's epoch these bytes belong to.
    epoch: u64,
}

impl Pending {
    fn new(epoch: u64) -> Pending {
        Pending {
            chunks: VecDeque::new(),
            bytes: 0,
            done: Vec::new(),
            epoch,
        }
    }

    /// Before anything is written: drops (wipes) what predates a VM fork,
    /// and the pipe's contents with it.
    fn after_fork(
        &mut self,
        queue: &ChunkQueue,
        stats: &Stats,
        fd: BorrowedFd<'_>,
        wipe: &WipeHandle,
    ) -> Result<(), Errno> {
        let now = queue.epoch();
        if now == self.epoch {
            return Ok(());
        }
        let mut wiped = Wiped::default();
        // Pending chunks are in epoch order: the old ones come first.
        let mut old = Vec::new();
        while let Some(mut chunk) = self.chunks.pop_front_if(|c| c.epoch() != now) {
            wiped.pending += chunk.len();
            chunk.wipe();
            old.push(chunk);
        }
        self.bytes -= wiped.pending;
        queue.recycle(old);
        wiped.pipe = drain_pipe(fd)?;
        stats::add(&stats.bytes_discarded, (wiped.pending + wiped.pipe) as u64);
        self.epoch = now;
        wipe.acknowledge(now, wiped);
        Ok(())
    }

    /// Writes what fits in `free` bytes of the pipe with one `writev`, and
    /// keeps the cursor where the pipe stopped taking.
    fn write(
        &mut self,
        fd: BorrowedFd<'_>,
        free: usize,
        queue: &ChunkQueue,
        stats: &Stats,
    ) -> Result<(), Errno> {
        let mut iov = [IoSlice::new(&[]); IOV_MAX];
        let (count, planned) = plan(&self.chunks, free, &mut iov);
        let written = match nix::sys::uio::writev(fd, &iov[..count]) {
            Ok(n) => n,
            // The pipe filled up between poll and writev, or a signal came.
            Err(Errno::EAGAIN | Errno::EINTR) => 0,
            Err(e) => return Err(e),
        };
        stats::add(&stats.fifo_writev_calls, 1);
        if written < planned {
            stats::add(&stats.fifo_partial_writes, 1);
        }
        stats::add(&stats.bytes_served_fifo, written as u64);
        advance(&mut self.chunks, written, &mut self.done);
        self.bytes -= written;
        if !self.done.is_empty() {
            queue.recycle(self.done.drain(..));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: &[u8], consumed: usize) -> Chunk {
        let mut c = Chunk::with_bytes(bytes);
        c.consume(consumed);
        c
    }

    fn pending(sizes: &[usize]) -> (VecDeque<Chunk>, Vec<u8>) {
        let mut all = Vec::new();
        let mut q = VecDeque::new();
        for &n in sizes {
            let bytes: Vec<u8> = (0..n).map(|i| (all.len() + i) as u8).collect();
            all.extend_from_slice(&bytes);
            q.push_back(chunk(&bytes, 0));
        }
        (q, all)
    }

    fn planned_bytes(p: &VecDeque<Chunk>, free: usize, max_iov: usize) -> (usize, Vec<u8>) {
        let mut iov = vec![IoSlice::new(&[]); max_iov];
        let (count, bytes) = plan(p, free, &mut iov);
        let flat: Vec<u8> = iov[..count]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(flat.len(), bytes);
        (count, flat)
    }

    #[test]
    fn plan_covers_exactly_the_free_space() {
        let (p, all) = pending(&[100, 100, 100]);
        assert_eq!(planned_bytes(&p, 250, 8), (3, all[..250].to_vec()));
        assert_eq!(planned_bytes(&p, 100, 8), (1, all[..100].to_vec()));
        assert_eq!(planned_bytes(&p, 1, 8), (1, all[..1].to_vec()));
        assert_eq!(planned_bytes(&p, 0, 8), (0, vec![]));
        // More free space than pending: everything, no more.
        assert_eq!(planned_bytes(&p, 10_000, 8), (3, all.clone()));
    }

    #[test]
    fn plan_respects_iov_limit() {
        let (p, all) = pending(&[10; 5]);
        assert_eq!(planned_bytes(&p, 1000, 2), (2, all[..20].to_vec()));
    }

    #[test]
    fn plan_starts_at_the_cursor() {
        let (mut p, all) = pending(&[100, 100]);
        p[0].consume(30);
        assert_eq!(planned_bytes(&p, 120, 8), (2, all[30..150].to_vec()));
    }

    #[test]
    fn advance_keeps_a_cursor_and_releases_written_chunks() {
        let (mut p, all) = pending(&[100, 100, 100]);
        let mut done = Vec::new();
        advance(&mut p, 150, &mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].unread(), &all[150..200]);
        advance(&mut p, 50, &mut done);
        assert_eq!(done.len(), 2);
        assert_eq!(p[0].unread(), &all[200..]);
        advance(&mut p, 0, &mut done);
        assert_eq!(p[0].unread(), &all[200..]);
    }

    #[test]
    #[should_panic(expected = "wrote more than was pending")]
    fn advance_past_pending_panics() {
        let (mut p, _) = pending(&[10]);
        advance(&mut p, 11, &mut Vec::new());
    }

    /// Any sequence of partial writes, each of any size the pipe allows,
    /// concatenates to the pending bytes exactly once and in order.
    #[test]
    fn partial_writes_never_replay_or_skip() {
        use proptest::prelude::*;
        proptest!(|(sizes in prop::collection::vec(1usize..300, 1..20),
                    writes in prop::collection::vec((0usize..700, 0.0f64..=1.0), 1..60),
                    max_iov in 1usize..6)| {
            let (mut p, all) = pending(&sizes);
            let mut out = Vec::new();
            let mut done = Vec::new();
            for (free, fraction) in writes {
                let (_, planned) = planned_bytes(&p, free, max_iov);
                // The kernel may take any prefix of what was offered.
                let written = (planned.len() as f64 * fraction) as usize;
                out.extend_from_slice(&planned[..written]);
                advance(&mut p, written, &mut done);
            }
            let rest: usize = p.iter().map(Chunk::len).sum();
            prop_assert_eq!(out.len() + rest, all.len());
            prop_assert_eq!(&out[..], &all[..out.len()]);
            prop_assert_eq!(done.len() + p.len(), sizes.len());
        });
    }
}
