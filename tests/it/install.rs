//! `make install` and `make uninstall` into a temporary DESTDIR, with the
//! binaries `cargo test` has already built (no second build: CARGO=false
//! makes any attempt fail): the exact installed tree for PREFIX=/usr/local
//! and PREFIX=/usr, the unit's ExecStart, man pages that man(1) and groff
//! render without a warning, a bash completion that completes, the
//! installed scripts finding their library, each other and the daemon, and
//! nothing of ours left after uninstall.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{BIN, fuse_available};
use pilfered::internal::mounts;
use tempfile::TempDir;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What is at an installed path.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File(u32),
    Link(PathBuf),
}

/// The generator of man pages and completions, which `cargo test` builds
/// (the crate's dev-dependency on itself turns on the feature `assets`).
fn assets_gen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pilfered-assets"))
}

/// `make -C ROOT TARGET DESTDIR=... PREFIX=...` with this build's binaries.
fn make(target: &str, destdir: &Path, prefix: &str, gendir: &Path) -> Output {
    let out = Command::new("make")
        .arg("-C")
        .arg(ROOT)
        .arg(target)
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("PREFIX={prefix}"))
        .arg(format!("PILFERED_BIN={BIN}"))
        .arg(format!("ASSETS_GEN={}", assets_gen().display()))
        .arg(format!("GENDIR={}", gendir.display()))
        .arg("CARGO=false")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make {target} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every file and symlink under `root`, by path relative to it.
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, Entry>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if meta.file_type().is_symlink() {
                into.insert(rel, Entry::Link(std::fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                walk(root, &path, into);
            } else {
                into.insert(rel, Entry::File(meta.permissions().mode() & 0o7777));
            }
        }
    }
    let mut into = BTreeMap::new();
    walk(root, root, &mut into);
    into
}

/// The directories under `root` (relative), for what uninstall leaves.
fn dirs(root: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(root)
        .args(["-mindepth", "1", "-type", "d", "-printf", "%P\n"])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// The tree `make install` must make for `prefix` (no leading slash):
/// `zsh` is the zsh completion directory, `sbin_link` whether /sbin gets a
/// link to the mount helper.
fn expected(prefix: &str, zsh: &str, sbin_link: bool) -> BTreeMap<String, Entry> {
    let mut want = BTreeMap::new();
    let mut file = |path: String, mode: u32| {
        want.insert(path, Entry::File(mode));
    };
    for (path, mode) in [
        ("bin/pilfered", 0o755),
        ("bin/pilfered-mount", 0o755),
        ("bin/pilfered-umount", 0o755),
        ("sbin/mount.fuse.pilfered", 0o755),
        ("lib/pilfered/pilfered-lib.sh", 0o644),
        ("lib/systemd/system/pilfered.service", 0o644),
        ("lib/systemd/system/pilfered.socket", 0o644),
        ("share/bash-completion/completions/pilfered", 0o644),
        ("share/fish/vendor_completions.d/pilfered.fish", 0o644),
        ("share/doc/pilfered/README.md", 0o644),
    ] {
        file(format!("{prefix}/{path}"), mode);
    }
    file(format!("{zsh}/_pilfered"), 0o644);
    for page in [
        "pilfered",
        "pilfered-serve",
        "pilfered-roll",
        "pilfered-nonce",
        "pilfered-status",
    ] {
        file(format!("{prefix}/share/man/man1/{page}.1"), 0o644);
    }
    for page in ["pilfered-mount", "pilfered-umount", "mount.fuse.pilfered"] {
        file(format!("{prefix}/share/man/man8/{page}.8"), 0o644);
    }
    for doc in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let name = doc.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            file(format!("{prefix}/share/doc/pilfered/docs/{name}"), 0o644);
        }
    }
    if sbin_link {
        want.insert(
            "sbin/mount.fuse.pilfered".to_string(),
            Entry::Link(PathBuf::from(format!("/{prefix}/sbin/mount.fuse.pilfered"))),
        );
    }
    want
}

/// The `KEY=` lines of a unit file.
fn unit_lines(unit: &Path, key: &str) -> Vec<String> {
    std::fs::read_to_string(unit)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("{key}=")))
        .map(String::from)
        .collect()
}

fn install_and_uninstall(prefix: &str, zsh: &str, sbin_link: bool) {
    let tmp = TempDir::new().unwrap();
    let dest = tmp.path().join("root");
    let gendir = tmp.path().join("gen");
    make("install", &dest, prefix, &gendir);

    let rel = prefix.trim_start_matches('/');
    assert_eq!(tree(&dest), expected(rel, zsh, sbin_link));

    // Every page the generator wrote is installed (a new subcommand needs
    // its page added to MANPAGES in the Makefile).
    let mut generated: Vec<String> = std::fs::read_dir(gendir.join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    generated.sort();
    let mut installed: Vec<String> = std::fs::read_dir(dest.join(rel).join("share/man/man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    installed.sort();
    assert_eq!(generated, installed);

    let unit = dest.join(rel).join("lib/systemd/system/pilfered.service");
    assert_eq!(
        unit_lines(&unit, "ExecStart"),
        [format!(
            "ExecStart={prefix}/bin/pilfered serve --mount /mnt/pilfered --fifo /run/pilferedbits"
        )]
    );
    // The socket holds the FIFO the service serves.
    let socket = dest.join(rel).join("lib/systemd/system/pilfered.socket");
    assert_eq!(
        unit_lines(&socket, "ListenFIFO"),
        ["ListenFIFO=/run/pilferedbits"]
    );
    for unit in [&unit, &socket] {
        // What Documentation= names is installed.
        let docs = unit_lines(unit, "Documentation");
        assert_eq!(docs.len(), 1, "{docs:?}");
        for url in docs[0].trim_start_matches("Documentation=").split(' ') {
            let path = if let Some(page) = url.strip_prefix("man:") {
                let (name, section) = page.trim_end_matches(')').split_once('(').unwrap();
                format!("{prefix}/share/man/man{section}/{name}.{section}")
            } else {
                let path = url.strip_prefix("file://").expect("man: or file:// URL");
                assert!(
                    path.starts_with(&format!("{prefix}/share/doc/pilfered/")),
                    "{url}"
                );
                path.to_string()
            };
            let installed = dest.join(path.trim_start_matches('/'));
            assert!(
                installed.is_file(),
                "Documentation= {url}: {installed:?} not installed"
            );
        }
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(
            !text.contains("@BINDIR@") && !text.contains("@DOCDIR@"),
            "placeholder left in {unit:?}"
        );
    }

    make("uninstall", &dest, prefix, &gendir);
    assert_eq!(tree(&dest), BTreeMap::new(), "uninstall left files behind");
    // Only the shared hierarchy (bin, share/man/man1, ...) is left, as
    // empty directories; the package's own directories are gone.
    let left = dirs(&dest);
    for own in ["lib/pilfered", "share/doc/pilfered"] {
        let own = format!("{rel}/{own}");
        assert!(!left.contains(&own), "{own} left: {left:?}");
    }
}

#[test]
fn install_and_uninstall_under_usr_local() {
    install_and_uninstall("/usr/local", "usr/local/share/zsh/site-functions", true);
}

#[test]
fn install_and_uninstall_under_usr() {
    // /usr/sbin is where mount(8) looks (/sbin is a link to it on Debian):
    // no /sbin link. The unit goes to /usr/lib/systemd/system.
    install_and_uninstall("/usr", "usr/share/zsh/vendor-completions", false);
}

/// The generated man pages and the scripts' own render with man(1) and
/// without a groff warning, and hold no literal backtick; pilfered(1)
/// covers every subcommand with its options, and each SYNOPSIS shows the
/// options' values and what repeats.
#[test]
fn man_pages_render() {
    let tmp = TempDir::new().unwrap();
    let status = Command::new(assets_gen()).arg(tmp.path()).status().unwrap();
    assert!(status.success());
    let man = tmp.path().join("man");
    let generated = std::fs::read_dir(&man).unwrap().map(|p| p.unwrap().path());
    let scripts = ["pilfered-mount", "pilfered-umount", "mount.fuse.pilfered"]
        .map(|name| Path::new(ROOT).join(format!("mount-scripts/{name}.8")));
    for page in generated.chain(scripts) {
        let roff = std::fs::read_to_string(&page).unwrap();
        assert!(!roff.contains('`'), "a backtick in {page:?}");
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(out.status.success(), "{page:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{page:?}");
    }
    let out = Command::new("man")
        .arg("-l")
        .arg(man.join("pilfered.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // Words as they read, whatever the lines they were filled into.
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "NAME",
        "COMMANDS",
        "pilfered serve [--mount <DIR>] [--fifo <PATH>]",
        "[--source <NAME>]...",
        "[--group <NAME>]",
        "--mount <DIR> [default: /mnt/pilfered]",
        "--allow-other",
        "pilfered roll [--from <PATH>] <EXPR>...",
        "pilfered nonce",
        "-n, --count <COUNT> [default: 1]",
        "pilfered status [--mount <DIR>] [--interval <SECS>]",
        "FILES",
        "/mnt/pilfered/bits",
        "EXIT STATUS",
        "SEE ALSO",
        "pilfered-serve(1)",
    ] {
        assert!(
            text.contains(needle),
            "pilfered(1) lacks {needle:?}:\n{text}"
        );
    }
}

/// The bash completion loads and completes subcommands and options.
#[test]
fn bash_completion_completes() {
    let tmp = TempDir::new().unwrap();
    let status = Command::new(assets_gen()).arg(tmp.path()).status().unwrap();
    assert!(status.success());
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(
                r#"source "$1"; COMP_WORDS=($2); COMP_CWORD=$((${#COMP_WORDS[@]} - 1));
                   _pilfered pilfered "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}";
                   printf '%s\n' "${COMPREPLY[@]}""#,
            )
            .arg("bash")
            .arg(tmp.path().join("completions/pilfered.bash"))
            .arg(words)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(complete("pilfered se"), "serve\n");
    assert_eq!(complete("pilfered serve --mo"), "--mount\n");
    assert_eq!(complete("pilfered st"), "status\n");
}

/// Stops whatever the installed scripts started under a directory, even
/// when the test panics.
struct MountGuard {
    umount: PathBuf,
    mount: PathBuf,
    rundir: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new(&self.umount)
            .arg("-q")
            .arg(&self.mount)
            .env("PILFERED_RUNDIR", &self.rundir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if mounts::mount_at(&self.mount).is_ok_and(|m| m.is_some()) {
            let _ = mounts::detach(&self.mount);
        }
    }
}

/// Installed, the scripts find their library in PREFIX/lib/pilfered, the
/// mount helper in PREFIX/sbin finds PREFIX/bin/pilfered-mount, and that
/// starts PREFIX/bin/pilfered, with none of them on PATH.
#[test]
fn installed_scripts_find_each_other() {
    if !fuse_available() {
        return;
    }
    let tmp = TempDir::new().unwrap();
    let dest = tmp.path().join("root");
    make("install", &dest, "/opt/pf", &tmp.path().join("gen"));
    let prefix = dest.join("opt/pf");
    assert_eq!(
        std::fs::read_link(dest.join("sbin/mount.fuse.pilfered")).unwrap(),
        Path::new("/opt/pf/sbin/mount.fuse.pilfered")
    );

    let mnt = tmp.path().join("mnt");
    let fifo = tmp.path().join("fifo");
    let rundir = tmp.path().join("run");
    let _guard = MountGuard {
        umount: prefix.join("bin/pilfered-umount"),
        mount: mnt.clone(),
        rundir: rundir.clone(),
    };
    let run = |script: &Path, args: &[&std::ffi::OsStr]| {
        Command::new(script)
            .args(args)
            .env_remove("PILFERED")
            .env("PATH", "/usr/bin:/bin")
            .env("PILFERED_RUNDIR", &rundir)
            .env("PILFERED_TIMEOUT", "20")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let helper = prefix.join("sbin/mount.fuse.pilfered");
    let fifo_opt = format!("fifo={}", fifo.display());
    let out = run(
        &helper,
        &[
            "pilfered".as_ref(),
            mnt.as_os_str(),
            "-v".as_ref(),
            "-o".as_ref(),
            fifo_opt.as_ref(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "mount.fuse.pilfered: running {} {} -- --fifo {}\n",
            prefix.join("bin/pilfered-mount").display(),
            mnt.display(),
            fifo.display()
        )
    );
    // The daemon is the installed copy, found next to pilfered-mount.
    let pidfile = std::fs::read_dir(&rundir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pid"))
        .expect("the daemon wrote a pidfile");
    // The daemon's own record: its PID and start time.
    let record = std::fs::read_to_string(pidfile).unwrap();
    let pid = record.split_whitespace().next().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, prefix.join("bin/pilfered"));
    let mut buf = vec![0; 4096];
    use std::io::Read;
    std::fs::File::open(mnt.join("bits"))
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();

    let out = run(&prefix.join("bin/pilfered-umount"), &[mnt.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    assert!(mounts::mount_at(&mnt).unwrap().is_none());
    assert!(!fifo.exists());
}
