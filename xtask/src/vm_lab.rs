//! `cargo xtask vm-lab-image`: the disk image, kernel and stage-1 initramfs that
//! `faultline lab up --vm DIR` boots once per host: Debian 12 with systemd, nginx and redis
//! from Debian, faultline installed by dist/install.sh, and faultline-lab-host.service,
//! which makes each VM the host its seed disk names (xtask/vm/lab-host.sh).

use std::{os::unix::fs::PermissionsExt, path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::{codegen::workspace_root, vm_systemd};

const HOST_UNIT: &str = "[Unit]
Description=faultline lab: this VM's name, address, certificates and services (seed disk)
After=local-fs.target
Before=faultline-agent.service nginx.service redis-server.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/bin/faultline-lab-host

[Install]
WantedBy=multi-user.target
";

pub fn build() -> Result<PathBuf> {
    let ws = workspace_root();
    let (root, kernel_dir) = vm_systemd::stage("lab")?;
    // install.sh wants certificates; the lab's own arrive at boot on the seed disk.
    let placeholder = ws.join("target/vm/lab-image-tls");
    vm_systemd::install(&root, &placeholder, "agent", &[])?;
    for e in std::fs::read_dir(root.join("etc/faultline/tls"))? {
        std::fs::remove_file(e?.path())?;
    }
    std::fs::write(root.join("etc/systemd/system/faultline-lab-host.service"), HOST_UNIT)?;
    let script = root.join("usr/local/bin/faultline-lab-host");
    std::fs::copy(ws.join("xtask/vm/lab-host.sh"), &script)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    // Started by faultline-lab-host once configured, not at boot with Debian's defaults.
    vm_systemd::systemctl(&root, &["disable", "nginx.service", "redis-server.service"])?;
    vm_systemd::systemctl(
        &root,
        &["enable", "faultline-lab-host.service", "faultline-agent.service"],
    )?;
    let out = ws.join("target/vm/lab");
    vm_systemd::image(&root, &kernel_dir, &out)?;
    std::fs::remove_dir_all(&root)?;
    println!("vm-lab-image: {} (disk.img, vmlinuz, stage1.gz)", out.display());
    Ok(out)
}

/// Average ping RTT in ms from this machine to `addr` (5 pings).
fn rtt(addr: &str) -> Option<f64> {
    let out = Command::new("ping").args(["-c", "5", "-i", "0.2", "-q", addr]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
}

/// `cargo xtask vm-lab-test`: the VM lab boots, a netem delay applied through the
/// controller shows in ping, and `lab down` leaves no VM, tap or bridge behind.
pub fn test() -> Result<()> {
    let ws = workspace_root();
    let image = build()?;
    let cli = ws.join("target/release/faultline");
    let dir = ws.join("target/vm/lab-run");
    let faultline = |args: &[&str]| -> Result<String> {
        let out = Command::new(&cli)
            .args(args)
            .env("FAULTLINE_CONTROLLER", "https://10.77.0.1:7080")
            .env("FAULTLINE_TLS_DIR", dir.join("tls"))
            .output()?;
        if !out.status.success() {
            bail!(
                "faultline {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let d = dir.display().to_string();
    faultline(&["lab", "down", "--dir", &d])?;
    let mut failed = Vec::new();
    let mut check = |name: String, ok: bool| {
        println!("vm-lab: {} {name}", if ok { "ok" } else { "FAIL" });
        if !ok {
            failed.push(name);
        }
    };
    let result = (|| -> Result<()> {
        let up = faultline(&["lab", "up", "--vm", &image.display().to_string(), "--dir", &d])?;
        check("three VM hosts registered".into(), up.matches("healthy").count() == 3);
        // The doctor of a VM's agent (the same probes `faultline doctor` prints) on the
        // Debian kernel: netem present, where this host's kernel has none.
        let info = Command::new(&cli)
            .args(["--agent", "https://10.77.0.12:7070", "info", "--json"])
            .env_remove("FAULTLINE_CONTROLLER")
            .env("FAULTLINE_TLS_DIR", dir.join("tls"))
            .output()?;
        let info = String::from_utf8_lossy(&info.stdout);
        check(
            "doctor on the VM lab's Debian kernel: netem present".into(),
            info.contains(r#""feature":"netem","ok":true"#),
        );
        let before = rtt("10.77.0.12").unwrap_or(f64::NAN);
        let id = faultline(&[
            "fault", "apply", "netem", "-i", "eth0", "--delay", "100ms", "--lease", "60s", "--on",
            "h2",
        ])?;
        let during = rtt("10.77.0.12").unwrap_or(f64::NAN);
        let other = rtt("10.77.0.13").unwrap_or(f64::NAN);
        check(
            format!(
                "netem 100 ms on h2 through the controller: ping {before:.1} -> {during:.1} ms"
            ),
            (100.0..200.0).contains(&during),
        );
        check(format!("h3 untouched: {other:.1} ms"), other < 50.0);
        faultline(&["fault", "revert", id.trim()])?;
        let after = rtt("10.77.0.12").unwrap_or(f64::NAN);
        check(format!("reverted: {after:.1} ms"), after < 50.0);
        Ok(())
    })();
    let down = faultline(&["lab", "down", "--dir", &d]);
    result?;
    down?;
    let links =
        String::from_utf8_lossy(&Command::new("ip").args(["-o", "link", "show"]).output()?.stdout)
            .into_owned();
    check("no tap or bridge left".into(), !links.contains("fl-lab"));
    let procs = String::from_utf8_lossy(&Command::new("pgrep").args(["-af", &d]).output()?.stdout)
        .into_owned();
    check(format!("no VM left running {}", procs.trim()), procs.trim().is_empty());
    if !failed.is_empty() {
        bail!("VM lab checks failed: {failed:?}");
    }
    Ok(())
}
