//! The agent's session with a controller: register, then follow the controller's
//! heartbeats; when the stream ends, register again. Faults never depend on it: their
//! leases end them when the controller stops renewing.

use std::{collections::HashMap, time::Duration};

use faultline_proto::{
    controller::v1::{self as pb, controller_service_client::ControllerServiceClient},
    transport::{CONTROLLER_NAME, Security},
};
use tracing::{info, warn};

pub struct Registration {
    pub controller: String,
    pub name: String,
    pub url: String,
    pub labels: HashMap<String, String>,
    pub security: Security,
}

/// Pause between attempts: short, because a controller restart should find its agents fast.
const RETRY: Duration = Duration::from_secs(1);

impl Registration {
    pub async fn keep(self) {
        loop {
            match self.session().await {
                Ok(()) => info!(
                    controller = self.controller,
                    "controller session ended; registering again"
                ),
                Err(e) => warn!(controller = self.controller, "controller session: {e}"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn session(&self) -> Result<(), String> {
        let endpoint = self
            .security
            .endpoint("--controller", &self.controller, CONTROLLER_NAME)
            .map_err(|e| e.to_string())?;
        let mut c = ControllerServiceClient::new(
            endpoint
                .connect()
                .await
                .map_err(|e| format!("connecting: {e}: {}", source_chain(&e)))?,
        );
        let req = pb::RegisterRequest {
            name: self.name.clone(),
            url: self.url.clone(),
            labels: self.labels.clone(),
        };
        let mut stream =
            c.register(req).await.map_err(|e| faultline_proto::status_in_words(&e))?.into_inner();
        info!(controller = self.controller, name = self.name, "registered");
        // A controller that stops heartbeating is gone even if the TCP connection is not:
        // three missed heartbeats end the session (10 s until the first one says its interval).
        let mut patience = Duration::from_secs(10);
        loop {
            match tokio::time::timeout(patience, stream.message()).await {
                Ok(Ok(Some(hb))) => patience = Duration::from_millis(hb.interval_ms.max(100) * 3),
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(faultline_proto::status_in_words(&e)),
                Err(_) => return Err("no heartbeat for 10 s".into()),
            }
        }
    }
}

/// The causes under a transport error (a TLS refusal hides two levels down).
pub fn source_chain(e: &dyn std::error::Error) -> String {
    faultline_proto::error_chain(e).join(": ")
}

/// The longest service-account token read (they are ~1 KiB; a JWT has no business near this).
const MAX_TOKEN: u64 = 64 * 1024;

/// How long an agent keeps asking a controller that is not up yet: a `DaemonSet`'s pods
/// often start before the controller's.
const ENROLL_PATIENCE: Duration = Duration::from_mins(2);
/// One `Enroll` call, at most.
const ENROLL_CALL: Duration = Duration::from_secs(30);

/// Gets this agent's own certificate from the controller (`Enroll`): `bootstrap` holds the
/// shared agent certificate, which names no agent, and `token_file` the pod's projected
/// service-account token. Returns the name the controller bound (the node's) and the
/// security to serve and register with. Waits for a controller that is not reachable yet;
/// a refusal ends at once, with the controller's reason.
pub async fn enroll(
    controller: &str,
    bootstrap: &Security,
    token_file: &std::path::Path,
) -> Result<(String, Security), String> {
    use std::io::Read;
    let mut token = String::new();
    std::fs::File::open(token_file)
        .and_then(|f| f.take(MAX_TOKEN + 1).read_to_string(&mut token))
        .map_err(|e| format!("--enroll-token-file {}: {e}", token_file.display()))?;
    if token.len() as u64 > MAX_TOKEN {
        return Err(format!(
            "--enroll-token-file {}: longer than {MAX_TOKEN} bytes",
            token_file.display()
        ));
    }
    // A call that hangs (a wedged controller) is given up and asked again, never waited
    // on for good; the controller's own calls to the API server end within 10 s each.
    let endpoint = bootstrap
        .endpoint("--controller", controller, CONTROLLER_NAME)
        .map_err(|e| e.to_string())?
        .timeout(ENROLL_CALL);
    let give_up = tokio::time::Instant::now() + ENROLL_PATIENCE;
    loop {
        let answer = match endpoint.connect().await {
            Ok(ch) => ControllerServiceClient::new(ch)
                .enroll(pb::EnrollRequest { token: token.trim().to_owned() })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| {
                    let again = matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                    );
                    (again, faultline_proto::status_in_words(&s))
                }),
            Err(e) => Err((true, format!("connecting: {e}: {}", source_chain(&e)))),
        };
        match answer {
            Ok(r) => {
                let security = bootstrap
                    .with_identity(r.cert_pem.as_bytes(), r.key_pem.as_bytes())
                    .map_err(|e| format!("the controller's certificate for {}: {e}", r.name))?;
                info!(controller, name = r.name, "enrolled: certificate bound to this node's name");
                return Ok((r.name, security));
            }
            Err((true, e)) if tokio::time::Instant::now() < give_up => {
                warn!(controller, "enrolling: {e}; trying again");
                tokio::time::sleep(RETRY * 2).await;
            }
            Err((_, e)) => return Err(format!("enrolling with {controller}: {e}")),
        }
    }
}
