//! `faultline.controller.v1.ControllerService`: each call checks its caller's role,
//! translates the request, and hands it to the controller.

use std::time::SystemTime;

use faultline_proto::{
    controller::v1::{self as pb, controller_service_server::ControllerService},
    identity::{self, policy},
};
use tonic::{Request, Response, Status};

use super::{Controller, DaemonError, ErrorKind, unix_ms};

/// Marks a registered agent down when its session stream is dropped.
struct SessionGuard {
    ctl: Controller,
    name: String,
    session: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let ended = {
            let mut st = self.ctl.lock();
            match st.agents.get_mut(&self.name) {
                Some(a) if a.session == self.session => {
                    a.healthy = false;
                    a.error = "session closed".into();
                    true
                }
                _ => false,
            }
        };
        if ended {
            tracing::info!(agent = self.name, "session ended");
            self.ctl.event(
                pb::EventKind::AgentDown,
                "",
                std::slice::from_ref(&self.name),
                "session closed",
            );
        }
    }
}

type HeartbeatStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::Heartbeat, Status>> + Send>>;
type EventStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl ControllerService for Controller {
    type RegisterStream = HeartbeatStream;
    type WatchEventsStream = EventStream;

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<Self::RegisterStream>, Status> {
        let caller =
            identity::authorize(&req, self.security.is_tls(), policy::REGISTER, "Register")?;
        let r = req.into_inner();
        let name = r.name.clone();
        let session = self.register_agent(r, &caller).await?;
        let guard = SessionGuard { ctl: self.clone(), name, session };
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let interval_ms = self.heartbeat.as_millis() as u64;
        let stream =
            futures_util::stream::unfold((tick, guard), move |(mut tick, guard)| async move {
                tick.tick().await;
                let now = SystemTime::now();
                {
                    let mut st = guard.ctl.lock();
                    match st.agents.get_mut(&guard.name) {
                        Some(a) if a.session == guard.session => a.last_heartbeat = Some(now),
                        // Forgotten, or registered again by a newer session: this one ends,
                        // so a live agent on it registers again instead of waiting forever.
                        _ => return None,
                    }
                }
                Some((Ok(pb::Heartbeat { unix_ms: unix_ms(now), interval_ms }), (tick, guard)))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_READ, "ListAgents")?;
        let agents = self.agent_list();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn apply_fault(
        &self,
        req: Request<pb::ApplyFaultRequest>,
    ) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "ApplyFault")?;
        let fault = self.apply(req.into_inner()).await?;
        Ok(Response::new(pb::ApplyFaultResponse { fault: Some(fault) }))
    }

    async fn partition(
        &self,
        req: Request<pb::PartitionRequest>,
    ) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "Partition")?;
        let fault = self.cut(req.into_inner()).await?;
        Ok(Response::new(pb::ApplyFaultResponse { fault: Some(fault) }))
    }

    async fn list_faults(
        &self,
        req: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_READ, "ListFaults")?;
        Ok(Response::new(pb::ListFaultsResponse { faults: self.fault_list() }))
    }

    async fn revert_fault(
        &self,
        req: Request<pb::RevertFaultRequest>,
    ) -> Result<Response<pb::RevertFaultResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "RevertFault")?;
        Ok(Response::new(self.revert_faults(req.into_inner()).await?))
    }

    async fn renew_fault(
        &self,
        req: Request<pb::RenewFaultRequest>,
    ) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "RenewFault")?;
        let fault = Controller::renew_fault(self, req.into_inner()).await?;
        Ok(Response::new(pb::ApplyFaultResponse { fault: Some(fault) }))
    }

    async fn forget_agent(
        &self,
        req: Request<pb::ForgetAgentRequest>,
    ) -> Result<Response<pb::ForgetAgentResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "ForgetAgent")?;
        self.forget_agent(&req.into_inner().name)?;
        Ok(Response::new(pb::ForgetAgentResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        identity::authorize(
            &req,
            self.security.is_tls(),
            policy::CONTROLLER_READ,
            "ListContainers",
        )?;
        Ok(Response::new(self.container_list(req.into_inner()).await?))
    }

    async fn list_pods(
        &self,
        req: Request<pb::ListPodsRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_READ, "ListPods")?;
        Ok(Response::new(self.pod_list(req.into_inner()).await?))
    }

    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::ENROLL, "Enroll")?;
        Ok(Response::new(self.enroll_agent(req.into_inner()).await?))
    }

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_READ, "WatchEvents")?;
        let r = req.into_inner();
        let events = self.event_stream(r.after_seq, r.last, r.follow)?;
        Ok(Response::new(Box::pin(futures_util::StreamExt::map(events, |e| {
            e.map_err(Status::from)
        }))))
    }
}

/// The one place a `DaemonError` becomes a gRPC status.
impl From<DaemonError> for Status {
    fn from(e: DaemonError) -> Self {
        use tonic::Code;
        let code = match e.kind {
            ErrorKind::Invalid => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Conflict => Code::AlreadyExists,
            ErrorKind::Denied => Code::PermissionDenied,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Precondition => Code::FailedPrecondition,
            ErrorKind::Aborted => Code::Aborted,
            ErrorKind::Exhausted => Code::ResourceExhausted,
            ErrorKind::Lagged => Code::DataLoss,
            ErrorKind::Internal => Code::Internal,
        };
        Status::new(code, e.message)
    }
}

/// An agent's refusal (a gRPC status from its service) as the kind the controller passes on.
pub(super) fn kind_of(code: tonic::Code) -> ErrorKind {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::Invalid,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::Conflict,
        Code::PermissionDenied | Code::Unauthenticated => ErrorKind::Denied,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Unavailable,
        Code::FailedPrecondition => ErrorKind::Precondition,
        Code::Aborted => ErrorKind::Aborted,
        Code::ResourceExhausted => ErrorKind::Exhausted,
        Code::DataLoss => ErrorKind::Lagged,
        Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal => ErrorKind::Internal,
    }
}
