//! `faultline run SCENARIO`: load and faults on one clock, guardrails watching, and a
//! run directory with everything measured. The load runs here, in the CLI process; the
//! faults go through the controller.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use faultline_proto::controller::v1::{self as pb, controller_service_client::ControllerServiceClient};
use tonic::transport::Channel;

pub mod files;
pub mod kernel_watch;
pub mod scenario;

use self::scenario::{Condition, FaultPlan, FaultRequest, Metric, Scenario};
use crate::{
    load::{self, args::LoadArgs, record::Recorder},
    table,
};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The scenario file (YAML; see examples/).
    scenario: PathBuf,
    /// The run directory (default: runs/NAME-YYYYMMDDTHHMMSSZ).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl RunArgs {
    pub fn new(scenario: PathBuf, out: Option<PathBuf>) -> Self {
        Self { scenario, out }
    }

    pub fn scenario(&self) -> &Path {
        &self.scenario
    }
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct LoadOnly {
    #[command(flatten)]
    load: LoadArgs,
}

/// One fault's life on the run's clock (seconds from the load's start).
#[derive(Debug, Clone, Default)]
struct Timeline {
    index: usize,
    describe: String,
    planned_at: f64,
    planned_end: f64,
    applied_at: Option<f64>,
    reverted_at: Option<f64>,
    id: String,
    agents: Vec<String>,
    error: String,
    /// Why an optional fault was not applied: its agents lack what it needs.
    skipped: Option<String>,
    parts: Vec<Part>,
}

/// One agent's part of a fault, with its times on that agent's clock (unix ms, 0 where
/// not known), put on the run's clock when written, by the agent's measured offset.
#[derive(Debug, Clone, Default)]
struct Part {
    agent: String,
    agent_fault_id: String,
    applied_ms: i64,
    reverted_ms: i64,
}

/// A part's times in seconds of the run, and the agent's (offset, uncertainty) in ms
/// that put them there; None where the offset or the time is not known.
#[derive(Debug, PartialEq)]
struct OnRunClock {
    applied_s: Option<f64>,
    reverted_s: Option<f64>,
    clock: Option<(f64, f64)>,
}

impl Part {
    fn on_run_clock(&self, clocks: &BTreeMap<String, (f64, f64)>, run_start_unix_ms: f64) -> OnRunClock {
        let clock = clocks.get(&self.agent).copied();
        let at = |ms: i64| clock.filter(|_| ms > 0).map(|(offset, _)| (ms as f64 - offset - run_start_unix_ms) / 1000.0);
        OnRunClock { applied_s: at(self.applied_ms), reverted_s: at(self.reverted_ms), clock }
    }
}

/// The agents a target or partition names, checked against what the controller knows,
/// and the kernel capabilities each fault needs on them. Returns the optional faults to
/// skip, with why; a fault that is not optional and cannot run refuses the scenario.
fn check_targets(s: &Scenario, file: &Path, agents: &[pb::Agent]) -> Result<Vec<(usize, String)>> {
    let names: Vec<String> = agents.iter().map(|a| format!("{} {:?}", a.name, a.labels)).collect();
    let mut skip = Vec::new();
    for f in &s.faults {
        let (selector, named, spec): (String, Vec<String>, _) = match &f.request {
            FaultRequest::Apply(r) => {
                let t = r.target.clone().unwrap_or_default();
                (t.selector, t.agents, r.spec.as_ref())
            }
            FaultRequest::Partition(p) => (p.selector.clone(), if p.node.is_empty() { vec![] } else { vec![p.node.clone()] }, None),
        };
        let sel = crate::targeting::parse_selector(&selector).map_err(|e| anyhow::anyhow!("{}: faults[{}]: {e}", file.display(), f.index))?;
        for n in &named {
            if !agents.iter().any(|a| &a.name == n) {
                bail!("{}: faults[{}]: no agent {n:?} (agents: {})", file.display(), f.index, names.join("; "));
            }
        }
        let chosen: Vec<&pb::Agent> = if named.is_empty() || spec.is_none() {
            agents.iter().filter(|a| crate::targeting::selector_matches(&sel, |k| a.labels.get(k))).collect()
        } else {
            agents.iter().filter(|a| named.contains(&a.name)).collect()
        };
        if chosen.is_empty() {
            bail!("{}: faults[{}]: selector {selector:?} matches no agent (agents: {})", file.display(), f.index, names.join("; "));
        }
        // A partition cuts with the eBPF classifier on every agent it involves.
        let lacking = chosen.iter().find_map(|a| {
            let probes = a.capabilities.as_ref().map(|c| c.probes.as_slice()).unwrap_or_default();
            let partition = faultline_proto::agent::v1::FaultSpec { kind: Some(faultline_proto::agent::v1::fault_spec::Kind::Partition(faultline_proto::agent::v1::Partition {})), ..Default::default() };
            faultline_proto::doctor::missing(spec.unwrap_or(&partition), probes).map(|cap| (a, cap))
        });
        if let Some((a, cap)) = lacking {
            let why = format!("agent {} (kernel {}) lacks {cap}", a.name, a.kernel_release);
            if !f.optional {
                bail!("{}: faults[{}] ({}): {why}; mark the fault `optional: true` to run the scenario without it on such agents", file.display(), f.index, f.describe);
            }
            skip.push((f.index, why));
        }
    }
    Ok(skip)
}

/// Measurements over whole seconds [from, to) of the recorder.
struct Window {
    requests: u64,
    errors: u64,
    seconds: u64,
    corrected: hdrhistogram::Histogram<u64>,
}

fn window(rec: &Recorder, from: u64, to: u64) -> Window {
    let mut sum = load::record::Second::default();
    for s in rec.seconds.iter().take(to as usize).skip(from as usize) {
        sum.add(s);
    }
    Window { requests: sum.requests(), errors: sum.errors(), seconds: to.saturating_sub(from).max(1), corrected: sum.corrected }
}

impl Window {
    fn quantile(&self, p: f64) -> f64 {
        load::record::ms_at(&self.corrected, p)
    }

    fn value(&self, m: Metric) -> f64 {
        let q = |p| self.quantile(p);
        match m {
            Metric::P50 => q(0.5),
            Metric::P90 => q(0.9),
            Metric::P99 => q(0.99),
            Metric::ErrorRate => if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 },
            Metric::Rate => self.requests as f64 / self.seconds as f64,
        }
    }

    fn holds(&self, c: &Condition) -> (bool, f64) {
        let v = self.value(c.metric);
        (if c.less { v < c.value } else { v > c.value }, v)
    }

    fn measured(&self) -> files::Measured {
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

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect::<String>().split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

async fn apply(c: &mut ControllerServiceClient<Channel>, f: &FaultPlan) -> Result<pb::ControllerFault, tonic::Status> {
    let r = match &f.request {
        FaultRequest::Apply(r) => c.apply_fault(r.clone()).await?,
        FaultRequest::Partition(p) => c.partition(p.clone()).await?,
    };
    Ok(r.into_inner().fault.unwrap_or_default())
}

pub async fn run(args: &RunArgs, client: ControllerServiceClient<Channel>, security: &faultline_proto::transport::Security) -> Result<()> {
    execute(args, client, security).await?.verdict()
}

/// Runs the scenario and writes the run directory; the verdict is the caller's to judge.
#[expect(clippy::too_many_lines, reason = "the run's timeline: load, fault tasks, guardrails and stop on one clock, in order")]
pub async fn execute(args: &RunArgs, client: ControllerServiceClient<Channel>, security: &faultline_proto::transport::Security) -> Result<Outcome> {
    let s = crate::run::scenario::load(&args.scenario)?;
    let mut load_argv = s.load_args.clone();
    load_argv.extend(["--duration".into(), format!("{}ms", s.total().as_millis()), "--json".into()]);
    let spec = LoadOnly::try_parse_from(&load_argv).map_err(|e| anyhow::anyhow!("{}: load: {}", args.scenario.display(), e.to_string().lines().next().unwrap_or("")))?.load.spec()?;
    let mut c = client;
    let agents = c.list_agents(pb::ListAgentsRequest {}).await.map_err(crate::remote::explain)?.into_inner().agents;
    let skipped = check_targets(&s, &args.scenario, &agents)?;
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", slug(&s.name), utc_stamp())));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating the run directory {}", dir.display()))?;
    std::fs::copy(&args.scenario, dir.join(files::SCENARIO_YAML)).with_context(|| format!("copying {}", args.scenario.display()))?;
    eprintln!("run {}: {} s ({} warmup, {} baseline, {} fault, {} recovery), {} faults, into {}", s.name, s.total().as_secs_f64(), s.warmup.as_secs_f64(), s.baseline.as_secs_f64(), s.fault.as_secs_f64(), s.recovery.as_secs_f64(), s.faults.len(), dir.display());

    // The agents' kernel and host metrics, streamed through the run (best effort: an agent
    // this host cannot reach is noted in agents.csv, and the run goes on).
    let (collected, watchers) = crate::run::kernel_watch::start(&agents, security).await;
    let start = Instant::now() + Duration::from_millis(300);
    let secs_since = move || Instant::now().saturating_duration_since(start).as_secs_f64();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None::<String>);
    let timeline: Arc<Mutex<Vec<Timeline>>> = Arc::default();
    let mut tasks = Vec::new();
    for f in s.faults.clone() {
        if let Some((_, why)) = skipped.iter().find(|(i, _)| *i == f.index) {
            eprintln!("fault {} ({}) skipped: {why}", f.index, f.describe);
            let at = (s.fault_start() + f.at).as_secs_f64();
            let t = Timeline { index: f.index, describe: f.describe.clone(), planned_at: at, planned_end: at + f.length.as_secs_f64(), error: format!("skipped: {why}"), skipped: Some(why.clone()), ..Timeline::default() };
            timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(t);
            continue;
        }
        let (mut c, mut stop, stop_tx, timeline) = (c.clone(), stop_rx.clone(), stop_tx.clone(), timeline.clone());
        let begin = start + s.fault_start() + f.at;
        let end = begin + f.length;
        tasks.push(tokio::spawn(async move {
            let mut t = Timeline { index: f.index, describe: f.describe.clone(), planned_at: (begin - start).as_secs_f64(), planned_end: (end - start).as_secs_f64(), ..Timeline::default() };
            tokio::select! {
                () = tokio::time::sleep_until(begin.into()) => {}
                _ = stop.wait_for(Option::is_some) => {
                    timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(t);
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
                    t.parts = fault.placements.iter().map(|p| Part { agent: p.agent.clone(), agent_fault_id: p.agent_fault_id.clone(), applied_ms: p.applied_at_unix_ms, reverted_ms: 0 }).collect();
                    eprintln!("[{:>6.1}s] fault {} applied: {} on {}", t.applied_at.unwrap_or(0.0), t.id, f.describe, t.agents.join(","));
                    tokio::select! {
                        () = tokio::time::sleep_until(end.into()) => {}
                        _ = stop.wait_for(Option::is_some) => {}
                    }
                    // Kill and restart act once; everything else is reverted here (its lease
                    // would end it anyway, a moment later).
                    if fault.id != crate::daemon::ONE_SHOT_ID {
                        match c.revert_fault(pb::RevertFaultRequest { id: fault.id.clone(), all: false }).await {
                            Ok(r) => {
                                for a in r.into_inner().agents {
                                    if let Some(p) = t.parts.iter_mut().find(|p| p.agent == a.agent) {
                                        p.reverted_ms = a.reverted_at_unix_ms;
                                    }
                                }
                            }
                            Err(e) if e.code() == tonic::Code::NotFound => {}
                            Err(e) => t.error = format!("revert: {:?}: {}", e.code(), e.message()),
                        }
                    }
                    t.reverted_at = Some(secs_since());
                    eprintln!("[{:>6.1}s] fault {} reverted", t.reverted_at.unwrap_or(0.0), t.id);
                }
                Err(e) => {
                    t.error = format!("{:?}: {}", e.code(), e.message());
                    let _ = stop_tx.send(Some(format!("faults[{}] ({}) could not be applied: {}", f.index, f.describe, t.error)));
                }
            }
            timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(t);
        }));
    }

    // Guardrails: checked on each finished second of load.
    let guardrails = s.guardrails.clone();
    let guard_tx = stop_tx.clone();
    let progress = move |rec: &Recorder, elapsed: Duration| {
        let done = elapsed.as_secs().saturating_sub(1) as usize;
        if let Some(sec) = rec.seconds.get(done) {
            eprintln!("[{:>4}s] {:>6}/s  p99 {:.2} ms  errors {}", done + 1, sec.requests(), load::record::ms_at(&sec.corrected, 0.99), sec.errors());
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
            if breached && guard_tx.borrow().is_none() {
                let _ = guard_tx.send(Some(format!("guardrail {:?} held for {} s", g.condition.text, g.seconds)));
            }
        }
    };
    let mut stop = stop_rx.clone();
    let stopped = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = stop.wait_for(Option::is_some) => {}
        }
    };
    let run = load::run(&spec, start, stopped, progress).await;
    if run.interrupted && stop_tx.borrow().is_none() {
        let _ = stop_tx.send(Some("interrupted (Ctrl-C)".into()));
    }
    // Every fault task reverts on stop; wait for them all.
    let _ = stop_tx.send_if_modified(|v| {
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
    let aborted = stop_tx.borrow().clone().filter(|r| !r.is_empty());
    tokio::time::sleep(crate::run::kernel_watch::LAST_SAMPLE).await;
    watchers.iter().for_each(tokio::task::JoinHandle::abort);
    let clocks: BTreeMap<String, (f64, f64)> = {
        let c = collected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.write(&dir, run.started_unix_ms as f64)?;
        c.agents.iter().filter_map(|a| Some((a.name.clone(), (a.offset_ms?, a.uncertainty_ms.unwrap_or(0.0))))).collect()
    };
    let mut timeline = timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    timeline.sort_by_key(|t| t.index);
    let placed: Vec<Vec<OnRunClock>> = timeline.iter().map(|t| t.parts.iter().map(|p| p.on_run_clock(&clocks, run.started_unix_ms as f64)).collect()).collect();

    finish(&s, &run, dir, &timeline, &placed, aborted)
}

/// The run's verdicts and its directory's files, once load and faults are done.
fn finish(s: &Scenario, run: &load::Run, dir: PathBuf, timeline: &[Timeline], placed: &[Vec<OnRunClock>], aborted: Option<String>) -> Result<Outcome> {
    // Analysis of the steady state before the faults and after recovery.
    let secs = |d: Duration| d.as_secs();
    let phases = [
        ("warmup", 0, secs(s.warmup)),
        ("baseline", secs(s.warmup), secs(s.warmup + s.baseline)),
        ("fault", secs(s.fault_start()), secs(s.fault_start() + s.fault)),
        ("recovery", secs(s.fault_start() + s.fault), secs(s.total())),
    ];
    let windows: BTreeMap<&str, Window> = phases.iter().map(|(n, a, b)| (*n, window(&run.recorder, *a, *b))).collect();
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
    // `during`: over the whole fault phase, and over each applied fault's own window
    // (whole seconds from its apply to its revert, as the run's clock saw them).
    for c in &s.during {
        check(c, "fault".into(), &windows["fault"], "during");
        for t in timeline {
            let (Some(from), Some(to)) = (t.applied_at, t.reverted_at.or(t.applied_at.map(|_| t.planned_end))) else { continue };
            let w = window(&run.recorder, from.floor() as u64, (to.ceil() as u64).max(from.floor() as u64 + 1));
            if w.requests > 0 {
                check(c, format!("faults[{}] {}", t.index, t.describe), &w, "during");
            }
        }
    }
    let parts = |t: &Timeline, placed: &[OnRunClock]| -> Vec<files::PartRecord> {
        t.parts
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
            .collect()
    };
    let summary = files::Summary {
        scenario: s.name.clone(),
        description: s.description.clone(),
        started_unix_ms: run.started_unix_ms,
        aborted: aborted.clone(),
        phases: phases.iter().map(|(n, a, b)| files::Phase { name: (*n).to_owned(), from_s: *a, to_s: *b, measured: windows[n].measured() }).collect(),
        hypothesis: verdicts,
        faults: timeline
            .iter()
            .zip(placed)
            .map(|(t, placed)| files::FaultRecord {
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
                parts: parts(t, placed),
            })
            .collect(),
        load: load::summary(run, run.elapsed.min(s.total()).max(Duration::from_millis(1))),
    };
    summary.write(&dir)?;
    table::write(&dir, &load::seconds_rows(&run.recorder))?;
    std::fs::write(dir.join(files::LATENCY_HLOG), load::interval_log(run))?;
    let ms3 = |v: Option<f64>| v.map(table::ms3);
    let fault_rows: Vec<files::FaultRow> = summary
        .faults
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
    table::write(&dir, &fault_rows)?;
    let agent_ms = |v: i64| (v > 0).then_some(v);
    let mut part_rows = Vec::new();
    for (t, f) in timeline.iter().zip(&summary.faults) {
        for (p, r) in t.parts.iter().zip(&f.parts) {
            part_rows.push(files::FaultAgentRow {
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
    table::write(&dir, &part_rows)?;

    for (n, _, _) in &phases {
        let w = &windows[n];
        println!("{n:<9} {:>7} requests  {:>8.1}/s  errors {:>6.2} %  p50 {:>8.2} ms  p99 {:>8.2} ms", w.requests, w.value(Metric::Rate), w.value(Metric::ErrorRate) * 100.0, w.value(Metric::P50), w.value(Metric::P99));
    }
    for v in &summary.hypothesis {
        println!("hypothesis {:<24} {:<9} {}", v.hypothesis, v.phase, if v.holds { "holds" } else { "FAILS" });
    }
    println!("run directory: {}", dir.display());
    Ok(Outcome { dir, aborted, failed })
}

/// A run that wrote its directory: whether it was cut short, and which hypotheses failed.
pub struct Outcome {
    pub dir: PathBuf,
    pub aborted: Option<String>,
    pub failed: Vec<String>,
}

impl Outcome {
    /// The run's verdict as an error: aborted, or the steady state did not hold.
    pub fn verdict(&self) -> Result<()> {
        if let Some(reason) = &self.aborted {
            bail!("run aborted, all faults reverted: {reason}");
        }
        if !self.failed.is_empty() {
            bail!("the steady-state hypothesis does not hold: {}", self.failed.join("; "));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_placed_on_the_run_clock_by_its_agent_offset() {
        // The agent's clock runs 250 ms ahead of ours; the run started at 1_000_000 ms.
        let clocks = BTreeMap::from([("h1".to_owned(), (250.0, 0.3))]);
        let p = Part { agent: "h1".into(), agent_fault_id: "f-1".into(), applied_ms: 1_004_250, reverted_ms: 1_006_750 };
        let clock = Some((250.0, 0.3));
        assert_eq!(p.on_run_clock(&clocks, 1_000_000.0), OnRunClock { applied_s: Some(4.0), reverted_s: Some(6.5), clock });
        // Not reverted (kill, restart), or an agent whose offset was not measured.
        let once = Part { reverted_ms: 0, ..p.clone() };
        assert_eq!(once.on_run_clock(&clocks, 1_000_000.0), OnRunClock { applied_s: Some(4.0), reverted_s: None, clock });
        let unknown = Part { agent: "h2".into(), ..p };
        assert_eq!(unknown.on_run_clock(&clocks, 1_000_000.0), OnRunClock { applied_s: None, reverted_s: None, clock: None });
    }
}
