//! The eBPF classifier: loading it, filling its maps, attaching it to interfaces.
//! Nothing is pinned: maps, programs and TCX links vanish with the agent process.

use std::collections::HashMap as StdHashMap;

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
    util::KernelVersion,
};
use faultline_ebpf_common::{Counters, MAX_PEERS, MAX_RULES, PeerKey, Rule};

use crate::fault::Cidr;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultline-tc"));

pub const PROG_INGRESS: &str = "faultline_ingress";
pub const PROG_EGRESS: &str = "faultline_egress";

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// Loading the programs into the kernel failed.
    #[error("loading eBPF programs: {0}")]
    Load(String),
    #[error("eBPF map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("attaching {prog} to {ifname}: {reason}")]
    Attach { prog: &'static str, ifname: String, reason: String },
    /// Every slot is taken by an active fault.
    #[error("all {MAX_RULES} eBPF fault slots are in use")]
    NoSlot,
    /// The peer table (shared by every fault's peers) is full.
    #[error(
        "match.peers: the eBPF peer table holds at most {MAX_PEERS} entries across all active faults, and is full; revert a fault with many peers or use fewer, wider CIDRs"
    )]
    PeersFull,
}

/// Whether a map call failed because the key was not there.
fn not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Whether a map update failed because the map is full.
fn full(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if matches!(s.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)))
}

/// How tc programs attach on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// `bpf_mprog` links (kernel >= 6.6): owned by the agent's file descriptors.
    Tcx,
    /// `cls_bpf` filters on a clsact qdisc: they outlive the process and are journaled.
    Netlink,
}

impl AttachMode {
    #[must_use]
    pub fn detect() -> Self {
        if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
            Self::Tcx
        } else {
            Self::Netlink
        }
    }
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
        }
    }
}

pub struct Classifier {
    ebpf: Ebpf,
    rules: Array<MapData, Rule>,
    counters: PerCpuArray<MapData, Counters>,
    peers: LpmTrie<MapData, PeerKey, u8>,
    control: HashMap<MapData, u16, u8>,
    used: [bool; MAX_RULES as usize],
    /// (ifname, ingress) -> link, while any slot needs it.
    links: StdHashMap<(String, bool), SchedClassifierLinkId>,
    /// Links no fault uses any more, and since when: TCX detaches lazily (see `sweep`).
    idle: StdHashMap<(String, bool), std::time::Instant>,
    /// Links attached ahead of any fault (`attach_ahead`): kept for the agent's life.
    resident: std::collections::HashSet<(String, bool)>,
    pub mode: AttachMode,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |source| BpfError::Map { map, source }
}

fn peer_key(slot: u32, c: &Cidr) -> Key<PeerKey> {
    Key::new(32 + u32::from(c.prefix), PeerKey { slot_be: slot.to_be_bytes(), addr: c.addr })
}

impl Classifier {
    pub fn load() -> Result<Self, BpfError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| BpfError::Load(e.to_string()))?;
        for name in [PROG_INGRESS, PROG_EGRESS] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| BpfError::Load(format!("program {name} missing from object")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| BpfError::Load(e.to_string()))?;
            prog.load().map_err(|e| BpfError::Load(format!("{name}: {e}")))?;
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| BpfError::Load(format!("map {name} missing")))
        };
        let rules = Array::try_from(take(&mut ebpf, "RULES")?).map_err(map_err("RULES"))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?).map_err(map_err("COUNTERS"))?;
        let peers = LpmTrie::try_from(take(&mut ebpf, "PEERS")?).map_err(map_err("PEERS"))?;
        let control = HashMap::try_from(take(&mut ebpf, "CONTROL_PORTS")?)
            .map_err(map_err("CONTROL_PORTS"))?;
        Ok(Self {
            ebpf,
            rules,
            counters,
            peers,
            control,
            used: [false; MAX_RULES as usize],
            links: StdHashMap::new(),
            idle: StdHashMap::new(),
            resident: std::collections::HashSet::new(),
            mode: AttachMode::detect(),
        })
    }

    /// Marks TCP `port` as the agent's control channel: excluded from faults by default.
    pub fn exclude_port(&mut self, port: u16) -> Result<(), BpfError> {
        self.control.insert(port, 1, 0).map_err(map_err("CONTROL_PORTS"))
    }

    pub fn reserve_slot(&mut self) -> Result<u32, BpfError> {
        let i = self.used.iter().position(|u| !u).ok_or(BpfError::NoSlot)?;
        self.used[i] = true;
        Ok(i as u32)
    }

    /// Fills a reserved slot: peers first, then counters, then the rule that makes it live.
    /// On failure the caller empties the slot with `remove` (which skips peers never added).
    pub fn install(&mut self, slot: u32, rule: Rule, peers: &[Cidr]) -> Result<(), BpfError> {
        for c in peers {
            self.peers
                .insert(&peer_key(slot, c), 1, 0)
                .map_err(|e| if full(&e) { BpfError::PeersFull } else { map_err("PEERS")(e) })?;
        }
        let zero = PerCpuValues::try_from(vec![
            Counters::default();
            aya::util::nr_cpus().map_err(|(_, e)| {
                BpfError::Load(e.to_string())
            })?
        ])
        .map_err(|e| BpfError::Load(e.to_string()))?;
        self.counters.set(slot, zero, 0).map_err(map_err("COUNTERS"))?;
        self.rules.set(slot, rule, 0).map_err(map_err("RULES"))
    }

    /// Empties a slot: the rule first, so no packet sees a half-removed peer set. Every peer
    /// is tried (one absent, say never added by a failed install, is no error); the slot is
    /// free again only when none is left, so a later fault cannot inherit a stale peer.
    pub fn remove(&mut self, slot: u32, peers: &[Cidr]) -> Result<(), BpfError> {
        self.rules.set(slot, Rule::default(), 0).map_err(map_err("RULES"))?;
        let mut first_error = None;
        for c in peers {
            match self.peers.remove(&peer_key(slot, c)) {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(map_err("PEERS")(e));
                }
            }
        }
        match first_error {
            None => {
                self.used[slot as usize] = false;
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Slots in use, for tests and status.
    #[must_use]
    pub fn slots_in_use(&self) -> usize {
        self.used.iter().filter(|u| **u).count()
    }

    pub fn counters(&self, slot: u32) -> Result<Counters, BpfError> {
        let per_cpu = self.counters.get(&slot, 0).map_err(map_err("COUNTERS"))?;
        Ok(per_cpu.iter().fold(Counters::default(), |mut acc, c| {
            acc.matched_packets += c.matched_packets;
            acc.matched_bytes += c.matched_bytes;
            acc.dropped_packets += c.dropped_packets;
            acc
        }))
    }

    #[must_use]
    pub fn is_attached(&self, ifname: &str, ingress: bool) -> bool {
        self.links.contains_key(&(ifname.to_owned(), ingress))
    }

    pub fn attach(&mut self, ifname: &str, ingress: bool) -> Result<(), BpfError> {
        self.idle.remove(&(ifname.to_owned(), ingress));
        if self.is_attached(ifname, ingress) {
            return Ok(());
        }
        let (name, kind) = if ingress {
            (PROG_INGRESS, TcAttachType::Ingress)
        } else {
            (PROG_EGRESS, TcAttachType::Egress)
        };
        let prog: &mut SchedClassifier =
            self.ebpf.program_mut(name).expect("loaded").try_into().expect("classifier");
        let id = prog.attach(ifname, kind).map_err(|e| BpfError::Attach {
            prog: name,
            ifname: ifname.to_owned(),
            reason: e.to_string(),
        })?;
        self.links.insert((ifname.to_owned(), ingress), id);
        Ok(())
    }

    /// Attaches before any fault asks and keeps the link while the agent runs, so the first
    /// fault on the interface pays no attach (TCX only: a link dies with the agent, while a
    /// netlink filter would outlive a crash and need the journal).
    pub fn attach_ahead(&mut self, ifname: &str, ingress: bool) -> Result<(), BpfError> {
        if self.mode != AttachMode::Tcx {
            return Ok(());
        }
        self.attach(ifname, ingress)?;
        self.resident.insert((ifname.to_owned(), ingress));
        Ok(())
    }

    /// Marks a TCX link unused. Attaching and detaching each wait for an RCU grace
    /// period (about 15 ms here), so back-to-back faults on one interface would pay it
    /// twice per cycle; an idle link with no rule costs ~0.1 µs per packet (docs/benchmarks.md)
    /// and is invisible to tc. `sweep` detaches it once it has been idle for `IDLE_DETACH`.
    pub fn mark_idle(&mut self, ifname: &str, ingress: bool) {
        if self.resident.contains(&(ifname.to_owned(), ingress)) {
            return;
        }
        self.idle.entry((ifname.to_owned(), ingress)).or_insert_with(std::time::Instant::now);
    }

    /// When the next idle link is due for `sweep(older_than)`.
    #[must_use]
    pub fn next_sweep(&self, older_than: std::time::Duration) -> Option<std::time::Instant> {
        self.idle.values().map(|t| *t + older_than).min()
    }

    pub fn sweep(&mut self, older_than: std::time::Duration) {
        let due: Vec<(String, bool)> = self
            .idle
            .iter()
            .filter(|(_, t)| t.elapsed() >= older_than)
            .map(|(k, _)| k.clone())
            .collect();
        for (ifname, ingress) in due {
            self.idle.remove(&(ifname.clone(), ingress));
            if let Err(e) = self.detach(&ifname, ingress) {
                tracing::warn!("{e}");
            }
        }
    }

    pub fn detach(&mut self, ifname: &str, ingress: bool) -> Result<(), BpfError> {
        self.idle.remove(&(ifname.to_owned(), ingress));
        self.resident.remove(&(ifname.to_owned(), ingress));
        let Some(id) = self.links.remove(&(ifname.to_owned(), ingress)) else { return Ok(()) };
        let name = if ingress { PROG_INGRESS } else { PROG_EGRESS };
        let prog: &mut SchedClassifier =
            self.ebpf.program_mut(name).expect("loaded").try_into().expect("classifier");
        prog.detach(id).map_err(|e| BpfError::Attach {
            prog: name,
            ifname: ifname.to_owned(),
            reason: format!("detach: {e}"),
        })
    }
}

/// Removes `cls_bpf` filters a dead agent left (netlink attach mode only).
pub fn detach_leftover(ifname: &str, ingress: bool) -> Result<(), String> {
    let (name, kind) = if ingress {
        (PROG_INGRESS, TcAttachType::Ingress)
    } else {
        (PROG_EGRESS, TcAttachType::Egress)
    };
    match aya::programs::tc::qdisc_detach_program(ifname, kind, name) {
        Ok(()) => Ok(()),
        Err(aya::programs::tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Adds a clsact qdisc (netlink attach mode), for the engine, which journals it first.
pub fn add_clsact(ifname: &str) -> Result<(), aya::programs::TcError> {
    aya::programs::tc::qdisc_add_clsact(ifname)
}
