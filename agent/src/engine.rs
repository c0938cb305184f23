//! The fault engine: applies, tracks, expires and reverts faults, journaling every
//! kernel object before creating it. The gRPC layer only translates to and from it.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use faultline_ebpf_common::{Hist, ACTION_DROP, ACTION_STEER, DIR_EGRESS, DIR_INGRESS, PortRange, Rule};
use faultline_proto::{agent::v1 as pb, doctor::feature};
use rtnetlink::Handle;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{
    fault::{FaultKind, FaultSpec, InvalidField, NetemSpec},
    journal::{Entry, Journal, KernelObject},
    kernel::{
        bpf::{self, AttachMode, Classifier},
        caps::{self, Capabilities},
        cgroup::Cgroup,
        link,
        procfs::Stat,
        trace::{self, Snapshot, Tracer},
        tc::{self, Qdisc, TC_H_CLSACT, TC_H_ROOT},
        tc_encode,
    },
    process::{self, ProcessFault},
};

mod procs;
mod undo;

/// Major handle of the htb root the agent installs; `fa17:1` is the shaped class.
pub const ROOT_HANDLE: u32 = 0xFA17_0000;
pub const SHAPED_CLASS: u32 = 0xFA17_0001;
/// Handle of the leaf qdisc (netem) under the shaped class.
pub const LEAF_HANDLE: u32 = 0xFA18_0000;
/// The unshaped class rate for netem-only faults: far above any NIC, so only netem shapes.
const UNLIMITED_BPS: u64 = 400_000_000_000;
/// How long an unused TCX classifier stays attached, so that fault cycles on one
/// interface do not pay two RCU grace periods each.
const IDLE_DETACH: Duration = Duration::from_secs(2);
/// Journal owner of objects shared by several faults (classifier attachments).
const SHARED: &str = "shared";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Kernel(String),
    /// A bounded table (fault slots, peers) is full.
    #[error("{0}")]
    Exhausted(String),
}

impl From<crate::journal::JournalError> for EngineError {
    fn from(e: crate::journal::JournalError) -> Self {
        Self::Kernel(e.to_string())
    }
}

impl From<bpf::BpfError> for EngineError {
    fn from(e: bpf::BpfError) -> Self {
        match e {
            bpf::BpfError::NoSlot | bpf::BpfError::PeersFull => Self::Exhausted(e.to_string()),
            other => Self::Kernel(other.to_string()),
        }
    }
}

pub struct Active {
    pub id: String,
    pub request: pb::FaultSpec,
    pub applied_at: SystemTime,
    pub expires: Instant,
    pub lease: Duration,
    pub objects: Vec<KernelObject>,
    pub applied: Applied,
    /// Set once a revert was tried and could not undo everything: what failed, and when
    /// to try again. The fault stays listed (with the error) until its objects are gone.
    pub revert_failed: Option<RevertFailed>,
}

pub struct RevertFailed {
    pub error: String,
    pub attempts: u32,
    pub next_try: Instant,
}

/// The wait before retry `attempts + 1` of a failed revert: 100 ms doubling to 10 s.
fn backoff(attempts: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempts.min(7))).min(Duration::from_secs(10))
}

/// What a fault acts through: the network classifier slot, or processes.
pub enum Applied {
    /// `rtt_before`: TCP's RTT samples to the fault's peers up to the moment it began.
    /// `slot_free`: the classifier slot was emptied and given back (another fault may hold
    /// it now, so a retried revert must not touch it again).
    Net { spec: FaultSpec, slot: u32, rtt_before: Option<Hist>, slot_free: bool },
    Process { spec: ProcessFault, processes: Vec<Stat>, cgroup: Option<Cgroup>, notes: Vec<String> },
}

impl Active {
    fn net(&self) -> Option<&FaultSpec> {
        match &self.applied {
            Applied::Net { spec, .. } => Some(spec),
            Applied::Process { .. } => None,
        }
    }
}

struct State {
    journal: Journal,
    /// Journal entries a previous agent left that could not be undone yet (retried).
    leftover: Vec<Entry>,
    bpf: Option<Classifier>,
    tracer: Option<Tracer>,
    faults: BTreeMap<String, Active>,
    next_id: u64,
}

pub struct Engine {
    state: Mutex<State>,
    nl: Handle,
    /// Every probe of what this host can do (`faultline_proto::doctor`).
    pub caps: Capabilities,
    /// Woken when a lease starts or changes, so the expiry loop sleeps until exactly the
    /// next deadline instead of polling.
    pub wake: tokio::sync::Notify,
    pub attach_mode: AttachMode,
}

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Loads the tc classifier and (unless disabled) the tracepoint programs, and probes the
/// host with the outcome: what `Describe` reports and `faultline-agent --doctor` prints.
pub fn load_programs(kernel_metrics: bool) -> (Option<Classifier>, Option<Tracer>, Capabilities) {
    let bpf = Classifier::load().map_err(|e| {
        warn!("eBPF unavailable: {e}");
        e.to_string()
    });
    let tracer = if kernel_metrics {
        trace::ensure_tracefs().and_then(|_| Tracer::load(crate::process::netns_scoped())).map_err(|e| {
            warn!("kernel metrics unavailable: {e}");
            e.to_string()
        })
    } else {
        Err("disabled (--no-kernel-metrics)".to_owned())
    };
    let caps = caps::detect(&bpf.as_ref().map(|b| b.mode).map_err(Clone::clone), &tracer.as_ref().map(|_| ()).map_err(Clone::clone));
    (bpf.ok(), tracer.ok(), caps)
}

impl Engine {
    /// Undoes what the journal in `state_dir` records and returns how many kernel objects
    /// that was: the service manager's cleanup after an agent that died without reverting.
    /// Anything that could not be undone is an error (and stays in the journal).
    pub async fn cleanup(state_dir: &std::path::Path, nl: Handle) -> Result<usize, EngineError> {
        crate::kernel::fds::refill();
        let (mut journal, leftover) = Journal::open(state_dir)?;
        let failed = undo::recover(&nl, &mut journal, &leftover).await;
        if !failed.is_empty() {
            return Err(EngineError::Kernel(format!(
                "could not undo {} of {} journaled objects; they stay in the journal: {}",
                failed.len(),
                leftover.len(),
                failed.iter().map(|(e, why)| format!("{} ({why})", describe(&e.object))).collect::<Vec<_>>().join("; ")
            )));
        }
        Ok(leftover.len())
    }

    /// Opens the journal, undoes whatever a previous agent left, loads the classifier.
    pub async fn start(state_dir: &std::path::Path, nl: Handle, kernel_metrics: bool) -> Result<Self, EngineError> {
        crate::kernel::fds::refill();
        let (mut journal, leftover) = Journal::open(state_dir)?;
        let mut left = Vec::new();
        if !leftover.is_empty() {
            info!(objects = leftover.len(), "reverting what a previous agent left");
            left = undo::recover(&nl, &mut journal, &leftover).await.into_iter().map(|(e, _)| e).collect();
        }
        let (bpf, tracer, caps) = load_programs(kernel_metrics);
        let attach_mode = bpf.as_ref().map_or(AttachMode::detect(), |b| b.mode);
        let next_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs()) % 1_000_000 * 1000;
        Ok(Self {
            state: Mutex::new(State { journal, leftover: left, bpf, tracer, faults: BTreeMap::new(), next_id }),
            nl,
            caps,
            wake: tokio::sync::Notify::new(),
            attach_mode,
        })
    }

    /// The next moment `expire` has work: a lease ending, a failed revert due for retry,
    /// an idle classifier link to detach; at most a second away (leftovers are retried then).
    pub async fn next_deadline(&self) -> Instant {
        let st = self.state.lock().await;
        let mut next = Instant::now() + Duration::from_secs(1);
        for f in st.faults.values() {
            next = next.min(f.revert_failed.as_ref().map_or(f.expires, |r| r.next_try));
        }
        if let Some(t) = st.bpf.as_ref().and_then(|b| b.next_sweep(IDLE_DETACH)) {
            next = next.min(t);
        }
        next
    }

    pub fn ebpf_available(&self) -> bool {
        self.caps.has(feature::EBPF)
    }

    /// Why the kernel metrics programs are not running; empty when they are.
    pub fn kernel_metrics_detail(&self) -> String {
        self.caps.probe(feature::TRACEPOINTS).filter(|p| !p.ok).map(|p| p.detail.clone()).unwrap_or_default()
    }

    /// Keeps the agent's own connections on `port` out of every fault by default.
    pub async fn exclude_control_port(&self, port: u16) -> Result<(), EngineError> {
        if let Some(b) = self.state.lock().await.bpf.as_mut() {
            b.exclude_port(port)?;
        }
        Ok(())
    }

    pub async fn apply(&self, request: pb::FaultSpec) -> Result<pb::FaultStatus, EngineError> {
        if process::is_process_kind(request.kind.as_ref()) {
            return self.apply_process(request).await;
        }
        let (spec, ifindex) = self.preflight_net(&request)?;
        let mut st = self.state.lock().await;
        self.preflight_locked(&st, &spec, ifindex).await?;
        st.next_id += 1;
        let id = format!("f-{}", st.next_id);
        let slot = st.bpf.as_mut().expect("checked").reserve_slot()?;
        let mut active = Active {
            id: id.clone(),
            request,
            applied_at: SystemTime::now(),
            expires: Instant::now() + spec.lease,
            lease: spec.lease,
            objects: Vec::new(),
            applied: Applied::Net { spec: spec.clone(), slot, rtt_before: rtt_to(&st, &spec), slot_free: false },
            revert_failed: None,
        };
        match self.build(&mut st, &mut active, &spec, slot, ifindex).await {
            Ok(()) => {
                // The moment the kernel change is in place: what a run's timeline shows.
                active.applied_at = SystemTime::now();
                info!(id, kind = spec.kind.name(), interface = spec.interface, "applied");
                let status = status(&st, &active);
                st.faults.insert(id, active);
                self.wake.notify_one();
                Ok(status)
            }
            Err(e) => {
                warn!(id, "apply failed, rolling back: {e}");
                self.roll_back(&mut st, active).await;
                Err(e)
            }
        }
    }

    /// Everything `apply` checks before it changes anything, and nothing more: a
    /// controller asks every agent this first, so that a refusal on one agent never leaves
    /// a transient effect on another. The answer lists what would be acted on.
    pub async fn check(&self, request: pb::FaultSpec) -> Result<pb::FaultStatus, EngineError> {
        if process::is_process_kind(request.kind.as_ref()) {
            return self.check_process(request);
        }
        let (spec, ifindex) = self.preflight_net(&request)?;
        let st = self.state.lock().await;
        self.preflight_locked(&st, &spec, ifindex).await?;
        if !st.bpf.as_ref().is_some_and(|b| b.slots_in_use() < faultline_ebpf_common::MAX_RULES as usize) {
            return Err(bpf::BpfError::NoSlot.into());
        }
        Ok(pb::FaultStatus { id: "check".into(), spec: Some(request), engine: if spec.kind.uses_qdisc() { "tc".into() } else { "ebpf".into() }, ..Default::default() })
    }

    /// The request's own checks and what this host offers.
    fn preflight_net(&self, request: &pb::FaultSpec) -> Result<(FaultSpec, u32), EngineError> {
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
    async fn preflight_locked(&self, st: &State, spec: &FaultSpec, ifindex: u32) -> Result<(), EngineError> {
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
        if spec.direction.egress() {
            if let Some(q) = tc::root_qdisc(&self.nl, ifindex).await.map_err(|e| EngineError::Kernel(e.to_string()))? {
                if q.handle != 0 {
                    return Err(EngineError::Precondition(format!(
                        "{} has a root qdisc {} {} that faultline did not create; it is left untouched. Remove it, or fault another interface",
                        spec.interface,
                        q.kind,
                        tc::fmt_handle(q.handle)
                    )));
                }
            }
        }
        Ok(())
    }

    async fn build(&self, st: &mut State, f: &mut Active, spec: &FaultSpec, slot: u32, ifindex: u32) -> Result<(), EngineError> {
        let mut rule = Rule {
            ifindex,
            directions: (if spec.direction.egress() { DIR_EGRESS } else { 0 }) | (if spec.direction.ingress() { DIR_INGRESS } else { 0 }),
            protocol: spec.matcher.protocol.map_or(0, |p| p.ip_number()),
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
                    let ifb = link::create_ifb(&self.nl, &name).await.map_err(|e| EngineError::Kernel(format!("creating {name}: {e}")))?;
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
        let kerr = |e: tc::TcError| EngineError::Kernel(e.to_string());
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
            let qdiscs = tc::list_qdiscs(&self.nl, ifindex).await.map_err(|e| EngineError::Kernel(e.to_string()))?;
            if !qdiscs.iter().any(|q| q.parent == TC_H_CLSACT) {
                st.journal.record(SHARED, KernelObject::Qdisc { ifname: ifname.to_owned(), ifindex, parent: TC_H_CLSACT, handle: 0xFFFF_0000, kind: "clsact".into() })?;
                bpf::add_clsact(ifname).map_err(EngineError::Kernel)?;
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
    async fn teardown(&self, st: &mut State, f: &mut Active) -> Vec<String> {
        let mut errors = Vec::new();
        if let (Applied::Net { spec, slot, slot_free, .. }, Some(b)) = (&mut f.applied, st.bpf.as_mut()) {
            if !*slot_free {
                match b.remove(*slot, &spec.matcher.peers) {
                    Ok(()) => *slot_free = true,
                    Err(e) => errors.push(format!("clearing eBPF slot {slot}: {e}")),
                }
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
    async fn release_attachments(&self, st: &mut State, f: &Active) {
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
        if let Some(b) = st.bpf.as_ref() {
            if b.mode == AttachMode::Netlink && !b.is_attached(&spec.interface, true) && !b.is_attached(&spec.interface, false) {
                let ours = shared_objects(&st.journal, |o| matches!(o, KernelObject::Qdisc { ifname, kind, .. } if *ifname == spec.interface && kind == "clsact"));
                for o in ours {
                    if undo::undo(&self.nl, &o).await.is_ok() {
                        let _ = st.journal.forget(&o);
                    }
                }
            }
        }
    }

    /// Undoes a fault whose apply failed. Whatever cannot be undone now is kept as a
    /// fault whose revert failed, so it is listed and retried like any other.
    async fn roll_back(&self, st: &mut State, mut f: Active) {
        let errors = self.teardown(st, &mut f).await;
        if !errors.is_empty() {
            warn!(id = f.id, "rollback incomplete, retrying: {}", errors.join("; "));
            f.revert_failed = Some(RevertFailed { error: errors.join("; "), attempts: 1, next_try: Instant::now() + backoff(1) });
            st.faults.insert(f.id.clone(), f);
        }
    }

    /// Reverts one fault. A revert that cannot undo everything keeps the fault, with
    /// what failed, and retries with backoff: nothing is forgotten that is still there.
    pub async fn revert(&self, id: &str) -> Result<(), EngineError> {
        let mut st = self.state.lock().await;
        let Some(mut f) = st.faults.remove(id) else {
            let known: Vec<&String> = st.faults.keys().collect();
            return Err(EngineError::NotFound(format!("no active fault {} (active: {known:?})", faultline_proto::quote(id))));
        };
        let errors = self.teardown(&mut st, &mut f).await;
        if errors.is_empty() {
            info!(id, "reverted");
            return Ok(());
        }
        let attempts = f.revert_failed.as_ref().map_or(0, |r| r.attempts) + 1;
        let error = errors.join("; ");
        warn!(id, attempts, "revert incomplete, will retry: {error}");
        f.revert_failed = Some(RevertFailed { error: error.clone(), attempts, next_try: Instant::now() + backoff(attempts) });
        st.faults.insert(id.to_owned(), f);
        Err(EngineError::Kernel(format!("revert of {id} incomplete: {error}; the journal keeps what is left and the agent retries")))
    }

    pub async fn revert_all(&self) -> Vec<String> {
        let ids: Vec<String> = self.state.lock().await.faults.keys().cloned().collect();
        let mut done = Vec::new();
        for id in ids {
            if self.revert(&id).await.is_ok() {
                done.push(id);
            }
        }
        if let Some(b) = self.state.lock().await.bpf.as_mut() {
            b.sweep(Duration::ZERO);
        }
        done
    }

    /// Reverts every fault whose lease has run out, retries failed reverts that are due,
    /// and detaches classifiers idle for `IDLE_DETACH`; returns the reverted ids.
    pub async fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let (due, retry) = {
            let mut st = self.state.lock().await;
            if let Some(b) = st.bpf.as_mut() {
                b.sweep(IDLE_DETACH);
            }
            let due: Vec<String> = st.faults.values().filter(|f| f.revert_failed.is_none() && f.expires <= now).map(|f| f.id.clone()).collect();
            let retry: Vec<String> = st.faults.values().filter(|f| f.revert_failed.as_ref().is_some_and(|r| r.next_try <= now)).map(|f| f.id.clone()).collect();
            (due, retry)
        };
        let mut reverted = Vec::new();
        for id in &due {
            info!(id, "lease expired");
            if self.revert(id).await.is_ok() {
                reverted.push(id.clone());
            }
        }
        for id in &retry {
            if self.revert(id).await.is_ok() {
                info!(id, "reverted on retry");
                reverted.push(id.clone());
            }
        }
        self.retry_leftover().await;
        reverted
    }

    /// Tries again what a previous agent left and could not be undone at start.
    async fn retry_leftover(&self) {
        let mut st = self.state.lock().await;
        if st.leftover.is_empty() {
            return;
        }
        let leftover = std::mem::take(&mut st.leftover);
        let failed = undo::recover(&self.nl, &mut st.journal, &leftover).await;
        st.leftover = failed.into_iter().map(|(e, _)| e).collect();
    }

    pub async fn renew(&self, ids: &[String], lease: Option<Duration>) -> Result<Vec<pb::FaultStatus>, EngineError> {
        let mut st = self.state.lock().await;
        if let Some(l) = lease {
            if l > crate::fault::MAX_LEASE {
                return Err(InvalidField { field: "lease_ms".into(), reason: format!("at most {} s", crate::fault::MAX_LEASE.as_secs()) }.into());
            }
        }
        for id in ids {
            if !st.faults.contains_key(id) {
                return Err(EngineError::NotFound(format!("no active fault {}", faultline_proto::quote(id))));
            }
        }
        let now = Instant::now();
        let mut out = Vec::new();
        let keys: Vec<String> = if ids.is_empty() { st.faults.keys().cloned().collect() } else { ids.to_vec() };
        for id in keys {
            let f = st.faults.get_mut(&id).expect("checked");
            f.expires = now + lease.unwrap_or(f.lease);
        }
        self.wake.notify_one();
        for id in st.faults.keys() {
            if ids.is_empty() || ids.contains(id) {
                out.push(status(&st, &st.faults[id]));
            }
        }
        Ok(out)
    }

    pub async fn list(&self) -> Vec<pb::FaultStatus> {
        let (mut out, shaped) = {
            let st = self.state.lock().await;
            let out: Vec<pb::FaultStatus> = st.faults.values().map(|f| status(&st, f)).chain(leftover_status(&st)).collect();
            (out, shaped(&st))
        };
        self.observe_bandwidth(&mut out, shaped).await;
        out
    }

    /// A rate limit's effect, as its htb class counted it (the class is created with the
    /// fault, so its counters are the fault's): the rate that passed on average, and the
    /// packets held back over the limit and dropped.
    async fn observe_bandwidth(&self, statuses: &mut [pb::FaultStatus], shaped: Vec<Shaped>) {
        for s in shaped {
            let mut total = tc::ClassStats::default();
            for ifindex in &s.ifindexes {
                if let Ok(Some(c)) = tc::class_stats(&self.nl, *ifindex, SHAPED_CLASS).await {
                    total.bytes += c.bytes;
                    total.packets += c.packets;
                    total.drops += c.drops;
                    total.overlimits += c.overlimits;
                }
            }
            let secs = s.since.elapsed().unwrap_or_default().as_secs_f64().max(0.001);
            let measured = total.bytes as f64 * 8.0 / secs;
            if let Some(st) = statuses.iter_mut().find(|x| x.id == s.id) {
                st.observed = Some(pb::Observed {
                    summary: format!(
                        "passed {:.1} kbit/s on average over {secs:.1} s (limit {:.1} kbit/s); {} packets over the limit were delayed, {} dropped",
                        measured / 1000.0,
                        s.rate_bps as f64 / 1000.0,
                        total.overlimits,
                        total.drops
                    ),
                    configured: s.rate_bps as f64,
                    measured,
                    unit: "bit/s".into(),
                    samples: total.packets,
                });
            }
        }
    }

    /// The kernel metrics (when running) and every active fault, read together.
    pub async fn metrics(&self) -> (Option<Snapshot>, Vec<pb::FaultStatus>) {
        let (snap, mut faults, shaped) = {
            let st = self.state.lock().await;
            (st.tracer.as_ref().map(Tracer::snapshot), st.faults.values().map(|f| status(&st, f)).collect::<Vec<_>>(), shaped(&st))
        };
        self.observe_bandwidth(&mut faults, shaped).await;
        (snap, faults)
    }
}

/// A bandwidth fault's htb classes (egress, and the IFB device's for ingress).
struct Shaped {
    id: String,
    ifindexes: Vec<u32>,
    rate_bps: u64,
    since: SystemTime,
}

fn shaped(st: &State) -> Vec<Shaped> {
    st.faults
        .values()
        .filter(|f| f.revert_failed.is_none())
        .filter_map(|f| {
            let spec = f.net()?;
            let FaultKind::Bandwidth { rate_bps, .. } = spec.kind else { return None };
            let egress = link::ifindex(&spec.interface)?;
            let mut ifindexes = Vec::new();
            if spec.direction.egress() {
                ifindexes.push(egress);
            }
            if spec.direction.ingress() {
                ifindexes.extend(link::ifindex(&link::ifb_name(egress)));
            }
            Some(Shaped { id: f.id.clone(), ifindexes, rate_bps, since: f.applied_at })
        })
        .collect()
}

/// TCP's RTT samples to the peers of a netem delay fault, summed (None when the
/// fault has no delay or no peers, or metrics are off).
fn rtt_to(st: &State, spec: &FaultSpec) -> Option<Hist> {
    let FaultKind::Netem(n) = &spec.kind else { return None };
    if n.delay.is_zero() || spec.matcher.peers.is_empty() {
        return None;
    }
    Some(st.tracer.as_ref()?.rtt_of(|key| spec.matcher.peers.iter().any(|c| c.contains(key))))
}

fn observed(st: &State, f: &Active, c: Option<&faultline_ebpf_common::Counters>) -> Option<pb::Observed> {
    let Applied::Net { spec, rtt_before, .. } = &f.applied else { return None };
    let configured = match &spec.kind {
        FaultKind::Drop { probability } => Some(probability * 100.0),
        FaultKind::Partition => Some(100.0),
        _ => None,
    };
    if let (Some(configured), Some(c)) = (configured, c) {
        let measured = if c.matched_packets == 0 { 0.0 } else { c.dropped_packets as f64 * 100.0 / c.matched_packets as f64 };
        return Some(pb::Observed {
            summary: format!("dropped {measured:.2} % of {} matched packets (asked {configured} %)", c.matched_packets),
            configured,
            measured,
            unit: "percent".into(),
            samples: c.matched_packets,
        });
    }
    match &spec.kind {
        FaultKind::Netem(n) => {
            let before = rtt_before.as_ref()?;
            let now = rtt_to(st, spec)?;
            let during_n = now.count.saturating_sub(before.count);
            let during_sum = now.sum_us.saturating_sub(before.sum_us);
            let configured = n.delay.as_secs_f64() * 1000.0;
            if during_n == 0 {
                return Some(pb::Observed { summary: "no TCP RTT samples to the fault's peers yet".into(), configured, unit: "ms".into(), ..Default::default() });
            }
            let during = during_sum as f64 / during_n as f64 / 1000.0;
            let (measured, summary) = if before.count == 0 {
                (during, format!("TCP smoothed RTT to the peers {during:.1} ms over {during_n} samples (none before the fault to compare; asked +{configured} ms)"))
            } else {
                let base = before.sum_us as f64 / before.count as f64 / 1000.0;
                (during - base, format!("TCP smoothed RTT to the peers {base:.1} ms before, {during:.1} ms during: +{:.1} ms (asked +{configured} ms)", during - base))
            };
            Some(pb::Observed { summary, configured, measured, unit: "ms".into(), samples: during_n })
        }
        _ => None,
    }
}

fn status(st: &State, f: &Active) -> pb::FaultStatus {
    let c = match &f.applied {
        Applied::Net { slot, .. } => st.bpf.as_ref().and_then(|b| b.counters(*slot).ok()),
        Applied::Process { .. } => None,
    };
    let left = f.expires.saturating_duration_since(Instant::now());
    pb::FaultStatus {
        id: f.id.clone(),
        spec: Some(f.request.clone()),
        applied_at_unix_ms: unix_ms(f.applied_at),
        lease_expires_at_unix_ms: unix_ms(SystemTime::now() + left),
        engine: match &f.applied {
            Applied::Net { spec, .. } if spec.kind.uses_qdisc() => "tc".into(),
            Applied::Net { .. } => "ebpf".into(),
            Applied::Process { .. } => "process".into(),
        },
        kernel_objects: f.objects.iter().map(describe).chain(notes(f)).collect(),
        counters: c.map(|c| pb::Counters { matched_packets: c.matched_packets, matched_bytes: c.matched_bytes, dropped_packets: c.dropped_packets }),
        processes: match &f.applied {
            Applied::Process { processes, .. } => processes.iter().map(|p| pb::Process { pid: p.id.pid, start_time: p.id.start_time, name: p.comm.clone() }).collect(),
            Applied::Net { .. } => Vec::new(),
        },
        cgroup: match &f.applied {
            Applied::Process { cgroup: Some(c), .. } => c.rel.clone(),
            _ => String::new(),
        },
        observed: observed(st, f, c.as_ref()),
        revert_error: f.revert_failed.as_ref().map(|r| format!("{} (attempt {}, retrying)", r.error, r.attempts)).unwrap_or_default(),
    }
}

/// What a previous agent left and this one could not undo yet, shown as one entry so
/// `fault list` never looks clean while the kernel is not.
fn leftover_status(st: &State) -> Option<pb::FaultStatus> {
    (!st.leftover.is_empty()).then(|| pb::FaultStatus {
        id: "leftover".into(),
        engine: "journal".into(),
        kernel_objects: st.leftover.iter().map(|e| describe(&e.object)).collect(),
        revert_error: "left by a previous agent; undo failed, retrying".into(),
        ..Default::default()
    })
}

fn notes(f: &Active) -> Vec<String> {
    match &f.applied {
        Applied::Process { notes, .. } => notes.clone(),
        Applied::Net { .. } => Vec::new(),
    }
}

pub(crate) fn describe(o: &KernelObject) -> String {
    match o {
        KernelObject::Qdisc { ifname, handle, kind, .. } => format!("qdisc {kind} {} on {ifname}", tc::fmt_handle(*handle)),
        KernelObject::Ifb { name } => format!("ifb {name}"),
        KernelObject::ClsBpf { ifname, ingress } => format!("cls_bpf {} on {ifname}", if *ingress { "ingress" } else { "egress" }),
        KernelObject::CgroupFreeze { dir } => format!("cgroup.freeze=1 in {}", dir.display()),
        KernelObject::Stopped { pid, .. } => format!("SIGSTOP pid {pid}"),
        KernelObject::Child { pid, .. } => format!("stress worker pid {pid}"),
        KernelObject::CpuMax { dir, ours, previous } => format!("cpu.max {ours} (was {previous}) in {}", dir.display()),
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
fn shared_objects(journal: &Journal, pick: impl Fn(&KernelObject) -> bool) -> Vec<KernelObject> {
    journal.entries().iter().filter(|e| e.fault == SHARED && pick(&e.object)).map(|e| e.object.clone()).collect()
}
