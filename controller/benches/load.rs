//! `faultline load` beside wrk, on loopback against nginx (Debian packages), each
//! client pinned to one core and nginx to the other; and open loop beside oha (when
//! `oha` is on PATH: `cargo install oha`) at 1k to 60k requests/s: achieved rate, starts
//! more than 5 ms late, corrected and uncorrected p50.
//! `cargo bench -p faultline-controller --bench load` (after a release build; `cargo xtask bench`).
//! `FAULTLINE_BENCH_OPEN_ONLY=1` runs the open-loop part alone.

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
    let child = Command::new("taskset")
        .args(["-c", "0", "nginx", "-c"])
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .spawn()
        .expect("nginx");
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
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg(url)
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk output: {text}"))
}

fn faultline(args: &[&str]) -> serde_json::Value {
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(release().join("faultline"))
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// oha's JSON for one open-loop run: (achieved rate, p50 ms).
fn oha(url: &str, rate: u32, secs: u32, conns: u32, corrected: bool) -> (f64, f64) {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1", "oha", "--no-tui", "--output-format", "json", "-z"])
        .arg(format!("{secs}s"))
        .args(["-q", &rate.to_string(), "-c", &conns.to_string()]);
    if corrected {
        cmd.arg("--latency-correction");
    }
    let out = cmd.arg(url).output().expect("oha");
    assert!(out.status.success(), "oha: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("oha output ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let ok = v["statusCodeDistribution"]["200"].as_f64().unwrap_or(0.0);
    let total = v["summary"]["total"].as_f64().unwrap();
    (ok / total, v["latencyPercentiles"]["p50"].as_f64().unwrap() * 1000.0)
}

fn open_loop(url: &str) {
    let has_oha = Command::new("oha").arg("--version").output().is_ok_and(|o| o.status.success());
    let (secs, conns) = (10, 64);
    println!(
        "\n## open loop, {conns} connections, {secs} s per run, one client core, nginx on the other\n"
    );
    println!(
        "| target/s | faultline achieved/s | late (> 5 ms) | corrected p50 ms | uncorrected p50 ms | corrected − uncorrected ms | oha achieved/s | oha corrected p50 ms | oha uncorrected p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for rate in [1_000, 10_000, 30_000, 45_000, 55_000, 60_000, 80_000, 100_000] {
        let s = faultline(&[
            url,
            "--rate",
            &rate.to_string(),
            "--duration",
            &format!("{secs}s"),
            "--connections",
            &conns.to_string(),
        ]);
        let (c, u) = (
            s["latency_ms"]["p50"].as_f64().unwrap(),
            s["uncorrected_latency_ms"]["p50"].as_f64().unwrap(),
        );
        let late =
            s["late_starts"].as_f64().unwrap() / s["requests"].as_f64().unwrap().max(1.0) * 100.0;
        let o = if has_oha {
            let (r, pc) = oha(url, rate, secs, conns, true);
            let (_, pu) = oha(url, rate, secs, conns, false);
            format!("{r:.0} | {pc:.3} | {pu:.3}")
        } else {
            "(no oha on PATH) | | ".to_owned()
        };
        println!(
            "| {rate} | {:.0} | {late:.2} % | {c:.3} | {u:.3} | {:.3} | {o} |",
            s["rate"].as_f64().unwrap(),
            c - u
        );
    }
}

fn main() {
    assert!(
        release().join("faultline").exists(),
        "cargo build --release first (cargo xtask bench does)"
    );
    let port = 18180;
    let url = format!("http://127.0.0.1:{port}/");
    let _n = nginx(port);
    if std::env::var_os("FAULTLINE_BENCH_OPEN_ONLY").is_some() {
        open_loop(&url);
        return;
    }
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
        let s = faultline(&[
            &url,
            "--concurrency",
            &conns.to_string(),
            "--duration",
            &format!("{secs}s"),
        ]);
        assert_eq!(s["errors"], 0, "{s}");
        fcpu.push((children_cpu() - c0) / s["requests"].as_f64().unwrap() * 1e6);
        f.push(s["rate"].as_f64().unwrap());
    }
    println!(
        "## closed loop, {conns} connections, one client core, nginx on the other ({rounds} rounds of {secs} s, requests/s)\n"
    );
    println!(
        "| tool | median req/s | runs | client CPU µs per request (median) |\n|---|---|---|---|"
    );
    println!(
        "| wrk -t1 -c{conns} | {:.0} | {:?} | {:.2} |",
        median(w.clone()),
        w.iter().map(|x| x.round()).collect::<Vec<_>>(),
        median(wcpu)
    );
    println!(
        "| faultline load --concurrency {conns} (every request in HDR histograms) | {:.0} | {:?} | {:.2} |",
        median(f.clone()),
        f.iter().map(|x| x.round()).collect::<Vec<_>>(),
        median(fcpu)
    );
    println!("\nfaultline / wrk: {:.2}", median(f) / median(w));

    open_loop(&url);
}
