//! Rings of command entries shared with the kernel, as FUSE over io_uring
//! uses them (`IORING_OP_URING_CMD` on a device, 128-byte entries): one
//! io_uring per thread, holding entries for one queue of the device. What
//! the entries mean is the caller's, told once as an [`EntryFormat`]
//! (FUSE's is `serve::fuse::proto::RING_ENTRY`); this module knows rings,
//! buffers and who owns them, not FUSE.
//!
//! A ring entry is two buffers the kernel reads and writes: a header buffer
//! and a payload buffer. The format's `register` command hands an entry to
//! the kernel; its completion is the first request. Its `commit` command
//! hands back the reply and the entry in one step, and completes with the
//! next request.
//!
//! # Who owns a buffer
//! From submission to completion an entry's buffers belong to the kernel,
//! which writes a request into them whenever one comes (in this thread's
//! task work, which may run at any return to user space). This module
//! therefore never holds a reference into them then: [`Fetched`] borrows the
//! ring for exactly the time between an entry's completion and its commit,
//! and only then are the buffers read and written, through slices made
//! fresh from their mappings.
//!
//! The buffers are mappings of their own (`sys::memory`), unmapped only
//! once the kernel has released every entry (a completion with `ENOTCONN`,
//! when the connection ends) or never had one. Otherwise they are left
//! mapped until the process exits, rather than freed under the kernel.
//!
//! # Wiping
//! The payload buffer carries the random bytes of a reply, and is wiped of
//! them as soon as the kernel has taken them, as `/dev/fuse`'s reply buffer
//! is. The ring is made with `IORING_SETUP_DEFER_TASKRUN`, so the kernel
//! copies a new request into an entry only inside this thread's own
//! `io_uring_enter` with `IORING_ENTER_GETEVENTS`: a commit is submitted on
//! its own (the kernel copies the reply out, and may hand over a waiting
//! request at once), and if the entry did not come straight back, it sits
//! untouched in the kernel and is wiped before the wait for the next
//! request. If it did come back, what the reply wrote beyond the new
//! request's payload is wiped before the request is read. The buffers are
//! wiped wholly when the ring is dropped.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{Ordering, fence};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use zeroize::Zeroize;

use crate::sys::memory::{Mapping, page_size};

/// What a protocol's ring entries are, as far as the ring must know: the
/// two commands, and where in the header buffer (and in the command's 80
/// bytes) the fields the ring reads and writes itself are. Offsets are in
/// bytes; integers are in the host's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryFormat {
    /// The header buffer's length.
    pub(crate) header_len: usize,
    /// The command that hands an entry to the kernel (with the buffers'
    /// two iovecs), and the one that hands back a reply and the entry.
    pub(crate) register: u32,
    pub(crate) commit: u32,
    /// The areas of the header buffer that make a request's header, in
    /// order, as [`Fetched::copy_request`] copies them (the payload after).
    pub(crate) request: [(usize, usize); 2],
    /// Where the reply's own header goes.
    pub(crate) reply_header: usize,
    /// The `u64` the kernel names the request by, to commit it with.
    pub(crate) commit_id: usize,
    /// The `u32` payload length, of the request and then of the reply.
    pub(crate) payload_len: usize,
    /// Where the command carries the commit ID (`u64`) and the queue
    /// (`u16`).
    pub(crate) command_commit_id: usize,
    pub(crate) command_queue: usize,
}

/// One ring entry: its buffers, and where it stands.
#[derive(Debug)]
struct Entry {
    header: Mapping,
    payload: Mapping,
    /// The `iovec`s of `FUSE_IO_URING_CMD_REGISTER` (read at submission).
    iov: [libc::iovec; 2],
    /// Whether the kernel holds the entry (submitted, not completed).
    in_kernel: bool,
    /// The kernel released it for good (the connection ended).
    released: bool,
    /// Payload bytes the last reply wrote, to wipe when it comes back.
    dirty: usize,
    /// The last command submitted for it, and its commit ID, to submit
    /// again if the kernel asks (`EINTR`, `EAGAIN`).
    last: (u32, u64),
}

// SAFETY: the raw pointers in `iov` point to the mappings this entry owns
// alone; moving it to another thread moves that ownership.
unsafe impl Send for Entry {}

/// An io_uring of FUSE ring entries, all for queue `qid` of one connection.
pub(crate) struct Ring {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    format: EntryFormat,
    qid: u16,
    entries: Vec<Entry>,
    /// Completions taken from the queue (to see whether a commit's entry
    /// came straight back) and not yet handled.
    pending: std::collections::VecDeque<cqueue::Entry>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("qid", &self.qid)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// How an entry came back without a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The connection ended (`ENOTCONN`): every entry is released.
    Disconnected,
    /// The wait was interrupted by a signal; the entries wait on.
    Interrupted,
    /// [`Ring::next_now`] found no request.
    Idle,
}

impl Ring {
    /// A ring of `depth` entries for queue `qid` of the FUSE connection
    /// `fuse`, each with a payload buffer of `payload` bytes (at least the
    /// connection's largest request or reply). Nothing is registered yet.
    pub(crate) fn new(
        fuse: BorrowedFd<'_>,
        format: EntryFormat,
        qid: u16,
        depth: usize,
        payload: usize,
    ) -> io::Result<Ring> {
        let slots = u32::try_from(depth * 2).map_err(|_| io::ErrorKind::InvalidInput)?;
        // Task work (the kernel's copy of a request into an entry) only in
        // this thread's waits: see the module docs on wiping.
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(slots)?;
        ring.submitter().register_files(&[fuse.as_raw_fd()])?;
        let mut entries = Vec::with_capacity(depth);
        for _ in 0..depth {
            let header = Mapping::new(format.header_len.next_multiple_of(page_size()))?;
            let payload = Mapping::new(payload)?;
            let iov = [
                libc::iovec {
                    iov_base: header.as_mut_ptr().cast(),
                    iov_len: header.len(),
                },
                libc::iovec {
                    iov_base: payload.as_mut_ptr().cast(),
                    iov_len: payload.len(),
                },
            ];
            entries.push(Entry {
                header,
                payload,
                iov,
                in_kernel: false,
                released: false,
                dirty: 0,
                last: (format.register, 0),
            });
        }
        Ok(Ring {
            ring,
            format,
            qid,
            entries,
            pending: std::collections::VecDeque::new(),
        })
    }

    /// Hands every entry to the kernel (`FUSE_IO_URING_CMD_REGISTER`). The
    /// kernel refuses at once, during the submission, if it refuses at all
    /// (io_uring off for this connection, a payload buffer too small, a
    /// queue it does not have): that is the error returned. On success the
    /// entries wait in the kernel for requests.
    pub(crate) fn register(&mut self) -> io::Result<()> {
        for index in 0..self.entries.len() {
            self.submit_entry(index, self.format.register, 0)?;
        }
        self.ring.submit()?;
        // An immediate refusal is already in the completion queue.
        let refused = self.ring.completion().find(|c| c.result() < 0);
        match refused {
            Some(c) => {
                let index = usize::try_from(c.user_data()).unwrap_or(usize::MAX);
                if let Some(e) = self.entries.get_mut(index) {
                    e.in_kernel = false;
                }
                Err(io::Error::from_raw_os_error(-c.result()))
            }
            None => Ok(()),
        }
    }

    /// Waits for the next request on any entry. A completion with `EINTR` or
    /// `EAGAIN` is handed back to the kernel and waited for again;
    /// `ENOTCONN` means the connection ended.
    pub(crate) fn next(&mut self) -> io::Result<Result<Fetched<'_>, Ended>> {
        self.next_with(true)
    }

    /// The next request if the kernel has one for us now (running the
    /// task work that hands one over), without waiting.
    pub(crate) fn next_now(&mut self) -> io::Result<Result<Fetched<'_>, Ended>> {
        self.next_with(false)
    }

    fn next_with(&mut self, block: bool) -> io::Result<Result<Fetched<'_>, Ended>> {
        loop {
            let completion = self
                .pending
                .pop_front()
                .or_else(|| self.ring.completion().next());
            let Some(c) = completion else {
                let waited = if block {
                    self.ring.submit_and_wait(1)
                } else {
                    let now = types::Timespec::new();
                    let args = types::SubmitArgs::new().timespec(&now);
                    match self.ring.submitter().submit_with_args(1, &args) {
                        Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
                            if self.ring.completion().is_empty() {
                                return Ok(Err(Ended::Idle));
                            }
                            continue;
                        }
                        other => other,
                    }
                };
                match waited {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                        return Ok(Err(Ended::Interrupted));
                    }
                    Err(e) => return Err(e),
                }
                continue;
            };
            let index = usize::try_from(c.user_data())
                .ok()
                .filter(|&i| i < self.entries.len())
                .ok_or_else(|| io::Error::other("a completion for no ring entry"))?;
            self.entries[index].in_kernel = false;
            match -c.result() {
                0 => {}
                libc::EINTR | libc::EAGAIN => {
                    self.resubmit(index)?;
                    continue;
                }
                libc::ENOTCONN => {
                    self.entries[index].released = true;
                    if self.entries.iter().all(|e| e.released || !e.in_kernel) {
                        for e in &mut self.entries {
                            e.released = true;
                        }
                        return Ok(Err(Ended::Disconnected));
                    }
                    continue;
                }
                errno => return Err(io::Error::from_raw_os_error(errno)),
            }
            // The kernel's writes into the buffers come before its
            // completion, which the queue's acquire load observed.
            fence(Ordering::Acquire);
            let (at_id, at_len) = (self.format.commit_id, self.format.payload_len);
            let entry = &mut self.entries[index];
            let header = entry.header.bytes();
            let commit_id =
                u64::from_ne_bytes(header[at_id..at_id + 8].try_into().expect("8 bytes"));
            let payload_len =
                u32::from_ne_bytes(header[at_len..at_len + 4].try_into().expect("4 bytes"));
            let payload_len = usize::try_from(payload_len)
                .unwrap_or(usize::MAX)
                .min(entry.payload.len());
            // What the last reply left beyond this request's payload.
            let dirty = std::mem::take(&mut entry.dirty);
            if dirty > payload_len {
                entry.payload.bytes()[payload_len..dirty].zeroize();
            }
            return Ok(Ok(Fetched {
                ring: self,
                index,
                commit_id,
                payload_len,
            }));
        }
    }

    /// Submits the entry's last command again (after `EINTR`/`EAGAIN`):
    /// registering a second time would make the kernel a second entry over
    /// the same buffers.
    fn resubmit(&mut self, index: usize) -> io::Result<()> {
        let (op, commit_id) = self.entries[index].last;
        self.submit_entry(index, op, commit_id)
    }

    /// Queues command `op` for entry `index`: an `IORING_OP_URING_CMD` on
    /// the connection (fixed file 0) carrying `fuse_uring_cmd_req { flags:
    /// 0, commit_id, qid }`, and for REGISTER the entry's two iovecs.
    fn submit_entry(&mut self, index: usize, op: u32, commit_id: u64) -> io::Result<()> {
        let mut cmd = [0u8; 80];
        let (at_id, at_queue) = (self.format.command_commit_id, self.format.command_queue);
        cmd[at_id..at_id + 8].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[at_queue..at_queue + 2].copy_from_slice(&self.qid.to_ne_bytes());
        let register = op == self.format.register;
        let entry = &mut self.entries[index];
        let mut sqe = opcode::UringCmd80::new(types::Fixed(0), op).cmd(cmd);
        if register {
            sqe = sqe.addr(Some(std::ptr::addr_of!(entry.iov) as u64));
        }
        let mut sqe = sqe.build().user_data(index as u64);
        if register {
            // REGISTER also needs `len = 2` (two iovecs), which
            // `UringCmd80` leaves at 0.
            set_sqe_len(&mut sqe, 2);
        }
        // SAFETY: the SQE names buffers (the iovecs and the mappings they
        // point to) that live as long as this ring: they are unmapped only
        // when no entry is in the kernel (see Drop).
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("the io_uring submission queue is full"))?;
        entry.in_kernel = true;
        entry.last = (op, commit_id);
        Ok(())
    }
}

/// Sets the `len` field of an SQE, which the `io-uring` crate's
/// `UringCmd80` does not expose.
fn set_sqe_len(sqe: &mut squeue::Entry128, len: u32) {
    const LEN_OFFSET: usize = 24;
    // SAFETY: `Entry128` is `repr(C)`: the 64-byte `io_uring_sqe` followed
    // by its 64-byte command tail, 128 bytes of plain integers in which
    // every bit pattern is valid; `len` is the `u32` at offset 24 of
    // `io_uring_sqe` (include/uapi/linux/io_uring.h), within the first 64.
    unsafe {
        let bytes = std::ptr::from_mut(sqe).cast::<u8>();
        std::ptr::write_unaligned(bytes.add(LEN_OFFSET).cast::<u32>(), len);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let kernel_holds_one = self.entries.iter().any(|e| e.in_kernel && !e.released);
        for mut e in self.entries.drain(..) {
            if kernel_holds_one {
                // Freeing memory the kernel may still write into would let
                // a request land in whatever is mapped there next: the
                // mappings stay until the process ends.
                e.header.leak();
                e.payload.leak();
            } else {
                e.payload.bytes().zeroize();
            }
        }
    }
}

/// A request that came in on a ring entry, which this holds until
/// [`Fetched::commit`] hands the entry back with the reply.
#[derive(Debug)]
pub(crate) struct Fetched<'r> {
    ring: &'r mut Ring,
    index: usize,
    commit_id: u64,
    payload_len: usize,
}

impl Fetched<'_> {
    /// The request's header area (the `fuse_in_header`, then padding to
    /// [`REQUEST_OP`]), its opcode's struct area (to [`REQUEST_PAYLOAD`])
    /// and its payload (a name, say), copied into `into` for the caller to
    /// parse while it writes the reply into the same entry.
    pub(crate) fn copy_request(&mut self, into: &mut Vec<u8>) {
        let entry = &mut self.ring.entries[self.index];
        into.clear();
        for (at, len) in self.ring.format.request {
            into.extend_from_slice(&entry.header.bytes()[at..at + len]);
        }
        let n = self.payload_len;
        into.extend_from_slice(&entry.payload.bytes()[..n]);
    }

    /// The payload buffer, for the reply's body.
    pub(crate) fn reply_buffer(&mut self) -> &mut [u8] {
        self.ring.entries[self.index].payload.bytes()
    }

    /// Hands the entry back with a reply: `out_header` (a
    /// `fuse_out_header`) and the first `body_len` bytes of the reply
    /// buffer, and submits it (`FUSE_IO_URING_CMD_COMMIT_AND_FETCH`).
    pub(crate) fn commit(self, out_header: &[u8; 16], body_len: usize) -> io::Result<()> {
        let Fetched {
            ring,
            index,
            commit_id,
            ..
        } = self;
        let entry = &mut ring.entries[index];
        let body_len = body_len.min(entry.payload.len());
        let header = entry.header.bytes();
        let (at_reply, at_len) = (ring.format.reply_header, ring.format.payload_len);
        header[at_reply..at_reply + 16].copy_from_slice(out_header);
        let len = u32::try_from(body_len).map_err(|_| io::ErrorKind::InvalidInput)?;
        header[at_len..at_len + 4].copy_from_slice(&len.to_ne_bytes());
        entry.dirty = body_len;
        let commit = ring.format.commit;
        ring.submit_entry(index, commit, commit_id)?;
        // The kernel copies the reply out during the submission, and hands
        // over a request that was waiting, if one was, at once.
        ring.ring.submit()?;
        let before = ring.pending.len();
        ring.pending.extend(ring.ring.completion());
        let back = ring
            .pending
            .iter()
            .skip(before)
            .any(|c| c.user_data() == index as u64);
        if !back {
            // Idle in the kernel, which writes into it only during our next
            // wait: wipe what the reply left.
            let entry = &mut ring.entries[index];
            let dirty = std::mem::take(&mut entry.dirty);
            entry.payload.bytes()[..dirty].zeroize();
        }
        Ok(())
    }
}

/// How many FUSE queues the kernel makes for a connection: one per
/// possible CPU (`num_possible_cpus()`), as `/sys/devices/system/cpu/possible`
/// lists them (`0-1`, `0,2-5`).
pub(crate) fn kernel_queues() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    count_cpus(text.trim())
        .ok_or_else(|| io::Error::other(format!("cannot read the CPU list '{}'", text.trim())))
}

/// The number of CPUs in a kernel CPU list such as `0-3,8-11`.
fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// Whether this process can set up a ring of 128-byte entries, as FUSE
/// needs (`kernel.io_uring_disabled`, a seccomp filter or an old kernel may
/// say no).
pub(crate) fn probe() -> io::Result<()> {
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .build(2)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-1"), Some(2));
        assert_eq!(count_cpus("0,2-5,8"), Some(6));
        assert_eq!(count_cpus("0-"), None);
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus("x"), None);
        assert!(kernel_queues().unwrap() >= 1);
    }

    /// The SQE's `len` is where the kernel reads it, and nothing else moved.
    #[test]
    fn the_sqe_len_lands_at_offset_24() {
        let base = opcode::UringCmd80::new(types::Fixed(0), 1)
            .addr(Some(0x1122_3344))
            .build();
        let mut sqe = base.clone();
        set_sqe_len(&mut sqe, 2);
        let bytes = |e: &squeue::Entry128| -> Vec<u8> {
            // SAFETY: 128 bytes of plain integers (see set_sqe_len).
            unsafe { std::slice::from_raw_parts(std::ptr::from_ref(e).cast::<u8>(), 128) }.to_vec()
        };
        let (before, after) = (bytes(&base), bytes(&sqe));
        assert_eq!(after[24..28], 2u32.to_ne_bytes());
        assert_eq!(before[..24], after[..24]);
        assert_eq!(before[28..], after[28..]);
        // The opcode and the address are where the kernel expects them.
        assert_eq!(after[0], 46, "IORING_OP_URING_CMD");
        assert_eq!(after[16..24], 0x1122_3344u64.to_ne_bytes());
    }
}
