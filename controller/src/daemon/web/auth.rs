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
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("web_token_file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("web_token_file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (role, token) = line.split_once(char::is_whitespace).ok_or_else(|| format!("line {n}: write ROLE TOKEN (operator or viewer, then the token)"))?;
            let role = match role {
                "operator" => CertRole::Operator,
                "viewer" => CertRole::Viewer,
                other => return Err(format!("line {n}: role {} is not operator or viewer", faultline_proto::quote(other))),
            };
            let token = token.trim();
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("line {n}: a token is at least {MIN_TOKEN_LEN} printable characters without spaces (e.g. `openssl rand -hex 32`)"));
            }
            out.push((role, token.as_bytes().to_vec()));
        }
        if out.len() > MAX_TOKENS {
            return Err(format!("{} tokens; at most {MAX_TOKENS}", out.len()));
        }
        Ok(Self(out, None))
    }

    /// `viewer` or `operator`: what a request without credentials may do.
    pub fn with_anonymous(mut self, role: Option<&str>) -> Result<Self, String> {
        self.1 = match role {
            None => None,
            Some("viewer") => Some(CertRole::Viewer),
            Some("operator") => Some(CertRole::Operator),
            Some(other) => return Err(format!("web_anonymous: {} is not viewer or operator", faultline_proto::quote(other))),
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
        let token = h.as_bytes().strip_prefix(b"Bearer ").ok_or_else(|| ApiError::unauthenticated("Authorization: only `Bearer TOKEN` is accepted"))?;
        return web.tokens.role_of(token).ok_or_else(|| ApiError::unauthenticated("Authorization: unknown token"));
    }
    if let Some(r) = parts.extensions.get::<PeerCert>().and_then(|p| p.0) {
        return Ok(r);
    }
    if let Some(r) = web.tokens.anonymous() {
        return Ok(r);
    }
    Err(ApiError::unauthenticated("no credentials: send `Authorization: Bearer TOKEN` (a token from the controller's web_token_file), or a client certificate from its CA"))
}

fn allow(parts: &Parts, web: &Web, allowed: &[CertRole], what: &str) -> Result<CertRole, ApiError> {
    let r = role(parts, web)?;
    if allowed.contains(&r) {
        return Ok(r);
    }
    Err(ApiError::forbidden(format!("{what} is for {} credentials; these are a {}'s", allowed.iter().map(|r| r.name()).collect::<Vec<_>>().join(" or "), r.name())))
}

/// A caller allowed to read (viewer or operator).
pub struct Reader;
/// A caller allowed to change the fleet (operator).
pub struct Operator;

impl FromRequestParts<std::sync::Arc<Web>> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, web: &std::sync::Arc<Web>) -> Result<Self, ApiError> {
        allow(parts, web, faultline_proto::identity::policy::CONTROLLER_READ, "reading").map(|_| Self)
    }
}

impl FromRequestParts<std::sync::Arc<Web>> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, web: &std::sync::Arc<Web>) -> Result<Self, ApiError> {
        allow(parts, web, faultline_proto::identity::policy::CONTROLLER_WRITE, "changing faults or traffic").map(|_| Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_name_roles_and_refuse_weak_tokens() {
        let t = Tokens::parse("# ops\noperator 0123456789abcdef0123456789abcdef\n\nviewer  fedcba9876543210fedcba9876543210\n").unwrap();
        assert_eq!(t.role_of(b"0123456789abcdef0123456789abcdef"), Some(CertRole::Operator));
        assert_eq!(t.role_of(b"fedcba9876543210fedcba9876543210"), Some(CertRole::Viewer));
        assert_eq!(t.role_of(b"0123456789abcdef0123456789abcdeF"), None);
        assert_eq!(t.role_of(b""), None);
        assert!(Tokens::parse("operator short").unwrap_err().contains("at least 24"));
        assert!(Tokens::parse("admin 0123456789abcdef0123456789abcdef").unwrap_err().contains("not operator or viewer"));
        assert!(Tokens::parse("operator").unwrap_err().starts_with("line 1"));
        assert_eq!(Tokens::default().with_anonymous(Some("operator")).unwrap().anonymous(), Some(CertRole::Operator));
        assert!(Tokens::default().with_anonymous(Some("admin")).unwrap_err().contains("web_anonymous"));
    }
}
