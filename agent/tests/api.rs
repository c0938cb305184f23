//! The gRPC surface other tools rely on: health, reflection, describe.

mod common;

use common::*;
use faultline_proto::agent::v1 as pb;

#[test]
fn health_reflection_and_describe_answer() {
    let lab = Lab::new(41);
    let url = lab.url();
    let (health, services, host) = lab.in_a(|| {
        rt().block_on(async {
            let channel = channel(&url).await.unwrap();
            let mut h = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let status = h
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "faultline.agent.v1.AgentService".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            use tonic_reflection::pb::v1::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let mut r = ServerReflectionClient::new(channel.clone());
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream =
                r.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
            let resp = stream.message().await.unwrap().unwrap();
            let services: Vec<String> = match resp.message_response {
                Some(MessageResponse::ListServicesResponse(l)) => {
                    l.service.into_iter().map(|s| s.name).collect()
                }
                other => panic!("unexpected reflection answer {other:?}"),
            };
            let mut c = client(&url).await.unwrap();
            let host = c.describe(pb::DescribeRequest {}).await.unwrap().into_inner();
            (status, services, host)
        })
    });
    assert_eq!(health, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    assert!(services.iter().any(|s| s == "faultline.agent.v1.AgentService"), "{services:?}");
    assert!(services.iter().any(|s| s == "grpc.health.v1.Health"), "{services:?}");
    let ta = host.interfaces.iter().find(|i| i.name == "ta").expect("describe lists ta");
    assert!(ta.addresses.iter().any(|a| a == &format!("{}/24", lab.addr(1))), "{:?}", ta.addresses);
    assert!(
        ta.addresses.iter().any(|a| a == &format!("{}/64", lab.addr6(1))),
        "{:?}",
        ta.addresses
    );
    let caps = host.capabilities.unwrap();
    assert!(caps.ebpf, "eBPF must load on this kernel: {}", caps.ebpf_detail);
    assert!(caps.htb && caps.ifb);
    assert!(!caps.tc_attach_mode.is_empty());
    assert!(!host.kernel_release.is_empty());
}

#[test]
fn the_agent_serves_only_callers_with_a_certificate_from_its_ca() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let lab = Lab::new(42);
    let url = lab.url();
    let other = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("other-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    faultline_proto::transport::certgen::init(&other).unwrap();
    let read = |dir: &std::path::Path, f: &str| std::fs::read(dir.join(f)).unwrap();
    let ca = Certificate::from_pem(read(test_certs(), "ca.pem"));
    let ours = Identity::from_pem(read(test_certs(), "cli.pem"), read(test_certs(), "cli-key.pem"));
    let theirs = Identity::from_pem(read(&other, "cli.pem"), read(&other, "cli-key.pem"));
    let _ = std::fs::remove_dir_all(&other);
    let describe = |tls: Option<ClientTlsConfig>, url: String| {
        lab.in_a(|| {
            rt().block_on(async move {
                let mut e = Endpoint::from_shared(url).unwrap();
                if let Some(tls) = tls {
                    e = e.tls_config(tls).unwrap();
                }
                let ch = e.connect().await.map_err(|e| format!("connect: {e:?}"))?;
                let mut c = pb::agent_service_client::AgentServiceClient::new(ch);
                c.describe(pb::DescribeRequest {})
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
            })
        })
    };
    let tls = || {
        ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .domain_name(faultline_proto::transport::AGENT_NAME)
    };
    assert_eq!(
        describe(Some(tls().identity(ours.clone())), url.clone()),
        Ok(()),
        "our CA's certificate is served"
    );
    // Refusals: no certificate, another CA's certificate, plaintext.
    assert!(
        describe(Some(tls()), url.clone()).is_err(),
        "a caller without a certificate was served"
    );
    assert!(
        describe(Some(tls().identity(theirs)), url.clone()).is_err(),
        "a certificate from another CA was accepted"
    );
    assert!(
        describe(None, url.replace("https://", "http://")).is_err(),
        "a plaintext caller was served"
    );
    // A client checks the agent's name: a controller certificate is not an agent.
    let wrong_name = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .identity(ours)
        .domain_name(faultline_proto::transport::CONTROLLER_NAME);
    let e = describe(Some(wrong_name), url).unwrap_err();
    assert!(e.contains("NotValidForName") || e.contains("certificate"), "{e}");
}

/// `faultline-agent --doctor` (what `faultline doctor` runs), `Describe` (what the controller
/// checks faults against) and the kernel itself agree on what this host can do.
#[test]
fn the_doctor_agrees_with_describe_and_with_the_kernel() {
    let lab = Lab::new(43);
    let url = lab.url();
    let probes = lab
        .in_a(|| {
            rt().block_on(async {
                client(&url)
                    .await
                    .unwrap()
                    .describe(pb::DescribeRequest {})
                    .await
                    .unwrap()
                    .into_inner()
            })
        })
        .capabilities
        .unwrap()
        .probes;
    // Where the agent runs: `ip netns exec` also gives it a fresh /sys (so no cgroup2 mount).
    let out = sh(&lab.a, &[env!("CARGO_BIN_EXE_faultline-agent"), "--doctor", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doctor: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--doctor --json prints JSON only");
    let features: Vec<(String, bool)> = doctor["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["feature"].as_str().unwrap().to_owned(), f["ok"].as_bool().unwrap()))
        .collect();
    let described: Vec<(String, bool)> = probes.iter().map(|p| (p.feature.clone(), p.ok)).collect();
    assert_eq!(features, described);
    // The kernel's own answer: can a netem qdisc be created (in a scratch namespace)?
    use std::process::Command;
    let ns = format!("fl-doctor-{}", std::process::id());
    assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
    let netem = Command::new("ip")
        .args([
            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
            "1ms",
        ])
        .output()
        .unwrap();
    Command::new("ip").args(["netns", "del", &ns]).status().unwrap();
    let probe = probes.iter().find(|p| p.feature == "netem").unwrap();
    assert_eq!(
        probe.ok,
        netem.status.success(),
        "doctor says netem {}, tc says: {}",
        probe.ok,
        String::from_utf8_lossy(&netem.stderr)
    );
    if !probe.ok {
        // The way out is named, not only the lack.
        assert!(
            probe.remedy.contains("modprobe sch_netem")
                && probe.remedy.contains("faultline lab up --vm"),
            "{probe:?}"
        );
        let kind =
            doctor["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "netem").unwrap();
        assert_eq!(kind["missing"], "netem", "{kind}");
    }
}
