//! A real client for the tests: a QEMU guest whose virtio-rng device reads
//! a file on the host (`-object rng-random,filename=PATH`), as a VM host
//! serves its guests from pilfered. The guest is a kernel and an initramfs
//! made here, at test time: a static busybox whose init reads `/dev/hwrng`
//! in a loop, 64 KiB at a time, and prints on the serial console the bytes
//! it has read so far, or that a read failed.
//!
//! It needs `qemu-system-x86_64` (package qemu-system-x86), a static
//! `busybox` (busybox-static), `cpio`, and a guest kernel: `/boot/vmlinuz-*`
//! with its modules (linux-image-amd64), or `PILFERED_TEST_KERNEL`. Any of
//! them missing fails the test with what to install. `.ci/run` installs
//! them. KVM is used where the CPU offers it (`vmx`/`svm` in
//! /proc/cpuinfo and /dev/kvm: a `/dev/kvm` alone, as in some nested VMs,
//! boots nothing), else TCG; `PILFERED_TEST_QEMU_ACCEL` chooses.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Bytes the guest reads between two reports.
pub const CHUNK: u64 = 64 << 10;

/// How long a boot may take (TCG boots in about 5 s on the test machine).
const BOOT: Duration = Duration::from_secs(120);

/// What the guest printed, as it comes.
#[derive(Default)]
struct Console {
    /// Bytes read, by the guest's last report.
    read: u64,
    /// Reads that failed.
    failed: u64,
    up: bool,
    /// QEMU's output has ended (it exited).
    ended: bool,
    /// The last lines, for messages.
    tail: VecDeque<String>,
}

/// A running guest; dropping it kills QEMU.
pub struct Guest {
    child: Child,
    console: Arc<(Mutex<Console>, Condvar)>,
    /// How long the boot took, to the guest's first line.
    pub boot_time: Duration,
    pub accel: &'static str,
    _dir: TempDir,
}

impl Guest {
    /// Boots a guest whose virtio-rng reads `source` (a FIFO, the FUSE
    /// file, a character device: a regular file ends, and QEMU then spins
    /// on its end), and waits until its reader runs.
    pub fn boot(source: &Path) -> Guest {
        let dir = tempfile::Builder::new()
            .prefix("pilfered-guest")
            .tempdir()
            .unwrap();
        let kernel = Kernel::find();
        let initrd = initramfs(dir.path(), &kernel);
        let accel = accel();
        let qemu = require("qemu-system-x86_64", "qemu-system-x86");
        let started = Instant::now();
        let mut child = Command::new(qemu)
            .args(["-accel", accel, "-m", "256", "-smp", "1"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-kernel")
            .arg(&kernel.image)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .arg("-object")
            .arg(format!("rng-random,id=rng0,filename={}", source.display()))
            .args(["-device", "virtio-rng-pci,rng=rng0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-x86_64");
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let err = BufReader::new(child.stderr.take().unwrap());
        for (stream, lines) in [
            (true, Box::new(out) as Box<dyn BufRead + Send>),
            (false, Box::new(err)),
        ] {
            let console = Arc::clone(&console);
            std::thread::spawn(move || follow(lines, &console, stream));
        }
        let mut guest = Guest {
            child,
            console,
            boot_time: Duration::ZERO,
            accel,
            _dir: dir,
        };
        let up = guest.wait(BOOT, |c| c.up || c.ended);
        if !up || !guest.is_alive() {
            panic!(
                "the guest did not boot within {BOOT:?} ({accel}): {}",
                guest.console_tail()
            );
        }
        guest.boot_time = started.elapsed();
        guest
    }

    /// Bytes the guest has read, as it last said.
    pub fn bytes_read(&self) -> u64 {
        self.console.0.lock().unwrap().read
    }

    /// Reads that failed in the guest.
    pub fn failed_reads(&self) -> u64 {
        self.console.0.lock().unwrap().failed
    }

    /// Waits until the guest has read `more` bytes beyond what it had read
    /// at the call, for at most `within`; the total then, or why not (a
    /// stall, QEMU's death), with the console's last lines.
    pub fn wait_for_more(&mut self, more: u64, within: Duration) -> Result<u64, String> {
        let goal = self.bytes_read() + more;
        self.wait(within, |c| c.read >= goal || c.ended);
        let read = self.bytes_read();
        if read >= goal {
            return Ok(read);
        }
        let why = if self.is_alive() {
            format!("the guest read {read} of {goal} bytes within {within:?}")
        } else {
            format!("QEMU exited ({:?})", self.child.try_wait())
        };
        Err(format!("{why}: {}", self.console_tail()))
    }

    /// Whether QEMU still runs.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// QEMU's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The console's last lines (QEMU's own messages among them).
    pub fn console_tail(&self) -> String {
        let c = self.console.0.lock().unwrap();
        c.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn wait(&self, within: Duration, mut done: impl FnMut(&Console) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let (lock, changed) = &*self.console;
        let mut c = lock.lock().unwrap();
        while !done(&c) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            c = changed.wait_timeout(c, left).unwrap().0;
        }
        true
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Takes QEMU's output line by line into `console` (the guest's reports
/// from its serial console on stdout; QEMU's own errors on stderr).
fn follow(lines: Box<dyn BufRead + Send>, console: &(Mutex<Console>, Condvar), stdout: bool) {
    for line in lines.split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        let mut c = console.0.lock().unwrap();
        if let Some(report) = line.strip_prefix("pilfered-guest: ") {
            if report == "up" {
                c.up = true;
            } else if let Some(n) = report.strip_prefix("read ") {
                c.read = n.parse().unwrap_or(c.read);
            } else if report == "read failed" {
                c.failed += 1;
            }
        }
        c.tail.push_back(line);
        if c.tail.len() > 40 {
            c.tail.pop_front();
        }
        console.1.notify_all();
    }
    if stdout {
        console.0.lock().unwrap().ended = true;
        console.1.notify_all();
    }
}

/// The path of `program`, or a panic naming the package to install.
fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is missing: the QEMU guest tests need it (apt-get install {package})")
        })
}

/// `kvm` where the CPU can run it, else `tcg`.
fn accel() -> &'static str {
    match std::env::var("PILFERED_TEST_QEMU_ACCEL").as_deref() {
        Ok("kvm") => return "kvm",
        Ok("tcg") => return "tcg",
        Ok(other) => panic!("PILFERED_TEST_QEMU_ACCEL={other}: kvm or tcg"),
        Err(_) => {}
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let kvm = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if virt && kvm { "kvm" } else { "tcg" }
}

/// A guest kernel and the modules the guest needs from it.
struct Kernel {
    image: PathBuf,
    modules: PathBuf,
}

/// The modules the guest loads, with what they need first.
const MODULES: [&str; 2] = ["virtio_pci", "virtio-rng"];

impl Kernel {
    /// `PILFERED_TEST_KERNEL`, else the last /boot/vmlinuz-* by name; its
    /// modules are those in /lib/modules/VERSION, from its name
    /// `vmlinuz-VERSION`.
    fn find() -> Kernel {
        let image = match std::env::var_os("PILFERED_TEST_KERNEL") {
            Some(p) => PathBuf::from(p),
            None => {
                let mut images: Vec<PathBuf> = std::fs::read_dir("/boot")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                    })
                    .collect();
                images.sort();
                images.pop().unwrap_or_else(|| {
                    panic!("no guest kernel in /boot: the QEMU guest tests need one (apt-get install --no-install-recommends linux-image-amd64, or set PILFERED_TEST_KERNEL)")
                })
            }
        };
        let name = image.file_name().unwrap().to_string_lossy().into_owned();
        let version = name.strip_prefix("vmlinuz-").unwrap_or_else(|| {
            panic!(
                "{}: a guest kernel is named vmlinuz-VERSION",
                image.display()
            )
        });
        let modules = Path::new("/lib/modules").join(version);
        assert!(
            modules.join("modules.dep").is_file(),
            "{}: no modules for the guest kernel {version} (install its linux-image package whole)",
            modules.display()
        );
        Kernel { image, modules }
    }

    /// The module files to load, in order (each after what it needs).
    fn load_order(&self) -> Vec<PathBuf> {
        let deps = std::fs::read_to_string(self.modules.join("modules.dep")).unwrap();
        let needs = |module: &str| -> (String, Vec<String>) {
            let file = format!("/{module}.ko");
            let line = deps
                .lines()
                .find(|l| l.split(':').next().is_some_and(|f| f.ends_with(&file)))
                .unwrap_or_else(|| {
                    panic!(
                        "the guest kernel has no {module}.ko module (is it compressed, or built in?): {}",
                        self.modules.display()
                    )
                });
            let (path, rest) = line.split_once(':').unwrap();
            (
                path.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            )
        };
        let mut order: Vec<String> = Vec::new();
        for module in MODULES {
            let (path, needed) = needs(module);
            // modules.dep lists what a module needs, what those need last:
            // load from the end.
            for dep in needed.into_iter().rev().chain([path]) {
                if !order.contains(&dep) {
                    order.push(dep);
                }
            }
        }
        order.into_iter().map(|p| self.modules.join(p)).collect()
    }
}

/// The guest's init: loads the modules, stops the kernel's own reader of
/// the hwrng (so that the guest's reader is the only one), then reads
/// and reports.
const INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin
busybox mount -t devtmpfs dev /dev
busybox mount -t proc proc /proc
busybox mount -t sysfs sys /sys
for m in $(busybox cat /modules); do busybox insmod "/$m" || echo "pilfered-guest: cannot load $m"; done
q=/sys/class/misc/hw_random/rng_quality
[ -e $q ] && echo 0 > $q
echo "pilfered-guest: up"
n=0
while :; do
    if busybox head -c CHUNK /dev/hwrng >/dev/null; then
        n=$((n + CHUNK))
        echo "pilfered-guest: read $n"
    else
        echo "pilfered-guest: read failed"
    fi
done
"#;

/// Makes the initramfs (an uncompressed newc cpio) in `dir`.
fn initramfs(dir: &Path, kernel: &Kernel) -> PathBuf {
    let busybox = require("busybox", "busybox-static");
    let bytes = std::fs::read(&busybox).unwrap();
    assert!(
        !bytes[..bytes.len().min(1 << 16)]
            .windows(8)
            .any(|w| w == b"ld-linux"),
        "{} is dynamically linked: the QEMU guest needs a static one (apt-get install busybox-static)",
        busybox.display()
    );
    let root = dir.join("root");
    for d in ["bin", "dev", "proc", "sys", "m"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("bin/busybox"), &bytes).unwrap();
    let mut list = Vec::new();
    for module in kernel.load_order() {
        let name = module.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&module, root.join("m").join(&name)).unwrap();
        list.push(format!("m/{name}"));
    }
    std::fs::write(root.join("modules"), list.join("\n") + "\n").unwrap();
    std::fs::write(root.join("init"), INIT.replace("CHUNK", &CHUNK.to_string())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for exe in ["init", "bin/busybox"] {
        std::fs::set_permissions(root.join(exe), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cpio = require("cpio", "cpio");
    let out = dir.join("initrd.cpio");
    let files: Vec<String> = walk(&root)
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    let mut child = Command::new(cpio)
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .expect("cpio");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all((files.join("\n") + "\n").as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "cpio failed");
    out
}

/// Every file and directory under `root`, parents first.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}
