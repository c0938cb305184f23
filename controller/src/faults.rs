//! The one boundary from flags (and scenario entries, which are turned into the same flags)
//! to fault specs: `faultline fault apply KIND ...`, one subcommand per kind, each listing
//! only its own flags. The CLI, scenarios and (to come) the Web API build specs here.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use faultline_proto::{
    agent::v1::{self as pb, fault_spec::Kind},
    controller::v1 as cpb,
};

use crate::units;

/// A fault's settings as a person reads them, in the CLI's own units: `loss 20% on eth0
/// egress to 10.0.0.0/24`, `delay 100ms ±10ms`, `256kbit`, `name ^nginx$ with children`.
/// For lists, events and reports: what was done, not only its kind.
pub fn in_words(s: &pb::FaultSpec) -> String {
    let pct = |v: f64| format!("{}%", trim_float(v));
    let ms = |us: u64| {
        if us.is_multiple_of(1000) {
            format!("{}ms", us / 1000)
        } else {
            format!("{}ms", trim_float(us as f64 / 1000.0))
        }
    };
    let mut w: Vec<String> = Vec::new();
    match &s.kind {
        Some(Kind::Netem(n)) => {
            if n.delay_us > 0 {
                w.push(if n.jitter_us > 0 {
                    format!("delay {} ±{}", ms(n.delay_us), ms(n.jitter_us))
                } else {
                    format!("delay {}", ms(n.delay_us))
                });
            }
            for (name, v) in [
                ("loss", n.loss_percent),
                ("duplicate", n.duplicate_percent),
                ("corrupt", n.corrupt_percent),
                ("reorder", n.reorder_percent),
            ] {
                if v > 0.0 {
                    w.push(format!("{name} {}", pct(v)));
                }
            }
            if n.rate_bps > 0 {
                w.push(format!("rate {}", rate_words(n.rate_bps)));
            }
        }
        Some(Kind::Bandwidth(b)) => w.push(rate_words(b.rate_bps)),
        Some(Kind::Drop(d)) => w.push(format!("loss {}", pct(d.percent))),
        Some(Kind::Kill(k)) if k.signal != 0 => w.push(format!("signal {}", k.signal)),
        Some(Kind::Restart(r)) if !r.command.is_empty() => {
            w.push(format!("as `{}`", r.command.join(" ")));
        }
        Some(Kind::CpuStress(c)) if c.threads > 0 => w.push(format!("{} threads", c.threads)),
        Some(Kind::MemoryPressure(m)) => w.push(format!("{} MiB", m.bytes / (1024 * 1024))),
        Some(Kind::CpuThrottle(c)) => w.push(format!("{} CPUs", trim_float(c.cpus))),
        _ => {}
    }
    if !s.interface.is_empty() {
        let dir = match pb::Direction::try_from(s.direction).unwrap_or(pb::Direction::Unspecified) {
            pb::Direction::Ingress => " ingress",
            pb::Direction::Both => " both ways",
            pb::Direction::Egress | pb::Direction::Unspecified => " egress",
        };
        w.push(format!("on {}{dir}", s.interface));
    }
    if let Some(m) = &s.r#match {
        match m.peers.len() {
            0 => {}
            1..=3 => w.push(format!("to {}", m.peers.join(","))),
            n => w.push(format!("to {n} peers")),
        }
        if !m.ports.is_empty() {
            let ports: Vec<String> = m
                .ports
                .iter()
                .map(|p| {
                    if p.last == 0 || p.first == p.last {
                        p.first.to_string()
                    } else {
                        format!("{}-{}", p.first, p.last)
                    }
                })
                .collect();
            w.push(format!("ports {}", ports.join(",")));
        }
    }
    if let Some(t) = &s.target {
        use pb::process_target::Selector;
        let what = match &t.selector {
            Some(Selector::Pid(p)) => format!("pid {p}"),
            Some(Selector::NameRegex(r)) => format!("name {r}"),
            Some(Selector::Cgroup(c)) => format!("cgroup {c}"),
            Some(Selector::SystemdUnit(u)) => format!("unit {u}"),
            None => String::new(),
        };
        if !what.is_empty() {
            w.push(if t.include_children { format!("{what} with children") } else { what });
        }
    }
    if let Some(c) = &s.container {
        let named = [c.name.clone(), c.select.join(",")].join(" ");
        w.push(format!("in container {}", named.trim()));
    }
    w.join(" ")
}

/// `256kbit`, `10mbit`, `1.5gbit`, `100bit`: tc's units, as `--rate` takes them.
fn rate_words(bps: u64) -> String {
    match bps {
        b if b >= 1_000_000_000 => format!("{}gbit", trim_float(b as f64 / 1e9)),
        b if b >= 1_000_000 => format!("{}mbit", trim_float(b as f64 / 1e6)),
        b if b >= 1_000 => format!("{}kbit", trim_float(b as f64 / 1e3)),
        b => format!("{b}bit"),
    }
}

/// `20`, `0.5`, `33.33`: at most two decimals, none when whole.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `fault apply KIND`: the kind is a subcommand, so `--help` of each lists its own flags.
#[derive(Args)]
pub struct Apply {
    #[command(subcommand)]
    pub kind: ApplyKind,
}

#[derive(Subcommand)]
pub enum ApplyKind {
    /// Delay, jitter, loss, duplication, corruption, reordering or a rate limit (tc netem).
    Netem {
        #[command(flatten)]
        net: NetTarget,
        #[command(flatten)]
        netem: NetemArgs,
        #[command(flatten)]
        common: Common,
    },
    /// A rate limit (htb): every matching packet shares it.
    Bandwidth {
        #[command(flatten)]
        net: NetTarget,
        /// The limit, as tc spells rates: 10mbit, 256kbit, 1gbit (bps = bytes per second).
        #[arg(long, value_parser = units::rate)]
        rate: u64,
        /// Bytes that may pass at line rate at once, e.g. 32k (default: rate/250, at least two frames).
        #[arg(long, value_parser = units::size)]
        burst: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
    /// Drops a share of the matching packets (eBPF), silently for the sender.
    Drop {
        #[command(flatten)]
        net: NetTarget,
        /// The share of packets dropped, e.g. 10%.
        #[arg(long, value_parser = units::percent)]
        loss: f64,
        #[command(flatten)]
        common: Common,
    },
    /// No matching packet crosses (eBPF): cuts this host off from --peer networks.
    Partition {
        #[command(flatten)]
        net: NetTarget,
        #[command(flatten)]
        common: Common,
    },
    /// The target makes no progress until reverted: cgroup.freeze, or SIGSTOP.
    Freeze {
        #[command(flatten)]
        target: ProcTarget,
        /// How: cgroup.freeze (cgroup and unit targets) or SIGSTOP (default: by target).
        #[arg(long, value_enum)]
        method: Option<FreezeArg>,
        #[command(flatten)]
        common: Common,
    },
    /// Sends a signal once (no lease: nothing to revert).
    Kill {
        #[command(flatten)]
        target: ProcTarget,
        /// A signal number or name (TERM, KILL, ...; default KILL).
        #[arg(long, value_parser = units::signal)]
        signal: Option<i32>,
        #[command(flatten)]
        common: Common,
    },
    /// Kills the target and starts it again exactly as it ran (or restarts its unit).
    Restart {
        #[command(flatten)]
        target: ProcTarget,
        /// The signal for the kill step (default TERM, then KILL after --grace).
        #[arg(long, value_parser = units::signal)]
        signal: Option<i32>,
        /// How long the old processes get to exit before SIGKILL (default 5s).
        #[arg(long, value_parser = units::duration)]
        grace: Option<Duration>,
        #[command(flatten)]
        common: Common,
        /// A command to start instead (after --), as the target's user: only where the
        /// agent runs with --allow-restart-command.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Busy threads, inside the target cgroup or unit when one is given.
    CpuStress {
        #[command(flatten)]
        target: ProcTarget,
        /// Busy threads (at most 4 per CPU).
        #[arg(long)]
        threads: u32,
        #[command(flatten)]
        common: Common,
    },
    /// A process that allocates and keeps touching memory, inside the target cgroup or unit.
    MemoryPressure {
        #[command(flatten)]
        target: ProcTarget,
        /// How much, e.g. 512m or 2g.
        #[arg(long, value_parser = units::bytes)]
        bytes: u64,
        #[command(flatten)]
        common: Common,
    },
    /// cpu.max on a cgroup or unit: it gets --cpus CPUs' worth of time per period.
    CpuThrottle {
        #[command(flatten)]
        target: ProcTarget,
        /// CPUs' worth of time, e.g. 0.2.
        #[arg(long)]
        cpus: f64,
        /// The period cpu.max counts in (default 100ms).
        #[arg(long, value_parser = units::duration)]
        period: Option<Duration>,
        #[command(flatten)]
        common: Common,
    },
}

/// Flags every kind has: lifetime, label, output, and where a controller sends it.
#[derive(Args)]
pub struct Common {
    /// How long the fault lasts unless renewed, at most a week (every fault ends by
    /// itself; kill and restart act once and need none).
    #[arg(long, value_parser = units::lease)]
    pub lease: Option<Duration>,
    /// Free text kept with the fault (who asked, why).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print the applied fault as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
    /// Change nothing: say where the fault would act (agents, and containers), each agent
    /// checking it as it would before applying it.
    #[arg(long)]
    pub dry_run: bool,
    /// With --controller: agents with these labels, e.g. role=db,zone=a.
    #[arg(long, help_heading = "Controller targeting")]
    pub select: Option<String>,
    /// With --controller: these agents by name (repeatable, or comma-separated).
    #[arg(long = "on", value_delimiter = ',', help_heading = "Controller targeting")]
    pub on: Vec<String>,
    /// With --controller: every agent (that --select matches, if given). Through a
    /// controller a fault must name where it acts: --on, --select, a container, a pod, or
    /// --all.
    #[arg(long, help_heading = "Controller targeting")]
    pub all: bool,
    /// With --controller: all selected agents, one at random, a fixed number or a share.
    #[arg(long, value_enum, default_value = "all", help_heading = "Controller targeting")]
    pub mode: ModeArg,
    /// With --mode fixed: how many of the selected agents.
    #[arg(long, help_heading = "Controller targeting")]
    pub count: Option<u32>,
    /// With --mode percent: which share of the selected agents (rounded up).
    #[arg(long, value_parser = units::percent, help_heading = "Controller targeting")]
    pub percent: Option<f64>,
}

/// Which packets of which interface a network fault touches.
#[derive(Args)]
pub struct NetTarget {
    /// The interface on the agent's host (see `faultline info`); in a container, one of
    /// its own (default: its only one besides lo).
    #[arg(long, short = 'i', required_unless_present_any = ["container", "container_select", "pod", "pod_select"])]
    pub interface: Option<String>,
    /// Act inside this container on the agent's host (name, id or id prefix), on its
    /// interface, with egress and ingress as the container sees them.
    #[arg(long, help_heading = "Container")]
    pub container: Option<String>,
    /// Act inside the one running container carrying these labels, KEY=VALUE
    /// (repeatable or comma-separated), e.g. com.docker.compose.service=web.
    #[arg(long = "container-select", value_delimiter = ',', help_heading = "Container")]
    pub container_select: Vec<String>,
    #[command(flatten)]
    pub pod: PodArgs,
    /// Which way: egress (sent), ingress (received, through an IFB device for qdiscs) or both.
    #[arg(long, value_enum, default_value = "egress")]
    pub direction: DirArg,
    /// Only traffic to/from this CIDR or address (repeatable; IPv4 and IPv6).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// More peers from FILE (`-`: standard input): a YAML list (`- 10.0.0.0/24`) or one per
    /// line (`#` comments); for more than a command line holds. Read by this command only:
    /// scenarios and the Web API list peers in `peer`.
    #[arg(long = "peers-file", value_name = "FILE")]
    pub peers_file: Option<std::path::PathBuf>,
    /// Only traffic with this local or remote port, or range A-B (repeatable).
    #[arg(long = "port")]
    pub ports: Vec<String>,
    /// Only this protocol.
    #[arg(long, value_enum)]
    pub protocol: Option<ProtoArg>,
    /// Also affect the agent's own control connections (excluded by default).
    #[arg(long)]
    pub include_control: bool,
}

/// A Kubernetes pod on an agent's node, found through the node's CRI runtime.
#[derive(Args)]
pub struct PodArgs {
    /// A pod: NAMESPACE/NAME, or NAME in --namespace. Network faults act once in its
    /// network namespace (shared by its containers).
    #[arg(long, value_name = "[NAMESPACE/]NAME", help_heading = "Pod")]
    pub pod: Option<String>,
    /// The one ready pod whose own labels meet these requirements, as kubectl's -l reads
    /// them: app=web, tier!=db, 'tier in (a,b)', 'env notin (prod)', canary, '!canary'
    /// (repeatable, or comma-separated).
    #[arg(long = "pod-select", value_name = "REQUIREMENTS", help_heading = "Pod")]
    pub pod_select: Vec<String>,
    /// The pod's namespace (default: default, as kubectl).
    #[arg(long, short = 'n', help_heading = "Pod")]
    pub namespace: Option<String>,
    /// With --pod-select: pods in every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace", help_heading = "Pod")]
    pub all_namespaces: bool,
}

impl PodArgs {
    /// The wire target, or `None` when no pod is named.
    pub fn target(&self, container: Option<&str>) -> Result<Option<pb::PodTarget>> {
        if self.pod.is_none() && self.pod_select.is_empty() {
            if self.namespace.is_some() || self.all_namespaces || container.is_some() {
                bail!(
                    "--namespace, --all-namespaces and --pod-container go with --pod or --pod-select"
                );
            }
            return Ok(None);
        }
        let (namespace, name) = match self.pod.as_deref() {
            Some(p) => match p.split_once('/') {
                Some((ns, name)) => {
                    if self.namespace.as_deref().is_some_and(|n| n != ns) {
                        bail!("--pod {p} names namespace {ns}, --namespace another");
                    }
                    (ns.to_owned(), name.to_owned())
                }
                None if self.all_namespaces => {
                    bail!(
                        "--pod {p}: a pod named needs its namespace (NAMESPACE/NAME or --namespace), not --all-namespaces"
                    )
                }
                None => (self.namespace.clone().unwrap_or_else(|| "default".into()), p.to_owned()),
            },
            None if self.all_namespaces => (String::new(), String::new()),
            None => (self.namespace.clone().unwrap_or_else(|| "default".into()), String::new()),
        };
        Ok(Some(pb::PodTarget {
            namespace,
            name,
            select: self.pod_select.clone(),
            container: container.unwrap_or_default().to_owned(),
        }))
    }
}

/// netem's own settings; percentages are 0..100, times as in tc (100ms, 2s).
#[derive(Args)]
pub struct NetemArgs {
    /// Added round-trip delay (split between the directions with --direction both).
    #[arg(long, value_parser = units::duration)]
    pub delay: Option<Duration>,
    /// Delay variation, at most the delay.
    #[arg(long, value_parser = units::duration)]
    pub jitter: Option<Duration>,
    /// How much each delay depends on the previous one, in percent.
    #[arg(long, value_parser = units::percent)]
    pub delay_correlation: Option<f64>,
    /// The jitter's distribution (needs --jitter).
    #[arg(long, value_enum)]
    pub distribution: Option<DistArg>,
    /// Random loss, in percent.
    #[arg(long, value_parser = units::percent)]
    pub loss: Option<f64>,
    /// How much each loss depends on the previous one, in percent.
    #[arg(long, value_parser = units::percent)]
    pub loss_correlation: Option<f64>,
    /// Gilbert-Elliott loss instead: P,R[,1-H[,1-K]] in percent (tc's `loss gemodel`).
    #[arg(long)]
    pub gemodel: Option<String>,
    /// Duplicated packets, in percent.
    #[arg(long, value_parser = units::percent)]
    pub duplicate: Option<f64>,
    /// Packets with a bit flipped, in percent.
    #[arg(long, value_parser = units::percent)]
    pub corrupt: Option<f64>,
    /// Packets sent at once instead of delayed (needs --delay), in percent.
    #[arg(long, value_parser = units::percent)]
    pub reorder: Option<f64>,
    /// How much each reordering depends on the previous one, in percent.
    #[arg(long, value_parser = units::percent)]
    pub reorder_correlation: Option<f64>,
    /// A rate limit inside netem, e.g. 10mbit.
    #[arg(long, value_parser = units::rate)]
    pub rate: Option<u64>,
    /// netem's queue limit in packets (default 1000).
    #[arg(long)]
    pub limit: Option<u32>,
}

/// Which processes a process fault acts on: exactly one of these.
#[derive(Args)]
pub struct ProcTarget {
    /// A cgroup v2 path ("/app/db"), under the cgroup2 mount.
    #[arg(long, help_heading = "Process target")]
    pub cgroup: Option<String>,
    /// A systemd unit ("redis-server.service"): its cgroup.
    #[arg(long, help_heading = "Process target")]
    pub unit: Option<String>,
    /// One process.
    #[arg(long, help_heading = "Process target")]
    pub pid: Option<u32>,
    /// Processes whose name matches this regular expression (like pgrep).
    #[arg(long, help_heading = "Process target")]
    pub name: Option<String>,
    /// With --name: match the whole command line (like pgrep -f).
    #[arg(long, help_heading = "Process target")]
    pub full: bool,
    /// With --pid or --name: the processes' descendants too.
    #[arg(long, help_heading = "Process target")]
    pub tree: bool,
    /// A container on the agent's host (name, id or id prefix): its cgroup v2 directory,
    /// or its init process and descendants; restart goes through its runtime.
    #[arg(long, help_heading = "Process target")]
    pub container: Option<String>,
    /// The one running container carrying these labels, KEY=VALUE (repeatable or comma-separated).
    #[arg(long = "container-select", value_delimiter = ',', help_heading = "Process target")]
    pub container_select: Vec<String>,
    #[command(flatten)]
    pub pod: PodArgs,
    /// With --pod or --pod-select: only this container of the pod (its name in the pod
    /// spec); without, every container of the pod (its cgroup).
    #[arg(long = "pod-container", value_name = "NAME", help_heading = "Pod")]
    pub pod_container: Option<String>,
    /// Not for process faults: taken only to say so (clap's "unexpected argument" would not).
    #[arg(long, short = 'i', hide = true)]
    pub interface: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FreezeArg {
    Cgroup,
    Sigstop,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DirArg {
    Egress,
    Ingress,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DistArg {
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    All,
    One,
    Fixed,
    Percent,
}

impl ApplyKind {
    pub fn common(&self) -> &Common {
        match self {
            Self::Netem { common, .. }
            | Self::Bandwidth { common, .. }
            | Self::Drop { common, .. }
            | Self::Partition { common, .. }
            | Self::Freeze { common, .. }
            | Self::Kill { common, .. }
            | Self::Restart { common, .. }
            | Self::CpuStress { common, .. }
            | Self::MemoryPressure { common, .. }
            | Self::CpuThrottle { common, .. } => common,
        }
    }

    pub fn is_process(&self) -> bool {
        !matches!(
            self,
            Self::Netem { .. }
                | Self::Bandwidth { .. }
                | Self::Drop { .. }
                | Self::Partition { .. }
        )
    }
}

impl Apply {
    pub fn common(&self) -> &Common {
        self.kind.common()
    }

    fn net_mut(&mut self) -> Option<&mut NetTarget> {
        match &mut self.kind {
            ApplyKind::Netem { net, .. }
            | ApplyKind::Bandwidth { net, .. }
            | ApplyKind::Drop { net, .. }
            | ApplyKind::Partition { net, .. } => Some(net),
            _ => None,
        }
    }
}

/// The agent's peer table, shared by all its active faults.
pub const PEER_TABLE: usize = faultline_ebpf_common::MAX_PEERS as usize;
/// A gRPC call's default size limit on the agent and the controller.
const MESSAGE_LIMIT: usize = 4 << 20;
/// The most of a peers file read: a full peer table of the longest IPv6 CIDRs, with room.
const PEERS_FILE_LIMIT: u64 = 16 << 20;

/// `--peers-file`: moves the file's peers into `--peer`, so the spec is built (and checked)
/// as if they had been given as flags. Refused here rather than by the agent: more peers
/// than its table, or a request over the 4 MiB a gRPC call may carry (which would fail
/// with a transport error that names neither).
pub fn read_peers_file(a: &mut Apply) -> Result<()> {
    let Some(net) = a.net_mut() else { return Ok(()) };
    let Some(path) = net.peers_file.take() else { return Ok(()) };
    // Bounded: `-` may be an endless pipe, FILE a device.
    use std::io::Read;
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(PEERS_FILE_LIMIT + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(&path)
            .and_then(|f| f.take(PEERS_FILE_LIMIT + 1).read_to_string(&mut text))
    };
    read.with_context(|| format!("--peers-file {}", path.display()))?;
    if text.len() as u64 > PEERS_FILE_LIMIT {
        bail!(
            "--peers-file {}: longer than {} MiB; an agent holds at most {PEER_TABLE} peers",
            path.display(),
            PEERS_FILE_LIMIT >> 20
        );
    }
    let peers =
        parse_peers(&text).map_err(|e| anyhow::anyhow!("--peers-file {}: {e}", path.display()))?;
    net.peers.extend(peers);
    let n = net.peers.len();
    if n > PEER_TABLE {
        bail!(
            "--peers-file {}: {n} peers; an agent holds at most {PEER_TABLE} across its active faults (use wider CIDRs)",
            path.display()
        );
    }
    let bytes: usize = net.peers.iter().map(|p| p.len() + 2).sum();
    if bytes > MESSAGE_LIMIT * 9 / 10 {
        bail!(
            "--peers-file {}: {n} peers make a {} KiB request; a call to an agent or the controller carries at most {} KiB",
            path.display(),
            bytes >> 10,
            MESSAGE_LIMIT >> 10
        );
    }
    Ok(())
}

/// A YAML list of strings, or one peer per line with `#` comments.
fn parse_peers(text: &str) -> Result<Vec<String>, String> {
    let first =
        text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    if first.starts_with('-') || first.starts_with('[') {
        let v: Vec<String> = serde_norway::from_str(text)
            .map_err(|e| format!("not a YAML list of addresses or CIDRs: {e}"))?;
        return Ok(v.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect());
    }
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

impl ProcTarget {
    fn build(&self) -> Result<Option<pb::ProcessTarget>> {
        use pb::process_target::Selector;
        if self.interface.is_some() {
            bail!(
                "--interface is for network faults; process faults take --cgroup, --unit, --pid or --name, or --container/--container-select for a container's processes"
            );
        }
        let given: Vec<Selector> = [
            self.cgroup.clone().map(Selector::Cgroup),
            self.unit.clone().map(Selector::SystemdUnit),
            self.pid.map(Selector::Pid),
            self.name.clone().map(Selector::NameRegex),
        ]
        .into_iter()
        .flatten()
        .collect();
        let container = usize::from(self.container.is_some() || !self.container_select.is_empty());
        let pod = usize::from(self.pod.pod.is_some() || !self.pod.pod_select.is_empty());
        if given.len() + container + pod > 1 {
            bail!("give one target: --cgroup, --unit, --pid, --name, --container or --pod");
        }
        Ok(given.into_iter().next().map(|s| pb::ProcessTarget {
            selector: Some(s),
            full_command_line: self.full,
            include_children: self.tree,
        }))
    }
}

fn port_range(s: &str) -> Result<pb::PortRange> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let parse = |x: &str| {
        x.trim().parse::<u32>().with_context(|| {
            format!("--port {}: not a port or range A-B", faultline_proto::quote(s))
        })
    };
    Ok(pb::PortRange { first: parse(a)?, last: parse(b)? })
}

fn netem(n: &NetemArgs) -> Result<pb::Netem> {
    let gilbert_elliott = match &n.gemodel {
        None => None,
        Some(g) => {
            let v: Vec<f64> = g
                .split(',')
                .map(units::percent)
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?;
            if v.len() < 2 {
                bail!("--gemodel: give P,R[,1-H[,1-K]] in percent");
            }
            Some(pb::GilbertElliott {
                p: v[0],
                r: v[1],
                bad_loss: v.get(2).copied().unwrap_or(0.0),
                good_loss: v.get(3).copied().unwrap_or(0.0),
            })
        }
    };
    Ok(pb::Netem {
        delay_us: n.delay.map_or(0, |d| d.as_micros() as u64),
        jitter_us: n.jitter.map_or(0, |d| d.as_micros() as u64),
        delay_correlation: n.delay_correlation.unwrap_or(0.0),
        distribution: match n.distribution {
            None | Some(DistArg::Uniform) => pb::Distribution::Uniform,
            Some(DistArg::Normal) => pb::Distribution::Normal,
            Some(DistArg::Pareto) => pb::Distribution::Pareto,
            Some(DistArg::Paretonormal) => pb::Distribution::Paretonormal,
        } as i32,
        loss_percent: n.loss.unwrap_or(0.0),
        loss_correlation: n.loss_correlation.unwrap_or(0.0),
        gilbert_elliott,
        duplicate_percent: n.duplicate.unwrap_or(0.0),
        corrupt_percent: n.corrupt.unwrap_or(0.0),
        reorder_percent: n.reorder.unwrap_or(0.0),
        reorder_correlation: n.reorder_correlation.unwrap_or(0.0),
        rate_bps: n.rate.unwrap_or(0),
        limit: n.limit.unwrap_or(0),
        ..Default::default()
    })
}

fn lease_required(c: &Common) -> Result<u64> {
    let lease =
        c.lease.context("--lease is required (e.g. --lease 30s): every fault ends by itself")?;
    Ok(lease.as_millis() as u64)
}

fn net_spec(net: &NetTarget, common: &Common, kind: Kind) -> Result<pb::FaultSpec> {
    // Files are read by the command line (`read_peers_file`) before it builds the spec:
    // from a scenario or a Web API request this would have the controller open a path a
    // caller chose.
    if net.peers_file.is_some() {
        bail!("--peers-file is read by the faultline command only; list the peers in peer");
    }
    Ok(pb::FaultSpec {
        interface: net.interface.clone().unwrap_or_default(),
        container: (net.container.is_some() || !net.container_select.is_empty()).then(|| {
            pb::ContainerTarget {
                name: net.container.clone().unwrap_or_default(),
                select: net.container_select.clone(),
            }
        }),
        pod: net.pod.target(None)?,
        direction: match net.direction {
            DirArg::Egress => pb::Direction::Egress,
            DirArg::Ingress => pb::Direction::Ingress,
            DirArg::Both => pb::Direction::Both,
        } as i32,
        r#match: Some(pb::TrafficMatch {
            peers: net.peers.clone(),
            ports: net.ports.iter().map(|p| port_range(p)).collect::<Result<_>>()?,
            protocol: match net.protocol {
                None => pb::Protocol::Any,
                Some(ProtoArg::Tcp) => pb::Protocol::Tcp,
                Some(ProtoArg::Udp) => pb::Protocol::Udp,
                Some(ProtoArg::Icmp) => pb::Protocol::Icmp,
            } as i32,
        }),
        lease_ms: lease_required(common)?,
        include_control_traffic: net.include_control,
        label: common.label.clone(),
        kind: Some(kind),
        target: None,
    })
}

fn process_spec(
    target: &ProcTarget,
    common: &Common,
    kind: Kind,
    one_shot: bool,
) -> Result<pb::FaultSpec> {
    Ok(pb::FaultSpec {
        lease_ms: if one_shot {
            common.lease.map_or(0, |d| d.as_millis() as u64)
        } else {
            lease_required(common)?
        },
        label: common.label.clone(),
        kind: Some(kind),
        target: target.build()?,
        container: (target.container.is_some() || !target.container_select.is_empty()).then(|| {
            pb::ContainerTarget {
                name: target.container.clone().unwrap_or_default(),
                select: target.container_select.clone(),
            }
        }),
        pod: target.pod.target(target.pod_container.as_deref())?,
        ..Default::default()
    })
}

/// The fault spec a `fault apply` command line (or a scenario entry) asks for.
pub fn spec(a: &Apply) -> Result<pb::FaultSpec> {
    match &a.kind {
        ApplyKind::Netem { net, netem: n, common } => net_spec(net, common, Kind::Netem(netem(n)?)),
        ApplyKind::Bandwidth { net, rate, burst, common } => net_spec(
            net,
            common,
            Kind::Bandwidth(pb::Bandwidth { rate_bps: *rate, burst_bytes: burst.unwrap_or(0) }),
        ),
        ApplyKind::Drop { net, loss, common } => {
            net_spec(net, common, Kind::Drop(pb::Drop { percent: *loss }))
        }
        ApplyKind::Partition { net, common } => {
            net_spec(net, common, Kind::Partition(pb::Partition {}))
        }
        ApplyKind::Freeze { target, method, common } => {
            let method = match method {
                None => pb::FreezeMethod::Auto,
                Some(FreezeArg::Cgroup) => pb::FreezeMethod::Cgroup,
                Some(FreezeArg::Sigstop) => pb::FreezeMethod::Sigstop,
            };
            process_spec(target, common, Kind::Freeze(pb::Freeze { method: method as i32 }), false)
        }
        ApplyKind::Kill { target, signal, common } => {
            process_spec(target, common, Kind::Kill(pb::Kill { signal: signal.unwrap_or(0) }), true)
        }
        ApplyKind::Restart { target, signal, grace, common, command } => {
            let kind = Kind::Restart(pb::Restart {
                command: command.clone(),
                signal: signal.unwrap_or(0),
                grace_ms: grace.map_or(0, |d| d.as_millis() as u64),
            });
            process_spec(target, common, kind, true)
        }
        ApplyKind::CpuStress { target, threads, common } => process_spec(
            target,
            common,
            Kind::CpuStress(pb::CpuStress { threads: *threads }),
            false,
        ),
        ApplyKind::MemoryPressure { target, bytes, common } => process_spec(
            target,
            common,
            Kind::MemoryPressure(pb::MemoryPressure { bytes: *bytes }),
            false,
        ),
        ApplyKind::CpuThrottle { target, cpus, period, common } => process_spec(
            target,
            common,
            Kind::CpuThrottle(pb::CpuThrottle {
                cpus: *cpus,
                period_us: period.map_or(0, |d| d.as_micros() as u64),
            }),
            false,
        ),
    }
}

/// Where a controller sends the fault.
pub fn target(a: &Apply) -> cpb::Target {
    let c = a.common();
    cpb::Target {
        agents: c.on.clone(),
        selector: c.select.clone().unwrap_or_default(),
        mode: match c.mode {
            ModeArg::All => cpb::Mode::All,
            ModeArg::One => cpb::Mode::One,
            ModeArg::Fixed => cpb::Mode::Fixed,
            ModeArg::Percent => cpb::Mode::Percent,
        } as i32,
        count: c.count.unwrap_or(0),
        percent: c.percent.unwrap_or(0.0),
        all: c.all,
    }
}

/// Why a fault through a controller that names no agents, selector or container is
/// refused (`--all` says "everywhere" on purpose). One wording for every front end.
pub const NO_TARGET: &str = "name where the fault acts: agents (--on NAME), a label selector (--select KEY=VALUE), a container (--container, --container-select), a pod (--pod, --pod-select), or every agent (--all); --dry-run shows which agents a request would hit";

/// `NO_TARGET` for a front end that names fields, not flags (a scenario entry, a Web API
/// request): its settings under `settings` (e.g. "settings." or ""), and where it asks
/// for a preview, if it can.
#[must_use]
pub fn no_target_in_fields(settings: &str, preview: Option<&str>) -> String {
    let words = NO_TARGET
        .replace("--on NAME", "on: [NAME]")
        .replace("--select KEY=VALUE", "select: KEY=VALUE")
        .replace("--container-select", &format!("{settings}container_select"))
        .replace("--container", &format!("{settings}container"))
        .replace("--pod-select", &format!("{settings}pod_select"))
        .replace("--pod", &format!("{settings}pod"))
        .replace("--all", "all: true");
    match preview {
        Some(p) => words.replace("--dry-run", p),
        None => words.replace("; --dry-run shows which agents a request would hit", ""),
    }
}

/// A pod target as people read it: "pod shop/web-0", "pod shop app=web", "pod */app=web"
/// (every namespace), with "/CONTAINER" when it names one.
#[must_use]
pub fn pod_words(p: &pb::PodTarget) -> String {
    let ns = if p.namespace.is_empty() { "*" } else { p.namespace.as_str() };
    let mut w = if p.name.is_empty() {
        format!("pod {ns} {}", p.select.join(","))
    } else {
        format!("pod {ns}/{}", p.name)
    };
    if !p.container.is_empty() {
        w = format!("{w} container {}", p.container);
    }
    w
}

/// Whether a controller target says where a fault acts (see `NO_TARGET`).
#[must_use]
pub fn names_a_target(t: &cpb::Target, spec: &pb::FaultSpec) -> bool {
    t.all
        || !t.agents.is_empty()
        || !t.selector.is_empty()
        || spec.container.is_some()
        || spec.pod.is_some()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn a_fault_reads_in_words_with_its_settings_and_units() {
        // `fault apply`'s own arguments, without the CLI around them (faults is below cli).
        #[derive(Parser)]
        struct FaultApply {
            #[command(flatten)]
            apply: Apply,
        }
        let words = |args: &str| {
            let argv = std::iter::once("apply").chain(args.split_whitespace().skip(2));
            in_words(&spec(&FaultApply::try_parse_from(argv).unwrap().apply).unwrap())
        };
        assert_eq!(
            words("fault apply drop -i eth0 --loss 20% --lease 60s"),
            "loss 20% on eth0 egress"
        );
        assert_eq!(
            words(
                "fault apply netem -i eth0 --delay 100ms --jitter 10ms --loss 0.5% --direction both --peer 10.0.0.0/24 --lease 60s"
            ),
            "delay 100ms ±10ms loss 0.5% on eth0 both ways to 10.0.0.0/24"
        );
        assert_eq!(
            words("fault apply bandwidth -i eth0 --rate 256kbit --port 80 --lease 60s"),
            "256kbit on eth0 egress ports 80"
        );
        assert_eq!(
            words("fault apply freeze --name ^nginx$ --tree --lease 20s"),
            "name ^nginx$ with children"
        );
        assert_eq!(rate_words(1_500_000_000), "1.5gbit");
        assert_eq!(trim_float(33.333), "33.33");
    }

    /// One spelling per kind (issue 31): what a request names a kind is what every answer,
    /// event and label calls it.
    #[test]
    fn each_kind_is_spelled_as_requests_spell_it() {
        let cases: [(&str, &[(&str, Setting)]); 4] = [
            (
                "cpu-stress",
                &[("cgroup", Setting::Value("/x".into())), ("threads", Setting::Value("1".into()))],
            ),
            (
                "memory-pressure",
                &[("cgroup", Setting::Value("/x".into())), ("bytes", Setting::Value("1m".into()))],
            ),
            (
                "cpu-throttle",
                &[("cgroup", Setting::Value("/x".into())), ("cpus", Setting::Value("0.5".into()))],
            ),
            (
                "drop",
                &[
                    ("interface", Setting::Value("eth0".into())),
                    ("loss", Setting::Value("1%".into())),
                ],
            ),
        ];
        for (kind, settings) in cases {
            let (spec, _) = from_entry(
                kind,
                settings.iter().map(|(k, v)| (*k, v)),
                Some(Duration::from_secs(1)),
            )
            .unwrap_or_else(|e| panic!("{kind}: {e:?}"));
            assert_eq!(spec.kind.as_ref().map(pb::fault_spec::Kind::name), Some(kind));
        }
    }

    #[test]
    fn the_catalogue_is_the_cli_s_flags() {
        let kinds = catalogue();
        let names: Vec<&str> = kinds.iter().map(|k| k.kind.as_str()).collect();
        assert_eq!(
            names,
            [
                "netem",
                "bandwidth",
                "drop",
                "partition",
                "freeze",
                "kill",
                "restart",
                "cpu-stress",
                "memory-pressure",
                "cpu-throttle"
            ]
        );
        let get = |kind: &str, name: &str| {
            kinds
                .iter()
                .find(|k| k.kind == kind)
                .unwrap()
                .settings
                .iter()
                .find(|s| s.name == name)
                .cloned()
        };
        let loss = get("drop", "loss").unwrap();
        assert!(
            loss.required && !loss.switch && !loss.list && loss.help.contains("share"),
            "{loss:?}"
        );
        assert!(
            get("drop", "lease").unwrap().required && !get("kill", "lease").unwrap().required,
            "kill acts once"
        );
        assert!(
            get("drop", "peer").unwrap().list
                && get("drop", "on").unwrap().list
                && get("drop", "container_select").unwrap().list
        );
        assert!(get("drop", "include_control").unwrap().switch);
        assert_eq!(get("drop", "direction").unwrap().choices, ["egress", "ingress", "both"]);
        assert_eq!(get("drop", "mode").unwrap().default, "all");
        assert!(
            get("drop", "json").is_none() && get("freeze", "interface").is_none(),
            "output flags and hidden ones are not settings"
        );
        assert!(get("drop", "delay").is_none(), "drop takes no delay");
        // Every setting a kind lists is one from_entry takes.
        for k in &kinds {
            for s in &k.settings {
                let flag = format!("--{}", s.name.replace('_', "-"));
                let cmd = EntryArgs::command();
                let sub = cmd.find_subcommand(&k.kind).unwrap();
                assert!(
                    sub.get_arguments()
                        .any(|a| a.get_long().is_some_and(|l| format!("--{l}") == flag)),
                    "{} {flag}",
                    k.kind
                );
            }
        }
    }

    #[derive(Parser)]
    #[command(no_binary_name = true)]
    struct A {
        #[command(flatten)]
        apply: Apply,
    }

    /// Issue 17: peers from a file, in either form; only the command line reads files.
    #[test]
    fn peers_files_are_yaml_lists_or_lines_and_only_the_cli_reads_them() {
        assert_eq!(
            parse_peers("# mine\n- 10.0.0.1\n- \"fd00::/64\"\n").unwrap(),
            ["10.0.0.1", "fd00::/64"]
        );
        assert_eq!(parse_peers("[10.0.0.1, 10.0.0.2/31]").unwrap(), ["10.0.0.1", "10.0.0.2/31"]);
        assert_eq!(
            parse_peers("10.0.0.1\n\n  10.0.1.0/24  # lab\n# gone\n").unwrap(),
            ["10.0.0.1", "10.0.1.0/24"]
        );
        assert!(parse_peers("- a: 1\n").unwrap_err().contains("not a YAML list"));
        let dir = std::env::temp_dir().join(format!("faultline-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("peers.yaml");
        std::fs::write(
            &file,
            (0..1000).map(|i| format!("- 10.9.{}.{}\n", i / 256, i % 256)).collect::<String>(),
        )
        .unwrap();
        let mut a = A::try_parse_from([
            "partition",
            "-i",
            "eth0",
            "--lease",
            "5s",
            "--peer",
            "10.8.0.0/16",
            "--peers-file",
            file.to_str().unwrap(),
        ])
        .unwrap()
        .apply;
        read_peers_file(&mut a).unwrap();
        let m = spec(&a).unwrap().r#match.unwrap();
        assert_eq!(
            (m.peers.len(), m.peers[0].as_str(), m.peers[1000].as_str()),
            (1001, "10.8.0.0/16", "10.9.3.231")
        );
        // More than an agent's table is refused before anything is sent, naming the flag.
        std::fs::write(
            &file,
            (0..=PEER_TABLE)
                .map(|i| format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255))
                .collect::<String>(),
        )
        .unwrap();
        let mut a = A::try_parse_from([
            "drop",
            "-i",
            "eth0",
            "--loss",
            "5",
            "--lease",
            "5s",
            "--peers-file",
            file.to_str().unwrap(),
        ])
        .unwrap()
        .apply;
        let e = read_peers_file(&mut a).unwrap_err().to_string();
        assert!(e.starts_with("--peers-file") && e.contains("131073 peers"), "{e}");
        let mut a = A::try_parse_from([
            "drop",
            "-i",
            "eth0",
            "--loss",
            "5",
            "--lease",
            "5s",
            "--peers-file",
            "/nonexistent/peers",
        ])
        .unwrap()
        .apply;
        assert!(
            read_peers_file(&mut a)
                .unwrap_err()
                .to_string()
                .contains("--peers-file /nonexistent/peers")
        );
        // A device or a huge file is read only up to the bound.
        let mut a = A::try_parse_from([
            "drop",
            "-i",
            "eth0",
            "--loss",
            "5",
            "--lease",
            "5s",
            "--peers-file",
            "/dev/zero",
        ])
        .unwrap()
        .apply;
        let e = read_peers_file(&mut a).unwrap_err().to_string();
        assert!(e.contains("longer than 16 MiB"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        // A scenario or a Web API request cannot name a file for the controller to open,
        // and the console's form does not offer it.
        let path = Setting::Value("/etc/shadow".into());
        let e = from_entry(
            "drop",
            [
                ("interface", &Setting::Value("eth0".into())),
                ("loss", &Setting::Value("5".into())),
                ("peers_file", &path),
            ],
            Some(Duration::from_secs(5)),
        )
        .unwrap_err();
        assert_eq!(e.field, "peers_file", "{e:?}");
        assert!(e.problem.contains("faultline command only"), "{e:?}");
        assert!(catalogue().iter().all(|k| k.settings.iter().all(|s| s.name != "peers_file")));
    }

    /// Issue 13: each kind's --help lists only its own flags, each with a description.
    #[test]
    fn each_kind_lists_only_its_flags_all_described() {
        let mut cmd = A::command();
        cmd.build();
        let netem = cmd.find_subcommand("netem").unwrap();
        let flags: Vec<String> =
            netem.get_arguments().filter_map(|a| a.get_long().map(str::to_owned)).collect();
        for f in ["delay", "jitter", "loss", "interface", "lease", "peer"] {
            assert!(flags.iter().any(|x| x == f), "netem lacks --{f}: {flags:?}");
        }
        for f in ["pid", "threads", "cpus", "burst", "signal"] {
            assert!(!flags.iter().any(|x| x == f), "netem lists --{f}");
        }
        for sub in cmd.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no summary", sub.get_name());
            for arg in sub.get_arguments().filter(|a| a.get_long().is_some()) {
                assert!(
                    arg.get_help().is_some(),
                    "{} --{} has no description",
                    sub.get_name(),
                    arg.get_long().unwrap()
                );
            }
        }
    }

    #[test]
    fn command_lines_become_specs() {
        let spec_of = |args: &str| spec(&A::try_parse_from(args.split_whitespace()).unwrap().apply);
        let s = spec_of("drop -i eth0 --loss 10% --lease 60s --peer 10.0.0.0/24").unwrap();
        assert_eq!((s.interface.as_str(), s.lease_ms), ("eth0", 60_000));
        assert!(matches!(s.kind, Some(Kind::Drop(pb::Drop { percent })) if percent == 10.0));
        let s = spec_of("kill --pid 42 --signal TERM").unwrap();
        assert_eq!(s.lease_ms, 0, "kill acts once and needs no lease");
        assert!(
            spec_of("freeze --pid 42").unwrap_err().to_string().contains("--lease is required")
        );
        assert!(
            spec_of("freeze --pid 42 --name x --lease 1s")
                .unwrap_err()
                .to_string()
                .contains("give one target")
        );
        assert!(
            A::try_parse_from("drop -i eth0 --lease 1s --delay 5ms".split_whitespace()).is_err(),
            "drop takes no --delay"
        );
        // A container instead of an interface (issue 14); one of them is required.
        let s = spec_of("partition --container web --lease 5s --peer 10.0.0.3").unwrap();
        assert_eq!((s.interface.as_str(), s.container.unwrap().name.as_str()), ("", "web"));
        let s = spec_of(
            "drop --container-select com.docker.compose.service=web,tier=a --loss 5 --lease 5s",
        )
        .unwrap();
        assert_eq!(s.container.unwrap().select, ["com.docker.compose.service=web", "tier=a"]);
        assert!(
            A::try_parse_from("drop --loss 5 --lease 5s".split_whitespace()).is_err(),
            "an interface or a container is required"
        );
    }
}

/// A setting of a fault entry (a scenario's YAML, a Web API request's JSON): a switch, a
/// value, or a list of values; each becomes the flag of the same name (`loss: 5%` is
/// `--loss 5%`), so every front end shares the CLI's one spec and its checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Switch(bool),
    Value(String),
    Values(Vec<String>),
}

/// What is wrong with an entry: the setting it concerns ("" for the entry as a whole)
/// and why.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryError {
    pub field: String,
    pub problem: String,
}

#[derive(clap::Parser)]
#[command(no_binary_name = true)]
struct EntryArgs {
    #[command(flatten)]
    apply: Apply,
}

/// A fault entry (`kind` and its settings, with the lease the entry's front end decided)
/// as the spec and controller target `fault apply` would build from the same flags.
/// `command` (a restart's command line) is the one list that is not repeated flags.
pub fn from_entry<'a>(
    kind: &str,
    settings: impl IntoIterator<Item = (&'a str, &'a Setting)>,
    lease: Option<Duration>,
) -> Result<(pb::FaultSpec, cpb::Target), EntryError> {
    let bad = |field: &str, problem: String| EntryError { field: field.to_owned(), problem };
    if kind.is_empty() || kind.starts_with('-') {
        return Err(bad("kind", "required: netem, bandwidth, drop, partition, freeze, kill, restart, cpu-throttle, cpu-stress, memory-pressure".into()));
    }
    let mut argv = vec![kind.to_owned()];
    let mut command = Vec::new();
    for (k, v) in settings {
        if k == "lease" && lease.is_some() {
            return Err(bad(k, "set by the entry's own duration".into()));
        }
        // The command's own output choices; a preview has its own request
        // (POST /api/faults/preview), and a scenario applies what it lists.
        if ["json", "dry_run", "dry-run"].contains(&k) {
            return Err(bad(k, "not a setting of a fault entry".into()));
        }
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(bad(
                k,
                "not a setting name (lowercase letters, digits, '_' and '-')".into(),
            ));
        }
        let flag = format!("--{}", k.replace('_', "-"));
        match v {
            Setting::Switch(true) => argv.push(flag),
            Setting::Switch(false) => {}
            Setting::Values(items) if k == "command" => command.extend(items.iter().cloned()),
            Setting::Values(items) => {
                for it in items {
                    argv.push(flag.clone());
                    argv.push(it.clone());
                }
            }
            Setting::Value(it) => {
                argv.push(flag);
                argv.push(it.clone());
            }
        }
    }
    if let Some(l) = lease {
        argv.push("--lease".into());
        argv.push(format!("{}ms", l.as_millis()));
    }
    if !command.is_empty() {
        argv.push("--".into());
        argv.extend(command);
    }
    let parsed = <EntryArgs as clap::Parser>::try_parse_from(&argv).map_err(|e| {
        // clap names the flag; say it the way the entry does.
        let flag = e
            .get(clap::error::ContextKind::InvalidArg)
            .map(ToString::to_string)
            .unwrap_or_default();
        let msg = e.to_string();
        bad(
            &setting_of(&flag),
            msg.lines().next().unwrap_or("").trim_start_matches("error: ").replace("--", ""),
        )
    })?;
    let spec = spec(&parsed.apply).map_err(|e| {
        let msg = format!("{e:#}");
        bad(&setting_of(&msg), msg.replace("--", ""))
    })?;
    Ok((spec, target(&parsed.apply)))
}

/// One setting of a fault kind as `fault apply KIND --help` describes it, for front ends
/// that build a form from the CLI's own definition (the console) instead of a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingInfo {
    /// As entries name it (`container_select`).
    pub name: String,
    pub help: String,
    /// The help heading it is listed under ("" for the kind's own settings).
    pub heading: String,
    /// What a value looks like (`RATE`); "" for a switch.
    pub value_name: String,
    pub required: bool,
    pub switch: bool,
    /// Repeatable: a list.
    pub list: bool,
    /// The only values it takes, when it names them.
    pub choices: Vec<String>,
    pub default: String,
}

/// A fault kind: what it does and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KindInfo {
    pub kind: String,
    pub about: String,
    pub settings: Vec<SettingInfo>,
}

/// Settings every kind shares that a Web API request carries beside `settings`.
pub const ENTRY_FIELDS: &[&str] =
    &["lease", "label", "select", "on", "all", "mode", "count", "percent"];

/// Every fault kind with its settings, read from the flags `fault apply` parses: a front
/// end that builds its form from this cannot drift from what the parser accepts. The
/// entry fields (`ENTRY_FIELDS`) are listed too, flagged by their heading.
pub fn catalogue() -> Vec<KindInfo> {
    use clap::CommandFactory;
    let cmd = EntryArgs::command();
    cmd.get_subcommands()
        .map(|sub| KindInfo {
            kind: sub.get_name().to_owned(),
            about: sub.get_about().map(ToString::to_string).unwrap_or_default(),
            settings: sub
                .get_arguments()
                .filter(|a| {
                    !a.is_hide_set()
                        && a.get_long().is_some_and(|l| {
                            !["json", "help", "peers-file", "dry-run"].contains(&l)
                        })
                })
                .map(|a| {
                    let long = a.get_long().unwrap_or_default();
                    let switch = matches!(a.get_action(), clap::ArgAction::SetTrue);
                    SettingInfo {
                        name: long.replace('-', "_"),
                        help: a.get_help().map(ToString::to_string).unwrap_or_default(),
                        heading: a.get_help_heading().unwrap_or_default().to_owned(),
                        value_name: if switch {
                            String::new()
                        } else {
                            a.get_value_names()
                                .and_then(|v| v.first())
                                .map_or_else(|| long.to_ascii_uppercase(), ToString::to_string)
                        },
                        required: a.is_required_set()
                            || (long == "lease" && !matches!(sub.get_name(), "kill" | "restart")),
                        switch,
                        list: matches!(a.get_action(), clap::ArgAction::Append)
                            || a.get_value_delimiter().is_some(),
                        choices: a
                            .get_possible_values()
                            .iter()
                            .filter(|v| !v.is_hide_set())
                            .map(|v| v.get_name().to_owned())
                            .collect(),
                        default: if switch {
                            String::new()
                        } else {
                            a.get_default_values()
                                .iter()
                                .map(|v| v.to_string_lossy().into_owned())
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                    }
                })
                .collect(),
        })
        .collect()
}

/// The setting a message starts with ("--lease is required" concerns `lease`; clap's
/// "--interface <INTERFACE>" concerns `interface`), "" when it starts with none.
fn setting_of(text: &str) -> String {
    text.strip_prefix("--").map_or(String::new(), |rest| {
        rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .next()
            .unwrap_or("")
            .replace('-', "_")
    })
}
