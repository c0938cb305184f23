//! Who is calling, from the certificate the caller presented, and what that role may do.
//! A certificate carries its role as a DNS name (`agent.faultline`, `controller.faultline`,
//! `operator.faultline`, `viewer.faultline`; the older `cli.faultline` is an operator), and
//! an agent's certificate may carry the agent's name as the URI `urn:faultline:agent:NAME`
//! (`faultline certs issue agent NAME`): only that agent may register under that name.
//! Without TLS (loopback only) the listener admits root alone, who acts as an operator.

use tonic::{Request, Status};

use crate::transport::{AGENT_NAME, CONTROLLER_NAME};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    Agent,
    Controller,
    Operator,
    Viewer,
}

impl CertRole {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Controller => "controller",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }
    /// The DNS name a certificate of this role carries.
    #[must_use]
    pub fn dns(self) -> &'static str {
        match self {
            Self::Agent => AGENT_NAME,
            Self::Controller => CONTROLLER_NAME,
            Self::Operator => OPERATOR_NAME,
            Self::Viewer => VIEWER_NAME,
        }
    }
}

pub const OPERATOR_NAME: &str = "operator.faultline";
pub const VIEWER_NAME: &str = "viewer.faultline";
/// What `faultline certs init` wrote for the CLI before roles: an operator.
const LEGACY_CLI_NAME: &str = "cli.faultline";
/// The URI prefix naming an agent in its certificate.
pub const AGENT_URI: &str = "urn:faultline:agent:";

/// The DNS name an agent's own certificate carries beside its role's
/// (`h1.agent.faultline`): the controller dials a registered agent under that name, so an
/// agent that registers another agent's URL reaches nobody who answers to it.
#[must_use]
pub fn agent_server_name(name: &str) -> String {
    format!("{name}.{AGENT_NAME}")
}

/// The longest agent name, and the characters it may use: a DNS label's.
pub const MAX_NAME: usize = 63;

/// Checks an agent name: 1..=63 letters, digits and '-', not starting with '-'.
pub fn check_agent_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an agent name (1 to {MAX_NAME} letters, digits and '-', not starting with '-')",
            crate::quote(name)
        ))
    }
}

/// A caller as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: CertRole,
    /// For an agent: the name its certificate binds it to, if any.
    pub agent_name: Option<String>,
    /// No certificate: plaintext on loopback, where the listener let only root in.
    pub local_root: bool,
}

/// Reads role and name from a DER certificate. Exactly one role name must be present.
pub fn from_der(der: &[u8]) -> Result<Caller, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut roles = Vec::new();
    let mut name = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(d) => roles.extend(match *d {
                    AGENT_NAME => Some(CertRole::Agent),
                    CONTROLLER_NAME => Some(CertRole::Controller),
                    OPERATOR_NAME | LEGACY_CLI_NAME => Some(CertRole::Operator),
                    VIEWER_NAME => Some(CertRole::Viewer),
                    _ => None,
                }),
                GeneralName::URI(u) => {
                    if let Some(n) = u.strip_prefix(AGENT_URI) {
                        name = Some(n.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    roles.dedup();
    match roles.as_slice() {
        [role] => Ok(Caller {
            role: *role,
            agent_name: name.filter(|_| *role == CertRole::Agent),
            local_root: false,
        }),
        [] => Err(
            "the certificate names no faultline role (agent/controller/operator/viewer.faultline)"
                .into(),
        ),
        _ => Err("the certificate names more than one faultline role".into()),
    }
}

/// The caller of `req`, refused with `PERMISSION_DENIED` unless its role is in `allowed`.
/// `tls` says whether the server runs mutual TLS (then a certificate is always there).
pub fn authorize<T>(
    req: &Request<T>,
    tls: bool,
    allowed: &[CertRole],
    what: &str,
) -> Result<Caller, Status> {
    let caller = if tls {
        let certs =
            req.peer_certs().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs.first().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        from_der(leaf.as_ref()).map_err(Status::permission_denied)?
    } else {
        Caller { role: CertRole::Operator, agent_name: None, local_root: true }
    };
    if allowed.contains(&caller.role) || (caller.local_root && allowed.contains(&CertRole::Agent)) {
        return Ok(caller);
    }
    Err(Status::permission_denied(format!(
        "{what} is for {} certificates; this caller presented a {} certificate",
        allowed.iter().map(|r| r.name()).collect::<Vec<_>>().join(" or "),
        caller.role.name()
    )))
}

/// Who may call what.
pub mod policy {
    use super::CertRole::{self, Agent, Controller, Operator, Viewer};
    /// Read-only calls on an agent: its host, faults, metrics.
    pub const AGENT_READ: &[CertRole] = &[Controller, Operator, Viewer];
    /// Calls that change an agent's kernel.
    pub const AGENT_WRITE: &[CertRole] = &[Controller, Operator];
    /// Registering with a controller.
    pub const REGISTER: &[CertRole] = &[Agent];
    /// Asking for an agent's own certificate: any agent certificate (the shared bootstrap
    /// one names no agent), the name then coming from what the token proves.
    pub const ENROLL: &[CertRole] = &[Agent];
    pub const CONTROLLER_READ: &[CertRole] = &[Operator, Viewer];
    pub const CONTROLLER_WRITE: &[CertRole] = &[Operator];
}

#[cfg(all(test, feature = "certgen"))]
mod tests {
    use super::*;

    #[test]
    fn roles_and_names_are_read_from_certificates() {
        let dir = std::env::temp_dir().join(format!("faultline-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::transport::certgen::init(&dir).unwrap();
        crate::transport::certgen::issue(&dir, CertRole::Agent, "db1").unwrap();
        let der = |f: &str| {
            x509_parser::pem::parse_x509_pem(&std::fs::read(dir.join(f)).unwrap())
                .unwrap()
                .1
                .contents
        };
        assert_eq!(
            from_der(&der("agent.pem")).unwrap(),
            Caller { role: CertRole::Agent, agent_name: None, local_root: false }
        );
        assert_eq!(from_der(&der("agent-db1.pem")).unwrap().agent_name.as_deref(), Some("db1"));
        assert_eq!(from_der(&der("controller.pem")).unwrap().role, CertRole::Controller);
        assert_eq!(from_der(&der("cli.pem")).unwrap().role, CertRole::Operator);
        assert_eq!(from_der(&der("viewer.pem")).unwrap().role, CertRole::Viewer);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn agent_names_are_dns_labels() {
        assert!(check_agent_name("db-1").is_ok());
        assert!(check_agent_name("").is_err());
        assert!(check_agent_name("-x").is_err());
        assert!(check_agent_name(&"a".repeat(64)).is_err());
        let e = check_agent_name(&"é".repeat(500_000)).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }
}
