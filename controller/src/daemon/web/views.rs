//! The Web API's JSON: requests as the API takes them and answers as it gives them,
//! each with its schema for the OpenAPI description. Built from the controller's wire
//! types here and nowhere else.

use std::collections::BTreeMap;

use faultline_proto::{agent::v1 as apb, controller::v1 as pb};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The controller answers.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always "ok": the controller serves.
    pub status: String,
}

/// An agent as the controller knows it.
#[derive(Serialize, ToSchema)]
pub struct AgentView {
    pub name: String,
    /// Where the controller reaches it.
    pub url: String,
    pub labels: BTreeMap<String, String>,
    /// "registered" (it registered itself) or "inventory" (the controller's config).
    pub source: String,
    pub healthy: bool,
    /// 0 when never seen.
    pub last_heartbeat_unix_ms: i64,
    pub hostname: String,
    pub kernel_release: String,
    /// Its interfaces' addresses, CIDR.
    pub addresses: Vec<String>,
    /// Faults it holds part of.
    pub active_faults: u32,
    /// The fault kinds its host can apply (from its probes).
    pub kinds: Vec<String>,
    /// Why it is down, when it is.
    pub error: String,
}

impl From<pb::Agent> for AgentView {
    fn from(a: pb::Agent) -> Self {
        let probes = a.capabilities.map(|c| c.probes).unwrap_or_default();
        Self {
            kinds: faultline_proto::doctor::supported_kinds(&probes)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            name: a.name,
            url: a.url,
            labels: a.labels.into_iter().collect(),
            source: a.source,
            healthy: a.healthy,
            last_heartbeat_unix_ms: a.last_heartbeat_unix_ms,
            hostname: a.hostname,
            kernel_release: a.kernel_release,
            addresses: a.addresses,
            active_faults: a.active_faults,
            error: a.error,
        }
    }
}

/// A running container on an agent's host.
#[derive(Serialize, ToSchema)]
pub struct ContainerView {
    /// The agent that sees it.
    pub agent: String,
    pub id: String,
    pub name: String,
    /// "docker" (also Podman's Docker-compatible socket) or "containerd".
    pub runtime: String,
    /// Its init process on that host.
    pub pid: u32,
    pub labels: BTreeMap<String, String>,
    /// Its own addresses (IPv4 and IPv6).
    pub addresses: Vec<String>,
}

/// The containers, and the agents or runtimes that could not be asked.
#[derive(Serialize, ToSchema)]
pub struct ContainerList {
    pub containers: Vec<ContainerView>,
    pub unreachable: Vec<String>,
}

impl From<pb::ListContainersResponse> for ContainerList {
    fn from(r: pb::ListContainersResponse) -> Self {
        let containers = r
            .containers
            .into_iter()
            .filter_map(|a| {
                let c = a.container?;
                Some(ContainerView {
                    agent: a.agent,
                    id: c.id,
                    name: c.name,
                    runtime: c.runtime,
                    pid: c.pid,
                    labels: c.labels.into_iter().collect(),
                    addresses: c.addresses,
                })
            })
            .collect();
        Self { containers, unreachable: r.unreachable }
    }
}

/// A ready Kubernetes pod on an agent's node.
#[derive(Serialize, ToSchema)]
pub struct PodView {
    /// The agent on its node.
    pub agent: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The CRI runtime that answered, with its socket.
    pub runtime: String,
    /// The pod's own labels.
    pub labels: BTreeMap<String, String>,
    /// Its addresses (IPv4 and IPv6).
    pub addresses: Vec<String>,
    /// Its running containers, by name.
    pub containers: Vec<String>,
}

/// The pods, and the agents or runtimes that could not be asked.
#[derive(Serialize, ToSchema)]
pub struct PodList {
    pub pods: Vec<PodView>,
    pub unreachable: Vec<String>,
}

impl From<pb::ListPodsResponse> for PodList {
    fn from(r: pb::ListPodsResponse) -> Self {
        let pods = r
            .pods
            .into_iter()
            .filter_map(|a| {
                let p = a.pod?;
                Some(PodView {
                    agent: a.agent,
                    namespace: p.namespace,
                    name: p.name,
                    uid: p.uid,
                    runtime: p.runtime,
                    labels: p.labels.into_iter().collect(),
                    addresses: p.addresses,
                    containers: p.containers.into_iter().map(|c| c.name).collect(),
                })
            })
            .collect();
        Self { pods, unreachable: r.unreachable }
    }
}

/// One agent's part of a fault.
#[derive(Serialize, Deserialize, Clone, ToSchema)]
pub struct PartView {
    pub agent: String,
    /// The fault's id on that agent.
    pub agent_fault_id: String,
    /// When the agent had it in place, by the agent's clock (0: not reported).
    pub applied_at_unix_ms: i64,
    /// The container it acts in there, by name ("" when the fault names none or the
    /// answer does not say).
    #[serde(default)]
    pub container: String,
}

/// Where a fault would act, and nothing changed (POST /api/faults/preview).
#[derive(Serialize, Deserialize, Clone, ToSchema)]
pub struct PreviewView {
    pub kind: String,
    /// What it would do, in words (e.g. "loss 20% on eth0 egress").
    pub settings: String,
    /// One per agent it would act on (each agent checked it as before an apply).
    pub parts: Vec<PartView>,
}

/// An active fault (or a one-shot kill or restart, id "done": nothing to revert).
#[derive(Serialize, Deserialize, Clone, ToSchema)]
pub struct FaultView {
    pub id: String,
    /// netem, bandwidth, drop, partition, freeze, kill, restart, cpu-throttle, cpu-stress, memory-pressure.
    pub kind: String,
    /// Its settings in words, in the CLI's units: `loss 20% on eth0 egress`, `256kbit`.
    pub settings: String,
    pub label: String,
    /// The interface it acts on ("" for process faults, and for a container's only one).
    pub interface: String,
    /// The container it acts in, as it was named ("" for none).
    pub container: String,
    pub parts: Vec<PartView>,
    pub applied_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    /// Time left, by the controller's clock.
    pub seconds_left: f64,
    /// Partitions: the cut in words ("h3 | h1 h2").
    pub cut: String,
    /// Partitions: whom each member was cut from.
    pub cut_from: BTreeMap<String, Vec<String>>,
}

impl From<pb::ControllerFault> for FaultView {
    fn from(f: pb::ControllerFault) -> Self {
        let spec = f.spec.unwrap_or_default();
        let now = faultline_proto::unix_ms(std::time::SystemTime::now());
        let container = spec.container.as_ref().map_or(String::new(), |c| {
            if c.select.is_empty() {
                c.name.clone()
            } else {
                [c.name.clone(), c.select.join(",")].join(" ").trim().to_owned()
            }
        });
        let container = match &spec.pod {
            Some(p) if container.is_empty() => crate::faults::pod_words(p),
            _ => container,
        };
        Self {
            id: f.id,
            kind: spec.kind.as_ref().map_or("", apb::fault_spec::Kind::name).to_owned(),
            settings: crate::faults::in_words(&spec),
            label: spec.label,
            interface: spec.interface,
            container,
            parts: f
                .placements
                .into_iter()
                .map(|p| PartView {
                    agent: p.agent,
                    agent_fault_id: p.agent_fault_id,
                    applied_at_unix_ms: p.applied_at_unix_ms,
                    container: p.container,
                })
                .collect(),
            applied_at_unix_ms: f.applied_at_unix_ms,
            expires_at_unix_ms: f.expires_at_unix_ms,
            seconds_left: ((f.expires_at_unix_ms - now).max(0) as f64 / 1000.0),
            cut: f.cut,
            cut_from: f.cut_from.into_iter().map(|(k, g)| (k, g.agents)).collect(),
        }
    }
}

/// What a revert did.
#[derive(Serialize, ToSchema)]
pub struct RevertView {
    pub reverted: Vec<String>,
    /// Agents whose part could not be reverted now (their lease will end it).
    pub failures: Vec<AgentFailure>,
}

#[derive(Serialize, ToSchema)]
pub struct AgentFailure {
    pub agent: String,
    pub error: String,
}

impl From<pb::RevertFaultResponse> for RevertView {
    fn from(r: pb::RevertFaultResponse) -> Self {
        Self {
            reverted: r.reverted,
            failures: r
                .failures
                .into_iter()
                .map(|f| AgentFailure { agent: f.agent, error: f.error })
                .collect(),
        }
    }
}

/// Something that happened, in order.
#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// Increases by one per event, across controller restarts.
    pub seq: u64,
    pub unix_ms: i64,
    /// `controller_started`, `agent_registered`, `fault_applied`, `fault_refused`, `fault_reverted`, ...
    pub kind: String,
    pub fault_id: String,
    pub agents: Vec<String>,
    pub message: String,
}

impl From<pb::Event> for EventView {
    fn from(e: pb::Event) -> Self {
        Self {
            seq: e.seq,
            unix_ms: e.unix_ms,
            kind: pb::EventKind::try_from(e.kind).map_or_else(
                |_| format!("kind_{}", e.kind),
                |k| k.as_str_name().to_ascii_lowercase(),
            ),
            fault_id: e.fault_id,
            agents: e.agents,
            message: e.message,
        }
    }
}

/// A fault kind.
#[derive(Deserialize, Serialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Netem,
    Bandwidth,
    Drop,
    Partition,
    Freeze,
    Kill,
    Restart,
    CpuThrottle,
    CpuStress,
    MemoryPressure,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Netem => "netem",
            Self::Bandwidth => "bandwidth",
            Self::Drop => "drop",
            Self::Partition => "partition",
            Self::Freeze => "freeze",
            Self::Kill => "kill",
            Self::Restart => "restart",
            Self::CpuThrottle => "cpu-throttle",
            Self::CpuStress => "cpu-stress",
            Self::MemoryPressure => "memory-pressure",
        }
    }
}

/// A fault kind and the settings `POST /api/faults` takes for it, read from the CLI's own
/// flags (`faultline fault apply KIND --help`).
#[derive(Serialize, ToSchema)]
pub struct FaultKindView {
    pub kind: String,
    pub about: String,
    pub settings: Vec<SettingView>,
}

/// One setting of a fault kind.
#[derive(Serialize, ToSchema)]
pub struct SettingView {
    /// The key in `settings` (or, for lease, label, select, on, mode, count and percent,
    /// the request's own field of that name).
    pub name: String,
    pub help: String,
    /// "Controller targeting", "Container", "Process target", or "" for the kind's own.
    pub heading: String,
    /// What a value looks like ("RATE"); "" for a switch.
    pub value_name: String,
    pub required: bool,
    /// true/false.
    pub switch: bool,
    /// A list of values.
    pub list: bool,
    /// The only values it takes, when there is such a list.
    pub choices: Vec<String>,
    pub default: String,
    /// A field of the request itself, not of `settings`.
    pub request_field: bool,
}

impl From<crate::faults::KindInfo> for FaultKindView {
    fn from(k: crate::faults::KindInfo) -> Self {
        Self {
            kind: k.kind,
            about: k.about,
            settings: k
                .settings
                .into_iter()
                .map(|s| SettingView {
                    request_field: crate::faults::ENTRY_FIELDS.contains(&s.name.as_str()),
                    name: s.name,
                    help: s.help,
                    heading: s.heading,
                    value_name: s.value_name,
                    required: s.required,
                    switch: s.switch,
                    list: s.list,
                    choices: s.choices,
                    default: s.default,
                })
                .collect(),
        }
    }
}

/// A setting's value: a switch, a number, a word, or a list of words.
#[derive(Deserialize, Serialize, Clone, ToSchema)]
#[serde(untagged)]
pub enum SettingValue {
    Switch(bool),
    Number(f64),
    Word(String),
    Words(Vec<String>),
}

/// How many of the selected agents take part.
#[derive(Deserialize, Serialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    All,
    One,
    Fixed,
    Percent,
}

/// A fault to apply: the kind and its settings as `faultline fault apply KIND --help` and
/// scenario entries name them (`{"kind": "drop", "settings": {"interface": "eth0",
/// "loss": "10%"}, "lease": "60s"}`), checked by the same code.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub kind: Kind,
    /// How long it lasts ("60s", "2m"): required but for kill and restart.
    #[serde(default)]
    pub lease: Option<String>,
    /// The kind's own settings: interface, direction, delay, loss, rate, peer, port, container,
    /// `container_select`, pid, name, ... (lists for repeatable ones).
    #[serde(default)]
    pub settings: BTreeMap<String, SettingValue>,
    /// Agents by label, e.g. "role=db,zone=a".
    #[serde(default)]
    pub select: Option<String>,
    /// Agents by name.
    #[serde(default)]
    pub on: Vec<String>,
    /// Every agent (that `select` matches, if given). A fault must say where it acts:
    /// `on`, `select`, a container setting, or `all: true`; a request naming none of
    /// them is refused (400, field `all`) rather than sent to every agent.
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Mode fixed: how many.
    #[serde(default)]
    pub count: Option<u32>,
    /// Mode percent: which share.
    #[serde(default)]
    pub percent: Option<f64>,
    /// Free text kept with the fault (who asked, why).
    #[serde(default)]
    pub label: Option<String>,
    /// A retry with the same id within 10 minutes answers the first request's fault and
    /// applies nothing again (1 to 128 printable characters).
    #[serde(default)]
    pub client_request_id: Option<String>,
}

/// A probe asked once by the controller (issue 33), as a scenario's `probes:` entry:
/// `{"kind": "http", "settings": {"url": "http://10.0.0.2/", "status": "2xx"}}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeCheck {
    /// http, tcp, redis or prometheus (a command probe runs only from `faultline run` or
    /// `faultline probe` on the user's own machine).
    pub kind: String,
    /// The kind's settings: url, status, match, within, address, info, query, expect,
    /// timeout (at most 10s here), ...
    #[serde(default)]
    pub settings: BTreeMap<String, SettingValue>,
}

/// One answer of a probe.
#[derive(Serialize, ToSchema)]
pub struct ProbeView {
    /// What it asked: `GET http://10.0.0.2/`.
    pub asks: String,
    pub ok: bool,
    pub ms: f64,
    /// What was seen: a status, a value, or why it failed.
    pub detail: String,
}

/// A partition shape.
#[derive(Deserialize, Serialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    Isolate,
    Halves,
    MajoritiesRing,
    Bridge,
    Groups,
}

/// Shape groups: what happens to the members named in no group.
#[derive(Deserialize, Serialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rest {
    Untouched,
    Isolated,
}

/// Agents (or the containers on their hosts) cut into groups that cannot reach each
/// other, as `faultline partition` does.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionRequest {
    pub shape: Shape,
    /// How long it lasts ("30s").
    pub lease: String,
    /// The agents taking part, by label (default: all).
    #[serde(default)]
    pub select: Option<String>,
    /// Shape groups: the groups, by agent (or container) names.
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// Shapes isolate and bridge: the isolated or bridging member (default: a random one).
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub rest: Option<Rest>,
    #[serde(default)]
    pub label: Option<String>,
    /// Containers take part instead of agents: those carrying these labels ("key=value").
    #[serde(default)]
    pub container_select: Vec<String>,
    /// Or these containers, by name, id prefix or compose service.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Kubernetes pods take part instead: those whose own labels meet these requirements
    /// (as kubectl's -l). Groups and node then name pods (NAME, NAMESPACE/NAME, KEY=VALUE).
    #[serde(default)]
    pub pod_select: Vec<String>,
    /// The pods' namespace (default: "default", as kubectl).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Pods in every namespace.
    #[serde(default)]
    pub all_namespaces: bool,
    /// As for faults: a retry with the same id answers the first request's partition.
    #[serde(default)]
    pub client_request_id: Option<String>,
}

/// A load to send to the system under test, as `faultline load` sends it (open loop: the
/// rate holds whatever the answers do). `snake_case` like every field of this API; the
/// camelCase the first platform's callers wrote (`targetUrl`, `durationSeconds`,
/// `timeoutSeconds`) is accepted too.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficStart {
    /// <http://HOST:PORT/PATH> (or https://, tcp://, redis://, grpc://); a name is resolved once, when the load starts.
    #[serde(alias = "targetUrl")]
    pub target_url: String,
    /// Requests per second (the base rate of `shape`).
    pub rps: f64,
    #[serde(alias = "durationSeconds")]
    pub duration_seconds: f64,
    /// Connections: the most requests in flight at once (default 64).
    #[serde(default)]
    pub connections: Option<u32>,
    /// constant (default), poisson, ramp:FROM..TO/DUR, spike:PEAK@AT/LEN, burst:N/EVERY, sine:AMPLITUDE/PERIOD.
    #[serde(default)]
    pub shape: Option<String>,
    /// HTTP method (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// A request without an answer this long is an error (default 5).
    #[serde(default, alias = "timeoutSeconds")]
    pub timeout_seconds: Option<f64>,
}

/// One second of answers, by the second their requests were meant to start.
#[derive(Serialize, ToSchema)]
pub struct TrafficSecond {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    /// Latency from the intended start (coordinated omission corrected), ms.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The whole load, once it ended.
#[derive(Serialize, ToSchema)]
pub struct TrafficSummary {
    pub requests: u64,
    /// Achieved: answers (any status) per second of wall time; not the schedule.
    pub rate: f64,
    /// Requests the target answered (any status).
    pub answered: u64,
    /// Intended starts never sent: every connection was busy until the load's end.
    pub not_started: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests started more than 5 ms after their intended start.
    pub late_starts: u64,
}

/// The running load, or the last one.
#[derive(Serialize, ToSchema)]
pub struct TrafficView {
    pub id: u64,
    pub running: bool,
    pub target_url: String,
    pub rps: f64,
    pub duration_seconds: f64,
    pub started_unix_ms: i64,
    pub elapsed_seconds: f64,
    /// The latest seconds (at most an hour).
    pub seconds: Vec<TrafficSecond>,
    pub summary: Option<TrafficSummary>,
}

impl From<crate::daemon::traffic::Status> for TrafficView {
    fn from(s: crate::daemon::traffic::Status) -> Self {
        Self {
            id: s.id,
            running: s.running,
            target_url: s.start.target_url,
            rps: s.start.rps,
            duration_seconds: s.start.duration.as_secs_f64(),
            started_unix_ms: s.started_unix_ms,
            elapsed_seconds: s.elapsed.as_secs_f64(),
            seconds: s
                .seconds
                .into_iter()
                .map(|f| TrafficSecond {
                    second: f.second,
                    requests: f.requests,
                    errors: f.errors,
                    p50_ms: f.p50_ms,
                    p99_ms: f.p99_ms,
                })
                .collect(),
            summary: s.summary.map(|m| TrafficSummary {
                requests: m.requests,
                rate: m.rate,
                answered: m.answered,
                not_started: m.not_started,
                errors: m.errors,
                error_rate: m.error_rate,
                p50_ms: m.latency_ms.p50,
                p99_ms: m.latency_ms.p99,
                max_ms: m.latency_ms.max,
                late_starts: m.late_starts,
            }),
        }
    }
}

/// A scenario to run, as `faultline run FILE` reads it (YAML, see examples/).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStart {
    /// The scenario's YAML text.
    pub scenario: String,
}

/// A scenario run the controller started (or one whose directory it keeps).
#[derive(Serialize, ToSchema)]
pub struct RunView {
    /// Its directory's name.
    pub id: String,
    /// The scenario's name.
    pub scenario: String,
    /// running, passed, failed (a hypothesis did not hold), aborted (stopped early, every fault reverted), error.
    pub state: String,
    pub message: String,
    pub started_unix_ms: i64,
    /// Files of its directory, each at /api/runs/{id}/files/{name}: report.html, the PNGs, CSVs, summary.json.
    pub files: Vec<String>,
    /// Once it ended: the analysis `faultline analyze RUN --json` prints (phases, findings, anomalies).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub analysis: Option<serde_json::Value>,
}

impl From<crate::daemon::runs::Info> for RunView {
    fn from(i: crate::daemon::runs::Info) -> Self {
        Self {
            id: i.id,
            scenario: i.scenario,
            state: i.state.name().to_owned(),
            message: i.message,
            started_unix_ms: i.started_unix_ms,
            files: i.files,
            analysis: None,
        }
    }
}

/// A link that opens a run's files without other credentials, for a while: follow
/// `url` + a file name (report.html finds its PNGs beside it).
#[derive(Serialize, ToSchema)]
pub struct RunLink {
    /// /runs/{id}/{secret}/ — append report.html, throughput.png, ...
    pub url: String,
    pub expires_unix_ms: i64,
}

/// A fault's new lease.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// From now ("90s", "10m"; at most a week).
    pub lease: String,
}
