//! Process faults against real processes and real cgroups: progress is read from
//! the kernel's CPU accounting (/proc/PID/stat), never from what the agent says.

mod common;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{eventually, rt};
use faultline_agent::kernel::{cgroup, procfs};
use faultline_proto::agent::v1::{
    self as pb, agent_service_client::AgentServiceClient, fault_spec::Kind,
    process_target::Selector,
};
use tonic::Code;

/// An agent in the host's namespaces (cgroup2 is not visible under `ip netns exec`).
struct HostAgent {
    port: u16,
    state: PathBuf,
    child: Option<Child>,
}

impl HostAgent {
    fn start(port: u16) -> Self {
        let state =
            std::env::temp_dir().join(format!("faultline-proc-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let mut a = Self { port, state, child: None };
        a.restart();
        a
    }

    fn restart(&mut self) {
        let log = std::fs::File::create(self.state.with_extension("log")).unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
                // Loopback: the one place plaintext is allowed, and tested here.
                // The kill-and-restart test also runs a given command, which needs the opt-in.
                .args([
                    "--insecure",
                    "--allow-restart-command",
                    "--listen",
                    &format!("127.0.0.1:{}", self.port),
                    "--state-dir",
                ])
                .arg(&self.state)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let url = self.url();
        eventually("agent answers", || {
            rt().block_on(AgentServiceClient::connect(url.clone())).is_ok()
        });
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn sigkill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn apply(
        &self,
        kind: Kind,
        target: Option<pb::ProcessTarget>,
        lease_ms: u64,
    ) -> Result<pb::FaultStatus, tonic::Status> {
        let spec = pb::FaultSpec { lease_ms, kind: Some(kind), target, ..Default::default() };
        rt().block_on(async {
            let mut c = AgentServiceClient::connect(self.url()).await.unwrap();
            c.apply_fault(pb::ApplyFaultRequest { spec: Some(spec), dry_run: false })
                .await
                .map(|r| r.into_inner().fault.unwrap())
        })
    }

    fn revert(&self, id: &str) {
        rt().block_on(async {
            let mut c = AgentServiceClient::connect(self.url()).await.unwrap();
            c.revert_fault(pb::RevertFaultRequest { id: id.into(), all: false })
                .await
                .expect("revert");
        });
    }

    fn describe(&self) -> pb::Capabilities {
        rt().block_on(async {
            let mut c = AgentServiceClient::connect(self.url()).await.unwrap();
            c.describe(pb::DescribeRequest {}).await.unwrap().into_inner().capabilities.unwrap()
        })
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
        common::clean_up_or_keep(&self.state);
    }
}

/// A busy loop under a name of its own (a symlink to sh: comm is the name exec'd).
struct Busy {
    child: Child,
    link: PathBuf,
}

impl Busy {
    fn start(name: &str, script: &str) -> Self {
        let link = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
        // Its own process group, so that drop can kill the loops it started too.
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(&link).args(["-c", script]).stdin(Stdio::null()),
            0,
        )
        .spawn()
        .unwrap();
        Self { child, link }
    }
    fn spin(name: &str) -> Self {
        Self::start(name, "while :; do :; done")
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.link);
    }
}

fn ticks(pid: u32) -> u64 {
    procfs::stat(pid).map_or(0, |s| s.cpu_ticks)
}

fn state(pid: u32) -> char {
    procfs::stat(pid).map_or('?', |s| s.state)
}

/// A process makes no progress: its CPU time is the same before and after a pause
/// long enough for a running loop to accumulate many ticks.
fn no_progress(pid: u32) -> bool {
    let before = ticks(pid);
    std::thread::sleep(Duration::from_millis(500));
    ticks(pid) == before
}

fn progresses(pid: u32) -> bool {
    let before = ticks(pid);
    std::thread::sleep(Duration::from_millis(200));
    ticks(pid) > before
}

/// A cgroup v2 directory for one test, removed on drop (after its processes left).
struct TestCgroup {
    dir: PathBuf,
    rel: String,
}

impl TestCgroup {
    fn new(name: &str) -> Self {
        let root = cgroup::mount().expect("cgroup2 mounted");
        let dir = root.join(name);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap();
        Self { dir, rel: format!("/{name}") }
    }
    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
    fn frozen(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .unwrap()
            .lines()
            .any(|l| l == "frozen 1")
    }
    fn target(&self) -> Option<pb::ProcessTarget> {
        target(Selector::Cgroup(self.rel.clone()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.freeze"), "0");
        let root = self.dir.parent().unwrap().join("cgroup.procs");
        for pid in
            std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default().lines()
        {
            let _ = std::fs::write(&root, pid);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn target(sel: Selector) -> Option<pb::ProcessTarget> {
    Some(pb::ProcessTarget { selector: Some(sel), ..Default::default() })
}

fn freeze() -> Kind {
    Kind::Freeze(pb::Freeze::default())
}

#[test]
fn cgroup_freeze_stops_all_progress_and_revert_resumes_it() {
    let agent = HostAgent::start(7101);
    let cg = TestCgroup::new("faultline-test-freeze");
    let busy = Busy::spin("fltfrz1");
    cg.add(busy.pid());
    assert!(progresses(busy.pid()), "the loop runs before the fault");
    let f = agent.apply(freeze(), cg.target(), 60_000).expect("freeze");
    assert_eq!(f.cgroup, cg.rel);
    assert_eq!(f.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![busy.pid()]);
    assert!(cg.frozen(), "cgroup.events must say frozen 1");
    assert!(no_progress(busy.pid()), "a frozen loop accumulated CPU time");
    agent.revert(&f.id);
    assert!(!cg.frozen());
    eventually("the loop resumes", || progresses(busy.pid()));
}

#[test]
fn sigstop_freeze_of_a_tree_by_name_is_undone_after_agent_sigkill() {
    let mut agent = HostAgent::start(7102);
    // A parent loop that starts a child loop: both must stop.
    let busy = Busy::start("fltfrz2", "sh -c 'while :; do :; done' & while :; do :; done");
    eventually("the child loop exists", || procfs::all().iter().any(|p| p.ppid == busy.pid()));
    let child = procfs::all().into_iter().find(|p| p.ppid == busy.pid()).unwrap().id.pid;
    let t = pb::ProcessTarget {
        selector: Some(Selector::NameRegex("^fltfrz2$".into())),
        include_children: true,
        ..Default::default()
    };
    let f = agent.apply(freeze(), Some(t), 60_000).expect("freeze by name");
    let mut pids: Vec<u32> = f.processes.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    let mut want = vec![busy.pid(), child];
    want.sort_unstable();
    assert_eq!(pids, want, "the named process and its child");
    for pid in [busy.pid(), child] {
        assert_eq!(state(pid), 'T', "pid {pid} is stopped");
        assert!(no_progress(pid), "pid {pid} made progress while stopped");
    }
    // The agent dies without reverting; the journal still knows what it stopped.
    agent.sigkill();
    assert_eq!(state(busy.pid()), 'T', "nothing resumes the loop but the agent");
    agent.restart();
    for pid in [busy.pid(), child] {
        eventually("the restarted agent resumes it", || state(pid) != 'T' && progresses(pid));
    }
}

#[test]
fn recovery_resumes_only_the_process_with_the_recorded_start_time() {
    // A journal as a crashed agent would leave it: one entry names the process by
    // its real start time, one by a wrong one (as if its pid had been reused).
    let right = Busy::spin("fltpid1");
    let wrong = Busy::spin("fltpid2");
    for b in [&right, &wrong] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(b.pid() as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        eventually("stopped", || state(b.pid()) == 'T');
    }
    let start = |pid| procfs::stat(pid).unwrap().id.start_time;
    let state_dir =
        std::env::temp_dir().join(format!("faultline-proc-7103-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir).unwrap();
    let journal = serde_json::json!([
        {"fault": "f-1", "object": {"type": "stopped", "pid": right.pid(), "start_time": start(right.pid())}},
        {"fault": "f-1", "object": {"type": "stopped", "pid": wrong.pid(), "start_time": start(wrong.pid()) + 1}},
    ]);
    std::fs::write(state_dir.join("journal.json"), journal.to_string()).unwrap();
    let _agent = HostAgent { port: 7103, state: state_dir, child: None }.with_restart();
    eventually("the recorded process resumes", || state(right.pid()) != 'T');
    assert_eq!(
        state(wrong.pid()),
        'T',
        "a process whose start time differs from the journal's must not be touched"
    );
}

impl HostAgent {
    fn with_restart(mut self) -> Self {
        self.restart();
        self
    }
}

#[test]
fn kill_sends_the_chosen_signal_and_restart_starts_the_replacement() {
    let agent = HostAgent::start(7104);
    let mut victim = Busy::start("fltkill", "sleep 1000");
    let f = agent
        .apply(
            Kind::Kill(pb::Kill { signal: libc::SIGTERM }),
            target(Selector::NameRegex("^fltkill$".into())),
            0,
        )
        .expect("kill");
    assert_eq!(f.processes.len(), 1);
    let status = victim.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM),
        "{status:?}"
    );
    assert!(agent.describe().cgroup_v2_freeze);

    // Restart: the old process is killed, the configured command runs in its place.
    let old = Busy::start("fltrst", "sleep 1000");
    let link = old.link.to_string_lossy().into_owned();
    let f = agent
        .apply(
            Kind::Restart(pb::Restart {
                command: vec![link, "-c".into(), "sleep 1000".into()],
                signal: 0,
                grace_ms: 2000,
            }),
            target(Selector::Pid(old.pid())),
            0,
        )
        .expect("restart");
    assert!(matches!(state(old.pid()), 'Z' | '?'), "the old process is gone");
    // A replacement that cannot start: refused before anything is killed.
    let keep = Busy::start("fltkeep", "sleep 1000");
    let keep_id = procfs::stat(keep.pid()).unwrap().id;
    let e = agent
        .apply(
            Kind::Restart(pb::Restart {
                command: vec!["/no/such/program".into()],
                ..Default::default()
            }),
            target(Selector::Pid(keep.pid())),
            0,
        )
        .unwrap_err();
    assert!(
        e.message().starts_with("restart.command[0]") && e.message().contains("nothing was killed"),
        "{}",
        e.message()
    );
    // Alive as the same process (its state may be S, R or briefly D while it execs).
    assert!(procfs::is_alive(keep_id), "the process still runs");
    let started: u32 = f
        .kernel_objects
        .iter()
        .find_map(|n| n.strip_prefix("started pid ")?.split(':').next()?.parse().ok())
        .expect("a started pid in the status");
    assert_ne!(started, old.pid());
    assert_eq!(
        procfs::stat(started).map(|s| s.comm),
        Some("fltrst".into()),
        "the replacement runs"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(started as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn the_agent_refuses_init_itself_and_unknown_names_and_says_why() {
    let agent = HostAgent::start(7105);
    let e = agent.apply(freeze(), target(Selector::Pid(1)), 60_000).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("PID 1") && e.message().contains("cannot be forced"),
        "{}",
        e.message()
    );
    let e = agent
        .apply(Kind::Kill(pb::Kill::default()), target(Selector::Pid(agent.pid())), 0)
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("this agent"), "{}", e.message());
    assert!(procfs::stat(agent.pid()).is_some(), "the agent is alive");
    let e = agent
        .apply(freeze(), target(Selector::NameRegex("^no-such-process-here$".into())), 60_000)
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("no process name matches"), "{}", e.message());
    let e = agent.apply(freeze(), target(Selector::Cgroup("/".into())), 60_000).unwrap_err();
    assert!(e.message().contains("root cgroup"), "{}", e.message());
    let e = agent.apply(freeze(), target(Selector::Cgroup("/../etc".into())), 60_000).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().starts_with("target.cgroup"), "{}", e.message());
    let e = agent.apply(freeze(), target(Selector::Pid(4_000_000)), 60_000).unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e =
        agent.apply(Kind::Kill(pb::Kill { signal: 99 }), target(Selector::Pid(5)), 0).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("kill.signal"), "{}", e.message());

    // A cgroup someone else froze is not ours: refused, and left frozen.
    let cg = TestCgroup::new("faultline-test-foreign");
    std::fs::write(cg.dir.join("cgroup.freeze"), "1").unwrap();
    let e = agent.apply(freeze(), cg.target(), 60_000).unwrap_err();
    assert!(e.message().contains("not by faultline"), "{}", e.message());
    assert_eq!(std::fs::read_to_string(cg.dir.join("cgroup.freeze")).unwrap().trim(), "1");
}

#[test]
fn stress_workers_burn_cpu_and_hold_memory_inside_the_target_cgroup_until_reverted() {
    let agent = HostAgent::start(7106);
    let cg = TestCgroup::new("faultline-test-stress");
    let f = agent
        .apply(Kind::CpuStress(pb::CpuStress { threads: 1 }), cg.target(), 60_000)
        .expect("cpu stress");
    let worker = f.processes[0].pid;
    assert!(
        std::fs::read_to_string(cg.dir.join("cgroup.procs"))
            .unwrap()
            .lines()
            .any(|l| l == worker.to_string()),
        "the worker runs in the target cgroup"
    );
    eventually("the worker burns CPU", || progresses(worker));
    agent.revert(&f.id);
    eventually("the worker is gone", || procfs::stat(worker).is_none());

    let bytes = 64 << 20;
    let f = agent
        .apply(Kind::MemoryPressure(pb::MemoryPressure { bytes }), None, 60_000)
        .expect("memory pressure");
    let worker = f.processes[0].pid;
    let rss = || {
        std::fs::read_to_string(format!("/proc/{worker}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024
    };
    eventually("the worker holds the memory resident", || rss() >= bytes);
    agent.revert(&f.id);
    eventually("the worker is gone", || procfs::stat(worker).is_none());
}

#[test]
fn cpu_throttle_needs_the_cpu_controller_and_says_so() {
    let agent = HostAgent::start(7107);
    let cg = TestCgroup::new("faultline-test-throttle");
    let r = agent.apply(
        Kind::CpuThrottle(pb::CpuThrottle { cpus: 0.2, period_us: 0 }),
        cg.target(),
        60_000,
    );
    if agent.describe().cgroup_v2_cpu {
        // Its effect is measured in the VM tests, where cgroup v2 owns the cpu controller.
        let f = r.expect("throttle");
        assert_eq!(std::fs::read_to_string(cg.dir.join("cpu.max")).unwrap().trim(), "20000 100000");
        agent.revert(&f.id);
        assert_eq!(std::fs::read_to_string(cg.dir.join("cpu.max")).unwrap().trim(), "max 100000");
    } else {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("cpu controller"), "{}", e.message());
    }
}
