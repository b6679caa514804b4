//! The classic transport: threads that `read` requests from `/dev/fuse` and
//! `writev` the replies, one system call each way.
//!
//! Every thread reads the session's one open file (see [`descriptor`]). A
//! reply sent from a chunk goes out with the header in one `writev`, with
//! no copy; one filled through the thread's reply buffer has that buffer
//! wiped right after. Over io_uring one such
//! thread stays, for what the kernel still sends here: interrupts, forgets,
//! and anything before every ring queue is ready.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, warn};
use nix::errno::Errno;
use zeroize::Zeroize;

use super::adapter::{self, Reply, Served};
use super::filesystem::{FsError, Out};
use super::proto::{self, OUT_HEADER};

/// Bytes a request read from `/dev/fuse` may take: the kernel wants room
/// for at least `FUSE_MIN_READ_BUFFER` (8 KiB), and pilfered's largest
/// requests are a header, a struct and a name.
pub(crate) const REQUEST_BUFFER: usize = 64 << 10;

/// One thread's descriptor: `session` itself, shared (a duplicate). Not a
/// clone (`FUSE_DEV_IOC_CLONE`): the kernel ends the requests read on a
/// clone the moment it closes, as when its daemon dies (ECONNABORTED),
/// while those read on the session's own open file wait, in a manager's
/// store, for a successor to have them sent again (`FUSE_NOTIFY_RESEND`).
pub(crate) fn descriptor(session: &OwnedFd) -> io::Result<OwnedFd> {
    session.try_clone()
}

/// Reads the next request from `fd` into `buf`: its length, or `None` once
/// the connection has ended (`ENODEV`, after an unmount) or, woken by a
/// signal, `stop` is set.
pub(crate) fn next_request(
    fd: &OwnedFd,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> io::Result<Option<usize>> {
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        match nix::unistd::read(fd, buf) {
            Ok(n) => return Ok(Some(n)),
            // ENOENT: the request was interrupted before we read it.
            Err(Errno::ENOENT | Errno::EINTR | Errno::EAGAIN) => {}
            Err(Errno::ENODEV) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Serves requests from `fd` until the connection ends, or until `stop` is
/// set and the thread woken: then between two requests, every one it read
/// answered. Returns an error only for an unexpected failure of
/// `/dev/fuse`.
pub(crate) fn serve(fd: &OwnedFd, served: &Served, stop: &AtomicBool) -> io::Result<()> {
    let mut request = vec![0u8; REQUEST_BUFFER];
    let mut reply_buffer = Vec::new();
    while let Some(n) = next_request(fd, &mut request, stop)? {
        let Ok((header, op_in, payload)) = proto::split(&request[..n]) else {
            warn!("a FUSE request of {n} bytes without a whole header; ignored");
            continue;
        };
        let mut reply = LegacyReply {
            fd: fd.as_fd(),
            unique: header.unique,
            buffer: &mut reply_buffer,
            used: 0,
        };
        match proto::parse(header.opcode, op_in, payload) {
            Ok(op) => adapter::handle(served, &header, &op, &mut reply),
            Err(proto::Malformed) => reply.error(libc::EIO),
        }
    }
    Ok(())
}

/// Writes one reply to `/dev/fuse` with one `writev`.
pub(crate) fn write_reply(fd: BorrowedFd<'_>, unique: u64, errno: i32, body: &[u8]) {
    let header = proto::out_header(unique, errno, body.len());
    let iov = [IoSlice::new(&header), IoSlice::new(body)];
    match nix::sys::uio::writev(fd, &iov[..if body.is_empty() { 1 } else { 2 }]) {
        Ok(n) if n == OUT_HEADER + body.len() => {}
        Ok(n) => warn!(
            "a FUSE reply was cut short: {n} of {} bytes",
            OUT_HEADER + body.len()
        ),
        // The request is gone (its reader was interrupted, or the
        // connection ended): nobody waits for the answer.
        Err(Errno::ENOENT | Errno::ENODEV) => debug!("FUSE request {unique} gone before its reply"),
        Err(e) => warn!("cannot reply to FUSE request {unique}: {}", e.desc()),
    }
}

/// A reply going out on one thread's `/dev/fuse` descriptor.
struct LegacyReply<'a> {
    fd: BorrowedFd<'a>,
    unique: u64,
    /// The thread's reply buffer, grown once to the largest filled read.
    buffer: &'a mut Vec<u8>,
    /// How much of it this reply wrote, to wipe.
    used: usize,
}

impl Out for LegacyReply<'_> {
    fn send(&mut self, bytes: &[u8]) {
        write_reply(self.fd, self.unique, 0, bytes);
    }

    fn buffer(&mut self, len: usize) -> Result<&mut [u8], FsError> {
        grow(self.buffer, len)?;
        self.used = len;
        Ok(&mut self.buffer[..len])
    }

    fn send_filled(&mut self, len: usize) {
        write_reply(self.fd, self.unique, 0, &self.buffer[..len]);
    }
}

impl Reply for LegacyReply<'_> {
    fn error(&mut self, errno: i32) {
        write_reply(self.fd, self.unique, errno, &[]);
    }
}

impl Drop for LegacyReply<'_> {
    /// The reply has been written to the kernel (or failed): wipe our copy.
    fn drop(&mut self) {
        self.buffer[..self.used].zeroize();
    }
}

/// Grows a reply buffer to at least `size` bytes without aborting when
/// memory is short: the read then fails with ENOMEM instead.
fn grow(buf: &mut Vec<u8>, size: usize) -> Result<(), FsError> {
    if buf.len() < size {
        buf.try_reserve_exact(size - buf.len())
            .map_err(|_| FsError::OutOfMemory)?;
        // Within the capacity just reserved: cannot allocate.
        buf.resize(size, 0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::fuse::filesystem::BITS;
    use crate::serve::fuse::filesystem::tests::filesystem;

    /// A pipe standing in for `/dev/fuse`: what a reply writes is read back.
    fn reply_through_a_pipe(
        send: impl FnOnce(&mut LegacyReply<'_>),
        buffer: &mut Vec<u8>,
    ) -> Vec<u8> {
        let (r, w) = nix::unistd::pipe().unwrap();
        {
            let mut reply = LegacyReply {
                fd: w.as_fd(),
                unique: 6,
                buffer,
                used: 0,
            };
            send(&mut reply);
        }
        drop(w);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut out).unwrap();
        out
    }

    /// What a thread served is not left in its reply buffer, and the reply
    /// is header then body in one write.
    #[test]
    fn the_reply_buffer_is_wiped_after_each_read() {
        let (d, _) = filesystem();
        let mut buffer = Vec::new();
        let (fh, _) = d.open(BITS, 0).unwrap();
        let written =
            reply_through_a_pipe(|r| d.read(BITS, fh, 0, 100, false, r).unwrap(), &mut buffer);
        assert_eq!(written.len(), OUT_HEADER + 100);
        assert_eq!(written[..OUT_HEADER], proto::out_header(6, 0, 100));
        assert!(written[OUT_HEADER..].iter().any(|&b| b != 0));
        assert!(buffer.len() >= 100);
        assert!(buffer.iter().all(|&b| b == 0), "served bytes left behind");
    }

    /// A reply buffer that cannot grow makes the read fail with ENOMEM
    /// rather than abort the daemon.
    #[test]
    fn reply_buffer_growth_is_fallible() {
        let mut buf = vec![1u8; 10];
        assert_eq!(grow(&mut buf, usize::MAX), Err(FsError::OutOfMemory));
        assert_eq!(buf.len(), 10);
        assert_eq!(grow(&mut buf, 100), Ok(()));
        assert_eq!(buf.len(), 100);
    }

    #[test]
    fn errors_are_a_header_alone() {
        let mut buffer = Vec::new();
        let written = reply_through_a_pipe(|r| r.error(libc::ENOENT), &mut buffer);
        assert_eq!(written, proto::out_header(6, libc::ENOENT, 0));
    }
}
