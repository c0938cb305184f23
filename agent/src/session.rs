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
