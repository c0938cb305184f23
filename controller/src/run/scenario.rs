//! Scenario files (YAML): the load, the steady-state hypothesis, the phases, the fault
//! schedule and the guardrails, all checked before anything runs. Errors name the
//! file, the line and the field.
//!
//! A fault entry uses the CLI's own flag names and units (`kind: drop`, `loss: 100%`,
//! `peer: [10.0.0.2/32]`): it is turned into `fault apply` arguments and parsed by the
//! same code, so a scenario and a command line cannot disagree.
//!
//! (Past 600 lines only with its tests, which are a third of it: each error a file can
//! hold, named by line and field.)

use std::{collections::BTreeMap, path::Path, time::Duration};

use clap::Parser;
use faultline_proto::controller::v1 as pb;
use serde::Deserialize;

use crate::{faults::Setting, load::args::Files, units};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `faultline load`'s own flags as keys (target, rate, shape, method, header, body,
    /// connections, timeout, http2, ...): parsed by the same definition, so a scenario can
    /// say everything the command can, and the two cannot drift apart.
    pub load: BTreeMap<String, serde_norway::Value>,
    /// What must hold in the baseline and again after recovery.
    #[serde(default)]
    pub hypothesis: Vec<String>,
    /// What must hold while faults are active: over the fault phase, and over each
    /// fault's own window (from its apply to its revert).
    #[serde(default)]
    pub during: Vec<String>,
    pub phases: Phases,
    #[serde(default)]
    pub faults: Vec<BTreeMap<String, serde_norway::Value>>,
    #[serde(default)]
    pub guardrails: Vec<String>,
    /// The system's own signals (issue 33), named by `probe NAME` in the hypothesis,
    /// `during:` and guardrails (`probe NAME fails 3 times`).
    #[serde(default)]
    pub probes: Vec<BTreeMap<String, serde_norway::Value>>,
    /// What the analysis counts as an anomaly and as recovered (defaults: the analysis's own).
    #[serde(default)]
    pub analysis: AnalysisFields,
}

/// `analysis:`: `goodput_change: 50%`, `error_rate_rise: 10%`, `p99_rise: 100%`,
/// `p99_margin: 10ms`, `sigmas: 3`, `recovered_after: 3s` (see `files::Thresholds`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisFields {
    goodput_change: Option<String>,
    error_rate_rise: Option<String>,
    p99_rise: Option<String>,
    p99_margin: Option<String>,
    sigmas: Option<f64>,
    recovered_after: Option<String>,
}

/// A share written as a percentage (`50%`, `200%`), from 0 to `max_percent`.
fn share(field: &str, v: &str, max_percent: f64) -> Result<f64, FieldError> {
    let p: f64 = v
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse().ok())
        .filter(|p: &f64| (0.0..=max_percent).contains(p))
        .ok_or_else(|| {
            bad(field.to_owned(), format!("{v:?}: a percentage from 0% to {max_percent}%"))
        })?;
    Ok(p / 100.0)
}

fn thresholds(a: &AnalysisFields) -> Result<super::files::Thresholds, FieldError> {
    let mut t = super::files::Thresholds::default();
    if let Some(v) = &a.goodput_change {
        t.goodput_change = share("analysis.goodput_change", v, 100.0)?;
    }
    if let Some(v) = &a.error_rate_rise {
        t.error_rate_rise = share("analysis.error_rate_rise", v, 100.0)?;
    }
    if let Some(v) = &a.p99_rise {
        t.p99_rise = share("analysis.p99_rise", v, 10_000.0)?;
    }
    if let Some(v) = &a.p99_margin {
        let d = units::duration(v).map_err(|e| bad("analysis.p99_margin".into(), e))?;
        if d > Duration::from_mins(10) {
            return Err(bad("analysis.p99_margin".into(), "at most 10m".into()));
        }
        t.p99_margin_ms = d.as_secs_f64() * 1000.0;
    }
    if let Some(s) = a.sigmas {
        if !(0.5..=20.0).contains(&s) {
            return Err(bad("analysis.sigmas".into(), format!("{s}: from 0.5 to 20")));
        }
        t.sigmas = s;
    }
    if let Some(v) = &a.recovered_after {
        let d = units::duration(v).map_err(|e| bad("analysis.recovered_after".into(), e))?;
        if d < Duration::from_secs(1) || d > Duration::from_mins(10) || d.subsec_nanos() != 0 {
            return Err(bad(
                "analysis.recovered_after".into(),
                "whole seconds, from 1s to 10m (seconds in a row back inside the band)".into(),
            ));
        }
        t.recovered_after_s = d.as_secs() as u32;
    }
    Ok(t)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phases {
    #[serde(default = "zero")]
    pub warmup: String,
    pub baseline: String,
    pub fault: String,
    pub recovery: String,
}

fn zero() -> String {
    "0s".into()
}

/// A comparison on a window's measurements: `p99 < 200ms`, `error_rate < 1%`, `rate > 90`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub metric: Metric,
    pub less: bool,
    /// Milliseconds for latencies, a fraction for `error_rate`, requests/s for rate.
    pub value: f64,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    P50,
    P90,
    P99,
    ErrorRate,
    Rate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Guardrail {
    pub condition: Condition,
    /// Breached for this many consecutive seconds.
    pub seconds: u32,
}

/// `probe NAME fails N times`: the run stops when the probe fails N samples in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeGuardrail {
    pub probe: String,
    pub times: u32,
    pub text: String,
}

/// The most probes a scenario may have: each is a task asking a service every interval.
pub const MAX_PROBES: usize = 32;

/// The most samples a run's probes may take together (each kept for probes.csv and the
/// report): a day at one per second for two probes, or 100 ms for five minutes for 32.
pub const MAX_PROBE_SAMPLES: u64 = 200_000;

#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub index: usize,
    /// From the start of the fault phase.
    pub at: Duration,
    pub length: Duration,
    pub request: FaultRequest,
    /// For reports: what the entry says.
    pub describe: String,
    /// Skipped (and said so in the run) when a selected agent lacks the kernel
    /// capability, instead of refusing the scenario.
    pub optional: bool,
}

#[derive(Debug, Clone)]
pub enum FaultRequest {
    Apply(pb::ApplyFaultRequest),
    Partition(pb::PartitionRequest),
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub load_args: Vec<String>,
    pub hypothesis: Vec<Condition>,
    pub during: Vec<Condition>,
    pub warmup: Duration,
    pub baseline: Duration,
    pub fault: Duration,
    pub recovery: Duration,
    pub faults: Vec<FaultPlan>,
    pub guardrails: Vec<Guardrail>,
    pub probes: Vec<crate::probe::Probe>,
    /// Probes named in the hypothesis: every sample of the baseline passes, and they pass
    /// again by the end of the recovery (the time that took is the recovery time).
    pub steady_probes: Vec<String>,
    /// Probes named in `during:`: every sample while faults are active passes.
    pub during_probes: Vec<String>,
    pub probe_guardrails: Vec<ProbeGuardrail>,
    /// What the analysis counts as an anomaly and as recovered.
    pub thresholds: super::files::Thresholds,
}

impl Scenario {
    pub fn total(&self) -> Duration {
        self.warmup + self.baseline + self.fault + self.recovery
    }

    pub fn fault_start(&self) -> Duration {
        self.warmup + self.baseline
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {field}: {problem}", line.map_or(String::new(), |l| format!(":{l}")))]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub problem: String,
}

/// A field of the scenario and what is wrong with it; `load` places it on its line.
#[derive(Debug)]
struct FieldError {
    field: String,
    problem: String,
}

fn bad(field: String, problem: String) -> FieldError {
    FieldError { field, problem }
}

pub fn parse_condition(s: &str) -> Result<Condition, String> {
    let (op_at, less) = match (s.find('<'), s.find('>')) {
        (Some(i), None) => (i, true),
        (None, Some(i)) => (i, false),
        _ => {
            return Err(format!(
                "{} is not METRIC < VALUE or METRIC > VALUE",
                faultline_proto::quote(s)
            ));
        }
    };
    let (m, v) = (s[..op_at].trim(), s[op_at + 1..].trim());
    let metric = match m {
        "p50" => Metric::P50,
        "p90" => Metric::P90,
        "p99" => Metric::P99,
        "error_rate" => Metric::ErrorRate,
        "rate" => Metric::Rate,
        other => {
            return Err(format!(
                "{s:?}: unknown metric {other:?} (p50, p90, p99, error_rate, rate)"
            ));
        }
    };
    let value = match metric {
        Metric::P50 | Metric::P90 | Metric::P99 => {
            units::duration(v).map_err(|e| format!("{s:?}: {e}"))?.as_secs_f64() * 1000.0
        }
        Metric::ErrorRate => units::percent(v).map_err(|e| format!("{s:?}: {e}"))? / 100.0,
        Metric::Rate => {
            v.parse::<f64>().ok().filter(|r| r.is_finite() && *r >= 0.0).ok_or_else(|| {
                format!(
                    "{}: {} is not requests per second (a number >= 0)",
                    faultline_proto::quote(s),
                    faultline_proto::quote(v)
                )
            })?
        }
    };
    Ok(Condition { metric, less, value, text: s.trim().to_owned() })
}

fn parse_guardrail(s: &str) -> Result<Guardrail, String> {
    // "error_rate > 50% for 5s"
    let (cond, secs) = s.rsplit_once(" for ").ok_or_else(|| {
        format!("{s:?} is not CONDITION for DURATION (e.g. error_rate > 50% for 5s)")
    })?;
    let d = units::duration(secs.trim()).map_err(|e| format!("{s:?}: {e}"))?;
    let seconds = d.as_secs() as u32;
    if seconds == 0 || d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: the duration is whole seconds, at least 1s"));
    }
    Ok(Guardrail { condition: parse_condition(cond)?, seconds })
}

/// `probe NAME` in a hypothesis or `during:` list: the probe's name.
fn probe_ref(s: &str) -> Option<&str> {
    s.trim().strip_prefix("probe ").map(str::trim)
}

/// `probe NAME fails N times` (or `time` for 1).
fn parse_probe_guardrail(s: &str) -> Result<ProbeGuardrail, String> {
    let form = || format!("{s:?} is not `probe NAME fails N times` (e.g. probe web fails 3 times)");
    let rest = probe_ref(s).ok_or_else(form)?;
    let (name, count) = rest.split_once(" fails ").ok_or_else(form)?;
    let n = count.trim().trim_end_matches("times").trim_end_matches("time").trim();
    let times: u32 = n
        .parse()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| format!("{s:?}: {n:?} is not a number of failures from 1 to 1000"))?;
    Ok(ProbeGuardrail { probe: name.trim().to_owned(), times, text: s.trim().to_owned() })
}

/// A `probes:` entry: `name`, `kind` and the kind's settings (a list where one is taken).
fn probe_entry(
    index: usize,
    entry: &BTreeMap<String, serde_norway::Value>,
    trust: crate::probe::Trust,
) -> Result<crate::probe::Probe, FieldError> {
    let field = |k: &str| format!("probes[{index}].{k}");
    let name = entry.get("name").and_then(scalar).ok_or_else(|| {
        bad(field("name"), "required: the name the hypothesis calls it by".into())
    })?;
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(field("name"), format!("{name:?}: 1 to 64 letters, digits, - and _")));
    }
    let mut settings = crate::probe::Settings::new();
    for (k, v) in entry {
        if k == "name" {
            continue;
        }
        let values = match v {
            serde_norway::Value::Bool(b) => vec![b.to_string()],
            serde_norway::Value::Sequence(items) => items
                .iter()
                .map(|i| scalar(i).ok_or_else(|| bad(field(k), "a list of plain values".into())))
                .collect::<Result<_, _>>()?,
            other => vec![scalar(other).ok_or_else(|| bad(field(k), "a plain value".into()))?],
        };
        settings.insert(k.clone(), values);
    }
    crate::probe::parse(&name, &settings, trust).map_err(|e| bad(field(&e.field), e.problem))
}

/// The line where the `index`-th item of the top-level `key:` list starts.
fn list_item_line(text: &str, key: &str, index: usize) -> Option<usize> {
    let mut in_list = false;
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        if !line.starts_with(' ') && !line.starts_with('-') && !line.trim().is_empty() {
            in_list = line.trim_end() == format!("{key}:");
            continue;
        }
        if in_list && line.trim_start().starts_with("- ") {
            if seen == index {
                return Some(i + 1);
            }
            seen += 1;
        }
    }
    None
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct LoadFlags {
    #[command(flatten)]
    load: crate::load::args::LoadArgs,
}

/// A scenario's `load:` as `faultline load` arguments: `target` (one URL or a list) first,
/// then every other key as its flag (`connections: 8` is `--connections 8`, a list repeats
/// the flag, `true` is the bare flag). `body: @FILE` is read relative to the scenario.
fn load_argv(
    load: &BTreeMap<String, serde_norway::Value>,
    dir: &Path,
    files: Files,
) -> Result<Vec<String>, FieldError> {
    let mut argv = match load.get("target") {
        Some(serde_norway::Value::Sequence(urls)) => urls
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("target".to_owned(), "a URL or a list of URLs".to_owned()))?,
        Some(v) => vec![
            scalar(v)
                .ok_or_else(|| bad("target".to_owned(), "a URL or a list of URLs".to_owned()))?,
        ],
        None => return Err(bad("target".into(), "required: the URL to send load to".into())),
    };
    match load.get("rate").map(scalar) {
        None => return Err(bad("rate".into(), "required: scenarios run open-loop load".into())),
        Some(Some(r)) if r.parse::<f64>().is_ok_and(|r| r.is_finite() && r > 0.0) => {}
        Some(_) => return Err(bad("rate".into(), "a rate > 0 requests per second".into())),
    }
    for (k, v) in load {
        match k.as_str() {
            "target" => continue,
            "duration" => {
                return Err(bad(
                    k.clone(),
                    "set by the phases (the load runs through all of them)".into(),
                ));
            }
            "out" | "json" => {
                return Err(bad(k.clone(), "the run writes its own directory".into()));
            }
            "concurrency" => {
                return Err(bad(
                    k.clone(),
                    "scenarios run open-loop load (rate), not closed loop".into(),
                ));
            }
            _ => {}
        }
        let flag = format!("--{}", k.replace('_', "-"));
        let value = |v: &serde_norway::Value| -> Result<String, FieldError> {
            let s = scalar(v).ok_or_else(|| bad(k.clone(), "a plain value".to_owned()))?;
            // A body file is the scenario's neighbour, wherever the run starts.
            Ok(match s.strip_prefix('@') {
                Some(file)
                    if k == "body" && files == Files::Local && !Path::new(file).is_absolute() =>
                {
                    format!("@{}", dir.join(file).display())
                }
                // Relative to the scenario too, but never inline PEM text.
                None if k == "cacert"
                    && files == Files::Local
                    && !crate::load::tls::is_inline_pem(Path::new(&s))
                    && !Path::new(&s).is_absolute() =>
                {
                    dir.join(&s).display().to_string()
                }
                _ => s,
            })
        };
        // A value that starts with '-' (inline PEM text, a negative number) is joined to its
        // flag, or the parser would take it for a flag of its own.
        let push = |argv: &mut Vec<String>, v: String| {
            if v.starts_with('-') {
                argv.push(format!("{flag}={v}"));
            } else {
                argv.extend([flag.clone(), v]);
            }
        };
        match v {
            serde_norway::Value::Bool(true) => argv.push(flag.clone()),
            serde_norway::Value::Bool(false) => {}
            serde_norway::Value::Sequence(items) => {
                for it in items {
                    push(&mut argv, value(it)?);
                }
            }
            other => push(&mut argv, value(other)?),
        }
    }
    Ok(argv)
}

fn scalar(v: &serde_norway::Value) -> Option<String> {
    match v {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A run reverts each fault itself at the end of its `for`; the lease (the dead man's
/// switch, should the run die) lasts this much longer, so the agent's own expiry never
/// races the run's revert (whose answer carries the agent's revert time).
pub const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// A list setting written either way: `a,b` or a YAML list of scalars.
fn words(entry: &BTreeMap<String, serde_norway::Value>, key: &str) -> Result<Vec<String>, String> {
    let all = |v: Vec<String>| {
        v.into_iter()
            .flat_map(|w| w.split(',').map(|x| x.trim().to_owned()).collect::<Vec<_>>())
            .filter(|w| !w.is_empty())
            .collect()
    };
    match entry.get(key) {
        None => Ok(Vec::new()),
        Some(serde_norway::Value::Sequence(items)) => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| "a list of words".to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(all),
        Some(v) => scalar(v)
            .map(|w| all(vec![w]))
            .ok_or_else(|| "a word, a comma-separated list, or a YAML list".to_owned()),
    }
}

/// A `partition: SHAPE` entry, as `faultline partition` would take it.
fn partition_plan(
    index: usize,
    entry: &BTreeMap<String, serde_norway::Value>,
    shape: &serde_norway::Value,
    at: Duration,
    length: Duration,
    optional: bool,
) -> Result<FaultPlan, FieldError> {
    let field = |k: &str| format!("faults[{index}].{k}");
    let shape_name = scalar(shape).ok_or_else(|| {
        bad(field("partition"), "a shape: isolate, halves, majorities-ring, bridge, groups".into())
    })?;
    let shape = match shape_name.as_str() {
        "isolate" => pb::Shape::Isolate,
        "halves" => pb::Shape::Halves,
        "majorities-ring" => pb::Shape::MajoritiesRing,
        "bridge" => pb::Shape::Bridge,
        "groups" => pb::Shape::Groups,
        other => {
            return Err(bad(
                field("partition"),
                format!(
                    "unknown shape {other:?} (isolate, halves, majorities-ring, bridge, groups)"
                ),
            ));
        }
    };
    for k in entry.keys() {
        if ![
            "at",
            "for",
            "optional",
            "partition",
            "node",
            "select",
            "groups",
            "rest",
            "container_select",
            "containers",
            "pod_select",
            "namespace",
            "all_namespaces",
        ]
        .contains(&k.as_str())
        {
            return Err(bad(field(k), "not a partition setting (node, select, groups, rest, container_select, containers, pod_select, namespace, all_namespaces)".into()));
        }
    }
    let groups = match entry.get("groups") {
        None => Vec::new(),
        Some(serde_norway::Value::Sequence(gs)) => gs
            .iter()
            .map(|g| match g {
                serde_norway::Value::Sequence(names) => {
                    Ok(pb::Group { agents: names.iter().filter_map(scalar).collect() })
                }
                _ => Err(bad(field("groups"), "a list of lists of agent names".to_owned())),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad(field("groups"), "a list of lists of agent names".into())),
    };
    let req = pb::PartitionRequest {
        selector: entry.get("select").and_then(scalar).unwrap_or_default(),
        shape: shape as i32,
        groups,
        node: entry.get("node").and_then(scalar).unwrap_or_default(),
        lease_ms: (length + LEASE_MARGIN).as_millis() as u64,
        label: String::new(),
        rest: match entry.get("rest").map(scalar) {
            None => pb::Rest::Untouched,
            Some(Some(r)) if r == "untouched" => pb::Rest::Untouched,
            Some(Some(r)) if r == "isolated" => pb::Rest::Isolated,
            Some(_) => return Err(bad(field("rest"), "untouched or isolated".into())),
        } as i32,
        container_select: words(entry, "container_select")
            .map_err(|e| bad(field("container_select"), e))?,
        containers: words(entry, "containers").map_err(|e| bad(field("containers"), e))?,
        // A requirement's own commas ("app in (web,redis)") are the agent's to split.
        pod_select: match entry.get("pod_select") {
            None => Vec::new(),
            Some(serde_norway::Value::Sequence(v)) => v.iter().filter_map(scalar).collect(),
            Some(v) => scalar(v).into_iter().collect(),
        },
        pod_namespace: entry.get("namespace").and_then(scalar).unwrap_or_default(),
        all_namespaces: match entry.get("all_namespaces") {
            None => false,
            Some(serde_norway::Value::Bool(b)) => *b,
            Some(_) => return Err(bad(field("all_namespaces"), "true or false".into())),
        },
    };
    let describe = format!(
        "partition {shape_name}{}",
        if !req.pod_select.is_empty() {
            " of pods"
        } else if req.container_select.is_empty() && req.containers.is_empty() {
            ""
        } else {
            " of containers"
        }
    );
    Ok(FaultPlan { index, at, length, request: FaultRequest::Partition(req), describe, optional })
}

/// A fault entry as `fault apply` or `partition` would take it.
fn fault_plan(
    index: usize,
    entry: &BTreeMap<String, serde_norway::Value>,
) -> Result<FaultPlan, FieldError> {
    let field = |k: &str| format!("faults[{index}].{k}");
    let get_duration = |k: &str| -> Result<Duration, FieldError> {
        let v = entry
            .get(k)
            .and_then(scalar)
            .ok_or_else(|| bad(field(k), "required (a duration such as 10s)".to_owned()))?;
        units::duration(&v).map_err(|e| bad(field(k), e))
    };
    let at = get_duration("at")?;
    let length = get_duration("for")?;
    if length.is_zero() {
        return Err(bad(field("for"), "must be longer than 0".into()));
    }
    let optional = match entry.get("optional") {
        None => false,
        Some(serde_norway::Value::Bool(b)) => *b,
        Some(_) => return Err(bad(field("optional"), "true or false".into())),
    };
    if let Some(shape) = entry.get("partition") {
        return partition_plan(index, entry, shape, at, length, optional);
    }
    let kind = entry.get("kind").and_then(scalar).ok_or_else(|| {
        bad(
            field("kind"),
            "required: netem, bandwidth, drop, freeze, ... (or partition: SHAPE)".to_owned(),
        )
    })?;
    let mut settings = Vec::new();
    for (k, v) in entry {
        if ["at", "for", "kind", "optional"].contains(&k.as_str()) {
            continue;
        }
        let setting = match v {
            serde_norway::Value::Bool(b) => Setting::Switch(*b),
            serde_norway::Value::Sequence(items) => Setting::Values(
                items
                    .iter()
                    .map(|i| {
                        scalar(i).ok_or_else(|| bad(field(k), "a list of plain values".to_owned()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => Setting::Value(
                scalar(other).ok_or_else(|| bad(field(k), "a plain value".to_owned()))?,
            ),
        };
        settings.push((k.as_str(), setting));
    }
    let (spec, target) = crate::faults::from_entry(
        &kind,
        settings.iter().map(|(k, v)| (*k, v)),
        Some(length + LEASE_MARGIN),
    )
    .map_err(|e| {
        let at = if e.field.is_empty() { format!("faults[{index}]") } else { field(&e.field) };
        // The lease is the scenario's: `for` plus a margin.
        bad(at, if e.field == "lease" { "set by `for`".to_owned() } else { e.problem })
    })?;
    // Checked when the file is read, not minutes into the run when the controller would
    // refuse it: a fault entry says where it acts.
    if !crate::faults::names_a_target(&target, &spec) {
        return Err(bad(format!("faults[{index}]"), crate::faults::no_target_in_fields("", None)));
    }
    // The report names the container a fault acted in, as the scenario named it.
    let inside = spec.container.as_ref().map_or(String::new(), |c| {
        match (c.name.is_empty(), c.select.is_empty()) {
            (false, true) => format!(" in container {}", c.name),
            (true, false) => format!(" in container {}", c.select.join(",")),
            _ => format!(" in container {} {}", c.name, c.select.join(",")),
        }
    });
    let inside = match &spec.pod {
        Some(p) if inside.is_empty() => format!(" in {}", crate::faults::pod_words(p)),
        _ => inside,
    };
    // And the fault's own settings as the entry wrote them (20%, 256kbit, ^nginx$), so a
    // report row says what was done, not only its kind.
    const TARGETING: [&str; 15] = [
        "select",
        "on",
        "all",
        "mode",
        "count",
        "percent",
        "container",
        "container_select",
        "containers",
        "node",
        "pod",
        "pod_select",
        "namespace",
        "all_namespaces",
        "pod_container",
    ];
    // What it does first, where last (a plot's shade shows the start of this).
    let mut ordered: Vec<&(&str, Setting)> =
        settings.iter().filter(|(k, _)| !TARGETING.contains(k)).collect();
    ordered.sort_by_key(|(k, _)| ["interface", "direction"].contains(k));
    let own: Vec<String> = ordered
        .into_iter()
        .filter_map(|(k, v)| match v {
            Setting::Switch(true) => Some((*k).to_owned()),
            Setting::Switch(false) => None,
            Setting::Value(x) => Some(format!("{k} {x}")),
            Setting::Values(xs) => Some(format!("{k} {}", xs.join(","))),
        })
        .collect();
    // A long peer list would fill a report's row: the first 120 characters say enough.
    let own = own.join(", ");
    let own = match own.chars().count() {
        0 => String::new(),
        n if n > 120 => format!(" ({}…)", own.chars().take(119).collect::<String>()),
        _ => format!(" ({own})"),
    };
    let describe = format!(
        "{kind}{own}{inside}{}",
        if target.selector.is_empty() { String::new() } else { format!(" on {}", target.selector) }
    );
    Ok(FaultPlan {
        index,
        at,
        length,
        request: FaultRequest::Apply(pb::ApplyFaultRequest {
            target: Some(target),
            spec: Some(spec),
            dry_run: false,
        }),
        describe,
        optional,
    })
}

/// `text` cut to its first 300 bytes (on a character boundary), saying how long it was.
fn shorten(text: String) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

/// Reads and checks a scenario of the `faultline` command's user (`body: @FILE` and
/// `cacert: FILE` are read beside it); nothing runs until all of it is valid.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    load_with(path, Files::Local)
}

/// The largest scenario file: a page of YAML, with room for an inline body or CA.
pub const MAX_FILE: u64 = 1024 * 1024;

/// Reads and checks a scenario; `files` says whether its load may name files (a scenario
/// a remote caller sent may not: the controller opens no path a caller names).
pub fn load_with(path: &Path, files: Files) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    // Problems quote the file's values; a huge value must not make a huge error.
    let err = |line: Option<usize>, field: &str, problem: String| ScenarioError {
        file: file.clone(),
        line,
        field: field.to_owned(),
        problem: shorten(problem),
    };
    let bytes = crate::localfile::read(path, MAX_FILE, "file")
        .map_err(|e| err(None, "file", e.trim_start_matches("file: ").to_owned()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        err(None, "file", format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
    })?;
    // Editors on some systems start a file with a byte-order mark; YAML has no use for it.
    let text = text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text);
    let de = serde_norway::Deserializer::from_str(&text);
    let f: File = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        let problem = inner.to_string();
        // The location is already in `line`; keep the message short.
        let problem = problem.split(" at line ").next().unwrap_or(&problem).to_owned();
        err(line, &field, problem)
    })?;
    let line_of = |key: &str| {
        text.lines().position(|l| l.trim_start().starts_with(&format!("{key}:"))).map(|i| i + 1)
    };
    let dur = |key: &str, v: &str| {
        units::duration(v).map_err(|e| err(line_of(key), &format!("phases.{key}"), e))
    };
    let warmup = dur("warmup", &f.phases.warmup)?;
    let baseline = dur("baseline", &f.phases.baseline)?;
    let fault = dur("fault", &f.phases.fault)?;
    let recovery = dur("recovery", &f.phases.recovery)?;
    for (k, d) in [("baseline", baseline), ("fault", fault), ("recovery", recovery)] {
        if d < Duration::from_secs(1) {
            return Err(err(
                line_of(k),
                &format!("phases.{k}"),
                "at least 1s: the analysis works in whole seconds".into(),
            ));
        }
    }
    let probed = probe_lists(&f, &text, files, &err)?;
    // The steady state is judged on the baseline's samples: a probe of the hypothesis must
    // be asked there at least once.
    for (i, p) in probed.probes.iter().enumerate() {
        if probed.steady.contains(&p.name) && p.interval > baseline {
            return Err(err(
                list_item_line(&text, "probes", i),
                &format!("probes[{i}].interval"),
                format!(
                    "{} is longer than the baseline phase ({}): the hypothesis names this probe, and needs a sample there",
                    units::show_duration(p.interval),
                    units::show_duration(baseline)
                ),
            ));
        }
    }
    // Every sample is kept: a short interval over a long run is refused, not a memory sink.
    let run_ms = (warmup + baseline + fault + recovery).as_millis() as u64;
    let samples: u64 =
        probed.probes.iter().map(|p| run_ms / (p.interval.as_millis() as u64).max(1) + 1).sum();
    if samples > MAX_PROBE_SAMPLES {
        return Err(err(
            line_of("probes"),
            "probes",
            format!(
                "{samples} samples over the run's {}; at most {MAX_PROBE_SAMPLES}: give the probes a longer interval",
                units::show_duration(Duration::from_millis(run_ms))
            ),
        ));
    }
    let thresholds = thresholds(&f.analysis).map_err(|FieldError { field, problem }| {
        let key = field.trim_start_matches("analysis.");
        err(line_of(key).or_else(|| line_of("analysis")), &field, problem)
    })?;
    // Load conditions keep their own item's line: errors index the whole list.
    let conditions = |key: &str, list: &[String]| -> Result<Vec<Condition>, ScenarioError> {
        list.iter()
            .enumerate()
            .filter(|(_, h)| probe_ref(h).is_none())
            .map(|(i, h)| {
                parse_condition(h)
                    .map_err(|e| err(list_item_line(&text, key, i), &format!("{key}[{i}]"), e))
            })
            .collect()
    };
    let hypothesis = conditions("hypothesis", &f.hypothesis)?;
    let during = conditions("during", &f.during)?;
    let mut guardrails = Vec::new();
    for (i, g) in f.guardrails.iter().enumerate() {
        if probe_ref(g).is_none() {
            guardrails.push(parse_guardrail(g).map_err(|e| {
                err(list_item_line(&text, "guardrails", i), &format!("guardrails[{i}]"), e)
            })?);
        }
    }
    let mut faults = Vec::new();
    for (i, entry) in f.faults.iter().enumerate() {
        let plan = fault_plan(i, entry).map_err(|FieldError { field, problem }| {
            err(list_item_line(&text, "faults", i), &field, problem)
        })?;
        if plan.at.checked_add(plan.length).is_none_or(|end| end > fault) {
            return Err(err(
                list_item_line(&text, "faults", i),
                &format!("faults[{i}]"),
                format!(
                    "at {:?} + for {:?} ends after the fault phase ({fault:?}); the recovery phase must be fault-free",
                    plan.at, plan.length
                ),
            ));
        }
        faults.push(plan);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let load_args =
        load_argv(&f.load, dir, files).map_err(|FieldError { field: key, problem }| {
            err(line_of(&key).or_else(|| line_of("load")), &format!("load.{key}"), problem)
        })?;
    // Checked now by `faultline load`'s own parser and checks, not after connecting.
    let mut argv = load_args.clone();
    argv.extend([
        "--duration".into(),
        format!("{}ms", (warmup + baseline + fault + recovery).as_millis()),
    ]);
    let parsed = LoadFlags::try_parse_from(&argv).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("").trim_start_matches("error: ").to_owned();
        // clap names the flag; say it the way the file does.
        let key = first
            .split("'--")
            .nth(1)
            .and_then(|r| r.split([' ', '\'', '<']).next())
            .map_or("load".to_owned(), |k| format!("load.{}", k.replace('-', "_")));
        err(line_of("load"), &key, first.replace("--", ""))
    })?;
    parsed.load.spec_with(files).map_err(|e| {
        let problem = format!("{e:#}").replace("--", "");
        // The load's checks start with the flag they are about ("connections: at least 1").
        let key = problem.split_once(':').map(|(k, _)| k.trim()).filter(|k| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        let line = key.and_then(|k| line_of(&k.replace('-', "_"))).or_else(|| line_of("load"));
        err(
            line,
            &key.map_or("load".to_owned(), |k| format!("load.{}", k.replace('-', "_"))),
            problem,
        )
    })?;
    Ok(Scenario {
        name: f.name,
        description: f.description,
        load_args,
        hypothesis,
        during,
        warmup,
        baseline,
        fault,
        recovery,
        faults,
        guardrails,
        probes: probed.probes,
        steady_probes: probed.steady,
        during_probes: probed.during,
        probe_guardrails: probed.guardrails,
        thresholds,
    })
}

/// The file's probes and the entries of its lists that name them.
struct Probed {
    probes: Vec<crate::probe::Probe>,
    steady: Vec<String>,
    during: Vec<String>,
    guardrails: Vec<ProbeGuardrail>,
}

/// `probes:`, and `probe NAME` in the hypothesis, `during:` and guardrails, each error at
/// its item's line.
fn probe_lists(
    f: &File,
    text: &str,
    files: Files,
    err: &dyn Fn(Option<usize>, &str, String) -> ScenarioError,
) -> Result<Probed, ScenarioError> {
    let line_of = |key: &str| {
        text.lines().position(|l| l.trim_start().starts_with(&format!("{key}:"))).map(|i| i + 1)
    };
    let trust = match files {
        Files::Local => crate::probe::Trust::Local,
        Files::Refused => crate::probe::Trust::Remote,
    };
    if f.probes.len() > MAX_PROBES {
        return Err(err(line_of("probes"), "probes", format!("at most {MAX_PROBES} probes")));
    }
    let mut probes: Vec<crate::probe::Probe> = Vec::new();
    for (i, entry) in f.probes.iter().enumerate() {
        let p = probe_entry(i, entry, trust).map_err(|FieldError { field, problem }| {
            err(list_item_line(text, "probes", i), &field, problem)
        })?;
        if probes.iter().any(|q| q.name == p.name) {
            return Err(err(
                list_item_line(text, "probes", i),
                &format!("probes[{i}].name"),
                format!("{:?} names another probe too", p.name),
            ));
        }
        probes.push(p);
    }
    // `probe NAME` entries of a list, each naming a probe of the file.
    let probe_refs = |key: &str, list: &[String]| -> Result<Vec<String>, ScenarioError> {
        let mut names = Vec::new();
        for (i, h) in list.iter().enumerate() {
            if let Some(name) = probe_ref(h) {
                if !probes.iter().any(|p| p.name == name) {
                    return Err(err(
                        list_item_line(text, key, i),
                        &format!("{key}[{i}]"),
                        format!("no probe is named {name:?} (probes: {})", probe_names(&probes)),
                    ));
                }
                names.push(name.to_owned());
            }
        }
        Ok(names)
    };
    let steady_probes = probe_refs("hypothesis", &f.hypothesis)?;
    let during_probes = probe_refs("during", &f.during)?;
    let mut probe_guardrails = Vec::new();
    for (i, g) in f.guardrails.iter().enumerate() {
        let at = |e| err(list_item_line(text, "guardrails", i), &format!("guardrails[{i}]"), e);
        if probe_ref(g).is_some() {
            let pg = parse_probe_guardrail(g).map_err(at)?;
            if !probes.iter().any(|p| p.name == pg.probe) {
                return Err(at(format!(
                    "no probe is named {:?} (probes: {})",
                    pg.probe,
                    probe_names(&probes)
                )));
            }
            probe_guardrails.push(pg);
        }
    }
    Ok(Probed {
        probes,
        steady: steady_probes,
        during: during_probes,
        guardrails: probe_guardrails,
    })
}

fn probe_names(probes: &[crate::probe::Probe]) -> String {
    if probes.is_empty() {
        "none; add them under probes:".to_owned()
    } else {
        probes.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_proto::agent::v1 as apb;

    /// A scenario file of a test, removed when the test is done with it.
    struct Scratch(std::path::PathBuf);
    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }
    impl AsRef<Path> for Scratch {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write(text: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "faultline-scenario-{}-{}.yaml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, text).unwrap();
        Scratch(p)
    }

    const GOOD: &str = "name: db drop
load:
  target: http://10.0.0.5:8080/
  rate: 200
hypothesis:
  - p99 < 200ms
  - error_rate < 1%
phases:
  warmup: 2s
  baseline: 10s
  fault: 20s
  recovery: 10s
faults:
  - at: 0s
    for: 10s
    kind: drop
    interface: eth0
    loss: 100%
    select: role=db
  - at: 5s
    for: 10s
    partition: isolate
    node: h1
guardrails:
  - error_rate > 50% for 5s
";

    #[test]
    fn a_good_scenario_parses_into_requests() {
        let s = load(&write(GOOD)).unwrap();
        assert_eq!(s.total(), Duration::from_secs(42));
        assert_eq!(s.fault_start(), Duration::from_secs(12));
        assert_eq!(
            s.hypothesis[0],
            Condition { metric: Metric::P99, less: true, value: 200.0, text: "p99 < 200ms".into() }
        );
        assert!((s.hypothesis[1].value - 0.01).abs() < 1e-12);
        assert_eq!(s.guardrails[0].seconds, 5);
        let FaultRequest::Apply(r) = &s.faults[0].request else { panic!() };
        assert_eq!(r.target.as_ref().unwrap().selector, "role=db");
        let spec = r.spec.as_ref().unwrap();
        assert_eq!((spec.interface.as_str(), spec.lease_ms), ("eth0", 12_000));
        assert!(
            matches!(spec.kind, Some(apb::fault_spec::Kind::Drop(ref d)) if (d.percent - 100.0).abs() < 1e-9)
        );
        let FaultRequest::Partition(p) = &s.faults[1].request else { panic!() };
        assert_eq!((p.node.as_str(), p.lease_ms), ("h1", 12_000));
        assert_eq!(s.load_args, ["http://10.0.0.5:8080/", "--rate", "200"]);
    }

    /// Issue 33: probes are named by the hypothesis, `during:` and guardrails; a name that
    /// is not a probe, a bad setting and a command probe a remote caller sent are refused
    /// with the field and the line.
    #[test]
    fn probes_are_read_and_named_by_the_lists_that_use_them() {
        let text = GOOD
            .replace("hypothesis:\n", "probes:\n  - name: web\n    kind: http\n    url: http://10.0.0.5:8080/health\n    interval: 500ms\n    timeout: 200ms\n  - name: cli\n    kind: command\n    run: [redis-cli, ping]\n    match: PONG\nhypothesis:\n  - probe web\n")
            .replace("guardrails:\n", "during:\n  - probe cli\nguardrails:\n  - probe web fails 3 times\n");
        let s = load(&write(&text)).unwrap();
        assert_eq!(s.probes.len(), 2);
        assert_eq!(
            (s.steady_probes.as_slice(), s.during_probes.as_slice()),
            (&["web".to_owned()][..], &["cli".to_owned()][..])
        );
        assert_eq!(
            s.probe_guardrails[0],
            ProbeGuardrail {
                probe: "web".into(),
                times: 3,
                text: "probe web fails 3 times".into()
            }
        );
        // The load's conditions are still there, beside the probes.
        assert_eq!((s.hypothesis.len(), s.guardrails.len()), (2, 1));
        let bad = |from: &str, to: &str| load(&write(&text.replace(from, to))).unwrap_err();
        let e = bad("  - probe web\n", "  - probe wbe\n");
        assert!(
            e.field == "hypothesis[0]"
                && e.problem.contains("no probe is named \"wbe\" (probes: web, cli)"),
            "{e}"
        );
        let e = bad("probe web fails 3 times", "probe web fails often");
        assert!(
            e.field == "guardrails[0]" && e.problem.contains("not a number of failures"),
            "{e}"
        );
        let e = bad("    timeout: 200ms\n", "    timeout: 2s\n");
        assert!(e.field == "probes[0].timeout" && e.line == Some(6), "{e}");
        let e = bad("  - name: cli\n", "  - name: web\n");
        assert!(e.field == "probes[1].name" && e.problem.contains("another probe"), "{e}");
        let e = bad("    interval: 500ms\n", "    interval: 15s\n");
        assert!(
            e.field == "probes[0].interval" && e.problem.contains("longer than the baseline"),
            "{e}"
        );
        // Every sample is kept: too many over a long run are refused up front.
        let e = bad("  recovery: 10s\n", "  recovery: 24h\n");
        assert!(e.field == "probes" && e.problem.contains("longer interval"), "{e}");
        let e = load_with(&write(&text), Files::Refused).unwrap_err();
        assert!(e.field == "probes[1].kind" && e.problem.contains("command's own user"), "{e}");
    }

    /// Issue 33: the analysis's thresholds as the scenario sets them, checked.
    #[test]
    fn analysis_thresholds_are_read_and_checked() {
        let text = GOOD.to_owned()
            + "analysis:\n  goodput_change: 50%\n  error_rate_rise: 10%\n  p99_rise: 300%\n  p99_margin: 25ms\n  recovered_after: 5s\n";
        let t = load(&write(&text)).unwrap().thresholds;
        assert_eq!(
            (
                t.goodput_change,
                t.error_rate_rise,
                t.p99_rise,
                t.p99_margin_ms,
                t.sigmas,
                t.recovered_after_s
            ),
            (0.5, 0.1, 3.0, 25.0, 3.0, 5)
        );
        assert_eq!(
            load(&write(GOOD)).unwrap().thresholds,
            super::super::files::Thresholds::default()
        );
        let bad = |from: &str, to: &str| load(&write(&text.replace(from, to))).unwrap_err();
        let e = bad("goodput_change: 50%", "goodput_change: 150%");
        assert!(e.field == "analysis.goodput_change" && e.line.is_some(), "{e}");
        assert_eq!(
            bad("recovered_after: 5s", "recovered_after: 1.5s").field,
            "analysis.recovered_after"
        );
        assert_eq!(bad("p99_margin: 25ms", "p99_margin: 25").field, "analysis.p99_margin");
        assert_eq!(bad("  recovered_after: 5s\n", "  recover: 5s\n").field, "analysis.recover");
    }

    /// Issue 14: a fault entry names a container as `fault apply` does.
    #[test]
    fn a_fault_entry_can_act_in_a_container() {
        let text = GOOD.replace(
            "    interface: eth0\n",
            "    container_select: com.docker.compose.service=db\n",
        );
        let s = load(&write(&text)).unwrap();
        let FaultRequest::Apply(r) = &s.faults[0].request else { panic!() };
        let spec = r.spec.as_ref().unwrap();
        assert_eq!(
            (spec.interface.as_str(), spec.container.as_ref().unwrap().select.as_slice()),
            ("", &["com.docker.compose.service=db".to_owned()][..])
        );
        assert_eq!(
            s.faults[0].describe,
            "drop (loss 100%) in container com.docker.compose.service=db on role=db",
            "the report names the container and the settings"
        );
    }

    /// Issue 34: a fault entry names a pod as `fault apply` does, its selector kept whole
    /// (commas inside a set are the selector's).
    #[test]
    fn a_fault_entry_can_act_in_a_pod() {
        let text = GOOD.replace(
            "    interface: eth0\n",
            "    pod_select: app in (web,api)\n    namespace: shop\n",
        );
        let s = load(&write(&text)).unwrap();
        let FaultRequest::Apply(r) = &s.faults[0].request else { panic!() };
        let pod = r.spec.as_ref().unwrap().pod.clone().unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str(), pod.select.as_slice()),
            ("shop", "", &["app in (web,api)".to_owned()][..])
        );
        assert_eq!(
            s.faults[0].describe,
            "drop (loss 100%) in pod shop app in (web,api) on role=db"
        );
        let text =
            GOOD.replace("    interface: eth0\n", "    pod: web-0\n    all_namespaces: true\n");
        let e = load(&write(&text)).unwrap_err();
        assert!(e.to_string().contains("needs its namespace"), "{e}");
    }

    /// Issue 14: a partition entry cuts containers, named as the CLI names them.
    #[test]
    fn a_partition_entry_can_cut_containers() {
        let text = GOOD.replace("    partition: isolate\n    node: h1\n", "    partition: groups\n    container_select: com.docker.compose.project=shop\n    containers: [web, redis]\n    groups: [[web], [redis]]\n");
        let s = load(&write(&text)).unwrap();
        let FaultRequest::Partition(p) = &s.faults[1].request else { panic!() };
        assert_eq!(
            (p.container_select.as_slice(), p.containers.as_slice()),
            (
                &["com.docker.compose.project=shop".to_owned()][..],
                &["web".to_owned(), "redis".to_owned()][..]
            )
        );
        assert_eq!(s.faults[1].describe, "partition groups of containers");
        let e = load(&write(&text.replace("containers: [web, redis]", "containers: {web: 1}")))
            .unwrap_err();
        assert_eq!(e.field, "faults[1].containers", "{e}");
    }

    /// Issue 34: a partition entry cuts pods, grouped by their own labels.
    #[test]
    fn a_partition_entry_can_cut_pods() {
        let text = GOOD.replace("    partition: isolate\n    node: h1\n", "    partition: groups\n    pod_select: app in (web,redis)\n    namespace: shop\n    groups: [[app=web], [app=redis]]\n");
        let s = load(&write(&text)).unwrap();
        let FaultRequest::Partition(p) = &s.faults[1].request else { panic!() };
        assert_eq!(
            (p.pod_select.as_slice(), p.pod_namespace.as_str(), p.all_namespaces),
            (&["app in (web,redis)".to_owned()][..], "shop", false)
        );
        assert_eq!(p.groups[0].agents, ["app=web"]);
        assert_eq!(s.faults[1].describe, "partition groups of pods");
        let e = load(&write(&text.replace("namespace: shop", "all_namespaces: yes please")))
            .unwrap_err();
        assert_eq!(e.field, "faults[1].all_namespaces", "{e}");
    }

    #[test]
    fn the_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3, "examples/ holds {n} scenarios");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = |from: &str, to: &str| load(&write(&GOOD.replace(from, to))).unwrap_err();
        let e = bad("kind: drop", "kind: dorp");
        assert_eq!((e.line, e.field.as_str()), (Some(14), "faults[0]"), "{e}");
        assert!(e.problem.contains("dorp"), "{e}");
        // A bad setting is named down to the setting, as the Web API names it.
        let e = bad("loss: 100%", "loss: 140%");
        assert_eq!(e.field, "faults[0].loss");
        assert!(e.to_string().contains(": faults[0].loss:"), "{e}");
        let e = bad("    for: 10s\n    partition", "    for: 20s\n    partition");
        assert!(e.problem.contains("ends after the fault phase"), "{e}");
        assert_eq!(e.line, Some(20));
        let e = bad("  baseline: 10s", "  baseline: 10 s");
        assert_eq!(e.field, "phases.baseline");
        assert_eq!(e.line, Some(10));
        let e = bad("  rate: 200", "  rate: 200\n  rat: 5");
        assert_eq!(e.field, "load.rat");
        assert!(e.problem.contains("rat"), "{e}");
        assert!(e.line.is_some());
        let e = bad("  - p99 < 200ms", "  - p98 < 200ms");
        assert_eq!((e.field.as_str(), e.line), ("hypothesis[0]", Some(6)));
        let e = bad("error_rate > 50% for 5s", "error_rate > 50%");
        assert_eq!(e.field, "guardrails[0]");
        let e = bad("    node: h1", "    node: h1\n    loss: 5%");
        assert_eq!(e.field, "faults[1].loss");
        let e = bad("    for: 10s\n    kind", "    kind");
        assert_eq!(e.field, "faults[0].for");
        let e = bad("    node: h1", "    node: h1\n    optional: maybe");
        assert_eq!((e.field.as_str(), e.problem.as_str()), ("faults[1].optional", "true or false"));
    }

    #[test]
    fn optional_is_the_scenario_s_not_a_fault_flag() {
        let s = load(&write(
            &GOOD
                .replace("    node: h1", "    node: h1\n    optional: true")
                .replace("    kind: drop", "    kind: drop\n    optional: false"),
        ))
        .unwrap();
        assert_eq!((s.faults[0].optional, s.faults[1].optional), (false, true));
        let FaultRequest::Partition(p) = &s.faults[1].request else { panic!() };
        assert_eq!(p.node, "h1");
    }

    /// A fault entry says where it acts (issue 32): no `on`, `select` or container is
    /// refused when the file is read, and `all: true` means every agent on purpose.
    #[test]
    fn a_fault_without_a_target_is_refused_unless_it_says_all() {
        let e = load(&write(&GOOD.replace("    select: role=db\n", ""))).unwrap_err();
        assert_eq!(e.field, "faults[0]");
        assert!(
            e.problem.contains("all: true") && e.problem.contains("on: [NAME]"),
            "{}",
            e.problem
        );
        let s = load(&write(&GOOD.replace("    select: role=db\n", "    all: true\n"))).unwrap();
        let FaultRequest::Apply(r) = &s.faults[0].request else { panic!() };
        assert!(r.target.as_ref().is_some_and(|t| t.all));
        assert_eq!(s.faults[0].describe, "drop (loss 100%, interface eth0)");
        let e = load(&write(
            &GOOD.replace("    select: role=db\n", "    dry_run: true\n    all: true\n"),
        ))
        .unwrap_err();
        assert_eq!(e.field, "faults[0].dry_run");
    }

    /// Values that once panicked, wrapped or passed the check (hardening, F5).
    #[test]
    fn huge_and_odd_values_are_named_not_panics() {
        let bad = |from: &str, to: &str| load(&write(&GOOD.replace(from, to))).unwrap_err();
        assert_eq!(bad("  fault: 20s", "  fault: 99999999999999999999999s").field, "phases.fault");
        assert_eq!(
            bad("    for: 10s\n    kind", "    for: 10000000000000000000s\n    kind").field,
            "faults[0].for"
        );
        let e = bad("  - at: 0s", "  - at: 10000000000000000000s");
        assert_eq!(e.field, "faults[0].at");
        assert_eq!(
            bad("error_rate > 50% for 5s", "error_rate > 50% for 5000000000s").field,
            "guardrails[0]"
        );
        assert_eq!(bad("  - p99 < 200ms", "  - rate > nan").field, "hypothesis[0]");
        assert_eq!(bad("  rate: 200", "  rate: -5").field, "load.rate");
        assert_eq!(bad("  rate: 200", "  rate: .nan").field, "load.rate");
        assert_eq!(bad("  rate: 200", "  rate: 200\n  connections: 0").field, "load.connections");
        let e = bad("    loss: 100%", &format!("    loss: {}%", "9".repeat(100_000)));
        assert!(
            e.to_string().len() < 400,
            "the error echoes the whole input: {} bytes",
            e.to_string().len()
        );
        // A byte-order mark is not part of the YAML.
        assert!(load(&write(&format!("\u{feff}{GOOD}"))).is_ok());
        let p = write("x");
        std::fs::write(&p, b"name: \xff\xfe").unwrap();
        assert_eq!(load(&p).unwrap_err().field, "file");
    }

    /// Issue 12: `load:` takes what `faultline load` takes (a POST with headers and a body
    /// from a file next to the scenario), and `during:` states what must hold under faults.
    #[test]
    fn load_takes_every_load_flag_and_during_is_parsed() {
        let dir =
            std::env::temp_dir().join(format!("faultline-scenario-body-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("req.json"), "{}").unwrap();
        let text = GOOD
            .replace("  rate: 200\n", "  rate: 200\n  method: POST\n  header: [\"content-type: application/json\", \"x-a: b\"]\n  body: \"@req.json\"\n  connections: 8\n")
            .replace("guardrails:", "during:\n  - error_rate < 5%\nguardrails:");
        let p = dir.join("post.yaml");
        std::fs::write(&p, text).unwrap();
        let s = load(&p).unwrap();
        let body = format!("@{}", dir.join("req.json").display());
        assert_eq!(
            s.load_args,
            [
                "http://10.0.0.5:8080/",
                "--body",
                &body,
                "--connections",
                "8",
                "--header",
                "content-type: application/json",
                "--header",
                "x-a: b",
                "--method",
                "POST",
                "--rate",
                "200"
            ]
        );
        assert_eq!(s.during.len(), 1);
        assert_eq!(s.during[0].metric, Metric::ErrorRate);
        let bad = |from: &str, to: &str| {
            std::fs::write(&p, GOOD.replace(from, to)).unwrap();
            load(&p).unwrap_err()
        };
        assert_eq!(bad("  rate: 200", "  rate: 200\n  duration: 5s").field, "load.duration");
        assert_eq!(bad("  rate: 200", "  rate: 200\n  body: \"@missing.json\"").field, "load.body");
        let e = bad("guardrails:", "during:\n  - p99 < fast\nguardrails:");
        assert_eq!(e.field, "during[0]");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_example_scenario_loads() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let examples = std::fs::read_dir(root.join("examples"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"));
        for p in examples.chain([root.join("vagrant/lab.yaml")]) {
            load(&p).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
        }
    }
}
