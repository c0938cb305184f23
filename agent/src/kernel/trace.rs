//! Kernel-side latency metrics: loads the tracepoint programs, tells them where the
//! fields are on this kernel, and reads their per-CPU aggregates.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
    sync::Mutex,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
};
use faultline_ebpf_common::{
    HIST_BUCKETS, Hist, MAX_DROP_REASONS, MAX_OWNER_ADDRS, MetricKey, PeerCounters, off,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultline-trace"));

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// (program, category, event)
const PROGRAMS: [(&str, &str, &str); 4] = [
    ("faultline_tcp_probe", "tcp", "tcp_probe"),
    ("faultline_sock_state", "sock", "inet_sock_set_state"),
    ("faultline_retransmit", "tcp", "tcp_retransmit_skb"),
    ("faultline_kfree_skb", "skb", "kfree_skb"),
];

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("tracefs: {0}")]
    Tracefs(String),
    #[error("tracepoint {0}: field {1} not found in its format")]
    Field(String, String),
    #[error("eBPF tracepoint programs: {0}")]
    Load(String),
}

/// A tracepoint's fields and offsets, parsed from `events/CAT/NAME/format`.
#[derive(Debug, Default)]
pub struct Format {
    pub fields: BTreeMap<String, usize>,
    pub print_fmt: String,
}

#[must_use]
pub fn parse_format(text: &str) -> Format {
    let mut f = Format::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(p) = line.strip_prefix("print fmt:") {
            p.trim().clone_into(&mut f.print_fmt);
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else { continue };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or_default();
        let offset =
            parts.find_map(|p| p.trim().strip_prefix("offset:")).and_then(|o| o.parse().ok());
        // "__u8 daddr_v6[16]" -> daddr_v6; "const void * skaddr" -> skaddr
        let name = decl
            .rsplit([' ', '*'])
            .next()
            .unwrap_or_default()
            .split('[')
            .next()
            .unwrap_or_default();
        if let (false, Some(o)) = (name.is_empty(), offset) {
            f.fields.insert(name.to_owned(), o);
        }
    }
    f
}

/// Names of enum `skb_drop_reason` values, from `kfree_skb`'s `__print_symbolic` list.
#[must_use]
pub fn drop_reason_names(print_fmt: &str) -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    let Some(start) = print_fmt.find("__print_symbolic(REC->reason") else { return names };
    for item in print_fmt[start..].split('{').skip(1) {
        let Some((num, rest)) = item.split_once(',') else { continue };
        let Ok(n) = num.trim().parse::<u32>() else { continue };
        if let Some(name) = rest.split('"').nth(1) {
            names.insert(n, name.to_owned());
        }
    }
    names
}

/// Whose TCP a figure is: the container on this host whose socket it was ("" for the
/// host's own), and the remote peer.
pub type Who = (String, IpAddr);

/// Summed across CPUs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub rtt: BTreeMap<Who, Hist>,
    pub connect: BTreeMap<Who, Hist>,
    pub peers: BTreeMap<Who, PeerCounters>,
    /// (reason value, name, count), nonzero only.
    pub drops: Vec<(u32, String, u64)>,
}

pub struct Tracer {
    _ebpf: Ebpf,
    rtt: PerCpuHashMap<MapData, MetricKey, Hist>,
    connect: PerCpuHashMap<MapData, MetricKey, Hist>,
    peers: PerCpuHashMap<MapData, MetricKey, PeerCounters>,
    drops: PerCpuArray<MapData, u64>,
    reasons: BTreeMap<u32, String>,
    /// Set when the agent speaks for its network namespace only: the addresses the
    /// programs count TCP events for, kept in step with the namespace's own.
    local: Option<Mutex<Local>>,
    owners: Mutex<Owners>,
}

/// The containers TCP events are attributed to: each container gets an owner id for the
/// agent's life, and the kernel's OWNERS table maps its addresses to it.
struct Owners {
    map: HashMap<MapData, [u8; 16], u32>,
    on: Array<MapData, u32>,
    /// What OWNERS holds now.
    known: BTreeMap<[u8; 16], u32>,
    /// Container id -> owner id.
    ids: BTreeMap<String, u32>,
    /// Owner id -> container name; kept after the container is gone, for the figures
    /// its sockets left in the maps.
    names: BTreeMap<u32, String>,
    next: u32,
}

struct Local {
    map: HashMap<MapData, [u8; 16], u8>,
    known: BTreeSet<[u8; 16]>,
}

/// This network namespace's addresses, as the programs' keys (IPv4 mapped into IPv6).
fn local_addresses() -> BTreeSet<[u8; 16]> {
    nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let addr = a.address?;
            addr.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .map(key)
        .collect()
}

/// Makes sure tracefs is mounted (it is on most distributions; a minimal initramfs or
/// container may lack it). Returns whether this call mounted it.
pub fn ensure_tracefs() -> Result<bool, TraceError> {
    if Path::new(TRACEFS).join("events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        return Ok(false);
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| TraceError::Tracefs(format!("mounting tracefs at {TRACEFS}: {e}")))?;
    Ok(true)
}

fn events_dir() -> &'static Path {
    if Path::new(TRACEFS).join("events").is_dir() {
        Path::new(TRACEFS)
    } else {
        Path::new("/sys/kernel/debug/tracing")
    }
}

fn format(cat: &str, name: &str) -> Result<Format, TraceError> {
    let p = events_dir().join("events").join(cat).join(name).join("format");
    std::fs::read_to_string(&p)
        .map(|t| parse_format(&t))
        .map_err(|e| TraceError::Tracefs(format!("{}: {e}", p.display())))
}

fn field(f: &Format, event: &str, name: &str) -> Result<u32, TraceError> {
    f.fields
        .get(name)
        .map(|o| *o as u32)
        .ok_or_else(|| TraceError::Field(event.to_owned(), name.to_owned()))
}

impl Tracer {
    /// `local_only`: count TCP events only for this network namespace's addresses, for
    /// an agent that is one of several namespaced hosts on one kernel.
    pub fn load(local_only: bool) -> Result<Self, TraceError> {
        let probe = format("tcp", "tcp_probe")?;
        let state = format("sock", "inet_sock_set_state")?;
        let retr = format("tcp", "tcp_retransmit_skb")?;
        let kfree = format("skb", "kfree_skb")?;
        let offsets = [
            (off::PROBE_FAMILY, field(&probe, "tcp_probe", "family")?),
            (off::PROBE_DADDR, field(&probe, "tcp_probe", "daddr")?),
            (off::PROBE_SRTT, field(&probe, "tcp_probe", "srtt")?),
            (off::STATE_SKADDR, field(&state, "inet_sock_set_state", "skaddr")?),
            (off::STATE_OLD, field(&state, "inet_sock_set_state", "oldstate")?),
            (off::STATE_NEW, field(&state, "inet_sock_set_state", "newstate")?),
            (off::STATE_FAMILY, field(&state, "inet_sock_set_state", "family")?),
            (off::STATE_PROTOCOL, field(&state, "inet_sock_set_state", "protocol")?),
            (off::STATE_DADDR, field(&state, "inet_sock_set_state", "daddr")?),
            (off::STATE_DADDR6, field(&state, "inet_sock_set_state", "daddr_v6")?),
            (off::RETR_FAMILY, field(&retr, "tcp_retransmit_skb", "family")?),
            (off::RETR_DADDR, field(&retr, "tcp_retransmit_skb", "daddr")?),
            (off::RETR_DADDR6, field(&retr, "tcp_retransmit_skb", "daddr_v6")?),
            (off::KFREE_REASON, field(&kfree, "kfree_skb", "reason")?),
            (off::PROBE_SADDR, field(&probe, "tcp_probe", "saddr")?),
            (off::STATE_SADDR, field(&state, "inet_sock_set_state", "saddr")?),
            (off::STATE_SADDR6, field(&state, "inet_sock_set_state", "saddr_v6")?),
            (off::RETR_SADDR, field(&retr, "tcp_retransmit_skb", "saddr")?),
            (off::RETR_SADDR6, field(&retr, "tcp_retransmit_skb", "saddr_v6")?),
        ];
        let load = |e: &dyn std::fmt::Display| TraceError::Load(e.to_string());
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| load(&e))?;
        {
            let mut arr: Array<_, u32> = Array::try_from(
                ebpf.map_mut("OFFSETS").ok_or_else(|| load(&"map OFFSETS missing"))?,
            )
            .map_err(|e| load(&e))?;
            for (i, o) in offsets {
                arr.set(i, o, 0).map_err(|e| load(&e))?;
            }
        }
        for (prog, cat, name) in PROGRAMS {
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| load(&format!("program {prog} missing")))?
                .try_into()
                .map_err(|e| load(&e))?;
            p.load().map_err(|e| load(&format!("{prog}: {e}")))?;
            p.attach(cat, name)
                .map_err(|e| load(&format!("attaching {prog} to {cat}:{name}: {e}")))?;
        }
        let mut take =
            |name: &str| ebpf.take_map(name).ok_or_else(|| load(&format!("map {name} missing")));
        let rtt = PerCpuHashMap::try_from(take("RTT")?).map_err(|e| load(&e))?;
        let connect = PerCpuHashMap::try_from(take("CONNECT")?).map_err(|e| load(&e))?;
        let peers = PerCpuHashMap::try_from(take("PEER_COUNTERS")?).map_err(|e| load(&e))?;
        let drops = PerCpuArray::try_from(take("DROPS")?).map_err(|e| load(&e))?;
        let owners = Owners {
            map: HashMap::try_from(take("OWNERS")?).map_err(|e| load(&e))?,
            on: Array::try_from(take("OWNERS_ON")?).map_err(|e| load(&e))?,
            known: BTreeMap::new(),
            ids: BTreeMap::new(),
            names: BTreeMap::new(),
            next: 0,
        };
        let local = if local_only {
            let mut local = Local {
                map: HashMap::try_from(take("LOCAL")?).map_err(|e| load(&e))?,
                known: BTreeSet::new(),
            };
            local.refresh();
            // Filled first, then switched on: no event of ours is ever left out.
            let mut only: Array<_, u32> = Array::try_from(
                ebpf.map_mut("LOCAL_ONLY").ok_or_else(|| load(&"map LOCAL_ONLY missing"))?,
            )
            .map_err(|e| load(&e))?;
            only.set(0, 1, 0).map_err(|e| load(&e))?;
            Some(Mutex::new(local))
        } else {
            None
        };
        Ok(Self {
            _ebpf: ebpf,
            rtt,
            connect,
            peers,
            drops,
            reasons: drop_reason_names(&kfree.print_fmt),
            local,
            owners: Mutex::new(owners),
        })
    }

    fn refresh_local(&self) {
        if let Some(local) = &self.local {
            local.lock().unwrap_or_else(std::sync::PoisonError::into_inner).refresh();
        }
    }

    /// The containers on this host now, by id with name and addresses: TCP whose local
    /// address is one of theirs is counted under that container from now on.
    pub fn set_owners(&self, containers: &[(String, String, Vec<IpAddr>)]) {
        self.owners.lock().unwrap_or_else(std::sync::PoisonError::into_inner).set(containers);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.refresh_local();
        let names =
            self.owners.lock().unwrap_or_else(std::sync::PoisonError::into_inner).names.clone();
        let who = |k: MetricKey| -> Who {
            let owner = match k.owner {
                0 => String::new(),
                n => names.get(&n).cloned().unwrap_or_else(|| format!("#{n}")),
            };
            (owner, addr(k.peer))
        };
        let mut s = Snapshot::default();
        let hists = |m: &PerCpuHashMap<MapData, MetricKey, Hist>| {
            let mut out: BTreeMap<Who, Hist> = BTreeMap::new();
            for (k, per_cpu) in m.iter().filter_map(Result::ok) {
                let sum = out.entry(who(k)).or_default();
                per_cpu.iter().for_each(|h| add(sum, h));
            }
            out
        };
        s.rtt = hists(&self.rtt);
        s.connect = hists(&self.connect);
        for (k, per_cpu) in self.peers.iter().filter_map(Result::ok) {
            let sum = s.peers.entry(who(k)).or_default();
            for c in per_cpu.iter() {
                sum.retransmits += c.retransmits;
                sum.connects += c.connects;
                sum.connect_failures += c.connect_failures;
            }
        }
        for reason in 0..MAX_DROP_REASONS {
            let n: u64 = self.drops.get(&reason, 0).map_or(0, |v| v.iter().sum());
            if n > 0 {
                let name = self
                    .reasons
                    .get(&reason)
                    .cloned()
                    .unwrap_or_else(|| format!("REASON_{reason}"));
                s.drops.push((reason, name, n));
            }
        }
        s
    }
}

impl Tracer {
    /// The RTT samples of the peers `pick` selects (keys as the kernel stores them),
    /// summed: reads the RTT map alone, not the whole snapshot.
    pub fn rtt_of(&self, pick: impl Fn(&[u8; 16]) -> bool) -> Hist {
        let mut sum = Hist::default();
        for (k, per_cpu) in self.rtt.iter().filter_map(Result::ok) {
            if pick(&k.peer) {
                per_cpu.iter().for_each(|h| add(&mut sum, h));
            }
        }
        sum
    }
}

impl Local {
    /// Brings LOCAL in step with the namespace's addresses (they may change after the
    /// agent starts, as when a lab host is given its address).
    fn refresh(&mut self) {
        let Self { map, known } = self;
        let now = local_addresses();
        if now == *known {
            return;
        }
        for gone in known.difference(&now) {
            let _ = map.remove(gone);
        }
        for new in now.difference(known) {
            if let Err(e) = map.insert(new, 1, 0) {
                tracing::warn!("kernel metrics: cannot track local address {}: {e}", addr(*new));
            }
        }
        *known = now;
    }
}

impl Owners {
    fn set(&mut self, containers: &[(String, String, Vec<IpAddr>)]) {
        let mut want = BTreeMap::new();
        for (id, name, addresses) in containers {
            let owner = if let Some(o) = self.ids.get(id) {
                *o
            } else {
                self.next += 1;
                self.ids.insert(id.clone(), self.next);
                self.next
            };
            self.names.insert(owner, name.clone());
            for a in addresses {
                want.insert(key(*a), owner);
            }
        }
        // Containers come and go for the agent's life: forget the gone ones' ids once
        // they outnumber what the maps can still hold figures for.
        if self.ids.len() > 2 * faultline_ebpf_common::MAX_METRIC_PEERS as usize {
            let live: BTreeSet<&String> = containers.iter().map(|(id, _, _)| id).collect();
            let gone: Vec<(String, u32)> = self
                .ids
                .iter()
                .filter(|(id, _)| !live.contains(id))
                .map(|(id, o)| (id.clone(), *o))
                .collect();
            for (id, o) in gone {
                self.ids.remove(&id);
                self.names.remove(&o);
            }
        }
        for (a, o) in &self.known {
            if want.get(a) != Some(o) {
                let _ = self.map.remove(a);
            }
        }
        let mut held = BTreeMap::new();
        for (a, o) in want.iter().take(MAX_OWNER_ADDRS as usize) {
            if self.known.get(a) == Some(o) || self.map.insert(a, o, 0).is_ok() {
                held.insert(*a, *o);
            } else {
                tracing::warn!(
                    "kernel metrics: cannot attribute address {} to a container",
                    addr(*a)
                );
            }
        }
        // Off while no container is known: the programs then skip the lookup.
        if let Err(e) = self.on.set(0, u32::from(!held.is_empty()), 0) {
            tracing::warn!("kernel metrics: switching container attribution: {e}");
        }
        self.known = held;
    }
}

/// An address as the programs' keys hold it (IPv4 mapped into IPv6).
fn key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

pub fn add(sum: &mut Hist, h: &Hist) {
    for b in 0..HIST_BUCKETS {
        sum.buckets[b] += h.buckets[b];
    }
    sum.count += h.count;
    sum.sum_us += h.sum_us;
}

/// IPv4-mapped keys back to IPv4.
fn addr(k: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(k);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KFREE: &str = "name: kfree_skb\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n\nprint fmt: \"skbaddr=%p reason: %s\", REC->skbaddr, __print_symbolic(REC->reason, { 2, \"NOT_SPECIFIED\" }, { 3, \"NO_SOCKET\" }, { 120, \"MAX\" })\n";

    #[test]
    fn formats_and_reason_names_parse() {
        let f = parse_format(KFREE);
        assert_eq!(f.fields["skbaddr"], 8);
        assert_eq!(f.fields["reason"], 36);
        assert_eq!(f.fields["daddr_v6"], 56);
        let names = drop_reason_names(&f.print_fmt);
        assert_eq!(names[&3], "NO_SOCKET");
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn mapped_keys_come_back_as_ipv4() {
        assert_eq!(
            addr(std::net::Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets()).to_string(),
            "10.1.2.3"
        );
    }
}
