//! `cargo xtask vm-test`: boots the Debian kernel under qemu (TCG) with an initramfs
//! holding the agent, the CLI, iproute2, ping, iperf3 and the kernel modules, runs
//! xtask/vm/vm-test.sh inside, and reads the verdict from the serial console.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{codegen::workspace_root, setup::run_cmd};

const MODULES: &[&str] =
    &["veth", "ifb", "sch_netem", "sch_htb", "sch_tbf", "sch_ingress", "cls_bpf"];
const TOOLS: &[&str] = &["/usr/sbin/ip", "/usr/sbin/tc", "/usr/bin/ping", "/usr/bin/iperf3"];
const APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "insmod", "poweroff", "sleep", "cat", "echo", "awk", "grep", "sed",
    "kill", "cut", "head", "tail", "diff", "uname", "ls", "wc",
];

/// Shared libraries a binary needs, by `ldd`.
fn libs(bin: &Path, out: &mut BTreeSet<PathBuf>) -> Result<()> {
    let o = Command::new("ldd").arg(bin).output()?;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let path = line.split("=>").nth(1).unwrap_or(line).split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            out.insert(PathBuf::from(path));
        }
    }
    Ok(())
}

fn copy(src: &Path, root: &Path) -> Result<()> {
    let dst = root.join(src.strip_prefix("/").unwrap_or(src));
    std::fs::create_dir_all(dst.parent().unwrap())?;
    std::fs::copy(src, &dst).with_context(|| format!("copying {}", src.display()))?;
    Ok(())
}

fn initramfs(kernel_dir: &Path) -> Result<PathBuf> {
    let ws = workspace_root();
    let root = kernel_dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "lib/modules",
        "proc",
        "sys",
        "tmp",
        "run",
        "var/lib",
        "dev",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("busybox-static missing (cargo xtask setup)")?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    let mut needed = BTreeSet::new();
    let bins = [ws.join("target/release/faultline-agent"), ws.join("target/release/faultline")];
    for b in bins.iter().map(PathBuf::as_path).chain(TOOLS.iter().map(Path::new)) {
        libs(b, &mut needed)?;
        let dst = if b.starts_with(&ws) {
            root.join("bin").join(b.file_name().unwrap())
        } else {
            root.join(b.strip_prefix("/")?)
        };
        std::fs::copy(b, &dst).with_context(|| format!("copying {}", b.display()))?;
    }
    for l in &needed {
        copy(l, &root)?;
    }
    // The dynamic loader may be named through a symlink; keep the path ldd printed.
    copy(Path::new("/lib64/ld-linux-x86-64.so.2"), &root)?;
    for dist in std::fs::read_dir("/usr/lib/x86_64-linux-gnu/tc")? {
        let p = dist?.path();
        if p.extension().is_some_and(|e| e == "dist") {
            copy(&p, &root)?;
        }
    }
    let release = std::fs::read_dir(kernel_dir.join("lib/modules"))?
        .next()
        .context("no kernel modules")??
        .path();
    for m in MODULES {
        let dst = root.join("lib/modules").join(format!("{m}.ko"));
        if let Some(found) = walk(&release.join("kernel"), &format!("{m}.ko"))? {
            std::fs::copy(found, dst)?;
        } else {
            // Newer Debian kernels ship xz-compressed modules; busybox insmod wants them plain.
            let xz = walk(&release.join("kernel"), &format!("{m}.ko.xz"))?
                .with_context(|| format!("module {m} not in {}", release.display()))?;
            let out = Command::new("xz").arg("-dc").arg(&xz).output().context("xz (xz-utils)")?;
            std::fs::write(dst, out.stdout)?;
        }
    }
    for (name, src) in [("init", "xtask/vm/init"), ("vm-test.sh", "xtask/vm/vm-test.sh")] {
        std::fs::copy(ws.join(src), root.join(name))?;
        std::fs::set_permissions(root.join(name), std::fs::Permissions::from_mode(0o755))?;
    }
    let out = kernel_dir.join("initrd.gz");
    run_cmd(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        root.display(),
        out.display()
    )))?;
    Ok(out)
}

fn walk(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            if let Some(f) = walk(&p, name)? {
                return Ok(Some(f));
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

pub fn run() -> Result<()> {
    crate::setup::build_release(&[])?;
    let mut failures = Vec::new();
    // FAULTLINE_VM_ONLY=debian-backports boots one kernel (for quick iterations).
    let only = std::env::var("FAULTLINE_VM_ONLY").ok();
    for (label, suite) in crate::setup::KERNELS {
        if only.as_deref().is_some_and(|o| o != *label) {
            continue;
        }
        let dir = crate::setup::kernel(label, suite)?;
        if let Err(e) = boot(&dir, label) {
            println!("vm-test: {label}: {e:#}");
            failures.push(label);
        }
    }
    if !failures.is_empty() {
        bail!("VM tests failed on {failures:?}");
    }
    Ok(())
}

fn boot(kernel_dir: &Path, label: &str) -> Result<()> {
    let initrd = initramfs(kernel_dir)?;
    let kernel = vmlinuz(kernel_dir)?;
    println!("vm-test: booting {} under qemu (TCG)", kernel.display());
    let log = kernel_dir.join("console.log");
    let args = ["-smp", "2"];
    let append = "console=ttyS0 quiet panic=-1";
    let first = boot_once(label, &kernel, &initrd, &args, append, &log)?;
    // A VM that stops without a failed test and without finishing (a TCG hiccup, seen
    // once in CI after 23 passes) gets one more boot; its console tail is printed either
    // way, so a kernel panic the agent caused is on the record and fails the second time.
    if first.done || first.failed > 0 {
        return first.verdict(&log);
    }
    println!(
        "vm-test: {label}: the VM stopped after {} passes without finishing; its console ended with:",
        first.passed
    );
    print_tail(&first.console);
    println!("vm-test: {label}: booting it once more");
    qemu(label, &kernel, &initrd, &args, append, &log)
}

fn print_tail(console: &str) {
    let lines: Vec<&str> = console.lines().collect();
    for line in &lines[lines.len().saturating_sub(30)..] {
        println!("vm-console: {line}");
    }
}

pub fn vmlinuz(kernel_dir: &Path) -> Result<PathBuf> {
    let boot = kernel_dir.join("boot");
    std::fs::read_dir(&boot)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz")))
        .context("no vmlinuz")
}

/// What one boot's console said.
pub struct Boot {
    passed: usize,
    failed: usize,
    done: bool,
    console: String,
}

impl Boot {
    fn verdict(&self, log: &Path) -> Result<()> {
        if !self.done {
            bail!("the VM did not finish its tests; see {}", log.display());
        }
        if self.failed > 0 || self.passed == 0 {
            bail!("{} VM tests failed", self.failed);
        }
        Ok(())
    }
}

/// Boots a VM and counts the "vm-test: ok ..." and "vm-test: FAIL ..." lines its console
/// prints until "vm-test: done"; the console goes to `log`.
pub fn qemu(
    label: &str,
    kernel: &Path,
    initrd: &Path,
    extra: &[&str],
    append: &str,
    log: &Path,
) -> Result<()> {
    let boot = boot_once(label, kernel, initrd, extra, append, log)?;
    if !boot.done {
        print_tail(&boot.console);
    }
    boot.verdict(log)
}

fn boot_once(
    label: &str,
    kernel: &Path,
    initrd: &Path,
    extra: &[&str],
    append: &str,
    log: &Path,
) -> Result<Boot> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(extra)
        .args(["-append", append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu (cargo xtask setup installs qemu-system-x86)")?;
    let stdout = qemu.stdout.take().unwrap();
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut passed, mut failed, mut done) = (0, 0, false);
    let mut console = String::new();
    // A ceiling so a wedged VM cannot eat CI's budget; the tests take a few minutes.
    while start.elapsed() < Duration::from_mins(20) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                console.push_str(&line);
                console.push('\n');
                let Some(rest) =
                    line.trim_end_matches('\r').split("vm-test: ").nth(1).map(str::to_owned)
                else {
                    continue;
                };
                println!("vm-test: {rest}");
                if rest.starts_with("ok ") {
                    passed += 1;
                } else if rest.starts_with("FAIL") {
                    failed += 1;
                } else if rest == "done" {
                    done = true;
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if qemu.try_wait()?.is_some() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    std::fs::write(log, &console)?;
    println!(
        "vm tests ({label}): {passed} passed, {failed} failed ({:.0} s; console in {})",
        start.elapsed().as_secs_f64(),
        log.display()
    );
    Ok(Boot { passed, failed, done, console })
}
