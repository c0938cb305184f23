//! What the agent leaves behind (nothing), what it refuses, and how faults end.

mod common;

use common::*;
use faultline_proto::agent::v1::{self as pb, fault_spec::Kind};

fn bandwidth(rate_bps: u64) -> Kind {
    Kind::Bandwidth(pb::Bandwidth { rate_bps, burst_bytes: 0 })
}

#[test]
fn apply_and_revert_leave_tc_state_byte_for_byte() {
    let lab = Lab::new(21);
    let before = lab.tc_state();
    for kind in [bandwidth(10_000_000), Kind::Drop(pb::Drop { percent: 5.0 })] {
        let f = lab
            .apply(pb::FaultSpec { direction: pb::Direction::Both as i32, ..spec(kind) })
            .unwrap();
        // The classifier is live on both sides: it counts traffic both ways.
        udp_run(&lab.a, &lab.b, format!("{}:9000", lab.addr(2)).parse().unwrap(), 100);
        udp_run(&lab.b, &lab.a, format!("{}:9000", lab.addr(1)).parse().unwrap(), 100);
        let matched = lab.list()[0].counters.unwrap().matched_packets;
        assert!(matched >= 150, "classifier saw only {matched} packets");
        lab.revert(&f.id);
        assert_eq!(lab.tc_state(), before, "revert must restore tc/link state exactly");
    }
}

#[test]
fn sigkill_then_restart_reverts_what_the_dead_agent_left() {
    let mut lab = Lab::new(22);
    let before = lab.tc_state();
    lab.apply(pb::FaultSpec {
        direction: pb::Direction::Both as i32,
        ..spec(bandwidth(5_000_000))
    })
    .unwrap();
    lab.apply(spec(Kind::Drop(pb::Drop { percent: 100.0 }))).unwrap();
    let journal = std::fs::read_to_string(lab.state.join("journal.json")).unwrap();
    assert!(journal.contains("flifb"), "the IFB device must be journaled: {journal}");
    lab.kill_agent();
    let left = lab.tc_state();
    assert!(
        left.contains("htb fa17:"),
        "a killed agent leaves its qdiscs (that is what the journal is for): {left}"
    );
    // TCX links die with the process: the 100% drop is gone already.
    let r = udp_run(&lab.a, &lab.b, format!("{}:9000", lab.addr(2)).parse().unwrap(), 200);
    assert_eq!(r.received, 200, "eBPF faults must not outlive the agent");
    lab.start_agent();
    assert_eq!(lab.tc_state(), before, "restart must undo exactly what the dead agent created");
    assert!(lab.list().is_empty());
}

#[test]
fn a_foreign_root_qdisc_is_refused_and_untouched() {
    let lab = Lab::new(23);
    sh_ok(
        &lab.a,
        &["tc", "qdisc", "add", "dev", "ta", "root", "handle", "1:", "htb", "default", "10"],
    );
    sh_ok(
        &lab.a,
        &[
            "tc", "class", "add", "dev", "ta", "parent", "1:", "classid", "1:10", "htb", "rate",
            "100mbit",
        ],
    );
    let before = lab.tc_state();
    let err = lab.apply(spec(bandwidth(1_000_000))).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("htb 1:0") && err.message().contains("did not create"),
        "{}",
        err.message()
    );
    assert_eq!(lab.tc_state(), before, "a refused apply must change nothing");
    // eBPF faults do not need the root qdisc and still work there.
    let f = lab.apply(spec(Kind::Drop(pb::Drop { percent: 10.0 }))).unwrap();
    lab.revert(&f.id);
    assert_eq!(lab.tc_state(), before);
}

#[test]
fn bad_input_is_refused_with_the_field_named() {
    let lab = Lab::new(24);
    let cases: Vec<(pb::FaultSpec, tonic::Code, &str)> = vec![
        (
            pb::FaultSpec { interface: "nope0".into(), ..spec(bandwidth(1_000_000)) },
            tonic::Code::InvalidArgument,
            "interface",
        ),
        (
            spec(Kind::Drop(pb::Drop { percent: 140.0 })),
            tonic::Code::InvalidArgument,
            "drop.percent",
        ),
        (
            spec(Kind::Netem(pb::Netem { delay_us: 1000, jitter_us: 5000, ..Default::default() })),
            tonic::Code::InvalidArgument,
            "netem.jitter_us",
        ),
        (
            with_peers(spec(Kind::Partition(pb::Partition {})), &["10.0.0.300/8"]),
            tonic::Code::InvalidArgument,
            "match.peers[0]",
        ),
        (
            pb::FaultSpec { lease_ms: 0, ..spec(bandwidth(1_000_000)) },
            tonic::Code::InvalidArgument,
            "lease_ms",
        ),
        (pb::FaultSpec { kind: None, ..spec(bandwidth(1)) }, tonic::Code::InvalidArgument, "kind"),
    ];
    for (s, code, field) in cases {
        let err = lab.apply(s).unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().starts_with(field), "message should name {field}: {}", err.message());
    }
    assert!(lab.list().is_empty());
}

#[test]
fn netem_on_a_kernel_without_it_says_which_module_is_missing() {
    let lab = Lab::new(25);
    let caps = lab.grpc(async |mut c| {
        c.describe(pb::DescribeRequest {}).await.unwrap().into_inner().capabilities.unwrap()
    });
    let r = lab.apply(spec(Kind::Netem(pb::Netem { delay_us: 10_000, ..Default::default() })));
    if caps.netem {
        // This host has netem (a distro kernel): the apply must work instead.
        let f = r.expect("netem apply where netem exists");
        lab.revert(&f.id);
    } else {
        let err = r.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("sch_netem"), "{}", err.message());
    }
}

#[test]
fn a_second_shaping_fault_on_one_side_is_refused_naming_the_first() {
    let lab = Lab::new(26);
    let first = lab.apply(spec(bandwidth(10_000_000))).unwrap();
    let err = lab.apply(spec(bandwidth(1_000_000))).unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains(&first.id), "{}", err.message());
    // The other side is free, and eBPF faults compose with shaping.
    let ingress = lab
        .apply(pb::FaultSpec {
            direction: pb::Direction::Ingress as i32,
            ..spec(bandwidth(1_000_000))
        })
        .unwrap();
    let drop = lab.apply(spec(Kind::Drop(pb::Drop { percent: 1.0 }))).unwrap();
    assert_eq!(lab.list().len(), 3);
    for id in [&first.id, &ingress.id, &drop.id] {
        lab.revert(id);
    }
}

#[test]
fn leases_expire_without_outside_help_and_renewal_extends_them() {
    let lab = Lab::new(27);
    let before = lab.tc_state();
    let short = lab.apply(pb::FaultSpec { lease_ms: 500, ..spec(bandwidth(1_000_000)) }).unwrap();
    let renewed = lab
        .apply(pb::FaultSpec { lease_ms: 500, ..spec(Kind::Drop(pb::Drop { percent: 1.0 })) })
        .unwrap();
    let statuses = lab.grpc(async |mut c| {
        c.renew_leases(pb::RenewLeasesRequest { ids: vec![renewed.id.clone()], lease_ms: 600_000 })
            .await
            .unwrap()
            .into_inner()
            .faults
    });
    assert_eq!(statuses.len(), 1);
    eventually("the short lease expires", || lab.list().iter().all(|f| f.id != short.id));
    assert_eq!(lab.list().len(), 1, "the renewed fault must still be active");
    lab.revert(&renewed.id);
    assert_eq!(lab.tc_state(), before);
}
