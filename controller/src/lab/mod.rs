//! `faultline lab up|down|status|demo`: a lab of N hosts on this machine. Each host is a
//! network namespace on one bridge with its own address, runs a real agent registered
//! with a real controller, and a real system under test: nginx on h1 balancing over
//! nginx backends on the other hosts, redis on h2 with a replica on each further host.
//!
//! What the lab creates is written to DIR/lab.json before it is created (a process right
//! after it starts, with its start time), and `down` removes exactly that: processes
//! (signalled only if pid and start time still match), namespaces, the bridge, DIR.

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use faultline_proto::{
    controller::v1::{self as pb, controller_service_client::ControllerServiceClient},
    transport::{CONTROLLER_NAME, Role, Security},
};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DIR: &str = "/run/faultline-lab";
const BRIDGE: &str = "fl-lab";
const CONTROLLER_IP: &str = "10.77.0.1";
const CONTROLLER_PORT: u16 = 7080;
/// The lab's own scenario, so an installed `faultline` runs the demo without the sources.
const LAB_SCENARIO: &str = include_str!("../../../examples/lab.yaml");

#[derive(clap::Subcommand)]
pub enum LabCmd {
    /// Bring the lab up; on a lab that is already up it changes nothing.
    Up(Opts),
    /// Stop and remove everything `up` created (agents first: they revert their faults).
    Down {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Hosts, processes and agents; --env prints the variables that point the CLI at the lab.
    Status {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        #[arg(long)]
        env: bool,
    },
    /// Bring the lab up, run a scenario under load (default: examples/lab.yaml — loss,
    /// bandwidth, a partition, a frozen process, and delay where the kernel has netem),
    /// write the run directory and report.html, and take the lab down unless --keep.
    Demo {
        #[command(flatten)]
        opts: Opts,
        /// Leave the lab up afterwards.
        #[arg(long)]
        keep: bool,
        /// The run directory (default: runs/lab-YYYYMMDDTHHMMSSZ).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Another scenario against the lab.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
}

#[derive(clap::Args, Clone)]
pub struct Opts {
    /// Hosts, 2 to 9: h1 runs the load balancer, the others a backend and redis.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=9))]
    hosts: u8,
    /// Where the lab keeps certificates, configuration, logs and state.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Hosts are qemu VMs booted from `IMAGE_DIR` (disk.img, vmlinuz, stage1.gz, made by
    /// `cargo xtask vm-lab-image`): a Debian kernel, so netem delay works even where this
    /// machine's kernel has none. KVM when it works, TCG otherwise.
    #[arg(long, value_name = "IMAGE_DIR")]
    vm: Option<PathBuf>,
}

/// What the lab created, written before each thing is created.
#[derive(Serialize, Deserialize, Default)]
struct State {
    hosts: u8,
    bridge: Option<String>,
    netns: Vec<String>,
    processes: Vec<Proc>,
    /// VM hosts: their tap devices.
    #[serde(default)]
    vm: bool,
    /// The firewall tools (iptables, ip6tables) that got the lab's FORWARD rule.
    #[serde(default)]
    firewall: Vec<String>,
    #[serde(default)]
    taps: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Proc {
    what: ProcKind,
    host: String,
    pid: u32,
    /// From /proc/PID/stat: a pid reused by another process never matches.
    start_time: u64,
    log: PathBuf,
}

/// What a lab process is: its log is HOST-WHAT.log, and agents stop first on `down`
/// (they undo their faults while the network they undo them on still exists).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ProcKind {
    Controller,
    Agent,
    Nginx,
    Redis,
    Vm,
}

impl ProcKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Agent => "agent",
            Self::Nginx => "nginx",
            Self::Redis => "redis",
            Self::Vm => "vm",
        }
    }
}

impl std::fmt::Display for ProcKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

pub fn host_ip(i: u8) -> String {
    format!("10.77.0.{}", 10 + u16::from(i))
}

fn netns_name(i: u8) -> String {
    format!("fl-lab-h{i}")
}

fn controller_url() -> String {
    format!("https://{CONTROLLER_IP}:{CONTROLLER_PORT}")
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (apt: iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists() || Path::new("/var/run/netns").join(name).exists()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Field 22 of /proc/PID/stat, and whether the process is a zombie.
fn start_time(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    Some((rest.get(19)?.parse().ok()?, rest.first() == Some(&"Z")))
}

impl Proc {
    fn alive(&self) -> bool {
        start_time(self.pid).is_some_and(|(t, zombie)| t == self.start_time && !zombie)
    }
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

fn load(dir: &Path) -> Result<Option<State>> {
    match std::fs::read_to_string(state_file(dir)) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not a lab state file", state_file(dir).display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", state_file(dir).display())),
    }
}

fn save(dir: &Path, s: &State) -> Result<()> {
    let tmp = dir.join("lab.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)?;
    std::fs::rename(&tmp, state_file(dir))?;
    Ok(())
}

/// A program on PATH, or next to this executable (where cargo and the installer put ours).
fn find_program(name: &str, package: &str) -> Result<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(name)));
    let path = std::env::var_os("PATH").unwrap_or_default();
    beside
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join(name)))
        .chain(["/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH ({package})"))
}

struct Lab<'a> {
    dir: &'a Path,
    state: State,
}

impl Lab<'_> {
    /// Starts `program` in host `host`'s namespace (or this one for None), detached from
    /// this process, output to DIR/logs/HOST-WHAT.log, and records it.
    fn spawn(
        &mut self,
        what: ProcKind,
        host: &str,
        ns: Option<&str>,
        program: &Path,
        args: &[String],
    ) -> Result<()> {
        let log = self.dir.join("logs").join(format!("{host}-{what}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        // Its own process group: a Ctrl-C meant for `lab up` does not reach the lab.
        cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {}", program.display()))?;
        // `ip netns exec` execs the program in place, so the pid is the program's.
        let (start_time, _) = start_time(child.id())
            .with_context(|| format!("{what} on {host} exited at once; see {}", log.display()))?;
        self.state.processes.push(Proc {
            what,
            host: host.into(),
            pid: child.id(),
            start_time,
            log,
        });
        save(self.dir, &self.state)
    }

    fn check_alive(&self) -> Result<()> {
        for p in &self.state.processes {
            if !p.alive() {
                let tail = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> =
                    tail.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("{} on {} exited; {}:\n{}", p.what, p.host, p.log.display(), tail.join("\n"));
            }
        }
        Ok(())
    }
}

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and loads eBPF programs: run it as root");
    }
    Ok(())
}

fn nginx_conf(dir: &Path, name: &str, body: &str) -> Result<PathBuf> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    let dd = d.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {dd}/nginx.pid; error_log {dd}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {dd}; proxy_temp_path {dd}; fastcgi_temp_path {dd}; uwsgi_temp_path {dd}; scgi_temp_path {dd};\n{body}}}\n"
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// Polls `ready` until it holds or `limit` passes; `what` names it in the error.
fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} not ready after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One request on a fresh connection; the whole answer as text.
fn ask(addr: &str, request: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(request).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn http_ok(addr: &str) -> bool {
    ask(addr, b"GET / HTTP/1.0\r\n\r\n").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

fn security(dir: &Path) -> Result<Security> {
    Ok(Security::from_flags(false, Some(&dir.join("tls")), Role::Cli)?)
}

async fn controller(dir: &Path) -> Result<ControllerServiceClient<tonic::transport::Channel>> {
    let endpoint = security(dir)?.endpoint("controller", &controller_url(), CONTROLLER_NAME)?;
    Ok(ControllerServiceClient::new(
        endpoint.connect().await.context("connecting to the lab's controller")?,
    ))
}

async fn agents(dir: &Path) -> Result<Vec<pb::Agent>> {
    Ok(controller(dir).await?.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents)
}

pub async fn run(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::Up(o) => up(&o).await,
        LabCmd::Down { dir } => down(&dir),
        LabCmd::Status { dir, env } => status(&dir, env).await,
        LabCmd::Demo { opts, keep, out, scenario } => demo::demo(&opts, keep, out, scenario).await,
    }
}

async fn up(o: &Opts) -> Result<()> {
    require_root()?;
    let dir = o.dir.as_path();
    if let Some(old) = load(dir)? {
        if old.hosts == o.hosts
            && old.vm == o.vm.is_some()
            && !old.processes.is_empty()
            && old.processes.iter().all(Proc::alive)
        {
            println!("the lab in {} is already up", dir.display());
            return status(dir, false).await;
        }
        eprintln!(
            "the lab in {} is partly up or of another kind: taking it down first",
            dir.display()
        );
        down(dir)?;
    }
    // Never take over what this lab did not create.
    let names: Vec<String> = (1..=o.hosts).map(netns_name).collect();
    for n in &names {
        if netns_exists(n) {
            bail!(
                "network namespace {n} exists but no lab in {} created it; remove it (ip netns del {n}) or use --dir of the lab that did",
                dir.display()
            );
        }
        if link_exists(n) {
            bail!("interface {n} exists but no lab in {} created it", dir.display());
        }
    }
    if link_exists(BRIDGE) {
        bail!("interface {BRIDGE} exists but no lab in {} created it", dir.display());
    }
    let me = std::env::current_exe().context("locating the faultline executable")?;
    let hosts = match &o.vm {
        Some(image) => {
            for f in ["disk.img", "vmlinuz", "stage1.gz"] {
                if !image.join(f).is_file() {
                    bail!(
                        "--vm {}: no {f} there (`cargo xtask vm-lab-image` builds the image)",
                        image.display()
                    );
                }
            }
            let qemu = find_program("qemu-system-x86_64", "apt install qemu-system-x86")?;
            let accel = vm::accel(&image.join("vmlinuz"));
            println!("VM hosts under qemu with {accel}");
            Hosts::Vms { image: image.clone(), qemu, accel }
        }
        None => Hosts::Namespaces {
            agent: find_program(
                "faultline-agent",
                "build it: cargo build --release -p faultline-agent",
            )?,
            nginx: find_program("nginx", "apt install nginx")?,
            redis: find_program("redis-server", "apt install redis-server")?,
        },
    };

    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut lab =
        Lab { dir, state: State { hosts: o.hosts, vm: o.vm.is_some(), ..State::default() } };
    save(dir, &lab.state)?;
    let result = build(&mut lab, &names, &hosts, &me).await;
    if let Err(e) = result {
        return Err(e.context(format!(
            "the lab is partly up: logs in {}/logs; `faultline lab down --dir {}` removes it",
            dir.display(),
            dir.display()
        )));
    }
    status(dir, false).await
}

/// What the hosts are made of.
enum Hosts {
    Namespaces { agent: PathBuf, nginx: PathBuf, redis: PathBuf },
    Vms { image: PathBuf, qemu: PathBuf, accel: vm::Accel },
}

async fn build(lab: &mut Lab<'_>, names: &[String], hosts: &Hosts, me: &Path) -> Result<()> {
    let dir = lab.dir;
    let n = lab.state.hosts;
    if !dir.join("tls/ca.pem").exists() {
        faultline_proto::transport::certgen::init(&dir.join("tls"))?;
    }
    // One certificate per host, bound to its name: only h2 may register as h2.
    for i in 1..=n {
        let host = format!("h{i}");
        if !dir.join(format!("tls/agent-{host}.pem")).exists() {
            faultline_proto::transport::certgen::issue(
                &dir.join("tls"),
                faultline_proto::identity::CertRole::Agent,
                &host,
            )?;
        }
    }
    lab.state.bridge = Some(BRIDGE.into());
    save(dir, &lab.state)?;
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{CONTROLLER_IP}/24"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    for tool in firewall::tools() {
        lab.state.firewall.push(tool.to_owned());
        save(dir, &lab.state)?;
        if let Err(e) = firewall::open(tool, BRIDGE) {
            lab.state.firewall.pop();
            save(dir, &lab.state)?;
            eprintln!(
                "warning: {e:#}: if this host's firewall drops forwarded traffic, the lab's hosts cannot reach each other"
            );
        }
    }
    let tls = dir.join("tls").display().to_string();
    let listen = format!("{CONTROLLER_IP}:{CONTROLLER_PORT}");
    lab.spawn(
        ProcKind::Controller,
        "lab",
        None,
        me,
        &[
            "--tls-dir".into(),
            tls.clone(),
            "controller".into(),
            "serve".into(),
            "--listen".into(),
            listen.clone(),
            "--state".into(),
            dir.join("controller.db").display().to_string(),
        ],
    )?;
    wait_for("the controller", Duration::from_secs(20), || TcpStream::connect(&listen).is_ok())?;
    let registered = match hosts {
        Hosts::Namespaces { agent, nginx, redis } => {
            netns::namespaces(lab, names, agent, nginx, redis)?;
            Duration::from_secs(30)
        }
        Hosts::Vms { image, qemu, accel } => {
            vm::vms(lab, names, image, qemu, *accel)?;
            // Booting under TCG, several VMs on a few cores, takes a while.
            Duration::from_secs(match accel {
                vm::Accel::Kvm => 60,
                vm::Accel::Tcg => 300,
            })
        }
    };
    let deadline = Instant::now() + registered;
    loop {
        lab.check_alive()?;
        let healthy = agents(dir).await.map_or(0, |a| a.iter().filter(|a| a.healthy).count());
        if healthy == usize::from(n) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{healthy} of {n} agents registered with the controller after {} s",
                registered.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let front = format!("{}:80", host_ip(1));
    wait_for("nginx on h1", Duration::from_secs(30), || http_ok(&front))?;
    for i in 2..=n {
        let addr = format!("{}:6379", host_ip(i));
        wait_for(&format!("redis on h{i}"), Duration::from_secs(30), || {
            ask(&addr, b"PING\r\n").is_some_and(|r| r.starts_with("+PONG"))
        })?;
        if i > 2 {
            wait_for(&format!("redis replication h2 -> h{i}"), Duration::from_secs(30), || {
                ask(&addr, b"INFO replication\r\n")
                    .is_some_and(|r| r.contains("master_link_status:up"))
            })?;
        }
    }
    lab.check_alive()
}

/// The system under test, one definition for both kinds of lab (the namespace lab runs
/// these itself; a VM gets them on its seed disk and installs them).
mod demo;
mod firewall;
mod netns;
mod sut;
mod vm;

fn down(dir: &Path) -> Result<()> {
    require_root()?;
    let Some(s) = load(dir)? else {
        println!("no lab in {}", dir.display());
        return Ok(());
    };
    // Agents first and alone: on SIGTERM each reverts the faults it holds.
    let (agents, others): (Vec<Proc>, Vec<Proc>) =
        s.processes.iter().cloned().partition(|p| p.what == ProcKind::Agent);
    stop(&agents, Duration::from_secs(10));
    stop(&others, Duration::from_secs(5));
    for ns in &s.netns {
        // The host end of the host's veth pair carries the namespace's name. Deleting it
        // takes the pair down at once; a deleted namespace frees its links only later.
        if link_exists(ns) {
            ip(&["link", "del", ns])?;
        }
        if netns_exists(ns) {
            ip(&["netns", "del", ns])?;
        }
    }
    for tap in &s.taps {
        if link_exists(tap) {
            ip(&["link", "del", tap])?;
        }
    }
    for tool in &s.firewall {
        firewall::close(tool, s.bridge.as_deref().unwrap_or(BRIDGE))?;
    }
    if let Some(b) = &s.bridge
        && link_exists(b)
    {
        ip(&["link", "del", b])?;
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    let hosts = if s.vm {
        format!("{} taps", s.taps.len())
    } else {
        format!("{} namespaces", s.netns.len())
    };
    println!(
        "lab down: {} processes stopped, {hosts} and the bridge removed, {} removed",
        s.processes.len(),
        dir.display()
    );
    Ok(())
}

/// SIGTERM, then SIGKILL whatever is still there after `grace`.
fn stop(procs: &[Proc], grace: Duration) {
    use nix::{sys::signal, unistd::Pid};
    let pid = |p: &Proc| Pid::from_raw(i32::try_from(p.pid).unwrap_or(i32::MAX));
    let live: Vec<&Proc> = procs.iter().filter(|p| p.alive()).collect();
    for p in &live {
        let _ = signal::kill(pid(p), signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while live.iter().any(|p| p.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in live.iter().filter(|p| p.alive()) {
        eprintln!(
            "{} on {} (pid {}) ignored SIGTERM for {} s: killing it",
            p.what,
            p.host,
            p.pid,
            grace.as_secs()
        );
        let _ = signal::kill(pid(p), signal::Signal::SIGKILL);
    }
}

async fn status(dir: &Path, env: bool) -> Result<()> {
    let Some(s) = load(dir)? else {
        bail!("no lab in {} (`faultline lab up` starts one)", dir.display());
    };
    let vars = format!(
        "export FAULTLINE_CONTROLLER={} FAULTLINE_TLS_DIR={}",
        controller_url(),
        dir.join("tls").display()
    );
    if env {
        println!("{vars}");
        return Ok(());
    }
    println!(
        "lab in {}: {} hosts on bridge {BRIDGE} ({CONTROLLER_IP}/24), controller {}",
        dir.display(),
        s.hosts,
        controller_url()
    );
    for p in &s.processes {
        println!(
            "  {:<4} {:<10} pid {:<8} {}",
            p.host,
            p.what,
            p.pid,
            if p.alive() { "running" } else { "GONE" }
        );
    }
    match agents(dir).await {
        Ok(list) => {
            for a in list {
                let labels: Vec<String> =
                    a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "  agent {:<4} {:<26} {:<8} {}",
                    a.name,
                    a.url,
                    if a.healthy { "healthy" } else { "DOWN" },
                    labels.join(",")
                );
            }
        }
        Err(e) => println!("  controller unreachable: {e:#}"),
    }
    println!(
        "  service: http://{}:80/ (nginx over backends h2..h{}), redis://{}:6379 (primary)",
        host_ip(1),
        s.hosts,
        host_ip(2)
    );
    println!(
        "use it:  eval \"$(faultline lab status --env)\"   # then: faultline agents list; faultline run examples/lab.yaml"
    );
    Ok(())
}
