//! `faultline lab`: up (twice), agents registered, a partition seen in the service's
//! traffic and in ping, a freeze that stays inside its host, then down leaves the machine
//! as it found it. Needs root, nginx and redis-server (`cargo xtask setup`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lab-test")
}

/// The CLI with the lab's certificates and no controller of its own: for `--agent URL`.
fn cli(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_faultline"));
    c.args(args).env_remove("FAULTLINE_CONTROLLER").env("FAULTLINE_TLS_DIR", dir().join("tls"));
    c
}

fn faultline(args: &[&str]) -> Output {
    cli(args).env("FAULTLINE_CONTROLLER", "https://10.77.0.1:7080").output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = faultline(args);
    assert!(
        out.status.success(),
        "faultline {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn lines(program: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Interface names, namespaces, and processes whose command line names the lab's directory.
fn machine() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let links = lines("ip", &["-o", "link", "show"])
        .into_iter()
        .map(|l| {
            l.split(':').nth(1).unwrap_or("").trim().split('@').next().unwrap_or("").to_owned()
        })
        .collect();
    let d = dir().display().to_string();
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid = e.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
            let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)
                .replace('\0', " ");
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            (cmd.contains(&d) && !state.contains(") Z ")).then(|| format!("{pid} {cmd}"))
        })
        .collect();
    (links, lines("ip", &["netns", "list"]), procs)
}

fn ping(ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", to])
        .output()
        .unwrap()
        .status
        .success()
}

/// The backend that answered, from the first line of the page, through h1's balancer.
fn backend() -> String {
    let out = Command::new("ip").args(["netns", "exec", "fl-lab-h1", "python3", "-c", "import urllib.request as u; print(u.urlopen('http://10.77.0.11/', timeout=3).read().decode().split()[0])"]).output().unwrap();
    assert!(
        out.status.success(),
        "GET through the balancer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// pid -> state letter of the lab's processes named `what`, by host.
fn states(what: &str) -> Vec<(String, char)> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("lab.json")).unwrap()).unwrap();
    state["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["what"] == what)
        .map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", p["pid"])).unwrap();
            (
                p["host"].as_str().unwrap().to_owned(),
                stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap(),
            )
        })
        .collect()
}

/// Takes the lab down if the test fails half-way, so the next run starts clean.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = faultline(&["lab", "down", "--dir", &dir().display().to_string()]);
        }
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one lab (seconds to build) for every check, up to down")]
fn lab_up_partition_freeze_down_leaves_the_machine_as_it_was() {
    let d = dir();
    let dir_arg = d.display().to_string();
    ok(&["lab", "down", "--dir", &dir_arg]);
    let before = machine();
    let _down = Down;

    let up = ok(&["lab", "up", "--dir", &dir_arg]);
    assert!(up.contains("agent h3"), "{up}");
    let pids = std::fs::read_to_string(d.join("lab.json")).unwrap();
    let again = ok(&["lab", "up", "--dir", &dir_arg]);
    assert!(again.contains("already up"), "{again}");
    assert_eq!(
        std::fs::read_to_string(d.join("lab.json")).unwrap(),
        pids,
        "a second `up` changed the lab"
    );
    // The lab's one firewall change: its bridge's frames pass FORWARD. Under `cargo xtask
    // test` Docker's engine runs and (on a host where it turned forwarding on) its
    // `FORWARD DROP` policy is in force: then the rest of this test (pings, the balancer,
    // partitions) is the proof the lab works with it.
    let forward = || lines("iptables", &["-w", "-S", "FORWARD"]);
    let ours: Vec<String> = forward().into_iter().filter(|l| l.contains("faultline lab")).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].contains("-i fl-lab -o fl-lab") && ours[0].ends_with("-j ACCEPT"), "{ours:?}");
    eprintln!(
        "lab test: FORWARD policy {}",
        if forward().contains("-P FORWARD DROP") { "DROP (Docker's)" } else { "ACCEPT" }
    );
    let env = ok(&["lab", "status", "--dir", &dir_arg, "--env"]);
    assert!(env.contains("FAULTLINE_CONTROLLER=https://10.77.0.1:7080"), "{env}");

    let agents: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["agents", "list", "--json"])).unwrap();
    assert_eq!(agents.len(), 3, "{agents:?}");
    assert!(agents.iter().all(|a| a["healthy"] == true), "{agents:?}");
    assert!(agents.iter().any(|a| a["name"] == "h1" && a["labels"]["role"] == "web"), "{agents:?}");
    // `agents list` in aligned columns, labels last, and every kind each agent can apply.
    let table = ok(&["agents", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    let at = lines[0].find("labels").expect("a labels column");
    assert!(
        lines[1..].iter().all(|l| l
            .get(at..)
            .is_some_and(|rest| rest.starts_with("redis=") || rest.starts_with("role="))),
        "{table}"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains("bandwidth") && l.contains("freeze") && l.contains("drop")),
        "{table}"
    );

    // The service: both backends answer through the balancer.
    let seen: BTreeSet<String> = (0..10).map(|_| backend()).collect();
    assert_eq!(
        seen,
        ["h2", "h3"].map(str::to_owned).into(),
        "the balancer should use both backends"
    );
    assert!(ping("fl-lab-h1", "10.77.0.13"));

    // Each agent's kernel metrics are its own host's, though all share one kernel: 20
    // connections from h2 to h3's redis count on h2's agent, not on h1's or h3's.
    let connects = |host: u8| -> u64 {
        let out = cli(&["--agent", &format!("https://10.77.0.1{host}:7070"), "metrics", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "metrics of h{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        m["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["peer"] == "10.77.0.13")
            .map(|p| p["connects"].as_u64().unwrap())
            .sum()
    };
    let counted = [connects(1), connects(2), connects(3)];
    let script = "import socket\nfor _ in range(20): socket.create_connection(('10.77.0.13', 6379), timeout=3).close()";
    let out = Command::new("ip")
        .args(["netns", "exec", "fl-lab-h2", "python3", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "connecting from h2 to h3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grew: Vec<u64> = (1..=3).map(|h| connects(h) - counted[usize::from(h) - 1]).collect();
    assert!(
        grew[1] >= 20 && grew[0] < 20 && grew[2] < 20,
        "connects to 10.77.0.13 grew by {grew:?} on h1, h2, h3"
    );

    // h3 isolated: h1 cannot reach it, the balancer answers from h2 only.
    let id = ok(&["partition", "isolate", "--node", "h3", "--lease", "60s"]);
    let id = id.split_whitespace().next().unwrap().to_owned();
    assert!(!ping("fl-lab-h1", "10.77.0.13"), "h1 still reaches the isolated h3");
    assert!(!ping("fl-lab-h2", "10.77.0.13"), "h2 still reaches the isolated h3");
    assert!(ping("fl-lab-h1", "10.77.0.12"), "the partition cut h1 from h2 as well");
    let during: BTreeSet<String> = (0..10).map(|_| backend()).collect();
    assert_eq!(during, ["h2".to_owned()].into(), "with h3 isolated only h2 should answer");
    ok(&["fault", "revert", &id]);
    assert!(ping("fl-lab-h1", "10.77.0.13"), "reverted, yet h1 cannot reach h3");
    // nginx takes a failed backend back after its fail_timeout (2 s): h3 serves again.
    let mut tries = 0;
    while backend() != "h3" {
        tries += 1;
        assert!(tries < 100, "h3 never served again after the partition was reverted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A freeze by name reaches only its own host's nginx (agents run --same-netns-only).
    let id = ok(&["fault", "apply", "freeze", "--name", "^nginx$", "--on", "h2", "--lease", "60s"])
        .trim()
        .to_owned();
    let frozen = states("nginx");
    assert!(
        frozen.iter().any(|(h, s)| h == "h2" && *s == 'T'),
        "h2's nginx not stopped: {frozen:?}"
    );
    assert!(
        frozen.iter().filter(|(h, _)| h != "h2").all(|(_, s)| *s != 'T'),
        "another host's nginx was stopped: {frozen:?}"
    );
    let during: BTreeSet<String> = (0..5).map(|_| backend()).collect();
    assert_eq!(during, ["h3".to_owned()].into(), "with h2 frozen only h3 should answer");
    ok(&["fault", "revert", &id]);
    assert!(states("nginx").iter().all(|(_, s)| *s != 'T'));

    // No surprises (issue 12). A kill by name on every host where one host has no such
    // process is refused everywhere before any agent acts: h2's and h3's redis live on.
    let redis_before = states("redis");
    let pids = |s: &[(String, char)]| s.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>();
    let out = faultline(&["fault", "apply", "kill", "--name", "^redis-server$", "--all"]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && msg.contains("h1") && msg.contains("nothing was done on any"),
        "{msg}"
    );
    assert_eq!(
        pids(&states("redis")),
        pids(&redis_before),
        "a refused kill killed redis somewhere"
    );
    let lab_state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("lab.json")).unwrap()).unwrap();
    for p in lab_state["processes"].as_array().unwrap().iter().filter(|p| p["what"] == "redis") {
        assert!(
            std::path::Path::new(&format!("/proc/{}", p["pid"])).exists(),
            "redis on {} was killed",
            p["host"]
        );
    }
    // A pid means something on one host only: on every agent it goes nowhere.
    let out = faultline(&["fault", "apply", "kill", "--pid", "1234", "--all"]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && msg.contains("--pid names something on one host only"),
        "{msg}"
    );
    // Groups leave the agents they do not name alone.
    let out =
        ok(&["partition", "groups", "--group", "h2", "--group", "h3", "--lease", "60s", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cut"], "h2 | h3 (h1 untouched)", "{v}");
    assert!(
        ping("fl-lab-h1", "10.77.0.12") && ping("fl-lab-h1", "10.77.0.13"),
        "h1, in no group, was cut"
    );
    assert!(!ping("fl-lab-h2", "10.77.0.13"), "h2 still reaches h3");
    ok(&["fault", "revert", v["id"].as_str().unwrap()]);
    let out = faultline(&["partition", "halves", "--node", "h1", "--lease", "60s"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("--node is for isolate and bridge"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--agent URL` given on the command line wins over an exported FAULTLINE_CONTROLLER.
    let info = cli(&["--agent", "https://10.77.0.13:7070", "info", "--json"])
        .env("FAULTLINE_CONTROLLER", "https://10.77.0.1:7080")
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    assert!(String::from_utf8_lossy(&info.stdout).contains("10.77.0.13"), "not h3's own view");
    let both = cli(&[
        "--agent",
        "https://10.77.0.13:7070",
        "--controller",
        "https://10.77.0.1:7080",
        "fault",
        "list",
    ])
    .output()
    .unwrap();
    assert!(!both.status.success() && String::from_utf8_lossy(&both.stderr).contains("not both"));

    // A fault left active is reverted by its agent when the lab goes down.
    ok(&["fault", "apply", "drop", "-i", "eth0", "--loss", "100%", "--on", "h2", "--lease", "60s"]);
    // Open streams to an agent and to the controller must not hold them up when they stop.
    let mut watchers: Vec<std::process::Child> = [
        vec!["--agent", "https://10.77.0.11:7070", "metrics", "--watch"],
        vec!["--controller", "https://10.77.0.1:7080", "events", "--follow"],
    ]
    .iter()
    .map(|args| cli(args).stdout(std::process::Stdio::piped()).spawn().unwrap())
    .collect();
    for w in &mut watchers {
        // The first line means the stream is open.
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(w.stdout.as_mut().unwrap()),
            &mut first,
        )
        .unwrap();
        assert!(!first.is_empty());
    }
    let out = faultline(&["lab", "down", "--dir", &dir_arg]);
    let (down, complaints) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && down.contains("lab down"), "{down}{complaints}");
    assert!(!complaints.contains("ignored SIGTERM"), "a process had to be killed: {complaints}");
    for mut w in watchers {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert!(!Path::new(&d).exists(), "the lab directory is still there");
    // Compared as "nothing new": links of an earlier test's namespaces may vanish meanwhile
    // (the kernel frees a deleted namespace's links later).
    let after = machine();
    let new =
        |a: &BTreeSet<String>, b: &BTreeSet<String>| a.difference(b).cloned().collect::<Vec<_>>();
    assert_eq!(new(&after.0, &before.0), Vec::<String>::new(), "interfaces left after down");
    assert_eq!(new(&after.1, &before.1), Vec::<String>::new(), "namespaces left after down");
    assert_eq!(new(&after.2, &before.2), Vec::<String>::new(), "lab processes left running");
    let left: Vec<String> = forward().into_iter().filter(|l| l.contains("faultline lab")).collect();
    assert!(left.is_empty(), "the lab's FORWARD rule left after down: {left:?}");
    assert!(
        ok(&["lab", "down", "--dir", &dir_arg]).contains("no lab"),
        "a second down should be a no-op"
    );
}
