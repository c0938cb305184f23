//! Commands against a single agent.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use faultline_proto::agent::v1::{self as pb, agent_service_client::AgentServiceClient, fault_spec::Kind};
use serde_json::json;

use crate::units;

#[derive(Parser)]
#[command(name = "faultline", version, about = "faultline: inject network faults and see what they do")]
pub struct Cli {
    /// The agent to talk to, e.g. http://10.0.0.5:7070.
    #[arg(long, global = true, env = "FAULTLINE_AGENT", default_value = "http://127.0.0.1:7070")]
    agent: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The agent's host: kernel, interfaces, capabilities.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Apply, list, renew and revert faults.
    #[command(subcommand)]
    Fault(FaultCmd),
}

#[derive(Subcommand)]
enum FaultCmd {
    /// Apply a fault: netem, bandwidth, drop or partition.
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
    },
    /// Renew leases (all faults unless ids are given).
    Renew {
        ids: Vec<String>,
        /// New lease from now; default: each fault's own.
        #[arg(long, value_parser = units::duration)]
        lease: Option<Duration>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KindArg {
    Netem,
    Bandwidth,
    Drop,
    Partition,
    Freeze,
    Kill,
    Restart,
    CpuStress,
    MemoryPressure,
    CpuThrottle,
}

impl KindArg {
    fn is_process(self) -> bool {
        !matches!(self, Self::Netem | Self::Bandwidth | Self::Drop | Self::Partition)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FreezeArg {
    Cgroup,
    Sigstop,
}

#[derive(Clone, Copy, ValueEnum)]
enum DirArg {
    Egress,
    Ingress,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, ValueEnum)]
enum DistArg {
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

#[derive(Args)]
struct Apply {
    kind: KindArg,
    /// Interface on the agent's host (network faults).
    #[arg(long, short = 'i')]
    interface: Option<String>,
    #[arg(long, value_enum, default_value = "egress")]
    direction: DirArg,
    /// How long the fault lasts unless renewed (required except for kill and restart:
    /// every fault ends by itself).
    #[arg(long, value_parser = units::duration)]
    lease: Option<Duration>,
    /// Only traffic to/from these CIDRs (repeatable).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Only traffic with this local or remote port, or range A-B (repeatable).
    #[arg(long = "port")]
    ports: Vec<String>,
    #[arg(long, value_enum)]
    protocol: Option<ProtoArg>,
    /// Also affect the agent's own control connections.
    #[arg(long)]
    include_control: bool,
    #[arg(long, default_value = "")]
    label: String,
    /// netem: added round-trip delay (split between directions with --direction both).
    #[arg(long, value_parser = units::duration)]
    delay: Option<Duration>,
    #[arg(long, value_parser = units::duration)]
    jitter: Option<Duration>,
    #[arg(long, value_parser = units::percent)]
    delay_correlation: Option<f64>,
    #[arg(long, value_enum)]
    distribution: Option<DistArg>,
    /// netem: random loss; drop: drop probability.
    #[arg(long, value_parser = units::percent)]
    loss: Option<f64>,
    #[arg(long, value_parser = units::percent)]
    loss_correlation: Option<f64>,
    /// netem Gilbert-Elliott loss: P,R[,1-H[,1-K]] in percent.
    #[arg(long)]
    gemodel: Option<String>,
    #[arg(long, value_parser = units::percent)]
    duplicate: Option<f64>,
    #[arg(long, value_parser = units::percent)]
    corrupt: Option<f64>,
    #[arg(long, value_parser = units::percent)]
    reorder: Option<f64>,
    #[arg(long, value_parser = units::percent)]
    reorder_correlation: Option<f64>,
    /// netem rate or bandwidth limit, e.g. 10mbit.
    #[arg(long, value_parser = units::rate)]
    rate: Option<u64>,
    /// bandwidth: burst bytes, e.g. 32k.
    #[arg(long, value_parser = units::size)]
    burst: Option<u32>,
    #[arg(long)]
    limit: Option<u32>,
    /// Process faults: a cgroup v2 path ("/app/db").
    #[arg(long, help_heading = "Process target")]
    cgroup: Option<String>,
    /// Process faults: a systemd unit.
    #[arg(long, help_heading = "Process target")]
    unit: Option<String>,
    #[arg(long, help_heading = "Process target")]
    pid: Option<u32>,
    /// Process faults: a regular expression on the process name (like pgrep).
    #[arg(long, help_heading = "Process target")]
    name: Option<String>,
    /// With --name: match the whole command line (like pgrep -f).
    #[arg(long, help_heading = "Process target")]
    full: bool,
    /// With --pid or --name: the processes' descendants too.
    #[arg(long, help_heading = "Process target")]
    tree: bool,
    /// freeze: cgroup.freeze or SIGSTOP (default: by target).
    #[arg(long, value_enum)]
    method: Option<FreezeArg>,
    /// kill, restart: a signal number or name (TERM, KILL, ...).
    #[arg(long, value_parser = units::signal)]
    signal: Option<i32>,
    /// restart: how long the old processes get to exit before SIGKILL.
    #[arg(long, value_parser = units::duration)]
    grace: Option<Duration>,
    /// cpu-stress: busy threads.
    #[arg(long)]
    threads: Option<u32>,
    /// memory-pressure: bytes to allocate and keep touching, e.g. 512m.
    #[arg(long, value_parser = units::bytes)]
    bytes: Option<u64>,
    /// cpu-throttle: CPUs' worth of time per period, e.g. 0.2.
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(long, value_parser = units::duration)]
    period: Option<Duration>,
    /// restart: the command that replaces the killed processes (after --).
    #[arg(last = true)]
    command: Vec<String>,
}

fn target(a: &Apply) -> Result<Option<pb::ProcessTarget>> {
    use pb::process_target::Selector;
    let given: Vec<Selector> = [
        a.cgroup.clone().map(Selector::Cgroup),
        a.unit.clone().map(Selector::SystemdUnit),
        a.pid.map(Selector::Pid),
        a.name.clone().map(Selector::NameRegex),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        bail!("give one target: --cgroup, --unit, --pid or --name");
    }
    Ok(given.into_iter().next().map(|s| pb::ProcessTarget { selector: Some(s), full_command_line: a.full, include_children: a.tree }))
}

fn process_spec(a: &Apply) -> Result<pb::FaultSpec> {
    let kind = match a.kind {
        KindArg::Freeze => Kind::Freeze(pb::Freeze {
            method: match a.method {
                None => pb::FreezeMethod::Auto,
                Some(FreezeArg::Cgroup) => pb::FreezeMethod::Cgroup,
                Some(FreezeArg::Sigstop) => pb::FreezeMethod::Sigstop,
            } as i32,
        }),
        KindArg::Kill => Kind::Kill(pb::Kill { signal: a.signal.unwrap_or(0) }),
        KindArg::Restart => Kind::Restart(pb::Restart { command: a.command.clone(), signal: a.signal.unwrap_or(0), grace_ms: a.grace.map_or(0, |d| d.as_millis() as u64) }),
        KindArg::CpuStress => Kind::CpuStress(pb::CpuStress { threads: a.threads.context("cpu-stress needs --threads N")? }),
        KindArg::MemoryPressure => Kind::MemoryPressure(pb::MemoryPressure { bytes: a.bytes.context("memory-pressure needs --bytes, e.g. --bytes 512m")? }),
        KindArg::CpuThrottle => Kind::CpuThrottle(pb::CpuThrottle {
            cpus: a.cpus.context("cpu-throttle needs --cpus, e.g. --cpus 0.2")?,
            period_us: a.period.map_or(0, |d| d.as_micros() as u64),
        }),
        _ => unreachable!("network kinds are built by spec()"),
    };
    if a.interface.is_some() {
        bail!("--interface is for network faults; process faults take --cgroup, --unit, --pid or --name");
    }
    if a.lease.is_none() && !matches!(a.kind, KindArg::Kill | KindArg::Restart) {
        bail!("--lease is required (e.g. --lease 30s): every fault ends by itself");
    }
    Ok(pb::FaultSpec {
        lease_ms: a.lease.map_or(0, |d| d.as_millis() as u64),
        label: a.label.clone(),
        kind: Some(kind),
        target: target(a)?,
        ..Default::default()
    })
}

fn port_range(s: &str) -> Result<pb::PortRange> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let parse = |x: &str| x.trim().parse::<u32>().with_context(|| format!("--port {s:?}: not a port or range A-B"));
    Ok(pb::PortRange { first: parse(a)?, last: parse(b)? })
}

fn spec(a: &Apply) -> Result<pb::FaultSpec> {
    if a.kind.is_process() {
        return process_spec(a);
    }
    let kind = match a.kind {
        KindArg::Netem => {
            let gilbert_elliott = match &a.gemodel {
                None => None,
                Some(g) => {
                    let v: Vec<f64> = g.split(',').map(units::percent).collect::<Result<_, _>>().map_err(anyhow::Error::msg)?;
                    if v.len() < 2 {
                        bail!("--gemodel: give P,R[,1-H[,1-K]] in percent");
                    }
                    Some(pb::GilbertElliott { p: v[0], r: v[1], bad_loss: v.get(2).copied().unwrap_or(0.0), good_loss: v.get(3).copied().unwrap_or(0.0) })
                }
            };
            Kind::Netem(pb::Netem {
                delay_us: a.delay.map_or(0, |d| d.as_micros() as u64),
                jitter_us: a.jitter.map_or(0, |d| d.as_micros() as u64),
                delay_correlation: a.delay_correlation.unwrap_or(0.0),
                distribution: match a.distribution {
                    None | Some(DistArg::Uniform) => pb::Distribution::Uniform,
                    Some(DistArg::Normal) => pb::Distribution::Normal,
                    Some(DistArg::Pareto) => pb::Distribution::Pareto,
                    Some(DistArg::Paretonormal) => pb::Distribution::Paretonormal,
                } as i32,
                loss_percent: a.loss.unwrap_or(0.0),
                loss_correlation: a.loss_correlation.unwrap_or(0.0),
                gilbert_elliott,
                duplicate_percent: a.duplicate.unwrap_or(0.0),
                corrupt_percent: a.corrupt.unwrap_or(0.0),
                reorder_percent: a.reorder.unwrap_or(0.0),
                reorder_correlation: a.reorder_correlation.unwrap_or(0.0),
                rate_bps: a.rate.unwrap_or(0),
                limit: a.limit.unwrap_or(0),
                ..Default::default()
            })
        }
        KindArg::Bandwidth => Kind::Bandwidth(pb::Bandwidth {
            rate_bps: a.rate.context("bandwidth needs --rate, e.g. --rate 10mbit")?,
            burst_bytes: a.burst.unwrap_or(0),
        }),
        KindArg::Drop => Kind::Drop(pb::Drop { percent: a.loss.context("drop needs --loss, e.g. --loss 10%")? }),
        KindArg::Partition => Kind::Partition(pb::Partition {}),
        _ => unreachable!("process kinds are built by process_spec()"),
    };
    let Some(interface) = a.interface.clone() else { bail!("network faults need --interface (see `faultline info` for this host's)") };
    let Some(lease) = a.lease else { bail!("--lease is required (e.g. --lease 30s): every fault ends by itself") };
    Ok(pb::FaultSpec {
        interface,
        direction: match a.direction {
            DirArg::Egress => pb::Direction::Egress,
            DirArg::Ingress => pb::Direction::Ingress,
            DirArg::Both => pb::Direction::Both,
        } as i32,
        r#match: Some(pb::TrafficMatch {
            peers: a.peers.clone(),
            ports: a.ports.iter().map(|p| port_range(p)).collect::<Result<_>>()?,
            protocol: match a.protocol {
                None => pb::Protocol::Any,
                Some(ProtoArg::Tcp) => pb::Protocol::Tcp,
                Some(ProtoArg::Udp) => pb::Protocol::Udp,
                Some(ProtoArg::Icmp) => pb::Protocol::Icmp,
            } as i32,
        }),
        lease_ms: lease.as_millis() as u64,
        include_control_traffic: a.include_control,
        label: a.label.clone(),
        kind: Some(kind),
        target: None,
    })
}

fn status_json(f: &pb::FaultStatus) -> serde_json::Value {
    let s = f.spec.clone().unwrap_or_default();
    let c = f.counters.unwrap_or_default();
    let kind = match &s.kind {
        Some(Kind::Netem(_)) => "netem",
        Some(Kind::Bandwidth(_)) => "bandwidth",
        Some(Kind::Drop(_)) => "drop",
        Some(Kind::Partition(_)) => "partition",
        Some(Kind::Freeze(_)) => "freeze",
        Some(Kind::Kill(_)) => "kill",
        Some(Kind::Restart(_)) => "restart",
        Some(Kind::CpuStress(_)) => "cpu_stress",
        Some(Kind::MemoryPressure(_)) => "memory_pressure",
        Some(Kind::CpuThrottle(_)) => "cpu_throttle",
        None => "",
    };
    json!({
        "id": f.id,
        "kind": kind,
        "interface": s.interface,
        "direction": pb::Direction::try_from(s.direction).map(|d| d.as_str_name()).unwrap_or("?"),
        "peers": s.r#match.map(|m| m.peers).unwrap_or_default(),
        "lease_ms": s.lease_ms,
        "label": s.label,
        "applied_at_unix_ms": f.applied_at_unix_ms,
        "lease_expires_at_unix_ms": f.lease_expires_at_unix_ms,
        "engine": f.engine,
        "kernel_objects": f.kernel_objects,
        "counters": { "matched_packets": c.matched_packets, "matched_bytes": c.matched_bytes, "dropped_packets": c.dropped_packets },
        "processes": f.processes.iter().map(|p| json!({"pid": p.pid, "start_time": p.start_time, "name": p.name})).collect::<Vec<_>>(),
        "cgroup": f.cgroup,
    })
}

fn print_status(f: &pb::FaultStatus) {
    let j = status_json(f);
    let left = (f.lease_expires_at_unix_ms - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)).max(0);
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
            j["peers"].as_array().map(|p| p.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default()
        } else {
            format!("{} pids {}", f.cgroup, f.processes.iter().map(|p| format!("{}({})", p.pid, p.name)).collect::<Vec<_>>().join(","))
        },
    );
}

fn explain(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

pub async fn run(cli: Cli) -> Result<()> {
    let mut client = AgentServiceClient::connect(cli.agent.clone())
        .await
        .with_context(|| format!("cannot reach the agent at {} (is faultline-agent running? set --agent)", cli.agent))?;
    match cli.cmd {
        Cmd::Info { json } => {
            let d = client.describe(pb::DescribeRequest {}).await.map_err(explain)?.into_inner();
            let c = d.capabilities.unwrap_or_default();
            if json {
                let ifaces: Vec<_> = d.interfaces.iter().map(|i| json!({"name": i.name, "index": i.index, "mac": i.mac, "mtu": i.mtu, "up": i.up, "addresses": i.addresses})).collect();
                println!(
                    "{}",
                    json!({"hostname": d.hostname, "kernel": d.kernel_release, "agent_version": d.agent_version, "interfaces": ifaces,
                        "capabilities": {"netem": c.netem, "netem_detail": c.netem_detail, "htb": c.htb, "tbf": c.tbf, "ifb": c.ifb, "ebpf": c.ebpf,
                        "ebpf_detail": c.ebpf_detail, "tc_attach_mode": c.tc_attach_mode, "cgroup_v2_freeze": c.cgroup_v2_freeze}})
                );
            } else {
                println!("host {} kernel {} agent {}", d.hostname, d.kernel_release, d.agent_version);
                println!("netem: {} ({})", c.netem, c.netem_detail);
                println!("ebpf: {} attach={} {}", c.ebpf, c.tc_attach_mode, c.ebpf_detail);
                println!("htb: {}  tbf: {}  ifb: {}  cgroup v2 freeze: {}", c.htb, c.tbf, c.ifb, c.cgroup_v2_freeze);
                for i in d.interfaces {
                    println!("  {:>3} {:<16} {:<5} mtu {:<6} {}", i.index, i.name, if i.up { "up" } else { "down" }, i.mtu, i.addresses.join(" "));
                }
            }
        }
        Cmd::Fault(FaultCmd::Apply(a)) => {
            let f = client.apply_fault(pb::ApplyFaultRequest { spec: Some(spec(&a)?) }).await.map_err(explain)?.into_inner().fault.unwrap_or_default();
            // The id alone on the first line, for scripts: `id=$(faultline fault apply ...)`.
            println!("{}", f.id);
            for p in &f.processes {
                eprintln!("  pid {} ({})", p.pid, p.name);
            }
            for note in f.kernel_objects.iter().filter(|_| a.kind.is_process()) {
                eprintln!("  {note}");
            }
        }
        Cmd::Fault(FaultCmd::List { json }) => {
            let faults = client.list_faults(pb::ListFaultsRequest {}).await.map_err(explain)?.into_inner().faults;
            if json {
                println!("{}", serde_json::Value::Array(faults.iter().map(status_json).collect()));
            } else if faults.is_empty() {
                println!("no active faults");
            } else {
                faults.iter().for_each(print_status);
            }
        }
        Cmd::Fault(FaultCmd::Revert { id, all }) => {
            if id.is_none() && !all {
                bail!("give a fault id, or --all");
            }
            let r = client.revert_fault(pb::RevertFaultRequest { id: id.unwrap_or_default(), all }).await.map_err(explain)?.into_inner();
            for id in r.reverted {
                println!("reverted {id}");
            }
        }
        Cmd::Fault(FaultCmd::Renew { ids, lease }) => {
            let r = client
                .renew_leases(pb::RenewLeasesRequest { ids, lease_ms: lease.map_or(0, |d| d.as_millis() as u64) })
                .await
                .map_err(explain)?
                .into_inner();
            r.faults.iter().for_each(print_status);
        }
    }
    Ok(())
}
