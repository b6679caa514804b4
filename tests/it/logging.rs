//! Log levels with a real mount: `-vv` shows pilfered's own detail without
//! the line per FUSE request, which `-vvv` adds.

use std::io::Read;

use crate::common::{Daemon, fuse_available};

/// Starts a FUSE-only daemon with `flag`, reads from it, and returns its log.
fn log_with(flag: &str) -> String {
    let d = Daemon::start(&["--no-fifo", flag]);
    let mut buf = vec![0; 4096];
    std::fs::File::open(d.bits())
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    d.log_text()
}

#[test]
fn request_lines_only_with_three_v() {
    if !fuse_available() {
        return;
    }
    let vv = log_with("-vv");
    assert!(vv.contains(" pilfered::serve::daemon] serving:"), "{vv}");
    let requests = " pilfered::serve::fuse::requests] request ";
    assert!(!vv.contains(requests), "request lines at -vv:\n{vv}");

    let vvv = log_with("-vvv");
    assert!(vvv.contains(" pilfered::serve::daemon] serving:"), "{vvv}");
    // The lookup, open, read and release of `bits` at least.
    assert!(
        vvv.lines().filter(|l| l.contains(requests)).count() >= 4,
        "-vvv should show a line per request:\n{vvv}"
    );
}
