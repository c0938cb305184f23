//! Metric samples: the kernel's view (eBPF tracepoints), the host's (sysinfo) and the
//! active faults, as a gRPC message and as Prometheus text.

use std::{fmt::Write as _, sync::Mutex, time::SystemTime};

use faultline_ebpf_common::{HIST_BUCKETS, Hist};
use faultline_proto::agent::v1 as pb;

use crate::{engine::Engine, kernel::trace::Snapshot};

/// Host counters read through sysinfo; CPU use needs the previous reading.
pub struct Host {
    sys: Mutex<(sysinfo::System, sysinfo::Networks)>,
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}

impl Host {
    #[must_use]
    pub fn new() -> Self {
        let mut sys = sysinfo::System::new();
        sys.refresh_cpu_usage();
        Self { sys: Mutex::new((sys, sysinfo::Networks::new_with_refreshed_list())) }
    }

    pub fn read(&self) -> pb::HostMetrics {
        let mut guard = self.sys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (sys, nets) = &mut *guard;
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        nets.refresh(true);
        let load = sysinfo::System::load_average();
        let mut interfaces: Vec<pb::InterfaceMetrics> = nets
            .iter()
            .map(|(name, n)| pb::InterfaceMetrics {
                name: name.clone(),
                rx_bytes: n.total_received(),
                tx_bytes: n.total_transmitted(),
                rx_packets: n.total_packets_received(),
                tx_packets: n.total_packets_transmitted(),
                rx_errors: n.total_errors_on_received(),
                tx_errors: n.total_errors_on_transmitted(),
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        pb::HostMetrics {
            cpu_percent: f64::from(sys.global_cpu_usage()),
            memory_used_bytes: sys.used_memory(),
            memory_total_bytes: sys.total_memory(),
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
            interfaces,
        }
    }
}

fn hist(h: &Hist) -> pb::Histogram {
    pb::Histogram { buckets: h.buckets.to_vec(), count: h.count, sum_us: h.sum_us }
}

#[must_use]
pub fn peers(snap: &Snapshot) -> Vec<pb::PeerMetrics> {
    let mut keys: Vec<_> =
        snap.rtt.keys().chain(snap.connect.keys()).chain(snap.peers.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let c = snap.peers.get(&k).copied().unwrap_or_default();
            pb::PeerMetrics {
                peer: k.1.to_string(),
                srtt: snap.rtt.get(&k).map(hist),
                connect: snap.connect.get(&k).map(hist),
                connects: c.connects,
                connect_failures: c.connect_failures,
                retransmits: c.retransmits,
                container: k.0,
            }
        })
        .collect()
}

pub async fn sample(engine: &Engine, host: &Host) -> pb::MetricsSample {
    let (snap, faults) = engine.metrics().await;
    pb::MetricsSample {
        unix_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        peers: snap.as_ref().map(peers).unwrap_or_default(),
        drops: snap
            .map(|s| {
                s.drops
                    .into_iter()
                    .map(|(value, reason, count)| pb::DropReason { reason, value, count })
                    .collect()
            })
            .unwrap_or_default(),
        host: Some(host.read()),
        faults,
        kernel_metrics_detail: engine.kernel_metrics_detail(),
        drops_whole_kernel: crate::process::netns_scoped(),
    }
}

/// The upper bound of log2 bucket `b`, in seconds (`2^(b+1)` microseconds).
fn le(b: usize) -> String {
    let us = 1u64 << (b + 1);
    format!("{}", us as f64 / 1e6)
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &pb::Histogram) {
    let mut cumulative = 0;
    // The last bucket is open-ended, so it is +Inf alone.
    for b in 0..HIST_BUCKETS - 1 {
        cumulative += h.buckets.get(b).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}", le(b));
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Prometheus text exposition format 0.0.4.
#[must_use]
pub fn prometheus(s: &pb::MetricsSample) -> String {
    let mut o = String::new();
    // `container` only on a container's sockets: absent and empty are one to PromQL.
    let peer = |p: &pb::PeerMetrics| {
        let container = if p.container.is_empty() {
            String::new()
        } else {
            format!("container=\"{}\",", faultline_proto::prometheus_escape(&p.container))
        };
        format!("{container}peer=\"{}\"", faultline_proto::prometheus_escape(&p.peer))
    };
    o += "# HELP faultline_tcp_srtt_seconds TCP smoothed round-trip time per remote peer, one sample per received segment (tcp:tcp_probe).\n# TYPE faultline_tcp_srtt_seconds histogram\n";
    for p in &s.peers {
        if let Some(h) = &p.srtt {
            histogram(&mut o, "faultline_tcp_srtt_seconds", &peer(p), h);
        }
    }
    o += "# HELP faultline_tcp_connect_seconds TCP connection set-up time (SYN_SENT to ESTABLISHED) per remote peer.\n# TYPE faultline_tcp_connect_seconds histogram\n";
    for p in &s.peers {
        if let Some(h) = &p.connect {
            histogram(&mut o, "faultline_tcp_connect_seconds", &peer(p), h);
        }
    }
    for (name, help, get) in [
        (
            "faultline_tcp_connects_total",
            "TCP connections established per remote peer.",
            (|p: &pb::PeerMetrics| p.connects) as fn(&pb::PeerMetrics) -> u64,
        ),
        (
            "faultline_tcp_connect_failures_total",
            "TCP connection attempts that ended in CLOSE from SYN_SENT (refused or timed out).",
            |p| p.connect_failures,
        ),
        (
            "faultline_tcp_retransmits_total",
            "TCP segments retransmitted per remote peer (tcp:tcp_retransmit_skb).",
            |p| p.retransmits,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in &s.peers {
            let _ = writeln!(o, "{name}{{{}}} {}", peer(p), get(p));
        }
    }
    o += "# HELP faultline_kernel_drops_total Packets the kernel freed as dropped, by drop reason (skb:kfree_skb).\n# TYPE faultline_kernel_drops_total counter\n";
    for d in &s.drops {
        let _ = writeln!(
            o,
            "faultline_kernel_drops_total{{reason=\"{}\"}} {}",
            faultline_proto::prometheus_escape(&d.reason),
            d.count
        );
    }
    let fault = |f: &pb::FaultStatus| {
        let kind =
            f.spec.as_ref().and_then(|s| s.kind.as_ref()).map_or("", pb::fault_spec::Kind::name);
        format!("fault=\"{}\",kind=\"{kind}\"", faultline_proto::prometheus_escape(&f.id))
    };
    for (name, help, get) in [
        (
            "faultline_fault_matched_packets_total",
            "Packets an active eBPF fault matched.",
            (|c: &pb::Counters| c.matched_packets) as fn(&pb::Counters) -> u64,
        ),
        ("faultline_fault_matched_bytes_total", "Bytes an active eBPF fault matched.", |c| {
            c.matched_bytes
        }),
        ("faultline_fault_dropped_packets_total", "Packets an active eBPF fault dropped.", |c| {
            c.dropped_packets
        }),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for f in &s.faults {
            if let Some(c) = &f.counters {
                let _ = writeln!(o, "{name}{{{}}} {}", fault(f), get(c));
            }
        }
    }
    o += "# HELP faultline_faults_active Faults this agent holds.\n# TYPE faultline_faults_active gauge\n";
    let _ = writeln!(o, "faultline_faults_active {}", s.faults.len());
    o += "# HELP faultline_faults_revert_failing Faults (and leftovers of a previous agent) whose revert failed and is being retried; nonzero means the kernel still holds a fault's change.\n# TYPE faultline_faults_revert_failing gauge\n";
    let _ = writeln!(
        o,
        "faultline_faults_revert_failing {}",
        s.faults.iter().filter(|f| !f.revert_error.is_empty()).count()
    );
    if let Some(h) = &s.host {
        for (name, help, v) in [
            (
                "faultline_host_cpu_busy_ratio",
                "Busy share of all CPUs since the previous scrape.",
                h.cpu_percent / 100.0,
            ),
            ("faultline_host_memory_used_bytes", "Memory in use.", h.memory_used_bytes as f64),
            ("faultline_host_memory_total_bytes", "Memory installed.", h.memory_total_bytes as f64),
            ("faultline_host_load1", "1-minute load average.", h.load1),
            ("faultline_host_load5", "5-minute load average.", h.load5),
            ("faultline_host_load15", "15-minute load average.", h.load15),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        for (name, help, get) in [
            (
                "faultline_host_network_receive_bytes_total",
                "Bytes received per interface.",
                (|i: &pb::InterfaceMetrics| i.rx_bytes) as fn(&pb::InterfaceMetrics) -> u64,
            ),
            ("faultline_host_network_transmit_bytes_total", "Bytes sent per interface.", |i| {
                i.tx_bytes
            }),
            (
                "faultline_host_network_receive_packets_total",
                "Packets received per interface.",
                |i| i.rx_packets,
            ),
            ("faultline_host_network_transmit_packets_total", "Packets sent per interface.", |i| {
                i.tx_packets
            }),
            ("faultline_host_network_receive_errors_total", "Receive errors per interface.", |i| {
                i.rx_errors
            }),
            (
                "faultline_host_network_transmit_errors_total",
                "Transmit errors per interface.",
                |i| i.tx_errors,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for i in &h.interfaces {
                let _ = writeln!(
                    o,
                    "{name}{{interface=\"{}\"}} {}",
                    faultline_proto::prometheus_escape(&i.name),
                    get(i)
                );
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let mut buckets = vec![0; HIST_BUCKETS];
        buckets[3] = 2; // [8, 16) us
        buckets[17] = 5; // [131072, 262144) us
        let s = pb::MetricsSample {
            peers: vec![pb::PeerMetrics {
                peer: "10.0.0.2".into(),
                srtt: Some(pb::Histogram { buckets, count: 7, sum_us: 1_000_000 }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = prometheus(&s);
        assert!(
            text.contains(
                "faultline_tcp_srtt_seconds_bucket{peer=\"10.0.0.2\",le=\"0.000008\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "faultline_tcp_srtt_seconds_bucket{peer=\"10.0.0.2\",le=\"0.000016\"} 2\n"
            )
        );
        assert!(
            text.contains(
                "faultline_tcp_srtt_seconds_bucket{peer=\"10.0.0.2\",le=\"0.262144\"} 7\n"
            )
        );
        assert!(
            text.contains("faultline_tcp_srtt_seconds_bucket{peer=\"10.0.0.2\",le=\"+Inf\"} 7\n")
        );
        assert!(text.contains("faultline_tcp_srtt_seconds_sum{peer=\"10.0.0.2\"} 1\n"));
    }
}
