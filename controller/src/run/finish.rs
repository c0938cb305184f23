//! After the load and the faults: the hypothesis judged per phase and per fault, and
//! the run directory written through its schema (files.rs).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::Result;

use super::{
    OnRunClock, Outcome, Timeline, files,
    guard::{Window, window},
    scenario::{Condition, Metric, Scenario},
};
use crate::{load, table};

/// The run's verdicts and its directory's files, once load and faults are done.
pub(super) fn finish(
    s: &Scenario,
    run: &load::Run,
    dir: PathBuf,
    timeline: &[Timeline],
    placed: &[Vec<OnRunClock>],
    probed: &[files::ProbeRow],
    aborted: Option<String>,
) -> Result<Outcome> {
    let secs = |d: Duration| d.as_secs();
    let phases = [
        ("warmup", 0, secs(s.warmup)),
        ("baseline", secs(s.warmup), secs(s.warmup + s.baseline)),
        ("fault", secs(s.fault_start()), secs(s.fault_start() + s.fault)),
        ("recovery", secs(s.fault_start() + s.fault), secs(s.total())),
    ];
    let windows: BTreeMap<&str, Window> =
        phases.iter().map(|(n, a, b)| (*n, window(&run.recorder, *a, *b))).collect();
    let (mut verdicts, mut failed) = judge(s, run, timeline, &windows);
    let phase_s = |name: &str| {
        phases.iter().find(|p| p.0 == name).map_or((0.0, 0.0), |p| (p.1 as f64, p.2 as f64))
    };
    for v in super::probes::verdicts(s, probed, timeline, phase_s) {
        if !v.holds {
            failed.push(format!("{} in {} ({} failed samples)", v.hypothesis, v.phase, v.value));
        }
        verdicts.push(v);
    }
    let probes = super::probes::records(s, probed, timeline);
    let summary = files::Summary {
        scenario: s.name.clone(),
        description: s.description.clone(),
        started_unix_ms: run.started_unix_ms,
        aborted: aborted.clone(),
        phases: phases
            .iter()
            .map(|(n, a, b)| files::Phase {
                name: (*n).to_owned(),
                from_s: *a,
                to_s: *b,
                measured: windows[n].measured(),
            })
            .collect(),
        hypothesis: verdicts,
        faults: timeline.iter().zip(placed).map(|(t, placed)| record(t, placed)).collect(),
        load: load::summary(run, run.elapsed.min(s.total()).max(Duration::from_millis(1))),
        steady_recovery_s: super::probes::steady_recovery(s, &probes),
        probes,
        thresholds: s.thresholds.clone(),
    };
    summary.write(&dir)?;
    table::write(&dir, &load::seconds_rows(&run.recorder))?;
    std::fs::write(dir.join(files::LATENCY_HLOG), load::interval_log(run))?;
    write_fault_tables(&dir, timeline, &summary.faults)?;
    if !s.probes.is_empty() {
        table::write(&dir, probed)?;
    }

    for (n, _, _) in &phases {
        let w = &windows[n];
        println!(
            "{n:<9} {:>7} requests  {:>8.1}/s  errors {:>6.2} %  p50 {:>8.2} ms  p99 {:>8.2} ms",
            w.requests,
            w.value(Metric::Rate),
            w.value(Metric::ErrorRate) * 100.0,
            w.value(Metric::P50),
            w.value(Metric::P99)
        );
    }
    for v in &summary.hypothesis {
        println!(
            "hypothesis {:<24} {:<9} {}",
            v.hypothesis,
            v.phase,
            if v.holds { "holds" } else { "FAILS" }
        );
    }
    for p in &summary.probes {
        let recovery = match (p.recovered, p.recovery_s) {
            (Some(true), Some(r)) => format!("  passing again {r:.1} s after the last revert"),
            (Some(false), _) => "  NOT passing again by the end of the run".to_owned(),
            _ => String::new(),
        };
        println!(
            "probe {:<16} {:>4} samples  {:>4} failed{recovery}  ({})",
            p.name, p.samples, p.failures, p.asks
        );
    }
    println!("run directory: {}", dir.display());
    Ok(Outcome { dir, aborted, failed })
}

/// Every condition judged: the hypothesis over baseline and recovery, `during` over the
/// fault phase and over each applied fault's own window (whole seconds from its apply to
/// its revert, as the run's clock saw them). Returns the verdicts and the failed ones.
fn judge(
    s: &Scenario,
    run: &load::Run,
    timeline: &[Timeline],
    windows: &BTreeMap<&str, Window>,
) -> (Vec<files::Verdict>, Vec<String>) {
    let mut verdicts = Vec::new();
    let mut failed = Vec::new();
    let mut check = |c: &Condition, phase: String, w: &Window, how: &str| {
        let (holds, value) = w.holds(c);
        if !holds {
            failed.push(format!("{} {how} {phase} ({value:.3})", c.text));
        }
        verdicts.push(files::Verdict { hypothesis: c.text.clone(), phase, holds, value });
    };
    for c in &s.hypothesis {
        for phase in ["baseline", "recovery"] {
            check(c, phase.into(), &windows[phase], "in");
        }
    }
    for c in &s.during {
        check(c, "fault".into(), &windows["fault"], "during");
        for t in timeline {
            let (Some(from), Some(to)) =
                (t.applied_at, t.reverted_at.or(t.applied_at.map(|_| t.planned_end)))
            else {
                continue;
            };
            let w = window(
                &run.recorder,
                from.floor() as u64,
                (to.ceil() as u64).max(from.floor() as u64 + 1),
            );
            if w.requests > 0 {
                check(c, format!("faults[{}] {}", t.index, t.describe), &w, "during");
            }
        }
    }
    (verdicts, failed)
}

/// One fault as summary.json keeps it, each agent's part on the run's clock.
fn record(t: &Timeline, placed: &[OnRunClock]) -> files::FaultRecord {
    files::FaultRecord {
        index: t.index,
        fault: t.describe.clone(),
        id: t.id.clone(),
        agents: t.agents.clone(),
        planned_at_s: t.planned_at,
        planned_end_s: t.planned_end,
        applied_at_s: t.applied_at,
        reverted_at_s: t.reverted_at,
        error: t.error.clone(),
        skipped: t.skipped.clone(),
        parts: t
            .parts
            .iter()
            .zip(placed)
            .map(|(p, c)| files::PartRecord {
                agent: p.agent.clone(),
                agent_fault_id: p.agent_fault_id.clone(),
                applied_at_s: c.applied_s,
                reverted_at_s: c.reverted_s,
                clock_offset_ms: c.clock.map(|c| c.0),
                offset_uncertainty_ms: c.clock.map(|c| c.1),
            })
            .collect(),
    }
}

/// faults.csv and `fault_agents.csv`: the faults of summary.json, flat, and each agent's
/// part by its own clock and ours.
fn write_fault_tables(
    dir: &std::path::Path,
    timeline: &[Timeline],
    faults: &[files::FaultRecord],
) -> Result<()> {
    let ms3 = |v: Option<f64>| v.map(table::ms3);
    let rows: Vec<files::FaultRow> = faults
        .iter()
        .map(|f| files::FaultRow {
            index: f.index,
            fault: f.fault.clone(),
            id: f.id.clone(),
            agents: f.agents.join(" "),
            planned_at_s: table::ms3(f.planned_at_s),
            planned_end_s: table::ms3(f.planned_end_s),
            applied_at_s: ms3(f.applied_at_s),
            reverted_at_s: ms3(f.reverted_at_s),
            error: f.error.clone(),
        })
        .collect();
    table::write(dir, &rows)?;
    let agent_ms = |v: i64| (v > 0).then_some(v);
    let mut parts = Vec::new();
    for (t, f) in timeline.iter().zip(faults) {
        for (p, r) in t.parts.iter().zip(&f.parts) {
            parts.push(files::FaultAgentRow {
                index: t.index,
                id: t.id.clone(),
                agent: p.agent.clone(),
                agent_fault_id: p.agent_fault_id.clone(),
                applied_at_s: ms3(r.applied_at_s),
                reverted_at_s: ms3(r.reverted_at_s),
                clock_offset_ms: ms3(r.clock_offset_ms),
                offset_uncertainty_ms: ms3(r.offset_uncertainty_ms),
                applied_agent_unix_ms: agent_ms(p.applied_ms),
                reverted_agent_unix_ms: agent_ms(p.reverted_ms),
            });
        }
    }
    table::write(dir, &parts)
}
