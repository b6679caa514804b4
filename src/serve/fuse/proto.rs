//! The FUSE wire protocol (`include/uapi/linux/fuse.h`), as far as pilfered
//! speaks it: requests parsed from bytes into [`InHeader`] and [`Op`],
//! replies encoded into bytes, in the host's byte order as the kernel sends
//! them. Safe code only: fields are read and written at their offsets.
//!
//! Both transports hand requests over in three parts: the `fuse_in_header`,
//! the opcode's own struct (`fuse_read_in`, ...) and the payload after it
//! (a name, ioctl data). Over `/dev/fuse` they come as one buffer, which
//! [`split`] cuts at the opcode's struct size; over io_uring the kernel puts
//! them in three places of the ring entry itself.

use crate::sys::uring::EntryFormat;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// The protocol's major version, and the minor one pilfered is written
/// for (7.42 brought FUSE over io_uring).
pub(crate) const MAJOR: u32 = 7;
pub(crate) const MINOR: u32 = 42;

/// `FUSE_INIT` flags (the high half is `flags2`).
pub(crate) mod init {
    pub(crate) const ASYNC_READ: u64 = 1 << 0;
    pub(crate) const BIG_WRITES: u64 = 1 << 5;
    pub(crate) const MAX_PAGES: u64 = 1 << 22;
    pub(crate) const INIT_EXT: u64 = 1 << 30;
    /// The kernel sends again, on [`super::notify::RESEND`], the requests
    /// a server had taken and not answered, with
    /// [`super::UNIQUE_RESEND`] set in their `unique` (Linux 6.9+).
    pub(crate) const HAS_RESEND: u64 = 1 << 39;
    pub(crate) const OVER_IO_URING: u64 = 1 << 41;
}

/// The bit set in the `unique` of a request sent again after
/// [`notify::RESEND`] (`FUSE_UNIQUE_RESEND`). Its reply carries the
/// `unique` as it came, bit and all.
#[cfg(test)]
pub(crate) const UNIQUE_RESEND: u64 = 1 << 63;

/// Notification codes (`enum fuse_notify_code`): what a server tells the
/// kernel unasked, with [`notification`].
pub(crate) mod notify {
    /// Send again every request a server of this connection read and has
    /// not answered (the kernel takes them back from every `/dev/fuse`
    /// descriptor still open on it). No body.
    pub(crate) const RESEND: i32 = 7;
}

/// A FUSE-over-io_uring ring entry (`include/uapi/linux/fuse.h`): the
/// header buffer is `struct fuse_uring_req_header`, 128 bytes for the
/// `fuse_in_header` or `fuse_out_header`, 128 for the opcode's struct, then
/// `struct fuse_uring_ent_in_out` (flags, commit_id, payload_sz, ...); the
/// commands are `FUSE_IO_URING_CMD_REGISTER` and `_COMMIT_AND_FETCH`,
/// carrying `struct fuse_uring_cmd_req { flags, commit_id, qid }`.
pub(crate) const RING_ENTRY: EntryFormat = EntryFormat {
    header_len: 256 + 32,
    register: 1,
    commit: 2,
    request: [(0, REQUEST_OP), (128, REQUEST_PAYLOAD - REQUEST_OP)],
    reply_header: 0,
    commit_id: 256 + 8,
    payload_len: 256 + 16,
    command_commit_id: 8,
    command_queue: 16,
};

/// Where the opcode's struct and the payload start in a request copied out
/// of a ring entry (its two header areas, then the payload).
pub(crate) const REQUEST_OP: usize = 128;
pub(crate) const REQUEST_PAYLOAD: usize = 256;

/// `fuse_open_out.open_flags`.
pub(crate) const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub(crate) const FOPEN_NONSEEKABLE: u32 = 1 << 2;
pub(crate) const FOPEN_STREAM: u32 = 1 << 4;
pub(crate) const FOPEN_NOFLUSH: u32 = 1 << 5;

/// `fuse_read_in.read_flags`: `lock_owner` is set, as it is on every read a
/// process makes.
const READ_LOCKOWNER: u32 = 1 << 1;

/// The opcodes pilfered answers; every other one gets `ENOSYS`.
pub(crate) mod op {
    pub(crate) const LOOKUP: u32 = 1;
    pub(crate) const FORGET: u32 = 2;
    pub(crate) const GETATTR: u32 = 3;
    pub(crate) const OPEN: u32 = 14;
    pub(crate) const READ: u32 = 15;
    pub(crate) const WRITE: u32 = 16;
    pub(crate) const STATFS: u32 = 17;
    pub(crate) const RELEASE: u32 = 18;
    pub(crate) const FSYNC: u32 = 20;
    pub(crate) const GETXATTR: u32 = 22;
    pub(crate) const LISTXATTR: u32 = 23;
    pub(crate) const FLUSH: u32 = 25;
    pub(crate) const INIT: u32 = 26;
    pub(crate) const OPENDIR: u32 = 27;
    pub(crate) const READDIR: u32 = 28;
    pub(crate) const RELEASEDIR: u32 = 29;
    pub(crate) const FSYNCDIR: u32 = 30;
    pub(crate) const INTERRUPT: u32 = 36;
    pub(crate) const DESTROY: u32 = 38;
    pub(crate) const IOCTL: u32 = 39;
    pub(crate) const BATCH_FORGET: u32 = 42;
    pub(crate) const READDIRPLUS: u32 = 44;
}

/// Size of `fuse_in_header` and of `fuse_out_header`.
pub(crate) const IN_HEADER: usize = 40;
pub(crate) const OUT_HEADER: usize = 16;

/// Reads native-endian fields at offsets of a byte slice.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(self.0.get(at..at + 2)?.try_into().ok()?))
    }
    fn u32(&self, at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(self.0.get(at..at + 4)?.try_into().ok()?))
    }
    fn u64(&self, at: usize) -> Option<u64> {
        Some(u64::from_ne_bytes(self.0.get(at..at + 8)?.try_into().ok()?))
    }
}

/// `struct fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InHeader {
    pub(crate) opcode: u32,
    pub(crate) unique: u64,
    pub(crate) nodeid: u64,
    pub(crate) uid: u32,
}

impl InHeader {
    /// The header at the start of `bytes`, if they hold one.
    pub(crate) fn parse(bytes: &[u8]) -> Option<InHeader> {
        let f = Fields(bytes);
        // len u32 @0, opcode u32 @4, unique u64 @8, nodeid u64 @16,
        // uid u32 @24, gid u32 @28, pid u32 @32, total_extlen u16 @36.
        f.u16(38)?;
        Some(InHeader {
            opcode: f.u32(4)?,
            unique: f.u64(8)?,
            nodeid: f.u64(16)?,
            uid: f.u32(24)?,
        })
    }
}

/// A request's operation, with what pilfered needs of its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Init {
        major: u32,
        minor: u32,
        max_readahead: u32,
        /// `flags`, and `flags2 << 32` when `FUSE_INIT_EXT` is set.
        flags: u64,
    },
    Destroy,
    Lookup {
        name: &'a OsStr,
    },
    /// `FORGET` and `BATCH_FORGET`: no reply.
    Forget,
    GetAttr,
    Open {
        flags: u32,
    },
    Read {
        fh: u64,
        offset: u64,
        size: u32,
        /// The kernel reads for its page cache (`read_folio`, readahead:
        /// what `splice`, `sendfile` and `mmap` read through), not for a
        /// process's `read()`: such requests carry no lock owner
        /// (`FUSE_READ_LOCKOWNER`), which every direct read has.
        for_cache: bool,
    },
    Release {
        fh: u64,
    },
    Flush,
    OpenDir,
    ReadDir {
        offset: u64,
        size: u32,
    },
    ReleaseDir,
    StatFs,
    GetXattr {
        size: u32,
    },
    ListXattr {
        size: u32,
    },
    Ioctl,
    Interrupt,
    /// Anything else, by opcode: answered `ENOSYS`.
    Other(u32),
}

/// Why a request could not be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The size of opcode `opcode`'s own struct, which comes before the
/// payload (0 for those whose first argument is the payload, like LOOKUP's
/// name; `fuse_init_in` has grown over time and is all it carries).
fn op_struct_len(opcode: u32) -> usize {
    match opcode {
        op::FORGET | op::OPEN | op::OPENDIR | op::GETXATTR | op::LISTXATTR | op::INTERRUPT => 8,
        op::BATCH_FORGET => 8,
        op::GETATTR => 16,
        op::RELEASE | op::RELEASEDIR | op::FLUSH => 24,
        op::IOCTL => 32,
        op::READ | op::READDIR | op::READDIRPLUS | op::WRITE => 40,
        op::INIT => usize::MAX,
        _ => 0,
    }
}

/// Splits one `/dev/fuse` request into its header, its opcode's struct and
/// its payload.
pub(crate) fn split(request: &[u8]) -> Result<(InHeader, &[u8], &[u8]), Malformed> {
    let header = InHeader::parse(request).ok_or(Malformed)?;
    let args = &request[IN_HEADER..];
    let at = op_struct_len(header.opcode).min(args.len());
    Ok((header, &args[..at], &args[at..]))
}

/// Parses a request's operation from its opcode's struct `op_in` and its
/// `payload`. `op_in` may be longer than the struct (over io_uring it is a
/// fixed area).
pub(crate) fn parse<'a>(opcode: u32, op_in: &[u8], payload: &'a [u8]) -> Result<Op<'a>, Malformed> {
    let f = Fields(op_in);
    let op = match opcode {
        op::INIT => {
            let major = f.u32(0).ok_or(Malformed)?;
            let minor = f.u32(4).ok_or(Malformed)?;
            let max_readahead = f.u32(8).ok_or(Malformed)?;
            let low = u64::from(f.u32(12).ok_or(Malformed)?);
            // flags2 exists from 7.36 on, announced by FUSE_INIT_EXT.
            let high = match f.u32(16) {
                Some(h) if low & init::INIT_EXT != 0 => u64::from(h) << 32,
                _ => 0,
            };
            Op::Init {
                major,
                minor,
                max_readahead,
                flags: low | high,
            }
        }
        op::DESTROY => Op::Destroy,
        op::LOOKUP => {
            // The name ends with a NUL.
            let name = payload.split(|&b| b == 0).next().ok_or(Malformed)?;
            Op::Lookup {
                name: OsStr::from_bytes(name),
            }
        }
        op::FORGET | op::BATCH_FORGET => Op::Forget,
        op::GETATTR => Op::GetAttr,
        op::OPEN => Op::Open {
            flags: f.u32(0).ok_or(Malformed)?,
        },
        op::READ => Op::Read {
            fh: f.u64(0).ok_or(Malformed)?,
            offset: f.u64(8).ok_or(Malformed)?,
            size: f.u32(16).ok_or(Malformed)?,
            for_cache: f.u32(20).ok_or(Malformed)? & READ_LOCKOWNER == 0,
        },
        op::RELEASE => Op::Release {
            fh: f.u64(0).ok_or(Malformed)?,
        },
        op::FLUSH => Op::Flush,
        op::OPENDIR => Op::OpenDir,
        op::READDIR => Op::ReadDir {
            offset: f.u64(8).ok_or(Malformed)?,
            size: f.u32(16).ok_or(Malformed)?,
        },
        op::RELEASEDIR => Op::ReleaseDir,
        op::STATFS => Op::StatFs,
        op::GETXATTR => Op::GetXattr {
            size: f.u32(0).ok_or(Malformed)?,
        },
        op::LISTXATTR => Op::ListXattr {
            size: f.u32(0).ok_or(Malformed)?,
        },
        op::IOCTL => Op::Ioctl,
        op::INTERRUPT => Op::Interrupt,
        other => Op::Other(other),
    };
    Ok(op)
}

/// `struct fuse_out_header` for a reply of `body_len` bytes to `unique`,
/// failing with `errno` (0 for success).
pub(crate) fn out_header(unique: u64, errno: i32, body_len: usize) -> [u8; OUT_HEADER] {
    let mut h = [0u8; OUT_HEADER];
    let len = u32::try_from(OUT_HEADER + body_len).unwrap_or(u32::MAX);
    h[0..4].copy_from_slice(&len.to_ne_bytes());
    h[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

/// The `struct fuse_out_header` of the notification `code` (a
/// [`notify`] code) with `body_len` bytes after it: written to `/dev/fuse`
/// unasked, it has `unique` 0 and the code where a reply has its error.
pub(crate) fn notification(code: i32, body_len: usize) -> [u8; OUT_HEADER] {
    out_header(0, -code, body_len)
}

/// Writes native-endian fields into a reply body.
struct Body<const N: usize>([u8; N]);

impl<const N: usize> Body<N> {
    fn new() -> Self {
        Body([0; N])
    }
    fn u16(mut self, at: usize, v: u16) -> Self {
        self.0[at..at + 2].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u32(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

/// A file's attributes, as `struct fuse_attr` carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr {
    pub(crate) ino: u64,
    /// The file type bits and permissions (`st_mode`).
    pub(crate) mode: u32,
    /// `st_size`.
    pub(crate) size: u64,
    pub(crate) nlink: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// atime, mtime and ctime: seconds and nanoseconds.
    pub(crate) time: (u64, u32),
    pub(crate) blksize: u32,
}

/// `struct fuse_attr` (88 bytes). Block counts are 0.
fn attr_bytes(a: &Attr) -> [u8; 88] {
    let (secs, nsecs) = a.time;
    Body::<88>::new()
        .u64(0, a.ino)
        .u64(8, a.size)
        .u64(24, secs)
        .u64(32, secs)
        .u64(40, secs)
        .u32(48, nsecs)
        .u32(52, nsecs)
        .u32(56, nsecs)
        .u32(60, a.mode)
        .u32(64, a.nlink)
        .u32(68, a.uid)
        .u32(72, a.gid)
        .u32(80, a.blksize)
        .0
}

/// `struct fuse_entry_out`: the attributes and how long the kernel may
/// cache the name and the attributes (`ttl`, whole seconds).
pub(crate) fn entry_out(a: &Attr, ttl: u64) -> [u8; 128] {
    let mut b = Body::<128>::new().u64(0, a.ino).u64(16, ttl).u64(24, ttl).0;
    b[40..].copy_from_slice(&attr_bytes(a));
    b
}

/// `struct fuse_attr_out`.
pub(crate) fn attr_out(a: &Attr, ttl: u64) -> [u8; 104] {
    let mut b = Body::<104>::new().u64(0, ttl).0;
    b[16..].copy_from_slice(&attr_bytes(a));
    b
}

/// `struct fuse_open_out`.
pub(crate) fn open_out(fh: u64, open_flags: u32) -> [u8; 16] {
    Body::<16>::new().u64(0, fh).u32(8, open_flags).0
}

/// `struct fuse_getxattr_out`: the size an attribute (list) would need.
pub(crate) fn xattr_size_out(size: u32) -> [u8; 8] {
    Body::<8>::new().u32(0, size).0
}

/// `struct fuse_statfs_out` of a file system with no blocks and no free
/// inodes, 512-byte blocks and names of up to 255 bytes.
pub(crate) fn statfs_out() -> [u8; 80] {
    Body::<80>::new().u32(40, 512).u32(44, 255).0
}

/// What pilfered answers to `FUSE_INIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InitReply {
    pub(crate) max_readahead: u32,
    pub(crate) flags: u64,
    pub(crate) max_background: u16,
    pub(crate) congestion_threshold: u16,
    pub(crate) max_write: u32,
    pub(crate) max_pages: u16,
}

/// `struct fuse_init_out` (64 bytes).
pub(crate) fn init_out(r: &InitReply) -> [u8; 64] {
    let flags = u32::try_from(r.flags & 0xffff_ffff).expect("the low half");
    let flags2 = u32::try_from(r.flags >> 32).expect("the high half");
    Body::<64>::new()
        .u32(0, MAJOR)
        .u32(4, MINOR)
        .u32(8, r.max_readahead)
        .u32(12, flags)
        .u16(16, r.max_background)
        .u16(18, r.congestion_threshold)
        .u32(20, r.max_write)
        // time_gran: nanoseconds.
        .u32(24, 1)
        .u16(28, r.max_pages)
        .u32(32, flags2)
        .0
}

/// Appends `struct fuse_dirent` for one entry to `out` if it fits within
/// `limit` bytes in all; returns whether it did.
pub(crate) fn push_dirent(
    out: &mut Vec<u8>,
    limit: usize,
    ino: u64,
    next: u64,
    kind: u32,
    name: &str,
) -> bool {
    let len = (24 + name.len()).next_multiple_of(8);
    if out.len() + len > limit {
        return false;
    }
    let namelen = u32::try_from(name.len()).expect("short names");
    let head = Body::<24>::new()
        .u64(0, ino)
        .u64(8, next)
        .u32(16, namelen)
        .u32(20, kind)
        .0;
    out.extend_from_slice(&head);
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len() + len - 24 - name.len(), 0);
    true
}

#[cfg(test)]
mod kernel_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// `FUSE_NOTIFY_RESEND` as `fuse_out_header` lays it out: len u32 @0
    /// (the header alone), error i32 @4 (the code, positive), unique u64
    /// @8 (0: not a reply).
    #[test]
    fn the_resend_notification_is_a_bare_header() {
        let n = notification(notify::RESEND, 0);
        assert_eq!(n.len(), 16);
        assert_eq!(n[0..4], 16u32.to_ne_bytes());
        assert_eq!(n[4..8], 7i32.to_ne_bytes());
        assert_eq!(n[8..16], [0; 8]);
        assert_eq!(notification(notify::RESEND, 8)[0..4], 24u32.to_ne_bytes());
        assert_eq!(init::HAS_RESEND, 0x80_0000_0000);
        assert_eq!(UNIQUE_RESEND, 0x8000_0000_0000_0000);
        // A resent request keeps the bit through parsing, for its reply.
        let r = request(op::GETATTR, 4 | UNIQUE_RESEND, 1, &[0; 16]);
        assert_eq!(parsed(&r).0.unique, 4 | UNIQUE_RESEND);
    }

    /// A `/dev/fuse` request: header, then `args`.
    fn request(opcode: u32, unique: u64, nodeid: u64, args: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; IN_HEADER];
        let len = u32::try_from(IN_HEADER + args.len()).unwrap();
        r[0..4].copy_from_slice(&len.to_ne_bytes());
        r[4..8].copy_from_slice(&opcode.to_ne_bytes());
        r[8..16].copy_from_slice(&unique.to_ne_bytes());
        r[16..24].copy_from_slice(&nodeid.to_ne_bytes());
        r[24..28].copy_from_slice(&1000u32.to_ne_bytes());
        r.extend_from_slice(args);
        r
    }

    fn parsed(r: &[u8]) -> (InHeader, Op<'_>) {
        let (h, op_in, payload) = split(r).unwrap();
        (h, parse(h.opcode, op_in, payload).unwrap())
    }

    #[test]
    fn requests_parse_at_their_offsets() {
        let mut read_in = [0u8; 40];
        read_in[0..8].copy_from_slice(&7u64.to_ne_bytes());
        read_in[8..16].copy_from_slice(&4096u64.to_ne_bytes());
        read_in[16..20].copy_from_slice(&65536u32.to_ne_bytes());
        let r = request(op::READ, 42, 2, &read_in);
        let (h, o) = parsed(&r);
        assert_eq!(
            (h.opcode, h.unique, h.nodeid, h.uid),
            (op::READ, 42, 2, 1000)
        );
        assert_eq!(
            o,
            Op::Read {
                fh: 7,
                offset: 4096,
                size: 65536,
                for_cache: true
            }
        );
        read_in[20..24].copy_from_slice(&READ_LOCKOWNER.to_ne_bytes());
        let r = request(op::READ, 43, 2, &read_in);
        assert!(matches!(
            parsed(&r).1,
            Op::Read {
                for_cache: false,
                ..
            }
        ));

        let r = request(op::LOOKUP, 1, 1, b"bits\0");
        assert_eq!(
            parsed(&r).1,
            Op::Lookup {
                name: OsStr::new("bits")
            }
        );

        let mut getxattr = b"\x10\0\0\0\0\0\0\0".to_vec();
        getxattr.extend_from_slice(b"user.x\0");
        let r = request(op::GETXATTR, 1, 2, &getxattr);
        assert_eq!(parsed(&r).1, Op::GetXattr { size: 16 });

        let r = request(999, 1, 1, &[]);
        assert_eq!(parsed(&r).1, Op::Other(999));

        // Too short for its struct: malformed, not a panic.
        let r = request(op::READ, 1, 2, &[0u8; 10]);
        let (h, op_in, payload) = split(&r).unwrap();
        assert_eq!(parse(h.opcode, op_in, payload), Err(Malformed));
        assert_eq!(split(&[0u8; 20]), Err(Malformed));
    }

    #[test]
    fn init_reads_flags2_only_with_init_ext() {
        let mut init_in = [0u8; 64];
        init_in[0..4].copy_from_slice(&7u32.to_ne_bytes());
        init_in[4..8].copy_from_slice(&44u32.to_ne_bytes());
        init_in[8..12].copy_from_slice(&131072u32.to_ne_bytes());
        let low = u32::try_from(init::ASYNC_READ | init::INIT_EXT).unwrap();
        init_in[12..16].copy_from_slice(&low.to_ne_bytes());
        init_in[16..20].copy_from_slice(&(1u32 << 9).to_ne_bytes());
        let r = request(op::INIT, 1, 0, &init_in);
        assert_eq!(
            parsed(&r).1,
            Op::Init {
                major: 7,
                minor: 44,
                max_readahead: 131072,
                flags: init::ASYNC_READ | init::INIT_EXT | init::OVER_IO_URING,
            }
        );
        // Without FUSE_INIT_EXT the second word means nothing.
        init_in[12..16].copy_from_slice(&1u32.to_ne_bytes());
        let r = request(op::INIT, 1, 0, &init_in);
        assert!(matches!(parsed(&r).1, Op::Init { flags: 1, .. }));
        // An old kernel's 16-byte fuse_init_in.
        let r = request(op::INIT, 1, 0, &init_in[..16]);
        assert!(matches!(
            parsed(&r).1,
            Op::Init {
                minor: 44,
                flags: 1,
                ..
            }
        ));
    }

    #[test]
    fn replies_encode_at_their_offsets() {
        let h = out_header(9, libc::ENOENT, 0);
        assert_eq!(h[0..4], 16u32.to_ne_bytes());
        assert_eq!(h[4..8], (-libc::ENOENT).to_ne_bytes());
        assert_eq!(h[8..16], 9u64.to_ne_bytes());

        let a = Attr {
            ino: 2,
            mode: libc::S_IFREG | 0o444,
            size: 1 << 40,
            nlink: 1,
            uid: 1000,
            gid: 100,
            time: (1_700_000_000, 5),
            blksize: 4096,
        };
        let e = entry_out(&a, 1);
        assert_eq!(e[40 + 8..40 + 16], (1u64 << 40).to_ne_bytes(), "attr.size");
        assert_eq!(e[0..8], 2u64.to_ne_bytes(), "nodeid");
        assert_eq!(e[16..24], 1u64.to_ne_bytes(), "entry_valid");
        assert_eq!(e[40..48], 2u64.to_ne_bytes(), "attr.ino");
        assert_eq!(e[40 + 60..40 + 64], (libc::S_IFREG | 0o444).to_ne_bytes());
        assert_eq!(e[40 + 72..40 + 76], 100u32.to_ne_bytes(), "attr.gid");
        let o = open_out(3, FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE);
        assert_eq!(o[8..12], 5u32.to_ne_bytes());

        let i = init_out(&InitReply {
            max_readahead: 0,
            flags: init::MAX_PAGES | init::INIT_EXT | init::OVER_IO_URING,
            max_background: 16,
            congestion_threshold: 12,
            max_write: 4096,
            max_pages: 256,
        });
        assert_eq!(i[0..8], [7u32.to_ne_bytes(), MINOR.to_ne_bytes()].concat());
        let low = u32::try_from(init::MAX_PAGES | init::INIT_EXT).unwrap();
        assert_eq!(i[12..16], low.to_ne_bytes());
        assert_eq!(i[28..30], 256u16.to_ne_bytes(), "max_pages");
        assert_eq!(i[32..36], (1u32 << 9).to_ne_bytes(), "flags2");
    }

    #[test]
    fn dirents_are_padded_and_bounded() {
        let mut out = Vec::new();
        assert!(push_dirent(&mut out, 100, 2, 3, 8, "bits"));
        assert_eq!(out.len(), 32);
        assert_eq!(out[16..20], 4u32.to_ne_bytes());
        assert_eq!(&out[24..28], b"bits");
        assert!(out[28..].iter().all(|&b| b == 0));
        // The next one would pass the limit: refused, nothing written.
        assert!(!push_dirent(&mut out, 60, 3, 4, 8, "stats"));
        assert_eq!(out.len(), 32);
    }
}
