//! `faultline load` beside wrk, on loopback against nginx (Debian packages), each
//! client pinned to one core and nginx to the other; and an open-loop run at 10k
//! requests/s: how many starts were on time.
//! `cargo bench -p faultline-controller --bench load` (after a release build; `cargo xtask bench`).

use std::{
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

fn release() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("target/release")
}

struct Nginx(Child, PathBuf);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn nginx(port: u16) -> Nginx {
    let dir = std::env::temp_dir().join(format!("faultline-bench-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        ),
    )
    .unwrap();
    let child = Command::new("taskset").args(["-c", "0", "nginx", "-c"]).arg(dir.join("nginx.conf")).arg("-e").arg(dir.join("error.log")).spawn().expect("nginx");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Nginx(child, dir);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nginx did not start");
}

/// CPU seconds (user + system) used by finished children so far.
fn children_cpu() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn wrk(url: &str, conns: u32, secs: u32) -> f64 {
    let out = Command::new("taskset").args(["-c", "1", "wrk", "-t1"]).arg(format!("-c{conns}")).arg(format!("-d{secs}s")).arg(url).output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("wrk output: {text}"))
}

fn faultline(args: &[&str]) -> serde_json::Value {
    let out = Command::new("taskset").args(["-c", "1"]).arg(release().join("faultline")).arg("load").args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    assert!(release().join("faultline").exists(), "cargo build --release first (cargo xtask bench does)");
    let port = 18180;
    let url = format!("http://127.0.0.1:{port}/");
    let _n = nginx(port);
    let (rounds, secs, conns) = (3, 10, 50);
    let (mut w, mut f, mut wcpu, mut fcpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        // Alternating, so drift on the machine hits both alike. nginx on one core may
        // be what limits both; CPU per request says what each client costs.
        let c0 = children_cpu();
        let r = wrk(&url, conns, secs);
        wcpu.push((children_cpu() - c0) / (r * f64::from(secs)) * 1e6);
        w.push(r);
        let c0 = children_cpu();
        let s = faultline(&[&url, "--concurrency", &conns.to_string(), "--duration", &format!("{secs}s")]);
        assert_eq!(s["errors"], 0, "{s}");
        fcpu.push((children_cpu() - c0) / s["requests"].as_f64().unwrap() * 1e6);
        f.push(s["rate"].as_f64().unwrap());
    }
    println!("## closed loop, {conns} connections, one client core, nginx on the other ({rounds} rounds of {secs} s, requests/s)\n");
    println!("| tool | median req/s | runs | client CPU µs per request (median) |\n|---|---|---|---|");
    println!("| wrk -t1 -c{conns} | {:.0} | {:?} | {:.2} |", median(w.clone()), w.iter().map(|x| x.round()).collect::<Vec<_>>(), median(wcpu));
    println!(
        "| faultline load --concurrency {conns} (every request in HDR histograms) | {:.0} | {:?} | {:.2} |",
        median(f.clone()),
        f.iter().map(|x| x.round()).collect::<Vec<_>>(),
        median(fcpu)
    );
    println!("\nfaultline / wrk: {:.2}", median(f) / median(w));

    let s = faultline(&[&url, "--rate", "10000", "--duration", "10s"]);
    let (req, sched) = (s["requests"].as_u64().unwrap(), s["scheduled"].as_u64().unwrap());
    let wall = s["elapsed_s"].as_f64().unwrap();
    println!("\n## open loop at 10 000 requests/s for 10 s\n");
    println!(
        "scheduled {sched}, sent and answered {req}, errors {}, late starts (> 5 ms) {} ({:.3} %), max start lag {:.2} ms; rate over the wall clock {:.1}/s ({:+.2} % of target); p50 {} ms, p99 {} ms",
        s["errors"],
        s["late_starts"],
        s["late_starts"].as_f64().unwrap() * 100.0 / req as f64,
        s["max_start_lag_ms"].as_f64().unwrap(),
        req as f64 / wall,
        (req as f64 / wall / 10_000.0 - 1.0) * 100.0,
        s["latency_ms"]["p50"],
        s["latency_ms"]["p99"],
    );
}
