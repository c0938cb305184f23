//! Fuzzing the agent's request validation: every `FaultSpec` a caller can send is turned
//! into a domain fault or a named field error, never a panic. Specs are built from the
//! fuzzer's input (its text, and a random stream seeded by it), with the extremes that
//! broke things before: 2^64-1, NaN, infinities, negative values, huge strings.

use faultline_proto::{
    agent::v1::{self as pb, fault_spec::Kind, process_target::Selector},
    fuzzing::{self, Rng},
};

use crate::{fault::FaultSpec, process::ProcessFault};

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn u64_of(r: &mut Rng) -> u64 {
    let random = r.next_u64();
    *r.pick(&[0, 1, 7, 1000, 65_535, 65_536, u64::from(u32::MAX), u64::MAX, random])
}

fn f64_of(r: &mut Rng) -> f64 {
    *r.pick(&[
        0.0,
        0.5,
        1.0,
        5.0,
        50.0,
        100.0,
        100.1,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e308,
        f64::MIN_POSITIVE,
    ])
}

fn spec_from(s: &str) -> pb::FaultSpec {
    let mut r = Rng::new(hash(s));
    let text = |r: &mut Rng| -> String {
        if r.chance(2) {
            s.to_owned()
        } else {
            (*r.pick(&["eth0", "ta", "", "lo", "10.0.0.0/8", "/app", "x.service", "^nginx$"]))
                .to_owned()
        }
    };
    let kind = match r.below(11) {
        0 => Kind::Netem(pb::Netem {
            delay_us: u64_of(&mut r),
            jitter_us: u64_of(&mut r),
            delay_correlation: f64_of(&mut r),
            distribution: r.below(6) as i32,
            loss_percent: f64_of(&mut r),
            loss_correlation: f64_of(&mut r),
            gilbert_elliott: r.chance(3).then(|| pb::GilbertElliott {
                p: f64_of(&mut r),
                r: f64_of(&mut r),
                bad_loss: f64_of(&mut r),
                good_loss: f64_of(&mut r),
            }),
            duplicate_percent: f64_of(&mut r),
            corrupt_percent: f64_of(&mut r),
            reorder_percent: f64_of(&mut r),
            rate_bps: u64_of(&mut r),
            limit: u64_of(&mut r) as u32,
            ..Default::default()
        }),
        1 => Kind::Bandwidth(pb::Bandwidth {
            rate_bps: u64_of(&mut r),
            burst_bytes: u64_of(&mut r) as u32,
        }),
        2 => Kind::Drop(pb::Drop { percent: f64_of(&mut r) }),
        3 => Kind::Partition(pb::Partition {}),
        4 => Kind::Freeze(pb::Freeze { method: r.below(4) as i32 }),
        5 => Kind::Kill(pb::Kill { signal: u64_of(&mut r) as i32 }),
        6 => Kind::Restart(pb::Restart {
            command: s.split_whitespace().map(str::to_owned).collect(),
            signal: u64_of(&mut r) as i32,
            grace_ms: u64_of(&mut r),
        }),
        7 => Kind::CpuStress(pb::CpuStress { threads: u64_of(&mut r) as u32 }),
        8 => Kind::MemoryPressure(pb::MemoryPressure { bytes: u64_of(&mut r) }),
        9 => Kind::CpuThrottle(pb::CpuThrottle { cpus: f64_of(&mut r), period_us: u64_of(&mut r) }),
        _ => Kind::Drop(pb::Drop { percent: 10.0 }),
    };
    let selector = match r.below(5) {
        0 => Selector::Cgroup(text(&mut r)),
        1 => Selector::SystemdUnit(text(&mut r)),
        2 => Selector::Pid(u64_of(&mut r) as u32),
        3 => Selector::NameRegex(text(&mut r)),
        _ => Selector::Pid(0),
    };
    pb::FaultSpec {
        interface: text(&mut r),
        direction: r.below(5) as i32,
        r#match: r.chance(2).then(|| pb::TrafficMatch {
            peers: s.split([',', ' ']).map(str::to_owned).collect(),
            ports: (0..r.below(12))
                .map(|_| pb::PortRange {
                    first: u64_of(&mut r) as u32,
                    last: u64_of(&mut r) as u32,
                })
                .collect(),
            protocol: r.below(5) as i32,
        }),
        lease_ms: u64_of(&mut r),
        include_control_traffic: r.chance(2),
        label: text(&mut r),
        kind: (!r.chance(20)).then_some(kind),
        target: r.chance(2).then(|| pb::ProcessTarget {
            selector: Some(selector),
            full_command_line: r.chance(2),
            include_children: r.chance(2),
        }),
        container: r.chance(3).then(|| pb::ContainerTarget {
            name: text(&mut r),
            select: s.split([',', ' ']).map(str::to_owned).collect(),
        }),
        pod: r.chance(3).then(|| pb::PodTarget {
            namespace: text(&mut r),
            name: text(&mut r),
            // Commas inside and outside parentheses: the selector's own splitting.
            select: vec![s.to_owned(), format!("k in ({s}),!{s}")],
            container: text(&mut r),
        }),
    }
}

#[test]
fn fuzz_fault_spec_validation() {
    fuzzing::run(
        "agent FaultSpec validation",
        &[
            "eth0",
            "10.0.0.0/24,fd00::1",
            "^redis",
            "/usr/sbin/nginx -g daemon off;",
            "10.91.0.0/24 10.91.0.7/24",
        ],
        |s| {
            let spec = spec_from(s);
            let _ = FaultSpec::try_from(&spec);
            let _ = ProcessFault::try_from(&spec);
            if let Some(c) = &spec.container {
                let _ = crate::containers::Selector::try_from(c);
            }
            if let Some(p) = &spec.pod {
                let _ = crate::pods::PodSelector::try_from(p);
            }
            let _ = faultline_proto::doctor::needs(&spec);
            let _ = faultline_proto::identity::check_agent_name(s);
            let _ = faultline_proto::quote(s);
        },
    );
}
