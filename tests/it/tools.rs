//! The consumer tools, `pilfered roll` and `pilfered nonce`, reading the
//! real daemon through each interface: uniform faces (chi-square), exactly
//! the keystream bytes they need and no more, output formats, every kind of
//! bad expression, missing sources, a closed stdout and a daemon that goes
//! away.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::{BIN, Daemon, fuse_available, openssl_keystream, refused, run, wait_until};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use pilfered::DeviceReader;

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `pilfered ARGS`, expecting success and nothing on stderr; returns
/// stdout.
fn ok(args: &[&str]) -> String {
    let (status, stdout, stderr) = run(args);
    assert_eq!((status, stderr.as_str()), (0, ""), "args {args:?}");
    stdout
}

/// Waits up to `limit` for `child` to exit, killing it (and failing) if it
/// does not: a consumer must never hang.
fn finish_within(mut child: Child, limit: Duration) -> Output {
    let exited = wait_until(limit, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "pilfered still running after {limit:?}");
    out
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The faces of one line of `roll` output (`4 1 6 = 11`, or `4 1 6 +2 =
/// 13` with a `modifier`), checked: `count` of them, each from 1 to
/// `sides`, the modifier shown as given, and the total shown their sum plus
/// the modifier.
fn faces(line: &str, count: usize, sides: u64, modifier: i64) -> Vec<u64> {
    let (rolls, total) = line.split_once(" = ").expect("' = ' in a roll line");
    let rolls = match modifier {
        0 => rolls,
        m => rolls
            .strip_suffix(&format!(" {m:+}"))
            .unwrap_or_else(|| panic!("no modifier {m:+} in {line:.80}")),
    };
    let faces: Vec<u64> = rolls.split(' ').map(|f| f.parse().unwrap()).collect();
    assert_eq!(faces.len(), count, "{line:.80}");
    assert!(faces.iter().all(|f| (1..=sides).contains(f)), "{line:.80}");
    let sum = i64::try_from(faces.iter().sum::<u64>()).unwrap();
    assert_eq!(sum + modifier, total.parse::<i64>().unwrap(), "{line:.80}");
    faces
}

/// Pearson's statistic for the face counts against a fair die.
fn chi_square(faces: &[u64], sides: u64) -> f64 {
    let mut counts = vec![0u64; usize::try_from(sides).unwrap()];
    for &f in faces {
        counts[usize::try_from(f - 1).unwrap()] += 1;
    }
    let expected = faces.len() as f64 / sides as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// Rolls 120,000 each of d3, d6, d20 and d100 from `from` in one command,
/// each with `modifiers[i]` added (none if 0), and checks each die's faces
/// with a chi-square test and each total against the faces.
fn assert_fair_dice(from: &Path, modifiers: [i64; 4]) {
    const ROLLS: usize = 120_000;
    // Under fairness the statistic of an S-sided die follows chi-square with
    // S - 1 degrees of freedom. Each threshold is that distribution's
    // 1 - 1e-6 quantile (scipy.stats.chi2.isf(1e-6, S - 1), rounded up to
    // one decimal), so a correct roller fails each check with probability
    // just under 1e-6, and this function (four checks) about 4e-6.
    //
    // (sides, degrees of freedom, threshold, chance a fair die exceeds it)
    const CHECKS: [(u64, u32, f64, f64); 4] = [
        (3, 2, 27.7, 9.7e-7),
        (6, 5, 35.9, 9.9e-7),
        (20, 19, 63.7, 9.9e-7),
        (100, 99, 180.8, 1.0e-6),
    ];
    // Power: taking one byte modulo S instead of rejecting would make the
    // d100 statistic about 4,600 and the d20 one about 136 on average, far
    // beyond their thresholds. Smaller biases (a d6 from a byte modulo 6 is
    // off by 1 in 128) are ruled out by counting in the unit tests instead.
    let exprs: Vec<String> = CHECKS
        .iter()
        .zip(modifiers)
        .map(|(c, m)| match m {
            0 => format!("{ROLLS}d{}", c.0),
            m => format!("{ROLLS}d{}{m:+}", c.0),
        })
        .collect();
    let mut args: Vec<&str> = vec!["roll"];
    args.extend(exprs.iter().map(String::as_str));
    args.extend(["--from", path_str(from)]);
    let out = ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), CHECKS.len());
    for ((line, (sides, df, threshold, p)), m) in lines.iter().zip(CHECKS).zip(modifiers) {
        let stat = chi_square(&faces(line, ROLLS, sides, m), sides);
        assert!(
            stat < threshold,
            "d{sides} from {}: chi-square {stat:.1} with {df} degrees of freedom exceeds {threshold} (a fair die does this with probability {p:e})",
            from.display()
        );
    }
}

/// Plain dice, and the same dice with modifiers (`3d6+2`, `2d20-1`), which
/// must leave the faces as fair: the same chi-square tests, and every total
/// the faces' sum plus the modifier.
#[test]
fn dice_are_fair_through_the_fuse_file() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&["--no-fifo"]);
    assert_fair_dice(&d.bits(), [0; 4]);
    assert_fair_dice(&d.bits(), [2, -1, 1_000_000_000, -1_000_000_000]);
}

#[test]
fn dice_are_fair_through_the_fifo() {
    let d = Daemon::start(&["--no-fuse"]);
    assert_fair_dice(&d.fifo, [0; 4]);
    assert_fair_dice(&d.fifo, [-1, 2, -1_000_000_000, 7]);
}

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The output a correct roller makes from `stream`, written independently
/// of the library as the textbook loop: a die of S sides reads the fewest
/// little-endian bytes k with 256^k >= S, throws away values at or above
/// the largest multiple of S that is at most 256^k, and shows value % S + 1;
/// a modifier M is shown as `+M` or `-M` and added to the sum. Returns the
/// text and how many bytes it used.
fn reference_rolls(stream: &[u8], dice: &[(usize, u64, i64)]) -> (String, usize) {
    let mut pos = 0;
    let mut text = String::new();
    for &(count, sides, modifier) in dice {
        let sides = u128::from(sides);
        let mut k = 0;
        while 1u128 << (8 * k) < sides {
            k += 1;
        }
        let range = 1u128 << (8 * k);
        let limit = range - range % sides;
        let mut faces = Vec::new();
        while faces.len() < count {
            let draw = &stream[pos..pos + k];
            pos += k;
            let v = draw
                .iter()
                .rev()
                .fold(0u128, |v, &b| v * 256 + u128::from(b));
            if v < limit {
                faces.push((v % sides + 1).to_string());
            }
        }
        let sum: i128 = faces.iter().map(|f| f.parse::<i128>().unwrap()).sum();
        let shown = match modifier {
            0 => String::new(),
            m if m > 0 => format!(" +{m}"),
            m => format!(" -{}", m.unsigned_abs()),
        };
        let total = sum + i128::from(modifier);
        text += &format!("{}{shown} = {total}\n", faces.join(" "));
    }
    (text, pos)
}

/// With a seeded daemon, `roll` prints exactly the reference rolls of the
/// keystream, and a following `nonce` starts on the very next byte: nothing
/// was read ahead or lost. Returns how many bytes the two commands used.
fn assert_tools_use_the_keystream_exactly(from: &Path) -> usize {
    let from = path_str(from);
    let stream = openssl_keystream(KEY, 200_000);
    // 70,000 d6 take more than one 64 KiB batch; d129 rejects almost half of
    // its draws; d4294967296 takes 4 bytes a die, d1 none. Modifiers read
    // nothing, and may take the total below zero.
    let dice = [
        (70_000, 6, 0),
        (3_000, 100, 0),
        (1_000, 1_000, -5),
        (1, 20, 0),
        (2, 1, 0),
        (1, 4, -10),
        (300, 129, 1_000_000_000),
        (50, 1 << 32, 0),
        (3, 6, 2),
    ];
    let (expected, used) = reference_rolls(&stream, &dice);
    let exprs: Vec<String> = dice
        .iter()
        .map(|&(n, s, m)| match m {
            0 => format!("{n}d{s}"),
            m if m > 0 => format!("{n}d{s}+{m}"),
            m => format!("{n}d{s}-{}", m.unsigned_abs()),
        })
        .collect();
    let mut args = vec!["roll", "--from", from];
    args.extend(exprs.iter().map(String::as_str));
    assert!(
        ok(&args) == expected,
        "roll output differs from the reference"
    );

    let nonces: String = stream[used..used + 8 * 100]
        .chunks(8)
        .map(|b| format!("{}\n", u64::from_le_bytes(b.try_into().unwrap())))
        .collect();
    assert_eq!(ok(&["nonce", "-n", "100", "--from", from]), nonces);
    used + 8 * 100
}

#[test]
fn seeded_fuse_file_gives_exact_rolls_and_nonces() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&["--seed", KEY, "--no-fifo"]);
    let used = assert_tools_use_the_keystream_exactly(&d.bits());
    // The daemon served exactly the bytes the tools used.
    assert_eq!(d.stats()["bytes_served_fuse"], used as u64);
}

#[test]
fn seeded_fifo_gives_exact_rolls_and_nonces() {
    let d = Daemon::start(&["--seed", KEY, "--no-fuse"]);
    assert_tools_use_the_keystream_exactly(&d.fifo);
}

#[test]
fn output_formats() {
    let d = Daemon::start(&["--no-fuse"]);
    let from = path_str(&d.fifo);
    let out = ok(&["roll", "3d6", "d20", "2d1", "--from", from]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(out.ends_with('\n'));
    faces(lines[0], 3, 6, 0);
    let d20 = faces(lines[1], 1, 20, 0)[0];
    assert_eq!(lines[1], format!("{d20} = {d20}"));
    assert_eq!(lines[2], "1 1 = 2");

    let one = ok(&["nonce", "--from", from]);
    assert!(one.ends_with('\n') && one.lines().count() == 1, "{one:?}");
    one.trim_end().parse::<u64>().unwrap();
    let many = ok(&["nonce", "-n", "1000", "--from", from]);
    let mut nonces: Vec<u64> = many.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(nonces.len(), 1000);
    nonces.sort_unstable();
    nonces.dedup();
    // Two equal among 1000 random 64-bit values: chance about 2.7e-14.
    assert_eq!(nonces.len(), 1000, "a repeated nonce");
    // Nonces are plain decimal, no padding: some are below 2^63.
    // (`--count 0` is a usage error: see tests/cli.rs.)
}

#[test]
fn bad_expressions_are_refused_by_name() {
    // Expressions are checked before the source is opened and before
    // anything is printed, so neither a missing source nor good expressions
    // before the bad one matter.
    let expected = "expected NdS, NdS+M or NdS-M like 3d6, d20 or 2d20-1";
    let notation = format!("not dice notation; {expected}");
    let no_sides = format!("no number of sides; {expected}");
    let plus = format!("the modifier after '+' must be a number; {expected}");
    let dice_range = "the number of dice must be from 1 to 10000000";
    let sides_range = "the number of sides must be from 1 to 4294967296";
    let modifier_range = "the modifier must be at most 1000000000";
    for (expr, why) in [
        ("0d6", dice_range),
        ("10000001d6", dice_range),
        ("3d0", sides_range),
        ("3d4294967297", sides_range),
        ("3x6", &notation),
        ("3d6*2", &notation),
        ("6d", &no_sides),
        ("3d6+", &plus),
        ("3d6+1d4", &plus),
        ("d20-1000000001", modifier_range),
    ] {
        let line = format!("roll {expr}: {why}");
        refused(&["roll", expr], 2, &line);
        refused(&["roll", "3d6", expr, "--from", "/nonexistent"], 2, &line);
    }
    refused(
        &["roll"],
        2,
        "the following required arguments were not provided: <EXPR>...",
    );
    refused(
        &["nonce", "-n", "many"],
        2,
        "invalid value 'many' for '--count <COUNT>': expected a whole number of at least 1",
    );
}

#[test]
fn missing_sources_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let m = path_str(&missing);
    refused(
        &["roll", "3d6", "--from", m],
        1,
        &format!("--from {m}: No such file or directory"),
    );
    refused(
        &["nonce", "--from", m],
        1,
        &format!("--from {m}: No such file or directory"),
    );
    let d = path_str(dir.path());
    refused(
        &["nonce", "--from", d],
        1,
        &format!("--from {d}: is a directory"),
    );

    // Issue 27: a plain file that ends is said to, not blamed on a daemon
    // ("the daemon went away", "no daemon is serving it").
    let short = dir.path().join("short.bin");
    std::fs::write(&short, b"abc").unwrap();
    let s = path_str(&short);
    refused(
        &["nonce", "--from", s],
        1,
        &format!("{s}: the file ended after 3 bytes (a plain file, not the device)"),
    );
    for args in [
        vec!["nonce", "--from", "/dev/null"],
        vec!["roll", "2d6", "d20", "--from", "/dev/null"],
    ] {
        let line = "/dev/null: the file ended after 0 bytes (a plain file, not the device)";
        refused(&args, 1, line);
    }

    // A FIFO that no daemon holds (left behind by a killed daemon): opening
    // must not block, and the first read ends at once.
    let stale = dir.path().join("stale");
    nix::unistd::mkfifo(&stale, Mode::from_bits_truncate(0o600)).unwrap();
    let s = path_str(&stale);
    for args in [vec!["nonce", "--from", s], vec!["roll", "d6", "--from", s]] {
        let out = finish_within(spawn(&args), Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "pilfered: {s}: end of file before the first byte: no daemon is serving it; start the device with 'pilfered serve'\n"
            )
        );
    }
}

/// Without --from: the FUSE file if it opens, else a FIFO that only we or
/// root can write, else an error that says how to get a source.
#[test]
fn default_source_is_chosen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bits = dir.path().join("mnt/bits");
    let fifo = dir.path().join("fifo");
    let refused_with = |fifo: &Path, why: &str| {
        assert_eq!(
            DeviceReader::open_default(&bits, fifo)
                .unwrap_err()
                .to_string(),
            format!(
                "no random source: cannot read {} (No such file or directory) or {} ({why}); start the device with 'pilfered serve'",
                bits.display(),
                fifo.display()
            )
        );
    };
    refused_with(&fifo, "No such file or directory");
    std::fs::write(&fifo, b"not random").unwrap();
    refused_with(&fifo, "not a FIFO");
    std::fs::remove_file(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622)).unwrap();
    refused_with(
        &fifo,
        "writable by other users (mode 0622), who could choose its bytes",
    );
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    refused_with(&link, "a symbolic link");
    std::fs::remove_file(&fifo).unwrap();

    let d = Daemon::start(&["--no-fuse"]);
    let r = DeviceReader::open_default(&bits, &d.fifo).unwrap();
    assert_eq!(r.path(), d.fifo);
    drop(d);
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&[]);
    let r = DeviceReader::open_default(&d.bits(), &d.fifo).unwrap();
    assert_eq!(r.path(), d.bits());
}

/// A daemon killed with SIGKILL leaves a dead mount and its FIFO behind: the
/// dead FUSE file is passed over, and the FIFO ends at once instead of
/// hanging.
#[test]
fn crashed_daemon_is_reported_not_waited_for() {
    if !fuse_available() {
        return;
    }
    let mut d = Daemon::start(&[]);
    d.stop_with(Signal::SIGKILL, Duration::from_secs(5));
    assert!(d.is_mounted() && d.fifo.exists());
    let mut r = DeviceReader::open_default(&d.bits(), &d.fifo).unwrap();
    assert_eq!(r.path(), d.fifo);
    assert_eq!(
        r.read_exact(&mut [0u8; 8]).unwrap_err().to_string(),
        format!(
            "{}: end of file before the first byte: no daemon is serving it; start the device with 'pilfered serve'",
            d.fifo.display()
        )
    );
}

/// The binary's own defaults, checked only where no device runs on them.
#[test]
fn no_default_source_says_how_to_get_one() {
    let defaults = ["/mnt/pilfered/bits", "/tmp/pilferedbits"];
    if defaults.iter().any(|p| Path::new(p).exists()) {
        eprintln!("SKIPPED: a device seems to be running on {defaults:?}");
        return;
    }
    let line = "no random source: cannot read /mnt/pilfered/bits (No such file or directory) or /tmp/pilferedbits (No such file or directory); start the device with 'pilfered serve' or pass --from PATH";
    refused(&["roll", "3d6"], 1, line);
    refused(&["nonce"], 1, line);
}

/// `pilfered roll 10000000d6 | head -c 100` and `pilfered nonce -n HUGE |
/// head -1`: the reader leaving is no error, and the tool stops at once.
#[test]
fn closed_stdout_ends_quietly() {
    let d = Daemon::start(&["--no-fuse"]);
    let from = path_str(&d.fifo);
    for args in [
        vec!["roll", "10000000d6", "--from", from],
        vec!["nonce", "-n", "1000000000000", "--from", from],
    ] {
        let mut child = spawn(&args);
        let mut first = [0u8; 100];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        drop(child.stdout.take());
        let out = finish_within(child, Duration::from_secs(10));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
}

/// A tool reading when its daemon stops ends with one line saying so.
#[test]
fn daemon_going_away_is_reported() {
    let mut runs = vec![("--no-fuse", "end of file after ")];
    if fuse_available() {
        runs.push(("--no-fifo", ""));
    }
    for (only, detail) in runs {
        let mut d = Daemon::start(&[only]);
        let from = if only == "--no-fuse" {
            d.fifo.clone()
        } else {
            d.bits()
        };
        let mut child = spawn(&["nonce", "-n", "1000000000000", "--from", path_str(&from)]);
        // Wait until it is reading, then keep draining its output.
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_exact(&mut [0u8; 100]).unwrap();
        let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let status = d.stop_with(Signal::SIGTERM, Duration::from_secs(2));
        assert_eq!(status.code(), Some(0), "log: {}", d.log_text());
        let out = finish_within(child, Duration::from_secs(5));
        drain.join().unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let prefix = format!("pilfered: {}: {detail}", from.display());
        assert!(
            stderr.starts_with(&prefix)
                && stderr.ends_with(": the daemon went away\n")
                && stderr.lines().count() == 1,
            "{only}: {stderr:?}"
        );
        assert_eq!(out.status.code(), Some(1), "{only}");
    }
}

#[test]
fn help_describes_the_tools() {
    let (status, out, _) = run(&["roll", "--help"]);
    assert_eq!(status, 0);
    for needle in [
        "NdS",
        "3d6",
        "d20",
        "10000000",
        "4294967296",
        "--from <PATH>",
    ] {
        assert!(out.contains(needle), "roll --help lacks {needle}:\n{out}");
    }
    let (status, out, _) = run(&["nonce", "--help"]);
    assert_eq!(status, 0);
    for needle in ["-n, --count <COUNT>", "[default: 1]", "--from <PATH>"] {
        assert!(out.contains(needle), "nonce --help lacks {needle}:\n{out}");
    }
    let (_, out, _) = run(&["--help"]);
    assert!(out.contains("roll") && out.contains("nonce"), "{out}");
}
