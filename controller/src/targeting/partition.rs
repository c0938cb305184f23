//! Partition shapes (as Jepsen names them) turned into each agent's set of agents it
//! must not reach, and the addresses and interface that carry that cut.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use faultline_proto::{agent::v1::Interface, controller::v1::Shape};

/// Fisher-Yates with a xorshift seeded by the caller: a random pick, no crypto needed.
pub fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// For every agent in `names`, the agents it shares no group with. `--node` is for the
/// shapes that use it (isolate, bridge) and `--group` for shape groups only: a flag a shape
/// would ignore is refused. With shape groups, an agent named in no group keeps every
/// connection unless `rest_isolated` (then it is cut from every other agent).
pub fn cut(
    names: &[String],
    shape: Shape,
    groups: &[Vec<String>],
    node: &str,
    seed: u64,
    rest_isolated: bool,
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let n = names.len();
    if n < 2 {
        return Err(format!("selector: a partition needs at least 2 agents, {n} selected"));
    }
    if !node.is_empty() && !matches!(shape, Shape::Isolate | Shape::Bridge) {
        return Err(format!(
            "node: the {} shape picks its own sides; --node is for isolate and bridge",
            // SHAPE_MAJORITIES_RING as the CLI spells it: majorities-ring.
            shape.as_str_name().trim_start_matches("SHAPE_").to_ascii_lowercase().replace('_', "-")
        ));
    }
    if !groups.is_empty() && shape != Shape::Groups {
        return Err("groups: --group is for the groups shape".into());
    }
    if rest_isolated && shape != Shape::Groups {
        return Err("rest: --rest is for the groups shape".into());
    }
    let mut order = names.to_vec();
    shuffle(&mut order, seed);
    let pick = |what: &str| -> Result<String, String> {
        if node.is_empty() {
            return Ok(order[0].clone());
        }
        if names.iter().any(|x| x == node) {
            Ok(node.to_owned())
        } else {
            Err(format!("node: {node:?} is not among the selected agents {names:?} ({what})"))
        }
    };
    let groups: Vec<Vec<String>> = match shape {
        Shape::Groups => {
            if groups.len() < 2 {
                return Err("groups: give at least two groups".into());
            }
            for g in groups {
                for a in g {
                    if !names.contains(a) {
                        return Err(format!(
                            "groups: {} is not among the selected agents {names:?}",
                            faultline_proto::quote(a)
                        ));
                    }
                }
            }
            let rest: Vec<&String> =
                names.iter().filter(|a| !groups.iter().any(|g| g.contains(a))).collect();
            if rest_isolated {
                groups.iter().cloned().chain(rest.into_iter().map(|a| vec![a.clone()])).collect()
            } else {
                // Untouched: in no cut, on either side.
                let mut out = BTreeMap::new();
                for a in names {
                    let blocked = if rest.contains(&a) {
                        BTreeSet::new()
                    } else {
                        names
                            .iter()
                            .filter(|b| {
                                !rest.contains(b)
                                    && *b != a
                                    && !groups.iter().any(|g| g.contains(a) && g.contains(b))
                            })
                            .cloned()
                            .collect()
                    };
                    out.insert(a.clone(), blocked);
                }
                return Ok(out);
            }
        }
        Shape::Isolate => {
            let x = pick("isolate")?;
            vec![vec![x.clone()], names.iter().filter(|a| **a != x).cloned().collect()]
        }
        Shape::Halves => {
            let (minority, majority) = order.split_at(n / 2);
            vec![minority.to_vec(), majority.to_vec()]
        }
        Shape::Bridge => {
            if n < 3 {
                return Err(format!("shape: a bridge needs at least 3 agents, {n} selected"));
            }
            let b = pick("bridge")?;
            let rest: Vec<String> = order.iter().filter(|a| **a != b).cloned().collect();
            let (x, y) = rest.split_at(rest.len() / 2);
            vec![[x, std::slice::from_ref(&b)].concat(), [y, &[b]].concat()]
        }
        Shape::MajoritiesRing => {
            if n < 5 {
                return Err(format!(
                    "shape: a majorities ring needs at least 5 agents (with fewer every majority is the same), {n} selected"
                ));
            }
            // Each agent sees itself and its nearest neighbours on a ring, a bare majority.
            let majority = n / 2 + 1;
            let reach = (majority - 1).div_ceil(2);
            let mut out = BTreeMap::new();
            for (i, a) in order.iter().enumerate() {
                let sees: BTreeSet<String> = (0..n)
                    .filter(|j| ring_distance(i, *j, n) <= reach)
                    .map(|j| order[j].clone())
                    .collect();
                out.insert(
                    a.clone(),
                    names.iter().filter(|b| !sees.contains(*b)).cloned().collect(),
                );
            }
            return Ok(out);
        }
    };
    let mut out = BTreeMap::new();
    for a in names {
        let blocked: BTreeSet<String> = names
            .iter()
            .filter(|b| *b != a && !groups.iter().any(|g| g.contains(a) && g.contains(b)))
            .cloned()
            .collect();
        out.insert(a.clone(), blocked);
    }
    Ok(out)
}

/// The cut in words: its sides ("h3 | h1 h2"), with agents no cut touches named apart
/// ("h2 | h3 (h1 untouched)", a bridge too), or, where the shape has no sides (a
/// majorities ring), the pairs that cannot reach each other ("h1-h3, h2-h4").
pub fn describe(cut: &BTreeMap<String, BTreeSet<String>>) -> String {
    let untouched: Vec<&String> = cut
        .iter()
        .filter(|(a, b)| b.is_empty() && !cut.values().any(|o| o.contains(*a)))
        .map(|(a, _)| a)
        .collect();
    let all: BTreeSet<&String> = cut.keys().filter(|a| !untouched.contains(a)).collect();
    // Sides exist when "can reach" is an equivalence: each agent reaches exactly its side.
    let side = |a: &String| -> BTreeSet<&String> {
        all.iter().copied().filter(|b| *b == a || !cut[a].contains(*b)).collect()
    };
    let mut sides: Vec<BTreeSet<&String>> = Vec::new();
    let mut consistent = true;
    for a in &all {
        let s = side(a);
        if s.iter().any(|b| side(b) != s) {
            consistent = false;
            break;
        }
        if !sides.contains(&s) {
            sides.push(s);
        }
    }
    let rest = if untouched.is_empty() {
        String::new()
    } else {
        format!(
            " ({} untouched)",
            untouched.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" ")
        )
    };
    if consistent {
        sides.sort_by_key(|s| (s.len(), s.iter().next().map(|a| (*a).clone())));
        return sides
            .iter()
            .map(|s| s.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(" | ")
            + &rest;
    }
    let mut pairs = Vec::new();
    for (a, blocked) in cut {
        for b in blocked {
            if a < b {
                pairs.push(format!("{a}-{b}"));
            }
        }
    }
    pairs.join(", ") + &rest
}

fn ring_distance(i: usize, j: usize, n: usize) -> usize {
    let d = i.abs_diff(j);
    d.min(n - d)
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    Some((a.parse().ok()?, l.parse().ok()?))
}

/// An interface address ("10.0.0.5/24") as the single host it names ("10.0.0.5/32"),
/// unless it is loopback or link-local (never a peer's identity).
pub fn host_address(cidr: &str) -> Option<String> {
    let (ip, _) = parse_cidr(cidr)?;
    let skip = match ip {
        IpAddr::V4(v) => v.is_loopback() || v.is_link_local(),
        IpAddr::V6(v) => v.is_loopback() || (v.segments()[0] & 0xffc0) == 0xfe80,
    };
    (!skip).then(|| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
}

fn in_network(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// The interface whose network holds the peers (the path the cut must be made on).
pub fn interface_towards(interfaces: &[Interface], peers: &[String]) -> Option<String> {
    let peer_ips: Vec<IpAddr> =
        peers.iter().filter_map(|p| parse_cidr(p).map(|(ip, _)| ip)).collect();
    interfaces
        .iter()
        .find(|i| {
            i.addresses
                .iter()
                .filter_map(|a| parse_cidr(a))
                .any(|(net, len)| peer_ips.iter().any(|p| in_network(net, len, *p)))
        })
        .map(|i| i.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    /// The cut is symmetric: if a cannot reach b, b cannot reach a.
    fn symmetric(c: &BTreeMap<String, BTreeSet<String>>) -> bool {
        c.iter().all(|(a, bs)| bs.iter().all(|b| c[b].contains(a)))
    }

    #[test]
    fn isolate_cuts_one_from_all() {
        let c = cut(&names(3), Shape::Isolate, &[], "h2", 7, false).unwrap();
        assert_eq!(c["h2"], BTreeSet::from(["h1".to_owned(), "h3".to_owned()]));
        assert_eq!(c["h1"], BTreeSet::from(["h2".to_owned()]));
        assert!(symmetric(&c));
        assert!(
            cut(&names(3), Shape::Isolate, &[], "h9", 7, false).unwrap_err().starts_with("node")
        );
    }

    #[test]
    fn halves_make_a_minority_and_a_majority() {
        let c = cut(&names(5), Shape::Halves, &[], "", 11, false).unwrap();
        let mut sizes: Vec<usize> = c.values().map(BTreeSet::len).collect();
        sizes.sort_unstable();
        // Minority members are cut from 3, majority members from 2.
        assert_eq!(sizes, vec![2, 2, 2, 3, 3]);
        assert!(symmetric(&c));
    }

    #[test]
    fn a_bridge_reaches_both_sides() {
        let c = cut(&names(5), Shape::Bridge, &[], "h3", 3, false).unwrap();
        assert!(c["h3"].is_empty());
        assert!(c.iter().filter(|(a, _)| *a != "h3").all(|(_, b)| b.len() == 2));
        assert!(symmetric(&c));
    }

    #[test]
    fn majorities_ring_gives_each_a_distinct_majority() {
        let c = cut(&names(5), Shape::MajoritiesRing, &[], "", 5, false).unwrap();
        let seen: BTreeSet<BTreeSet<String>> = c.values().cloned().collect();
        assert_eq!(seen.len(), 5, "no two agents see the same majority");
        assert!(c.values().all(|b| 5 - b.len() >= 3), "each sees a majority");
        assert!(symmetric(&c));
        assert!(cut(&names(4), Shape::MajoritiesRing, &[], "", 5, false).is_err());
    }

    #[test]
    fn groups_are_checked_and_honoured() {
        let g =
            vec![vec!["h1".to_owned(), "h2".to_owned()], vec!["h2".to_owned(), "h3".to_owned()]];
        let c = cut(&names(3), Shape::Groups, &g, "", 1, false).unwrap();
        assert_eq!(c["h1"], BTreeSet::from(["h3".to_owned()]));
        assert!(c["h2"].is_empty());
        assert!(
            cut(&names(3), Shape::Groups, &[vec!["h7".to_owned()], vec![]], "", 1, false)
                .unwrap_err()
                .contains("h7")
        );
    }

    /// Agents named in no group keep their connections unless --rest isolated; a flag the
    /// shape would ignore is refused; the cut reads as sides or pairs.
    #[test]
    fn groups_leave_the_rest_untouched_and_flags_are_not_ignored() {
        let g = vec![vec!["h2".to_owned()], vec!["h3".to_owned()]];
        let c = cut(&names(3), Shape::Groups, &g, "", 1, false).unwrap();
        assert!(c["h1"].is_empty() && !c["h2"].contains("h1") && !c["h3"].contains("h1"), "{c:?}");
        assert_eq!(c["h2"], BTreeSet::from(["h3".to_owned()]));
        assert_eq!(describe(&c), "h2 | h3 (h1 untouched)");
        let c = cut(&names(3), Shape::Groups, &g, "", 1, true).unwrap();
        assert_eq!(c["h1"], BTreeSet::from(["h2".to_owned(), "h3".to_owned()]));
        assert_eq!(describe(&c), "h1 | h2 | h3");
        assert!(
            cut(&names(3), Shape::Halves, &[], "h1", 1, false).unwrap_err().starts_with("node")
        );
        assert!(
            cut(&names(3), Shape::Isolate, &g, "", 1, false).unwrap_err().starts_with("groups")
        );
        assert!(cut(&names(3), Shape::Isolate, &[], "", 1, true).unwrap_err().starts_with("rest"));
        assert_eq!(
            describe(&cut(&names(3), Shape::Isolate, &[], "h3", 1, false).unwrap()),
            "h3 | h1 h2"
        );
        // The bridge is in no cut: two sides and the bridge.
        assert_eq!(
            describe(&cut(&names(3), Shape::Bridge, &[], "h2", 1, false).unwrap()),
            "h1 | h3 (h2 untouched)"
        );
        // A majorities ring has no sides: the pairs that cannot meet.
        let ring = describe(&cut(&names(5), Shape::MajoritiesRing, &[], "", 5, false).unwrap());
        assert_eq!(ring.split(", ").count(), 5, "{ring}");
    }

    #[test]
    fn addresses_and_interfaces() {
        assert_eq!(host_address("10.0.0.5/24").as_deref(), Some("10.0.0.5/32"));
        assert_eq!(host_address("127.0.0.1/8"), None);
        assert_eq!(host_address("fe80::1/64"), None);
        assert_eq!(host_address("fd00::5/64").as_deref(), Some("fd00::5/128"));
        let ifs = vec![
            Interface {
                name: "lo".into(),
                addresses: vec!["127.0.0.1/8".into()],
                ..Default::default()
            },
            Interface {
                name: "eth0".into(),
                addresses: vec!["10.0.0.1/24".into()],
                ..Default::default()
            },
        ];
        assert_eq!(interface_towards(&ifs, &["10.0.0.7/32".into()]).as_deref(), Some("eth0"));
        assert_eq!(interface_towards(&ifs, &["192.0.2.1/32".into()]), None);
    }
}
