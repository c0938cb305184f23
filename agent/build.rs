//! Builds agent-ebpf for the bpfel target with nightly and bpf-linker
//! (installed by `cargo xtask setup`), and hands the object to the agent.

use std::{path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf = manifest.parent().unwrap().join("agent-ebpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out.join("ebpf-target");
    for p in ["src", "common/src", "Cargo.toml", "common/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(p).display());
    }
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&ebpf)
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--bin",
            "faultline-tc",
            "--bin",
            "faultline-trace",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Cdebuginfo=2\u{1f}-Clink-arg=--btf")
        // The outer build's compiler settings must not leak into the bpf build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTUP_TOOLCHAIN");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running rustup for agent-ebpf: {e} (run `cargo xtask setup`)"));
    assert!(
        status.success(),
        "building agent-ebpf failed; `cargo xtask setup` installs nightly rust-src and bpf-linker"
    );
    for bin in ["faultline-tc", "faultline-trace"] {
        let obj = target_dir.join("bpfel-unknown-none/release").join(bin);
        std::fs::copy(&obj, out.join(bin))
            .unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
    }
}
