//! Fuzzing of everything that parses a caller's input on the CLI side: value parsers,
//! whole `fault apply` command lines, load arguments, scenario files, selectors and
//! partition shapes. The property: an error, never a panic. Budget per target:
//! `FAULTLINE_FUZZ_SECONDS` (see `faultline_proto::fuzzing`).

use clap::Parser;
use faultline_proto::{controller::v1 as pb, fuzzing};

use crate::{
    cli,
    load::args::LoadArgs,
    run::scenario,
    targeting::{self, partition},
    units,
};

#[test]
fn fuzz_value_parsers() {
    fuzzing::run(
        "value parsers",
        &[
            "100ms", "1.5s", "250us", "2m", "10mbit", "1mbps", "5%", "15k", "512MiB", "SIGKILL",
            "term", "168h",
        ],
        |s| {
            let _ = units::duration(s);
            let _ = units::lease(s);
            let _ = units::rate(s);
            let _ = units::percent(s);
            let _ = units::bytes(s);
            let _ = units::size(s);
            let _ = units::signal(s);
            let _ = scenario::parse_condition(s);
        },
    );
}

#[test]
fn fuzz_fault_apply_command_lines() {
    let seeds = [
        "fault apply drop -i eth0 --loss 10% --lease 60s --select role=db --mode percent --percent 50",
        "fault apply netem -i eth0 --delay 100ms --jitter 10ms --distribution normal --loss 1% --direction both --peer 10.0.0.0/24 --peer fd00::/64 --lease 5m",
        "fault apply bandwidth -i eth0 --rate 10mbit --burst 32k --port 80-90 --protocol tcp --lease 60s",
        "fault apply partition -i eth0 --peer 10.0.2.0/24 --direction both --lease 60s",
        "fault apply freeze --name ^java$ --tree --lease 20s",
        "fault apply restart --pid 4242 --signal TERM --grace 2s -- /usr/sbin/myservice --flag",
        "fault apply cpu-throttle --cgroup /app --cpus 0.2 --period 100ms --lease 60s",
        "fault apply memory-pressure --bytes 2g --lease 60s",
        "partition isolate --node db1 --lease 30s",
        "fault renew f-1 --lease 10s",
    ];
    fuzzing::run("fault apply flags", &seeds, |s| {
        let argv = std::iter::once("faultline").chain(s.split_whitespace());
        if let Ok(cli) = cli::Cli::try_parse_from(argv)
            && let cli::Cmd::Fault(cli::FaultCmd::Apply(a)) = &cli.cmd
        {
            let _ = crate::faults::spec(a);
            let _ = crate::faults::target(a);
        }
    });
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct Load {
    #[command(flatten)]
    load: LoadArgs,
}

#[test]
fn fuzz_load_arguments() {
    let seeds = [
        "http://10.0.0.5/ --rate 200 --duration 60s",
        "http://10.0.0.5/ --rate 100 --shape ramp:0..500/30s,500..100/10s --duration 40s",
        "http://10.0.0.5/ --rate 300 --shape spike:900@10s/5s --connections 8 --timeout 2s",
        "http://10.0.0.5/ --rate 50 --shape burst:20/1s",
        "http://10.0.0.5/ --rate 50 --shape sine:20/10s -H x-a:b --method POST --body hi",
        "tcp://10.0.0.5:6379 --concurrency 4 --send PING\\r\\n --expect PONG",
        "redis://10.0.0.5:6379 --rate 10 --redis-set-percent 20",
        "grpc://10.0.0.5:7070/grpc.health.v1.Health --rate 5",
    ];
    crate::load::OFFLINE.with(|o| o.set(true));
    fuzzing::run("load arguments", &seeds, |s| {
        if let Ok(l) = Load::try_parse_from(s.split_whitespace()) {
            let _ = l.load.spec();
        }
    });
}

#[test]
fn fuzz_scenario_files() {
    let seeds = [
        include_str!("../../examples/lab.yaml"),
        include_str!("../../examples/web-drop.yaml"),
        include_str!("../../examples/partition-and-delay.yaml"),
    ];
    let path =
        std::env::temp_dir().join(format!("faultline-fuzz-scenario-{}.yaml", std::process::id()));
    crate::load::OFFLINE.with(|o| o.set(true));
    fuzzing::run("scenario files", &seeds, |s| {
        std::fs::write(&path, s).unwrap();
        let _ = scenario::load(&path);
    });
    let _ = std::fs::remove_file(&path);
}

/// Issue 30: scenarios as a remote caller sends them through the Web API, seeded with the
/// red team's payloads. Beyond "never a panic": a scenario that parses names no file the
/// controller would open (its body is never `@...`, its CA never a path).
#[test]
fn fuzz_scenarios_from_remote_callers() {
    let base = "name: x\nload:\n  target: http://127.0.0.1:9/\n  rate: 10\n  method: POST\n";
    let phases = "phases:\n  baseline: 1s\n  fault: 1s\n  recovery: 1s\n";
    let seeds: Vec<String> = [
        "  body: \"@/etc/shadow\"\n",
        "  body: \"@../../../tokens\"\n",
        "  body: \"@/proc/self/environ\"\n",
        "  body: \"@/proc/self/fd/1\"\n",
        "  body: \"@/dev/zero\"\n",
        "  body: [\"@/etc/passwd\"]\n",
        "  cacert: /etc/shadow\n",
        "  cacert: ../../tls/ca-key.pem\n",
        "  cacert: \" /etc/ssl/certs/ca-certificates.crt\"\n",
        "  body: hello\n",
    ]
    .iter()
    .map(|extra| format!("{base}{extra}{phases}"))
    .collect();
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let path =
        std::env::temp_dir().join(format!("faultline-fuzz-remote-{}.yaml", std::process::id()));
    crate::load::OFFLINE.with(|o| o.set(true));
    fuzzing::run("scenarios from remote callers", &seeds, |s| {
        std::fs::write(&path, s).unwrap();
        if let Ok(sc) = scenario::load_with(&path, crate::load::args::Files::Refused) {
            for pair in sc.load_args.windows(2) {
                let names_a_file = (pair[0] == "--body" && pair[1].starts_with('@'))
                    || (pair[0] == "--cacert"
                        && !crate::load::tls::is_inline_pem(std::path::Path::new(&pair[1])));
                assert!(
                    !names_a_file,
                    "a remote scenario passed naming a file: {:?}",
                    sc.load_args
                );
            }
            for a in &sc.load_args {
                assert!(
                    !a.starts_with("--body=@")
                        && (!a.starts_with("--cacert=")
                            || crate::load::tls::is_inline_pem(std::path::Path::new(
                                &a["--cacert=".len()..]
                            ))),
                    "{a}"
                );
            }
        }
    });
    let _ = std::fs::remove_file(&path);
}

#[test]
fn fuzz_selectors_and_partition_shapes() {
    let shapes = [
        pb::Shape::Isolate,
        pb::Shape::Halves,
        pb::Shape::MajoritiesRing,
        pb::Shape::Bridge,
        pb::Shape::Groups,
    ];
    fuzzing::run(
        "selectors and partitions",
        &["role=db,zone=a", "h1 h2 h3|h1,h2|h3", "a b c d e|a|b,c"],
        |s| {
            let _ = targeting::parse_selector(s);
            let mut parts = s.split('|');
            let names: Vec<String> =
                parts.next().unwrap_or("").split_whitespace().map(str::to_owned).collect();
            let groups: Vec<Vec<String>> =
                parts.map(|g| g.split(',').map(str::to_owned).collect()).collect();
            let node = names.first().cloned().unwrap_or_default();
            for shape in shapes {
                if let Ok(c) =
                    partition::cut(&names, shape, &groups, &node, s.len() as u64, s.len() % 2 == 0)
                {
                    let _ = partition::describe(&c);
                }
                let _ = partition::cut(&names, shape, &[], "", s.len() as u64, false);
            }
        },
    );
}
