//! Interfaces: what the host has (for Describe) and the IFB devices the agent owns.

use std::{collections::BTreeMap, path::Path};

use rtnetlink::{Handle, LinkIfb};

/// IFB devices created by the agent carry this prefix and the faulted ifindex,
/// so recovery can tell them from the user's own (`ifb0`, ...).
pub const IFB_PREFIX: &str = "flifb";

#[must_use]
pub fn ifb_name(ifindex: u32) -> String {
    format!("{IFB_PREFIX}{ifindex}")
}

#[derive(Debug, Clone, Default)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<String>,
}

fn sysfs(name: &str, attr: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join(attr))
        .ok()
        .map(|s| s.trim().to_owned())
}

#[must_use]
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// The index of `name`, `None` only when the kernel says there is no such device: any
/// other failure (out of descriptors, say) is an error, never read as "gone".
pub fn lookup(name: &str) -> std::io::Result<Option<u32>> {
    match super::fds::retry(|| nix::net::if_::if_nametoindex(name).map_err(std::io::Error::from)) {
        Ok(i) => Ok(Some(i)),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

#[must_use]
pub fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Interfaces with their addresses, from getifaddrs and sysfs.
#[must_use]
pub fn interfaces() -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let flags = sysfs(&name, "flags")
                .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0);
            by_name.insert(
                name.clone(),
                Interface {
                    index: ifindex(&name).unwrap_or(0),
                    mac: sysfs(&name, "address").unwrap_or_default(),
                    mtu: sysfs(&name, "mtu").and_then(|m| m.parse().ok()).unwrap_or(0),
                    up: flags & 1 != 0,
                    name,
                    addresses: Vec::new(),
                },
            );
        }
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let (Some(addr), Some(iface)) = (a.address, by_name.get_mut(&a.interface_name)) else {
                continue;
            };
            let prefix = |m: Option<nix::sys::socket::SockaddrStorage>, v4: bool| -> u32 {
                m.and_then(|m| {
                    if v4 {
                        m.as_sockaddr_in().map(|s| u32::from(s.ip()).count_ones())
                    } else {
                        m.as_sockaddr_in6().map(|s| u128::from(s.ip()).count_ones())
                    }
                })
                .unwrap_or(if v4 { 32 } else { 128 })
            };
            if let Some(v4) = addr.as_sockaddr_in() {
                iface.addresses.push(format!("{}/{}", v4.ip(), prefix(a.netmask, true)));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                iface.addresses.push(format!("{}/{}", v6.ip(), prefix(a.netmask, false)));
            }
        }
    }
    by_name.into_values().collect()
}

/// The calling thread's namespace's own addresses, as a peer would see them: loopback
/// and link-local left out (getifaddrs asks netlink, so a thread that joined a
/// container's namespace gets the container's).
#[must_use]
pub fn addresses_here() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| {
            let a = a.address?;
            a.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
        })
        .filter(|ip| match ip {
            std::net::IpAddr::V4(v) => !v.is_loopback() && !v.is_link_local(),
            std::net::IpAddr::V6(v) => !v.is_loopback() && (v.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect()
}

/// Every interface of the calling thread's namespace, by name and index (netlink, so a
/// thread that joined a container's namespace sees the container's; sysfs would not).
pub fn indexes_here() -> std::io::Result<Vec<(String, u32)>> {
    let list = super::fds::retry(|| nix::net::if_::if_nameindex().map_err(std::io::Error::from))?;
    Ok(list.iter().map(|i| (i.name().to_string_lossy().into_owned(), i.index())).collect())
}

/// Creates the agent's IFB device for `ifindex` and brings it up; returns its index, asked
/// on the same netlink socket (so in the socket's namespace, whichever that is).
pub async fn create_ifb(nl: &Handle, name: &str) -> Result<u32, rtnetlink::Error> {
    use futures_util::TryStreamExt;
    nl.link().add(LinkIfb::new(name).up().build()).execute().await?;
    let mut found = nl.link().get().match_name(name.to_owned()).execute();
    Ok(found.try_next().await?.map_or(0, |m| m.header.index))
}

pub async fn delete_link(nl: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    nl.link().del(index).execute().await
}
