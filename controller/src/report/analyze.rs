//! `faultline analyze RUN [--baseline RUN]`: what the faults did to the service.
//!
//! Goodput (answers without error per second), error rate and p99 of every second are
//! compared with a band drawn from the baseline phase (of this run, or of another run
//! given with --baseline). The band is robust to outliers: median ± 3 scaled MADs
//! (1.4826 × the median absolute deviation estimates one standard deviation for normal
//! data), widened to a floor so that a perfectly flat baseline does not flag noise:
//! goodput ± max(5 %, 1/s), error rate up to median + max(3σ, 1 point), p99 up to
//! max(median + 3σ, 2 × median, median + 10 ms): one second's p99 at a modest rate is
//! nearly its maximum, which a busy host moves by milliseconds without any fault. Consecutive seconds outside the band
//! form an anomaly window (a gap of one second inside is bridged). Recovery time: from
//! the last fault's revert to the first second that starts a run of 3 seconds all inside
//! the band. A scenario's `analysis:` sets these figures itself (`files::Thresholds`:
//! the goodput change, error points, p99 rise and margin, sigmas, recovered seconds).
//!
//! Each fault's effect as the kernel saw it: on each agent the fault was placed on, the
//! TCP retransmits per second, the smoothed RTT (mean over its samples), kernel drops per
//! second and failed connects while it was applied (each kernel.csv sample counts the
//! second before it, so the window runs to one second after the revert), beside the same
//! over the baseline phase (kernel.csv and drops.csv of the run).

use std::path::Path;

use anyhow::{Result, bail};

use crate::{
    run::files::{
        AgentRow, DropRow, KernelRow, Measured, ProbeRecord, SecondRow, Summary, Thresholds,
        Verdict,
    },
    table,
};

/// analysis.json, and `faultline analyze --json`: what the faults did to the service.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Analysis {
    pub run: String,
    /// "this run", or the run whose baseline drew the band.
    pub baseline_from: String,
    pub band: Band,
    pub phases: Vec<PhaseChange>,
    pub anomaly_windows: Vec<AnomalyWindow>,
    /// Seconds from the last revert until back inside the band for 3 s (None: not back,
    /// or nothing was reverted).
    pub recovery_s: Option<f64>,
    /// None when no fault was reverted.
    pub recovered: Option<bool>,
    pub faults: Vec<FaultEffect>,
    pub hypothesis: Vec<Verdict>,
    pub aborted: Option<String>,
    /// The scenario's probes: failures and each one's own recovery time.
    pub probes: Vec<ProbeRecord>,
    /// What counted as an anomaly and as recovered (the scenario's, or the defaults).
    pub thresholds: Thresholds,
    /// Seconds from the last revert until every probe of the hypothesis passed again.
    pub steady_recovery_s: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Band {
    pub goodput_per_s: [f64; 2],
    pub error_rate_max: f64,
    pub p99_ms_max: f64,
}

/// One phase against the baseline's, in percent (None where the baseline's value is 0).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PhaseChange {
    pub phase: String,
    pub measured: Option<Measured>,
    pub vs_baseline_percent: Change,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Change {
    pub goodput: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Consecutive seconds [`from_s`, `to_s`) outside the band, and why.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AnomalyWindow {
    pub from_s: usize,
    pub to_s: usize,
    pub why: Vec<String>,
}

impl AnomalyWindow {
    pub fn why(&self) -> String {
        self.why.join(", ")
    }
}

/// One fault: the anomaly windows over its interval, and what its agents' kernels saw.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FaultEffect {
    pub fault: String,
    pub id: String,
    pub applied_at_s: Option<f64>,
    pub reverted_at_s: Option<f64>,
    pub anomaly_windows: Vec<[usize; 2]>,
    pub kernel: Vec<KernelSeen>,
    pub error: String,
    /// The load while it was applied (whole seconds from its apply to its revert); None
    /// when it was not applied and reverted.
    pub load: Option<FaultLoad>,
    /// Seconds from its revert until the service was back inside the band (the
    /// thresholds' seconds in a row); None when not within the run or not reverted.
    pub recovery_s: Option<f64>,
}

/// What the load saw while one fault held: one row of the report per fault.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FaultLoad {
    pub requests: u64,
    pub errors: u64,
    /// The worst second's p99 (ms).
    pub peak_p99_ms: Option<f64>,
    /// Failed answers by class: "5xx", "4xx", "timeout", "connect", ...
    pub errors_by_class: std::collections::BTreeMap<String, u64>,
}

impl FaultLoad {
    pub fn error_share(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }
}

/// The load over whole seconds [floor(`applied`), ceil(`reverted`)), at least one.
pub fn fault_load(rows: &[SecondRow], applied: f64, reverted: f64) -> FaultLoad {
    let from = applied.max(0.0).floor() as usize;
    let to = (reverted.max(0.0).ceil() as usize).max(from + 1);
    let mut l = FaultLoad::default();
    for s in rows.iter().filter(|s| (from..to).contains(&s.second)) {
        l.requests += s.requests;
        l.errors += s.errors;
        if let Some(p) = s.p99_ms {
            l.peak_p99_ms = Some(l.peak_p99_ms.map_or(p, |m: f64| m.max(p)));
        }
        let classes = [
            ("4xx", s.s4xx),
            ("5xx", s.s5xx),
            ("connect", s.connect),
            ("timeout", s.timeout),
            ("io", s.io),
            ("protocol", s.protocol),
            ("rejected", s.rejected),
        ];
        for (class, n) in classes {
            if n > 0 {
                *l.errors_by_class.entry(class.to_owned()).or_default() += n;
            }
        }
    }
    l
}

/// One agent's kernel over the baseline phase and while its part of the fault held.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KernelSeen {
    pub agent: String,
    pub baseline: KernelWindow,
    pub during: KernelWindow,
    pub during_s: [f64; 2],
    /// Its drop counts are the whole kernel's (a lab of namespaces on one kernel).
    pub drops_whole_kernel: bool,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KernelWindow {
    pub retransmits_per_s: f64,
    /// Mean smoothed RTT over the samples (None without samples).
    pub srtt_ms: Option<f64>,
    pub drops_per_s: f64,
    pub connect_failures: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Sec {
    pub t: usize,
    pub requests: f64,
    pub errors: f64,
    pub p99: Option<f64>,
}

impl Sec {
    fn goodput(&self) -> f64 {
        self.requests - self.errors
    }

    fn error_rate(&self) -> f64 {
        if self.requests > 0.0 { self.errors / self.requests } else { 0.0 }
    }
}

impl From<SecondRow> for Sec {
    fn from(r: SecondRow) -> Self {
        Self { t: r.second, requests: r.requests as f64, errors: r.errors as f64, p99: r.p99_ms }
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { f64::midpoint(v[n / 2 - 1], v[n / 2]) }
}

/// (median, robust sigma)
fn robust(values: &[f64]) -> (f64, f64) {
    let mut v = values.to_vec();
    let m = median(&mut v);
    let mut dev: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    (m, 1.4826 * median(&mut dev))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bands {
    pub goodput: (f64, f64),
    pub error_rate_max: f64,
    pub p99_max: f64,
}

pub fn bands(baseline: &[Sec], t: &Thresholds) -> Bands {
    let (g, gs) = robust(&baseline.iter().map(Sec::goodput).collect::<Vec<_>>());
    let gh = (t.sigmas * gs).max(t.goodput_change * g).max(1.0);
    let (e, es) = robust(&baseline.iter().map(Sec::error_rate).collect::<Vec<_>>());
    let (p, ps) = robust(&baseline.iter().filter_map(|s| s.p99).collect::<Vec<_>>());
    Bands {
        goodput: (g - gh, g + gh),
        error_rate_max: e + (t.sigmas * es).max(t.error_rate_rise),
        p99_max: (p + t.sigmas * ps).max((1.0 + t.p99_rise) * p).max(p + t.p99_margin_ms),
    }
}

/// Why a second is outside the band (empty: inside).
pub fn outside(s: &Sec, b: &Bands) -> Vec<&'static str> {
    let mut why = Vec::new();
    if s.goodput() < b.goodput.0 {
        why.push("goodput low");
    }
    if s.goodput() > b.goodput.1 {
        why.push("goodput high");
    }
    if s.error_rate() > b.error_rate_max {
        why.push("errors");
    }
    if s.p99.is_some_and(|p| p > b.p99_max) {
        why.push("latency");
    }
    why
}

/// Anomaly windows as [start, end) seconds with their reasons, over seconds >= `from`.
pub fn windows(secs: &[Sec], b: &Bands, from: usize) -> Vec<(usize, usize, Vec<&'static str>)> {
    let mut out: Vec<(usize, usize, Vec<&'static str>)> = Vec::new();
    for s in secs.iter().filter(|s| s.t >= from) {
        let why = outside(s, b);
        if why.is_empty() {
            continue;
        }
        match out.last_mut() {
            // Adjacent, or one quiet second between: the same episode.
            Some(w) if s.t <= w.1 + 1 => {
                w.1 = s.t + 1;
                for r in why {
                    if !w.2.contains(&r) {
                        w.2.push(r);
                    }
                }
            }
            _ => out.push((s.t, s.t + 1, why)),
        }
    }
    out
}

/// Seconds from `reverted_at` until the service is back inside the band for `sustain`
/// seconds in a row; None if it never is within the run.
pub fn recovery(secs: &[Sec], b: &Bands, reverted_at: f64, sustain: usize) -> Option<f64> {
    let first = reverted_at.floor() as usize;
    let inside: Vec<(usize, bool)> =
        secs.iter().filter(|s| s.t >= first).map(|s| (s.t, outside(s, b).is_empty())).collect();
    for i in 0..inside.len() {
        if inside.len() - i >= sustain && inside[i..i + sustain].iter().all(|x| x.1) {
            return Some((inside[i].0 as f64 - reverted_at).max(0.0));
        }
    }
    None
}

fn read_run(dir: &Path) -> Result<(Summary, Vec<SecondRow>)> {
    Ok((Summary::read(dir)?, table::read::<SecondRow>(dir)?))
}

fn secs_of(rows: &[SecondRow]) -> Vec<Sec> {
    rows.iter().cloned().map(Sec::from).collect()
}

fn phase(summary: &Summary, name: &str) -> Option<(usize, usize)> {
    summary.phase(name).map(|p| (p.from_s as usize, p.to_s as usize))
}

/// Rows of `agent` with from <= t < to.
fn rows_of<'a, R>(
    rows: &'a [R],
    t_s: fn(&R) -> f64,
    of: fn(&R) -> &str,
    agent: &'a str,
    from: f64,
    to: f64,
) -> impl Iterator<Item = &'a R> + 'a {
    rows.iter().filter(move |r| of(r) == agent && (from..to).contains(&t_s(r)))
}

/// What the kernel of `agent` saw over [from, to).
fn kernel_window(
    kernel: &[KernelRow],
    drops: &[DropRow],
    agent: &str,
    from: f64,
    to: f64,
) -> KernelWindow {
    let secs = (to - from).max(1e-9);
    let (mut retransmits, mut samples, mut rtt_sum, mut failures) = (0.0, 0.0, 0.0, 0.0);
    for r in rows_of(kernel, |r| r.t_s, |r| &r.agent, agent, from, to) {
        retransmits += r.retransmits as f64;
        failures += r.connect_failures as f64;
        let n = r.srtt_samples as f64;
        samples += n;
        rtt_sum += n * r.srtt_mean_ms.unwrap_or(0.0);
    }
    // A fold from 0.0: an empty f64 sum() is -0.0.
    let dropped = rows_of(drops, |r| r.t_s, |r| &r.agent, agent, from, to)
        .map(|r| r.drops as f64)
        .fold(0.0, |a, b| a + b);
    KernelWindow {
        retransmits_per_s: retransmits / secs,
        srtt_ms: (samples > 0.0).then(|| rtt_sum / samples),
        drops_per_s: dropped / secs,
        connect_failures: failures,
    }
}

fn change(now: f64, before: f64) -> Option<f64> {
    (before != 0.0).then(|| (now / before - 1.0) * 100.0)
}

pub fn analyze(dir: &Path, baseline: Option<&Path>) -> Result<Analysis> {
    let (summary, rows) = read_run(dir)?;
    let secs = secs_of(&rows);
    let (ref_summary, ref_secs) = match baseline {
        Some(b) => {
            let (s, r) = read_run(b)?;
            (s, secs_of(&r))
        }
        None => (summary.clone(), secs.clone()),
    };
    let Some((b0, b1)) = phase(&ref_summary, "baseline") else {
        bail!("{}: summary.json has no baseline phase", dir.display())
    };
    let base: Vec<Sec> = ref_secs.iter().filter(|s| (b0..b1).contains(&s.t)).cloned().collect();
    if base.len() < 3 {
        bail!(
            "the baseline phase has {} seconds of data; at least 3 are needed for a band",
            base.len()
        );
    }
    let t = summary.thresholds.clone();
    let b = bands(&base, &t);
    let (_, w1) = phase(&summary, "warmup").unwrap_or((0, 0));
    let found = windows(&secs, &b, w1);
    let last_revert = summary
        .faults
        .iter()
        .filter_map(|f| f.reverted_at_s)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let sustain = t.recovered_after_s.max(1) as usize;
    let recovered = last_revert.map(|r| recovery(&secs, &b, r, sustain));
    let base_m = ref_summary.phase("baseline").map(|p| p.measured.clone()).unwrap_or_default();
    let mut phases = Vec::new();
    for name in ["baseline", "fault", "recovery"] {
        let m = summary.phase(name).map(|p| &p.measured);
        let pct = |now: fn(&Measured) -> f64| m.and_then(|m| change(now(m), now(&base_m)));
        phases.push(PhaseChange {
            phase: name.into(),
            measured: m.cloned(),
            vs_baseline_percent: Change {
                goodput: pct(Measured::goodput),
                p50: pct(|m| m.p50_ms),
                p95: pct(|m| m.p95_ms),
                p99: pct(|m| m.p99_ms),
            },
        });
    }
    // Each fault: the anomaly windows that overlap its interval, and what the kernels of
    // its agents saw then (baseline: this run's baseline phase). A run without kernel
    // metrics has no kernel.csv.
    let (kernel, drops) =
        (table::read_if_present::<KernelRow>(dir)?, table::read_if_present::<DropRow>(dir)?);
    // Agents whose drop counts are the whole kernel's (a lab of namespaces on one kernel).
    let whole_kernel: std::collections::BTreeSet<String> = table::read_if_present::<AgentRow>(dir)?
        .into_iter()
        .filter(|a| a.drops_whole_kernel)
        .map(|a| a.agent)
        .collect();
    let (k0, k1) = phase(&summary, "baseline").unwrap_or((b0, b1));
    let per_fault: Vec<FaultEffect> = summary
        .faults
        .iter()
        .map(|f| {
            let (a, r) = (f.applied_at_s, f.reverted_at_s);
            let overlapping: Vec<[usize; 2]> = match (a, r) {
                (Some(a), Some(r)) => found
                    .iter()
                    .filter(|w| (w.0 as f64) < r + 1.0 && (w.1 as f64) > a)
                    .map(|w| [w.0, w.1])
                    .collect(),
                _ => Vec::new(),
            };
            let seen: Vec<KernelSeen> = match (a, r) {
                (Some(a), Some(r)) if r > a => f
                    .agents
                    .iter()
                    .map(|agent| {
                        // The agent's own apply and revert, where the run placed them on its clock.
                        let (a, r) =
                            match f.part_of(agent).map(|p| (p.applied_at_s, p.reverted_at_s)) {
                                Some((Some(pa), Some(pr))) if pr > pa => (pa, pr),
                                _ => (a, r),
                            };
                        KernelSeen {
                            agent: agent.clone(),
                            baseline: kernel_window(&kernel, &drops, agent, k0 as f64, k1 as f64),
                            during: kernel_window(&kernel, &drops, agent, a, r + 1.0),
                            during_s: [a, r + 1.0],
                            drops_whole_kernel: whole_kernel.contains(agent),
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            };
            FaultEffect {
                fault: f.fault.clone(),
                id: f.id.clone(),
                applied_at_s: a,
                reverted_at_s: r,
                anomaly_windows: overlapping,
                kernel: seen,
                error: f.error.clone(),
                load: match (a, r) {
                    (Some(a), Some(r)) => Some(fault_load(&rows, a, r)),
                    _ => None,
                },
                recovery_s: r.and_then(|r| recovery(&secs, &b, r, sustain)),
            }
        })
        .collect();
    Ok(Analysis {
        run: dir.display().to_string(),
        baseline_from: baseline.map_or_else(|| "this run".to_owned(), |b| b.display().to_string()),
        band: Band {
            goodput_per_s: [b.goodput.0, b.goodput.1],
            error_rate_max: b.error_rate_max,
            p99_ms_max: b.p99_max,
        },
        phases,
        anomaly_windows: found
            .into_iter()
            .map(|w| AnomalyWindow {
                from_s: w.0,
                to_s: w.1,
                why: w.2.into_iter().map(str::to_owned).collect(),
            })
            .collect(),
        recovery_s: recovered.flatten(),
        recovered: recovered.map(|r| r.is_some()),
        faults: per_fault,
        hypothesis: summary.hypothesis,
        aborted: summary.aborted,
        probes: summary.probes,
        thresholds: t,
        steady_recovery_s: summary.steady_recovery_s,
    })
}

/// The readable form of the analysis.
pub fn print(a: &Analysis) {
    println!("run {} (band from {})", a.run, a.baseline_from);
    let band = &a.band;
    println!(
        "band: goodput {:.1}..{:.1}/s, error rate <= {:.2} %, p99 <= {:.2} ms",
        band.goodput_per_s[0],
        band.goodput_per_s[1],
        band.error_rate_max * 100.0,
        band.p99_ms_max
    );
    let t = &a.thresholds;
    if *t != Thresholds::default() {
        println!(
            "thresholds (the scenario's): goodput ±{:.0} %, errors +{:.1} points, p99 +{:.0} % or +{:.0} ms, {} sigmas, recovered after {} s",
            t.goodput_change * 100.0,
            t.error_rate_rise * 100.0,
            t.p99_rise * 100.0,
            t.p99_margin_ms,
            t.sigmas,
            t.recovered_after_s
        );
    }
    // Each figure itself, its change against the baseline beside it: "+35666.3 %" alone
    // says nothing of whether 3 ms became 1 s.
    let with =
        |abs: String, v: Option<f64>| v.map_or(abs.clone(), |x| format!("{abs} ({x:+.1} %)"));
    for p in &a.phases {
        let c = &p.vs_baseline_percent;
        let m = p.measured.clone().unwrap_or_default();
        let goodput = m.goodput();
        println!(
            "{:<9} goodput {}  p50 {}  p95 {}  p99 {}  errors {:.2} %",
            p.phase,
            with(format!("{goodput:.1}/s"), c.goodput),
            with(format!("{:.1} ms", m.p50_ms), c.p50),
            with(format!("{:.1} ms", m.p95_ms), c.p95),
            with(format!("{:.1} ms", m.p99_ms), c.p99),
            m.error_rate * 100.0
        );
    }
    for w in &a.anomaly_windows {
        println!("anomaly   {}s..{}s  {}", w.from_s, w.to_s, w.why());
    }
    let listed = if a.anomaly_windows.is_empty() { "" } else { "; any anomaly is listed above" };
    match (a.recovered, a.recovery_s) {
        // "0.0 s" read as "instant" beside anomalies listed above: say what is measured.
        (Some(true), Some(r)) if r < 0.5 => println!(
            "recovery  at once after the last revert: inside the baseline's band from that second on, {} s in a row{listed}",
            a.thresholds.recovered_after_s
        ),
        (Some(true), Some(r)) => println!(
            "recovery  {r:.1} s after the last revert (then inside the baseline's band {} s in a row)",
            a.thresholds.recovered_after_s
        ),
        (Some(false), _) => println!("recovery  not within the run"),
        _ => println!("recovery  - (no fault was reverted)"),
    }
    if let Some(r) = a.steady_recovery_s {
        println!(
            "steady    every probe of the hypothesis passing again {r:.1} s after the last revert"
        );
    }
    for p in &a.probes {
        let again = match (p.recovered, p.recovery_s) {
            (Some(true), Some(r)) => format!("passing again {r:.1} s after the last revert"),
            (Some(false), _) => "NOT passing again by the end of the run".to_owned(),
            _ => "nothing was reverted".to_owned(),
        };
        println!(
            "probe     {}: {} of {} samples failed; {again} ({})",
            p.name, p.failures, p.samples, p.asks
        );
    }
    // One line per fault: what the load saw while it held, and its own recovery.
    for f in &a.faults {
        let Some(l) = &f.load else { continue };
        let classes: Vec<String> =
            l.errors_by_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let errors = if l.errors == 0 {
            "no errors".to_owned()
        } else {
            format!("errors {:.1} % ({})", l.error_share() * 100.0, classes.join(", "))
        };
        let back = f.recovery_s.map_or_else(
            || "not back in the band within the run".to_owned(),
            |r| format!("back in the band {r:.1} s after its revert"),
        );
        println!(
            "fault     {} {}: {} requests, {errors}, peak p99 {}; {back}",
            f.id,
            f.fault,
            l.requests,
            l.peak_p99_ms.map_or("-".to_owned(), |p| format!("{p:.1} ms"))
        );
    }
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.1}"));
    for f in &a.faults {
        for k in &f.kernel {
            let (b, d) = (&k.baseline, &k.during);
            println!(
                "kernel    {} {} on {}: retransmits {:.1} -> {:.1}/s, srtt {} -> {} ms, drops {:.1} -> {:.1}/s{}, failed connects {}",
                f.id,
                f.fault,
                k.agent,
                b.retransmits_per_s,
                d.retransmits_per_s,
                ms(b.srtt_ms),
                ms(d.srtt_ms),
                b.drops_per_s,
                d.drops_per_s,
                if k.drops_whole_kernel { " (whole kernel, not this host's alone)" } else { "" },
                d.connect_failures
            );
        }
    }
    for h in &a.hypothesis {
        println!(
            "hypothesis {:<24} {:<9} {:<14} {}",
            h.hypothesis,
            h.phase,
            super::condition_value(&h.hypothesis, h.value),
            if h.holds { "✓ holds" } else { "✗ FAILS" }
        );
    }
    if let Some(r) = &a.aborted {
        println!("aborted: {r}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_view_of_a_fault_is_its_agents_counters_over_its_interval() {
        let kernel: Vec<KernelRow> = table::parse(
            "t_s,agent,peer,srtt_samples,srtt_mean_ms,retransmits,connects,connect_failures\n\
             1.5,h2,10.0.0.1,10,1.000,0,3,0\n2.5,h2,10.0.0.1,10,1.000,0,0,0\n\
             10.5,h2,10.0.0.1,10,2.000,5,0,1\n12.5,h2,10.0.0.1,30,6.000,7,0,0\n12.5,h1,10.0.0.2,50,9.000,100,0,0\n",
        )
        .unwrap();
        let drops: Vec<DropRow> = table::parse("t_s,agent,reason,drops\n11.0,h2,NOT_SPECIFIED,8\n13.9,h2,NOT_SPECIFIED,4\n14.0,h2,NOT_SPECIFIED,99\n").unwrap();
        let during = kernel_window(&kernel, &drops, "h2", 10.0, 14.0);
        assert_eq!(during.retransmits_per_s, 3.0, "12 retransmits in 4 s, h1's not counted");
        assert_eq!(during.srtt_ms, Some(5.0), "the mean over samples: (10 x 2 + 30 x 6) / 40");
        assert_eq!(during.drops_per_s, 3.0, "12 drops in [10, 14); the one at 14.0 is outside");
        assert_eq!(during.connect_failures, 1.0);
        let quiet = kernel_window(&kernel, &drops, "h2", 0.0, 3.0);
        assert_eq!(
            (quiet.retransmits_per_s, quiet.srtt_ms, quiet.drops_per_s),
            (0.0, Some(1.0), 0.0)
        );
        assert!(quiet.drops_per_s.is_sign_positive(), "prints as 0.0, not -0.0");
        assert_eq!(
            kernel_window(&kernel, &drops, "h9", 0.0, 20.0).srtt_ms,
            None,
            "no samples: no RTT"
        );
    }

    fn sec(t: usize, requests: f64, errors: f64, p99: f64) -> Sec {
        Sec { t, requests, errors, p99: Some(p99) }
    }

    /// 10 quiet seconds, a fault from 10 to 15 (errors, then latency), recovery at 17.
    fn run() -> Vec<Sec> {
        let mut v = Vec::new();
        for t in 0..30 {
            let jitter = [0.0, 1.0, -1.0, 2.0, -2.0][t % 5];
            let s = match t {
                10..=12 => sec(t, 100.0, 60.0, 300.0),
                13..=16 => sec(t, 100.0, 0.0, 40.0 + jitter),
                _ => sec(t, 100.0 + jitter, 0.0, 5.0 + jitter / 10.0),
            };
            v.push(s);
        }
        v
    }

    #[test]
    fn the_band_is_robust_and_has_floors() {
        let mut base: Vec<Sec> = run().into_iter().take(10).collect();
        let b = bands(&base, &Thresholds::default());
        assert!(b.goodput.0 > 90.0 && b.goodput.1 < 110.0, "{b:?}");
        assert!((b.error_rate_max - 0.01).abs() < 1e-9, "a clean baseline allows 1 point: {b:?}");
        // One wild second in the baseline barely moves it.
        base[3] = sec(3, 10.0, 9.0, 900.0);
        let b2 = bands(&base, &Thresholds::default());
        assert!(b2.goodput.0 > 85.0 && b2.p99_max < 20.0, "{b2:?}");
    }

    /// Issue 32: one row per fault — its peak p99, errors by class, over its seconds only.
    #[test]
    fn a_fault_s_load_is_its_own_seconds() {
        let row = |second: usize, requests: u64, s5xx: u64, timeout: u64, p99: f64| SecondRow {
            second,
            requests,
            errors: s5xx + timeout,
            s5xx,
            timeout,
            p99_ms: Some(p99),
            ..SecondRow::default()
        };
        let rows = [
            row(3, 100, 0, 0, 5.0),
            row(4, 100, 60, 1, 300.0),
            row(5, 100, 40, 0, 120.0),
            row(6, 100, 0, 0, 900.0),
        ];
        let l = fault_load(&rows, 4.2, 5.9);
        assert_eq!((l.requests, l.errors, l.peak_p99_ms), (200, 101, Some(300.0)));
        assert_eq!(l.errors_by_class, [("5xx".to_owned(), 100), ("timeout".to_owned(), 1)].into());
        assert!((l.error_share() - 0.505).abs() < 1e-9);
        // A fault shorter than a second still has its second.
        assert_eq!(fault_load(&rows, 3.1, 3.4).requests, 100);
    }

    /// Issue 33: a scenario's thresholds widen the band: "a 50 % throughput drop" does not
    /// flag a 30 % one, and flags 60 %.
    #[test]
    fn thresholds_set_what_counts_as_an_anomaly() {
        let base: Vec<Sec> = (0..10).map(|t| sec(t, 100.0, 0.0, 5.0)).collect();
        let t = Thresholds { goodput_change: 0.5, error_rate_rise: 0.1, ..Thresholds::default() };
        let b = bands(&base, &t);
        assert!(outside(&sec(10, 70.0, 0.0, 5.0), &b).is_empty(), "{b:?}");
        assert_eq!(outside(&sec(11, 40.0, 0.0, 5.0), &b), ["goodput low"]);
        // 5 % errors is inside a 10-point allowance, 15 % is not.
        assert!(outside(&sec(12, 100.0, 5.0, 5.0), &b).is_empty(), "{b:?}");
        assert!(outside(&sec(13, 100.0, 15.0, 5.0), &b).contains(&"errors"));
        // The defaults flag the 30 % drop.
        let d = bands(&base, &Thresholds::default());
        assert_eq!(outside(&sec(10, 70.0, 0.0, 5.0), &d), ["goodput low"]);
    }

    #[test]
    fn windows_cover_the_fault_and_recovery_is_timed() {
        let v = run();
        let b = bands(&v[..10], &Thresholds::default());
        let w = windows(&v, &b, 0);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!((w[0].0, w[0].1), (10, 17));
        assert!(
            w[0].2.contains(&"errors")
                && w[0].2.contains(&"latency")
                && w[0].2.contains(&"goodput low")
        );
        // Reverted at 14.5: back inside the band from second 17.
        assert_eq!(recovery(&v, &b, 14.5, 3), Some(2.5));
        // Never back: a run that ends in trouble.
        let mut bad = v.clone();
        for s in bad.iter_mut().skip(17) {
            s.errors = 50.0;
        }
        assert_eq!(recovery(&bad, &b, 14.5, 3), None);
    }

    #[test]
    fn csv_columns_are_found_by_name() {
        let read_seconds = |csv: &str| {
            table::parse::<SecondRow>(csv)
                .map(|rows| rows.into_iter().map(Sec::from).collect::<Vec<_>>())
        };
        let s = read_seconds(
            "second,requests,errors,late,p50_ms,p99_ms\n0,10,1,0,1.0,2.5\n1,10,0,0,,\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].requests, s[0].errors, s[0].p99), (10.0, 1.0, Some(2.5)));
        assert_eq!(s[1].p99, None);
        assert!(read_seconds("a,b\n").is_err());
    }
}
