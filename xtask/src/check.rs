//! The fast gate (`cargo xtask check`): the tree's format, the lints as errors, and every
//! test that needs neither root nor a VM. It runs as any user, in a few minutes on a warm
//! machine, and `cargo xtask test` runs it first, so a bad change stops there rather than
//! 40 minutes into the privileged suite.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::codegen::workspace_root;

/// One step of the gate: a command, named, and how long it took.
fn step(name: &str, cmd: &mut Command, times: &mut Vec<(String, Duration)>) -> Result<()> {
    eprintln!("== check: {name}");
    let started = Instant::now();
    let status = cmd
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("{name}: running {cmd:?}"))?;
    times.push((name.to_owned(), started.elapsed()));
    if !status.success() {
        bail!("check: {name} failed ({cmd:?}: {status})");
    }
    Ok(())
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    let mut times = Vec::new();
    for tool in ["fmt", "clippy"] {
        let found = Command::new("cargo")
            .args([tool, "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!(
                "check: `cargo {tool}` is not installed (rustup component add {})",
                if tool == "fmt" { "rustfmt" } else { "clippy" }
            );
        }
    }
    // rustfmt.toml at the root; agent-ebpf is outside the workspace (it builds on
    // nightly for the BPF target), so its files are named, and checked by the same rustfmt.
    step("format", Command::new("cargo").args(["fmt", "--all", "--check"]), &mut times)?;
    step(
        "format (agent-ebpf)",
        Command::new("rustfmt").args([
            "--check",
            "--edition",
            "2024",
            "agent-ebpf/src/tc.rs",
            "agent-ebpf/src/trace.rs",
        ]),
        &mut times,
    )?;
    // Cargo.toml's pedantic set and its commented allow-list, as errors. agent-ebpf's
    // program is checked by its own build (nightly, bpfel), not here.
    step(
        "lints",
        Command::new("cargo").args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        &mut times,
    )?;
    // Unit tests are pure logic, except the few under a `needs_root` module (they open
    // namespaces), which `cargo xtask test` runs as root with everything else.
    step(
        "unit tests (no root, no VM)",
        Command::new("cargo").args([
            "test",
            "--workspace",
            "--lib",
            "--bins",
            "--",
            "--skip",
            "needs_root::",
        ]),
        &mut times,
    )?;
    eprintln!("check passed in {:.0?}:", started.elapsed());
    for (name, t) in times {
        eprintln!("  {name:<28} {:>6.1} s", t.as_secs_f64());
    }
    Ok(())
}
