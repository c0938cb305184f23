//! What a hostile caller tries, and what the agent keeps promising: every fault ends on
//! time, nothing is left behind, a certificate grants only its role.

mod common;

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use faultline_proto::agent::v1::{self as pb, fault_spec::Kind, process_target::Selector};

fn freeze_pid(pid: u32, lease_ms: u64) -> pb::FaultSpec {
    pb::FaultSpec {
        lease_ms,
        kind: Some(Kind::Freeze(pb::Freeze::default())),
        target: Some(pb::ProcessTarget {
            selector: Some(Selector::Pid(pid)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

fn journal_entries(lab: &Lab) -> usize {
    let text =
        std::fs::read_to_string(lab.state.join("journal.json")).unwrap_or_else(|_| "[]".into());
    serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap().len()
}

/// F1: a stranger with no certificate opens 1,100 idle connections to an agent whose
/// descriptor limit is 1,024 (a unit without `LimitNOFILE`). The faults still end on time,
/// the journal stays intact, `fault list` is honest, and the agent still answers.
#[test]
fn idle_connections_cannot_stop_faults_from_ending() {
    let mut lab = Lab::new(61);
    lab.nofile = Some(1024);
    lab.kill_agent();
    lab.start_agent();
    let before = lab.tc_state();
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    let shaped = lab
        .apply(pb::FaultSpec {
            lease_ms: 4000,
            ..spec(Kind::Bandwidth(pb::Bandwidth { rate_bps: 1_000_000, burst_bytes: 0 }))
        })
        .unwrap();
    lab.apply(freeze_pid(sleeper.id(), 4000)).unwrap();
    assert_eq!(state(sleeper.id()), 'T');
    let due = Instant::now() + Duration::from_secs(4);
    // From B, as many connections as the agent would have descriptors, and more; none
    // sends a byte.
    // The /metrics port too (issue 30: it was a plain server, and 1,100 idle
    // connections there took every descriptor).
    let (agent, metrics) = (lab.listen(), lab.metrics_listen());
    let held: Vec<TcpStream> = lab.in_b(|| {
        [&agent, &metrics]
            .iter()
            .flat_map(|port| {
                (0..1100)
                    .filter_map(|_| {
                        TcpStream::connect_timeout(&port.parse().unwrap(), Duration::from_secs(2))
                            .ok()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    });
    println!("{} connections opened from B", held.len());
    let pid = lab.agent.as_ref().unwrap().id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    println!("the agent holds {fds} descriptors");
    assert!(
        fds < 512,
        "the agent holds {fds} of its 1024 descriptors: connections are not bounded"
    );
    // Operators' calls still answer while every stranger's connection is held.
    let _answered = lab.list();
    while Instant::now() < due + Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eventually("the leases end", || lab.list().is_empty());
    assert_eq!(lab.tc_state(), before, "the bandwidth fault's qdiscs must be gone");
    assert_ne!(state(sleeper.id()), 'T', "the frozen process must run again");
    assert_eq!(journal_entries(&lab), 0, "the journal must be empty once everything is undone");
    assert!(!lab.list().iter().any(|f| f.id == shaped.id));
    drop(held);
    // The metrics port serves again once the strangers are gone.
    eventually("a scrape answers again", || {
        sh(&lab.b, &["curl", "-sf", "--max-time", "2", &format!("http://{metrics}/metrics")])
            .status
            .success()
    });
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// F3: a certificate grants its role only. Viewers read, operators and the controller
/// change the kernel, an agent's certificate does neither.
#[test]
fn each_certificate_role_gets_only_its_calls() {
    let lab = Lab::new(62);
    let url = lab.url();
    let results: Vec<(&str, &str, Option<tonic::Code>)> = lab.in_a(|| {
        rt().block_on(async {
            let mut out = Vec::new();
            for who in ["agent", "controller", "cli", "viewer"] {
                let mut c = client_as(&url, who).await.unwrap();
                let code = |r: Result<(), tonic::Status>| r.err().map(|e| e.code());
                out.push((
                    who,
                    "Describe",
                    code(c.describe(pb::DescribeRequest {}).await.map(|_| ())),
                ));
                out.push((
                    who,
                    "ListFaults",
                    code(c.list_faults(pb::ListFaultsRequest {}).await.map(|_| ())),
                ));
                out.push((
                    who,
                    "GetMetrics",
                    code(c.get_metrics(pb::GetMetricsRequest {}).await.map(|_| ())),
                ));
                let applied = c
                    .apply_fault(pb::ApplyFaultRequest {
                        spec: Some(spec(Kind::Drop(pb::Drop { percent: 1.0 }))),
                        dry_run: false,
                    })
                    .await;
                out.push((
                    who,
                    "ApplyFault",
                    code(applied.as_ref().map(|_| ()).map_err(Clone::clone)),
                ));
                let id =
                    applied.map_or_else(|_| "f-0".into(), |r| r.into_inner().fault.unwrap().id);
                out.push((
                    who,
                    "RenewLeases",
                    code(
                        c.renew_leases(pb::RenewLeasesRequest { ids: vec![], lease_ms: 0 })
                            .await
                            .map(|_| ()),
                    ),
                ));
                out.push((
                    who,
                    "RevertFault",
                    code(
                        c.revert_fault(pb::RevertFaultRequest { id, all: false }).await.map(|_| ()),
                    ),
                ));
            }
            out
        })
    });
    let denied = Some(tonic::Code::PermissionDenied);
    for (who, call, got) in &results {
        let read = matches!(*call, "Describe" | "ListFaults" | "GetMetrics");
        let want = match *who {
            "controller" | "cli" => None,
            "viewer" if read => None,
            _ => denied,
        };
        // A revert by a caller that may not apply finds nothing to revert, but must be
        // refused before it looks.
        assert_eq!(*got, want, "{who} calling {call}");
    }
    assert!(lab.list().is_empty());
}

/// F3: plaintext is for root on loopback only; another local user's connection is refused.
#[test]
fn plaintext_on_loopback_serves_root_only() {
    let lab = Lab::new(63);
    let state = lab.state.with_extension("plain");
    let mut agent = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.a,
            env!("CARGO_BIN_EXE_faultline-agent"),
            "--insecure",
            "--listen",
            "127.0.0.1:7071",
            "--no-kernel-metrics",
            "--state-dir",
        ])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cli =
        std::path::Path::new(env!("CARGO_BIN_EXE_faultline-agent")).with_file_name("faultline");
    assert!(cli.exists(), "{} missing: cargo test --workspace builds it", cli.display());
    let info = |user: Option<&str>| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &lab.a]);
        if let Some(u) = user {
            c.args(["runuser", "-u", u, "--"]);
        }
        c.arg(&cli)
            .args(["--insecure", "--agent", "http://127.0.0.1:7071", "info"])
            .output()
            .unwrap()
    };
    eventually("the plaintext agent answers root", || info(None).status.success());
    let out = info(Some("nobody"));
    assert!(
        !out.status.success(),
        "a non-root local user was served: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
    let _ = std::fs::remove_dir_all(&state);
}

/// The CLI from inside `ns`, as `prefix` (runuser, setpriv) would run it, with no agent,
/// controller or TLS directory in its environment: only the local socket can serve it.
fn cli_in(ns: &str, prefix: &[&str], args: &[&str]) -> std::process::Output {
    let cli =
        std::path::Path::new(env!("CARGO_BIN_EXE_faultline-agent")).with_file_name("faultline");
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(prefix)
        .arg(&cli)
        .args(args)
        .env_remove("FAULTLINE_AGENT")
        .env_remove("FAULTLINE_CONTROLLER")
        .env("FAULTLINE_TLS_DIR", "/nonexistent/faultline-tls")
        .output()
        .unwrap()
}

fn pings(ns: &str, to: &str) -> bool {
    sh(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "1", to]).status.success()
}

/// The local socket serves root holding `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`, without
/// certificates, and nobody else: not another user, not root stripped of those
/// capabilities (a container's root), and never more connections than its bound.
#[test]
fn local_socket_serves_capable_root_only_and_is_bounded() {
    let lab = Lab::new(67);
    // Root, no --agent, no certificates: the fault is applied and takes effect.
    assert!(pings(&lab.a, &lab.addr(2)));
    let out = cli_in(
        &lab.a,
        &[],
        &["fault", "apply", "drop", "-i", "ta", "--loss", "100%", "--lease", "60s"],
    );
    assert!(
        out.status.success(),
        "root through the local socket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).lines().next().unwrap().to_owned();
    assert!(
        !pings(&lab.a, &lab.addr(2)),
        "the drop applied through the local socket has no effect"
    );
    assert!(lab.list().iter().any(|f| f.id == id), "the agent's TLS side does not list {id}");
    // Refused callers change nothing and are told so.
    let log = || std::fs::read_to_string(lab.state.with_extension("log")).unwrap_or_default();
    let nobody = cli_in(
        &lab.a,
        &["runuser", "-u", "nobody", "--"],
        &["--agent", "local", "fault", "revert", &id],
    );
    assert!(
        !nobody.status.success(),
        "a non-root user was served: {}",
        String::from_utf8_lossy(&nobody.stdout)
    );
    eventually("the agent logs the refused user", || log().contains("uid 65534 is not root"));
    let stripped = cli_in(
        &lab.a,
        &["setpriv", "--bounding-set", "-net_admin,-sys_admin", "--"],
        &["--agent", "local", "fault", "revert", &id],
    );
    assert!(
        !stripped.status.success(),
        "root without CAP_NET_ADMIN/CAP_SYS_ADMIN was served: {}",
        String::from_utf8_lossy(&stripped.stdout)
    );
    eventually("the agent logs the refused root", || {
        log().contains("lacks CAP_NET_ADMIN and CAP_SYS_ADMIN")
    });
    assert!(!pings(&lab.a, &lab.addr(2)), "a refused caller reverted the fault");
    // Bounded: 64 silent connections hold every place; the 65th is closed at once, and
    // the places come back when they close.
    let held: Vec<std::os::unix::net::UnixStream> = lab.in_a(|| {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name("faultline/agent:7070").unwrap();
        let held: Vec<_> =
            (0..64).map(|_| std::os::unix::net::UnixStream::connect_addr(&addr).unwrap()).collect();
        // The 65th: accepted by the kernel, closed by the agent (EOF, not the 10 s deadline).
        let mut extra = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = std::io::Read::read(&mut extra, &mut [0u8; 1])
            .expect("the connection over the bound was left open");
        assert_eq!(n, 0);
        held
    });
    drop(held);
    eventually("the closed connections give their places back", || {
        cli_in(&lab.a, &[], &["fault", "list"]).status.success()
    });
    let out = cli_in(&lab.a, &[], &["fault", "revert", &id]);
    assert!(
        out.status.success(),
        "after the held connections closed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pings(&lab.a, &lab.addr(2)), "the reverted drop still drops");
    assert!(lab.list().is_empty());
}

/// Anyone may bind an abstract name: a user squatting on the agent's local socket gets
/// nothing from root's CLI (it checks that root holds the socket), and an agent started
/// after the squatter serves TCP and says why it has no local socket.
#[test]
fn a_squatter_on_the_local_socket_is_not_taken_for_the_agent() {
    let lab = Lab::new(68);
    let squat = "import socket,time; s=socket.socket(socket.AF_UNIX); s.bind('\\0faultline/agent:7070'); s.listen(64); print('bound', flush=True); time.sleep(120)";
    let mut squatter = Command::new("ip")
        .args(["netns", "exec", &lab.b, "runuser", "-u", "nobody", "--", "python3", "-c", squat])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "bound");
    let explicit = cli_in(&lab.b, &[], &["--agent", "local", "fault", "list"]);
    let err = String::from_utf8_lossy(&explicit.stderr);
    assert!(!explicit.status.success() && err.contains("held by uid 65534, not root"), "{err}");
    // Unasked, root falls back to the default URL (nothing listens there in B) and says why.
    let default = cli_in(&lab.b, &[], &["fault", "list"]);
    let err = String::from_utf8_lossy(&default.stderr);
    assert!(
        !default.status.success()
            && err.contains("not root")
            && err.contains("https://127.0.0.1:7070"),
        "{err}"
    );
    let state = lab.state.with_extension("squat");
    let log = lab.state.with_extension("squat.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut agent = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.b,
            env!("CARGO_BIN_EXE_faultline-agent"),
            "--insecure",
            "--listen",
            "127.0.0.1:7070",
            "--no-kernel-metrics",
            "--attach-ahead",
            "0",
            "--state-dir",
        ])
        .arg(&state)
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let tcp = || {
        cli_in(&lab.b, &[], &["--insecure", "--agent", "http://127.0.0.1:7070", "fault", "list"])
    };
    eventually("the agent serves TCP beside the squatter", || tcp().status.success());
    assert!(std::fs::read_to_string(&log).unwrap().contains("serving TCP only"));
    agent.kill().unwrap();
    agent.wait().unwrap();
    squatter.kill().unwrap();
    squatter.wait().unwrap();
    let _ = std::fs::remove_dir_all(&state);
}

/// F3: without a command, restart starts the process again exactly as it ran (executable,
/// argv, directory, environment, user); a caller's command needs the agent's opt-in.
#[test]
fn restart_starts_what_ran_and_runs_no_callers_command_by_default() {
    let lab = Lab::new(64);
    let dir = std::env::temp_dir().join(format!("fl-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("runuser")
        .args(["-u", "nobody", "--", "sleep", "601"])
        .current_dir(&dir)
        .env("FL_MARK", "restart-me")
        .spawn()
        .unwrap();
    // runuser execs sleep as a child: find it.
    let find = || -> Option<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x00601\x00")
            })
    };
    eventually("sleep runs", || find().is_some());
    let old = find().unwrap();
    let restart = |command: Vec<String>| {
        lab.apply(pb::FaultSpec {
            kind: Some(Kind::Restart(pb::Restart { command, signal: 0, grace_ms: 0 })),
            target: Some(pb::ProcessTarget {
                selector: Some(Selector::Pid(old)),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let refused = restart(vec!["/bin/sh".into(), "-c".into(), "id".into()]).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{}", refused.message());
    assert!(refused.message().contains("--allow-restart-command"), "{}", refused.message());
    assert!(find() == Some(old), "a refused restart killed the process");
    restart(vec![]).unwrap();
    eventually("a new sleep runs", || find().is_some_and(|p| p != old));
    let new = find().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{new}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(uid, "65534", "restarted as another user");
    assert_eq!(std::fs::read_link(format!("/proc/{new}/cwd")).unwrap(), dir);
    assert!(
        std::fs::read(format!("/proc/{new}/environ"))
            .unwrap()
            .split(|b| *b == 0)
            .any(|kv| kv == b"FL_MARK=restart-me")
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new("kill").arg(new.to_string()).status();
    let _ = std::fs::remove_dir_all(&dir);
}

/// F4: duplicate peers after normalisation neither leak an eBPF slot nor fail a revert;
/// twenty cycles later there are still slots.
#[test]
fn ebpf_slots_are_given_back_whatever_the_peers() {
    let lab = Lab::new(65);
    for _ in 0..20 {
        let f = lab
            .apply(with_peers(
                spec(Kind::Partition(pb::Partition {})),
                &["10.91.0.0/24", "10.91.0.7/24", "10.91.0.9/24"],
            ))
            .unwrap();
        lab.revert(&f.id);
    }
    let held: Vec<String> = (0..16)
        .map(|i| {
            lab.apply(with_peers(
                spec(Kind::Drop(pb::Drop { percent: 1.0 })),
                &[&format!("10.92.0.{i}")],
            ))
            .unwrap()
            .id
        })
        .collect();
    let full = lab.apply(spec(Kind::Drop(pb::Drop { percent: 1.0 }))).unwrap_err();
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{}", full.message());
    for id in held {
        lab.revert(&id);
    }
}

/// Kernel threads are no target (signals and cgroup moves do nothing to them), and an
/// error about a huge input quotes a short prefix of it.
#[test]
fn kernel_threads_and_huge_inputs_are_refused_clearly() {
    let lab = Lab::new(66);
    let e = lab.apply(freeze_pid(2, 1000)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("kernel thread"), "{}", e.message());
    let e = lab
        .apply(pb::FaultSpec {
            interface: "x".repeat(100_000),
            ..spec(Kind::Drop(pb::Drop { percent: 1.0 }))
        })
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().len() < 300, "{} bytes of error", e.message().len());
}

/// F6 and "undo never guesses": `--cleanup` thaws a cgroup the journal names by the
/// absolute path another mount namespace saw, and exits non-zero, keeping the entry,
/// when an undo fails for a reason other than "gone".
#[test]
fn cleanup_finds_cgroups_anywhere_and_fails_loudly() {
    let root = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(std::path::PathBuf::from)
        .expect("cgroup2 mounted");
    let cg = root.join(format!("fl-cleanup-{}", std::process::id()));
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::write(cg.join("cgroup.freeze"), "1").unwrap();
    let state = std::env::temp_dir().join(format!("fl-cleanup-state-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let name = cg.file_name().unwrap().to_str().unwrap().to_owned();
    // The journal of an agent whose mount namespace had cgroup2 at /sys/fs/cgroup.
    let journal = |extra: &str| {
        format!(
            r#"[{{"fault":"f-1","object":{{"type":"cgroup_freeze","dir":"/sys/fs/cgroup/{name}"}}}}{extra}]"#
        )
    };
    std::fs::write(state.join("journal.json"), journal("")).unwrap();
    let cleanup = || {
        Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
            .arg("--cleanup")
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap()
    };
    let out = cleanup();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(cg.join("cgroup.freeze")).unwrap().trim(),
        "0",
        "the cgroup is still frozen"
    );
    // A "cgroup" that is a file: the write fails with ENOTDIR, which is not "gone".
    std::fs::write(
        state.join("journal.json"),
        r#"[{"fault":"f-2","object":{"type":"cgroup_freeze","dir":"/cgroup.procs"}}]"#,
    )
    .unwrap();
    let out = cleanup();
    assert!(!out.status.success(), "a failed undo exited 0");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("could not undo 1 of 1"), "{text}");
    assert!(
        std::fs::read_to_string(state.join("journal.json")).unwrap().contains("cgroup.procs"),
        "the entry was dropped"
    );
    std::fs::remove_dir(&cg).unwrap();
    std::fs::remove_dir_all(&state).unwrap();
}
