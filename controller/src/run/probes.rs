//! The scenario's probes through a run (issue 33): each asked at its interval from the
//! load's start to the end, every sample kept for probes.csv; a probe guardrail stops the
//! run at the sample that completes its streak of failures, and the run reverts every
//! fault at once. After the run: the probes named in the hypothesis and `during:` judged,
//! and each probe's recovery time (from the last revert until it passes from then on).

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use super::{Timeline, files, lock, scenario::Scenario};

pub(super) struct Watch {
    samples: Arc<Mutex<Vec<files::ProbeRow>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts every probe of `s` at `start` (the load's first second).
pub(super) fn start(
    s: &Scenario,
    start: Instant,
    stop: &tokio::sync::watch::Sender<Option<String>>,
) -> Watch {
    let samples: Arc<Mutex<Vec<files::ProbeRow>>> = Arc::default();
    let tasks = s
        .probes
        .iter()
        .map(|p| {
            let guards: Vec<_> =
                s.probe_guardrails.iter().filter(|g| g.probe == p.name).cloned().collect();
            let (samples, stop, name) = (samples.clone(), stop.clone(), p.name.clone());
            let mut failing = 0u32;
            tokio::spawn(crate::probe::watch(
                p.clone(),
                tokio::time::Instant::from_std(start),
                move |t, sample| {
                    // Said when it changes, not every interval: a probe failing for a
                    // minute at 100 ms would bury the run's other lines.
                    if sample.ok {
                        if failing > 0 {
                            eprintln!(
                                "[{t:>6.1}s] probe {name} passes again (after {failing} failures)"
                            );
                        }
                        failing = 0;
                    } else {
                        if failing == 0 {
                            eprintln!("[{t:>6.1}s] probe {name} fails: {}", sample.detail);
                        }
                        failing += 1;
                    }
                    for g in &guards {
                        if failing >= g.times {
                            // The first reason wins; later ones change nothing.
                            stop.send_if_modified(|v| {
                                v.is_none()
                                    && v.replace(format!(
                                        "guardrail {:?}: {failing} failures in a row, the last: {}",
                                        g.text, sample.detail
                                    ))
                                    .is_none()
                            });
                        }
                    }
                    lock(&samples).push(files::ProbeRow {
                        t_s: (t * 1000.0).round() / 1000.0,
                        probe: name.clone(),
                        ok: sample.ok,
                        ms: (sample.ms * 1000.0).round() / 1000.0,
                        detail: sample.detail,
                    });
                },
            ))
        })
        .collect::<Vec<_>>();
    let mut tasks = tasks;
    // Steady state before faults, as Chaos Toolkit checks it before its method: a probe of
    // the hypothesis that failed in the baseline (or was never answered) stops the run
    // before the first fault, saying which and why.
    if !s.steady_probes.is_empty() {
        let (samples, stop) = (samples.clone(), stop.clone());
        let (from, to) = (s.warmup.as_secs_f64(), s.fault_start().as_secs_f64());
        let names = s.steady_probes.clone();
        // A moment before the first fault may start, so the verdict is in first.
        let at = tokio::time::Instant::from_std(start)
            + s.fault_start().saturating_sub(std::time::Duration::from_millis(50));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let rows = lock(&samples).clone();
            for name in &names {
                let mine: Vec<&files::ProbeRow> = rows
                    .iter()
                    .filter(|r| r.probe == *name && r.t_s >= from && r.t_s < to)
                    .collect();
                let failed: Vec<&&files::ProbeRow> = mine.iter().filter(|r| !r.ok).collect();
                let why = match (mine.len(), failed.first()) {
                    (0, _) => Some("no sample in the baseline".to_owned()),
                    (n, Some(f)) => Some(format!(
                        "{} of {n} baseline samples failed, the first: {}",
                        failed.len(),
                        f.detail
                    )),
                    _ => None,
                };
                if let Some(why) = why {
                    stop.send_if_modified(|v| {
                        v.is_none()
                            && v.replace(format!(
                                "steady state not met before the faults: probe {name}: {why}"
                            ))
                            .is_none()
                    });
                    return;
                }
            }
        }));
    }
    Watch { samples, tasks }
}

impl Watch {
    /// Stops asking; the samples so far, in time order.
    pub(super) fn stop(self) -> Vec<files::ProbeRow> {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
        let mut rows = lock(&self.samples).clone();
        rows.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        rows
    }
}

/// When the last fault was reverted, on the run's clock; None when none was.
pub(super) fn last_revert(timeline: &[Timeline]) -> Option<f64> {
    timeline.iter().filter_map(|t| t.reverted_at).reduce(f64::max)
}

/// Seconds after `from` until `samples` (one probe's, in time order) pass from then to
/// the end; None when the last one fails or none was taken after `from`.
pub(super) fn recovery(samples: &[&files::ProbeRow], from: f64) -> Option<f64> {
    let after: Vec<&&files::ProbeRow> = samples.iter().filter(|s| s.t_s >= from).collect();
    let first_of_streak = after.iter().rposition(|s| !s.ok).map_or(0, |i| i + 1);
    after.get(first_of_streak).map(|s| s.t_s - from)
}

/// Each probe over the run, for summary.json.
pub(super) fn records(
    s: &Scenario,
    rows: &[files::ProbeRow],
    timeline: &[Timeline],
) -> Vec<files::ProbeRecord> {
    let reverted = last_revert(timeline);
    s.probes
        .iter()
        .map(|p| {
            let mine: Vec<&files::ProbeRow> = rows.iter().filter(|r| r.probe == p.name).collect();
            let recovery_s = reverted.and_then(|r| recovery(&mine, r));
            files::ProbeRecord {
                name: p.name.clone(),
                kind: p.check.kind().to_owned(),
                asks: p.describe.clone(),
                interval_s: p.interval.as_secs_f64(),
                samples: mine.len(),
                failures: mine.iter().filter(|r| !r.ok).count(),
                recovery_s: recovery_s.map(|x| (x * 1000.0).round() / 1000.0),
                recovered: reverted.map(|_| recovery_s.is_some()),
            }
        })
        .collect()
}

/// When the steady state was back: the latest recovery among the hypothesis's probes,
/// None when any of them did not recover (or there are none).
pub(super) fn steady_recovery(s: &Scenario, records: &[files::ProbeRecord]) -> Option<f64> {
    let mut latest: Option<f64> = None;
    for name in &s.steady_probes {
        let r = records.iter().find(|r| r.name == *name)?.recovery_s?;
        latest = Some(latest.map_or(r, |l| l.max(r)));
    }
    latest
}

/// The probes of the hypothesis and of `during:` judged: a verdict per probe and window
/// whose value is the failed samples there. The hypothesis holds in the baseline when
/// every sample passes, and in the recovery when the probe passes again from some sample
/// after the last revert to the end (every sample of the phase when nothing was reverted).
pub(super) fn verdicts(
    s: &Scenario,
    rows: &[files::ProbeRow],
    timeline: &[Timeline],
    phase: impl Fn(&str) -> (f64, f64),
) -> Vec<files::Verdict> {
    let of = |name: &str, (from, to): (f64, f64)| -> Vec<&files::ProbeRow> {
        rows.iter().filter(|r| r.probe == name && r.t_s >= from && r.t_s < to).collect()
    };
    let failed = |rows: &[&files::ProbeRow]| rows.iter().filter(|r| !r.ok).count();
    let verdict = |name: &str, phase: String, holds: bool, failures: usize| files::Verdict {
        hypothesis: format!("probe {name}"),
        phase,
        holds,
        value: failures as f64,
    };
    let mut out = Vec::new();
    for name in &s.steady_probes {
        let base = of(name, phase("baseline"));
        // No sample at all is no evidence: it does not hold.
        out.push(verdict(
            name,
            "baseline".into(),
            !base.is_empty() && failed(&base) == 0,
            failed(&base),
        ));
        let rec = of(name, phase("recovery"));
        let holds = match last_revert(timeline) {
            Some(r) => {
                let mine: Vec<&files::ProbeRow> =
                    rows.iter().filter(|x| x.probe == *name).collect();
                recovery(&mine, r).is_some()
            }
            None => !rec.is_empty() && failed(&rec) == 0,
        };
        out.push(verdict(name, "recovery".into(), holds, failed(&rec)));
    }
    for name in &s.during_probes {
        let during = of(name, phase("fault"));
        out.push(verdict(
            name,
            "fault".into(),
            !during.is_empty() && failed(&during) == 0,
            failed(&during),
        ));
        for t in timeline {
            let (Some(from), Some(to)) =
                (t.applied_at, t.reverted_at.or(t.applied_at.map(|_| t.planned_end)))
            else {
                continue;
            };
            let w = of(name, (from, to));
            if !w.is_empty() {
                out.push(verdict(
                    name,
                    format!("faults[{}] {}", t.index, t.describe),
                    failed(&w) == 0,
                    failed(&w),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: f64, ok: bool) -> files::ProbeRow {
        files::ProbeRow { t_s: t, probe: "web".into(), ok, ..files::ProbeRow::default() }
    }

    #[test]
    fn recovery_is_the_first_pass_that_lasts_to_the_end() {
        let rows = [
            row(9.0, true),
            row(10.0, false),
            row(11.0, false),
            row(12.0, true),
            row(13.0, false),
            row(14.0, true),
            row(15.0, true),
        ];
        let refs: Vec<&files::ProbeRow> = rows.iter().collect();
        // Reverted at 11.5: the pass at 12 did not last; from 14 on it did.
        assert_eq!(recovery(&refs, 11.5), Some(2.5));
        // Passing at once after the revert.
        assert_eq!(recovery(&refs, 13.5), Some(0.5));
        // Failing at the end: not recovered; nothing after the revert: not known.
        let failing = [row(12.0, true), row(13.0, false)];
        assert_eq!(recovery(&failing.iter().collect::<Vec<_>>(), 11.0), None);
        assert_eq!(recovery(&refs, 16.0), None);
    }
}
