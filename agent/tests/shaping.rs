//! Bandwidth limits (htb, and IFB for ingress) measured with iperf3.

mod common;

use std::process::{Command, Stdio};

use common::*;
use faultline_proto::agent::v1::{self as pb, fault_spec::Kind};

/// iperf3 TCP from A to B (or B to A with `reverse`), received bits/s. A run that
/// fails to start (server not yet listening) or reports an error is run again.
fn iperf(lab: &Lab, reverse: bool) -> f64 {
    let server_addr = lab.addr(2);
    let mut last = String::new();
    for _ in 0..20 {
        let mut server = Command::new("ip")
            .args(["netns", "exec", &lab.b, "iperf3", "-s", "-1", "-p", "5201"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut args =
            vec!["iperf3", "-c", server_addr.as_str(), "-p", "5201", "-t", "4", "-O", "1", "-J"];
        if reverse {
            args.push("-R");
        }
        let o = sh(&lab.a, &args);
        let _ = server.kill();
        let _ = server.wait();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps;
        }
        last = v["error"]
            .as_str()
            .map_or_else(|| String::from_utf8_lossy(&o.stderr).into_owned(), str::to_owned);
        eprintln!("iperf3 run failed ({last}); again");
    }
    panic!("iperf3 never completed: {last}");
}

/// One measurement at a time: two iperf3 runs on two cores would disturb each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(lab: &Lab, direction: pb::Direction, reverse: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rate = 20_000_000u64;
    let f = lab
        .apply(pb::FaultSpec {
            direction: direction as i32,
            ..spec(Kind::Bandwidth(pb::Bandwidth { rate_bps: rate, burst_bytes: 0 }))
        })
        .unwrap();
    let got = iperf(lab, reverse);
    // The agent says what the limit did, from its class's counters (issue 12): the rate
    // that passed on average since the fault began (iperf3 ran most of that time), and
    // the packets held back.
    let observed = lab
        .list()
        .into_iter()
        .find(|x| x.id == f.id)
        .and_then(|x| x.observed)
        .expect("a bandwidth fault reports what it observed");
    println!("observed: {}", observed.summary);
    assert_eq!(
        (observed.unit.as_str(), observed.configured),
        ("bit/s", rate as f64),
        "{observed:?}"
    );
    assert!(
        observed.measured > 0.3 * rate as f64 && observed.measured < 1.1 * rate as f64,
        "{observed:?}"
    );
    assert!(observed.samples > 1000, "{observed:?}");
    lab.revert(&f.id);
    // The limit is a wire rate, as in tc: every 1448-byte TCP segment costs 1514 bytes
    // on the link (Ethernet 14 + IP 20 + TCP with timestamps 32). iperf3 counts payload.
    let goodput = rate as f64 * 1448.0 / 1514.0;
    let err = (got - goodput).abs() / goodput;
    println!(
        "bandwidth {direction:?}: configured {rate} bit/s on the wire = {goodput:.0} bit/s of TCP payload; iperf3 measured {got:.0} bit/s ({:.2}% off)",
        err * 100.0
    );
    assert!(
        err <= 0.05,
        "{direction:?}: measured {got:.0} bit/s of payload, expected {goodput:.0}: {:.1}% off",
        err * 100.0
    );
    let free = iperf(lab, reverse);
    assert!(free > 2.0 * rate as f64, "after revert the link should be fast again, got {free:.0}");
}

#[test]
fn egress_bandwidth_within_five_percent() {
    check(&Lab::new(31), pb::Direction::Egress, false);
}

#[test]
fn ingress_bandwidth_through_ifb_within_five_percent() {
    check(&Lab::new(32), pb::Direction::Ingress, true);
}
