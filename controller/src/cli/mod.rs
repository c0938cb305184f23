//! Commands against a single agent.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use faultline_proto::{
    agent::v1::{self as pb, agent_service_client::AgentServiceClient, fault_spec::Kind},
    transport::{AGENT_NAME, Role, Security},
};
use serde_json::json;

pub mod controller;
mod kube_secrets;

use crate::{
    remote::{explain, unreachable_error},
    units,
};

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "faultline: inject network faults and see what they do"
)]
pub struct Cli {
    /// The agent to talk to, e.g. <https://10.0.0.5:7070>, or `local[:PORT]`: this network
    /// namespace's agent through its local socket (root only, no certificates). Unset, root
    /// uses the local socket where an agent serves it, and everyone else the default.
    #[arg(
        long,
        global = true,
        env = "FAULTLINE_AGENT",
        default_value = "https://127.0.0.1:7070",
        help_heading = "Connection"
    )]
    agent: String,
    /// Whether `agent` is clap's default (no flag, no variable): then root tries the local socket first.
    #[arg(skip)]
    agent_is_default: bool,
    /// ca.pem and this side's certificate: cli.pem/cli-key.pem, or controller.pem/
    /// controller-key.pem for `controller serve` (default /etc/faultline/tls).
    #[arg(long, global = true, env = "FAULTLINE_TLS_DIR", help_heading = "Connection")]
    tls_dir: Option<std::path::PathBuf>,
    /// Plaintext instead of mutual TLS: only to and from loopback addresses.
    #[arg(long, global = true, help_heading = "Connection")]
    insecure: bool,
    /// Go through this controller instead of one agent: fault commands then target
    /// agents by --select / --on.
    #[arg(long, global = true, env = "FAULTLINE_CONTROLLER", help_heading = "Connection")]
    pub controller: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

impl Cli {
    /// `controller serve`: a daemon, not a one-shot command.
    #[must_use]
    pub fn is_daemon(&self) -> bool {
        matches!(self.cmd, Cmd::Controller(crate::cli::controller::ControllerCmd::Serve { .. }))
    }

    /// `--agent` and `--controller` (or their variables) decide who is asked. A flag on the
    /// command line is a choice and the environment a default: `--agent URL` wins over an
    /// exported `FAULTLINE_CONTROLLER` (which `lab status --env` suggests), and is never
    /// silently ignored; both flags on one command line are refused.
    pub fn settle_endpoints(
        &mut self,
        agent: Option<clap::parser::ValueSource>,
        controller: Option<clap::parser::ValueSource>,
    ) -> Result<()> {
        use clap::parser::ValueSource::{CommandLine, DefaultValue, EnvVariable};
        self.agent_is_default = agent == Some(DefaultValue);
        match (agent, controller, self.controller.is_some()) {
            (Some(CommandLine), Some(CommandLine), _) => bail!(
                "give --agent URL (one agent) or --controller URL (through the controller), not both"
            ),
            (Some(CommandLine), _, true) => self.controller = None,
            (Some(EnvVariable), Some(EnvVariable), _) => {
                eprintln!(
                    "note: FAULTLINE_AGENT and FAULTLINE_CONTROLLER are both set; asking the controller (give --agent URL to ask the agent)"
                );
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum Cmd {
    /// The agent's host: kernel, interfaces, and what it can do (the doctor's probes).
    Info {
        #[arg(long)]
        json: bool,
    },
    /// What this host supports, per feature and per fault kind, with what to do where
    /// something is missing: runs `faultline-agent --doctor` (the probes a running agent
    /// reports). For a remote agent's view: `faultline --agent URL info`.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Apply, list, renew and revert faults.
    #[command(subcommand)]
    Fault(FaultCmd),
    /// Run the controller daemon.
    #[command(subcommand)]
    Controller(crate::cli::controller::ControllerCmd),
    /// Certificates for mutual TLS between controller, agents and CLI.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Print a shell completion script, e.g. `faultline completions bash > /etc/bash_completion.d/faultline`.
    Completions { shell: clap_complete::Shell },
    /// The controller's agents (needs --controller).
    #[command(subcommand)]
    Agents(crate::cli::controller::AgentsCmd),
    /// Cut agents into groups that cannot reach each other (needs --controller).
    Partition(crate::cli::controller::PartitionArgs),
    /// What the controller did and saw, oldest first; --follow keeps watching (needs --controller).
    Events(crate::cli::controller::EventsArgs),
    /// Send load to http(s)://, tcp://, redis:// or grpc:// on an open-loop schedule, or closed loop like wrk; print a summary.
    Load(crate::load::args::LoadArgs),
    /// Ask a probe now (http, tcp, redis, prometheus, command), as a scenario's `probes:` would; exit 1 on a failure.
    Probe(crate::probe::args::ProbeArgs),
    /// Run a scenario (load, faults on a schedule, guardrails) through a controller; write a run directory.
    Run(crate::run::RunArgs),
    /// A lab of namespaced hosts on this machine: agents, a controller, nginx and redis.
    #[command(subcommand)]
    Lab(crate::lab::LabCmd),
    /// Write report.html (plots inline) and PNG plots into a run directory (each of several:
    /// `faultline report runs/lab-*/` reports every lab run).
    Report {
        #[arg(required = true)]
        runs: Vec<std::path::PathBuf>,
        /// Draw the band from this run's baseline instead.
        #[arg(long)]
        baseline: Option<std::path::PathBuf>,
    },
    /// Analyse a run directory: phases vs baseline, anomaly windows, recovery time, verdicts.
    Analyze {
        run: std::path::PathBuf,
        /// Draw the band from this run's baseline instead (e.g. a run without faults).
        #[arg(long)]
        baseline: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The containers an agent can fault (through its host's Docker-compatible engine).
    #[command(subcommand)]
    Containers(ContainersCmd),
    /// The Kubernetes pods an agent can fault (through its node's CRI runtime).
    #[command(subcommand)]
    Pods(PodsCmd),
    /// The kernel's view (TCP RTT, connect latency, retransmits, drop reasons) and host metrics.
    Metrics {
        /// Only these remote peers (repeatable).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Print a new view every --interval until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long, value_parser = units::duration, default_value = "1s")]
        interval: Duration,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ContainersCmd {
    /// Running containers on the agent's host (with --controller: on every selected
    /// agent's host): name, id, runtime, init pid, addresses.
    List {
        /// Only containers carrying these labels, KEY=VALUE (repeatable or comma-separated).
        #[arg(long, value_delimiter = ',')]
        select: Vec<String>,
        /// With --controller: ask only the agents with these labels, e.g. zone=a.
        #[arg(long)]
        agents: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum PodsCmd {
    /// Ready pods on the agent's node (with --controller: on every selected agent's node):
    /// namespace/name, addresses, containers, the runtime that answered.
    List {
        /// Only this namespace (default: every namespace).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Only pods whose own labels meet these requirements, as kubectl's -l reads them
        /// (app=web, 'tier in (a,b)', '!canary'; repeatable or comma-separated).
        #[arg(long, short = 'l')]
        select: Vec<String>,
        /// With --controller: ask only the agents with these labels, e.g. zone=a.
        #[arg(long)]
        agents: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

impl PodsCmd {
    /// The agent's request and the controller's agent selector.
    pub(crate) fn request(self) -> (pb::ListPodsRequest, Option<String>, bool) {
        let Self::List { namespace, select, agents, json } = self;
        (pb::ListPodsRequest { namespace: namespace.unwrap_or_default(), select }, agents, json)
    }
}

/// Pods as `pods list` shows them, each with the agent that saw it when asked through a
/// controller.
pub(crate) fn print_pods(list: &[(Option<&str>, &pb::Pod)], unreachable: &[String], json: bool) {
    if json {
        let list: Vec<_> = list
            .iter()
            .map(|(agent, p)| {
                let containers: Vec<_> = p.containers.iter().map(|c| json!({"name": c.name, "id": c.id, "pid": c.pid})).collect();
                let mut v = json!({"namespace": p.namespace, "name": p.name, "uid": p.uid, "runtime": p.runtime, "labels": p.labels, "addresses": p.addresses, "sandbox_id": p.sandbox_id, "pid": p.pid, "containers": containers});
                if let Some(a) = agent {
                    v["agent"] = json!(a);
                }
                v
            })
            .collect();
        println!("{}", json!({"pods": list, "unreachable": unreachable}));
        return;
    }
    for (agent, p) in list {
        let agent = agent.map_or(String::new(), |a| format!("{a:<12} "));
        let containers: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
        println!(
            "{agent}{:<32} {:<28} containers {}",
            format!("{}/{}", p.namespace, p.name),
            p.addresses.join(" "),
            containers.join(",")
        );
    }
    for u in unreachable {
        eprintln!("not asked: {u}");
    }
}

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Create a CA and one certificate per role in DIR: ca.pem, agent.pem (names no agent:
    /// serves, but cannot register with a controller), controller.pem, cli.pem (operator:
    /// applies and reverts faults) and viewer.pem (reads only), each with its -key.pem.
    Init {
        dir: std::path::PathBuf,
        /// A name or address the Web API is reached by (repeatable): the controller's
        /// certificate names it too, so browsers and curl can verify the server.
        #[arg(long = "web-host")]
        web_hosts: Vec<String>,
    },
    /// Issue one more certificate from the CA in DIR (needs ca-key.pem there): `agent NAME`
    /// writes agent-NAME.pem, which only that agent may register with; `operator NAME` and
    /// `viewer NAME` write a certificate for one person or script.
    Issue {
        role: IssueRole,
        name: String,
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Inside a Kubernetes cluster (the certificates Job of dist/kubernetes): make the CA
    /// and certificates as `init` does, in a private temporary directory removed after, and
    /// store them as Secrets of the namespace: faultline-controller (the CA's key, which
    /// issues enrolled agents' certificates; the controller's pair; the Web API's tokens),
    /// faultline-agent-bootstrap (the shared agent pair, which names no agent: it can only
    /// enrol) and faultline-operator (the CLI's and viewer's pairs and tokens). Changes
    /// nothing once faultline-controller exists: the CA is made once.
    KubernetesSecrets {
        /// The namespace of the Secrets (default: the Job pod's, from `POD_NAMESPACE`).
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: String,
        /// A name the Web API is reached by (repeatable), as for `init`.
        #[arg(long = "web-host")]
        web_hosts: Vec<String>,
        /// The API server (default: the cluster's own, from the pod's environment).
        #[arg(long, value_name = "URL")]
        kube_api: Option<String>,
        /// The service-account token and ca.crt to call it with (default:
        /// /var/run/secrets/kubernetes.io/serviceaccount).
        #[arg(long, value_name = "DIR")]
        kube_credentials: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum IssueRole {
    Agent,
    Operator,
    Viewer,
}

#[derive(Subcommand)]
pub enum FaultCmd {
    /// Apply a fault of one kind (`faultline fault apply KIND --help` lists its flags).
    Apply(Apply),
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revert one fault by id, or --all.
    Revert {
        id: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Renew leases (all faults unless ids are given).
    Renew {
        #[arg(long)]
        json: bool,
        ids: Vec<String>,
        /// New lease from now (at most a week); default: each fault's own (on one agent;
        /// through a controller it is required).
        #[arg(long, value_parser = units::lease)]
        lease: Option<Duration>,
    },
}

pub use crate::faults::{Apply, spec};

fn status_json(f: &pb::FaultStatus) -> serde_json::Value {
    let s = f.spec.clone().unwrap_or_default();
    let c = f.counters.unwrap_or_default();
    let kind = s.kind.as_ref().map_or("", Kind::name);
    json!({
        "id": f.id,
        "kind": kind,
        "interface": s.interface,
        "direction": pb::Direction::try_from(s.direction).map_or("?", |d| d.as_str_name()),
        "peers": s.r#match.map(|m| m.peers).unwrap_or_default(),
        "lease_ms": s.lease_ms,
        "label": s.label,
        "applied_at_unix_ms": f.applied_at_unix_ms,
        "lease_expires_at_unix_ms": f.lease_expires_at_unix_ms,
        "engine": f.engine,
        "kernel_objects": f.kernel_objects,
        "counters": { "matched_packets": c.matched_packets, "matched_bytes": c.matched_bytes, "dropped_packets": c.dropped_packets },
        "observed": f.observed.as_ref().map(|o| json!({"summary": o.summary, "configured": o.configured, "measured": o.measured, "unit": o.unit, "samples": o.samples})),
        "processes": f.processes.iter().map(|p| json!({"pid": p.pid, "start_time": p.start_time, "name": p.name})).collect::<Vec<_>>(),
        "cgroup": f.cgroup,
        "container": f.container.as_ref().map(|c| json!({"id": c.id, "name": c.name, "runtime": c.runtime, "pid": c.pid, "netns_inode": c.netns_inode, "addresses": c.addresses})),
        "container_gone": f.container_gone,
    })
}

fn print_status(f: &pb::FaultStatus) {
    let j = status_json(f);
    let left = (f.lease_expires_at_unix_ms
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64))
    .max(0);
    println!(
        "{:<12} {:<10} {:<10} {:<8} lease {:>7.1}s  matched {:>9}  dropped {:>9}  {}",
        f.id,
        j["kind"].as_str().unwrap_or(""),
        j["interface"].as_str().unwrap_or(""),
        j["direction"].as_str().unwrap_or("").trim_start_matches("DIRECTION_").to_lowercase(),
        left as f64 / 1000.0,
        j["counters"]["matched_packets"],
        j["counters"]["dropped_packets"],
        if f.processes.is_empty() && f.cgroup.is_empty() {
            j["peers"]
                .as_array()
                .map(|p| p.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_default()
        } else {
            format!(
                "{} pids {}",
                f.cgroup,
                f.processes
                    .iter()
                    .map(|p| format!("{}({})", p.pid, p.name))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        },
    );
}

fn print_observed(f: &pb::FaultStatus) {
    if let Some(c) = &f.container {
        println!(
            "    in container {} ({} {}, netns:[{}])",
            c.name,
            c.runtime,
            c.id.get(..12).unwrap_or(&c.id),
            c.netns_inode
        );
    }
    if !f.container_gone.is_empty() {
        println!("    {}", f.container_gone);
    }
    if let Some(o) = &f.observed {
        let unit = if o.unit == "percent" { "%" } else { o.unit.as_str() };
        println!(
            "    observed: measured={:.2}{unit} configured={}{unit} samples={}  {}",
            o.measured, o.configured, o.samples, o.summary
        );
    }
}

/// The upper bound (ms) of the log2 bucket holding quantile `q`.
fn quantile_ms(h: &pb::Histogram, q: f64) -> f64 {
    h.quantile_bound_us(q).map_or(f64::INFINITY, |us| us as f64 / 1000.0)
}

fn mean_ms(h: &pb::Histogram) -> f64 {
    h.mean_us() / 1000.0
}

fn sample_json(s: &pb::MetricsSample) -> serde_json::Value {
    let hist = |h: &Option<pb::Histogram>| {
        h.as_ref().map(|h| json!({"buckets": h.buckets, "count": h.count, "sum_us": h.sum_us}))
    };
    let host = s.host.clone().unwrap_or_default();
    json!({
        "unix_ms": s.unix_ms,
        "kernel_metrics_detail": s.kernel_metrics_detail,
        "peers": s.peers.iter().map(|p| json!({"peer": p.peer, "container": p.container, "srtt": hist(&p.srtt), "connect": hist(&p.connect), "connects": p.connects,
            "connect_failures": p.connect_failures, "retransmits": p.retransmits})).collect::<Vec<_>>(),
        "drops": s.drops.iter().map(|d| json!({"reason": d.reason, "value": d.value, "count": d.count})).collect::<Vec<_>>(),
        "host": {"cpu_percent": host.cpu_percent, "memory_used_bytes": host.memory_used_bytes, "memory_total_bytes": host.memory_total_bytes,
            "load1": host.load1, "load5": host.load5, "load15": host.load15,
            "interfaces": host.interfaces.iter().map(|i| json!({"name": i.name, "rx_bytes": i.rx_bytes, "tx_bytes": i.tx_bytes, "rx_packets": i.rx_packets,
                "tx_packets": i.tx_packets, "rx_errors": i.rx_errors, "tx_errors": i.tx_errors})).collect::<Vec<_>>()},
        "faults": s.faults.iter().map(status_json).collect::<Vec<_>>(),
    })
}

fn print_sample(s: &pb::MetricsSample) {
    let h = s.host.clone().unwrap_or_default();
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    println!(
        "host  cpu {:.1} %  memory {:.1}/{:.1} GiB  load {:.2} {:.2} {:.2}",
        h.cpu_percent,
        gib(h.memory_used_bytes),
        gib(h.memory_total_bytes),
        h.load1,
        h.load5,
        h.load15
    );
    if !s.kernel_metrics_detail.is_empty() {
        println!("kernel metrics unavailable: {}", s.kernel_metrics_detail);
    }
    // Quantiles are log2 bucket upper bounds: "p50<=" 262.1 means the median lies in (131.1, 262.1] ms.
    println!(
        "{:<28} {:>8} {:>10} {:>10} {:>10} {:>8} {:>10} {:>6} {:>8}",
        "peer", "srtt_n", "p50<=ms", "p99<=ms", "mean_ms", "conn_n", "conn_p50", "fail", "retrans"
    );
    for p in &s.peers {
        let srtt = p.srtt.clone().unwrap_or_default();
        let conn = p.connect.clone().unwrap_or_default();
        let q = |h: &pb::Histogram, x| {
            if h.count == 0 { "-".to_owned() } else { format!("{:.3}", quantile_ms(h, x)) }
        };
        println!(
            "{:<28} {:>8} {:>10} {:>10} {:>10.3} {:>8} {:>10} {:>6} {:>8}",
            // A container's sockets: "web: 10.0.0.5".
            if p.container.is_empty() {
                p.peer.clone()
            } else {
                format!("{}: {}", p.container, p.peer)
            },
            srtt.count,
            q(&srtt, 0.5),
            q(&srtt, 0.99),
            mean_ms(&srtt),
            conn.count,
            q(&conn, 0.5),
            p.connect_failures,
            p.retransmits
        );
    }
    if !s.drops.is_empty() {
        let mut drops = s.drops.clone();
        drops.sort_by_key(|d| std::cmp::Reverse(d.count));
        println!(
            "kernel drops: {}",
            drops
                .iter()
                .map(|d| format!("{} {}", d.reason, d.count))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for f in &s.faults {
        print_status(f);
        print_observed(f);
    }
}

/// Why a connection failed, with the cause a TLS refusal hides under "transport error".
/// `faultline doctor`: the agent binary probes (it holds the eBPF programs whose loading is
/// part of the answer); this one only finds it and passes its report on.
fn doctor(json: bool) -> Result<()> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("faultline-agent")))
        .filter(|p| p.exists());
    let agent = beside.unwrap_or_else(|| "faultline-agent".into());
    let mut cmd = std::process::Command::new(&agent);
    cmd.arg("--doctor");
    if json {
        cmd.arg("--json");
    }
    let status = cmd.status().with_context(|| format!("running {} --doctor (faultline doctor needs faultline-agent beside faultline or on PATH)", agent.display()))?;
    if !status.success() {
        bail!("{} --doctor failed: {status}", agent.display());
    }
    Ok(())
}

/// Commands that ask neither one agent nor a controller. clap gives a global flag to
/// every command, so without this their help would offer `--agent` and `--controller`
/// for nothing (`controller serve` is the controller; `lab` starts its own).
const NO_ENDPOINT: &[&[&str]] = &[
    &["controller", "serve"],
    &["load"],
    &["lab"],
    &["report"],
    &["analyze"],
    &["certs"],
    &["doctor"],
    &["completions"],
];

/// The command line as `main` parses it: `Cli`, with `--agent` and `--controller` hidden
/// where they do nothing. clap copies a global flag into each subcommand that has no
/// flag of that id yet, so a hidden copy placed there first is what that command (and,
/// being global itself, its own subcommands) shows.
pub fn command() -> clap::Command {
    fn hide(cmd: clap::Command, path: &[&str], copies: &[clap::Arg]) -> clap::Command {
        match path {
            [] => copies.iter().fold(cmd, |c, a| c.arg(a.clone().hide(true))),
            [first, rest @ ..] => cmd.mut_subcommand(*first, |sub| hide(sub, rest, copies)),
        }
    }
    let cmd = <Cli as clap::CommandFactory>::command();
    let copies: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| ["agent", "controller"].contains(&a.get_id().as_str()))
        .cloned()
        .collect();
    NO_ENDPOINT.iter().fold(cmd, |c, path| hide(c, path, &copies))
}

/// Every command, in one exhaustive match: local work, the controller, or one agent.
pub async fn run(cli: Cli) -> Result<()> {
    let Cli { agent, agent_is_default, tls_dir, insecure, controller, cmd } = cli;
    let security =
        || Security::from_flags(insecure, tls_dir.as_deref(), Role::Cli).map_err(lab_hint);
    let agent = AgentAt { url: agent, is_default: agent_is_default, security: &security };
    let need_controller = |url: Option<String>| {
        url.context("`agents`, `partition`, `events` and `run` ask a controller: give --controller URL (or FAULTLINE_CONTROLLER)")
    };
    match cmd {
        Cmd::Controller(c) => controller::serve(&c, insecure, tls_dir.as_deref()).await,
        Cmd::Load(a) => crate::load::args::run(&a).await,
        Cmd::Probe(a) => crate::probe::args::run(&a).await,
        Cmd::Lab(l) => crate::lab::run(l).await,
        Cmd::Report { runs, baseline } => {
            // Each run its report; one that cannot be drawn does not stop the others, and
            // is named in the error at the end.
            let mut failed = Vec::new();
            for run in &runs {
                match crate::report::write(run, baseline.as_deref()) {
                    Ok(files) => {
                        for f in files {
                            println!("{}", f.display());
                        }
                        if let Some(md) = crate::report::llm::add_to_report(run).await {
                            println!("{}", md.display());
                        }
                    }
                    Err(e) if runs.len() == 1 => return Err(e),
                    Err(e) => {
                        eprintln!("error: {}: {e:#}", run.display());
                        failed.push(run.display().to_string());
                    }
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                bail!(
                    "no report for {} of {} runs: {}",
                    failed.len(),
                    runs.len(),
                    failed.join(", ")
                )
            }
        }
        Cmd::Analyze { run, baseline, json } => {
            let a = crate::report::analyze::analyze(&run, baseline.as_deref())?;
            if json {
                println!("{}", serde_json::to_string(&a)?);
            } else {
                crate::report::analyze::print(&a);
            }
            Ok(())
        }
        Cmd::Certs(CertsCmd::KubernetesSecrets {
            namespace,
            web_hosts,
            kube_api,
            kube_credentials,
        }) => {
            kube_secrets::run(
                &namespace,
                &web_hosts,
                kube_api.as_deref(),
                kube_credentials.as_deref(),
            )
            .await
        }
        Cmd::Certs(c) => certs(&c),
        Cmd::Doctor { json } => doctor(json),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "faultline", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Run(r) => {
            // A scenario is checked whole before anything connects.
            crate::run::scenario::load(r.scenario())?;
            let url = need_controller(controller)?;
            controller::call(&url, &security()?, controller::Call::Run(r)).await
        }
        Cmd::Agents(a) => {
            controller::call(
                &need_controller(controller)?,
                &security()?,
                controller::Call::Agents(a),
            )
            .await
        }
        Cmd::Partition(p) => {
            controller::call(
                &need_controller(controller)?,
                &security()?,
                controller::Call::Partition(p),
            )
            .await
        }
        Cmd::Events(e) => {
            controller::call(
                &need_controller(controller)?,
                &security()?,
                controller::Call::Events(e),
            )
            .await
        }
        Cmd::Fault(mut f) => {
            // Bad flags are reported before any connection is tried: a typo should not
            // read as "cannot reach the agent".
            if let FaultCmd::Apply(a) = &mut f {
                crate::faults::read_peers_file(a)?;
                spec(a)?;
            }
            match controller {
                Some(url) => controller::call(&url, &security()?, controller::Call::Fault(f)).await,
                None => agent_call(&agent, AgentCall::Fault(f)).await,
            }
        }
        Cmd::Info { json } => {
            if controller.is_some() {
                bail!("`info` asks one agent: give --agent URL, not --controller");
            }
            agent_call(&agent, AgentCall::Info { json }).await
        }
        Cmd::Containers(c) => match controller {
            Some(url) => {
                controller::call(&url, &security()?, controller::Call::Containers(c)).await
            }
            None => agent_call(&agent, AgentCall::Containers(c)).await,
        },
        Cmd::Pods(p) => match controller {
            Some(url) => controller::call(&url, &security()?, controller::Call::Pods(p)).await,
            None => agent_call(&agent, AgentCall::Pods(p)).await,
        },
        Cmd::Metrics { peers, watch, interval, json } => {
            if controller.is_some() {
                bail!("`metrics` asks one agent: give --agent URL, not --controller");
            }
            agent_call(&agent, AgentCall::Metrics { peers, watch, interval, json }).await
        }
    }
}

/// Containers as `containers list` shows them, each with the agent that saw it when
/// asked through a controller.
pub(crate) fn print_containers(
    list: &[(Option<&str>, &pb::Container)],
    unreachable: &[String],
    json: bool,
) {
    if json {
        let list: Vec<_> = list
            .iter()
            .map(|(agent, c)| {
                let mut v = json!({"id": c.id, "name": c.name, "runtime": c.runtime, "pid": c.pid, "netns_inode": c.netns_inode, "addresses": c.addresses, "labels": c.labels});
                if let Some(a) = agent {
                    v["agent"] = json!(a);
                }
                v
            })
            .collect();
        println!("{}", json!({"containers": list, "unreachable": unreachable}));
        return;
    }
    for (agent, c) in list {
        let agent = agent.map_or(String::new(), |a| format!("{a:<12} "));
        println!(
            "{agent}{:<24} {:<12} {:<10} pid {:<8} {}",
            c.name,
            c.id.get(..12).unwrap_or(&c.id),
            c.runtime,
            c.pid,
            c.addresses.join(" ")
        );
    }
    for u in unreachable {
        eprintln!("unreachable: {u}");
    }
}

fn certs(c: &CertsCmd) -> Result<()> {
    match c {
        // Calls the API server: run by the async caller.
        CertsCmd::KubernetesSecrets { .. } => anyhow::bail!("certs kubernetes-secrets: not here"),
        CertsCmd::Issue { role, name, dir } => {
            use faultline_proto::identity::CertRole;
            let role = match role {
                IssueRole::Agent => CertRole::Agent,
                IssueRole::Operator => CertRole::Operator,
                IssueRole::Viewer => CertRole::Viewer,
            };
            for f in faultline_proto::transport::certgen::issue(dir, role, name)? {
                println!("{}", f.display());
            }
        }
        CertsCmd::Init { dir, web_hosts } => {
            for f in faultline_proto::transport::certgen::init_with(dir, web_hosts)? {
                println!("{}", f.display());
            }
            eprintln!(
                "give agents --tls-dir {d} (agent.pem; each registering agent its own: faultline certs issue agent NAME --dir {d}), the controller --tls-dir {d} (controller.pem), the CLI --tls-dir {d} or FAULTLINE_TLS_DIR (cli.pem); copy ca.pem and each host's pair to it, and keep ca-key.pem off the hosts. A browser (the Web API's console) imports cli.p12 or viewer.p12 with the password in cli.p12.password / viewer.p12.password, and trusts ca.pem as an authority",
                d = dir.display()
            );
        }
    }
    Ok(())
}

/// What is asked of one agent.
enum AgentCall {
    Info { json: bool },
    Fault(FaultCmd),
    Containers(ContainersCmd),
    Pods(PodsCmd),
    Metrics { peers: Vec<String>, watch: bool, interval: Duration, json: bool },
}

/// The one agent a command asks: `--agent` as given, whether it was clap's default, and
/// the TLS setup (read only if TCP is used).
struct AgentAt<'a> {
    url: String,
    is_default: bool,
    security: &'a dyn Fn() -> Result<Security>,
}

/// Certificates not found while a lab is up: the lab's are the ones to use (`certs init`
/// would make a new CA, which the lab's daemons refuse).
fn lab_hint(e: faultline_proto::transport::TransportError) -> anyhow::Error {
    use faultline_proto::transport::TransportError;
    let up = std::path::Path::new(crate::lab::DEFAULT_DIR).join("lab.json").exists();
    match e {
        TransportError::Read { path, error, .. } if up => anyhow::anyhow!(
            "TLS: reading {}: {error}. A lab is up ({}): its certificates are the ones to use; point the CLI at it with `eval \"$(faultline lab status --env)\"`",
            path.display(),
            crate::lab::DEFAULT_DIR
        ),
        e => e.into(),
    }
}

/// The default port, where `local` without one looks.
const AGENT_PORT: u16 = 7070;

impl AgentAt<'_> {
    /// `local[:PORT]` must be the local socket; a URL is that URL over TCP; the default is
    /// the local socket for root where an agent serves it, else the default URL. The
    /// local socket skips the certificates and TLS (about half a fault's time from the
    /// shell), which is why root is sent there unasked.
    async fn connect(&self) -> Result<tonic::transport::Channel> {
        use faultline_proto::transport::{LocalError, local_channel};
        if let Some(port) = local_port(&self.url)? {
            return local_channel(port).await.with_context(|| format!("--agent {}", self.url));
        }
        if self.is_default && nix::unistd::geteuid().is_root() {
            match local_channel(AGENT_PORT).await {
                Ok(channel) => return Ok(channel),
                Err(LocalError::Absent { .. }) => {}
                Err(e) => eprintln!("note: {e}; using {}", self.url),
            }
        }
        let endpoint = (self.security)()?.endpoint("--agent", &self.url, AGENT_NAME)?;
        endpoint.connect().await.map_err(|e| unreachable_error("agent", &self.url, &e))
    }
}

/// The port of `--agent local` (7070) or `local:PORT`; None for a URL.
fn local_port(agent: &str) -> Result<Option<u16>> {
    let Some(rest) = agent.strip_prefix("local") else { return Ok(None) };
    match rest {
        "" => Ok(Some(AGENT_PORT)),
        _ => match rest.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0) {
            Some(port) => Ok(Some(port)),
            None => bail!("--agent {agent:?}: `local` or `local:PORT` (PORT 1-65535), or a URL"),
        },
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per agent call, each a request and its rendering"
)]
async fn agent_call(agent: &AgentAt<'_>, call: AgentCall) -> Result<()> {
    let mut client = AgentServiceClient::new(agent.connect().await?);
    match call {
        AgentCall::Info { json } => {
            let d = client.describe(pb::DescribeRequest {}).await.map_err(explain)?.into_inner();
            let c = d.capabilities.unwrap_or_default();
            if json {
                let ifaces: Vec<_> = d.interfaces.iter().map(|i| json!({"name": i.name, "index": i.index, "mac": i.mac, "mtu": i.mtu, "up": i.up, "addresses": i.addresses})).collect();
                println!(
                    "{}",
                    json!({"hostname": d.hostname, "kernel": d.kernel_release, "agent_version": d.agent_version, "interfaces": ifaces,
                        "capabilities": {"netem": c.netem, "netem_detail": c.netem_detail, "htb": c.htb, "tbf": c.tbf, "ifb": c.ifb, "ebpf": c.ebpf,
                        "ebpf_detail": c.ebpf_detail, "tc_attach_mode": c.tc_attach_mode, "cgroup_v2_freeze": c.cgroup_v2_freeze,
                        "cgroup_v2_cpu": c.cgroup_v2_cpu, "systemd": c.systemd, "kernel_metrics": c.kernel_metrics, "kernel_metrics_detail": c.kernel_metrics_detail},
                        "doctor": faultline_proto::doctor::json(&d.hostname, &d.kernel_release, &c.probes)})
                );
            } else {
                println!("agent {}", d.agent_version);
                print!(
                    "{}",
                    faultline_proto::doctor::render(&d.hostname, &d.kernel_release, &c.probes)
                );
                println!("\ninterfaces");
                for i in d.interfaces {
                    println!(
                        "  {:>3} {:<16} {:<5} mtu {:<6} {}",
                        i.index,
                        i.name,
                        if i.up { "up" } else { "down" },
                        i.mtu,
                        i.addresses.join(" ")
                    );
                }
            }
        }
        AgentCall::Containers(ContainersCmd::List { select, agents, json }) => {
            if agents.is_some() {
                bail!("--agents picks agents through a controller: give --controller URL");
            }
            let r = client
                .list_containers(pb::ListContainersRequest { select })
                .await
                .map_err(explain)?
                .into_inner();
            let listed: Vec<(Option<&str>, &pb::Container)> =
                r.containers.iter().map(|c| (None, c)).collect();
            print_containers(&listed, &r.unreachable, json);
        }
        AgentCall::Pods(p) => {
            let (request, agents, json) = p.request();
            if agents.is_some() {
                bail!("--agents picks agents through a controller: give --controller URL");
            }
            let r = client.list_pods(request).await.map_err(explain)?.into_inner();
            let listed: Vec<(Option<&str>, &pb::Pod)> = r.pods.iter().map(|p| (None, p)).collect();
            print_pods(&listed, &r.unreachable, json);
        }
        AgentCall::Fault(FaultCmd::Apply(a)) => {
            let f = client
                .apply_fault(pb::ApplyFaultRequest {
                    spec: Some(spec(&a)?),
                    dry_run: a.common().dry_run,
                })
                .await
                .map_err(explain)?
                .into_inner()
                .fault
                .unwrap_or_default();
            if a.common().json {
                println!("{}", status_json(&f));
                return Ok(());
            }
            if a.common().dry_run {
                let what = f.spec.as_ref().map(crate::faults::in_words).unwrap_or_default();
                println!(
                    "dry run: {what} would act on this agent (it checked it; nothing was changed)"
                );
                for p in &f.processes {
                    println!("  pid {} ({})", p.pid, p.name);
                }
                return Ok(());
            }
            // The id alone on the first line, for scripts: `id=$(faultline fault apply ...)`.
            println!("{}", f.id);
            for p in &f.processes {
                eprintln!("  pid {} ({})", p.pid, p.name);
            }
            for note in f.kernel_objects.iter().filter(|_| a.kind.is_process()) {
                eprintln!("  {note}");
            }
        }
        AgentCall::Fault(FaultCmd::List { json }) => {
            let faults = client
                .list_faults(pb::ListFaultsRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .faults;
            if json {
                println!("{}", serde_json::Value::Array(faults.iter().map(status_json).collect()));
            } else if faults.is_empty() {
                println!("no active faults");
            } else {
                for f in &faults {
                    print_status(f);
                    print_observed(f);
                }
            }
        }
        AgentCall::Metrics { peers, watch, interval, json } => {
            let keep = |mut s: pb::MetricsSample| {
                if !peers.is_empty() {
                    s.peers.retain(|p| peers.contains(&p.peer));
                }
                s
            };
            let show = |s: &pb::MetricsSample| {
                if json { println!("{}", sample_json(s)) } else { print_sample(s) }
            };
            if watch {
                let mut stream = client
                    .watch_metrics(pb::WatchMetricsRequest {
                        interval_ms: interval.as_millis() as u64,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                while let Some(s) = stream.message().await.map_err(explain)? {
                    if !json {
                        println!();
                    }
                    show(&keep(s));
                }
            } else {
                show(&keep(
                    client
                        .get_metrics(pb::GetMetricsRequest {})
                        .await
                        .map_err(explain)?
                        .into_inner(),
                ));
            }
        }
        AgentCall::Fault(FaultCmd::Revert { id, all, json }) => {
            if id.is_none() && !all {
                bail!("give a fault id, or --all");
            }
            let r = client
                .revert_fault(pb::RevertFaultRequest { id: id.unwrap_or_default(), all })
                .await
                .map_err(explain)?
                .into_inner();
            if json {
                println!("{}", json!({"reverted": r.reverted}));
            } else {
                for id in r.reverted {
                    println!("reverted {id}");
                }
            }
        }
        AgentCall::Fault(FaultCmd::Renew { ids, lease, json }) => {
            let r = client
                .renew_leases(pb::RenewLeasesRequest {
                    ids,
                    lease_ms: lease.map_or(0, |d| d.as_millis() as u64),
                })
                .await
                .map_err(explain)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(r.faults.iter().map(status_json).collect())
                );
            } else {
                r.faults.iter().for_each(print_status);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The help text of one command line.
    fn help(args: &[&str]) -> String {
        let e = super::command()
            .try_get_matches_from(
                std::iter::once("faultline").chain(args.iter().copied()).chain(["--help"]),
            )
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        e.to_string()
    }

    #[test]
    fn connection_flags_show_only_where_they_apply() {
        for args in [
            &["controller", "serve"][..],
            &["load"],
            &["lab", "up"],
            &["certs", "init"],
            &["report"],
            &["analyze"],
            &["doctor"],
        ] {
            let h = help(args);
            assert!(!h.contains("--agent <") && !h.contains("--controller <"), "{args:?}:\n{h}");
        }
        for args in [
            &["fault", "apply", "netem"][..],
            &["fault", "list"],
            &["info"],
            &["run"],
            &["agents", "list"],
            &["metrics"],
            &["containers", "list"],
        ] {
            let h = help(args);
            assert!(h.contains("--agent <") && h.contains("--controller <"), "{args:?}:\n{h}");
        }
        // Given anyway, a hidden flag is accepted, as before.
        assert!(
            super::command()
                .try_get_matches_from([
                    "faultline",
                    "--agent",
                    "https://h:7070",
                    "load",
                    "http://x/"
                ])
                .is_ok()
        );
    }

    #[test]
    fn local_names_the_socket_and_anything_else_is_a_url_or_an_error() {
        assert_eq!(super::local_port("local").unwrap(), Some(7070));
        assert_eq!(super::local_port("local:7071").unwrap(), Some(7071));
        assert_eq!(super::local_port("https://127.0.0.1:7070").unwrap(), None);
        for bad in ["local:", "local:0", "local:65536", "local:x", "localhost:7070"] {
            let e = super::local_port(bad).unwrap_err().to_string();
            assert!(e.starts_with("--agent") && e.contains("local:PORT"), "{bad}: {e}");
        }
    }

    /// Only clap's default sends root to the local socket; a flag or the variable is a
    /// URL the user chose.
    #[test]
    fn only_the_default_agent_may_become_the_local_socket() {
        use clap::FromArgMatches;
        let parse = |args: &[&str]| {
            let m = super::command()
                .try_get_matches_from(std::iter::once("faultline").chain(args.iter().copied()))
                .unwrap();
            let mut cli = super::Cli::from_arg_matches(&m).unwrap();
            cli.settle_endpoints(m.value_source("agent"), m.value_source("controller")).unwrap();
            cli.agent_is_default
        };
        assert!(parse(&["fault", "list"]) || std::env::var_os("FAULTLINE_AGENT").is_some());
        assert!(!parse(&["--agent", "https://127.0.0.1:7070", "fault", "list"]));
    }
}
