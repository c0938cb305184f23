//! Agents on Kubernetes nodes enrol: a `DaemonSet` gives every agent the same bootstrap
//! certificate, which names no agent and so cannot register; each agent then proves which
//! node it runs on with its pod's projected service-account token (audience
//! [`AUDIENCE`]), which the controller checks with the cluster's API server
//! (`TokenReview`), and gets a certificate bound to that node's name. An agent can then
//! register only as its own node (Register checks the name its certificate carries), so a
//! compromised agent cannot take over another node's name, or its faults.

use std::{path::PathBuf, sync::Arc};

use faultline_proto::controller::v1 as pb;
use serde_json::{Value, json};

use super::{Controller, error::DaemonError};
use crate::kube::{KubeApi, KubeError, is_dns_subdomain};

/// The audience the agents' projected tokens are minted for: a token for anything else
/// (the API server's own) is refused, and a faultline token is worth nothing elsewhere.
pub const AUDIENCE: &str = "faultline";
/// A service-account token is ~1 KiB.
const MAX_TOKEN: usize = 16 * 1024;
/// Enrolments under way at once; more are told to try again (each is a call to the API
/// server and a key generation).
const AT_ONCE: usize = 8;

const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

pub struct Enroller {
    api: KubeApi,
    namespace: String,
    account: String,
    /// ca.pem and ca-key.pem: the controller issues the agents' certificates.
    tls_dir: PathBuf,
    busy: Arc<tokio::sync::Semaphore>,
}

impl Enroller {
    /// `agents`: `NAMESPACE:SERVICE_ACCOUNT`, the agents' service account (only its tokens
    /// enrol).
    pub fn new(
        agents: &str,
        api: Option<&str>,
        credentials: Option<PathBuf>,
        tls_dir: PathBuf,
    ) -> Result<Self, String> {
        let (namespace, account) = agents.split_once(':').ok_or_else(|| {
            format!("enroll_kubernetes: {agents:?} is not NAMESPACE:SERVICE_ACCOUNT")
        })?;
        for (what, v) in [("namespace", namespace), ("service account", account)] {
            if !is_dns_subdomain(v) {
                return Err(format!(
                    "enroll_kubernetes: the {what} {v:?} is not a Kubernetes name"
                ));
            }
        }
        // Checked at start, not at the first agent's enrolment.
        for f in ["ca.pem", "ca-key.pem"] {
            if !tls_dir.join(f).is_file() {
                return Err(format!(
                    "enroll_kubernetes: {} is missing: the controller issues the agents' certificates from the CA",
                    tls_dir.join(f).display()
                ));
            }
        }
        let credentials = credentials.unwrap_or_else(|| PathBuf::from(crate::kube::CREDENTIALS));
        Ok(Self {
            api: KubeApi::new(api, credentials)?,
            namespace: namespace.to_owned(),
            account: account.to_owned(),
            tls_dir,
            busy: Arc::new(tokio::sync::Semaphore::new(AT_ONCE)),
        })
    }

    /// The node `token` proves, and a certificate and key bound to its name.
    pub async fn enroll(&self, token: &str) -> Result<(String, String, String), DaemonError> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(DaemonError::invalid(format!(
                "token: 1 to {MAX_TOKEN} bytes, the pod's projected service-account token"
            )));
        }
        let _permit = self.busy.clone().try_acquire_owned().map_err(|_| {
            DaemonError::unavailable(format!("{AT_ONCE} enrolments under way; try again"))
        })?;
        let review = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [AUDIENCE]},
        });
        let answer = self
            .api
            .call(hyper::Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews", Some(&review))
            .await
            .map_err(|e| api_error("TokenReview", &e))?;
        let who = reviewed(&answer, &self.namespace, &self.account)
            .map_err(|e| DaemonError::denied(format!("token: {e}")))?;
        let node = match who {
            Proven::Node(n) => n,
            // Clusters before 1.30 put no node in the token: its pod says where it runs.
            Proven::Pod { name, uid } => {
                let path = format!("/api/v1/namespaces/{}/pods/{name}", self.namespace);
                let pod = self
                    .api
                    .call(hyper::Method::GET, &path, None)
                    .await
                    .map_err(|e| api_error(&format!("pod {name}"), &e))?;
                node_of(&pod, &uid).map_err(|e| DaemonError::denied(format!("pod {name}: {e}")))?
            }
        };
        faultline_proto::identity::check_agent_name(&node).map_err(|e| {
            DaemonError::precondition(format!(
                "node name: {e}; an enrolled agent is named after its node, and agent names are DNS labels"
            ))
        })?;
        let dir = self.tls_dir.clone();
        let name = node.clone();
        let (cert, key) = tokio::task::spawn_blocking(move || {
            faultline_proto::transport::certgen::agent_pair(&dir, &name)
        })
        .await
        .map_err(|e| DaemonError::internal(format!("issuing: {e}")))?
        .map_err(|e| DaemonError::internal(format!("issuing: {e}")))?;
        Ok((node, cert, key))
    }
}

/// The API server unreachable is worth another try (the agent waits); its "no" is not
/// (e.g. the controller's own credential refused: the agent is told why and stops).
fn api_error(what: &str, e: &KubeError) -> DaemonError {
    let message = format!("the API server's {what}: {e}");
    if e.answered { DaemonError::precondition(message) } else { DaemonError::unavailable(message) }
}

/// What a token review proved: the node (clusters from 1.30 bind it into the token), or
/// the pod, whose node is then read.
#[derive(Debug, PartialEq, Eq)]
enum Proven {
    Node(String),
    Pod { name: String, uid: String },
}

/// Reads a `TokenReview`'s answer: authenticated, for [`AUDIENCE`], as the agents'
/// service account, bound to a pod.
fn reviewed(review: &Value, namespace: &str, account: &str) -> Result<Proven, String> {
    let status = &review["status"];
    if status["authenticated"].as_bool() != Some(true) {
        let why = status["error"].as_str().filter(|e| !e.is_empty()).unwrap_or("no reason given");
        return Err(format!("the API server does not authenticate it ({why})"));
    }
    let audiences = status["audiences"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !audiences.iter().any(|a| a.as_str() == Some(AUDIENCE)) {
        return Err(format!(
            "not minted for the audience {AUDIENCE:?} (a projected token with `audience: {AUDIENCE}`)"
        ));
    }
    let user = &status["user"];
    let want = format!("system:serviceaccount:{namespace}:{account}");
    let username = user["username"].as_str().unwrap_or_default();
    if username != want {
        return Err(format!("it is {username:?}'s; only {want:?} enrols agents"));
    }
    let extra = |key: &str| {
        user["extra"][key]
            .as_array()
            .and_then(|v| v.first())
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if let Some(node) = extra(NODE_NAME) {
        return Ok(Proven::Node(node));
    }
    match (extra(POD_NAME), extra(POD_UID)) {
        (Some(name), Some(uid)) if is_dns_subdomain(&name) => Ok(Proven::Pod { name, uid }),
        _ => Err("it is bound to no pod (a projected token, not a long-lived secret)".into()),
    }
}

/// The node a pod runs on, if it is the pod the token was minted for (same UID: not a
/// later pod of the same name).
fn node_of(pod: &Value, uid: &str) -> Result<String, String> {
    if pod["metadata"]["uid"].as_str() != Some(uid) {
        return Err("not the pod the token was minted for (it was replaced)".into());
    }
    pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "scheduled on no node yet".into())
}

impl Controller {
    pub async fn enroll_agent(
        &self,
        r: pb::EnrollRequest,
    ) -> Result<pb::EnrollResponse, DaemonError> {
        let Some(enroller) = &self.enroller else {
            return Err(DaemonError::precondition(
                "enrolment is off: a controller enrols agents with --enroll-kubernetes NAMESPACE:SERVICE_ACCOUNT",
            ));
        };
        match enroller.enroll(&r.token).await {
            Ok((name, cert_pem, key_pem)) => {
                self.event(
                    pb::EventKind::AgentEnrolled,
                    "",
                    std::slice::from_ref(&name),
                    format!("{name}: certificate bound to the node's name"),
                );
                Ok(pb::EnrollResponse { name, cert_pem, key_pem })
            }
            Err(e) => {
                self.event(pb::EventKind::AgentEnrollRefused, "", &[], e.message.clone());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(extra: &Value) -> Value {
        json!({"status": {"authenticated": true, "audiences": ["faultline"],
            "user": {"username": "system:serviceaccount:faultline:faultline-agent", "extra": extra}}})
    }

    #[test]
    fn a_review_proves_the_node_or_the_pod() {
        let node = review(&json!({NODE_NAME: ["node-a"], POD_NAME: ["agent-x"], POD_UID: ["u1"]}));
        assert_eq!(
            reviewed(&node, "faultline", "faultline-agent"),
            Ok(Proven::Node("node-a".into()))
        );
        let pod = review(&json!({POD_NAME: ["agent-x"], POD_UID: ["u1"]}));
        assert_eq!(
            reviewed(&pod, "faultline", "faultline-agent"),
            Ok(Proven::Pod { name: "agent-x".into(), uid: "u1".into() })
        );
    }

    #[test]
    fn a_review_refuses_what_does_not_prove_an_agent_pod() {
        let ok = review(&json!({NODE_NAME: ["node-a"]}));
        // Another service account, or another namespace.
        assert!(reviewed(&ok, "faultline", "other").unwrap_err().contains("only"));
        assert!(reviewed(&ok, "default", "faultline-agent").is_err());
        // Not authenticated, with the API server's reason.
        let mut no = ok.clone();
        no["status"]["authenticated"] = json!(false);
        no["status"]["error"] = json!("token expired");
        assert!(
            reviewed(&no, "faultline", "faultline-agent").unwrap_err().contains("token expired")
        );
        // Another audience (the API server's own token).
        let mut aud = ok.clone();
        aud["status"]["audiences"] = json!(["https://kubernetes.default.svc"]);
        assert!(reviewed(&aud, "faultline", "faultline-agent").unwrap_err().contains("audience"));
        // A legacy secret token: bound to no pod.
        let legacy = review(&json!({}));
        assert!(reviewed(&legacy, "faultline", "faultline-agent").unwrap_err().contains("no pod"));
        // Missing fields are refusals, never a pass.
        assert!(reviewed(&json!({}), "faultline", "faultline-agent").is_err());
    }

    #[test]
    fn a_pod_names_its_node_only_when_it_is_the_tokens_pod() {
        let pod = json!({"metadata": {"uid": "u1"}, "spec": {"nodeName": "node-a"}});
        assert_eq!(node_of(&pod, "u1"), Ok("node-a".into()));
        assert!(node_of(&pod, "u2").unwrap_err().contains("replaced"));
        let pending = json!({"metadata": {"uid": "u1"}, "spec": {}});
        assert!(node_of(&pending, "u1").is_err());
    }
}
