//! Types shared by the eBPF classifier (kernel side) and the agent (user side).
//! Layouts are `#[repr(C)]` and must stay identical on both sides.
#![no_std]

/// Fault slots; the classifier walks all of them, so keep it small.
pub const MAX_RULES: u32 = 16;
/// Entries of the peer trie, shared by all slots.
pub const MAX_PEERS: u32 = 1 << 17;
/// Ports whose TCP traffic is the agent's own control channel.
pub const MAX_CONTROL_PORTS: u32 = 64;

pub const DIR_INGRESS: u32 = 1;
pub const DIR_EGRESS: u32 = 2;

/// Drop matching packets with `drop_threshold` probability.
pub const ACTION_DROP: u32 = 1;
/// Hand matching packets to the agent's qdisc class (netem, bandwidth).
pub const ACTION_STEER: u32 = 2;

pub const MAX_PORT_RANGES: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// One fault as the classifier sees it. `ifindex == 0` marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub ifindex: u32,
    /// `DIR_INGRESS | DIR_EGRESS` bits.
    pub directions: u32,
    pub action: u32,
    /// Drop when `bpf_get_prandom_u32() < drop_threshold` (unsigned); `drop_always` for 100 %.
    pub drop_threshold: u32,
    pub drop_always: u32,
    /// `skb->priority` given to steered egress packets (htb `major:minor`).
    pub egress_classid: u32,
    /// `skb->priority` given to steered ingress packets, on the IFB device.
    pub ingress_classid: u32,
    /// IFB device that steered ingress packets are redirected to.
    pub ingress_redirect: u32,
    /// IP protocol number; 0 matches any. ICMP (1) also matches ICMPv6 (58).
    pub protocol: u32,
    /// 1: the remote address must be in this slot's peer set.
    pub match_peers: u32,
    /// Number of used `ports` entries; 0 matches any port.
    pub n_ports: u32,
    pub ports: [PortRange; MAX_PORT_RANGES],
    /// 1: the agent's control connections are affected too.
    pub include_control: u32,
}

/// Per-slot counters, kept per CPU and summed by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub dropped_packets: u64,
}

/// LPM trie key data: the slot (big-endian, so it is a 32-bit prefix) then an IPv6
/// address (IPv4 as `::ffff:a.b.c.d`). Prefix length = 32 + address prefix bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    pub slot_be: [u8; 4],
    pub addr: [u8; 16],
}

/// log2 buckets of a latency histogram: bucket `b` holds values in
/// `[2^b, 2^(b+1))` microseconds (bucket 0 also holds 0); the last one is open.
pub const HIST_BUCKETS: usize = 32;

/// A latency histogram in microseconds, per CPU in the kernel, summed by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist {
    pub buckets: [u64; HIST_BUCKETS],
    pub count: u64,
    pub sum_us: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self { buckets: [0; HIST_BUCKETS], count: 0, sum_us: 0 }
    }
}

/// Per remote peer TCP events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    pub retransmits: u64,
    /// SYN_SENT -> ESTABLISHED.
    pub connects: u64,
    /// SYN_SENT -> CLOSE: refused (RST) or timed out.
    pub connect_failures: u64,
}

/// Key of the TCP metric maps: whose socket (`owner`: 0 for the host, else the id the
/// agent gave the container whose address the socket's local address is, see OWNERS)
/// and the remote peer (IPv4 as `::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricKey {
    pub owner: u32,
    pub peer: [u8; 16],
}

/// Container addresses the tracer attributes TCP events to (OWNERS).
pub const MAX_OWNER_ADDRS: u32 = 4096;

/// Remote peers tracked per metric map (LRU: the least recent ones are evicted).
pub const MAX_METRIC_PEERS: u32 = 4096;
/// Slots of the drop-reason counter array (enum skb_drop_reason has ~120 values in 6.18).
pub const MAX_DROP_REASONS: u32 = 512;
/// Addresses of the agent's own network namespace the tracer keeps (`LOCAL`).
pub const MAX_LOCAL_ADDRS: u32 = 256;

/// Indices into the tracer's OFFSETS array: tracepoint field offsets, read by the
/// agent from tracefs at load, because they differ between kernel versions.
pub mod off {
    pub const PROBE_FAMILY: u32 = 0;
    pub const PROBE_DADDR: u32 = 1;
    pub const PROBE_SRTT: u32 = 2;
    pub const STATE_SKADDR: u32 = 3;
    pub const STATE_OLD: u32 = 4;
    pub const STATE_NEW: u32 = 5;
    pub const STATE_FAMILY: u32 = 6;
    pub const STATE_PROTOCOL: u32 = 7;
    pub const STATE_DADDR: u32 = 8;
    pub const STATE_DADDR6: u32 = 9;
    pub const RETR_FAMILY: u32 = 10;
    pub const RETR_DADDR: u32 = 11;
    pub const RETR_DADDR6: u32 = 12;
    pub const KFREE_REASON: u32 = 13;
    pub const PROBE_SADDR: u32 = 14;
    pub const STATE_SADDR: u32 = 15;
    pub const STATE_SADDR6: u32 = 16;
    pub const RETR_SADDR: u32 = 17;
    pub const RETR_SADDR6: u32 = 18;
    pub const COUNT: u32 = 19;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: as for the types below: plain `#[repr(C)]` integers.
    unsafe impl aya::Pod for super::Hist {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeerCounters {}
    // SAFETY: plain `#[repr(C)]` data with no padding-dependent invariants; any bit pattern is valid.
    unsafe impl aya::Pod for super::Rule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeerKey {}
    // SAFETY: as above (a u32 then 16 bytes: no padding).
    unsafe impl aya::Pod for super::MetricKey {}
}
