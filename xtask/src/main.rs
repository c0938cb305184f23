//! Developer tasks: `cargo xtask setup | check | test | demo | codegen | vm-test | bench | fresh-check`.

mod check;
mod codegen;
mod compose;
mod docker;
mod fresh_check;
mod setup;
mod tools;
mod vm;
mod vm_lab;
mod vm_systemd;

use std::process::Command;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::{codegen::workspace_root, setup::run_cmd};

#[derive(Parser)]
#[command(about = "faultline developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Installs everything builds and tests need (apt packages, nightly rust-src, bpf-linker, the VM kernel).
    Setup,
    /// The fast gate, as any user: format, lints as errors, and the tests that need neither
    /// root nor a VM (a few minutes warm).
    Check,
    /// Runs every test: the fast gate first, codegen freshness, unit, privileged host tests,
    /// VM tests, the Compose platform and the demo.
    Test,
    /// netem tests in a qemu VM running a Debian kernel (this host's kernel may lack netem).
    VmTest,
    /// The systemd units for real: a debootstrap'ed Debian booted under qemu with faultline
    /// installed by dist/install.sh.
    VmSystemd,
    /// Benchmarks side by side with tc and iptables; prints the tables of docs/benchmarks.md.
    Bench,
    /// README's first command: a local lab of three hosts (agents, controller, nginx, redis),
    /// a scenario of faults under load, the run directory and report.html.
    Demo {
        /// Leave the lab up afterwards (`target/release/faultline lab down` removes it).
        #[arg(long)]
        keep: bool,
        /// Hosts are qemu VMs with a Debian kernel (netem delay included), not namespaces.
        #[arg(long)]
        vm: bool,
        /// The Compose platform instead (compose/): images, `up`, compose/scenario.yaml
        /// through the Web API, runs/compose-*/report.html, `down`.
        #[arg(long, conflicts_with = "vm")]
        compose: bool,
    },
    /// The Compose platform's images (compose/docker-compose.yml), built with no registry:
    /// a local debian:bookworm-slim if none can be pulled, binaries and wheels from the host.
    ComposeBuild,
    /// The Compose platform's test: up, traffic and a fault through the Web API, their
    /// effect in the load's figures and in Prometheus, every dashboard query, a scenario, down.
    ComposeTest,
    /// The VM lab's image (Debian 12, systemd, nginx, redis, faultline) in target/vm/lab.
    VmLabImage,
    /// The VM lab boots, netem delay through the controller shows in ping, down cleans up.
    VmLabTest,
    /// Builds the release binaries and runs dist/install.sh with these arguments, e.g.
    /// `cargo xtask install -- --role agent --tls DIR --controller https://10.0.0.1:7080`.
    Install {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// README's commands as on a fresh machine: `.ci/run` in a clean clone of HEAD (no
    /// target/); --purge first removes what setup installs that the fresh image lacks.
    FreshCheck {
        /// apt-get purge the packages setup installs (those the fresh image lacks) and remove
        /// bpf-linker first, so setup must install everything again. Changes this machine.
        #[arg(long)]
        purge: bool,
        /// The fresh image's package list (`apt<TAB>package<TAB>version` lines).
        #[arg(long, default_value = fresh_check::FRESH_LIST)]
        fresh_list: std::path::PathBuf,
    },
    /// The fuzz targets (`fuzz_*` tests: parsers and request validation), each for SECONDS
    /// (default 60), printing the inputs each reached; run by `test`.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Regenerates proto/src/gen from the .proto files (needs protoc); --check fails on a diff.
    Codegen {
        #[arg(long)]
        check: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Demo { keep, compose: true, .. } => {
            setup::run()?;
            compose::demo(keep)
        }
        Task::Demo { keep, vm, .. } => demo(keep, vm),
        Task::ComposeBuild => {
            setup::run()?;
            compose::build()
        }
        Task::ComposeTest => {
            setup::run()?;
            let _docker = docker::start()?;
            compose::test()
        }
        Task::VmLabTest => {
            setup::run()?;
            vm_lab::test()
        }
        Task::VmLabImage => {
            setup::run()?;
            vm_lab::build().map(|_| ())
        }
        Task::Install { args } => {
            let ws = workspace_root();
            setup::build_release(&[])?;
            run_cmd(
                Command::new(ws.join("dist/install.sh"))
                    .arg("--bin")
                    .arg(ws.join("target/release"))
                    .args(args),
            )
        }
        Task::Bench => {
            setup::run()?;
            run_cmd(
                Command::new("cargo")
                    .args(["bench", "-p", "faultline-agent", "--bench", "faults"])
                    .current_dir(workspace_root()),
            )?;
            // The fan-out bench starts the release binaries itself.
            setup::build_release(&[])?;
            run_cmd(
                Command::new("cargo")
                    .args(["bench", "-p", "faultline-controller", "--bench", "fanout"])
                    .current_dir(workspace_root()),
            )?;
            run_cmd(
                Command::new("cargo")
                    .args(["bench", "-p", "faultline-controller", "--bench", "load"])
                    .current_dir(workspace_root()),
            )
        }
        Task::VmTest => vm::run(),
        Task::VmSystemd => {
            setup::run()?;
            vm_systemd::run()
        }
        Task::Codegen { check } => codegen::run(check),
        Task::Fuzz { seconds } => fuzz(seconds),
        Task::FreshCheck { purge, fresh_list } => fresh_check::run(purge, &fresh_list),
        Task::Check => check::run(),
        Task::Test => {
            setup::run()?;
            // Minutes, not the suite's 45: a format slip or a lint stops here.
            check::run()?;
            codegen::run(true)?;
            // Host tests change network namespaces and qdiscs: they need root.
            if !nix_is_root() {
                anyhow::bail!("the test suite needs root (network namespaces, qdiscs, eBPF)");
            }
            // Everything from here on runs with Docker's engine (and its firewall) in place.
            let _docker = docker::start()?;
            run_cmd(
                Command::new("cargo").args(["test", "--workspace"]).current_dir(workspace_root()),
            )?;
            // Kept when a test failed (the `?` above), for a look; gone when all passed.
            docker::remove_test_images()?;
            fuzz(60)?;
            vm::run()?;
            vm_systemd::run()?;
            vm_lab::test()?;
            compose::test()?;
            // The project's main job, as README's first command runs it.
            demo(false, false)
        }
    }
}

fn demo(keep: bool, vm: bool) -> Result<()> {
    setup::run()?;
    if !nix_is_root() {
        anyhow::bail!("the lab needs root (network namespaces, eBPF)");
    }
    let ws = workspace_root();
    setup::build_release(&[])?;
    let mut cmd = Command::new(ws.join("target/release/faultline"));
    cmd.args(["lab", "demo"]).current_dir(&ws);
    if vm {
        cmd.arg("--vm").arg(vm_lab::build()?);
    }
    if keep {
        cmd.arg("--keep");
    }
    run_cmd(&mut cmd)
}

/// Every `fuzz_*` test with a budget of `seconds` each; two at a time (the machine's cores).
fn fuzz(seconds: u32) -> Result<()> {
    run_cmd(
        Command::new("cargo")
            .args([
                "test",
                "--workspace",
                "--lib",
                "--bins",
                "fuzz_",
                "--",
                "--nocapture",
                "--test-threads",
                "2",
            ])
            .env("FAULTLINE_FUZZ_SECONDS", seconds.to_string())
            .current_dir(workspace_root()),
    )
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
