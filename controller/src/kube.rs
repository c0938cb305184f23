//! The Kubernetes API server as a pod reaches it: its address from
//! `KUBERNETES_SERVICE_HOST`/`_PORT` (or `kube_api`), and the pod's service-account
//! credentials (token, ca.crt) from the directory kubelet mounts. Plain JSON over one
//! HTTP/1.1 request per call: the controller asks it only when an agent enrols, and the
//! certificates Job a handful of times, so a client library's caches, watches and
//! generated types (kube-rs and k8s-openapi: several MB of code) would buy nothing.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::load::tls::{Stream, Tls, TlsOptions};

/// Where kubelet mounts a pod's service-account credentials.
pub const CREDENTIALS: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A token or a CA bundle larger than this is not one.
const MAX_FILE: u64 = 1024 * 1024;
/// The objects read here (a `TokenReview`, one pod) are a few KiB.
const MAX_ANSWER: usize = 1024 * 1024;
/// One call, connection to last byte.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed: the API server could not be reached or did not answer in time
/// (worth trying again), or it answered no (`answered`: it will say the same again).
#[derive(Debug)]
pub struct KubeError {
    pub answered: bool,
    /// The HTTP status, when the API server answered with one.
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn unreached(message: String) -> KubeError {
    KubeError { answered: false, status: None, message }
}

/// A Kubernetes object name (pods, service accounts): lowercase letters, digits, '-'
/// and '.', at most 253, starting and ending with a letter or digit.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && rfc1123(s, true)
}

/// A namespace's name: as an object name, without '.', at most 63.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && rfc1123(s, false)
}

fn rfc1123(s: &str, dots: bool) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.starts_with(edge)
        && s.ends_with(edge)
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
}

#[derive(Debug, Clone)]
pub struct KubeApi {
    host: String,
    port: u16,
    credentials: PathBuf,
}

impl KubeApi {
    /// `url`: `https://HOST[:PORT]`; none: the cluster's own, from the environment every
    /// pod gets.
    pub fn new(url: Option<&str>, credentials: PathBuf) -> Result<Self, String> {
        let url = if let Some(u) = url {
            u.to_owned()
        } else {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                "kube_api: not given, and KUBERNETES_SERVICE_HOST is not set (not in a pod?)"
                    .to_owned()
            })?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or("443".into());
            // An IPv6 service address comes bare.
            if host.contains(':') {
                format!("https://[{host}]:{port}")
            } else {
                format!("https://{host}:{port}")
            }
        };
        let uri: hyper::Uri = url.parse().map_err(|e| format!("kube_api: {url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("kube_api: {url:?}: the API server is reached over https://"));
        }
        let auth = uri.authority().ok_or_else(|| format!("kube_api: {url:?}: no host"))?;
        let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self { host, port: auth.port_u16().unwrap_or(443), credentials })
    }

    /// One call: the answer's JSON when the status is 2xx, else the API server's message.
    pub async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, KubeError> {
        tokio::time::timeout(TIMEOUT, self.call_once(method, path, body))
            .await
            .map_err(|_| unreached(format!("no answer within {} s", TIMEOUT.as_secs())))?
    }

    async fn call_once(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, KubeError> {
        // Read at each call: kubelet rotates a projected token (and may the CA). A
        // credential that cannot be read will not be readable on a retry either.
        let answered = |message| KubeError { answered: true, status: None, message };
        let token = self.read("token").map_err(answered)?;
        let token = String::from_utf8(token).map_err(|_| answered("token: not UTF-8".into()))?;
        let addr = self.resolve().await.map_err(unreached)?;
        let opts = TlsOptions {
            cacert: Some(self.credentials.join("ca.crt")),
            no_verify: false,
            server_name: self.host.parse::<std::net::IpAddr>().is_err().then(|| self.host.clone()),
        };
        let tls = Tls::new(&opts, addr.ip(), "http/1.1").map_err(answered)?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreached(format!("connect {addr}: {e}")))?;
        let stream = Stream::Tls(Box::new(
            tls.connector
                .connect(tls.name.clone(), tcp)
                .await
                .map_err(|e| unreached(format!("TLS: {e}")))?,
        ));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreached(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(conn);
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.authority())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| answered(format!("request: {e}")))?;
        let answer = async {
            let resp =
                sender.send_request(req).await.map_err(|e| unreached(format!("HTTP: {e}")))?;
            let code = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unreached(format!("status {code}, body: {e}")))?
                .to_bytes();
            // An overloaded or restarting API server (5xx, 429) is worth asking again,
            // whatever its body (a proxy's 502 page is no JSON).
            let again = code >= 500 || code == 429;
            let json: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| KubeError {
                    answered: !again,
                    status: Some(code),
                    message: format!("status {code}, not JSON: {e}"),
                })?;
            if (200..300).contains(&code) {
                Ok(json)
            } else {
                // A `Status` object says why.
                let why = json["message"].as_str().unwrap_or("no message");
                let message = format!("status {code}: {why}");
                Err(KubeError { answered: !again, status: Some(code), message })
            }
        }
        .await;
        driver.abort();
        answer
    }

    /// HOST:PORT as a Host header spells it (an IPv6 address in brackets).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn read(&self, file: &str) -> Result<Vec<u8>, String> {
        let path = self.credentials.join(file);
        crate::localfile::read(&path, MAX_FILE, &format!("kube_credentials {file}"))
    }

    async fn resolve(&self) -> Result<SocketAddr, String> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("resolving {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("resolving {}: no address", self.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_are_checked_as_the_api_server_checks_them() {
        assert!(
            is_dns_subdomain("faultline-agent-a") && is_dns_subdomain("ip-10-0-1-2.ec2.internal")
        );
        assert!(is_dns_label("faultline") && !is_dns_label("a.b"));
        for bad in ["", "-a", "a-", "A", "../kube-system", "a/b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(!is_dns_subdomain(&"a".repeat(254)) && !is_dns_subdomain(".a"));
    }
}
