//! `faultline load` against real servers: nginx from Debian, and a server in the test
//! that stalls on purpose to show the coordinated-omission correction.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

mod common;

use common::Nginx;

fn load(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "faultline load {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_open_loop_run_sends_exactly_the_schedule_to_nginx() {
    let _nginx = Nginx::start(18080);
    let s = load(&["http://127.0.0.1:18080/", "--rate", "500", "--duration", "2s"]);
    assert_eq!(s["requests"], 1000, "{s}");
    assert_eq!(s["scheduled"], 1000);
    assert_eq!(s["status"], serde_json::json!({"2xx": 1000}));
    assert_eq!(s["errors"], 0);
    // Issue 17: the rate is what was achieved, answers over wall time, beside the target.
    assert_eq!(
        (s["answered"].as_u64(), s["not_started"].as_u64(), s["target_rate"].as_f64()),
        (Some(1000), Some(0), Some(500.0)),
        "{s}"
    );
    let (rate, elapsed) = (s["rate"].as_f64().unwrap(), s["elapsed_s"].as_f64().unwrap());
    assert!((rate * elapsed - 1000.0).abs() < 1e-6, "rate = answered / elapsed: {s}");
    // Status classes count as errors from 4xx on, and URLs are used in turn.
    let s = load(&[
        "http://127.0.0.1:18080/",
        "http://127.0.0.1:18080/missing",
        "--rate",
        "100",
        "--duration",
        "1s",
    ]);
    assert_eq!(s["status"], serde_json::json!({"2xx": 50, "4xx": 50}), "{s}");
    assert_eq!(s["error_rate"], 0.5);
    // HTTP/2 (h2c) and a Poisson schedule.
    let s = load(&[
        "http://127.0.0.1:18081/",
        "--http2",
        "--rate",
        "300",
        "--shape",
        "poisson",
        "--duration",
        "2s",
        "--seed",
        "7",
    ]);
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["requests"], s["scheduled"]);
    // Closed loop: as fast as 4 connections go.
    let s = load(&["http://127.0.0.1:18080/", "--concurrency", "4", "--duration", "1s"]);
    assert!(s["requests"].as_u64().unwrap() > 100 && s["errors"] == 0, "{s}");
    // A host name (issue 16: compose services) is resolved once, up front.
    let s = load(&["http://localhost:18080/", "--rate", "100", "--duration", "1s"]);
    assert_eq!(s["status"], serde_json::json!({"2xx": 100}), "{s}");
    // A closed port: every request fails to connect, and is counted.
    let s = load(&["http://127.0.0.1:18099/", "--rate", "50", "--duration", "1s"]);
    assert_eq!(s["failures"], serde_json::json!({"connect": 50}), "{s}");
}

/// Answers `HTTP/1.1 200` to each request, but sleeps `stall` before answering request
/// number `stall_at`.
fn stalling_server(stall_at: usize, stall: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut n = 0;
        for conn in l.incoming() {
            let conn = conn.unwrap();
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line == "\r\n" {
                    n += 1;
                    if n == stall_at {
                        std::thread::sleep(stall);
                    }
                    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
                }
            }
        }
    });
    port
}

#[test]
fn latency_counts_from_the_intended_start_when_the_server_stalls() {
    // 100 requests/s on one connection; the server stalls 1 s on request 50. The ~100
    // requests meant to start during the stall wait, and that wait is their latency.
    let port = stalling_server(50, Duration::from_secs(1));
    let s = load(&[
        &format!("http://127.0.0.1:{port}/"),
        "--rate",
        "100",
        "--duration",
        "3s",
        "--connections",
        "1",
    ]);
    assert_eq!(s["requests"], 300, "nothing is skipped: {s}");
    assert_eq!(s["errors"], 0);
    let corrected_p90 = s["latency_ms"]["p90"].as_f64().unwrap();
    let uncorrected_p99 = s["uncorrected_latency_ms"]["p99"].as_f64().unwrap();
    assert!(corrected_p90 > 200.0, "the stall must show in the corrected p90: {s}");
    assert!(
        uncorrected_p99 < 100.0,
        "measured from the actual send, only one request was slow: {s}"
    );
    assert!(s["late_starts"].as_u64().unwrap() >= 50, "{s}");
    assert!(s["latency_ms"]["max"].as_f64().unwrap() >= 900.0, "{s}");
}

#[test]
fn bad_load_flags_name_the_flag() {
    let run = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_faultline")).arg("load").args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["http://127.0.0.1:1/"]).contains("give --rate"));
    assert!(
        run(&["http://127.0.0.1:1/", "--rate", "10", "--shape", "ramp:0..x/1s"])
            .contains("--shape")
    );
    assert!(
        run(&["https://127.0.0.1:1/", "--rate", "10", "--cacert", "/no/such.pem"])
            .contains("--cacert: /no/such.pem")
    );
    assert!(
        run(&["https://127.0.0.1:1/", "http://127.0.0.1:1/x", "--rate", "10"])
            .contains("same scheme")
    );
    // A name that does not resolve is refused before any request, naming it.
    let e = run(&["http://no-such-host.invalid:1/", "--rate", "10"]);
    assert!(e.contains("no-such-host.invalid") && e.contains("resolve"), "{e}");
    assert!(
        run(&["http://127.0.0.1:1/", "--rate", "10", "--connections", "0"]).contains("connections")
    );
}

struct Daemon(Child, Option<PathBuf>);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(d) = &self.1 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

#[test]
fn redis_tcp_and_grpc_targets_against_real_servers() {
    // A real redis-server (Debian), no persistence.
    let port = 16379;
    let redis = Daemon(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt: redis-server)"),
        None,
    );
    wait_port(port);
    let s = load(&[
        &format!("redis://127.0.0.1:{port}"),
        "--rate",
        "400",
        "--duration",
        "1s",
        "--redis-set-percent",
        "50",
        "--redis-keys",
        "50",
    ]);
    assert_eq!((s["requests"].as_u64(), s["errors"].as_u64()), (Some(400), Some(0)), "{s}");
    // The SETs happened: the keys are there.
    let out = Command::new("redis-cli").args(["-p", &port.to_string(), "dbsize"]).output().unwrap();
    let keys: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(keys > 0 && keys <= 50, "dbsize {keys}");
    // Raw TCP: send-and-expect (Redis inline PING), and connect-only.
    let s = load(&[
        &format!("tcp://127.0.0.1:{port}"),
        "--send",
        "PING\\r\\n",
        "--expect",
        "+PONG",
        "--rate",
        "100",
        "--duration",
        "1s",
    ]);
    assert_eq!((s["requests"].as_u64(), s["errors"].as_u64()), (Some(100), Some(0)), "{s}");
    let s = load(&[&format!("tcp://127.0.0.1:{port}"), "--rate", "100", "--duration", "1s"]);
    assert_eq!(s["errors"], 0, "{s}");
    drop(redis);
    let s = load(&[&format!("tcp://127.0.0.1:{port}"), "--rate", "20", "--duration", "1s"]);
    assert_eq!(s["failures"], serde_json::json!({"connect": 20}), "{s}");

    // gRPC health against a real gRPC server: faultline's controller (plaintext on loopback).
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("grpc-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let gport = 17381;
    let _ctl = Daemon(
        Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args([
                "--insecure",
                "controller",
                "serve",
                "--listen",
                &format!("127.0.0.1:{gport}"),
                "--state",
            ])
            .arg(dir.join("c.db"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        Some(dir.clone()),
    );
    wait_port(gport);
    let s = load(&[
        &format!("grpc://127.0.0.1:{gport}/faultline.controller.v1.ControllerService"),
        "--rate",
        "100",
        "--duration",
        "1s",
    ]);
    assert_eq!((s["requests"].as_u64(), s["errors"].as_u64()), (Some(100), Some(0)), "{s}");
    let s = load(&[
        &format!("grpc://127.0.0.1:{gport}/no.such.Service"),
        "--rate",
        "10",
        "--duration",
        "1s",
    ]);
    assert_eq!(s["failures"], serde_json::json!({"rejected": 10}), "{s}");

    // A unary call described by the user: the request's protobuf bytes reach the server.
    // RevertFault{all: true} (field 2, varint 1) is answered OK; an empty request is
    // refused (InvalidArgument: "id: required unless all is set"); no such method.
    let unary =
        format!("grpc://127.0.0.1:{gport}/faultline.controller.v1.ControllerService/RevertFault");
    let all = dir.with_extension("revert-all.bin");
    std::fs::write(&all, [0x10, 0x01]).unwrap();
    let s = load(&[
        &unary,
        "--body",
        &format!("@{}", all.display()),
        "--rate",
        "50",
        "--duration",
        "1s",
    ]);
    assert_eq!((s["requests"].as_u64(), s["errors"].as_u64()), (Some(50), Some(0)), "{s}");
    let s = load(&[&unary, "--rate", "10", "--duration", "1s"]);
    assert_eq!(s["failures"], serde_json::json!({"rejected": 10}), "{s}");
    let s = load(&[
        &format!("grpc://127.0.0.1:{gport}/faultline.controller.v1.ControllerService/NoSuchMethod"),
        "--rate",
        "10",
        "--duration",
        "1s",
    ]);
    assert_eq!(s["failures"], serde_json::json!({"rejected": 10}), "{s}");
    std::fs::remove_file(&all).unwrap();
}

#[test]
fn https_targets_verify_the_server_as_asked() {
    let (_nginx, cert) = Nginx::start_tls(18100);
    let ca = format!("--cacert={}", cert.display());
    let run = |extra: &[&str]| {
        let mut args = vec!["--rate", "20", "--duration", "1s"];
        args.extend_from_slice(extra);
        load(&args)
    };
    let answered = |s: &serde_json::Value| (s["requests"].as_u64(), s["status"]["2xx"].as_u64());
    let s = run(&["https://127.0.0.1:18100/", &ca]);
    assert_eq!(answered(&s), (Some(20), Some(20)), "HTTP/1.1 over TLS: {s}");
    let s = run(&["https://127.0.0.1:18101/", "--http2", &ca]);
    assert_eq!(answered(&s), (Some(20), Some(20)), "h2 over TLS (ALPN): {s}");
    let s = run(&["https://127.0.0.1:18100/", &ca, "--tls-server-name", "web.test"]);
    assert_eq!(answered(&s), (Some(20), Some(20)), "the certificate's DNS name: {s}");
    // Refused: a self-signed certificate the system does not trust, a name it lacks.
    let s = run(&["https://127.0.0.1:18100/"]);
    assert_eq!(s["failures"], serde_json::json!({"connect": 20}), "untrusted: {s}");
    let s = run(&["https://127.0.0.1:18100/", &ca, "--tls-server-name", "other.test"]);
    assert_eq!(s["failures"], serde_json::json!({"connect": 20}), "wrong name: {s}");
    let s = run(&["https://127.0.0.1:18100/", "--tls-no-verify"]);
    assert_eq!(answered(&s), (Some(20), Some(20)), "--tls-no-verify: {s}");
}

#[test]
fn out_writes_a_summary_and_one_csv_row_per_second() {
    let _nginx = Nginx::start(18090);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("load-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = load(&[
        "http://127.0.0.1:18090/",
        "--rate",
        "50",
        "--shape",
        "ramp:50..150/3s",
        "--duration",
        "3s",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(dir.join("seconds.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let per_second: Vec<u64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    // 50 -> 150 over 3 s: about 67, 100, 133 per second; the ramp shows.
    assert!(per_second[0] < per_second[1] && per_second[1] < per_second[2], "{per_second:?}");
    assert_eq!(per_second.iter().sum::<u64>(), s["requests"].as_u64().unwrap());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["requests"], s["requests"]);

    // The raw histograms: one corrected and one uncorrected interval per second, each
    // holding that second's requests, and the run's total.
    use base64::Engine as _;
    use hdrhistogram::serialization::{
        Deserializer,
        interval_log::{IntervalLogIterator, LogEntry},
    };
    let log = std::fs::read(dir.join("latency.hlog")).unwrap();
    let mut counts: Vec<(String, u64)> = Vec::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(h) = entry.expect("a valid interval log") {
            let raw =
                base64::engine::general_purpose::STANDARD.decode(h.encoded_histogram()).unwrap();
            let hist: hdrhistogram::Histogram<u64> =
                Deserializer::new().deserialize(&mut raw.as_slice()).unwrap();
            counts.push((h.tag().map(|t| t.as_str().to_owned()).unwrap_or_default(), hist.len()));
        }
    }
    let of =
        |tag: &str| counts.iter().filter(|(t, _)| t == tag).map(|(_, n)| *n).collect::<Vec<_>>();
    assert_eq!(of("corrected"), per_second, "{counts:?}");
    assert_eq!(of("uncorrected"), per_second, "{counts:?}");
    assert_eq!(of("total-corrected"), vec![s["requests"].as_u64().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_stops_the_run_and_still_prints_what_was_recorded() {
    let _nginx = Nginx::start(18095);
    let child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["load", "http://127.0.0.1:18095/", "--rate", "100", "--duration", "60s", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["interrupted"], true, "{s}");
    let n = s["requests"].as_u64().unwrap();
    assert!(n > 0 && n < 6000 && s["errors"] == 0, "{s}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
}
