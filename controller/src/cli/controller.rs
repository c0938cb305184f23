//! Commands through a controller, and `faultline controller serve`.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Result, bail};
use clap::Subcommand;
use faultline_proto::{
    controller::v1::{self as pb, controller_service_client::ControllerServiceClient},
    transport::{CONTROLLER_NAME, Role, Security},
};
use serde_json::json;

use crate::{
    cli::FaultCmd,
    daemon,
    faults::{spec, target},
    remote::{explain, unreachable_error},
};

#[derive(Subcommand)]
pub enum ControllerCmd {
    /// Serve the controller API (agents register here; the CLI and other tools call it).
    Serve {
        /// Address to serve gRPC on (overrides the config's `listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// TOML: listen, `heartbeat_ms`, state, [[agents]] name/url/labels (a static inventory).
        #[arg(long)]
        config: Option<PathBuf>,
        /// `SQLite` file for agents, faults and events (overrides the config's `state`;
        /// default /var/lib/faultline/controller.db).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Serve Prometheus metrics about the controller at <http://ADDR/metrics>.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Export tracing spans (one per fault request, one per agent call) over OTLP/gRPC.
        #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
        otlp_endpoint: Option<String>,
        /// Serve the Web API (REST, OpenAPI at /api/openapi.json, Swagger UI at /api/docs)
        /// on this address: HTTPS with the controller's certificate, or with --insecure
        /// plain HTTP on loopback only.
        #[arg(long)]
        web_listen: Option<SocketAddr>,
        /// The Web API's bearer tokens, one per line: `operator TOKEN` or `viewer TOKEN`.
        #[arg(long)]
        web_token_file: Option<PathBuf>,
        /// A Web API request that carries no credential may read (viewer): for a lab whose
        /// port only its user reaches, e.g. the Compose platform publishing on the host's
        /// loopback. Never more: acting always takes a token or a certificate.
        #[arg(long, value_parser = ["viewer"])]
        web_anonymous: Option<String>,
        /// Serve the Web API in plain HTTP on any address (gRPC keeps its TLS): for a
        /// container whose published port is bound to the host's loopback.
        #[arg(long)]
        web_plaintext: bool,
        /// Enrol agents on Kubernetes nodes (`Enroll`): `NAMESPACE:SERVICE_ACCOUNT` is the
        /// agents' account; an agent proving a pod of it with a projected token (audience
        /// `faultline`), as the cluster's API server says, gets a certificate bound to its
        /// node's name, issued from ca-key.pem in the TLS directory.
        #[arg(long, value_name = "NAMESPACE:SERVICE_ACCOUNT")]
        enroll_kubernetes: Option<String>,
        /// The API server for --enroll-kubernetes (default: the cluster's own, from the
        /// environment of the controller's pod).
        #[arg(long, value_name = "URL")]
        kube_api: Option<String>,
        /// The controller's service-account token and ca.crt for the API server (default:
        /// /var/run/secrets/kubernetes.io/serviceaccount).
        #[arg(long, value_name = "DIR")]
        kube_credentials: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Keep watching for new events until interrupted.
    #[arg(long, short)]
    follow: bool,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Only the latest N stored events (0: all).
    #[arg(long, default_value_t = 0)]
    last: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ShapeArg {
    /// --group A,B --group C ...
    Groups,
    /// One agent (--node, or random) against the rest.
    Isolate,
    /// A random minority against the majority.
    Halves,
    /// Each agent sees a different majority (>= 5 agents).
    MajoritiesRing,
    /// Two sides that reach one agent (--node, or random) but not each other.
    Bridge,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RestArg {
    Untouched,
    Isolated,
}

#[derive(clap::Args)]
pub struct PartitionArgs {
    shape: ShapeArg,
    /// Agents taking part, by label (default: all).
    #[arg(long)]
    select: Option<String>,
    /// A group of agent names, comma-separated (repeatable; shape groups). Agents in no
    /// group keep every connection unless --rest isolated.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Shape groups: selected agents named in no group stay `untouched` (default) or are
    /// each `isolated` from every other agent.
    #[arg(long, value_enum, default_value = "untouched")]
    rest: RestArg,
    /// The isolated or bridging agent (shapes isolate and bridge; default: a random one).
    #[arg(long)]
    node: Option<String>,
    /// Partition containers instead of agents: the running containers on the selected
    /// agents' hosts carrying these labels, KEY=VALUE (e.g.
    /// com.docker.compose.project=shop). --group and --node then name containers: by
    /// name, id prefix or compose service.
    #[arg(long = "container-select", value_delimiter = ',', help_heading = "Containers")]
    container_select: Vec<String>,
    /// Partition these containers (by name, id prefix or compose service; comma-separated).
    #[arg(long, value_delimiter = ',', help_heading = "Containers")]
    containers: Vec<String>,
    /// Partition Kubernetes pods instead of agents: the ready pods on the selected agents'
    /// nodes whose own labels meet these requirements (as kubectl's -l: app=web,
    /// 'app in (web,redis)'). --group and --node then name pods: NAME, NAMESPACE/NAME, or
    /// KEY=VALUE for every pod with that label.
    #[arg(long = "pod-select", value_name = "REQUIREMENTS", help_heading = "Pods")]
    pod_select: Vec<String>,
    /// The pods' namespace (default: default, as kubectl).
    #[arg(long, short = 'n', help_heading = "Pods")]
    namespace: Option<String>,
    /// Pods in every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace", help_heading = "Pods")]
    all_namespaces: bool,
    #[arg(long, value_parser = crate::units::lease)]
    lease: std::time::Duration,
    #[arg(long, default_value = "")]
    label: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AgentsCmd {
    /// Each agent: host, labels, capabilities, health, last heartbeat, active faults.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a registered agent from the controller (a live one registers again);
    /// refused while it holds part of a fault. Down agents are forgotten by themselves
    /// after `forget_down_after_s` (default 600).
    Forget { name: String },
}

pub async fn serve(
    c: &ControllerCmd,
    insecure: bool,
    tls_dir: Option<&std::path::Path>,
) -> Result<()> {
    let ControllerCmd::Serve {
        listen,
        config,
        state,
        metrics_listen,
        otlp_endpoint,
        web_listen,
        web_token_file,
        web_anonymous,
        web_plaintext,
        enroll_kubernetes,
        kube_api,
        kube_credentials,
    } = c;
    let mut config = match config {
        Some(p) => daemon::Config::load(p)?,
        None => daemon::Config::default(),
    };
    config.state = state.clone().or(config.state);
    config.metrics_listen = metrics_listen.or(config.metrics_listen);
    config.otlp_endpoint = otlp_endpoint.clone().or(config.otlp_endpoint);
    config.web_listen = web_listen.or(config.web_listen);
    config.web_token_file = web_token_file.clone().or(config.web_token_file);
    config.web_anonymous = web_anonymous.clone().or(config.web_anonymous);
    config.web_plaintext |= *web_plaintext;
    config.enroll_kubernetes = enroll_kubernetes.clone().or(config.enroll_kubernetes);
    config.kube_api = kube_api.clone().or(config.kube_api);
    config.kube_credentials = kube_credentials.clone().or(config.kube_credentials);
    let tracer = crate::daemon::observe::init_tracing(config.otlp_endpoint.as_deref())?;
    faultline_proto::listener::raise_descriptor_limit_and_log();
    let listen =
        listen.or(config.listen).unwrap_or_else(|| "127.0.0.1:7080".parse().expect("literal"));
    let dir = tls_dir.map(std::path::Path::to_path_buf).or(config.tls_dir.clone());
    let security = Security::from_flags(insecure, dir.as_deref(), Role::Controller)?;
    // The Web API serves HTTPS with the same certificate.
    config.tls_dir = dir;
    let served = daemon::serve(listen, config, security).await;
    if let Some(t) = tracer {
        // Flushes the spans still batched.
        let _ = t.shutdown();
    }
    served
}

/// `HH:MM:SS.mmm` UTC: events are read against other logs, which are mostly UTC.
fn clock(unix_ms: i64) -> String {
    let ms = unix_ms.rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}.{:03}Z", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn fault_json(f: &pb::ControllerFault) -> serde_json::Value {
    json!({
        "id": f.id,
        "kind": f.spec.as_ref().and_then(|s| s.kind.as_ref()).map_or("", faultline_proto::agent::v1::fault_spec::Kind::name),
        // As the Web API's fault view says them (issue 31: one dialect).
        "settings": f.spec.as_ref().map(crate::faults::in_words).unwrap_or_default(),
        "label": f.spec.as_ref().map_or("", |s| s.label.as_str()),
        "placements": f.placements.iter().map(|p| {
            let mut j = json!({"agent": p.agent, "agent_fault_id": p.agent_fault_id, "applied_at_unix_ms": p.applied_at_unix_ms});
            if !p.container.is_empty() {
                j["container"] = json!(p.container);
            }
            j
        }).collect::<Vec<_>>(),
        "applied_at_unix_ms": f.applied_at_unix_ms,
        "expires_at_unix_ms": f.expires_at_unix_ms,
    })
}

/// A dry run's answer in words: where the fault would act, one agent a line.
fn would_act(f: &pb::ControllerFault) -> String {
    use std::fmt::Write;
    let what = f.spec.as_ref().map(crate::faults::in_words).unwrap_or_default();
    let n = f.placements.len();
    let mut out = format!(
        "dry run: {what} would act on {n} agent{} (each checked it; nothing was changed):\n",
        if n == 1 { "" } else { "s" }
    );
    for p in &f.placements {
        let inside = if p.container.is_empty() {
            String::new()
        } else {
            format!("  container {}", p.container)
        };
        let _ = writeln!(out, "  {}{inside}", p.agent);
    }
    out
}

/// What is asked of the controller.
pub enum Call {
    Agents(AgentsCmd),
    Fault(FaultCmd),
    Partition(PartitionArgs),
    Containers(crate::cli::ContainersCmd),
    Pods(crate::cli::PodsCmd),
    Events(EventsArgs),
    Run(crate::run::RunArgs),
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per controller call, each a request and its rendering"
)]
pub async fn call(url: &str, security: &Security, call: Call) -> Result<()> {
    let endpoint = security.endpoint("--controller", url, CONTROLLER_NAME)?;
    let mut c = ControllerServiceClient::new(
        endpoint.connect().await.map_err(|e| unreachable_error("controller", url, &e))?,
    );
    match call {
        Call::Run(r) => return crate::run::run(&r, c, security).await,
        Call::Agents(AgentsCmd::Forget { name }) => {
            c.forget_agent(pb::ForgetAgentRequest { name: name.clone() }).await.map_err(explain)?;
            println!("forgot {name}");
        }
        Call::Agents(AgentsCmd::List { json }) => {
            let agents =
                c.list_agents(pb::ListAgentsRequest {}).await.map_err(explain)?.into_inner().agents;
            if json {
                let v: Vec<_> = agents
                    .iter()
                    .map(|a| {
                        let caps = a.capabilities.clone().unwrap_or_default();
                        json!({"name": a.name, "url": a.url, "labels": a.labels, "source": a.source, "healthy": a.healthy,
                            "last_heartbeat_unix_ms": a.last_heartbeat_unix_ms, "hostname": a.hostname, "kernel": a.kernel_release,
                            "addresses": a.addresses, "active_faults": a.active_faults, "error": a.error,
                            "capabilities": {"netem": caps.netem, "ebpf": caps.ebpf, "cgroup_v2_freeze": caps.cgroup_v2_freeze, "kernel_metrics": caps.kernel_metrics},
                            "kinds": faultline_proto::doctor::supported_kinds(&caps.probes)})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                // Columns as wide as their widest cell; the free-form ones (capabilities,
                // labels, an error) last, where their length shifts nothing.
                let rows: Vec<[String; 9]> = agents
                    .iter()
                    .map(|a| {
                        let caps = a.capabilities.clone().unwrap_or_default();
                        let mut labels: Vec<String> =
                            a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        labels.sort();
                        let hb = if a.last_heartbeat_unix_ms == 0 {
                            "-".into()
                        } else {
                            format!("{:.1}s", (now - a.last_heartbeat_unix_ms) as f64 / 1000.0)
                        };
                        // Every kind the agent can apply (from the probes the controller checks
                        // faults against), and whether its kernel metrics run.
                        let mut kinds = faultline_proto::doctor::supported_kinds(&caps.probes);
                        if caps.kernel_metrics {
                            kinds.push("metrics");
                        }
                        [
                            a.name.clone(),
                            if a.healthy { "up".into() } else { "DOWN".into() },
                            a.hostname.clone(),
                            a.active_faults.to_string(),
                            hb,
                            a.addresses
                                .iter()
                                .find(|x| !x.starts_with("127.") && !x.starts_with("::1"))
                                .cloned()
                                .unwrap_or_default(),
                            kinds.join(","),
                            labels.join(","),
                            if a.error.is_empty() {
                                String::new()
                            } else {
                                format!("({})", a.error)
                            },
                        ]
                    })
                    .collect();
                let head = [
                    "name",
                    "health",
                    "host",
                    "faults",
                    "hb_ago",
                    "address",
                    "can apply",
                    "labels",
                    "",
                ]
                .map(str::to_owned);
                let width: Vec<usize> = (0..9)
                    .map(|i| {
                        rows.iter().chain([&head]).map(|r| r[i].chars().count()).max().unwrap_or(0)
                    })
                    .collect();
                for r in std::iter::once(&head).chain(&rows) {
                    let line: Vec<String> = r
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            if i == 3 || i == 4 {
                                format!("{c:>w$}", w = width[i])
                            } else {
                                format!("{c:<w$}", w = width[i])
                            }
                        })
                        .collect();
                    println!("{}", line.join("  ").trim_end());
                }
            }
        }
        Call::Fault(FaultCmd::Apply(a)) => {
            let f = c
                .apply_fault(pb::ApplyFaultRequest {
                    target: Some(target(&a)),
                    spec: Some(spec(&a)?),
                    dry_run: a.common().dry_run,
                })
                .await
                .map_err(explain)?
                .into_inner()
                .fault
                .unwrap_or_default();
            if a.common().json {
                println!("{}", fault_json(&f));
                return Ok(());
            }
            if a.common().dry_run {
                print!("{}", would_act(&f));
                return Ok(());
            }
            println!("{}", f.id);
            for p in &f.placements {
                eprintln!("  {} {}", p.agent, p.agent_fault_id);
            }
        }
        Call::Fault(FaultCmd::List { json }) => {
            let faults =
                c.list_faults(pb::ListFaultsRequest {}).await.map_err(explain)?.into_inner().faults;
            if json {
                println!("{}", serde_json::Value::Array(faults.iter().map(fault_json).collect()));
            } else if faults.is_empty() {
                println!("no active faults");
            } else {
                let now = faultline_proto::now_unix_ms();
                for f in &faults {
                    let j = fault_json(f);
                    let spec = f.spec.clone().unwrap_or_default();
                    let label = if spec.label.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", spec.label)
                    };
                    println!(
                        "{:<8} {:<10} {:<36} on {:<16} {:>6.0} s left{label}",
                        f.id,
                        j["kind"].as_str().unwrap_or(""),
                        crate::faults::in_words(&spec),
                        f.placements.iter().map(|p| p.agent.as_str()).collect::<Vec<_>>().join(","),
                        ((f.expires_at_unix_ms - now).max(0) as f64 / 1000.0)
                    );
                }
            }
        }
        Call::Fault(FaultCmd::Revert { id, all, json }) => {
            if id.is_none() && !all {
                bail!("give a fault id, or --all");
            }
            let r = c
                .revert_fault(pb::RevertFaultRequest { id: id.unwrap_or_default(), all })
                .await
                .map_err(explain)?
                .into_inner();
            if json {
                let failures: Vec<_> = r.failures.iter().map(|f| json!({"agent": f.agent, "agent_fault_id": f.agent_fault_id, "error": f.error})).collect();
                let agents: Vec<_> = r.agents.iter().map(|a| json!({"agent": a.agent, "agent_fault_id": a.agent_fault_id, "reverted_at_unix_ms": a.reverted_at_unix_ms})).collect();
                println!(
                    "{}",
                    json!({"reverted": r.reverted, "agents": agents, "failures": failures})
                );
                return Ok(());
            }
            for id in r.reverted {
                println!("reverted {id}");
            }
            for f in r.failures {
                eprintln!("  {}: {}", f.agent, f.error);
            }
        }
        Call::Partition(p) => {
            let req = pb::PartitionRequest {
                selector: p.select.unwrap_or_default(),
                shape: match p.shape {
                    ShapeArg::Groups => pb::Shape::Groups,
                    ShapeArg::Isolate => pb::Shape::Isolate,
                    ShapeArg::Halves => pb::Shape::Halves,
                    ShapeArg::MajoritiesRing => pb::Shape::MajoritiesRing,
                    ShapeArg::Bridge => pb::Shape::Bridge,
                } as i32,
                groups: p
                    .groups
                    .iter()
                    .map(|g| pb::Group {
                        agents: g
                            .split(',')
                            .map(|x| x.trim().to_owned())
                            .filter(|x| !x.is_empty())
                            .collect(),
                    })
                    .collect(),
                node: p.node.unwrap_or_default(),
                lease_ms: p.lease.as_millis() as u64,
                label: p.label,
                rest: match p.rest {
                    RestArg::Untouched => pb::Rest::Untouched,
                    RestArg::Isolated => pb::Rest::Isolated,
                } as i32,
                container_select: p.container_select,
                containers: p.containers,
                pod_select: p.pod_select,
                pod_namespace: p.namespace.unwrap_or_default(),
                all_namespaces: p.all_namespaces,
            };
            let f = c.partition(req).await.map_err(explain)?.into_inner().fault.unwrap_or_default();
            if p.json {
                let cut: serde_json::Map<String, serde_json::Value> =
                    f.cut_from.iter().map(|(a, g)| (a.clone(), json!(g.agents))).collect();
                println!(
                    "{}",
                    json!({"id": f.id, "cut": f.cut, "cut_from": cut, "placements": fault_json(&f)["placements"]})
                );
            } else {
                println!("{}", f.id);
                eprintln!("  cut: {}", f.cut);
                let mut cut: Vec<_> = f.cut_from.iter().collect();
                cut.sort_by(|x, y| x.0.cmp(y.0));
                for (a, g) in cut {
                    eprintln!(
                        "  {a} cut from {}",
                        if g.agents.is_empty() { "nobody".into() } else { g.agents.join(",") }
                    );
                }
            }
        }
        Call::Containers(crate::cli::ContainersCmd::List { select, agents, json }) => {
            let r = c
                .list_containers(pb::ListContainersRequest {
                    selector: agents.unwrap_or_default(),
                    select,
                })
                .await
                .map_err(explain)?
                .into_inner();
            let listed: Vec<(Option<&str>, &faultline_proto::agent::v1::Container)> = r
                .containers
                .iter()
                .filter_map(|a| Some((Some(a.agent.as_str()), a.container.as_ref()?)))
                .collect();
            crate::cli::print_containers(&listed, &r.unreachable, json);
        }
        Call::Pods(p) => {
            let (request, agents, json) = p.request();
            let r = c
                .list_pods(pb::ListPodsRequest {
                    selector: agents.unwrap_or_default(),
                    namespace: request.namespace,
                    select: request.select,
                })
                .await
                .map_err(explain)?
                .into_inner();
            let listed: Vec<(Option<&str>, &faultline_proto::agent::v1::Pod)> = r
                .pods
                .iter()
                .filter_map(|a| Some((Some(a.agent.as_str()), a.pod.as_ref()?)))
                .collect();
            crate::cli::print_pods(&listed, &r.unreachable, json);
        }
        Call::Events(a) => {
            let mut stream = c
                .watch_events(pb::WatchEventsRequest {
                    after_seq: a.after,
                    follow: a.follow,
                    last: a.last,
                })
                .await
                .map_err(explain)?
                .into_inner();
            while let Some(e) = stream.message().await.map_err(explain)? {
                let kind = pb::EventKind::try_from(e.kind).map_or_else(
                    |_| format!("kind {}", e.kind),
                    |k| k.as_str_name().to_ascii_lowercase(),
                );
                if a.json {
                    println!(
                        "{}",
                        json!({"seq": e.seq, "unix_ms": e.unix_ms, "kind": kind, "fault_id": e.fault_id, "agents": e.agents, "message": e.message})
                    );
                } else {
                    println!(
                        "{:>6} {} {:<18} {:<10} {:<16} {}",
                        e.seq,
                        clock(e.unix_ms),
                        kind,
                        e.fault_id,
                        e.agents.join(","),
                        e.message
                    );
                }
            }
        }
        Call::Fault(FaultCmd::Renew { ids, lease, json }) => {
            // The controller keeps the agents' short leases going by itself; what a user
            // renews is the fault's own end.
            let lease = lease.ok_or_else(|| anyhow::anyhow!("--lease is required with --controller: the fault's new lease from now, e.g. --lease 5m"))?;
            if ids.is_empty() {
                bail!("give the ids of the faults to renew (see `faultline fault list`)");
            }
            let mut out = Vec::new();
            for id in ids {
                let f = c
                    .renew_fault(pb::RenewFaultRequest { id, lease_ms: lease.as_millis() as u64 })
                    .await
                    .map_err(explain)?
                    .into_inner()
                    .fault
                    .unwrap_or_default();
                if !json {
                    println!(
                        "{} renewed: ends in {:.1} s",
                        f.id,
                        (f.expires_at_unix_ms - faultline_proto::now_unix_ms()) as f64 / 1000.0
                    );
                }
                out.push(fault_json(&f));
            }
            if json {
                println!("{}", serde_json::Value::Array(out));
            }
        }
    }
    Ok(())
}
