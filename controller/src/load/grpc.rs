//! gRPC: the standard health check (grpc.health.v1.Health/Check) over h2c.

use std::net::SocketAddr;

use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::record::{Failure, Outcome};

#[derive(Debug, Clone)]
pub struct GrpcTarget {
    pub addr: SocketAddr,
    /// The service asked about ("" is the server as a whole).
    pub service: String,
}

pub type GrpcConn = HealthClient<tonic::transport::Channel>;

pub async fn call(t: &GrpcTarget, conn: &mut Option<GrpcConn>) -> Outcome {
    if conn.is_none() {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", t.addr)).expect("an address makes a valid URI");
        match endpoint.tcp_nodelay(true).connect().await {
            Ok(ch) => *conn = Some(HealthClient::new(ch)),
            Err(_) => return Outcome::Failed(Failure::Connect),
        }
    }
    let c = conn.as_mut().expect("just set");
    match c.check(HealthCheckRequest { service: t.service.clone() }).await {
        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Outcome::Answer(0),
        // Answered, but not serving, or the service is unknown (NotFound): the server said no.
        Ok(_) => Outcome::Failed(Failure::Rejected),
        Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::Unimplemented | tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
            Outcome::Failed(Failure::Rejected)
        }
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Outcome::Failed(Failure::Timeout),
        Err(_) => {
            *conn = None;
            Outcome::Failed(Failure::Io)
        }
    }
}
