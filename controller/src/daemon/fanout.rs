//! Faults to many agents at once: check everywhere first, apply concurrently, all or
//! nothing (a one-shot is reported where it acted), and revert parts.

use std::{collections::BTreeMap, time::Instant};

use faultline_proto::{agent::v1 as apb, controller::v1 as pb};
use tracing::Instrument;

use super::{Controller, DaemonError, Placed, grpc::kind_of, mentions};

/// What an agent said, for a person: its message, not a gRPC code name; an agent that
/// could not be reached is said to be so.
pub(super) fn said(e: &tonic::Status) -> String {
    match e.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            format!("not reachable ({})", e.message())
        }
        _ => e.message().to_owned(),
    }
}

impl Controller {
    /// Reverts each agent's part; an agent not reached is a result with ok false.
    pub(super) async fn revert_placements(
        &self,
        placements: &[(String, String)],
    ) -> Vec<pb::AgentResult> {
        let calls = placements.iter().filter_map(|(agent, fid)| {
            let mut c = self.lock().agents.get(agent)?.client.clone();
            let (agent, fid) = (agent.clone(), fid.clone());
            let span =
                tracing::info_span!("agent.revert_fault", agent = %agent, agent_fault_id = %fid);
            Some(
                async move {
                    let r = c
                        .revert_fault(apb::RevertFaultRequest { id: fid.clone(), all: false })
                        .await;
                    (agent, fid, r)
                }
                .instrument(span),
            )
        });
        let mut results = Vec::new();
        for (agent, fid, r) in futures_util::future::join_all(calls).await {
            let mut result =
                pb::AgentResult { agent, ok: true, agent_fault_id: fid, ..Default::default() };
            match r {
                Ok(r) => result.reverted_at_unix_ms = r.into_inner().reverted_at_unix_ms,
                // The agent's lease already ended it (when, it does not say).
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    result.ok = false;
                    result.error = format!("{} (its lease will end the fault)", said(&e));
                }
            }
            results.push(result);
        }
        results
    }

    /// Checks readiness, then applies the plan on every agent (all or nothing).
    pub(super) async fn apply_planned(
        &self,
        names: &[String],
        spec: &apb::FaultSpec,
        plan: Vec<(String, apb::FaultSpec)>,
    ) -> Result<Placed, DaemonError> {
        self.check_ready(names, spec)?;
        self.fan_out(plan).await
    }

    /// Passes a fan-out's result through: counts it, times it, and records a refusal
    /// as an event.
    pub(super) fn refusing<T>(
        &self,
        names: &[String],
        started: Instant,
        r: Result<T, DaemonError>,
    ) -> Result<T, DaemonError> {
        use std::sync::atomic::Ordering::Relaxed;
        match &r {
            Ok(_) => {
                self.stats.observe_apply(started.elapsed());
                self.stats.applied.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.stats.refused.fetch_add(1, Relaxed);
                // The event says what kind of refusal it was in words ("not found: ..."),
                // the same whichever front end was asked.
                let status = tonic::Status::from(e.clone());
                tracing::warn!(code = ?status.code(), "refused: {}", e.message);
                self.event(
                    pb::EventKind::FaultRefused,
                    "",
                    names,
                    faultline_proto::status_in_words(&status),
                );
            }
        }
        r
    }

    /// Refuses up front when a selected agent is down or lacks what the fault needs.
    pub(super) fn check_ready(
        &self,
        names: &[String],
        spec: &apb::FaultSpec,
    ) -> Result<(), DaemonError> {
        let st = self.lock();
        for n in names {
            let a = &st.agents[n];
            if !a.healthy {
                return Err(DaemonError::unavailable(format!(
                    "agent {n} is down ({}); nothing was applied",
                    a.error
                )));
            }
            let caps = a.describe.as_ref().and_then(|d| d.capabilities.clone()).unwrap_or_default();
            let host = a.describe.as_ref().map_or("?", |d| d.hostname.as_str());
            if let Some(m) = faultline_proto::doctor::missing(spec, &caps.probes) {
                return Err(DaemonError::precondition(format!(
                    "agent {n} (host {host}) lacks {m}; nothing was applied"
                )));
            }
        }
        Ok(())
    }

    /// Phase one of a fan-out to several agents: each checks the fault (targets resolved,
    /// preconditions met) without acting. One refusal refuses it everywhere, before any
    /// agent did anything, so a kill never happens on some hosts only and a freeze never
    /// stops a process for a moment on agents that would then be rolled back.
    pub(super) async fn check_all(
        &self,
        plan: &[(String, apb::FaultSpec)],
    ) -> Result<(), DaemonError> {
        let mut calls = Vec::new();
        for (n, s) in plan {
            let Some(mut c) = self.lock().agents.get(n).map(|a| a.client.clone()) else { continue };
            let (n, s) = (n.clone(), s.clone());
            calls.push(async move {
                (n, c.apply_fault(apb::ApplyFaultRequest { spec: Some(s), dry_run: true }).await)
            });
        }
        let results = futures_util::future::join_all(calls).await;
        let refused = self.refusals(&results);
        if refused.is_empty() {
            return Ok(());
        }
        let code = results
            .iter()
            .find_map(|(_, r)| r.as_ref().err().map(tonic::Status::code))
            .unwrap_or(tonic::Code::FailedPrecondition);
        Err(DaemonError::new(
            kind_of(code),
            format!(
                "refused by {} of {} agents, so nothing was done on any: {}",
                refused.len(),
                results.len(),
                refused.join("; ")
            ),
        ))
    }

    /// Applies one spec per agent, concurrently. All or nothing: every agent checks first
    /// (`check_all`); if one still refuses when applying, the others are reverted (a
    /// one-shot is reported where it acted) and the error lists every agent's result.
    pub(super) async fn fan_out(
        &self,
        plan: Vec<(String, apb::FaultSpec)>,
    ) -> Result<Placed, DaemonError> {
        if plan.len() > 1 {
            self.check_all(&plan).await?;
        }
        let one_shot = plan.first().is_some_and(|(_, s)| {
            matches!(
                s.kind,
                Some(apb::fault_spec::Kind::Kill(_) | apb::fault_spec::Kind::Restart(_))
            )
        });
        let mut calls = Vec::new();
        for (n, s) in plan {
            let Some(mut c) = self.lock().agents.get(&n).map(|a| a.client.clone()) else {
                continue;
            };
            let span =
                tracing::info_span!("agent.apply_fault", agent = %n, ok = tracing::field::Empty);
            calls.push(
                async move {
                    let r = c
                        .apply_fault(apb::ApplyFaultRequest { spec: Some(s), dry_run: false })
                        .await;
                    tracing::Span::current().record("ok", r.is_ok());
                    if let Err(e) = &r {
                        tracing::warn!(code = ?e.code(), "{}", e.message());
                    }
                    (n, r)
                }
                .instrument(span),
            );
        }
        let results = futures_util::future::join_all(calls).await;
        let mut applied_ms = BTreeMap::new();
        let mut placements: Vec<(String, String)> = Vec::new();
        for (n, r) in &results {
            if let Ok(r) = r {
                let f = r.get_ref().fault.as_ref();
                placements.push((n.clone(), f.map(|f| f.id.clone()).unwrap_or_default()));
                applied_ms.insert(n.clone(), f.map_or(0, |f| f.applied_at_unix_ms));
            }
        }
        if placements.is_empty() && !results.is_empty() {
            // Nothing was applied anywhere: the agents' own answers, with their kind
            // (a bad field stays 400, a refusal 403), not a rollback that never happened.
            let code = results
                .iter()
                .find_map(|(_, r)| r.as_ref().err().map(tonic::Status::code))
                .unwrap_or(tonic::Code::Internal);
            let detail = self.refusals(&results);
            let n = results.len();
            return Err(DaemonError::new(
                kind_of(code),
                format!(
                    "nothing was applied (refused by {n} of {n} agents): {}",
                    detail.join("; ")
                ),
            ));
        }
        if placements.len() < results.len() && one_shot {
            // A kill or restart that acted cannot be undone: say exactly where it acted.
            let acted: Vec<String> = placements.iter().map(|(n, _)| n.clone()).collect();
            if !acted.is_empty() {
                self.event(pb::EventKind::FaultOneShot, "", &acted, format!("acted on {} (the other agents refused after checking; nothing can be undone)", acted.join(",")));
            }
            let detail: Vec<String> = results
                .iter()
                .map(|(n, r)| match r {
                    Ok(_) => format!("{n}: done"),
                    Err(e) => format!("{n}: {}", said(e)),
                })
                .collect();
            return Err(DaemonError::aborted(format!(
                "done on {} of {} agents (a one-shot fault is not rolled back): {}",
                acted.len(),
                results.len(),
                detail.join("; ")
            )));
        }
        if placements.len() < results.len() {
            // A fault that holds on some agents only is not the one asked for.
            let undo_failures: Vec<pb::AgentResult> =
                self.revert_placements(&placements).await.into_iter().filter(|r| !r.ok).collect();
            let detail: Vec<String> = results
                .iter()
                .map(|(n, r)| match r {
                    Ok(_) => format!("{n}: applied, then reverted"),
                    Err(e) => {
                        // An agent names the fault in the way by its own id; say which of ours it is.
                        let ours = self.owner_of(n, e.message()).map_or(String::new(), |id| {
                            format!(" (that is controller fault {id})")
                        });
                        format!("{n}: {}{ours}", said(e))
                    }
                })
                .chain(
                    undo_failures
                        .iter()
                        .map(|f| format!("{}: revert failed: {}", f.agent, f.error)),
                )
                .collect();
            return Err(DaemonError::aborted(format!(
                "applied on {} of {} agents, so reverted everywhere: {}",
                placements.len(),
                results.len(),
                detail.join("; ")
            )));
        }
        Ok(Placed { ids: placements, applied_ms })
    }

    /// Each agent's refusal among `results`, as a person reads it: `h3: interface: no
    /// interface "eth0" ...`, naming the controller fault in the way where an agent named
    /// its own part of one.
    fn refusals<T>(&self, results: &[(String, Result<T, tonic::Status>)]) -> Vec<String> {
        results
            .iter()
            .filter_map(|(n, r)| {
                let e = r.as_ref().err()?;
                let ours = self
                    .owner_of(n, e.message())
                    .map_or(String::new(), |id| format!(" (that is controller fault {id})"));
                Some(format!("{n}: {}{ours}", said(e)))
            })
            .collect()
    }

    /// The controller fault whose part on `agent` is named in `message`.
    pub(super) fn owner_of(&self, agent: &str, message: &str) -> Option<String> {
        let st = self.lock();
        st.faults
            .values()
            .find(|f| f.placements.iter().any(|(a, fid)| a == agent && mentions(message, fid)))
            .map(|f| f.id.clone())
    }
}
