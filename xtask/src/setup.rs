//! Installs what building and testing faultline needs. Idempotent: each step checks first.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::codegen::workspace_root;

/// Debian packages the builds, tests and labs use.
const APT: &[&str] = &[
    "iproute2", "iputils-ping", "bpftool", "iptables", "iperf3", "protobuf-compiler", "qemu-system-x86", "busybox-static", "cpio", "strace",
];
/// The Debian kernel the VM tests boot (it has netem, unlike many CI kernels).
pub const KERNEL_PKG: &str = "linux-image-6.1.0-56-amd64";

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
}

pub fn run() -> Result<()> {
    let missing: Vec<&str> = APT.iter().copied().filter(|p| !ok(Command::new("dpkg").args(["-s", p]))).collect();
    if !missing.is_empty() {
        println!("setup: apt-get install {}", missing.join(" "));
        run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        run_cmd(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !ok(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        println!("setup: installing the nightly toolchain");
        run_cmd(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let sysroot = String::from_utf8(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]).output()?.stdout)?;
    let sysroot = sysroot.trim();
    if !Path::new(sysroot).join("lib/rustlib/src/rust/library/core").exists() {
        println!("setup: rustup component add rust-src --toolchain nightly");
        run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    // bpf-linker loads the toolchain's libLLVM, which rustup puts on the library path.
    if !ok(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"])) {
        // bpf-linker must use an LLVM of rustc's major version; none is packaged,
        // but the nightly toolchain ships one: link bpf-linker against it.
        let libdir = Path::new(sysroot).join("lib");
        let lib = std::fs::read_dir(&libdir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so.")))
            .context("nightly toolchain ships no libLLVM.so")?;
        let major = lib.file_name().unwrap().to_string_lossy().trim_start_matches("libLLVM.so.").split('.').next().unwrap_or("").to_owned();
        let prefix = workspace_root().join("target/llvm");
        std::fs::create_dir_all(prefix.join("lib"))?;
        let link = prefix.join("lib/libLLVM.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)?;
        println!("setup: building bpf-linker against LLVM {major} from {}", lib.display());
        run_cmd(
            Command::new("cargo")
                .args(["+nightly", "install", "bpf-linker", "--locked", "--no-default-features", "--features"])
                .arg(format!("llvm-{major}"))
                .env("LLVM_PREFIX", &prefix),
        )?;
    }
    kernel()?;
    println!("setup: done");
    Ok(())
}

/// Downloads and unpacks the Debian kernel for VM tests into target/vm/kernel.
pub fn kernel() -> Result<()> {
    let dir = workspace_root().join("target/vm/kernel");
    if dir.join("boot").exists() {
        return Ok(());
    }
    let dl = workspace_root().join("target/vm/dl");
    std::fs::create_dir_all(&dl)?;
    println!("setup: fetching {KERNEL_PKG}");
    if !ok(Command::new("apt-get").args(["download", KERNEL_PKG]).current_dir(&dl)) {
        run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        run_cmd(Command::new("apt-get").args(["download", KERNEL_PKG]).current_dir(&dl))?;
    }
    let deb = std::fs::read_dir(&dl)?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb")).context("kernel .deb missing")?;
    let tmp = workspace_root().join("target/vm/kernel.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    std::fs::rename(&tmp, &dir)?;
    Ok(())
}
