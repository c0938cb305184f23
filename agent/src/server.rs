//! gRPC `faultline.agent.v1.AgentService`: translates requests into engine calls
//! and engine errors into gRPC codes, in this one place.

use std::{sync::Arc, time::Duration};

use faultline_proto::{
    agent::v1::{self as pb, agent_service_server::AgentService},
    identity::{self, CertRole, policy},
};
use tonic::{Request, Response, Status};

use crate::{
    engine::{Engine, EngineError},
    kernel::link,
    metrics::{self, Host},
};

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(f) => Status::invalid_argument(f.to_string()),
            EngineError::NotFound(m) => Status::not_found(m),
            EngineError::Precondition(m) => Status::failed_precondition(m),
            EngineError::Conflict(m) => Status::already_exists(m),
            EngineError::Kernel(k) => Status::internal(k.to_string()),
            EngineError::Exhausted(m) => Status::resource_exhausted(m),
            EngineError::Denied(m) => Status::permission_denied(m),
        }
    }
}

pub struct Service {
    pub engine: Arc<Engine>,
    pub host: Arc<Host>,
    /// Mutual TLS (callers' certificates carry their role); plaintext admits root only.
    pub tls: bool,
}

impl Service {
    fn allow<T>(&self, req: &Request<T>, roles: &[CertRole], what: &str) -> Result<(), Status> {
        identity::authorize(req, self.tls, roles, what).map(|_| ())
    }
}

/// The longest and shortest sampling intervals a subscriber may ask for.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_hours(1);

type SampleStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::MetricsSample, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Service {
    type WatchMetricsStream = SampleStream;

    async fn get_metrics(
        &self,
        req: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::MetricsSample>, Status> {
        self.allow(&req, policy::AGENT_READ, "GetMetrics")?;
        Ok(Response::new(metrics::sample(&self.engine, &self.host).await))
    }

    async fn watch_metrics(
        &self,
        req: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        self.allow(&req, policy::AGENT_READ, "WatchMetrics")?;
        let ms = req.into_inner().interval_ms;
        let every = if ms == 0 { Duration::from_secs(1) } else { Duration::from_millis(ms) };
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&every) {
            return Err(Status::invalid_argument(format!(
                "interval_ms: {ms} is not in {}..={}",
                MIN_INTERVAL.as_millis(),
                MAX_INTERVAL.as_millis()
            )));
        }
        let mut tick = tokio::time::interval(every);
        // A slow reader gets the latest sample, not a backlog.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (engine, host) = (self.engine.clone(), self.host.clone());
        let stream = futures_util::stream::unfold(
            (tick, engine, host),
            |(mut tick, engine, host)| async move {
                tick.tick().await;
                let s = metrics::sample(&engine, &host).await;
                Some((Ok(s), (tick, engine, host)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn describe(
        &self,
        req: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        self.allow(&req, policy::AGENT_READ, "Describe")?;
        let uts = nix::sys::utsname::uname().map_err(|e| Status::internal(e.to_string()))?;
        let e = &self.engine;
        Ok(Response::new(pb::DescribeResponse {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kernel_release: uts.release().to_string_lossy().into_owned(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            interfaces: link::interfaces()
                .into_iter()
                .map(|i| pb::Interface {
                    name: i.name,
                    index: i.index,
                    mac: i.mac,
                    mtu: i.mtu,
                    up: i.up,
                    addresses: i.addresses,
                })
                .collect(),
            capabilities: Some(capabilities(e)),
        }))
    }

    async fn apply_fault(
        &self,
        req: Request<pb::ApplyFaultRequest>,
    ) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        self.allow(&req, policy::AGENT_WRITE, "ApplyFault")?;
        let r = req.into_inner();
        let spec = r.spec.ok_or_else(|| Status::invalid_argument("spec: required"))?;
        let fault = if r.dry_run {
            self.engine.check(spec).await?
        } else {
            self.engine.apply(spec).await?
        };
        Ok(Response::new(pb::ApplyFaultResponse { fault: Some(fault) }))
    }

    async fn list_containers(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        self.allow(&req, policy::AGENT_READ, "ListContainers")?;
        let labels = crate::containers::parse_labels("select", &req.into_inner().select)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (containers, unreachable) = self.engine.runtimes.list(&labels).await;
        let containers = tokio::task::spawn_blocking(move || {
            crate::containers::with_addresses(containers)
                .iter()
                .map(|c| {
                    c.to_wire(crate::kernel::netns::inode_of(c.process.pid).unwrap_or_default())
                })
                .collect()
        })
        .await
        .map_err(|e| Status::internal(format!("listing containers: {e}")))?;
        Ok(Response::new(pb::ListContainersResponse { containers, unreachable }))
    }

    async fn list_pods(
        &self,
        req: Request<pb::ListPodsRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        self.allow(&req, policy::AGENT_READ, "ListPods")?;
        let r = req.into_inner();
        let select = crate::pods::parse_selector("select", &r.select)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !r.namespace.is_empty() && crate::pods::PodSelector::namespace_invalid(&r.namespace) {
            return Err(Status::invalid_argument(format!(
                "namespace: {} is not a Kubernetes namespace",
                faultline_proto::quote(&r.namespace)
            )));
        }
        let sel = crate::pods::PodSelector {
            namespace: (!r.namespace.is_empty()).then_some(r.namespace),
            name: None,
            select,
            container: None,
        };
        let runtimes = &self.engine.runtimes;
        Ok(Response::new(match runtimes.cri().list(&sel).await {
            Ok(pods) => pb::ListPodsResponse {
                // A scoped agent shows only what it may act on.
                pods: pods
                    .iter()
                    .filter(|p| runtimes.check_scope(Some(&p.sandbox())).is_ok())
                    .map(crate::pods::Pod::to_wire)
                    .collect(),
                unreachable: Vec::new(),
            },
            Err(e) => pb::ListPodsResponse { pods: Vec::new(), unreachable: vec![e.to_string()] },
        }))
    }

    async fn list_faults(
        &self,
        req: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        self.allow(&req, policy::AGENT_READ, "ListFaults")?;
        Ok(Response::new(pb::ListFaultsResponse { faults: self.engine.list().await }))
    }

    async fn revert_fault(
        &self,
        req: Request<pb::RevertFaultRequest>,
    ) -> Result<Response<pb::RevertFaultResponse>, Status> {
        self.allow(&req, policy::AGENT_WRITE, "RevertFault")?;
        let r = req.into_inner();
        let reverted = match (r.all, r.id.is_empty()) {
            (true, true) => self.engine.revert_all().await,
            (false, false) => {
                self.engine.revert(&r.id).await?;
                vec![r.id]
            }
            (true, false) => {
                return Err(Status::invalid_argument("id: give an id or all, not both"));
            }
            (false, true) => {
                return Err(Status::invalid_argument("id: required unless all is set"));
            }
        };
        Ok(Response::new(pb::RevertFaultResponse {
            reverted,
            reverted_at_unix_ms: crate::engine::unix_ms(std::time::SystemTime::now()),
        }))
    }

    async fn renew_leases(
        &self,
        req: Request<pb::RenewLeasesRequest>,
    ) -> Result<Response<pb::RenewLeasesResponse>, Status> {
        self.allow(&req, policy::AGENT_WRITE, "RenewLeases")?;
        let r = req.into_inner();
        let lease = (r.lease_ms > 0).then(|| Duration::from_millis(r.lease_ms));
        Ok(Response::new(pb::RenewLeasesResponse {
            faults: self.engine.renew(&r.ids, lease).await?,
        }))
    }
}

/// The wire form of the engine's probes; the booleans are read from the same probes.
pub fn capabilities(e: &crate::engine::Engine) -> pb::Capabilities {
    use faultline_proto::doctor::feature as f;
    let c = &e.caps;
    pb::Capabilities {
        netem: c.has(f::NETEM),
        netem_detail: c
            .probe(f::NETEM)
            .map(|p| if p.ok { p.detail.clone() } else { c.why_not(f::NETEM) })
            .unwrap_or_default(),
        htb: c.has(f::HTB),
        tbf: c.has(f::TBF),
        ifb: c.has(f::IFB),
        ebpf: c.has(f::EBPF),
        tc_attach_mode: e.attach_mode.name().into(),
        cgroup_v2_freeze: c.has(f::CGROUP_FREEZE),
        ebpf_detail: if c.has(f::EBPF) { String::new() } else { c.why_not(f::EBPF) },
        cgroup_v2_cpu: c.has(f::CGROUP_CPU),
        systemd: c.has(f::SYSTEMD),
        kernel_metrics: c.has(f::TRACEPOINTS),
        kernel_metrics_detail: e.kernel_metrics_detail(),
        probes: c.probes.clone(),
    }
}
