//! What the load measured over whole seconds, and the guardrails that stop a run when
//! the service is hurt more than the scenario allows.

use std::time::Duration;

use super::{
    files,
    scenario::{Condition, Guardrail, Metric},
};
use crate::load::{self, record::Recorder};

/// Measurements over whole seconds [from, to) of the recorder.
pub(super) struct Window {
    pub(super) requests: u64,
    errors: u64,
    seconds: u64,
    corrected: hdrhistogram::Histogram<u64>,
}

pub(super) fn window(rec: &Recorder, from: u64, to: u64) -> Window {
    let mut sum = load::record::Second::default();
    for s in rec.seconds.iter().take(to as usize).skip(from as usize) {
        sum.add(s);
    }
    Window {
        requests: sum.requests(),
        errors: sum.errors(),
        seconds: to.saturating_sub(from).max(1),
        corrected: sum.corrected,
    }
}

impl Window {
    fn quantile(&self, p: f64) -> f64 {
        load::record::ms_at(&self.corrected, p)
    }

    pub(super) fn value(&self, m: Metric) -> f64 {
        let q = |p| self.quantile(p);
        match m {
            Metric::P50 => q(0.5),
            Metric::P90 => q(0.9),
            Metric::P99 => q(0.99),
            Metric::ErrorRate => {
                if self.requests == 0 {
                    0.0
                } else {
                    self.errors as f64 / self.requests as f64
                }
            }
            Metric::Rate => self.requests as f64 / self.seconds as f64,
        }
    }

    /// Whether `c` holds here, and the value it was judged on.
    pub(super) fn holds(&self, c: &Condition) -> (bool, f64) {
        let v = self.value(c.metric);
        (if c.less { v < c.value } else { v > c.value }, v)
    }

    pub(super) fn measured(&self) -> files::Measured {
        files::Measured {
            requests: self.requests,
            errors: self.errors,
            rate: self.value(Metric::Rate),
            error_rate: self.value(Metric::ErrorRate),
            p50_ms: self.value(Metric::P50),
            p90_ms: self.value(Metric::P90),
            p95_ms: self.quantile(0.95),
            p99_ms: self.value(Metric::P99),
        }
    }
}

/// The load's once-a-second callback: prints the second that just finished and stops the
/// run (through `stop`) when a guardrail's condition held for its whole span.
pub(super) fn progress(
    guardrails: Vec<Guardrail>,
    stop: tokio::sync::watch::Sender<Option<String>>,
) -> impl Fn(&Recorder, Duration) + Send + 'static {
    move |rec: &Recorder, elapsed: Duration| {
        let done = elapsed.as_secs().saturating_sub(1) as usize;
        if let Some(sec) = rec.seconds.get(done) {
            // Answers, not starts: what the target served in that second.
            let unsent = if sec.not_started() > 0 {
                format!("  not started {}", sec.not_started())
            } else {
                String::new()
            };
            eprintln!(
                "[{:>4}s] {:>6}/s  p99 {:.2} ms  errors {}{unsent}",
                done + 1,
                sec.answered(),
                load::record::ms_at(&sec.corrected, 0.99),
                sec.errors()
            );
        }
        for g in &guardrails {
            let n = g.seconds as usize;
            if done + 1 < n {
                continue;
            }
            let breached = (done + 1 - n..=done).all(|i| {
                let w = window(rec, i as u64, i as u64 + 1);
                w.requests > 0 && w.holds(&g.condition).0
            });
            if breached && stop.borrow().is_none() {
                let _ = stop.send(Some(format!(
                    "guardrail {:?} held for {} s",
                    g.condition.text, g.seconds
                )));
            }
        }
    }
}
