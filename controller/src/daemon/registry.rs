//! The registry of agents: which are known (listed in the config, or registered with a
//! session), whether each answers, which a target selects, and forgetting the ones gone.

use std::time::SystemTime;

use faultline_proto::{
    agent::v1::{self as apb, agent_service_client::AgentServiceClient},
    controller::v1 as pb,
};
use tonic::transport::Channel;

use super::{Controller, DaemonError, Source};
use crate::targeting::{self, partition};

impl Controller {
    /// Forgets registered agents down longer than `forget_down_after` that hold no fault.
    pub(super) fn forget_stale(&self) {
        let now = SystemTime::now();
        let stale: Vec<String> = {
            let st = self.lock();
            st.agents
                .values()
                .filter(|a| a.source == Source::Registered && !a.healthy)
                .filter(|a| {
                    a.last_heartbeat.is_none_or(|t| {
                        now.duration_since(t).unwrap_or_default() >= self.forget_down_after
                    })
                })
                .filter(|a| {
                    !st.faults.values().any(|f| f.placements.iter().any(|(n, _)| *n == a.name))
                })
                .map(|a| a.name.clone())
                .collect()
        };
        for name in stale {
            self.forget(
                &name,
                format!("down for more than {} s", self.forget_down_after.as_secs()),
            );
        }
    }

    /// Removes an agent from the registry and the store; an open session ends with it.
    pub(super) fn forget(&self, name: &str, why: String) {
        self.lock().agents.remove(name);
        if let Err(e) = self.store.delete_agent(name) {
            tracing::error!("{e}");
        }
        tracing::info!(agent = name, why, "forgotten");
        self.event(pb::EventKind::AgentForgotten, "", &[name.to_owned()], why);
    }

    /// Asks each inventory agent how it is (registered ones heartbeat through their
    /// session) and says so when that changed.
    pub(super) async fn poll_inventory(&self) {
        let inventory: Vec<(String, AgentServiceClient<Channel>)> = self
            .lock()
            .agents
            .values()
            .filter(|a| a.source == Source::Inventory)
            .map(|a| (a.name.clone(), a.client.clone()))
            .collect();
        for (name, mut c) in inventory {
            let r = c.describe(apb::DescribeRequest {}).await;
            let change = {
                let mut st = self.lock();
                let Some(a) = st.agents.get_mut(&name) else { continue };
                let was = a.healthy;
                match r {
                    Ok(d) => {
                        a.healthy = true;
                        a.error.clear();
                        a.last_heartbeat = Some(SystemTime::now());
                        a.describe = Some(d.into_inner());
                    }
                    Err(e) => {
                        a.healthy = false;
                        e.message().clone_into(&mut a.error);
                    }
                }
                (was != a.healthy || a.last_heartbeat.is_none())
                    .then(|| (a.healthy, a.url.clone(), a.error.clone()))
            };
            match change {
                Some((true, url, _)) => {
                    self.event(pb::EventKind::AgentUp, "", &[name], format!("answers at {url}"));
                }
                Some((false, _, error)) => self.event(pb::EventKind::AgentDown, "", &[name], error),
                None => {}
            }
        }
    }

    /// The agents a target names, or `NotFound` listing what exists.
    pub(super) fn select(&self, t: &pb::Target) -> Result<Vec<String>, DaemonError> {
        let st = self.lock();
        for n in &t.agents {
            if !st.agents.contains_key(n) {
                return Err(DaemonError::not_found(format!(
                    "target.agents: no agent {n:?} (known: {:?})",
                    st.agents.keys().collect::<Vec<_>>()
                )));
            }
        }
        let selector = targeting::parse_selector(&t.selector)
            .map_err(|e| DaemonError::invalid(e.to_string()))?;
        let mut picked: Vec<String> = st
            .agents
            .values()
            .filter(|a| t.agents.is_empty() || t.agents.contains(&a.name))
            .filter(|a| targeting::selector_matches(&selector, |k| a.labels.get(k)))
            .map(|a| a.name.clone())
            .collect();
        if picked.is_empty() {
            let labels: Vec<String> =
                st.agents.values().map(|a| format!("{} {:?}", a.name, a.labels)).collect();
            return Err(DaemonError::not_found(format!(
                "target: no agent matches selector {:?} (agents: {})",
                t.selector,
                labels.join("; ")
            )));
        }
        let keep = keep(t, picked.len())?;
        partition::shuffle(&mut picked, self.seed());
        picked.truncate(keep);
        picked.sort();
        Ok(picked)
    }
}

/// How many of `n` candidates (agents, or agents running a container) the target's mode keeps.
pub(super) fn keep(t: &pb::Target, n: usize) -> Result<usize, DaemonError> {
    Ok(match pb::Mode::try_from(t.mode) {
        Ok(pb::Mode::All) => n,
        Ok(pb::Mode::One) => 1,
        Ok(pb::Mode::Fixed) if t.count == 0 || t.count as usize > n => {
            return Err(DaemonError::invalid(format!(
                "target.count: {} is not in 1..={n} (agents selected)",
                t.count
            )));
        }
        Ok(pb::Mode::Fixed) => t.count as usize,
        Ok(pb::Mode::Percent) if !(t.percent > 0.0 && t.percent <= 100.0) => {
            return Err(DaemonError::invalid(format!(
                "target.percent: {} is not in (0, 100]",
                t.percent
            )));
        }
        Ok(pb::Mode::Percent) => ((n as f64 * t.percent / 100.0).ceil() as usize).clamp(1, n),
        Err(_) => {
            return Err(DaemonError::invalid(format!("target.mode: unknown value {}", t.mode)));
        }
    })
}
