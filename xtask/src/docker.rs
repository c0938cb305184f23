//! Docker's engine while the test suite runs. Most users' machines run it, and it changes
//! the host's firewall (`iptables -P FORWARD DROP` where it turns forwarding on), so the
//! suite, the lab and the demo are tested with it running. An engine already answering is
//! used as it is; one started here is stopped at the end.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const SOCKET: &str = "/var/run/docker.sock";

/// Whether an engine answers `GET /_ping` on its socket.
fn answers() -> bool {
    let Ok(mut s) = UnixStream::connect(SOCKET) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// The engine, stopped on drop if it was started here.
pub struct Engine {
    child: Option<Child>,
}

pub fn start() -> Result<Engine> {
    if answers() {
        println!("docker: the engine on {SOCKET} answers; using it");
        return Ok(Engine { child: None });
    }
    let log_path = crate::codegen::workspace_root().join("target/dockerd.log");
    let log = std::fs::File::create(&log_path).with_context(|| log_path.display().to_string())?;
    let mut child = Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd (apt: docker.io)")?;
    let deadline = Instant::now() + Duration::from_mins(1);
    while !answers() {
        if let Some(status) = child.try_wait()? {
            bail!("dockerd exited ({status}); see {}", log_path.display());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("dockerd did not answer on {SOCKET} within 60 s; see {}", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let policy = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
        .unwrap_or_default();
    println!(
        "docker: started dockerd (pid {}), log in {}; firewall now: {policy}",
        child.id(),
        log_path.display()
    );
    Ok(Engine { child: Some(child) })
}

/// The images the host tests import (`faultline-test/busybox`, `faultline-test/tc`): shared
/// by every test process of one run, so removed here, once they are all done.
pub fn remove_test_images() -> Result<()> {
    let out = Command::new("docker")
        .args([
            "image",
            "ls",
            "--filter",
            "reference=faultline-test/*",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output()
        .context("docker image ls")?;
    if !out.status.success() {
        bail!("docker image ls: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let images: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    if images.is_empty() {
        return Ok(());
    }
    let rm = Command::new("docker")
        .args(["image", "rm"])
        .args(&images)
        .output()
        .context("docker image rm")?;
    if !rm.status.success() {
        bail!(
            "docker image rm {}: {}",
            images.join(" "),
            String::from_utf8_lossy(&rm.stderr).trim()
        );
    }
    println!("docker: removed the tests' images {}", images.join(", "));
    Ok(())
}

impl Engine {
    /// Leaves the engine running after this process (`demo --compose --keep`: the
    /// platform it runs stays up); says how to stop it. Nothing to do if it was running
    /// before.
    pub fn keep_running(mut self) {
        if let Some(child) = self.child.take() {
            println!(
                "docker: dockerd (pid {}) left running for what was kept; `kill {}` stops it",
                child.id(),
                child.id()
            );
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let Some(child) = &mut self.child else { return };
        let pid = child.id().to_string();
        // SIGTERM lets it stop its containerd and remove its socket; then SIGKILL.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
