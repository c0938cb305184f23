//! Undoing one journaled kernel object. The rule: only the kernel saying the object is
//! gone (no such device, file or process) counts as gone. Any other failure — out of
//! descriptors, a netlink error — is returned, so the caller keeps the journal entry and
//! tries again, and never reports a revert that did not happen.

use rtnetlink::Handle;
use tracing::{info, warn};

use super::place::NetCtx;
use crate::{
    journal::{Entry, Journal, KernelObject},
    kernel::{
        bpf, cgroup, link,
        netns::Netns,
        procfs::{self, ProcId},
        tc,
    },
};

/// Signals a process the journal names; a process that is gone needs nothing.
fn signal(pid: u32, start_time: u64, signal: i32) -> Result<(), String> {
    match procfs::signal(ProcId { pid, start_time }, signal) {
        Ok(()) | Err(procfs::SignalError::Gone(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes one object the agent created, after checking it is still the agent's. `Ok`
/// means it is gone now (removed, or the kernel no longer has it, or it is no longer
/// ours and is left alone). `net`: the namespace the object lives in.
pub async fn undo(net: NetCtx<'_>, obj: &KernelObject) -> Result<(), String> {
    let nl = net.nl;
    match obj {
        KernelObject::Qdisc { ifname, parent, handle, kind, .. } => {
            // The ifindex may have changed if the device was recreated: go by name.
            let Some(ifindex) = net.lookup(ifname).map_err(|e| e.to_string())? else {
                return Ok(());
            };
            let qdiscs = tc::list_qdiscs(nl, ifindex).await.map_err(|e| e.to_string())?;
            let Some(q) = qdiscs
                .into_iter()
                .find(|q| q.parent == *parent && (q.handle == *handle || kind == "clsact"))
            else {
                return Ok(());
            };
            if q.kind != *kind {
                warn!(
                    "{ifname}: qdisc {} is {} now, not our {kind}; leaving it",
                    tc::fmt_handle(q.handle),
                    q.kind
                );
                return Ok(());
            }
            match tc::del_qdisc(nl, &q).await {
                Ok(()) => Ok(()),
                Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::ENODEV)) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        KernelObject::Ifb { name, .. } => {
            if !name.starts_with(link::IFB_PREFIX) {
                return Ok(());
            }
            let Some(idx) = net.lookup(name).map_err(|e| e.to_string())? else { return Ok(()) };
            link::delete_link(nl, idx).await.map_err(|e| format!("deleting {name}: {e}"))
        }
        KernelObject::ClsBpf { ifname, ingress, .. } => {
            if net.lookup(ifname).map_err(|e| e.to_string())?.is_none() {
                return Ok(());
            }
            net.run(|| bpf::detach_leftover(ifname, *ingress))
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{ifname}: removing leftover cls_bpf: {e}"))
        }
        // A cgroup removed meanwhile took its tasks' state with it.
        KernelObject::CgroupFreeze { dir } => cgroup::write_journaled(dir, "cgroup.freeze", "0")
            .map(|_| ())
            .map_err(|e| e.to_string()),
        KernelObject::Stopped { pid, start_time } => signal(*pid, *start_time, libc::SIGCONT),
        KernelObject::Child { pid, start_time } => signal(*pid, *start_time, libc::SIGKILL),
        KernelObject::CpuMax { dir, previous, ours } => {
            match cgroup::read_journaled(dir, "cpu.max").map_err(|e| e.to_string())? {
                Some(now) if now.trim() == ours => {
                    cgroup::write_journaled(dir, "cpu.max", previous)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                Some(now) => {
                    warn!(
                        "{}: cpu.max reads {:?} now, not our {ours:?}; leaving it",
                        dir.display(),
                        now.trim()
                    );
                    Ok(())
                }
                None => Ok(()),
            }
        }
    }
}

/// Undoes an object a previous agent journaled, in the namespace it lives in: found again
/// by its identity, or gone — and with it the object (a container stopped or removed
/// meanwhile takes its namespace's qdiscs and devices along).
async fn undo_anywhere(nl: &Handle, obj: &KernelObject) -> Result<(), String> {
    let Some(r) = obj.netns() else { return undo(NetCtx { nl, ns: None }, obj).await };
    let Some(ns) = Netns::find(r).map_err(|e| format!("finding namespace {}: {e}", r.inode))?
    else {
        info!(
            container = r.container,
            netns = r.inode,
            "its namespace is gone, and the object with it"
        );
        return Ok(());
    };
    let handle = ns.netlink().map_err(|e| format!("netlink in namespace {}: {e}", r.inode))?;
    undo(NetCtx { nl: &handle, ns: Some(&ns) }, obj).await
}

/// Undoes what a previous agent left, newest first; returns what could not be undone
/// (still in the journal) with why.
pub async fn recover(
    nl: &Handle,
    journal: &mut Journal,
    leftover: &[Entry],
) -> Vec<(Entry, String)> {
    let mut failed = Vec::new();
    for e in leftover.iter().rev() {
        info!(fault = e.fault, object = ?e.object, "undoing");
        match undo_anywhere(nl, &e.object).await {
            Ok(()) => {
                if let Err(err) = journal.forget(&e.object) {
                    failed.push((e.clone(), err.to_string()));
                }
            }
            Err(why) => {
                warn!(object = ?e.object, "could not undo, kept in the journal: {why}");
                failed.push((e.clone(), why));
            }
        }
    }
    failed.reverse();
    failed
}
