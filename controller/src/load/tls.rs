//! TLS for https:// load targets (rustls, ring): the server is verified against the
//! system's CA bundle or --cacert, under the URL's IP or --tls-server-name; --tls-no-verify
//! accepts any certificate (a self-signed test service), and says so in the summary.

use std::{
    io,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
    },
};

/// Where Debian (and most distributions) keep the system's trusted CAs as one PEM file.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A CA bundle is a few hundred KiB (Debian's is ~220 KiB).
const MAX_CA_FILE: u64 = 8 * 1024 * 1024;

/// `--cacert` given as the PEM text itself rather than a file's path.
pub fn is_inline_pem(cacert: &Path) -> bool {
    cacert.as_os_str().as_encoded_bytes().trim_ascii_start().starts_with(b"-----BEGIN ")
}

#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the CA(s) to trust instead of the system's.
    pub cacert: Option<std::path::PathBuf>,
    pub no_verify: bool,
    /// The name the certificate must carry (default: the URL's IP).
    pub server_name: Option<String>,
}

#[derive(Clone)]
pub struct Tls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.name)
    }
}

impl Tls {
    /// `alpn`: "h2" or "http/1.1", as the server must agree to.
    pub fn new(opts: &TlsOptions, ip: std::net::IpAddr, alpn: &str) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let mut config = if opts.no_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let file = opts.cacert.as_deref().unwrap_or(Path::new(SYSTEM_BUNDLE));
            let field = if opts.cacert.is_some() { "--cacert" } else { "the system CA bundle" };
            // Inline PEM text (what a scenario sent to the controller carries), or a file.
            let (pem, shown) = if is_inline_pem(file) {
                (file.as_os_str().as_encoded_bytes().to_vec(), "the PEM text".to_owned())
            } else {
                (crate::localfile::read(file, MAX_CA_FILE, field)?, file.display().to_string())
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{field}: {shown}: {e}"))?;
                roots.add(cert).map_err(|e| format!("{field}: {shown}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("{field}: {shown}: no certificates in it"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let name = match &opts.server_name {
            Some(n) => ServerName::try_from(n.clone())
                .map_err(|e| format!("--tls-server-name: {n:?}: {e}"))?,
            None => ServerName::IpAddress(ip.into()),
        };
        Ok(Self { connector: TlsConnector::from(Arc::new(config)), name })
    }
}

/// --tls-no-verify: signatures are still checked (the handshake is real TLS), the chain
/// and name are not.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection to the target, plain or TLS: one type for the HTTP/1.1 client.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
