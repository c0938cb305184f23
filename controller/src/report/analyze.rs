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
//! the band.
//!
//! Each fault's effect as the kernel saw it: on each agent the fault was placed on, the
//! TCP retransmits per second, the smoothed RTT (mean over its samples), kernel drops per
//! second and failed connects while it was applied (each kernel.csv sample counts the
//! second before it, so the window runs to one second after the revert), beside the same
//! over the baseline phase (kernel.csv and drops.csv of the run).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

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

pub fn read_seconds(csv: &str) -> Result<Vec<Sec>> {
    read_columns(csv, &["second", "requests", "errors", "p99_ms"])?
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            Ok(Sec {
                t: row[0].with_context(|| format!("seconds.csv line {}: no second", i + 2))? as usize,
                requests: row[1].unwrap_or(0.0),
                errors: row[2].unwrap_or(0.0),
                p99: row[3],
            })
        })
        .collect()
}

/// The named columns of seconds.csv, row by row (empty cells are None).
pub fn read_columns(csv: &str, names: &[&str]) -> Result<Vec<Vec<Option<f64>>>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().context("seconds.csv is empty")?.split(',').collect();
    let cols: Vec<usize> = names.iter().map(|n| header.iter().position(|h| h == n).with_context(|| format!("seconds.csv has no {n} column"))).collect::<Result<_>>()?;
    Ok(lines.map(|l| {
        let f: Vec<&str> = l.split(',').collect();
        cols.iter().map(|c| f.get(*c).and_then(|v| v.parse().ok())).collect()
    }).collect())
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

pub fn bands(baseline: &[Sec]) -> Bands {
    let (g, gs) = robust(&baseline.iter().map(Sec::goodput).collect::<Vec<_>>());
    let gh = (3.0 * gs).max(0.05 * g).max(1.0);
    let (e, es) = robust(&baseline.iter().map(Sec::error_rate).collect::<Vec<_>>());
    let (p, ps) = robust(&baseline.iter().filter_map(|s| s.p99).collect::<Vec<_>>());
    Bands { goodput: (g - gh, g + gh), error_rate_max: e + (3.0 * es).max(0.01), p99_max: (p + 3.0 * ps).max(2.0 * p).max(p + 10.0) }
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
    let inside: Vec<(usize, bool)> = secs.iter().filter(|s| s.t >= first).map(|s| (s.t, outside(s, b).is_empty())).collect();
    for i in 0..inside.len() {
        if inside.len() - i >= sustain && inside[i..i + sustain].iter().all(|x| x.1) {
            return Some((inside[i].0 as f64 - reverted_at).max(0.0));
        }
    }
    None
}

fn read_run(dir: &Path) -> Result<(Value, Vec<Sec>)> {
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).with_context(|| format!("{}: not a run directory (no summary.json)", dir.display()))?)
        .with_context(|| format!("{}/summary.json", dir.display()))?;
    let secs = read_seconds(&std::fs::read_to_string(dir.join("seconds.csv")).with_context(|| format!("{}/seconds.csv", dir.display()))?)?;
    Ok((summary, secs))
}

fn phase(summary: &Value, name: &str) -> Option<(usize, usize)> {
    summary["phases"].as_array()?.iter().find(|p| p["name"] == name).map(|p| (p["from_s"].as_u64().unwrap_or(0) as usize, p["to_s"].as_u64().unwrap_or(0) as usize))
}

/// kernel.csv and drops.csv rows by column name (times in s on the run's clock).
struct Table {
    rows: Vec<Vec<String>>,
    head: Vec<String>,
}

impl Table {
    fn read(path: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    fn parse(text: &str) -> Self {
        let mut lines = text.lines();
        let head = lines.next().unwrap_or("").split(',').map(str::to_owned).collect();
        Self { rows: lines.map(|l| l.split(',').map(str::to_owned).collect()).collect(), head }
    }

    fn col(&self, name: &str) -> Option<usize> {
        self.head.iter().position(|h| h == name)
    }

    /// Rows of `agent` with from <= t < to, as (row, column lookup).
    fn window<'a>(&'a self, agent: &'a str, from: f64, to: f64) -> impl Iterator<Item = &'a Vec<String>> + 'a {
        let (t, a) = (self.col("t_s"), self.col("agent"));
        self.rows.iter().filter(move |r| {
            let time = t.and_then(|i| r.get(i)).and_then(|v| v.parse::<f64>().ok());
            a.and_then(|i| r.get(i)).is_some_and(|v| v == agent) && time.is_some_and(|x| x >= from && x < to)
        })
    }

    fn num(&self, row: &[String], name: &str) -> f64 {
        self.col(name).and_then(|i| row.get(i)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }
}

/// The agents of agents.csv whose drop counts are the whole kernel's.
fn whole_kernel_drops(path: &Path) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let Some(col) = lines.next().and_then(|h| h.split(',').position(|c| c == "drops_whole_kernel")) else { return std::collections::BTreeSet::new() };
    lines.filter(|l| l.split(',').nth(col) == Some("true")).filter_map(|l| l.split(',').next().map(str::to_owned)).collect()
}

/// What the kernel of `agent` saw over [from, to).
fn kernel_window(kernel: &Table, drops: &Table, agent: &str, from: f64, to: f64) -> Value {
    let secs = (to - from).max(1e-9);
    let (mut retransmits, mut samples, mut rtt_sum, mut failures) = (0.0, 0.0, 0.0, 0.0);
    for r in kernel.window(agent, from, to) {
        retransmits += kernel.num(r, "retransmits");
        failures += kernel.num(r, "connect_failures");
        let n = kernel.num(r, "srtt_samples");
        samples += n;
        rtt_sum += n * kernel.num(r, "srtt_mean_ms");
    }
    // A fold from 0.0: an empty f64 sum() is -0.0.
    let dropped = drops.window(agent, from, to).map(|r| drops.num(r, "drops")).fold(0.0, |a, b| a + b);
    json!({
        "retransmits_per_s": retransmits / secs,
        "srtt_ms": if samples > 0.0 { json!(rtt_sum / samples) } else { Value::Null },
        "drops_per_s": dropped / secs,
        "connect_failures": failures,
    })
}

fn change(now: f64, before: f64) -> Value {
    if before == 0.0 { Value::Null } else { json!((now / before - 1.0) * 100.0) }
}

pub fn analyze(dir: &Path, baseline: Option<&Path>) -> Result<Value> {
    let (summary, secs) = read_run(dir)?;
    let (ref_summary, ref_secs) = match baseline {
        Some(b) => read_run(b)?,
        None => (summary.clone(), secs.clone()),
    };
    let Some((b0, b1)) = phase(&ref_summary, "baseline") else { bail!("{}: summary.json has no baseline phase", dir.display()) };
    let base: Vec<Sec> = ref_secs.iter().filter(|s| (b0..b1).contains(&s.t)).cloned().collect();
    if base.len() < 3 {
        bail!("the baseline phase has {} seconds of data; at least 3 are needed for a band", base.len());
    }
    let b = bands(&base);
    let (_, w1) = phase(&summary, "warmup").unwrap_or((0, 0));
    let found = windows(&secs, &b, w1);
    let faults = summary["faults"].as_array().cloned().unwrap_or_default();
    let last_revert = faults.iter().filter_map(|f| f["reverted_at_s"].as_f64()).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let recovered = last_revert.map(|r| recovery(&secs, &b, r, 3));
    let measured = |s: &Value, name: &str| s["phases"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name)).map_or(Value::Null, |p| p["measured"].clone());
    let base_m = measured(&ref_summary, "baseline");
    let mut phases = Vec::new();
    for name in ["baseline", "fault", "recovery"] {
        let m = measured(&summary, name);
        let good = |v: &Value| v["rate"].as_f64().unwrap_or(0.0) * (1.0 - v["error_rate"].as_f64().unwrap_or(0.0));
        phases.push(json!({
            "phase": name,
            "measured": m,
            "vs_baseline_percent": {
                "goodput": change(good(&m), good(&base_m)),
                "p50": change(m["p50_ms"].as_f64().unwrap_or(0.0), base_m["p50_ms"].as_f64().unwrap_or(0.0)),
                "p95": change(m["p95_ms"].as_f64().unwrap_or(0.0), base_m["p95_ms"].as_f64().unwrap_or(0.0)),
                "p99": change(m["p99_ms"].as_f64().unwrap_or(0.0), base_m["p99_ms"].as_f64().unwrap_or(0.0)),
            },
        }));
    }
    // Each fault: the anomaly windows that overlap its interval, and what the kernels of
    // its agents saw then (baseline: this run's baseline phase).
    let (kernel, drops) = (Table::read(&dir.join("kernel.csv")), Table::read(&dir.join("drops.csv")));
    // Agents whose drop counts are the whole kernel's (a lab of namespaces on one kernel).
    let whole_kernel = whole_kernel_drops(&dir.join("agents.csv"));
    let (k0, k1) = phase(&summary, "baseline").unwrap_or((b0, b1));
    let per_fault: Vec<Value> = faults
        .iter()
        .map(|f| {
            let (a, r) = (f["applied_at_s"].as_f64(), f["reverted_at_s"].as_f64());
            let overlapping: Vec<Value> = match (a, r) {
                (Some(a), Some(r)) => found.iter().filter(|w| (w.0 as f64) < r + 1.0 && (w.1 as f64) > a).map(|w| json!([w.0, w.1])).collect(),
                _ => Vec::new(),
            };
            let seen: Vec<Value> = match (a, r) {
                (Some(a), Some(r)) if r > a => f["agents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|agent| {
                        // The agent's own apply and revert, where the run placed them on its clock.
                        let part = f["parts"].as_array().into_iter().flatten().find(|p| p["agent"] == agent);
                        let (a, r) = match part.map(|p| (p["applied_at_s"].as_f64(), p["reverted_at_s"].as_f64())) {
                            Some((Some(pa), Some(pr))) if pr > pa => (pa, pr),
                            _ => (a, r),
                        };
                        json!({"agent": agent, "baseline": kernel_window(&kernel, &drops, agent, k0 as f64, k1 as f64), "during": kernel_window(&kernel, &drops, agent, a, r + 1.0), "during_s": [a, r + 1.0], "drops_whole_kernel": whole_kernel.contains(agent)})
                    })
                    .collect(),
                _ => Vec::new(),
            };
            json!({"fault": f["fault"], "id": f["id"], "applied_at_s": a, "reverted_at_s": r, "anomaly_windows": overlapping, "kernel": seen, "error": f["error"]})
        })
        .collect();
    Ok(json!({
        "run": dir.display().to_string(),
        "baseline_from": baseline.map_or_else(|| "this run".to_owned(), |b| b.display().to_string()),
        "band": {"goodput_per_s": [b.goodput.0, b.goodput.1], "error_rate_max": b.error_rate_max, "p99_ms_max": b.p99_max},
        "phases": phases,
        "anomaly_windows": found.iter().map(|w| json!({"from_s": w.0, "to_s": w.1, "why": w.2})).collect::<Vec<_>>(),
        "recovery_s": recovered.flatten(),
        "recovered": recovered.map(|r| r.is_some()),
        "faults": per_fault,
        "hypothesis": summary["hypothesis"],
        "aborted": summary["aborted"],
    }))
}

/// The readable form of `analyze`'s JSON.
pub fn print(a: &Value) {
    println!("run {} (band from {})", a["run"].as_str().unwrap_or(""), a["baseline_from"].as_str().unwrap_or(""));
    let band = &a["band"];
    println!(
        "band: goodput {:.1}..{:.1}/s, error rate <= {:.2} %, p99 <= {:.2} ms",
        band["goodput_per_s"][0].as_f64().unwrap_or(0.0),
        band["goodput_per_s"][1].as_f64().unwrap_or(0.0),
        band["error_rate_max"].as_f64().unwrap_or(0.0) * 100.0,
        band["p99_ms_max"].as_f64().unwrap_or(0.0)
    );
    let pct = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:+.1} %"));
    for p in a["phases"].as_array().into_iter().flatten() {
        let m = &p["measured"];
        let c = &p["vs_baseline_percent"];
        println!(
            "{:<9} goodput {:>9} p50 {:>9} p95 {:>9} p99 {:>9}  errors {:.2} %",
            p["phase"].as_str().unwrap_or(""),
            pct(&c["goodput"]),
            pct(&c["p50"]),
            pct(&c["p95"]),
            pct(&c["p99"]),
            m["error_rate"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    for w in a["anomaly_windows"].as_array().into_iter().flatten() {
        println!("anomaly   {}s..{}s  {}", w["from_s"], w["to_s"], w["why"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default());
    }
    match (a["recovered"].as_bool(), a["recovery_s"].as_f64()) {
        (Some(true), Some(r)) => println!("recovery  {r:.1} s after the last revert"),
        (Some(false), _) => println!("recovery  not within the run"),
        _ => println!("recovery  - (no fault was reverted)"),
    }
    let ms = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.1}"));
    for f in a["faults"].as_array().into_iter().flatten() {
        for k in f["kernel"].as_array().into_iter().flatten() {
            let (b, d) = (&k["baseline"], &k["during"]);
            println!(
                "kernel    {} {} on {}: retransmits {:.1} -> {:.1}/s, srtt {} -> {} ms, drops {:.1} -> {:.1}/s{}, failed connects {}",
                f["id"].as_str().unwrap_or(""),
                f["fault"].as_str().unwrap_or(""),
                k["agent"].as_str().unwrap_or(""),
                b["retransmits_per_s"].as_f64().unwrap_or(0.0),
                d["retransmits_per_s"].as_f64().unwrap_or(0.0),
                ms(&b["srtt_ms"]),
                ms(&d["srtt_ms"]),
                b["drops_per_s"].as_f64().unwrap_or(0.0),
                d["drops_per_s"].as_f64().unwrap_or(0.0),
                if k["drops_whole_kernel"] == true { " (whole kernel, not this host's alone)" } else { "" },
                d["connect_failures"]
            );
        }
    }
    for h in a["hypothesis"].as_array().into_iter().flatten() {
        println!("hypothesis {:<24} {:<9} {}", h["hypothesis"].as_str().unwrap_or(""), h["phase"].as_str().unwrap_or(""), if h["holds"] == true { "holds" } else { "FAILS" });
    }
    if let Some(r) = a["aborted"].as_str() {
        println!("aborted: {r}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_view_of_a_fault_is_its_agents_counters_over_its_interval() {
        let kernel = Table::parse(
            "t_s,agent,peer,srtt_samples,srtt_mean_ms,retransmits,connects,connect_failures\n\
             1.5,h2,10.0.0.1,10,1.000,0,3,0\n2.5,h2,10.0.0.1,10,1.000,0,0,0\n\
             10.5,h2,10.0.0.1,10,2.000,5,0,1\n12.5,h2,10.0.0.1,30,6.000,7,0,0\n12.5,h1,10.0.0.2,50,9.000,100,0,0\n",
        );
        let drops = Table::parse("t_s,agent,reason,drops\n11.0,h2,NOT_SPECIFIED,8\n13.9,h2,NOT_SPECIFIED,4\n14.0,h2,NOT_SPECIFIED,99\n");
        let during = kernel_window(&kernel, &drops, "h2", 10.0, 14.0);
        assert_eq!(during["retransmits_per_s"], 3.0, "12 retransmits in 4 s, h1's not counted");
        assert_eq!(during["srtt_ms"], 5.0, "the mean over samples: (10 x 2 + 30 x 6) / 40");
        assert_eq!(during["drops_per_s"], 3.0, "12 drops in [10, 14); the one at 14.0 is outside");
        assert_eq!(during["connect_failures"], 1.0);
        let quiet = kernel_window(&kernel, &drops, "h2", 0.0, 3.0);
        assert_eq!((quiet["retransmits_per_s"].as_f64(), quiet["srtt_ms"].as_f64(), quiet["drops_per_s"].as_f64()), (Some(0.0), Some(1.0), Some(0.0)));
        assert!(quiet["drops_per_s"].as_f64().unwrap().is_sign_positive(), "prints as 0.0, not -0.0");
        assert_eq!(kernel_window(&kernel, &drops, "h9", 0.0, 20.0)["srtt_ms"], Value::Null, "no samples: no RTT");
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
        let b = bands(&base);
        assert!(b.goodput.0 > 90.0 && b.goodput.1 < 110.0, "{b:?}");
        assert!((b.error_rate_max - 0.01).abs() < 1e-9, "a clean baseline allows 1 point: {b:?}");
        // One wild second in the baseline barely moves it.
        base[3] = sec(3, 10.0, 9.0, 900.0);
        let b2 = bands(&base);
        assert!(b2.goodput.0 > 85.0 && b2.p99_max < 20.0, "{b2:?}");
    }

    #[test]
    fn windows_cover_the_fault_and_recovery_is_timed() {
        let v = run();
        let b = bands(&v[..10]);
        let w = windows(&v, &b, 0);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!((w[0].0, w[0].1), (10, 17));
        assert!(w[0].2.contains(&"errors") && w[0].2.contains(&"latency") && w[0].2.contains(&"goodput low"));
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
        let s = read_seconds("second,requests,errors,late,p50_ms,p99_ms\n0,10,1,0,1.0,2.5\n1,10,0,0,,\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].requests, s[0].errors, s[0].p99), (10.0, 1.0, Some(2.5)));
        assert_eq!(s[1].p99, None);
        assert!(read_seconds("a,b\n").is_err());
    }
}
