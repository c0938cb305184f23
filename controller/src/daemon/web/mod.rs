//! The Web API: REST/JSON over the controller's operations (ops.rs), its OpenAPI 3.1
//! description at /api/openapi.json and Swagger UI at /api/docs, served on a listener of
//! its own (`web_listen`). Translation only, as grpc.rs: a request becomes an operation's
//! input, its answer a JSON view, a `DaemonError` a status and a JSON error naming the
//! field. Closed as gRPC is: HTTPS with the controller's certificate when it runs TLS
//! (a client certificate from its CA, or a bearer token, proves a role), plaintext only
//! on loopback, and then a token is the only credential.

mod api;
pub mod auth;
mod console;
pub mod views;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Request},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Controller, DaemonError, ErrorKind};

/// Requests larger than this are refused (413): a fault or partition request is small.
const MAX_BODY: usize = 64 * 1024;
/// How long a `client_request_id` is remembered.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_mins(10);
const MAX_REMEMBERED: usize = 10_000;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The Web API's state: the controller, the tokens, and the requests it remembers.
pub struct Web {
    ctl: Controller,
    runs: Arc<super::runs::Runs>,
    tokens: auth::Tokens,
    /// Host names the Web API answers to besides IP addresses and localhost (`web_hosts`).
    hosts: Vec<String>,
    /// The controller's own listening addresses: no traffic is sent there.
    own: Vec<std::net::SocketAddr>,
    remembered: Mutex<BTreeMap<String, Remembered>>,
}

/// A request made with a `client_request_id`.
struct Remembered {
    at: Instant,
    /// The request as first made (a retry must be the same request).
    request: String,
    /// None while the first is in flight.
    answer: Option<views::FaultView>,
}

/// An error as the Web API answers it.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `not_found`, `already_exists`, `permission_denied`, `unauthenticated`,
    /// `failed_precondition`, `aborted`, `resource_exhausted`, `unavailable`, `internal`, ...
    pub code: String,
    /// The request field the error concerns ("" when it is not one field's).
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }
}

/// The same errors the gRPC service maps to status codes, mapped to HTTP as Google's API
/// design maps those codes.
impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        let (status, code) = match e.kind {
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid_argument"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "already_exists"),
            ErrorKind::Denied => (StatusCode::FORBIDDEN, "permission_denied"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Precondition => (StatusCode::BAD_REQUEST, "failed_precondition"),
            ErrorKind::Aborted => (StatusCode::CONFLICT, "aborted"),
            ErrorKind::Exhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
            ErrorKind::Lagged => (StatusCode::GONE, "lagged"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self { status, code, message: e.message }
    }
}

/// The field a message names (`spec.lease_ms: required` names `spec.lease_ms`).
fn field_of(message: &str) -> String {
    message
        .split_once(": ")
        .map(|(f, _)| f)
        .filter(|f| {
            !f.is_empty()
                && f.len() <= 64
                && f.bytes().all(|b| b.is_ascii_alphanumeric() || b"._[]-".contains(&b))
        })
        .unwrap_or_default()
        .to_owned()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                field: field_of(&self.message),
                message: self.message,
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"faultline\""),
            );
        }
        r
    }
}

/// A JSON body, refused as the API's own errors say (400, 413, 415) instead of axum's
/// plain-text rejections.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::JsonRejection;
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_argument",
                "send the body as application/json",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_argument",
                format!("body: at most {MAX_BODY} bytes"),
            )),
            Err(e) => Err(ApiError::invalid(format!("body: {}", e.body_text()))),
        }
    }
}

/// Query parameters, refused as the API's own errors say.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))
    }
}

impl Web {
    pub fn new(
        ctl: Controller,
        tokens: auth::Tokens,
        runs: Arc<super::runs::Runs>,
        hosts: Vec<String>,
        own: Vec<std::net::SocketAddr>,
    ) -> Arc<Self> {
        Arc::new(Self { ctl, runs, tokens, hosts, own, remembered: Mutex::new(BTreeMap::new()) })
    }

    /// A request carrying `id`: the first request's answer when this is a retry of it
    /// (`Ok(Some)`), `Ok(None)` when it is new (and now remembered as in flight).
    fn recall(&self, id: &str, request: &str) -> Result<Option<views::FaultView>, ApiError> {
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid("client_request_id: 1 to 128 printable characters"));
        }
        let mut m = self.remembered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.retain(|_, r| r.at.elapsed() < IDEMPOTENCY_WINDOW);
        if let Some(r) = m.get(id) {
            if r.request != request {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "already_exists",
                    "client_request_id: used for another request in the last 10 minutes",
                ));
            }
            return match &r.answer {
                Some(a) => Ok(Some(a.clone())),
                None => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "aborted",
                    "client_request_id: the first request with this id is still being applied; retry",
                )),
            };
        }
        if m.len() >= MAX_REMEMBERED {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "resource_exhausted",
                format!(
                    "client_request_id: {MAX_REMEMBERED} requests remembered; retry later or send none"
                ),
            ));
        }
        m.insert(
            id.to_owned(),
            Remembered { at: Instant::now(), request: request.to_owned(), answer: None },
        );
        Ok(None)
    }

    /// Keeps the answer to `id`'s request, or forgets a request that failed (a retry
    /// then tries again).
    fn remember(&self, id: &str, answer: Option<&views::FaultView>) {
        let mut m = self.remembered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match answer {
            Some(a) => {
                if let Some(r) = m.get_mut(id) {
                    r.answer = Some(a.clone());
                }
            }
            None => {
                m.remove(id);
            }
        }
    }
}

/// The TLS server configuration of the Web API: the controller's certificate, and client
/// certificates from its CA accepted (not required: a token is the other way in).
pub fn tls_config(dir: &Path) -> anyhow::Result<Arc<tokio_rustls::rustls::ServerConfig>> {
    use anyhow::Context;
    use tokio_rustls::rustls::{
        self, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let file = |name: &str| dir.join(name);
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(file("ca.pem"))
        .with_context(|| format!("{}", file("ca.pem").display()))?
    {
        roots.add(c.context("ca.pem")?).context("ca.pem")?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file("controller.pem"))
        .with_context(|| format!("{}", file("controller.pem").display()))?
        .collect::<Result<_, _>>()
        .context("controller.pem")?;
    let key = PrivateKeyDer::from_pem_file(file("controller-key.pem"))
        .with_context(|| format!("{}", file("controller-key.pem").display()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("client certificate verifier")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("controller.pem with controller-key.pem")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Binds `listen` and serves the Web API there for the process's life: each connection
/// through the controller's bounded listener, TLS when `tls` is given (plaintext only on
/// loopback unless `plaintext_anywhere`, the operator's explicit choice).
pub async fn start(
    web: Arc<Web>,
    listen: SocketAddr,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    plaintext_anywhere: bool,
) -> anyhow::Result<()> {
    if tls.is_none() && !listen.ip().is_loopback() && !plaintext_anywhere {
        anyhow::bail!(
            "web_listen {listen}: plaintext (--insecure) only on a loopback address (or say --web-plaintext)"
        );
    }
    let incoming = faultline_proto::listener::bind(
        listen,
        faultline_proto::listener::Limits::controller().within(30),
    )
    .await
    .map_err(|e| anyhow::anyhow!("binding web_listen {listen}: {e}"))?;
    let app = api::router(web);
    tracing::info!(%listen, tls = tls.is_some(), "Web API ready (docs at /api/docs)");
    tokio::spawn(accept(incoming, app, tls));
    Ok(())
}

async fn accept(
    incoming: impl futures_util::Stream<Item = std::io::Result<faultline_proto::listener::Conn>>,
    app: axum::Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) {
    use futures_util::StreamExt;
    let mut incoming = std::pin::pin!(incoming);
    while let Some(conn) = incoming.next().await {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("web: accepting: {e}");
                continue;
            }
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            // HTTP/1.1 only (TLS offers no other in ALPN): an HTTP/2 preface and then
            // silence would otherwise hold the connection with no request to time out.
            let mut http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http1_only();
            http.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let served = if let Some(cfg) = tls {
                let Ok(Ok(stream)) = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    tokio_rustls::TlsAcceptor::from(cfg).accept(conn),
                )
                .await
                else {
                    return;
                };
                // The role a client certificate carries (the CA checked it in the handshake).
                let role = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| faultline_proto::identity::from_der(c.as_ref()).ok())
                    .map(|c| c.role);
                let svc = hyper_util::service::TowerToHyperService::new(
                    app.layer(axum::Extension(auth::PeerCert(role))),
                );
                http.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc).await
            } else {
                let svc = hyper_util::service::TowerToHyperService::new(
                    app.layer(axum::Extension(auth::PeerCert(None))),
                );
                http.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(conn), svc).await
            };
            if let Err(e) = served {
                tracing::debug!("web connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_field() {
        assert_eq!(field_of("spec.lease_ms: required and > 0"), "spec.lease_ms");
        assert_eq!(field_of("groups: \"x\" names none"), "groups");
        assert_eq!(field_of("agent h1 (host a) lacks netem: ..."), "");
        assert_eq!(field_of("no colon here"), "");
    }
}
