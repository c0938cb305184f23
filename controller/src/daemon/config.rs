//! The controller's configuration file (TOML).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// The controller's config file (TOML).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Option<SocketAddr>,
    /// How often the controller heartbeats agents and renews leases.
    pub heartbeat_ms: Option<u64>,
    /// The `SQLite` file holding agents, faults and events across restarts.
    pub state: Option<PathBuf>,
    /// ca.pem, controller.pem, controller-key.pem (default /etc/faultline/tls).
    pub tls_dir: Option<PathBuf>,
    /// Serve Prometheus text at <http://ADDR/metrics>.
    pub metrics_listen: Option<SocketAddr>,
    /// Export tracing spans over OTLP/gRPC to this collector, e.g. <http://collector:4317>.
    pub otlp_endpoint: Option<String>,
    /// Serve the Web API (REST, /api/openapi.json, Swagger UI at /api/docs) here.
    pub web_listen: Option<SocketAddr>,
    /// The Web API's bearer tokens: `operator TOKEN` or `viewer TOKEN` per line.
    pub web_token_file: Option<PathBuf>,
    /// The role of a Web API request without credentials (`viewer`, the only one allowed;
    /// none unless set): for a lab whose port only its user can reach.
    pub web_anonymous: Option<String>,
    /// Host names the Web API answers to, besides IP addresses and localhost: the names
    /// in users' address bars. Any other Host is refused (421), so a page whose name an
    /// attacker points at this address (DNS rebinding) reaches nothing.
    #[serde(default)]
    pub web_hosts: Vec<String>,
    /// Plain HTTP for the Web API on any address, gRPC keeping TLS: for a container whose
    /// port is published on the host's loopback only.
    #[serde(default)]
    pub web_plaintext: bool,
    /// Events are kept this many days (default 30, at most 3650) ...
    pub event_retention_days: Option<u64>,
    /// ... and at most this many, the newest (default 1,000,000): the history a watcher
    /// replays stays bounded.
    pub event_retention_count: Option<u64>,
    /// Agents the controller reaches without their registering.
    #[serde(default)]
    pub agents: Vec<StaticAgent>,
    /// A registered agent down this long (session closed, not back) and holding no fault
    /// is forgotten, so a stale registration cannot block selections for good
    /// (default 600).
    pub forget_down_after_s: Option<u64>,
    /// Enrol agents on Kubernetes nodes: `NAMESPACE:SERVICE_ACCOUNT`, the agents' account,
    /// whose pods' tokens (audience `faultline`) the API server vouches for; each gets a
    /// certificate bound to its node's name, issued from ca-key.pem in `tls_dir`.
    pub enroll_kubernetes: Option<String>,
    /// The API server, `https://HOST:PORT` (default: the cluster's, from the pod's environment).
    pub kube_api: Option<String>,
    /// The controller's service-account token and ca.crt (default: where kubelet mounts them).
    pub kube_credentials: Option<PathBuf>,
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
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{}: not a valid controller config", path.display()))
    }
}
