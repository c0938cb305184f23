//! `faultline report RUN`: a self-contained HTML report (inline SVG plots, no scripts,
//! no network) and PNG files of the same plots, rendered from the same SVG by resvg.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context, Result};

pub mod analyze;
pub mod llm;

use analyze::{Analysis, Sec};

use crate::{
    run::files::{FaultRecord, KernelRow, PartRecord, ProbeRecord, ProbeRow, SecondRow, Summary},
    table,
};

/// Where report.html takes an LLM-written summary (llm.rs fills it in later).
pub const LLM_MARKER: &str = "<!-- faultline:llm-summary -->";

const W: f64 = 900.0;
const H: f64 = 300.0;
const L: f64 = 64.0;
const R: f64 = 16.0;
/// Top margin: the title, then a row of legend.
const T: f64 = 48.0;
const B: f64 = 40.0;
/// How wide a 12 px `DejaVu Sans` character is, about: labels are placed so they do not meet.
const LABEL_CHAR_W: f64 = 7.2;
/// Shades: a fault's interval, an anomaly window.
pub const FAULT_FILL: &str = "#e4572e";
const ANOMALY_FILL: &str = "#f3a712";
/// An anomaly window's strip along the top of a plot, px.
const ANOMALY_STRIP: f64 = 6.0;

/// The run's verdict at a glance: (CSS class, text). Aborted beats failed beats passed;
/// a run with no hypothesis is not judged.
pub fn verdict(summary: &Summary, an: &Analysis) -> (&'static str, String) {
    let failed: Vec<&crate::run::files::Verdict> =
        an.hypothesis.iter().filter(|h| !h.holds).collect();
    match (&summary.aborted, failed.len(), an.hypothesis.len()) {
        (Some(why), _, _) => ("aborted", format!("ABORTED: {why}")),
        (None, 0, 0) => ("unjudged", "RAN: no hypothesis to judge it by".to_owned()),
        (None, 0, n) => ("passed", format!("PASSED: all {n} conditions held")),
        (None, f, n) => (
            "failed",
            format!(
                "FAILED: {f} of {n} conditions did not hold ({})",
                failed
                    .iter()
                    .map(|h| format!(
                        "{} in {}: {}",
                        h.hypothesis,
                        h.phase,
                        condition_value(&h.hypothesis, h.value)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
    }
}

/// A condition's measured value in the condition's own unit: `0.6360` of `error_rate < 5%`
/// is `63.60 %`, a p99 is in ms, a rate in requests/s.
pub fn condition_value(condition: &str, value: f64) -> String {
    use crate::run::scenario::Metric;
    match crate::run::scenario::parse_condition(condition).map(|c| c.metric) {
        Ok(Metric::ErrorRate) => format!("{:.2} %", value * 100.0),
        Ok(Metric::P50 | Metric::P90 | Metric::P99) => format!("{value:.1} ms"),
        Ok(Metric::Rate) => format!("{value:.1} requests/s"),
        Err(_) if condition.starts_with("probe ") => format!("{value} failed samples"),
        Err(_) => format!("{value:.4}"),
    }
}

/// Text for HTML (also the LLM summary's).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

struct Axes {
    x_max: f64,
    y_min: f64,
    y_max: f64,
    log: bool,
}

impl Axes {
    fn x(&self, t: f64) -> f64 {
        L + (t / self.x_max).clamp(0.0, 1.0) * (W - L - R)
    }

    fn y(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(self.y_min).log10() - self.y_min.log10())
                / (self.y_max.log10() - self.y_min.log10())
        } else {
            (v - self.y_min) / (self.y_max - self.y_min)
        };
        H - B - f.clamp(0.0, 1.0) * (H - T - B)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut v = Vec::new();
            let mut t = 10f64.powf(self.y_min.log10().floor());
            while t <= self.y_max * 1.0001 {
                if t >= self.y_min {
                    v.push(t);
                }
                t *= 10.0;
            }
            v
        } else {
            let raw = (self.y_max - self.y_min) / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step =
                [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(raw);
            (0..=((self.y_max - self.y_min) / step) as usize)
                .map(|i| self.y_min + i as f64 * step)
                .collect()
        }
    }
}

pub struct Shade {
    pub from: f64,
    pub to: f64,
    pub fill: &'static str,
    pub label: String,
}

/// Shades never blend into a colour the legend lacks: faults are painted once over the
/// union of their intervals (two at once are not darker), each fault then a clear
/// rectangle carrying its tooltip; anomalies are an opaque strip along the top.
/// `height`: of the plot area below `T` (a time series' `H - T - B`, the probe strip's rows).
fn paint_shades(s: &mut String, a: &Axes, shades: &[&Shade], height: f64) {
    let mut painted: Vec<(f64, f64)> = Vec::new();
    let mut faults: Vec<(f64, f64)> =
        shades.iter().filter(|sh| sh.fill == FAULT_FILL).map(|sh| (sh.from, sh.to)).collect();
    faults.sort_by(|p, q| p.0.total_cmp(&q.0));
    for (from, to) in faults {
        match painted.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => painted.push((from, to)),
        }
    }
    for (from, to) in painted {
        let (x0, x1) = (a.x(from), a.x(to));
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{T}" width="{:.1}" height="{:.1}" fill="{FAULT_FILL}" fill-opacity="0.25"/>"#,
            (x1 - x0).max(1.0),
            height
        );
    }
    for sh in shades {
        let (x0, x1) = (a.x(sh.from), a.x(sh.to));
        let (y, h, opacity) =
            if sh.fill == FAULT_FILL { (T, height, 0.0) } else { (T, ANOMALY_STRIP, 1.0) };
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="{h:.1}" fill="{}" fill-opacity="{opacity}"><title>{}</title></rect>"#,
            (x1 - x0).max(1.0),
            sh.fill,
            esc(&sh.label)
        );
    }
}

/// The probes on the run's clock (issue 33): a row per probe, a mark per sample (green
/// pass, red fail, its detail as the tooltip), the fault intervals shaded behind.
pub fn probe_strip(
    probes: &[ProbeRecord],
    rows: &[ProbeRow],
    shades: &[Shade],
    x_max: f64,
) -> String {
    const ROW: f64 = 26.0;
    let height = T + ROW * probes.len() as f64 + B;
    let a = Axes { x_max, y_min: 0.0, y_max: 1.0, log: false };
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="DejaVu Sans, sans-serif" font-size="12"><rect width="{W}" height="{height}" fill="white"/><text x="{L}" y="20" font-size="14">Probes (each sample: green passed, red failed)</text>"#
    );
    // The faults only (anomalies belong to the load's plots), shaded as everywhere else.
    let faults: Vec<&Shade> = shades.iter().filter(|sh| sh.fill == FAULT_FILL).collect();
    paint_shades(&mut s, &a, &faults, ROW * probes.len() as f64);
    for (i, p) in probes.iter().enumerate() {
        let y = T + ROW * i as f64;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 6.0,
            y + ROW / 2.0 + 4.0,
            esc(&p.name)
        );
        let width = (a.x(p.interval_s) - a.x(0.0)).clamp(1.0, 12.0) * 0.8;
        for r in rows.iter().filter(|r| r.probe == p.name) {
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{}"><title>{:.1} s: {}</title></rect>"#,
                a.x(r.t_s),
                y + 5.0,
                ROW - 10.0,
                if r.ok { "#1b998b" } else { "#c5283d" },
                r.t_s,
                esc(&r.detail)
            );
        }
    }
    // Whole-second ticks under the rows, about ten of them.
    let step = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0]
        .into_iter()
        .find(|st| x_max / st <= 12.0)
        .unwrap_or(3600.0);
    let rows_end = T + ROW * probes.len() as f64;
    let mut t = 0.0;
    while t <= x_max {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{rows_end:.1}" x2="{x:.1}" y2="{:.1}" stroke="#888"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}</text>"##,
            rows_end + 4.0,
            rows_end + 16.0,
            x = a.x(t)
        );
        t += step;
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds</text></svg>"#,
        (L + W - R) / 2.0,
        height - 8.0
    );
    s
}

/// A time series plot: lines over seconds, shaded intervals, phase boundaries.
pub fn timeseries(
    title: &str,
    y_label: &str,
    series: &[(&str, &str, Vec<(f64, f64)>)],
    shades: &[Shade],
    phases: &[(f64, String)],
    x_max: f64,
    log: bool,
) -> String {
    let values = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).filter(|v| v.is_finite());
    let y_max_raw = values.clone().fold(0.0_f64, f64::max);
    let (y_min, y_max) = if log {
        let lo = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        let lo = if lo.is_finite() { 10f64.powf(lo.log10().floor()) } else { 0.1 };
        (lo, 10f64.powf(y_max_raw.max(lo * 10.0).log10().ceil()))
    } else {
        (0.0, if y_max_raw > 0.0 { y_max_raw * 1.1 } else { 1.0 })
    };
    let a = Axes { x_max: x_max.max(1.0), y_min, y_max, log };
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, sans-serif" font-size="12"><rect width="{W}" height="{H}" fill="white"/>"#
    );
    let _ = write!(
        s,
        r#"<text x="{L}" y="20" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    paint_shades(&mut s, &a, &shades.iter().collect::<Vec<_>>(), H - T - B);
    for t in a.ticks() {
        let y = a.y(t);
        let label = if t >= 100.0 || t == t.round() { format!("{t:.0}") } else { format!("{t}") };
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0
        );
    }
    let step = if a.x_max > 120.0 {
        30.0
    } else if a.x_max > 30.0 {
        10.0
    } else {
        5.0
    };
    let mut t = 0.0;
    while t <= a.x_max {
        let x = a.x(t);
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{t:.0}</text>"#,
            H - B + 16.0
        );
        t += step;
    }
    // Phase names in the first row where they do not run into the last one written there
    // (a 1 s warmup put "warmup" over "baseline").
    let mut rows_end: Vec<f64> = Vec::new();
    for (x, name) in phases {
        let px = a.x(*x);
        let width = LABEL_CHAR_W * name.chars().count() as f64;
        let row = rows_end.iter().position(|end| px + 3.0 >= end + 4.0).unwrap_or(rows_end.len());
        if row == rows_end.len() {
            rows_end.push(0.0);
        }
        rows_end[row] = px + 3.0 + width;
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{T}" y2="{}" stroke="#555" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" fill="#555">{}</text>"##,
            H - B,
            px + 3.0,
            T + 12.0 + 14.0 * row as f64,
            esc(name)
        );
    }
    // Each fault's shade named at its foot, cut to its width (the whole name is its tooltip).
    for sh in shades.iter().filter(|sh| sh.fill == FAULT_FILL) {
        let (x0, x1) = (a.x(sh.from), a.x(sh.to));
        let fits = ((x1 - x0 - 4.0) / LABEL_CHAR_W).floor().max(0.0) as usize;
        let n = sh.label.chars().count();
        let text: String = if n <= fits {
            sh.label.clone()
        } else if fits >= 4 {
            sh.label.chars().take(fits - 1).chain(['…']).collect()
        } else {
            String::new()
        };
        if !text.is_empty() {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{}" font-size="11" fill="#7a2a12">{}</text>"##,
                x0 + 2.0,
                H - B - 4.0,
                esc(&text)
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds</text><text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 6.0,
        (T + H - B) / 2.0,
        esc(y_label)
    );
    let _ = write!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - L - R,
        H - T - B
    );
    for (_, color, pts) in series {
        let path: Vec<String> = pts
            .iter()
            .filter(|p| p.1.is_finite() && (!log || p.1 > 0.0))
            .map(|(t, v)| format!("{:.1},{:.1}", a.x(*t), a.y(*v)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
                path.join(" ")
            );
        }
    }
    // Legend, left to right under the title: the lines, then the shades.
    let mut lx = L;
    for (name, color, _) in series {
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="30" width="14" height="4" fill="{color}"/><text x="{:.1}" y="36">{}</text>"#,
            lx + 18.0,
            esc(name)
        );
        lx += 7.5 * name.chars().count() as f64 + 30.0;
    }
    let mut kinds: Vec<(&str, &str)> = Vec::new();
    for sh in shades {
        let name = if sh.fill == FAULT_FILL { "fault" } else { "anomaly" };
        if !kinds.iter().any(|k| k.0 == name) {
            kinds.push((name, sh.fill));
        }
    }
    for (name, fill) in kinds {
        // Drawn as in the plot: a fault's translucent block, an anomaly's opaque strip.
        let (y, height, opacity) =
            if fill == FAULT_FILL { (26.0, 12.0, 0.25) } else { (26.0, ANOMALY_STRIP, 1.0) };
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{y}" width="14" height="{height}" fill="{fill}" fill-opacity="{opacity}"/><text x="{:.1}" y="36">{name}</text>"#,
            lx + 18.0
        );
        lx += 7.5 * name.len() as f64 + 30.0;
    }
    s += "</svg>";
    s
}

/// Grouped bars: one group per phase, one bar per measure.
pub fn bars(title: &str, y_label: &str, groups: &[(String, Vec<(&str, &str, f64)>)]) -> String {
    let y_max =
        groups.iter().flat_map(|g| g.1.iter().map(|b| b.2)).fold(0.0_f64, f64::max).max(1e-9)
            * 1.15;
    let a = Axes { x_max: 1.0, y_min: 0.0, y_max, log: false };
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, sans-serif" font-size="12"><rect width="{W}" height="{H}" fill="white"/>"#
    );
    let _ = write!(
        s,
        r#"<text x="{L}" y="20" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for t in a.ticks() {
        let y = a.y(t);
        let _ = write!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0,
            if t == t.round() { format!("{t:.0}") } else { format!("{t:.2}") }
        );
    }
    let gw = (W - L - R) / groups.len().max(1) as f64;
    for (i, (label, bs)) in groups.iter().enumerate() {
        let x0 = L + i as f64 * gw;
        let bw = gw * 0.7 / bs.len().max(1) as f64;
        for (j, (name, color, v)) in bs.iter().enumerate() {
            let x = x0 + gw * 0.15 + j as f64 * bw;
            let y = a.y(*v);
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{name}: {v:.3}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{v:.1}</text>"#,
                bw - 2.0,
                H - B - y,
                x + bw / 2.0,
                y - 3.0
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + gw / 2.0,
            H - B + 16.0,
            esc(label)
        );
    }
    let mut lx = L;
    if let Some((_, bs)) = groups.first() {
        for (name, color, _) in bs {
            let _ = write!(
                s,
                r#"<rect x="{lx:.1}" y="30" width="14" height="4" fill="{color}"/><text x="{:.1}" y="36">{}</text>"#,
                lx + 18.0,
                esc(name)
            );
            lx += 7.5 * name.chars().count() as f64 + 30.0;
        }
    }
    let _ = write!(
        s,
        r##"<text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text><rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/></svg>"##,
        (T + H - B) / 2.0,
        esc(y_label),
        W - L - R,
        H - T - B
    );
    s
}

/// SVG to PNG with resvg, fonts from the system (`DejaVu` on Debian).
pub fn png(svg: &str, path: &Path) -> Result<()> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    let tree = usvg::Tree::from_str(svg, &opt).context("parsing the plot's SVG")?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        tiny_skia::Pixmap::new(size.width(), size.height()).context("allocating the image")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.save_png(path).with_context(|| format!("writing {}", path.display()))
}

/// Plain sentences from the analysis: what a reader should take away.
pub fn findings(an: &Analysis, summary: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    let phase = |name: &str| an.phases.iter().find(|p| p.phase == name);
    let measured = |name: &str| phase(name).and_then(|p| p.measured.clone()).unwrap_or_default();
    let faults: Vec<String> = summary
        .faults
        .iter()
        .map(|x| match (x.applied_at_s, x.reverted_at_s) {
            (Some(a), Some(z)) => format!("{} (from {a:.1} s to {z:.1} s)", x.fault),
            _ => format!("{} (not applied: {})", x.fault, x.error),
        })
        .collect();
    if !faults.is_empty() {
        out.push(format!("Faults: {}.", faults.join("; ")));
    }
    if let Some(f) = phase("fault") {
        let (bm, fm) = (measured("baseline"), measured("fault"));
        out.push(format!(
            "During the fault phase goodput changed by {} against the baseline, p99 went from {:.1} ms to {:.1} ms, and {:.1} % of requests failed (baseline {:.2} %).",
            f.vs_baseline_percent.goodput.map_or("-".into(), |x| format!("{x:+.1} %")),
            bm.p99_ms,
            fm.p99_ms,
            fm.error_rate * 100.0,
            bm.error_rate * 100.0,
        ));
    }
    if an.anomaly_windows.is_empty() {
        out.push("No second left the baseline band: the service absorbed the faults.".into());
    } else {
        let w: Vec<String> = an
            .anomaly_windows
            .iter()
            .map(|w| format!("{}–{} s ({})", w.from_s, w.to_s, w.why()))
            .collect();
        out.push(format!(
            "The service left its baseline band in {} window{}: {}.",
            w.len(),
            if w.len() == 1 { "" } else { "s" },
            w.join("; ")
        ));
    }
    match (an.recovered, an.recovery_s) {
        (Some(true), Some(x)) => out.push(format!("It was back inside the band {x:.1} s after the last fault was reverted, and stayed there for at least {} s.", an.thresholds.recovered_after_s)),
        (Some(false), _) => out.push("It did not come back inside the band before the run ended.".into()),
        _ => {}
    }
    if phase("recovery").is_some() {
        let r = measured("recovery");
        out.push(format!(
            "Recovery phase: p99 {:.1} ms, errors {:.2} %.",
            r.p99_ms,
            r.error_rate * 100.0
        ));
    }
    let fails: Vec<String> = an
        .hypothesis
        .iter()
        .filter(|h| !h.holds)
        .map(|h| format!("{} in {}", h.hypothesis, h.phase))
        .collect();
    if !an.hypothesis.is_empty() {
        let during = an.hypothesis.iter().any(|h| h.phase.starts_with("fault"));
        let when = if during {
            "before the faults, while they were active and after recovery"
        } else {
            "before the faults and after recovery"
        };
        out.push(if fails.is_empty() {
            format!("The steady-state hypothesis held {when}.")
        } else {
            format!("The steady-state hypothesis failed: {}.", fails.join("; "))
        });
    }
    for p in &an.probes {
        let again = match (p.recovered, p.recovery_s) {
            (Some(true), Some(r)) => format!("; it passed again {r:.1} s after the last revert"),
            (Some(false), _) => "; it was not passing again by the end of the run".to_owned(),
            _ => String::new(),
        };
        out.push(format!(
            "Probe {} ({}) failed {} of {} samples{again}.",
            p.name, p.asks, p.failures, p.samples
        ));
    }
    if let Some(r) = &an.aborted {
        out.push(format!("The run was aborted: {r}."));
    }
    out
}

/// A fault's agents, each with its own apply and revert on the run's clock where known.
fn agents_cell(f: &FaultRecord) -> String {
    if f.parts.is_empty() {
        return f.agents.join(", ");
    }
    let t = |v: Option<f64>| v.map_or("?".to_owned(), |x| format!("{x:.3}"));
    let part = |p: &PartRecord| match p.reverted_at_s {
        // Kill and restart are never reverted: they only have a moment.
        None => format!("{} at {} s", p.agent, t(p.applied_at_s)),
        Some(r) => format!("{} {}\u{2013}{} s", p.agent, t(p.applied_at_s), t(Some(r))),
    };
    f.parts.iter().map(part).collect::<Vec<_>>().join(", ")
}

fn series(secs: &[Sec], f: impl Fn(&Sec) -> Option<f64>) -> Vec<(f64, f64)> {
    secs.iter().filter_map(|s| f(s).map(|v| (s.t as f64 + 0.5, v))).collect()
}

/// Retransmits per second and smoothed RTT for the (agent, peer) pairs with the most
/// retransmits (or RTT samples), from kernel.csv; None when there is nothing to show.
fn kernel_plots(
    dir: &Path,
    shades: &[Shade],
    phases: &[(f64, String)],
    x_max: f64,
) -> Option<(String, String)> {
    let rows: Vec<KernelRow> = table::read(dir).ok()?;
    // (agent -> peer) -> per-second retransmits, and (t, srtt) points.
    let mut rt: std::collections::BTreeMap<String, std::collections::BTreeMap<i64, f64>> =
        std::collections::BTreeMap::new();
    let mut rtt: std::collections::BTreeMap<String, Vec<(f64, f64)>> =
        std::collections::BTreeMap::new();
    for r in rows {
        // A container's sockets are its own line: "h1/web → 10.0.0.5".
        let key = if r.container.is_empty() {
            format!("{} → {}", r.agent, r.peer)
        } else {
            format!("{}/{} → {}", r.agent, r.container, r.peer)
        };
        *rt.entry(key.clone()).or_default().entry(r.t_s.floor() as i64).or_default() +=
            r.retransmits as f64;
        if let Some(m) = r.srtt_mean_ms {
            rtt.entry(key).or_default().push((r.t_s, m));
        }
    }
    if rt.is_empty() && rtt.is_empty() {
        return None;
    }
    let names: std::collections::BTreeSet<&String> = rtt.keys().chain(rt.keys()).collect();
    let mut keys: Vec<(f64, usize, String)> = names
        .into_iter()
        .map(|k| {
            (rt.get(k).map_or(0.0, |m| m.values().sum()), rtt.get(k).map_or(0, Vec::len), k.clone())
        })
        .collect();
    keys.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let colors = ["#c5283d", "#2e86ab", "#1b998b", "#a23b72"];
    let top: Vec<(&str, String)> =
        keys.iter().take(colors.len()).zip(colors).map(|(k, c)| (c, k.2.clone())).collect();
    let last = x_max.floor() as i64;
    let rt_series: Vec<(&str, &str, Vec<(f64, f64)>)> = top
        .iter()
        .map(|(c, k)| {
            (
                k.as_str(),
                *c,
                (0..last)
                    .map(|t| {
                        (t as f64 + 0.5, rt.get(k).and_then(|m| m.get(&t)).copied().unwrap_or(0.0))
                    })
                    .collect(),
            )
        })
        .collect();
    let rtt_series: Vec<(&str, &str, Vec<(f64, f64)>)> = top
        .iter()
        .map(|(c, k)| (k.as_str(), *c, rtt.get(k).cloned().unwrap_or_default()))
        .collect();
    Some((
        timeseries(
            "Kernel: TCP retransmits per second (agent → peer)",
            "retransmits/s",
            &rt_series,
            shades,
            phases,
            x_max,
            false,
        ),
        timeseries(
            "Kernel: TCP smoothed RTT (agent → peer)",
            "ms (log scale)",
            &rtt_series,
            shades,
            phases,
            x_max,
            true,
        ),
    ))
}

/// Writes report.html and throughput.png, latency.png, phases.png into the run directory.
#[expect(clippy::too_many_lines, reason = "the page top to bottom, in the order a reader sees it")]
pub fn write(dir: &Path, baseline: Option<&Path>) -> Result<Vec<std::path::PathBuf>> {
    let an = analyze::analyze(dir, baseline)?;
    let summary = Summary::read(dir)?;
    let rows: Vec<SecondRow> = table::read(dir)?;
    let secs: Vec<Sec> = rows.iter().cloned().map(Sec::from).collect();
    let x_max = secs.last().map_or(1.0, |s| s.t as f64 + 1.0);
    let mut shades: Vec<Shade> = summary
        .faults
        .iter()
        .filter_map(|f| {
            Some(Shade {
                from: f.applied_at_s?,
                to: f.reverted_at_s?,
                fill: FAULT_FILL,
                label: f.fault.clone(),
            })
        })
        .collect();
    shades.extend(an.anomaly_windows.iter().map(|w| Shade {
        from: w.from_s as f64,
        to: w.to_s as f64,
        fill: ANOMALY_FILL,
        label: "anomaly".into(),
    }));
    let phases: Vec<(f64, String)> = summary
        .phases
        .iter()
        .filter(|p| p.to_s > p.from_s)
        .map(|p| (p.from_s as f64, p.name.clone()))
        .collect();
    let throughput = timeseries(
        "Throughput (answers without error, and errors, per second)",
        "requests/s",
        &[
            ("goodput", "#1b998b", series(&secs, |s| Some(s.requests - s.errors))),
            ("errors", "#c5283d", series(&secs, |s| Some(s.errors))),
        ],
        &shades,
        &phases,
        x_max,
        false,
    );
    let lat = |col: fn(&SecondRow) -> Option<f64>| {
        rows.iter().filter_map(|r| col(r).map(|v| (r.second as f64 + 0.5, v))).collect::<Vec<_>>()
    };
    let latency = timeseries(
        "Latency from the intended start (p50, p95, p99 per second)",
        "ms (log scale)",
        &[
            ("p50", "#2e86ab", lat(|r| r.p50_ms)),
            ("p95", "#a23b72", lat(|r| r.p95_ms)),
            ("p99", "#f18f01", series(&secs, |s| s.p99)),
        ],
        &shades,
        &phases,
        x_max,
        true,
    );
    let groups: Vec<(String, Vec<(&str, &str, f64)>)> = an
        .phases
        .iter()
        .map(|p| {
            let m = p.measured.clone().unwrap_or_default();
            (
                p.phase.clone(),
                vec![
                    ("p50 ms", "#2e86ab", m.p50_ms),
                    ("p95 ms", "#a23b72", m.p95_ms),
                    ("p99 ms", "#f18f01", m.p99_ms),
                ],
            )
        })
        .collect();
    let phase_bars =
        bars(&format!("Latency by phase (band from {})", an.baseline_from), "ms", &groups);
    let kernel = kernel_plots(dir, &shades, &phases, x_max);
    let mut plots = vec![
        ("throughput", throughput.clone()),
        ("latency", latency.clone()),
        ("phases", phase_bars.clone()),
    ];
    if let Some((rt, rtt)) = &kernel {
        plots.push(("kernel_retransmits", rt.clone()));
        plots.push(("kernel_rtt", rtt.clone()));
    }
    let probe_rows: Vec<ProbeRow> = table::read_if_present(dir)?;
    let probes = (!summary.probes.is_empty())
        .then(|| probe_strip(&summary.probes, &probe_rows, &shades, x_max));
    if let Some(p) = &probes {
        plots.push(("probes", p.clone()));
    }
    let mut written = Vec::new();
    for (name, svg) in &plots {
        let p = dir.join(format!("{name}.png"));
        png(svg, &p)?;
        written.push(p);
    }
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>faultline run: {}</title><style>body{{font-family:DejaVu Sans,sans-serif;max-width:960px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}.fault{{background:{FAULT_FILL}40}}.anomaly{{background:{ANOMALY_FILL}40}}.verdict{{font-size:1.3em;font-weight:bold;padding:.4em .8em;border-radius:4px;color:#fff}}.passed{{background:#1b998b}}.failed{{background:#c5283d}}.aborted{{background:#e4572e}}.unjudged{{background:#666}}.ok{{color:#1b998b}}.bad{{color:#c5283d;font-weight:bold}}</style></head><body>",
        esc(&summary.scenario)
    );
    let (class, verdict) = verdict(&summary, &an);
    let _ = write!(
        html,
        "<h1>{}</h1><p class=\"verdict {class}\">{}</p>",
        esc(&summary.scenario),
        esc(&verdict)
    );
    if summary.started_unix_ms > 0 {
        let end_s = summary.phases.iter().map(|p| p.to_s).max().unwrap_or(0);
        let _ = write!(
            html,
            "<p>Started {}, ended {} ({end_s} s; the plots' axes count seconds from the start).</p>",
            crate::run::utc_time(summary.started_unix_ms),
            crate::run::utc_time(summary.started_unix_ms + end_s as i64 * 1000)
        );
    }
    let _ = write!(html, "<p>{}</p><h2>Findings</h2><ul>", esc(&summary.description));
    for f in findings(&an, &summary) {
        let _ = write!(html, "<li>{}</li>", esc(&f));
    }
    html += "</ul>";
    html += LLM_MARKER;
    html += "<p><span class=\"fault\">&nbsp;&nbsp;&nbsp;&nbsp;</span> fault interval &nbsp; <span class=\"anomaly\">&nbsp;&nbsp;&nbsp;&nbsp;</span> anomaly window (outside the baseline band)</p>";
    html += &throughput;
    html += &latency;
    if let Some(p) = &probes {
        html += p;
    }
    html += &phase_bars;
    html += "<h2>Phases</h2><table><tr><th>phase</th><th>requests</th><th>rate/s</th><th>errors %</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>goodput vs baseline</th></tr>";
    for p in &an.phases {
        let m = p.measured.clone().unwrap_or_default();
        let g = p.vs_baseline_percent.goodput.map_or("-".into(), |x| format!("{x:+.1} %"));
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{g}</td></tr>",
            esc(&p.phase),
            m.requests,
            m.rate,
            m.error_rate * 100.0,
            m.p50_ms,
            m.p95_ms,
            m.p99_ms
        );
    }
    html += "</table>";
    // The whole load as achieved: answers per second of wall time, beside what was asked.
    let l = &summary.load;
    let _ = write!(
        html,
        "<p>Load: {} requests in {:.1} s, {} answered: <b>{:.1}/s achieved</b>{}; late starts (&gt; 5 ms) {}.</p>",
        l.requests,
        l.elapsed_s,
        l.answered,
        l.rate,
        l.target_rate.map_or(String::new(), |r| format!(
            " (target {r:.1}/s, not started {})",
            l.not_started
        )),
        l.late_starts
    );
    // One row per fault: what it did to the load while it held, and how long the service
    // took to come back after its revert.
    html += "<h2>Faults</h2><table><tr><th>#</th><th>fault</th><th>id</th><th>on each agent (its clock, offset-corrected)</th><th>applied</th><th>reverted</th><th>peak p99</th><th>errors while applied</th><th>back in the band</th><th>error</th></tr>";
    for (f, e) in summary.faults.iter().zip(&an.faults) {
        let o = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.2} s"));
        let (peak, errors) = match &e.load {
            Some(l) => (
                l.peak_p99_ms.map_or("-".to_owned(), |p| format!("{p:.1} ms")),
                if l.errors == 0 {
                    format!("0 of {}", l.requests)
                } else {
                    let classes: Vec<String> =
                        l.errors_by_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
                    format!("{:.1} % ({})", l.error_share() * 100.0, classes.join(", "))
                },
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let back = match (e.reverted_at_s, e.recovery_s) {
            (None, _) => "-".to_owned(),
            (Some(_), Some(r)) => format!("{r:.1} s"),
            (Some(_), None) => "not within the run".to_owned(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.index,
            esc(&f.fault),
            esc(&f.id),
            esc(&agents_cell(f)),
            o(f.applied_at_s),
            o(f.reverted_at_s),
            esc(&peak),
            esc(&errors),
            esc(&back),
            esc(&f.error)
        );
    }
    html += "</table><h2>Each fault as the kernel saw it</h2><table><tr><th>fault</th><th>agent</th><th>retransmits/s</th><th>smoothed RTT ms</th><th>drops/s</th><th>failed connects</th></tr>";
    for f in &an.faults {
        for (i, k) in f.kernel.iter().enumerate() {
            let (b, d) = (&k.baseline, &k.during);
            let pair = |v: fn(&analyze::KernelWindow) -> Option<f64>| {
                let show = |w| v(w).map_or("-".to_owned(), |n| format!("{n:.1}"));
                format!("{} → <b>{}</b>", show(b), show(d))
            };
            // The fault named once, over its agents' rows (a partition has several).
            let name = if i == 0 {
                format!("<td rowspan=\"{}\">{} {}</td>", f.kernel.len(), esc(&f.id), esc(&f.fault))
            } else {
                String::new()
            };
            let _ = write!(
                html,
                "<tr>{name}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&k.agent),
                pair(|w| Some(w.retransmits_per_s)),
                pair(|w| w.srtt_ms),
                pair(|w| Some(w.drops_per_s))
                    + if k.drops_whole_kernel { " <small>(whole kernel)</small>" } else { "" },
                d.connect_failures
            );
        }
    }
    html += "</table><p>Baseline phase → while the fault was applied, on the agents it was placed on. Drops marked <i>whole kernel</i> come from agents that share one kernel with other hosts (a lab of network namespaces): a freed packet carries no address, so they cannot be told apart; TCP figures are each host's own.</p><h2>Hypothesis</h2><table><tr><th>condition</th><th>phase</th><th>value</th><th>verdict</th></tr>";
    for h in &an.hypothesis {
        let mark = if h.holds {
            "<span class=\"ok\">✓ holds</span>"
        } else {
            "<span class=\"bad\">✗ fails</span>"
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{mark}</td></tr>",
            esc(&h.hypothesis),
            esc(&h.phase),
            esc(&condition_value(&h.hypothesis, h.value))
        );
    }
    html += "</table>";
    if !summary.probes.is_empty() {
        html += "<h2>Probes</h2><table><tr><th>probe</th><th>asks</th><th>samples</th><th>failed</th><th>passing again after the last revert</th></tr>";
        for p in &summary.probes {
            let recovery = match (p.recovered, p.recovery_s) {
                (Some(true), Some(r)) => format!("<td class=\"ok\">{r:.1} s</td>"),
                (Some(false), _) => "<td class=\"bad\">not by the end of the run</td>".to_owned(),
                _ => "<td>- (nothing reverted)</td>".to_owned(),
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{recovery}</tr>",
                esc(&p.name),
                esc(&p.asks),
                p.samples,
                p.failures
            );
        }
        html += "</table>";
    }
    html += "<h2>The kernel's view (from the agents)</h2>";
    match &kernel {
        Some((rt, rtt)) => {
            html += "<p>Per agent and remote peer, from the agents' eBPF tracepoints; times corrected by each agent's measured clock offset (agents.csv).</p>";
            html += rt;
            html += rtt;
        }
        None => {
            html += "<p>No kernel metrics in this run (kernel.csv is missing or empty: agents unreachable from the CLI, or without kernel metrics).</p>";
        }
    }
    let _ = writeln!(
        html,
        "<p>Data: <code>seconds.csv</code>, <code>faults.csv</code>, <code>summary.json</code>, <code>analysis.json</code>, <code>kernel.csv</code>, <code>drops.csv</code>, <code>host.csv</code>, <code>agents.csv</code>; plots as PNG: {}.</p></body></html>",
        plots.iter().map(|(n, _)| format!("{n}.png")).collect::<Vec<_>>().join(", ")
    );
    std::fs::write(
        dir.join(crate::run::files::ANALYSIS_JSON),
        serde_json::to_string_pretty(&an)? + "\n",
    )?;
    std::fs::write(dir.join("report.html"), html)?;
    written.push(dir.join(crate::run::files::ANALYSIS_JSON));
    written.push(dir.join("report.html"));
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::files::Verdict;

    #[test]
    fn the_verdict_and_every_value_read_in_their_units() {
        assert_eq!(condition_value("error_rate < 5%", 0.636), "63.60 %");
        assert_eq!(condition_value("p99 < 250ms", 35.25), "35.2 ms");
        assert_eq!(condition_value("rate > 90", 99.04), "99.0 requests/s");
        let v = |h: &str, holds: bool, value: f64| Verdict {
            hypothesis: h.into(),
            phase: "recovery".into(),
            holds,
            value,
        };
        let mut an = Analysis::default();
        let mut summary = Summary::default();
        assert_eq!(verdict(&summary, &an).0, "unjudged");
        an.hypothesis = vec![v("p99 < 250ms", true, 20.0), v("error_rate < 1%", true, 0.0)];
        assert_eq!(verdict(&summary, &an), ("passed", "PASSED: all 2 conditions held".to_owned()));
        an.hypothesis[1] = v("error_rate < 1%", false, 0.25);
        let (class, text) = verdict(&summary, &an);
        assert_eq!(class, "failed");
        assert!(
            text.starts_with("FAILED: 1 of 2")
                && text.contains("error_rate < 1% in recovery: 25.00 %"),
            "{text}"
        );
        summary.aborted = Some("guardrail error_rate < 50% breached for 3 s".into());
        assert!(verdict(&summary, &an).1.starts_with("ABORTED: guardrail"));
        assert_eq!(crate::run::utc_time(1_796_608_595_000), "2026-12-07 01:56:35 UTC");
    }

    #[test]
    fn phase_labels_do_not_meet_and_fault_shades_are_named() {
        let phases =
            [(0.0, "warmup".to_owned()), (1.0, "baseline".to_owned()), (20.0, "fault".to_owned())];
        let shades = [
            Shade { from: 20.0, to: 40.0, fill: FAULT_FILL, label: "drop 20% on h2".into() },
            Shade { from: 41.0, to: 41.5, fill: FAULT_FILL, label: "freeze".into() },
        ];
        let svg = timeseries(
            "t",
            "y",
            &[("a", "#000", vec![(0.0, 1.0), (60.0, 2.0)])],
            &shades,
            &phases,
            60.0,
            false,
        );
        let y_of = |name: &str| {
            let at = svg.find(&format!(">{name}</text>")).unwrap();
            let tag = &svg[svg[..at].rfind("<text").unwrap()..at];
            tag.split("y=\"").nth(1).unwrap().split('"').next().unwrap().parse::<f64>().unwrap()
        };
        // One second of warmup: "baseline" starts inside "warmup"'s text, so a row lower.
        assert!(y_of("warmup") != y_of("baseline"), "{svg}");
        assert_eq!(y_of("warmup"), y_of("fault"), "a label with room stays on the first row");
        assert!(svg.contains(">drop 20% on h2</text>"), "the fault's shade is named");
        assert!(
            !svg.contains(">freeze</text>"),
            "a shade too narrow for its name is named only in its tooltip"
        );
    }

    /// Issue 32: every colour a plot shows is in its legend. Overlapping faults are not
    /// darker, and an anomaly over a fault does not blend into a third colour.
    #[test]
    fn overlapping_shades_show_only_the_legend_s_colours() {
        let shades = [
            Shade { from: 10.0, to: 30.0, fill: FAULT_FILL, label: "drop 20% on h2".into() },
            Shade { from: 20.0, to: 40.0, fill: FAULT_FILL, label: "freeze on h3".into() },
            Shade { from: 25.0, to: 35.0, fill: ANOMALY_FILL, label: "anomaly".into() },
        ];
        let svg = timeseries(
            "t",
            "y",
            &[("a", "#000", vec![(0.0, 1.0), (60.0, 2.0)])],
            &shades,
            &[],
            60.0,
            false,
        );
        // Every painted rectangle (opacity above 0) as (fill, opacity, height).
        let painted: Vec<(String, String, String)> = svg
            .split("<rect ")
            .skip(1)
            .filter_map(|r| {
                let attr = |k: &str| {
                    r.split(&format!("{k}=\""))
                        .nth(1)
                        .map(|v| v.split('"').next().unwrap_or("").to_owned())
                };
                let opacity = attr("fill-opacity").unwrap_or_else(|| "1".into());
                let fill = attr("fill")?;
                (opacity != "0" && fill != "white" && fill != "#000")
                    .then(|| (fill, opacity, attr("height").unwrap_or_default()))
            })
            .collect();
        // The plot's fault block (the legend's is 12 px high).
        let faults: Vec<_> = painted
            .iter()
            .filter(|p| p.0 == FAULT_FILL && p.2.parse::<f64>().ok() != Some(12.0))
            .collect();
        assert_eq!(
            faults.len(),
            1,
            "two overlapping faults painted twice (darker where they meet): {painted:?}"
        );
        let anomaly: Vec<_> = painted.iter().filter(|p| p.0 == ANOMALY_FILL).collect();
        assert!(
            anomaly.len() == 2
                && anomaly
                    .iter()
                    .all(|p| p.1 == "1" && p.2.parse::<f64>().ok() == Some(ANOMALY_STRIP)),
            "the anomaly strip (and its legend entry) is opaque: {anomaly:?}"
        );
        assert!(
            svg.contains(">fault</text>") && svg.contains(">anomaly</text>"),
            "the legend names both"
        );
        // Both faults keep their tooltip.
        assert!(
            svg.contains("<title>drop 20% on h2</title>")
                && svg.contains("<title>freeze on h3</title>")
        );
    }
}
