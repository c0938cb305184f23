//! Kubernetes pods as fault targets, found through the node's Container Runtime Interface
//! (the API kubelet itself speaks: containerd's CRI plugin, CRI-O), with no Kubernetes
//! client and no API server access. A pod is its sandbox (whose network namespace its
//! containers share: a network fault acts once per pod) and its containers (a process
//! fault acts on one, or on the pod's cgroup). Labels are the pod's own, which kubelet
//! puts on the sandbox only: selecting a pod by `app=web` is what a Kubernetes user means.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use faultline_proto::{
    agent::v1 as pb,
    cri::v1::{
        self as cri, ContainerFilter, ContainerStateValue, ListContainersRequest,
        ListPodSandboxRequest, PodSandboxFilter, PodSandboxStateValue, VersionRequest,
        runtime_service_client::RuntimeServiceClient,
    },
};
use tonic::transport::Channel;

use crate::{
    containers::{Container, ContainerError},
    fault::InvalidField,
    kernel::procfs,
};

/// Where a CRI runtime listens when not told: containerd (stock, then k3s's), CRI-O.
/// Docker's own containerd has its CRI plugin disabled and is not listed.
pub const CRI_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
];
/// One runtime call may take this long; a stuck runtime must not hold a fault's apply.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Requirements in one selector, values in one `in (...)` set, bytes in one requirement.
const MAX_REQUIREMENTS: usize = 16;
const MAX_VALUES: usize = 64;
const MAX_REQUIREMENT_LEN: usize = 1024;
/// A node with more pods than this is answered in part (kubelet's default is 110).
const MAX_PODS: usize = 1024;
/// Labels kubelet adds to every sandbox for its own bookkeeping; not the pod's labels.
const KUBELET_PREFIX: &str = "io.kubernetes.";
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

fn invalid(field: &str, reason: impl Into<String>) -> InvalidField {
    InvalidField { field: field.to_owned(), reason: reason.into() }
}

/// One requirement of a label selector, as kubectl's `-l` has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Equals(k, v) => labels.get(k) == Some(v),
            // As Kubernetes: a pod without the key satisfies `!=` and `notin`.
            Self::NotEquals(k, v) => labels.get(k) != Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::NotExists(k) => !labels.contains_key(k),
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Equals(k, v) => write!(f, "{k}={v}"),
            Self::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Self::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Self::Exists(k) => write!(f, "{k}"),
            Self::NotExists(k) => write!(f, "!{k}"),
        }
    }
}

/// A label key as Kubernetes has them: an optional DNS prefix and '/', then a name of
/// letters, digits, '-', '_', '.' (at most 63, alphanumeric at both ends).
fn valid_key(k: &str) -> bool {
    let (prefix, name) = k.rsplit_once('/').unwrap_or(("", k));
    let name_ok = valid_value(name) && !name.is_empty();
    let prefix_ok = prefix.len() <= 253
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
    name_ok && prefix_ok && !(k.contains('/') && prefix.is_empty())
}

/// A label value: empty, or at most 63 of letters, digits, '-', '_', '.', alphanumeric
/// at both ends.
fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

/// Splits at commas outside parentheses: "a in (x,y),b" is two requirements.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_requirement(field: &str, r: &str) -> Result<Requirement, InvalidField> {
    let bad = |why: &str| invalid(field, format!("{}: {why}", faultline_proto::quote(r)));
    let key = |k: &str| {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_owned())
        } else {
            Err(bad(
                "a label key is an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_', '.'",
            ))
        }
    };
    let value = |v: &str| {
        let v = v.trim();
        if valid_value(v) {
            Ok(v.to_owned())
        } else {
            Err(bad(
                "a label value is at most 63 letters, digits, '-', '_', '.', alphanumeric at both ends",
            ))
        }
    };
    let t = r.trim();
    if t.is_empty() {
        return Err(bad("an empty requirement"));
    }
    if let Some(k) = t.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(k)?));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((k, set)) = t.split_once(op) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| bad("a set is written (a,b,c)"))?;
            let values: Vec<String> = inner.split(',').map(value).collect::<Result<_, _>>()?;
            if values.len() > MAX_VALUES {
                return Err(bad(&format!("at most {MAX_VALUES} values in a set")));
            }
            let k = key(k)?;
            return Ok(if negate {
                Requirement::NotIn(k, values)
            } else {
                Requirement::In(k, values)
            });
        }
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    Ok(Requirement::Exists(key(t)?))
}

/// Parses selector entries (each one or more comma-separated requirements).
pub fn parse_selector(field: &str, select: &[String]) -> Result<Vec<Requirement>, InvalidField> {
    let mut out = Vec::new();
    for entry in select {
        if entry.len() > MAX_REQUIREMENT_LEN * MAX_REQUIREMENTS || entry.contains('\0') {
            return Err(invalid(field, "a selector entry is at most 16 KiB, without NUL"));
        }
        for r in split_top(entry) {
            if r.len() > MAX_REQUIREMENT_LEN {
                return Err(invalid(
                    field,
                    format!("a requirement is at most {MAX_REQUIREMENT_LEN} bytes"),
                ));
            }
            out.push(parse_requirement(field, r)?);
            if out.len() > MAX_REQUIREMENTS {
                return Err(invalid(field, format!("at most {MAX_REQUIREMENTS} requirements")));
            }
        }
    }
    Ok(out)
}

/// A Kubernetes object name or namespace: a DNS label or subdomain (at most 253 of
/// lowercase letters, digits, '-', '.').
fn valid_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// What a request names: a pod by namespace and name, or by its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSelector {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub select: Vec<Requirement>,
    /// Process faults: one container of the pod.
    pub container: Option<String>,
}

impl PodSelector {
    /// Whether `ns` could not be a namespace's name.
    #[must_use]
    pub fn namespace_invalid(ns: &str) -> bool {
        !valid_object_name(ns)
    }

    fn matches(&self, p: &Pod) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == p.namespace)
            && self.name.as_ref().is_none_or(|n| *n == p.name)
            && self.select.iter().all(|r| r.holds(&p.labels))
    }
}

impl TryFrom<&pb::PodTarget> for PodSelector {
    type Error = InvalidField;
    fn try_from(t: &pb::PodTarget) -> Result<Self, InvalidField> {
        let opt = |field: &str, s: &str| {
            if s.is_empty() {
                Ok(None)
            } else if valid_object_name(s) {
                Ok(Some(s.to_owned()))
            } else {
                Err(invalid(
                    field,
                    format!(
                        "{} is not a Kubernetes name (lowercase letters, digits, '-', '.'; at most 253)",
                        faultline_proto::quote(s)
                    ),
                ))
            }
        };
        let namespace = opt("pod.namespace", &t.namespace)?;
        let name = opt("pod.name", &t.name)?;
        let container = opt("pod.container", &t.container)?;
        let select = parse_selector("pod.select", &t.select)?;
        if name.is_none() && select.is_empty() {
            return Err(invalid(
                "pod",
                "give a pod's name or at least one label requirement to select on",
            ));
        }
        if name.is_some() && namespace.is_none() {
            return Err(invalid(
                "pod.namespace",
                "a pod named needs its namespace (NAMESPACE/NAME)",
            ));
        }
        Ok(Self { namespace, name, select, container })
    }
}

impl std::fmt::Display for PodSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.namespace.as_deref().unwrap_or("*");
        match &self.name {
            Some(n) => write!(f, "pod {ns}/{n}")?,
            None => write!(f, "pods in namespace {ns}")?,
        }
        if !self.select.is_empty() {
            let r: Vec<String> = self.select.iter().map(ToString::to_string).collect();
            write!(f, " matching {}", r.join(","))?;
        }
        Ok(())
    }
}

/// One running container of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodContainer {
    pub name: String,
    pub id: String,
    pub process: procfs::ProcId,
}

/// A ready pod as the agent acts on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub runtime: String,
    /// The pod's own labels (kubelet's `io.kubernetes.*` left out).
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
    pub sandbox_id: String,
    /// The sandbox's process, holding the pod's namespaces.
    pub process: procfs::ProcId,
    pub containers: Vec<PodContainer>,
}

impl Pod {
    #[must_use]
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod as the engine's place to act: its sandbox (its network namespace), named
    /// NAMESPACE/NAME.
    #[must_use]
    pub fn sandbox(&self) -> Container {
        Container {
            id: self.sandbox_id.clone(),
            name: self.full_name(),
            runtime: "cri",
            process: self.process,
            labels: self.labels.clone(),
            addresses: self.addresses.clone(),
        }
    }

    /// One of its containers, named NAMESPACE/NAME/CONTAINER.
    pub fn container(&self, name: &str) -> Result<Container, ContainerError> {
        let c = self.containers.iter().find(|c| c.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.containers.iter().map(|c| c.name.as_str()).collect();
            ContainerError::NotFound(format!(
                "pod {} has no running container {} (it has: {})",
                self.full_name(),
                faultline_proto::quote(name),
                names.join(", ")
            ))
        })?;
        Ok(Container {
            id: c.id.clone(),
            name: format!("{}/{}", self.full_name(), c.name),
            runtime: "cri",
            process: c.process,
            labels: self.labels.clone(),
            addresses: self.addresses.clone(),
        })
    }

    #[must_use]
    pub fn to_wire(&self) -> pb::Pod {
        pb::Pod {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            runtime: self.runtime.clone(),
            labels: self.labels.clone().into_iter().collect(),
            addresses: self.addresses.iter().map(ToString::to_string).collect(),
            sandbox_id: self.sandbox_id.clone(),
            pid: self.process.pid,
            containers: self
                .containers
                .iter()
                .map(|c| pb::PodContainer {
                    name: c.name.clone(),
                    id: c.id.clone(),
                    pid: c.process.pid,
                })
                .collect(),
        }
    }
}

/// The node's CRI runtime. Its socket is found when needed, so a runtime started after
/// the agent is seen.
pub struct Cri {
    socket: Option<PathBuf>,
}

fn unreachable(path: &Path, what: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Unreachable(format!("CRI at {}: {what}: {e}", path.display()))
}

impl Cri {
    /// `None` tries `CRI_SOCKETS` in order.
    #[must_use]
    pub fn new(socket: Option<PathBuf>) -> Self {
        Self { socket }
    }

    /// The sockets to try, and why none is there when none is.
    fn candidates(&self) -> Result<Vec<PathBuf>, ContainerError> {
        if let Some(p) = &self.socket {
            return Ok(vec![p.clone()]);
        }
        let found: Vec<PathBuf> =
            CRI_SOCKETS.iter().map(PathBuf::from).filter(|p| p.exists()).collect();
        if found.is_empty() {
            return Err(ContainerError::Unreachable(format!(
                "CRI: no runtime socket at {} (--cri-socket names another)",
                CRI_SOCKETS.join(", ")
            )));
        }
        Ok(found)
    }

    /// The first socket whose runtime answers CRI's Version, with its name.
    async fn connect(&self) -> Result<(RuntimeServiceClient<Channel>, String), ContainerError> {
        let mut why = Vec::new();
        for path in self.candidates()? {
            match connect_one(&path).await {
                Ok(c) => return Ok(c),
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(ContainerError::Unreachable(why.join("; ")))
    }

    /// Which runtime answers, for `doctor`: "containerd 1.6.20 (CRI v1) at PATH", or why none.
    pub async fn describe(&self) -> Result<String, ContainerError> {
        self.connect().await.map(|(_, name)| name)
    }

    /// Every ready pod `sel` matches (its name, namespace and labels), with its containers.
    pub async fn list(&self, sel: &PodSelector) -> Result<Vec<Pod>, ContainerError> {
        let (mut client, runtime) = self.connect().await?;
        let filter = PodSandboxFilter {
            state: Some(PodSandboxStateValue { state: cri::PodSandboxState::SandboxReady as i32 }),
            // The runtime filters by equality itself (kubelet labels every sandbox with its
            // pod's name and namespace); the rest is checked here.
            label_selector: sel
                .select
                .iter()
                .filter_map(|r| match r {
                    Requirement::Equals(k, v) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .chain(sel.name.iter().map(|n| (POD_NAME_LABEL.to_owned(), n.clone())))
                .chain(sel.namespace.iter().map(|n| (POD_NAMESPACE_LABEL.to_owned(), n.clone())))
                .collect(),
            ..Default::default()
        };
        let sandboxes = timed(
            "listing pod sandboxes",
            client.list_pod_sandbox(ListPodSandboxRequest { filter: Some(filter) }),
        )
        .await?
        .into_inner()
        .items;
        let mut out = Vec::new();
        for s in sandboxes.into_iter().take(MAX_PODS) {
            let meta = s.metadata.unwrap_or_default();
            let labels: BTreeMap<String, String> =
                s.labels.into_iter().filter(|(k, _)| !k.starts_with(KUBELET_PREFIX)).collect();
            let pod = Pod {
                namespace: meta.namespace,
                name: meta.name,
                uid: meta.uid,
                runtime: runtime.clone(),
                labels,
                addresses: Vec::new(),
                sandbox_id: s.id,
                process: procfs::ProcId { pid: 0, start_time: 0 },
                containers: Vec::new(),
            };
            if !sel.matches(&pod) {
                continue;
            }
            // A pod that went between the list and these calls is not listed; a runtime
            // that stopped answering is an error, never "no such pod".
            match complete(&mut client, pod).await {
                Ok(p) => out.push(p),
                Err(ContainerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The one ready pod `sel` names.
    pub async fn resolve(&self, sel: &PodSelector) -> Result<Pod, ContainerError> {
        let mut found = self.list(sel).await?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(ContainerError::NotFound(format!("no ready {sel} on this node"))),
            n => {
                let names: Vec<String> = found.iter().map(Pod::full_name).collect();
                Err(ContainerError::Invalid(invalid(
                    "pod.select",
                    format!(
                        "{n} ready pods match ({}); one fault acts in one pod: name it, or add a requirement",
                        names.join(", ")
                    ),
                )))
            }
        }
    }
}

async fn timed<T>(
    what: &str,
    f: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, ContainerError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Err(_) => Err(ContainerError::Unreachable(format!("CRI: {what} timed out"))),
        Ok(Err(s)) if s.code() == tonic::Code::NotFound => {
            Err(ContainerError::NotFound(format!("CRI: {what}: {}", s.message())))
        }
        Ok(Err(s)) => Err(ContainerError::Unreachable(format!("CRI: {what}: {}", s.message()))),
        Ok(Ok(v)) => Ok(v),
    }
}

async fn connect_one(
    path: &Path,
) -> Result<(RuntimeServiceClient<Channel>, String), ContainerError> {
    let channel = tokio::time::timeout(CALL_TIMEOUT, containerd_client::connect(path))
        .await
        .map_err(|_| unreachable(path, "connecting", "timed out"))?
        .map_err(|e| unreachable(path, "connecting", e))?;
    let mut client = RuntimeServiceClient::new(channel);
    // Docker's containerd (CRI disabled) answers Unimplemented: not a CRI runtime.
    let v = tokio::time::timeout(CALL_TIMEOUT, client.version(VersionRequest::default()))
        .await
        .map_err(|_| unreachable(path, "Version", "timed out"))?
        .map_err(|s| unreachable(path, "Version (is its CRI plugin enabled?)", s.message()))?
        .into_inner();
    let name = format!(
        "{} {} (CRI {}) at {}",
        v.runtime_name,
        v.runtime_version,
        v.runtime_api_version,
        path.display()
    );
    Ok((client, name))
}

/// The `pid` a runtime's verbose status carries (containerd and CRI-O both put it in the
/// JSON under "info").
fn verbose_pid(info: &HashMap<String, String>) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    u32::try_from(v.get("pid")?.as_u64()?).ok().filter(|p| *p > 0)
}

/// The sandbox's process and addresses, and the pod's running containers.
async fn complete(
    client: &mut RuntimeServiceClient<Channel>,
    mut pod: Pod,
) -> Result<Pod, ContainerError> {
    let status = timed(
        "pod sandbox status",
        client.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.sandbox_id.clone(),
            verbose: true,
        }),
    )
    .await?
    .into_inner();
    if let Some(net) = status.status.and_then(|s| s.network) {
        pod.addresses = std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|i| i.ip))
            .filter_map(|a| a.parse().ok())
            .collect();
    }
    let listed = timed(
        "listing a pod's containers",
        client.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.sandbox_id.clone(),
                state: Some(ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        }),
    )
    .await?
    .into_inner()
    .containers;
    for c in listed {
        let s = match timed(
            "container status",
            client.container_status(cri::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: true,
            }),
        )
        .await
        {
            Ok(s) => s.into_inner(),
            // Removed since the list: the pod's other containers still count.
            Err(ContainerError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        // With its start time: a restarted container is another process.
        let Some(stat) = verbose_pid(&s.info).and_then(procfs::stat) else { continue };
        pod.containers.push(PodContainer {
            name: c.metadata.map(|m| m.name).unwrap_or_default(),
            id: c.id,
            process: stat.id,
        });
    }
    // The sandbox's own process; a runtime without one (CRI-O's dropped infra container)
    // has its containers in the same namespace.
    let pid = verbose_pid(&status.info).or_else(|| pod.containers.first().map(|c| c.process.pid));
    let stat = pid.and_then(procfs::stat).ok_or_else(|| {
        ContainerError::NotFound(format!("pod {}: its sandbox has no process", pod.full_name()))
    })?;
    pod.process = stat.id;
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn selectors_read_as_kubectl_reads_them() {
        let s = |x: &str| parse_selector("pod.select", &[x.to_owned()]);
        assert_eq!(
            s("app=web,tier in (a, b),!canary,track,env!=prod,zone notin (x)").unwrap(),
            vec![
                Requirement::Equals("app".into(), "web".into()),
                Requirement::In("tier".into(), vec!["a".into(), "b".into()]),
                Requirement::NotExists("canary".into()),
                Requirement::Exists("track".into()),
                Requirement::NotEquals("env".into(), "prod".into()),
                Requirement::NotIn("zone".into(), vec!["x".into()]),
            ]
        );
        assert_eq!(
            s("app.kubernetes.io/name==web").unwrap(),
            vec![Requirement::Equals("app.kubernetes.io/name".into(), "web".into())]
        );
        for bad in
            ["", "app=", "=web", "tier in a,b", "a b=c", "/x=y", "app=-web", "k=v\0", "app=we b"]
        {
            if bad == "app=" {
                // An empty value is a value (the label is there and empty).
                assert!(s(bad).is_ok());
                continue;
            }
            let e = s(bad).unwrap_err();
            assert_eq!(e.field, "pod.select", "{bad:?}");
        }
        let many = vec!["a=b".to_owned(); 17];
        assert!(parse_selector("pod.select", &many).is_err());
    }

    #[test]
    fn requirements_hold_as_in_kubernetes() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let s = |x: &str| parse_selector("f", &[x.to_owned()]).unwrap();
        let holds = |x: &str| s(x).iter().all(|r| r.holds(&l));
        assert!(holds("app=web,tier in (front,back),!canary,env!=prod,zone notin (x)"));
        assert!(!holds("app=api"));
        assert!(!holds("tier notin (front)"));
        assert!(!holds("!app"));
        assert!(!holds("missing in (a)"));
    }

    #[test]
    fn targets_are_checked_before_any_runtime_is_asked() {
        let t = |ns: &str, name: &str, select: &[&str]| {
            PodSelector::try_from(&pb::PodTarget {
                namespace: ns.into(),
                name: name.into(),
                select: select.iter().map(|s| (*s).to_owned()).collect(),
                container: String::new(),
            })
        };
        assert!(t("default", "web-0", &[]).is_ok());
        assert!(t("", "", &["app=web"]).unwrap().namespace.is_none());
        for (ns, name, select, field) in [
            ("", "", &[][..], "pod"),
            ("", "web-0", &[], "pod.namespace"),
            ("Default", "web", &[], "pod.namespace"),
            ("default", "../x", &[], "pod.name"),
            ("default", "", &["app in web"], "pod.select"),
        ] {
            assert_eq!(t(ns, name, select).unwrap_err().field, field, "{ns:?} {name:?} {select:?}");
        }
    }

    #[test]
    fn the_pid_is_read_from_either_runtimes_verbose_info() {
        let info = |s: &str| HashMap::from([("info".to_owned(), s.to_owned())]);
        assert_eq!(verbose_pid(&info(r#"{"pid": 4242, "sandboxID": "x"}"#)), Some(4242));
        assert_eq!(verbose_pid(&info(r#"{"pid": 0}"#)), None);
        assert_eq!(verbose_pid(&info("not json")), None);
        assert_eq!(verbose_pid(&HashMap::new()), None);
    }
}
