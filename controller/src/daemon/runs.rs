//! Scenario runs the controller starts itself (the Web API's `/api/runs`): the engine
//! `faultline run` uses, as a client of this controller's own gRPC service with the CLI's
//! certificate from the TLS directory — one engine, one set of checks, the same run
//! directory and report. One run at a time; the directories live beside the state file
//! (`runs/`), so the history survives restarts.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use faultline_proto::transport::Security;

use super::DaemonError;
use crate::run::{self, files};

/// A scenario is a page of YAML.
pub const MAX_SCENARIO: usize = 60 * 1024;
/// The most runs a listing shows (the newest).
const MAX_LISTED: usize = 200;
/// A run's files are small (per-second rows, a few PNGs); this only bounds a read.
const MAX_FILE: u64 = 64 * 1024 * 1024;
/// How long a link to a run's files works, and how many may exist at once.
const LINK_LIFE: Duration = Duration::from_mins(15);
const MAX_LINKS: usize = 1000;

/// What a run is doing or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    /// Ran to its end and every hypothesis held.
    Passed,
    /// Ran to its end; a hypothesis did not hold.
    Failed,
    /// Stopped early (guardrail, a failed fault, a stop request); every fault reverted.
    Aborted,
    /// Could not run (see the message).
    Error,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
            Self::Error => "error",
        }
    }
}

/// A run as listed.
#[derive(Debug, Clone)]
pub struct Info {
    pub id: String,
    pub scenario: String,
    pub state: State,
    /// Why it aborted, which hypotheses failed, or what went wrong.
    pub message: String,
    pub started_unix_ms: i64,
    /// The files of its directory (report.html, the PNGs, CSVs, summary.json, ...).
    pub files: Vec<String>,
}

struct Current {
    id: String,
    scenario: String,
    started_unix_ms: i64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: bool,
}

pub struct Runs {
    dir: PathBuf,
    /// This controller's gRPC address and the CLI's credentials, or why runs cannot start.
    client: Result<(String, Security), String>,
    current: Mutex<Option<Current>>,
    links: Mutex<BTreeMap<String, (String, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A run id is its directory's name: lowercase letters, digits and '-' (`web-drop-20261130T171500z`).
fn check_id(id: &str) -> Result<(), DaemonError> {
    if id.is_empty()
        || id.len() > 128
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        || id.starts_with('-')
    {
        return Err(DaemonError::invalid("id: a run id (letters, digits and '-')"));
    }
    Ok(())
}

/// A file name of a run directory: no path, no hidden file, a known extension.
fn check_file(name: &str) -> Result<&'static str, DaemonError> {
    let bad = || {
        DaemonError::invalid(
            "name: a file of the run directory (report.html, throughput.png, seconds.csv, summary.json, ...)",
        )
    };
    if name.len() > 128
        || name.starts_with('.')
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(bad());
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e).ok_or_else(bad)?;
    Ok(match ext {
        "html" => "text/html; charset=utf-8",
        "png" => "image/png",
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "yaml" => "application/yaml",
        "md" => "text/markdown; charset=utf-8",
        "txt" | "log" => "text/plain; charset=utf-8",
        _ => return Err(bad()),
    })
}

/// Why a run did not write its directory, kept beside what it wrote.
const ERROR_TXT: &str = "error.txt";
/// Why its report could not be written.
const REPORT_ERROR_TXT: &str = "report-error.txt";

impl Runs {
    /// `grpc`: the controller's own listening address (an unspecified one is reached on
    /// loopback); `security`: the CLI's credentials from the TLS directory, or why not.
    pub fn new(
        dir: PathBuf,
        grpc: std::net::SocketAddr,
        security: Result<Security, String>,
    ) -> Self {
        let mut addr = grpc;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let client = security.map(|s| {
            let scheme = if s.is_tls() { "https" } else { "http" };
            (format!("{scheme}://{addr}"), s)
        });
        Self { dir, client, current: Mutex::new(None), links: Mutex::new(BTreeMap::new()) }
    }

    /// Checks the scenario (its errors name the field and line) and starts it. The scenario
    /// names no file: its body and CA are inline (the controller opens no path a caller
    /// names). No lock is held while it is written and checked (which resolves the load's
    /// host name, up to 3 s): listings and stops answer meanwhile.
    pub fn start(self: &Arc<Self>, yaml: &str) -> Result<Info, DaemonError> {
        let (url, security) =
            self.client.clone().map_err(|why| DaemonError::unavailable(format!("runs: {why}")))?;
        if yaml.len() > MAX_SCENARIO {
            return Err(DaemonError::invalid(format!("scenario: at most {MAX_SCENARIO} bytes")));
        }
        self.idle()?;
        let incoming = self.dir.join(".incoming");
        std::fs::create_dir_all(&incoming).map_err(|e| {
            DaemonError::internal(format!("runs directory {}: {e}", incoming.display()))
        })?;
        // Each request its own file: two starts at once must not read each other's.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let file = incoming.join(format!(
            "{}-{}.yaml",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&file, yaml)
            .map_err(|e| DaemonError::internal(format!("{}: {e}", file.display())))?;
        let scenario =
            run::scenario::load_with(&file, crate::load::args::Files::Refused).map_err(|e| {
                let _ = std::fs::remove_file(&file);
                let line = e.line.map(|l| format!(" (line {l})")).unwrap_or_default();
                DaemonError::invalid(format!("scenario.{}: {}{line}", e.field, e.problem))
            })?;
        // The CLI's spelling (`drop-20261207T051200Z`): one run, one id everywhere.
        let base = format!("{}-{}", run::slug(&scenario.name), run::utc_stamp());
        // Two runs started in one second get -2, -3, ... (bounded: the history is finite).
        let id = (1..=10_000)
            .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
            .find(|id| !self.dir.join(id).exists())
            .unwrap_or(base);
        let out = self.dir.join(&id);
        let final_file = incoming.join(format!("{id}.yaml"));
        if let Err(e) = std::fs::rename(&file, &final_file) {
            let _ = std::fs::remove_file(&file);
            return Err(DaemonError::internal(format!("{}: {e}", final_file.display())));
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let started_unix_ms = faultline_proto::now_unix_ms();
        {
            let mut cur = lock(&self.current);
            if let Some(c) = cur.as_ref().filter(|c| !c.done) {
                let busy =
                    DaemonError::conflict(format!("runs: {} is running; stop it or wait", c.id));
                drop(cur);
                let _ = std::fs::remove_file(&final_file);
                return Err(busy);
            }
            *cur = Some(Current {
                id: id.clone(),
                scenario: scenario.name.clone(),
                started_unix_ms,
                stop: Some(stop_tx),
                done: false,
            });
        }
        let me = self.clone();
        let task_id = id.clone();
        tokio::spawn(async move {
            let result = me.execute(&final_file, &out, &url, &security, stop_rx).await;
            if let Err(e) = &result {
                let _ = std::fs::create_dir_all(&out);
                let _ = std::fs::write(out.join(ERROR_TXT), format!("{e:#}\n"));
                tracing::warn!(run = %task_id, "run failed: {e:#}");
            }
            let _ = std::fs::remove_file(&final_file);
            if let Some(c) = lock(&me.current).as_mut().filter(|c| c.id == task_id) {
                c.done = true;
            }
        });
        Ok(Info {
            id,
            scenario: scenario.name,
            state: State::Running,
            message: String::new(),
            started_unix_ms,
            files: Vec::new(),
        })
    }

    /// Refuses while a run is going (asked again when the new run takes its place).
    fn idle(&self) -> Result<(), DaemonError> {
        match lock(&self.current).as_ref().filter(|c| !c.done) {
            Some(c) => {
                Err(DaemonError::conflict(format!("runs: {} is running; stop it or wait", c.id)))
            }
            None => Ok(()),
        }
    }

    /// A run's directory, if it is one: a link planted under runs/ is not followed.
    fn run_dir(&self, id: &str) -> Option<PathBuf> {
        let dir = self.dir.join(id);
        std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()).then_some(dir)
    }

    async fn execute(
        &self,
        scenario: &Path,
        out: &Path,
        url: &str,
        security: &Security,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let endpoint =
            security.endpoint("controller", url, faultline_proto::transport::CONTROLLER_NAME)?;
        let client = faultline_proto::controller::v1::controller_service_client::ControllerServiceClient::new(endpoint.connect().await.with_context(|| format!("connecting to this controller at {url}"))?);
        let args = run::RunArgs::from_caller(scenario.to_path_buf(), out.to_path_buf());
        run::execute_until(&args, client, security, async move {
            let _ = stop.await;
            "stopped through the Web API".to_owned()
        })
        .await?;
        // The report, as `faultline report RUN` writes it (rendering PNGs is CPU work).
        // A run that ran keeps its verdict when its report cannot be drawn (too short a
        // baseline for a band, say): that is said beside it.
        let dir = out.to_path_buf();
        if let Err(e) =
            tokio::task::spawn_blocking(move || crate::report::write(&dir, None)).await?
        {
            std::fs::write(out.join(REPORT_ERROR_TXT), format!("report: {e:#}\n"))?;
        }
        Ok(())
    }

    /// Asks the running run to stop (its faults are reverted, what it measured is kept).
    pub fn stop(&self, id: &str) -> Result<(), DaemonError> {
        check_id(id)?;
        let mut cur = lock(&self.current);
        match cur.as_mut().filter(|c| c.id == id && !c.done) {
            Some(c) => {
                if let Some(tx) = c.stop.take() {
                    let _ = tx.send(());
                }
                Ok(())
            }
            None if self.run_dir(id).is_some() => {
                Err(DaemonError::precondition(format!("id: {id} is not running")))
            }
            None => Err(DaemonError::not_found(format!("id: no run {id}"))),
        }
    }

    /// The runs, newest first: the one running, then the directories on disk.
    pub fn list(&self) -> Vec<Info> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_id(n).is_ok())
            .collect();
        // Ordered by the directories' times (metadata only): only the listed ones are read.
        ids.sort_by_cached_key(|id| std::cmp::Reverse(started(&self.dir.join(id))));
        ids.truncate(MAX_LISTED);
        let mut out: Vec<Info> = ids.iter().filter_map(|id| self.info(id).ok()).collect();
        if let Some(c) = lock(&self.current).as_ref().filter(|c| !c.done && !ids.contains(&c.id)) {
            out.insert(
                0,
                Info {
                    id: c.id.clone(),
                    scenario: c.scenario.clone(),
                    state: State::Running,
                    message: String::new(),
                    started_unix_ms: c.started_unix_ms,
                    files: Vec::new(),
                },
            );
        }
        out
    }

    /// One run, from its directory (and, while it runs, from memory).
    pub fn info(&self, id: &str) -> Result<Info, DaemonError> {
        check_id(id)?;
        let running = lock(&self.current)
            .as_ref()
            .filter(|c| c.id == id && !c.done)
            .map(|c| (c.scenario.clone(), c.started_unix_ms));
        let Some(dir) = self.run_dir(id) else {
            return running
                .map(|(scenario, started_unix_ms)| Info {
                    id: id.to_owned(),
                    scenario,
                    state: State::Running,
                    message: String::new(),
                    started_unix_ms,
                    files: Vec::new(),
                })
                .ok_or_else(|| DaemonError::not_found(format!("id: no run {id}")));
        };
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map(|e| {
                e.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| check_file(n).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let error = std::fs::read_to_string(dir.join(ERROR_TXT)).ok();
        let (state, message, scenario, started_unix_ms) =
            match (running, files::Summary::read(&dir)) {
                (Some((scenario, started)), _) => {
                    (State::Running, String::new(), scenario, started)
                }
                (None, Ok(s)) => {
                    let failed: Vec<String> = s
                        .hypothesis
                        .iter()
                        .filter(|v| !v.holds)
                        .map(|v| format!("{} in {}", v.hypothesis, v.phase))
                        .collect();
                    let (state, message) = match (&s.aborted, error) {
                        (_, Some(e)) => (State::Error, e.trim().to_owned()),
                        (Some(why), None) => (State::Aborted, why.clone()),
                        (None, None) if failed.is_empty() => (State::Passed, String::new()),
                        (None, None) => {
                            (State::Failed, format!("does not hold: {}", failed.join("; ")))
                        }
                    };
                    let report =
                        std::fs::read_to_string(dir.join(REPORT_ERROR_TXT)).unwrap_or_default();
                    let message = [message, report.trim().to_owned()]
                        .into_iter()
                        .filter(|m| !m.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ");
                    (state, message, s.scenario, s.started_unix_ms)
                }
                (None, Err(e)) => (
                    State::Error,
                    error.map_or_else(|| format!("{e:#}"), |e| e.trim().to_owned()),
                    String::new(),
                    started(&dir),
                ),
            };
        Ok(Info { id: id.to_owned(), scenario, state, message, started_unix_ms, files })
    }

    /// A finished run's analysis, as `faultline analyze RUN --json` prints it: the
    /// analysis.json its report wrote (read, not computed again per request).
    pub fn analysis(&self, info: &Info) -> Result<Option<serde_json::Value>, DaemonError> {
        if matches!(info.state, State::Running | State::Error)
            || !info.files.iter().any(|f| f == files::ANALYSIS_JSON)
        {
            return Ok(None);
        }
        let (bytes, _) = self.file(&info.id, files::ANALYSIS_JSON)?;
        Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            DaemonError::internal(format!("{}/{}: {e}", info.id, files::ANALYSIS_JSON))
        })?))
    }

    /// A file of a run's directory, with its content type.
    pub fn file(&self, id: &str, name: &str) -> Result<(Vec<u8>, &'static str), DaemonError> {
        check_id(id)?;
        let content_type = check_file(name)?;
        let missing = || DaemonError::not_found(format!("name: {id} has no {name}"));
        // Only regular files the run wrote, in a real directory: a link planted there (the
        // file or the run's directory) is not followed.
        let path = self.run_dir(id).ok_or_else(missing)?.join(name);
        let meta = std::fs::symlink_metadata(&path).map_err(|_| missing())?;
        if !meta.is_file() || meta.len() > MAX_FILE {
            return Err(missing());
        }
        let bytes = crate::localfile::read(&path, MAX_FILE, name).map_err(DaemonError::internal)?;
        Ok((bytes, content_type))
    }

    /// A secret that opens the run's files for `LINK_LIFE` without other credentials, so
    /// a browser can follow the report's relative links to its PNGs.
    pub fn link(&self, id: &str) -> Result<(String, i64), DaemonError> {
        self.info(id)?;
        let mut links = lock(&self.links);
        links.retain(|_, (_, at)| at.elapsed() < LINK_LIFE);
        if links.len() >= MAX_LINKS {
            return Err(DaemonError::new(
                super::ErrorKind::Exhausted,
                format!("runs: {MAX_LINKS} links open; retry in a few minutes"),
            ));
        }
        let mut secret = [0u8; 16];
        // The TLS library's CSPRNG (the operating system's), already linked.
        tokio_rustls::rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut secret)
            .map_err(|_| DaemonError::internal("random: the system's generator failed"))?;
        let ticket: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        links.insert(ticket.clone(), (id.to_owned(), Instant::now()));
        Ok((ticket, faultline_proto::now_unix_ms() + LINK_LIFE.as_millis() as i64))
    }

    /// A file through a link: the ticket must open this run and still be valid.
    pub fn file_by_link(
        &self,
        id: &str,
        ticket: &str,
        name: &str,
    ) -> Result<(Vec<u8>, &'static str), DaemonError> {
        let valid = {
            let links = lock(&self.links);
            links.get(ticket).is_some_and(|(run, at)| run == id && at.elapsed() < LINK_LIFE)
        };
        if !valid {
            return Err(DaemonError::not_found(
                "ticket: no such link, or it expired (ask POST /api/runs/{id}/link again)",
            ));
        }
        self.file(id, name)
    }
}

/// When a run without a summary started, as near as known: its directory's time.
fn started(dir: &Path) -> i64 {
    std::fs::metadata(dir).and_then(|m| m.modified()).map_or(0, faultline_proto::unix_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_file_names_stay_inside_the_runs_directory() {
        assert!(check_id("web-drop-20261130T171500Z").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-x", "a b", "a.b", "é", &"a".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_file("report.html").unwrap(), "text/html; charset=utf-8");
        assert_eq!(check_file("throughput.png").unwrap(), "image/png");
        for bad in ["", ".env", "../summary.json", "a/b.csv", "report", "x.sh", "x.exe"] {
            assert!(check_file(bad).is_err(), "{bad:?}");
        }
        assert_eq!(run::slug("Web drop: 100%!"), "web-drop-100");
        assert_eq!(run::slug("???"), "run");
    }
}
