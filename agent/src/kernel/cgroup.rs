//! cgroup v2: finding the mount, freezing, cpu.max, moving processes. Plain file
//! writes; the kernel does the rest.

use std::{
    fs,
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup v2 is not mounted on this host (no cgroup2 line in /proc/self/mountinfo)")]
    NotMounted,
    #[error("{0}")]
    Invalid(String),
    /// The path (quoted and cut short) and the cgroup2 root it was looked for under.
    #[error("no cgroup {0} under {1}")]
    Missing(String, PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io { path: path.to_owned(), source }
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
}

/// Where a journaled cgroup is now. The journal keeps paths relative to the cgroup2 root
/// ("/app/db"), so a `--cleanup` whose mount namespace puts cgroup2 elsewhere finds them;
/// older journals kept the absolute directory, which is tried as is first and then under
/// this namespace's mount.
pub fn locate(journaled: &Path) -> Result<PathBuf, CgroupError> {
    let root = mount().ok_or(CgroupError::NotMounted)?;
    if journaled.starts_with(&root) && journaled.exists() {
        return Ok(journaled.to_owned());
    }
    let rel = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .find_map(|m| journaled.strip_prefix(m).ok())
        .unwrap_or(journaled);
    Ok(root.join(rel.strip_prefix("/").unwrap_or(rel)))
}

fn gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV | libc::ESRCH))
}

/// For the undo path: writes `value` to `file` of a journaled cgroup (found wherever
/// cgroup2 is mounted). `Ok(false)` when the cgroup is gone; any other failure is an error.
pub fn write_journaled(journaled: &Path, file: &str, value: &str) -> Result<bool, CgroupError> {
    let path = locate(journaled)?.join(file);
    match super::fds::retry(|| fs::write(&path, value)) {
        Ok(()) => Ok(true),
        Err(e) if gone(&e) => Ok(false),
        Err(source) => Err(CgroupError::Io { path, source }),
    }
}

/// For the undo path: reads `file` of a journaled cgroup; `None` when the cgroup is gone.
pub fn read_journaled(journaled: &Path, file: &str) -> Result<Option<String>, CgroupError> {
    let path = locate(journaled)?.join(file);
    match super::fds::retry(|| fs::read_to_string(&path)) {
        Ok(text) => Ok(Some(text)),
        Err(e) if gone(&e) => Ok(None),
        Err(source) => Err(CgroupError::Io { path, source }),
    }
}

/// A cgroup directory: `rel` as /proc/PID/cgroup names it, `dir` on the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub rel: String,
    pub dir: PathBuf,
}

/// Resolves a user's cgroup: a path under the mount ("/app/db" or "app/db") or an
/// absolute filesystem path inside it. `..` is refused so a target cannot escape.
pub fn resolve(path: &str) -> Result<Cgroup, CgroupError> {
    let root = mount().ok_or(CgroupError::NotMounted)?;
    let p = Path::new(path);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(CgroupError::Invalid(format!(
            "{}: '..' is not allowed in a cgroup path",
            faultline_proto::quote(path)
        )));
    }
    let rel = p.strip_prefix(&root).unwrap_or(p);
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let dir = root.join(rel);
    if !dir.join("cgroup.procs").exists() {
        return Err(CgroupError::Missing(faultline_proto::quote(path), root));
    }
    Ok(Cgroup { rel: format!("/{}", rel.display()).replace("//", "/"), dir })
}

impl Cgroup {
    fn read(&self, file: &str) -> Result<String, CgroupError> {
        let p = self.dir.join(file);
        fs::read_to_string(&p).map(|s| s.trim().to_owned()).map_err(io(&p))
    }

    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let p = self.dir.join(file);
        fs::write(&p, value).map_err(io(&p))
    }

    /// Whether someone (us or not) asked this cgroup to be frozen.
    pub fn freeze_requested(&self) -> Result<bool, CgroupError> {
        Ok(self.read("cgroup.freeze")? == "1")
    }

    /// Freezes or thaws, then waits (up to `wait`) until the kernel reports it done:
    /// a freeze completes only once every task has left the CPU.
    pub fn set_frozen(&self, frozen: bool, wait: Duration) -> Result<bool, CgroupError> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })?;
        let deadline = Instant::now() + wait;
        loop {
            let now = self.read("cgroup.events")?.lines().any(|l| l == "frozen 1");
            if now == frozen || Instant::now() >= deadline {
                return Ok(now == frozen);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        Ok(self.read("cgroup.procs")?.lines().filter_map(|l| l.parse().ok()).collect())
    }

    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        self.write("cgroup.procs", &pid.to_string())
    }

    #[must_use]
    pub fn has_controller(&self, name: &str) -> bool {
        self.read("cgroup.controllers").is_ok_and(|c| c.split_whitespace().any(|x| x == name))
    }

    pub fn cpu_max(&self) -> Result<String, CgroupError> {
        self.read("cpu.max")
    }

    pub fn set_cpu_max(&self, value: &str) -> Result<(), CgroupError> {
        self.write("cpu.max", value)
    }

    /// Whether `other` (a rel path) is this cgroup or lies beneath it.
    #[must_use]
    pub fn contains(&self, other: &str) -> bool {
        self.rel == "/" || other == self.rel || other.starts_with(&format!("{}/", self.rel))
    }
}

/// Whether systemd is PID 1 (`sd_booted(3)`'s test).
#[must_use]
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// A systemd unit's cgroup, from `systemctl show`.
pub fn unit_cgroup(unit: &str) -> Result<Cgroup, CgroupError> {
    if !systemd_booted() {
        return Err(CgroupError::Invalid(format!(
            "{}: systemd is not PID 1 on this host, so it has no units; target the cgroup or the processes instead",
            faultline_proto::quote(unit)
        )));
    }
    let out = std::process::Command::new("systemctl")
        .args(["show", "--property=ControlGroup", "--value", "--", unit])
        .output()
        .map_err(io(Path::new("systemctl")))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || path.is_empty() {
        return Err(CgroupError::Invalid(format!(
            "{}: systemd knows no running unit of that name (systemctl show gave no ControlGroup)",
            faultline_proto::quote(unit)
        )));
    }
    resolve(&path)
}

/// cpu.max for `cpus` CPUs over `period_us`: "quota period".
#[must_use]
pub fn cpu_max_value(cpus: f64, period_us: u64) -> String {
    let quota = ((cpus * period_us as f64).round() as u64).max(1000);
    format!("{quota} {period_us}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_is_by_path_component() {
        let c = Cgroup { rel: "/app".into(), dir: PathBuf::new() };
        assert!(c.contains("/app"));
        assert!(c.contains("/app/db"));
        assert!(!c.contains("/application"));
        assert!(Cgroup { rel: "/".into(), dir: PathBuf::new() }.contains("/x"));
    }

    #[test]
    fn cpu_max_has_a_floor_of_one_ms() {
        assert_eq!(cpu_max_value(0.2, 100_000), "20000 100000");
        assert_eq!(cpu_max_value(0.001, 100_000), "1000 100000");
    }
}
