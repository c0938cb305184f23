//! What the controller tells operators about itself: Prometheus text at /metrics
//! (agents, active faults, fan-out latency, lease renewals) and, when an OTLP endpoint
//! is configured, tracing spans exported so one fault's fan-out can be followed agent
//! by agent.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use anyhow::{Context, Result};

/// Upper bounds (seconds) of the fan-out latency histogram: the goal is 50 ms for 50 agents.
const BOUNDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Counters the request paths bump; read only by the scrape.
#[derive(Default)]
pub struct Stats {
    apply_buckets: [AtomicU64; BOUNDS.len()],
    apply_count: AtomicU64,
    apply_sum_us: AtomicU64,
    pub applied: AtomicU64,
    pub refused: AtomicU64,
    pub reverted: AtomicU64,
    pub expired: AtomicU64,
    pub lost: AtomicU64,
    pub renewals_ok: AtomicU64,
    pub renewals_failed: AtomicU64,
}

impl Stats {
    /// One fan-out (apply or partition), from the request to every agent's answer.
    pub fn observe_apply(&self, took: Duration) {
        let s = took.as_secs_f64();
        for (b, bound) in self.apply_buckets.iter().zip(BOUNDS) {
            if s <= bound {
                b.fetch_add(1, Relaxed);
            }
        }
        self.apply_count.fetch_add(1, Relaxed);
        self.apply_sum_us.fetch_add(took.as_micros() as u64, Relaxed);
    }
}

/// What the scrape needs from the controller's state, taken under its lock.
pub struct Snapshot {
    /// (agent, host, healthy, seconds since the last heartbeat or -1)
    pub agents: Vec<(String, String, bool, f64)>,
    /// (kind, count)
    pub active: Vec<(String, u64)>,
    /// Each active fault's part on each agent: (fault id, kind, agent, container).
    pub parts: Vec<(String, String, String, String)>,
    /// The controller's own load, running or last.
    pub traffic: Option<super::traffic::Status>,
}

pub fn prometheus(snap: &Snapshot, st: &Stats) -> String {
    let mut o = String::new();
    let up = snap.agents.iter().filter(|a| a.2).count();
    o += "# HELP faultline_controller_agents Agents the controller knows, by health.\n# TYPE faultline_controller_agents gauge\n";
    let _ = writeln!(
        o,
        "faultline_controller_agents{{health=\"up\"}} {up}\nfaultline_controller_agents{{health=\"down\"}} {}",
        snap.agents.len() - up
    );
    o += "# HELP faultline_controller_agent_up 1 if the agent answers (session open or inventory check passed).\n# TYPE faultline_controller_agent_up gauge\n";
    for (name, host, healthy, _) in &snap.agents {
        let _ = writeln!(
            o,
            "faultline_controller_agent_up{{agent=\"{}\",host=\"{}\"}} {}",
            faultline_proto::prometheus_escape(name),
            faultline_proto::prometheus_escape(host),
            u8::from(*healthy)
        );
    }
    o += "# HELP faultline_controller_agent_heartbeat_age_seconds Time since the agent's last heartbeat.\n# TYPE faultline_controller_agent_heartbeat_age_seconds gauge\n";
    for (name, _, _, age) in snap.agents.iter().filter(|a| a.3 >= 0.0) {
        let _ = writeln!(
            o,
            "faultline_controller_agent_heartbeat_age_seconds{{agent=\"{}\"}} {age:.3}",
            faultline_proto::prometheus_escape(name)
        );
    }
    o += "# HELP faultline_controller_active_faults Faults the controller holds, by kind.\n# TYPE faultline_controller_active_faults gauge\n";
    for (kind, n) in &snap.active {
        let _ = writeln!(
            o,
            "faultline_controller_active_faults{{kind=\"{}\"}} {n}",
            faultline_proto::prometheus_escape(kind)
        );
    }
    // One series per fault and agent while it acts, so a dashboard can shade the
    // intervals over application metrics (`faultline_fault_active > 0`).
    o += "# HELP faultline_fault_active 1 while a fault acts on an agent (by fault id, kind, agent, container).\n# TYPE faultline_fault_active gauge\n";
    for (id, kind, agent, container) in &snap.parts {
        let e = faultline_proto::prometheus_escape;
        let _ = writeln!(
            o,
            "faultline_fault_active{{fault=\"{}\",kind=\"{}\",agent=\"{}\",container=\"{}\"}} 1",
            e(id),
            e(kind),
            e(agent),
            e(container)
        );
    }
    if let Some(t) = &snap.traffic {
        let last = t.seconds.last();
        o += "# HELP faultline_traffic_running 1 while the controller's own load runs.\n# TYPE faultline_traffic_running gauge\n";
        let _ = writeln!(o, "faultline_traffic_running {}", u8::from(t.running));
        o += "# HELP faultline_traffic_target_rps The rate the controller's load is asked for.\n# TYPE faultline_traffic_target_rps gauge\n";
        let _ = writeln!(o, "faultline_traffic_target_rps {}", t.start.rps);
        o += "# HELP faultline_traffic_last_second_requests Requests the load sent in its last whole second.\n# TYPE faultline_traffic_last_second_requests gauge\n";
        let _ = writeln!(
            o,
            "faultline_traffic_last_second_requests {}",
            last.map_or(0, |s| s.requests)
        );
        o += "# HELP faultline_traffic_last_second_errors Errors (no answer, 4xx, 5xx) in the load's last whole second.\n# TYPE faultline_traffic_last_second_errors gauge\n";
        let _ =
            writeln!(o, "faultline_traffic_last_second_errors {}", last.map_or(0, |s| s.errors));
        o += "# HELP faultline_traffic_last_second_latency_seconds Latency from the intended start in the load's last whole second.\n# TYPE faultline_traffic_last_second_latency_seconds gauge\n";
        for (q, v) in [("0.5", last.and_then(|s| s.p50_ms)), ("0.99", last.and_then(|s| s.p99_ms))]
        {
            if let Some(ms) = v {
                let _ = writeln!(
                    o,
                    "faultline_traffic_last_second_latency_seconds{{quantile=\"{q}\"}} {}",
                    ms / 1000.0
                );
            }
        }
    }
    o += "# HELP faultline_controller_apply_seconds Time from a fault request to every agent's answer (fan-out).\n# TYPE faultline_controller_apply_seconds histogram\n";
    for (b, bound) in st.apply_buckets.iter().zip(BOUNDS) {
        let _ = writeln!(
            o,
            "faultline_controller_apply_seconds_bucket{{le=\"{bound}\"}} {}",
            b.load(Relaxed)
        );
    }
    let count = st.apply_count.load(Relaxed);
    let _ = writeln!(o, "faultline_controller_apply_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        o,
        "faultline_controller_apply_seconds_sum {}",
        st.apply_sum_us.load(Relaxed) as f64 / 1e6
    );
    let _ = writeln!(o, "faultline_controller_apply_seconds_count {count}");
    o += "# HELP faultline_controller_faults_total Fault requests and how they ended.\n# TYPE faultline_controller_faults_total counter\n";
    for (outcome, c) in [
        ("applied", &st.applied),
        ("refused", &st.refused),
        ("reverted", &st.reverted),
        ("expired", &st.expired),
        ("lost", &st.lost),
    ] {
        let _ = writeln!(
            o,
            "faultline_controller_faults_total{{outcome=\"{outcome}\"}} {}",
            c.load(Relaxed)
        );
    }
    o += "# HELP faultline_controller_lease_renewals_total Lease renewals sent to agents, by result.\n# TYPE faultline_controller_lease_renewals_total counter\n";
    let _ = writeln!(
        o,
        "faultline_controller_lease_renewals_total{{result=\"ok\"}} {}",
        st.renewals_ok.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "faultline_controller_lease_renewals_total{{result=\"failed\"}} {}",
        st.renewals_failed.load(Relaxed)
    );
    o
}

/// Logs to stderr, and exports spans over OTLP/gRPC when `otlp` names a collector.
/// Keep the provider: dropping it stops the export; shut it down to flush.
pub fn init_tracing(
    otlp: Option<&str>,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Logs go to stderr, like any daemon's; stdout stays for command output.
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let Some(endpoint) = otlp else {
        tracing_subscriber::registry().with(filter).with(fmt).init();
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("otlp_endpoint {endpoint}"))?;
    let resource =
        opentelemetry_sdk::Resource::builder().with_service_name("faultline-controller").build();
    // The batch delay follows OTEL_BSP_SCHEDULE_DELAY (default 5 s), as in every SDK.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("faultline-controller"));
    tracing_subscriber::registry().with(filter).with(fmt).with(layer).init();
    Ok(Some(provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let st = Stats::default();
        st.observe_apply(Duration::from_millis(3));
        st.observe_apply(Duration::from_millis(40));
        let parts = vec![("c-1".into(), "drop".into(), "h1".into(), "web".into())];
        let text = prometheus(
            &Snapshot {
                agents: vec![("h1".into(), "box".into(), true, 0.5)],
                active: vec![("drop".into(), 1)],
                parts,
                traffic: None,
            },
            &st,
        );
        assert!(text.contains("faultline_fault_active{fault=\"c-1\",kind=\"drop\",agent=\"h1\",container=\"web\"} 1\n"), "{text}");
        assert!(!text.contains("faultline_traffic_"), "no traffic, no traffic series: {text}");
        assert!(
            text.contains("faultline_controller_apply_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("faultline_controller_apply_seconds_bucket{le=\"0.05\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("faultline_controller_apply_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("faultline_controller_apply_seconds_sum 0.043\n"), "{text}");
        assert!(text.contains("faultline_controller_agent_up{agent=\"h1\",host=\"box\"} 1\n"));
    }
}
