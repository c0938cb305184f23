//! `faultline.controller.v1.ControllerService`: each call checks its caller's role,
//! translates the request, and hands it to the controller.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use faultline_proto::{
    agent::v1 as apb,
    controller::v1::{self as pb, controller_service_server::ControllerService},
    identity::{self, policy},
};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{AgentEntry, Controller, Fault, ONE_SHOT_ID, Source, client, now_ms, unix_ms};
use super::store::StoredAgent;
use crate::targeting::partition;

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
            self.ctl.event(pb::EventKind::AgentDown, "", std::slice::from_ref(&self.name), "session closed");
        }
    }
}

type HeartbeatStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::Heartbeat, Status>> + Send>>;
type EventStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl ControllerService for Controller {
    type RegisterStream = HeartbeatStream;
    type WatchEventsStream = EventStream;

    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<Self::RegisterStream>, Status> {
        let caller = identity::authorize(&req, self.security.is_tls(), policy::REGISTER, "Register")?;
        let r = req.into_inner();
        identity::check_agent_name(&r.name).map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
        // An agent registers only under the name its certificate carries: any other
        // certificate from the CA could otherwise take over a name (and its faults).
        if !caller.local_root && caller.agent_name.as_deref() != Some(r.name.as_str()) {
            return Err(Status::permission_denied(match &caller.agent_name {
                Some(bound) => format!("name: this agent's certificate is for {}, not {}", faultline_proto::quote(bound), faultline_proto::quote(&r.name)),
                None => format!(
                    "name: this agent certificate names no agent; issue one for it with `faultline certs issue agent {}` and give the agent that pair",
                    faultline_proto::quote(&r.name)
                ),
            }));
        }
        check_labels(&r.labels)?;
        if r.url.len() > 2048 {
            return Err(Status::invalid_argument(format!("url: {} bytes; at most 2048", r.url.len())));
        }
        let mut c = client(&self.security, &r.url)?;
        // Registration means the controller can reach the agent back.
        let d = c.describe(apb::DescribeRequest {}).await.map_err(|e| Status::unavailable(format!("url: cannot reach the agent at {}: {}", r.url, e.message())))?.into_inner();
        let session = {
            let mut st = self.lock();
            if st.agents.get(&r.name).is_some_and(|a| a.source == Source::Inventory) {
                return Err(Status::already_exists(format!("name: {:?} is a static inventory agent", r.name)));
            }
            let session = st.agents.get(&r.name).map_or(1, |a| a.session + 1);
            st.agents.insert(
                r.name.clone(),
                AgentEntry {
                    name: r.name.clone(),
                    url: r.url.clone(),
                    labels: r.labels.into_iter().collect(),
                    source: Source::Registered,
                    healthy: true,
                    last_heartbeat: Some(SystemTime::now()),
                    describe: Some(d),
                    error: String::new(),
                    client: c,
                    session,
                },
            );
            session
        };
        tracing::info!(agent = r.name, url = r.url, session, "registered");
        let labels = self.lock().agents[&r.name].labels.clone();
        let stored = StoredAgent { name: r.name.clone(), url: r.url.clone(), labels, source: Source::Registered.as_str().into(), last_seen_ms: now_ms() };
        if let Err(e) = self.store.put_agent(&stored) {
            tracing::error!("{e}");
        }
        self.event(pb::EventKind::AgentRegistered, "", std::slice::from_ref(&r.name), format!("at {}", r.url));
        let guard = SessionGuard { ctl: self.clone(), name: r.name, session };
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let interval_ms = self.heartbeat.as_millis() as u64;
        let stream = futures_util::stream::unfold((tick, guard), move |(mut tick, guard)| async move {
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

    async fn list_agents(&self, req: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_READ, "ListAgents")?;
        let st = self.lock();
        let agents = st
            .agents
            .values()
            .map(|a| {
                let d = a.describe.clone().unwrap_or_default();
                pb::Agent {
                    name: a.name.clone(),
                    url: a.url.clone(),
                    labels: a.labels.clone().into_iter().collect(),
                    source: a.source.as_str().into(),
                    healthy: a.healthy,
                    last_heartbeat_unix_ms: a.last_heartbeat.map_or(0, unix_ms),
                    hostname: d.hostname,
                    kernel_release: d.kernel_release,
                    capabilities: d.capabilities,
                    addresses: d.interfaces.into_iter().flat_map(|i| i.addresses).collect(),
                    active_faults: st.faults.values().filter(|f| f.placements.iter().any(|(n, _)| *n == a.name)).count() as u32,
                    error: a.error.clone(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn apply_fault(&self, req: Request<pb::ApplyFaultRequest>) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "ApplyFault")?;
        let r = req.into_inner();
        let spec = r.spec.ok_or_else(|| Status::invalid_argument("spec: required"))?;
        let one_shot = matches!(spec.kind, Some(apb::fault_spec::Kind::Kill(_) | apb::fault_spec::Kind::Restart(_)));
        if spec.lease_ms == 0 && !one_shot {
            return Err(Status::invalid_argument("spec.lease_ms: required and > 0: every fault must end by itself"));
        }
        if Duration::from_millis(spec.lease_ms) > faultline_proto::MAX_LEASE {
            return Err(Status::invalid_argument(format!("spec.lease_ms: at most {} s", faultline_proto::MAX_LEASE.as_secs())));
        }
        let started = Instant::now();
        let names = self.select(&r.target.unwrap_or_default())?;
        // A pid, cgroup or unit names something on one host: the same value on another host
        // is an unrelated process (or none).
        use apb::process_target::Selector;
        if let Some(sel) = spec.target.as_ref().and_then(|t| t.selector.as_ref()).filter(|s| matches!(s, Selector::Pid(_) | Selector::Cgroup(_) | Selector::SystemdUnit(_)))
            && names.len() != 1 {
                let what = match sel {
                    Selector::Pid(_) => "--pid",
                    Selector::Cgroup(_) => "--cgroup",
                    _ => "--unit",
                };
                let refused = Status::invalid_argument(format!(
                    "target: {what} names something on one host only; name one agent (--on NAME, or a selector matching one), not {} ({})",
                    names.len(),
                    names.join(", ")
                ));
                return self.refusing(&names, started, Err(refused));
            }
        // The agents hold a short lease the controller renews, never longer than the fault's
        // own: then they end it on time even if the controller's timer is late.
        let lease = (self.agent_lease().as_millis() as u64).min(spec.lease_ms.max(1));
        let plan = names.iter().map(|n| (n.clone(), apb::FaultSpec { lease_ms: lease, ..spec.clone() })).collect();
        let kind = spec.kind.as_ref().map_or("?", apb::fault_spec::Kind::name);
        let span = tracing::info_span!("apply_fault", kind, agents = names.len(), fault_id = tracing::field::Empty);
        let placed = self.refusing(&names, started, self.apply_planned(&names, &spec, plan).instrument(span.clone()).await)?;
        // Kill and restart act once on each agent: nothing stays to renew or revert.
        if one_shot {
            let kind = spec.kind.as_ref().map_or("?", apb::fault_spec::Kind::name);
            self.event(pb::EventKind::FaultOneShot, "", &names, format!("{kind} on {}", names.join(",")));
            let mut status = self.status(&Fault {
                id: String::new(),
                spec,
                placements: placed.ids,
                cut_from: BTreeMap::new(),
                applied_at: SystemTime::now(),
                expires: Instant::now(),
                agent_applied_ms: placed.applied_ms,
            });
            status.id = ONE_SHOT_ID.into();
            return Ok(Response::new(pb::ApplyFaultResponse { fault: Some(status) }));
        }
        let status = self.record(spec, placed, BTreeMap::new());
        span.record("fault_id", status.id.as_str());
        Ok(Response::new(pb::ApplyFaultResponse { fault: Some(status) }))
    }

    async fn partition(&self, req: Request<pb::PartitionRequest>) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "Partition")?;
        let started = Instant::now();
        let r = req.into_inner();
        if r.lease_ms == 0 {
            return Err(Status::invalid_argument("lease_ms: required and > 0: every fault must end by itself"));
        }
        if Duration::from_millis(r.lease_ms) > faultline_proto::MAX_LEASE {
            return Err(Status::invalid_argument(format!("lease_ms: at most {} s", faultline_proto::MAX_LEASE.as_secs())));
        }
        let names = self.select(&pb::Target { selector: r.selector.clone(), ..Default::default() })?;
        let shape = pb::Shape::try_from(r.shape).map_err(|_| Status::invalid_argument(format!("shape: unknown value {}", r.shape)))?;
        let groups: Vec<Vec<String>> = r.groups.iter().map(|g| g.agents.clone()).collect();
        let rest = pb::Rest::try_from(r.rest).map_err(|_| Status::invalid_argument(format!("rest: unknown value {}", r.rest)))?;
        let cut = partition::cut(&names, shape, &groups, &r.node, self.seed(), rest == pb::Rest::Isolated).map_err(Status::invalid_argument)?;
        let kind = apb::fault_spec::Kind::Partition(apb::Partition {});
        let lease = (self.agent_lease().as_millis() as u64).min(r.lease_ms);
        let mut plan = Vec::new();
        {
            let st = self.lock();
            for (agent, blocked) in &cut {
                if blocked.is_empty() {
                    continue;
                }
                let iface = |n: &str| st.agents[n].describe.clone().unwrap_or_default().interfaces;
                let peers: Vec<String> = blocked.iter().flat_map(|b| iface(b)).flat_map(|i| i.addresses).filter_map(|a| partition::host_address(&a)).collect();
                let interface = partition::interface_towards(&iface(agent), &peers).ok_or_else(|| {
                    Status::failed_precondition(format!("agent {agent}: no interface has an address in the network of its peers {peers:?}"))
                })?;
                plan.push((
                    agent.clone(),
                    apb::FaultSpec {
                        interface,
                        direction: apb::Direction::Both as i32,
                        r#match: Some(apb::TrafficMatch { peers, ..Default::default() }),
                        lease_ms: lease,
                        label: r.label.clone(),
                        kind: Some(kind.clone()),
                        ..Default::default()
                    },
                ));
            }
        }
        let span = tracing::info_span!("partition", shape = shape.as_str_name(), agents = plan.len(), fault_id = tracing::field::Empty);
        let placed = self.refusing(&names, started, self.apply_planned(&names, &apb::FaultSpec { kind: Some(kind.clone()), ..Default::default() }, plan).instrument(span.clone()).await)?;
        let spec = apb::FaultSpec { lease_ms: r.lease_ms, label: r.label, kind: Some(kind), ..Default::default() };
        let cut_from = cut.into_iter().map(|(a, b)| (a, b.into_iter().collect())).collect();
        let status = self.record(spec, placed, cut_from);
        tracing::info!(id = status.id, cut = status.cut, "partitioned");
        span.record("fault_id", status.id.as_str());
        Ok(Response::new(pb::ApplyFaultResponse { fault: Some(status) }))
    }

    async fn list_faults(&self, req: Request<pb::ListFaultsRequest>) -> Result<Response<pb::ListFaultsResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_READ, "ListFaults")?;
        let st = self.lock();
        let mut faults: Vec<&Fault> = st.faults.values().collect();
        // Oldest first; ids compare as numbers (c-9 before c-10).
        faults.sort_by_key(|f| (f.applied_at, f.id.len(), f.id.clone()));
        Ok(Response::new(pb::ListFaultsResponse { faults: faults.into_iter().map(|f| self.status(f)).collect() }))
    }

    async fn revert_fault(&self, req: Request<pb::RevertFaultRequest>) -> Result<Response<pb::RevertFaultResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "RevertFault")?;
        let r = req.into_inner();
        let ids: Vec<String> = match (r.all, r.id.is_empty()) {
            (true, true) => self.lock().faults.keys().cloned().collect(),
            (false, false) => vec![r.id],
            (true, false) => return Err(Status::invalid_argument("id: give an id or all, not both")),
            (false, true) => return Err(Status::invalid_argument("id: required unless all is set")),
        };
        let (mut failures, mut agents) = (Vec::new(), Vec::new());
        for id in &ids {
            let (ok, failed): (Vec<_>, Vec<_>) = self.revert(id, pb::EventKind::FaultReverted).await?.into_iter().partition(|r| r.ok);
            agents.extend(ok);
            failures.extend(failed);
        }
        Ok(Response::new(pb::RevertFaultResponse { reverted: ids, failures, agents }))
    }

    async fn forget_agent(&self, req: Request<pb::ForgetAgentRequest>) -> Result<Response<pb::ForgetAgentResponse>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_WRITE, "ForgetAgent")?;
        let name = req.into_inner().name;
        {
            let st = self.lock();
            let Some(a) = st.agents.get(&name) else {
                return Err(Status::not_found(format!("name: no agent {} (agents: {})", faultline_proto::quote(&name), st.agents.keys().cloned().collect::<Vec<_>>().join(", "))));
            };
            if a.source == Source::Inventory {
                return Err(Status::failed_precondition(format!("name: {name} is listed in the controller's config; remove it there")));
            }
            if let Some(f) = st.faults.values().find(|f| f.placements.iter().any(|(n, _)| *n == name)) {
                return Err(Status::failed_precondition(format!("name: {name} holds part of fault {}; revert it first", f.id)));
            }
        }
        self.forget(&name, "forgotten on request".into());
        Ok(Response::new(pb::ForgetAgentResponse {}))
    }

    async fn watch_events(&self, req: Request<pb::WatchEventsRequest>) -> Result<Response<Self::WatchEventsStream>, Status> {
        identity::authorize(&req, self.security.is_tls(), policy::CONTROLLER_READ, "WatchEvents")?;
        let r = req.into_inner();
        // Subscribe before reading the history, so nothing falls between the two.
        let rx = self.events.subscribe();
        let history = self.store.events(r.after_seq, r.last).map_err(|e| Status::internal(e.to_string()))?;
        let seen = history.last().map_or(r.after_seq, |e| e.seq);
        let history = futures_util::stream::iter(history.into_iter().map(Ok));
        if !r.follow {
            return Ok(Response::new(Box::pin(history)));
        }
        let live = futures_util::stream::unfold(Some((rx, seen)), |st| async move {
            let (mut rx, seen) = st?;
            loop {
                match rx.recv().await {
                    Ok(e) if e.seq <= seen => {}
                    Ok(e) => {
                        let seq = e.seq;
                        return Some((Ok(e), Some((rx, seq))));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let msg = format!("this watcher fell {n} events behind; watch again with after_seq={seen}");
                        return Some((Err(Status::data_loss(msg)), None));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(futures_util::StreamExt::chain(history, live))))
    }
}

/// Label counts and sizes an agent may register with.
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 255;

fn check_labels(labels: &std::collections::HashMap<String, String>) -> Result<(), Status> {
    if labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!("labels: {} labels; at most {MAX_LABELS}", labels.len())));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY || k.contains(['=', ',']) {
            return Err(Status::invalid_argument(format!("labels: key {} must be 1..={MAX_LABEL_KEY} bytes without '=' or ','", faultline_proto::quote(k))));
        }
        if v.len() > MAX_LABEL_VALUE || v.contains(',') {
            return Err(Status::invalid_argument(format!("labels.{k}: value {} must be at most {MAX_LABEL_VALUE} bytes without ','", faultline_proto::quote(v))));
        }
    }
    Ok(())
}
