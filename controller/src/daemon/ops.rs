//! The controller's operations, whatever front end asks: register and forget agents,
//! apply a fault or a partition, list, revert, read events. Each checks its input and
//! answers a `DaemonError` naming the field; grpc.rs (and later the Web API) only
//! checks the caller's role and translates.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use faultline_proto::{
    agent::v1 as apb,
    controller::v1 as pb,
    identity::{self, Caller},
};
use tracing::Instrument;

use super::containers::{Member, member_key, member_keys};
use super::store::StoredAgent;
use super::{
    AgentEntry, Controller, DaemonError, ErrorKind, Fault, ONE_SHOT_ID, Source, client, now_ms,
    unix_ms,
};
use crate::targeting::partition;

/// Label counts and sizes an agent may register with.
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 255;

/// A replay's page of history.
const PAGE: u32 = 500;
/// The most events `last` may ask for at once.
pub(super) const MAX_LAST: u32 = 10_000;

/// Where an event stream is.
#[derive(Clone, Copy)]
enum Phase {
    /// The newest N, read at once.
    Last(u32),
    /// History after this seq, a page at a time.
    History(u64),
    /// New events after this seq, as they happen.
    Live(u64),
    Done,
}

/// Events oldest first, then (following) each new one as it happens.
pub(super) type Events =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::Event, DaemonError>> + Send>>;

impl Controller {
    /// The events after `after_seq` (or the `last` few, at most `MAX_LAST`), and with
    /// `follow` every later one; a watcher that falls too far behind gets a `Lagged`
    /// error saying where to resume. The history is read a page at a time off the
    /// runtime's thread, as the watcher takes it: replaying a long history holds neither
    /// the runtime nor memory.
    pub(super) fn event_stream(
        &self,
        after_seq: u64,
        last: u32,
        follow: bool,
    ) -> Result<Events, DaemonError> {
        if last > MAX_LAST {
            return Err(DaemonError::invalid(format!(
                "last: at most {MAX_LAST}; page through older events with after_seq"
            )));
        }
        // Subscribe before reading the history, so nothing falls between the two.
        let rx = self.events.subscribe();
        let store = self.store.clone();
        let first = if last > 0 { Phase::Last(last) } else { Phase::History(after_seq) };
        let stream = futures_util::stream::unfold(
            (rx, first, std::collections::VecDeque::new()),
            move |(mut rx, mut phase, mut buf)| {
                let store = store.clone();
                async move {
                    loop {
                        if let Some(e) = buf.pop_front() {
                            return Some((Ok(e), (rx, phase, buf)));
                        }
                        match phase {
                            Phase::Last(_) | Phase::History(_) => {
                                let (newest, after) = match phase {
                                    Phase::Last(n) => (Some(n), after_seq),
                                    Phase::History(after) => (None, after),
                                    Phase::Live(_) | Phase::Done => unreachable!("matched above"),
                                };
                                let full_page = newest.is_none();
                                let store = store.clone();
                                let read = move || match newest {
                                    Some(n) => store.events(after, n),
                                    None => store.events_page(after, PAGE),
                                };
                                let page = match tokio::task::spawn_blocking(read).await {
                                    Ok(Ok(page)) => page,
                                    Ok(Err(e)) => {
                                        return Some((
                                            Err(DaemonError::internal(e.to_string())),
                                            (rx, Phase::Done, buf),
                                        ));
                                    }
                                    Err(e) => {
                                        return Some((
                                            Err(DaemonError::internal(format!("events: {e}"))),
                                            (rx, Phase::Done, buf),
                                        ));
                                    }
                                };
                                let seen = page.last().map_or(after, |e| e.seq);
                                phase = if full_page && page.len() == PAGE as usize {
                                    Phase::History(seen)
                                } else if follow {
                                    Phase::Live(seen)
                                } else {
                                    Phase::Done
                                };
                                buf.extend(page);
                            }
                            Phase::Live(seen) => match rx.recv().await {
                                Ok(e) if e.seq <= seen => {}
                                Ok(e) => {
                                    let seq = e.seq;
                                    return Some((Ok(e), (rx, Phase::Live(seq), buf)));
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                    let msg = format!(
                                        "this watcher fell {n} events behind; watch again with after_seq={seen}"
                                    );
                                    return Some((
                                        Err(DaemonError::new(ErrorKind::Lagged, msg)),
                                        (rx, Phase::Done, buf),
                                    ));
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    return None;
                                }
                            },
                            Phase::Done => return None,
                        }
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    /// Admits an agent under the name its certificate carries and returns its session
    /// (a newer registration under the name supersedes this one).
    pub(super) async fn register_agent(
        &self,
        r: pb::RegisterRequest,
        caller: &Caller,
    ) -> Result<u64, DaemonError> {
        identity::check_agent_name(&r.name)
            .map_err(|e| DaemonError::invalid(format!("name: {e}")))?;
        // An agent registers only under the name its certificate carries: any other
        // certificate from the CA could otherwise take over a name (and its faults).
        if !caller.local_root && caller.agent_name.as_deref() != Some(r.name.as_str()) {
            return Err(DaemonError::denied(match &caller.agent_name {
                Some(bound) => format!(
                    "name: this agent's certificate is for {}, not {}",
                    faultline_proto::quote(bound),
                    faultline_proto::quote(&r.name)
                ),
                None => format!(
                    "name: this agent certificate names no agent; issue one for it with `faultline certs issue agent {}` and give the agent that pair",
                    faultline_proto::quote(&r.name)
                ),
            }));
        }
        check_labels(&r.labels)?;
        if r.url.len() > 2048 {
            return Err(DaemonError::invalid(format!("url: {} bytes; at most 2048", r.url.len())));
        }
        let mut c = client(&self.security, &r.url, caller.agent_name.as_deref())?;
        // Registration means the controller can reach the agent back, and finds there the
        // agent the certificate names (not another agent whose URL this one gave).
        let d = c
            .describe(apb::DescribeRequest {})
            .await
            .map_err(|e| {
                let why = std::error::Error::source(&e)
                    .map_or_else(|| e.message().to_owned(), |s| format!("{}: {s}", e.message()));
                let name = if caller.local_root {
                    String::new()
                } else {
                    format!(" whose certificate names agent {}", faultline_proto::quote(&r.name))
                };
                DaemonError::unavailable(format!(
                    "url: cannot reach an agent{name} at {}: {why}",
                    r.url
                ))
            })?
            .into_inner();
        let session = {
            let mut st = self.lock();
            if st.agents.get(&r.name).is_some_and(|a| a.source == Source::Inventory) {
                return Err(DaemonError::conflict(format!(
                    "name: {:?} is a static inventory agent",
                    r.name
                )));
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
        let stored = StoredAgent {
            name: r.name.clone(),
            url: r.url.clone(),
            labels,
            source: Source::Registered.as_str().into(),
            last_seen_ms: now_ms(),
        };
        if let Err(e) = self.store.put_agent(&stored) {
            tracing::error!("{e}");
        }
        self.event(
            pb::EventKind::AgentRegistered,
            "",
            std::slice::from_ref(&r.name),
            format!("at {}", r.url),
        );
        Ok(session)
    }

    /// Every agent the controller knows, with its health and what it can do.
    pub(super) fn agent_list(&self) -> Vec<pb::Agent> {
        let st = self.lock();
        st.agents
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
                    active_faults: st
                        .faults
                        .values()
                        .filter(|f| f.placements.iter().any(|(n, _)| *n == a.name))
                        .count() as u32,
                    error: a.error.clone(),
                }
            })
            .collect()
    }

    /// Applies a fault on the agents its target selects, all or nothing; a one-shot
    /// (kill, restart) answers with id `ONE_SHOT_ID`.
    pub(super) async fn apply(
        &self,
        r: pb::ApplyFaultRequest,
    ) -> Result<pb::ControllerFault, DaemonError> {
        let spec = r.spec.ok_or_else(|| DaemonError::invalid("spec: required"))?;
        let one_shot = matches!(
            spec.kind,
            Some(apb::fault_spec::Kind::Kill(_) | apb::fault_spec::Kind::Restart(_))
        );
        if spec.lease_ms == 0 && !one_shot {
            return Err(DaemonError::invalid(
                "spec.lease_ms: required and > 0: every fault must end by itself",
            ));
        }
        if Duration::from_millis(spec.lease_ms) > faultline_proto::MAX_LEASE {
            return Err(DaemonError::invalid(format!(
                "spec.lease_ms: at most {} s",
                faultline_proto::MAX_LEASE.as_secs()
            )));
        }
        let started = Instant::now();
        let target = r.target.unwrap_or_default();
        // Safe by default: a request that names no agents, selector or container does not
        // mean "everywhere" unless it says --all.
        if !crate::faults::names_a_target(&target, &spec) {
            let refused = DaemonError::invalid(format!("target: {}", crate::faults::NO_TARGET));
            return self.refusing(&[], started, Err(refused));
        }
        // A container names its hosts: the agents running one that matches (the mode counts those).
        let containers = match &spec.container {
            Some(c) => Some(self.container_placements(&target, c).await?),
            None => None,
        };
        // A pod names its nodes likewise.
        let pods = match &spec.pod {
            Some(_) if containers.is_some() => {
                return Err(DaemonError::invalid("pod: give a container or a pod, not both"));
            }
            Some(p) => Some(self.pod_placements(&target, p).await?),
            None => None,
        };
        let names = match (&containers, &pods) {
            (Some(placed), _) | (None, Some(placed)) => {
                placed.iter().map(|(agent, _, _)| agent.clone()).collect()
            }
            (None, None) => self.select(&target)?,
        };
        // A pid, cgroup or unit names something on one host: the same value on another host
        // is an unrelated process (or none).
        use apb::process_target::Selector;
        if let Some(sel) = spec.target.as_ref().and_then(|t| t.selector.as_ref()).filter(|s| {
            matches!(s, Selector::Pid(_) | Selector::Cgroup(_) | Selector::SystemdUnit(_))
        }) && names.len() != 1
        {
            let what = match sel {
                Selector::Pid(_) => "--pid",
                Selector::Cgroup(_) => "--cgroup",
                _ => "--unit",
            };
            let refused = DaemonError::invalid(format!(
                "target: {what} names something on one host only; name one agent (--on NAME, or a selector matching one), not {} ({})",
                names.len(),
                names.join(", ")
            ));
            return self.refusing(&names, started, Err(refused));
        }
        // The agents hold a short lease the controller renews, never longer than the fault's
        // own: then they end it on time even if the controller's timer is late.
        let lease = (self.agent_lease().as_millis() as u64).min(spec.lease_ms.max(1));
        // (container id, name) each agent found, where the fault names a container.
        let found = |n: &str| {
            containers.iter().flatten().find(|(a, _, _)| a == n).map(|(_, id, name)| (id, name))
        };
        let plan: Vec<(String, apb::FaultSpec)> = names
            .iter()
            .map(|n| {
                let mut s = apb::FaultSpec { lease_ms: lease, ..spec.clone() };
                // Each agent gets the container it found, by id: no second resolution can differ.
                if let Some((id, _)) = found(n) {
                    s.container =
                        Some(apb::ContainerTarget { name: id.clone(), select: Vec::new() });
                }
                // And the pod it found, by namespace and name.
                if let (Some(p), Some((_, ns, name))) =
                    (&spec.pod, pods.iter().flatten().find(|(a, _, _)| a == n))
                {
                    s.pod = Some(apb::PodTarget {
                        namespace: ns.clone(),
                        name: name.clone(),
                        select: Vec::new(),
                        container: p.container.clone(),
                    });
                }
                (n.clone(), s)
            })
            .collect();
        if r.dry_run {
            // Everything an apply checks before acting, and nothing after. Its answer,
            // either way, is to a question: not counted and not an event.
            self.check_ready(&names, &spec)?;
            self.check_all(&plan).await?;
            return Ok(pb::ControllerFault {
                spec: Some(spec),
                placements: names
                    .iter()
                    .map(|n| pb::AgentResult {
                        agent: n.clone(),
                        ok: true,
                        container: found(n).map(|(_, name)| name.clone()).unwrap_or_default(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            });
        }
        let kind = spec.kind.as_ref().map_or("?", apb::fault_spec::Kind::name);
        let span = tracing::info_span!(
            "apply_fault",
            kind,
            agents = names.len(),
            fault_id = tracing::field::Empty
        );
        let placed = self.refusing(
            &names,
            started,
            self.apply_planned(&names, &spec, plan).instrument(span.clone()).await,
        )?;
        // Kill and restart act once on each agent: nothing stays to renew or revert.
        if one_shot {
            let kind = spec.kind.as_ref().map_or("?", apb::fault_spec::Kind::name);
            self.event(
                pb::EventKind::FaultOneShot,
                "",
                &names,
                format!("{kind} on {}", names.join(",")),
            );
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
            return Ok(status);
        }
        let status = self.record(spec, placed, BTreeMap::new());
        span.record("fault_id", status.id.as_str());
        Ok(status)
    }

    /// Who a partition cuts when not agents: the pods (`pod_select`) or the containers
    /// (`container_select`, `containers`) on `agents`' hosts; `None`: the agents themselves.
    async fn cut_members(
        &self,
        agents: &[String],
        r: &pb::PartitionRequest,
    ) -> Result<Option<Vec<Member>>, DaemonError> {
        let pods = !r.pod_select.is_empty();
        if pods && !(r.container_select.is_empty() && r.containers.is_empty()) {
            return Err(DaemonError::invalid("pod_select: partition containers or pods, not both"));
        }
        Ok(if pods {
            let namespace = match (r.all_namespaces, r.pod_namespace.as_str()) {
                (true, "") => "",
                (true, _) => {
                    return Err(DaemonError::invalid(
                        "all_namespaces: every namespace, or pod_namespace: one, not both",
                    ));
                }
                (false, "") => "default",
                (false, ns) => ns,
            };
            Some(self.pod_members(agents, namespace, &r.pod_select).await?)
        } else if r.container_select.is_empty() && r.containers.is_empty() {
            None
        } else {
            Some(self.partition_members(agents, &r.container_select, &r.containers).await?)
        })
    }

    /// Cuts the selected agents, or the containers on their hosts, into groups by a
    /// shape, one fault over all of them.
    pub(super) async fn cut(
        &self,
        r: pb::PartitionRequest,
    ) -> Result<pb::ControllerFault, DaemonError> {
        let started = Instant::now();
        if r.lease_ms == 0 {
            return Err(DaemonError::invalid(
                "lease_ms: required and > 0: every fault must end by itself",
            ));
        }
        if Duration::from_millis(r.lease_ms) > faultline_proto::MAX_LEASE {
            return Err(DaemonError::invalid(format!(
                "lease_ms: at most {} s",
                faultline_proto::MAX_LEASE.as_secs()
            )));
        }
        let agents =
            self.select(&pb::Target { selector: r.selector.clone(), ..Default::default() })?;
        let shape = pb::Shape::try_from(r.shape)
            .map_err(|_| DaemonError::invalid(format!("shape: unknown value {}", r.shape)))?;
        let rest = pb::Rest::try_from(r.rest)
            .map_err(|_| DaemonError::invalid(format!("rest: unknown value {}", r.rest)))?;
        // Containers take part instead of agents: the cut is over their names, and groups
        // and --node name containers.
        let members = self.cut_members(&agents, &r).await?;
        let (names, groups, node) = match &members {
            None => (
                agents.clone(),
                r.groups.iter().map(|g| g.agents.clone()).collect(),
                r.node.clone(),
            ),
            Some(m) => {
                let groups = r
                    .groups
                    .iter()
                    .map(|g| {
                        g.agents
                            .iter()
                            .map(|w| member_keys("groups", w, m))
                            .collect::<Result<Vec<_>, _>>()
                            .map(|keys| keys.into_iter().flatten().collect::<Vec<_>>())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let node =
                    if r.node.is_empty() { String::new() } else { member_key("node", &r.node, m)? };
                (m.iter().map(|m| m.key.clone()).collect::<Vec<_>>(), groups, node)
            }
        };
        let cut =
            partition::cut(&names, shape, &groups, &node, self.seed(), rest == pb::Rest::Isolated)
                .map_err(DaemonError::invalid)?;
        let kind = apb::fault_spec::Kind::Partition(apb::Partition {});
        let lease = (self.agent_lease().as_millis() as u64).min(r.lease_ms);
        let part = |peers: Vec<String>,
                    interface: String,
                    container: Option<apb::ContainerTarget>,
                    pod: Option<apb::PodTarget>| apb::FaultSpec {
            interface,
            direction: apb::Direction::Both as i32,
            r#match: Some(apb::TrafficMatch { peers, ..Default::default() }),
            lease_ms: lease,
            label: r.label.clone(),
            kind: Some(kind.clone()),
            container,
            pod,
            ..Default::default()
        };
        let mut plan = Vec::new();
        for (who, blocked) in cut.iter().filter(|(_, b)| !b.is_empty()) {
            // A container: in its own namespace, on its interface, against the other
            // containers' own addresses.
            if let Some(m) = &members {
                let me = m.iter().find(|x| x.key == *who).expect("a member");
                let peers: Vec<String> =
                    m.iter().filter(|x| blocked.contains(&x.key)).flat_map(Member::peers).collect();
                if peers.is_empty() {
                    return Err(DaemonError::precondition(format!(
                        "containers: {} are cut from {who}, but none has an address its agent could see",
                        blocked.iter().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                // A pod by namespace and name, as its agent listed it; a container by id.
                let (container, pod) = match &me.pod {
                    Some((namespace, name)) => (
                        None,
                        Some(apb::PodTarget {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            ..Default::default()
                        }),
                    ),
                    None => (
                        Some(apb::ContainerTarget {
                            name: me.container.id.clone(),
                            select: Vec::new(),
                        }),
                        None,
                    ),
                };
                plan.push((me.agent.clone(), part(peers, String::new(), container, pod)));
                continue;
            }
            let st = self.lock();
            let iface = |n: &str| st.agents[n].describe.clone().unwrap_or_default().interfaces;
            let peers: Vec<String> = blocked
                .iter()
                .flat_map(|b| iface(b))
                .flat_map(|i| i.addresses)
                .filter_map(|a| partition::host_address(&a))
                .collect();
            let interface = partition::interface_towards(&iface(who), &peers).ok_or_else(|| {
                DaemonError::precondition(format!(
                    "agent {who}: no interface has an address in the network of its peers {peers:?}"
                ))
            })?;
            plan.push((who.clone(), part(peers, interface, None, None)));
        }
        // The agents taking part: every selected one, or those running a member container.
        let agents: Vec<String> = match &members {
            None => agents,
            Some(m) => m
                .iter()
                .map(|x| x.agent.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let span = tracing::info_span!(
            "partition",
            shape = shape.as_str_name(),
            parts = plan.len(),
            fault_id = tracing::field::Empty
        );
        let placed = self.refusing(
            &agents,
            started,
            self.apply_planned(
                &agents,
                &apb::FaultSpec { kind: Some(kind.clone()), ..Default::default() },
                plan,
            )
            .instrument(span.clone())
            .await,
        )?;
        let spec = apb::FaultSpec {
            lease_ms: r.lease_ms,
            label: r.label,
            kind: Some(kind),
            ..Default::default()
        };
        let cut_from = cut.into_iter().map(|(a, b)| (a, b.into_iter().collect())).collect();
        let status = self.record(spec, placed, cut_from);
        tracing::info!(id = status.id, cut = status.cut, "partitioned");
        span.record("fault_id", status.id.as_str());
        Ok(status)
    }

    /// Sets a fault's lease anew, from now; the agents hold the new lease (their own is
    /// never past the fault's end) before this answers, so a fault renewed in its last
    /// moment does not end on an agent before the next heartbeat renews it there.
    pub(super) async fn renew_fault(
        &self,
        r: pb::RenewFaultRequest,
    ) -> Result<pb::ControllerFault, DaemonError> {
        if r.id.is_empty() || r.id.len() > 128 {
            return Err(DaemonError::invalid("id: 1 to 128 characters"));
        }
        let lease = Duration::from_millis(r.lease_ms);
        if lease.is_zero() || lease > faultline_proto::MAX_LEASE {
            return Err(DaemonError::invalid(format!(
                "lease_ms: more than 0, at most {} (a week)",
                faultline_proto::MAX_LEASE.as_millis()
            )));
        }
        let (placements, expires) = {
            let mut st = self.lock();
            let Some(f) = st.faults.get_mut(&r.id) else {
                return Err(DaemonError::not_found(format!("id: no active fault {:?}", r.id)));
            };
            f.expires = Instant::now() + lease;
            self.persist(f);
            (f.placements.clone(), f.expires)
        };
        self.expire_at(r.id.clone(), expires);
        let part_lease = self.part_lease(lease);
        let calls = placements.iter().filter_map(|(agent, fid)| {
            let call = self.renew_part(agent, fid, part_lease)?;
            Some(async move { (agent.clone(), call.await) })
        });
        let failed: Vec<String> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|(a, r)| r.err().map(|e| format!("{a}: {}", e.message())))
            .collect();
        let agents: Vec<String> = placements.iter().map(|p| p.0.clone()).collect();
        let detail = if failed.is_empty() {
            String::new()
        } else {
            format!("; not reached now (the heartbeat retries): {}", failed.join("; "))
        };
        self.event(
            pb::EventKind::FaultRenewed,
            &r.id,
            &agents,
            format!("lease {} s from now{detail}", lease.as_secs_f64()),
        );
        let st = self.lock();
        let f = st
            .faults
            .get(&r.id)
            .ok_or_else(|| DaemonError::not_found(format!("id: {:?} ended meanwhile", r.id)))?;
        Ok(self.status(f))
    }

    /// The active faults, oldest first, with time left.
    pub(super) fn fault_list(&self) -> Vec<pb::ControllerFault> {
        let st = self.lock();
        let mut faults: Vec<&Fault> = st.faults.values().collect();
        // Oldest first; ids compare as numbers (c-9 before c-10).
        faults.sort_by_key(|f| (f.applied_at, f.id.len(), f.id.clone()));
        faults.into_iter().map(|f| self.status(f)).collect()
    }

    /// Ends one fault (`id`) or all of them everywhere.
    pub(super) async fn revert_faults(
        &self,
        r: pb::RevertFaultRequest,
    ) -> Result<pb::RevertFaultResponse, DaemonError> {
        let ids: Vec<String> = match (r.all, r.id.is_empty()) {
            (true, true) => self.lock().faults.keys().cloned().collect(),
            (false, false) => vec![r.id],
            (true, false) => return Err(DaemonError::invalid("id: give an id or all, not both")),
            (false, true) => return Err(DaemonError::invalid("id: required unless all is set")),
        };
        let (mut failures, mut agents) = (Vec::new(), Vec::new());
        for id in &ids {
            let (ok, failed): (Vec<_>, Vec<_>) = self
                .revert(id, pb::EventKind::FaultReverted)
                .await?
                .into_iter()
                .partition(|r| r.ok);
            agents.extend(ok);
            failures.extend(failed);
        }
        Ok(pb::RevertFaultResponse { reverted: ids, failures, agents })
    }

    /// Forgets a registered agent that holds no fault.
    pub(super) fn forget_agent(&self, name: &str) -> Result<(), DaemonError> {
        let name = name.to_owned();
        {
            let st = self.lock();
            let Some(a) = st.agents.get(&name) else {
                return Err(DaemonError::not_found(format!(
                    "name: no agent {} (agents: {})",
                    faultline_proto::quote(&name),
                    st.agents.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            };
            if a.source == Source::Inventory {
                return Err(DaemonError::precondition(format!(
                    "name: {name} is listed in the controller's config; remove it there"
                )));
            }
            if let Some(f) =
                st.faults.values().find(|f| f.placements.iter().any(|(n, _)| *n == name))
            {
                return Err(DaemonError::precondition(format!(
                    "name: {name} holds part of fault {}; revert it first",
                    f.id
                )));
            }
        }
        self.forget(&name, "forgotten on request".into());
        Ok(())
    }
}

fn check_labels(labels: &std::collections::HashMap<String, String>) -> Result<(), DaemonError> {
    if labels.len() > MAX_LABELS {
        return Err(DaemonError::invalid(format!(
            "labels: {} labels; at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY || k.contains(['=', ',']) {
            return Err(DaemonError::invalid(format!(
                "labels: key {} must be 1..={MAX_LABEL_KEY} bytes without '=' or ','",
                faultline_proto::quote(k)
            )));
        }
        if v.len() > MAX_LABEL_VALUE || v.contains(',') {
            return Err(DaemonError::invalid(format!(
                "labels.{k}: value {} must be at most {MAX_LABEL_VALUE} bytes without ','",
                faultline_proto::quote(v)
            )));
        }
    }
    Ok(())
}
