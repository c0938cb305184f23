//! Network faults in the engine: the checks before anything changes, building a fault
//! (qdiscs, IFB devices, classifier attachments, its eBPF slot), and tearing it down.

use faultline_ebpf_common::{ACTION_DROP, ACTION_STEER, DIR_EGRESS, DIR_INGRESS, PortRange, Rule};
use faultline_proto::{agent::v1 as pb, doctor::feature};
use tracing::warn;

use super::{Active, Applied, Engine, EngineError, KernelError, LEAF_HANDLE, ROOT_HANDLE, SHARED, SHAPED_CLASS, State, UNLIMITED_BPS, describe, undo};
use crate::{
    fault::{FaultKind, FaultSpec, InvalidField, NetemSpec},
    journal::{Journal, KernelObject},
    kernel::{
        bpf::AttachMode,
        link,
        tc::{self, Qdisc, TC_H_CLSACT, TC_H_ROOT},
        tc_encode,
    },
};

impl Engine {
    /// The request's own checks and what this host offers.
    pub(super) fn preflight_net(&self, request: &pb::FaultSpec) -> Result<(FaultSpec, u32), EngineError> {
        let spec = FaultSpec::try_from(request)?;
        let Some(ifindex) = link::ifindex(&spec.interface) else {
            let names: Vec<String> = link::interfaces().into_iter().map(|i| i.name).collect();
            return Err(InvalidField { field: "interface".into(), reason: format!("no interface {} on this host (it has: {})", faultline_proto::quote(&spec.interface), names.join(", ")) }.into());
        };
        if !self.ebpf_available() {
            return Err(EngineError::Precondition(format!("eBPF classifier unavailable on this host: {}", self.caps.why_not(feature::EBPF))));
        }
        if matches!(spec.kind, FaultKind::Netem(_)) && !self.caps.has(feature::NETEM) {
            return Err(EngineError::Precondition(format!("this kernel has no netem qdisc: {}", self.caps.why_not(feature::NETEM))));
        }
        if spec.kind.uses_qdisc() && spec.direction.ingress() && !self.caps.has(feature::IFB) {
            return Err(EngineError::Precondition(format!("ingress shaping needs IFB devices: {}", self.caps.why_not(feature::IFB))));
        }
        if spec.kind.uses_qdisc() && spec.direction.ingress() && !self.caps.has(feature::INGRESS_REDIRECT) {
            return Err(EngineError::Precondition(format!("direction: {}", self.caps.why_not(feature::INGRESS_REDIRECT))));
        }
        Ok((spec, ifindex))
    }

    /// Conflicts with other faults and with qdiscs faultline did not create.
    pub(super) async fn preflight_locked(&self, st: &State, spec: &FaultSpec, ifindex: u32) -> Result<(), EngineError> {
        if !spec.kind.uses_qdisc() {
            return Ok(());
        }
        if let Some((other, o)) = st.faults.values().filter_map(|f| Some((f, f.net()?))).find(|(_, o)| {
            o.kind.uses_qdisc() && o.interface == spec.interface && ((o.direction.egress() && spec.direction.egress()) || (o.direction.ingress() && spec.direction.ingress()))
        }) {
            return Err(EngineError::Conflict(format!(
                "{} {} is already shaped by fault {} ({}); revert it first, or put every impairment in one netem fault",
                spec.interface,
                if o.direction.egress() && spec.direction.egress() { "egress" } else { "ingress" },
                other.id,
                o.kind.name()
            )));
        }
        if spec.direction.egress()
            && let Some(q) = tc::root_qdisc(&self.nl, ifindex).await.map_err(KernelError::from)?
                && q.handle != 0 {
                    return Err(EngineError::Precondition(format!(
                        "{} has a root qdisc {} {} that faultline did not create; it is left untouched. Remove it, or fault another interface",
                        spec.interface,
                        q.kind,
                        tc::fmt_handle(q.handle)
                    )));
                }
        Ok(())
    }

    pub(super) async fn build(&self, st: &mut State, f: &mut Active, spec: &FaultSpec, slot: u32, ifindex: u32) -> Result<(), EngineError> {
        let mut rule = Rule {
            ifindex,
            directions: (if spec.direction.egress() { DIR_EGRESS } else { 0 }) | (if spec.direction.ingress() { DIR_INGRESS } else { 0 }),
            protocol: spec.matcher.protocol.map_or(0, crate::fault::Protocol::ip_number),
            match_peers: u32::from(!spec.matcher.peers.is_empty()),
            n_ports: spec.matcher.ports.len() as u32,
            include_control: u32::from(spec.include_control),
            ..Rule::default()
        };
        for (i, (first, last)) in spec.matcher.ports.iter().enumerate() {
            rule.ports[i] = PortRange { first: *first, last: *last };
        }
        match &spec.kind {
            FaultKind::Drop { probability } => {
                rule.action = ACTION_DROP;
                rule.drop_always = u32::from(*probability >= 1.0);
                rule.drop_threshold = tc_encode::prob_u32(*probability);
            }
            FaultKind::Partition => {
                rule.action = ACTION_DROP;
                rule.drop_always = 1;
            }
            FaultKind::Netem(_) | FaultKind::Bandwidth { .. } => {
                rule.action = ACTION_STEER;
                let (leaf, class_rate, burst) = match &spec.kind {
                    FaultKind::Netem(n) => {
                        let per_dir = if spec.direction == crate::fault::Direction::Both { n.halved_delay() } else { n.clone() };
                        (Some(netem_options(&per_dir)?), UNLIMITED_BPS, 64 * 1024 * 1024)
                    }
                    FaultKind::Bandwidth { rate_bps, burst_bytes } => (None, *rate_bps, *burst_bytes),
                    _ => unreachable!(),
                };
                if spec.direction.egress() {
                    self.shape(st, f, &spec.interface, ifindex, class_rate, burst, leaf.clone()).await?;
                    rule.egress_classid = SHAPED_CLASS;
                }
                if spec.direction.ingress() {
                    let name = link::ifb_name(ifindex);
                    if link::exists(&name) {
                        return Err(EngineError::Conflict(format!("IFB device {name} already exists; another fault shapes {} ingress", spec.interface)));
                    }
                    let obj = KernelObject::Ifb { name: name.clone() };
                    st.journal.record(&f.id, obj.clone())?;
                    f.objects.push(obj);
                    let ifb = link::create_ifb(&self.nl, &name).await.map_err(|source| KernelError::Netlink { what: format!("creating {name}"), source })?;
                    self.shape_leaf(ifb, class_rate, burst, leaf).await?;
                    rule.ingress_classid = SHAPED_CLASS;
                    rule.ingress_redirect = ifb;
                }
            }
        }
        for ingress in [false, true] {
            if (ingress && spec.direction.ingress()) || (!ingress && spec.direction.egress()) {
                self.attach(st, &spec.interface, ifindex, ingress).await?;
            }
        }
        st.bpf.as_mut().expect("checked").install(slot, rule, &spec.matcher.peers)?;
        Ok(())
    }

    /// Installs `htb fa17:` as root with class `fa17:1` (and a netem leaf) on a device.
    #[expect(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
    async fn shape(&self, st: &mut State, f: &mut Active, ifname: &str, ifindex: u32, rate: u64, burst: u32, leaf: Option<Vec<u8>>) -> Result<(), EngineError> {
        let root = KernelObject::Qdisc { ifname: ifname.to_owned(), ifindex, parent: TC_H_ROOT, handle: ROOT_HANDLE, kind: "htb".into() };
        st.journal.record(&f.id, root.clone())?;
        f.objects.push(root);
        self.shape_leaf(ifindex, rate, burst, leaf).await
    }

    async fn shape_leaf(&self, ifindex: u32, rate: u64, burst: u32, leaf: Option<Vec<u8>>) -> Result<(), EngineError> {
        let kerr = |e: tc::TcError| EngineError::Kernel(e.into());
        let root = Qdisc { ifindex, parent: TC_H_ROOT, handle: ROOT_HANDLE, kind: "htb".into() };
        tc::add_qdisc(&self.nl, &root, tc_encode::htb_qdisc_options(1000)).await.map_err(kerr)?;
        tc::add_class(&self.nl, ifindex, ROOT_HANDLE, SHAPED_CLASS, "htb", tc_encode::htb_class_options(rate, burst)).await.map_err(kerr)?;
        if let Some(opts) = leaf {
            let q = Qdisc { ifindex, parent: SHAPED_CLASS, handle: LEAF_HANDLE, kind: "netem".into() };
            tc::add_qdisc(&self.nl, &q, opts).await.map_err(|e| {
                if e.errno() == Some(libc::ENOENT) {
                    EngineError::Precondition(format!("this kernel has no netem qdisc: {}", self.caps.why_not(feature::NETEM)))
                } else {
                    kerr(e)
                }
            })?;
        }
        Ok(())
    }

    /// Attaches the classifier to one side of an interface, unless already there.
    async fn attach(&self, st: &mut State, ifname: &str, ifindex: u32, ingress: bool) -> Result<(), EngineError> {
        let bpf = st.bpf.as_ref().expect("checked");
        if bpf.mode == AttachMode::Netlink && !bpf.is_attached(ifname, ingress) {
            let qdiscs = tc::list_qdiscs(&self.nl, ifindex).await.map_err(KernelError::from)?;
            if !qdiscs.iter().any(|q| q.parent == TC_H_CLSACT) {
                st.journal.record(SHARED, KernelObject::Qdisc { ifname: ifname.to_owned(), ifindex, parent: TC_H_CLSACT, handle: 0xFFFF_0000, kind: "clsact".into() })?;
                crate::kernel::bpf::add_clsact(ifname).map_err(|source| KernelError::Clsact { ifname: ifname.to_owned(), source })?;
            }
            st.journal.record(SHARED, KernelObject::ClsBpf { ifname: ifname.to_owned(), ingress })?;
        }
        // Keeps a link that is already there, cancelling its idle detach.
        st.bpf.as_mut().expect("checked").attach(ifname, ingress)?;
        Ok(())
    }

    /// Undoes one fault: the rule first (traffic stops being touched at once), then
    /// its kernel objects newest first, then classifier attachments nobody needs. What
    /// could not be undone stays in `f.objects` and in the journal; the errors are returned.
    pub(super) async fn teardown(&self, st: &mut State, f: &mut Active) -> Vec<String> {
        let mut errors = Vec::new();
        if let (Applied::Net { spec, slot, slot_free, .. }, Some(b)) = (&mut f.applied, st.bpf.as_mut())
            && !*slot_free {
                match b.remove(*slot, &spec.matcher.peers) {
                    Ok(()) => *slot_free = true,
                    Err(e) => errors.push(format!("clearing eBPF slot {slot}: {e}")),
                }
            }
        let mut kept = Vec::new();
        for obj in f.objects.iter().rev() {
            match undo::undo(&self.nl, obj).await {
                Ok(()) => {
                    if let Err(e) = st.journal.forget(obj) {
                        // The object is gone; its entry stays until a write succeeds (a
                        // later undo of a gone object is a no-op).
                        errors.push(e.to_string());
                        kept.push(obj.clone());
                    }
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", describe(obj)));
                    kept.push(obj.clone());
                }
            }
        }
        kept.reverse();
        f.objects = kept;
        self.release_attachments(st, f).await;
        errors
    }

    /// Detaches the classifier from sides of the fault's interface no other fault uses,
    /// and removes a clsact the agent added once neither side is attached.
    pub(super) async fn release_attachments(&self, st: &mut State, f: &Active) {
        let Some(spec) = f.net() else { return };
        for ingress in [false, true] {
            let used = st.faults.values().filter(|o| o.id != f.id).filter_map(Active::net).any(|o| {
                o.interface == spec.interface && if ingress { o.direction.ingress() } else { o.direction.egress() }
            });
            if used {
                continue;
            }
            let Some(b) = st.bpf.as_mut() else { continue };
            if !b.is_attached(&spec.interface, ingress) {
                continue;
            }
            if b.mode == AttachMode::Tcx {
                b.mark_idle(&spec.interface, ingress);
                continue;
            }
            if let Err(e) = b.detach(&spec.interface, ingress) {
                warn!("{e}");
            }
            let filters = shared_objects(&st.journal, |o| matches!(o, KernelObject::ClsBpf { ifname, ingress: i } if *ifname == spec.interface && *i == ingress));
            for o in filters {
                let _ = st.journal.forget(&o);
            }
        }
        if let Some(b) = st.bpf.as_ref()
            && b.mode == AttachMode::Netlink && !b.is_attached(&spec.interface, true) && !b.is_attached(&spec.interface, false) {
                let ours = shared_objects(&st.journal, |o| matches!(o, KernelObject::Qdisc { ifname, kind, .. } if *ifname == spec.interface && kind == "clsact"));
                for o in ours {
                    if undo::undo(&self.nl, &o).await.is_ok() {
                        let _ = st.journal.forget(&o);
                    }
                }
            }
    }
}

fn netem_options(n: &NetemSpec) -> Result<Vec<u8>, EngineError> {
    let table = match tc_encode::dist_name(n.distribution) {
        None => None,
        Some(name) => {
            let dirs = ["/usr/lib/x86_64-linux-gnu/tc", "/usr/lib/aarch64-linux-gnu/tc", "/usr/lib/tc", "/usr/lib64/tc", "/lib/tc", "/etc/faultline/tc"];
            let text = dirs
                .iter()
                .find_map(|d| std::fs::read_to_string(format!("{d}/{name}.dist")).ok())
                .ok_or_else(|| EngineError::Precondition(format!("netem.distribution: table {name}.dist not found in {dirs:?} (install iproute2)")))?;
            Some(tc_encode::parse_dist(&text).map_err(|e| EngineError::Precondition(format!("netem.distribution: {name}.dist: {e}")))?)
        }
    };
    Ok(tc_encode::netem_options(n, table.as_deref()))
}

/// Journaled objects shared by the faults of an interface (classifier attachments) that `pick` selects.
pub(super) fn shared_objects(journal: &Journal, pick: impl Fn(&KernelObject) -> bool) -> Vec<KernelObject> {
    journal.entries().iter().filter(|e| e.fault == SHARED && pick(&e.object)).map(|e| e.object.clone()).collect()
}
