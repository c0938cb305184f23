//! Process faults: domain types validated from the wire, target resolution and the
//! guards that keep the agent from freezing or killing what keeps the host alive.

use std::time::Duration;

use faultline_proto::agent::v1::{self as pb, fault_spec::Kind};

use crate::{
    fault::{InvalidField, MAX_LEASE},
    kernel::{
        cgroup::{self, Cgroup},
        procfs::{self, Stat},
    },
};

fn invalid(field: &str, reason: impl Into<String>) -> InvalidField {
    InvalidField { field: field.to_owned(), reason: reason.into() }
}

#[derive(Debug, Clone)]
pub enum Target {
    Cgroup(String),
    Unit(String),
    Pid { pid: u32, children: bool },
    Name { regex: regex_lite::Regex, full: bool, children: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeMethod {
    Cgroup,
    Sigstop,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProcessKind {
    Freeze(FreezeMethod),
    Kill { signal: i32 },
    Restart { command: Vec<String>, signal: i32, grace: Duration },
    CpuStress { threads: u32 },
    MemoryPressure { bytes: u64 },
    CpuThrottle { cpus: f64, period_us: u64 },
}

impl ProcessKind {
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Freeze(_) => "freeze",
            Self::Kill { .. } => "kill",
            Self::Restart { .. } => "restart",
            Self::CpuStress { .. } => "cpu-stress",
            Self::MemoryPressure { .. } => "memory-pressure",
            Self::CpuThrottle { .. } => "cpu-throttle",
        }
    }
    /// Kill and restart act once and leave nothing to revert.
    #[must_use]
    pub fn one_shot(&self) -> bool {
        matches!(self, Self::Kill { .. } | Self::Restart { .. })
    }
}

#[derive(Debug, Clone)]
pub struct ProcessFault {
    pub target: Option<Target>,
    pub kind: ProcessKind,
    pub lease: Duration,
}

#[must_use]
pub fn is_process_kind(kind: Option<&Kind>) -> bool {
    matches!(
        kind,
        Some(
            Kind::Freeze(_)
                | Kind::Kill(_)
                | Kind::Restart(_)
                | Kind::CpuStress(_)
                | Kind::MemoryPressure(_)
                | Kind::CpuThrottle(_)
        )
    )
}

fn signal(field: &str, v: i32, default: i32) -> Result<i32, InvalidField> {
    match v {
        0 => Ok(default),
        1..=64 => Ok(v),
        _ => Err(invalid(field, format!("{v} is not a signal number (1..=64)"))),
    }
}

fn target(t: &pb::ProcessTarget) -> Result<Target, InvalidField> {
    use pb::process_target::Selector;
    let children = t.include_children;
    let cgroupish = |what| {
        if children {
            Err(invalid(
                "target.include_children",
                format!("applies to pid and name targets; a {what} already holds every descendant"),
            ))
        } else {
            Ok(())
        }
    };
    Ok(match &t.selector {
        None => return Err(invalid("target", "set one of cgroup, systemd_unit, pid, name_regex")),
        Some(Selector::Cgroup(c)) if c.is_empty() => return Err(invalid("target.cgroup", "empty")),
        Some(Selector::Cgroup(c)) if c.split('/').any(|x| x == "..") => {
            return Err(invalid(
                "target.cgroup",
                format!("{}: '..' is not allowed", faultline_proto::quote(c)),
            ));
        }
        Some(Selector::Cgroup(c)) => {
            cgroupish("cgroup")?;
            Target::Cgroup(c.clone())
        }
        Some(Selector::SystemdUnit(u)) if u.is_empty() => {
            return Err(invalid("target.systemd_unit", "empty"));
        }
        Some(Selector::SystemdUnit(u)) => {
            cgroupish("unit")?;
            Target::Unit(u.clone())
        }
        Some(Selector::Pid(0)) => return Err(invalid("target.pid", "0 is not a process")),
        Some(Selector::Pid(p)) => Target::Pid { pid: *p, children },
        Some(Selector::NameRegex(r)) => {
            if r.is_empty() {
                return Err(invalid("target.name_regex", "empty: it would match every process"));
            }
            if r.len() > 4096 {
                return Err(invalid(
                    "target.name_regex",
                    format!("{} bytes; at most 4096", r.len()),
                ));
            }
            let regex = regex_lite::Regex::new(r).map_err(|e| {
                invalid("target.name_regex", faultline_proto::quote(&e.to_string()))
            })?;
            Target::Name { regex, full: t.full_command_line, children }
        }
    })
}

impl TryFrom<&pb::FaultSpec> for ProcessFault {
    type Error = InvalidField;

    fn try_from(s: &pb::FaultSpec) -> Result<Self, InvalidField> {
        if !s.interface.is_empty() || s.r#match.is_some() {
            return Err(invalid(
                "interface",
                "process faults act on a target, not on an interface or traffic match",
            ));
        }
        let target = s.target.as_ref().map(target).transpose()?;
        let kind = match s.kind.as_ref() {
            Some(Kind::Freeze(f)) => {
                ProcessKind::Freeze(match pb::FreezeMethod::try_from(f.method) {
                    Ok(pb::FreezeMethod::Auto) => match target {
                        Some(Target::Cgroup(_) | Target::Unit(_)) => FreezeMethod::Cgroup,
                        _ => FreezeMethod::Sigstop,
                    },
                    Ok(pb::FreezeMethod::Cgroup) => {
                        if !matches!(target, Some(Target::Cgroup(_) | Target::Unit(_)) | None) {
                            return Err(invalid(
                                "freeze.method",
                                "cgroup freezing needs a cgroup or systemd_unit target",
                            ));
                        }
                        FreezeMethod::Cgroup
                    }
                    Ok(pb::FreezeMethod::Sigstop) => FreezeMethod::Sigstop,
                    Err(_) => {
                        return Err(invalid(
                            "freeze.method",
                            format!("unknown value {}", f.method),
                        ));
                    }
                })
            }
            Some(Kind::Kill(k)) => {
                ProcessKind::Kill { signal: signal("kill.signal", k.signal, libc::SIGKILL)? }
            }
            Some(Kind::Restart(r)) => {
                if r.command.first().is_some_and(String::is_empty) {
                    return Err(invalid("restart.command[0]", "empty program name"));
                }
                if r.command.len() > 256
                    || r.command.iter().any(|a| a.len() > 4096 || a.contains('\0'))
                {
                    return Err(invalid(
                        "restart.command",
                        "at most 256 arguments of at most 4096 bytes, without NUL",
                    ));
                }
                let grace = Duration::from_millis(if r.grace_ms == 0 { 5000 } else { r.grace_ms });
                if grace > Duration::from_mins(10) {
                    return Err(invalid("restart.grace_ms", "at most 600000"));
                }
                ProcessKind::Restart {
                    command: r.command.clone(),
                    signal: signal("restart.signal", r.signal, libc::SIGTERM)?,
                    grace,
                }
            }
            Some(Kind::CpuStress(c)) => {
                let max = 4
                    * std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u32;
                if c.threads == 0 || c.threads > max {
                    return Err(invalid(
                        "cpu_stress.threads",
                        format!("{} is not in 1..={max} (4 per CPU)", c.threads),
                    ));
                }
                ProcessKind::CpuStress { threads: c.threads }
            }
            Some(Kind::MemoryPressure(m)) => {
                let total = std::fs::read_to_string("/proc/meminfo")
                    .ok()
                    .and_then(|t| {
                        t.lines().find_map(|l| {
                            l.strip_prefix("MemTotal:").and_then(|v| {
                                v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
                            })
                        })
                    })
                    .map_or(u64::MAX, |kb| kb * 1024);
                if m.bytes == 0 || m.bytes > total {
                    return Err(invalid(
                        "memory_pressure.bytes",
                        format!("{} is not in 1..={total} (this host's memory)", m.bytes),
                    ));
                }
                ProcessKind::MemoryPressure { bytes: m.bytes }
            }
            Some(Kind::CpuThrottle(c)) => {
                let period_us = if c.period_us == 0 { 100_000 } else { c.period_us };
                if !(1000..=1_000_000).contains(&period_us) {
                    return Err(invalid(
                        "cpu_throttle.period_us",
                        "must be 1000..=1000000 (the kernel's limits)",
                    ));
                }
                if !c.cpus.is_finite() || c.cpus <= 0.0 || c.cpus > 4096.0 {
                    return Err(invalid(
                        "cpu_throttle.cpus",
                        format!("{} is not a CPU count > 0", c.cpus),
                    ));
                }
                ProcessKind::CpuThrottle { cpus: c.cpus, period_us }
            }
            _ => return Err(invalid("kind", "not a process fault")),
        };
        match (&kind, &target) {
            (
                ProcessKind::Freeze(_) | ProcessKind::Kill { .. } | ProcessKind::Restart { .. },
                None,
            ) => {
                return Err(invalid("target", format!("{} needs a target", kind.name())));
            }
            (ProcessKind::CpuThrottle { .. }, t)
                if !matches!(t, Some(Target::Cgroup(_) | Target::Unit(_))) =>
            {
                return Err(invalid(
                    "target",
                    "cpu_throttle needs a cgroup or systemd_unit target (cpu.max is per cgroup)",
                ));
            }
            (
                ProcessKind::CpuStress { .. } | ProcessKind::MemoryPressure { .. },
                Some(Target::Pid { .. } | Target::Name { .. }),
            ) => {
                return Err(invalid(
                    "target",
                    "stress runs inside a cgroup or systemd_unit target, or on its own without one",
                ));
            }
            _ => {}
        }
        let lease = Duration::from_millis(s.lease_ms);
        if !kind.one_shot() {
            if s.lease_ms == 0 {
                return Err(invalid(
                    "lease_ms",
                    "required and > 0: every fault must end by itself",
                ));
            }
            if lease > MAX_LEASE {
                return Err(invalid("lease_ms", format!("at most {} s", MAX_LEASE.as_secs())));
            }
        }
        Ok(Self { target, kind, lease })
    }
}

/// Why a target was refused or could not be found.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}

/// What a target resolves to right now.
pub enum Resolved {
    Cgroup(Cgroup),
    Processes(Vec<Stat>),
}

/// Set once at start-up (`--allow-restart-command`): `restart` may run a command the
/// caller gives. Off by default: a caller's command run by a root agent is a root shell.
static RESTART_COMMAND: std::sync::OnceLock<()> = std::sync::OnceLock::new();

pub fn allow_restart_command() {
    let _ = RESTART_COMMAND.set(());
}

pub fn restart_command_allowed() -> bool {
    RESTART_COMMAND.get().is_some()
}

/// How a process was started, read from /proc before it is killed, so that `restart`
/// can start exactly it again: same executable, argv, directory, environment and user.
#[derive(Debug, Clone)]
pub struct Launch {
    pub pid: u32,
    pub exe: std::path::PathBuf,
    pub argv: Vec<std::ffi::OsString>,
    pub cwd: std::path::PathBuf,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

fn nul_split(raw: &[u8]) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| std::ffi::OsStr::from_bytes(a).to_owned())
        .collect()
}

/// Reads how `pid` was launched. Refused when its executable is gone or replaced on disk
/// (a restart would start something else).
pub fn capture(pid: u32) -> Result<Launch, String> {
    use std::os::unix::ffi::OsStrExt;
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let exe = std::fs::read_link(proc.join("exe"))
        .map_err(|e| format!("reading /proc/{pid}/exe: {e}"))?;
    if exe.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return Err(format!(
            "process {pid}'s executable {} was removed or replaced since it started; restarting it would start something else",
            exe.display()
        ));
    }
    // May be empty (a process between fork and exec); only a re-exec needs it.
    let argv = nul_split(
        &std::fs::read(proc.join("cmdline"))
            .map_err(|e| format!("reading /proc/{pid}/cmdline: {e}"))?,
    );
    let cwd = std::fs::read_link(proc.join("cwd"))
        .map_err(|e| format!("reading /proc/{pid}/cwd: {e}"))?;
    let env = nul_split(
        &std::fs::read(proc.join("environ"))
            .map_err(|e| format!("reading /proc/{pid}/environ: {e}"))?,
    )
    .into_iter()
    .filter_map(|kv| {
        let b = kv.as_bytes();
        let i = b.iter().position(|c| *c == b'=')?;
        Some((
            std::ffi::OsStr::from_bytes(&b[..i]).to_owned(),
            std::ffi::OsStr::from_bytes(&b[i + 1..]).to_owned(),
        ))
    })
    .collect();
    let status = std::fs::read_to_string(proc.join("status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default()
    };
    let (uid, gid) = (ids("Uid:").first().copied(), ids("Gid:").first().copied());
    let (Some(uid), Some(gid)) = (uid, gid) else {
        return Err(format!("/proc/{pid}/status has no Uid/Gid"));
    };
    Ok(Launch { pid, exe, argv, cwd, env, uid, gid, groups: ids("Groups:") })
}

/// Starts `launch` again (or, where allowed, `command` with its user, directory and
/// environment), detached from the agent: own session, no pipes, the user's ids dropped
/// to before exec. The restarted service must outlive the agent.
pub fn relaunch(launch: &Launch, command: Option<&[String]>) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let mut cmd = if let Some(c) = command {
        let mut cmd = std::process::Command::new(&c[0]);
        cmd.args(&c[1..]);
        cmd
    } else {
        let Some((arg0, rest)) = launch.argv.split_first() else {
            return Err(std::io::Error::other(format!(
                "process {} had no command line to start again",
                launch.pid
            )));
        };
        let mut cmd = std::process::Command::new(&launch.exe);
        cmd.arg0(arg0).args(rest);
        cmd
    };
    cmd.current_dir(&launch.cwd).env_clear().envs(launch.env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (uid, gid, groups) = (launch.uid, launch.gid, launch.groups.clone());
    // SAFETY: setsid, setgroups, setgid and setuid are async-signal-safe; the closure runs
    // between fork and exec and allocates nothing (groups was collected before the fork).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0
                || libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // Reap it whenever it ends, so it never lingers as a zombie of the agent.
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

/// Set once at start-up (`--same-netns-only`): the agent speaks for the processes of its
/// own network namespace only, as each host of a lab of namespaces on one kernel must.
static SCOPE_NETNS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Limits process targets to this agent's network namespace from now on.
pub fn scope_to_own_netns() -> std::io::Result<()> {
    let own = procfs::netns(std::process::id())
        .ok_or_else(|| std::io::Error::other("cannot read /proc/self/ns/net"))?;
    let _ = SCOPE_NETNS.set(own);
    Ok(())
}

/// Whether `scope_to_own_netns` was called: the agent speaks for its namespace only.
pub fn netns_scoped() -> bool {
    SCOPE_NETNS.get().is_some()
}

/// The processes the agent never touches, and why.
pub struct Guard {
    me: u32,
    parent: u32,
    /// The agent's own cgroup when it is a service of its own (not the root).
    own_cgroup: Option<String>,
    /// Only processes of this network namespace are the agent's (see `scope_to_own_netns`).
    netns: Option<String>,
}

impl Guard {
    pub fn new() -> Self {
        let me = std::process::id();
        let own_cgroup = procfs::cgroup(me).filter(|c| c != "/");
        Self {
            me,
            parent: std::os::unix::process::parent_id(),
            own_cgroup,
            netns: SCOPE_NETNS.get().cloned(),
        }
    }

    /// Whether a process belongs to the host this agent speaks for.
    fn in_scope(&self, pid: u32) -> bool {
        self.netns.as_ref().is_none_or(|own| procfs::netns(pid).as_ref() == Some(own))
    }

    fn why(&self, p: &Stat) -> Option<String> {
        let pid = p.id.pid;
        if pid == 1 {
            return Some("it is PID 1 (init); the host would stop".into());
        }
        if pid == self.me {
            return Some("it is this agent; nobody would be left to revert the fault".into());
        }
        if pid == 2 || procfs::is_kernel_thread(pid) {
            return Some("it is a kernel thread: signals and cgroup moves do nothing to it".into());
        }
        if pid == self.parent && self.parent != 1 {
            return Some("it is the agent's parent (its supervisor)".into());
        }
        if !self.in_scope(pid) {
            return Some("it is in another network namespace, another host of this lab (the agent runs with --same-netns-only)".into());
        }
        if let Some(own) = &self.own_cgroup
            && procfs::cgroup(pid).as_deref() == Some(own.as_str())
        {
            return Some(format!("it is in the agent's own service cgroup {own}"));
        }
        None
    }

    pub fn check_process(&self, p: &Stat) -> Result<(), TargetError> {
        match self.why(p) {
            Some(why) => Err(TargetError::Refused(format!(
                "refusing process {} ({}): {why}; this cannot be forced",
                p.id.pid, p.comm
            ))),
            None => Ok(()),
        }
    }

    pub fn check_cgroup(&self, c: &Cgroup) -> Result<(), TargetError> {
        let refuse = |why: String| {
            Err(TargetError::Refused(format!(
                "refusing cgroup {}: {why}; this cannot be forced",
                c.rel
            )))
        };
        if c.rel == "/" {
            return refuse("it is the root cgroup (every process on the host)".into());
        }
        let mut keep = vec![(1, "PID 1 (init)"), (self.me, "this agent")];
        if self.parent != 1 {
            keep.push((self.parent, "the agent's parent"));
        }
        for (pid, who) in keep {
            if procfs::cgroup(pid).is_some_and(|g| c.contains(&g)) {
                return refuse(format!("it holds {who} (pid {pid})"));
            }
        }
        Ok(())
    }
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

pub fn resolve(target: &Target, guard: &Guard) -> Result<Resolved, TargetError> {
    match target {
        Target::Cgroup(path) => {
            let c = cgroup::resolve(path)?;
            guard.check_cgroup(&c)?;
            Ok(Resolved::Cgroup(c))
        }
        Target::Unit(unit) => {
            let c = cgroup::unit_cgroup(unit)?;
            guard.check_cgroup(&c)?;
            Ok(Resolved::Cgroup(c))
        }
        Target::Pid { pid, children } => {
            let root = procfs::stat(*pid)
                .ok_or_else(|| TargetError::NotFound(format!("target.pid: no process {pid}")))?;
            let set = if *children {
                procfs::with_descendants(&[root], &procfs::all())
            } else {
                vec![root]
            };
            checked(set, guard)
        }
        Target::Name { regex, full, children } => {
            let everyone = procfs::all();
            let hits: Vec<Stat> = everyone
                .iter()
                .filter(|p| {
                    p.state != 'Z'
                        && guard.in_scope(p.id.pid)
                        && regex.is_match(&if *full {
                            procfs::cmdline(p.id.pid)
                        } else {
                            p.comm.clone()
                        })
                })
                .cloned()
                .collect();
            if hits.is_empty() {
                return Err(TargetError::NotFound(format!(
                    "target.name_regex: no process {} matches {}",
                    if *full { "command line" } else { "name" },
                    faultline_proto::quote(regex.as_str())
                )));
            }
            let set = if *children { procfs::with_descendants(&hits, &everyone) } else { hits };
            checked(set, guard)
        }
    }
}

fn checked(set: Vec<Stat>, guard: &Guard) -> Result<Resolved, TargetError> {
    for p in &set {
        guard.check_process(p)?;
    }
    Ok(Resolved::Processes(set))
}

/// The processes of a cgroup as stats (those that still exist).
pub fn members(c: &Cgroup) -> Vec<Stat> {
    c.pids().unwrap_or_default().into_iter().filter_map(procfs::stat).collect()
}

/// Starts the agent's own binary as a stress worker (`__stress cpu N` or
/// `__stress memory BYTES`). It dies with the agent (PDEATHSIG), so a crash
/// between spawning and journaling it cannot leave it running.
pub fn spawn_stress(args: &[String]) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg("__stress")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe; the closure runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Whether `program` names an executable file, directly or through PATH (as exec would).
#[must_use]
pub fn executable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return runnable(std::path::Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| runnable(&d.join(program))))
}

/// The stress worker's body: never returns.
pub fn run_stress(args: &[String]) -> ! {
    match (args.first().map(String::as_str), args.get(1).and_then(|v| v.parse::<u64>().ok())) {
        (Some("cpu"), Some(n)) => {
            for _ in 1..n {
                std::thread::spawn(spin);
            }
            spin()
        }
        (Some("memory"), Some(bytes)) => {
            let page = 4096;
            let mut block = vec![0u8; usize::try_from(bytes).unwrap_or(usize::MAX)];
            // Touch every page again each second: the memory stays resident and
            // keeps competing for the page cache.
            let mut round = 1u8;
            loop {
                for i in (0..block.len()).step_by(page) {
                    block[i] = round;
                }
                std::hint::black_box(&block);
                round = round.wrapping_add(1);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        _ => {
            eprintln!("usage: faultline-agent __stress cpu THREADS | memory BYTES");
            std::process::exit(2)
        }
    }
}

fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind, target: Option<pb::ProcessTarget>) -> pb::FaultSpec {
        pb::FaultSpec { lease_ms: 1000, kind: Some(kind), target, ..Default::default() }
    }
    fn by(sel: pb::process_target::Selector) -> Option<pb::ProcessTarget> {
        Some(pb::ProcessTarget { selector: Some(sel), ..Default::default() })
    }
    use pb::process_target::Selector;

    #[test]
    fn bad_input_names_the_field() {
        let err = |s: pb::FaultSpec| ProcessFault::try_from(&s).unwrap_err().field;
        assert_eq!(err(spec(Kind::Freeze(pb::Freeze::default()), None)), "target");
        assert_eq!(
            err(spec(Kind::Kill(pb::Kill { signal: 99 }), by(Selector::Pid(5)))),
            "kill.signal"
        );
        assert_eq!(
            err(spec(Kind::Kill(pb::Kill::default()), by(Selector::NameRegex("(".into())))),
            "target.name_regex"
        );
        // Without a command a restart starts the process again as it ran (no field to miss).
        assert!(
            ProcessFault::try_from(&spec(
                Kind::Restart(pb::Restart::default()),
                by(Selector::Pid(5))
            ))
            .is_ok()
        );
        assert_eq!(
            err(spec(
                Kind::Restart(pb::Restart { command: vec!["x\0y".into()], ..Default::default() }),
                by(Selector::Pid(5))
            )),
            "restart.command"
        );
        assert_eq!(
            err(spec(
                Kind::CpuThrottle(pb::CpuThrottle { cpus: 0.5, period_us: 0 }),
                by(Selector::Pid(5))
            )),
            "target"
        );
        assert_eq!(
            err(spec(
                Kind::CpuThrottle(pb::CpuThrottle { cpus: -1.0, period_us: 0 }),
                by(Selector::Cgroup("/x".into()))
            )),
            "cpu_throttle.cpus"
        );
        assert_eq!(
            err(spec(Kind::CpuStress(pb::CpuStress { threads: 0 }), None)),
            "cpu_stress.threads"
        );
        assert_eq!(
            err(pb::FaultSpec {
                lease_ms: 0,
                ..spec(Kind::CpuStress(pb::CpuStress { threads: 1 }), None)
            }),
            "lease_ms"
        );
        assert_eq!(
            err(pb::FaultSpec {
                interface: "eth0".into(),
                ..spec(Kind::CpuStress(pb::CpuStress { threads: 1 }), None)
            }),
            "interface"
        );
        let mut t = by(Selector::Cgroup("/x".into()));
        t.as_mut().unwrap().include_children = true;
        assert_eq!(err(spec(Kind::Freeze(pb::Freeze::default()), t)), "target.include_children");
    }

    #[test]
    fn kill_needs_no_lease_and_auto_freeze_picks_by_target() {
        let k = ProcessFault::try_from(&pb::FaultSpec {
            lease_ms: 0,
            ..spec(Kind::Kill(pb::Kill::default()), by(Selector::Pid(5)))
        })
        .unwrap();
        assert_eq!(k.kind, ProcessKind::Kill { signal: libc::SIGKILL });
        let f = ProcessFault::try_from(&spec(
            Kind::Freeze(pb::Freeze::default()),
            by(Selector::Cgroup("/a".into())),
        ))
        .unwrap();
        assert_eq!(f.kind, ProcessKind::Freeze(FreezeMethod::Cgroup));
        let f = ProcessFault::try_from(&spec(
            Kind::Freeze(pb::Freeze::default()),
            by(Selector::Pid(7)),
        ))
        .unwrap();
        assert_eq!(f.kind, ProcessKind::Freeze(FreezeMethod::Sigstop));
    }

    #[test]
    fn the_guard_refuses_init_and_the_agent() {
        let g = Guard::new();
        let init = procfs::stat(1).unwrap();
        assert!(
            matches!(g.check_process(&init), Err(TargetError::Refused(m)) if m.contains("PID 1"))
        );
        let me = procfs::stat(std::process::id()).unwrap();
        assert!(
            matches!(g.check_process(&me), Err(TargetError::Refused(m)) if m.contains("this agent"))
        );
        let kthreadd = procfs::stat(2).unwrap();
        assert!(
            matches!(g.check_process(&kthreadd), Err(TargetError::Refused(m)) if m.contains("kernel thread"))
        );
        assert!(!procfs::is_kernel_thread(std::process::id()));
    }

    #[test]
    fn a_launch_is_read_back_from_proc() {
        let me = capture(std::process::id()).unwrap();
        assert_eq!(me.exe, std::env::current_exe().unwrap());
        assert_eq!(me.cwd, std::env::current_dir().unwrap());
        assert!(me.env.iter().any(|(k, _)| k == "PATH"));
        // SAFETY: getuid cannot fail.
        assert_eq!(me.uid, unsafe { libc::getuid() });
    }
}
