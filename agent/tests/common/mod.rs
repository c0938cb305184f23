//! A lab for privileged tests: two network namespaces joined by a veth pair
//! (`ta` in A, `tb` in B, 10.200.N.0/24 and `fd00:N::/64`), a real agent in A.
//! Everything is removed on drop, even when the test fails.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod cri;
pub mod docker;

use std::{
    fs::File,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use faultline_proto::agent::v1::{self as pb, agent_service_client::AgentServiceClient};
use tonic::transport::Channel;

pub struct Lab {
    pub id: u8,
    pub a: String,
    pub b: String,
    pub state: PathBuf,
    pub agent: Option<Child>,
    /// Extra agent flags for the next `start_agent`.
    pub agent_args: Vec<String>,
    /// The agent's descriptor limit (soft and hard), as a unit's `LimitNOFILE` sets it.
    pub nofile: Option<u64>,
}

pub fn sh(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("run command in netns")
}

pub fn sh_ok(ns: &str, cmd: &[&str]) -> String {
    let out = sh(ns, cmd);
    assert!(out.status.success(), "{cmd:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Lab {
    /// `id` must be unique per test (it picks names and subnets).
    pub fn new(id: u8) -> Self {
        Self::with_agent_args(id, &[])
    }

    pub fn with_agent_args(id: u8, agent_args: &[&str]) -> Self {
        let a = format!("flt{id}a");
        let b = format!("flt{id}b");
        for ns in [&a, &b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &a, "link", "add", "ta", "type", "veth", "peer", "name", "tb", "netns", &b]);
        for (ns, dev, host) in [(&a, "ta", 1), (&b, "tb", 2)] {
            ip(&["-n", ns, "addr", "add", &format!("10.200.{id}.{host}/24"), "dev", dev]);
            ip(&["-n", ns, "addr", "add", &format!("fd00:{id}::{host}/64"), "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // A second address on B, to show that peer-targeted faults spare other peers.
        ip(&["-n", &b, "addr", "add", &format!("10.200.{id}.3/24"), "dev", "tb"]);
        let state =
            std::env::temp_dir().join(format!("faultline-test-{id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let mut lab = Self {
            id,
            a,
            b,
            state,
            agent: None,
            agent_args: agent_args.iter().map(|s| (*s).to_owned()).collect(),
            nofile: None,
        };
        lab.start_agent();
        lab
    }

    pub fn addr(&self, host: u8) -> String {
        format!("10.200.{}.{host}", self.id)
    }

    pub fn addr6(&self, host: u8) -> String {
        format!("fd00:{}::{host}", self.id)
    }

    pub fn listen(&self) -> String {
        format!("{}:7070", self.addr(1))
    }

    /// The agent's gRPC URL (mutual TLS, as in production).
    pub fn url(&self) -> String {
        format!("https://{}", self.listen())
    }

    pub fn metrics_listen(&self) -> String {
        format!("{}:9464", self.addr(1))
    }

    /// GET /metrics from inside A.
    pub fn prometheus(&self) -> String {
        use std::io::{Read, Write};
        let addr = self.metrics_listen();
        self.in_a(|| {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect to /metrics");
            write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            assert!(out.starts_with("HTTP/1.1 200"), "{}", out.lines().next().unwrap_or(""));
            out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
        })
    }

    pub fn metrics(&self) -> pb::MetricsSample {
        self.grpc(async |mut c| {
            c.get_metrics(pb::GetMetricsRequest {}).await.expect("metrics").into_inner()
        })
    }

    pub fn peer_metrics(&self, peer: &str) -> pb::PeerMetrics {
        self.metrics()
            .peers
            .into_iter()
            .find(|p| p.peer == peer && p.container.is_empty())
            .unwrap_or_default()
    }

    pub fn start_agent(&mut self) {
        use std::os::unix::process::CommandExt;
        let log = File::create(self.state.with_extension("log")).expect("agent log");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.a,
            env!("CARGO_BIN_EXE_faultline-agent"),
            "--listen",
            &self.listen(),
            "--metrics-listen",
            &self.metrics_listen(),
            "--state-dir",
        ])
        .arg(&self.state)
        .arg("--tls-dir")
        .arg(test_certs())
        .args(&self.agent_args)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        if let Some(n) = self.nofile {
            // SAFETY: setrlimit is async-signal-safe; the closure runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd.spawn().expect("spawn agent");
        self.agent = Some(child);
        // Ready when it answers; no timing assumption beyond a generous ceiling.
        let deadline = Instant::now() + Duration::from_mins(1);
        while Instant::now() < deadline {
            if self.in_a(|| rt().block_on(async { client(&self.url()).await.is_ok() })) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "agent did not answer; log: {}",
            std::fs::read_to_string(self.state.with_extension("log")).unwrap_or_default()
        );
    }

    /// SIGKILL: the agent gets no chance to clean up.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            // `ip netns exec` execs the agent, so this pid is the agent's.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            c.wait().unwrap();
        }
    }

    pub fn in_a<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.a, f)
    }

    pub fn in_b<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.b, f)
    }

    /// Runs an async gRPC body from inside namespace A.
    pub fn grpc<T: Send>(&self, f: impl AsyncFnOnce(AgentServiceClient<Channel>) -> T + Send) -> T {
        let url = self.url();
        self.in_a(|| {
            rt().block_on(async { f(client(&url).await.expect("connect to agent")).await })
        })
    }

    pub fn apply(&self, spec: pb::FaultSpec) -> Result<pb::FaultStatus, tonic::Status> {
        self.grpc(async |mut c| {
            c.apply_fault(pb::ApplyFaultRequest { spec: Some(spec), dry_run: false })
                .await
                .map(|r| r.into_inner().fault.unwrap())
        })
    }

    pub fn revert(&self, id: &str) {
        let id = id.to_owned();
        self.grpc(async |mut c| {
            c.revert_fault(pb::RevertFaultRequest { id, all: false }).await.expect("revert")
        });
    }

    pub fn list(&self) -> Vec<pb::FaultStatus> {
        self.grpc(async |mut c| {
            c.list_faults(pb::ListFaultsRequest {}).await.expect("list").into_inner().faults
        })
    }

    /// `tc qdisc show` and `tc filter show` of A's interface, for byte-for-byte comparison.
    pub fn tc_state(&self) -> String {
        let mut s = sh_ok(&self.a, &["tc", "qdisc", "show"]);
        for dir in ["ingress", "egress"] {
            s += &sh_ok(&self.a, &["tc", "filter", "show", "dev", "ta", dir]);
        }
        s + &sh_ok(&self.a, &["ip", "-o", "link", "show"])
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned() + "\n")
            .collect::<String>()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        clean_up_or_keep(&self.state);
    }
}

/// A test agent's state directory and what was written beside it (`STATE.log`,
/// `STATE.squat.log`, ...): removed when the test passed, kept and named when it failed.
pub fn clean_up_or_keep(state: &std::path::Path) {
    let (Some(dir), Some(name)) = (state.parent(), state.file_name()) else { return };
    let name = name.to_string_lossy().into_owned();
    let prefix = format!("{name}.");
    let ours =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy() == name || n.to_string_lossy().starts_with(&prefix)
            })
        });
    for p in ours {
        if std::thread::panicking() {
            eprintln!("kept for a look: {}", p.display());
        } else if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Certificates for every lab in this test process: `faultline certs init`'s code, in
/// cargo's scratch directory.
pub fn test_certs() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        faultline_proto::transport::certgen::init(&dir).expect("lab certificates");
        dir
    })
}

/// A channel as the CLI makes one: mTLS with the test CA for https://, plaintext for http://.
pub async fn channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    use faultline_proto::transport::{AGENT_NAME, Role, Security};
    let security = if url.starts_with("https://") {
        Security::load(test_certs(), Role::Cli).expect("test certificates")
    } else {
        Security::Insecure
    };
    security.endpoint("url", url, AGENT_NAME).expect("a valid test URL").connect().await
}

/// A client presenting the test CA's certificate `stem` (agent, controller, cli, viewer).
pub async fn client_as(
    url: &str,
    stem: &str,
) -> Result<AgentServiceClient<Channel>, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |f: String| std::fs::read(test_certs().join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
        .identity(Identity::from_pem(read(format!("{stem}.pem")), read(format!("{stem}-key.pem"))))
        .domain_name(faultline_proto::transport::AGENT_NAME);
    Ok(AgentServiceClient::new(
        Endpoint::from_shared(url.to_owned()).unwrap().tls_config(tls)?.connect().await?,
    ))
}

pub async fn client(url: &str) -> Result<AgentServiceClient<Channel>, tonic::transport::Error> {
    Ok(AgentServiceClient::new(channel(url).await?))
}

/// Runs `f` on a thread that has joined network namespace `ns`; sockets it opens live there.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/var/run/netns/{ns}")).expect("netns exists");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

pub fn spec(kind: pb::fault_spec::Kind) -> pb::FaultSpec {
    pb::FaultSpec {
        interface: "ta".into(),
        direction: pb::Direction::Egress as i32,
        lease_ms: 120_000,
        kind: Some(kind),
        ..Default::default()
    }
}

pub fn with_peers(mut s: pb::FaultSpec, peers: &[&str]) -> pb::FaultSpec {
    s.r#match = Some(pb::TrafficMatch {
        peers: peers.iter().map(|p| (*p).to_owned()).collect(),
        ..Default::default()
    });
    s
}

#[derive(Debug)]
pub struct UdpRun {
    pub sent: u32,
    pub send_errors: u32,
    pub received: u32,
}

/// Sends `n` numbered UDP datagrams from `from_ns` to `to` (bound in `to_ns`), paced so
/// that no queue on the path overflows, and counts what arrives.
pub fn udp_run(from_ns: &str, to_ns: &str, to: SocketAddr, n: u32) -> UdpRun {
    let done = AtomicBool::new(false);
    let bind: SocketAddr =
        if to.is_ipv4() { format!("0.0.0.0:{}", to.port()) } else { format!("[::]:{}", to.port()) }
            .parse()
            .unwrap();
    std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let done = &done;
        let rx = s.spawn(move || {
            in_ns(to_ns, || {
                let sock = UdpSocket::bind(bind).expect("bind receiver");
                sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                ready_tx.send(()).unwrap();
                let mut seen = vec![false; n as usize];
                let mut buf = [0u8; 64];
                loop {
                    match sock.recv(&mut buf) {
                        Ok(len) if len >= 4 => {
                            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                            if let Some(slot) = seen.get_mut(seq as usize) {
                                *slot = true;
                            }
                        }
                        Ok(_) => {}
                        Err(_) if done.load(Ordering::SeqCst) => break,
                        Err(_) => {}
                    }
                }
                seen.iter().filter(|s| **s).count() as u32
            })
        });
        ready_rx.recv().unwrap();
        let (sent, send_errors) = in_ns(from_ns, || {
            let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
            let (mut sent, mut errors) = (0, 0);
            for seq in 0..n {
                match sock.send_to(&seq.to_be_bytes(), to) {
                    Ok(_) => sent += 1,
                    Err(_) => errors += 1,
                }
                if seq % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            (sent, errors)
        });
        // Let the last datagrams land before the receiver's timeout can end it.
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::SeqCst);
        let received = rx.join().unwrap();
        UdpRun { sent, send_errors, received }
    })
}

/// The 99 % normal-approximation interval of a binomial proportion.
pub fn binomial_99(p: f64, n: u32) -> (f64, f64) {
    let half = 2.576 * (p * (1.0 - p) / f64::from(n)).sqrt();
    (p - half, p + half)
}

/// A correct rate lands outside its 99 % interval 1 time in 100. A sample outside is
/// measured once more, independently: a correct implementation then fails 1 time in
/// 10,000, while a wrong rate still fails.
pub fn retry_outside(lo: f64, hi: f64, mut measure: impl FnMut() -> f64) -> f64 {
    let first = measure();
    if (lo..=hi).contains(&first) {
        return first;
    }
    println!("sample {first:.4} outside {lo:.4}..{hi:.4}; measuring again");
    measure()
}

/// Polls `cond` until true or a generous ceiling passes (not a timing assertion:
/// the ceiling only stops a broken test from hanging).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_mins(1);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never happened: {what}");
}
