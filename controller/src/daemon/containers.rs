//! Container-targeted faults through the controller: the container names its hosts. Each
//! selected agent is asked which of its containers match; the target's mode then picks
//! among the agents that run one, and each is sent the one container it found, by id.

use faultline_proto::{agent::v1 as apb, controller::v1 as pb};

use super::{Controller, DaemonError, registry::keep};
use crate::targeting::partition;

/// Docker names a container "web", containerd "NAMESPACE/ID"; an id prefix of 4 or more
/// characters names one too (as the agent resolves it).
fn named(name: &str, c: &apb::Container) -> bool {
    let n = name.trim_start_matches('/');
    c.name == n || c.name.rsplit('/').next() == Some(n) || (n.len() >= 4 && c.id.starts_with(n))
}

impl Controller {
    /// (agent, container id) for each agent the target selects whose host runs a
    /// container `wanted` names; one per agent, the mode applied over them.
    pub(super) async fn container_placements(&self, t: &pb::Target, wanted: &apb::ContainerTarget) -> Result<Vec<(String, String)>, DaemonError> {
        let every = pb::Target { mode: pb::Mode::All as i32, count: 0, percent: 0.0, ..t.clone() };
        let agents = self.select(&every)?;
        let calls = agents.iter().filter_map(|n| {
            let mut client = self.lock().agents.get(n)?.client.clone();
            let (n, select) = (n.clone(), wanted.select.clone());
            Some(async move { (n, client.list_containers(apb::ListContainersRequest { select }).await) })
        });
        let (mut found, mut unasked) = (Vec::new(), Vec::new());
        for (agent, answer) in futures_util::future::join_all(calls).await {
            let answer = match answer {
                Ok(a) => a.into_inner(),
                Err(e) => {
                    unasked.push(format!("{agent}: {:?}: {}", e.code(), e.message()));
                    continue;
                }
            };
            let hits: Vec<apb::Container> = answer.containers.into_iter().filter(|c| wanted.name.is_empty() || named(&wanted.name, c)).collect();
            match hits.as_slice() {
                [] => {}
                [one] => found.push((agent, one.id.clone())),
                many => {
                    let names: Vec<&str> = many.iter().map(|c| c.name.as_str()).collect();
                    return Err(DaemonError::invalid(format!(
                        "container: {} containers match on agent {agent} ({}); a fault acts in one container per agent: name it, or add a label",
                        many.len(),
                        names.join(", ")
                    )));
                }
            }
        }
        if found.is_empty() {
            let why = if unasked.is_empty() { String::new() } else { format!(" (not asked: {})", unasked.join("; ")) };
            return Err(DaemonError::not_found(format!(
                "container: none of the {} selected agents ({}) runs a container named {:?} with labels {:?}{why}",
                agents.len(),
                agents.join(", "),
                wanted.name,
                wanted.select
            )));
        }
        let n = keep(t, found.len())?;
        partition::shuffle(&mut found, self.seed());
        found.truncate(n);
        found.sort();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_as_the_agent_resolves_them() {
        let c = |name: &str, id: &str| apb::Container { name: name.into(), id: id.into(), ..Default::default() };
        assert!(named("web", &c("web", "abcdef12")));
        assert!(named("/web", &c("web", "abcdef12")));
        assert!(named("ctr77", &c("flt77/ctr77", "ctr77")));
        assert!(named("abcd", &c("web", "abcdef12")));
        assert!(!named("abc", &c("web", "abcdef12")), "a 3-character prefix names nothing");
        assert!(!named("we", &c("web", "abcdef12")));
    }
}
