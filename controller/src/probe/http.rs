//! An HTTP(S) probe: one request on a fresh connection (hyper's HTTP/1.1 client), judged
//! by its status, its body and how long the answer took.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;

use super::{MAX_ANSWER, ProbeError, bad};
use crate::load::tls::{Stream, Tls, TlsOptions};

#[derive(Debug, Clone)]
pub struct Http {
    pub url: String,
    pub method: hyper::Method,
    addr: SocketAddr,
    authority: String,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// Status classes (2 for 2xx) and single codes that pass.
    status: Vec<Status>,
    pattern: Option<regex_lite::Regex>,
    within: Option<Duration>,
    tls: Option<Tls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Code(u16),
    Class(u16),
}

impl Status {
    fn matches(self, code: u16) -> bool {
        match self {
            Self::Code(c) => c == code,
            Self::Class(c) => code / 100 == c,
        }
    }
}

fn statuses(s: &str) -> Result<Vec<Status>, ProbeError> {
    s.split(',')
        .map(str::trim)
        .map(|w| {
            let class = w.strip_suffix("xx").and_then(|d| d.parse::<u16>().ok());
            match (class, w.parse::<u16>()) {
                (Some(c), _) if (1..=5).contains(&c) => Ok(Status::Class(c)),
                (_, Ok(c)) if (100..=599).contains(&c) => Ok(Status::Code(c)),
                _ => Err(bad("status", format!("{w:?} is not a status (200, 2xx, 200,204)"))),
            }
        })
        .collect()
}

impl Http {
    #[expect(clippy::too_many_arguments, reason = "the probe's settings, each checked here")]
    pub fn new(
        url: &str,
        method: &str,
        headers: &[String],
        body: &str,
        status: &str,
        pattern: Option<regex_lite::Regex>,
        within: Option<Duration>,
        tls_no_verify: bool,
    ) -> Result<Self, ProbeError> {
        let uri: hyper::Uri = url.parse().map_err(|e| bad("url", format!("{url:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(bad(
                    "url",
                    format!("{url:?}: give http://HOST[:PORT]/PATH or https://"),
                ));
            }
        };
        let auth = uri.authority().ok_or_else(|| bad("url", format!("{url:?}: no host")))?;
        let addr = crate::load::resolve(
            auth.host(),
            auth.port_u16().unwrap_or(if https { 443 } else { 80 }),
        )
        .map_err(|e| bad("url", e))?;
        let method: hyper::Method = method
            .parse()
            .map_err(|_| bad("method", format!("{method:?} is not an HTTP method")))?;
        let headers = headers
            .iter()
            .map(|h| {
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| bad("header", format!("{h:?} is not NAME: VALUE")))?;
                Ok((
                    HeaderName::from_bytes(k.trim().as_bytes())
                        .map_err(|e| bad("header", format!("{k:?}: {e}")))?,
                    HeaderValue::from_str(v.trim())
                        .map_err(|e| bad("header", format!("{v:?}: {e}")))?,
                ))
            })
            .collect::<Result<_, ProbeError>>()?;
        let tls = https
            .then(|| {
                let host = auth.host().trim_start_matches('[').trim_end_matches(']');
                let opts = TlsOptions {
                    cacert: None,
                    no_verify: tls_no_verify,
                    // A name in the URL is the name the certificate must carry.
                    server_name: host.parse::<std::net::IpAddr>().is_err().then(|| host.to_owned()),
                };
                Tls::new(&opts, addr.ip(), "http/1.1").map_err(|e| bad("url", e))
            })
            .transpose()?;
        Ok(Self {
            url: url.to_owned(),
            method,
            addr,
            authority: auth.to_string(),
            path: uri.path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned()),
            headers,
            body: Bytes::from(body.to_owned()),
            status: statuses(status)?,
            pattern,
            within,
            tls,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One request; Ok with what was seen when every expectation holds.
    pub async fn check(&self) -> Result<String, String> {
        let start = std::time::Instant::now();
        let (code, body) = self.fetch().await?;
        let took = start.elapsed();
        if !self.status.iter().any(|s| s.matches(code)) {
            return Err(format!("status {code}"));
        }
        if let Some(p) = &self.pattern
            && !p.is_match(&String::from_utf8_lossy(&body))
        {
            return Err(format!("status {code}, the body does not match {:?}", p.as_str()));
        }
        if let Some(w) = self.within
            && took > w
        {
            return Err(format!(
                "status {code} after {:.1} ms, more than {}",
                took.as_secs_f64() * 1000.0,
                crate::units::show_duration(w)
            ));
        }
        Ok(format!("status {code}"))
    }

    /// One request on a fresh connection: the status and the body (at most [`MAX_ANSWER`]).
    pub async fn fetch(&self) -> Result<(u16, Bytes), String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(t) => Stream::Tls(Box::new(
                t.connector.connect(t.name.clone(), tcp).await.map_err(|e| format!("TLS: {e}"))?,
            )),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        // The connection lives as long as this request (the task ends with it).
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(hyper::header::HOST, &self.authority);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(self.body.clone())).map_err(|e| format!("request: {e}"))?;
        let answer = async {
            let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
            let code = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("status {code}, body: {e}"))?
                .to_bytes();
            Ok::<_, String>((code, body))
        }
        .await;
        driver.abort();
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_codes_and_classes() {
        let s = statuses("2xx, 301").unwrap();
        assert!(s.iter().any(|x| x.matches(204)) && s.iter().any(|x| x.matches(301)));
        assert!(!s.iter().any(|x| x.matches(302)) && !s.iter().any(|x| x.matches(500)));
        assert!(statuses("6xx").is_err() && statuses("99").is_err() && statuses("").is_err());
    }
}
