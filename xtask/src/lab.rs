//! `cargo xtask lab`: a local lab on this machine. Two "hosts" (network namespaces
//! joined by a veth pair), a real agent on one, a scenario of faults against
//! measured traffic, and a report of what each fault did.

use std::{
    fmt::Write as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{codegen::workspace_root, setup::run_cmd};

const NS_A: &str = "fl-lab-a";
const NS_B: &str = "fl-lab-b";

struct Lab {
    agent: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            // SIGTERM: the agent reverts everything on a clean stop.
            let _ = Command::new("kill").arg(a.id().to_string()).status();
            let _ = a.wait();
        }
        for ns in [NS_A, NS_B] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// The lab's CA and certificates (mutual TLS, as everywhere else).
fn tls_dir() -> std::path::PathBuf {
    workspace_root().join("target/lab/tls")
}

fn ip(args: &[&str]) -> Result<()> {
    run_cmd(Command::new("ip").args(args))
}

fn cli(args: &[&str]) -> Result<String> {
    let bin = workspace_root().join("target/release/faultline");
    let out = Command::new("ip").args(["netns", "exec", NS_A]).arg(bin).args(["--agent", "https://10.99.0.1:7070", "--tls-dir"]).arg(tls_dir()).args(args).output()?;
    if !out.status.success() {
        bail!("faultline {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Ping from A to B: (sent, received, average RTT ms).
fn ping(count: u32) -> Result<(u32, u32, f64)> {
    let out = Command::new("ip").args(["netns", "exec", NS_A, "ping", "-q", "-n", "-i", "0.01", "-W", "1", "-c"]).arg(count.to_string()).arg("10.99.0.2").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sent = 0;
    let mut recv = 0;
    let mut avg = f64::NAN;
    for line in text.lines() {
        if line.contains("packets transmitted") {
            let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
            sent = nums.first().copied().unwrap_or(0);
            recv = nums.get(1).copied().unwrap_or(0);
        }
        if let Some(stats) = line.split(" = ").nth(1) {
            avg = stats.split('/').nth(1).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        }
    }
    Ok((sent, recv, avg))
}

pub fn run() -> Result<()> {
    crate::setup::run()?;
    run_cmd(Command::new("cargo").args(["build", "--release", "-p", "faultline-agent", "-p", "faultline-controller"]).current_dir(workspace_root()))?;
    let mut lab = Lab { agent: None };
    for ns in [NS_A, NS_B] {
        let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    ip(&["-n", NS_A, "link", "add", "lab0", "type", "veth", "peer", "name", "lab1", "netns", NS_B])?;
    ip(&["-n", NS_A, "addr", "add", "10.99.0.1/24", "dev", "lab0"])?;
    ip(&["-n", NS_B, "addr", "add", "10.99.0.2/24", "dev", "lab1"])?;
    ip(&["-n", NS_A, "link", "set", "lab0", "up"])?;
    ip(&["-n", NS_B, "link", "set", "lab1", "up"])?;
    let state = workspace_root().join("target/lab/state");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let _ = std::fs::remove_dir_all(tls_dir());
    run_cmd(Command::new(workspace_root().join("target/release/faultline")).args(["certs", "init"]).arg(tls_dir()))?;
    let log = std::fs::File::create(workspace_root().join("target/lab/agent.log"))?;
    lab.agent = Some(
        Command::new("ip")
            .args(["netns", "exec", NS_A])
            .arg(workspace_root().join("target/release/faultline-agent"))
            .args(["--listen", "10.99.0.1:7070", "--state-dir"])
            .arg(&state)
            .arg("--tls-dir")
            .arg(tls_dir())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting faultline-agent")?,
    );
    let mut ready = false;
    for _ in 0..100 {
        if cli(&["info"]).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !ready {
        bail!("agent did not come up; see target/lab/agent.log");
    }

    let mut report = String::from("# faultline local lab\n\nHosts: `fl-lab-a` (10.99.0.1, runs faultline-agent) and `fl-lab-b` (10.99.0.2), one veth link.\nTraffic: 200 pings A→B per phase, 10 ms apart.\n\n");
    report.push_str("```\n");
    report.push_str(&cli(&["info"])?);
    report.push_str("```\n\n| phase | fault | sent | received | loss % | avg RTT ms |\n|---|---|---|---|---|---|\n");
    let mut row = |phase: &str, fault: &str, r: (u32, u32, f64)| {
        let loss = if r.0 == 0 { f64::NAN } else { 100.0 * f64::from(r.0 - r.1) / f64::from(r.0) };
        let _ = writeln!(report, "| {phase} | {fault} | {} | {} | {loss:.1} | {:.3} |", r.0, r.1, r.2);
        println!("lab: {phase:<10} {fault:<36} sent {:>4} received {:>4} loss {loss:>5.1}% rtt {:.3} ms", r.0, r.1, r.2);
    };
    row("baseline", "none", ping(200)?);
    let id = cli(&["fault", "apply", "drop", "-i", "lab0", "--loss", "25%", "--lease", "60s"])?;
    row("fault", "eBPF drop 25% egress", ping(200)?);
    let listed = cli(&["fault", "list"])?;
    cli(&["fault", "revert", id.trim()])?;
    row("recovery", "none", ping(200)?);
    let id = cli(&["fault", "apply", "partition", "-i", "lab0", "--peer", "10.99.0.2/32", "--direction", "both", "--lease", "60s"])?;
    row("fault", "partition from 10.99.0.2, both ways", ping(100)?);
    cli(&["fault", "revert", id.trim()])?;
    row("recovery", "none", ping(100)?);
    let id = cli(&["fault", "apply", "bandwidth", "-i", "lab0", "--rate", "1mbit", "--lease", "60s"])?;
    row("fault", "bandwidth 1mbit egress (pings fit)", ping(100)?);
    cli(&["fault", "revert", id.trim()])?;
    let _ = writeln!(report, "\nFault counters while the drop fault was active:\n\n```\n{listed}```");
    let leftover = Command::new("ip").args(["netns", "exec", NS_A, "tc", "qdisc", "show", "dev", "lab0"]).output()?;
    let _ = writeln!(report, "\nAfter revert, `tc qdisc show dev lab0`:\n\n```\n{}```", String::from_utf8_lossy(&leftover.stdout));
    let path = workspace_root().join("target/lab/report.md");
    std::fs::write(&path, &report)?;
    println!("lab: report written to {}", path.display());
    drop(lab);
    Ok(())
}
