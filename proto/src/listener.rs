//! The daemons' TCP listener, bounded: a stranger who can reach the port must not be able
//! to pin the process's descriptors (and with them its ability to revert faults). Every
//! connection counts against a total and a per-address cap, given back when it closes;
//! one that has not said enough to start TLS or HTTP/2 within `first_bytes` is closed;
//! addresses named `privileged` (an agent's controller) are exempt from the total, so the
//! controller always gets in. In plaintext mode (loopback only) a peer must be root: the
//! kernel's socket table says which user owns the connecting socket.
//!
//! The agent's local socket (`bind_local`) is bounded the same way and admits only what
//! could make the change itself: root holding `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
};
use tonic::transport::server::{Connected, TcpConnectInfo, UdsConnectInfo};

/// How many connections a daemon accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    pub total: usize,
    pub per_peer: usize,
    /// A new connection must send this many bytes within `first_bytes` (a TLS
    /// `ClientHello`, or the 24-byte HTTP/2 preface) or it is closed.
    pub first_bytes: Duration,
    /// Addresses exempt from `total` (still under `per_peer`).
    pub privileged: Vec<IpAddr>,
    /// Plaintext mode: refuse peers whose socket is not owned by root.
    pub root_only: bool,
}

impl Limits {
    /// An agent: a controller, a few operators and viewers; never thousands.
    #[must_use]
    pub fn agent() -> Self {
        Self {
            total: 256,
            per_peer: 32,
            first_bytes: Duration::from_secs(10),
            privileged: Vec::new(),
            root_only: false,
        }
    }
    /// A /metrics port: Prometheus keeps one connection open per scrape target; strangers
    /// get a few places and no more.
    #[must_use]
    pub fn metrics() -> Self {
        Self {
            total: 64,
            per_peer: 8,
            first_bytes: Duration::from_secs(10),
            privileged: Vec::new(),
            root_only: false,
        }
    }
    /// At most `percent` of this process's descriptor limit for this listener's
    /// connections (never fewer than 16): every listener of a daemon together stays below
    /// the limit, so strangers filling one leave descriptors for the rest (the journal,
    /// netlink, the other ports).
    #[must_use]
    pub fn within(mut self, percent: u64) -> Self {
        let share = usize::try_from(descriptor_limit().saturating_mul(percent) / 100)
            .unwrap_or(usize::MAX)
            .max(16);
        self.total = self.total.min(share);
        self.per_peer = self.per_peer.min(self.total);
        self
    }
    /// The agent's local socket: root's CLI commands, one connection each.
    #[must_use]
    pub fn local() -> Self {
        Self { total: 64, ..Self::agent() }
    }
    /// A controller: one session per agent plus operators and viewers.
    #[must_use]
    pub fn controller() -> Self {
        Self {
            total: 4096,
            per_peer: 64,
            first_bytes: Duration::from_secs(10),
            privileged: Vec::new(),
            root_only: false,
        }
    }
}

/// Bytes a client sends before anything else: the HTTP/2 preface is 24, a TLS `ClientHello` more.
const OPENING: usize = 24;

#[derive(Default)]
struct Counts {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// A counted connection; dropping it gives its place back.
pub struct Conn<S = TcpStream> {
    stream: S,
    counts: Arc<Mutex<Counts>>,
    /// None on the local socket, whose peers have no address.
    peer: Option<IpAddr>,
    privileged: bool,
    /// Bytes read so far, up to `OPENING`; then the deadline no longer applies.
    opened: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !self.privileged {
            c.total = c.total.saturating_sub(1);
        }
        if let Some(peer) = self.peer
            && let Some(n) = c.by_peer.get_mut(&peer)
        {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(&peer);
            }
        }
    }
}

impl Connected for Conn {
    // The plain TCP info: tonic's TLS layer wraps it, and `Request::peer_certs` finds it.
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl Connected for Conn<UnixStream> {
    type ConnectInfo = UdsConnectInfo;
    fn connect_info(&self) -> UdsConnectInfo {
        self.stream.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.opened < OPENING && self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no TLS or HTTP/2 opening in time",
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = buf.filled().len() - before;
            self.opened = self.opened.saturating_add(n);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Binds `addr` and yields the connections `limits` admits; the others are closed at once.
pub async fn bind(
    addr: SocketAddr,
    limits: Limits,
) -> io::Result<impl futures_core::Stream<Item = io::Result<Conn>>> {
    let listener = TcpListener::bind(addr).await?;
    let counts = Arc::new(Mutex::new(Counts::default()));
    Ok(futures_util::stream::unfold(
        (listener, counts, limits),
        |(listener, counts, limits)| async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: wait instead of spinning; connections that end
                        // give descriptors back.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Some(conn) = admit(stream, peer, &counts, &limits) {
                    return Some((Ok(conn), (listener, counts, limits)));
                }
            }
        },
    ))
}

fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    counts: &Arc<Mutex<Counts>>,
    limits: &Limits,
) -> Option<Conn> {
    let ip = canonical(peer.ip());
    if limits.root_only {
        let local = stream.local_addr().ok()?;
        match socket_owner(peer, local) {
            Some(0) => {}
            owner => {
                tracing::warn!(%peer, ?owner, "refused: plaintext connections are for root only (use TLS and a certificate otherwise)");
                return None;
            }
        }
    }
    let privileged = limits.privileged.iter().any(|p| canonical(*p) == ip);
    {
        let mut c = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = c.by_peer.get(&ip).copied().unwrap_or(0);
        if mine >= limits.per_peer || (!privileged && c.total >= limits.total) {
            tracing::debug!(%peer, mine, total = c.total, "connection refused: over the limit");
            return None;
        }
        *c.by_peer.entry(ip).or_default() += 1;
        if !privileged {
            c.total += 1;
        }
    }
    // Small gRPC replies must not wait on Nagle and the peer's delayed ACK.
    let _ = stream.set_nodelay(true);
    Some(Conn {
        stream,
        counts: counts.clone(),
        peer: Some(ip),
        privileged,
        opened: 0,
        deadline: Box::pin(tokio::time::sleep(limits.first_bytes)),
    })
}

/// The abstract socket name of the agent serving `port`. Abstract names belong to the
/// network namespace, as loopback addresses do: root in a namespace reaches that
/// namespace's agent, a lab of many namespaced agents needs no per-agent paths, and there
/// is no file to leave behind. Anyone in the namespace may bind or connect to such a name,
/// so both ends check the other's credentials.
#[must_use]
pub fn local_name(port: u16) -> String {
    format!("faultline/agent:{port}")
}

/// The capabilities a local caller must hold: those `tc`, `ip` and the cgroup writes need,
/// so the socket gives no one more than they could already do by hand.
const LOCAL_CAPS: [(u32, &str); 2] = [(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")];

/// Binds the agent's local socket (`local_name(port)`) and yields the connections of root
/// callers that hold `LOCAL_CAPS`, at most `limits.total` at a time, each with the same
/// opening deadline as TCP. Others are closed at once, with a warning naming who they were.
pub fn bind_local(
    port: u16,
    limits: &Limits,
) -> io::Result<impl futures_core::Stream<Item = io::Result<Conn<UnixStream>>> + use<>> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(local_name(port))?;
    let listener = UnixListener::bind_addr(&addr.into())?;
    let counts = Arc::new(Mutex::new(Counts::default()));
    let limits = limits.clone();
    Ok(futures_util::stream::unfold(
        (listener, counts, limits),
        |(listener, counts, limits)| async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!("accept on the local socket: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(why) = stream
                    .peer_cred()
                    .map_err(|e| e.to_string())
                    .and_then(|c| local_peer_allowed(c.uid(), c.pid()))
                {
                    tracing::warn!(
                        "local socket: refused: {why} (use TLS and a certificate otherwise)"
                    );
                    continue;
                }
                {
                    let mut c = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if c.total >= limits.total {
                        tracing::debug!(
                            total = c.total,
                            "local connection refused: over the limit"
                        );
                        continue;
                    }
                    c.total += 1;
                }
                let conn = Conn {
                    stream,
                    counts: counts.clone(),
                    peer: None,
                    privileged: false,
                    opened: 0,
                    deadline: Box::pin(tokio::time::sleep(limits.first_bytes)),
                };
                return Some((Ok(conn), (listener, counts, limits)));
            }
        },
    ))
}

/// Root in this user namespace, holding `LOCAL_CAPS` in its effective set. The caller is
/// read by pid just after it connected (it is waiting on the connection); a pid reused in
/// that instant is the one race left, and `SO_PEERPIDFD` (Linux 6.5) would close it.
fn local_peer_allowed(uid: u32, pid: Option<i32>) -> Result<(), String> {
    if uid != 0 {
        return Err(format!("uid {uid} is not root"));
    }
    let pid = pid.filter(|p| *p > 0).ok_or("the caller's pid is not visible here")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("pid {pid}: {e}"))?;
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .ok_or(format!("pid {pid}: no CapEff"))?;
    let missing: Vec<&str> =
        LOCAL_CAPS.iter().filter(|(bit, _)| caps & (1 << bit) == 0).map(|(_, n)| *n).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("pid {pid} (root) lacks {}", missing.join(" and ")))
    }
}

/// The peer as counted: an IPv4-mapped address as IPv4, and an IPv6 address by its /64,
/// since one host is given a whole /64 and may connect from any address in it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The soft limit on this process's open descriptors.
#[must_use]
pub fn descriptor_limit() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut l) } == 0 { l.rlim_cur } else { 1024 }
}

/// Raises the soft descriptor limit to the hard one (systemd and Docker start services at
/// 1024 soft, far below the hard limit) and returns (before, after), for the log.
pub fn raise_descriptor_limit() -> io::Result<(u64, u64)> {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut l) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = l.rlim_cur;
    if l.rlim_cur < l.rlim_max {
        l.rlim_cur = l.rlim_max;
        // SAFETY: setrlimit reads the struct it is given; raising soft to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const l) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, descriptor_limit()))
}

/// A daemon's first step: raises the descriptor limit (before any listener sizes itself
/// with `Limits::within`) and says in the log what it is.
pub fn raise_descriptor_limit_and_log() {
    match raise_descriptor_limit() {
        Ok((before, after)) if before < after => {
            tracing::info!(before, after, "descriptor limit raised");
        }
        Ok((_, limit)) => tracing::info!(limit, "descriptor limit"),
        Err(e) => tracing::warn!(limit = descriptor_limit(), "descriptor limit not raised: {e}"),
    }
}

/// The bounded listener as an axum listener, for plain HTTP servers (/metrics).
#[cfg(feature = "axum")]
pub struct AxumListener<S> {
    incoming: Pin<Box<S>>,
    addr: SocketAddr,
}

#[cfg(feature = "axum")]
impl<S: futures_core::Stream<Item = io::Result<Conn>> + Send + 'static> AxumListener<S> {
    pub fn new(incoming: S, addr: SocketAddr) -> Self {
        Self { incoming: Box::pin(incoming), addr }
    }
}

#[cfg(feature = "axum")]
impl<S: futures_core::Stream<Item = io::Result<Conn>> + Send + 'static> axum::serve::Listener
    for AxumListener<S>
{
    type Io = Conn;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match futures_util::StreamExt::next(&mut self.incoming).await {
                Some(Ok(conn)) => {
                    let peer = conn.stream.peer_addr().unwrap_or(self.addr);
                    return (conn, peer);
                }
                Some(Err(e)) => tracing::warn!("accept: {e}"),
                // The bounded stream never ends; if it did, wait for ever rather than spin.
                None => std::future::pending::<()>().await,
            }
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Binds a /metrics port: the bounded listener with `Limits::metrics`, as an axum listener.
#[cfg(feature = "axum")]
pub async fn bind_metrics(
    addr: SocketAddr,
) -> io::Result<AxumListener<impl futures_core::Stream<Item = io::Result<Conn>> + Send + 'static>> {
    let incoming = bind(addr, Limits::metrics().within(5)).await?;
    Ok(AxumListener::new(incoming, addr))
}

/// The uid owning the socket at `peer` connected to `local`, from /proc/net/tcp(6): the
/// connecting process's socket, seen from this (the same) network namespace.
#[must_use]
pub fn socket_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let want = (hex_addr(peer), hex_addr(local));
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).ok()?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 7 && want.0.iter().any(|w| w == f[1]) && want.1.iter().any(|w| w == f[2]) {
                return f[7].parse().ok();
            }
        }
    }
    None
}

/// How /proc/net/tcp(6) spell an address: each 32-bit word in host order, then the port.
/// An IPv4 peer may appear in either table (an IPv6 socket shows it v4-mapped).
fn hex_addr(a: SocketAddr) -> Vec<String> {
    let v6 = |octets: [u8; 16]| -> String {
        octets
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    };
    match canonical(a.ip()) {
        IpAddr::V4(v4) => vec![
            format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.octets()), a.port()),
            format!("{}:{:04X}", v6(v4.to_ipv6_mapped().octets()), a.port()),
        ],
        IpAddr::V6(v6a) => vec![format!("{}:{:04X}", v6(v6a.octets()), a.port())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_count_per_64_and_shares_fit_the_descriptor_limit() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical(ip("2001:db8:1:2:aaaa::1")), canonical(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(canonical(ip("2001:db8:1:2::1")), canonical(ip("2001:db8:1:3::1")));
        assert_eq!(canonical(ip("::ffff:10.0.0.5")), ip("10.0.0.5"));
        let limit = descriptor_limit();
        let l = Limits::controller().within(30);
        assert!(
            l.total as u64 <= (limit * 30 / 100).max(16) && l.per_peer <= l.total,
            "{l:?} under {limit}"
        );
        assert!(Limits::metrics().within(5).total <= 64);
    }

    #[tokio::test]
    async fn over_the_limit_is_closed_and_a_closed_one_frees_its_place() {
        use futures_util::StreamExt;
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let probe = std::net::TcpListener::bind(addr).unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let limits = Limits {
            total: 2,
            per_peer: 2,
            first_bytes: Duration::from_secs(5),
            privileged: Vec::new(),
            root_only: false,
        };
        let mut incoming = Box::pin(bind(addr, limits).await.unwrap());
        let a = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _second = incoming.next().await.unwrap().unwrap();
        // The third is closed by the listener: reading it ends at once.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let next = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
        assert!(next.is_err(), "a third connection was admitted");
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut c, &mut buf),
        )
        .await
        .unwrap()
        .unwrap_or(0);
        assert_eq!(n, 0);
        drop((first, a));
        let _d = TcpStream::connect(addr).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(2), incoming.next()).await.is_ok(),
            "a freed place was not given out again"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_opening_deadline() {
        use futures_util::StreamExt;
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let limits = Limits { first_bytes: Duration::from_millis(200), ..Limits::agent() };
        let mut incoming = Box::pin(bind(addr, limits).await.unwrap());
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut conn = incoming.next().await.unwrap().unwrap();
        let mut buf = [0u8; 8];
        let e = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn the_owner_of_a_loopback_socket_is_found() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let client = TcpStream::connect(local).await.unwrap();
        let (_server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(socket_owner(peer, local), Some(nix_uid()));
    }

    fn nix_uid() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}
