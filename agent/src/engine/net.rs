//! Network faults in the engine: the checks before anything changes, building a fault
//! (qdiscs, IFB devices, classifier attachments, its eBPF slot), and tearing it down.

use faultline_ebpf_common::{ACTION_DROP, ACTION_STEER, DIR_EGRESS, DIR_INGRESS, PortRange, Rule};
use faultline_proto::{agent::v1 as pb, doctor::feature};
use tracing::warn;

use super::{
    Active, Applied, Engine, EngineError, KernelError, LEAF_HANDLE, ROOT_HANDLE, SHAPED_CLASS,
    SHARED, State, UNLIMITED_BPS, describe,
    place::{HOST, NetCtx, Place},
    undo,
};
use crate::{
    containers::{Container, Selector},
    fault::{FaultKind, FaultSpec, InvalidField, NetemSpec},
    journal::{Journal, KernelObject},
    kernel::{
        bpf::AttachMode,
        link,
        netns::Netns,
        procfs,
        tc::{self, Qdisc, TC_H_CLSACT, TC_H_ROOT},
        tc_encode,
    },
};

/// Container namespaces with faults in them at once.
const MAX_CONTAINER_PLACES: usize = 64;

/// A network fault's checked request, and where it acts.
pub(super) struct NetTarget {
    pub spec: FaultSpec,
    pub ifindex: u32,
    /// A container's, with its namespace held open; `None`: the agent's own namespace.
    pub container: Option<(Container, Netns)>,
}

impl NetTarget {
    pub fn key(&self) -> u64 {
        self.container.as_ref().map_or(HOST, |(_, ns)| ns.inode)
    }
}

fn invalid_interface(reason: String) -> EngineError {
    InvalidField { field: "interface".into(), reason }.into()
}

impl Engine {
    /// The request's own checks, what this host offers, and where the fault would act:
    /// an interface of the agent's namespace, or of the container's it names.
    pub(super) async fn preflight_net(
        &self,
        request: &pb::FaultSpec,
    ) -> Result<NetTarget, EngineError> {
        let mut spec = FaultSpec::try_from(request)?;
        self.preflight_caps(&spec)?;
        let Some(container) = self.named_place(request).await? else {
            self.runtimes.check_scope(None)?;
            // Out of descriptors (or any failure but "no such device") is an error, never
            // read as the interface not being there.
            let found = link::lookup(&spec.interface).map_err(|source| KernelError::Io {
                what: format!("looking up interface {}", faultline_proto::quote(&spec.interface)),
                source,
            })?;
            let Some(ifindex) = found else {
                let names: Vec<String> = link::interfaces().into_iter().map(|i| i.name).collect();
                return Err(invalid_interface(format!(
                    "no interface {} on this host (it has: {})",
                    faultline_proto::quote(&spec.interface),
                    names.join(", ")
                )));
            };
            return Ok(NetTarget { spec, ifindex, container: None });
        };
        let gone = |e: std::io::Error| {
            EngineError::NotFound(format!(
                "container {}: its network namespace: {e}",
                container.name
            ))
        };
        let ns = Netns::of_pid(container.process.pid).map_err(gone)?;
        // The pid was the container's when the runtime answered; it must still be now
        // that the namespace is open, or the namespace may be another process's.
        if !procfs::alive(container.process).map_err(gone)? {
            return Err(EngineError::NotFound(format!(
                "container {} stopped while being resolved",
                container.name
            )));
        }
        if Netns::current_inode().is_ok_and(|own| own == ns.inode) {
            return Err(EngineError::Precondition(format!(
                "container {} shares the agent's network namespace (network mode host); fault the host's interface instead",
                container.name
            )));
        }
        let present = ns.run(link::indexes_here).map_err(gone)?.map_err(gone)?;
        let (name, ifindex) = if spec.interface.is_empty() {
            match present.iter().filter(|(n, _)| n != "lo").collect::<Vec<_>>().as_slice() {
                [(n, i)] => (n.clone(), *i),
                [] => {
                    return Err(EngineError::Precondition(format!(
                        "container {} has no network interface but lo",
                        container.name
                    )));
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(invalid_interface(format!(
                        "container {} has {}: name the one to fault",
                        container.name,
                        names.join(", ")
                    )));
                }
            }
        } else {
            let Some((n, i)) = present.iter().find(|(n, _)| *n == spec.interface) else {
                let names: Vec<&str> = present.iter().map(|(n, _)| n.as_str()).collect();
                return Err(invalid_interface(format!(
                    "no interface {} in container {} (it has: {})",
                    faultline_proto::quote(&spec.interface),
                    container.name,
                    names.join(", ")
                )));
            };
            (n.clone(), *i)
        };
        spec.interface = name;
        Ok(NetTarget { spec, ifindex, container: Some((container, ns)) })
    }

    /// Makes sure the target's place is open: the agent's own is from the start (when
    /// eBPF loaded); a container's gets its own classifier and netlink socket there.
    pub(super) fn open_place(&self, st: &mut State, target: NetTarget) -> Result<(), EngineError> {
        let key = target.key();
        if let Some(p) = st.places.get_mut(&key) {
            p.idle_since = None;
            return Ok(());
        }
        let Some((container, ns)) = target.container else {
            return Err(EngineError::Precondition(format!(
                "eBPF classifier unavailable on this host: {}",
                self.caps.why_not(feature::EBPF)
            )));
        };
        // Each place holds a namespace, a netlink socket and a loaded classifier: bounded,
        // idle ones given up first.
        let containers = |st: &State| st.places.keys().filter(|k| **k != HOST).count();
        if containers(st) >= MAX_CONTAINER_PLACES {
            super::close_idle(st, std::time::Duration::ZERO);
        }
        if containers(st) >= MAX_CONTAINER_PLACES {
            return Err(EngineError::Exhausted(format!(
                "faults act in {MAX_CONTAINER_PLACES} container namespaces already, the most at once; revert some first"
            )));
        }
        let nl = ns.netlink().map_err(|source| KernelError::Io {
            what: format!("netlink in container {}", container.name),
            source,
        })?;
        let bpf = self.take_classifier(st)?;
        let nsref = ns.reference(container.process.pid, &container.id);
        st.places
            .insert(key, Place { nl, ns: Some(ns), nsref: Some(nsref), bpf, idle_since: None });
        Ok(())
    }

    /// The container or pod a network fault names, inside the agent's scope: a pod's is
    /// its sandbox, whose namespace its containers share (the fault acts once per pod).
    async fn named_place(&self, request: &pb::FaultSpec) -> Result<Option<Container>, EngineError> {
        match (&request.container, &request.pod) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(InvalidField {
                field: "pod".into(),
                reason: "give a container or a pod, not both".into(),
            }
            .into()),
            (Some(t), None) => {
                let c = self.runtimes.resolve(&Selector::try_from(t)?).await?;
                self.runtimes.check_scope(Some(&c))?;
                Ok(Some(c))
            }
            (None, Some(p)) => {
                if !p.container.is_empty() {
                    return Err(InvalidField {
                        field: "pod.container".into(),
                        reason: "a network fault acts on the whole pod: its containers share one network namespace".into(),
                    }
                    .into());
                }
                Ok(Some(self.runtimes.resolve_pod(p).await?.sandbox()))
            }
        }
    }

    /// What this host's kernel offers for the kind and direction asked.
    fn preflight_caps(&self, spec: &FaultSpec) -> Result<(), EngineError> {
        if !self.ebpf_available() {
            return Err(EngineError::Precondition(format!(
                "eBPF classifier unavailable on this host: {}",
                self.caps.why_not(feature::EBPF)
            )));
        }
        if matches!(spec.kind, FaultKind::Netem(_)) && !self.caps.has(feature::NETEM) {
            return Err(EngineError::Precondition(format!(
                "this kernel has no netem qdisc: {}",
                self.caps.why_not(feature::NETEM)
            )));
        }
        if spec.kind.uses_qdisc() && spec.direction.ingress() && !self.caps.has(feature::IFB) {
            return Err(EngineError::Precondition(format!(
                "ingress shaping needs IFB devices: {}",
                self.caps.why_not(feature::IFB)
            )));
        }
        if spec.kind.uses_qdisc()
            && spec.direction.ingress()
            && !self.caps.has(feature::INGRESS_REDIRECT)
        {
            return Err(EngineError::Precondition(format!(
                "direction: {}",
                self.caps.why_not(feature::INGRESS_REDIRECT)
            )));
        }
        Ok(())
    }

    /// Conflicts with other faults in the same place and with qdiscs faultline did not create.
    pub(super) async fn preflight_locked(
        &self,
        st: &State,
        key: u64,
        spec: &FaultSpec,
        ifindex: u32,
    ) -> Result<(), EngineError> {
        if !spec.kind.uses_qdisc() {
            return Ok(());
        }
        if let Some((other, o)) = st
            .faults
            .values()
            .filter(|f| f.place() == Some(key))
            .filter_map(|f| Some((f, f.net()?)))
            .find(|(_, o)| {
                o.kind.uses_qdisc()
                    && o.interface == spec.interface
                    && ((o.direction.egress() && spec.direction.egress())
                        || (o.direction.ingress() && spec.direction.ingress()))
            })
        {
            return Err(EngineError::Conflict(format!(
                "{} {} is already shaped by fault {} ({}); revert it first, or put every impairment in one netem fault",
                spec.interface,
                if o.direction.egress() && spec.direction.egress() { "egress" } else { "ingress" },
                other.id,
                o.kind.name()
            )));
        }
        let nl = &st.places.get(&key).expect("opened").nl;
        if spec.direction.egress()
            && let Some(q) = tc::root_qdisc(nl, ifindex).await.map_err(KernelError::from)?
            && q.handle != 0
        {
            return Err(EngineError::Precondition(format!(
                "{} has a root qdisc {} {} that faultline did not create; it is left untouched. Remove it, or fault another interface",
                spec.interface,
                q.kind,
                tc::fmt_handle(q.handle)
            )));
        }
        Ok(())
    }

    pub(super) async fn build(
        &self,
        st: &mut State,
        f: &mut Active,
        spec: &FaultSpec,
        slot: u32,
        ifindex: u32,
    ) -> Result<(), EngineError> {
        let key = f.place().expect("a network fault");
        let mut rule = Rule {
            ifindex,
            directions: (if spec.direction.egress() { DIR_EGRESS } else { 0 })
                | (if spec.direction.ingress() { DIR_INGRESS } else { 0 }),
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
                        let per_dir = if spec.direction == crate::fault::Direction::Both {
                            n.halved_delay()
                        } else {
                            n.clone()
                        };
                        (Some(netem_options(&per_dir)?), UNLIMITED_BPS, 64 * 1024 * 1024)
                    }
                    FaultKind::Bandwidth { rate_bps, burst_bytes } => {
                        (None, *rate_bps, *burst_bytes)
                    }
                    _ => unreachable!(),
                };
                let place = st.places.get(&key).expect("opened");
                let (nl, netns) = (place.nl.clone(), place.nsref.clone());
                if spec.direction.egress() {
                    let root = KernelObject::Qdisc {
                        ifname: spec.interface.clone(),
                        ifindex,
                        parent: TC_H_ROOT,
                        handle: ROOT_HANDLE,
                        kind: "htb".into(),
                        netns: netns.clone(),
                    };
                    st.journal.record(&f.id, root.clone())?;
                    f.objects.push(root);
                    self.shape_leaf(&nl, ifindex, class_rate, burst, leaf.clone()).await?;
                    f.shaped(ifindex);
                    rule.egress_classid = SHAPED_CLASS;
                }
                if spec.direction.ingress() {
                    let name = link::ifb_name(ifindex);
                    if st.places.get(&key).expect("opened").ctx().lookup(&name)?.is_some() {
                        return Err(EngineError::Conflict(format!(
                            "IFB device {name} already exists; another fault shapes {} ingress",
                            spec.interface
                        )));
                    }
                    let obj = KernelObject::Ifb { name: name.clone(), netns };
                    st.journal.record(&f.id, obj.clone())?;
                    f.objects.push(obj);
                    let ifb = link::create_ifb(&nl, &name).await.map_err(|source| {
                        KernelError::Netlink { what: format!("creating {name}"), source }
                    })?;
                    self.shape_leaf(&nl, ifb, class_rate, burst, leaf).await?;
                    f.shaped(ifb);
                    rule.ingress_classid = SHAPED_CLASS;
                    rule.ingress_redirect = ifb;
                }
            }
        }
        for ingress in [false, true] {
            if (ingress && spec.direction.ingress()) || (!ingress && spec.direction.egress()) {
                self.attach(st, key, &spec.interface, ifindex, ingress).await?;
            }
        }
        st.places.get_mut(&key).expect("opened").bpf.install(slot, rule, &spec.matcher.peers)?;
        Ok(())
    }

    /// Installs `htb fa17:` as root with class `fa17:1` (and a netem leaf) on a device.
    async fn shape_leaf(
        &self,
        nl: &rtnetlink::Handle,
        ifindex: u32,
        rate: u64,
        burst: u32,
        leaf: Option<Vec<u8>>,
    ) -> Result<(), EngineError> {
        let kerr = |e: tc::TcError| EngineError::Kernel(e.into());
        let root = Qdisc { ifindex, parent: TC_H_ROOT, handle: ROOT_HANDLE, kind: "htb".into() };
        tc::add_qdisc(nl, &root, tc_encode::htb_qdisc_options(1000)).await.map_err(kerr)?;
        tc::add_class(
            nl,
            ifindex,
            ROOT_HANDLE,
            SHAPED_CLASS,
            "htb",
            tc_encode::htb_class_options(rate, burst),
        )
        .await
        .map_err(kerr)?;
        if let Some(opts) = leaf {
            let q =
                Qdisc { ifindex, parent: SHAPED_CLASS, handle: LEAF_HANDLE, kind: "netem".into() };
            tc::add_qdisc(nl, &q, opts).await.map_err(|e| {
                if e.errno() == Some(libc::ENOENT) {
                    EngineError::Precondition(format!(
                        "this kernel has no netem qdisc: {}",
                        self.caps.why_not(feature::NETEM)
                    ))
                } else {
                    kerr(e)
                }
            })?;
        }
        Ok(())
    }

    /// Attaches the classifier to one side of an interface, unless already there.
    async fn attach(
        &self,
        st: &mut State,
        key: u64,
        ifname: &str,
        ifindex: u32,
        ingress: bool,
    ) -> Result<(), EngineError> {
        let place = st.places.get_mut(&key).expect("opened");
        if place.bpf.mode == AttachMode::Netlink && !place.bpf.is_attached(ifname, ingress) {
            let qdiscs = tc::list_qdiscs(&place.nl, ifindex).await.map_err(KernelError::from)?;
            let netns = place.nsref.clone();
            if !qdiscs.iter().any(|q| q.parent == TC_H_CLSACT) {
                st.journal.record(
                    SHARED,
                    KernelObject::Qdisc {
                        ifname: ifname.to_owned(),
                        ifindex,
                        parent: TC_H_CLSACT,
                        handle: 0xFFFF_0000,
                        kind: "clsact".into(),
                        netns: netns.clone(),
                    },
                )?;
                st.places[&key]
                    .ctx()
                    .run(|| crate::kernel::bpf::add_clsact(ifname))?
                    .map_err(|source| KernelError::Clsact { ifname: ifname.to_owned(), source })?;
            }
            st.journal.record(
                SHARED,
                KernelObject::ClsBpf { ifname: ifname.to_owned(), ingress, netns },
            )?;
        }
        // Keeps a link that is already there, cancelling its idle detach.
        st.places.get_mut(&key).expect("opened").attach(ifname, ingress)
    }

    /// Undoes one fault: the rule first (traffic stops being touched at once), then
    /// its kernel objects newest first, then classifier attachments nobody needs. What
    /// could not be undone stays in `f.objects` and in the journal; the errors are returned.
    pub(super) async fn teardown(&self, st: &mut State, f: &mut Active) -> Vec<String> {
        let mut errors = Vec::new();
        let key = f.place().unwrap_or(HOST);
        if let (Applied::Net { spec, slot, slot_free, .. }, Some(p)) =
            (&mut f.applied, st.places.get_mut(&key))
            && !*slot_free
        {
            match p.bpf.remove(*slot, &spec.matcher.peers) {
                Ok(()) => *slot_free = true,
                Err(e) => errors.push(format!("clearing eBPF slot {slot}: {e}")),
            }
        }
        let mut kept = Vec::new();
        let host = NetCtx { nl: &self.nl, ns: None };
        for obj in f.objects.iter().rev() {
            let net = st.places.get(&key).map_or(host, Place::ctx);
            match undo::undo(net, obj).await {
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
        let (Some(spec), Some(key)) = (f.net(), f.place()) else { return };
        for ingress in [false, true] {
            let used = st
                .faults
                .values()
                .filter(|o| o.id != f.id && o.place() == Some(key))
                .filter_map(Active::net)
                .any(|o| {
                    o.interface == spec.interface
                        && if ingress { o.direction.ingress() } else { o.direction.egress() }
                });
            if used {
                continue;
            }
            let Some(p) = st.places.get_mut(&key) else { continue };
            if !p.bpf.is_attached(&spec.interface, ingress) {
                continue;
            }
            if p.bpf.mode == AttachMode::Tcx {
                p.bpf.mark_idle(&spec.interface, ingress);
                continue;
            }
            if let Err(e) = p.detach(&spec.interface, ingress) {
                warn!("{e}");
            }
            let netns = p.nsref.clone();
            let filters = shared_objects(
                &st.journal,
                |o| matches!(o, KernelObject::ClsBpf { ifname, ingress: i, netns: n } if *ifname == spec.interface && *i == ingress && *n == netns),
            );
            for o in filters {
                let _ = st.journal.forget(&o);
            }
        }
        if let Some(p) = st.places.get(&key)
            && p.bpf.mode == AttachMode::Netlink
            && !p.bpf.is_attached(&spec.interface, true)
            && !p.bpf.is_attached(&spec.interface, false)
        {
            let netns = p.nsref.clone();
            let ours = shared_objects(
                &st.journal,
                |o| matches!(o, KernelObject::Qdisc { ifname, kind, netns: n, .. } if *ifname == spec.interface && kind == "clsact" && *n == netns),
            );
            for o in ours {
                if undo::undo(p.ctx(), &o).await.is_ok() {
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
            let dirs = [
                "/usr/lib/x86_64-linux-gnu/tc",
                "/usr/lib/aarch64-linux-gnu/tc",
                "/usr/lib/tc",
                "/usr/lib64/tc",
                "/lib/tc",
                "/etc/faultline/tc",
            ];
            let text = dirs
                .iter()
                .find_map(|d| std::fs::read_to_string(format!("{d}/{name}.dist")).ok())
                .ok_or_else(|| EngineError::Precondition(format!("netem.distribution: table {name}.dist not found in {dirs:?} (install iproute2)")))?;
            Some(tc_encode::parse_dist(&text).map_err(|e| {
                EngineError::Precondition(format!("netem.distribution: {name}.dist: {e}"))
            })?)
        }
    };
    Ok(tc_encode::netem_options(n, table.as_deref()))
}

/// Journaled objects shared by the faults of an interface (classifier attachments) that `pick` selects.
pub(super) fn shared_objects(
    journal: &Journal,
    pick: impl Fn(&KernelObject) -> bool,
) -> Vec<KernelObject> {
    journal
        .entries()
        .iter()
        .filter(|e| e.fault == SHARED && pick(&e.object))
        .map(|e| e.object.clone())
        .collect()
}
