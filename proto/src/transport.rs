//! How faultline's processes reach each other: mutual TLS by default, plaintext only
//! when asked for and only on loopback. Shared by the agent, the controller, the CLI
//! and the tests, so every connection is made one way.
//!
//! Each side proves who it is with a certificate from the deployment's CA, and checks
//! the other's. Servers are verified by role name, not address (as Nomad checks
//! `server.<region>.nomad`): agents present `agent.faultline`, the controller
//! `controller.faultline`, so certificates need no per-host addresses.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The name agents' certificates carry and clients check.
pub const AGENT_NAME: &str = "agent.faultline";
/// The name the controller's certificate carries and clients check.
pub const CONTROLLER_NAME: &str = "controller.faultline";
/// Where the daemons and the CLI look for certificates unless told.
pub const DEFAULT_TLS_DIR: &str = "/etc/faultline/tls";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS: reading {path}: {error} (create a lab CA and certificates with `faultline certs init {dir}`, or pass --insecure to use plaintext on loopback)")]
    Read { path: PathBuf, dir: String, error: std::io::Error },
    #[error("--insecure: plaintext is refused on {addr}, which is not a loopback address; use TLS (`faultline certs init DIR`, then --tls-dir DIR)")]
    NotLoopback { addr: String },
    #[error("{field}: {url:?} is {problem}")]
    Url { field: String, url: String, problem: String },
    #[error("TLS: {0}")]
    Tls(#[from] tonic::transport::Error),
}

/// The role a process plays, which picks its certificate in the TLS directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Controller,
    Cli,
}

impl Role {
    pub fn file_stem(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Controller => "controller",
            Self::Cli => "cli",
        }
    }
}

/// How this process talks: mTLS with its own identity and the CA, or plaintext.
#[derive(Debug, Clone)]
pub enum Security {
    Mtls { ca: Certificate, identity: Identity },
    /// Plaintext: only to and from loopback addresses.
    Insecure,
}

impl Security {
    /// Loads `ca.pem`, `<role>.pem` and `<role>-key.pem` from `dir`.
    pub fn load(dir: &Path, role: Role) -> Result<Self, TransportError> {
        let read = |name: String| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|error| TransportError::Read { path, dir: dir.display().to_string(), error })
        };
        let ca = Certificate::from_pem(read("ca.pem".into())?);
        let identity = Identity::from_pem(read(format!("{}.pem", role.file_stem()))?, read(format!("{}-key.pem", role.file_stem()))?);
        Ok(Self::Mtls { ca, identity })
    }

    /// `--insecure` gives plaintext; otherwise the certificates in `dir` (default
    /// /etc/faultline/tls) must be there.
    pub fn from_flags(insecure: bool, dir: Option<&Path>, role: Role) -> Result<Self, TransportError> {
        if insecure {
            return Ok(Self::Insecure);
        }
        Self::load(dir.unwrap_or(Path::new(DEFAULT_TLS_DIR)), role)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Mtls { .. })
    }

    /// The URL scheme that goes with this mode.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    /// A server that only serves callers with a certificate from the CA, or a
    /// plaintext one on loopback.
    pub fn server(&self, listen: SocketAddr) -> Result<tonic::transport::Server, TransportError> {
        let builder = tonic::transport::Server::builder();
        match self {
            Self::Mtls { ca, identity } => {
                // client_ca_root without client_auth_optional: no certificate, no handshake.
                Ok(builder.tls_config(ServerTlsConfig::new().identity(identity.clone()).client_ca_root(ca.clone()))?)
            }
            Self::Insecure if listen.ip().is_loopback() => Ok(builder),
            Self::Insecure => Err(TransportError::NotLoopback { addr: listen.to_string() }),
        }
    }

    /// An endpoint for `url` (named `field` in errors) whose server must present
    /// `server_name`. The scheme must match the mode: https with TLS, http without;
    /// plaintext only to loopback.
    pub fn endpoint(&self, field: &str, url: &str, server_name: &str) -> Result<Endpoint, TransportError> {
        let bad = |problem: String| TransportError::Url { field: field.into(), url: url.into(), problem };
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| bad(format!("not a URL: {e}")))?;
        let uri = endpoint.uri().clone();
        let endpoint = endpoint.connect_timeout(Duration::from_secs(2));
        match (self, uri.scheme_str()) {
            (Self::Mtls { ca, identity }, Some("https")) => {
                Ok(endpoint.tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()).identity(identity.clone()).domain_name(server_name))?)
            }
            (Self::Mtls { .. }, _) => Err(bad("not https:// (TLS is on; plaintext needs --insecure, on loopback only)".into())),
            (Self::Insecure, Some("http")) => {
                let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
                let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if loopback { Ok(endpoint) } else { Err(TransportError::NotLoopback { addr: host.to_owned() }) }
            }
            (Self::Insecure, _) => Err(bad("not http:// (--insecure is plaintext)".into())),
        }
    }
}

/// Lab certificates: a CA and one certificate per role, all signed by it.
#[cfg(feature = "certgen")]
pub mod certgen {
    use std::path::{Path, PathBuf};

    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    use super::{AGENT_NAME, CONTROLLER_NAME};

    #[derive(Debug, thiserror::Error)]
    pub enum CertError {
        #[error("{0}: exists; refusing to overwrite certificates (remove the directory first, or pick another)")]
        Exists(PathBuf),
        #[error("writing {path}: {source}")]
        Write { path: PathBuf, source: std::io::Error },
        #[error("generating certificates: {0}")]
        Gen(#[from] rcgen::Error),
    }

    /// Writes ca.pem/ca-key.pem, agent, controller and cli certificates and keys into
    /// `dir` (created; keys mode 0600). Returns the files written.
    pub fn init(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
        let existing = dir.join("ca.pem");
        if existing.exists() {
            return Err(CertError::Exists(existing));
        }
        std::fs::create_dir_all(dir).map_err(|source| CertError::Write { path: dir.to_owned(), source })?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(DnType::CommonName, "faultline lab CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let mut written = vec![write(dir, "ca.pem", &ca_cert.pem(), false)?, write(dir, "ca-key.pem", &ca_key.serialize_pem(), true)?];
        let issuer = Issuer::new(ca, ca_key);
        // Agents and the controller are servers and also clients (agents register with
        // the controller, the controller calls agents); the CLI is only a client.
        for (stem, name, server) in [("agent", AGENT_NAME, true), ("controller", CONTROLLER_NAME, true), ("cli", "cli.faultline", false)] {
            let mut p = CertificateParams::new(vec![name.to_owned()])?;
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = if server { vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth] } else { vec![ExtendedKeyUsagePurpose::ClientAuth] };
            p.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate()?;
            let cert = p.signed_by(&key, &issuer)?;
            written.push(write(dir, &format!("{stem}.pem"), &cert.pem(), false)?);
            written.push(write(dir, &format!("{stem}-key.pem"), &key.serialize_pem(), true)?);
        }
        Ok(written)
    }

    fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<PathBuf, CertError> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let path = dir.join(name);
        let mode = if secret { 0o600 } else { 0o644 };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|source| CertError::Write { path: path.clone(), source })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback_and_schemes_match_the_mode() {
        let s = Security::Insecure;
        assert!(s.endpoint("--agent", "http://127.0.0.1:7070", AGENT_NAME).is_ok());
        assert!(s.endpoint("--agent", "http://[::1]:7070", AGENT_NAME).is_ok());
        assert!(s.endpoint("--agent", "http://localhost:7070", AGENT_NAME).is_ok());
        let e = s.endpoint("--agent", "http://10.0.0.5:7070", AGENT_NAME).unwrap_err().to_string();
        assert!(e.contains("--insecure") && e.contains("10.0.0.5"), "{e}");
        let e = s.endpoint("--agent", "https://127.0.0.1:7070", AGENT_NAME).unwrap_err().to_string();
        assert!(e.starts_with("--agent:"), "{e}");
        assert!(s.server("127.0.0.1:7070".parse().unwrap()).is_ok());
        assert!(s.server("0.0.0.0:7070".parse().unwrap()).is_err());
        assert!(s.server("10.0.0.5:7070".parse().unwrap()).unwrap_err().to_string().contains("10.0.0.5:7070"));
    }

    #[test]
    fn missing_certificates_say_how_to_make_them() {
        let e = Security::load(Path::new("/nonexistent/tls"), Role::Cli).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/tls/ca.pem") && e.contains("faultline certs init /nonexistent/tls") && e.contains("--insecure"), "{e}");
    }

    #[cfg(feature = "certgen")]
    #[test]
    fn lab_certificates_load_and_are_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("faultline-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = certgen::init(&dir).unwrap();
        assert_eq!(files.len(), 8);
        for role in [Role::Agent, Role::Controller, Role::Cli] {
            let s = Security::load(&dir, role).unwrap();
            assert!(s.endpoint("url", "https://10.0.0.5:7070", AGENT_NAME).is_ok());
            assert!(s.endpoint("url", "http://10.0.0.5:7070", AGENT_NAME).unwrap_err().to_string().contains("not https://"));
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("cli-key.pem")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(certgen::init(&dir), Err(certgen::CertError::Exists(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

