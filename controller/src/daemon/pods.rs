//! Pods through the controller: a pod names its nodes. Each selected agent is asked for
//! its node's ready pods the target matches (through the node's CRI runtime); a fault goes
//! to the agents whose node runs one (the target's mode picks among them), each sent the
//! one pod it found, by namespace and name.

use std::collections::BTreeMap;

use faultline_proto::{agent::v1 as apb, controller::v1 as pb};

use super::{Controller, DaemonError, containers::Member, registry::keep};
use crate::targeting::partition;

impl Controller {
    /// Every ready pod in `namespace` ("": all) meeting `select` on `agents`' nodes, all
    /// asked at once; an agent (or runtime) that could not be asked is listed with why.
    pub(super) async fn agent_pods(
        &self,
        agents: &[String],
        namespace: &str,
        select: &[String],
    ) -> Result<(Vec<(String, apb::Pod)>, Vec<String>), DaemonError> {
        let answers = self
            .ask_each(agents, |mut client| {
                let request = apb::ListPodsRequest {
                    namespace: namespace.to_owned(),
                    select: select.to_vec(),
                };
                async move { client.list_pods(request).await }
            })
            .await;
        let (mut found, mut unasked) = (Vec::new(), Vec::new());
        for (agent, answer) in answers {
            match answer {
                Ok(a) => {
                    let a = a.into_inner();
                    unasked.extend(a.unreachable.into_iter().map(|u| format!("{agent}: {u}")));
                    found.extend(a.pods.into_iter().map(|p| (agent.clone(), p)));
                }
                // A bad selector is the caller's, the same on every agent: said once, as theirs.
                Err(e) if e.code() == tonic::Code::InvalidArgument => {
                    return Err(DaemonError::invalid(format!("pod.{}", e.message())));
                }
                Err(e) => unasked.push(format!("{agent}: {}", super::fanout::said(&e))),
            }
        }
        Ok((found, unasked))
    }

    /// `pods list` through the controller.
    pub(super) async fn pod_list(
        &self,
        r: pb::ListPodsRequest,
    ) -> Result<pb::ListPodsResponse, DaemonError> {
        let agents = self.select(&pb::Target { selector: r.selector, ..Default::default() })?;
        let (found, unreachable) = self.agent_pods(&agents, &r.namespace, &r.select).await?;
        Ok(pb::ListPodsResponse {
            pods: found
                .into_iter()
                .map(|(agent, p)| pb::AgentPod { agent, pod: Some(p) })
                .collect(),
            unreachable,
        })
    }

    /// (agent, namespace, name) for each agent the target selects whose node runs a pod
    /// `wanted` names; one per agent, the mode applied over them.
    pub(super) async fn pod_placements(
        &self,
        t: &pb::Target,
        wanted: &apb::PodTarget,
    ) -> Result<Vec<(String, String, String)>, DaemonError> {
        let every = pb::Target { mode: pb::Mode::All as i32, count: 0, percent: 0.0, ..t.clone() };
        let agents = self.select(&every)?;
        let (listed, unasked) = self.agent_pods(&agents, &wanted.namespace, &wanted.select).await?;
        let mut by_agent: BTreeMap<String, Vec<apb::Pod>> = BTreeMap::new();
        for (agent, p) in
            listed.into_iter().filter(|(_, p)| wanted.name.is_empty() || p.name == wanted.name)
        {
            by_agent.entry(agent).or_default().push(p);
        }
        let mut found = Vec::new();
        for (agent, hits) in by_agent {
            if let [one] = hits.as_slice() {
                found.push((agent, one.namespace.clone(), one.name.clone()));
                continue;
            }
            let names: Vec<String> =
                hits.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
            return Err(DaemonError::invalid(format!(
                "pod.select: {} ready pods match on agent {agent} ({}); a fault acts in one pod per node: name it, or add a requirement",
                hits.len(),
                names.join(", ")
            )));
        }
        if found.is_empty() {
            let why = if unasked.is_empty() {
                String::new()
            } else {
                format!(" (not asked: {})", unasked.join("; "))
            };
            let ns = if wanted.namespace.is_empty() {
                "any namespace"
            } else {
                wanted.namespace.as_str()
            };
            return Err(DaemonError::not_found(format!(
                "pod: none of the {} selected agents ({}) runs a ready pod {} in {ns} meeting {:?}{why}",
                agents.len(),
                agents.join(", "),
                faultline_proto::quote(&wanted.name),
                wanted.select
            )));
        }
        let n = keep(t, found.len())?;
        partition::shuffle(&mut found, self.seed());
        found.truncate(n);
        found.sort();
        Ok(found)
    }

    /// The pods a partition cuts: the ready pods on `agents`' nodes in `namespace` ("":
    /// every namespace) meeting `select`, each once (keyed NAMESPACE/NAME), as members
    /// whose agent acts in the pod's own network namespace.
    pub(super) async fn pod_members(
        &self,
        agents: &[String],
        namespace: &str,
        select: &[String],
    ) -> Result<Vec<Member>, DaemonError> {
        let (listed, unasked) = self.agent_pods(agents, namespace, select).await?;
        let mut seen = std::collections::BTreeSet::new();
        let members: Vec<Member> = listed
            .into_iter()
            .filter(|(_, p)| seen.insert(p.uid.clone()))
            .map(|(agent, p)| {
                let key = format!("{}/{}", p.namespace, p.name);
                Member {
                    container: apb::Container {
                        id: p.sandbox_id.clone(),
                        name: key.clone(),
                        runtime: "cri".into(),
                        pid: p.pid,
                        labels: p.labels.clone(),
                        netns_inode: 0,
                        addresses: p.addresses.clone(),
                    },
                    pod: Some((p.namespace, p.name)),
                    key,
                    agent,
                }
            })
            .collect();
        if members.len() < 2 {
            let why = if unasked.is_empty() {
                String::new()
            } else {
                format!(" (not asked: {})", unasked.join("; "))
            };
            return Err(DaemonError::invalid(format!(
                "pod_select: a partition needs at least 2 pods, {} found meeting {select:?}{why}",
                members.len()
            )));
        }
        Ok(members)
    }
}
