//! What a host can do, in one vocabulary: the agent runs the probes and reports them
//! (`Capabilities.probes`), the controller refuses a fault whose needed features an agent
//! lacks, and `faultline doctor` shows them per feature and per fault kind. All three read
//! [`needs`], so they cannot disagree about what a fault requires.

use crate::agent::v1::{self as pb, fault_spec::Kind, process_target::Selector};

/// Feature names, as probes report them.
pub mod feature {
    pub const NETEM: &str = "netem";
    pub const HTB: &str = "htb";
    pub const TBF: &str = "tbf";
    pub const IFB: &str = "ifb";
    /// eBPF redirect into IFB devices, which ingress shaping needs (Linux >= 6.4).
    pub const INGRESS_REDIRECT: &str = "ingress_redirect";
    /// The agent's tc classifier loads into this kernel.
    pub const EBPF: &str = "ebpf";
    /// How tc programs attach: TCX links (>= 6.6) or `cls_bpf` filters. Informational.
    pub const TC_ATTACH: &str = "tc_attach";
    /// The tracepoint programs behind the kernel metrics.
    pub const TRACEPOINTS: &str = "tracepoints";
    pub const CGROUP2: &str = "cgroup2";
    pub const CGROUP_FREEZE: &str = "cgroup_freeze";
    pub const CGROUP_CPU: &str = "cgroup_cpu";
    pub const SYSTEMD: &str = "systemd";
    pub const CAP_NET_ADMIN: &str = "cap_net_admin";
    pub const CAP_BPF: &str = "cap_bpf";
    pub const CAP_PERFMON: &str = "cap_perfmon";
    pub const CAP_SYS_ADMIN: &str = "cap_sys_admin";
    pub const CAP_KILL: &str = "cap_kill";
    pub const CAP_SYS_PTRACE: &str = "cap_sys_ptrace";
    pub const DOCKER: &str = "docker";
    pub const CONTAINERD: &str = "containerd";
    pub const PODMAN: &str = "podman";
    /// A Kubernetes node's CRI runtime (containerd's CRI plugin, CRI-O): pod targets.
    pub const CRI: &str = "cri";
}

use feature as f;

fn direction_ingress(spec: &pb::FaultSpec) -> bool {
    matches!(
        pb::Direction::try_from(spec.direction),
        Ok(pb::Direction::Ingress | pb::Direction::Both)
    )
}

/// The features a fault needs on the agent that applies it.
#[must_use]
pub fn needs(spec: &pb::FaultSpec) -> Vec<&'static str> {
    let selector = spec.target.as_ref().and_then(|t| t.selector.as_ref());
    let ingress = direction_ingress(spec);
    let mut n: Vec<&'static str> = match &spec.kind {
        // Every network fault steers its packets with the eBPF classifier.
        Some(Kind::Netem(_)) => vec![f::NETEM, f::EBPF, f::CAP_NET_ADMIN],
        Some(Kind::Bandwidth(_)) => vec![f::HTB, f::EBPF, f::CAP_NET_ADMIN],
        Some(Kind::Drop(_) | Kind::Partition(_)) => vec![f::EBPF, f::CAP_NET_ADMIN],
        Some(Kind::Freeze(fr)) => {
            let cgroup = match pb::FreezeMethod::try_from(fr.method) {
                Ok(pb::FreezeMethod::Cgroup) => true,
                Ok(pb::FreezeMethod::Sigstop) => false,
                _ => matches!(selector, Some(Selector::Cgroup(_) | Selector::SystemdUnit(_))),
            };
            if cgroup { vec![f::CGROUP_FREEZE] } else { vec![f::CAP_KILL] }
        }
        Some(Kind::Kill(_) | Kind::Restart(_)) => vec![f::CAP_KILL],
        Some(Kind::CpuThrottle(_)) => vec![f::CGROUP_CPU],
        Some(Kind::CpuStress(_) | Kind::MemoryPressure(_)) | None => vec![],
    };
    if ingress && matches!(spec.kind, Some(Kind::Netem(_) | Kind::Bandwidth(_))) {
        n.extend([f::IFB, f::INGRESS_REDIRECT]);
    }
    if matches!(selector, Some(Selector::SystemdUnit(_))) {
        n.push(f::SYSTEMD);
    }
    n
}

/// A feature a fault needs and the agent lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub feature: &'static str,
    /// The probe's own words: why it is missing and what to do.
    pub detail: String,
    pub remedy: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(out, "{}", self.feature)?;
        if !self.detail.is_empty() {
            write!(out, ": {}", self.detail)?;
        }
        if !self.remedy.is_empty() {
            write!(out, " ({})", self.remedy)?;
        }
        Ok(())
    }
}

/// The first feature `spec` needs that `probes` does not show working. A feature nobody
/// probed counts as missing: an agent that cannot say is not trusted with the fault.
#[must_use]
pub fn missing(spec: &pb::FaultSpec, probes: &[pb::Probe]) -> Option<Missing> {
    needs(spec).into_iter().find_map(|feature| match probes.iter().find(|p| p.feature == feature) {
        Some(p) if p.ok => None,
        Some(p) => Some(Missing { feature, detail: p.detail.clone(), remedy: p.remedy.clone() }),
        None => Some(Missing {
            feature,
            detail: "not reported by this agent".into(),
            remedy: "upgrade the agent".into(),
        }),
    })
}

/// One line of the per-kind table: a fault kind as users spell it, and a spec standing
/// for it (so the verdict comes from [`needs`], like the controller's).
#[must_use]
pub fn kinds() -> Vec<(&'static str, pb::FaultSpec)> {
    let spec = |kind: Kind| pb::FaultSpec { kind: Some(kind), ..Default::default() };
    let target = |selector: Selector| {
        Some(pb::ProcessTarget { selector: Some(selector), ..Default::default() })
    };
    vec![
        ("netem", spec(Kind::Netem(pb::Netem::default()))),
        (
            "netem --direction ingress|both",
            pb::FaultSpec {
                direction: pb::Direction::Both.into(),
                ..spec(Kind::Netem(pb::Netem::default()))
            },
        ),
        ("bandwidth", spec(Kind::Bandwidth(pb::Bandwidth::default()))),
        (
            "bandwidth --direction ingress|both",
            pb::FaultSpec {
                direction: pb::Direction::Both.into(),
                ..spec(Kind::Bandwidth(pb::Bandwidth::default()))
            },
        ),
        ("drop", spec(Kind::Drop(pb::Drop::default()))),
        ("partition", spec(Kind::Partition(pb::Partition {}))),
        (
            "freeze --pid/--name (SIGSTOP)",
            pb::FaultSpec {
                target: target(Selector::Pid(0)),
                ..spec(Kind::Freeze(pb::Freeze::default()))
            },
        ),
        (
            "freeze --cgroup (cgroup.freeze)",
            pb::FaultSpec {
                target: target(Selector::Cgroup(String::new())),
                ..spec(Kind::Freeze(pb::Freeze::default()))
            },
        ),
        (
            "freeze --unit",
            pb::FaultSpec {
                target: target(Selector::SystemdUnit(String::new())),
                ..spec(Kind::Freeze(pb::Freeze::default()))
            },
        ),
        ("kill", spec(Kind::Kill(pb::Kill::default()))),
        ("restart", spec(Kind::Restart(pb::Restart::default()))),
        ("cpu-stress", spec(Kind::CpuStress(pb::CpuStress::default()))),
        ("memory-pressure", spec(Kind::MemoryPressure(pb::MemoryPressure::default()))),
        ("cpu-throttle", spec(Kind::CpuThrottle(pb::CpuThrottle::default()))),
    ]
}

/// The kinds this agent can apply in at least one of their forms, for compact listings
/// (`agents list`); `faultline doctor` tells the forms apart.
#[must_use]
pub fn supported_kinds(probes: &[pb::Probe]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (name, spec) in kinds() {
        let short = name.split_whitespace().next().unwrap_or(name);
        if !out.contains(&short) && missing(&spec, probes).is_none() {
            out.push(short);
        }
    }
    out
}

/// The doctor's report as text: features first, then what each fault kind needs.
#[must_use]
pub fn render(host: &str, kernel: &str, probes: &[pb::Probe]) -> String {
    use std::fmt::Write;
    let mut out = format!("faultline doctor: {host} (Linux {kernel})\n\nfeatures\n");
    let width = probes.iter().map(|p| p.feature.len()).max().unwrap_or(0);
    for p in probes {
        let _ = writeln!(
            out,
            "  {} {:width$}  {}",
            if p.ok { "ok  " } else { "MISS" },
            p.feature,
            p.detail
        );
        if !p.ok && !p.remedy.is_empty() {
            let _ = writeln!(out, "       {:width$}  -> {}", "", p.remedy);
        }
    }
    out.push_str("\nfault kinds\n");
    let kinds = kinds();
    let width = kinds.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, spec) in &kinds {
        match missing(spec, probes) {
            None => {
                let _ = writeln!(out, "  ok   {name}");
            }
            Some(m) => {
                let _ = writeln!(out, "  NO   {name:width$}  needs {}", m.feature);
            }
        }
    }
    out
}

/// The same report as JSON.
#[must_use]
pub fn json(host: &str, kernel: &str, probes: &[pb::Probe]) -> serde_json::Value {
    let features: Vec<serde_json::Value> =
        probes.iter().map(|p| serde_json::json!({"feature": p.feature, "ok": p.ok, "detail": p.detail, "remedy": p.remedy})).collect();
    let kinds: Vec<serde_json::Value> = kinds()
        .iter()
        .map(|(name, spec)| {
            let m = missing(spec, probes);
            serde_json::json!({"kind": name, "ok": m.is_none(), "needs": needs(spec), "missing": m.map(|m| m.feature)})
        })
        .collect();
    serde_json::json!({"host": host, "kernel": kernel, "features": features, "kinds": kinds})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(feature: &str, ok: bool) -> pb::Probe {
        pb::Probe {
            feature: feature.into(),
            ok,
            detail: format!("{feature} detail"),
            remedy: if ok { String::new() } else { format!("fix {feature}") },
        }
    }

    fn all_ok() -> Vec<pb::Probe> {
        [
            f::NETEM,
            f::HTB,
            f::TBF,
            f::IFB,
            f::INGRESS_REDIRECT,
            f::EBPF,
            f::CGROUP_FREEZE,
            f::CGROUP_CPU,
            f::SYSTEMD,
            f::CAP_NET_ADMIN,
            f::CAP_KILL,
        ]
        .iter()
        .map(|x| probe(x, true))
        .collect()
    }

    #[test]
    fn a_missing_netem_refuses_netem_only() {
        let mut probes = all_ok();
        probes[0].ok = false;
        probes[0].remedy = "load sch_netem, or use the VM lab".into();
        let netem =
            pb::FaultSpec { kind: Some(Kind::Netem(pb::Netem::default())), ..Default::default() };
        let m = missing(&netem, &probes).unwrap();
        assert_eq!(m.feature, f::NETEM);
        assert!(m.to_string().contains("use the VM lab"), "{m}");
        let drop =
            pb::FaultSpec { kind: Some(Kind::Drop(pb::Drop::default())), ..Default::default() };
        assert_eq!(missing(&drop, &probes), None);
        assert_eq!(
            supported_kinds(&probes),
            [
                "bandwidth",
                "drop",
                "partition",
                "freeze",
                "kill",
                "restart",
                "cpu-stress",
                "memory-pressure",
                "cpu-throttle"
            ]
        );
        let text = render("h", "6.18", &probes);
        assert!(
            text.contains("MISS netem")
                && text.contains("-> load sch_netem, or use the VM lab")
                && text.contains("NO   netem "),
            "{text}"
        );
    }

    #[test]
    fn ingress_shaping_needs_the_redirect_and_unit_targets_need_systemd() {
        let probes: Vec<pb::Probe> = all_ok()
            .into_iter()
            .map(|p| {
                if p.feature == f::INGRESS_REDIRECT || p.feature == f::SYSTEMD {
                    pb::Probe { ok: false, ..p }
                } else {
                    p
                }
            })
            .collect();
        let kinds = kinds();
        let verdict = |name: &str| {
            missing(&kinds.iter().find(|(n, _)| *n == name).unwrap().1, &probes).map(|m| m.feature)
        };
        assert_eq!(verdict("netem"), None);
        assert_eq!(verdict("netem --direction ingress|both"), Some(f::INGRESS_REDIRECT));
        assert_eq!(verdict("freeze --unit"), Some(f::SYSTEMD));
        assert_eq!(verdict("freeze --cgroup (cgroup.freeze)"), None);
        // Egress netem and freeze by pid work: the compact list names both kinds.
        assert!(
            supported_kinds(&probes).contains(&"netem")
                && supported_kinds(&probes).contains(&"freeze")
        );
    }

    /// The controller's former per-kind table, in this vocabulary.
    #[test]
    fn each_kind_needs_its_features() {
        use Selector::{Cgroup, Pid, SystemdUnit};
        let spec =
            |kind: Kind, selector: Option<Selector>, direction: pb::Direction| pb::FaultSpec {
                kind: Some(kind),
                target: selector
                    .map(|s| pb::ProcessTarget { selector: Some(s), ..Default::default() }),
                direction: direction as i32,
                ..Default::default()
            };
        let with = |features: &[&str]| -> Vec<pb::Probe> {
            features.iter().map(|x| probe(x, true)).collect()
        };
        let lacks = |s: &pb::FaultSpec, probes: &[pb::Probe]| missing(s, probes).map(|m| m.feature);
        let netem = Kind::Netem(pb::Netem::default());
        assert_eq!(lacks(&spec(netem.clone(), None, pb::Direction::Egress), &[]), Some(f::NETEM));
        let net = with(&[f::NETEM, f::EBPF, f::CAP_NET_ADMIN]);
        assert_eq!(lacks(&spec(netem.clone(), None, pb::Direction::Egress), &net), None);
        assert_eq!(lacks(&spec(netem, None, pb::Direction::Both), &net), Some(f::IFB));
        let freeze = |method: pb::FreezeMethod| Kind::Freeze(pb::Freeze { method: method as i32 });
        // SIGSTOP needs no cgroup freezer; a cgroup or unit target does.
        let kill = with(&[f::CAP_KILL]);
        assert_eq!(
            lacks(
                &spec(freeze(pb::FreezeMethod::Auto), Some(Pid(7)), pb::Direction::Egress),
                &kill
            ),
            None
        );
        assert_eq!(
            lacks(
                &spec(
                    freeze(pb::FreezeMethod::Auto),
                    Some(Cgroup("/a".into())),
                    pb::Direction::Egress
                ),
                &kill
            ),
            Some(f::CGROUP_FREEZE)
        );
        let freezer = with(&[f::CGROUP_FREEZE]);
        assert_eq!(
            lacks(
                &spec(
                    freeze(pb::FreezeMethod::Auto),
                    Some(SystemdUnit("x.service".into())),
                    pb::Direction::Egress
                ),
                &freezer
            ),
            Some(f::SYSTEMD)
        );
        assert_eq!(
            lacks(
                &spec(
                    Kind::CpuThrottle(pb::CpuThrottle::default()),
                    Some(Cgroup("/a".into())),
                    pb::Direction::Egress
                ),
                &freezer
            ),
            Some(f::CGROUP_CPU)
        );
        assert_eq!(
            lacks(
                &spec(Kind::Kill(pb::Kill::default()), Some(Pid(7)), pb::Direction::Egress),
                &kill
            ),
            None
        );
        assert_eq!(
            lacks(
                &spec(Kind::Drop(pb::Drop::default()), None, pb::Direction::Egress),
                &with(&[f::CAP_NET_ADMIN])
            ),
            Some(f::EBPF)
        );
    }

    #[test]
    fn an_unreported_feature_counts_as_missing() {
        let netem =
            pb::FaultSpec { kind: Some(Kind::Netem(pb::Netem::default())), ..Default::default() };
        assert_eq!(missing(&netem, &[]).map(|m| m.feature), Some(f::NETEM));
    }
}
