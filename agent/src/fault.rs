//! Domain types of a fault, parsed and validated from the wire types. Everything the
//! engines receive has passed through here, so they need not re-check ranges.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use faultline_proto::agent::v1 as pb;

/// A request field that failed validation: which one and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> InvalidField {
    InvalidField { field: field.to_owned(), reason: reason.into() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    Egress,
    Ingress,
    Both,
}

impl Direction {
    #[must_use]
    pub fn egress(self) -> bool {
        matches!(self, Self::Egress | Self::Both)
    }
    #[must_use]
    pub fn ingress(self) -> bool {
        matches!(self, Self::Ingress | Self::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    #[must_use]
    pub fn ip_number(self) -> u32 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmp => 1,
        }
    }
}

/// An IPv4 or IPv6 network, kept as IPv6 (IPv4 mapped to `::ffff:0:0/96`) so one
/// trie serves both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cidr {
    pub addr: [u8; 16],
    /// Prefix length in IPv6 terms (an IPv4 /24 is 120).
    pub prefix: u8,
    pub v4: bool,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{} is not an IP address or CIDR", faultline_proto::quote(s)))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = match len {
            Some(l) => l.parse().ok().filter(|l| *l <= max).ok_or_else(|| {
                format!("{}: prefix length must be 0..={max}", faultline_proto::quote(s))
            })?,
            None => max,
        };
        let (mut bytes, prefix, v4) = match ip {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), 96 + len, true),
            IpAddr::V6(v6) => (v6.octets(), len, false),
        };
        // Keep only the network bits, so `10.1.2.3/8` and `10.0.0.0/8` are one entry.
        for (i, b) in bytes.iter_mut().enumerate() {
            let bits = (i as u8 * 8).min(prefix);
            let keep = (prefix - bits).min(8);
            *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
        Ok(Self { addr: bytes, prefix, v4 })
    }
}

impl Cidr {
    /// Whether an address (IPv6, or IPv4-mapped) lies in this network.
    #[must_use]
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        let full = usize::from(self.prefix / 8);
        let rest = self.prefix % 8;
        addr[..full] == self.addr[..full]
            && (rest == 0 || (addr[full] ^ self.addr[full]) >> (8 - rest) == 0)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        if self.v4 {
            write!(f, "{}/{}", v6.to_ipv4_mapped().expect("mapped"), self.prefix - 96)
        } else {
            write!(f, "{v6}/{}", self.prefix)
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrafficMatch {
    pub peers: Vec<Cidr>,
    pub ports: Vec<(u16, u16)>,
    pub protocol: Option<Protocol>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Distribution {
    Uniform,
    Normal,
    Pareto,
    ParetoNormal,
}

/// A probability with its correlation, both as fractions 0..=1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Chance {
    pub probability: f64,
    pub correlation: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LossModel {
    Random { probability: f64, correlation: f64 },
    GilbertElliott { p: f64, r: f64, bad_loss: f64, good_loss: f64 },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetemSpec {
    pub delay: Duration,
    pub jitter: Duration,
    pub delay_correlation: f64,
    pub distribution: Distribution,
    pub loss: Option<LossModel>,
    pub duplicate: Option<Chance>,
    pub corrupt: Option<Chance>,
    pub reorder: Option<Chance>,
    pub rate_bps: u64,
    pub limit: u32,
}

impl NetemSpec {
    /// The share of this spec one direction carries when a fault covers both: the
    /// configured delay is the added round trip, so each way gets half of it.
    #[must_use]
    pub fn halved_delay(&self) -> Self {
        Self { delay: self.delay / 2, jitter: self.jitter / 2, ..self.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FaultKind {
    Netem(NetemSpec),
    Bandwidth { rate_bps: u64, burst_bytes: u32 },
    Drop { probability: f64 },
    Partition,
}

impl FaultKind {
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Netem(_) => "netem",
            Self::Bandwidth { .. } => "bandwidth",
            Self::Drop { .. } => "drop",
            Self::Partition => "partition",
        }
    }
    /// Netem and bandwidth shape in a qdisc; drop and partition act in the classifier.
    #[must_use]
    pub fn uses_qdisc(&self) -> bool {
        matches!(self, Self::Netem(_) | Self::Bandwidth { .. })
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaultSpec {
    pub interface: String,
    pub direction: Direction,
    pub matcher: TrafficMatch,
    pub lease: Duration,
    pub include_control: bool,
    pub label: String,
    pub kind: FaultKind,
}

/// The longest lease an agent accepts; a controller renews well before that.
pub const MAX_LEASE: Duration = faultline_proto::MAX_LEASE;
/// The longest netem delay or jitter: far beyond any network, and inside netem's range.
pub const MAX_DELAY: Duration = Duration::from_mins(1);
/// Longest interface name the kernel allows (IFNAMSIZ - 1).
const IFNAMSIZ: usize = 15;
/// Longest free-text label kept with a fault.
pub const MAX_LABEL: usize = 1024;

fn percent(field: &str, v: f64) -> Result<f64, InvalidField> {
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(invalid(field, format!("{v} is not a percentage in 0..=100")));
    }
    Ok(v / 100.0)
}

fn chance(field: &str, p: f64, corr: f64) -> Result<Option<Chance>, InvalidField> {
    let probability = percent(field, p)?;
    let correlation = percent(&format!("{field}_correlation"), corr)?;
    Ok((probability > 0.0).then_some(Chance { probability, correlation }))
}

/// The fastest rate a fault may set: 1 Tbit/s, beyond any NIC; past it a number is a
/// mistake or an attack on the kernel's rate arithmetic (2^64-1 bit/s was accepted).
pub const MAX_RATE_BPS: u64 = 1_000_000_000_000;

fn rate(field: &str, bps: u64) -> Result<u64, InvalidField> {
    if bps > MAX_RATE_BPS {
        return Err(invalid(field, format!("{bps} bit/s; at most {MAX_RATE_BPS} (1000gbit)")));
    }
    Ok(bps)
}

fn netem(n: &pb::Netem) -> Result<NetemSpec, InvalidField> {
    let delay = Duration::from_micros(n.delay_us);
    let jitter = Duration::from_micros(n.jitter_us);
    if delay > MAX_DELAY {
        return Err(invalid(
            "netem.delay_us",
            format!("{} us is more than {} s", n.delay_us, MAX_DELAY.as_secs()),
        ));
    }
    if n.jitter_us > 0 && n.delay_us == 0 {
        return Err(invalid("netem.jitter_us", "jitter needs a delay"));
    }
    if jitter > delay {
        return Err(invalid(
            "netem.jitter_us",
            "jitter larger than the delay would need negative delays",
        ));
    }
    let distribution = match pb::Distribution::try_from(n.distribution) {
        Ok(pb::Distribution::Unspecified | pb::Distribution::Uniform) => Distribution::Uniform,
        Ok(pb::Distribution::Normal) => Distribution::Normal,
        Ok(pb::Distribution::Pareto) => Distribution::Pareto,
        Ok(pb::Distribution::Paretonormal) => Distribution::ParetoNormal,
        Err(_) => {
            return Err(invalid("netem.distribution", format!("unknown value {}", n.distribution)));
        }
    };
    if distribution != Distribution::Uniform && n.jitter_us == 0 {
        return Err(invalid(
            "netem.distribution",
            "a distribution shapes the jitter; set jitter_us",
        ));
    }
    let loss = match &n.gilbert_elliott {
        Some(ge) => {
            if n.loss_percent > 0.0 {
                return Err(invalid(
                    "netem.gilbert_elliott",
                    "give either loss_percent or gilbert_elliott, not both",
                ));
            }
            let bad = if ge.bad_loss == 0.0 { 100.0 } else { ge.bad_loss };
            Some(LossModel::GilbertElliott {
                p: percent("netem.gilbert_elliott.p", ge.p)?,
                r: percent("netem.gilbert_elliott.r", ge.r)?,
                bad_loss: percent("netem.gilbert_elliott.bad_loss", bad)?,
                good_loss: percent("netem.gilbert_elliott.good_loss", ge.good_loss)?,
            })
        }
        None => chance("netem.loss_percent", n.loss_percent, n.loss_correlation)?
            .map(|c| LossModel::Random { probability: c.probability, correlation: c.correlation }),
    };
    let reorder = chance("netem.reorder_percent", n.reorder_percent, n.reorder_correlation)?;
    if reorder.is_some() && n.delay_us == 0 {
        return Err(invalid(
            "netem.reorder_percent",
            "reordering sends some packets early; it needs a delay",
        ));
    }
    let spec = NetemSpec {
        delay,
        jitter,
        delay_correlation: percent("netem.delay_correlation", n.delay_correlation)?,
        distribution,
        loss,
        duplicate: chance("netem.duplicate_percent", n.duplicate_percent, n.duplicate_correlation)?,
        corrupt: chance("netem.corrupt_percent", n.corrupt_percent, n.corrupt_correlation)?,
        reorder,
        rate_bps: rate("netem.rate_bps", n.rate_bps)?,
        limit: if n.limit == 0 { 1000 } else { n.limit },
    };
    if spec.delay.is_zero()
        && spec.loss.is_none()
        && spec.duplicate.is_none()
        && spec.corrupt.is_none()
        && spec.rate_bps == 0
    {
        return Err(invalid(
            "netem",
            "nothing to do: set a delay, loss, duplicate, corrupt or rate",
        ));
    }
    Ok(spec)
}

impl TryFrom<&pb::FaultSpec> for FaultSpec {
    type Error = InvalidField;

    fn try_from(s: &pb::FaultSpec) -> Result<Self, InvalidField> {
        // In a container, the interface defaults to its only one (found when resolved).
        if s.interface.is_empty() && s.container.is_none() && s.pod.is_none() {
            return Err(invalid("interface", "required (or a container or pod to act in)"));
        }
        if s.interface.len() > IFNAMSIZ
            || s.interface.contains(['/', '\0'])
            || s.interface.chars().any(char::is_whitespace)
        {
            return Err(invalid(
                "interface",
                format!(
                    "{} is not an interface name (at most {IFNAMSIZ} bytes, no '/', whitespace or NUL)",
                    faultline_proto::quote(&s.interface)
                ),
            ));
        }
        if s.label.len() > MAX_LABEL {
            return Err(invalid("label", format!("{} bytes; at most {MAX_LABEL}", s.label.len())));
        }
        let direction = match pb::Direction::try_from(s.direction) {
            Ok(pb::Direction::Egress | pb::Direction::Unspecified) => Direction::Egress,
            Ok(pb::Direction::Ingress) => Direction::Ingress,
            Ok(pb::Direction::Both) => Direction::Both,
            Err(_) => return Err(invalid("direction", format!("unknown value {}", s.direction))),
        };
        if s.lease_ms == 0 {
            return Err(invalid("lease_ms", "required and > 0: every fault must end by itself"));
        }
        let lease = Duration::from_millis(s.lease_ms);
        if lease > MAX_LEASE {
            return Err(invalid("lease_ms", format!("at most {} s", MAX_LEASE.as_secs())));
        }
        let m = s.r#match.clone().unwrap_or_default();
        if m.peers.len() > faultline_ebpf_common::MAX_PEERS as usize {
            return Err(invalid(
                "match.peers",
                format!(
                    "{} peers; the eBPF peer table holds at most {}",
                    m.peers.len(),
                    faultline_ebpf_common::MAX_PEERS
                ),
            ));
        }
        let mut peers = m
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| p.parse::<Cidr>().map_err(|e| invalid(&format!("match.peers[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        // One entry per network: `10.9.0.0/24` and `10.9.0.7/24` are the same key in the
        // table, and a second insert or delete of it must not happen.
        peers.sort_by_key(|c| (c.addr, c.prefix));
        peers.dedup();
        if m.ports.len() > faultline_ebpf_common::MAX_PORT_RANGES {
            return Err(invalid(
                "match.ports",
                format!("at most {} ranges", faultline_ebpf_common::MAX_PORT_RANGES),
            ));
        }
        let mut ports = Vec::new();
        for (i, r) in m.ports.iter().enumerate() {
            let last = if r.last == 0 { r.first } else { r.last };
            if r.first == 0 || r.first > 65535 || last > 65535 || last < r.first {
                return Err(invalid(
                    &format!("match.ports[{i}]"),
                    format!("{}..{} is not a port range in 1..=65535", r.first, r.last),
                ));
            }
            ports.push((r.first as u16, last as u16));
        }
        let protocol = match pb::Protocol::try_from(m.protocol) {
            Ok(pb::Protocol::Any) => None,
            Ok(pb::Protocol::Tcp) => Some(Protocol::Tcp),
            Ok(pb::Protocol::Udp) => Some(Protocol::Udp),
            Ok(pb::Protocol::Icmp) => Some(Protocol::Icmp),
            Err(_) => {
                return Err(invalid("match.protocol", format!("unknown value {}", m.protocol)));
            }
        };
        if protocol == Some(Protocol::Icmp) && !ports.is_empty() {
            return Err(invalid("match.ports", "ICMP has no ports"));
        }
        let kind = match &s.kind {
            None => return Err(invalid("kind", "required: netem, bandwidth, drop or partition")),
            Some(pb::fault_spec::Kind::Netem(n)) => FaultKind::Netem(netem(n)?),
            Some(pb::fault_spec::Kind::Bandwidth(b)) => {
                if b.rate_bps < 8 {
                    return Err(invalid("bandwidth.rate_bps", "must be at least 8 bit/s"));
                }
                rate("bandwidth.rate_bps", b.rate_bps)?;
                // tc's rule of thumb: enough for one timer tick at 250 Hz, and two full frames.
                let burst = if b.burst_bytes == 0 {
                    ((b.rate_bps / 8 / 250) as u32).max(2 * 1514)
                } else {
                    b.burst_bytes
                };
                FaultKind::Bandwidth { rate_bps: b.rate_bps, burst_bytes: burst }
            }
            Some(pb::fault_spec::Kind::Drop(d)) => {
                let probability = percent("drop.percent", d.percent)?;
                if probability == 0.0 {
                    return Err(invalid("drop.percent", "0 % drops nothing"));
                }
                FaultKind::Drop { probability }
            }
            Some(pb::fault_spec::Kind::Partition(_)) => {
                if peers.is_empty() {
                    return Err(invalid("match.peers", "a partition needs the peers to cut off"));
                }
                FaultKind::Partition
            }
            Some(_) => return Err(invalid("kind", "a process fault, not a network fault")),
        };
        Ok(Self {
            interface: s.interface.clone(),
            direction,
            matcher: TrafficMatch { peers, ports, protocol },
            lease,
            include_control: s.include_control_traffic,
            label: s.label.clone(),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: pb::fault_spec::Kind) -> pb::FaultSpec {
        pb::FaultSpec {
            interface: "eth0".into(),
            lease_ms: 1000,
            kind: Some(kind),
            ..Default::default()
        }
    }

    #[test]
    fn cidr_parses_both_families_and_masks_host_bits() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert_eq!(c.prefix, 104);
        let c: Cidr = "fd00::1".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::1/128");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("banana".parse::<Cidr>().is_err());
        let net: Cidr = "10.1.0.0/17".parse().unwrap();
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped().octets();
        assert!(net.contains(&ip("10.1.127.255")));
        assert!(!net.contains(&ip("10.1.128.0")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(&ip("192.0.2.1")));
        assert!(
            "fd00::1"
                .parse::<Cidr>()
                .unwrap()
                .contains(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets())
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = FaultSpec::try_from(&spec(pb::fault_spec::Kind::Drop(pb::Drop { percent: 140.0 })))
            .unwrap_err();
        assert_eq!(e.field, "drop.percent");
        let mut s = spec(pb::fault_spec::Kind::Drop(pb::Drop { percent: 10.0 }));
        s.lease_ms = 0;
        assert_eq!(FaultSpec::try_from(&s).unwrap_err().field, "lease_ms");
        s.lease_ms = 10;
        s.r#match =
            Some(pb::TrafficMatch { peers: vec!["10.0.0.0/99".into()], ..Default::default() });
        assert_eq!(FaultSpec::try_from(&s).unwrap_err().field, "match.peers[0]");
        let e = FaultSpec::try_from(&spec(pb::fault_spec::Kind::Partition(pb::Partition {})))
            .unwrap_err();
        assert_eq!(e.field, "match.peers");
        let e = FaultSpec::try_from(&spec(pb::fault_spec::Kind::Netem(pb::Netem {
            jitter_us: 5,
            ..Default::default()
        })))
        .unwrap_err();
        assert_eq!(e.field, "netem.jitter_us");
        let e = FaultSpec::try_from(&spec(pb::fault_spec::Kind::Netem(pb::Netem {
            loss_percent: f64::NAN,
            ..Default::default()
        })))
        .unwrap_err();
        assert_eq!(e.field, "netem.loss_percent");
        // Rates past 1 Tbit/s (the red team sent 2^64-1 bit/s) are refused, 1 Tbit/s is not.
        let e = FaultSpec::try_from(&spec(pb::fault_spec::Kind::Bandwidth(pb::Bandwidth {
            rate_bps: u64::MAX,
            burst_bytes: 0,
        })))
        .unwrap_err();
        assert!(e.field == "bandwidth.rate_bps" && e.reason.contains("at most"), "{e:?}");
        assert!(
            FaultSpec::try_from(&spec(pb::fault_spec::Kind::Bandwidth(pb::Bandwidth {
                rate_bps: MAX_RATE_BPS,
                burst_bytes: 0
            })))
            .is_ok()
        );
        let e = FaultSpec::try_from(&spec(pb::fault_spec::Kind::Netem(pb::Netem {
            rate_bps: MAX_RATE_BPS + 1,
            ..Default::default()
        })))
        .unwrap_err();
        assert_eq!(e.field, "netem.rate_bps");
    }

    #[test]
    fn both_directions_share_the_delay() {
        let s = FaultSpec::try_from(&spec(pb::fault_spec::Kind::Netem(pb::Netem {
            delay_us: 100_000,
            jitter_us: 10_000,
            ..Default::default()
        })))
        .unwrap();
        let FaultKind::Netem(n) = s.kind else { panic!() };
        assert_eq!(n.halved_delay().delay, Duration::from_millis(50));
        assert_eq!(n.halved_delay().jitter, Duration::from_millis(5));
    }

    #[test]
    fn peers_are_one_entry_per_network_and_bounded_inputs_are_refused() {
        let mut s = spec(pb::fault_spec::Kind::Partition(pb::Partition {}));
        s.r#match = Some(pb::TrafficMatch {
            peers: vec!["10.91.0.0/24".into(), "10.91.0.7/24".into(), "fd00::1".into()],
            ..Default::default()
        });
        assert_eq!(FaultSpec::try_from(&s).unwrap().matcher.peers.len(), 2);
        let mut long = spec(pb::fault_spec::Kind::Drop(pb::Drop { percent: 10.0 }));
        long.interface = "x".repeat(100_000);
        let e = FaultSpec::try_from(&long).unwrap_err();
        assert!(e.field == "interface" && e.reason.len() < 200, "{e}");
        let e = FaultSpec::try_from(&spec(pb::fault_spec::Kind::Netem(pb::Netem {
            delay_us: u64::MAX,
            ..Default::default()
        })))
        .unwrap_err();
        assert_eq!(e.field, "netem.delay_us");
        let mut s = spec(pb::fault_spec::Kind::Drop(pb::Drop { percent: 10.0 }));
        s.lease_ms = u64::MAX;
        assert_eq!(FaultSpec::try_from(&s).unwrap_err().field, "lease_ms");
        s.lease_ms = 1000;
        s.r#match =
            Some(pb::TrafficMatch { peers: vec!["1".repeat(100_000)], ..Default::default() });
        let e = FaultSpec::try_from(&s).unwrap_err();
        assert!(e.field == "match.peers[0]" && e.reason.len() < 200, "{e}");
    }
}
