//! `cargo bench -p faultline-agent --bench faults` (or `cargo xtask bench`), as root.
//! Side by side with what a user would otherwise run: the `tc` and `iptables` CLIs.
//! Prints markdown tables for docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{Lab, sh_ok, spec};
use faultline_proto::agent::v1::{self as pb, fault_spec::Kind};

const CYCLES: usize = 1000;
/// iperf3 runs per side (metrics on, metrics off), alternating.
const ROUNDS: usize = 5;

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn row(what: &str, apply: Vec<Duration>, revert: Vec<Duration>) {
    println!(
        "| {what} | {:.3} | {:.3} | {:.3} | {:.3} |",
        pct(apply.clone(), 0.5),
        pct(apply, 0.99),
        pct(revert.clone(), 0.5),
        pct(revert, 0.99)
    );
}

fn faultline_cycles(lab: &Lab, kind: Kind) -> (Vec<Duration>, Vec<Duration>) {
    back_to_back(lab, &spec(kind), CYCLES)
}

fn timed(ns: &str, cmds: &[&[&str]]) -> Duration {
    let t = Instant::now();
    for c in cmds {
        let ok =
            Command::new("ip").args(["netns", "exec", ns]).args(*c).status().unwrap().success();
        assert!(ok, "{c:?}");
    }
    t.elapsed()
}

fn iperf(lab: &Lab) -> f64 {
    let mut server = Command::new("ip")
        .args(["netns", "exec", &lab.b, "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = sh_ok(&lab.a, &["iperf3", "-c", &lab.addr(2), "-t", "5", "-O", "1", "-J"]);
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e9
}

/// `n` distinct /32 peers in 172.16.0.0/12, none of them the iperf3 peer.
fn peers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("172.{}.{}.{}/32", 16 + i / 65536, (i / 256) % 256, i % 256)).collect()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Per-run cost of each tracepoint program, from the kernel's own BPF statistics
/// (`kernel.bpf_stats_enabled`, switched on for the measurement and restored).
fn per_event_cost(lab: &Lab) {
    let before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("enable bpf stats");
    let gbit = iperf(lab);
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool");
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", before.trim()).ok();
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    println!(
        "\n| program (during one iperf3 run, {gbit:.2} Gbit/s) | runs | ns per run |\n|---|---|---|"
    );
    for p in progs.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("");
        let (ns, cnt) =
            (p["run_time_ns"].as_u64().unwrap_or(0), p["run_cnt"].as_u64().unwrap_or(0));
        if name.starts_with("faultline_") && cnt > 0 {
            println!("| {name} | {cnt} | {:.0} |", ns as f64 / cnt as f64);
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes; nothing to list.
    }
    let mut lab = Lab::new(91);
    // FAULTLINE_BENCH_ONLY=metrics runs only the kernel-metrics section.
    let only = std::env::var("FAULTLINE_BENCH_ONLY").unwrap_or_default();
    // FAULTLINE_BENCH_ONLY=leases runs only the lease-accuracy section.
    if only == "leases" {
        lease_accuracy(&lab);
        return;
    }
    // FAULTLINE_BENCH_ONLY=containers: container-targeted faults beside a tc sidecar.
    if only == "containers" {
        containers(&lab);
        return;
    }
    // FAULTLINE_BENCH_ONLY=pods: pod-targeted faults beside container-targeted ones.
    if only == "pods" {
        drop(lab);
        pods();
        return;
    }
    let all = only != "metrics";
    if all {
        latency_and_partitions(&lab);
        lease_accuracy(&lab);
    }
    kernel_metrics_overhead(&mut lab);
    if all {
        containers(&lab);
    }
    footprint(&lab);
    drop(lab);
    if all {
        pods();
    }
}

/// `spec` applied and reverted `n` times back to back, each timed to its gRPC answer.
fn back_to_back(lab: &Lab, spec: &pb::FaultSpec, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    lab.grpc(async |mut g| {
        let (mut apply, mut revert) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            let f = g
                .apply_fault(pb::ApplyFaultRequest { spec: Some(spec.clone()), dry_run: false })
                .await
                .unwrap()
                .into_inner()
                .fault
                .unwrap();
            apply.push(t.elapsed());
            let t = Instant::now();
            g.revert_fault(pb::RevertFaultRequest { id: f.id, all: false }).await.unwrap();
            revert.push(t.elapsed());
        }
        (apply, revert)
    })
}

/// Pod-targeted faults (the agent asks the node's CRI runtime for the pod: sandboxes
/// listed, the pod's status and containers asked, each request) beside container-targeted
/// ones (the Docker API's inspect), on one node with 1 pod, then with 100.
fn pods() {
    const N: usize = 200;
    let mut node = common::cri::Node::start(97);
    let lab = Lab::with_agent_args(98, &["--cri-socket", node.socket.to_str().unwrap()]);
    let c = common::docker::Containers::new(93, &[("target", &[])]);
    let _target =
        node.pod("bench", "target-0", &[("app", "target")], &[("main", "exec sleep 3600")]);
    // A 1 % drop of a port nobody uses: the fault is built and attached, no traffic changes.
    let base = pb::FaultSpec {
        interface: String::new(),
        r#match: Some(pb::TrafficMatch {
            ports: vec![pb::PortRange { first: 9, last: 0 }],
            ..Default::default()
        }),
        ..spec(Kind::Drop(pb::Drop { percent: 1.0 }))
    };
    let in_container = pb::FaultSpec {
        container: Some(pb::ContainerTarget { name: c.name("target"), select: Vec::new() }),
        ..base.clone()
    };
    let pod = |name: &str, select: &[&str]| pb::FaultSpec {
        pod: Some(pb::PodTarget {
            namespace: "bench".into(),
            name: name.into(),
            select: select.iter().map(|s| (*s).to_owned()).collect(),
            container: String::new(),
        }),
        ..base.clone()
    };
    println!("\n## pod-targeted faults ({N} cycles back to back, ms)\n");
    println!("| target | apply p50 | apply p99 | revert p50 | revert p99 |\n|---|---|---|---|---|");
    let (a, r) = back_to_back(&lab, &in_container, N);
    row("drop in a Docker container, by name (Docker API inspect)", a, r);
    let (a, r) = back_to_back(&lab, &pod("target-0", &[]), N);
    row(
        "drop in a pod by NAMESPACE/NAME, 1 pod on the node (CRI: list sandboxes, status, containers)",
        a,
        r,
    );
    let (a, r) = back_to_back(&lab, &pod("", &["app=target"]), N);
    row("drop in a pod by label app=target, 1 pod on the node", a, r);
    for i in 1..100 {
        node.pod(
            "bench",
            &format!("other-{i}"),
            &[("app", "other")],
            &[("main", "exec sleep 3600")],
        );
    }
    let (a, r) = back_to_back(&lab, &pod("target-0", &[]), N);
    row("drop in a pod by NAMESPACE/NAME, 100 pods on the node", a, r);
    let (a, r) = back_to_back(&lab, &pod("", &["app=target"]), N);
    row("drop in a pod by label app=target, 100 pods on the node", a, r);
    let (a, r) = back_to_back(&lab, &pod("", &["app in (target,none)"]), N);
    row(
        "drop in a pod by label app in (target,none), 100 pods on the node (no runtime-side filter)",
        a,
        r,
    );
}

/// Container-targeted shaping, apply → effective and revert: faultline (gRPC; the agent
/// resolves the container through the Docker API and acts in its namespace) beside the
/// Pumba-style sidecar (`docker run --rm --network container:X --cap-add NET_ADMIN` with
/// an image holding tc), each timed from the request (or process start) to its return.
fn containers(lab: &Lab) {
    const FL_CYCLES: usize = 200;
    const SIDECAR_CYCLES: usize = 20;
    common::docker::ensure_tc_image();
    let c = common::docker::Containers::new(92, &[("target", &[])]);
    let name = c.name("target");
    let shaping = |rate| pb::FaultSpec {
        container: Some(pb::ContainerTarget { name: name.clone(), select: Vec::new() }),
        interface: String::new(),
        ..spec(Kind::Bandwidth(pb::Bandwidth { rate_bps: rate, burst_bytes: 0 }))
    };
    println!(
        "\n## container-targeted faults ({SIDECAR_CYCLES} cycles first-fault and sidecar, {FL_CYCLES} back to back, ms)\n"
    );
    println!("| change | apply p50 | apply p99 | revert p50 | revert p99 |\n|---|---|---|---|---|");
    // `pause`: waited after each revert; longer than the agent's 2 s idle close, each
    // apply then opens the container's place anew.
    let cycles = |hold: Option<pb::FaultSpec>, n: usize, pause: Duration| {
        lab.grpc(async |mut g| {
            // A fault held for the whole run keeps the container's place (classifier) open.
            let held = match hold {
                Some(s) => Some(
                    g.apply_fault(pb::ApplyFaultRequest { spec: Some(s), dry_run: false })
                        .await
                        .unwrap()
                        .into_inner()
                        .fault
                        .unwrap()
                        .id,
                ),
                None => None,
            };
            let (mut apply, mut revert) = (Vec::new(), Vec::new());
            for _ in 0..n {
                tokio::time::sleep(pause).await;
                let t = Instant::now();
                let f = g
                    .apply_fault(pb::ApplyFaultRequest {
                        spec: Some(shaping(10_000_000)),
                        dry_run: false,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .fault
                    .unwrap();
                apply.push(t.elapsed());
                let t = Instant::now();
                g.revert_fault(pb::RevertFaultRequest { id: f.id, all: false }).await.unwrap();
                revert.push(t.elapsed());
            }
            if let Some(id) = held {
                g.revert_fault(pb::RevertFaultRequest { id, all: false }).await.unwrap();
            }
            (apply, revert)
        })
    };
    let (a, r) = cycles(None, SIDECAR_CYCLES, Duration::from_millis(2500));
    row(
        "faultline bandwidth 10mbit in a container, its first fault (Docker API lookup, namespace opened, classifier loaded, TCX attach), gRPC",
        a,
        r,
    );
    let (a, r) = cycles(None, FL_CYCLES, Duration::ZERO);
    row(
        "faultline bandwidth 10mbit in a container, back to back (its place kept 2 s after a revert), gRPC",
        a,
        r,
    );
    let mut drop = shaping(0);
    drop.kind = Some(Kind::Drop(pb::Drop { percent: 1.0 }));
    drop.r#match = Some(pb::TrafficMatch {
        ports: vec![pb::PortRange { first: 9, last: 0 }],
        ..Default::default()
    });
    let (a, r) = cycles(Some(drop), FL_CYCLES, Duration::ZERO);
    row("faultline bandwidth 10mbit in a container while another fault acts there, gRPC", a, r);
    let (mut a, mut r) = (Vec::new(), Vec::new());
    let sidecar = |args: &[&str]| {
        let net = format!("container:{name}");
        let t = Instant::now();
        let out = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                &net,
                "--cap-add",
                "NET_ADMIN",
                common::docker::TC_IMAGE,
                "/usr/sbin/tc",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sidecar tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    for _ in 0..SIDECAR_CYCLES {
        a.push(sidecar(&[
            "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "10mbit", "burst", "32kb",
            "latency", "50ms",
        ]));
        r.push(sidecar(&["qdisc", "del", "dev", "eth0", "root"]));
    }
    row(
        "Pumba-style sidecar: `docker run --rm --network container:X --cap-add NET_ADMIN` tc qdisc add tbf / del",
        a,
        r,
    );
}

/// How late a lease ends, as the agent's own clock puts it: the fault applied with a
/// 1 s lease is polled every millisecond until it is gone; the error is the moment it
/// disappeared minus (its `applied_at` + lease). Both are this host's clock.
fn lease_accuracy(lab: &Lab) {
    const LEASES: usize = 50;
    let mut late = lab.grpc(async |mut c| {
        let mut late = Vec::new();
        for _ in 0..LEASES {
            let f = c
                .apply_fault(pb::ApplyFaultRequest {
                    spec: Some(pb::FaultSpec {
                        lease_ms: 1000,
                        ..spec(Kind::Drop(pb::Drop { percent: 1.0 }))
                    }),
                    dry_run: false,
                })
                .await
                .unwrap()
                .into_inner()
                .fault
                .unwrap();
            let due = f.applied_at_unix_ms as f64 + 1000.0;
            loop {
                let faults =
                    c.list_faults(pb::ListFaultsRequest {}).await.unwrap().into_inner().faults;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
                    * 1000.0;
                if !faults.iter().any(|x| x.id == f.id) {
                    late.push(now - due);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        late
    });
    late.sort_by(f64::total_cmp);
    let at = |p: f64| late[((late.len() - 1) as f64 * p).round() as usize];
    println!("\n## lease end accuracy ({LEASES} leases of 1 s, gRPC to the agent)\n");
    println!("| after due, ms | p50 | p99 | max |\n|---|---|---|---|");
    println!(
        "| fault gone from the agent's list | {:.1} | {:.1} | {:.1} |",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn latency_and_partitions(lab: &Lab) {
    println!("## apply and revert latency ({CYCLES} cycles, ms)\n");
    println!("| change | apply p50 | apply p99 | revert p50 | revert p99 |\n|---|---|---|---|---|");
    let (a, r) = faultline_cycles(
        lab,
        Kind::Bandwidth(pb::Bandwidth { rate_bps: 10_000_000, burst_bytes: 0 }),
    );
    row("faultline bandwidth 10mbit (htb + class + classifier, journaled), gRPC", a, r);
    let (mut a, mut r) = (Vec::new(), Vec::new());
    for _ in 0..CYCLES {
        a.push(timed(
            &lab.a,
            &[
                &["tc", "qdisc", "add", "dev", "ta", "root", "handle", "1:", "htb", "default", "1"],
                &[
                    "tc", "class", "add", "dev", "ta", "parent", "1:", "classid", "1:1", "htb",
                    "rate", "10mbit",
                ],
            ],
        ));
        r.push(timed(&lab.a, &[&["tc", "qdisc", "del", "dev", "ta", "root"]]));
    }
    row("tc CLI: htb qdisc + class (2 execs) / qdisc del", a, r);
    let (a, r) = faultline_cycles(lab, Kind::Drop(pb::Drop { percent: 10.0 }));
    row("faultline eBPF drop 10%, gRPC", a, r);
    let have_iptables = Command::new("ip")
        .args(["netns", "exec", &lab.a, "iptables", "-L"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_iptables {
        let (mut a, mut r) = (Vec::new(), Vec::new());
        for _ in 0..CYCLES {
            a.push(timed(
                &lab.a,
                &[&[
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    "0.1",
                    "-j",
                    "DROP",
                ]],
            ));
            r.push(timed(
                &lab.a,
                &[&[
                    "iptables",
                    "-D",
                    "OUTPUT",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    "0.1",
                    "-j",
                    "DROP",
                ]],
            ));
        }
        row("iptables CLI: statistic 10% DROP rule", a, r);
    }

    println!("\n## TCP throughput A→B across the veth pair (iperf3, Gbit/s)\n");
    println!(
        "| peers in the partition | faultline (eBPF LPM trie) | iptables (one rule per peer) |\n|---|---|---|"
    );
    let base = iperf(lab);
    println!("| none (baseline) | {base:.2} | {base:.2} |");
    for n in [1_000, 10_000] {
        let list = peers(n);
        let s = pb::FaultSpec {
            r#match: Some(pb::TrafficMatch { peers: list.clone(), ..Default::default() }),
            direction: pb::Direction::Both as i32,
            ..spec(Kind::Partition(pb::Partition {}))
        };
        let f = lab.apply(s).unwrap();
        let fl = iperf(lab);
        lab.revert(&f.id);
        let ipt = if have_iptables {
            let rules: String = list
                .iter()
                .map(|p| format!("-A OUTPUT -d {p} -j DROP\n-A INPUT -s {p} -j DROP\n"))
                .collect();
            let file = std::env::temp_dir().join("faultline-bench.rules");
            std::fs::write(&file, format!("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{rules}COMMIT\n")).unwrap();
            sh_ok(&lab.a, &["iptables-restore", file.to_str().unwrap()]);
            let v = iperf(lab);
            sh_ok(&lab.a, &["iptables", "-F"]);
            format!("{v:.2}")
        } else {
            "iptables not installed".into()
        };
        println!("| {n} | {fl:.2} | {ipt} |");
    }
}

fn kernel_metrics_overhead(lab: &mut Lab) {
    println!("\n## kernel metrics overhead (tracepoint programs attached vs not)\n");
    // Alternating runs, so drift on a shared machine hits both sides alike.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let mut rss = (0, 0);
    for round in 0..ROUNDS * 2 {
        let metrics = round % 2 == 0;
        lab.kill_agent();
        lab.agent_args = if metrics { Vec::new() } else { vec!["--no-kernel-metrics".into()] };
        lab.start_agent();
        let v = iperf(lab);
        let r = rss_kib(lab.agent.as_ref().unwrap().id());
        if metrics {
            on.push(v);
            rss.0 = r;
        } else {
            off.push(v);
            rss.1 = r;
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m_on, m_off) = (median(on.clone()), median(off.clone()));
    println!("| agent | iperf3 Gbit/s, {ROUNDS} runs | median | agent RSS |\n|---|---|---|---|");
    println!("| kernel metrics on | {on:.2?} | {m_on:.2} | {} KiB |", rss.0);
    println!("| --no-kernel-metrics | {off:.2?} | {m_off:.2} | {} KiB |", rss.1);
    println!("\nthroughput with metrics: {:+.1} % vs without", (m_on / m_off - 1.0) * 100.0);
    lab.kill_agent();
    lab.agent_args.clear();
    lab.start_agent();
    per_event_cost(lab);
}

fn footprint(lab: &Lab) {
    println!("\n## agent footprint\n");
    let pid = lab.agent.as_ref().unwrap().id();
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle = (cpu_ticks(pid) - t0) as f64 / 100.0 / 10.0 * 100.0;
    println!("| measure | value |\n|---|---|");
    println!("| RSS, idle after the runs above | {} KiB |", rss_kib(pid));
    println!("| CPU, idle over 10 s | {idle:.2} % of one core |");
}
