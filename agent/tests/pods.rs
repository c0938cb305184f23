//! Kubernetes pods as fault targets (issue 34), on a real CRI runtime without a Kubernetes
//! server: containerd's CRI plugin and Debian's CNI bridge, pods made as kubelet makes
//! them. Each test shows the effect from another pod (ping through the pod network) or in
//! the container's own progress, then that nothing is left.

mod common;

use common::{
    cri::{Node, TestPod},
    *,
};
use faultline_proto::{
    agent::v1::{self as pb, fault_spec::Kind},
    cri::v1::ContainerState,
};

fn agent_for(id: u8, node: &Node) -> Lab {
    Lab::with_agent_args(id, &["--cri-socket", node.socket.to_str().unwrap()])
}

fn on_pod(namespace: &str, name: &str, select: &[&str], kind: Kind) -> pb::FaultSpec {
    pb::FaultSpec {
        direction: pb::Direction::Egress as i32,
        lease_ms: 120_000,
        kind: Some(kind),
        pod: Some(pb::PodTarget {
            namespace: namespace.into(),
            name: name.into(),
            select: select.iter().map(|s| (*s).to_owned()).collect(),
            container: String::new(),
        }),
        ..Default::default()
    }
}

const SLEEPER: &str = "exec sleep 3600";

fn two_pods(node: &mut Node) -> (TestPod, TestPod) {
    let a = node.pod("shop", "client-0", &[("app", "client")], &[("main", SLEEPER)]);
    let b = node.pod("shop", "web-0", &[("app", "web"), ("tier", "front")], &[("nginx", SLEEPER)]);
    (a, b)
}

#[test]
fn a_pod_selected_by_its_app_label_is_cut_off_and_heals() {
    let mut node = Node::start(91);
    let lab = agent_for(91, &node);
    let (client, web) = two_pods(&mut node);
    let before = node.ns_state(&web);
    let to = node.addresses(&web);
    assert!(to.len() == 2, "the CNI gave the pod IPv4 and IPv6: {to:?}");
    for addr in &to {
        assert_eq!(node.ping(&client, addr, 3).1, 3, "baseline client -> {addr}");
    }
    let mut s = on_pod("shop", "", &["app=web"], Kind::Drop(pb::Drop { percent: 100.0 }));
    s.direction = pb::Direction::Both as i32;
    let f = lab.apply(s).expect("drop on the pod selected by app=web");
    let c = f.container.clone().expect("the status names the pod");
    assert_eq!((c.name.as_str(), c.runtime.as_str()), ("shop/web-0", "cri"));
    assert_eq!(c.pid, node.pid(&web, None), "the sandbox's process: the pod's namespace");
    assert_eq!(f.spec.as_ref().unwrap().interface, "eth0");
    for addr in &to {
        assert_eq!(node.ping(&client, addr, 5).1, 0, "client -> {addr} crossed a 100 % drop");
    }
    lab.revert(&f.id);
    for addr in &to {
        assert_eq!(node.ping(&client, addr, 3).1, 3, "healed client -> {addr}");
    }
    assert_eq!(node.ns_state(&web), before, "nothing left in the pod's namespace");
}

#[test]
fn a_partition_between_two_pods_by_label_cuts_both_ways_in_both_families() {
    let mut node = Node::start(92);
    let lab = agent_for(92, &node);
    let (client, web) = two_pods(&mut node);
    let (c_addrs, w_addrs) = (node.addresses(&client), node.addresses(&web));
    let peers: Vec<String> = w_addrs
        .iter()
        .map(|a| if a.contains(':') { format!("{a}/128") } else { format!("{a}/32") })
        .collect();
    let mut s = on_pod(
        "shop",
        "",
        &["app in (client,batch)", "!canary"],
        Kind::Partition(pb::Partition {}),
    );
    s.direction = pb::Direction::Both as i32;
    let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
    let f = lab.apply(with_peers(s, &peers)).expect("partition client | web");
    for to in &w_addrs {
        assert_eq!(node.ping(&client, to, 5).1, 0, "client -> {to} crossed the partition");
    }
    for to in &c_addrs {
        assert_eq!(node.ping(&web, to, 5).1, 0, "web -> {to} crossed the partition");
    }
    lab.revert(&f.id);
    for to in &w_addrs {
        assert_eq!(node.ping(&client, to, 3).1, 3, "healed client -> {to}");
    }
}

/// CPU time a process has had (utime + stime, clock ticks).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_pod_container_freezes_and_resumes_and_a_killed_one_is_seen_dead_through_cri() {
    let mut node = Node::start(93);
    let lab = agent_for(93, &node);
    let pod = node.pod(
        "batch",
        "worker-0",
        &[("app", "worker")],
        &[("spin", "while :; do :; done"), ("side", SLEEPER)],
    );
    let spin = node.pid(&pod, Some("spin"));
    let mut s = on_pod("batch", "worker-0", &[], Kind::Freeze(pb::Freeze::default()));
    s.pod.as_mut().unwrap().container = "spin".into();
    let f = lab.apply(s).expect("freeze the spin container");
    assert_eq!(f.container.as_ref().unwrap().name, "batch/worker-0/spin");
    let before = cpu_ticks(spin);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(cpu_ticks(spin), before, "a frozen container made progress");
    lab.revert(&f.id);
    eventually("the container runs again", || cpu_ticks(spin) > before);

    // A network fault names no container: the pod shares one namespace.
    let mut s = on_pod("batch", "worker-0", &[], Kind::Drop(pb::Drop { percent: 100.0 }));
    s.pod.as_mut().unwrap().container = "spin".into();
    let e = lab.apply(s).expect_err("a network fault on one container of a pod");
    assert!(e.message().contains("pod.container"), "{}", e.message());

    let mut s = on_pod("batch", "", &["app=worker"], Kind::Kill(pb::Kill { signal: 9 }));
    s.pod.as_mut().unwrap().container = "spin".into();
    s.lease_ms = 0;
    lab.apply(s).expect("kill the spin container");
    eventually("CRI sees the container exited", || {
        node.state(&pod, "spin") == ContainerState::ContainerExited
    });
    assert_eq!(node.state(&pod, "side"), ContainerState::ContainerRunning, "its sibling lives");
}

#[test]
fn a_killed_agent_leaves_the_pod_namespace_as_before_and_a_deleted_pod_is_no_error() {
    let mut node = Node::start(94);
    let mut lab = agent_for(94, &node);
    let (client, web) = two_pods(&mut node);
    let before = node.ns_state(&web);
    let mut s = on_pod(
        "shop",
        "web-0",
        &[],
        Kind::Bandwidth(pb::Bandwidth { rate_bps: 1_000_000, burst_bytes: 0 }),
    );
    s.direction = pb::Direction::Both as i32;
    lab.apply(s).expect("bandwidth on the pod");
    let during = node.ns_state(&web);
    assert!(
        during.contains("htb fa17: dev eth0"),
        "shaping lives in the pod's namespace:\n{during}"
    );
    lab.kill_agent();
    lab.start_agent();
    assert_eq!(node.ns_state(&web), before, "the restarted agent undid its objects in the pod");
    assert!(lab.list().is_empty(), "{:?}", lab.list());

    let f = lab
        .apply(on_pod("shop", "client-0", &[], Kind::Drop(pb::Drop { percent: 100.0 })))
        .unwrap();
    node.delete(&client);
    let st = lab.list().into_iter().find(|x| x.id == f.id).unwrap();
    assert!(st.container_gone.contains("is no longer running"), "{st:?}");
    lab.revert(&f.id);
    assert!(lab.list().is_empty(), "{:?}", lab.list());
}

#[test]
fn pods_are_listed_with_their_own_labels_and_bad_selections_are_refused_by_name() {
    let mut node = Node::start(95);
    let lab = agent_for(95, &node);
    let (_client, web) = two_pods(&mut node);
    let _other =
        node.pod("shop", "web-1", &[("app", "web"), ("tier", "back")], &[("nginx", SLEEPER)]);
    let listed = lab.grpc(async |mut g| {
        g.list_pods(pb::ListPodsRequest {
            namespace: "shop".into(),
            select: vec!["app=web,tier notin (back)".into()],
        })
        .await
        .unwrap()
        .into_inner()
    });
    assert!(listed.unreachable.is_empty(), "{listed:?}");
    let [p] = listed.pods.as_slice() else { panic!("{listed:?}") };
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str(), p.uid.as_str()),
        ("shop", "web-0", web.uid.as_str())
    );
    assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
    assert!(
        p.labels.keys().all(|k| !k.starts_with("io.kubernetes.")),
        "kubelet's own labels are not the pod's: {p:?}"
    );
    assert_eq!(p.addresses, node.addresses(&web));
    assert_eq!(p.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["nginx"]);
    assert!(p.runtime.starts_with("containerd"), "{}", p.runtime);

    let drop = || Kind::Drop(pb::Drop { percent: 100.0 });
    let e = lab.apply(on_pod("shop", "", &["app=web"], drop())).expect_err("two pods match");
    assert!(
        e.message().contains("pod.select") && e.message().contains("shop/web-1"),
        "{}",
        e.message()
    );
    let e = lab.apply(on_pod("shop", "web-9", &[], drop())).expect_err("no such pod");
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    let e = lab.apply(on_pod("", "web-0", &[], drop())).expect_err("a name without namespace");
    assert!(e.message().contains("pod.namespace"), "{}", e.message());
    let e = lab.apply(on_pod("shop", "", &["tier in front"], drop())).expect_err("a bad set");
    assert!(e.message().contains("pod.select"), "{}", e.message());
}
