//! The faults on the run's clock: each one a task that waits for its moment, applies it
//! through the controller, holds it for its length (or until the run stops) and reverts
//! it, writing down when each step happened. One failed apply stops the run.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use faultline_proto::controller::v1::{
    self as pb, controller_service_client::ControllerServiceClient,
};
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Channel;

use super::{
    Part, Timeline, lock,
    plan::Plan,
    scenario::{FaultPlan, FaultRequest},
};

/// Why the run stopped early: None while it runs, "" for its normal end.
pub(super) type Stop = watch::Sender<Option<String>>;

/// Starts one task per fault of the plan (a skipped fault is written down at once).
pub(super) fn faults(
    p: &Plan,
    c: &ControllerServiceClient<Channel>,
    start: Instant,
    stop: &Stop,
    timeline: &Arc<Mutex<Vec<Timeline>>>,
) -> Vec<JoinHandle<()>> {
    let s = &p.scenario;
    let mut tasks = Vec::new();
    for f in s.faults.clone() {
        if let Some((_, why)) = p.skipped.iter().find(|(i, _)| *i == f.index) {
            eprintln!("fault {} ({}) skipped: {why}", f.index, f.describe);
            let at = (s.fault_start() + f.at).as_secs_f64();
            let t = Timeline {
                index: f.index,
                describe: f.describe.clone(),
                planned_at: at,
                planned_end: at + f.length.as_secs_f64(),
                error: format!("skipped: {why}"),
                skipped: Some(why.clone()),
                ..Timeline::default()
            };
            lock(timeline).push(t);
            continue;
        }
        let begin = start + s.fault_start() + f.at;
        tasks.push(tokio::spawn(fault(f, c.clone(), start, begin, stop.clone(), timeline.clone())));
    }
    tasks
}

/// One fault's life: wait, apply, hold, revert (a kill or restart acts once).
async fn fault(
    f: FaultPlan,
    mut c: ControllerServiceClient<Channel>,
    start: Instant,
    begin: Instant,
    stop_tx: Stop,
    timeline: Arc<Mutex<Vec<Timeline>>>,
) {
    let end = begin + f.length;
    let secs_since = || Instant::now().saturating_duration_since(start).as_secs_f64();
    let mut stop = stop_tx.subscribe();
    let mut t = Timeline {
        index: f.index,
        describe: f.describe.clone(),
        planned_at: (begin - start).as_secs_f64(),
        planned_end: (end - start).as_secs_f64(),
        ..Timeline::default()
    };
    tokio::select! {
        () = tokio::time::sleep_until(begin.into()) => {}
        _ = stop.wait_for(Option::is_some) => {
            lock(&timeline).push(t);
            return;
        }
    }
    match apply(&mut c, &f).await {
        Ok(fault) => {
            t.applied_at = Some(secs_since());
            t.id = fault.id.clone();
            // A partition says which agents it cut from which ("h3 | h1 h2").
            if !fault.cut.is_empty() {
                t.describe = format!("{}: {}", f.describe, fault.cut);
            }
            t.agents = fault.placements.iter().map(|p| p.agent.clone()).collect();
            t.parts = fault
                .placements
                .iter()
                .map(|p| Part {
                    agent: p.agent.clone(),
                    agent_fault_id: p.agent_fault_id.clone(),
                    applied_ms: p.applied_at_unix_ms,
                    reverted_ms: 0,
                })
                .collect();
            eprintln!(
                "[{:>6.1}s] fault {} applied: {} on {}",
                t.applied_at.unwrap_or(0.0),
                t.id,
                f.describe,
                t.agents.join(",")
            );
            tokio::select! {
                () = tokio::time::sleep_until(end.into()) => {}
                _ = stop.wait_for(Option::is_some) => {}
            }
            // Kill and restart act once; everything else is reverted here (its lease
            // would end it anyway, a moment later).
            if fault.id != faultline_proto::ONE_SHOT_ID {
                match c
                    .revert_fault(pb::RevertFaultRequest { id: fault.id.clone(), all: false })
                    .await
                {
                    Ok(r) => {
                        for a in r.into_inner().agents {
                            if let Some(p) = t.parts.iter_mut().find(|p| p.agent == a.agent) {
                                p.reverted_ms = a.reverted_at_unix_ms;
                            }
                        }
                    }
                    Err(e) if e.code() == tonic::Code::NotFound => {}
                    Err(e) => t.error = format!("revert: {}", faultline_proto::status_in_words(&e)),
                }
            }
            t.reverted_at = Some(secs_since());
            eprintln!("[{:>6.1}s] fault {} reverted", t.reverted_at.unwrap_or(0.0), t.id);
        }
        Err(e) => {
            t.error = faultline_proto::status_in_words(&e);
            let _ = stop_tx.send(Some(format!(
                "faults[{}] ({}) could not be applied: {}",
                f.index, f.describe, t.error
            )));
        }
    }
    lock(&timeline).push(t);
}

async fn apply(
    c: &mut ControllerServiceClient<Channel>,
    f: &FaultPlan,
) -> Result<pb::ControllerFault, tonic::Status> {
    let r = match &f.request {
        FaultRequest::Apply(r) => c.apply_fault(r.clone()).await?,
        FaultRequest::Partition(p) => c.partition(p.clone()).await?,
    };
    Ok(r.into_inner().fault.unwrap_or_default())
}

/// Resolves when the run is to stop early: its caller's stop (Ctrl-C for the CLI), a
/// guardrail, a failed fault.
pub(super) async fn stopped(mut stop: watch::Receiver<Option<String>>) {
    let _ = stop.wait_for(Option::is_some).await;
}

/// Ends every fault task (each reverts its fault on stop) and waits for them; returns
/// why the run was cut short, if it was.
pub(super) async fn stop_all(
    stop: &Stop,
    interrupted: bool,
    tasks: Vec<JoinHandle<()>>,
) -> Option<String> {
    if interrupted && stop.borrow().is_none() {
        let _ = stop.send(Some("interrupted (Ctrl-C)".into()));
    }
    let _ = stop.send_if_modified(|v| {
        if v.is_none() {
            *v = Some(String::new());
            true
        } else {
            false
        }
    });
    for t in tasks {
        let _ = t.await;
    }
    stop.borrow().clone().filter(|r| !r.is_empty())
}
