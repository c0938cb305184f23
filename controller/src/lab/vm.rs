//! The VM lab: each host a qemu VM (Debian + systemd) on a tap in the lab's bridge.

use super::{
    BRIDGE, Command, Context, Duration, Instant, Lab, Path, ProcKind, Read, Result, Stdio, bail,
    controller_url, host_ip, ip, save, sut,
};

/// How qemu runs the VMs: hardware virtualisation, or TCG's emulation (5-10x slower).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The name `qemu -accel` takes.
    fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// KVM if qemu can really run the kernel with it here, else TCG. /dev/kvm may exist and a
/// VM still hang or die at its first instructions, so the probe boots `kernel` with no root
/// disk: it prints its banner and panics at once, and qemu exits (-no-reboot).
pub(super) fn accel(kernel: &Path) -> Accel {
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg;
    }
    let probe = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = probe else { return Accel::Tcg };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let mut out = String::new();
            let _ = child.stdout.take().map(|mut o| o.read_to_string(&mut out));
            return if out.contains("Linux version") { Accel::Kvm } else { Accel::Tcg };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    Accel::Tcg
}

/// Each host a qemu VM on a tap in the bridge: its own disk (a copy-on-write overlay of the
/// image) and a seed disk (a tar: its name and the lab's certificates).
pub(super) fn vms(
    lab: &mut Lab<'_>,
    names: &[String],
    image: &Path,
    qemu: &Path,
    accel: Accel,
) -> Result<()> {
    let dir = lab.dir;
    for (i, tap) in (1..=lab.state.hosts).zip(names) {
        let host = format!("h{i}");
        lab.state.taps.push(tap.clone());
        save(dir, &lab.state)?;
        ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        ip(&["link", "set", tap, "master", BRIDGE, "up"])?;
        let disk = dir.join(format!("{host}.qcow2"));
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(image.join("disk.img").canonicalize()?)
            .arg(&disk)
            .output()
            .context("qemu-img (apt: qemu-utils)")?;
        if !out.status.success() {
            bail!(
                "qemu-img create {}: {}",
                disk.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let seed = dir.join(format!("{host}-seed"));
        std::fs::create_dir_all(seed.join("tls"))?;
        let labels: String = sut::labels(i).iter().map(|l| format!(" --label {l}")).collect();
        std::fs::write(
            seed.join("host.env"),
            format!(
                "HOST={host}\nIP={}\nCONTROLLER={}\nLABELS=\"{}\"\n",
                host_ip(i),
                controller_url(),
                labels.trim()
            ),
        )?;
        let mut files = vec!["host.env", "tls", "site.conf"];
        if i == 1 {
            std::fs::write(seed.join("site.conf"), sut::balancer_site(lab.state.hosts))?;
        } else {
            std::fs::write(seed.join("site.conf"), sut::backend_site(i, "/var/www/faultline"))?;
            std::fs::write(seed.join("index.html"), sut::page(i))?;
            let conf: String = sut::redis(i)
                .iter()
                .map(|(k, v)| format!("{k} {}\n", if v.is_empty() { "\"\"" } else { v }))
                .collect();
            std::fs::write(seed.join("redis.conf"), conf)?;
            files.extend(["index.html", "redis.conf"]);
        }
        // The VM's own agent pair (bound to its name) becomes its agent.pem.
        for (from, to) in [
            ("ca.pem".to_owned(), "ca.pem"),
            (format!("agent-{host}.pem"), "agent.pem"),
            (format!("agent-{host}-key.pem"), "agent-key.pem"),
            ("cli.pem".into(), "cli.pem"),
            ("cli-key.pem".into(), "cli-key.pem"),
        ] {
            std::fs::copy(dir.join("tls").join(&from), seed.join("tls").join(to))?;
        }
        let tar = dir.join(format!("{host}-seed.tar"));
        let out =
            Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&seed).args(&files).output()?;
        if !out.status.success() {
            bail!("tar: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let s = |v: &str| v.to_owned();
        let args = vec![
            s("-accel"),
            s(accel.as_str()),
            s("-m"),
            s("512"),
            s("-smp"),
            s("1"),
            s("-nodefaults"),
            s("-display"),
            s("none"),
            s("-no-reboot"),
            s("-kernel"),
            image.join("vmlinuz").display().to_string(),
            s("-initrd"),
            image.join("stage1.gz").display().to_string(),
            s("-append"),
            s("console=ttyS0 panic=-1 quiet systemd.show_status=0"),
            s("-drive"),
            format!("file={},format=qcow2,if=virtio", disk.display()),
            s("-drive"),
            format!("file={},format=raw,if=virtio,readonly=on", tar.display()),
            s("-netdev"),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            s("-device"),
            format!("virtio-net-pci,netdev=n0,mac=52:54:00:77:00:{:02x}", 10 + i),
            s("-serial"),
            format!("file:{}", dir.join("logs").join(format!("{host}-console.log")).display()),
        ];
        lab.spawn(ProcKind::Vm, &host, None, qemu, &args)?;
    }
    Ok(())
}
