//! Encoders for the `TCA_OPTIONS` payloads of the qdiscs and classes faultline uses.
//! netlink-packet-route has no netem/htb types, so these follow the kernel's uapi
//! structs (`include/uapi/linux/pkt_sched.h`) and the attribute order of iproute2's
//! `tc`, against whose bytes they are tested.

use crate::fault::{Distribution, LossModel, NetemSpec};

/// psched ticks are 64 ns (`PSCHED_SHIFT` = 6); tc converts microseconds with
/// `tick_in_usec` = 1000/64, read from /proc/net/psched, which is fixed on Linux.
const TICKS_PER_USEC: f64 = 15.625;

const TCA_NETEM_CORR: u16 = 1;
const TCA_NETEM_DELAY_DIST: u16 = 2;
const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_LOSS: u16 = 5;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
const TCA_NETEM_RATE64: u16 = 8;
const NETEM_LOSS_GE: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_DIRECT_QLEN: u16 = 5;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_HTB_PROTOVER: u32 = 3;
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// A probability (0..=1) as the kernel's fixed point, rounded half-to-even like tc's `rint()`.
#[must_use]
pub fn prob_u32(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * f64::from(u32::MAX)).round_ties_even() as u32
}

fn usec_to_ticks(us: u64) -> u32 {
    let t = (us as f64 * TICKS_PER_USEC).round();
    if t >= f64::from(u32::MAX) { u32::MAX } else { t as u32 }
}

fn put_u32s(out: &mut Vec<u8>, vals: &[u32]) {
    for v in vals {
        out.extend_from_slice(&v.to_ne_bytes());
    }
}

/// Appends one netlink attribute, padded to 4 bytes.
pub fn put_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
}

/// The netem `TCA_OPTIONS` payload: `struct tc_netem_qopt` followed by attributes.
/// `dist_table` is the delay distribution (tc's `.dist` file contents), when not uniform.
#[must_use]
pub fn netem_options(spec: &NetemSpec, dist_table: Option<&[i16]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let (loss, ge) = match spec.loss {
        Some(LossModel::Random { probability, .. }) => (prob_u32(probability), None),
        Some(LossModel::GilbertElliott { p, r, bad_loss, good_loss }) => {
            (0, Some((p, r, bad_loss, good_loss)))
        }
        None => (0, None),
    };
    let gap = u32::from(spec.reorder.is_some());
    let latency_us = spec.delay.as_micros() as u64;
    let jitter_us = spec.jitter.as_micros() as u64;
    put_u32s(
        &mut out,
        &[
            usec_to_ticks(latency_us),
            spec.limit,
            loss,
            gap,
            spec.duplicate.map_or(0, |d| prob_u32(d.probability)),
            usec_to_ticks(jitter_us),
        ],
    );
    // The 32-bit tick fields overflow past ~268 s; tc then adds the 64-bit ns values.
    if usec_to_ticks(latency_us) == u32::MAX {
        put_attr(&mut out, TCA_NETEM_LATENCY64, &((latency_us * 1000) as i64).to_ne_bytes());
    }
    if usec_to_ticks(jitter_us) == u32::MAX {
        put_attr(&mut out, TCA_NETEM_JITTER64, &((jitter_us * 1000) as i64).to_ne_bytes());
    }
    let loss_corr = match spec.loss {
        Some(LossModel::Random { correlation, .. }) => correlation,
        _ => 0.0,
    };
    let dup_corr = spec.duplicate.map_or(0.0, |d| d.correlation);
    if spec.delay_correlation > 0.0 || loss_corr > 0.0 || dup_corr > 0.0 {
        let mut corr = Vec::new();
        put_u32s(
            &mut corr,
            &[prob_u32(spec.delay_correlation), prob_u32(loss_corr), prob_u32(dup_corr)],
        );
        put_attr(&mut out, TCA_NETEM_CORR, &corr);
    }
    if let Some(r) = spec.reorder {
        let mut b = Vec::new();
        put_u32s(&mut b, &[prob_u32(r.probability), prob_u32(r.correlation)]);
        put_attr(&mut out, TCA_NETEM_REORDER, &b);
    }
    if let Some(c) = spec.corrupt {
        let mut b = Vec::new();
        put_u32s(&mut b, &[prob_u32(c.probability), prob_u32(c.correlation)]);
        put_attr(&mut out, TCA_NETEM_CORRUPT, &b);
    }
    if let Some((p, r, bad_loss, good_loss)) = ge {
        // struct tc_netem_gemodel { p, r, h, k1 }: tc stores h as 1 - (1-h).
        let mut model = Vec::new();
        put_u32s(
            &mut model,
            &[prob_u32(p), prob_u32(r), u32::MAX - prob_u32(bad_loss), prob_u32(good_loss)],
        );
        let mut nested = Vec::new();
        put_attr(&mut nested, NETEM_LOSS_GE, &model);
        put_attr(&mut out, TCA_NETEM_LOSS | NLA_F_NESTED, &nested);
    }
    if spec.rate_bps > 0 {
        let bytes_per_sec = spec.rate_bps / 8;
        let mut b = Vec::new();
        // struct tc_netem_rate { u32 rate; s32 packet_overhead; u32 cell_size; s32 cell_overhead }
        put_u32s(&mut b, &[u32::try_from(bytes_per_sec).unwrap_or(u32::MAX), 0, 0, 0]);
        put_attr(&mut out, TCA_NETEM_RATE, &b);
        if bytes_per_sec > u64::from(u32::MAX) {
            put_attr(&mut out, TCA_NETEM_RATE64, &bytes_per_sec.to_ne_bytes());
        }
    }
    if let Some(table) = dist_table {
        let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_ne_bytes()).collect();
        put_attr(&mut out, TCA_NETEM_DELAY_DIST, &bytes);
    }
    out
}

/// Whether a netem spec needs a distribution table, and its tc name.
#[must_use]
pub fn dist_name(d: Distribution) -> Option<&'static str> {
    match d {
        Distribution::Uniform => None,
        Distribution::Normal => Some("normal"),
        Distribution::Pareto => Some("pareto"),
        Distribution::ParetoNormal => Some("paretonormal"),
    }
}

/// Parses a tc `.dist` file: `#` comments and whitespace-separated signed 16-bit values.
pub fn parse_dist(text: &str) -> Result<Vec<i16>, String> {
    let mut out = Vec::with_capacity(4096);
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for word in line.split_whitespace() {
            out.push(word.parse::<i16>().map_err(|e| format!("bad value {word:?}: {e}"))?);
        }
    }
    if out.is_empty() {
        return Err("no values".into());
    }
    Ok(out)
}

/// htb qdisc options: `struct tc_htb_glob` and an explicit direct queue length.
/// Packets the classifier does not steer go to htb's direct queue, unshaped.
#[must_use]
pub fn htb_qdisc_options(direct_qlen: u32) -> Vec<u8> {
    let mut glob = Vec::new();
    // version, rate2quantum, defcls (0: unclassified -> direct), debug, direct_pkts
    put_u32s(&mut glob, &[TC_HTB_PROTOVER, 10, 0, 0, 0]);
    let mut out = Vec::new();
    put_attr(&mut out, TCA_HTB_INIT, &glob);
    put_attr(&mut out, TCA_HTB_DIRECT_QLEN, &direct_qlen.to_ne_bytes());
    out
}

fn ratespec(bytes_per_sec: u64) -> [u8; 12] {
    // struct tc_ratespec { u8 cell_log; u8 linklayer; u16 overhead; s16 cell_align; u16 mpu; u32 rate }
    // cell_log 3 and cell_align -1 are what tc computes for the default 2047-byte MTU;
    // linklayer ETHERNET tells the kernel to compute rates itself (no rate table).
    let mut b = [0u8; 12];
    b[0] = 3;
    b[1] = TC_LINKLAYER_ETHERNET;
    b[4..6].copy_from_slice(&(-1i16).to_ne_bytes());
    b[8..12].copy_from_slice(&u32::try_from(bytes_per_sec).unwrap_or(u32::MAX).to_ne_bytes());
    b
}

/// htb class options for a class limited to `rate_bps` with `burst` bytes of buffer.
#[must_use]
pub fn htb_class_options(rate_bps: u64, burst: u32) -> Vec<u8> {
    let bps = rate_bps / 8;
    // buffer is the time to send `burst` bytes at `rate`, in ticks.
    let buffer_us = if bps == 0 { 0 } else { (u64::from(burst) * 1_000_000).div_ceil(bps) };
    let buffer = usec_to_ticks(buffer_us);
    let mut parms = Vec::with_capacity(48);
    parms.extend_from_slice(&ratespec(bps));
    parms.extend_from_slice(&ratespec(bps));
    // buffer, cbuffer, quantum (0: from rate2quantum), level, prio
    put_u32s(&mut parms, &[buffer, buffer, 0, 0, 0]);
    let mut out = Vec::new();
    put_attr(&mut out, TCA_HTB_PARMS, &parms);
    if bps > u64::from(u32::MAX) {
        put_attr(&mut out, TCA_HTB_RATE64, &bps.to_ne_bytes());
        put_attr(&mut out, TCA_HTB_CEIL64, &bps.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fault::Chance;

    /// The `TCA_OPTIONS` payload of a netlink message captured from real `tc`
    /// (`strace -e write=3 tc ...`, files in agent/tests/data).
    fn tc_options(hex: &str, attr: u16) -> Vec<u8> {
        let b: Vec<u8> = (0..hex.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut off = 16 + 20;
        while off < b.len() {
            let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
            let kind = u16::from_ne_bytes([b[off + 2], b[off + 3]]);
            if kind == attr {
                return b[off + 4..off + len].to_vec();
            }
            off += len.next_multiple_of(4);
        }
        panic!("attribute {attr} not in capture");
    }

    fn sub_attr(payload: &[u8], attr: u16) -> Vec<u8> {
        let mut off = 0;
        while off < payload.len() {
            let len = u16::from_ne_bytes([payload[off], payload[off + 1]]) as usize;
            if u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) == attr {
                return payload[off + 4..off + len].to_vec();
            }
            off += len.next_multiple_of(4);
        }
        panic!("sub-attribute {attr} missing");
    }

    fn base() -> NetemSpec {
        NetemSpec {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            delay_correlation: 0.0,
            distribution: Distribution::Uniform,
            loss: None,
            duplicate: None,
            corrupt: None,
            reorder: None,
            rate_bps: 0,
            limit: 1000,
        }
    }

    #[test]
    fn netem_full_matches_tc() {
        // tc qdisc add dev X root netem delay 100ms 10ms 25% loss 5% 30% duplicate 1%
        //    corrupt 0.1% reorder 25% 50% rate 10mbit limit 500
        let spec = NetemSpec {
            delay: Duration::from_millis(100),
            jitter: Duration::from_millis(10),
            delay_correlation: 0.25,
            loss: Some(LossModel::Random { probability: 0.05, correlation: 0.30 }),
            duplicate: Some(Chance { probability: 0.01, correlation: 0.0 }),
            corrupt: Some(Chance { probability: 0.001, correlation: 0.0 }),
            reorder: Some(Chance { probability: 0.25, correlation: 0.50 }),
            rate_bps: 10_000_000,
            limit: 500,
            ..base()
        };
        assert_eq!(
            netem_options(&spec, None),
            tc_options(include_str!("../../tests/data/netem_full.hex"), 2)
        );
    }

    #[test]
    fn netem_loss_matches_tc() {
        let spec = NetemSpec {
            loss: Some(LossModel::Random { probability: 0.10, correlation: 0.0 }),
            ..base()
        };
        assert_eq!(
            netem_options(&spec, None),
            tc_options(include_str!("../../tests/data/netem_loss.hex"), 2)
        );
    }

    #[test]
    fn netem_gilbert_elliott_matches_tc() {
        // tc ... netem delay 50ms loss gemodel 1% 10% 70% 0.1%
        let spec = NetemSpec {
            delay: Duration::from_millis(50),
            loss: Some(LossModel::GilbertElliott {
                p: 0.01,
                r: 0.10,
                bad_loss: 0.70,
                good_loss: 0.001,
            }),
            ..base()
        };
        assert_eq!(
            netem_options(&spec, None),
            tc_options(include_str!("../../tests/data/netem_gemodel.hex"), 2)
        );
    }

    #[test]
    fn netem_distribution_matches_tc() {
        // tc ... netem delay 100ms 20ms distribution normal (table from iproute2's normal.dist)
        let captured = tc_options(include_str!("../../tests/data/netem_normal.hex"), 2);
        let table: Vec<i16> = sub_attr(&captured[24..], TCA_NETEM_DELAY_DIST)
            .chunks(2)
            .map(|c| i16::from_ne_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(table.len(), 4096);
        let spec = NetemSpec {
            delay: Duration::from_millis(100),
            jitter: Duration::from_millis(20),
            distribution: Distribution::Normal,
            ..base()
        };
        assert_eq!(netem_options(&spec, Some(&table)), captured);
    }

    #[test]
    fn htb_qdisc_matches_tc() {
        // tc qdisc add dev X root handle fa17: htb default 0 direct_qlen 1000
        assert_eq!(
            htb_qdisc_options(1000),
            tc_options(include_str!("../../tests/data/htb_qdisc.hex"), 2)
        );
    }

    #[test]
    fn htb_class_parms_match_tc() {
        // tc class add dev X parent fa17: classid fa17:1 htb rate 10mbit ceil 10mbit burst 15k cburst 15k
        // tc also sends rate tables, which the kernel ignores for ethernet link layers.
        let captured = tc_options(include_str!("../../tests/data/htb_class.hex"), 2);
        let ours = htb_class_options(10_000_000, 15 * 1024);
        assert_eq!(sub_attr(&ours, TCA_HTB_PARMS), sub_attr(&captured, TCA_HTB_PARMS));
    }

    #[test]
    fn probabilities_round_like_tc() {
        assert_eq!(prob_u32(0.05), 0x0CCC_CCCD);
        assert_eq!(prob_u32(1.0), u32::MAX);
        assert_eq!(prob_u32(0.0), 0);
    }

    #[test]
    fn parses_dist_files() {
        assert_eq!(parse_dist("# c\n 1 -2\n3").unwrap(), vec![1, -2, 3]);
        assert!(parse_dist("# nothing").is_err());
        assert!(parse_dist("99999").is_err());
    }
}
