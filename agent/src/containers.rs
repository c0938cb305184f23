//! Containers as fault targets, found through their runtime's own API: the Docker Engine
//! API on its unix socket (which Podman's compatible socket also speaks), then containerd's
//! gRPC API in every namespace (`k8s.io` included: a Kubernetes node's pods, selected by
//! their `io.kubernetes.*` labels, with no Kubernetes client). What the engine needs from a
//! container is its init process: the namespace and cgroup follow from it.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use bollard::{Docker, query_parameters::ListContainersOptionsBuilder};
use faultline_proto::agent::v1 as pb;

use crate::{fault::InvalidField, kernel::procfs};

/// Where a Docker-compatible engine listens when not told (Docker, then rootful Podman).
pub const DOCKER_SOCKETS: &[&str] =
    &["/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock"];
/// Where containerd listens when not told: its own, k3s's, and the one dockerd manages.
pub const CONTAINERD_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
];
/// Docker's namespace in containerd: those containers are found through Docker's API,
/// which knows their names and networks.
const DOCKER_NAMESPACE: &str = "moby";
/// An id prefix shorter than this could name a container by accident.
const MIN_ID_PREFIX: usize = 4;
/// One runtime call may take this long; a stuck engine must not hold a fault's apply.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many labels in one selector, and this long each.
const MAX_LABELS: usize = 16;
const MAX_LABEL_LEN: usize = 1024;
/// Listing inspects each container; a host with more than this many is answered in part.
const MAX_LISTED: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("{0}")]
    NotFound(String),
    /// The runtime could not be asked (no socket, refused, timed out, an API error).
    #[error("{0}")]
    Unreachable(String),
    /// Outside what the agent was scoped to (`--scope-label`).
    #[error("{0}")]
    OutOfScope(String),
}

/// A container as the agent acts on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    pub runtime: &'static str,
    pub process: procfs::ProcId,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
}

impl Container {
    #[must_use]
    pub fn to_wire(&self, netns_inode: u64) -> pb::Container {
        pb::Container {
            id: self.id.clone(),
            name: self.name.clone(),
            runtime: self.runtime.into(),
            pid: self.process.pid,
            labels: self.labels.clone().into_iter().collect(),
            netns_inode,
            addresses: self.addresses.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Fills in the addresses a runtime did not give (containerd: its CNI set them up) from
/// the container's own namespace, where a peer sees them. Blocking: each namespace is
/// joined on a short-lived thread.
#[must_use]
pub fn with_addresses(mut list: Vec<Container>) -> Vec<Container> {
    for c in list.iter_mut().filter(|c| c.addresses.is_empty()) {
        c.addresses = crate::kernel::netns::Netns::of_pid(c.process.pid)
            .and_then(|ns| ns.run(crate::kernel::link::addresses_here))
            .unwrap_or_default();
    }
    list
}

/// What a request names: a container by name or id prefix, and labels it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
}

fn invalid(field: &str, reason: impl Into<String>) -> InvalidField {
    InvalidField { field: field.to_owned(), reason: reason.into() }
}

/// Docker's own rule for names (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`). It also keeps the name
/// safe in the API's URL path: no '/', '?', '%' or "..": a name cannot reach another endpoint.
fn valid_name(s: &str) -> bool {
    let s = s.strip_prefix('/').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 255
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Parses "key=value" label selectors (every one must match).
pub fn parse_labels(field: &str, select: &[String]) -> Result<Vec<(String, String)>, InvalidField> {
    if select.len() > MAX_LABELS {
        return Err(invalid(field, format!("at most {MAX_LABELS} labels, got {}", select.len())));
    }
    select
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').ok_or_else(|| invalid(field, format!("{} is not key=value", faultline_proto::quote(l))))?;
            if k.is_empty() || l.len() > MAX_LABEL_LEN || l.contains('\0') {
                return Err(invalid(field, format!("{}: a label is a non-empty key, '=', a value; at most {MAX_LABEL_LEN} bytes", faultline_proto::quote(l))));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

impl TryFrom<&pb::ContainerTarget> for Selector {
    type Error = InvalidField;
    fn try_from(t: &pb::ContainerTarget) -> Result<Self, InvalidField> {
        let name = if t.name.is_empty() {
            None
        } else if valid_name(&t.name) {
            Some(t.name.trim_start_matches('/').to_owned())
        } else {
            return Err(invalid(
                "container.name",
                format!(
                    "{} is not a container name or id (letters, digits, '_', '.', '-'; at most 255)",
                    faultline_proto::quote(&t.name)
                ),
            ));
        };
        let labels = parse_labels("container.select", &t.select)?;
        if name.is_none() && labels.is_empty() {
            return Err(invalid(
                "container",
                "give a name (or id) or at least one label to select on",
            ));
        }
        Ok(Self { name, labels })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match (&self.name, labels.is_empty()) {
            (Some(n), true) => write!(f, "container {n}"),
            (Some(n), false) => write!(f, "container {n} with labels {}", labels.join(",")),
            (None, _) => write!(f, "containers with labels {}", labels.join(",")),
        }
    }
}

/// The runtimes this agent asks. Sockets are found when needed, so an engine started
/// after the agent is seen.
pub struct Runtimes {
    docker_socket: Option<PathBuf>,
    containerd_socket: Option<PathBuf>,
    /// The client once connected and its API version negotiated (a round trip each fault
    /// would cost otherwise); dropped after the engine could not be reached.
    docker: tokio::sync::Mutex<Option<Docker>>,
    /// `--scope-label`: when set, the agent acts only in containers carrying every one of
    /// these labels, never on the host's own interfaces or processes.
    scope: Vec<(String, String)>,
    /// A Kubernetes node's pods, through its CRI runtime.
    cri: crate::pods::Cri,
}

impl Runtimes {
    /// Configured sockets; `None` tries `DOCKER_SOCKETS` and `CONTAINERD_SOCKETS`.
    #[must_use]
    pub fn new(docker_socket: Option<PathBuf>, containerd_socket: Option<PathBuf>) -> Self {
        Self {
            docker_socket,
            containerd_socket,
            docker: tokio::sync::Mutex::new(None),
            scope: Vec::new(),
            cri: crate::pods::Cri::new(None),
        }
    }

    /// The CRI runtime's socket (`--cri-socket`); `None` tries `pods::CRI_SOCKETS`.
    #[must_use]
    pub fn with_cri_socket(mut self, socket: Option<PathBuf>) -> Self {
        self.cri = crate::pods::Cri::new(socket);
        self
    }

    /// The node's CRI runtime: its pods.
    #[must_use]
    pub fn cri(&self) -> &crate::pods::Cri {
        &self.cri
    }

    /// The one ready pod `t` names, inside this agent's scope.
    pub async fn resolve_pod(&self, t: &pb::PodTarget) -> Result<crate::pods::Pod, ContainerError> {
        let pod = self.cri.resolve(&crate::pods::PodSelector::try_from(t)?).await?;
        self.check_scope(Some(&pod.sandbox()))?;
        Ok(pod)
    }

    /// Scopes the agent to containers labelled `labels` (all of them): faults on the host's
    /// own interfaces and processes, or on other containers, are refused.
    #[must_use]
    pub fn scoped(mut self, labels: Vec<(String, String)>) -> Self {
        self.scope = labels;
        self
    }

    /// The labels this agent is scoped to (empty: the whole host).
    #[must_use]
    pub fn scope(&self) -> &[(String, String)] {
        &self.scope
    }

    /// Whether the agent may act on `target`: a container, or the host itself (`None`).
    pub fn check_scope(&self, target: Option<&Container>) -> Result<(), ContainerError> {
        if self.scope.is_empty() {
            return Ok(());
        }
        let wanted: Vec<String> = self.scope.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match target {
            None => Err(ContainerError::OutOfScope(format!(
                "this agent acts only in containers labelled {} (--scope-label): not on the host's own interfaces or processes",
                wanted.join(",")
            ))),
            Some(c) if self.scope.iter().all(|(k, v)| c.labels.get(k) == Some(v)) => Ok(()),
            Some(c) => Err(ContainerError::OutOfScope(format!(
                "container {} is outside this agent's scope: it acts only in containers labelled {} (--scope-label)",
                c.name,
                wanted.join(",")
            ))),
        }
    }

    /// Whether any runtime's socket is there (configured or found).
    #[must_use]
    pub fn any_socket(&self) -> bool {
        self.docker_path().is_ok() || self.containerd_path().is_ok()
    }

    fn docker_path(&self) -> Result<PathBuf, ContainerError> {
        if let Some(p) = &self.docker_socket {
            return Ok(p.clone());
        }
        DOCKER_SOCKETS.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| ContainerError::Unreachable(format!("docker: no engine socket at {} (is dockerd running? --docker-socket names another)", DOCKER_SOCKETS.join(", "))))
    }

    async fn docker(&self) -> Result<Docker, ContainerError> {
        let mut cached = self.docker.lock().await;
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let d = self.connect().await?;
        *cached = Some(d.clone());
        Ok(d)
    }

    /// After an engine could not be asked: the next call connects afresh (it may have
    /// restarted, or another socket appeared).
    async fn forget_on<T>(&self, r: Result<T, ContainerError>) -> Result<T, ContainerError> {
        if matches!(r, Err(ContainerError::Unreachable(_))) {
            *self.docker.lock().await = None;
        }
        r
    }

    async fn connect(&self) -> Result<Docker, ContainerError> {
        let path = self.docker_path()?;
        let unreachable = |e: &dyn std::fmt::Display| {
            ContainerError::Unreachable(format!("docker at {}: {e}", path.display()))
        };
        let docker = Docker::connect_with_unix(
            &path.to_string_lossy(),
            CALL_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(&e))?;
        // The engine may speak an older API than bollard's default (Debian's 20.10: 1.41).
        tokio::time::timeout(CALL_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| unreachable(&e))
    }

    /// The one running container `sel` names: Docker's first, then containerd's. Several
    /// matching, or none, is an error that lists what there is.
    pub async fn resolve(&self, sel: &Selector) -> Result<Container, ContainerError> {
        let docker = self.resolve_once(sel).await;
        let docker = self.forget_on(docker).await;
        match docker {
            Ok(c) => Ok(c),
            Err(e @ (ContainerError::Invalid(_) | ContainerError::OutOfScope(_))) => Err(e),
            Err(docker) => match self.ask_containerd(sel).await {
                Ok(c) => Ok(c),
                Err(e @ (ContainerError::Invalid(_) | ContainerError::OutOfScope(_))) => Err(e),
                Err(ContainerError::Unreachable(cd)) => Err(match docker {
                    ContainerError::Unreachable(d) => {
                        ContainerError::Unreachable(format!("{d}; {cd}"))
                    }
                    other => other,
                }),
                Err(ContainerError::NotFound(cd)) => Err(match docker {
                    ContainerError::NotFound(d) => {
                        ContainerError::NotFound(format!("{d}; containerd: {cd}"))
                    }
                    ContainerError::Unreachable(_)
                    | ContainerError::Invalid(_)
                    | ContainerError::OutOfScope(_) => ContainerError::NotFound(cd),
                }),
            },
        }
    }

    /// containerd's answer; no socket at all counts as unreachable (Docker's answer stands).
    async fn ask_containerd(&self, sel: &Selector) -> Result<Container, ContainerError> {
        containerd::resolve(&self.containerd_path()?, sel).await
    }

    fn containerd_path(&self) -> Result<PathBuf, ContainerError> {
        if let Some(p) = &self.containerd_socket {
            return Ok(p.clone());
        }
        CONTAINERD_SOCKETS.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
            ContainerError::Unreachable(format!(
                "containerd: no socket at {} (--containerd-socket names another)",
                CONTAINERD_SOCKETS.join(", ")
            ))
        })
    }

    async fn resolve_once(&self, sel: &Selector) -> Result<Container, ContainerError> {
        let docker = self.docker().await?;
        let id = if let Some(name) = &sel.name {
            name.clone()
        } else {
            let found = list_ids(&docker, &sel.labels).await?;
            match found.as_slice() {
                [one] => one.0.clone(),
                [] => {
                    return Err(ContainerError::NotFound(format!(
                        "no running container carries {}",
                        labels_text(&sel.labels)
                    )));
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|(_, n)| n.as_str()).collect();
                    return Err(ContainerError::Invalid(invalid(
                        "container.select",
                        format!(
                            "{} running containers match ({}); one fault acts in one container: name it, or add a label",
                            many.len(),
                            names.join(", ")
                        ),
                    )));
                }
            }
        };
        let c = inspect(&docker, &id).await?;
        let missing: Vec<String> = sel
            .labels
            .iter()
            .filter(|(k, v)| c.labels.get(k) != Some(v))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !missing.is_empty() {
            return Err(ContainerError::NotFound(format!(
                "container {} does not carry {}",
                c.name,
                missing.join(", ")
            )));
        }
        Ok(c)
    }

    /// Restarts a container through its runtime (stop with SIGTERM, SIGKILL after `grace`,
    /// start again), as `docker restart -t` does: the runtime, not the agent, starts it.
    pub async fn restart(&self, c: &Container, grace: Duration) -> Result<(), ContainerError> {
        if c.runtime != "docker" {
            return Err(ContainerError::Unreachable(format!(
                "{}: {} has no restart of its own (its orchestrator restarts what exits: kill it instead)",
                c.name, c.runtime
            )));
        }
        let docker = self.docker().await?;
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = bollard::query_parameters::RestartContainerOptionsBuilder::new().t(secs).build();
        let what = format!("restarting container {}", c.name);
        let r = match tokio::time::timeout(
            CALL_TIMEOUT + grace,
            docker.restart_container(&c.id, Some(opts)),
        )
        .await
        {
            Ok(r) => r.map_err(|e| api_error(&what, &e)),
            Err(_) => Err(ContainerError::Unreachable(format!("docker: {what} timed out"))),
        };
        self.forget_on(r).await
    }

    /// Every running container carrying `labels` (Docker's, then containerd's), and the
    /// runtimes that could not be asked.
    pub async fn list(&self, labels: &[(String, String)]) -> (Vec<Container>, Vec<String>) {
        // A scoped agent shows only what it may act on.
        let scoped: Vec<(String, String)> = labels.iter().chain(&self.scope).cloned().collect();
        let labels = scoped.as_slice();
        let (mut out, mut unreachable, mut absent) = (Vec::new(), Vec::new(), Vec::new());
        // A runtime with no socket on this host is absent, not unreachable: beside a
        // complete list from the other it is noise, so it is said only when no runtime
        // answered (then an empty list says why). A named socket is never "absent".
        let mut answered = false;
        match self.docker_path() {
            Err(e) => absent.push(e.to_string()),
            Ok(_) => match self.list_docker(labels).await {
                Ok(list) => {
                    answered = true;
                    out.extend(list);
                }
                Err(e) => unreachable.push(e.to_string()),
            },
        }
        match self.containerd_path() {
            Ok(path) => {
                match containerd::list(&path, &Selector { name: None, labels: labels.to_vec() })
                    .await
                {
                    Ok(list) => {
                        answered = true;
                        out.extend(list.into_iter().take(MAX_LISTED.saturating_sub(out.len())));
                    }
                    Err(e) => unreachable.push(e.to_string()),
                }
            }
            Err(e) => absent.push(e.to_string()),
        }
        if !answered {
            unreachable.extend(absent);
        }
        (out, unreachable)
    }

    async fn list_docker(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<Container>, ContainerError> {
        let docker = self.docker().await?;
        let ids = self.forget_on(list_ids(&docker, labels).await).await?;
        let mut out = Vec::new();
        for (id, _) in ids.into_iter().take(MAX_LISTED) {
            // A container that stopped between the list and its inspection is not listed.
            if let Ok(c) = inspect(&docker, &id).await {
                out.push(c);
            }
        }
        Ok(out)
    }
}

fn labels_text(labels: &[(String, String)]) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

fn api_error(what: &str, e: &bollard::errors::Error) -> ContainerError {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code: 404, message } => {
            ContainerError::NotFound(format!("{what}: {message}"))
        }
        // An ambiguous id prefix, say.
        bollard::errors::Error::DockerResponseServerError { status_code: 400, message } => {
            ContainerError::Invalid(invalid("container.name", message.clone()))
        }
        other => ContainerError::Unreachable(format!("docker: {what}: {other}")),
    }
}

/// Running containers' (id, name) carrying every label, by the engine's own filter.
async fn list_ids(
    docker: &Docker,
    labels: &[(String, String)],
) -> Result<Vec<(String, String)>, ContainerError> {
    let mut filters: HashMap<String, Vec<String>> = HashMap::new();
    filters.insert("status".into(), vec!["running".into()]);
    if !labels.is_empty() {
        filters.insert("label".into(), labels.iter().map(|(k, v)| format!("{k}={v}")).collect());
    }
    let opts = ListContainersOptionsBuilder::new().filters(&filters).build();
    let list = tokio::time::timeout(CALL_TIMEOUT, docker.list_containers(Some(opts)))
        .await
        .map_err(|_| ContainerError::Unreachable("docker: listing containers timed out".into()))?
        .map_err(|e| api_error("listing containers", &e))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            Some((c.id?, name))
        })
        .collect())
}

async fn inspect(docker: &Docker, name: &str) -> Result<Container, ContainerError> {
    let what = format!("container {name}");
    let c = tokio::time::timeout(CALL_TIMEOUT, docker.inspect_container(name, None))
        .await
        .map_err(|_| ContainerError::Unreachable(format!("docker: inspecting {what} timed out")))?
        .map_err(|e| api_error(&what, &e))?;
    let shown = c.name.as_deref().unwrap_or(name).trim_start_matches('/').to_owned();
    let state = c.state.unwrap_or_default();
    let pid = state.pid.unwrap_or(0);
    if state.running != Some(true) || pid <= 0 {
        return Err(ContainerError::NotFound(format!(
            "container {shown} is not running (state {})",
            state.status.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
        )));
    }
    // The pid with its start time: a container that restarts gets a new one, and nothing
    // aimed at the old container reaches the new one's processes.
    let stat = procfs::stat(pid as u32).ok_or_else(|| {
        ContainerError::NotFound(format!("container {shown}: its init process {pid} is gone"))
    })?;
    let addresses = c
        .network_settings
        .and_then(|n| n.networks)
        .into_iter()
        .flatten()
        .flat_map(|(_, ep)| [ep.ip_address, ep.global_ipv6_address])
        .flatten()
        .filter_map(|a| a.parse().ok())
        .collect();
    Ok(Container {
        id: c.id.unwrap_or_default(),
        name: shown,
        runtime: "docker",
        process: stat.id,
        labels: c.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect(),
        addresses,
    })
}

/// containerd's own API: containers and their tasks, per namespace.
mod containerd {
    use std::{collections::BTreeMap, path::Path};

    use containerd_client::{
        services::v1::{
            ListContainersRequest, ListNamespacesRequest, ListTasksRequest,
            containers_client::ContainersClient, namespaces_client::NamespacesClient,
            tasks_client::TasksClient,
        },
        tonic::{Request, transport::Channel},
        types::v1::Status,
    };

    use super::{
        CALL_TIMEOUT, Container, ContainerError, DOCKER_NAMESPACE, MIN_ID_PREFIX, Selector, invalid,
    };
    use crate::kernel::procfs;

    fn in_ns<T>(req: T, ns: &str) -> Result<Request<T>, ContainerError> {
        let mut r = Request::new(req);
        let value = ns.parse().map_err(|_| {
            ContainerError::Unreachable(format!(
                "containerd: namespace {ns:?} is not a header value"
            ))
        })?;
        r.metadata_mut().insert("containerd-namespace", value);
        Ok(r)
    }

    fn unreachable(what: &str, e: impl std::fmt::Display) -> ContainerError {
        ContainerError::Unreachable(format!("containerd: {what}: {e}"))
    }

    async fn timed<T, E: std::fmt::Display>(
        what: &str,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ContainerError> {
        tokio::time::timeout(CALL_TIMEOUT, f)
            .await
            .map_err(|_| unreachable(what, "timed out"))?
            .map_err(|e| unreachable(what, e))
    }

    fn matches(
        sel: &Selector,
        id: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> bool {
        let named = sel
            .name
            .as_ref()
            .is_none_or(|n| id == n || (n.len() >= MIN_ID_PREFIX && id.starts_with(n.as_str())));
        named && sel.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Every running container `sel` matches, in every namespace but Docker's.
    pub async fn list(path: &Path, sel: &Selector) -> Result<Vec<Container>, ContainerError> {
        let channel: Channel = timed("connecting", containerd_client::connect(path)).await?;
        let namespaces = timed(
            "listing namespaces",
            NamespacesClient::new(channel.clone())
                .list(ListNamespacesRequest { filter: String::new() }),
        )
        .await?
        .into_inner()
        .namespaces;
        let mut out = Vec::new();
        for ns in namespaces.iter().map(|n| n.name.as_str()).filter(|n| *n != DOCKER_NAMESPACE) {
            let tasks = timed(
                "listing tasks",
                TasksClient::new(channel.clone())
                    .list(in_ns(ListTasksRequest { filter: String::new() }, ns)?),
            )
            .await?
            .into_inner()
            .tasks;
            // A task's `id` is its container's (`container_id` is left empty in this answer).
            let running: BTreeMap<String, u32> = tasks
                .into_iter()
                .filter(|t| t.status == Status::Running as i32 && t.pid > 0)
                .map(|t| (if t.container_id.is_empty() { t.id } else { t.container_id }, t.pid))
                .collect();
            let containers = timed(
                "listing containers",
                ContainersClient::new(channel.clone())
                    .list(in_ns(ListContainersRequest { filters: Vec::new() }, ns)?),
            )
            .await?
            .into_inner()
            .containers;
            for c in containers.into_iter().filter(|c| matches(sel, &c.id, &c.labels)) {
                let Some(pid) = running.get(&c.id) else { continue };
                // With its start time, as for Docker's: a restarted task is another process.
                let Some(stat) = procfs::stat(*pid) else { continue };
                out.push(Container {
                    name: format!("{ns}/{}", c.id),
                    id: c.id,
                    runtime: "containerd",
                    process: stat.id,
                    labels: c.labels.into_iter().collect(),
                    addresses: Vec::new(),
                });
            }
        }
        Ok(out)
    }

    /// The one running container `sel` names.
    pub async fn resolve(path: &Path, sel: &Selector) -> Result<Container, ContainerError> {
        let mut found = list(path, sel).await?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(ContainerError::NotFound(format!("no running {sel}"))),
            n => {
                let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
                Err(ContainerError::Invalid(invalid(
                    if sel.labels.is_empty() { "container.name" } else { "container.select" },
                    format!(
                        "{n} running containers match ({}); one fault acts in one container: name it, or add a label",
                        names.join(", ")
                    ),
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_checked_before_any_runtime_is_asked() {
        let t = |name: &str, select: &[&str]| {
            Selector::try_from(&pb::ContainerTarget {
                name: name.into(),
                select: select.iter().map(|s| (*s).to_owned()).collect(),
            })
        };
        assert_eq!(t("/web", &[]).unwrap().name.as_deref(), Some("web"));
        assert_eq!(
            t("", &["com.docker.compose.service=web"]).unwrap().labels,
            vec![("com.docker.compose.service".into(), "web".into())]
        );
        // Empty values are labels too ("k=" selects k with an empty value).
        assert!(t("", &["k="]).is_ok());
        for (name, select, field) in [
            ("", &[][..], "container"),
            ("../../images/x", &[], "container.name"),
            ("web?all=1", &[], "container.name"),
            ("-x", &[], "container.name"),
            ("", &["novalue"], "container.select"),
            ("", &["=v"], "container.select"),
        ] {
            let e = t(name, select).unwrap_err();
            assert_eq!(e.field, field, "{name:?} {select:?}: {e}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            Selector::try_from(&pb::ContainerTarget { name: String::new(), select: many })
                .unwrap_err()
                .field,
            "container.select"
        );
    }

    /// Neither runtime there: one answer naming both, never a "not found" that would read
    /// as "the container is not running".
    #[tokio::test]
    async fn no_runtime_reachable_is_said_for_both() {
        let r = Runtimes::new(
            Some("/nonexistent/docker.sock".into()),
            Some("/nonexistent/containerd.sock".into()),
        );
        let sel = Selector { name: Some("web".into()), labels: Vec::new() };
        match r.resolve(&sel).await {
            Err(ContainerError::Unreachable(m)) => {
                assert!(m.contains("docker") && m.contains("containerd"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let (list, unreachable) = r.list(&[]).await;
        assert!(list.is_empty() && unreachable.len() == 2, "{unreachable:?}");
    }
}
