//! The one translation between the FUSE protocol and [`Filesystem`], for both
//! transports: [`handle`] takes a parsed request, calls the device, encodes
//! the answer and gives it to the transport's [`Reply`]. It holds no state
//! and makes no decision of its own beyond the protocol's.

use super::filesystem::{self, Filesystem, Out, TTL};
use super::proto::{self, InHeader, Op, op};

/// The log target of the trace line every request gets.
pub const REQUEST_LOG: &str = "pilfered::serve::fuse::requests";

/// A transport's reply to one request: [`Out`] for the bytes of a
/// successful reply, and an error instead. A request gets one of them, or
/// (a `FORGET`) none.
pub(crate) trait Reply: Out {
    /// Fails the request with `errno`.
    fn error(&mut self, errno: i32);
}

/// The file system as every serving thread shares it, with who may use
/// it: its owner alone, or (`allow_other`) everyone the mount lets in. The
/// kernel enforces the same without `allow_other`; this holds if it ever
/// did not.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) fs: Filesystem,
    pub(crate) everyone: bool,
}

impl Served {
    /// Whether `uid` may make request `opcode`. Some requests the kernel
    /// makes on its own, with no meaningful uid, or for whoever holds a
    /// descriptor already opened (a `FLUSH` at `close()`, by a process that
    /// was handed it or changed its user since): those always pass.
    fn permits(&self, uid: u32, opcode: u32) -> bool {
        const KERNELS_OWN: [u32; 14] = [
            op::INIT,
            op::DESTROY,
            op::READ,
            op::READDIR,
            op::READDIRPLUS,
            op::FORGET,
            op::BATCH_FORGET,
            op::WRITE,
            op::FSYNC,
            op::FSYNCDIR,
            op::FLUSH,
            op::RELEASE,
            op::RELEASEDIR,
            op::INTERRUPT,
        ];
        self.everyone || uid == self.fs.owner() || KERNELS_OWN.contains(&opcode)
    }
}

/// Answers one request through `reply`.
pub(crate) fn handle(served: &Served, header: &InHeader, op: &Op<'_>, reply: &mut impl Reply) {
    log::trace!(
        target: REQUEST_LOG,
        "request {}: {op:?} on inode {} by uid {}",
        header.unique,
        header.nodeid,
        header.uid
    );
    if !served.permits(header.uid, header.opcode) {
        reply.error(libc::EACCES);
        return;
    }
    let fs = &served.fs;
    let ino = header.nodeid;
    let result = match *op {
        Op::Lookup { name } => fs
            .lookup(ino, name)
            .map(|a| reply.send(&proto::entry_out(&a, TTL))),
        Op::GetAttr => fs.attr(ino).map(|a| reply.send(&proto::attr_out(&a, TTL))),
        Op::Open { flags } => fs
            .open(ino, flags)
            .map(|(fh, open_flags)| reply.send(&proto::open_out(fh, open_flags))),
        Op::Read {
            fh,
            offset,
            size,
            for_cache,
        } => fs
            .read(ino, fh, offset, size, for_cache, reply)
            .inspect_err(|e| {
                e.log(&format!(
                    "read of {size} bytes of {}",
                    filesystem::name(ino)
                ));
            }),
        Op::Release { fh } => {
            fs.release(fh);
            reply.send(&[]);
            Ok(())
        }
        // Nothing is ever written, so there is nothing to flush; a
        // directory needs no handle; a finished request needs nothing.
        Op::Flush | Op::ReleaseDir | Op::Destroy => {
            reply.send(&[]);
            Ok(())
        }
        Op::OpenDir => {
            reply.send(&proto::open_out(0, 0));
            Ok(())
        }
        Op::ReadDir { offset, size } => fs.readdir(ino, offset).map(|entries| {
            let limit = usize::try_from(size).unwrap_or(usize::MAX);
            let mut out = Vec::new();
            for (ino, next, kind, name) in entries {
                if !proto::push_dirent(&mut out, limit, ino, next, kind, name) {
                    break;
                }
            }
            reply.send(&out);
        }),
        Op::StatFs => {
            reply.send(&proto::statfs_out());
            Ok(())
        }
        // No extended attributes: none to get, and an empty list.
        Op::GetXattr { .. } => {
            reply.error(libc::ENODATA);
            Ok(())
        }
        Op::ListXattr { size: 0 } => {
            reply.send(&proto::xattr_size_out(0));
            Ok(())
        }
        Op::ListXattr { .. } => {
            reply.send(&[]);
            Ok(())
        }
        // Programs probe files with ioctls (Python asks TCGETS: "is this a
        // terminal?"); ENOTTY is the standard "no such ioctl here".
        Op::Ioctl => {
            reply.error(libc::ENOTTY);
            Ok(())
        }
        // ENOSYS to an interrupt tells the kernel not to send more: every
        // request is answered promptly anyway, and a reader interrupted by
        // a signal gets its bytes.
        Op::Interrupt | Op::Other(_) => {
            reply.error(libc::ENOSYS);
            Ok(())
        }
        Op::Forget => Ok(()),
        // The handshake is over before any request reaches this.
        Op::Init { .. } => {
            reply.error(libc::EIO);
            Ok(())
        }
    };
    if let Err(e) = result {
        reply.error(e.errno());
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use crate::serve::fuse::filesystem::FsError;
    use crate::serve::fuse::filesystem::tests::{Kept, filesystem};
    use crate::serve::fuse::filesystem::{BITS, ROOT};

    /// A [`Reply`] that keeps the answer.
    #[derive(Debug, Default)]
    struct Answer {
        out: Kept,
        error: Option<i32>,
    }

    impl Out for Answer {
        fn send(&mut self, bytes: &[u8]) {
            self.out.send(bytes);
        }
        fn buffer(&mut self, len: usize) -> Result<&mut [u8], FsError> {
            self.out.buffer(len)
        }
        fn send_filled(&mut self, len: usize) {
            self.out.send_filled(len);
        }
    }

    impl Reply for Answer {
        fn error(&mut self, errno: i32) {
            self.error = Some(errno);
        }
    }

    /// Asks a file system owned by uid 1000 (open to everyone if
    /// `everyone`) as `uid`.
    fn ask(everyone: bool, uid: u32, opcode: u32, nodeid: u64, op: &Op<'_>) -> Answer {
        let (fs, _) = filesystem();
        let served = Served { fs, everyone };
        let header = InHeader {
            opcode,
            unique: 2,
            nodeid,
            uid,
        };
        let mut a = Answer::default();
        handle(&served, &header, op, &mut a);
        a
    }

    /// Only the owner, uid 1000.
    const OWNER: bool = false;

    #[test]
    fn requests_get_their_encoded_answers() {
        let lookup = Op::Lookup {
            name: OsStr::new("bits"),
        };
        let a = ask(OWNER, 1000, op::LOOKUP, ROOT, &lookup);
        assert_eq!(a.error, None);
        assert_eq!(a.out.bytes.len(), 128, "fuse_entry_out");
        assert_eq!(a.out.bytes[..8], BITS.to_ne_bytes());

        let missing = Op::Lookup {
            name: OsStr::new("nope"),
        };
        assert_eq!(
            ask(OWNER, 1000, op::LOOKUP, ROOT, &missing).error,
            Some(libc::ENOENT)
        );

        let read = Op::Read {
            fh: 1,
            offset: 0,
            size: 64,
            for_cache: false,
        };
        let a = ask(OWNER, 1000, op::READ, BITS, &read);
        assert_eq!(a.out.bytes, (0..64).collect::<Vec<u8>>());

        let a = ask(
            OWNER,
            1000,
            op::READDIR,
            ROOT,
            &Op::ReadDir {
                offset: 0,
                size: 4096,
            },
        );
        assert_eq!(a.out.bytes.len(), 4 * 32, "four padded dirents");

        assert_eq!(
            ask(OWNER, 1000, op::IOCTL, BITS, &Op::Ioctl).error,
            Some(libc::ENOTTY)
        );
        assert_eq!(
            ask(OWNER, 1000, op::GETXATTR, BITS, &Op::GetXattr { size: 0 }).error,
            Some(libc::ENODATA)
        );
        assert_eq!(
            ask(OWNER, 1000, 51, ROOT, &Op::Other(51)).error,
            Some(libc::ENOSYS)
        );
        let forget = ask(OWNER, 1000, op::FORGET, BITS, &Op::Forget);
        assert_eq!((forget.error, forget.out.bytes.len()), (None, 0));
    }

    /// Without `allow_other` only the owner may ask, but the kernel's own
    /// requests pass whoever they carry.
    #[test]
    fn only_the_owner_unless_everyone() {
        let lookup = Op::Lookup {
            name: OsStr::new("bits"),
        };
        assert_eq!(
            ask(OWNER, 1001, op::LOOKUP, ROOT, &lookup).error,
            Some(libc::EACCES)
        );
        assert_eq!(
            ask(OWNER, 0, op::LOOKUP, ROOT, &lookup).error,
            Some(libc::EACCES)
        );
        let everyone = true;
        assert_eq!(ask(everyone, 1001, op::LOOKUP, ROOT, &lookup).error, None);
        let release = Op::Release { fh: 1 };
        assert_eq!(ask(OWNER, 1001, op::RELEASE, BITS, &release).error, None);
        // close() by whoever holds a descriptor the owner opened.
        assert_eq!(ask(OWNER, 1001, op::FLUSH, BITS, &Op::Flush).error, None);
    }
}
