//! Process faults in the engine: freeze, kill, restart, stress, cpu.max. Same ids,
//! leases, journal and revert path as network faults.

use std::time::{Duration, Instant, SystemTime};

use faultline_proto::agent::v1 as pb;
use tracing::{info, warn};

use super::{Active, Applied, Engine, EngineError, State, status::status};
use crate::{
    containers::{Container, Selector},
    fault::InvalidField,
    journal::KernelObject,
    kernel::{
        cgroup::{self, Cgroup},
        procfs::{self, SignalError, Stat},
    },
    process::{
        self, FreezeMethod, Guard, ProcessFault, ProcessKind, Resolved, Target, TargetError,
    },
};

impl From<TargetError> for EngineError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::NotFound(m) => Self::NotFound(m),
            TargetError::Refused(m) => Self::Precondition(m),
            TargetError::Cgroup(cgroup::CgroupError::Missing(..)) => Self::NotFound(e.to_string()),
            TargetError::Cgroup(io @ cgroup::CgroupError::Io { .. }) => {
                Self::Kernel(super::KernelError::Cgroup(io))
            }
            TargetError::Cgroup(other) => Self::Precondition(other.to_string()),
        }
    }
}

impl From<cgroup::CgroupError> for EngineError {
    fn from(e: cgroup::CgroupError) -> Self {
        TargetError::from(e).into()
    }
}

/// A container's own cgroup v2 directory where it has one, else its init process (with
/// every descendant, set by the caller).
fn own_cgroup(c: &Container) -> pb::process_target::Selector {
    match procfs::cgroup(c.process.pid)
        .filter(|g| g != "/" && g.contains(&c.id) && cgroup::resolve(g).is_ok())
    {
        Some(g) => pb::process_target::Selector::Cgroup(g),
        None => pb::process_target::Selector::Pid(c.process.pid),
    }
}

/// A whole pod: the cgroup v2 directory holding its sandbox's and its containers'
/// (kubelet's `.../pod<uid>`, `..._pod<uid_with_underscores>.slice` with systemd). Without
/// one (a cgroup v1 node) no single target holds every container: name one.
fn pod_cgroup(p: &crate::pods::Pod) -> Result<pb::process_target::Selector, EngineError> {
    let uid_underscored = p.uid.replace('-', "_");
    let parent = procfs::cgroup(p.process.pid)
        .and_then(|g| g.rsplit_once('/').map(|(parent, _)| parent.to_owned()))
        .filter(|g| !p.uid.is_empty() && (g.contains(&p.uid) || g.contains(&uid_underscored)))
        .filter(|g| cgroup::resolve(g).is_ok());
    parent.map(pb::process_target::Selector::Cgroup).ok_or_else(|| {
        EngineError::Precondition(format!(
            "pod {}: no cgroup v2 directory holds all its containers on this node; name one with pod.container",
            p.full_name()
        ))
    })
}

/// How long a freeze may take to complete before the fault reports it pending:
/// a task in uninterruptible sleep is frozen only when it wakes.
const FREEZE_WAIT: Duration = Duration::from_secs(1);

impl Engine {
    /// A container named as a process fault's target becomes a concrete one: its own
    /// cgroup v2 directory where it has one (freeze by `cgroup.freeze` as `docker pause`
    /// does, cpu.max and stress charged to it), else its init process with every
    /// descendant (cgroup v1 hosts; a `docker exec` process is no descendant of init).
    /// The request is rewritten to that target, so status shows what was acted on.
    async fn container_target(
        &self,
        request: &mut pb::FaultSpec,
    ) -> Result<Option<Container>, EngineError> {
        if request.target.is_some() && (request.container.is_some() || request.pod.is_some()) {
            return Err(InvalidField {
                field: "target".into(),
                reason: "give a target, a container or a pod, not several".into(),
            }
            .into());
        }
        let (c, selector) = match (&request.container, &request.pod) {
            (None, None) => {
                // A host process (or cgroup): not for an agent scoped to containers.
                self.runtimes.check_scope(None)?;
                return Ok(None);
            }
            (Some(_), Some(_)) => {
                return Err(InvalidField {
                    field: "pod".into(),
                    reason: "give a container or a pod, not both".into(),
                }
                .into());
            }
            (Some(t), None) => {
                let c = self.runtimes.resolve(&Selector::try_from(t)?).await?;
                self.runtimes.check_scope(Some(&c))?;
                let selector = own_cgroup(&c);
                (c, selector)
            }
            (None, Some(p)) => {
                let pod = self.runtimes.resolve_pod(p).await?;
                if p.container.is_empty() {
                    let selector = pod_cgroup(&pod)?;
                    (pod.sandbox(), selector)
                } else {
                    let c = pod.container(&p.container)?;
                    let selector = own_cgroup(&c);
                    (c, selector)
                }
            }
        };
        let include_children = matches!(selector, pb::process_target::Selector::Pid(_));
        request.target = Some(pb::ProcessTarget {
            selector: Some(selector),
            include_children,
            full_command_line: false,
        });
        Ok(Some(c))
    }

    /// Restart of a container: through its runtime, which starts it again as it was
    /// created (`docker restart`); a caller's command has no meaning there.
    async fn restart_container(
        &self,
        request: pb::FaultSpec,
        spec: ProcessFault,
        c: Container,
    ) -> Result<pb::FaultStatus, EngineError> {
        let grace = container_restart(&spec)?;
        let old: Vec<Stat> = procfs::stat(c.process.pid).into_iter().collect();
        self.runtimes.restart(&c, grace).await?;
        let f = Active {
            id: self.next_id().await,
            request,
            applied_at: SystemTime::now(),
            expires: Instant::now(),
            lease: spec.lease,
            objects: Vec::new(),
            applied: Applied::Process {
                spec,
                processes: old,
                cgroup: None,
                notes: vec![format!(
                    "{} restart {} (grace {} s)",
                    c.runtime,
                    c.name,
                    grace.as_secs()
                )],
            },
            revert_failed: None,
            container: Some(c),
        };
        info!(id = f.id, "container restarted");
        let st = self.state.lock().await;
        Ok(status(&st, &f))
    }

    pub(super) async fn apply_process(
        &self,
        mut request: pb::FaultSpec,
    ) -> Result<pb::FaultStatus, EngineError> {
        let container = self.container_target(&mut request).await?;
        let spec = ProcessFault::try_from(&request)?;
        if let (Some(c), ProcessKind::Restart { .. }) = (&container, &spec.kind) {
            return self.restart_container(request, spec, c.clone()).await;
        }
        let guard = Guard::new();
        let resolved = spec.target.as_ref().map(|t| process::resolve(t, &guard)).transpose()?;
        let mut f = Active {
            id: String::new(),
            request,
            applied_at: SystemTime::now(),
            expires: Instant::now() + spec.lease,
            lease: spec.lease,
            objects: Vec::new(),
            applied: Applied::Process {
                spec: spec.clone(),
                processes: Vec::new(),
                cgroup: None,
                notes: Vec::new(),
            },
            revert_failed: None,
            container,
        };
        // Kill and restart change nothing that could be reverted, so they hold no
        // lock while they wait for processes to exit.
        if spec.kind.one_shot() {
            f.id = self.next_id().await;
            let target = spec.target.as_ref().expect("validated: needs a target");
            let (processes, cgroup, notes) =
                one_shot(&spec.kind, target, resolved.expect("resolved with the target")).await?;
            info!(id = f.id, kind = spec.kind.name(), pids = ?processes.iter().map(|p| p.id.pid).collect::<Vec<_>>(), "done");
            f.applied = Applied::Process { spec, processes, cgroup, notes };
            f.applied_at = SystemTime::now();
            let st = self.state.lock().await;
            return Ok(status(&st, &f));
        }
        let mut st = self.state.lock().await;
        st.next_id += 1;
        f.id = format!("f-{}", st.next_id);
        match act(&mut st, &mut f, &spec.kind, resolved) {
            Ok(()) => {
                f.applied_at = SystemTime::now();
                info!(id = f.id, kind = spec.kind.name(), "applied");
                let s = status(&st, &f);
                st.faults.insert(f.id.clone(), f);
                self.wake.notify_one();
                Ok(s)
            }
            Err(e) => {
                warn!(id = f.id, "apply failed, rolling back: {e}");
                self.roll_back(&mut st, f).await;
                Err(e)
            }
        }
    }

    /// What `apply_process` checks before acting: the request, the target resolved and
    /// guarded, for restart the replacement's launch readable and allowed, for a SIGSTOP
    /// freeze no target already stopped. The answer lists the processes it would act on.
    pub(super) async fn check_process(
        &self,
        mut request: pb::FaultSpec,
    ) -> Result<pb::FaultStatus, EngineError> {
        let container = self.container_target(&mut request).await?;
        let spec = ProcessFault::try_from(&request)?;
        if let (Some(c), ProcessKind::Restart { .. }) = (&container, &spec.kind) {
            container_restart(&spec)?;
            let pid = c.process.pid;
            return Ok(pb::FaultStatus {
                id: "check".into(),
                spec: Some(request),
                engine: "process".into(),
                container: Some(c.to_wire(0)),
                processes: vec![pb::Process { pid, ..Default::default() }],
                ..Default::default()
            });
        }
        let resolved =
            spec.target.as_ref().map(|t| process::resolve(t, &Guard::new())).transpose()?;
        let (targets, cgroup) = match resolved {
            Some(Resolved::Processes(p)) => (p, None),
            Some(Resolved::Cgroup(c)) => (process::members(&c), Some(c)),
            None => (Vec::new(), None),
        };
        match &spec.kind {
            ProcessKind::Restart { command, .. } if !matches!(spec.target, Some(Target::Unit(_)) if command.is_empty()) =>
            {
                restart_allowed(command)?;
                let pids: Vec<u32> = targets.iter().map(|p| p.id.pid).collect();
                for p in targets.iter().filter(|p| !pids.contains(&p.ppid)) {
                    process::capture(p.id.pid).map_err(|e| {
                        EngineError::Precondition(format!("{e}; nothing was killed"))
                    })?;
                }
            }
            ProcessKind::Freeze(FreezeMethod::Sigstop) => {
                if let Some(p) = targets.iter().find(|p| matches!(p.state, 'T' | 't')) {
                    return Err(EngineError::Precondition(format!(
                        "process {} ({}) is already stopped, not by this fault; it is left as it is",
                        p.id.pid, p.comm
                    )));
                }
            }
            _ => {}
        }
        Ok(pb::FaultStatus {
            id: "check".into(),
            spec: Some(request),
            engine: "process".into(),
            processes: targets
                .iter()
                .map(|p| pb::Process {
                    pid: p.id.pid,
                    start_time: p.id.start_time,
                    name: p.comm.clone(),
                })
                .collect(),
            cgroup: cgroup.map(|c| c.rel).unwrap_or_default(),
            ..Default::default()
        })
    }

    async fn next_id(&self) -> String {
        let mut st = self.state.lock().await;
        st.next_id += 1;
        format!("f-{}", st.next_id)
    }
}

fn set(f: &mut Active, processes: Vec<Stat>, cgroup: Option<Cgroup>, note: Option<String>) {
    if let Applied::Process { processes: p, cgroup: c, notes, .. } = &mut f.applied {
        *p = processes;
        *c = cgroup;
        notes.extend(note);
    }
}

fn record(st: &mut State, f: &mut Active, obj: KernelObject) -> Result<(), EngineError> {
    st.journal.record(&f.id, obj.clone())?;
    f.objects.push(obj);
    Ok(())
}

/// Applies a fault that lasts until reverted; every change journaled first.
fn act(
    st: &mut State,
    f: &mut Active,
    kind: &ProcessKind,
    resolved: Option<Resolved>,
) -> Result<(), EngineError> {
    match (kind, resolved) {
        (ProcessKind::Freeze(FreezeMethod::Cgroup), Some(Resolved::Cgroup(c))) => {
            // Journaled relative to the cgroup2 root: found again wherever it is mounted.
            let obj = KernelObject::CgroupFreeze { dir: c.rel.clone().into() };
            if let Some(other) = st.faults.values().find(|o| o.objects.contains(&obj)) {
                return Err(EngineError::Conflict(format!(
                    "cgroup {} is already frozen by fault {}",
                    c.rel, other.id
                )));
            }
            if c.freeze_requested()? {
                return Err(EngineError::Precondition(format!(
                    "cgroup {} is already frozen, not by faultline; it is left as it is",
                    c.rel
                )));
            }
            record(st, f, obj)?;
            let done = c.set_frozen(true, FREEZE_WAIT)?;
            let note = (!done).then(|| format!("freeze of {} still completing after {} ms (a task is in uninterruptible sleep)", c.rel, FREEZE_WAIT.as_millis()));
            set(f, process::members(&c), Some(c), note);
        }
        (ProcessKind::Freeze(FreezeMethod::Sigstop), Some(resolved)) => {
            let (targets, cgroup) = match resolved {
                Resolved::Processes(p) => (p, None),
                Resolved::Cgroup(c) => (process::members(&c), Some(c)),
            };
            if let Some(p) = targets.iter().find(|p| matches!(p.state, 'T' | 't')) {
                return Err(EngineError::Precondition(format!(
                    "process {} ({}) is already stopped, not by this fault; it is left as it is",
                    p.id.pid, p.comm
                )));
            }
            let mut stopped = Vec::new();
            for p in targets {
                let obj = KernelObject::Stopped { pid: p.id.pid, start_time: p.id.start_time };
                record(st, f, obj.clone())?;
                match procfs::signal(p.id, libc::SIGSTOP) {
                    Ok(()) => stopped.push(p),
                    Err(SignalError::Gone(_)) => {
                        f.objects.pop();
                        st.journal.forget(&obj)?;
                    }
                    Err(e) => return Err(super::KernelError::from(e).into()),
                }
            }
            if stopped.is_empty() {
                return Err(EngineError::NotFound(
                    "every selected process exited before it could be stopped".into(),
                ));
            }
            // A signal is delivered when the task next runs: report the fault applied
            // once the kernel shows every process stopped.
            let deadline = Instant::now() + FREEZE_WAIT;
            let pending = loop {
                let pending: Vec<u32> = stopped
                    .iter()
                    .filter(|p| {
                        procfs::stat(p.id.pid)
                            .is_some_and(|s| s.id == p.id && !matches!(s.state, 'T' | 't'))
                    })
                    .map(|p| p.id.pid)
                    .collect();
                if pending.is_empty() || Instant::now() >= deadline {
                    break pending;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            let note = (!pending.is_empty()).then(|| {
                format!(
                    "SIGSTOP sent but not yet in effect after {} ms for pids {pending:?}",
                    FREEZE_WAIT.as_millis()
                )
            });
            set(f, stopped, cgroup, note);
        }
        (ProcessKind::CpuStress { threads }, resolved) => {
            stress(st, f, &["cpu".into(), threads.to_string()], resolved)?;
        }
        (ProcessKind::MemoryPressure { bytes }, resolved) => {
            stress(st, f, &["memory".into(), bytes.to_string()], resolved)?;
        }
        (ProcessKind::CpuThrottle { cpus, period_us }, Some(Resolved::Cgroup(c))) => {
            if !c.has_controller("cpu") {
                return Err(EngineError::Precondition(format!(
                    "cgroup {}: the cgroup v2 cpu controller is not enabled for it (its parent's cgroup.subtree_control lacks \"cpu\"; on a hybrid host cpu may be bound to cgroup v1)",
                    c.rel
                )));
            }
            if let Some(other) = st.faults.values().find(|o| o.objects.iter().any(|x| matches!(x, KernelObject::CpuMax { dir, .. } if dir.as_path() == std::path::Path::new(&c.rel)))) {
                return Err(EngineError::Conflict(format!("cgroup {} is already throttled by fault {}", c.rel, other.id)));
            }
            let previous = c.cpu_max()?;
            let ours = cgroup::cpu_max_value(*cpus, *period_us);
            record(
                st,
                f,
                KernelObject::CpuMax { dir: c.rel.clone().into(), previous, ours: ours.clone() },
            )?;
            c.set_cpu_max(&ours)?;
            set(f, process::members(&c), Some(c), None);
        }
        (k, _) => {
            return Err(EngineError::Invalid(crate::fault::InvalidField {
                field: "target".into(),
                reason: format!("{} cannot act on this target", k.name()),
            }));
        }
    }
    Ok(())
}

fn stress(
    st: &mut State,
    f: &mut Active,
    args: &[String],
    resolved: Option<Resolved>,
) -> Result<(), EngineError> {
    let cgroup = match resolved {
        None => None,
        Some(Resolved::Cgroup(c)) => Some(c),
        Some(Resolved::Processes(_)) => unreachable!("validated: stress targets are cgroups"),
    };
    let mut child = process::spawn_stress(args)
        .map_err(|e| EngineError::io("starting the stress worker", e))?;
    let pid = child.id();
    // Reaped when it is killed at revert.
    std::thread::spawn(move || child.wait());
    // The worker dies with the agent (PDEATHSIG), so it is journaled right after
    // it exists: there is no pid to record before.
    let Some(stat) = procfs::stat(pid) else {
        return Err(EngineError::refused(format!("stress worker {pid} exited at once")));
    };
    record(st, f, KernelObject::Child { pid, start_time: stat.id.start_time })?;
    if let Some(c) = &cgroup {
        c.add_process(pid)?;
    }
    set(f, vec![stat], cgroup, None);
    Ok(())
}

/// Kill or restart: signal, wait, and (restart) start the replacement.
async fn one_shot(
    kind: &ProcessKind,
    target: &Target,
    resolved: Resolved,
) -> Result<(Vec<Stat>, Option<Cgroup>, Vec<String>), EngineError> {
    let (targets, cgroup) = match resolved {
        Resolved::Processes(p) => (p, None),
        Resolved::Cgroup(c) => (process::members(&c), Some(c)),
    };
    match kind {
        ProcessKind::Kill { signal } => {
            let hit = send(&targets, *signal)?;
            Ok((hit, cgroup, Vec::new()))
        }
        ProcessKind::Restart { command, signal, grace } => {
            if let (true, Target::Unit(unit)) = (command.is_empty(), target) {
                let out = tokio::process::Command::new("systemctl")
                    .args(["restart", "--", unit])
                    .output()
                    .await
                    .map_err(|e| EngineError::io("running systemctl", e))?;
                if !out.status.success() {
                    return Err(EngineError::refused(format!(
                        "systemctl restart {unit}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                return Ok((targets, cgroup, vec![format!("systemctl restart {unit}")]));
            }
            restart_allowed(command)?;
            // Kill nothing unless every replacement can be started: read how each one
            // was launched first. Only the roots of the selected set are started again
            // (killing an nginx master and its workers restarts the master).
            let pids: Vec<u32> = targets.iter().map(|p| p.id.pid).collect();
            let roots: Vec<&Stat> = targets.iter().filter(|p| !pids.contains(&p.ppid)).collect();
            let launches = roots
                .iter()
                .map(|p| {
                    process::capture(p.id.pid).and_then(|l| {
                        if command.is_empty() && l.argv.is_empty() {
                            Err(format!(
                                "process {} has no command line to start again (exiting?)",
                                l.pid
                            ))
                        } else {
                            Ok(l)
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::Precondition(format!("{e}; nothing was killed")))?;
            let hit = send(&targets, *signal)?;
            let mut notes = Vec::new();
            if !wait_gone(&hit, *grace).await {
                notes.push(format!("still running after {} ms: SIGKILL", grace.as_millis()));
                send_quiet(&hit, libc::SIGKILL);
                if !wait_gone(&hit, Duration::from_secs(5)).await {
                    return Err(EngineError::refused(
                        "the old processes survived SIGKILL (uninterruptible sleep?); nothing was started",
                    ));
                }
            }
            let given = (!command.is_empty()).then_some(command.as_slice());
            for l in &launches {
                let pid = process::relaunch(l, given).map_err(|e| {
                    EngineError::io(format!("starting pid {}'s replacement", l.pid), e)
                })?;
                let what = given.map_or_else(
                    || l.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
                    |c| c.join(" "),
                );
                notes.push(format!(
                    "started pid {pid}: {what} (uid {}, in {})",
                    l.uid,
                    l.cwd.display()
                ));
            }
            Ok((hit, cgroup, notes))
        }
        _ => unreachable!("only kill and restart are one-shot"),
    }
}

/// A container's restart: its grace, or why it cannot be (a runtime starts the container
/// as it was created; a caller's command has no place there).
fn container_restart(spec: &ProcessFault) -> Result<Duration, EngineError> {
    match &spec.kind {
        ProcessKind::Restart { command, .. } if !command.is_empty() => Err(InvalidField {
            field: "restart.command".into(),
            reason: "a container is restarted by its runtime, as it was created; no command".into(),
        }
        .into()),
        ProcessKind::Restart { grace, .. } => Ok(*grace),
        _ => unreachable!("called for restart"),
    }
}

/// A caller's command run by a root agent would be a root shell: only an agent started
/// with --allow-restart-command runs one (as the target's user), and only if it exists.
fn restart_allowed(command: &[String]) -> Result<(), EngineError> {
    if !command.is_empty() && !process::restart_command_allowed() {
        return Err(EngineError::Precondition(
            "restart.command: this agent runs no caller-given command (start it with --allow-restart-command to allow that); leave the command out to start the process again exactly as it ran".into(),
        ));
    }
    if let Some(program) = command.first().filter(|p| !process::executable(p)) {
        return Err(EngineError::Invalid(crate::fault::InvalidField {
            field: "restart.command[0]".into(),
            reason: format!(
                "{} is not an executable file here (nor in PATH); nothing was killed",
                faultline_proto::quote(program)
            ),
        }));
    }
    Ok(())
}

fn send(targets: &[Stat], signal: i32) -> Result<Vec<Stat>, EngineError> {
    let mut hit = Vec::new();
    for p in targets {
        match procfs::signal(p.id, signal) {
            Ok(()) => hit.push(p.clone()),
            Err(SignalError::Gone(_)) => {}
            Err(e) => return Err(super::KernelError::from(e).into()),
        }
    }
    if hit.is_empty() {
        return Err(EngineError::NotFound("every selected process had already exited".into()));
    }
    Ok(hit)
}

fn send_quiet(targets: &[Stat], signal: i32) {
    for p in targets {
        let _ = procfs::signal(p.id, signal);
    }
}

async fn wait_gone(targets: &[Stat], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if targets.iter().all(|p| !procfs::is_alive(p.id)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
