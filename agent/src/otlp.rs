//! OTLP export of the agent's metrics (opentelemetry SDK, gRPC), when an endpoint is
//! configured. The OpenTelemetry API has no asynchronous histogram, so the log2
//! histograms travel as mean and p99-bucket gauges plus sample counters; the full
//! histograms stay on /metrics and the gRPC API.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use faultline_proto::agent::v1 as pb;
use opentelemetry::{
    KeyValue,
    metrics::{AsyncInstrument, Meter, MeterProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::{
    engine::Engine,
    metrics::{self, Host},
};

type Latest = Arc<Mutex<pb::MetricsSample>>;

/// Starts exporting every `interval` to `endpoint` (e.g. `http://collector:4317`).
/// Keep the provider: dropping it stops the export.
pub fn start(
    endpoint: &str,
    interval: Duration,
    engine: Arc<Engine>,
    host: Arc<Host>,
) -> Result<SdkMeterProvider> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("--otlp-endpoint {endpoint}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("faultline-agent")
        .with_attribute(KeyValue::new(
            "host.name",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ))
        .build();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter).with_interval(interval).build())
        .with_resource(resource)
        .build();
    // Callbacks run on the SDK's thread and cannot await the engine: they read the
    // latest sample, refreshed here at the export interval.
    let latest: Latest = Arc::default();
    let fill = latest.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let s = metrics::sample(&engine, &host).await;
            *fill.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = s;
        }
    });
    instruments(&provider.meter("faultline-agent"), &latest);
    Ok(provider)
}

fn read(l: &Latest) -> pb::MetricsSample {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

fn mean_s(h: &pb::Histogram) -> f64 {
    h.mean_us() / 1e6
}

/// Upper bound (s) of the log2 bucket that holds the 99th percentile.
fn p99_s(h: &pb::Histogram) -> f64 {
    h.quantile_bound_us(0.99).map_or(0.0, |us| us as f64 / 1e6)
}

type PeerF64 = fn(&pb::PeerMetrics) -> Option<f64>;

/// A peer's attributes: the remote address, and the container on this host whose sockets
/// these are (none for the host's own).
fn attributes(p: &pb::PeerMetrics) -> Vec<KeyValue> {
    let mut a = vec![KeyValue::new("peer", p.peer.clone())];
    if !p.container.is_empty() {
        a.push(KeyValue::new("container", p.container.clone()));
    }
    a
}
type PeerU64 = fn(&pb::PeerMetrics) -> Option<u64>;

fn instruments(m: &Meter, latest: &Latest) {
    let gauges: [(&'static str, &'static str, PeerF64); 4] = [
        (
            "faultline.tcp.srtt.mean",
            "Mean TCP smoothed RTT per remote peer since the agent started (s).",
            |p| p.srtt.as_ref().map(mean_s),
        ),
        (
            "faultline.tcp.srtt.p99",
            "Upper bound of the log2 bucket holding the p99 TCP smoothed RTT per peer (s).",
            |p| p.srtt.as_ref().map(p99_s),
        ),
        ("faultline.tcp.connect.mean", "Mean TCP connect time per remote peer (s).", |p| {
            p.connect.as_ref().map(mean_s)
        }),
        (
            "faultline.tcp.connect.p99",
            "Upper bound of the log2 bucket holding the p99 TCP connect time per peer (s).",
            |p| p.connect.as_ref().map(p99_s),
        ),
    ];
    for (name, help, get) in gauges {
        let l = latest.clone();
        m.f64_observable_gauge(name)
            .with_description(help)
            .with_unit("s")
            .with_callback(move |o: &dyn AsyncInstrument<f64>| {
                for p in &read(&l).peers {
                    if let Some(v) = get(p) {
                        o.observe(v, &attributes(p));
                    }
                }
            })
            .build();
    }
    let counters: [(&'static str, &'static str, PeerU64); 5] = [
        ("faultline.tcp.srtt.samples", "TCP RTT samples per remote peer.", |p| {
            p.srtt.as_ref().map(|h| h.count)
        }),
        ("faultline.tcp.connects", "TCP connections established per remote peer.", |p| {
            Some(p.connects)
        }),
        (
            "faultline.tcp.connect_failures",
            "TCP connection attempts refused or timed out per remote peer.",
            |p| Some(p.connect_failures),
        ),
        ("faultline.tcp.retransmits", "TCP retransmits per remote peer.", |p| Some(p.retransmits)),
        ("faultline.tcp.connect.samples", "TCP connect-time samples per remote peer.", |p| {
            p.connect.as_ref().map(|h| h.count)
        }),
    ];
    for (name, help, get) in counters {
        let l = latest.clone();
        m.u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |o: &dyn AsyncInstrument<u64>| {
                for p in &read(&l).peers {
                    if let Some(v) = get(p) {
                        o.observe(v, &attributes(p));
                    }
                }
            })
            .build();
    }
    let l = latest.clone();
    m.u64_observable_counter("faultline.kernel.drops")
        .with_description("Packets the kernel dropped, by drop reason.")
        .with_callback(move |o: &dyn AsyncInstrument<u64>| {
            for d in &read(&l).drops {
                o.observe(d.count, &[KeyValue::new("reason", d.reason.clone())]);
            }
        })
        .build();
    let l = latest.clone();
    m.u64_observable_counter("faultline.fault.dropped_packets")
        .with_description("Packets an active eBPF fault dropped.")
        .with_callback(move |o: &dyn AsyncInstrument<u64>| {
            for f in &read(&l).faults {
                if let Some(c) = &f.counters {
                    let kind = f
                        .spec
                        .as_ref()
                        .and_then(|s| s.kind.as_ref())
                        .map_or("", pb::fault_spec::Kind::name);
                    o.observe(
                        c.dropped_packets,
                        &[KeyValue::new("fault", f.id.clone()), KeyValue::new("kind", kind)],
                    );
                }
            }
        })
        .build();
    let host: [(&'static str, &'static str, fn(&pb::HostMetrics) -> f64); 3] = [
        ("faultline.host.cpu.busy", "Busy share of all CPUs (0..1).", |h| h.cpu_percent / 100.0),
        ("faultline.host.memory.used", "Memory in use (bytes).", |h| h.memory_used_bytes as f64),
        ("faultline.host.load1", "1-minute load average.", |h| h.load1),
    ];
    for (name, help, get) in host {
        let l = latest.clone();
        m.f64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |o: &dyn AsyncInstrument<f64>| {
                if let Some(h) = &read(&l).host {
                    o.observe(get(h), &[]);
                }
            })
            .build();
    }
}
