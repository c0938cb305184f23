//! The run directory's schema, in one place: every file a run writes, summary.json as
//! typed structs and each CSV file as a typed row (`table::Row`). The run writes through
//! these definitions and analyze, the report, the LLM summary and the demo read through
//! them, so a renamed or reordered column cannot make a reader take the wrong one.
//! Readers accept older directories: a field a file lacks gets its default.
//!
//! | file              | what                                                         |
//! |-------------------|--------------------------------------------------------------|
//! | scenario.yaml     | the scenario as given                                        |
//! | summary.json      | [`Summary`]: phases, verdicts, faults and their parts, load  |
//! | seconds.csv       | [`SecondRow`]: the load, per second of intended starts       |
//! | latency.hlog      | the raw histograms (`HdrHistogram` interval log)             |
//! | faults.csv        | [`FaultRow`]: each fault on the run's clock                  |
//! | `fault_agents.csv`| [`FaultAgentRow`]: each agent's part, by its clock and ours  |
//! | agents.csv        | [`AgentRow`]: each agent's measured clock offset             |
//! | kernel.csv        | [`KernelRow`]: TCP per agent and peer, per second            |
//! | drops.csv         | [`DropRow`]: kernel drops per agent and reason               |
//! | host.csv          | [`HostRow`]: CPU, memory and load per agent                  |
//! | probes.csv        | [`ProbeRow`]: each probe's samples, pass or fail             |
//! | analysis.json     | `faultline analyze --json`, written by `faultline report`    |

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use crate::load::{SecondRow, Summary as LoadSummary};
use crate::table::Row;

pub const SCENARIO_YAML: &str = "scenario.yaml";
pub const SUMMARY_JSON: &str = "summary.json";
pub const LATENCY_HLOG: &str = "latency.hlog";
pub const ANALYSIS_JSON: &str = "analysis.json";

/// summary.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub scenario: String,
    pub description: String,
    pub started_unix_ms: i64,
    /// Why the run stopped early (guardrail, interrupt, a fault that failed); None: it ran to the end.
    pub aborted: Option<String>,
    pub phases: Vec<Phase>,
    pub hypothesis: Vec<Verdict>,
    pub faults: Vec<FaultRecord>,
    pub load: LoadSummary,
    /// The scenario's probes: what each asked, its failures and its recovery.
    pub probes: Vec<ProbeRecord>,
    /// What counts as an anomaly in this run's analysis (the scenario's `analysis:`).
    pub thresholds: Thresholds,
    /// Seconds from the last revert until every probe of the hypothesis passed again (and
    /// kept passing); None when one did not, or nothing was reverted, or none is named.
    pub steady_recovery_s: Option<f64>,
}

/// What the analysis counts as an anomaly and as recovered (issue 33): the band drawn
/// around the baseline is at least this wide. The defaults are the values the analysis
/// has always used; a scenario's `analysis:` sets its own ("a 50 % throughput drop, 10 %
/// errors").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Goodput off the baseline's median by less than this share is noise (0.05).
    pub goodput_change: f64,
    /// An error rate up to the baseline's median plus this many points is noise (0.01).
    pub error_rate_rise: f64,
    /// A p99 up to this share above the baseline's median is noise (1.0: twice it)...
    pub p99_rise: f64,
    /// ...and up to this many milliseconds above it (10).
    pub p99_margin_ms: f64,
    /// The band is at least this many robust standard deviations wide (3).
    pub sigmas: f64,
    /// Recovered: this many seconds in a row back inside the band (3).
    pub recovered_after_s: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            goodput_change: 0.05,
            error_rate_rise: 0.01,
            p99_rise: 1.0,
            p99_margin_ms: 10.0,
            sigmas: 3.0,
            recovered_after_s: 3,
        }
    }
}

impl Summary {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(SUMMARY_JSON);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{}: not a run directory (no {SUMMARY_JSON})", dir.display())
        })?;
        // The path of the field that failed ("faults[2].applied_at_s"), not just a column.
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(SUMMARY_JSON), serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| dir.join(SUMMARY_JSON).display().to_string())
    }

    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }
}

/// warmup, baseline, fault or recovery: whole seconds [`from_s`, `to_s`) of the load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Phase {
    pub name: String,
    pub from_s: u64,
    pub to_s: u64,
    pub measured: Measured,
}

/// The load over some whole seconds (latencies corrected, ms).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Measured {
    pub requests: u64,
    pub errors: u64,
    pub rate: f64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Measured {
    /// Answers without error per second.
    pub fn goodput(&self) -> f64 {
        self.rate * (1.0 - self.error_rate)
    }
}

/// One condition of the hypothesis, judged over one phase or one fault's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Verdict {
    pub hypothesis: String,
    pub phase: String,
    pub holds: bool,
    pub value: f64,
}

/// One probe over the run (issue 33).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeRecord {
    pub name: String,
    pub kind: String,
    /// What it asks: `GET http://10.0.0.2/`, `prometheus up > 0`.
    pub asks: String,
    pub interval_s: f64,
    pub samples: usize,
    pub failures: usize,
    /// Seconds from the last revert until the probe passed again, every sample after;
    /// None when it did not within the run, or when no fault was reverted.
    pub recovery_s: Option<f64>,
    /// None when no fault was reverted.
    pub recovered: Option<bool>,
}

/// One fault of the scenario on the run's clock (seconds from the load's start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRecord {
    pub index: usize,
    pub fault: String,
    pub id: String,
    pub agents: Vec<String>,
    /// When the run asked for it, and for its end.
    pub planned_at_s: f64,
    pub planned_end_s: f64,
    /// When the controller's answer came (None: never applied).
    pub applied_at_s: Option<f64>,
    pub reverted_at_s: Option<f64>,
    /// Why it failed ("" when it did not).
    pub error: String,
    /// Why an optional fault was not applied.
    pub skipped: Option<String>,
    pub parts: Vec<PartRecord>,
}

impl FaultRecord {
    /// Where `agent`'s own part was in place on the run's clock, if it was measured.
    pub fn part_of(&self, agent: &str) -> Option<&PartRecord> {
        self.parts.iter().find(|p| p.agent == agent)
    }
}

/// One agent's part of a fault, on the run's clock through the agent's measured offset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartRecord {
    pub agent: String,
    pub agent_fault_id: String,
    pub applied_at_s: Option<f64>,
    pub reverted_at_s: Option<f64>,
    pub clock_offset_ms: Option<f64>,
    pub offset_uncertainty_ms: Option<f64>,
}

/// faults.csv: the faults of summary.json, flat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRow {
    pub index: usize,
    pub fault: String,
    pub id: String,
    /// Space-separated agent names.
    pub agents: String,
    pub planned_at_s: f64,
    pub planned_end_s: f64,
    pub applied_at_s: Option<f64>,
    pub reverted_at_s: Option<f64>,
    pub error: String,
}

impl Row for FaultRow {
    const FILE: &'static str = "faults.csv";
    const COLUMNS: &'static [&'static str] = &[
        "index",
        "fault",
        "id",
        "agents",
        "planned_at_s",
        "planned_end_s",
        "applied_at_s",
        "reverted_at_s",
        "error",
    ];
}

/// `fault_agents.csv`: when each agent's kernel change was in place and undone, by its
/// own clock (unix ms) and on the run's clock through its measured offset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultAgentRow {
    pub index: usize,
    pub id: String,
    pub agent: String,
    pub agent_fault_id: String,
    pub applied_at_s: Option<f64>,
    pub reverted_at_s: Option<f64>,
    pub clock_offset_ms: Option<f64>,
    pub offset_uncertainty_ms: Option<f64>,
    pub applied_agent_unix_ms: Option<i64>,
    pub reverted_agent_unix_ms: Option<i64>,
}

impl Row for FaultAgentRow {
    const FILE: &'static str = "fault_agents.csv";
    const COLUMNS: &'static [&'static str] = &[
        "index",
        "id",
        "agent",
        "agent_fault_id",
        "applied_at_s",
        "reverted_at_s",
        "clock_offset_ms",
        "offset_uncertainty_ms",
        "applied_agent_unix_ms",
        "reverted_agent_unix_ms",
    ];
}

/// agents.csv: each healthy agent as the run saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentRow {
    pub agent: String,
    pub url: String,
    /// Agent clock minus ours, ms.
    pub clock_offset_ms: Option<f64>,
    /// The offset is within ± this.
    pub offset_uncertainty_ms: Option<f64>,
    /// Its drop counts are the whole kernel's (a namespace lab), not its host's alone.
    pub drops_whole_kernel: bool,
    /// Why it gave no offset or metrics ("" when it did).
    pub error: String,
}

impl Row for AgentRow {
    const FILE: &'static str = "agents.csv";
    const COLUMNS: &'static [&'static str] = &[
        "agent",
        "url",
        "clock_offset_ms",
        "offset_uncertainty_ms",
        "drops_whole_kernel",
        "error",
    ];
}

/// kernel.csv: what one agent's tracepoints counted for one remote peer in the second
/// before `t_s` (the run's clock).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KernelRow {
    pub t_s: f64,
    pub agent: String,
    /// The container on the agent's host whose sockets these are ("" for the host's own).
    pub container: String,
    pub peer: String,
    pub srtt_samples: u64,
    /// Mean smoothed RTT over the samples (None without samples).
    pub srtt_mean_ms: Option<f64>,
    pub retransmits: u64,
    pub connects: u64,
    pub connect_failures: u64,
}

impl Row for KernelRow {
    const FILE: &'static str = "kernel.csv";
    const COLUMNS: &'static [&'static str] = &[
        "t_s",
        "agent",
        "container",
        "peer",
        "srtt_samples",
        "srtt_mean_ms",
        "retransmits",
        "connects",
        "connect_failures",
    ];
}

/// drops.csv: packets one agent's kernel dropped for one reason in the second before `t_s`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DropRow {
    pub t_s: f64,
    pub agent: String,
    pub reason: String,
    pub drops: u64,
}

impl Row for DropRow {
    const FILE: &'static str = "drops.csv";
    const COLUMNS: &'static [&'static str] = &["t_s", "agent", "reason", "drops"];
}

/// host.csv: one agent's host at `t_s`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostRow {
    pub t_s: f64,
    pub agent: String,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub load1: f64,
}

impl Row for HostRow {
    const FILE: &'static str = "host.csv";
    const COLUMNS: &'static [&'static str] =
        &["t_s", "agent", "cpu_percent", "memory_used_bytes", "load1"];
}

/// probes.csv: one sample of one probe, on the run's clock (the second it was asked).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeRow {
    pub t_s: f64,
    pub probe: String,
    pub ok: bool,
    pub ms: f64,
    pub detail: String,
}

impl Row for ProbeRow {
    const FILE: &'static str = "probes.csv";
    const COLUMNS: &'static [&'static str] = &["t_s", "probe", "ok", "ms", "detail"];
    const REQUIRED: &'static [&'static str] = &["t_s", "probe", "ok"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::serde_header;

    #[test]
    fn every_csv_header_is_what_its_row_type_writes() {
        assert_eq!(serde_header::<ProbeRow>(), ProbeRow::COLUMNS);
        assert_eq!(serde_header::<SecondRow>(), SecondRow::COLUMNS);
        assert_eq!(serde_header::<FaultRow>(), FaultRow::COLUMNS);
        assert_eq!(serde_header::<FaultAgentRow>(), FaultAgentRow::COLUMNS);
        assert_eq!(serde_header::<AgentRow>(), AgentRow::COLUMNS);
        assert_eq!(serde_header::<KernelRow>(), KernelRow::COLUMNS);
        assert_eq!(serde_header::<DropRow>(), DropRow::COLUMNS);
        assert_eq!(serde_header::<HostRow>(), HostRow::COLUMNS);
        // seconds.csv has one column per load failure, named as the load names them.
        let failures: Vec<&str> =
            crate::load::record::Failure::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(SecondRow::COLUMNS[SecondRow::COLUMNS.len() - failures.len()..], failures[..]);
    }

    #[test]
    fn a_summary_round_trips_and_an_older_one_reads() {
        let s = Summary {
            scenario: "web".into(),
            aborted: Some("guardrail".into()),
            phases: vec![Phase {
                name: "baseline".into(),
                from_s: 1,
                to_s: 4,
                measured: Measured {
                    requests: 300,
                    rate: 100.0,
                    error_rate: 0.1,
                    ..Measured::default()
                },
            }],
            faults: vec![FaultRecord {
                agents: vec!["h1".into()],
                applied_at_s: Some(4.1),
                parts: vec![PartRecord { agent: "h1".into(), ..PartRecord::default() }],
                ..FaultRecord::default()
            }],
            ..Summary::default()
        };
        let dir = std::env::temp_dir().join(format!("faultline-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        s.write(&dir).unwrap();
        assert_eq!(Summary::read(&dir).unwrap(), s);
        assert!((s.phase("baseline").unwrap().measured.goodput() - 90.0).abs() < 1e-9);
        assert!(s.faults[0].part_of("h1").is_some() && s.faults[0].part_of("h2").is_none());
        // Written before parts, skips and the load's summary existed.
        std::fs::write(dir.join(SUMMARY_JSON), r#"{"scenario": "old", "aborted": null, "faults": [{"index": 0, "fault": "drop", "applied_at_s": 6.0, "error": ""}]}"#).unwrap();
        let old = Summary::read(&dir).unwrap();
        assert_eq!(
            (old.scenario.as_str(), old.faults[0].applied_at_s, old.faults[0].parts.len()),
            ("old", Some(6.0), 0)
        );
        std::fs::write(dir.join(SUMMARY_JSON), r#"{"phases": 3}"#).unwrap();
        let err = format!("{:#}", Summary::read(&dir).unwrap_err());
        assert!(err.contains(SUMMARY_JSON) && err.contains("phases"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
