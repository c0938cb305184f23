//! Kernel-level metrics from the tracepoint programs, checked against traffic the
//! test makes itself across a veth pair: connects, refusals, retransmits, drops.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use faultline_proto::agent::v1::{self as pb, fault_spec::Kind};

/// Tracepoints see every namespace at once: tests that count drop reasons run alone.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn prometheus_endpoint_passes_promtool_with_cumulative_buckets() {
    let lab = Lab::new(51);
    // Some TCP towards B so that per-peer histograms exist.
    let port = 8051;
    let peer = lab.addr(2);
    let listener = lab.in_b(|| TcpListener::bind(format!("{peer}:{port}")).unwrap());
    lab.in_a(|| {
        let mut s = TcpStream::connect(format!("{peer}:{port}")).unwrap();
        s.write_all(&vec![7u8; 100_000]).unwrap();
    });
    let (mut conn, _) = listener.accept().unwrap();
    let mut sink = Vec::new();
    conn.read_to_end(&mut sink).unwrap();
    let text = lab.prometheus();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt: prometheus)");
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Buckets of one series never decrease and end in +Inf == _count.
    let series = format!("faultline_tcp_srtt_seconds_bucket{{peer=\"{peer}\",");
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&series))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(values.len() > 2, "no RTT histogram for {peer}:\n{text}");
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "buckets not cumulative: {values:?}");
    let count: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("faultline_tcp_srtt_seconds_count{{peer=\"{peer}\"}} "))
        })
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(*values.last().unwrap(), count);
    assert!(text.contains("faultline_host_memory_total_bytes"), "host metrics are served too");
}

#[test]
fn connect_latency_and_refusals_are_counted_per_peer() {
    let lab = Lab::new(52);
    let peer = lab.addr(2);
    let listener = lab.in_b(|| TcpListener::bind(format!("{peer}:8052")).unwrap());
    let before = lab.peer_metrics(&peer);
    lab.in_a(|| {
        for _ in 0..5 {
            TcpStream::connect(format!("{peer}:8052")).expect("open port");
        }
        for _ in 0..3 {
            let e = TcpStream::connect(format!("{peer}:8053")).expect_err("closed port");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        }
    });
    drop(listener);
    let after = lab.peer_metrics(&peer);
    assert_eq!(after.connects - before.connects, 5, "{after:?}");
    assert_eq!(after.connect_failures - before.connect_failures, 3, "{after:?}");
    let h = after.connect.unwrap();
    assert_eq!(h.count - before.connect.map_or(0, |b| b.count), 5);
    // A veth round trip inside one host: well under 10 ms (bucket 13 ends at 16.4 ms).
    assert!(h.buckets[13..].iter().all(|b| *b == 0), "connect latency buckets: {:?}", h.buckets);
    // The other peer saw nothing.
    assert_eq!(lab.peer_metrics(&lab.addr(3)).connects, 0);
}

#[test]
fn retransmits_appear_under_ebpf_loss_and_the_fault_reports_what_it_did() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::new(53);
    let peer = lab.addr(2);
    let listener = lab.in_b(|| TcpListener::bind(format!("{peer}:8054")).unwrap());
    let before = lab.peer_metrics(&peer).retransmits;
    let f = lab
        .apply(with_peers(spec(Kind::Drop(pb::Drop { percent: 20.0 })), &[&format!("{peer}/32")]))
        .expect("drop");
    let reader = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        c.read_to_end(&mut sink).unwrap();
        sink.len()
    });
    lab.in_a(|| {
        let mut s = TcpStream::connect(format!("{peer}:8054")).unwrap();
        s.write_all(&vec![1u8; 2 << 20]).unwrap();
    });
    assert_eq!(reader.join().unwrap(), 2 << 20, "TCP delivers everything despite the loss");
    let status = lab.list().into_iter().find(|s| s.id == f.id).unwrap();
    lab.revert(&f.id);
    let retransmits = lab.peer_metrics(&peer).retransmits - before;
    assert!(retransmits > 0, "20 % loss caused no retransmits");
    let c = status.counters.unwrap();
    let o = status.observed.expect("a drop fault reports its observed effect");
    assert_eq!(o.unit, "percent");
    assert_eq!(o.configured, 20.0);
    assert_eq!(o.samples, c.matched_packets);
    // The observed share is the counters' own ratio (the drop rate's statistics are tested
    // in ebpf.rs; a single 99 % check here would fail one run in a hundred).
    assert_eq!(
        o.measured,
        c.dropped_packets as f64 * 100.0 / c.matched_packets as f64,
        "{}",
        o.summary
    );
    // And it is a 20 % loss: within 3.3 standard deviations of Binomial(n, 0.2), which
    // fails one run in a thousand. (A fixed 10-30 % window failed CI: with TSO a 2 MiB
    // transfer can be only 46 packets, and 3 drops of 46 is an ordinary outcome.)
    let (n, k) = (c.matched_packets as f64, c.dropped_packets as f64);
    assert!((k - 0.2 * n).abs() <= 3.3 * (n * 0.2 * 0.8).sqrt() + 1.0, "{}", o.summary);
}

#[test]
fn drop_reasons_name_the_kernel_reason() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::new(54);
    let no_socket = |lab: &Lab| {
        lab.metrics().drops.into_iter().find(|d| d.reason == "NO_SOCKET").map_or(0, |d| d.count)
    };
    let before = no_socket(&lab);
    // Datagrams to a port nobody listens on: B's kernel frees them as NO_SOCKET.
    let to = format!("{}:9", lab.addr(2));
    lab.in_a(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..200 {
            s.send_to(b"x", &to).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    eventually("NO_SOCKET drops counted", || no_socket(&lab) - before >= 200);
}

#[test]
fn watch_metrics_streams_samples_and_refuses_a_silly_interval() {
    let lab = Lab::new(55);
    let (first, second) = lab.grpc(async |mut c| {
        let mut s = c
            .watch_metrics(pb::WatchMetricsRequest { interval_ms: 200 })
            .await
            .expect("watch")
            .into_inner();
        let a = s.message().await.unwrap().expect("first sample");
        let b = s.message().await.unwrap().expect("second sample");
        (a, b)
    });
    assert!(
        second.unix_ms > first.unix_ms,
        "samples are taken anew: {} then {}",
        first.unix_ms,
        second.unix_ms
    );
    assert!(first.host.as_ref().is_some_and(|h| h.memory_total_bytes > 0));
    assert_eq!(first.kernel_metrics_detail, "", "the tracepoint programs run on this kernel");
    let e = lab.grpc(async |mut c| {
        c.watch_metrics(pb::WatchMetricsRequest { interval_ms: 5 }).await.map(|_| ()).unwrap_err()
    });
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("interval_ms"), "{}", e.message());
}
