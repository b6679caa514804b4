//! The built daemon, run for real: FUSE mount and FIFO on temporary paths.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{
    Daemon, Reader, assert_no_repeated_stretch, fuse_available, fuse_total, on_both_transports,
    openssl_keystream, read_blocks, read_concurrently, wait_until, wait_until_reading,
};
use nix::sys::signal::Signal;

on_both_transports! {
    /// Readers of every size on both interfaces at once each get exactly what
    /// they asked for, and no 32-byte stretch is handed out twice.
    fn concurrent_readers_get_exact_distinct_bytes(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &[]);
        let reader = |path: &std::path::Path, block, total, fuse| Reader {
            path: path.to_path_buf(),
            block,
            total,
            fuse,
        };
        let plan = [
            reader(&d.bits(), 1 << 20, 6 << 20, true),
            reader(&d.bits(), 128 << 10, 4 << 20, true),
            reader(&d.bits(), 4096, 2 << 20, true),
            reader(&d.bits(), 17, 40_000, true),
            reader(&d.fifo, 64 << 10, 4 << 20, false),
            reader(&d.fifo, 1000, 1 << 20, false),
        ];
        read_concurrently(&plan);
        let stats = d.stats();
        assert_eq!(stats["bytes_served_fuse"], fuse_total(&plan));
        assert!(stats["bytes_served_fifo"] >= (5 << 20) as u64);
        assert!(stats["bytes_generated"] >= stats["bytes_served_fuse"] + stats["bytes_served_fifo"]);
    }
}

/// `cat` keeps streaming, `head -c` and `dd` get exactly what they ask.
#[test]
fn shell_tools_read_exact_amounts_and_cat_never_ends() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&[]);
    let bits = d.bits();
    let sh = |cmd: String| {
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let b = bits.display();
    let f = d.fifo.display();
    assert_eq!(sh(format!("head -c 1000001 {b} | wc -c")), "1000001");
    assert_eq!(sh(format!("head -c 32 {b} | wc -c")), "32");
    assert_eq!(
        sh(format!("dd if={b} bs=4096 count=10 status=none | wc -c")),
        "40960"
    );
    assert_eq!(
        sh(format!("dd if={b} bs=1M count=3 status=none | wc -c")),
        "3145728"
    );
    assert_eq!(sh(format!("head -c 100000 {f} | wc -c")), "100000");
    assert_eq!(
        sh(format!(
            "dd if={f} bs=64K count=20 iflag=fullblock status=none | wc -c"
        )),
        "1310720"
    );

    // cat streams far beyond the queue and the pipe, and is still running.
    for path in [&bits, &d.fifo] {
        let mut cat = Command::new("cat")
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = cat.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        while total < 64 << 20 {
            let n = out.read(&mut buf).unwrap();
            assert!(n > 0, "cat {} ended after {total} bytes", path.display());
            total += n;
        }
        assert!(cat.try_wait().unwrap().is_none(), "cat exited");
        cat.kill().unwrap();
        cat.wait().unwrap();
    }
}

const ZERO_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

on_both_transports! {
    /// With --seed, one reader of the FUSE file gets exactly the RFC 8439
    /// keystream, as computed independently by openssl, whatever its read sizes.
    fn seeded_fuse_output_is_the_rfc8439_keystream(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &["--seed", ZERO_KEY, "--no-fifo"]);
        let first = read_blocks(&d.bits(), 64, 64, true);
        // RFC 7539 appendix A.1, test vector 1.
        assert_eq!(first[..8], [0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90]);
        drop(d);

        let d = Daemon::start_on(t, &["--seed", KEY, "--no-fifo", "--chunk-size", "64K"]);
        let mut f = File::open(d.bits()).unwrap();
        let mut got = Vec::new();
        // 61436 ends the first chunk and 65536 is the next whole one: reads
        // answered from the chunk itself, between copied ones.
        for block in [1usize, 3, 4096, 61436, 65536, 131072, 1 << 20, 5000, 777] {
            let mut buf = vec![0u8; block];
            f.read_exact(&mut buf).unwrap();
            got.extend(buf);
        }
        assert_eq!(got, openssl_keystream(KEY, got.len()));
        // Issue 20: the serving line named the OS as the key's source.
        let log = d.log_text();
        assert!(
            log.contains("generator(s) keyed from the --seed key (predictable)")
                && !log.contains("keyed from the OS"),
            "{log}"
        );
    }
}

/// The same through the FIFO.
#[test]
fn seeded_fifo_output_is_the_rfc8439_keystream() {
    let d = Daemon::start(&["--seed", KEY, "--no-fuse"]);
    let got = read_blocks(&d.fifo, 100_000, 3 << 20, false);
    assert_eq!(got, openssl_keystream(KEY, got.len()));
}

on_both_transports! {
    /// SIGTERM (and SIGINT) while readers are busy on both interfaces: exit 0
    /// within 2 s, no mount, no FIFO, and the readers end instead of hanging.
    fn termination_signals_clean_up_under_load(t: Transport) {
        if !fuse_available() {
            return;
        }
        for sig in [Signal::SIGTERM, Signal::SIGINT] {
            let mut d = Daemon::start_on(t, &[]);
            let readers: Vec<_> = [d.bits(), d.fifo.clone(), d.bits()]
                .iter()
                .map(|p| {
                    Command::new("dd")
                        .arg(format!("if={}", p.display()))
                        .args(["of=/dev/null", "bs=64K"])
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for r in &readers {
                wait_until_reading(r.id());
            }
            let status = d.stop_with(sig, Duration::from_secs(2));
            assert_eq!(status.code(), Some(0), "{sig}: log: {}", d.log_text());
            assert!(!d.is_mounted(), "{sig}: still mounted");
            assert!(!d.fifo.exists(), "{sig}: FIFO left behind");
            assert!(
                !d.mount.exists(),
                "{sig}: mount directory we created left behind"
            );
            for mut r in readers {
                let ended = wait_until(Duration::from_secs(5), || r.try_wait().unwrap().is_some());
                if !ended {
                    let _ = r.kill();
                }
                assert!(ended, "{sig}: a reader hung after shutdown");
            }
        }
    }
}

/// FIFO readers come and go; none sees end-of-file, each gets its bytes.
#[test]
fn fifo_readers_come_and_go() {
    let d = Daemon::start(&["--no-fuse"]);
    let mut seen = Vec::new();
    for i in 0..200 {
        let n = 1 + i % 50;
        let mut f = File::open(&d.fifo).unwrap();
        let mut buf = vec![0u8; n];
        f.read_exact(&mut buf).unwrap();
        seen.push(buf);
    }
    let long: Vec<u8> = seen.concat();
    assert_no_repeated_stretch(&[long]);
}

on_both_transports! {
    /// The file refuses writes; unknown names do not exist; the mode is 0444.
    fn bits_is_read_only(t: Transport) {
        if !fuse_available() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let d = Daemon::start_on(t, &["--no-fifo"]);
        let meta = std::fs::metadata(d.bits()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
        // The largest size, so that asynchronous reads are not ended early.
        assert_eq!(meta.len(), 0x7fff_ffff_7fff_ffff);
        assert!(meta.is_file());
        let err = OpenOptions::new().write(true).open(d.bits()).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::EROFS | libc::EACCES)),
            "write open gave {err}"
        );
        let err = File::open(d.mount.join("nope")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let mut names: Vec<_> = std::fs::read_dir(&d.mount)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["bits", "stats"]);
    }
}

/// A mode-0600 key file holding KEY and a newline, in its own directory.
fn key_file() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

/// --seed-file serves the same keystream as --seed, and does not warn about
/// the command line, which no longer holds the key.
#[test]
fn seed_file_serves_the_rfc8439_keystream() {
    if !fuse_available() {
        return;
    }
    let (_keys, path) = key_file();
    let d = Daemon::start(&["--seed-file", path.to_str().unwrap(), "--no-fifo"]);
    let got = read_blocks(&d.bits(), 4096, 1 << 20, true);
    assert_eq!(got, openssl_keystream(KEY, got.len()));
    let log = d.log_text();
    assert!(log.contains("predictable"), "no warning: {log}");
    assert!(!log.contains("cmdline"), "{log}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(KEY));
}

/// `--seed-file -` takes the key from a pipe on standard input.
#[test]
fn seed_file_from_standard_input_serves_the_keystream() {
    use std::io::Write;
    let (r, w) = nix::unistd::pipe().unwrap();
    // Far less than a pipe holds; closing the write end is the key's end.
    File::from(w)
        .write_all(format!("{KEY}\n").as_bytes())
        .unwrap();
    let d = Daemon::start_with_stdin(&["--seed-file", "-", "--no-fuse"], Stdio::from(r));
    let got = read_blocks(&d.fifo, 100_000, 1 << 20, false);
    assert_eq!(got, openssl_keystream(KEY, got.len()));
}

/// --seed on the command line warns, once, that everyone can read it there.
#[test]
fn seed_on_the_command_line_warns_that_every_user_can_read_it() {
    let d = Daemon::start(&["--seed", KEY, "--no-fuse"]);
    let log = d.log_text();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid())).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(KEY));
    let wanted = format!(
        "--seed: every user can read the key in /proc/{}/cmdline; use --seed-file instead",
        d.pid()
    );
    let warnings: Vec<&str> = log.lines().filter(|l| l.ends_with(&wanted)).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(" WARN "), "{log}");
}
