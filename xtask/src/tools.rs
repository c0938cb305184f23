//! Every external program the project runs, with where it comes from. Setup installs from
//! this list and then checks each program is really there; a unit test reads the sources and
//! fails when they run a program that is not listed, so a new tool cannot slip past setup
//! (a green CI on a machine that had it from a manual install proves nothing).

use std::path::{Path, PathBuf};

/// Where a program comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Debian package that setup installs.
    Apt(&'static str),
    /// Part of an essential Debian package: on every Debian system, nothing to install.
    Essential(&'static str),
    /// The Rust toolchain (rustup), which the machine must have to build anything.
    Rustup,
    /// The Python in setup's venv (target/pyenv), made from the machine's python3.
    Venv,
    /// faultline's own binaries, built by cargo.
    Own,
    /// On the machine's image, from a vendor's repository that CI cannot reach (so setup
    /// cannot install it): setup fails, naming it, where it is missing.
    Image(&'static str),
    /// A crate's binary (`cargo install NAME`) that only a benchmark runs, beside faultline:
    /// setup does not install it (a build of minutes that no test needs); the benchmark
    /// says so in its table where it is missing.
    CargoInstall(&'static str),
}

pub struct Tool {
    pub program: &'static str,
    pub source: Source,
    /// Who runs it, so a listing can be pruned when its user goes.
    pub why: &'static str,
}

const fn apt(program: &'static str, package: &'static str, why: &'static str) -> Tool {
    Tool { program, source: Source::Apt(package), why }
}
const fn essential(program: &'static str, package: &'static str, why: &'static str) -> Tool {
    Tool { program, source: Source::Essential(package), why }
}

pub const TOOLS: &[Tool] = &[
    apt("ip", "iproute2", "test namespaces and links; the lab"),
    apt("tc", "iproute2", "tests compare the kernel's qdiscs; benchmarks"),
    apt("ping", "iputils-ping", "tests and VM tests see delay and loss"),
    apt("bpftool", "bpftool", "tests list attached programs"),
    apt("iptables", "iptables", "benchmarks against iptables"),
    apt("iptables-restore", "iptables", "benchmarks load many iptables rules at once"),
    apt("ip6tables", "iptables", "the lab lets its bridge's frames through FORWARD (IPv6)"),
    // --no-install-recommends is setup's default: engine, containerd and runc, no extras.
    apt(
        "dockerd",
        "docker.io",
        "the test suite runs with Docker's engine (and its firewall) running",
    ),
    apt("docker", "docker.io", "the container tests build an image and run containers"),
    apt(
        "docker-compose",
        "docker-compose",
        "the Compose platform is built, started and stopped with it (Compose 1.29; `docker compose` v2 is used where installed)",
    ),
    apt(
        "ctr",
        "containerd",
        "the container tests run a Kubernetes-labelled container through containerd directly",
    ),
    apt(
        "containerd",
        "containerd",
        "the pod tests run a Kubernetes node's runtime (its CRI plugin) on a socket of their own",
    ),
    apt(
        "/usr/lib/cni/bridge",
        "containernetworking-plugins",
        "the pod tests' pod network (containerd's CRI runs the bridge and host-local plugins)",
    ),
    essential(
        "nsenter",
        "util-linux",
        "the container tests read a container's tc state from inside it",
    ),
    apt("iperf3", "iperf3", "bandwidth tests and benchmarks"),
    apt("protoc", "protobuf-compiler", "cargo xtask codegen (spawned by tonic-prost-build)"),
    apt("qemu-system-x86_64", "qemu-system-x86", "VM tests, vm-systemd, the VM lab"),
    apt("qemu-img", "qemu-utils", "the VM lab's disk images and overlays"),
    apt("busybox", "busybox-static", "the VM tests' initramfs"),
    // cpio, gzip and find run in a `sh -c` pipeline the scanner cannot see into.
    apt("cpio", "cpio", "packing initramfs images"),
    essential("gzip", "gzip", "packing initramfs images"),
    essential("find", "findutils", "listing initramfs trees"),
    apt("xz", "xz-utils", "unpacking xz-compressed kernel modules"),
    apt("promtool", "prometheus", "tests check the agent's /metrics text"),
    apt(
        "prometheus",
        "prometheus",
        "tests run a Prometheus server for probes and guardrails on its queries",
    ),
    apt("nginx", "nginx", "the system under test in tests and the lab"),
    apt("wrk", "wrk", "load benchmarks"),
    Tool {
        program: "oha",
        source: Source::CargoInstall("oha"),
        why: "the open-loop load benchmark runs beside it",
    },
    apt("nft", "nftables", "xtask/scripts/bench-cli.sh times nft beside fault apply"),
    apt("redis-server", "redis-server", "the system under test in tests and the lab"),
    apt("redis-cli", "redis-tools", "load tests read redis back"),
    apt("systemd-analyze", "systemd", "the install test verifies the units"),
    apt("systemctl", "systemd", "dist/install.sh on a real host"),
    apt("debootstrap", "debootstrap", "the root file systems of vm-systemd and the VM lab"),
    apt("mke2fs", "e2fsprogs", "the VM lab's disk image"),
    apt("depmod", "kmod", "indexing the VM image's kernel modules"),
    apt("openssl", "openssl", "tests make a self-signed certificate for https load"),
    apt("curl", "curl", "the Web API test calls it as a user's script would"),
    apt(
        "chromium",
        "chromium",
        "the console test drives a real browser (Playwright, the system chromium)",
    ),
    apt("vagrant", "vagrant", "the install test validates vagrant/Vagrantfile"),
    apt(
        "ldd",
        "libc-bin",
        "collecting shared libraries for initramfs images and the benchmark's tc sidecar image",
    ),
    apt("taskset", "util-linux", "benchmarks pin client and server to cores"),
    apt("runuser", "util-linux", "tests act as an unprivileged local user"),
    apt("pgrep", "procps", "tests find processes"),
    essential("cp", "coreutils", "copying trees"),
    essential("cat", "coreutils", "tests read /sys as a network namespace shows it"),
    essential("sleep", "coreutils", "a long-lived process to fault in tests"),
    essential("mkfifo", "coreutils", "tests name a FIFO where a file is read (issue 30)"),
    essential("tar", "tar", "the VM lab's seed disks"),
    essential("sh", "dash", "scripts"),
    essential("bash", "bash", "scripts"),
    essential("kill", "procps", "tests signal processes"),
    apt("git", "git", "fresh-check clones HEAD"),
    essential("dpkg", "dpkg", "setup checks packages"),
    essential("dpkg-query", "dpkg", "setup finds builds no apt source offers"),
    essential("dpkg-deb", "dpkg", "setup unpacks the VM kernels"),
    essential("apt-get", "apt", "setup installs packages and downloads the VM kernels"),
    essential("apt-cache", "apt", "setup finds the VM kernels' package names"),
    essential("python3", "python3", "setup makes the Python client's venv"),
    Tool { program: "cargo", source: Source::Rustup, why: "building" },
    Tool { program: "rustfmt", source: Source::Rustup, why: "check: agent-ebpf's format" },
    Tool {
        program: "rustup",
        source: Source::Rustup,
        why: "setup: nightly, rust-src, bpf-linker's LLVM",
    },
    Tool {
        program: "pip",
        source: Source::Venv,
        why: "setup installs grpcio and schemathesis into the venv",
    },
    Tool {
        program: "schemathesis",
        source: Source::Venv,
        why: "the Web API test runs it against /api/openapi.json",
    },
    Tool {
        program: "playwright",
        source: Source::Venv,
        why: "the console test drives chromium with it",
    },
    Tool {
        program: "kubernetes-validate",
        source: Source::Venv,
        why: "the Kubernetes manifests are validated against the API's schemas",
    },
    Tool {
        program: "kubectl",
        source: Source::Image(
            "kubectl (Google Cloud SDK's repository; Debian's kubernetes-client 1.20 has no kustomize v5)",
        ),
        why: "the Kubernetes manifests' overlays are rendered with `kubectl kustomize`",
    },
    Tool {
        program: "faultline",
        source: Source::Own,
        why: "the CLI, run by tests, the lab and xtask",
    },
    Tool {
        program: "faultline-agent",
        source: Source::Own,
        why: "the agent, run by tests, the lab and xtask",
    },
];

/// Packages with no program to look for: data, plugins, libraries.
pub const APT_EXTRA: &[(&str, &str)] = &[
    ("fonts-dejavu-core", "fonts for the PNG plots of `faultline report`"),
    // Without a provider plugin `vagrant validate` stops at "No usable default provider";
    // libvirt's is packaged and validates the Vagrantfile's libvirt block as well.
    ("vagrant-libvirt", "the provider `vagrant validate` needs"),
];

/// Where setup and the checks look for programs: PATH plus the sbin directories, which a
/// non-login root shell may lack.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .map(PathBuf::from),
        )
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Programs the machine's image must bring that are missing here, with where they come from.
pub fn missing_image() -> Vec<(&'static Tool, &'static str)> {
    missing(|s| if let Source::Image(from) = s { Some(from) } else { None })
}

/// Programs from apt that are missing here, with their package.
pub fn missing_apt() -> Vec<(&'static Tool, &'static str)> {
    missing(|s| if let Source::Apt(pkg) = s { Some(pkg) } else { None })
}

/// Listed programs of the sources `origin` picks (returning where each comes from) that
/// are not found here.
fn missing(origin: fn(Source) -> Option<&'static str>) -> Vec<(&'static Tool, &'static str)> {
    TOOLS
        .iter()
        .filter_map(|t| origin(t.source).filter(|_| find(t.program).is_none()).map(|o| (t, o)))
        .collect()
}

/// Programs the sources run, by the ways this project spawns them: `Command::new("x")`,
/// `find_program("x", ..)`, the first element of a command slice handed to a spawning
/// helper (`sh(ns, &["x", ..])`, `sh_ok`, `lines("x", ..)`), the program after `ip netns
/// exec NS` or `taskset -c N`, and absolute paths under a bin directory ("/usr/sbin/x").
/// Spawning a program in a new way means teaching this function that way.
#[cfg(test)]
pub fn spawned_programs(source: &str) -> Vec<String> {
    // Comments describe spawning; they do not spawn.
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let source = code.as_str();
    let mut found = Vec::new();
    let literal = |s: &str| -> Option<String> {
        let s = s.trim_start();
        let rest = s.strip_prefix('"')?;
        let end = rest.find('"')?;
        Some(rest[..end].to_owned())
    };
    let after = |pat: &str, f: &mut dyn FnMut(&str)| {
        let mut rest = source;
        while let Some(i) = rest.find(pat) {
            rest = &rest[i + pat.len()..];
            f(rest);
        }
    };
    for pat in ["Command::new(", "find_program(", "lines("] {
        after(pat, &mut |r| found.extend(literal(r)));
    }
    // Helpers taking (namespace, &[program, args...]).
    for pat in ["sh(", "sh_ok("] {
        after(pat, &mut |r| {
            let Some(open) = r.find("&[") else { return };
            let (head, tail) = r.split_at(open);
            // Only when the slice is the call's second argument, not something further on.
            if head.matches(',').count() == 1 && !head.contains(')') && !head.contains(';') {
                found.extend(literal(&tail[2..]));
            }
        });
    }
    // Wrappers that run the program named after them.
    // `"exec", NS, "program"` on one line, NS being one argument (no `]`, `)` or `;`).
    after("\"exec\", ", &mut |r| {
        let line = r.lines().next().unwrap_or("");
        if let Some((_, next)) =
            line.split_once(", ").filter(|(ns, _)| !ns.contains([']', ')', ';']))
        {
            found.extend(literal(next));
        }
    });
    after("\"-c\", \"0\", ", &mut |r| found.extend(literal(r)));
    // Absolute paths of binaries copied into VM images or run directly.
    let mut rest = source;
    while let Some(i) = rest.find('"') {
        rest = &rest[i + 1..];
        let Some(end) = rest.find('"') else { break };
        let s = &rest[..end];
        for dir in ["/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"] {
            if let Some(name) = s.strip_prefix(dir).filter(|n| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
            }) {
                found.push(name.to_owned());
            }
        }
        rest = &rest[end + 1..];
    }
    found.retain(|p| !p.is_empty() && !p.contains(['/', ' ', '{']));
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanner_finds_each_way_of_spawning() {
        let src = r#"
            Command::new("tc").args(["qdisc"]);
            sh(&lab.a, &["iperf3", "-s"]);
            sh_ok(ns, &["ping", "-c", "1"]);
            let x = lines("ss", &["-t"]);
            find_program("nginx", "apt install nginx");
            c.args(["netns", "exec", ns, "redis-server"]);
            Command::new("taskset").args(["-c", "0", "wrk", "-t1"]);
            const T: &[&str] = &["/usr/sbin/ip", "/bin/busybox"];
            assert_eq!(sh(a, b), &["not-a-program"]);
        "#;
        assert_eq!(
            spawned_programs(src),
            [
                "busybox",
                "ip",
                "iperf3",
                "nginx",
                "ping",
                "redis-server",
                "ss",
                "taskset",
                "tc",
                "wrk"
            ]
        );
    }

    fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name();
            if p.is_dir()
                && name != "target"
                && name != "gen"
                && !name.to_string_lossy().starts_with('.')
            {
                rust_sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Paths the scanner sees that name no program this project runs.
    const NOT_RUN: &[(&str, &str)] = &[
        (
            "policy-rc.d",
            "setup writes /usr/sbin/policy-rc.d so apt starts no service; it never runs it",
        ),
        (
            "faultline-controller",
            "a Compose service: `compose exec -T faultline-controller sed ...` runs sed in its container",
        ),
    ];

    /// The structural check: a program the sources run but setup does not know about fails
    /// here, on any machine, before CI can pass by luck.
    #[test]
    fn every_program_the_sources_run_is_listed() {
        let ws = crate::codegen::workspace_root();
        let mut files = Vec::new();
        for crate_dir in ["agent", "agent-ebpf", "controller", "proto", "xtask"] {
            rust_sources(&ws.join(crate_dir), &mut files);
        }
        assert!(files.len() > 50, "found only {} sources", files.len());
        let listed: Vec<&str> =
            TOOLS.iter().map(|t| t.program).chain(NOT_RUN.iter().map(|(p, _)| *p)).collect();
        let mut unlisted = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            // This file's own test snippet names programs on purpose.
            let text = if f.ends_with("xtask/src/tools.rs") {
                text.split("#[cfg(test)]").next().unwrap().to_owned()
            } else {
                text
            };
            for p in spawned_programs(&text) {
                if !listed.contains(&p.as_str()) {
                    unlisted.push(format!("{p} (in {})", f.strip_prefix(&ws).unwrap().display()));
                }
            }
        }
        assert!(
            unlisted.is_empty(),
            "programs run by the sources but missing from xtask/src/tools.rs TOOLS: {unlisted:?}"
        );
    }

    #[test]
    fn each_program_is_listed_once() {
        let mut names: Vec<&str> = TOOLS.iter().map(|t| t.program).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
