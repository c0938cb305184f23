//! gRPC over h2c: the standard health check (grpc.health.v1.Health/Check), or a unary
//! call the user describes — `grpc://IP:PORT/package.Service/Method` with the request
//! message as protobuf bytes (`--body @request.bin`, e.g. from
//! `protoc --encode=package.Request api.proto < request.txt`). The answer's bytes are not
//! decoded: the call counts as answered when its status is OK.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::record::{Failure, Outcome};

#[derive(Debug, Clone)]
pub enum GrpcCall {
    /// The service asked about ("" is the server as a whole).
    Health(String),
    /// "/package.Service/Method" and the encoded request.
    Unary { path: hyper::http::uri::PathAndQuery, request: Bytes },
}

#[derive(Debug, Clone)]
pub struct GrpcTarget {
    pub addr: SocketAddr,
    pub call: GrpcCall,
}

impl GrpcTarget {
    /// From what follows IP:PORT in the URL: "" or "SERVICE" asks the health check about
    /// it; "package.Service/Method" is a unary call with `body` as the request.
    pub fn new(addr: SocketAddr, path: &str, body: Bytes) -> Result<Self, String> {
        let call = match path.split_once('/') {
            None => GrpcCall::Health(path.to_owned()),
            Some((service, method))
                if !service.is_empty() && !method.is_empty() && !method.contains('/') =>
            {
                GrpcCall::Unary {
                    path: format!("/{service}/{method}")
                        .parse()
                        .map_err(|e| format!("url: /{path}: {e}"))?,
                    request: body,
                }
            }
            _ => {
                return Err(format!(
                    "url: /{path}: give grpc://IP:PORT/SERVICE (health check) or grpc://IP:PORT/package.Service/Method (unary call)"
                ));
            }
        };
        Ok(Self { addr, call })
    }
}

pub struct GrpcConn(tonic::transport::Channel);

/// Request and answer as they are on the wire: the user's bytes out, the server's bytes in.
#[derive(Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Self::Encoder {
        Raw
    }

    fn decoder(&mut self) -> Self::Decoder {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

fn status(s: &tonic::Status) -> Failure {
    match s.code() {
        // Answered, but no: unknown service or method, not allowed.
        tonic::Code::NotFound
        | tonic::Code::Unimplemented
        | tonic::Code::PermissionDenied
        | tonic::Code::Unauthenticated
        | tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition => Failure::Rejected,
        tonic::Code::DeadlineExceeded => Failure::Timeout,
        _ => Failure::Io,
    }
}

pub async fn call(t: &GrpcTarget, conn: &mut Option<GrpcConn>) -> Outcome {
    if conn.is_none() {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", t.addr))
            .expect("an address makes a valid URI");
        match endpoint.tcp_nodelay(true).connect().await {
            Ok(ch) => *conn = Some(GrpcConn(ch)),
            Err(_) => return Outcome::Failed(Failure::Connect),
        }
    }
    let ch = conn.as_ref().expect("just set").0.clone();
    let result = match &t.call {
        GrpcCall::Health(service) => {
            match HealthClient::new(ch).check(HealthCheckRequest { service: service.clone() }).await
            {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
                // Answered, but not serving.
                Ok(_) => return Outcome::Failed(Failure::Rejected),
                Err(s) => Err(s),
            }
        }
        GrpcCall::Unary { path, request } => {
            let mut grpc = tonic::client::Grpc::new(ch);
            match grpc.ready().await {
                Ok(()) => grpc
                    .unary(tonic::Request::new(request.clone()), path.clone(), Raw)
                    .await
                    .map(|_| ()),
                Err(_) => Err(tonic::Status::unavailable("connection lost")),
            }
        }
    };
    match result {
        Ok(()) => Outcome::Answer(0),
        Err(s) => {
            let f = status(&s);
            if f == Failure::Io {
                *conn = None;
            }
            Outcome::Failed(f)
        }
    }
}
