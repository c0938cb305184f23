//! Processes as /proc shows them, and signals sent through pidfds so that a pid
//! reused by another process between lookup and signal is never hit.

use std::{
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// A process identity: a pid alone can be reused, a pid with its start time cannot.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ProcId {
    pub pid: u32,
    /// Clock ticks after boot (/proc/PID/stat field 22).
    pub start_time: u64,
}

#[derive(Debug, Clone)]
pub struct Stat {
    pub id: ProcId,
    pub comm: String,
    /// R, S, D, T (stopped), t (traced), Z, ...
    pub state: char,
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses /proc/PID/stat. The name sits in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last ')'.
#[must_use]
pub fn parse_stat(pid: u32, text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        id: ProcId { pid, start_time: field(22)? },
        comm,
        state: rest.first()?.chars().next()?,
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
    })
}

#[must_use]
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process's current identity check: still there, and still the same process.
#[must_use]
pub fn is_alive(id: ProcId) -> bool {
    stat(id.pid).is_some_and(|s| s.id == id && s.state != 'Z')
}

/// Like `is_alive`, for the undo path: `false` only when /proc says the process is gone
/// or another one has its pid; a failed read (no descriptors left) is an error.
pub fn alive(id: ProcId) -> std::io::Result<bool> {
    match super::fds::retry(|| fs::read_to_string(format!("/proc/{}/stat", id.pid))) {
        Ok(text) => Ok(parse_stat(id.pid, &text).is_some_and(|s| s.id == id && s.state != 'Z')),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the process is a kernel thread (`PF_KTHREAD` in /proc/PID/stat's flags, field
/// 9): signals and cgroup moves do nothing to those, so they are no target.
#[must_use]
pub fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = t.get(t.rfind(')')? + 2..)?;
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

#[must_use]
pub fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The process's cgroup v2 path ("/system.slice/x.service"), from /proc/PID/cgroup.
#[must_use]
pub fn cgroup(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
}

/// The process's network namespace ("net:[4026531840]"), from /proc/PID/ns/net.
#[must_use]
pub fn netns(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/net")).ok().map(|p| p.to_string_lossy().into_owned())
}

pub fn all() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter_map(stat).collect()
}

/// `roots` and all their descendants, each once.
#[must_use]
pub fn with_descendants(roots: &[Stat], everyone: &[Stat]) -> Vec<Stat> {
    let mut out: Vec<Stat> = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].id.pid;
        for p in everyone {
            if p.ppid == parent && !out.iter().any(|o| o.id == p.id) {
                out.push(p.clone());
            }
        }
        i += 1;
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("process {0} is gone (or its pid now belongs to another process)")]
    Gone(u32),
    #[error("signalling process {pid}: {source}")]
    Os { pid: u32, source: std::io::Error },
}

/// Sends `signal` to exactly the process `id`: the pidfd pins the process, and the
/// start time is checked after it is pinned.
pub fn signal(id: ProcId, signal: i32) -> Result<(), SignalError> {
    let fd = super::fds::retry(|| {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a descriptor we own from here on.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    });
    // Only the kernel's "no such process" means gone: running out of descriptors must
    // not read as "the process exited", or a frozen process would stay frozen.
    let fd = match fd {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(SignalError::Gone(id.pid)),
        Err(source) => return Err(SignalError::Os { pid: id.pid, source }),
    };
    match alive(id) {
        Ok(true) => {}
        Ok(false) => return Err(SignalError::Gone(id.pid)),
        Err(source) => return Err(SignalError::Os { pid: id.pid, source }),
    }
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ESRCH) {
            SignalError::Gone(id.pid)
        } else {
            SignalError::Os { pid: id.pid, source: e }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_name_parses() {
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 123456 1000 10 18446744073709551615";
        let s = parse_stat(4242, line).unwrap();
        assert_eq!(s.comm, "a) b (c");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.cpu_ticks, 10);
        assert_eq!(s.id.start_time, 123_456);
    }

    #[test]
    fn own_process_is_found_and_alive() {
        let me = stat(std::process::id()).unwrap();
        assert!(is_alive(me.id));
        assert!(!is_alive(ProcId { start_time: me.id.start_time + 1, ..me.id }));
    }
}
