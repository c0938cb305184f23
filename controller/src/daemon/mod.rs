//! `faultline controller serve`: knows the agents (registered or listed), fans faults
//! out to them at once, and keeps their short leases alive while it lives.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use faultline_proto::transport::{AGENT_NAME, Security};
use faultline_proto::{
    agent::v1::{self as apb, agent_service_client::AgentServiceClient},
    controller::v1 as pb,
};
use tonic::transport::Channel;

mod config;
mod containers;
mod enroll;
mod error;
mod fanout;
mod grpc;
mod leases;
pub mod observe;
mod ops;
mod pods;
mod registry;
pub mod runs;
pub mod store;
pub mod traffic;
pub mod web;

pub use config::Config;
pub use error::{DaemonError, ErrorKind};

use self::{
    observe::Stats,
    store::{Store, StoredFault},
};
use crate::targeting::partition;

/// How the controller knows an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Listed in the config's `[[agents]]`: polled, never forgotten.
    Inventory,
    /// Registered itself with a session.
    Registered,
}

impl Source {
    /// The name on the wire and in the state database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inventory => "inventory",
            Self::Registered => "registered",
        }
    }
}

pub use faultline_proto::ONE_SHOT_ID;

struct AgentEntry {
    name: String,
    url: String,
    labels: BTreeMap<String, String>,
    source: Source,
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
    /// Load the controller sends itself (the Web API's /api/traffic).
    pub traffic: Arc<traffic::Traffic>,
    /// Issues agents on Kubernetes nodes their certificates (`enroll_kubernetes`).
    enroller: Option<Arc<enroll::Enroller>>,
}

pub const DEFAULT_STATE: &str = "/var/lib/faultline/controller.db";

use faultline_proto::{now_unix_ms as now_ms, unix_ms};

/// A client of the agent at `url`. `bound`: the name a registered agent's certificate
/// binds it to; the agent answering there must then present a certificate naming it
/// (`identity::agent_server_name`), or an agent could register another's URL and have
/// that one apply its faults. Inventory agents (the operator's own list) are checked for
/// the agent role only.
fn client(
    security: &Security,
    url: &str,
    bound: Option<&str>,
) -> Result<AgentServiceClient<Channel>, DaemonError> {
    let server_name =
        bound.map_or_else(|| AGENT_NAME.to_owned(), faultline_proto::identity::agent_server_name);
    let ch = security
        .endpoint("url", url, &server_name)
        .map_err(|e| DaemonError::invalid(e.to_string()))?
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    Ok(AgentServiceClient::new(ch))
}

impl Controller {
    /// Opens the state database and takes up where the last run stopped: agents it
    /// knew (down until they register again) and faults still active, whose leases it
    /// renews again if the agents still hold them.
    pub fn new(config: &Config, store: Store, security: Security) -> Result<Self> {
        let heartbeat = Duration::from_millis(config.heartbeat_ms.unwrap_or(1000));
        anyhow::ensure!(
            (Duration::from_millis(100)..=Duration::from_mins(1)).contains(&heartbeat),
            "heartbeat_ms: 100..=60000"
        );
        let forget_down_after = Duration::from_secs(config.forget_down_after_s.unwrap_or(600));
        anyhow::ensure!(
            forget_down_after <= Duration::from_hours(8760),
            "forget_down_after_s: at most a year"
        );
        let enroller = match &config.enroll_kubernetes {
            None => None,
            Some(_) if !security.is_tls() => {
                anyhow::bail!("enroll_kubernetes: needs TLS (agents enrol over mutual TLS)")
            }
            Some(agents) => Some(Arc::new(
                enroll::Enroller::new(
                    agents,
                    config.kube_api.as_deref(),
                    config.kube_credentials.clone(),
                    config
                        .tls_dir
                        .clone()
                        .unwrap_or_else(|| faultline_proto::transport::DEFAULT_TLS_DIR.into()),
                )
                .map_err(anyhow::Error::msg)?,
            )),
        };
        let mut st = State { next_id: store.max_fault_number()?, ..State::default() };
        for a in &config.agents {
            anyhow::ensure!(
                !st.agents.contains_key(&a.name),
                "agents: {:?} is listed twice",
                a.name
            );
            st.agents.insert(
                a.name.clone(),
                AgentEntry {
                    name: a.name.clone(),
                    url: a.url.clone(),
                    labels: a.labels.clone(),
                    source: Source::Inventory,
                    healthy: false,
                    last_heartbeat: None,
                    describe: None,
                    error: "not yet reached".into(),
                    client: client(&security, &a.url, None)
                        .map_err(|e| anyhow::anyhow!("agents.{}.url: {}", a.name, e.message))?,
                    session: 0,
                },
            );
        }
        for a in store.agents()? {
            if st.agents.contains_key(&a.name) || a.source != Source::Registered.as_str() {
                continue;
            }
            let Ok(c) = client(&security, &a.url, Some(&a.name)) else { continue };
            st.agents.insert(
                a.name.clone(),
                AgentEntry {
                    name: a.name,
                    url: a.url,
                    labels: a.labels,
                    source: Source::Registered,
                    healthy: false,
                    last_heartbeat: Some(
                        UNIX_EPOCH + Duration::from_millis(a.last_seen_ms.max(0) as u64),
                    ),
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
            traffic: Arc::default(),
            enroller,
        })
    }

    /// Records an event and tells the watchers. A database that fails is logged, not
    /// fatal: the faults still end by their leases.
    fn event(
        &self,
        kind: pb::EventKind,
        fault_id: &str,
        agents: &[String],
        message: impl Into<String>,
    ) {
        let e = pb::Event {
            seq: 0,
            unix_ms: now_ms(),
            kind: kind as i32,
            fault_id: fault_id.into(),
            agents: agents.to_vec(),
            message: message.into(),
        };
        let _order = self.event_order.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.store.append_event(e) {
            Ok(e) => {
                let _ = self.events.send(e);
            }
            Err(err) => tracing::error!("{err}"),
        }
    }

    /// Keeps the event history within its retention (age and count), hourly, off the
    /// runtime's thread.
    async fn prune_events_forever(self, retention: Duration, keep: u64) {
        let mut every = tokio::time::interval(Duration::from_hours(1));
        loop {
            every.tick().await;
            let store = self.store.clone();
            let before = now_ms() - retention.as_millis() as i64;
            match tokio::task::spawn_blocking(move || store.prune_events(before, keep)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(pruned = n, "events past their retention forgotten"),
                Ok(Err(e)) => tracing::warn!("pruning events: {e}"),
                Err(e) => tracing::warn!("pruning events: {e}"),
            }
        }
    }

    fn persist(&self, f: &Fault) {
        let stored = StoredFault {
            id: f.id.clone(),
            spec: f.spec.clone(),
            placements: f.placements.clone(),
            cut_from: f.cut_from.clone(),
            applied_ms: unix_ms(f.applied_at),
            expires_ms: now_ms()
                + f.expires.saturating_duration_since(Instant::now()).as_millis() as i64,
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

    /// What /metrics shows, read under the lock.
    fn snapshot(&self) -> observe::Snapshot {
        let st = self.lock();
        let now = SystemTime::now();
        let agents = st
            .agents
            .values()
            .map(|a| {
                let host = a.describe.as_ref().map_or(String::new(), |d| d.hostname.clone());
                let age = a
                    .last_heartbeat
                    .and_then(|t| now.duration_since(t).ok())
                    .map_or(-1.0, |d| d.as_secs_f64());
                (a.name.clone(), host, a.healthy, age)
            })
            .collect();
        let mut active: BTreeMap<String, u64> = BTreeMap::new();
        let mut parts = Vec::new();
        for f in st.faults.values() {
            let kind = f.spec.kind.as_ref().map_or("?", apb::fault_spec::Kind::name).to_owned();
            *active.entry(kind.clone()).or_default() += 1;
            let container = f.spec.container.as_ref().map_or(String::new(), |c| {
                if c.name.is_empty() { c.select.join(",") } else { c.name.clone() }
            });
            let container = match &f.spec.pod {
                Some(p) if container.is_empty() => crate::faults::pod_words(p),
                _ => container,
            };
            parts.extend(
                f.placements.iter().map(|(agent, _)| {
                    (f.id.clone(), kind.clone(), agent.clone(), container.clone())
                }),
            );
        }
        drop(st);
        observe::Snapshot {
            agents,
            active: active.into_iter().collect(),
            parts,
            traffic: self.traffic.status(),
        }
    }

    fn seed(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    }

    fn record(
        &self,
        spec: apb::FaultSpec,
        placed: Placed,
        cut_from: BTreeMap<String, Vec<String>>,
    ) -> pb::ControllerFault {
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
        let (id, agents) =
            (f.id.clone(), f.placements.iter().map(|p| p.0.clone()).collect::<Vec<_>>());
        let expires = f.expires;
        st.faults.insert(f.id.clone(), f);
        drop(st);
        self.expire_at(id.clone(), expires);
        let spec = status.spec.clone().unwrap_or_default();
        let kind = spec.kind.as_ref().map_or("?", apb::fault_spec::Kind::name);
        let label =
            if spec.label.is_empty() { String::new() } else { format!(" [{}]", spec.label) };
        // What was done, where and for how long: the event log alone should tell.
        self.event(
            pb::EventKind::FaultApplied,
            &id,
            &agents,
            format!(
                "{kind} {} on {} for {} s{label}",
                crate::faults::in_words(&spec),
                agents.join(","),
                spec.lease_ms / 1000
            )
            .replace("  ", " "),
        );
        status
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
            cut_from: f
                .cut_from
                .iter()
                .map(|(a, b)| (a.clone(), pb::Group { agents: b.clone() }))
                .collect(),
            cut: if f.cut_from.is_empty() {
                String::new()
            } else {
                partition::describe(
                    &f.cut_from
                        .iter()
                        .map(|(a, b)| (a.clone(), b.iter().cloned().collect()))
                        .collect(),
                )
            },
        }
    }
}

/// Whether `text` names `id` as a whole word (f-1 is not in f-12).
fn mentions(text: &str, id: &str) -> bool {
    let word =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    text.match_indices(id).any(|(i, _)| {
        !word(text[..i].chars().next_back()) && !word(text[i + id.len()..].chars().next())
    })
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
    let restored: Vec<(String, Instant)> =
        ctl.lock().faults.values().map(|f| (f.id.clone(), f.expires)).collect();
    for (id, at) in restored {
        ctl.expire_at(id, at);
    }
    ctl.event(
        pb::EventKind::ControllerStarted,
        "",
        &[],
        format!(
            "listening on {listen}; state {}: {agents} agents, {faults} active faults",
            path.display()
        ),
    );
    let on_stop = ctl.clone();
    tokio::spawn(ctl.clone().tick_forever());
    let retention = Duration::from_hours(24 * config.event_retention_days.unwrap_or(30));
    anyhow::ensure!(
        (1..=3650).contains(&config.event_retention_days.unwrap_or(30)),
        "event_retention_days: 1 to 3650"
    );
    let keep = config.event_retention_count.unwrap_or(1_000_000);
    anyhow::ensure!(keep >= 1, "event_retention_count: at least 1");
    tokio::spawn(ctl.clone().prune_events_forever(retention, keep));
    let (health_service, reflection) = faultline_proto::service::health_and_reflection::<
        pb::controller_service_server::ControllerServiceServer<Controller>,
    >()
    .await
    .context("building reflection service")?;
    if let Some(addr) = config.metrics_listen {
        let listener = faultline_proto::listener::bind_metrics(addr)
            .await
            .with_context(|| format!("binding metrics_listen {addr}"))?;
        let c = ctl.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(async move || {
                let text = observe::prometheus(&c.snapshot(), &c.stats);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }),
        );
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    if let Some(addr) = config.web_listen {
        let tokens = match &config.web_token_file {
            Some(p) => web::auth::Tokens::load(p)?,
            None => web::auth::Tokens::default(),
        }
        .with_anonymous(config.web_anonymous.as_deref())
        .map_err(anyhow::Error::msg)?;
        if let Some(r) = tokens.anonymous() {
            tracing::warn!(
                role = r.name(),
                "Web API: requests without credentials act as {}s (web_anonymous): whoever reaches {addr} may",
                r.name()
            );
        }
        let tls = if ctl.security.is_tls() && !config.web_plaintext {
            Some(web::tls_config(
                config
                    .tls_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new(faultline_proto::transport::DEFAULT_TLS_DIR)),
            )?)
        } else {
            None
        };
        // Runs started through the Web API go through this controller's gRPC service as
        // the CLI would, with the CLI's certificate from the same directory.
        let cli = faultline_proto::transport::Security::from_flags(!ctl.security.is_tls(), config.tls_dir.as_deref(), faultline_proto::transport::Role::Cli)
            .map_err(|e| format!("they run as the CLI does, with its certificate (cli.pem) in the controller's TLS directory: {e}"));
        let runs_dir = path.parent().map_or_else(|| PathBuf::from("runs"), |p| p.join("runs"));
        let runs = std::sync::Arc::new(runs::Runs::new(runs_dir, listen, cli));
        let own = [Some(listen), Some(addr), config.metrics_listen].into_iter().flatten().collect();
        web::start(
            web::Web::new(ctl.clone(), tokens, runs, config.web_hosts.clone(), own),
            addr,
            tls,
            config.web_plaintext,
        )
        .await?;
    }
    let incoming = ctl
        .security
        .incoming(listen, faultline_proto::listener::Limits::controller().within(40))
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, tls = ctl.security.is_tls(), "controller ready");
    let server = server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(pb::controller_service_server::ControllerServiceServer::new(ctl));
    // A clean stop leaves no fault behind; a killed controller leaves them to the leases.
    faultline_proto::service::serve_until_stopped(
        |stopping| server.serve_with_incoming_shutdown(incoming, stopping),
        async {
            let ids: Vec<String> = on_stop.lock().faults.keys().cloned().collect();
            for id in &ids {
                let _ = on_stop.revert(id, pb::EventKind::FaultReverted).await;
            }
            on_stop.event(
                pb::EventKind::ControllerStopped,
                "",
                &[],
                format!("stopped cleanly; reverted {} faults", ids.len()),
            );
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
