//! Bad command lines: one exact line on stderr, the right exit status, and
//! nothing created, changed or mounted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pilfered::internal::mounts;

use crate::common::{refused, run};

#[test]
fn bad_sizes() {
    refused(
        &["serve", "--chunk-size", "0"],
        2,
        "invalid value '0' for '--chunk-size <SIZE>': must be greater than zero",
    );
    refused(
        &["serve", "--queue-capacity", "4Q"],
        2,
        "invalid value '4Q' for '--queue-capacity <SIZE>': unknown suffix 'Q' (expected a number of bytes with an optional K, M or G suffix, like 4K or 16M)",
    );
    refused(
        &["serve", "--pipe-size", "99999999999999999999"],
        2,
        "invalid value '99999999999999999999' for '--pipe-size <SIZE>': too large to be a size",
    );
    refused(
        &["serve", "--queue-capacity", "20000000000G"],
        2,
        "invalid value '20000000000G' for '--queue-capacity <SIZE>': too large to be a size",
    );
    refused(
        &["serve", "--chunk-size", "1M", "--queue-capacity", "64K"],
        2,
        "--chunk-size 1M is larger than --queue-capacity 64K: the queue must hold at least one chunk",
    );
    refused(
        &["serve", "--chunk-size", "1000"],
        2,
        "--chunk-size 1000: must be a multiple of 64 bytes (one ChaCha block) between 64 and 16M",
    );
    refused(
        &["serve", "--no-fuse", "--pipe-size", "4G"],
        2,
        "--pipe-size 4G: the kernel allows at most 2G",
    );
}

#[test]
fn bad_option_values() {
    refused(
        &["serve", "--fifo-mode", "0666"],
        2,
        "invalid value '0666' for '--fifo-mode <OCTAL>': 0666 lets other users write into the FIFO and inject chosen bytes; give them read access at most (e.g. 0644)",
    );
    refused(
        &["serve", "--fifo-mode", "0400"],
        2,
        "invalid value '0400' for '--fifo-mode <OCTAL>': 0400: the owner needs read and write (0600)",
    );
    refused(
        &["serve", "--generators", "0"],
        2,
        "invalid value '0' for '--generators <N>': expected a whole number from 1 to 64",
    );
    refused(
        &["serve", "--rounds", "7"],
        2,
        "invalid value '7' for '--rounds <N>' [possible values: 20, 12, 8]",
    );
    refused(
        &["serve", "--reseed-interval", "0"],
        2,
        "invalid value '0' for '--reseed-interval <DURATION>': must be greater than zero",
    );
    refused(
        &["serve", "--reseed-bytes", "1T"],
        2,
        "invalid value '1T' for '--reseed-bytes <SIZE>': unknown suffix 'T' (expected a number of bytes with an optional K, M or G suffix, like 4K or 16M)",
    );
    refused(
        &["serve", "--source", "lava-lamp"],
        2,
        "invalid value 'lava-lamp' for '--source <NAME>': expected rdseed, hwrng, or a path to a file or FIFO (containing '/')",
    );
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    refused(
        &[
            "serve",
            "--no-fuse",
            "--fifo",
            fifo.to_str().unwrap(),
            "--source",
            "/nonexistent/rng",
        ],
        2,
        "--source /nonexistent/rng: /nonexistent/rng: No such file or directory",
    );
    assert!(!fifo.exists());
    let seed = "0".repeat(64);
    refused(
        &["serve", "--no-fifo", "--seed", &seed, "--generators", "2"],
        2,
        "--generators 2: --seed needs a single generator to keep its keystream in order",
    );
}

#[test]
fn bad_seeds_are_never_echoed() {
    refused(
        &["serve", "--seed", "abc123"],
        2,
        "--seed: got 6 characters; expected exactly 64 hex digits",
    );
    let not_hex = "g".repeat(64);
    refused(
        &["serve", "--no-fifo", "--seed", &not_hex],
        2,
        "--seed: not a hex digit in the value; expected exactly 64 hex digits",
    );
    refused(
        &["serve", "--seed", &"0".repeat(64)],
        2,
        "--seed needs --no-fuse or --no-fifo: one reproducible keystream cannot be split between two interfaces",
    );
}

#[test]
fn usage_errors() {
    refused(
        &["serve", "--no-fuse", "--no-fifo"],
        2,
        "the argument '--no-fuse' cannot be used with '--no-fifo'",
    );
    refused(
        &["frobnicate"],
        2,
        "unrecognized subcommand 'frobnicate'; see 'pilfered --help'",
    );
    let (status, _, stderr) = run(&[]);
    assert_eq!(status, 2);
    assert!(stderr.contains("Usage: pilfered"), "{stderr}");
}

/// A mistyped or unknown argument gets clap's suggestion, if it has one,
/// and points at the help of the subcommand it was given to.
#[test]
fn typos_get_a_suggestion_and_the_subcommands_help() {
    refused(
        &["serve", "--mout", "/mnt/x"],
        2,
        "unexpected argument '--mout' found (did you mean '--mount'?); see 'pilfered serve --help'",
    );
    refused(
        &["serve", "--fifo-mod=0644"],
        2,
        "unexpected argument '--fifo-mod' found (did you mean '--fifo-mode'?); see 'pilfered serve --help'",
    );
    refused(
        &["serve", "--xyzzy"],
        2,
        "unexpected argument '--xyzzy' found; see 'pilfered serve --help'",
    );
    refused(
        &["serve", "--mount", "/mnt/x", "extra"],
        2,
        "unexpected argument 'extra' found; see 'pilfered serve --help'",
    );
    refused(
        &["status", "--mont", "/mnt/x"],
        2,
        "unexpected argument '--mont' found (did you mean '--mount'?); see 'pilfered status --help'",
    );
    refused(
        &["nonce", "--cont", "3"],
        2,
        "unexpected argument '--cont' found (did you mean '--count'?); see 'pilfered nonce --help'",
    );
    refused(
        &["roll", "-x"],
        2,
        "unexpected argument '-x' found (to pass '-x' as a value, use '-- -x'); see 'pilfered roll --help'",
    );
    refused(
        &["srve"],
        2,
        "unrecognized subcommand 'srve' (did you mean 'serve'?); see 'pilfered --help'",
    );
    refused(
        &["--verbos", "serve"],
        2,
        "unexpected argument '--verbos' found (did you mean '--verbose'?); see 'pilfered --help'",
    );
}

/// Issue 27: a negative number reaches the option's own check, which names
/// the option and its rule (clap took it for an option: "unexpected
/// argument '-1' found"); an expression starting with a hyphen is named
/// whole (clap named '-3').
#[test]
fn negative_values_name_the_option_and_its_rule() {
    let size =
        "not a size (expected a number of bytes with an optional K, M or G suffix, like 4K or 16M)";
    let threads = "expected a whole number from 1 to 64";
    let duration =
        "not a duration (expected seconds, or a number with an s, m or h suffix, like 60s or 5m)";
    let octal = "expected an octal mode such as 0600 or 0644";
    let count = "expected a whole number of at least 1";
    let too_large = "too large: at most 18446744073709551615";
    for (cmd, option, value, rule) in [
        ("serve", "--queue-capacity <SIZE>", "-1", size),
        ("serve", "--chunk-size <SIZE>", "-4K", size),
        ("serve", "--generators <N>", "-3", threads),
        ("serve", "--fuse-threads <N>", "-1", threads),
        ("serve", "--reseed-interval <DURATION>", "-5s", duration),
        ("serve", "--fifo-mode <OCTAL>", "-644", octal),
        ("nonce", "--count <COUNT>", "-1", count),
        (
            "nonce",
            "--count <COUNT>",
            "99999999999999999999999",
            too_large,
        ),
    ] {
        let flag = option.split_once(' ').unwrap().0;
        refused(
            &[cmd, flag, value],
            2,
            &format!("invalid value '{value}' for '{option}': {rule}"),
        );
    }
    let notation = "not dice notation; expected NdS, NdS+M or NdS-M like 3d6, d20 or 2d20-1";
    refused(&["roll", "-3d6"], 2, &format!("roll -3d6: {notation}"));
    refused(&["roll", "3d6", "-d6"], 2, &format!("roll -d6: {notation}"));
    refused(
        &["-v", "roll", "-1d6", "--from", "/dev/zero"],
        2,
        &format!("roll -1d6: {notation}"),
    );
}

/// Asking for no nonces is a mistake, not an empty success.
#[test]
fn nonce_count_zero_is_a_usage_error() {
    refused(
        &["nonce", "-n", "0", "--from", "/nonexistent"],
        2,
        "invalid value '0' for '--count <COUNT>': expected a whole number of at least 1",
    );
    refused(
        &["nonce", "--count=0"],
        2,
        "invalid value '0' for '--count <COUNT>': expected a whole number of at least 1",
    );
}

#[test]
fn help_explains_every_option_with_its_default() {
    let (status, out, _) = run(&["serve", "--help"]);
    assert_eq!(status, 0);
    for needle in [
        "--mount <DIR>",
        "[default: /mnt/pilfered]",
        "--fifo <PATH>",
        "[default: /tmp/pilferedbits]",
        "--no-fuse",
        "--no-fifo",
        "--chunk-size <SIZE>",
        "[default: 4K]",
        "--queue-capacity <SIZE>",
        "[default: 16M]",
        "--pipe-size <SIZE>",
        "pipe-max-size",
        "--seed <KEY>",
        "--seed-file <PATH>",
        "--verbose",
        "--quiet",
    ] {
        assert!(out.contains(needle), "serve --help lacks {needle}:\n{out}");
    }
    let (status, out, _) = run(&["--help"]);
    assert_eq!(status, 0);
    assert!(out.contains("serve"), "{out}");
}

/// Existing non-FIFO paths given as --fifo are refused and left as they were.
#[test]
fn fifo_path_that_is_not_a_fifo_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"precious").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mnt = dir.path().join("mnt");
    let m = mnt.to_str().unwrap();
    for (path, what) in [
        (&file, "is a regular file"),
        (&link, "is a symbolic link"),
        (&sub, "is a directory"),
    ] {
        let p = path.to_str().unwrap();
        refused(
            &["serve", "--mount", m, "--fifo", p],
            2,
            &format!("--fifo {p}: {what}, not a FIFO; refusing to touch it"),
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(sub.is_dir());
    assert!(!mnt.exists(), "mount directory created despite the refusal");
    let missing = dir.path().join("nodir/fifo");
    let p = missing.to_str().unwrap();
    refused(
        &["serve", "--mount", m, "--fifo", p],
        2,
        &format!(
            "--fifo {p}: directory {}: No such file or directory",
            dir.path().join("nodir").display()
        ),
    );
    assert!(!mnt.exists());
}

/// A FIFO that belongs to someone else could be fed by them; refuse it.
#[test]
fn foreign_fifos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&fifo, Some(nobody), None).unwrap();
    let p = fifo.to_str().unwrap();
    refused(
        &["serve", "--no-fuse", "--fifo", p],
        2,
        &format!(
            "--fifo {p}: FIFO is owned by uid 65534, not by us (uid 0); remove it or choose another path"
        ),
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&fifo).unwrap().uid(), 65534);
}

#[test]
fn unsafe_fifos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622)).unwrap();
    let p = fifo.to_str().unwrap();
    refused(
        &["serve", "--no-fuse", "--fifo", p],
        2,
        &format!(
            "--fifo {p}: FIFO is writable by other users (mode 0622), who could inject chosen bytes; remove it or run 'chmod go-w' on it"
        ),
    );
    assert_eq!(
        std::fs::metadata(&fifo).unwrap().permissions().mode() & 0o777,
        0o622
    );
}

#[test]
fn bad_mount_points() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let fifo = dir.path().join("fifo");
    let f = fifo.to_str().unwrap();
    let p = file.to_str().unwrap();
    refused(
        &["serve", "--mount", p, "--fifo", f],
        2,
        &format!("--mount {p}: is a regular file, not a directory"),
    );
    let deep = dir.path().join("a/b");
    let d = deep.to_str().unwrap();
    refused(
        &["serve", "--mount", d, "--fifo", f],
        2,
        &format!(
            "--mount {d}: cannot create it: {}: No such file or directory",
            dir.path().join("a").display()
        ),
    );
    // Something is mounted there already: refuse rather than stack.
    let tmpfs = dir.path().join("tmpfs");
    std::fs::create_dir(&tmpfs).unwrap();
    crate::common::mount_tmpfs(&tmpfs, false);
    let t = tmpfs.to_str().unwrap();
    let stacked = run(&["serve", "--mount", t, "--fifo", f]);
    nix::mount::umount(&tmpfs).unwrap();
    assert_eq!(
        stacked,
        (
            1,
            String::new(),
            format!(
                "pilfered: --mount {t}: tmpfs (tmpfs) is already mounted there; unmount it first or choose another directory\n"
            )
        )
    );
    assert!(!Path::new(&fifo).exists());
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// Issue 27: a directory with files in it is not mounted over (that hid
/// them) unless `--nonempty` says so; its files stay as they were.
#[test]
fn a_nonempty_mount_point_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(mnt.join("notes"), b"mine").unwrap();
    let m = mnt.to_str().unwrap();
    refused(
        &["serve", "--mount", m, "--no-fifo"],
        1,
        &format!(
            "--mount {m}: the directory is not empty, and mounting would hide its files; empty it, choose another directory, or pass --nonempty"
        ),
    );
    assert_eq!(std::fs::read(mnt.join("notes")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 1);
    assert!(mounts::mount_at(&mnt).unwrap().is_none(), "mounted");

    // Asked for, it mounts there, and the files are back after the stop.
    if !crate::common::fuse_available() {
        return;
    }
    let fifo = dir.path().join("fifo");
    let mut d =
        crate::common::Daemon::start_at(dir, mnt.clone(), fifo, &["--no-fifo", "--nonempty"]);
    assert_eq!(
        crate::common::read_blocks(&d.bits(), 32, 32, true).len(),
        32
    );
    assert!(
        d.stop_with(
            nix::sys::signal::Signal::SIGTERM,
            std::time::Duration::from_secs(5)
        )
        .success()
    );
    assert_eq!(std::fs::read(mnt.join("notes")).unwrap(), b"mine");
}

/// The kernel's own file systems are never mounted on, by root, with
/// `--nonempty`, nor below them (root once mounted over /proc/sys); no
/// directory is made there.
#[test]
fn the_kernels_own_file_systems_are_refused() {
    for (path, top) in [
        ("/proc", "/proc"),
        ("/proc/sys", "/proc"),
        ("/sys/kernel", "/sys"),
        ("/dev", "/dev"),
        ("/dev/shm/pilfered-test-never-made", "/dev"),
    ] {
        let mounted_before = mounts::mount_at(Path::new(path)).unwrap();
        refused(
            &["serve", "--mount", path, "--no-fifo", "--nonempty"],
            2,
            &format!(
                "--mount {path}: {top} and everything below it belong to the kernel; pilfered never mounts there, choose another directory"
            ),
        );
        assert_eq!(
            mounts::mount_at(Path::new(path)).unwrap(),
            mounted_before,
            "{path}"
        );
    }
    assert!(!Path::new("/dev/shm/pilfered-test-never-made").exists());
}

/// A key file of `mode` holding `content`.
fn key_file(dir: &Path, content: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join("key");
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A key file others may read is refused, and left exactly as it was; so is
/// nothing else created. No message repeats any of a file's content.
#[test]
fn bad_seed_files() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let m = mnt.to_str().unwrap();
    let secret = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";
    for mode in [0o640, 0o604, 0o644, 0o440] {
        let path = key_file(dir.path(), &format!("{secret}\n"), mode);
        let p = path.to_str().unwrap();
        refused(
            &["serve", "--no-fifo", "--mount", m, "--seed-file", p],
            2,
            &format!(
                "--seed-file {p}: the key file is readable by other users (mode {mode:04o}), who could predict every byte; run 'chmod 600 {p}'"
            ),
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{secret}\n")
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            mode
        );
    }
    let missing = dir.path().join("nokey");
    let p = missing.to_str().unwrap();
    refused(
        &["serve", "--no-fifo", "--mount", m, "--seed-file", p],
        2,
        &format!("--seed-file {p}: No such file or directory"),
    );
    let expected = "expected exactly 64 hex digits and at most a newline";
    for (content, why) in [
        (format!("{}\n", &secret[..40]), "got 41 bytes".to_string()),
        (format!("{secret} \n"), "got more than 65 bytes".to_string()),
        (
            format!("{}xyz\n", &secret[..61]),
            "not a hex digit in the file".to_string(),
        ),
    ] {
        let path = key_file(dir.path(), &content, 0o600);
        let p = path.to_str().unwrap();
        let (status, stdout, stderr) = run(&["serve", "--no-fifo", "--mount", m, "--seed-file", p]);
        assert_eq!(
            stderr,
            format!("pilfered: --seed-file {p}: {why}; {expected}\n")
        );
        assert_eq!((status, stdout.as_str()), (2, ""));
        assert!(!stderr.contains(&secret[..16]) && !stderr.contains("xyz"));
    }
    assert!(!mnt.exists(), "mount directory created despite the refusal");
}

#[test]
fn seed_file_conflicts_and_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(dir.path(), &"0".repeat(64), 0o600);
    let p = path.to_str().unwrap();
    refused(
        &[
            "serve",
            "--no-fifo",
            "--seed",
            &"0".repeat(64),
            "--seed-file",
            p,
        ],
        2,
        "the argument '--seed <KEY>' cannot be used with '--seed-file <PATH>'",
    );
    refused(
        &["serve", "--seed-file", p],
        2,
        "--seed-file needs --no-fuse or --no-fifo: one reproducible keystream cannot be split between two interfaces",
    );
    // `run` gives the daemon /dev/null as standard input.
    refused(
        &["serve", "--no-fifo", "--seed-file", "-"],
        2,
        "--seed-file -: got 0 bytes; expected exactly 64 hex digits and at most a newline",
    );
    // Standard input redirected from a file others may read.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .args(["serve", "--no-fifo", "--seed-file", "-"])
        .env("PILFERED_RUNDIR", state.path().join("run"))
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pilfered: --seed-file -: standard input is readable by other users (mode 0644), who could predict every byte; run 'chmod 600' on the file it comes from\n"
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Every `--help` wraps at 80 columns, even when stdout is no terminal
/// (here a pipe) and COLUMNS asks for more.
#[test]
fn help_wraps_at_80_columns() {
    for cmd in [&[][..], &["serve"], &["roll"], &["nonce"], &["status"]] {
        for help in ["--help", "-h"] {
            let mut args = cmd.to_vec();
            args.push(help);
            let out = std::process::Command::new(crate::common::BIN)
                .args(&args)
                .env("COLUMNS", "200")
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            let long: Vec<&str> = text.lines().filter(|l| l.chars().count() > 80).collect();
            assert!(
                long.is_empty(),
                "{args:?}: lines over 80 columns: {long:#?}"
            );
        }
    }
}

/// Issue 20: only the state directory's last component was checked, so a
/// PILFERED_RUNDIR below another user's directory (who could swap it for
/// theirs) was used. Now the start is refused; and a default
/// /tmp/pilfered-UID that another user made first is said in one line,
/// the daemon serving on without records.
#[test]
fn a_state_directory_others_control_is_not_used() {
    use std::process::{Command, Stdio};
    let dir = crate::common::open_dir();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let run_dir = theirs.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::os::unix::fs::chown(&run_dir, Some(0), Some(0)).unwrap();
    let fifo = dir.path().join("fifo");
    let mut child = Command::new(crate::common::BIN)
        .env("PILFERED_RUNDIR", &run_dir)
        .args(["serve", "--no-fuse", "--fifo"])
        .arg(&fifo)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The old daemon served on: stop it rather than hang.
    if !crate::common::wait_until(std::time::Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    }) {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "pilfered: PILFERED_RUNDIR={}: {} is owned by uid 65534, who could swap what the daemon makes there; use a directory owned by you or root; choose a directory of your own\n",
            run_dir.display(),
            theirs.display()
        )
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!fifo.exists());

    // A uid no other test uses, whose default state directory root made.
    let uid = 64999;
    let default = std::path::PathBuf::from(format!("/tmp/pilfered-{uid}"));
    let _ = std::fs::create_dir(&default);
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _remove = Remove(default.clone());
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    let child = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(crate::common::BIN)
        .args(["serve", "--no-fuse", "--fifo"])
        .arg(&fifo)
        .env_remove("PILFERED_RUNDIR")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serving = crate::common::wait_until(std::time::Duration::from_secs(20), || fifo.exists());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(serving, "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warning = format!(
        "state directory /tmp/pilfered-{uid} is owned by uid 0, not by us (uid {uid}); set PILFERED_RUNDIR to a directory of your own: until then what this daemon creates is not recorded, so after a crash it stays behind"
    );
    assert_eq!(err.matches(&warning).count(), 1, "{err}");
}
