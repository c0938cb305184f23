//! Who calls the Web API: a bearer token from the token file (scripts, browsers), or a
//! client certificate from the controller's CA (the CLI's own, imported into a browser),
//! each with its role. Read calls need a viewer or operator, calls that change the
//! fleet an operator. Nothing is granted by a cookie (no cross-site request can carry the
//! credential) or by the network a request comes from.

use std::path::Path;

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use faultline_proto::identity::CertRole;

use super::{ApiError, Web};

/// The shortest token accepted: a guessable one would be a door left open.
const MIN_TOKEN_LEN: usize = 24;
const MAX_TOKENS: usize = 1024;

/// The tokens of `--web-token-file`: one per line, `ROLE TOKEN` (operator or viewer);
/// blank lines and `#` comments ignored. And the role of a request with no credential,
/// when `--web-anonymous` grants one.
#[derive(Default)]
pub struct Tokens(Vec<(CertRole, Vec<u8>)>, Option<CertRole>);

impl Tokens {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("web_token_file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("web_token_file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (role, token) = line.split_once(char::is_whitespace).ok_or_else(|| {
                format!("line {n}: write ROLE TOKEN (operator or viewer, then the token)")
            })?;
            let role = match role {
                "operator" => CertRole::Operator,
                "viewer" => CertRole::Viewer,
                other => {
                    return Err(format!(
                        "line {n}: role {} is not operator or viewer",
                        faultline_proto::quote(other)
                    ));
                }
            };
            let token = token.trim();
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {n}: a token is at least {MIN_TOKEN_LEN} printable characters without spaces (e.g. `openssl rand -hex 32`)"
                ));
            }
            out.push((role, token.as_bytes().to_vec()));
        }
        if out.len() > MAX_TOKENS {
            return Err(format!("{} tokens; at most {MAX_TOKENS}", out.len()));
        }
        Ok(Self(out, None))
    }

    /// `viewer`: what a request without credentials may do. Never more: whoever reaches
    /// the port (any local user, any container beside it, a page the browser was sent
    /// to) would otherwise act on the fleet.
    pub fn with_anonymous(mut self, role: Option<&str>) -> Result<Self, String> {
        self.1 = match role {
            None => None,
            Some("viewer") => Some(CertRole::Viewer),
            Some("operator") => return Err("web_anonymous: operator is refused: a request without credentials may at most read (viewer); give operators a token in web_token_file".into()),
            Some(other) => return Err(format!("web_anonymous: {} is not viewer", faultline_proto::quote(other))),
        };
        Ok(self)
    }

    pub fn anonymous(&self) -> Option<CertRole> {
        self.1
    }

    /// The role of `given`, compared in constant time against every token.
    fn role_of(&self, given: &[u8]) -> Option<CertRole> {
        let mut found = None;
        for (role, token) in &self.0 {
            if constant_time_eq(token, given) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Never the tokens themselves, in any log or panic.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.0.len())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The certificate a TLS connection presented, put on each of its requests.
#[derive(Clone, Default)]
pub struct PeerCert(pub Option<CertRole>);

/// The role a request proves, or the reason it proves none (401).
fn role(parts: &Parts, web: &Web) -> Result<CertRole, ApiError> {
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        let token = h.as_bytes().strip_prefix(b"Bearer ").ok_or_else(|| {
            ApiError::unauthenticated("Authorization: only `Bearer TOKEN` is accepted")
        })?;
        return web
            .tokens
            .role_of(token)
            .ok_or_else(|| ApiError::unauthenticated("Authorization: unknown token"));
    }
    if let Some(r) = parts.extensions.get::<PeerCert>().and_then(|p| p.0) {
        return Ok(r);
    }
    if let Some(r) = web.tokens.anonymous() {
        return Ok(r);
    }
    Err(ApiError::unauthenticated(
        "no credentials: send `Authorization: Bearer TOKEN` (a token from the controller's web_token_file), or a client certificate from its CA",
    ))
}

fn allow(parts: &Parts, web: &Web, allowed: &[CertRole], what: &str) -> Result<CertRole, ApiError> {
    let r = role(parts, web)?;
    if allowed.contains(&r) {
        return Ok(r);
    }
    Err(ApiError::forbidden(format!(
        "{what} is for {} credentials; these are a {}'s",
        allowed.iter().map(|r| r.name()).collect::<Vec<_>>().join(" or "),
        r.name()
    )))
}

/// A caller allowed to read (viewer or operator).
pub struct Reader;
/// A caller allowed to change the fleet (operator).
pub struct Operator;

impl FromRequestParts<std::sync::Arc<Web>> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        web: &std::sync::Arc<Web>,
    ) -> Result<Self, ApiError> {
        allow(parts, web, faultline_proto::identity::policy::CONTROLLER_READ, "reading")
            .map(|_| Self)
    }
}

impl FromRequestParts<std::sync::Arc<Web>> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        web: &std::sync::Arc<Web>,
    ) -> Result<Self, ApiError> {
        allow(
            parts,
            web,
            faultline_proto::identity::policy::CONTROLLER_WRITE,
            "changing faults or traffic",
        )
        .map(|_| Self)
    }
}

/// Whether the Host header names this controller: an IP address (a page cannot rebind
/// one), `localhost`, or a name in `hosts` (config `web_hosts`). A page on
/// `rebind.attacker.example` whose name the attacker points at this address sends that
/// name, and is refused (421) before any handler runs. A request without a Host (HTTP/1.0
/// health checks) comes from no browser.
pub fn host_allowed(host: Option<&str>, hosts: &[String]) -> bool {
    let Some(host) = host else { return true };
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host }
        }),
    };
    let name = name.trim_end_matches('.');
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a request that changes something may come from where the browser says it
/// comes from: no Origin (curl, scripts, the CLI), or an Origin whose host and port are
/// the Host the request was sent to (the console's own page). A page elsewhere posting
/// here (with an anonymous role or a client certificate the browser adds by itself) is
/// refused.
pub fn origin_allowed(origin: Option<&str>, fetch_site: Option<&str>, host: Option<&str>) -> bool {
    if fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    let Some(origin) = origin else { return true };
    let authority = origin.split_once("://").map(|(_, a)| a.trim_end_matches('/'));
    match (authority, host) {
        (Some(a), Some(h)) => a.eq_ignore_ascii_case(h),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins_from_elsewhere_are_refused() {
        let hosts = vec!["faultline.example.org".to_owned()];
        for ok in [
            None,
            Some("10.0.0.5:7443"),
            Some("[::1]:5050"),
            Some("localhost:5050"),
            Some("LOCALHOST"),
            Some("faultline.example.org:7443"),
            Some("app.localhost"),
        ] {
            assert!(host_allowed(ok, &hosts), "{ok:?}");
        }
        for bad in [
            "rebind.attacker.example",
            "rebind.attacker.example:5050",
            "[evil]:80",
            "faultline.example.org.evil:1",
        ] {
            assert!(!host_allowed(Some(bad), &hosts), "{bad}");
        }
        assert!(origin_allowed(None, None, Some("10.0.0.5:7443")));
        assert!(origin_allowed(
            Some("https://10.0.0.5:7443"),
            Some("same-origin"),
            Some("10.0.0.5:7443")
        ));
        assert!(!origin_allowed(Some("https://evil.example"), None, Some("10.0.0.5:7443")));
        assert!(!origin_allowed(Some("null"), None, Some("10.0.0.5:7443")));
        assert!(!origin_allowed(None, Some("cross-site"), Some("10.0.0.5:7443")));
    }

    #[test]
    fn token_files_name_roles_and_refuse_weak_tokens() {
        let t = Tokens::parse("# ops\noperator 0123456789abcdef0123456789abcdef\n\nviewer  fedcba9876543210fedcba9876543210\n").unwrap();
        assert_eq!(t.role_of(b"0123456789abcdef0123456789abcdef"), Some(CertRole::Operator));
        assert_eq!(t.role_of(b"fedcba9876543210fedcba9876543210"), Some(CertRole::Viewer));
        assert_eq!(t.role_of(b"0123456789abcdef0123456789abcdeF"), None);
        assert_eq!(t.role_of(b""), None);
        assert!(Tokens::parse("operator short").unwrap_err().contains("at least 24"));
        assert!(
            Tokens::parse("admin 0123456789abcdef0123456789abcdef")
                .unwrap_err()
                .contains("not operator or viewer")
        );
        assert!(Tokens::parse("operator").unwrap_err().starts_with("line 1"));
        assert_eq!(
            Tokens::default().with_anonymous(Some("viewer")).unwrap().anonymous(),
            Some(CertRole::Viewer)
        );
        assert!(
            Tokens::default()
                .with_anonymous(Some("operator"))
                .unwrap_err()
                .contains("at most read")
        );
        assert!(
            Tokens::default().with_anonymous(Some("admin")).unwrap_err().contains("web_anonymous")
        );
    }
}
