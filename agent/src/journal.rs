//! The on-disk record of every kernel object the agent creates. An object is
//! written here *before* it is created and removed only after it is gone, so an
//! agent that died at any point can undo what it left, and nothing else.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::kernel::netns::NsRef;

/// A kernel object the agent created, with what is needed to recognise it as
/// ours before removing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KernelObject {
    /// A qdisc; removed only if the kernel still shows this kind at this handle.
    /// `netns`, here and below: the container namespace it lives in (absent: the agent's own).
    Qdisc {
        ifname: String,
        ifindex: u32,
        parent: u32,
        handle: u32,
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<NsRef>,
    },
    /// An IFB device named `flifb<ifindex>`.
    Ifb {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<NsRef>,
    },
    /// `cls_bpf` filters named after our programs on a clsact qdisc (kernels without
    /// TCX). TCX links and map slots need no record: they die with the agent.
    ClsBpf {
        ifname: String,
        ingress: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<NsRef>,
    },
    /// A cgroup the agent froze (it was not frozen before); undone by writing 0. `dir` is
    /// relative to the cgroup2 root ("/app/db"; older journals: the absolute directory),
    /// found again wherever cgroup2 is mounted (`cgroup::locate`).
    CgroupFreeze { dir: PathBuf },
    /// A process the agent stopped with SIGSTOP; undone by SIGCONT to the same
    /// (pid, start time), never to a process that reused the pid.
    Stopped { pid: u32, start_time: u64 },
    /// A stress worker the agent started; undone by SIGKILL to the same process.
    Child { pid: u32, start_time: u64 },
    /// cpu.max the agent set; restored to `previous` only if it still reads `ours`.
    /// `dir` as for `CgroupFreeze`.
    CpuMax { dir: PathBuf, previous: String, ours: String },
}

impl KernelObject {
    /// The container namespace the object lives in; `None`: the agent's own.
    #[must_use]
    pub fn netns(&self) -> Option<&NsRef> {
        match self {
            Self::Qdisc { netns, .. } | Self::Ifb { netns, .. } | Self::ClsBpf { netns, .. } => {
                netns.as_ref()
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub fault: String,
    pub object: KernelObject,
}

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

/// The journal file is rewritten whole (write, fsync, rename) on every change:
/// it holds a few dozen entries, and a torn write must never lose one.
pub struct Journal {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Held while the journal is open: a second agent (or `--cleanup`) on the same state
    /// directory would undo what a live agent still holds.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Journal {
    /// Opens the journal in `state_dir`, returning what a previous agent left.
    pub fn open(state_dir: &Path) -> Result<(Self, Vec<Entry>), JournalError> {
        let path = state_dir.join("journal.json");
        let err = |source| JournalError { path: path.clone(), source };
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let lock_path = state_dir.join("agent.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| JournalError { path: lock_path.clone(), source })?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| JournalError {
                path: lock_path.clone(),
                source: if errno == nix::errno::Errno::EWOULDBLOCK {
                    std::io::Error::other("another agent holds this state directory")
                } else {
                    errno.into()
                },
            })?;
        let leftover = match std::fs::read(&path) {
            Ok(bytes) if !bytes.is_empty() => {
                serde_json::from_slice(&bytes).map_err(|e| err(std::io::Error::other(e)))?
            }
            Ok(_) => Vec::new(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        Ok((Self { path, entries: leftover.clone(), _lock: lock }, leftover))
    }

    #[must_use]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records that `object` is about to be created for `fault`. On an error nothing is
    /// recorded, and the caller must not create the object.
    pub fn record(&mut self, fault: &str, object: KernelObject) -> Result<(), JournalError> {
        let mut next = self.entries.clone();
        next.push(Entry { fault: fault.to_owned(), object });
        self.flush(&next)?;
        self.entries = next;
        Ok(())
    }

    /// Forgets an object once it is gone from the kernel. The entry leaves memory only
    /// once the file no longer holds it: a failed write keeps it in both, so no later
    /// write can drop an object whose removal was never recorded.
    pub fn forget(&mut self, object: &KernelObject) -> Result<(), JournalError> {
        let Some(i) = self.entries.iter().rposition(|e| &e.object == object) else { return Ok(()) };
        let mut next = self.entries.clone();
        next.remove(i);
        self.flush(&next)?;
        self.entries = next;
        Ok(())
    }

    fn flush(&self, entries: &[Entry]) -> Result<(), JournalError> {
        let err = |source| JournalError { path: self.path.clone(), source };
        let tmp = self.path.with_extension("json.tmp");
        let mut f = crate::kernel::fds::retry(|| std::fs::File::create(&tmp)).map_err(err)?;
        f.write_all(&serde_json::to_vec_pretty(entries).expect("journal entries serialize"))
            .map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_forgets_in_place() {
        let dir = std::env::temp_dir().join(format!("fl-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut j, left) = Journal::open(&dir).unwrap();
        assert!(left.is_empty());
        let q = KernelObject::Qdisc {
            ifname: "eth0".into(),
            ifindex: 2,
            parent: u32::MAX,
            handle: 0xfa17_0000,
            kind: "htb".into(),
            netns: None,
        };
        j.record("f1", q.clone()).unwrap();
        let ns = NsRef { inode: 4_026_532_999, cookie: 7, pid: 42, container: "c0ffee".into() };
        j.record("f1", KernelObject::Ifb { name: "flifb2".into(), netns: Some(ns.clone()) })
            .unwrap();
        drop(j);
        let (mut j, left) = Journal::open(&dir).unwrap();
        assert_eq!(left.len(), 2);
        j.forget(&q).unwrap();
        let held = Journal::open(&dir).err().expect("a second open of a held journal must fail");
        assert!(held.to_string().contains("another agent holds this state directory"), "{held}");
        drop(j);
        let (_, left) = Journal::open(&dir).unwrap();
        assert_eq!(left.len(), 1);
        // The namespace survives the round trip: a restarted agent undoes it there.
        assert_eq!(left[0].object, KernelObject::Ifb { name: "flifb2".into(), netns: Some(ns) });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
