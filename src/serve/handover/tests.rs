use super::*;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::fstat;

const INIT: Init = Init {
    minor: 45,
    flags: 0x0000_0200_4040_0021,
    max_readahead: 131_072,
    max_write: 4096,
    max_pages: 256,
    uring: true,
};

fn paths(mount: &str, fifo: Option<&str>) -> Paths {
    Paths {
        mount: Some(PathBuf::from(mount)),
        fifo: fifo.map(PathBuf::from),
    }
}

fn state_dir() -> (tempfile::TempDir, StateDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&tmp.path().canonicalize().unwrap().join("run")).unwrap();
    (tmp, dir)
}

/// Waits (up to a deadline) for a successor and accepts it.
fn accept(listener: &Listener) -> Result<Pending, Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no successor came");
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis().min(10_000)).unwrap();
        poll(&mut fds, PollTimeout::from(ms)).unwrap();
        if let Some(p) = listener.accept()? {
            return Ok(p);
        }
    }
}

/// Accepts the next successor and makes it `offer`.
fn offer_to_next(listener: &Listener, offer: &Offer<'_>) -> Result<(), Error> {
    accept(listener).unwrap().offer(offer)
}

fn dev_fuse() -> OwnedFd {
    let mut file = std::fs::File::options();
    file.read(true).write(true);
    file.open("/dev/fuse").expect("/dev/fuse").into()
}

fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) {
    let (a, b) = (fstat(a).unwrap(), fstat(b).unwrap());
    assert_eq!(
        (a.st_dev, a.st_ino, a.st_rdev),
        (b.st_dev, b.st_ino, b.st_rdev)
    );
}

#[test]
fn the_init_record_round_trips_and_garbage_is_refused() {
    let bytes = INIT.encode();
    assert_eq!(Init::decode(&bytes), Ok(INIT));
    let no_uring = Init {
        uring: false,
        ..INIT
    };
    assert_eq!(Init::decode(&no_uring.encode()), Ok(no_uring));
    // The layout, field by field, as the module docs give it.
    assert_eq!(&bytes[..8], b"pilfINIT");
    assert_eq!(bytes[8..12], 1u32.to_le_bytes());
    assert_eq!(bytes[12..16], 45u32.to_le_bytes());
    assert_eq!(bytes[16..24], INIT.flags.to_le_bytes());
    assert_eq!(bytes[24..28], 131_072u32.to_le_bytes());
    assert_eq!(bytes[28..32], 4096u32.to_le_bytes());
    assert_eq!(bytes[32..34], 256u16.to_le_bytes());
    assert_eq!(bytes[34..], [1, 0, 0, 0, 0, 0]);

    let with = |at: usize, b: u8| {
        let mut x = bytes;
        x[at] = b;
        Init::decode(&x)
    };
    assert_eq!(
        Init::decode(&bytes[..39]),
        Err("the FUSE_INIT record is 39 bytes, not 40".into())
    );
    assert_eq!(
        Init::decode(&[bytes.as_slice(), &[0]].concat()),
        Err("the FUSE_INIT record is 41 bytes, not 40".into())
    );
    assert_eq!(with(0, b'X'), Err("not a pilfered FUSE_INIT record".into()));
    assert_eq!(
        with(8, 2),
        Err("a FUSE_INIT record of version 2; this pilfered reads version 1".into())
    );
    assert_eq!(
        with(34, 2),
        Err("a FUSE_INIT record with io_uring 2, not 0 or 1".into())
    );
    assert_eq!(
        with(39, 1),
        Err("a FUSE_INIT record with its reserved bytes set".into())
    );
}

/// The whole handover over a real socket in a state directory: the
/// successor gets the very files (same inode), the INIT record and the
/// mount ID, and the old daemon learns that it holds them.
#[test]
fn a_handover_passes_the_descriptors_and_the_init() {
    let (_tmp, dir) = state_dir();
    let served = paths("/mnt/p", Some("/tmp/p.fifo"));
    let listener = Listener::bind(&dir, &served, false).unwrap();
    let sock = dir
        .path()
        .join(records::hashed_name("handover-", Path::new("/mnt/p")));
    assert!(sock.exists(), "{}", sock.display());
    let fuse = dev_fuse();
    let (fifo, _w) = nix::unistd::pipe().unwrap();
    let mount_dir: OwnedFd = std::fs::File::open(_tmp.path()).unwrap().into();

    let (fuse2, dir2, fifo2) = std::thread::scope(|s| {
        let successor = s.spawn(|| {
            let taken = request(&dir, &served).unwrap().expect("a daemon listens");
            taken.ack().unwrap();
            taken
        });
        let pending = accept(&listener).unwrap();
        assert_eq!(pending.pid(), i32::try_from(std::process::id()).unwrap());
        let offer = Offer {
            fuse: Some((fuse.as_fd(), INIT, mount_dir.as_fd())),
            mount_id: 77,
            fifo: Some(fifo.as_fd()),
        };
        pending.offer(&offer).unwrap();
        let taken = successor.join().unwrap();
        assert_eq!(taken.mount_id, 77);
        let (fuse2, init, dir2) = taken.fuse.unwrap();
        assert_eq!(init, INIT);
        (fuse2, dir2, taken.fifo.unwrap())
    });
    same_file(fuse.as_fd(), fuse2.as_fd());
    same_file(mount_dir.as_fd(), dir2.as_fd());
    same_file(fifo.as_fd(), fifo2.as_fd());
    assert_ne!(fifo.as_raw_fd(), fifo2.as_raw_fd(), "a new descriptor");

    drop(listener);
    assert!(!sock.exists(), "the listener's socket stays behind");
}

/// A daemon with no FUSE mount hands over its FIFO alone; one with no
/// FIFO its connection alone.
#[test]
fn a_handover_passes_only_what_is_served() {
    let (_tmp, dir) = state_dir();
    let (fifo, _w) = nix::unistd::pipe().unwrap();
    let fuse = dev_fuse();
    for served in [
        Paths {
            mount: None,
            fifo: Some("/tmp/only.fifo".into()),
        },
        paths("/mnt/only", None),
    ] {
        let listener = Listener::bind(&dir, &served, false).unwrap();
        std::thread::scope(|s| {
            let successor = s.spawn(|| {
                let taken = request(&dir, &served).unwrap().unwrap();
                taken.ack().unwrap();
                taken
            });
            let offer = Offer {
                fuse: served
                    .mount
                    .as_ref()
                    .map(|_| (fuse.as_fd(), INIT, fuse.as_fd())),
                mount_id: 0,
                fifo: served.fifo.as_ref().map(|_| fifo.as_fd()),
            };
            offer_to_next(&listener, &offer).unwrap();
            let taken = successor.join().unwrap();
            assert_eq!(taken.fuse.is_some(), served.mount.is_some());
            assert_eq!(taken.fifo.is_some(), served.fifo.is_some());
        });
    }
}

#[test]
fn with_no_daemon_there_is_nothing_to_take_over() {
    let (_tmp, dir) = state_dir();
    let served = paths("/mnt/p", Some("/tmp/p.fifo"));
    assert!(request(&dir, &served).unwrap().is_none());
    // A socket left by a daemon that was killed: nobody listens on it.
    let name = records::hashed_name("handover-", Path::new("/mnt/p"));
    let stale = seqpacket().unwrap();
    socket::bind(stale.as_raw_fd(), &address(dir.fd(), &name).unwrap()).unwrap();
    drop(stale);
    assert!(dir.path().join(&name).exists());
    assert!(request(&dir, &served).unwrap().is_none());
    // The next daemon listens there in its place; a second one cannot.
    let listener = Listener::bind(&dir, &served, false).unwrap();
    let e = Listener::bind(&dir, &served, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "handover socket {}: another daemon listens on it",
            dir.path().join(&name).display()
        )
    );
    drop(listener);
}

#[test]
fn different_paths_are_refused_on_both_sides() {
    let (_tmp, dir) = state_dir();
    let served = paths("/mnt/p", Some("/tmp/p.fifo"));
    let listener = Listener::bind(&dir, &served, false).unwrap();
    let asked = paths("/mnt/p", Some("/tmp/other.fifo"));
    let why = "the running daemon serves --mount /mnt/p --fifo /tmp/p.fifo, not --mount /mnt/p --fifo /tmp/other.fifo; give --replace the same paths";
    std::thread::scope(|s| {
        let successor = s.spawn(|| request(&dir, &asked).unwrap_err());
        let e = accept(&listener).unwrap_err();
        assert_eq!(e, Error::runtime(format!("handover refused: {why}")));
        assert_eq!(
            successor.join().unwrap(),
            Error::usage(format!("--replace: the running daemon refused: {why}"))
        );
    });
    // The old daemon serves on: the next successor with the right paths
    // gets through.
    std::thread::scope(|s| {
        let successor = s.spawn(|| request(&dir, &served).map(|t| t.is_some()));
        let offer = Offer {
            fuse: None,
            mount_id: 0,
            fifo: None,
        };
        // An offer without the FIFO the paths name is one the successor
        // refuses: it never acks, and the old daemon hears so.
        let e = offer_to_next(&listener, &offer).unwrap_err();
        assert_eq!(
            e.to_string(),
            "handover: the other daemon hung up before its successor's done"
        );
        assert_eq!(
            successor.join().unwrap().unwrap_err().to_string(),
            "handover offer: 0 descriptors, not 1"
        );
    });
}

/// A daemon that is stopping anyway may turn a successor away; and a
/// "done" that carries descriptors is no done.
#[test]
fn a_daemon_may_refuse_and_a_successor_must_say_done_plainly() {
    let (_tmp, dir) = state_dir();
    let served = paths("/mnt/p", None);
    let listener = Listener::bind(&dir, &served, false).unwrap();
    std::thread::scope(|s| {
        let successor = s.spawn(|| request(&dir, &served).unwrap_err());
        accept(&listener).unwrap().refuse("it is stopping");
        assert_eq!(
            successor.join().unwrap(),
            Error::usage("--replace: the running daemon refused: it is stopping")
        );
    });
    let file = dev_fuse();
    std::thread::scope(|s| {
        let successor = s.spawn(|| {
            let taken = request(&dir, &served).unwrap().unwrap();
            send(
                taken.stream.as_fd(),
                &header(Kind::Done),
                &[file.as_raw_fd()],
            )
            .unwrap();
            taken
        });
        let offer = Offer {
            fuse: Some((file.as_fd(), INIT, file.as_fd())),
            mount_id: 0,
            fifo: None,
        };
        let e = offer_to_next(&listener, &offer).unwrap_err();
        assert_eq!(
            e.to_string(),
            "handover: the successor sent a message of kind Done with 1 descriptors, not done"
        );
        drop(successor.join().unwrap());
    });
}

/// Raw bytes from a peer that is not a pilfered successor, or an old or
/// broken one: each is refused with a reason, on both ends.
#[test]
fn garbage_and_truncated_requests_are_refused() {
    let (_tmp, dir) = state_dir();
    let served = paths("/mnt/p", Some("/tmp/p.fifo"));
    let listener = Listener::bind(&dir, &served, false).unwrap();
    let name = served.socket_name().unwrap();
    let mut valid = header(Kind::Request);
    put_paths(&mut valid, &served);
    let mut v2 = valid.clone();
    v2[4] = 2;
    let mut offer = valid.clone();
    offer[6] = 2;
    let mut odd = valid.clone();
    odd[6] = 9;
    for (bytes, why) in [
        (
            &b"hello, daemon"[..],
            "handover request: not a pilfered handover message",
        ),
        (&valid[..5], "handover request: cut short"),
        (&valid[..valid.len() - 3], "handover request: cut short"),
        (
            &[valid.as_slice(), b"xx"].concat(),
            "handover request: 2 bytes too many",
        ),
        (
            &v2,
            "handover request: handover version 2; this pilfered speaks version 1",
        ),
        (&offer, "handover request: a message of kind Offer"),
        (&odd, "handover request: a message of unknown kind 9"),
        (&[], "the other daemon hung up before its handover request"),
    ] {
        let peer = seqpacket().unwrap();
        socket::connect(peer.as_raw_fd(), &address(dir.fd(), &name).unwrap()).unwrap();
        send(peer.as_fd(), bytes, &[]).unwrap();
        if bytes.is_empty() {
            // An empty message reads as a hang-up: say so by hanging up.
            socket::shutdown(peer.as_raw_fd(), socket::Shutdown::Write).unwrap();
        }
        let e = accept(&listener).unwrap_err();
        assert_eq!(e, Error::runtime(format!("handover refused: {why}")));
        let reply = receive(peer.as_fd(), "refusal").unwrap();
        assert_eq!(reply.kind, Kind::Refused);
        let mut r = Fields(&reply.body);
        let len = usize::from(r.u16().unwrap());
        assert_eq!(r.take(len).unwrap(), why.as_bytes());
    }
}

/// Over a socketpair: descriptors arrive as the same files, and a message
/// too long, with too many descriptors, or an empty one is refused.
#[test]
fn messages_over_a_socketpair() {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let file = tempfile::tempfile().unwrap();
    let raw = [file.as_raw_fd(), file.as_raw_fd()];
    send(a.as_fd(), &header(Kind::Done), &raw).unwrap();
    let m = receive(b.as_fd(), "done").unwrap();
    assert_eq!(m.kind, Kind::Done);
    assert_eq!(m.fds.len(), 2);
    same_file(m.fds[1].as_fd(), file.as_fd());

    send_body(a.as_fd(), &header(Kind::Done), &vec![0; MESSAGE_MAX], &[]).unwrap();
    assert_eq!(receive(b.as_fd(), "done").unwrap_err(), "done: too long");
    // As many descriptors as a message can carry all arrive (and close).
    let many = [file.as_raw_fd(); raw::MAX_RECEIVED_FDS];
    send(a.as_fd(), &header(Kind::Done), &many).unwrap();
    assert_eq!(receive(b.as_fd(), "done").unwrap().fds.len(), many.len());
    // An offer whose descriptors are not those it names.
    let mut body = INIT.encode().to_vec();
    body.extend_from_slice(&0u64.to_le_bytes());
    let served = paths("/mnt/p", Some("/tmp/p.fifo"));
    put_paths(&mut body, &served);
    send_body(a.as_fd(), &header(Kind::Offer), &body, &raw[..1]).unwrap();
    let m = receive(b.as_fd(), "offer").unwrap();
    let e = decode_offer(m, &served, a.try_clone().unwrap()).unwrap_err();
    assert_eq!(e.to_string(), "handover offer: 1 descriptors, not 3");
    // One whose descriptors are not what they are said to be.
    let fuse = dev_fuse();
    for (fds, why) in [
        (
            [file.as_raw_fd(), file.as_raw_fd(), file.as_raw_fd()],
            "its FUSE connection is not /dev/fuse",
        ),
        (
            [fuse.as_raw_fd(), file.as_raw_fd(), file.as_raw_fd()],
            "its FIFO is not a FIFO",
        ),
    ] {
        send_body(a.as_fd(), &header(Kind::Offer), &body, &fds).unwrap();
        let m = receive(b.as_fd(), "offer").unwrap();
        let e = decode_offer(m, &served, a.try_clone().unwrap()).unwrap_err();
        assert_eq!(e.to_string(), format!("handover offer: {why}"));
    }
    // And one for other paths.
    send_body(a.as_fd(), &header(Kind::Offer), &body, &raw).unwrap();
    let m = receive(b.as_fd(), "offer").unwrap();
    let other = paths("/mnt/q", Some("/tmp/p.fifo"));
    let e = decode_offer(m, &other, a.try_clone().unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "handover offer: it is for --mount /mnt/p --fifo /tmp/p.fifo, not --mount /mnt/q --fifo /tmp/p.fifo"
    );
    drop(a);
    assert_eq!(
        receive(b.as_fd(), "offer").unwrap_err(),
        "the other daemon hung up before its offer"
    );
}

#[test]
fn a_peer_of_another_uid_is_refused() {
    assert_eq!(check_peer(1000, 1000), Ok(()));
    assert_eq!(
        check_peer(65534, 0),
        Err("the handover peer runs as uid 65534, not as us (uid 0)".into())
    );
    if trust::me() != 0 {
        eprintln!("not root: the test as another user needs root; check_peer alone was tested");
        return;
    }
    // A real peer as uid 65534: the test binary again, under setpriv. It
    // may reach the socket (the directory is searchable, the socket
    // writable by all), so only SO_PEERCRED stops it.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = StateDir::open(&base.join("run")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let served = paths("/mnt/p", Some("/tmp/p.fifo"));
    let listener = Listener::bind(&dir, &served, false).unwrap();
    let sock = dir.path().join(served.socket_name().unwrap());
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let child = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "serve::handover::tests::peer_as_another_user"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(PEER_ENV, &sock)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv");
    let e = accept(&listener).unwrap_err();
    let why = "the handover peer runs as uid 65534, not as us (uid 0)";
    assert_eq!(e, Error::runtime(format!("handover refused: {why}")));
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("refused: {why}")), "{text}");
}

const PEER_ENV: &str = "PILFERED_TEST_HANDOVER_PEER";

/// The peer of [`a_peer_of_another_uid_is_refused`], run by it as another
/// user: asks for the paths and prints the answer.
#[test]
#[ignore = "run by a_peer_of_another_uid_is_refused, as uid 65534"]
fn peer_as_another_user() {
    let sock = std::env::var_os(PEER_ENV).expect("run by a_peer_of_another_uid_is_refused");
    let peer = seqpacket().unwrap();
    socket::connect(peer.as_raw_fd(), &UnixAddr::new(Path::new(&sock)).unwrap()).unwrap();
    let mut ask = header(Kind::Request);
    put_paths(&mut ask, &paths("/mnt/p", Some("/tmp/p.fifo")));
    // (The daemon may have refused and hung up before this arrives.)
    let _ = send(peer.as_fd(), &ask, &[]);
    let reply = receive(peer.as_fd(), "offer").unwrap();
    assert_eq!(reply.kind, Kind::Refused, "not refused");
    assert!(reply.fds.is_empty(), "descriptors for another user");
    let mut r = Fields(&reply.body);
    let len = usize::from(r.u16().unwrap());
    let why = String::from_utf8_lossy(r.take(len).unwrap()).into_owned();
    println!("refused: {why}");
    std::io::stdout().flush().unwrap();
}
