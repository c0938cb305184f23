//! The kernel's view of latency: tracepoint programs that aggregate in the kernel
//! (per-CPU maps, log2 histograms) and are read by the agent. Tracepoints, not
//! kprobes: they are a stable interface, and some kernels have no kprobes at all.
//! Field offsets come from tracefs through OFFSETS, so one object fits every kernel.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::TracePointContext,
};
use faultline_ebpf_common::{
    HIST_BUCKETS, Hist, MAX_DROP_REASONS, MAX_LOCAL_ADDRS, MAX_METRIC_PEERS, MAX_OWNER_ADDRS,
    MetricKey, PeerCounters, off,
};

#[map]
static OFFSETS: Array<u32> = Array::with_max_entries(off::COUNT, 0);

/// Smoothed RTT per owner and remote peer, as TCP itself estimates it (tcp:tcp_probe).
#[map]
static RTT: LruPerCpuHashMap<MetricKey, Hist> =
    LruPerCpuHashMap::with_max_entries(MAX_METRIC_PEERS, 0);

/// SYN_SENT -> ESTABLISHED time per owner and remote peer.
#[map]
static CONNECT: LruPerCpuHashMap<MetricKey, Hist> =
    LruPerCpuHashMap::with_max_entries(MAX_METRIC_PEERS, 0);

#[map]
static PEER_COUNTERS: LruPerCpuHashMap<MetricKey, PeerCounters> =
    LruPerCpuHashMap::with_max_entries(MAX_METRIC_PEERS, 0);

/// With OWNERS_ON[0] = 1, an event whose local address is in OWNERS is counted under
/// that owner (a container on this host): the agent keeps the table in step with the
/// containers' addresses. Off (no containers), the local address is not even read.
#[map]
static OWNERS_ON: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static OWNERS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(MAX_OWNER_ADDRS, 0);

/// When each socket entered SYN_SENT (socket address -> ktime ns).
#[map]
static SYN_START: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// With LOCAL_ONLY[0] = 1, a TCP event counts only when its local address is in LOCAL
/// (or is a container's, in OWNERS):
/// where several hosts are network namespaces of one kernel (a lab), every agent's
/// tracepoints fire for every namespace, and this keeps each agent to its own.
#[map]
static LOCAL_ONLY: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static LOCAL: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_LOCAL_ADDRS, 0);

/// skb:kfree_skb by drop reason (the kernel's enum skb_drop_reason).
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_DROP_REASONS, 0);

/// A zeroed histogram and counter set to insert from: the verifier's 512-byte stack
/// has no room for a histogram.
#[map]
static ZERO_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0);
#[map]
static ZERO_COUNTERS: PerCpuArray<PeerCounters> = PerCpuArray::with_max_entries(1, 0);

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
/// BPF_NOEXIST: insert only when absent, so racing CPUs do not reset each other.
const NOEXIST: u64 = 1;

#[inline(always)]
fn offset(i: u32) -> Option<usize> {
    OFFSETS.get(i).map(|o| *o as usize).filter(|o| *o != 0)
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, at: usize) -> Option<T> {
    // SAFETY: bpf_probe_read into a local; a bad offset yields an error, not a fault.
    unsafe { ctx.read_at::<T>(at) }.ok()
}

/// An IPv4 address as IPv4-mapped IPv6, like the classifier's peer keys.
#[inline(always)]
fn mapped(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

/// floor(log2(v)), 0 for 0, capped at the last bucket. Branches instead of a
/// count-leading-zeros the BPF instruction set does not have.
#[inline(always)]
fn bucket(mut v: u64) -> usize {
    let mut b = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        b += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        b += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        b += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        b += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        b += 2;
    }
    if v >= 1 << 1 {
        b += 1;
    }
    if b >= HIST_BUCKETS { HIST_BUCKETS - 1 } else { b }
}

#[inline(always)]
fn record(map: &LruPerCpuHashMap<MetricKey, Hist>, peer: &MetricKey, us: u64) {
    let mut h = map.get_ptr_mut(peer);
    if h.is_none() {
        if let Some(zero) = ZERO_HIST.get(0) {
            let _ = map.insert(peer, zero, NOEXIST);
        }
        h = map.get_ptr_mut(peer);
    }
    if let Some(h) = h {
        let b = bucket(us);
        // SAFETY: a per-CPU value: no other writer on this CPU while we run.
        unsafe {
            (*h).buckets[b] += 1;
            (*h).count += 1;
            (*h).sum_us += us;
        }
    }
}

#[inline(always)]
fn counters(peer: &MetricKey) -> Option<*mut PeerCounters> {
    if let Some(c) = PEER_COUNTERS.get_ptr_mut(peer) {
        return Some(c);
    }
    let zero = ZERO_COUNTERS.get(0)?;
    let _ = PEER_COUNTERS.insert(peer, zero, NOEXIST);
    PEER_COUNTERS.get_ptr_mut(peer)
}

/// An address of an event that carries it as `Xaddr[4]` and `Xaddr_v6[16]`.
#[inline(always)]
fn address(ctx: &TracePointContext, family: u16, v4_at: u32, v6_at: u32) -> Option<[u8; 16]> {
    match family {
        AF_INET => Some(mapped(read::<[u8; 4]>(ctx, offset(v4_at)?)?)),
        AF_INET6 => read::<[u8; 16]>(ctx, offset(v6_at)?),
        _ => None,
    }
}

/// An address of tcp_probe, which carries a sockaddr_in or sockaddr_in6 (28 bytes):
/// the address sits at 4 or 8.
#[inline(always)]
fn sockaddr(ctx: &TracePointContext, family: u16, at: u32) -> Option<[u8; 16]> {
    let at = offset(at)?;
    match family {
        AF_INET => Some(mapped(read::<[u8; 4]>(ctx, at + 4)?)),
        AF_INET6 => read::<[u8; 16]>(ctx, at + 8),
        _ => None,
    }
}

/// The event's key, or None when it is not this agent's (see LOCAL_ONLY). `local`
/// reads the event's local address, only when a filter or the owner table needs it:
/// tcp_probe fires for every ACK.
#[inline(always)]
fn key(peer: [u8; 16], local: impl FnOnce() -> Option<[u8; 16]>) -> Option<MetricKey> {
    let only = LOCAL_ONLY.get(0).copied().unwrap_or(0) != 0;
    let owners = OWNERS_ON.get(0).copied().unwrap_or(0) != 0;
    if !only && !owners {
        return Some(MetricKey { owner: 0, peer });
    }
    let local = local();
    // SAFETY: the value is copied out at once.
    let owner = if owners {
        local.and_then(|a| unsafe { OWNERS.get(&a) }.copied()).unwrap_or(0)
    } else {
        0
    };
    // A namespaced agent speaks for its own addresses and its host's containers.
    // SAFETY: only tested for presence.
    if only && owner == 0 && !local.is_some_and(|a| unsafe { LOCAL.get(&a) }.is_some()) {
        return None;
    }
    Some(MetricKey { owner, peer })
}

#[tracepoint]
pub fn faultline_tcp_probe(ctx: TracePointContext) -> u32 {
    let _ = tcp_probe(&ctx);
    0
}

#[inline(always)]
fn tcp_probe(ctx: &TracePointContext) -> Option<()> {
    let family: u16 = read(ctx, offset(off::PROBE_FAMILY)?)?;
    let peer =
        key(sockaddr(ctx, family, off::PROBE_DADDR)?, || sockaddr(ctx, family, off::PROBE_SADDR))?;
    // Already in microseconds: the tracepoint reports srtt_us >> 3.
    let srtt: u32 = read(ctx, offset(off::PROBE_SRTT)?)?;
    record(&RTT, &peer, u64::from(srtt));
    Some(())
}

#[tracepoint]
pub fn faultline_sock_state(ctx: TracePointContext) -> u32 {
    let _ = sock_state(&ctx);
    0
}

#[inline(always)]
fn sock_state(ctx: &TracePointContext) -> Option<()> {
    let protocol: u16 = read(ctx, offset(off::STATE_PROTOCOL)?)?;
    if protocol != IPPROTO_TCP {
        return None;
    }
    let old: i32 = read(ctx, offset(off::STATE_OLD)?)?;
    let new: i32 = read(ctx, offset(off::STATE_NEW)?)?;
    let sk: u64 = read(ctx, offset(off::STATE_SKADDR)?)?;
    if new == TCP_SYN_SENT {
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        let _ = SYN_START.insert(&sk, &now, 0);
        return Some(());
    }
    if old != TCP_SYN_SENT {
        return None;
    }
    let family: u16 = read(ctx, offset(off::STATE_FAMILY)?)?;
    let Some(peer) = key(address(ctx, family, off::STATE_DADDR, off::STATE_DADDR6)?, || {
        address(ctx, family, off::STATE_SADDR, off::STATE_SADDR6)
    }) else {
        let _ = SYN_START.remove(&sk);
        return None;
    };
    if new == TCP_ESTABLISHED {
        // SAFETY: the value is copied out at once.
        let start = unsafe { SYN_START.get(&sk) }.copied();
        let _ = SYN_START.remove(&sk);
        if let Some(start) = start {
            // SAFETY: helper without arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            record(&CONNECT, &peer, now.saturating_sub(start) / 1000);
        }
        if let Some(c) = counters(&peer) {
            // SAFETY: per-CPU value.
            unsafe { (*c).connects += 1 };
        }
    } else if new == TCP_CLOSE {
        let _ = SYN_START.remove(&sk);
        if let Some(c) = counters(&peer) {
            // SAFETY: per-CPU value.
            unsafe { (*c).connect_failures += 1 };
        }
    }
    Some(())
}

#[tracepoint]
pub fn faultline_retransmit(ctx: TracePointContext) -> u32 {
    let _ = retransmit(&ctx);
    0
}

#[inline(always)]
fn retransmit(ctx: &TracePointContext) -> Option<()> {
    let family: u16 = read(ctx, offset(off::RETR_FAMILY)?)?;
    let peer = key(address(ctx, family, off::RETR_DADDR, off::RETR_DADDR6)?, || {
        address(ctx, family, off::RETR_SADDR, off::RETR_SADDR6)
    })?;
    let c = counters(&peer)?;
    // SAFETY: per-CPU value.
    unsafe { (*c).retransmits += 1 };
    Some(())
}

#[tracepoint]
pub fn faultline_kfree_skb(ctx: TracePointContext) -> u32 {
    let _ = kfree_skb(&ctx);
    0
}

#[inline(always)]
fn kfree_skb(ctx: &TracePointContext) -> Option<()> {
    let reason: u32 = read(ctx, offset(off::KFREE_REASON)?)?;
    let slot =
        DROPS.get_ptr_mut(if reason < MAX_DROP_REASONS { reason } else { MAX_DROP_REASONS - 1 })?;
    // SAFETY: per-CPU value.
    unsafe { *slot += 1 };
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
