//! What this host offers, as probes in the vocabulary of `faultline_proto::doctor`: kernel
//! features found from files (no probing changes to the host), the eBPF and tracepoint
//! loads the engine made, the process's capabilities, the container runtimes' sockets.
//! The engine's preconditions, `Describe` and `faultline-agent --doctor` all read these.

use std::{io::Read, path::Path};

use faultline_proto::{agent::v1::Probe, doctor::feature as f};

use super::bpf::AttachMode;

#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub probes: Vec<Probe>,
}

impl Capabilities {
    #[must_use]
    pub fn probe(&self, feature: &str) -> Option<&Probe> {
        self.probes.iter().find(|p| p.feature == feature)
    }
    #[must_use]
    pub fn has(&self, feature: &str) -> bool {
        self.probe(feature).is_some_and(|p| p.ok)
    }
    /// Why `feature` is missing and what to do, for a refusal; empty when it is there.
    #[must_use]
    pub fn why_not(&self, feature: &str) -> String {
        match self.probe(feature) {
            Some(p) if p.ok => String::new(),
            Some(p) if p.remedy.is_empty() => p.detail.clone(),
            Some(p) => format!("{}: {}", p.detail, p.remedy),
            None => format!("{feature}: not probed"),
        }
    }
}

/// Where a kernel feature was found: built in, loaded, or loadable as a module.
fn feature(config: &str, symbol: &str, module: &str) -> Option<String> {
    if config.lines().any(|l| l == format!("{symbol}=y")) {
        return Some(format!("built in ({symbol}=y)"));
    }
    if Path::new("/sys/module").join(module).exists() {
        return Some(format!("module {module} loaded"));
    }
    let moddir = Path::new("/lib/modules").join(release());
    if std::fs::read_to_string(moddir.join("modules.builtin"))
        .is_ok_and(|b| b.lines().any(|l| l.ends_with(&format!("/{module}.ko"))))
    {
        return Some(format!("built in ({module})"));
    }
    if std::fs::read_to_string(moddir.join("modules.dep")).is_ok_and(|d| {
        d.lines().any(|l| l.split(':').next().is_some_and(|p| p.contains(&format!("/{module}.ko"))))
    }) {
        return Some(format!("module {module} available"));
    }
    None
}

#[must_use]
pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn kernel_config() -> String {
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open("/proc/config.gz") {
        let _ = flate2::read::GzDecoder::new(file).read_to_string(&mut text);
    }
    if text.is_empty() {
        text = std::fs::read_to_string(format!("/boot/config-{}", release())).unwrap_or_default();
    }
    text
}

fn probe(feature: &str, found: Result<String, String>, remedy: &str) -> Probe {
    match found {
        Ok(detail) => Probe { feature: feature.into(), ok: true, detail, remedy: String::new() },
        Err(detail) => Probe { feature: feature.into(), ok: false, detail, remedy: remedy.into() },
    }
}

fn qdisc(config: &str, feature: &str, symbol: &str, module: &str) -> Probe {
    probe(
        feature,
        feature_found(config, symbol, module),
        &format!(
            "`modprobe {module}`, or a kernel built with {symbol} (Debian's and most distributions' stock kernels have it; `faultline lab up --vm` runs the lab on one)"
        ),
    )
}

fn feature_found(config: &str, symbol: &str, module: &str) -> Result<String, String> {
    feature(config, symbol, module)
        .ok_or_else(|| format!("not in this kernel ({symbol} unset, no {module} module)"))
}

/// Capability bits (linux/capability.h) the agent's mechanisms use, and what for.
const CAPS: &[(&str, u32, &str)] = &[
    (f::CAP_NET_ADMIN, 12, "qdiscs, IFB devices and tc programs"),
    (f::CAP_BPF, 39, "loading eBPF programs and maps"),
    (f::CAP_PERFMON, 38, "attaching tracepoint programs"),
    (f::CAP_SYS_ADMIN, 21, "tracepoints where perf_event_paranoid > 2 (Debian's default); setns"),
    (f::CAP_KILL, 5, "signalling other users' processes (freeze, kill, restart)"),
    (f::CAP_SYS_PTRACE, 19, "reading other processes' /proc entries and pidfds"),
];

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// A container runtime's API socket: where it is and whether something answers there.
fn runtime(feature: &str, paths: &[&str], what: &str) -> Probe {
    let found = paths.iter().find(|p| Path::new(p).exists());
    let result = match found {
        Some(p) => match std::os::unix::net::UnixStream::connect(p) {
            Ok(_) => Ok(format!("{what} answers at {p}")),
            Err(e) => Err(format!("{p} exists but nothing answers: {e}")),
        },
        None => Err(format!("no socket at {}", paths.join(", "))),
    };
    probe(feature, result, &format!("container targets on this host need {what} running"))
}

/// Which CRI socket pods would be found through, and why each other candidate was not
/// (absent, or nothing listening). Whether the runtime there speaks CRI (Docker's own
/// containerd does not) is asked when a pod is named; `pods list` shows its answer.
fn cri_runtime() -> Probe {
    let mut seen = Vec::new();
    let mut found = None;
    for p in crate::pods::CRI_SOCKETS {
        if found.is_some() {
            seen.push(format!("{p}: not tried (one found before it)"));
        } else if !Path::new(p).exists() {
            seen.push(format!("{p}: no socket"));
        } else {
            match std::os::unix::net::UnixStream::connect(p) {
                Ok(_) => found = Some(*p),
                Err(e) => seen.push(format!("{p}: nothing answers ({e})")),
            }
        }
    }
    let result = match found {
        Some(p) if seen.is_empty() => Ok(format!("pods through {p}")),
        Some(p) => Ok(format!("pods through {p}; {}", seen.join("; "))),
        None => Err(seen.join("; ")),
    };
    probe(
        f::CRI,
        result,
        "pod targets need a CRI runtime (containerd with its CRI plugin, CRI-O); --cri-socket names another socket",
    )
}

fn cgroup_cpu(cgroup2: Option<&Path>) -> Probe {
    let Some(m) = cgroup2 else {
        return probe(
            f::CGROUP_CPU,
            Err("no cgroup2 mount".to_owned()),
            "mount the unified hierarchy with the cpu controller",
        );
    };
    let control = m.join("cgroup.subtree_control");
    // Children of the root can be throttled when the root delegates cpu to them.
    if std::fs::read_to_string(&control).is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu")) {
        return probe(
            f::CGROUP_CPU,
            Ok(format!("cpu controller enabled in {}", control.display())),
            "",
        );
    }
    probe(
        f::CGROUP_CPU,
        Err(format!("cpu controller not enabled in {}", control.display())),
        &format!(
            "`echo +cpu > {}` (impossible while cpu is mounted as a cgroup v1 controller: boot with the unified hierarchy)",
            control.display()
        ),
    )
}

/// Every probe. `ebpf` is the engine's attempt to load its classifier (the attach mode, or
/// why it failed); `tracing` its attempt to load the tracepoint programs.
pub fn detect(ebpf: &Result<AttachMode, String>, tracing: &Result<(), String>) -> Capabilities {
    let config = kernel_config();
    let cgroup2 = super::cgroup::mount();
    let version = aya::util::KernelVersion::current().ok();
    let at_least =
        |major, minor| version.is_some_and(|v| v >= aya::util::KernelVersion::new(major, minor, 0));
    let mut probes = vec![
        qdisc(&config, f::NETEM, "CONFIG_NET_SCH_NETEM", "sch_netem"),
        qdisc(&config, f::HTB, "CONFIG_NET_SCH_HTB", "sch_htb"),
        qdisc(&config, f::TBF, "CONFIG_NET_SCH_TBF", "sch_tbf"),
        qdisc(&config, f::IFB, "CONFIG_IFB", "ifb"),
        probe(
            f::INGRESS_REDIRECT,
            // Before 6.4 the kernel did not mark eBPF-redirected packets and ifb dropped them
            // (commit "bpf: Set skb redirect and from_ingress info in __bpf_tx_skb").
            if at_least(6, 4) {
                Ok(format!("Linux {} >= 6.4", release()))
            } else {
                Err(format!("Linux {} < 6.4 drops packets eBPF redirects into IFB", release()))
            },
            "ingress shaping needs Linux >= 6.4; shape the peer's egress instead",
        ),
        probe(
            f::EBPF,
            ebpf.as_ref().map(|_| "the tc classifier loads".to_owned()).map_err(Clone::clone),
            "run the agent as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON) on a kernel with CONFIG_BPF_SYSCALL and CONFIG_NET_CLS_BPF",
        ),
        probe(
            f::TC_ATTACH,
            Ok(match ebpf.as_ref().map_or_else(|_| AttachMode::detect(), |m| *m) {
                AttachMode::Tcx => {
                    "TCX links (Linux >= 6.6): they vanish with the agent".to_owned()
                }
                AttachMode::Netlink => {
                    "cls_bpf filters on clsact (Linux < 6.6): journaled, removed after a crash"
                        .to_owned()
                }
            }),
            "",
        ),
        probe(
            f::TRACEPOINTS,
            tracing.clone().map(|()| "the kernel-metrics tracepoint programs load".to_owned()),
            "mount tracefs at /sys/kernel/tracing and give the agent CAP_PERFMON (and CAP_SYS_ADMIN where kernel.perf_event_paranoid > 2), or run with --no-kernel-metrics",
        ),
        probe(
            f::CGROUP2,
            cgroup2
                .as_ref()
                .map(|m| format!("cgroup v2 at {}", m.display()))
                .ok_or_else(|| "no cgroup2 mount".to_owned()),
            "mount the unified hierarchy: mount -t cgroup2 none /sys/fs/cgroup",
        ),
        // cgroup.freeze exists in every non-root cgroup2 directory since 5.2.
        probe(
            f::CGROUP_FREEZE,
            if cgroup2.is_some() && at_least(5, 2) {
                Ok("cgroup.freeze (cgroup v2, Linux >= 5.2)".to_owned())
            } else {
                Err("no cgroup v2 freezer".to_owned())
            },
            "cgroup v2 on Linux >= 5.2; or freeze by --pid/--name (SIGSTOP)",
        ),
        cgroup_cpu(cgroup2.as_deref()),
        probe(
            f::SYSTEMD,
            if super::cgroup::systemd_booted() {
                Ok("PID 1 is systemd".to_owned())
            } else {
                Err("PID 1 is not systemd".to_owned())
            },
            "--unit targets need systemd; target the unit's cgroup (--cgroup) or its processes (--pid, --name)",
        ),
    ];
    let eff = effective_caps();
    for (feature, bit, why) in CAPS {
        let result = match eff {
            Some(e) if e & (1 << bit) != 0 => Ok(format!("held ({why})")),
            Some(_) => Err(format!("not held: needed for {why}")),
            None => Err("CapEff unreadable in /proc/self/status".to_owned()),
        };
        probes.push(probe(
            feature,
            result,
            "run the agent as root, or grant it (dist/systemd/faultline-agent.service does)",
        ));
    }
    // The paths the agent itself tries (containers.rs), so doctor and the agent agree.
    probes.push(runtime(f::DOCKER, &crate::containers::DOCKER_SOCKETS[..2], "the Docker engine"));
    probes.push(runtime(f::CONTAINERD, crate::containers::CONTAINERD_SOCKETS, "containerd"));
    probes.push(runtime(f::PODMAN, &["/run/podman/podman.sock"], "Podman's API service"));
    probes.push(cri_runtime());
    Capabilities { probes }
}
