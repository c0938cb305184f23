//! Real Docker containers for the container tests: an image built here from the host's
//! static busybox (no registry is reachable), a user network with IPv4 and IPv6, and
//! containers on it. Everything is removed on drop.

use std::process::{Command, Output};

pub const IMAGE: &str = "faultline-test/busybox:latest";

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("run docker (apt: docker.io)")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds the test image once per machine: the static busybox and its applet links,
/// imported as a one-layer image.
pub fn ensure_image() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        assert!(
            docker(&["version", "--format", "{{.Server.Version}}"]).status.success(),
            "no Docker engine answers on /var/run/docker.sock: the container tests need one (`cargo xtask test` starts dockerd)"
        );
        if docker(&["image", "inspect", IMAGE]).status.success() {
            return;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists()).expect("busybox (apt: busybox-static)");
        let root = std::env::temp_dir().join(format!("fl-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "ping", "sleep", "ip", "nc", "cat", "dd", "kill"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = Command::new("tar").arg("-C").arg(&root).args(["-c", "."]).stdout(std::process::Stdio::piped()).spawn().unwrap();
        let out = Command::new("docker").args(["import", "-", IMAGE]).stdin(tar.stdout.unwrap()).output().unwrap();
        assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_dir_all(&root);
    });
}

/// A user network `fltN` (10.79.N.0/24, `fd79:N::/64`) and containers on it, named `fltN-NAME`.
pub struct Containers {
    pub net: String,
    pub names: Vec<String>,
}

impl Containers {
    /// `specs`: short names with their labels ("k=v").
    pub fn new(id: u8, specs: &[(&str, &[&str])]) -> Self {
        ensure_image();
        let net = format!("flt{id}");
        let names: Vec<String> = specs.iter().map(|(n, _)| format!("flt{id}-{n}")).collect();
        // What a crashed earlier run may have left.
        for n in &names {
            let _ = docker(&["rm", "-f", n]);
        }
        let _ = docker(&["network", "rm", &net]);
        docker_ok(&["network", "create", "--ipv6", "--subnet", &format!("10.79.{id}.0/24"), "--subnet", &format!("fd79:{id}::/64"), &net]);
        let me = Self { net, names };
        for ((_, labels), name) in specs.iter().zip(&me.names) {
            let mut args = vec!["run", "-d", "--name", name, "--network", &me.net];
            for l in *labels {
                args.extend(["--label", l]);
            }
            args.extend([IMAGE, "sleep", "3600"]);
            docker_ok(&args);
        }
        me
    }

    pub fn name(&self, short: &str) -> String {
        self.names.iter().find(|n| n.ends_with(&format!("-{short}"))).cloned().expect("a container of this set")
    }

    pub fn pid(&self, short: &str) -> u32 {
        docker_ok(&["inspect", "-f", "{{.State.Pid}}", &self.name(short)]).parse().unwrap()
    }

    pub fn ip4(&self, short: &str) -> String {
        docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &self.name(short)])
    }

    pub fn ip6(&self, short: &str) -> String {
        docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}", &self.name(short)])
    }

    /// `ping` from inside container `short`: (transmitted, received).
    pub fn ping(&self, short: &str, to: &str, count: u32, interval: &str) -> (u32, u32) {
        let out = docker(&["exec", &self.name(short), "ping", "-q", "-c", &count.to_string(), "-i", interval, "-W", "1", to]);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("ping output: {text} {}", String::from_utf8_lossy(&out.stderr)));
        let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        (nums[0], nums[1])
    }

    /// A container namespace's qdiscs, filters and links, for byte-for-byte comparison.
    pub fn ns_state(&self, short: &str) -> String {
        let ns = format!("--net=/proc/{}/ns/net", self.pid(short));
        let run = |cmd: &[&str]| {
            let out = Command::new("nsenter").arg(&ns).args(cmd).output().expect("nsenter (util-linux)");
            assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        // htb prints how many unclassified packets it passed; the container's own IPv6
        // chatter moves that count, and it is no part of what was made or undone.
        let mut s: String = run(&["tc", "qdisc", "show"])
            .lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let keep: Vec<&str> = words.iter().enumerate().filter(|(i, _)| *i == 0 || words[i - 1] != "direct_packets_stat").map(|(_, w)| *w).collect();
                keep.join(" ") + "\n"
            })
            .collect();
        for dir in ["ingress", "egress"] {
            s += &run(&["tc", "filter", "show", "dev", "eth0", dir]);
        }
        s + &run(&["ip", "-o", "link", "show"]).lines().map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned() + "\n").collect::<String>()
    }

    pub fn remove(&self, short: &str) {
        docker_ok(&["rm", "-f", &self.name(short)]);
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = docker(&["rm", "-f", n]);
        }
        let _ = docker(&["network", "rm", &self.net]);
    }
}
