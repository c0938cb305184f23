//! `faultline controller serve`: knows the agents (registered or listed), fans faults
//! out to them at once, and keeps their short leases alive while it lives.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use faultline_proto::{
    agent::v1::{self as apb, agent_service_client::AgentServiceClient},
    controller::v1::{self as pb, controller_service_server::ControllerService},
};
use faultline_proto::{
    identity::{self, policy},
    transport::{AGENT_NAME, Security},
};
use tonic::{Request, Response, Status, transport::Channel};

use tracing::Instrument;

pub mod observe;
pub mod store;

use self::{
    observe::Stats,
    store::{Store, StoredAgent, StoredFault},
};
use crate::targeting::{self, partition};

/// The controller's config file (TOML).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Option<SocketAddr>,
    /// How often the controller heartbeats agents and renews leases.
    pub heartbeat_ms: Option<u64>,
    /// The SQLite file holding agents, faults and events across restarts.
    pub state: Option<PathBuf>,
    /// ca.pem, controller.pem, controller-key.pem (default /etc/faultline/tls).
    pub tls_dir: Option<PathBuf>,
    /// Serve Prometheus text at http://ADDR/metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// Export tracing spans over OTLP/gRPC to this collector, e.g. http://collector:4317.
    pub otlp_endpoint: Option<String>,
    /// Agents the controller reaches without their registering.
    #[serde(default)]
    pub agents: Vec<StaticAgent>,
    /// A registered agent down this long (session closed, not back) and holding no fault
    /// is forgotten, so a stale registration cannot block selections for good
    /// (default 600).
    pub forget_down_after_s: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticAgent {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: not a valid controller config", path.display()))
    }
}

struct AgentEntry {
    name: String,
    url: String,
    labels: BTreeMap<String, String>,
    source: &'static str,
    healthy: bool,
    last_heartbeat: Option<SystemTime>,
    describe: Option<apb::DescribeResponse>,
    error: String,
    client: AgentServiceClient<Channel>,
    /// Bumped on every registration, so an old session's end does not mark a new one down.
    session: u64,
}

struct Fault {
    id: String,
    spec: apb::FaultSpec,
    /// (agent, its fault id)
    placements: Vec<(String, String)>,
    /// Partitions: agent -> the agents it was cut from.
    cut_from: BTreeMap<String, Vec<String>>,
    applied_at: SystemTime,
    expires: Instant,
    /// Agent -> when its part was in place, on that agent's clock. Not stored: only
    /// the caller of the apply uses it (a run's per-agent timeline).
    agent_applied_ms: BTreeMap<String, i64>,
}

/// What a fan-out placed: (agent, its fault id), and when each part was in place on
/// that agent's clock.
struct Placed {
    ids: Vec<(String, String)>,
    applied_ms: BTreeMap<String, i64>,
}

#[derive(Default)]
struct State {
    agents: BTreeMap<String, AgentEntry>,
    faults: BTreeMap<String, Fault>,
    next_id: u64,
}

#[derive(Clone)]
pub struct Controller {
    state: Arc<Mutex<State>>,
    heartbeat: Duration,
    forget_down_after: Duration,
    store: Arc<Store>,
    events: tokio::sync::broadcast::Sender<pb::Event>,
    /// Held while an event gets its seq and is sent, so watchers see seqs in order.
    event_order: Arc<Mutex<()>>,
    security: Security,
    stats: Arc<Stats>,
}

pub const DEFAULT_STATE: &str = "/var/lib/faultline/controller.db";

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

fn client(security: &Security, url: &str) -> Result<AgentServiceClient<Channel>, Status> {
    let ch = security.endpoint("url", url, AGENT_NAME).map_err(|e| Status::invalid_argument(e.to_string()))?.timeout(Duration::from_secs(10)).connect_lazy();
    Ok(AgentServiceClient::new(ch))
}

impl Controller {
    /// Opens the state database and takes up where the last run stopped: agents it
    /// knew (down until they register again) and faults still active, whose leases it
    /// renews again if the agents still hold them.
    pub fn new(config: &Config, store: Store, security: Security) -> Result<Self> {
        let heartbeat = Duration::from_millis(config.heartbeat_ms.unwrap_or(1000));
        anyhow::ensure!((Duration::from_millis(100)..=Duration::from_secs(60)).contains(&heartbeat), "heartbeat_ms: 100..=60000");
        let forget_down_after = Duration::from_secs(config.forget_down_after_s.unwrap_or(600));
        anyhow::ensure!(forget_down_after <= Duration::from_secs(365 * 24 * 3600), "forget_down_after_s: at most a year");
        let mut st = State { next_id: store.max_fault_number()?, ..State::default() };
        for a in &config.agents {
            anyhow::ensure!(!st.agents.contains_key(&a.name), "agents: {:?} is listed twice", a.name);
            st.agents.insert(
                a.name.clone(),
                AgentEntry {
                    name: a.name.clone(),
                    url: a.url.clone(),
                    labels: a.labels.clone(),
                    source: "inventory",
                    healthy: false,
                    last_heartbeat: None,
                    describe: None,
                    error: "not yet reached".into(),
                    client: client(&security, &a.url).map_err(|e| anyhow::anyhow!("agents.{}.url: {}", a.name, e.message()))?,
                    session: 0,
                },
            );
        }
        for a in store.agents()? {
            if st.agents.contains_key(&a.name) || a.source != "registered" {
                continue;
            }
            let Ok(c) = client(&security, &a.url) else { continue };
            st.agents.insert(
                a.name.clone(),
                AgentEntry {
                    name: a.name,
                    url: a.url,
                    labels: a.labels,
                    source: "registered",
                    healthy: false,
                    last_heartbeat: Some(UNIX_EPOCH + Duration::from_millis(a.last_seen_ms.max(0) as u64)),
                    describe: None,
                    error: "not registered since the controller started".into(),
                    client: c,
                    session: 0,
                },
            );
        }
        let now = now_ms();
        for f in store.active_faults()? {
            let left = Duration::from_millis((f.expires_ms - now).max(0) as u64);
            st.faults.insert(
                f.id.clone(),
                Fault {
                    id: f.id,
                    spec: f.spec,
                    placements: f.placements,
                    cut_from: f.cut_from,
                    applied_at: UNIX_EPOCH + Duration::from_millis(f.applied_ms.max(0) as u64),
                    expires: Instant::now() + left,
                    agent_applied_ms: BTreeMap::new(),
                },
            );
        }
        Ok(Self {
            state: Arc::new(Mutex::new(st)),
            heartbeat,
            forget_down_after,
            store: Arc::new(store),
            events: tokio::sync::broadcast::channel(1024).0,
            event_order: Arc::new(Mutex::new(())),
            security,
            stats: Arc::default(),
        })
    }

    /// Records an event and tells the watchers. A database that fails is logged, not
    /// fatal: the faults still end by their leases.
    fn event(&self, kind: pb::EventKind, fault_id: &str, agents: &[String], message: impl Into<String>) {
        let e = pb::Event { seq: 0, unix_ms: now_ms(), kind: kind as i32, fault_id: fault_id.into(), agents: agents.to_vec(), message: message.into() };
        let _order = self.event_order.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.store.append_event(e) {
            Ok(e) => {
                let _ = self.events.send(e);
            }
            Err(err) => tracing::error!("{err}"),
        }
    }

    fn persist(&self, f: &Fault) {
        let stored = StoredFault {
            id: f.id.clone(),
            spec: f.spec.clone(),
            placements: f.placements.clone(),
            cut_from: f.cut_from.clone(),
            applied_ms: unix_ms(f.applied_at),
            expires_ms: now_ms() + f.expires.saturating_duration_since(Instant::now()).as_millis() as i64,
        };
        if let Err(e) = self.store.put_fault(&stored) {
            tracing::error!("{e}");
        }
    }

    fn end(&self, id: &str, reason: &str) {
        if let Err(e) = self.store.end_fault(id, now_ms(), reason) {
            tracing::error!("{e}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lease agents hold: two heartbeats, so one lost renewal does not end a fault.
    fn agent_lease(&self) -> Duration {
        self.heartbeat * 2
    }

    /// Every heartbeat: renew the leases of live faults, revert expired ones, and
    /// check inventory agents (registered ones heartbeat through their session).
    pub async fn tick_forever(self) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.tick().await;
        }
    }

    async fn tick(&self) {
        let now = Instant::now();
        let (expired, live): (Vec<_>, Vec<_>) = {
            let st = self.lock();
            st.faults.values().map(|f| (f.id.clone(), f.placements.clone(), f.expires <= now)).partition(|(_, _, e)| *e)
        };
        for (id, _, _) in expired {
            let _ = self.revert(&id, pb::EventKind::FaultExpired).await;
        }
        let mut renewals = Vec::new();
        for (id, placements, _) in live {
            // Never past the fault's own end: the agents then end it on time by themselves.
            let left = self.lock().faults.get(&id).map_or(Duration::ZERO, |f| f.expires.saturating_duration_since(Instant::now()));
            let lease = (self.agent_lease().min(left).as_millis() as u64).max(1);
            for (agent, fid) in placements {
                if let Some(mut c) = self.lock().agents.get(&agent).map(|a| a.client.clone()) {
                    let id = id.clone();
                    renewals.push(async move {
                        let r = c.renew_leases(apb::RenewLeasesRequest { ids: vec![fid.clone()], lease_ms: lease }).await;
                        (id, agent, fid, r)
                    });
                }
            }
        }
        for (id, agent, fid, r) in futures_util::future::join_all(renewals).await {
            let counter = if r.is_ok() { &self.stats.renewals_ok } else { &self.stats.renewals_failed };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match r {
                Ok(_) => {}
                // The agent no longer holds it (restarted, or its lease ran out while it
                // was cut off): the fault is gone there, so stop claiming it.
                Err(e) if e.code() == tonic::Code::NotFound => {
                    tracing::warn!(id, agent, "the agent no longer holds its part of the fault");
                    let left = {
                        let mut st = self.lock();
                        let Some(f) = st.faults.get_mut(&id) else { continue };
                        f.placements.retain(|(a, x)| !(*a == agent && *x == fid));
                        self.persist(f);
                        let left = f.placements.len();
                        if left == 0 {
                            st.faults.remove(&id);
                        }
                        left
                    };
                    self.event(pb::EventKind::FaultLost, &id, &[agent.clone()], format!("{agent} no longer holds its part ({left} agents still do)"));
                    if left == 0 {
                        self.end(&id, "lost");
                        self.stats.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Err(e) => tracing::warn!(agent, "renewing lease: {}", e.message()),
            }
        }
        self.forget_stale();
        let inventory: Vec<(String, AgentServiceClient<Channel>)> =
            self.lock().agents.values().filter(|a| a.source == "inventory").map(|a| (a.name.clone(), a.client.clone())).collect();
        for (name, mut c) in inventory {
            let r = c.describe(apb::DescribeRequest {}).await;
            let change = {
                let mut st = self.lock();
                let Some(a) = st.agents.get_mut(&name) else { continue };
                let was = a.healthy;
                match r {
                    Ok(d) => {
                        a.healthy = true;
                        a.error.clear();
                        a.last_heartbeat = Some(SystemTime::now());
                        a.describe = Some(d.into_inner());
                    }
                    Err(e) => {
                        a.healthy = false;
                        a.error = e.message().to_owned();
                    }
                }
                (was != a.healthy || a.last_heartbeat.is_none()).then(|| (a.healthy, a.url.clone(), a.error.clone()))
            };
            match change {
                Some((true, url, _)) => self.event(pb::EventKind::AgentUp, "", &[name], format!("answers at {url}")),
                Some((false, _, error)) => self.event(pb::EventKind::AgentDown, "", &[name], error),
                None => {}
            }
        }
    }

    /// Forgets registered agents down longer than `forget_down_after` that hold no fault.
    fn forget_stale(&self) {
        let now = SystemTime::now();
        let stale: Vec<String> = {
            let st = self.lock();
            st.agents
                .values()
                .filter(|a| a.source == "registered" && !a.healthy)
                .filter(|a| a.last_heartbeat.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= self.forget_down_after))
                .filter(|a| !st.faults.values().any(|f| f.placements.iter().any(|(n, _)| *n == a.name)))
                .map(|a| a.name.clone())
                .collect()
        };
        for name in stale {
            self.forget(&name, format!("down for more than {} s", self.forget_down_after.as_secs()));
        }
    }

    /// Removes an agent from the registry and the store; an open session ends with it.
    fn forget(&self, name: &str, why: String) {
        self.lock().agents.remove(name);
        if let Err(e) = self.store.delete_agent(name) {
            tracing::error!("{e}");
        }
        tracing::info!(agent = name, why, "forgotten");
        self.event(pb::EventKind::AgentForgotten, "", &[name.to_owned()], why);
    }

    /// The agents a target names, or NotFound listing what exists.
    fn select(&self, t: &pb::Target) -> Result<Vec<String>, Status> {
        let st = self.lock();
        for n in &t.agents {
            if !st.agents.contains_key(n) {
                return Err(Status::not_found(format!("target.agents: no agent {n:?} (known: {:?})", st.agents.keys().collect::<Vec<_>>())));
            }
        }
        let selector = targeting::parse_selector(&t.selector).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut picked: Vec<String> = st
            .agents
            .values()
            .filter(|a| t.agents.is_empty() || t.agents.contains(&a.name))
            .filter(|a| targeting::selector_matches(&selector, |k| a.labels.get(k)))
            .map(|a| a.name.clone())
            .collect();
        if picked.is_empty() {
            let labels: Vec<String> = st.agents.values().map(|a| format!("{} {:?}", a.name, a.labels)).collect();
            return Err(Status::not_found(format!("target: no agent matches selector {:?} (agents: {})", t.selector, labels.join("; "))));
        }
        let n = picked.len();
        let keep = match pb::Mode::try_from(t.mode) {
            Ok(pb::Mode::All) => n,
            Ok(pb::Mode::One) => 1,
            Ok(pb::Mode::Fixed) if t.count == 0 || t.count as usize > n => {
                return Err(Status::invalid_argument(format!("target.count: {} is not in 1..={n} (agents selected)", t.count)));
            }
            Ok(pb::Mode::Fixed) => t.count as usize,
            Ok(pb::Mode::Percent) if !(t.percent > 0.0 && t.percent <= 100.0) => {
                return Err(Status::invalid_argument(format!("target.percent: {} is not in (0, 100]", t.percent)));
            }
            Ok(pb::Mode::Percent) => ((n as f64 * t.percent / 100.0).ceil() as usize).clamp(1, n),
            Err(_) => return Err(Status::invalid_argument(format!("target.mode: unknown value {}", t.mode))),
        };
        partition::shuffle(&mut picked, self.seed());
        picked.truncate(keep);
        picked.sort();
        Ok(picked)
    }

    /// Ends a fault everywhere; `why` is FaultReverted (asked) or FaultExpired. Returns
    /// each agent's result.
    async fn revert(&self, id: &str, why: pb::EventKind) -> Result<Vec<pb::AgentResult>, Status> {
        let Some(f) = self.lock().faults.remove(id) else {
            let known: Vec<String> = self.lock().faults.keys().cloned().collect();
            return Err(Status::not_found(format!("id: no active fault {id:?} (active: {known:?})")));
        };
        let reason = if why == pb::EventKind::FaultExpired { "expired" } else { "reverted" };
        let span = tracing::info_span!("revert_fault", fault_id = id, reason, agents = f.placements.len());
        let results = self.revert_placements(&f.placements).instrument(span).await;
        let failures: Vec<&pb::AgentResult> = results.iter().filter(|r| !r.ok).collect();
        let counter = if why == pb::EventKind::FaultExpired { &self.stats.expired } else { &self.stats.reverted };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.end(id, reason);
        let agents: Vec<String> = f.placements.iter().map(|p| p.0.clone()).collect();
        let detail = if failures.is_empty() { String::new() } else { format!("; not reached: {}", failures.iter().map(|f| format!("{}: {}", f.agent, f.error)).collect::<Vec<_>>().join("; ")) };
        self.event(why, id, &agents, format!("{reason} on {} agents{detail}", agents.len()));
        tracing::info!(id, reason, "ended");
        Ok(results)
    }

    /// Reverts each agent's part; an agent not reached is a result with ok false.
    async fn revert_placements(&self, placements: &[(String, String)]) -> Vec<pb::AgentResult> {
        let calls = placements.iter().filter_map(|(agent, fid)| {
            let mut c = self.lock().agents.get(agent)?.client.clone();
            let (agent, fid) = (agent.clone(), fid.clone());
            let span = tracing::info_span!("agent.revert_fault", agent = %agent, agent_fault_id = %fid);
            Some(
                async move {
                    let r = c.revert_fault(apb::RevertFaultRequest { id: fid.clone(), all: false }).await;
                    (agent, fid, r)
                }
                .instrument(span),
            )
        });
        let mut results = Vec::new();
        for (agent, fid, r) in futures_util::future::join_all(calls).await {
            let mut result = pb::AgentResult { agent, ok: true, agent_fault_id: fid, ..Default::default() };
            match r {
                Ok(r) => result.reverted_at_unix_ms = r.into_inner().reverted_at_unix_ms,
                // The agent's lease already ended it (when, it does not say).
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    result.ok = false;
                    result.error = format!("{:?}: {} (its lease will end the fault)", e.code(), e.message());
                }
            }
            results.push(result);
        }
        results
    }

    /// Checks readiness, then applies the plan on every agent (all or nothing).
    async fn apply_planned(&self, names: &[String], spec: &apb::FaultSpec, plan: Vec<(String, apb::FaultSpec)>) -> Result<Placed, Status> {
        self.check_ready(names, spec)?;
        self.fan_out(plan).await
    }

    /// Passes a fan-out's result through: counts it, times it, and records a refusal
    /// as an event.
    fn refusing<T>(&self, names: &[String], started: Instant, r: Result<T, Status>) -> Result<T, Status> {
        use std::sync::atomic::Ordering::Relaxed;
        match &r {
            Ok(_) => {
                self.stats.observe_apply(started.elapsed());
                self.stats.applied.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.stats.refused.fetch_add(1, Relaxed);
                tracing::warn!(code = ?e.code(), "refused: {}", e.message());
                self.event(pb::EventKind::FaultRefused, "", names, format!("{:?}: {}", e.code(), e.message()));
            }
        }
        r
    }

    /// What /metrics shows, read under the lock.
    fn snapshot(&self) -> observe::Snapshot {
        let st = self.lock();
        let now = SystemTime::now();
        let agents = st
            .agents
            .values()
            .map(|a| {
                let host = a.describe.as_ref().map_or(String::new(), |d| d.hostname.clone());
                let age = a.last_heartbeat.and_then(|t| now.duration_since(t).ok()).map_or(-1.0, |d| d.as_secs_f64());
                (a.name.clone(), host, a.healthy, age)
            })
            .collect();
        let mut active: BTreeMap<String, u64> = BTreeMap::new();
        for f in st.faults.values() {
            *active.entry(f.spec.kind.as_ref().map_or("?", apb::fault_spec::Kind::name).to_owned()).or_default() += 1;
        }
        observe::Snapshot { agents, active: active.into_iter().collect() }
    }

    fn seed(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    }

    /// Refuses up front when a selected agent is down or lacks what the fault needs.
    fn check_ready(&self, names: &[String], spec: &apb::FaultSpec) -> Result<(), Status> {
        let st = self.lock();
        for n in names {
            let a = &st.agents[n];
            if !a.healthy {
                return Err(Status::unavailable(format!("agent {n} is down ({}); nothing was applied", a.error)));
            }
            let caps = a.describe.as_ref().and_then(|d| d.capabilities.clone()).unwrap_or_default();
            let host = a.describe.as_ref().map_or("?", |d| d.hostname.as_str());
            if let Some(m) = faultline_proto::doctor::missing(spec, &caps.probes) {
                return Err(Status::failed_precondition(format!("agent {n} (host {host}) lacks {m}; nothing was applied")));
            }
        }
        Ok(())
    }

    /// Ends fault `id` at `at` (not at the next heartbeat tick), unless it is gone or was
    /// given another end by then.
    fn expire_at(&self, id: String, at: Instant) {
        let ctl = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let due = ctl.lock().faults.get(&id).is_some_and(|f| f.expires <= Instant::now());
            if due {
                let _ = ctl.revert(&id, pb::EventKind::FaultExpired).await;
            }
        });
    }

    fn record(&self, spec: apb::FaultSpec, placed: Placed, cut_from: BTreeMap<String, Vec<String>>) -> pb::ControllerFault {
        let mut st = self.lock();
        st.next_id += 1;
        let f = Fault {
            id: format!("c-{}", st.next_id),
            expires: Instant::now() + Duration::from_millis(spec.lease_ms),
            spec,
            placements: placed.ids,
            cut_from,
            applied_at: SystemTime::now(),
            agent_applied_ms: placed.applied_ms,
        };
        tracing::info!(id = f.id, agents = ?f.placements.iter().map(|p| &p.0).collect::<Vec<_>>(), "applied");
        let status = self.status(&f);
        self.persist(&f);
        let (id, agents) = (f.id.clone(), f.placements.iter().map(|p| p.0.clone()).collect::<Vec<_>>());
        let expires = f.expires;
        st.faults.insert(f.id.clone(), f);
        drop(st);
        self.expire_at(id.clone(), expires);
        let kind = status.spec.as_ref().and_then(|s| s.kind.as_ref()).map_or("?", apb::fault_spec::Kind::name);
        self.event(pb::EventKind::FaultApplied, &id, &agents, format!("{kind} on {}", agents.join(",")));
        status
    }

    /// Phase one of a fan-out to several agents: each checks the fault (targets resolved,
    /// preconditions met) without acting. One refusal refuses it everywhere, before any
    /// agent did anything, so a kill never happens on some hosts only and a freeze never
    /// stops a process for a moment on agents that would then be rolled back.
    async fn check_all(&self, plan: &[(String, apb::FaultSpec)]) -> Result<(), Status> {
        let mut calls = Vec::new();
        for (n, s) in plan {
            let Some(mut c) = self.lock().agents.get(n).map(|a| a.client.clone()) else { continue };
            let (n, s) = (n.clone(), s.clone());
            calls.push(async move { (n, c.apply_fault(apb::ApplyFaultRequest { spec: Some(s), dry_run: true }).await) });
        }
        let results = futures_util::future::join_all(calls).await;
        let refused: Vec<String> = results
            .iter()
            .filter_map(|(n, r)| {
                let e = r.as_ref().err()?;
                // An agent names the fault in the way by its own id; say which of ours it is.
                let ours = self.owner_of(n, e.message()).map_or(String::new(), |id| format!(" (that is controller fault {id})"));
                Some(format!("{n}: {:?}: {}{ours}", e.code(), e.message()))
            })
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let code = results.iter().find_map(|(_, r)| r.as_ref().err().map(tonic::Status::code)).unwrap_or(tonic::Code::FailedPrecondition);
        Err(Status::new(code, format!("refused by {} of {} agents, so nothing was done on any: {}", refused.len(), results.len(), refused.join("; "))))
    }

    /// Applies one spec per agent, concurrently. All or nothing: every agent checks first
    /// (`check_all`); if one still refuses when applying, the others are reverted (a
    /// one-shot is reported where it acted) and the error lists every agent's result.
    async fn fan_out(&self, plan: Vec<(String, apb::FaultSpec)>) -> Result<Placed, Status> {
        if plan.len() > 1 {
            self.check_all(&plan).await?;
        }
        let one_shot = plan.first().is_some_and(|(_, s)| matches!(s.kind, Some(apb::fault_spec::Kind::Kill(_) | apb::fault_spec::Kind::Restart(_))));
        let mut calls = Vec::new();
        for (n, s) in plan {
            let Some(mut c) = self.lock().agents.get(&n).map(|a| a.client.clone()) else { continue };
            let span = tracing::info_span!("agent.apply_fault", agent = %n, ok = tracing::field::Empty);
            calls.push(
                async move {
                    let r = c.apply_fault(apb::ApplyFaultRequest { spec: Some(s), dry_run: false }).await;
                    tracing::Span::current().record("ok", r.is_ok());
                    if let Err(e) = &r {
                        tracing::warn!(code = ?e.code(), "{}", e.message());
                    }
                    (n, r)
                }
                .instrument(span),
            );
        }
        let results = futures_util::future::join_all(calls).await;
        let mut applied_ms = BTreeMap::new();
        let mut placements: Vec<(String, String)> = Vec::new();
        for (n, r) in &results {
            if let Ok(r) = r {
                let f = r.get_ref().fault.as_ref();
                placements.push((n.clone(), f.map(|f| f.id.clone()).unwrap_or_default()));
                applied_ms.insert(n.clone(), f.map_or(0, |f| f.applied_at_unix_ms));
            }
        }
        if placements.len() < results.len() && one_shot {
            // A kill or restart that acted cannot be undone: say exactly where it acted.
            let acted: Vec<String> = placements.iter().map(|(n, _)| n.clone()).collect();
            if !acted.is_empty() {
                self.event(pb::EventKind::FaultOneShot, "", &acted, format!("acted on {} (the other agents refused after checking; nothing can be undone)", acted.join(",")));
            }
            let detail: Vec<String> = results.iter().map(|(n, r)| match r {
                Ok(_) => format!("{n}: done"),
                Err(e) => format!("{n}: {:?}: {}", e.code(), e.message()),
            }).collect();
            return Err(Status::aborted(format!("done on {} of {} agents (a one-shot fault is not rolled back): {}", acted.len(), results.len(), detail.join("; "))));
        }
        if placements.len() < results.len() {
            // A fault that holds on some agents only is not the one asked for.
            let undo_failures: Vec<pb::AgentResult> = self.revert_placements(&placements).await.into_iter().filter(|r| !r.ok).collect();
            let detail: Vec<String> = results
                .iter()
                .map(|(n, r)| match r {
                    Ok(_) => format!("{n}: applied, then reverted"),
                    Err(e) => {
                        // An agent names the fault in the way by its own id; say which of ours it is.
                        let ours = self.owner_of(n, e.message()).map_or(String::new(), |id| format!(" (that is controller fault {id})"));
                        format!("{n}: {:?}: {}{ours}", e.code(), e.message())
                    }
                })
                .chain(undo_failures.iter().map(|f| format!("{}: revert failed: {}", f.agent, f.error)))
                .collect();
            return Err(Status::aborted(format!("applied on {} of {} agents, so reverted everywhere: {}", placements.len(), results.len(), detail.join("; "))));
        }
        Ok(Placed { ids: placements, applied_ms })
    }

    /// The controller fault whose part on `agent` is named in `message`.
    fn owner_of(&self, agent: &str, message: &str) -> Option<String> {
        let st = self.lock();
        st.faults.values().find(|f| f.placements.iter().any(|(a, fid)| a == agent && mentions(message, fid))).map(|f| f.id.clone())
    }

    fn status(&self, f: &Fault) -> pb::ControllerFault {
        let left = f.expires.saturating_duration_since(Instant::now());
        pb::ControllerFault {
            id: f.id.clone(),
            spec: Some(f.spec.clone()),
            placements: f
                .placements
                .iter()
                .map(|(a, fid)| pb::AgentResult {
                    agent: a.clone(),
                    ok: true,
                    agent_fault_id: fid.clone(),
                    applied_at_unix_ms: f.agent_applied_ms.get(a).copied().unwrap_or(0),
                    ..Default::default()
                })
                .collect(),
            applied_at_unix_ms: unix_ms(f.applied_at),
            expires_at_unix_ms: unix_ms(SystemTime::now() + left),
            cut_from: f.cut_from.iter().map(|(a, b)| (a.clone(), pb::Group { agents: b.clone() })).collect(),
            cut: if f.cut_from.is_empty() { String::new() } else { partition::describe(&f.cut_from.iter().map(|(a, b)| (a.clone(), b.iter().cloned().collect())).collect()) },
        }
    }
}

/// Whether `text` names `id` as a whole word (f-1 is not in f-12).
fn mentions(text: &str, id: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    text.match_indices(id).any(|(i, _)| !word(text[..i].chars().next_back()) && !word(text[i + id.len()..].chars().next()))
}

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
            self.ctl.event(pb::EventKind::AgentDown, "", &[self.name.clone()], "session closed");
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
            if st.agents.get(&r.name).is_some_and(|a| a.source == "inventory") {
                return Err(Status::already_exists(format!("name: {:?} is a static inventory agent", r.name)));
            }
            let session = st.agents.get(&r.name).map_or(1, |a| a.session + 1);
            st.agents.insert(
                r.name.clone(),
                AgentEntry {
                    name: r.name.clone(),
                    url: r.url.clone(),
                    labels: r.labels.into_iter().collect(),
                    source: "registered",
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
        let stored = StoredAgent { name: r.name.clone(), url: r.url.clone(), labels, source: "registered".into(), last_seen_ms: now_ms() };
        if let Err(e) = self.store.put_agent(&stored) {
            tracing::error!("{e}");
        }
        self.event(pb::EventKind::AgentRegistered, "", &[r.name.clone()], format!("at {}", r.url));
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
                    source: a.source.into(),
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
        if let Some(sel) = spec.target.as_ref().and_then(|t| t.selector.as_ref()).filter(|s| matches!(s, Selector::Pid(_) | Selector::Cgroup(_) | Selector::SystemdUnit(_))) {
            if names.len() != 1 {
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
            status.id = "done".into();
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
            if a.source == "inventory" {
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

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn serve(listen: SocketAddr, config: Config, security: Security) -> Result<()> {
    let mut server = security.server(listen)?;
    let path = config.state.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE));
    let ctl = Controller::new(&config, Store::open(&path)?, security)?;
    let (agents, faults) = {
        let st = ctl.lock();
        (st.agents.len(), st.faults.len())
    };
    tracing::info!(state = %path.display(), agents, faults, "state loaded");
    let restored: Vec<(String, Instant)> = ctl.lock().faults.values().map(|f| (f.id.clone(), f.expires)).collect();
    for (id, at) in restored {
        ctl.expire_at(id, at);
    }
    ctl.event(pb::EventKind::ControllerStarted, "", &[], format!("listening on {listen}; state {}: {agents} agents, {faults} active faults", path.display()));
    let on_stop = ctl.clone();
    tokio::spawn(ctl.clone().tick_forever());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<pb::controller_service_server::ControllerServiceServer<Controller>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(faultline_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building reflection service")?;
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics_listen {addr}"))?;
        let c = ctl.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(async move || {
                let text = observe::prometheus(&c.snapshot(), &c.stats);
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
            }),
        );
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let incoming = ctl.security.incoming(listen, faultline_proto::listener::Limits::controller()).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, tls = ctl.security.is_tls(), "controller ready");
    let server = server.add_service(health_service).add_service(reflection).add_service(pb::controller_service_server::ControllerServiceServer::new(ctl));
    // A clean stop leaves no fault behind; a killed controller leaves them to the leases.
    faultline_proto::service::serve_until_stopped(
        |stopping| server.serve_with_incoming_shutdown(incoming, stopping),
        async {
            let ids: Vec<String> = on_stop.lock().faults.keys().cloned().collect();
            for id in &ids {
                let _ = on_stop.revert(id, pb::EventKind::FaultReverted).await;
            }
            on_stop.event(pb::EventKind::ControllerStopped, "", &[], format!("stopped cleanly; reverted {} faults", ids.len()));
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_as_whole_words() {
        assert!(mentions("eth0 is already shaped by fault f-1 (bandwidth)", "f-1"));
        assert!(!mentions("eth0 is already shaped by fault f-12", "f-1"));
        assert!(mentions("f-1", "f-1"));
    }

    #[test]
    fn config_rejects_unknown_keys() {
        assert!(toml::from_str::<Config>("heartbeat_ms = 500\n[[agents]]\nname = \"a\"\nurl = \"http://10.0.0.1:7070\"\nlabels = { role = \"db\" }\n").is_ok());
        assert!(toml::from_str::<Config>("heartbeet_ms = 500\n").is_err());
    }
}
