//! What the agent says about its faults: their status on the wire, and what it saw each
//! one do (`observed`: drop shares from counters, TCP RTT for a delay, a rate limit's class).

use std::time::{Instant, SystemTime};

use faultline_ebpf_common::Hist;
use faultline_proto::agent::v1 as pb;

use super::{Active, Applied, Engine, SHAPED_CLASS, State, unix_ms};
use crate::{
    fault::{FaultKind, FaultSpec},
    journal::KernelObject,
    kernel::{
        procfs, tc,
        trace::{Snapshot, Tracer},
    },
};

impl Engine {
    pub async fn list(&self) -> Vec<pb::FaultStatus> {
        let (mut out, shaped) = {
            let st = self.state.lock().await;
            let out: Vec<pb::FaultStatus> =
                st.faults.values().map(|f| status(&st, f)).chain(leftover_status(&st)).collect();
            (out, shaped(&st))
        };
        self.observe_bandwidth(&mut out, shaped).await;
        out
    }

    /// The shortest window whose average rate `observe_bandwidth` reports.
    const RATE_WINDOW_S: f64 = 5.0;

    /// A rate limit's effect, as its htb class counted it (the class is created with the
    /// fault, so its counters are the fault's): the rate that passed on average, and the
    /// packets held back over the limit and dropped.
    async fn observe_bandwidth(&self, statuses: &mut [pb::FaultStatus], shaped: Vec<Shaped>) {
        for s in shaped {
            let mut total = tc::ClassStats::default();
            for ifindex in &s.ifindexes {
                if let Ok(Some(c)) = tc::class_stats(&s.nl, *ifindex, SHAPED_CLASS).await {
                    total.bytes += c.bytes;
                    total.packets += c.packets;
                    total.drops += c.drops;
                    total.overlimits += c.overlimits;
                }
            }
            let secs = s.since.elapsed().unwrap_or_default().as_secs_f64().max(0.001);
            let measured = total.bytes as f64 * 8.0 / secs;
            let limit = s.rate_bps as f64;
            let held = format!(
                "{} packets over the limit were delayed, {} dropped",
                total.overlimits, total.drops
            );
            // A short window's average is mostly the burst htb lets through at line rate
            // before it limits ("80.5 kbit/s over 2.8 s, limit 64"): say what passed, not a rate.
            let summary = if secs < Self::RATE_WINDOW_S {
                format!(
                    "passed {} bytes in its first {secs:.1} s (too short for a rate: the burst passes before the limit of {:.1} kbit/s holds); {held}",
                    total.bytes,
                    limit / 1000.0
                )
            } else {
                let above = if measured > limit {
                    " (above it: the burst passed at line rate is in the average)"
                } else {
                    ""
                };
                format!(
                    "passed {:.1} kbit/s on average over {secs:.1} s (limit {:.1} kbit/s{above}); {held}",
                    measured / 1000.0,
                    limit / 1000.0
                )
            };
            if let Some(st) = statuses.iter_mut().find(|x| x.id == s.id) {
                st.observed = Some(pb::Observed {
                    summary,
                    configured: s.rate_bps as f64,
                    measured,
                    unit: "bit/s".into(),
                    samples: total.packets,
                });
            }
        }
    }

    /// The kernel metrics (when running) and every active fault, read together.
    pub async fn metrics(&self) -> (Option<Snapshot>, Vec<pb::FaultStatus>) {
        let (snap, mut faults, shaped) = {
            let st = self.state.lock().await;
            (
                st.tracer.as_ref().map(Tracer::snapshot),
                st.faults.values().map(|f| status(&st, f)).collect::<Vec<_>>(),
                shaped(&st),
            )
        };
        self.observe_bandwidth(&mut faults, shaped).await;
        (snap, faults)
    }
}

/// A bandwidth fault's htb classes (egress, and the IFB device's for ingress).
pub(super) struct Shaped {
    id: String,
    /// A netlink handle in the fault's namespace.
    nl: rtnetlink::Handle,
    ifindexes: Vec<u32>,
    rate_bps: u64,
    since: SystemTime,
}

pub(super) fn shaped(st: &State) -> Vec<Shaped> {
    st.faults
        .values()
        .filter(|f| f.revert_failed.is_none())
        .filter_map(|f| {
            let Applied::Net { spec, place, shaped, .. } = &f.applied else { return None };
            let FaultKind::Bandwidth { rate_bps, .. } = spec.kind else { return None };
            let nl = st.places.get(place)?.nl.clone();
            Some(Shaped {
                id: f.id.clone(),
                nl,
                ifindexes: shaped.clone(),
                rate_bps,
                since: f.applied_at,
            })
        })
        .collect()
}

/// TCP's RTT samples to the peers of a netem delay fault, summed (None when the
/// fault has no delay or no peers, or metrics are off).
pub(super) fn rtt_to(st: &State, spec: &FaultSpec) -> Option<Hist> {
    let FaultKind::Netem(n) = &spec.kind else { return None };
    if n.delay.is_zero() || spec.matcher.peers.is_empty() {
        return None;
    }
    Some(st.tracer.as_ref()?.rtt_of(|key| spec.matcher.peers.iter().any(|c| c.contains(key))))
}

pub(super) fn observed(
    st: &State,
    f: &Active,
    c: Option<&faultline_ebpf_common::Counters>,
) -> Option<pb::Observed> {
    let Applied::Net { spec, rtt_before, .. } = &f.applied else { return None };
    let configured = match &spec.kind {
        FaultKind::Drop { probability } => Some(probability * 100.0),
        FaultKind::Partition => Some(100.0),
        _ => None,
    };
    if let (Some(configured), Some(c)) = (configured, c) {
        let measured = if c.matched_packets == 0 {
            0.0
        } else {
            c.dropped_packets as f64 * 100.0 / c.matched_packets as f64
        };
        return Some(pb::Observed {
            summary: format!(
                "dropped {measured:.2} % of {} matched packets (asked {configured} %)",
                c.matched_packets
            ),
            configured,
            measured,
            unit: "percent".into(),
            samples: c.matched_packets,
        });
    }
    match &spec.kind {
        FaultKind::Netem(n) => {
            let before = rtt_before.as_ref()?;
            let now = rtt_to(st, spec)?;
            let during_n = now.count.saturating_sub(before.count);
            let during_sum = now.sum_us.saturating_sub(before.sum_us);
            let configured = n.delay.as_secs_f64() * 1000.0;
            if during_n == 0 {
                return Some(pb::Observed {
                    summary: "no TCP RTT samples to the fault's peers yet".into(),
                    configured,
                    unit: "ms".into(),
                    ..Default::default()
                });
            }
            let during = during_sum as f64 / during_n as f64 / 1000.0;
            let (measured, summary) = if before.count == 0 {
                (
                    during,
                    format!(
                        "TCP smoothed RTT to the peers {during:.1} ms over {during_n} samples (none before the fault to compare; asked +{configured} ms)"
                    ),
                )
            } else {
                let base = before.sum_us as f64 / before.count as f64 / 1000.0;
                (
                    during - base,
                    format!(
                        "TCP smoothed RTT to the peers {base:.1} ms before, {during:.1} ms during: +{:.1} ms (asked +{configured} ms)",
                        during - base
                    ),
                )
            };
            Some(pb::Observed {
                summary,
                configured,
                measured,
                unit: "ms".into(),
                samples: during_n,
            })
        }
        _ => None,
    }
}

pub(super) fn status(st: &State, f: &Active) -> pb::FaultStatus {
    let c = match &f.applied {
        Applied::Net { slot, place, .. } => {
            st.places.get(place).and_then(|p| p.bpf.counters(*slot).ok())
        }
        Applied::Process { .. } => None,
    };
    let left = f.expires.saturating_duration_since(Instant::now());
    pb::FaultStatus {
        id: f.id.clone(),
        spec: Some(f.request.clone()),
        applied_at_unix_ms: unix_ms(f.applied_at),
        lease_expires_at_unix_ms: unix_ms(SystemTime::now() + left),
        engine: match &f.applied {
            Applied::Net { spec, .. } if spec.kind.uses_qdisc() => "tc".into(),
            Applied::Net { .. } => "ebpf".into(),
            Applied::Process { .. } => "process".into(),
        },
        kernel_objects: f.objects.iter().map(describe).chain(notes(f)).collect(),
        counters: c.map(|c| pb::Counters {
            matched_packets: c.matched_packets,
            matched_bytes: c.matched_bytes,
            dropped_packets: c.dropped_packets,
        }),
        processes: match &f.applied {
            Applied::Process { processes, .. } => processes
                .iter()
                .map(|p| pb::Process {
                    pid: p.id.pid,
                    start_time: p.id.start_time,
                    name: p.comm.clone(),
                })
                .collect(),
            Applied::Net { .. } => Vec::new(),
        },
        cgroup: match &f.applied {
            Applied::Process { cgroup: Some(c), .. } => c.rel.clone(),
            _ => String::new(),
        },
        observed: observed(st, f, c.as_ref()),
        revert_error: f
            .revert_failed
            .as_ref()
            .map(|r| format!("{} (attempt {}, retrying)", r.error, r.attempts))
            .unwrap_or_default(),
        container: f.container.as_ref().map(|c| {
            c.to_wire(
                f.place()
                    .or_else(|| crate::kernel::netns::inode_of(c.process.pid))
                    .unwrap_or_default(),
            )
        }),
        container_gone: f
            .container
            .as_ref()
            .filter(|c| !procfs::alive(c.process).unwrap_or(true))
            .map(|c| {
                let held = if f.place().is_some() {
                    "; its network namespace is held until the fault ends"
                } else {
                    ""
                };
                format!(
                    "container {} is no longer running (its init process {} is gone){held}",
                    c.name, c.process.pid
                )
            })
            .unwrap_or_default(),
    }
}

/// What a previous agent left and this one could not undo yet, shown as one entry so
/// `fault list` never looks clean while the kernel is not.
pub(super) fn leftover_status(st: &State) -> Option<pb::FaultStatus> {
    (!st.leftover.is_empty()).then(|| pb::FaultStatus {
        id: "leftover".into(),
        engine: "journal".into(),
        kernel_objects: st.leftover.iter().map(|e| describe(&e.object)).collect(),
        revert_error: "left by a previous agent; undo failed, retrying".into(),
        ..Default::default()
    })
}

pub(super) fn notes(f: &Active) -> Vec<String> {
    match &f.applied {
        Applied::Process { notes, .. } => notes.clone(),
        Applied::Net { .. } => Vec::new(),
    }
}

/// " in container ID (netns:[INODE])" for an object in a container's namespace.
fn inside(netns: Option<&crate::kernel::netns::NsRef>) -> String {
    netns
        .map(|n| {
            format!(
                " in container {} (netns:[{}])",
                n.container.get(..12).unwrap_or(&n.container),
                n.inode
            )
        })
        .unwrap_or_default()
}

pub(crate) fn describe(o: &KernelObject) -> String {
    match o {
        KernelObject::Qdisc { ifname, handle, kind, netns, .. } => format!(
            "qdisc {kind} {} on {ifname}{}",
            tc::fmt_handle(*handle),
            inside(netns.as_ref())
        ),
        KernelObject::Ifb { name, netns } => format!("ifb {name}{}", inside(netns.as_ref())),
        KernelObject::ClsBpf { ifname, ingress, netns } => format!(
            "cls_bpf {} on {ifname}{}",
            if *ingress { "ingress" } else { "egress" },
            inside(netns.as_ref())
        ),
        KernelObject::CgroupFreeze { dir } => format!("cgroup.freeze=1 in {}", dir.display()),
        KernelObject::Stopped { pid, .. } => format!("SIGSTOP pid {pid}"),
        KernelObject::Child { pid, .. } => format!("stress worker pid {pid}"),
        KernelObject::CpuMax { dir, ours, previous } => {
            format!("cpu.max {ours} (was {previous}) in {}", dir.display())
        }
    }
}
