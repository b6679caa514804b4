use super::*;

use std::os::unix::net::UnixDatagram;

use nix::sys::stat::fstat;

use crate::sys::raw;

const STATE_NOW: State = State {
    init: Init {
        minor: 45,
        flags: 0x21,
        max_readahead: 131_072,
        max_write: 4096,
        max_pages: 256,
        uring: false,
    },
    mount_id: 0x1234_5678_9abc,
};

fn dev_fuse_fd() -> OwnedFd {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .expect("/dev/fuse")
        .into()
}

fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let (a, b) = (fstat(a).unwrap(), fstat(b).unwrap());
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

#[test]
fn the_state_memfd_round_trips_and_is_sealed() {
    let fd = state_memfd(&STATE_NOW).unwrap();
    assert_eq!(read_state(fd.as_fd()), Ok(STATE_NOW));
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    assert!(
        link.to_string_lossy().starts_with("/memfd:pilfered-init"),
        "{link:?}"
    );
    // Nobody writes it again, not even its maker.
    assert_eq!(nix::sys::uio::pwrite(&fd, b"x", 0), Err(Errno::EPERM));
    assert_eq!(nix::unistd::ftruncate(&fd, 1), Err(Errno::EPERM));

    // A plain file, an unsealed memfd and one of the wrong length are not it.
    let file = tempfile::tempfile().unwrap();
    assert!(
        read_state(file.as_fd())
            .unwrap_err()
            .starts_with("not a sealed memfd")
    );
    let open = memfd_create("x", MFdFlags::MFD_ALLOW_SEALING).unwrap();
    assert_eq!(
        read_state(open.as_fd()),
        Err("a memfd that is not sealed against change".into())
    );
    nix::sys::uio::pwrite(&open, &STATE_NOW.init.encode(), 0).unwrap();
    fcntl(&open, FcntlArg::F_ADD_SEALS(seals())).unwrap();
    assert_eq!(read_state(open.as_fd()), Err("40 bytes, not 48".into()));
}

/// What arrives at a notify socket, text and descriptors.
fn received(socket: &UnixDatagram) -> (String, Vec<OwnedFd>) {
    let mut buf = [0u8; 4096];
    let got = raw::receive_with_fds(socket.as_fd(), &mut buf).unwrap();
    (String::from_utf8(buf[..got.len].to_vec()).unwrap(), got.fds)
}

#[test]
fn notifications_reach_a_path_and_an_abstract_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let manager = UnixDatagram::bind(&path).unwrap();
    let file = tempfile::tempfile().unwrap();
    notify_to(path.as_os_str(), &store_text(FUSE), &[file.as_fd()]).unwrap();
    let (text, fds) = received(&manager);
    assert_eq!(text, "FDSTORE=1\nFDNAME=fuse\n");
    assert_eq!(fds.len(), 1);
    assert!(same_file(fds[0].as_fd(), file.as_fd()));

    let name = format!("pilfered-test-notify-{}", std::process::id());
    let abstract_ = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(
        abstract_.as_raw_fd(),
        &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
    )
    .unwrap();
    let manager = UnixDatagram::from(abstract_);
    notify_to(OsStr::new(&format!("@{name}")), &remove_text(STATE), &[]).unwrap();
    let (text, fds) = received(&manager);
    assert_eq!(text, "FDSTOREREMOVE=1\nFDNAME=fuse-state\n");
    assert!(fds.is_empty());

    assert_eq!(
        notify_to(dir.path().join("nobody").as_os_str(), "READY=1\n", &[]),
        Err(Errno::ENOENT)
    );
}

fn named(fd: OwnedFd, name: &str) -> (OwnedFd, String) {
    (fd, name.to_string())
}

#[test]
fn what_systemd_passed_is_sorted_by_name() {
    let fifo = || tempfile::tempfile().unwrap().into();
    let passed = sort(vec![]).unwrap();
    assert!(passed.fifo.is_none() && passed.fuse.is_none());

    let passed = sort(vec![named(fifo(), "pilfered.socket")]).unwrap();
    assert_eq!(passed.fifo.unwrap().1, "pilfered.socket");
    assert!(passed.fuse.is_none());

    let fuse = dev_fuse_fd();
    let want = fstat(fuse.as_fd()).unwrap().st_ino;
    let dir = || std::fs::File::open("/").unwrap().into();
    let passed = sort(vec![
        named(fifo(), "pilfered.socket"),
        named(state_memfd(&STATE_NOW).unwrap(), STATE),
        named(dir(), DIR),
        named(fuse, FUSE),
    ])
    .unwrap();
    let (fd, state, root) = passed.fuse.unwrap();
    assert_eq!(state, STATE_NOW);
    assert_eq!(fstat(fd.as_fd()).unwrap().st_ino, want);
    assert_eq!(
        fstat(root.as_fd()).unwrap().st_ino,
        fstat(dir().as_fd()).unwrap().st_ino
    );
    assert!(passed.fifo.is_some());

    let refused = |fds| sort(fds).unwrap_err().to_string();
    assert_eq!(
        refused(vec![named(dev_fuse_fd(), FUSE)]),
        "LISTEN_FDS: systemd passed a stored FUSE connection (fuse) without its fuse-state, so what its FUSE_INIT settled is unknown"
    );
    assert_eq!(
        refused(vec![named(state_memfd(&STATE_NOW).unwrap(), STATE)]),
        "LISTEN_FDS: systemd passed a stored fuse-state without its FUSE connection (fuse)"
    );
    assert_eq!(
        refused(vec![
            named(fifo(), FUSE),
            named(state_memfd(&STATE_NOW).unwrap(), STATE)
        ]),
        "LISTEN_FDS: the descriptor stored as fuse is not /dev/fuse"
    );
    assert_eq!(
        refused(vec![
            named(dev_fuse_fd(), FUSE),
            named(state_memfd(&STATE_NOW).unwrap(), STATE)
        ]),
        "LISTEN_FDS: systemd passed a stored FUSE connection (fuse) without its mount point (fuse-dir)"
    );
    assert_eq!(
        refused(vec![named(dir(), DIR)]),
        "LISTEN_FDS: systemd passed a stored fuse-dir without its FUSE connection (fuse)"
    );
    assert_eq!(
        refused(vec![named(dev_fuse_fd(), FUSE), named(fifo(), STATE)]),
        "LISTEN_FDS: the stored fuse-state is not what a pilfered daemon stored: not a sealed memfd (Invalid argument)"
    );
    assert!(
        refused(vec![named(dev_fuse_fd(), FUSE), named(dev_fuse_fd(), FUSE)])
            .starts_with("LISTEN_FDS: systemd passed two descriptors named fuse;")
    );
    assert_eq!(
        refused(vec![named(fifo(), "a.socket"), named(fifo(), "b.socket")]),
        "LISTEN_FDS: systemd passed 2 descriptors from the socket unit; pilfered serves one FIFO, so give the socket unit one ListenFIFO= and nothing else"
    );
}

/// With no manager, nothing is stored and that is said.
#[test]
fn without_a_manager_nothing_is_stored() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        panic!("this test must not run under a service manager's NOTIFY_SOCKET");
    }
    assert_eq!(
        store_connection(dev_fuse_fd().as_fd(), dev_fuse_fd().as_fd(), &STATE_NOW),
        Ok(false)
    );
    assert_eq!(forget_connection(), Ok(false));
}
