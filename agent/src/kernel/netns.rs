//! Network namespaces other than the agent's own (a container's): held open by a
//! descriptor for as long as a fault needs them, entered by short-lived threads.
//!
//! A namespace is a per-thread attribute, and a netlink or ioctl socket belongs to the
//! namespace of the thread that opened it. So the agent never moves its own threads:
//! a scoped thread joins the namespace, opens what it needs (a netlink socket, a TCX
//! link, an interface lookup) and ends; what it opened keeps acting there.

use std::{
    fs::File,
    io,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// How to find a namespace again after a restart: its identity (inode, and the cookie
/// the kernel never reuses) and where it was found (the container's init process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsRef {
    pub inode: u64,
    /// `SO_NETNS_COOKIE` (kernel >= 5.14; 0 where unknown). Inodes of freed namespaces
    /// are reused; cookies are not, so a match on both is this namespace and no other.
    pub cookie: u64,
    pub pid: u32,
    /// The runtime's container id, for people reading the journal and for status.
    pub container: String,
}

pub struct Netns {
    file: File,
    pub inode: u64,
    pub cookie: u64,
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "netns:[{}]", self.inode)
    }
}

/// Runtimes keep a namespace alive with a bind mount even when no process is left in it.
const BIND_MOUNT_DIRS: &[&str] =
    &["/var/run/docker/netns", "/run/docker/netns", "/var/run/netns", "/run/netns"];

impl Netns {
    /// The network namespace of process `pid`.
    pub fn of_pid(pid: u32) -> io::Result<Self> {
        Self::open(&PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    fn open(path: &Path) -> io::Result<Self> {
        let file = super::fds::retry(|| File::open(path))?;
        let inode = file.metadata()?.ino();
        let mut ns = Self { file, inode, cookie: 0 };
        ns.cookie = ns.run(cookie)??;
        Ok(ns)
    }

    /// The inode of the calling thread's network namespace.
    pub fn current_inode() -> io::Result<u64> {
        Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
    }

    #[must_use]
    pub fn reference(&self, pid: u32, container: &str) -> NsRef {
        NsRef { inode: self.inode, cookie: self.cookie, pid, container: container.to_owned() }
    }

    /// Runs `f` on a thread that has joined this namespace; sockets and links it creates
    /// belong there. Fails only if the thread could not be started or could not join.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let fd = self.file.as_fd();
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("faultline-netns".into())
                .spawn_scoped(s, move || {
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)?;
                    Ok(f())
                })?
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })
    }

    /// A netlink handle whose socket lives in this namespace; its connection runs on the
    /// agent's runtime like the host's.
    pub fn netlink(&self) -> io::Result<rtnetlink::Handle> {
        let rt = tokio::runtime::Handle::current();
        self.run(move || {
            let _guard = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            rt.spawn(conn);
            Ok(handle)
        })?
    }

    /// Finds the namespace `r` names again: through the recorded process, any process,
    /// or a runtime's bind mount. `None`: it no longer exists (and with it, everything
    /// the agent made inside it).
    pub fn find(r: &NsRef) -> io::Result<Option<Self>> {
        let candidates = std::iter::once(PathBuf::from(format!("/proc/{}/ns/net", r.pid)))
            .chain(
                std::fs::read_dir("/proc")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                    .map(|e| e.path().join("ns/net")),
            )
            .chain(BIND_MOUNT_DIRS.iter().flat_map(|d| {
                std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path())
            }));
        for path in candidates {
            // Racing processes come and go: a candidate that cannot be read is skipped.
            if std::fs::metadata(&path).is_ok_and(|m| m.ino() == r.inode)
                && let Ok(ns) = Self::open(&path)
                && ns.inode == r.inode
                && (r.cookie == 0 || ns.cookie == 0 || ns.cookie == r.cookie)
            {
                return Ok(Some(ns));
            }
        }
        Ok(None)
    }
}

/// The inode of process `pid`'s network namespace, without opening it.
#[must_use]
pub fn inode_of(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| m.ino())
}

/// The calling thread's namespace cookie; 0 on kernels without `SO_NETNS_COOKIE`. Any
/// socket answers for its namespace; an unbound one needs no address (loopback may be down).
fn cookie() -> io::Result<u64> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(io::Error::from)?;
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` is a u64 the kernel writes at most `len` (8) bytes into; fd is open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOPROTOOPT) { Ok(0) } else { Err(e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that open namespaces (setns needs `CAP_SYS_ADMIN`): `cargo xtask check`, which
    /// runs as any user, skips `needs_root::`; `cargo xtask test` runs them as root.
    mod needs_root {
        use super::*;

        #[test]
        fn own_namespace_is_found_by_its_identity() {
            let own = Netns::of_pid(std::process::id()).unwrap();
            assert_eq!(own.inode, Netns::current_inode().unwrap());
            let found = Netns::find(&own.reference(std::process::id(), "self"))
                .unwrap()
                .expect("own namespace");
            assert_eq!((found.inode, found.cookie), (own.inode, own.cookie));
            // A namespace nobody has: inode 1 is never a namespace's.
            assert!(
                Netns::find(&NsRef { inode: 1, cookie: 0, pid: 1, container: String::new() })
                    .unwrap()
                    .is_none()
            );
        }
    }
}
