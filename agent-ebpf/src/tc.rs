//! The classifier behind every eBPF fault: attached at ingress and egress of each
//! faulted interface, it matches packets against the fault slots, drops or steers
//! them, and counts what it did per slot.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_get_prandom_u32, bpf_redirect},
    macros::{classifier, map},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use faultline_ebpf_common::{
    ACTION_DROP, ACTION_STEER, Counters, DIR_EGRESS, DIR_INGRESS, MAX_CONTROL_PORTS, MAX_PEERS,
    MAX_PORT_RANGES, MAX_RULES, PeerKey, Rule,
};

#[map]
static RULES: Array<Rule> = Array::with_max_entries(MAX_RULES, 0);

#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_RULES, 0);

#[map]
static PEERS: LpmTrie<PeerKey, u8> = LpmTrie::with_max_entries(MAX_PEERS, 0);

/// TCP ports of the agent's own gRPC connections (either end).
#[map]
static CONTROL_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_CONTROL_PORTS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const TC_ACT_REDIRECT: i32 = 7;

struct Packet {
    remote: [u8; 16],
    protocol: u8,
    sport: u16,
    dport: u16,
}

#[classifier]
pub fn faultline_ingress(ctx: TcContext) -> i32 {
    classify(&ctx, DIR_INGRESS)
}

#[classifier]
pub fn faultline_egress(ctx: TcContext) -> i32 {
    classify(&ctx, DIR_EGRESS)
}

#[inline(always)]
fn classify(ctx: &TcContext, dir: u32) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run.
    let (ifindex, len) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).len) };
    // The agent keeps this program attached where no fault is (attached ahead, or idle
    // before it detaches): such packets leave before any header is read or hash looked up.
    if !any_rule(ifindex, dir) {
        return TC_ACT_OK;
    }
    let Some(pkt) = parse(ctx, dir) else {
        return TC_ACT_OK;
    };
    let is_control = pkt.protocol == IPPROTO_TCP
        // SAFETY: a map lookup only tested for presence; the value is never read.
        && (unsafe { CONTROL_PORTS.get(&pkt.sport) }.is_some()
            // SAFETY: as above.
            || unsafe { CONTROL_PORTS.get(&pkt.dport) }.is_some());

    let mut drop = false;
    let mut steer: Option<&Rule> = None;
    for slot in 0..MAX_RULES {
        let Some(rule) = RULES.get(slot) else { break };
        if rule.ifindex != ifindex || rule.directions & dir == 0 {
            continue;
        }
        if is_control && rule.include_control == 0 {
            continue;
        }
        if !matches(rule, slot, &pkt) {
            continue;
        }
        if let Some(c) = COUNTERS.get_ptr_mut(slot) {
            // SAFETY: per-CPU value, no concurrent writer on this CPU.
            unsafe {
                (*c).matched_packets += 1;
                (*c).matched_bytes += u64::from(len);
            }
        }
        if rule.action == ACTION_DROP {
            // Compare as u32: a signed compare would never drop above 2^31.
            // SAFETY: helper without arguments.
            let roll: u32 = unsafe { bpf_get_prandom_u32() };
            if rule.drop_always != 0 || roll < rule.drop_threshold {
                if let Some(c) = COUNTERS.get_ptr_mut(slot) {
                    // SAFETY: as above.
                    unsafe { (*c).dropped_packets += 1 };
                }
                drop = true;
            }
        } else if rule.action == ACTION_STEER && steer.is_none() {
            steer = Some(rule);
        }
    }

    if drop {
        if dir == DIR_EGRESS {
            // A wire loses packets silently. TC_ACT_SHOT would make the sender's
            // sendmsg fail with ENOBUFS; a redirect to ifindex 0 is freed by the
            // kernel while the egress path reports success to the socket.
            // SAFETY: helper call with plain integer arguments.
            return unsafe { bpf_redirect(0, 0) } as i32;
        }
        return TC_ACT_SHOT;
    }
    if let Some(rule) = steer {
        // SAFETY: writing priority is allowed for tc programs.
        unsafe {
            if dir == DIR_EGRESS {
                (*ctx.skb.skb).priority = rule.egress_classid;
            } else {
                (*ctx.skb.skb).priority = rule.ingress_classid;
                let r = bpf_redirect(rule.ingress_redirect, 0) as i32;
                if r == TC_ACT_REDIRECT {
                    return r;
                }
            }
        }
    }
    TC_ACT_OK
}

/// Whether a live rule concerns this interface and direction (an empty slot's ifindex is 0,
/// which no interface has). Array lookups are inlined by the verifier: no helper calls.
/// (A hash map of live interfaces, one lookup, measured no faster.)
#[inline(always)]
fn any_rule(ifindex: u32, dir: u32) -> bool {
    for slot in 0..MAX_RULES {
        let Some(rule) = RULES.get(slot) else { break };
        if rule.ifindex == ifindex && rule.directions & dir != 0 {
            return true;
        }
    }
    false
}

#[inline(always)]
fn matches(rule: &Rule, slot: u32, pkt: &Packet) -> bool {
    if rule.protocol != 0 {
        let want = rule.protocol as u8;
        let icmp = want == IPPROTO_ICMP && pkt.protocol == IPPROTO_ICMPV6;
        if pkt.protocol != want && !icmp {
            return false;
        }
    }
    if rule.n_ports != 0 {
        if pkt.protocol != IPPROTO_TCP && pkt.protocol != IPPROTO_UDP {
            return false;
        }
        let mut hit = false;
        for i in 0..MAX_PORT_RANGES {
            if (i as u32) < rule.n_ports {
                let r = rule.ports[i];
                if (pkt.sport >= r.first && pkt.sport <= r.last)
                    || (pkt.dport >= r.first && pkt.dport <= r.last)
                {
                    hit = true;
                }
            }
        }
        if !hit {
            return false;
        }
    }
    if rule.match_peers != 0 {
        let key = Key::new(32 + 128, PeerKey { slot_be: slot.to_be_bytes(), addr: pkt.remote });
        if PEERS.get(&key).is_none() {
            return false;
        }
    }
    true
}

#[inline(always)]
fn parse(ctx: &TcContext, dir: u32) -> Option<Packet> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    let mut remote = [0u8; 16];
    let (protocol, l4) = match ethertype {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(ETH_HLEN).ok()?;
            let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
            let off = if dir == DIR_EGRESS { 16 } else { 12 };
            let a: [u8; 4] = ctx.load(ETH_HLEN + off).ok()?;
            remote[10] = 0xff;
            remote[11] = 0xff;
            remote[12] = a[0];
            remote[13] = a[1];
            remote[14] = a[2];
            remote[15] = a[3];
            (proto, ETH_HLEN + usize::from(vihl & 0x0f) * 4)
        }
        ETH_P_IPV6 => {
            let proto: u8 = ctx.load(ETH_HLEN + 6).ok()?;
            let off = if dir == DIR_EGRESS { 24 } else { 8 };
            remote = ctx.load(ETH_HLEN + off).ok()?;
            (proto, ETH_HLEN + 40)
        }
        _ => return None,
    };
    let (mut sport, mut dport) = (0, 0);
    if protocol == IPPROTO_TCP || protocol == IPPROTO_UDP {
        if let Ok(p) = ctx.load::<[u8; 4]>(l4) {
            sport = u16::from_be_bytes([p[0], p[1]]);
            dport = u16::from_be_bytes([p[2], p[3]]);
        }
    }
    Some(Packet { remote, protocol, sport, dport })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
