//! The messages README.md and docs/ quote are the binary's own: every line
//! they show starting `pilfered: ` is either produced here by running the
//! binary (with the quoted paths mapped to temporary ones) or, where that
//! needs a machine set up otherwise (no /dev/fuse, a normal user, no RDSEED),
//! asserted word for word by the test named for it.

use std::path::Path;
use std::process::Command;

use crate::common::{BIN, open_dir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every quoted `pilfered: ` line in README.md and docs/*.md, once each.
fn quoted_messages() -> Vec<String> {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    for e in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        files.push(e.unwrap().path());
    }
    let mut out = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            // In a code block, or inline in backticks.
            let line = line.trim_start_matches(['-', ' ']);
            let text = line
                .strip_prefix('`')
                .and_then(|l| l.split_once('`').map(|(m, _)| m))
                .unwrap_or(line);
            if text.starts_with("pilfered: ") && !out.iter().any(|m| m == text) {
                out.push(text.to_string());
            }
        }
    }
    out
}

/// How a quoted message is checked.
enum Check {
    /// Run `pilfered ARGS` (`{T}` is a temporary directory, made first with
    /// `dirs` inside it) and compare its stderr, `{T}` shown as nothing.
    Run(&'static [&'static str], &'static [&'static str]),
    /// Asserted exactly by the test in this file (of tests/it/); the
    /// fragment must be in both the quote and that file.
    AssertedIn(&'static str, &'static str),
}

const CHECKS: &[(&str, Check)] = &[
    ("'--mout' found", Check::Run(&["serve", "--mout", "x"], &[])),
    ("roll 3d6+x", Check::Run(&["roll", "3d6+x"], &[])),
    (
        "--fuse-transport io-uring: ",
        Check::AssertedIn(
            "fuse.rs",
            "FUSE over io_uring is off in this kernel; turn it on as root with 'echo 1 > ",
        ),
    ),
    (
        "roll d20+2000000000",
        Check::Run(&["roll", "d20+2000000000"], &[]),
    ),
    (
        "--allow-other: a normal user",
        Check::AssertedIn(
            "hardening.rs",
            "only if /etc/fuse.conf contains the line 'user_allow_other'; add it (as root) or run as root",
        ),
    ),
    (
        "/dev/fuse does not exist",
        Check::AssertedIn(
            "hardening.rs",
            "/dev/fuse does not exist; load the fuse module ('modprobe fuse'), or run with --no-fuse to serve only the FIFO",
        ),
    ),
    (
        "cannot open /dev/fuse",
        Check::AssertedIn(
            "hardening.rs",
            "cannot open /dev/fuse: Permission denied (fusermount3 opens it as you too); run as root or get read-write access to it, or run with --no-fuse to serve only the FIFO",
        ),
    ),
    (
        "needs fusermount3",
        Check::AssertedIn(
            "hardening.rs",
            "mounting as a normal user needs fusermount3, which is not installed; install the fuse3 package, run as root, or run with --no-fuse to serve only the FIFO",
        ),
    ),
    (
        "notes.txt: is a regular file",
        Check::Run(
            &["serve", "--no-fuse", "--fifo", "{T}/tmp/notes.txt"],
            &["tmp", "tmp/notes.txt/"],
        ),
    ),
    (
        "nothing is mounted there",
        Check::Run(
            &["status", "--interval", "0", "--mount", "{T}/mnt/pilfered"],
            &["mnt/pilfered"],
        ),
    ),
    (
        "nothing is mounted there (/mnt/pilfered does not exist)",
        Check::Run(
            &["status", "--interval", "0", "--mount", "{T}/mnt/pilfered"],
            &["mnt"],
        ),
    ),
    (
        "Transport endpoint is not connected (the daemon died",
        Check::AssertedIn(
            "status.rs",
            "stats: Transport endpoint is not connected (the daemon died and left its mount behind; 'pilfered-umount ",
        ),
    ),
    (
        "/stats: Permission denied: the pilfered daemon there",
        Check::AssertedIn(
            "status.rs",
            "/stats: Permission denied: the pilfered daemon there lets only its own user (or its --group) read; start it with --group NAME and be a member of NAME, or with --allow-other",
        ),
    ),
    (
        "/tmp/x is owned by uid 65534",
        Check::AssertedIn(
            "attacks.rs",
            "is owned by uid 65534, who could swap what the daemon makes there; use a directory owned by you or root",
        ),
    ),
    ("roll 3x6", Check::Run(&["roll", "3x6"], &[])),
    ("roll 0d6", Check::Run(&["roll", "0d6"], &[])),
    ("roll -3d6", Check::Run(&["roll", "-3d6"], &[])),
    ("'-1' for '--count", Check::Run(&["nonce", "-n", "-1"], &[])),
    ("roll 3d0", Check::Run(&["roll", "3d0"], &[])),
    (
        "no random source",
        Check::AssertedIn(
            "tools.rs",
            "(No such file or directory); start the device with 'pilfered serve' or pass --from PATH",
        ),
    ),
    (
        "--from /tmp/bits",
        Check::Run(&["roll", "d6", "--from", "{T}/tmp/bits"], &["tmp"]),
    ),
    (
        "/dev/null: the file ended",
        Check::Run(&["nonce", "--from", "/dev/null"], &[]),
    ),
    (
        "end of file after 0 of 65536 bytes",
        Check::AssertedIn("../../src/client/reader.rs", "bytes: the daemon went away"),
    ),
    (
        "FIFO is owned by uid 65534",
        Check::AssertedIn(
            "cli.rs",
            "FIFO is owned by uid 65534, not by us (uid 0); remove it or choose another path",
        ),
    ),
    (
        "another pilfered is already serving this FIFO",
        Check::AssertedIn(
            "lifecycle.rs",
            "another pilfered is already serving this FIFO; stop it or choose another path",
        ),
    ),
    (
        "pilfered (fuse.pilfered) is already mounted there",
        Check::AssertedIn(
            "hardening.rs",
            "pilfered (fuse.pilfered) is already mounted there; unmount it first or choose another directory",
        ),
    ),
    (
        "/srv/x/y: cannot create it",
        Check::Run(&["serve", "--no-fifo", "--mount", "{T}/srv/x/y"], &["srv"]),
    ),
    (
        "/srv/notes: the directory is not empty",
        Check::Run(
            &["serve", "--no-fifo", "--mount", "{T}/srv/notes"],
            &["srv/notes", "srv/notes/todo/"],
        ),
    ),
    (
        "belong to the kernel",
        Check::Run(&["serve", "--no-fifo", "--mount", "/proc/sys"], &[]),
    ),
    ("'4Q'", Check::Run(&["serve", "--chunk-size", "4Q"], &[])),
    (
        "--chunk-size 1M is larger",
        Check::Run(
            &["serve", "--chunk-size", "1M", "--queue-capacity", "64K"],
            &[],
        ),
    ),
    ("'0666'", Check::Run(&["serve", "--fifo-mode", "0666"], &[])),
    (
        "--seed: got 6",
        Check::Run(&["serve", "--seed", "abc123"], &[]),
    ),
    (
        "cannot be used with",
        Check::Run(&["serve", "--no-fuse", "--no-fifo"], &[]),
    ),
    (
        "no RDSEED instruction",
        Check::AssertedIn(
            "../../src/engine/seeding.rs",
            "--source rdseed: this CPU has no RDSEED instruction",
        ),
    ),
];

#[test]
fn quoted_messages_are_the_binarys() {
    let quotes = quoted_messages();
    assert!(quotes.len() > 20, "{quotes:#?}");
    for quote in &quotes {
        // The check with the longest key the quote contains.
        let Some((_, check)) = CHECKS
            .iter()
            .filter(|(key, _)| quote.contains(key))
            .max_by_key(|(key, _)| key.len())
        else {
            panic!("no check for the quoted message (add one to CHECKS): {quote}");
        };
        match check {
            Check::Run(args, dirs) => {
                let t = open_dir();
                let tp = t.path().to_str().unwrap();
                for d in *dirs {
                    match d.strip_suffix('/') {
                        Some(file) => std::fs::write(t.path().join(file), "x").unwrap(),
                        None => std::fs::create_dir_all(t.path().join(d)).unwrap(),
                    }
                }
                let args: Vec<String> = args.iter().map(|a| a.replace("{T}", tp)).collect();
                let out = Command::new(BIN)
                    .args(&args)
                    .env("PILFERED_RUNDIR", t.path().join("run"))
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr).replace(tp, "");
                assert_eq!(err, format!("{quote}\n"), "pilfered {args:?}");
            }
            Check::AssertedIn(file, fragment) => {
                let source =
                    std::fs::read_to_string(Path::new(ROOT).join("tests/it").join(file)).unwrap();
                assert!(quote.contains(fragment), "{quote} lacks {fragment}");
                assert!(
                    source.contains(fragment),
                    "{file} does not assert: {fragment}"
                );
            }
        }
    }
}
