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
        import(&root, IMAGE);
    });
}

/// Imports the tree at `root` as a one-layer image named `image`, then removes the tree.
fn import(root: &std::path::Path, image: &str) {
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = Command::new("docker")
        .args(["import", "-", image])
        .stdin(tar.stdout.unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(root);
}

/// (transmitted, received) from ping's summary, busybox's or iputils'; `None` without one.
pub fn ping_counts(output: &str) -> Option<(u32, u32)> {
    let line = output.lines().find(|l| l.contains("packets transmitted"))?;
    let nums: Vec<u32> =
        line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    Some((*nums.first()?, *nums.get(1)?))
}

/// The Pumba-style sidecar's image: the host's `tc` with the libraries it loads, for
/// An image `image` holding each of `programs` at /usr/local/bin/NAME with the shared
/// libraries it loads (from ldd): a binary built on this host, run as a container would run
/// it (the agent as its Kubernetes `DaemonSet` runs it). Made anew each call: the binaries
/// change between builds.
pub fn binary_image(image: &str, programs: &[&std::path::Path]) {
    let root = std::env::temp_dir().join(format!("fl-bin-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for program in programs {
        let ldd = Command::new("ldd").arg(program).output().expect("ldd (libc-bin)");
        let libs = String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        for lib in &libs {
            let to = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("{lib}: {e}"));
        }
        let to = root.join("usr/local/bin").join(program.file_name().unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(program, &to).unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    }
    // Mount points a read-only root cannot create, and /tmp.
    for d in ["proc", "sys", "dev", "tmp", "etc", "run", "var/lib", "var/run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    import(&root, image);
}

/// `docker run --network container:X --cap-add NET_ADMIN` (benchmarks only).
pub const TC_IMAGE: &str = "faultline-test/tc:latest";

pub fn ensure_tc_image() {
    ensure_image();
    if docker(&["image", "inspect", TC_IMAGE]).status.success() {
        return;
    }
    let root = std::env::temp_dir().join(format!("fl-tc-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ldd = Command::new("ldd").arg("/usr/sbin/tc").output().expect("ldd (libc-bin)");
    let libs = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    for file in libs.iter().map(String::as_str).chain(["/usr/sbin/tc"]) {
        let to = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file, &to).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    import(&root, TC_IMAGE);
}

/// A user network `fltN` (10.79.N.0/24, `fd79:N::/64`) and containers on it, named `fltN-NAME`.
pub struct Containers {
    pub net: String,
    pub names: Vec<String>,
}

impl Containers {
    /// `specs`: short names with their labels ("k=v"); each runs `sleep 3600`.
    pub fn new(id: u8, specs: &[(&str, &[&str])]) -> Self {
        Self::running(id, specs, &["sleep", "3600"])
    }

    /// As `new`, each container running `cmd`.
    pub fn running(id: u8, specs: &[(&str, &[&str])], cmd: &[&str]) -> Self {
        ensure_image();
        let net = format!("flt{id}");
        let names: Vec<String> = specs.iter().map(|(n, _)| format!("flt{id}-{n}")).collect();
        // What a crashed earlier run may have left.
        for n in &names {
            let _ = docker(&["rm", "-f", n]);
        }
        let _ = docker(&["network", "rm", &net]);
        docker_ok(&[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            &format!("10.79.{id}.0/24"),
            "--subnet",
            &format!("fd79:{id}::/64"),
            &net,
        ]);
        let me = Self { net, names };
        for ((_, labels), name) in specs.iter().zip(&me.names) {
            let mut args = vec!["run", "-d", "--name", name, "--network", &me.net];
            for l in *labels {
                args.extend(["--label", l]);
            }
            args.push(IMAGE);
            args.extend(cmd);
            docker_ok(&args);
        }
        me
    }

    pub fn name(&self, short: &str) -> String {
        self.names
            .iter()
            .find(|n| n.ends_with(&format!("-{short}")))
            .cloned()
            .expect("a container of this set")
    }

    pub fn pid(&self, short: &str) -> u32 {
        docker_ok(&["inspect", "-f", "{{.State.Pid}}", &self.name(short)]).parse().unwrap()
    }

    pub fn ip4(&self, short: &str) -> String {
        docker_ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.name(short),
        ])
    }

    pub fn ip6(&self, short: &str) -> String {
        docker_ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}",
            &self.name(short),
        ])
    }

    /// Runs `cmd` inside container `short`: the image's busybox applets, not the host's programs.
    pub fn exec(&self, short: &str, cmd: &[&str]) -> Output {
        let name = self.name(short);
        let mut args = vec!["exec", name.as_str()];
        args.extend(cmd);
        docker(&args)
    }

    /// `ping` from inside container `short`: (transmitted, received).
    pub fn ping(&self, short: &str, to: &str, count: u32, interval: &str) -> (u32, u32) {
        let out = self
            .exec(short, &["ping", "-q", "-c", &count.to_string(), "-i", interval, "-W", "1", to]);
        let text = String::from_utf8_lossy(&out.stdout);
        ping_counts(&text).unwrap_or_else(|| {
            panic!("ping output: {text} {}", String::from_utf8_lossy(&out.stderr))
        })
    }

    /// A container namespace's qdiscs, filters and links, for byte-for-byte comparison.
    pub fn ns_state(&self, short: &str) -> String {
        ns_state(self.pid(short))
    }

    pub fn remove(&self, short: &str) {
        docker_ok(&["rm", "-f", &self.name(short)]);
    }
}

/// A network namespace's qdiscs, filters and links (of process `pid`'s), for byte-for-byte
/// comparison: a container's or a pod's.
pub fn ns_state(pid: u32) -> String {
    let ns = format!("--net=/proc/{pid}/ns/net");
    let run = |cmd: &[&str]| {
        let out =
            Command::new("nsenter").arg(&ns).args(cmd).output().expect("nsenter (util-linux)");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // htb prints how many unclassified packets it passed; the container's own IPv6
    // chatter moves that count, and it is no part of what was made or undone.
    let mut s: String = run(&["tc", "qdisc", "show"])
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let keep: Vec<&str> = words
                .iter()
                .enumerate()
                .filter(|(i, _)| *i == 0 || words[i - 1] != "direct_packets_stat")
                .map(|(_, w)| *w)
                .collect();
            keep.join(" ") + "\n"
        })
        .collect();
    for dir in ["ingress", "egress"] {
        s += &run(&["tc", "filter", "show", "dev", "eth0", dir]);
    }
    s + &run(&["ip", "-o", "link", "show"])
        .lines()
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned() + "\n")
        .collect::<String>()
}

impl Drop for Containers {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = docker(&["rm", "-f", n]);
        }
        let _ = docker(&["network", "rm", &self.net]);
    }
}

/// The containerd socket the agent would find by default (Docker's managed one here).
pub fn containerd_socket() -> &'static str {
    [
        "/run/containerd/containerd.sock",
        "/run/k3s/containerd/containerd.sock",
        "/var/run/docker/containerd/containerd.sock",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("a containerd socket (dockerd starts one)")
}

pub fn ctr(ns: &str, args: &[&str]) -> Output {
    Command::new("ctr")
        .args(["--address", containerd_socket(), "--namespace", ns])
        .args(args)
        .output()
        .expect("run ctr (apt: containerd)")
}

pub fn ctr_ok(ns: &str, args: &[&str]) -> String {
    let out = ctr(ns, args);
    assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A task run by containerd directly (no Docker, no CNI), as a kubelet's are: in its own
/// containerd namespace `fltN`, container `ctrN`, with the given labels. Its network
/// namespace holds only lo until a test moves a link in.
pub struct CtrTask {
    pub ns: String,
    pub id: String,
}

impl CtrTask {
    pub fn new(id: u8, labels: &[&str]) -> Self {
        ensure_image();
        let me = Self { ns: format!("flt{id}"), id: format!("ctr{id}") };
        me.remove();
        let tar = std::env::temp_dir().join(format!("fl-image-{id}-{}.tar", std::process::id()));
        docker_ok(&["save", "-o", tar.to_str().unwrap(), IMAGE]);
        ctr_ok(&me.ns, &["images", "import", tar.to_str().unwrap()]);
        let _ = std::fs::remove_file(&tar);
        let mut args = vec!["run", "-d"];
        for l in labels {
            args.extend(["--label", l]);
        }
        let image = format!("docker.io/{IMAGE}");
        args.extend([image.as_str(), me.id.as_str(), "sleep", "3600"]);
        ctr_ok(&me.ns, &args);
        me
    }

    pub fn pid(&self) -> u32 {
        let out = ctr_ok(&self.ns, &["task", "ls"]);
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(self.id.as_str()))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .expect("the task's pid")
    }

    fn remove(&self) {
        let _ = ctr(&self.ns, &["task", "kill", "-s", "SIGKILL", &self.id]);
        for _ in 0..50 {
            if ctr(&self.ns, &["task", "rm", "-f", &self.id]).status.success()
                || !ctr(&self.ns, &["task", "ls"])
                    .stdout
                    .windows(self.id.len())
                    .any(|w| w == self.id.as_bytes())
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = ctr(&self.ns, &["containers", "rm", &self.id]);
        let _ = ctr(&self.ns, &["images", "rm", &format!("docker.io/{IMAGE}")]);
        let _ = ctr(&self.ns, &["namespaces", "rm", &self.ns]);
    }
}

impl Drop for CtrTask {
    fn drop(&mut self) {
        self.remove();
    }
}
