//! gRPC `faultline.agent.v1.AgentService`: translates requests into engine calls
//! and engine errors into gRPC codes, in this one place.

use std::{sync::Arc, time::Duration};

use faultline_proto::agent::v1::{self as pb, agent_service_server::AgentService};
use tonic::{Request, Response, Status};

use crate::{
    engine::{Engine, EngineError},
    kernel::link,
};

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(f) => Status::invalid_argument(f.to_string()),
            EngineError::NotFound(m) => Status::not_found(m),
            EngineError::Precondition(m) => Status::failed_precondition(m),
            EngineError::Conflict(m) => Status::already_exists(m),
            EngineError::Kernel(m) => Status::internal(m),
        }
    }
}

pub struct Service {
    pub engine: Arc<Engine>,
}

#[tonic::async_trait]
impl AgentService for Service {
    async fn describe(&self, _: Request<pb::DescribeRequest>) -> Result<Response<pb::DescribeResponse>, Status> {
        let uts = nix::sys::utsname::uname().map_err(|e| Status::internal(e.to_string()))?;
        let e = &self.engine;
        Ok(Response::new(pb::DescribeResponse {
            hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            kernel_release: uts.release().to_string_lossy().into_owned(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            interfaces: link::interfaces()
                .into_iter()
                .map(|i| pb::Interface { name: i.name, index: i.index, mac: i.mac, mtu: i.mtu, up: i.up, addresses: i.addresses })
                .collect(),
            capabilities: Some(pb::Capabilities {
                netem: e.caps.netem,
                netem_detail: e.caps.netem_detail.clone(),
                htb: e.caps.htb,
                tbf: e.caps.tbf,
                ifb: e.caps.ifb,
                ebpf: e.ebpf_available(),
                tc_attach_mode: e.attach_mode.name().into(),
                cgroup_v2_freeze: e.caps.cgroup_v2_freeze,
                ebpf_detail: e.ebpf_detail.clone(),
                cgroup_v2_cpu: e.caps.cgroup_v2_cpu,
                systemd: e.caps.systemd,
            }),
        }))
    }

    async fn apply_fault(&self, req: Request<pb::ApplyFaultRequest>) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        let spec = req.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec: required"))?;
        let fault = self.engine.apply(spec).await?;
        Ok(Response::new(pb::ApplyFaultResponse { fault: Some(fault) }))
    }

    async fn list_faults(&self, _: Request<pb::ListFaultsRequest>) -> Result<Response<pb::ListFaultsResponse>, Status> {
        Ok(Response::new(pb::ListFaultsResponse { faults: self.engine.list().await }))
    }

    async fn revert_fault(&self, req: Request<pb::RevertFaultRequest>) -> Result<Response<pb::RevertFaultResponse>, Status> {
        let r = req.into_inner();
        let reverted = match (r.all, r.id.is_empty()) {
            (true, true) => self.engine.revert_all().await,
            (false, false) => {
                self.engine.revert(&r.id).await?;
                vec![r.id]
            }
            (true, false) => return Err(Status::invalid_argument("id: give an id or all, not both")),
            (false, true) => return Err(Status::invalid_argument("id: required unless all is set")),
        };
        Ok(Response::new(pb::RevertFaultResponse { reverted }))
    }

    async fn renew_leases(&self, req: Request<pb::RenewLeasesRequest>) -> Result<Response<pb::RenewLeasesResponse>, Status> {
        let r = req.into_inner();
        let lease = (r.lease_ms > 0).then(|| Duration::from_millis(r.lease_ms));
        Ok(Response::new(pb::RenewLeasesResponse { faults: self.engine.renew(&r.ids, lease).await? }))
    }
}
