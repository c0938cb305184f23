//! Leases: every fault the controller holds ends by itself. Agents hold a short lease
//! (two heartbeats, never past the fault's end) that each heartbeat renews; a fault ends
//! at its own moment (a timer per fault), and one an agent no longer holds is let go.

use std::time::{Duration, Instant};

use faultline_proto::{agent::v1 as apb, controller::v1 as pb};
use tracing::Instrument;

use super::{Controller, DaemonError};

impl Controller {
    /// The lease agents hold: two heartbeats, so one lost renewal does not end a fault.
    pub(super) fn agent_lease(&self) -> Duration {
        self.heartbeat * 2
    }

    /// Every heartbeat: renew the leases of live faults, revert expired ones, and
    /// check inventory agents (registered ones heartbeat through their session).
    pub async fn tick_forever(self) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.tick().await;
        }
    }

    /// One heartbeat's work: expired faults reverted, live ones renewed, the registry
    /// kept (stale agents forgotten, inventory agents asked how they are).
    async fn tick(&self) {
        let now = Instant::now();
        let (expired, live): (Vec<_>, Vec<_>) = {
            let st = self.lock();
            st.faults
                .values()
                .map(|f| (f.id.clone(), f.placements.clone(), f.expires <= now))
                .partition(|(_, _, e)| *e)
        };
        for (id, _, _) in expired {
            let _ = self.revert(&id, pb::EventKind::FaultExpired).await;
        }
        let mut renewals = Vec::new();
        for (id, placements, _) in live {
            // Never past the fault's own end: the agents then end it on time by themselves.
            let left =
                self.lock().faults.get(&id).map_or(Duration::ZERO, |f| {
                    f.expires.saturating_duration_since(Instant::now())
                });
            let lease = self.part_lease(left);
            for (agent, fid) in placements {
                if let Some(call) = self.renew_part(&agent, &fid, lease) {
                    let id = id.clone();
                    renewals.push(async move { (id, agent, fid, call.await) });
                }
            }
        }
        for (id, agent, fid, r) in futures_util::future::join_all(renewals).await {
            let counter =
                if r.is_ok() { &self.stats.renewals_ok } else { &self.stats.renewals_failed };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match r {
                Ok(_) => {}
                // The agent no longer holds it (restarted, or its lease ran out while it
                // was cut off): the fault is gone there, so stop claiming it.
                Err(e) if e.code() == tonic::Code::NotFound => {
                    tracing::warn!(id, agent, "the agent no longer holds its part of the fault");
                    let left = {
                        let mut st = self.lock();
                        let Some(f) = st.faults.get_mut(&id) else { continue };
                        f.placements.retain(|(a, x)| !(*a == agent && *x == fid));
                        self.persist(f);
                        let left = f.placements.len();
                        if left == 0 {
                            st.faults.remove(&id);
                        }
                        left
                    };
                    self.event(
                        pb::EventKind::FaultLost,
                        &id,
                        std::slice::from_ref(&agent),
                        format!("{agent} no longer holds its part ({left} agents still do)"),
                    );
                    if left == 0 {
                        self.end(&id, "lost");
                        self.stats.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Err(e) => tracing::warn!(agent, "renewing lease: {}", e.message()),
            }
        }
        self.forget_stale();
        self.poll_inventory().await;
    }

    /// Ends fault `id` at `at` (not at the next heartbeat tick), unless it is gone or was
    /// given another end by then.
    /// The lease an agent holds for its part of a fault with `left` to go: the agents'
    /// short lease, never past the fault's own end (they then end it on time by themselves).
    pub(super) fn part_lease(&self, left: Duration) -> u64 {
        (self.agent_lease().min(left).as_millis() as u64).max(1)
    }

    /// Renews one agent's part of a fault; None when the agent is not known.
    pub(super) fn renew_part(
        &self,
        agent: &str,
        fid: &str,
        lease_ms: u64,
    ) -> Option<
        impl Future<Output = Result<tonic::Response<apb::RenewLeasesResponse>, tonic::Status>> + use<>,
    > {
        let mut c = self.lock().agents.get(agent).map(|a| a.client.clone())?;
        let req = apb::RenewLeasesRequest { ids: vec![fid.to_owned()], lease_ms };
        Some(async move { c.renew_leases(req).await })
    }

    pub(super) fn expire_at(&self, id: String, at: Instant) {
        let ctl = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let due = ctl.lock().faults.get(&id).is_some_and(|f| f.expires <= Instant::now());
            if due {
                let _ = ctl.revert(&id, pb::EventKind::FaultExpired).await;
            }
        });
    }

    /// Ends a fault everywhere; `why` is `FaultReverted` (asked) or `FaultExpired`. Returns
    /// each agent's result.
    pub(super) async fn revert(
        &self,
        id: &str,
        why: pb::EventKind,
    ) -> Result<Vec<pb::AgentResult>, DaemonError> {
        let Some(f) = self.lock().faults.remove(id) else {
            let known: Vec<String> = self.lock().faults.keys().cloned().collect();
            return Err(DaemonError::not_found(format!(
                "id: no active fault {id:?} (active: {known:?})"
            )));
        };
        let reason = if why == pb::EventKind::FaultExpired { "expired" } else { "reverted" };
        let span =
            tracing::info_span!("revert_fault", fault_id = id, reason, agents = f.placements.len());
        let results = self.revert_placements(&f.placements).instrument(span).await;
        let failures: Vec<&pb::AgentResult> = results.iter().filter(|r| !r.ok).collect();
        let counter = if why == pb::EventKind::FaultExpired {
            &self.stats.expired
        } else {
            &self.stats.reverted
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.end(id, reason);
        // A partition of containers has a part per container: an agent counts once.
        let mut agents: Vec<String> = f.placements.iter().map(|p| p.0.clone()).collect();
        agents.sort();
        agents.dedup();
        let detail = if failures.is_empty() {
            String::new()
        } else {
            format!(
                "; not reached: {}",
                failures
                    .iter()
                    .map(|f| format!("{}: {}", f.agent, f.error))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        let parts = if f.placements.len() > agents.len() {
            format!(" ({} parts)", f.placements.len())
        } else {
            String::new()
        };
        let n = agents.len();
        let plural = if n == 1 { "" } else { "s" };
        self.event(why, id, &agents, format!("{reason} on {n} agent{plural}{parts}{detail}"));
        tracing::info!(id, reason, "ended");
        Ok(results)
    }
}
