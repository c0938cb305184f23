//! `faultline run SCENARIO`: load and faults on one clock, guardrails watching, and a
//! run directory with everything measured. The load runs here, in the CLI process; the
//! faults go through the controller. In order: plan (check everything, make the
//! directory), schedule (a task per fault), guard (stop on a breached guardrail), finish
//! (judge the hypothesis, write the directory through its schema in files.rs).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use faultline_proto::controller::v1::controller_service_client::ControllerServiceClient;
use tonic::transport::Channel;

pub mod files;
mod finish;
mod guard;
pub mod kernel_watch;
mod plan;
mod probes;
pub mod scenario;
mod schedule;

use crate::load::{self, args::Files};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The scenario file (YAML; see examples/).
    scenario: PathBuf,
    /// The run directory (default: runs/NAME-YYYYMMDDTHHMMSSZ).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Whether the scenario's load may name files: the command's user's scenario may, one a
    /// remote caller sent the controller may not.
    #[arg(skip = Files::Local)]
    files: Files,
}

impl RunArgs {
    pub fn new(scenario: PathBuf, out: Option<PathBuf>) -> Self {
        Self { scenario, out, files: Files::Local }
    }

    /// A scenario a remote caller sent (the Web API): it names no file to read.
    pub fn from_caller(scenario: PathBuf, out: PathBuf) -> Self {
        Self { scenario, out: Some(out), files: Files::Refused }
    }

    pub fn scenario(&self) -> &Path {
        &self.scenario
    }
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
    fn on_run_clock(
        &self,
        clocks: &BTreeMap<String, (f64, f64)>,
        run_start_unix_ms: f64,
    ) -> OnRunClock {
        let clock = clocks.get(&self.agent).copied();
        let at = |ms: i64| {
            clock
                .filter(|_| ms > 0)
                .map(|(offset, _)| (ms as f64 - offset - run_start_unix_ms) / 1000.0)
        };
        OnRunClock { applied_s: at(self.applied_ms), reverted_s: at(self.reverted_ms), clock }
    }
}

/// A scenario's name as the first part of a run id and directory name: lowercase letters,
/// digits and single dashes, at most 64 characters ("run" when nothing is left).
pub fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let s = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    let s: String = s.chars().take(64).collect();
    if s.is_empty() { "run".to_owned() } else { s.trim_end_matches('-').to_owned() }
}

pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d, hh, mm, ss) = civil(secs as i64);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// `2026-12-07 01:56:35 UTC`: a run's wall-clock times as reports show them, to line up
/// with Grafana and logs.
pub fn utc_time(unix_ms: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix_ms.div_euclid(1000));
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// (year, month, day, hour, minute, second) of a Unix time in seconds.
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

pub async fn run(
    args: &RunArgs,
    client: ControllerServiceClient<Channel>,
    security: &faultline_proto::transport::Security,
) -> Result<()> {
    execute(args, client, security).await?.verdict()
}

/// Runs the scenario and writes the run directory; the verdict is the caller's to judge.
/// Ctrl-C stops it early (every fault reverted, what was measured kept).
pub async fn execute(
    args: &RunArgs,
    client: ControllerServiceClient<Channel>,
    security: &faultline_proto::transport::Security,
) -> Result<Outcome> {
    execute_until(args, client, security, async {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted (Ctrl-C)".to_owned()
    })
    .await
}

/// As `execute`, stopped early when `cancel` resolves, with the reason it gives. The
/// controller runs scenarios this way: a process that serves must not take SIGINT over.
pub async fn execute_until(
    args: &RunArgs,
    client: ControllerServiceClient<Channel>,
    security: &faultline_proto::transport::Security,
    cancel: impl Future<Output = String> + Send + 'static,
) -> Result<Outcome> {
    let mut c = client;
    let p = plan::plan(args, &mut c).await?;
    // The agents' kernel and host metrics, streamed through the run (best effort: an agent
    // this host cannot reach is noted in agents.csv, and the run goes on).
    let (collected, watchers) = kernel_watch::start(&p.agents, security).await;
    let start = Instant::now() + Duration::from_millis(300);
    let (stop, stop_rx) = tokio::sync::watch::channel(None::<String>);
    let canceller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let why = cancel.await;
            stop.send_if_modified(|v| v.is_none() && v.replace(why).is_none());
        })
    };
    let timeline: Arc<Mutex<Vec<Timeline>>> = Arc::default();
    let probing = probes::start(&p.scenario, start, &stop);
    let tasks = schedule::faults(&p, &c, start, &stop, &timeline);
    let progress = guard::progress(p.scenario.guardrails.clone(), stop.clone());
    let run = load::run(&p.load, start, schedule::stopped(stop_rx), progress).await;
    canceller.abort();
    let aborted = schedule::stop_all(&stop, run.interrupted, tasks).await;
    let probed = probing.stop();
    tokio::time::sleep(kernel_watch::LAST_SAMPLE).await;
    watchers.iter().for_each(tokio::task::JoinHandle::abort);
    let clocks: BTreeMap<String, (f64, f64)> = {
        let c = lock(&collected);
        c.write(&p.dir, run.started_unix_ms as f64)?;
        c.agents
            .iter()
            .filter_map(|a| {
                Some((
                    a.agent.clone(),
                    (a.clock_offset_ms?, a.offset_uncertainty_ms.unwrap_or(0.0)),
                ))
            })
            .collect()
    };
    let mut timeline = lock(&timeline).clone();
    timeline.sort_by_key(|t| t.index);
    let placed: Vec<Vec<OnRunClock>> = timeline
        .iter()
        .map(|t| {
            t.parts.iter().map(|p| p.on_run_clock(&clocks, run.started_unix_ms as f64)).collect()
        })
        .collect();
    finish::finish(&p.scenario, &run, p.dir, &timeline, &placed, &probed, aborted)
}

/// A lock that a panicked task held is still good here: every writer appends whole
/// rows, so what it guards is never half-written.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let p = Part {
            agent: "h1".into(),
            agent_fault_id: "f-1".into(),
            applied_ms: 1_004_250,
            reverted_ms: 1_006_750,
        };
        let clock = Some((250.0, 0.3));
        assert_eq!(
            p.on_run_clock(&clocks, 1_000_000.0),
            OnRunClock { applied_s: Some(4.0), reverted_s: Some(6.5), clock }
        );
        // Not reverted (kill, restart), or an agent whose offset was not measured.
        let once = Part { reverted_ms: 0, ..p.clone() };
        assert_eq!(
            once.on_run_clock(&clocks, 1_000_000.0),
            OnRunClock { applied_s: Some(4.0), reverted_s: None, clock }
        );
        let unknown = Part { agent: "h2".into(), ..p };
        assert_eq!(
            unknown.on_run_clock(&clocks, 1_000_000.0),
            OnRunClock { applied_s: None, reverted_s: None, clock: None }
        );
    }
}
