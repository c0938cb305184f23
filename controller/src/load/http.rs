//! HTTP/1.1 (our own small client) and HTTP/2 (prior knowledge, h2c, hyper) requests:
//! one connection per worker, reused unless asked otherwise, re-opened after a failure.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request,
    client::conn::http2,
    header::{HeaderName, HeaderValue},
};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{
    record::{Failure, Outcome},
    tls::{Stream, Tls, TlsOptions},
};

#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    pub http2: bool,
    pub method: hyper::Method,
    /// (path and query, authority) per URL, used in turn.
    pub urls: Vec<(String, String)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub reuse: bool,
    /// HTTP/1.1 request bytes per URL, built once.
    pub raw: Vec<Vec<u8>>,
    /// https:// targets.
    pub tls: Option<Tls>,
}

impl HttpTarget {
    /// `urls` must all name one host:port (one connection pool).
    pub fn new(
        urls: &[String],
        http2: bool,
        method: &str,
        headers: &[String],
        body: Bytes,
        reuse: bool,
        tls: &TlsOptions,
    ) -> Result<Self, String> {
        let mut addr = None;
        let mut parsed = Vec::new();
        let mut https = None;
        for u in urls {
            let uri: hyper::Uri = u.parse().map_err(|e| format!("url: {u:?}: {e}"))?;
            let this = match uri.scheme_str() {
                Some("http") => false,
                Some("https") => true,
                _ => return Err(format!("url: {u:?}: give http://HOST:PORT/PATH or https://")),
            };
            if https.is_some_and(|h| h != this) {
                return Err(format!("url: {u:?}: every URL must use the same scheme"));
            }
            https = Some(this);
            let auth = uri.authority().ok_or_else(|| format!("url: {u:?}: no host"))?.clone();
            let a =
                super::resolve(auth.host(), auth.port_u16().unwrap_or(if this { 443 } else { 80 }))
                    .map_err(|e| format!("url: {u:?}: {e}"))?;
            if addr.is_some_and(|x| x != a) {
                return Err(format!(
                    "url: {u:?}: every URL must name the same host and port ({})",
                    addr.unwrap_or(a)
                ));
            }
            addr = Some(a);
            let path = uri.path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned());
            parsed.push((path, auth.to_string()));
        }
        let addr = addr.ok_or("url: at least one URL")?;
        let method: hyper::Method =
            method.parse().map_err(|_| format!("method: {method:?} is not an HTTP method"))?;
        let headers: Vec<(HeaderName, HeaderValue)> = headers
            .iter()
            .map(|h| {
                let (k, v) =
                    h.split_once(':').ok_or_else(|| format!("header: {h:?} is not NAME: VALUE"))?;
                let k = HeaderName::from_bytes(k.trim().as_bytes())
                    .map_err(|e| format!("header: {k:?}: {e}"))?;
                let v =
                    HeaderValue::from_str(v.trim()).map_err(|e| format!("header: {v:?}: {e}"))?;
                Ok((k, v))
            })
            .collect::<Result<_, String>>()?;
        let raw = parsed
            .iter()
            .map(|(path, authority)| {
                let mut r =
                    format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
                for (k, v) in &headers {
                    r.extend_from_slice(k.as_str().as_bytes());
                    r.extend_from_slice(b": ");
                    r.extend_from_slice(v.as_bytes());
                    r.extend_from_slice(b"\r\n");
                }
                if !body.is_empty() || !matches!(method, hyper::Method::GET | hyper::Method::HEAD) {
                    r.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
                }
                if !reuse {
                    r.extend_from_slice(b"connection: close\r\n");
                }
                r.extend_from_slice(b"\r\n");
                r.extend_from_slice(&body);
                r
            })
            .collect();
        let tls = if https == Some(true) {
            Some(Tls::new(tls, addr.ip(), if http2 { "h2" } else { "http/1.1" })?)
        } else {
            None
        };
        Ok(Self { addr, http2, method, urls: parsed, headers, body, reuse, raw, tls })
    }
}

pub enum Conn {
    H1(H1),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// HTTP/1.1 on a plain TCP stream, in the worker's own task: request bytes are built
/// once per URL and answers parsed in place (httparse). A general client hands each
/// request to a connection task and back, and at 100k requests/s that hop is most of
/// the cost.
pub struct H1 {
    io: Stream,
    buf: Vec<u8>,
    used: bool,
}

#[derive(Clone, Copy)]
enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Clone, Copy)]
struct Head {
    status: u16,
    len: usize,
    body: Body,
    close: bool,
}

fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failure::Protocol),
    };
    let status = resp.code.unwrap_or(0);
    let mut body = Body::UntilClose;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(Failure::Protocol)?;
            body = Body::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value.eq_ignore_ascii_case(b"chunked")
        {
            body = Body::Chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        body = Body::Length(0);
    }
    Ok(Some(Head { status, len, body, close }))
}

/// Where a chunked body ends (the index after its last CRLF), once it has all arrived.
fn chunked_end(b: &[u8]) -> Result<Option<usize>, Failure> {
    let line_end = |from: usize| b[from..].windows(2).position(|w| w == b"\r\n").map(|p| from + p);
    let mut i = 0;
    loop {
        let Some(eol) = line_end(i) else { return Ok(None) };
        let line = std::str::from_utf8(&b[i..eol]).map_err(|_| Failure::Protocol)?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| Failure::Protocol)?;
        i = eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = line_end(i) else { return Ok(None) };
                let empty = eol == i;
                i = eol + 2;
                if empty {
                    return Ok(Some(i));
                }
            }
        }
        if b.len() < i + size + 2 {
            return Ok(None);
        }
        i += size + 2;
    }
}

impl H1 {
    async fn connect(addr: SocketAddr, tls: Option<&Tls>) -> Result<Self, Failure> {
        Ok(Self { io: open(addr, tls).await?, buf: Vec::with_capacity(4096), used: false })
    }

    /// Sends `req` and reads the whole answer: Ok((status, connection reusable)), or
    /// Err((failure, retry)) where retry means a reused connection failed before any
    /// answer byte (the server had closed it), so the request can go on a new one.
    async fn call(
        &mut self,
        req: &[u8],
        head_request: bool,
    ) -> Result<(u16, bool), (Failure, bool)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let reused = std::mem::replace(&mut self.used, true);
        self.buf.clear();
        self.io.write_all(req).await.map_err(|_| (Failure::Io, reused))?;
        let mut head = None;
        loop {
            if head.is_none() {
                head = parse_head(&self.buf, head_request).map_err(|f| (f, false))?;
            }
            if let Some(h) = head {
                let rest = &self.buf[h.len..];
                let done = match h.body {
                    Body::Length(n) => rest.len() >= n,
                    Body::Chunked => chunked_end(rest).map_err(|f| (f, false))?.is_some(),
                    Body::UntilClose => false,
                };
                if done {
                    return Ok((h.status, !h.close));
                }
            }
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(self.buf.len());
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|_| (Failure::Io, reused && self.buf.is_empty()))?;
            if n == 0 {
                return match head {
                    Some(Head { status, body: Body::UntilClose, .. }) => Ok((status, false)),
                    _ => Err((Failure::Io, reused && self.buf.is_empty())),
                };
            }
        }
    }
}

/// TCP, then the TLS handshake for https (a failed handshake counts as a failed connect).
async fn open(addr: SocketAddr, tls: Option<&Tls>) -> Result<Stream, Failure> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|_| Failure::Connect)?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(t) => match t.connector.connect(t.name.clone(), tcp).await {
            Ok(s) => Ok(Stream::Tls(Box::new(s))),
            Err(e) => {
                // Counted as a failed connect like any other; the reason is said once.
                static SAID: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!(
                        "load: TLS handshake with {addr} failed: {e} (counted as connect failures; see --cacert, --tls-server-name, --tls-no-verify)"
                    );
                }
                Err(Failure::Connect)
            }
        },
    }
}

async fn connect(t: &HttpTarget) -> Result<Conn, Failure> {
    if !t.http2 {
        return Ok(Conn::H1(H1::connect(t.addr, t.tls.as_ref()).await?));
    }
    let io = open(t.addr, t.tls.as_ref()).await?;
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|_| Failure::Connect)?;
    tokio::spawn(conn);
    Ok(Conn::H2(send))
}

/// One request on `conn` (opened if needed); the connection is dropped after a failure,
/// when the server closes it, or when reuse is off.
pub async fn call(t: &HttpTarget, conn: &mut Option<Conn>, n: u64) -> Outcome {
    let i = (n % t.urls.len() as u64) as usize;
    let outcome = if t.http2 { call_h2(t, conn, i).await } else { call_h1(t, conn, i).await };
    if !t.reuse || matches!(outcome, Outcome::Failed(_)) {
        *conn = None;
    }
    outcome
}

async fn call_h1(t: &HttpTarget, conn: &mut Option<Conn>, i: usize) -> Outcome {
    let head_request = t.method == hyper::Method::HEAD;
    for _ in 0..2 {
        if !matches!(conn, Some(Conn::H1(_))) {
            match H1::connect(t.addr, t.tls.as_ref()).await {
                Ok(c) => *conn = Some(Conn::H1(c)),
                Err(f) => return Outcome::Failed(f),
            }
        }
        let Some(Conn::H1(c)) = conn.as_mut() else { unreachable!("just set") };
        match c.call(&t.raw[i], head_request).await {
            Ok((status, keep)) => {
                if !keep {
                    *conn = None;
                }
                return Outcome::Answer(status);
            }
            // The server closed an idle connection: once more on a new one.
            Err((_, true)) => *conn = None,
            Err((f, false)) => return Outcome::Failed(f),
        }
    }
    Outcome::Failed(Failure::Io)
}

async fn call_h2(t: &HttpTarget, conn: &mut Option<Conn>, i: usize) -> Outcome {
    let (path, authority) = &t.urls[i];
    let scheme = if t.tls.is_some() { "https" } else { "http" };
    let mut b =
        Request::builder().method(t.method.clone()).uri(format!("{scheme}://{authority}{path}"));
    for (k, v) in &t.headers {
        b = b.header(k, v);
    }
    let Ok(req) = b.body(Full::new(t.body.clone())) else {
        return Outcome::Failed(Failure::Protocol);
    };
    // A connection the server closed (GOAWAY) is replaced before sending.
    let usable = match conn.as_mut() {
        Some(Conn::H2(s)) => s.ready().await.is_ok(),
        _ => false,
    };
    if !usable {
        match connect(t).await {
            Ok(c) => *conn = Some(c),
            Err(f) => return Outcome::Failed(f),
        }
    }
    let Some(Conn::H2(s)) = conn.as_mut() else { unreachable!("just set") };
    let sent = match s.ready().await {
        Ok(()) => s.send_request(req).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // The answer is whole only when its body is.
            match resp.into_body().collect().await {
                Ok(_) => Outcome::Answer(status),
                Err(_) => Outcome::Failed(Failure::Io),
            }
        }
        Err(e) if e.is_parse() || e.is_user() => Outcome::Failed(Failure::Protocol),
        Err(_) => Outcome::Failed(Failure::Io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_chunked_bodies_parse() {
        let h =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false).unwrap().unwrap();
        assert_eq!((h.status, h.len, h.close), (200, 38, false));
        assert!(matches!(h.body, Body::Length(3)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false).unwrap().is_none());
        let h = parse_head(b"HTTP/1.0 404 x\r\n\r\n", false).unwrap().unwrap();
        assert!(h.close && matches!(h.body, Body::UntilClose));
        let h =
            parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n", true)
                .unwrap()
                .unwrap();
        assert!(h.close && matches!(h.body, Body::Length(0)), "HEAD has no body");
        assert_eq!(parse_head(b"NOPE\r\n\r\n", false).err(), Some(Failure::Protocol));
        let body = b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\nTrailer: y\r\n\r\n";
        assert_eq!(chunked_end(body).unwrap(), Some(body.len()));
        for cut in 0..body.len() {
            assert_eq!(chunked_end(&body[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(chunked_end(b"zz\r\n").err(), Some(Failure::Protocol));
    }
}
