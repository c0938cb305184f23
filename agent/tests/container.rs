//! Network faults inside Docker containers (issue 14), through the real engine: the agent
//! finds a container through the Docker API and acts in its network namespace. Each test
//! shows the effect from inside the container (busybox ping) and that nothing is left.

mod common;

use common::{docker::Containers, *};
use faultline_proto::agent::v1::{self as pb, fault_spec::Kind};

fn in_container(name: &str, kind: Kind) -> pb::FaultSpec {
    pb::FaultSpec {
        interface: String::new(),
        direction: pb::Direction::Egress as i32,
        lease_ms: 120_000,
        kind: Some(kind),
        container: Some(pb::ContainerTarget { name: name.into(), select: Vec::new() }),
        ..Default::default()
    }
}

#[test]
fn partition_between_two_containers_cuts_both_ways_in_both_families_and_heals() {
    let lab = Lab::new(71);
    let c = Containers::new(71, &[("a", &[]), ("b", &[])]);
    let (b4, b6, a4) = (c.ip4("b"), c.ip6("b"), c.ip4("a"));
    assert!(!b6.is_empty(), "the test network has IPv6");
    for to in [&b4, &b6] {
        assert_eq!(c.ping("a", to, 3, "0.2").1, 3, "baseline a -> {to}");
    }
    let mut s = in_container(&c.name("a"), Kind::Partition(pb::Partition {}));
    s.direction = pb::Direction::Both as i32;
    let s = with_peers(s, &[&format!("{b4}/32"), &format!("{b6}/128")]);
    let f = lab.apply(s).expect("partition in container a");
    let container = f.container.clone().expect("the status names the container");
    assert_eq!(
        (container.name.as_str(), f.spec.as_ref().unwrap().interface.as_str()),
        (c.name("a").as_str(), "eth0")
    );
    assert_eq!(container.pid, c.pid("a"));
    for to in [&b4, &b6] {
        assert_eq!(c.ping("a", to, 5, "0.2").1, 0, "a -> {to} crossed the partition");
    }
    assert_eq!(c.ping("b", &a4, 5, "0.2").1, 0, "b -> a crossed the partition (a's ingress)");
    // The agent's own namespace is another place: its path is untouched.
    let own = udp_run(&lab.a, &lab.b, format!("{}:9000", lab.addr(2)).parse().unwrap(), 500);
    assert_eq!(own.received, 500, "a container fault touched the agent's own namespace");
    let dropped =
        lab.list().into_iter().find(|x| x.id == f.id).unwrap().counters.unwrap().dropped_packets;
    assert!(dropped >= 15, "the container's classifier counted the drops: {dropped}");
    lab.revert(&f.id);
    for to in [&b4, &b6] {
        assert_eq!(c.ping("a", to, 3, "0.2").1, 3, "healed a -> {to}");
    }
    assert_eq!(c.ping("b", &a4, 3, "0.2").1, 3, "healed b -> a");
}

#[test]
fn drop_share_inside_a_container_lies_in_the_binomial_interval() {
    let lab = Lab::new(72);
    let c = Containers::new(72, &[("a", &[]), ("b", &[])]);
    let to = c.ip4("b");
    let n = 1000;
    let (lo, hi) = binomial_99(0.3, n);
    let loss = retry_outside(lo, hi, || {
        let mut s = in_container(&c.name("a"), Kind::Drop(pb::Drop { percent: 30.0 }));
        // Only the test's echo requests: the container's ICMPv6 chatter would be counted too.
        s.r#match = Some(pb::TrafficMatch {
            protocol: pb::Protocol::Icmp as i32,
            peers: vec![format!("{to}/32")],
            ..Default::default()
        });
        let f = lab.apply(s).expect("drop in container a");
        let (sent, got) = c.ping("a", &to, n, "0.005");
        let counters = lab.list().into_iter().find(|x| x.id == f.id).unwrap().counters.unwrap();
        lab.revert(&f.id);
        assert_eq!(sent, n);
        assert_eq!(
            counters.dropped_packets,
            u64::from(sent - got),
            "the counter equals the echo requests that got no reply"
        );
        f64::from(sent - got) / f64::from(sent)
    });
    assert!(
        (lo..=hi).contains(&loss),
        "drop 30% in a container: measured {loss:.4} outside {lo:.4}..{hi:.4}"
    );
}

#[test]
fn a_killed_agent_leaves_the_container_namespace_as_it_found_it() {
    let mut lab = Lab::new(73);
    let c = Containers::new(73, &[("a", &[]), ("b", &[])]);
    let before = c.ns_state("a");
    let mut s = in_container(
        &c.name("a"),
        Kind::Bandwidth(pb::Bandwidth { rate_bps: 1_000_000, burst_bytes: 0 }),
    );
    s.direction = pb::Direction::Both as i32;
    let f = lab.apply(s).expect("bandwidth in container a");
    let during = c.ns_state("a");
    assert!(
        during.contains("htb fa17: dev eth0") && during.contains("flifb"),
        "shaping lives in the container's namespace:\n{during}"
    );
    assert!(
        !sh_ok(&lab.a, &["tc", "qdisc", "show"]).contains("fa17:"),
        "nothing in the agent's own namespace"
    );
    assert!(f.kernel_objects.iter().all(|o| o.contains("in container")), "{:?}", f.kernel_objects);
    lab.kill_agent();
    assert_eq!(c.ns_state("a"), during, "a SIGKILLed agent cannot clean up by itself");
    lab.start_agent();
    assert_eq!(
        c.ns_state("a"),
        before,
        "the restarted agent undid its objects inside the container"
    );
    assert!(lab.list().is_empty(), "nothing left over: {:?}", lab.list());
}

#[test]
fn a_container_removed_while_faulted_is_reported_and_reverts_cleanly() {
    let mut lab = Lab::new(74);
    let c = Containers::new(74, &[("a", &[]), ("b", &[]), ("c", &[])]);
    let f = lab.apply(in_container(&c.name("a"), Kind::Drop(pb::Drop { percent: 100.0 }))).unwrap();
    c.remove("a");
    let st = lab.list().into_iter().find(|x| x.id == f.id).unwrap();
    assert!(st.container_gone.contains("is no longer running"), "{st:?}");
    lab.revert(&f.id);
    // Gone while the agent was down: its namespace went with the agent's objects in it.
    let mut s = in_container(
        &c.name("b"),
        Kind::Bandwidth(pb::Bandwidth { rate_bps: 1_000_000, burst_bytes: 0 }),
    );
    s.direction = pb::Direction::Both as i32;
    lab.apply(s).unwrap();
    lab.kill_agent();
    c.remove("b");
    lab.start_agent();
    assert!(
        lab.list().is_empty(),
        "the journal's entries for a vanished namespace are done: {:?}",
        lab.list()
    );
    // The other container was never touched.
    assert!(!c.ns_state("c").contains("fa17"));
}

#[test]
fn containers_are_selected_by_label_and_bad_selections_are_refused_by_name() {
    let lab = Lab::new(75);
    let c = Containers::new(
        75,
        &[
            ("web", &["com.docker.compose.service=web", "tier=front"]),
            ("db", &["com.docker.compose.service=db", "tier=front"]),
        ],
    );
    let select = |labels: &[&str]| pb::FaultSpec {
        container: Some(pb::ContainerTarget {
            name: String::new(),
            select: labels.iter().map(|s| (*s).to_owned()).collect(),
        }),
        ..in_container("", Kind::Drop(pb::Drop { percent: 100.0 }))
    };
    let f = lab
        .apply(with_peers(
            select(&["com.docker.compose.service=db"]),
            &[&format!("{}/32", c.ip4("web"))],
        ))
        .expect("select by label");
    assert_eq!(f.container.unwrap().name, c.name("db"));
    assert_eq!(c.ping("db", &c.ip4("web"), 3, "0.2").1, 0, "the selected container is partitioned");
    lab.revert(&f.id);

    let listed = lab.grpc(async |mut g| {
        g.list_containers(pb::ListContainersRequest { select: vec!["tier=front".into()] })
            .await
            .unwrap()
            .into_inner()
    });
    let mut names: Vec<String> = listed.containers.iter().map(|x| x.name.clone()).collect();
    names.sort();
    assert_eq!(names, [c.name("db"), c.name("web")]);
    assert!(
        listed.containers.iter().all(|x| x.netns_inode != 0 && !x.addresses.is_empty()),
        "{listed:?}"
    );

    let refused = |s: pb::FaultSpec| lab.apply(s).expect_err("refused");
    let e = refused(select(&["tier=front"]));
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("2 running containers match") && e.message().contains(&c.name("web")),
        "{}",
        e.message()
    );
    let drop = || Kind::Drop(pb::Drop { percent: 100.0 });
    let e = refused(in_container("flt75-nosuch", drop()));
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    let e = refused(in_container("../../images/json", drop()));
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().starts_with("container.name"),
        "{}",
        e.message()
    );
    let e = refused(pb::FaultSpec {
        interface: "nosuch0".into(),
        ..in_container(&c.name("web"), drop())
    });
    assert!(
        e.message().contains("no interface \"nosuch0\" in container")
            && e.message().contains("eth0"),
        "{}",
        e.message()
    );
    let mut kill = in_container(&c.name("web"), Kind::Kill(pb::Kill { signal: 0 }));
    kill.target = Some(pb::ProcessTarget {
        selector: Some(pb::process_target::Selector::Pid(1)),
        ..Default::default()
    });
    let e = refused(kill);
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().starts_with("target:"),
        "a target or a container, not both: {}",
        e.message()
    );
    assert!(lab.list().is_empty());
}

/// Issue 30: an agent scoped to labelled containers (`--scope-label`, as the Compose
/// platform's is) acts in them and nowhere else: not on the host's interfaces or
/// processes, not in a container without the label; its listing shows only its own.
#[test]
fn a_scoped_agent_acts_only_in_containers_with_its_label() {
    let lab = Lab::with_agent_args(79, &["--scope-label", "faultline.target=t79"]);
    let counting = "i=0; while :; do i=$((i+1)); echo $i > /n; sleep 0.05; done";
    let c = Containers::running(
        79,
        &[("mine", &["faultline.target=t79"]), ("other", &[])],
        &["sh", "-c", counting],
    );
    let denied = |s: pb::FaultSpec, what: &str| {
        let e = lab.apply(s).expect_err(what);
        assert!(
            e.code() == tonic::Code::PermissionDenied && e.message().contains("--scope-label"),
            "{what}: {:?} {}",
            e.code(),
            e.message()
        );
    };
    // The host: its interface, and a process of its own.
    denied(spec(Kind::Drop(pb::Drop { percent: 100.0 })), "a host interface");
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let freeze_host = pb::FaultSpec {
        lease_ms: 60_000,
        kind: Some(Kind::Freeze(pb::Freeze::default())),
        target: Some(pb::ProcessTarget {
            selector: Some(pb::process_target::Selector::Pid(sleeper.id())),
            ..Default::default()
        }),
        ..Default::default()
    };
    denied(freeze_host, "a host process");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", sleeper.id())).unwrap();
    assert!(!stat.contains(") T "), "the host process was frozen: {stat}");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    // Another container, by name: network and process faults alike.
    denied(
        in_container(&c.name("other"), Kind::Drop(pb::Drop { percent: 100.0 })),
        "an unlabelled container's network",
    );
    denied(
        pb::FaultSpec {
            lease_ms: 60_000,
            ..in_container(&c.name("other"), Kind::Freeze(pb::Freeze { method: 0 }))
        },
        "an unlabelled container's processes",
    );
    // Its own: the freeze takes effect.
    let count = || {
        String::from_utf8_lossy(&c.exec("mine", &["cat", "/n"]).stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    eventually("the counter runs", || count() > 2);
    let f = lab
        .apply(pb::FaultSpec {
            lease_ms: 60_000,
            ..in_container(&c.name("mine"), Kind::Freeze(pb::Freeze { method: 0 }))
        })
        .expect("freeze the labelled container");
    let frozen = count();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(count(), frozen, "the labelled container made progress while frozen");
    lab.revert(&f.id);
    let listed = lab.grpc(async |mut g| {
        g.list_containers(pb::ListContainersRequest { select: vec![] }).await.unwrap().into_inner()
    });
    let names: Vec<String> = listed.containers.iter().map(|x| x.name.clone()).collect();
    assert_eq!(names, [c.name("mine")], "the scoped agent lists only its containers");
    assert!(lab.list().is_empty());
}

fn running(name: &str) -> bool {
    common::docker::docker_ok(&["inspect", "-f", "{{.State.Running}}", name]) == "true"
}

/// Freeze, kill and restart a container, each seen through the runtime or the
/// container's own progress counter.
#[test]
fn a_container_freezes_and_resumes_is_killed_and_is_restarted_by_its_runtime() {
    let lab = Lab::new(76);
    let counting = "i=0; while :; do i=$((i+1)); echo $i > /n; sleep 0.05; done";
    let c = Containers::running(76, &[("app", &[])], &["sh", "-c", counting]);
    let name = c.name("app");
    let count = || {
        String::from_utf8_lossy(&c.exec("app", &["cat", "/n"]).stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    eventually("the counter runs", || count() > 2);
    let process =
        |kind: Kind, lease_ms: u64| pb::FaultSpec { lease_ms, ..in_container(&name, kind) };

    let f = lab
        .apply(process(Kind::Freeze(pb::Freeze { method: 0 }), 120_000))
        .expect("freeze the container");
    assert!(
        f.processes.iter().any(|p| p.pid == c.pid("app")),
        "its init process is among the frozen: {:?}",
        f.processes
    );
    assert_eq!(f.container.as_ref().map(|x| x.name.as_str()), Some(name.as_str()));
    let frozen = count();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(count(), frozen, "a frozen container made progress");
    lab.revert(&f.id);
    eventually("the thawed container counts again", || count() > frozen);

    let pid = c.pid("app");
    lab.apply(process(Kind::Kill(pb::Kill { signal: libc::SIGKILL }), 0))
        .expect("kill the container");
    eventually("the runtime sees the container exit", || !running(&name));

    common::docker::docker_ok(&["start", &name]);
    let started = common::docker::docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &name]);
    let f = lab
        .apply(process(
            Kind::Restart(pb::Restart { command: Vec::new(), signal: 0, grace_ms: 1000 }),
            0,
        ))
        .expect("restart the container");
    assert!(
        f.kernel_objects.iter().any(|n| n.contains("docker restart")),
        "{:?}",
        f.kernel_objects
    );
    assert!(running(&name), "running again after the restart");
    assert_ne!(
        common::docker::docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &name]),
        started,
        "the runtime started it anew"
    );
    assert_ne!(c.pid("app"), pid);
    assert!(lab.list().is_empty());
}

/// containerd directly, as on a Kubernetes node: a task started with `ctr` carrying the
/// labels the kubelet sets, found by them (in whichever containerd namespace), faulted
/// inside its network namespace; a veth end moved there carries the traffic.
#[test]
fn a_containerd_task_is_found_by_kubernetes_labels_and_faulted_inside() {
    let lab = Lab::new(77);
    let task = common::docker::CtrTask::new(
        77,
        &[
            "io.kubernetes.pod.name=web-0",
            "io.kubernetes.pod.namespace=shop",
            "io.kubernetes.container.name=web",
        ],
    );
    let pid = task.pid().to_string();
    sh_ok(&lab.b, &["ip", "link", "add", "c77h", "type", "veth", "peer", "name", "c77c"]);
    sh_ok(&lab.b, &["ip", "link", "set", "c77c", "netns", &pid]);
    sh_ok(&lab.b, &["ip", "addr", "add", "10.201.77.1/24", "dev", "c77h"]);
    sh_ok(&lab.b, &["ip", "link", "set", "c77h", "up"]);
    let inside = |args: &[&str]| {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    inside(&["ip", "addr", "add", "10.201.77.2/24", "dev", "c77c"]);
    inside(&["ip", "link", "set", "c77c", "up"]);
    inside(&["ip", "link", "set", "lo", "up"]);
    let replies = |n: &str| {
        let out = sh(&lab.b, &["ping", "-q", "-c", n, "-i", "0.2", "-W", "1", "10.201.77.2"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        common::docker::ping_counts(&text).unwrap_or_else(|| panic!("ping output: {text}")).1
    };
    assert_eq!(replies("3"), 3, "baseline: the task answers through the moved link");

    let by_labels = pb::FaultSpec {
        container: Some(pb::ContainerTarget {
            name: String::new(),
            select: vec![
                "io.kubernetes.pod.name=web-0".into(),
                "io.kubernetes.pod.namespace=shop".into(),
            ],
        }),
        ..in_container("", Kind::Drop(pb::Drop { percent: 100.0 }))
    };
    let f = lab.apply(by_labels).expect("drop in the containerd task");
    let c = f.container.clone().unwrap();
    assert_eq!(
        (c.runtime.as_str(), c.name.as_str(), c.pid),
        ("containerd", "flt77/ctr77", task.pid())
    );
    assert_eq!(f.spec.as_ref().unwrap().interface, "c77c", "its only interface besides lo");
    assert_eq!(replies("5"), 0, "the task's replies are dropped inside its namespace");
    lab.revert(&f.id);
    assert_eq!(replies("3"), 3, "healed");

    let listed = lab.grpc(async |mut g| {
        g.list_containers(pb::ListContainersRequest {
            select: vec!["io.kubernetes.container.name=web".into()],
        })
        .await
        .unwrap()
        .into_inner()
    });
    let ours = listed
        .containers
        .iter()
        .find(|x| x.runtime == "containerd" && x.id == "ctr77")
        .unwrap_or_else(|| panic!("{listed:?}"));
    // containerd knows no addresses: they are read in the task's namespace (a controller
    // partition of containers cuts by them).
    assert_eq!(ours.addresses, ["10.201.77.2"], "{ours:?}");
    let restart = pb::FaultSpec {
        lease_ms: 0,
        ..in_container(
            "ctr77",
            Kind::Restart(pb::Restart { command: Vec::new(), signal: 0, grace_ms: 0 }),
        )
    };
    let e = lab.apply(restart).expect_err("containerd has no restart");
    assert!(e.message().contains("no restart of its own"), "{}", e.message());
}

/// Kernel metrics name the container whose sockets they count (a `container` label), so
/// a dashboard can show one container's view of its peers.
#[test]
fn kernel_metrics_name_the_container_a_connection_came_from() {
    let lab = Lab::new(78);
    let c = Containers::new(78, &[("srv", &[]), ("cli", &[])]);
    let out = c.exec("srv", &["busybox", "httpd", "-p", "8078", "-h", "/"]);
    assert!(out.status.success(), "httpd: {}", String::from_utf8_lossy(&out.stderr));
    let srv = c.ip4("srv");
    let cli = c.name("cli");
    let connect = || {
        // busybox nc, not its wget (which crashes in this image without /etc).
        let _ = c.exec(
            "cli",
            &["sh", "-c", &format!("echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {srv} 8078")],
        );
    };
    let connects = |container: &str| {
        lab.metrics()
            .peers
            .iter()
            .find(|p| p.container == container && p.peer == srv)
            .map_or(0, |p| p.connects)
    };
    // The agent learns the host's containers every few seconds: connect until it counts
    // (until then, they are the host's).
    eventually("the client container's connects counted under its name", || {
        connect();
        connects(&cli) > 0
    });
    let (mine, host) = (connects(&cli), connects(""));
    for _ in 0..3 {
        connect();
    }
    assert_eq!(
        (connects(&cli) - mine, connects("") - host),
        (3, 0),
        "the container's connects, and only under its name"
    );
    let text = lab.prometheus();
    let series = format!("faultline_tcp_connects_total{{container=\"{cli}\",peer=\"{srv}\"}} ");
    assert!(text.lines().any(|l| l.starts_with(&series)), "no {series} in:\n{text}");
}
