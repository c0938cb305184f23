//! Containers through the controller: the container names its hosts. Each selected agent
//! is asked which of its containers match; a fault goes to the agents running one (the
//! target's mode picks among them), each sent the one container it found, by id; a
//! partition can cut containers from each other by their own addresses.

use std::collections::{BTreeMap, BTreeSet};

use faultline_proto::{
    agent::v1::{self as apb, agent_service_client::AgentServiceClient},
    controller::v1 as pb,
};
use tonic::transport::Channel;

use super::{Controller, DaemonError, registry::keep};
use crate::targeting::partition;

/// Compose names a container after its project and service ("shop-redis-1"); users name
/// the service ("redis").
const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// Docker names a container "web", containerd "NAMESPACE/ID"; an id prefix of 4 or more
/// characters names one too (as the agent resolves it).
fn named(name: &str, c: &apb::Container) -> bool {
    let n = name.trim_start_matches('/');
    c.name == n || c.name.rsplit('/').next() == Some(n) || (n.len() >= 4 && c.id.starts_with(n))
}

/// A fault's or partition's word for a container: its name, id prefix, or compose service.
fn called(word: &str, c: &apb::Container) -> bool {
    named(word, c) || c.labels.get(COMPOSE_SERVICE).is_some_and(|s| s == word)
}

/// A container taking part in a partition.
pub(super) struct Member {
    /// Its name in the cut ("web"; "AGENT/web" when two hosts each run a "web"; a pod's
    /// "NAMESPACE/NAME").
    pub key: String,
    pub agent: String,
    pub container: apb::Container,
    /// A Kubernetes pod (namespace, name), as its agent is sent it; `None`: a container.
    pub pod: Option<(String, String)>,
}

impl Member {
    /// Its addresses as the single hosts a peer list takes ("10.0.0.5/32").
    pub fn peers(&self) -> Vec<String> {
        self.container
            .addresses
            .iter()
            .filter_map(|a| {
                partition::host_address(&format!("{a}/{}", if a.contains(':') { 128 } else { 32 }))
            })
            .collect()
    }
}

impl Controller {
    /// Every running container carrying `select` on `agents`' hosts, all asked at once;
    /// an agent (or runtime) that could not be asked is listed with the reason.
    pub(super) async fn agent_containers(
        &self,
        agents: &[String],
        select: &[String],
    ) -> (Vec<(String, apb::Container)>, Vec<String>) {
        let answers = self
            .ask_each(agents, |mut client| {
                let select = select.to_vec();
                async move { client.list_containers(apb::ListContainersRequest { select }).await }
            })
            .await;
        let (mut found, mut unasked) = (Vec::new(), Vec::new());
        for (agent, answer) in answers {
            match answer {
                Ok(a) => {
                    let a = a.into_inner();
                    unasked.extend(a.unreachable.into_iter().map(|u| format!("{agent}: {u}")));
                    found.extend(a.containers.into_iter().map(|c| (agent.clone(), c)));
                }
                Err(e) => unasked.push(format!("{agent}: {}", super::fanout::said(&e))),
            }
        }
        (found, unasked)
    }

    /// `call` made on each of `agents` (those the registry knows) at once: each agent's
    /// answer, by name.
    pub(super) async fn ask_each<T, Fut>(
        &self,
        agents: &[String],
        call: impl Fn(AgentServiceClient<Channel>) -> Fut,
    ) -> Vec<(String, Result<tonic::Response<T>, tonic::Status>)>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let calls = agents.iter().filter_map(|n| {
            let client = self.lock().agents.get(n)?.client.clone();
            let (n, answer) = (n.clone(), call(client));
            Some(async move { (n, answer.await) })
        });
        futures_util::future::join_all(calls).await
    }

    /// `containers list` through the controller.
    pub(super) async fn container_list(
        &self,
        r: pb::ListContainersRequest,
    ) -> Result<pb::ListContainersResponse, DaemonError> {
        let agents = self.select(&pb::Target { selector: r.selector, ..Default::default() })?;
        let (found, unreachable) = self.agent_containers(&agents, &r.select).await;
        Ok(pb::ListContainersResponse {
            containers: found
                .into_iter()
                .map(|(agent, c)| pb::AgentContainer { agent, container: Some(c) })
                .collect(),
            unreachable,
        })
    }

    /// (agent, container id, container name) for each agent the target selects whose host runs a
    /// container `wanted` names; one per agent, the mode applied over them.
    pub(super) async fn container_placements(
        &self,
        t: &pb::Target,
        wanted: &apb::ContainerTarget,
    ) -> Result<Vec<(String, String, String)>, DaemonError> {
        let every = pb::Target { mode: pb::Mode::All as i32, count: 0, percent: 0.0, ..t.clone() };
        let agents = self.select(&every)?;
        let (listed, unasked) = self.agent_containers(&agents, &wanted.select).await;
        let mut by_agent: BTreeMap<String, Vec<apb::Container>> = BTreeMap::new();
        for (agent, c) in
            listed.into_iter().filter(|(_, c)| wanted.name.is_empty() || called(&wanted.name, c))
        {
            by_agent.entry(agent).or_default().push(c);
        }
        let mut found = Vec::new();
        for (agent, hits) in by_agent {
            if let [one] = hits.as_slice() {
                found.push((agent, one.id.clone(), one.name.clone()));
                continue;
            }
            let names: Vec<&str> = hits.iter().map(|c| c.name.as_str()).collect();
            return Err(DaemonError::invalid(format!(
                "container: {} containers match on agent {agent} ({}); a fault acts in one container per agent: name it, or add a label",
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
            return Err(DaemonError::not_found(format!(
                "container: none of the {} selected agents ({}) runs a container named {:?} (name, id prefix or compose service) with labels {:?}{why}",
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

    /// The containers a partition cuts: those on `agents`' hosts carrying `select` and,
    /// when `names` are given, called by one of them. A container two agents both see
    /// (agents sharing a host) takes part once.
    pub(super) async fn partition_members(
        &self,
        agents: &[String],
        select: &[String],
        names: &[String],
    ) -> Result<Vec<Member>, DaemonError> {
        let (listed, unasked) = self.agent_containers(agents, select).await;
        let mut seen = BTreeSet::new();
        let listed: Vec<(String, apb::Container)> =
            listed.into_iter().filter(|(_, c)| seen.insert(c.id.clone())).collect();
        for n in names {
            if !listed.iter().any(|(_, c)| called(n, c)) {
                let all: Vec<&str> = listed.iter().map(|(_, c)| c.name.as_str()).collect();
                let why = if unasked.is_empty() {
                    String::new()
                } else {
                    format!("; not asked: {}", unasked.join("; "))
                };
                return Err(DaemonError::not_found(format!(
                    "containers: no running container is called {} (running with labels {select:?}: {}{why})",
                    faultline_proto::quote(n),
                    all.join(", ")
                )));
            }
        }
        let chosen: Vec<(String, apb::Container)> = listed
            .into_iter()
            .filter(|(_, c)| names.is_empty() || names.iter().any(|n| called(n, c)))
            .collect();
        if chosen.len() < 2 {
            let why = if unasked.is_empty() {
                String::new()
            } else {
                format!(" (not asked: {})", unasked.join("; "))
            };
            return Err(DaemonError::invalid(format!(
                "containers: a partition needs at least 2 containers, {} found with labels {select:?} and names {names:?}{why}",
                chosen.len()
            )));
        }
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, c) in &chosen {
            *count.entry(c.name.as_str()).or_default() += 1;
        }
        let keys: Vec<String> = chosen
            .iter()
            .map(|(a, c)| {
                if count[c.name.as_str()] > 1 { format!("{a}/{}", c.name) } else { c.name.clone() }
            })
            .collect();
        Ok(chosen
            .into_iter()
            .zip(keys)
            .map(|((agent, container), key)| Member { key, agent, container, pod: None })
            .collect())
    }
}

/// The members a user's word in a group names: KEY=VALUE is every member carrying that
/// label (at least one); any other word names one member (`member_key`).
pub(super) fn member_keys(
    field: &str,
    word: &str,
    members: &[Member],
) -> Result<Vec<String>, DaemonError> {
    let Some((k, v)) = word.split_once('=') else {
        return member_key(field, word, members).map(|k| vec![k]);
    };
    let hits: Vec<String> = members
        .iter()
        .filter(|m| m.container.labels.get(k).is_some_and(|x| x == v))
        .map(|m| m.key.clone())
        .collect();
    if hits.is_empty() {
        return Err(DaemonError::invalid(format!(
            "{field}: no member taking part carries {} ({})",
            faultline_proto::quote(word),
            members.iter().map(|m| m.key.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(hits)
}

/// The member a user's word (in a group, or --node) names: its key, name, id prefix or
/// compose service; exactly one must answer to it.
pub(super) fn member_key(
    field: &str,
    word: &str,
    members: &[Member],
) -> Result<String, DaemonError> {
    if let Some(m) = members.iter().find(|m| m.key == word) {
        return Ok(m.key.clone());
    }
    let hits: Vec<&Member> = members.iter().filter(|m| called(word, &m.container)).collect();
    match hits.as_slice() {
        [one] => Ok(one.key.clone()),
        [] => Err(DaemonError::invalid(format!(
            "{field}: {} names none of the containers taking part ({})",
            faultline_proto::quote(word),
            members.iter().map(|m| m.key.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        many => Err(DaemonError::invalid(format!(
            "{field}: {} names {} containers ({}); name one",
            faultline_proto::quote(word),
            many.len(),
            many.iter().map(|m| m.key.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, id: &str) -> apb::Container {
        apb::Container { name: name.into(), id: id.into(), ..Default::default() }
    }

    #[test]
    fn names_match_as_the_agent_resolves_them() {
        assert!(named("web", &c("web", "abcdef12")));
        assert!(named("/web", &c("web", "abcdef12")));
        assert!(named("ctr77", &c("flt77/ctr77", "ctr77")));
        assert!(named("abcd", &c("web", "abcdef12")));
        assert!(!named("abc", &c("web", "abcdef12")), "a 3-character prefix names nothing");
        assert!(!named("we", &c("web", "abcdef12")));
        // Issue 16: a fault names a compose service as a partition does.
        let mut b = c("shop_service-b_1", "fedcba98");
        b.labels.insert(COMPOSE_SERVICE.into(), "service-b".into());
        assert!(
            called("service-b", &b) && called("shop_service-b_1", &b) && !named("service-b", &b)
        );
        assert!(!called("service", &b));
    }

    #[test]
    fn partition_words_name_one_member_by_name_prefix_or_compose_service() {
        let mut redis = c("shop-redis-1", "0123456789");
        redis.labels.insert(COMPOSE_SERVICE.into(), "redis".into());
        redis.addresses = vec!["172.18.0.3".into(), "fd00::3".into(), "fe80::1".into()];
        let members = vec![
            Member { key: "shop-redis-1".into(), agent: "h1".into(), container: redis, pod: None },
            Member {
                key: "h1/web".into(),
                agent: "h1".into(),
                container: c("web", "abcdef"),
                pod: None,
            },
            Member {
                key: "h2/web".into(),
                agent: "h2".into(),
                container: c("web", "abcxyz"),
                pod: None,
            },
        ];
        assert_eq!(member_key("groups", "redis", &members).unwrap(), "shop-redis-1");
        assert_eq!(member_key("groups", "0123", &members).unwrap(), "shop-redis-1");
        assert_eq!(member_key("groups", "h2/web", &members).unwrap(), "h2/web");
        let e = member_key("groups", "web", &members).unwrap_err().message;
        assert!(e.contains("names 2 containers") && e.contains("h1/web, h2/web"), "{e}");
        let e = member_key("node", "db", &members).unwrap_err().message;
        assert!(e.starts_with("node: \"db\" names none"), "{e}");
        assert_eq!(
            members[0].peers(),
            ["172.18.0.3/32", "fd00::3/128"],
            "link-local is no identity"
        );
    }
}
