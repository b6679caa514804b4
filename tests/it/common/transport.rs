//! The FUSE transport a test runs its daemon over, and the kernel switch
//! (`/sys/module/fuse/parameters/enable_uring`) that io_uring needs.
//!
//! The switch is machine-wide, and tests run in parallel: tests that need
//! it on share it ([`uring_on`]), tests that need it off hold it alone
//! ([`uring_off`]), and whoever is last restores the value found. Tests
//! that do not say leave it as it is (their daemons' `auto` then takes
//! whatever is offered, and both transports must serve alike anyway).

use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};

/// The kernel's switch for FUSE over io_uring.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// How a test's daemon serves the FUSE file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Legacy,
    IoUring,
}

impl Transport {
    /// The daemon's options that ask for this transport.
    pub fn args(self) -> [&'static str; 2] {
        match self {
            Transport::Legacy => ["--fuse-transport", "legacy"],
            Transport::IoUring => ["--fuse-transport", "io-uring"],
        }
    }
}

/// Who holds the switch: how many want it on, whether one wants it off,
/// and the value it had before the first of them.
#[derive(Debug)]
struct Holders {
    on: usize,
    off: bool,
    before: Option<String>,
}

static HOLDERS: Mutex<Holders> = Mutex::new(Holders {
    on: 0,
    off: false,
    before: None,
});
static CHANGED: Condvar = Condvar::new();

/// Fails the test unless this kernel has the switch (FUSE over io_uring,
/// Linux 6.14+). Outside CI a developer may opt out with
/// PILFERED_SKIP_URING_TESTS=1, and the test then says so.
pub fn uring_available() -> bool {
    if Path::new(ENABLE_URING).exists() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ci && std::env::var("PILFERED_SKIP_URING_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: {ENABLE_URING} is missing and PILFERED_SKIP_URING_TESTS=1");
        return false;
    }
    panic!(
        "{ENABLE_URING} is missing: this kernel has no FUSE over io_uring, so the io_uring tests cannot run (CI={ci})"
    );
}

/// The switch held on (or off) while this lives.
#[derive(Debug)]
pub struct Switch {
    on: bool,
}

fn set(value: &str) {
    std::fs::write(ENABLE_URING, value)
        .unwrap_or_else(|e| panic!("cannot write {ENABLE_URING} (run the tests as root): {e}"));
}

fn hold(on: bool) -> Switch {
    let mut h = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
    // On is shared, off is alone.
    while h.off || (!on && h.on > 0) {
        h = CHANGED.wait(h).unwrap_or_else(PoisonError::into_inner);
    }
    if h.before.is_none() {
        let now = std::fs::read_to_string(ENABLE_URING).expect("the switch exists");
        h.before = Some(now.trim().to_string());
    }
    if on {
        if h.on == 0 {
            set("1");
        }
        h.on += 1;
    } else {
        set("0");
        h.off = true;
    }
    Switch { on }
}

/// Turns FUSE over io_uring on until the guard goes (shared).
pub fn uring_on() -> Switch {
    hold(true)
}

/// Turns FUSE over io_uring off until the guard goes (alone).
pub fn uring_off() -> Switch {
    hold(false)
}

impl Drop for Switch {
    fn drop(&mut self) {
        let mut h = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        if self.on {
            h.on -= 1;
        } else {
            h.off = false;
        }
        if h.on == 0
            && !h.off
            && let Some(before) = h.before.take()
        {
            let _ = std::fs::write(ENABLE_URING, before);
        }
        CHANGED.notify_all();
    }
}

/// The number of FUSE queues the kernel makes: one per possible CPU.
pub fn kernel_queues() -> u64 {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    list.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// Defines `fn NAME(t: Transport)` and, in a module of the same name, a
/// test of it over each transport: `NAME::legacy` and `NAME::io_uring`.
macro_rules! on_both_transports {
    ($(#[$meta:meta])* fn $name:ident($t:ident: Transport) $body:block) => {
        $(#[$meta])*
        fn $name($t: $crate::common::Transport) $body

        mod $name {
            #[test]
            fn legacy() {
                super::$name($crate::common::Transport::Legacy);
            }

            #[test]
            fn io_uring() {
                super::$name($crate::common::Transport::IoUring);
            }
        }
    };
}
pub(crate) use on_both_transports;
