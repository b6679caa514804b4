//! The planned handover between a running daemon and the `pilfered serve
//! --replace` that follows it: the FUSE connection, what its `FUSE_INIT`
//! negotiated and the FIFO pass from one to the other, so that no reader
//! sees the change.
//!
//! The running daemon listens on a socket in the state directory
//! ([`records`]), named after its mount point (`handover-HASH`). The
//! successor connects and asks for the paths it was told to serve; the old
//! daemon checks that the peer is of our own uid (`SO_PEERCRED`) and asks
//! for exactly its own paths, then answers with an [`Offer`]: the
//! negotiated [`Init`], the mount's ID and the descriptors (`SCM_RIGHTS`).
//! It keeps its own copies until the successor says it holds them
//! ([`Taken::ack`]): a successor that dies or refuses before that leaves
//! the old daemon serving on.
//!
//! The socket is a `SOCK_SEQPACKET` one, so that every message arrives
//! whole or is seen to be cut. Each starts with a header: `PLHO`, the
//! version (u16) and the kind (u8), then a zero byte. Integers are
//! little-endian; a path is a u16 length and its bytes (length 0: none).
//!
//! | kind | from | body |
//! |---|---|---|
//! | 1 request | successor | mount path, FIFO path |
//! | 2 offer | old daemon | [`Init`] record (or 40 zero bytes), mount ID u64, mount path, FIFO path; descriptors: `/dev/fuse` if an Init record is there, then the FIFO if a FIFO path is |
//! | 3 refused | old daemon | reason (u16 length, UTF-8) |
//! | 4 done | successor | nothing |

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sockopt,
};
use nix::sys::stat::{SFlag, fstatat};
use nix::sys::time::TimeVal;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, printable};
use crate::sys::records::{self, StateDir};
use crate::sys::{raw, trust};

/// The version of this wire, and of the [`Init`] record.
pub(crate) const VERSION: u16 = 1;

/// What the kernel's `FUSE_INIT` and pilfered's reply settled on a
/// connection: what a daemon taking the connection over must know, since
/// the kernel sends `FUSE_INIT` once per connection.
///
/// As a record (here and in systemd's file descriptor store) it is 40
/// bytes: `pilfINIT`, version u32, minor u32, flags u64, max_readahead
/// u32, max_write u32, max_pages u16, uring u8 (0 or 1), five zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Init {
    /// The kernel's protocol minor version.
    pub(crate) minor: u32,
    /// The flags granted (`flags2 << 32 | flags`).
    pub(crate) flags: u64,
    pub(crate) max_readahead: u32,
    pub(crate) max_write: u32,
    pub(crate) max_pages: u16,
    /// FUSE over io_uring was granted on this connection.
    pub(crate) uring: bool,
}

const INIT_MAGIC: &[u8; 8] = b"pilfINIT";

impl Init {
    /// The length of its record.
    pub(crate) const LEN: usize = 40;

    /// Its record.
    pub(crate) fn encode(&self) -> [u8; Init::LEN] {
        let mut out = [0u8; Init::LEN];
        out[..8].copy_from_slice(INIT_MAGIC);
        out[8..12].copy_from_slice(&u32::from(VERSION).to_le_bytes());
        out[12..16].copy_from_slice(&self.minor.to_le_bytes());
        out[16..24].copy_from_slice(&self.flags.to_le_bytes());
        out[24..28].copy_from_slice(&self.max_readahead.to_le_bytes());
        out[28..32].copy_from_slice(&self.max_write.to_le_bytes());
        out[32..34].copy_from_slice(&self.max_pages.to_le_bytes());
        out[34] = u8::from(self.uring);
        out
    }

    /// The record `bytes` holds exactly, or why they are not one.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Init, String> {
        if bytes.len() != Init::LEN {
            return Err(format!(
                "the FUSE_INIT record is {} bytes, not {}",
                bytes.len(),
                Init::LEN
            ));
        }
        let mut r = Fields(bytes);
        if r.take(8)? != INIT_MAGIC {
            return Err("not a pilfered FUSE_INIT record".into());
        }
        let version = r.u32()?;
        if version != u32::from(VERSION) {
            return Err(format!(
                "a FUSE_INIT record of version {version}; this pilfered reads version {VERSION}"
            ));
        }
        let init = Init {
            minor: r.u32()?,
            flags: r.u64()?,
            max_readahead: r.u32()?,
            max_write: r.u32()?,
            max_pages: r.u16()?,
            uring: match r.u8()? {
                0 => false,
                1 => true,
                b => return Err(format!("a FUSE_INIT record with io_uring {b}, not 0 or 1")),
            },
        };
        if r.take(5)? != [0; 5] {
            return Err("a FUSE_INIT record with its reserved bytes set".into());
        }
        Ok(init)
    }
}

/// The paths a daemon serves (absolute, as it resolved them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paths {
    pub(crate) mount: Option<PathBuf>,
    pub(crate) fifo: Option<PathBuf>,
}

impl Paths {
    fn shown(&self) -> String {
        let show = |p: &Option<PathBuf>| {
            p.as_deref()
                .map_or("none".into(), |p| printable(&p.display().to_string()))
        };
        format!("--mount {} --fifo {}", show(&self.mount), show(&self.fifo))
    }

    /// The name of the handover socket for these paths: after the mount
    /// point, or the FIFO of a daemon with no mount.
    fn socket_name(&self) -> Result<String, Error> {
        match self.mount.as_deref().or(self.fifo.as_deref()) {
            Some(key) => Ok(records::hashed_name("handover-", key)),
            None => Err(Error::usage(
                "handover: a daemon with neither a mount nor a FIFO",
            )),
        }
    }
}

/// What the old daemon hands over, beyond the paths both already know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offer<'a> {
    /// The FUSE connection, what its INIT settled and the mount point
    /// directory (open, and locked), if it serves one.
    pub(crate) fuse: Option<(BorrowedFd<'a>, Init, BorrowedFd<'a>)>,
    /// The mount's ID (`statx`'s `stx_mnt_id` of the mount point), 0 if
    /// none.
    pub(crate) mount_id: u64,
    /// The FIFO, open, if it serves one.
    pub(crate) fifo: Option<BorrowedFd<'a>>,
}

/// What the successor got: the old daemon's descriptors, now its own.
#[derive(Debug)]
pub(crate) struct Taken {
    /// The connection, what its INIT settled, the mount point directory.
    pub(crate) fuse: Option<(OwnedFd, Init, OwnedFd)>,
    pub(crate) mount_id: u64,
    pub(crate) fifo: Option<OwnedFd>,
    stream: OwnedFd,
}

impl Taken {
    /// Tells the old daemon that we hold its descriptors, so that it may
    /// let go and exit. Until then it serves on, and a `Taken` dropped
    /// without this leaves it serving.
    pub(crate) fn ack(&self) -> Result<(), Error> {
        send(self.stream.as_fd(), &header(Kind::Done), &[]).map_err(io_error("say done"))
    }
}

/// How long either side waits for the other's next message.
const PATIENCE: Duration = Duration::from_secs(10);

/// The longest path either side sends.
const PATH_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request = 1,
    Offer = 2,
    Refused = 3,
    Done = 4,
}

const MAGIC: &[u8; 4] = b"PLHO";
const HEADER: usize = 8;
/// The largest message: an offer with two longest paths.
const MESSAGE_MAX: usize = HEADER + Init::LEN + 8 + 2 * (2 + PATH_MAX);

fn header(kind: Kind) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[kind as u8, 0]);
    out
}

fn put_path(out: &mut Vec<u8>, path: Option<&Path>) {
    let bytes = path.map_or(&[][..], |p| p.as_os_str().as_bytes());
    let len = u16::try_from(bytes.len().min(PATH_MAX)).expect("PATH_MAX fits in u16");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

fn put_paths(out: &mut Vec<u8>, paths: &Paths) {
    put_path(out, paths.mount.as_deref());
    put_path(out, paths.fifo.as_deref());
}

/// Reads little-endian fields in order, saying what was cut short.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn path(&mut self) -> Result<Option<PathBuf>, String> {
        let len = usize::from(self.u16()?);
        if len > PATH_MAX {
            return Err(format!("a path of {len} bytes"));
        }
        let bytes = self.take(len)?;
        if bytes.contains(&0) {
            return Err("a path with a NUL byte".into());
        }
        Ok((len > 0).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(bytes))))
    }
    fn paths(&mut self) -> Result<Paths, String> {
        Ok(Paths {
            mount: self.path()?,
            fifo: self.path()?,
        })
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes too many", self.0.len()))
        }
    }
}

/// One message: its kind, its body and the descriptors it carried.
#[derive(Debug)]
struct Message {
    kind: Kind,
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Receives one whole message, or says why what came is not one (`what`
/// names the message expected, for the error).
fn receive(stream: BorrowedFd<'_>, what: &str) -> Result<Message, String> {
    let mut buf = vec![0u8; MESSAGE_MAX + 1];
    let got = loop {
        match raw::receive_with_fds(stream, &mut buf) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                return Err(format!("no {what} came within {} s", PATIENCE.as_secs()));
            }
            Err(e) => return Err(format!("{what}: {}", crate::error::describe(&e))),
            Ok(got) => break got,
        }
    };
    if got.len == 0 && got.fds.is_empty() {
        return Err(format!("the other daemon hung up before its {what}"));
    }
    if got.truncated || got.len > MESSAGE_MAX {
        return Err(format!("{what}: too long"));
    }
    let bytes = &buf[..got.len];
    let mut r = Fields(bytes);
    let parsed = (|| {
        if r.take(4)? != MAGIC {
            return Err("not a pilfered handover message".to_string());
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(format!(
                "handover version {version}; this pilfered speaks version {VERSION}"
            ));
        }
        let kind = match r.u8()? {
            1 => Kind::Request,
            2 => Kind::Offer,
            3 => Kind::Refused,
            4 => Kind::Done,
            k => return Err(format!("a message of unknown kind {k}")),
        };
        r.u8()?;
        Ok(kind)
    })();
    let kind = parsed.map_err(|e| format!("{what}: {e}"))?;
    Ok(Message {
        kind,
        body: bytes[HEADER..].to_vec(),
        fds: got.fds,
    })
}

fn send(stream: BorrowedFd<'_>, head: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    send_body(stream, head, &[], fds)
}

fn send_body(stream: BorrowedFd<'_>, head: &[u8], body: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    let iov = [IoSlice::new(head), IoSlice::new(body)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs = if fds.is_empty() { &[][..] } else { &cmsg[..] };
    loop {
        match socket::sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

fn refusal(why: &str) -> Vec<u8> {
    let mut out = header(Kind::Refused);
    let bytes = why.as_bytes();
    let len = u16::try_from(bytes.len().min(PATH_MAX)).expect("PATH_MAX fits in u16");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
    out
}

fn io_error(doing: &str) -> impl Fn(Errno) -> Error + '_ {
    move |e| Error::runtime(format!("handover: cannot {doing}: {}", e.desc()))
}

/// Refuses a peer that is not of our uid.
fn check_peer(uid: u32, me: u32) -> Result<(), String> {
    if uid == me {
        Ok(())
    } else {
        Err(format!(
            "the handover peer runs as uid {uid}, not as us (uid {me})"
        ))
    }
}

fn peer_check(stream: BorrowedFd<'_>) -> Result<i32, String> {
    let cred = socket::getsockopt(&stream, sockopt::PeerCredentials)
        .map_err(|e| format!("the handover peer's credentials: {}", e.desc()))?;
    check_peer(cred.uid(), trust::me())?;
    Ok(cred.pid())
}

fn set_patience(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let t = TimeVal::new(i64::try_from(PATIENCE.as_secs()).expect("a few seconds"), 0);
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &t)?;
    socket::setsockopt(&fd, sockopt::SendTimeout, &t)
}

/// The socket `name` in `dir`, as an address (through `/proc/self/fd`, so
/// that the state directory's own path length does not matter).
fn address(dir: BorrowedFd<'_>, name: &str) -> nix::Result<UnixAddr> {
    UnixAddr::new(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()).as_str())
}

fn seqpacket() -> nix::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// The running daemon's end: the socket a successor connects to. Dropping
/// it removes the socket.
#[derive(Debug)]
pub(crate) struct Listener {
    socket: OwnedFd,
    dir: OwnedFd,
    name: String,
    /// The socket file's device and inode, so that only ours is removed.
    id: (u64, u64),
    paths: Paths,
}

impl AsFd for Listener {
    /// Readable when a successor is waiting ([`Listener::accept`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Listener {
    /// Listens for a successor of the daemon serving `paths`, in `dir`.
    /// A socket left there by a daemon that died is replaced; one a live
    /// daemon listens on is an error, unless we are `replacing` that
    /// daemon: then ours takes its name at once (the old one keeps its
    /// socket, nameless, until it exits).
    pub(crate) fn bind(dir: &StateDir, paths: &Paths, replacing: bool) -> Result<Listener, Error> {
        let name = paths.socket_name()?;
        let shown = printable(&dir.path().join(&name).display().to_string());
        let failed = |e: Errno| Error::runtime(format!("handover socket {shown}: {}", e.desc()));
        let addr = address(dir.fd(), &name).map_err(failed)?;
        let socket = seqpacket().map_err(failed)?;
        let bound = if replacing {
            let staged = format!("{name}.{}", std::process::id());
            let _ = unlinkat(dir.fd(), staged.as_str(), UnlinkatFlags::NoRemoveDir);
            socket::bind(
                socket.as_raw_fd(),
                &address(dir.fd(), &staged).map_err(failed)?,
            )
            .and_then(|()| nix::fcntl::renameat(dir.fd(), staged.as_str(), dir.fd(), name.as_str()))
        } else {
            socket::bind(socket.as_raw_fd(), &addr)
        };
        match bound {
            Ok(()) => {}
            Err(Errno::EADDRINUSE) => {
                let probe = seqpacket().map_err(failed)?;
                match socket::connect(probe.as_raw_fd(), &addr) {
                    Err(Errno::ECONNREFUSED) => {
                        unlinkat(dir.fd(), name.as_str(), UnlinkatFlags::NoRemoveDir)
                            .map_err(failed)?;
                        socket::bind(socket.as_raw_fd(), &addr).map_err(failed)?;
                    }
                    Ok(()) => {
                        return Err(Error::runtime(format!(
                            "handover socket {shown}: another daemon listens on it"
                        )));
                    }
                    Err(e) => return Err(failed(e)),
                }
            }
            Err(e) => return Err(failed(e)),
        }
        let st = fstatat(dir.fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(failed)?;
        socket::listen(&socket, Backlog::new(4).expect("a small backlog")).map_err(failed)?;
        nix::fcntl::fcntl(
            &socket,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(failed)?;
        Ok(Listener {
            socket,
            dir: dir.fd().try_clone_to_owned().map_err(|e| {
                Error::runtime(format!(
                    "handover socket {shown}: {}",
                    crate::error::describe(&e)
                ))
            })?,
            name,
            id: (st.st_dev, st.st_ino),
            paths: paths.clone(),
        })
    }

    /// Takes the next successor waiting, if any (`None` when none is):
    /// checks that it is of our uid and asks for our very paths. A peer
    /// that fails this is told why and dropped, and the reason is the
    /// error, for the log: the daemon serves on.
    pub(crate) fn accept(&self) -> Result<Option<Pending>, Error> {
        // (Linux does not pass the listener's O_NONBLOCK on: the stream
        // blocks, up to PATIENCE.)
        let stream = match socket::accept4(&self.socket, SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => return Ok(None),
            Err(e) => return Err(io_error("accept a successor")(e)),
        };
        let refuse = |why: String| {
            let _ = send(stream.as_fd(), &refusal(&why), &[]);
            Err(Error::runtime(format!("handover refused: {why}")))
        };
        set_patience(stream.as_fd()).map_err(io_error("set the socket's timeouts"))?;
        let pid = match peer_check(stream.as_fd()) {
            Ok(pid) => pid,
            Err(why) => {
                // Its request first: closing on a message not read would
                // reset the connection, and the peer would never read why.
                let _ = receive(stream.as_fd(), "handover request");
                return refuse(why);
            }
        };
        let asked = match receive(stream.as_fd(), "handover request") {
            Ok(Message {
                kind: Kind::Request,
                body,
                fds,
            }) if fds.is_empty() => {
                let mut r = Fields(&body);
                match r.paths().and_then(|p| r.end().map(|()| p)) {
                    Ok(p) => p,
                    Err(e) => return refuse(format!("handover request: {e}")),
                }
            }
            Ok(m) => return refuse(format!("handover request: a message of kind {:?}", m.kind)),
            Err(e) => return refuse(e),
        };
        if asked != self.paths {
            return refuse(format!(
                "the running daemon serves {}, not {}; give --replace the same paths",
                self.paths.shown(),
                asked.shown()
            ));
        }
        Ok(Some(Pending {
            stream,
            pid,
            paths: asked,
        }))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let st = fstatat(&self.dir, self.name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW);
        if st.is_ok_and(|st| (st.st_dev, st.st_ino) == self.id) {
            let _ = unlinkat(&self.dir, self.name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// A successor that asked for our paths, waiting for the [`Offer`].
#[derive(Debug)]
pub(crate) struct Pending {
    stream: OwnedFd,
    pid: i32,
    /// Ours, which it asked for.
    paths: Paths,
}

impl Pending {
    /// The successor's PID, for the log.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `offer` (the caller has stopped serving at a request
    /// boundary) and waits until the successor says it holds the
    /// descriptors. An error means it does not: serve on.
    pub(crate) fn offer(self, offer: &Offer<'_>) -> Result<(), Error> {
        let mut body = Vec::new();
        match offer.fuse {
            Some((_, init, _)) => body.extend_from_slice(&init.encode()),
            None => body.extend_from_slice(&[0; Init::LEN]),
        }
        body.extend_from_slice(&offer.mount_id.to_le_bytes());
        put_paths(&mut body, &self.paths);
        let fds: Vec<RawFd> = offer
            .fuse
            .map(|(fd, _, dir)| [fd.as_raw_fd(), dir.as_raw_fd()])
            .into_iter()
            .flatten()
            .chain(offer.fifo.map(|fd| fd.as_raw_fd()))
            .collect();
        send_body(self.stream.as_fd(), &header(Kind::Offer), &body, &fds)
            .map_err(io_error("send the descriptors"))?;
        match receive(self.stream.as_fd(), "successor's done") {
            Ok(Message {
                kind: Kind::Done,
                fds,
                ..
            }) if fds.is_empty() => Ok(()),
            Ok(m) => Err(Error::runtime(format!(
                "handover: the successor sent a message of kind {:?} with {} descriptors, not done",
                m.kind,
                m.fds.len()
            ))),
            Err(e) => Err(Error::runtime(format!("handover: {e}"))),
        }
    }

    /// Tells the successor why it cannot take over (say, the daemon is
    /// stopping anyway).
    #[cfg(test)]
    pub(crate) fn refuse(self, why: &str) {
        let _ = send(self.stream.as_fd(), &refusal(why), &[]);
    }
}

/// Asks the daemon serving `paths`, if one listens in `dir`, to hand over
/// to us. `None`: no daemon listens there (start as usual). A refusal (say
/// for different paths) is an error with the old daemon's reason.
pub(crate) fn request(dir: &StateDir, paths: &Paths) -> Result<Option<Taken>, Error> {
    let name = paths.socket_name()?;
    let shown = printable(&dir.path().join(&name).display().to_string());
    let failed = |e: Errno| Error::runtime(format!("handover socket {shown}: {}", e.desc()));
    match fstatat(dir.fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(failed(e)),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK => {
            return Err(Error::runtime(format!(
                "handover socket {shown}: not a socket"
            )));
        }
        Ok(st) if st.st_uid != trust::me() => {
            return Err(Error::runtime(format!(
                "handover socket {shown}: owned by uid {}, not by us (uid {})",
                st.st_uid,
                trust::me()
            )));
        }
        Ok(_) => {}
    }
    let stream = seqpacket().map_err(failed)?;
    match socket::connect(
        stream.as_raw_fd(),
        &address(dir.fd(), &name).map_err(failed)?,
    ) {
        Err(Errno::ECONNREFUSED | Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(failed(e)),
        Ok(()) => {}
    }
    set_patience(stream.as_fd()).map_err(failed)?;
    peer_check(stream.as_fd()).map_err(|e| Error::runtime(format!("handover: {e}")))?;
    let mut ask = header(Kind::Request);
    put_paths(&mut ask, paths);
    send(stream.as_fd(), &ask, &[]).map_err(failed)?;
    let reply = receive(stream.as_fd(), "handover offer")
        .map_err(|e| Error::runtime(format!("handover: {e}")))?;
    decode_offer(reply, paths, stream)
}

fn decode_offer(reply: Message, paths: &Paths, stream: OwnedFd) -> Result<Option<Taken>, Error> {
    let bad = |e: String| Error::runtime(format!("handover offer: {e}"));
    let mut r = Fields(&reply.body);
    match reply.kind {
        Kind::Offer => {}
        Kind::Refused => {
            let len = usize::from(r.u16().map_err(bad)?);
            let why = String::from_utf8_lossy(r.take(len).map_err(bad)?);
            return Err(Error::usage(format!(
                "--replace: the running daemon refused: {}",
                printable(&why)
            )));
        }
        k => return Err(bad(format!("a message of kind {k:?}"))),
    }
    let record = r.take(Init::LEN).map_err(bad)?;
    let init = if record == [0; Init::LEN] {
        None
    } else {
        Some(Init::decode(record).map_err(bad)?)
    };
    let mount_id = r.u64().map_err(bad)?;
    let offered = r.paths().map_err(bad)?;
    r.end().map_err(bad)?;
    if offered != *paths {
        return Err(bad(format!(
            "it is for {}, not {}",
            offered.shown(),
            paths.shown()
        )));
    }
    let want = 2 * usize::from(init.is_some()) + usize::from(paths.fifo.is_some());
    if reply.fds.len() != want {
        return Err(bad(format!("{} descriptors, not {want}", reply.fds.len())));
    }
    let mut fds = reply.fds.into_iter();
    let fuse = init.map(|init| {
        let fd = fds.next().expect("counted");
        (fd, init, fds.next().expect("counted"))
    });
    let fifo = paths.fifo.as_ref().map(|_| fds.next().expect("counted"));
    if let Some((fd, _, _)) = &fuse {
        check_dev_fuse(fd.as_fd()).map_err(|e| bad(format!("its FUSE connection {e}")))?;
    }
    if let Some(fd) = &fifo {
        check_type(fd.as_fd(), SFlag::S_IFIFO).map_err(|e| bad(format!("its FIFO {e}")))?;
    }
    Ok(Some(Taken {
        fuse,
        mount_id,
        fifo,
        stream,
    }))
}

/// `/dev/fuse`'s device number (`misc` major 10, minor 229).
fn dev_fuse() -> u64 {
    nix::sys::stat::makedev(10, 229)
}

/// Whether `fd` is open on `/dev/fuse`, or what is wrong (worded to
/// follow the descriptor's name).
pub(crate) fn check_dev_fuse(fd: BorrowedFd<'_>) -> Result<(), String> {
    let st = check_type(fd, SFlag::S_IFCHR)?;
    if st.st_rdev == dev_fuse() {
        Ok(())
    } else {
        Err("is not /dev/fuse".into())
    }
}

fn check_type(fd: BorrowedFd<'_>, kind: SFlag) -> Result<nix::sys::stat::FileStat, String> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("cannot be examined: {}", e.desc()))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind {
        Ok(st)
    } else if kind == SFlag::S_IFIFO {
        Err("is not a FIFO".into())
    } else {
        Err("is not /dev/fuse".into())
    }
}

#[cfg(test)]
mod tests;
