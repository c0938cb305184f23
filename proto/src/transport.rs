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
    #[error(
        "TLS: reading {path}: {error} (create a lab CA and certificates with `faultline certs init {dir}`, or pass --insecure to use plaintext on loopback)"
    )]
    Read { path: PathBuf, dir: String, error: std::io::Error },
    #[error(
        "--insecure: plaintext is refused on {addr}, which is not a loopback address; use TLS (`faultline certs init DIR`, then --tls-dir DIR)"
    )]
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
    #[must_use]
    pub fn file_stem(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Controller => "controller",
            Self::Cli => "cli",
        }
    }
}

/// The layers every faultline server runs its services under.
pub type ServerLayers = tower::layer::util::Stack<
    tower::util::MapResponseLayer<
        fn(
            tonic::codegen::http::Response<tonic::body::Body>,
        ) -> tonic::codegen::http::Response<tonic::body::Body>,
    >,
    tower::layer::util::Identity,
>;

/// A request tonic cannot decode (a string that is not UTF-8, a truncated field) is the
/// caller's error: tonic answers INTERNAL, which would read as the server's. Rewritten
/// to `INVALID_ARGUMENT`, message kept.
fn decode_errors_are_invalid_argument(
    mut r: tonic::codegen::http::Response<tonic::body::Body>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    let h = r.headers_mut();
    let decode = h.get("grpc-message").is_some_and(|m| {
        m.as_bytes().starts_with(b"failed%20to%20decode")
            || m.as_bytes().starts_with(b"failed to decode")
    });
    if decode && h.get("grpc-status").is_some_and(|s| s == "13") {
        h.insert("grpc-status", tonic::codegen::http::HeaderValue::from_static("3"));
    }
    r
}

/// A server without TLS, bounded as every faultline server is: for loopback plaintext and
/// the agent's local socket (`listener::bind_local`, which checks who connects).
#[must_use]
pub fn plain_server() -> tonic::transport::Server<ServerLayers> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(256)
        .layer(tower::util::MapResponseLayer::new(decode_errors_are_invalid_argument as fn(_) -> _))
}

/// How this process talks: mTLS with its own identity and the CA, or plaintext.
#[derive(Debug, Clone)]
pub enum Security {
    Mtls {
        ca: Certificate,
        identity: Identity,
    },
    /// Plaintext: only to and from loopback addresses.
    Insecure,
}

impl Security {
    /// Loads `ca.pem`, `<role>.pem` and `<role>-key.pem` from `dir`.
    pub fn load(dir: &Path, role: Role) -> Result<Self, TransportError> {
        let read = |name: String| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|error| TransportError::Read {
                path,
                dir: dir.display().to_string(),
                error,
            })
        };
        let ca = Certificate::from_pem(read("ca.pem".into())?);
        let identity = Identity::from_pem(
            read(format!("{}.pem", role.file_stem()))?,
            read(format!("{}-key.pem", role.file_stem()))?,
        );
        Ok(Self::Mtls { ca, identity })
    }

    /// `--insecure` gives plaintext; otherwise the certificates in `dir` (default
    /// /etc/faultline/tls) must be there.
    pub fn from_flags(
        insecure: bool,
        dir: Option<&Path>,
        role: Role,
    ) -> Result<Self, TransportError> {
        if insecure {
            return Ok(Self::Insecure);
        }
        Self::load(dir.unwrap_or(Path::new(DEFAULT_TLS_DIR)), role)
    }

    /// An agent's security: its own pair `agent-NAME.pem` (bound to its name, from
    /// `faultline certs issue agent NAME`) where the directory has one, else `agent.pem`.
    pub fn for_agent(insecure: bool, dir: &Path, name: &str) -> Result<Self, TransportError> {
        if insecure {
            return Ok(Self::Insecure);
        }
        let named = format!("agent-{name}");
        if !name.contains('/') && dir.join(format!("{named}.pem")).exists() {
            let read = |f: String| {
                let path = dir.join(f);
                std::fs::read(&path).map_err(|error| TransportError::Read {
                    path,
                    dir: dir.display().to_string(),
                    error,
                })
            };
            let ca = Certificate::from_pem(read("ca.pem".into())?);
            let identity = Identity::from_pem(
                read(format!("{named}.pem"))?,
                read(format!("{named}-key.pem"))?,
            );
            return Ok(Self::Mtls { ca, identity });
        }
        Self::load(dir, Role::Agent)
    }

    /// The same CA with another identity (an enrolled agent's own pair, in PEM).
    pub fn with_identity(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        let Self::Mtls { ca, .. } = self else {
            return Err("plaintext has no certificates".into());
        };
        for (what, pem) in [("certificate", cert_pem), ("key", key_pem)] {
            if !pem.trim_ascii_start().starts_with(b"-----BEGIN ") {
                return Err(format!("the {what} is not PEM"));
            }
        }
        Ok(Self::Mtls { ca: ca.clone(), identity: Identity::from_pem(cert_pem, key_pem) })
    }

    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Mtls { .. })
    }

    /// The URL scheme that goes with this mode.
    #[must_use]
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    /// A server that only serves callers with a certificate from the CA, or a
    /// plaintext one on loopback. Bounded: a handshake must finish within 5 s, a peer that
    /// stops answering HTTP/2 pings is dropped, and one connection carries at most 256
    /// concurrent calls (the listener, `Security::incoming`, bounds the connections).
    pub fn server(
        &self,
        listen: SocketAddr,
    ) -> Result<tonic::transport::Server<ServerLayers>, TransportError> {
        let builder = plain_server();
        match self {
            Self::Mtls { ca, identity } => {
                // client_ca_root without client_auth_optional: no certificate, no handshake.
                Ok(builder.tls_config(
                    ServerTlsConfig::new()
                        .identity(identity.clone())
                        .client_ca_root(ca.clone())
                        .timeout(Duration::from_secs(5)),
                )?)
            }
            Self::Insecure if listen.ip().is_loopback() => Ok(builder),
            Self::Insecure => Err(TransportError::NotLoopback { addr: listen.to_string() }),
        }
    }

    /// The bounded listener for `server`: in plaintext mode only root's sockets get in
    /// (plaintext is loopback only, and a local user must not gain what root has).
    pub async fn incoming(
        &self,
        listen: SocketAddr,
        mut limits: crate::listener::Limits,
    ) -> std::io::Result<
        impl futures_core::Stream<Item = std::io::Result<crate::listener::Conn>> + use<>,
    > {
        limits.root_only = !self.is_tls();
        crate::listener::bind(listen, limits).await
    }

    /// An endpoint for `url` (named `field` in errors) whose server must present
    /// `server_name`. The scheme must match the mode: https with TLS, http without;
    /// plaintext only to loopback.
    pub fn endpoint(
        &self,
        field: &str,
        url: &str,
        server_name: &str,
    ) -> Result<Endpoint, TransportError> {
        let bad =
            |problem: String| TransportError::Url { field: field.into(), url: url.into(), problem };
        let endpoint =
            Endpoint::from_shared(url.to_owned()).map_err(|e| bad(format!("not a URL: {e}")))?;
        let uri = endpoint.uri().clone();
        let endpoint = endpoint.connect_timeout(Duration::from_secs(2));
        match (self, uri.scheme_str()) {
            (Self::Mtls { ca, identity }, Some("https")) => Ok(endpoint.tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(ca.clone())
                    .identity(identity.clone())
                    .domain_name(server_name),
            )?),
            (Self::Mtls { .. }, _) => Err(bad(
                "not https:// (TLS is on; plaintext needs --insecure, on loopback only)".into(),
            )),
            (Self::Insecure, Some("http")) => {
                let host =
                    uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
                let loopback =
                    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if loopback {
                    Ok(endpoint)
                } else {
                    Err(TransportError::NotLoopback { addr: host.to_owned() })
                }
            }
            (Self::Insecure, _) => Err(bad("not http:// (--insecure is plaintext)".into())),
        }
    }
}

/// Why the agent's local socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "no agent serves the local socket @{name} in this network namespace (is faultline-agent running here, listening on port {port}?)"
    )]
    Absent { name: String, port: u16 },
    #[error(
        "the local socket @{name} is held by uid {uid}, not root, so it is not faultline's agent: not used"
    )]
    NotRoot { name: String, uid: u32 },
    #[error("local socket @{name}: {error}")]
    Io { name: String, error: std::io::Error },
    #[error("local socket: {0}")]
    Channel(#[from] tonic::transport::Error),
}

/// A connection to this network namespace's agent on `port` through its local socket
/// (`listener::local_name`): no TLS, no certificates; the agent admits root holding
/// `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` only, and this side checks that root holds the
/// socket (anyone may bind an abstract name first and pose as the agent).
pub async fn local_channel(port: u16) -> Result<tonic::transport::Channel, LocalError> {
    use std::sync::{Arc, Mutex};
    // The probe's connection is the channel's first; a reconnect checks again.
    let first = Arc::new(Mutex::new(Some(connect_local(port).await?)));
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let first = first.clone();
        async move {
            let probed = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            let stream = match probed {
                Some(s) => s,
                None => connect_local(port).await.map_err(std::io::Error::other)?,
            };
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(Endpoint::from_static("http://local.faultline").connect_with_connector(connector).await?)
}

async fn connect_local(port: u16) -> Result<tokio::net::UnixStream, LocalError> {
    use std::os::linux::net::SocketAddrExt;
    let name = crate::listener::local_name(port);
    let io = |error: std::io::Error| LocalError::Io { name: name.clone(), error };
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).map_err(io)?;
    let stream = match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::UnixStream::connect_addr(&addr.clone().into()),
    )
    .await
    {
        Err(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out after 2 s",
            )));
        }
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            return Err(LocalError::Absent { name, port });
        }
        Ok(r) => r.map_err(io)?,
    };
    let uid = stream.peer_cred().map_err(io)?.uid();
    if uid != 0 {
        return Err(LocalError::NotRoot { name, uid });
    }
    Ok(stream)
}

/// Lab certificates: a CA and one certificate per role, all signed by it.
#[cfg(feature = "certgen")]
pub mod certgen {
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };

    use crate::identity::CertRole;

    #[derive(Debug, thiserror::Error)]
    pub enum CertError {
        #[error(
            "{0}: exists; refusing to overwrite certificates (remove the directory first, or pick another)"
        )]
        Exists(PathBuf),
        #[error("writing {path}: {source}")]
        Write { path: PathBuf, source: std::io::Error },
        #[error("reading {path}: {source}")]
        Read { path: PathBuf, source: std::io::Error },
        #[error("generating certificates: {0}")]
        Gen(#[from] rcgen::Error),
        #[error("{0}")]
        Name(String),
    }

    /// Writes ca.pem/ca-key.pem and a certificate and key per role into `dir` (created;
    /// keys mode 0600): agent (bound to no name: it serves, and registers only in
    /// plaintext labs), controller, cli (an operator) and viewer. Returns the files.
    pub fn init(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
        init_with(dir, &[])
    }

    /// As `init`, with the controller's certificate also naming `web_hosts` (DNS names or
    /// IP addresses): a browser or curl reaching the Web API by one of them can then verify
    /// it (gRPC clients check the role name and need none).
    pub fn init_with(dir: &Path, web_hosts: &[String]) -> Result<Vec<PathBuf>, CertError> {
        for h in web_hosts {
            let role_name =
                [CertRole::Agent, CertRole::Controller, CertRole::Operator, CertRole::Viewer]
                    .iter()
                    .any(|r| r.dns() == h);
            let host = h.parse::<std::net::IpAddr>().is_ok()
                || (!h.is_empty()
                    && h.len() <= 253
                    && h.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    }));
            if role_name || !host {
                return Err(CertError::Name(format!(
                    "web host {}: a DNS name or an IP address, not a role name",
                    crate::quote(h)
                )));
            }
        }
        let existing = dir.join("ca.pem");
        if existing.exists() {
            return Err(CertError::Exists(existing));
        }
        std::fs::create_dir_all(dir)
            .map_err(|source| CertError::Write { path: dir.to_owned(), source })?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(DnType::CommonName, "faultline lab CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let mut written = vec![
            write(dir, "ca.pem", &ca_cert.pem(), false)?,
            write(dir, "ca-key.pem", &ca_key.serialize_pem(), true)?,
        ];
        let issuer = Issuer::new(ca, ca_key);
        for (stem, role) in [
            ("agent", CertRole::Agent),
            ("controller", CertRole::Controller),
            ("cli", CertRole::Operator),
            ("viewer", CertRole::Viewer),
        ] {
            let extra = if role == CertRole::Controller { web_hosts } else { &[] };
            written.extend(sign(dir, stem, role, None, extra, &issuer)?);
        }
        Ok(written)
    }

    /// A browser imports a client certificate as PKCS#12: `STEM.p12` holds the pair and
    /// the CA, encrypted (PBES2 with AES-256, HMAC-SHA256 MAC, as OpenSSL 3 writes them)
    /// under a random password written beside it in `STEM.p12.password` (mode 0600).
    fn bundle(
        dir: &Path,
        stem: &str,
        cert_der: &[u8],
        key_der: &[u8],
    ) -> Result<Vec<PathBuf>, CertError> {
        use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
        use ring::rand::SecureRandom;
        let p12 = |e: p12_keystore::error::Error| CertError::Name(format!("{stem}.p12: {e}"));
        let ca = std::fs::read_to_string(dir.join("ca.pem"))
            .map_err(|source| CertError::Write { path: dir.join("ca.pem"), source })?;
        let ca_der = x509_parser::pem::parse_x509_pem(ca.as_bytes())
            .map_err(|e| CertError::Name(format!("ca.pem: {e}")))?
            .1
            .contents;
        let mut secret = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| CertError::Name("random: the system's generator failed".into()))?;
        // Letters and digits only: typed into a browser's import dialog.
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let password: String =
            secret.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
        // The local key id pairs key and certificate in the bundle (a hash of the certificate, as OpenSSL does).
        let key_id = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der)
            .as_ref()
            .to_vec();
        let chain = PrivateKeyChain::new(
            key_id,
            PrivateKey::from_der(key_der).map_err(p12)?,
            [
                Certificate::from_der(cert_der).map_err(p12)?,
                Certificate::from_der(&ca_der).map_err(p12)?,
            ],
        );
        let mut store = KeyStore::new();
        store.add_entry(&format!("faultline {stem}"), KeyStoreEntry::PrivateKeyChain(chain));
        let bytes = store.writer(&password).write().map_err(p12)?;
        Ok(vec![
            write_bytes(dir, &format!("{stem}.p12"), &bytes, true)?,
            write(dir, &format!("{stem}.p12.password"), &format!("{password}\n"), true)?,
        ])
    }

    /// Issues one more certificate from the CA in `dir` (ca.pem and ca-key.pem): an agent
    /// bound to `name` (`agent-NAME.pem`: only it may register as NAME), or an operator or
    /// viewer (`operator-NAME.pem`, `viewer-NAME.pem`, for one person or script).
    pub fn issue(dir: &Path, role: CertRole, name: &str) -> Result<Vec<PathBuf>, CertError> {
        crate::identity::check_agent_name(name).map_err(CertError::Name)?;
        if role == CertRole::Controller {
            return Err(CertError::Name(
                "issue agent, operator or viewer certificates; `certs init` makes the controller's"
                    .into(),
            ));
        }
        let issuer = load_issuer(dir)?;
        let stem = format!("{}-{name}", role.name());
        if dir.join(format!("{stem}.pem")).exists() {
            return Err(CertError::Exists(dir.join(format!("{stem}.pem"))));
        }
        sign(dir, &stem, role, (role == CertRole::Agent).then_some(name), &[], &issuer)
    }

    /// An agent's certificate bound to `name` and its new key, in PEM, from the CA in `dir`
    /// (ca.pem, ca-key.pem): what the controller gives an enrolled agent. Nothing is written.
    pub fn agent_pair(dir: &Path, name: &str) -> Result<(String, String), CertError> {
        crate::identity::check_agent_name(name).map_err(CertError::Name)?;
        let issuer = load_issuer(dir)?;
        let key = KeyPair::generate()?;
        let cert = params(CertRole::Agent, Some(name), &[])?.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map_err(|source| CertError::Read { path: dir.join(f), source })
        };
        let key = KeyPair::from_pem(&read("ca-key.pem")?)?;
        Ok(Issuer::from_ca_cert_pem(&read("ca.pem")?, key)?)
    }

    /// Agents and the controller are servers and also clients (agents register with the
    /// controller, the controller calls agents); operators and viewers only clients.
    fn sign(
        dir: &Path,
        stem: &str,
        role: CertRole,
        agent: Option<&str>,
        hosts: &[String],
        issuer: &Issuer<'_, KeyPair>,
    ) -> Result<Vec<PathBuf>, CertError> {
        let p = params(role, agent, hosts)?;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, issuer)?;
        let server = matches!(role, CertRole::Agent | CertRole::Controller);
        let mut files = vec![
            write(dir, &format!("{stem}.pem"), &cert.pem(), false)?,
            write(dir, &format!("{stem}-key.pem"), &key.serialize_pem(), true)?,
        ];
        // People use operator and viewer certificates from browsers too.
        if !server {
            files.extend(bundle(dir, stem, cert.der(), &key.serialize_der())?);
        }
        Ok(files)
    }

    fn params(
        role: CertRole,
        agent: Option<&str>,
        hosts: &[String],
    ) -> Result<CertificateParams, CertError> {
        // rcgen makes an IP address SAN of a name that parses as one.
        let mut p = CertificateParams::new([vec![role.dns().to_owned()], hosts.to_vec()].concat())?;
        if let Some(name) = agent {
            // The name the controller dials this agent under (identity::agent_server_name).
            p.subject_alt_names
                .push(SanType::DnsName(crate::identity::agent_server_name(name).try_into()?));
            p.subject_alt_names
                .push(SanType::URI(format!("{}{name}", crate::identity::AGENT_URI).try_into()?));
        }
        p.distinguished_name.push(
            DnType::CommonName,
            agent.map_or_else(|| role.dns().to_owned(), |n| format!("{n}.{}", role.dns())),
        );
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let server = matches!(role, CertRole::Agent | CertRole::Controller);
        p.extended_key_usages = if server {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    }

    fn write(dir: &Path, name: &str, text: &str, secret: bool) -> Result<PathBuf, CertError> {
        write_bytes(dir, name, text.as_bytes(), secret)
    }

    fn write_bytes(
        dir: &Path,
        name: &str,
        bytes: &[u8],
        secret: bool,
    ) -> Result<PathBuf, CertError> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let path = dir.join(name);
        let mode = if secret { 0o600 } else { 0o644 };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
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
        let e =
            s.endpoint("--agent", "https://127.0.0.1:7070", AGENT_NAME).unwrap_err().to_string();
        assert!(e.starts_with("--agent:"), "{e}");
        assert!(s.server("127.0.0.1:7070".parse().unwrap()).is_ok());
        assert!(s.server("0.0.0.0:7070".parse().unwrap()).is_err());
        assert!(
            s.server("10.0.0.5:7070".parse().unwrap())
                .unwrap_err()
                .to_string()
                .contains("10.0.0.5:7070")
        );
    }

    #[test]
    fn missing_certificates_say_how_to_make_them() {
        let e = Security::load(Path::new("/nonexistent/tls"), Role::Cli).unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/tls/ca.pem")
                && e.contains("faultline certs init /nonexistent/tls")
                && e.contains("--insecure"),
            "{e}"
        );
    }

    #[cfg(feature = "certgen")]
    #[test]
    fn lab_certificates_load_and_are_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("faultline-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = certgen::init(&dir).unwrap();
        assert_eq!(
            files.len(),
            14,
            "ca, agent, controller, cli and viewer pairs; cli and viewer PKCS#12 bundles and their passwords"
        );
        let password = std::fs::read_to_string(dir.join("cli.p12.password")).unwrap();
        let store = p12_keystore::KeyStore::from_pkcs12(
            &std::fs::read(dir.join("cli.p12")).unwrap(),
            password.trim(),
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .unwrap();
        let (_, chain) = store.private_key_chain().unwrap();
        assert_eq!(chain.certs().len(), 2, "the pair and the CA");
        assert_eq!(
            crate::identity::from_der(chain.certs()[0].as_der()).unwrap().role,
            crate::identity::CertRole::Operator
        );
        assert!(
            p12_keystore::KeyStore::from_pkcs12(
                &std::fs::read(dir.join("cli.p12")).unwrap(),
                "wrong",
                p12_keystore::Pkcs12ImportPolicy::Strict
            )
            .is_err()
        );
        for role in [Role::Agent, Role::Controller, Role::Cli] {
            let s = Security::load(&dir, role).unwrap();
            assert!(s.endpoint("url", "https://10.0.0.5:7070", AGENT_NAME).is_ok());
            assert!(
                s.endpoint("url", "http://10.0.0.5:7070", AGENT_NAME)
                    .unwrap_err()
                    .to_string()
                    .contains("not https://")
            );
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.join("cli-key.pem")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(certgen::init(&dir), Err(certgen::CertError::Exists(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
