//! The gRPC surface other tools rely on: health, reflection, describe.

mod common;

use common::*;
use faultline_proto::agent::v1 as pb;

#[test]
fn health_reflection_and_describe_answer() {
    let lab = Lab::new(41);
    let url = format!("http://{}", lab.listen());
    let (health, services, host) = lab.in_a(|| {
        rt().block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
            let mut h = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let status = h
                .check(tonic_health::pb::HealthCheckRequest { service: "faultline.agent.v1.AgentService".into() })
                .await
                .unwrap()
                .into_inner()
                .status;
            use tonic_reflection::pb::v1::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let mut r = ServerReflectionClient::new(channel.clone());
            let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
            let mut stream = r.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
            let resp = stream.message().await.unwrap().unwrap();
            let services: Vec<String> = match resp.message_response {
                Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
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
    assert!(ta.addresses.iter().any(|a| a == &format!("{}/64", lab.addr6(1))), "{:?}", ta.addresses);
    let caps = host.capabilities.unwrap();
    assert!(caps.ebpf, "eBPF must load on this kernel: {}", caps.ebpf_detail);
    assert!(caps.htb && caps.ifb);
    assert!(!caps.tc_attach_mode.is_empty());
    assert!(!host.kernel_release.is_empty());
}
