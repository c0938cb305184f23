//! OTLP export: a real OpenTelemetry SDK in the agent talks to an OTLP/gRPC receiver
//! (the collector's service, from opentelemetry-proto) running in the test.

mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    net::TcpStream,
    sync::{Arc, Mutex},
};

use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};

#[derive(Clone, Default)]
struct Receiver {
    /// (metric name, attribute values) of every data point received.
    seen: Arc<Mutex<BTreeSet<(String, String)>>>,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let mut seen = self.seen.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let attrs: Vec<Vec<String>> = match &m.data {
                        Some(Data::Gauge(g)) => g
                            .data_points
                            .iter()
                            .map(|p| {
                                p.attributes.iter().map(|kv| format!("{:?}", kv.value)).collect()
                            })
                            .collect(),
                        Some(Data::Sum(s)) => s
                            .data_points
                            .iter()
                            .map(|p| {
                                p.attributes.iter().map(|kv| format!("{:?}", kv.value)).collect()
                            })
                            .collect(),
                        _ => vec![vec![]],
                    };
                    for a in attrs {
                        seen.insert((m.name.clone(), a.join(",")));
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[test]
fn metrics_reach_an_otlp_receiver() {
    // The receiver listens inside namespace A, where the agent runs.
    let ns = "flt56a";
    let receiver = Receiver::default();
    let seen = receiver.seen.clone();
    let endpoint = "10.200.56.1:4317";
    let lab = {
        // The agent exports on a timer; a receiver that starts just after it misses nothing that matters.
        let lab = Lab::with_agent_args(
            56,
            &["--otlp-endpoint", &format!("http://{endpoint}"), "--otlp-interval-ms", "300"],
        );
        let r = receiver.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            rt().block_on(async {
                tonic::transport::Server::builder()
                    .add_service(MetricsServiceServer::new(r))
                    .serve(endpoint.parse().unwrap())
                    .await
                    .unwrap();
            });
        });
        lab
    };
    // Some TCP towards B so that per-peer metrics exist.
    let peer = lab.addr(2);
    let listener = lab.in_b(|| std::net::TcpListener::bind(format!("{peer}:8056")).unwrap());
    lab.in_a(|| TcpStream::connect(format!("{peer}:8056")).unwrap().write_all(b"hello").unwrap());
    drop(listener);
    let has = |name: &str, attr: &str| {
        seen.lock().unwrap().iter().any(|(n, a)| n == name && a.contains(attr))
    };
    eventually("the receiver gets connects per peer", || has("faultline.tcp.connects", &peer));
    eventually("and RTT gauges", || has("faultline.tcp.srtt.mean", &peer));
    eventually("and host metrics", || has("faultline.host.memory.used", ""));
}
