//! One fault onto N agents through the controller: time from the call to every agent
//! having acknowledged, and the revert likewise, three ways in alternation — the CLI (a
//! process, gRPC over mutual TLS), `curl` against the Web API (a process, HTTPS with a
//! bearer token) and a program's own gRPC channel kept open (in-process tonic, mutual
//! TLS); controller RSS with N agents.
//! `cargo bench -p faultline-controller --bench fanout` (as root; `FAULTLINE_AGENTS=50`).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const CYCLES: usize = 100;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn target_dir() -> PathBuf {
    // benches run from target/release/deps/
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Lab {
    n: u32,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 1..=self.n {
            let _ = Command::new("ip").args(["netns", "del", &format!("flb{i}")]).status();
        }
        let _ = Command::new("ip").args(["link", "del", "flbbr"]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the lab, then the three ways in one loop, top to bottom as they run"
)]
fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n: u32 = std::env::var("FAULTLINE_AGENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let bin = target_dir();
    for b in ["faultline", "faultline-agent"] {
        assert!(
            bin.join(b).exists(),
            "{} missing: cargo build --release first (cargo xtask bench does)",
            bin.join(b).display()
        );
    }
    let dir = std::env::temp_dir().join(format!("faultline-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab { n, children: Vec::new(), dir: dir.clone() };
    let _ = Command::new("ip").args(["link", "del", "flbbr"]).stderr(Stdio::null()).status();
    ip(&["link", "add", "flbbr", "type", "bridge"]);
    ip(&["addr", "add", "10.202.255.254/16", "dev", "flbbr"]);
    ip(&["link", "set", "flbbr", "up"]);
    let ctl = "10.202.255.254:7080";
    // Mutual TLS, as deployed: the handshake is part of what a user waits for.
    let tls = dir.join("tls");
    assert!(
        Command::new(bin.join("faultline"))
            .args(["certs", "init"])
            .arg(&tls)
            .args(["--web-host", "10.202.255.254"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let token = "bench-operator-token-0123456789abcdef";
    std::fs::write(dir.join("tokens"), format!("operator {token}\n")).unwrap();
    for i in 1..=n {
        assert!(
            Command::new(bin.join("faultline"))
                .args(["certs", "issue", "agent", &format!("a{i}"), "--dir"])
                .arg(&tls)
                .output()
                .unwrap()
                .status
                .success()
        );
    }
    lab.children.push(
        Command::new(bin.join("faultline"))
            .args([
                "controller",
                "serve",
                "--listen",
                ctl,
                "--web-listen",
                "10.202.255.254:7443",
                "--state",
            ])
            .arg(dir.join("controller.db"))
            .arg("--web-token-file")
            .arg(dir.join("tokens"))
            .arg("--tls-dir")
            .arg(&tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for i in 1..=n {
        let ns = format!("flb{i}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link",
            "add",
            &format!("flbv{i}"),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        ip(&["link", "set", &format!("flbv{i}"), "master", "flbbr", "up"]);
        let addr = format!("10.202.{}.{}", i / 250, i % 250 + 1);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/16"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        lab.children.push(
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(bin.join("faultline-agent"))
                .args([
                    "--listen",
                    &format!("{addr}:7070"),
                    "--controller",
                    &format!("https://{ctl}"),
                    "--name",
                    &format!("a{i}"),
                    "--no-kernel-metrics",
                ])
                .arg("--tls-dir")
                .arg(&tls)
                .arg("--state-dir")
                .arg(dir.join(format!("s{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let cli = |args: &[&str]| {
        Command::new(bin.join("faultline"))
            .args(["--controller", &format!("https://{ctl}"), "--tls-dir"])
            .arg(&tls)
            .args(args)
            .output()
            .unwrap()
    };
    // Each agent loads its classifier (the verifier: ~0.3 s of CPU) as it starts.
    let deadline = Instant::now() + Duration::from_secs(120 + u64::from(n) / 2);
    loop {
        let out = cli(&["agents", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let up = v.as_array().map_or(0, |a| a.iter().filter(|x| x["healthy"] == true).count());
        if up == n as usize {
            break;
        }
        assert!(Instant::now() < deadline, "only {up} of {n} agents registered");
        std::thread::sleep(Duration::from_millis(200));
    }
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-f", "--cacert"])
            .arg(tls.join("ca.pem"))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A program's own channel, opened once (what a service calling the controller keeps).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let security =
        faultline_proto::transport::Security::load(&tls, faultline_proto::transport::Role::Cli)
            .unwrap();
    let mut grpc = rt.block_on(async {
        let ch = security
            .endpoint(
                "controller",
                &format!("https://{ctl}"),
                faultline_proto::transport::CONTROLLER_NAME,
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        faultline_proto::controller::v1::controller_service_client::ControllerServiceClient::new(ch)
    });
    let spec = || {
        use faultline_proto::agent::v1 as apb;
        apb::FaultSpec {
            interface: "eth0".into(),
            lease_ms: 60_000,
            r#match: Some(apb::TrafficMatch {
                peers: vec!["192.0.2.1/32".into()],
                ..Default::default()
            }),
            kind: Some(apb::fault_spec::Kind::Drop(apb::Drop { percent: 1.0 })),
            ..Default::default()
        }
    };
    let body = r#"{"kind": "drop", "lease": "60s", "settings": {"interface": "eth0", "loss": "1%", "peer": ["192.0.2.1/32"]}, "all": true}"#;
    let web = "https://10.202.255.254:7443";
    let mut times: [(Vec<Duration>, Vec<Duration>); 3] = Default::default();
    for _ in 0..CYCLES {
        let t = Instant::now();
        let out = cli(&[
            "fault",
            "apply",
            "drop",
            "-i",
            "eth0",
            "--loss",
            "1%",
            "--peer",
            "192.0.2.1/32",
            "--lease",
            "60s",
            "--all",
        ]);
        times[0].0.push(t.elapsed());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let t = Instant::now();
        let out = cli(&["fault", "revert", &id]);
        times[0].1.push(t.elapsed());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        let t = Instant::now();
        let answer = curl(&[
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &format!("{web}/api/faults"),
        ]);
        times[1].0.push(t.elapsed());
        let id = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let t = Instant::now();
        curl(&["-X", "DELETE", &format!("{web}/api/faults/{id}")]);
        times[1].1.push(t.elapsed());

        let t = Instant::now();
        let f = rt
            .block_on(grpc.apply_fault(faultline_proto::controller::v1::ApplyFaultRequest {
                target: Some(faultline_proto::controller::v1::Target {
                    all: true,
                    ..Default::default()
                }),
                spec: Some(spec()),
                dry_run: false,
            }))
            .unwrap()
            .into_inner()
            .fault
            .unwrap();
        times[2].0.push(t.elapsed());
        let t = Instant::now();
        rt.block_on(grpc.revert_fault(faultline_proto::controller::v1::RevertFaultRequest {
            id: f.id,
            all: false,
        }))
        .unwrap();
        times[2].1.push(t.elapsed());
    }
    println!(
        "## one fault onto {n} agents through the controller ({CYCLES} cycles each way, alternating; ms, call to all acknowledged)\n"
    );
    println!("| step | p50 | p99 |\n|---|---|---|");
    for (way, (apply, revert)) in [
        "CLI (process, gRPC, mTLS)",
        "curl → Web API (process, HTTPS, token)",
        "gRPC channel kept open (in-process tonic, mTLS)",
    ]
    .iter()
    .zip(times)
    {
        println!(
            "| {way}: apply (eBPF drop, all {n} agents) | {:.2} | {:.2} |",
            pct(apply.clone(), 0.5),
            pct(apply, 0.99)
        );
        println!("| {way}: revert | {:.2} | {:.2} |", pct(revert.clone(), 0.5), pct(revert, 0.99));
    }
    let t = Instant::now();
    let _ = cli(&["agents", "list"]);
    println!(
        "| `faultline agents list` (CLI start included) | {:.2} | |",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("\ncontroller RSS with {n} agents: {} KiB", rss_kib(lab.children[0].id()));
}
