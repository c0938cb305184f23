//! The fault engine: applies, tracks, expires and reverts faults, journaling every
//! kernel object before creating it. The gRPC layer only translates to and from it.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use faultline_ebpf_common::Hist;
use faultline_proto::{agent::v1 as pb, doctor::feature};
use rtnetlink::Handle;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{
    containers::{Container, Runtimes},
    fault::{FaultSpec, InvalidField},
    journal::{Entry, Journal, KernelObject},
    kernel::{
        bpf::{self, AttachMode, Classifier},
        caps::{self, Capabilities},
        cgroup::Cgroup,
        procfs::Stat,
        trace::{self, Tracer},
    },
    process::{self, ProcessFault},
};

mod net;
mod place;
mod procs;
mod status;
mod undo;

use place::{HOST, Place};
pub(crate) use status::describe;
use status::{rtt_to, status};

/// Major handle of the htb root the agent installs; `fa17:1` is the shaped class.
pub const ROOT_HANDLE: u32 = 0xFA17_0000;
pub const SHAPED_CLASS: u32 = 0xFA17_0001;
/// Handle of the leaf qdisc (netem) under the shaped class.
pub const LEAF_HANDLE: u32 = 0xFA18_0000;
/// The unshaped class rate for netem-only faults: far above any NIC, so only netem shapes.
const UNLIMITED_BPS: u64 = 400_000_000_000;
/// How long an unused TCX classifier stays attached, so that fault cycles on one
/// interface do not pay two RCU grace periods each; and how long a container's place
/// (its classifier loaded, its namespace held) outlives its last fault.
const IDLE_DETACH: Duration = Duration::from_secs(2);
/// Classifiers loaded ahead for container places. Loading one (the verifier walking its
/// 16 slots) takes about 280 ms here; an apply takes a ready one and the refill runs off
/// its path. Two: a partition between two containers on one host opens two places at once
/// (with one spare its first apply took 653 ms, the second place loading its own while the
/// refill competed for the CPU); each spare costs its load time once, on hosts with a
/// container runtime only.
const SPARE_CLASSIFIERS: usize = 2;
/// How often kernel metrics learn the host's containers and their addresses (each a
/// runtime list; Docker's also an inspect per container).
const OWNERS_REFRESH: Duration = Duration::from_secs(5);
/// Interfaces of the agent's namespace that are up, not loopback and hold an address
/// (where host faults go; a container's host-side veth holds none), sorted, at most `max`.
fn host_interfaces(max: usize) -> Result<Vec<String>, nix::Error> {
    use nix::net::if_::InterfaceFlags as F;
    let mut names: Vec<String> = nix::ifaddrs::getifaddrs()?
        .filter(|a| a.flags.contains(F::IFF_UP) && !a.flags.contains(F::IFF_LOOPBACK))
        .filter(|a| {
            a.address
                .as_ref()
                .is_some_and(|s| s.as_sockaddr_in().is_some() || s.as_sockaddr_in6().is_some())
        })
        .map(|a| a.interface_name)
        .collect();
    names.sort();
    names.dedup();
    names.truncate(max);
    Ok(names)
}

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
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A bounded table (fault slots, peers) is full.
    #[error("{0}")]
    Exhausted(String),
    /// Outside what this agent may touch (`--scope-label`), whoever asks.
    #[error("{0}")]
    Denied(String),
}

/// Why the kernel, or a program the agent runs for a fault, did not do what was asked.
/// Each cause stays its own error, so `source()` leads down to the syscall's errno; the
/// message reads as before (what was being done, then why).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Tc(#[from] crate::kernel::tc::TcError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Bpf(bpf::BpfError),
    #[error(transparent)]
    Signal(#[from] crate::kernel::procfs::SignalError),
    #[error(transparent)]
    Cgroup(crate::kernel::cgroup::CgroupError),
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    #[error("adding clsact to {ifname}: {source}")]
    Clsact { ifname: String, source: aya::programs::TcError },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// Said without an error value: a program's stderr, processes that survived
    /// SIGKILL, the parts of a revert that failed (each already said).
    #[error("{0}")]
    Refused(String),
}

impl From<crate::journal::JournalError> for EngineError {
    fn from(e: crate::journal::JournalError) -> Self {
        Self::Kernel(e.into())
    }
}

impl From<bpf::BpfError> for EngineError {
    fn from(e: bpf::BpfError) -> Self {
        match e {
            bpf::BpfError::NoSlot | bpf::BpfError::PeersFull => Self::Exhausted(e.to_string()),
            other => Self::Kernel(KernelError::Bpf(other)),
        }
    }
}

impl From<crate::containers::ContainerError> for EngineError {
    fn from(e: crate::containers::ContainerError) -> Self {
        use crate::containers::ContainerError as C;
        match e {
            C::Invalid(f) => Self::Invalid(f),
            C::NotFound(m) => Self::NotFound(m),
            C::Unreachable(m) => Self::Precondition(m),
            C::OutOfScope(m) => Self::Denied(m),
        }
    }
}

impl EngineError {
    /// The kernel (or a program) refused, with no error value to keep.
    fn refused(what: impl Into<String>) -> Self {
        Self::Kernel(KernelError::Refused(what.into()))
    }

    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Kernel(KernelError::Io { what: what.into(), source })
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
    /// The container a container-targeted fault acts in.
    pub container: Option<Container>,
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
    /// `place`: the namespace it acts in (`place::HOST`, or a container's namespace inode);
    /// `shaped`: the devices whose htb class is the fault's (its interface, its IFB).
    Net {
        spec: FaultSpec,
        place: u64,
        slot: u32,
        shaped: Vec<u32>,
        rtt_before: Option<Hist>,
        slot_free: bool,
    },
    Process {
        spec: ProcessFault,
        processes: Vec<Stat>,
        cgroup: Option<Cgroup>,
        notes: Vec<String>,
    },
}

impl Active {
    fn net(&self) -> Option<&FaultSpec> {
        match &self.applied {
            Applied::Net { spec, .. } => Some(spec),
            Applied::Process { .. } => None,
        }
    }

    /// Notes a device whose htb class the fault made (for its observed rate).
    fn shaped(&mut self, ifindex: u32) {
        if let Applied::Net { shaped, .. } = &mut self.applied {
            shaped.push(ifindex);
        }
    }

    /// The place a network fault acts in.
    fn place(&self) -> Option<u64> {
        match &self.applied {
            Applied::Net { place, .. } => Some(*place),
            Applied::Process { .. } => None,
        }
    }
}

struct State {
    journal: Journal,
    /// Journal entries a previous agent left that could not be undone yet (retried).
    leftover: Vec<Entry>,
    /// The agent's own namespace (`HOST`, when eBPF loaded) and every container namespace
    /// a fault acts in now.
    places: BTreeMap<u64, Place>,
    /// Loaded, attached nowhere: the next container places' classifiers.
    spares: Vec<Classifier>,
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
    pub runtimes: Runtimes,
    /// Woken when a spare classifier was taken (`keep_spares` loads another).
    spare_taken: tokio::sync::Notify,
}

pub(crate) use faultline_proto::unix_ms;

/// Loads the tc classifier and (unless disabled) the tracepoint programs, and probes the
/// host with the outcome: what `Describe` reports and `faultline-agent --doctor` prints.
pub fn load_programs(kernel_metrics: bool) -> (Option<Classifier>, Option<Tracer>, Capabilities) {
    let bpf = Classifier::load().map_err(|e| {
        warn!("eBPF unavailable: {e}");
        e.to_string()
    });
    let tracer = if kernel_metrics {
        trace::ensure_tracefs().and_then(|_| Tracer::load(crate::process::netns_scoped())).map_err(
            |e| {
                warn!("kernel metrics unavailable: {e}");
                e.to_string()
            },
        )
    } else {
        Err("disabled (--no-kernel-metrics)".to_owned())
    };
    let caps = caps::detect(
        &bpf.as_ref().map(|b| b.mode).map_err(Clone::clone),
        &tracer.as_ref().map(|_| ()).map_err(Clone::clone),
    );
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
            return Err(EngineError::refused(format!(
                "could not undo {} of {} journaled objects; they stay in the journal: {}",
                failed.len(),
                leftover.len(),
                failed
                    .iter()
                    .map(|(e, why)| format!("{} ({why})", describe(&e.object)))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(leftover.len())
    }

    /// Opens the journal, undoes whatever a previous agent left, loads the classifier.
    pub async fn start(
        state_dir: &std::path::Path,
        nl: Handle,
        kernel_metrics: bool,
        runtimes: Runtimes,
    ) -> Result<Self, EngineError> {
        crate::kernel::fds::refill();
        let (mut journal, leftover) = Journal::open(state_dir)?;
        let mut left = Vec::new();
        if !leftover.is_empty() {
            info!(objects = leftover.len(), "reverting what a previous agent left");
            left = undo::recover(&nl, &mut journal, &leftover)
                .await
                .into_iter()
                .map(|(e, _)| e)
                .collect();
        }
        let (bpf, tracer, caps) = load_programs(kernel_metrics);
        let attach_mode = bpf.as_ref().map_or(AttachMode::detect(), |b| b.mode);
        let next_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs())
            % 1_000_000
            * 1000;
        let places = bpf
            .into_iter()
            .map(|bpf| {
                (HOST, Place { nl: nl.clone(), ns: None, nsref: None, bpf, idle_since: None })
            })
            .collect();
        Ok(Self {
            state: Mutex::new(State {
                journal,
                leftover: left,
                places,
                spares: Vec::new(),
                tracer,
                faults: BTreeMap::new(),
                next_id,
            }),
            nl,
            caps,
            wake: tokio::sync::Notify::new(),
            attach_mode,
            runtimes,
            spare_taken: tokio::sync::Notify::new(),
        })
    }

    /// Attaches the host's classifier, both ways, to up to `max` of the host's interfaces
    /// that are up and hold an address (not loopback), so the first drop or partition there
    /// is as fast as a later one: each TCX attach waits for an RCU grace period (~15 ms
    /// here, per direction), where the apply itself takes well under a millisecond.
    /// Until a fault uses it the program passes every packet after one look at its 16 rule
    /// slots (~0.1 µs). TCX kernels only; one attach per lock, so applies wait little.
    pub async fn attach_ahead(self: std::sync::Arc<Self>, max: usize) {
        if max == 0 || self.attach_mode != AttachMode::Tcx || !self.ebpf_available() {
            return;
        }
        let names = match host_interfaces(max) {
            Ok(n) => n,
            Err(e) => {
                warn!("listing interfaces to attach the classifier ahead: {e}");
                return;
            }
        };
        for ifname in &names {
            for ingress in [false, true] {
                let mut st = self.state.lock().await;
                let Some(p) = st.places.get_mut(&HOST) else { return };
                if let Err(e) = p.attach_ahead(ifname, ingress) {
                    warn!("attaching the classifier ahead to {ifname}: {e}");
                }
            }
        }
        info!(interfaces = ?names, "classifier attached ahead");
    }

    /// Keeps `SPARE_CLASSIFIERS` loaded for container places, for the agent's life.
    pub async fn keep_spares(self: std::sync::Arc<Self>) {
        if !self.ebpf_available() {
            return;
        }
        // A host with no container runtime loads none until a container fault needs one.
        if !self.runtimes.any_socket() {
            self.spare_taken.notified().await;
        }
        loop {
            if self.state.lock().await.spares.len() >= SPARE_CLASSIFIERS {
                self.spare_taken.notified().await;
                continue;
            }
            match tokio::task::spawn_blocking(Classifier::load).await {
                Ok(Ok(c)) => self.state.lock().await.spares.push(c),
                Ok(Err(e)) => {
                    warn!("loading a spare classifier: {e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(e) => {
                    warn!("loading a spare classifier: {e}");
                    return;
                }
            }
        }
    }

    /// Keeps the kernel metrics' container attribution in step with this host's
    /// containers, for the agent's life (a runtime that starts later is picked up).
    pub async fn keep_owners(self: std::sync::Arc<Self>) {
        if self.state.lock().await.tracer.is_none() {
            return;
        }
        let mut had = false;
        loop {
            // Only while a runtime is there, or just went away (to clear the table).
            if self.runtimes.any_socket() || had {
                let (list, _) = self.runtimes.list(&[]).await;
                let owned =
                    tokio::task::spawn_blocking(move || crate::containers::with_addresses(list))
                        .await
                        .unwrap_or_default();
                let owners: Vec<(String, String, Vec<std::net::IpAddr>)> =
                    owned.into_iter().map(|c| (c.id, c.name, c.addresses)).collect();
                had = !owners.is_empty();
                if let Some(t) = self.state.lock().await.tracer.as_ref() {
                    t.set_owners(&owners);
                }
            }
            tokio::time::sleep(OWNERS_REFRESH).await;
        }
    }

    /// A loaded classifier for a new container place: a spare if one is ready.
    fn take_classifier(&self, st: &mut State) -> Result<Classifier, EngineError> {
        let c = match st.spares.pop() {
            Some(c) => c,
            None => Classifier::load()?,
        };
        self.spare_taken.notify_one();
        Ok(c)
    }

    /// The next moment `expire` has work: a lease ending, a failed revert due for retry,
    /// an idle classifier link to detach; at most a second away (leftovers are retried then).
    pub async fn next_deadline(&self) -> Instant {
        let st = self.state.lock().await;
        let mut next = Instant::now() + Duration::from_secs(1);
        for f in st.faults.values() {
            next = next.min(f.revert_failed.as_ref().map_or(f.expires, |r| r.next_try));
        }
        for t in st
            .places
            .values()
            .flat_map(|p| [p.bpf.next_sweep(IDLE_DETACH), p.idle_since.map(|t| t + IDLE_DETACH)])
            .flatten()
        {
            next = next.min(t);
        }
        next
    }

    pub fn ebpf_available(&self) -> bool {
        self.caps.has(feature::EBPF)
    }

    /// Why the kernel metrics programs are not running; empty when they are.
    pub fn kernel_metrics_detail(&self) -> String {
        self.caps
            .probe(feature::TRACEPOINTS)
            .filter(|p| !p.ok)
            .map(|p| p.detail.clone())
            .unwrap_or_default()
    }

    /// Keeps the agent's own connections on `port` out of every fault by default.
    pub async fn exclude_control_port(&self, port: u16) -> Result<(), EngineError> {
        if let Some(p) = self.state.lock().await.places.get_mut(&HOST) {
            p.bpf.exclude_port(port)?;
        }
        Ok(())
    }

    pub async fn apply(&self, mut request: pb::FaultSpec) -> Result<pb::FaultStatus, EngineError> {
        if process::is_process_kind(request.kind.as_ref()) {
            return self.apply_process(request).await;
        }
        let target = self.preflight_net(&request).await?;
        let (spec, ifindex, key) = (target.spec.clone(), target.ifindex, target.key());
        let container = target.container.as_ref().map(|(c, _)| c.clone());
        // The status names the interface acted on, also where the request left it to the agent.
        request.interface.clone_from(&spec.interface);
        let mut st = self.state.lock().await;
        self.open_place(&mut st, target)?;
        let slot = match self
            .preflight_locked(&st, key, &spec, ifindex)
            .await
            .and_then(|()| Ok(st.places.get_mut(&key).expect("opened").bpf.reserve_slot()?))
        {
            Ok(slot) => slot,
            Err(e) => {
                release_place(&mut st, key);
                return Err(e);
            }
        };
        st.next_id += 1;
        let id = format!("f-{}", st.next_id);
        let mut active = Active {
            id: id.clone(),
            request,
            applied_at: SystemTime::now(),
            expires: Instant::now() + spec.lease,
            lease: spec.lease,
            objects: Vec::new(),
            applied: Applied::Net {
                spec: spec.clone(),
                place: key,
                slot,
                shaped: Vec::new(),
                rtt_before: rtt_to(&st, &spec),
                slot_free: false,
            },
            revert_failed: None,
            container,
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
            return self.check_process(request).await;
        }
        let target = self.preflight_net(&request).await?;
        let (spec, ifindex, key) = (target.spec.clone(), target.ifindex, target.key());
        let container = target.container.as_ref().map(|(c, ns)| c.to_wire(ns.inode));
        let mut st = self.state.lock().await;
        // A check changes nothing in the kernel: a place it had to open is only left idle
        // (closed 2 s later), so the apply a controller sends next finds it ready.
        self.open_place(&mut st, target)?;
        let result =
            self.preflight_locked(&st, key, &spec, ifindex).await.and_then(|()| {
                if st.places.get(&key).is_none_or(|p| {
                    p.bpf.slots_in_use() >= faultline_ebpf_common::MAX_RULES as usize
                }) {
                    return Err(bpf::BpfError::NoSlot.into());
                }
                Ok(())
            });
        release_place(&mut st, key);
        result?;
        Ok(pb::FaultStatus {
            id: "check".into(),
            spec: Some(request),
            engine: if spec.kind.uses_qdisc() { "tc".into() } else { "ebpf".into() },
            container,
            ..Default::default()
        })
    }

    /// Undoes a fault whose apply failed. Whatever cannot be undone now is kept as a
    /// fault whose revert failed, so it is listed and retried like any other.
    async fn roll_back(&self, st: &mut State, mut f: Active) {
        let errors = self.teardown(st, &mut f).await;
        if let Some(key) = f.place()
            && errors.is_empty()
        {
            release_place(st, key);
        }
        if !errors.is_empty() {
            warn!(id = f.id, "rollback incomplete, retrying: {}", errors.join("; "));
            f.revert_failed = Some(RevertFailed {
                error: errors.join("; "),
                attempts: 1,
                next_try: Instant::now() + backoff(1),
            });
            st.faults.insert(f.id.clone(), f);
        }
    }

    /// Reverts one fault. A revert that cannot undo everything keeps the fault, with
    /// what failed, and retries with backoff: nothing is forgotten that is still there.
    pub async fn revert(&self, id: &str) -> Result<(), EngineError> {
        let mut st = self.state.lock().await;
        let Some(mut f) = st.faults.remove(id) else {
            let known: Vec<&String> = st.faults.keys().collect();
            return Err(EngineError::NotFound(format!(
                "no active fault {} (active: {known:?})",
                faultline_proto::quote(id)
            )));
        };
        let errors = self.teardown(&mut st, &mut f).await;
        if errors.is_empty() {
            if let Some(key) = f.place() {
                release_place(&mut st, key);
            }
            info!(id, "reverted");
            return Ok(());
        }
        let attempts = f.revert_failed.as_ref().map_or(0, |r| r.attempts) + 1;
        let error = errors.join("; ");
        warn!(id, attempts, "revert incomplete, will retry: {error}");
        f.revert_failed = Some(RevertFailed {
            error: error.clone(),
            attempts,
            next_try: Instant::now() + backoff(attempts),
        });
        st.faults.insert(id.to_owned(), f);
        Err(EngineError::refused(format!(
            "revert of {id} incomplete: {error}; the journal keeps what is left and the agent retries"
        )))
    }

    pub async fn revert_all(&self) -> Vec<String> {
        let ids: Vec<String> = self.state.lock().await.faults.keys().cloned().collect();
        let mut done = Vec::new();
        for id in ids {
            if self.revert(&id).await.is_ok() {
                done.push(id);
            }
        }
        let mut st = self.state.lock().await;
        for p in st.places.values_mut() {
            p.sweep(Duration::ZERO);
        }
        close_idle(&mut st, Duration::ZERO);
        done
    }

    /// Reverts every fault whose lease has run out, retries failed reverts that are due,
    /// and detaches classifiers idle for `IDLE_DETACH`; returns the reverted ids.
    pub async fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let (due, retry) = {
            let mut st = self.state.lock().await;
            for p in st.places.values_mut() {
                p.sweep(IDLE_DETACH);
            }
            close_idle(&mut st, IDLE_DETACH);
            let due: Vec<String> = st
                .faults
                .values()
                .filter(|f| f.revert_failed.is_none() && f.expires <= now)
                .map(|f| f.id.clone())
                .collect();
            let retry: Vec<String> = st
                .faults
                .values()
                .filter(|f| f.revert_failed.as_ref().is_some_and(|r| r.next_try <= now))
                .map(|f| f.id.clone())
                .collect();
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

    pub async fn renew(
        &self,
        ids: &[String],
        lease: Option<Duration>,
    ) -> Result<Vec<pb::FaultStatus>, EngineError> {
        let mut st = self.state.lock().await;
        if let Some(l) = lease
            && l > crate::fault::MAX_LEASE
        {
            return Err(InvalidField {
                field: "lease_ms".into(),
                reason: format!("at most {} s", crate::fault::MAX_LEASE.as_secs()),
            }
            .into());
        }
        for id in ids {
            if !st.faults.contains_key(id) {
                return Err(EngineError::NotFound(format!(
                    "no active fault {}",
                    faultline_proto::quote(id)
                )));
            }
        }
        let now = Instant::now();
        let mut out = Vec::new();
        let keys: Vec<String> =
            if ids.is_empty() { st.faults.keys().cloned().collect() } else { ids.to_vec() };
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
}

/// Marks a container's place idle once no fault acts in it (the agent's own stays open);
/// `close_idle` closes it later, so back-to-back faults in one container (and a
/// controller's check before its apply) load its classifier once.
fn release_place(st: &mut State, key: u64) {
    if key != HOST
        && !st.faults.values().any(|f| f.place() == Some(key))
        && let Some(p) = st.places.get_mut(&key)
    {
        p.idle_since.get_or_insert_with(Instant::now);
    }
}

/// Closes the container places idle for `older_than`: their classifiers are unloaded
/// and the namespaces they held let go.
fn close_idle(st: &mut State, older_than: Duration) {
    let due: Vec<u64> = st
        .places
        .iter()
        .filter(|(_, p)| p.idle_since.is_some_and(|t| t.elapsed() >= older_than))
        .map(|(k, _)| *k)
        .collect();
    for key in due {
        if let Some(p) = st.places.remove(&key) {
            p.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_error_reads_as_before_and_keeps_its_cause() {
        let e = EngineError::io(
            "starting the stress worker",
            std::io::Error::from_raw_os_error(libc::EMFILE),
        );
        assert!(e.to_string().starts_with("starting the stress worker: "), "{e}");
        // Down the chain to the errno, where a caller can tell EMFILE from ENOENT.
        let cause = std::error::Error::source(&e)
            .and_then(|c| c.downcast_ref::<std::io::Error>())
            .map(std::io::Error::raw_os_error);
        assert_eq!(cause, Some(Some(libc::EMFILE)));
        assert!(matches!(tonic::Status::from(e).code(), tonic::Code::Internal));
        assert_eq!(EngineError::refused("survived SIGKILL").to_string(), "survived SIGKILL");
    }
}
