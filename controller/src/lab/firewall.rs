//! The lab's one firewall change: frames between its hosts on its bridge pass the FORWARD
//! chain. Docker sets `iptables -P FORWARD DROP` where it turns forwarding on, and with
//! `br_netfilter` loaded (`bridge-nf-call-iptables` = 1) frames crossing any Linux bridge
//! go through that chain, so the lab's hosts could not reach each other on a machine with
//! Docker (100 % loss, nginx 504). The rule names only the lab's bridge and carries a
//! comment of its own; it is written into the lab's state before it is added and deleted on
//! `lab down`. Nothing else of the user's firewall is read or changed.

use std::process::Command;

use anyhow::{Result, bail};

/// What marks the lab's rule (and only it) in `iptables -S`.
pub const COMMENT: &str = "faultline lab: its hosts on its bridge";

/// The rule, as arguments after `-I FORWARD` / `-D FORWARD` / `-C FORWARD`.
fn rule(bridge: &str) -> [&str; 10] {
    ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"]
}

/// The firewall tools of this machine (IPv4 and IPv6); none where iptables is not installed.
pub fn tools() -> Vec<&'static str> {
    ["iptables", "ip6tables"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_ok_and(|o| o.status.success()))
        .collect()
}

fn iptables(tool: &str, op: &str, bridge: &str) -> Result<std::process::Output> {
    let mut cmd = match tool {
        "ip6tables" => Command::new("ip6tables"),
        _ => Command::new("iptables"),
    };
    // -w: wait for the xtables lock (Docker holds it while it sets up a network).
    Ok(cmd.args(["-w", op, "FORWARD"]).args(rule(bridge)).output()?)
}

/// Lets the lab's hosts reach each other through FORWARD (the rule goes first).
pub fn open(tool: &str, bridge: &str) -> Result<()> {
    let out = iptables(tool, "-I", bridge)?;
    if !out.status.success() {
        bail!("{tool} -I FORWARD: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Deletes the lab's rule; one that is not there (removed by hand) is no error.
pub fn close(tool: &str, bridge: &str) -> Result<()> {
    if !iptables(tool, "-C", bridge)?.status.success() {
        return Ok(());
    }
    let out = iptables(tool, "-D", bridge)?;
    if !out.status.success() {
        bail!("{tool} -D FORWARD: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
