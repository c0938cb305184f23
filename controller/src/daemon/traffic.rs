//! Traffic the controller itself sends to the system under test (the Web API's
//! `/api/traffic`): the open-loop load engine `faultline load` uses, built from the same
//! arguments and checks, one load at a time, its per-second figures kept for whoever
//! watches (the console's chart, Prometheus).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::DaemonError;
use crate::load::{self, args::LoadArgs, record::ms_at};

/// Bounds a caller cannot move: the schedule is computed ahead (16 bytes a request), and
/// the controller is not a load farm.
pub const MAX_RPS: f64 = 100_000.0;
pub const MAX_DURATION: Duration = Duration::from_hours(24);
const MAX_SCHEDULED: f64 = 20_000_000.0;
pub const MAX_CONNECTIONS: usize = 1024;
/// Seconds of figures kept for a load (the latest ones).
const KEEP_SECONDS: usize = 3600;

/// Whether `ip` is an address of this host (binding to it works only then).
fn local_ip(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Whether `target` is one of faultline's own listeners (`own`: the controller's and its
/// agents'), a wildcard listener counting for every address of this host.
pub fn is_own(own: &[std::net::SocketAddr], target: std::net::SocketAddr) -> bool {
    own.iter().any(|o| {
        o.port() == target.port()
            && (o.ip() == target.ip()
                || (o.ip().is_unspecified()
                    && (target.ip().is_loopback() || local_ip(target.ip()))))
    })
}

/// A load to start.
#[derive(Debug, Clone)]
pub struct Start {
    /// <http://IP:PORT/PATH>, https://, tcp://, redis://, grpc:// as `faultline load` takes it.
    pub target_url: String,
    pub rps: f64,
    pub duration: Duration,
    pub connections: Option<usize>,
    /// constant, poisson, ramp:..., spike:..., burst:..., sine:... (`faultline load --shape`).
    pub shape: Option<String>,
    pub method: Option<String>,
    pub timeout: Option<Duration>,
}

/// One second of answers, by intended start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecondFigures {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A load as it stands.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: u64,
    pub start: Start,
    pub running: bool,
    pub started_unix_ms: i64,
    pub elapsed: Duration,
    /// The latest seconds (at most an hour of them).
    pub seconds: Vec<SecondFigures>,
    /// When it ended: the whole load's figures.
    pub summary: Option<load::Summary>,
}

struct Current {
    status: Status,
    began: Instant,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Default)]
pub struct Traffic {
    current: Mutex<Option<Current>>,
    next_id: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Traffic {
    /// Starts a load; refused while another runs.
    /// Starts `s` unless it targets one of `own` (the controller's and its agents'
    /// listening addresses; an unspecified address stands for every local one).
    pub fn start(
        self: &Arc<Self>,
        s: Start,
        own: &[std::net::SocketAddr],
    ) -> Result<Status, DaemonError> {
        if !(s.rps.is_finite() && s.rps > 0.0 && s.rps <= MAX_RPS) {
            return Err(DaemonError::invalid(format!("rps: more than 0, at most {MAX_RPS}")));
        }
        if s.duration.is_zero() || s.duration > MAX_DURATION {
            return Err(DaemonError::invalid(format!(
                "duration_seconds: more than 0, at most {}",
                MAX_DURATION.as_secs()
            )));
        }
        if s.rps * s.duration.as_secs_f64() > MAX_SCHEDULED {
            return Err(DaemonError::invalid(format!(
                "rps: {} requests over {} s is more than the {MAX_SCHEDULED} one load may schedule",
                s.rps,
                s.duration.as_secs()
            )));
        }
        if s.connections.is_some_and(|c| c == 0 || c > MAX_CONNECTIONS) {
            return Err(DaemonError::invalid(format!("connections: 1 to {MAX_CONNECTIONS}")));
        }
        if s.target_url.len() > 2048 || s.target_url.starts_with('-') {
            return Err(DaemonError::invalid("target_url: a URL of at most 2048 bytes"));
        }
        let mut words = vec![
            s.target_url.clone(),
            "--rate".into(),
            s.rps.to_string(),
            "--duration".into(),
            format!("{}ms", s.duration.as_millis()),
        ];
        let mut add = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                words.extend([flag.to_owned(), v]);
            }
        };
        add("--connections", s.connections.map(|c| c.to_string()));
        add("--shape", s.shape.clone());
        add("--method", s.method.clone());
        add("--timeout", s.timeout.map(|t| format!("{}ms", t.as_millis())));
        let field = |m: String| {
            let f = ["rate", "duration", "connections", "shape", "method", "timeout"]
                .into_iter()
                .find(|f| m.contains(f))
                .map_or("target_url", |f| match f {
                    "rate" => "rps",
                    "duration" => "duration_seconds",
                    "timeout" => "timeout_seconds",
                    other => other,
                });
            DaemonError::invalid(format!("{f}: {m}"))
        };
        let spec = LoadArgs::from_words(&words)
            .map_err(field)?
            .spec_with(load::args::Files::Refused)
            .map_err(|e| field(format!("{e:#}").replace("--", "")))?;
        let target = spec.target.addr();
        if is_own(own, target) {
            return Err(DaemonError::invalid(format!(
                "target_url: {target} is faultline's own (the controller's or an agent's listener); traffic is for the system under test"
            )));
        }

        let mut cur = lock(&self.current);
        if let Some(c) = cur.as_ref().filter(|c| c.status.running) {
            return Err(DaemonError::conflict(format!(
                "traffic: load {} is running against {}; stop it first",
                c.status.id, c.status.start.target_url
            )));
        }
        let id = {
            let mut n = lock(&self.next_id);
            *n += 1;
            *n
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let status = Status {
            id,
            start: s,
            running: true,
            started_unix_ms: faultline_proto::now_unix_ms(),
            elapsed: Duration::ZERO,
            seconds: Vec::new(),
            summary: None,
        };
        *cur = Some(Current { status: status.clone(), began: Instant::now(), stop: Some(stop_tx) });
        drop(cur);
        let me = self.clone();
        tokio::spawn(async move {
            let begin = Instant::now() + Duration::from_millis(20);
            let progress = {
                let me = me.clone();
                move |rec: &load::record::Recorder, elapsed: Duration| me.progress(id, rec, elapsed)
            };
            let run = load::run(
                &spec,
                begin,
                async move {
                    let _ = stop_rx.await;
                },
                progress,
            )
            .await;
            let summary =
                load::summary(&run, run.elapsed.min(spec.duration).max(Duration::from_millis(1)));
            let mut cur = lock(&me.current);
            if let Some(c) = cur.as_mut().filter(|c| c.status.id == id) {
                c.status.seconds = figures(&run.recorder);
                c.status.running = false;
                c.status.elapsed = run.elapsed;
                c.status.summary = Some(summary);
                c.stop = None;
            }
        });
        Ok(status)
    }

    /// Called about once a second by the engine: the seconds so far.
    fn progress(&self, id: u64, rec: &load::record::Recorder, elapsed: Duration) {
        let mut cur = lock(&self.current);
        if let Some(c) = cur.as_mut().filter(|c| c.status.id == id) {
            // Whole seconds only: the current one is still filling.
            let whole = elapsed.as_secs() as usize;
            c.status.seconds = figures_upto(rec, whole);
            c.status.elapsed = elapsed;
        }
    }

    /// Stops the running load (what was answered is kept) and answers it as it ended up.
    pub async fn stop(&self) -> Result<Status, DaemonError> {
        let id = {
            let mut cur = lock(&self.current);
            let c = cur
                .as_mut()
                .ok_or_else(|| DaemonError::not_found("traffic: no load was started"))?;
            if let Some(tx) = c.stop.take() {
                let _ = tx.send(());
            }
            c.status.id
        };
        // The engine lets requests in flight finish (each within its timeout).
        for _ in 0..600 {
            if let Some(s) = self.status().filter(|s| s.id == id && !s.running) {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.status().ok_or_else(|| DaemonError::internal("traffic: the load disappeared"))
    }

    /// The running load, or the last one.
    pub fn status(&self) -> Option<Status> {
        let cur = lock(&self.current);
        cur.as_ref().map(|c| {
            let mut s = c.status.clone();
            if s.running {
                s.elapsed = c.began.elapsed();
            }
            s
        })
    }
}

fn figures(rec: &load::record::Recorder) -> Vec<SecondFigures> {
    figures_upto(rec, rec.seconds.len())
}

fn figures_upto(rec: &load::record::Recorder, upto: usize) -> Vec<SecondFigures> {
    let upto = upto.min(rec.seconds.len());
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| {
        (!h.is_empty()).then(|| crate::table::ms3(ms_at(h, p)))
    };
    rec.seconds[upto.saturating_sub(KEEP_SECONDS)..upto]
        .iter()
        .enumerate()
        .map(|(i, s)| SecondFigures {
            second: (upto.saturating_sub(KEEP_SECONDS) + i) as u64,
            requests: s.requests(),
            errors: s.errors(),
            p50_ms: q(&s.corrected, 0.5),
            p99_ms: q(&s.corrected, 0.99),
        })
        .collect()
}
