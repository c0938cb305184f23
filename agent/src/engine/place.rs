//! Where a network fault acts: the agent's own network namespace, or a container's. Each
//! place has its own classifier: interface indexes are per namespace, so the rules of one
//! namespace must never be matched against another namespace's packets.

use rtnetlink::Handle;

use super::{EngineError, KernelError};
use crate::kernel::{
    bpf::Classifier,
    link,
    netns::{Netns, NsRef},
};

/// The key of the agent's own namespace among the places; a container's is its
/// namespace's inode (never 0).
pub(super) const HOST: u64 = 0;

pub(super) struct Place {
    pub nl: Handle,
    /// The namespace held open while a fault acts in it; `None` for the agent's own.
    pub ns: Option<Netns>,
    /// How the journal names the namespace (`None` for the agent's own).
    pub nsref: Option<NsRef>,
    pub bpf: Classifier,
    /// Since when no fault acts here (container places only; closed after a while).
    pub idle_since: Option<std::time::Instant>,
}

/// What undoing a journaled object needs: a netlink handle and the namespace to look
/// names up in.
#[derive(Clone, Copy)]
pub struct NetCtx<'a> {
    pub nl: &'a Handle,
    pub ns: Option<&'a Netns>,
}

fn entering(e: std::io::Error) -> KernelError {
    KernelError::Io { what: "entering the container's network namespace".into(), source: e }
}

/// Runs `f` in namespace `ns`, or directly on this thread for the agent's own.
fn in_ns<T: Send>(ns: Option<&Netns>, f: impl FnOnce() -> T + Send) -> Result<T, KernelError> {
    match ns {
        None => Ok(f()),
        Some(ns) => ns.run(f).map_err(entering),
    }
}

impl NetCtx<'_> {
    /// Runs `f` in the namespace (directly in the agent's own).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, KernelError> {
        in_ns(self.ns, f)
    }

    /// An interface's index there; `None` only when the kernel says there is none.
    pub fn lookup(&self, name: &str) -> Result<Option<u32>, KernelError> {
        self.run(|| link::lookup(name))?
            .map_err(|source| KernelError::Io { what: format!("looking up {name}"), source })
    }
}

impl Place {
    pub fn ctx(&self) -> NetCtx<'_> {
        NetCtx { nl: &self.nl, ns: self.ns.as_ref() }
    }

    /// Runs `f` on the classifier from inside the namespace: a TCX link or a `cls_bpf`
    /// filter is made (and in netlink attach mode, removed) where the calling thread is.
    fn with_bpf<T: Send>(
        &mut self,
        f: impl FnOnce(&mut Classifier) -> T + Send,
    ) -> Result<T, KernelError> {
        let Self { ns, bpf, .. } = self;
        in_ns(ns.as_ref(), || f(bpf))
    }

    pub fn attach(&mut self, ifname: &str, ingress: bool) -> Result<(), EngineError> {
        Ok(self.with_bpf(|b| b.attach(ifname, ingress))??)
    }

    pub fn attach_ahead(&mut self, ifname: &str, ingress: bool) -> Result<(), EngineError> {
        Ok(self.with_bpf(|b| b.attach_ahead(ifname, ingress))??)
    }

    pub fn detach(&mut self, ifname: &str, ingress: bool) -> Result<(), EngineError> {
        Ok(self.with_bpf(|b| b.detach(ifname, ingress))??)
    }

    pub fn sweep(&mut self, older_than: std::time::Duration) {
        if let Err(e) = self.with_bpf(|b| b.sweep(older_than)) {
            tracing::warn!("{e}");
        }
    }

    /// Ends a container's place: its links are closed from inside its namespace (in
    /// netlink attach mode, dropping a link deletes a filter there).
    pub fn close(self) {
        let Self { ns, bpf, .. } = self;
        if let Err(e) = in_ns(ns.as_ref(), move || drop(bpf)) {
            tracing::warn!("{e}");
        }
    }
}
