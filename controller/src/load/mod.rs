//! `faultline load`: open-loop load with a known shape, every outcome recorded against
//! the time the request was meant to start.
//!
//! A dispatcher releases each intended start time at that time into a queue that free
//! connections take from. When the system under test slows, starts queue up and their
//! wait counts in the (corrected) latency, instead of the schedule slowing down with it
//! (coordinated omission). A closed-loop mode (`--concurrency`, no rate) behaves like wrk.

pub mod args;
pub mod grpc;
pub mod http;
pub mod record;
pub mod redis;
pub mod schedule;
pub mod tcp;
mod timer;
pub mod tls;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use record::{Failure, Outcome, Recorder};
use schedule::Shape;

#[derive(Debug, Clone)]
pub enum Target {
    Http(http::HttpTarget),
    Tcp(tcp::TcpTarget),
    Redis(redis::RedisTarget),
    Grpc(grpc::GrpcTarget),
}

impl Target {
    /// Where the load goes.
    pub fn addr(&self) -> std::net::SocketAddr {
        match self {
            Self::Http(t) => t.addr,
            Self::Tcp(t) => t.addr,
            Self::Redis(t) => t.addr,
            Self::Grpc(t) => t.addr,
        }
    }
}

/// A worker's connection, of whichever kind its target uses.
#[derive(Default)]
struct Conns {
    http: Option<http::Conn>,
    tcp: Option<tcp::TcpConn>,
    redis: Option<redis::RedisConn>,
    grpc: Option<grpc::GrpcConn>,
}

impl Conns {
    fn drop_all(&mut self) {
        *self = Self::default();
    }
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: Target,
    /// None: closed loop, each connection sends its next request when the last one ends.
    pub shape: Option<Shape>,
    pub duration: Duration,
    /// Connections (open loop: the most requests in flight at once).
    pub connections: usize,
    pub timeout: Duration,
    pub seed: u64,
}

impl LoadSpec {
    pub fn check(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("connections: at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("duration: must be longer than 0".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be longer than 0".into());
        }
        Ok(())
    }
}

/// A finished (or interrupted) run.
pub struct Run {
    pub recorder: Recorder,
    pub started_unix_ms: i64,
    /// Wall time from the first intended start to the last answer.
    pub elapsed: Duration,
    /// Requests the schedule asked for (open loop).
    pub scheduled: Option<u64>,
    pub target_rate: Option<f64>,
    /// Stopped before the schedule's end.
    pub interrupted: bool,
}

/// Starts due this close together are released together, up to this early. Arming a
/// timer per start cost more than the request itself at high rates: re-programming the
/// hrtimer is a VM exit here, and `do_timerfd_settime` was 16 % of the client's CPU at
/// 45k starts/s. 50 µs early is about what a wake-up from the timer takes here anyway.
const BATCH: Duration = Duration::from_micros(50);

type Shared = Arc<Mutex<Recorder>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn call(target: &Target, conns: &mut Conns, n: u64) -> Outcome {
    match target {
        Target::Http(t) => http::call(t, &mut conns.http, n).await,
        Target::Tcp(t) => tcp::call(t, &mut conns.tcp).await,
        Target::Redis(t) => redis::call(t, &mut conns.redis, n).await,
        Target::Grpc(t) => grpc::call(t, &mut conns.grpc).await,
    }
}

/// Runs the load until its schedule is done or `stop` completes (Ctrl-C: what was
/// recorded so far is kept); `progress` is called about once a second.
/// Intended starts count from `start` (a scenario shares it with its fault schedule).
pub async fn run(
    spec: &LoadSpec,
    start: Instant,
    stop: impl std::future::Future<Output = ()>,
    mut progress: impl FnMut(&Recorder, Duration) + Send,
) -> Run {
    let rec: Shared = Arc::default();
    let started_unix_ms = (std::time::SystemTime::now()
        + start.saturating_duration_since(Instant::now()))
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0, |d| d.as_millis() as i64);
    let end = start + spec.duration;
    let (scheduled, target_rate, workers) = if let Some(shape) = &spec.shape {
        let arrivals = shape.arrivals(spec.duration, spec.seed);
        let n = arrivals.len() as u64;
        // Many receivers, each woken alone when a start is released: a free connection
        // takes the next start (a tokio mpsc behind a mutex handed every start from
        // waiter to waiter, and fell behind above ~45k/s on one thread).
        let (tx, rx) = async_channel::unbounded::<(u64, Duration)>();
        let workers: Vec<_> = (0..spec.connections)
            .map(|_| {
                let (rx, rec, target, timeout) =
                    (rx.clone(), rec.clone(), spec.target.clone(), spec.timeout);
                tokio::spawn(async move {
                    let mut conn = Conns::default();
                    loop {
                        let Ok((n, at)) = rx.recv().await else { break };
                        let now = Instant::now();
                        let lag = now.saturating_duration_since(start + at);
                        // Still queued when the run and its grace are over: never sent, and said so.
                        if now > end + timeout {
                            lock(&rec).record(
                                at,
                                lag,
                                Duration::ZERO,
                                Outcome::Failed(Failure::NotStarted),
                            );
                            continue;
                        }
                        let outcome = tokio::time::timeout(timeout, call(&target, &mut conn, n))
                            .await
                            .unwrap_or_else(|_| {
                                conn.drop_all();
                                Outcome::Failed(Failure::Timeout)
                            });
                        lock(&rec).record(at, lag, now.elapsed(), outcome);
                    }
                })
            })
            .collect();
        let dispatcher = tokio::spawn(async move {
            let timer = timer::Timer::new();
            let mut i = 0;
            while i < arrivals.len() {
                // Release every start that is due or due within `BATCH`, then sleep until
                // the next one.
                let now = Instant::now() + BATCH;
                while i < arrivals.len() && start + arrivals[i] <= now {
                    let _ = tx.try_send((i as u64, arrivals[i]));
                    i += 1;
                }
                if i < arrivals.len() {
                    timer.sleep_until(start + arrivals[i]).await;
                }
            }
        });
        let rate = match shape {
            Shape::Constant { rate } | Shape::Poisson { rate } => Some(*rate),
            _ => Some(n as f64 / spec.duration.as_secs_f64()),
        };
        let mut workers = workers;
        workers.push(dispatcher);
        (Some(n), rate, workers)
    } else {
        let workers: Vec<_> = (0..spec.connections)
            .map(|w| {
                let (rec, target, timeout, stride) =
                    (rec.clone(), spec.target.clone(), spec.timeout, spec.connections as u64);
                tokio::spawn(async move {
                    tokio::time::sleep_until(start.into()).await;
                    let mut conn = Conns::default();
                    let mut n = w as u64;
                    while Instant::now() < end {
                        let sent = Instant::now();
                        let outcome = tokio::time::timeout(timeout, call(&target, &mut conn, n))
                            .await
                            .unwrap_or_else(|_| {
                                conn.drop_all();
                                Outcome::Failed(Failure::Timeout)
                            });
                        lock(&rec).record(sent - start, Duration::ZERO, sent.elapsed(), outcome);
                        n += stride;
                    }
                })
            })
            .collect();
        (None, None, workers)
    };
    let aborts: Vec<_> = workers.iter().map(tokio::task::JoinHandle::abort_handle).collect();
    let all = futures_util::future::join_all(workers);
    tokio::pin!(all);
    tokio::pin!(stop);
    let mut tick =
        tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = &mut all => break,
            () = &mut stop => {
                // Requests in flight are cut off unrecorded; everything answered is kept.
                aborts.iter().for_each(tokio::task::AbortHandle::abort);
                interrupted = true;
                break;
            }
            _ = tick.tick() => progress(&lock(&rec), start.elapsed()),
        }
    }
    let elapsed = start.elapsed();
    let recorder = std::mem::take(&mut *lock(&rec));
    Run { recorder, started_unix_ms, elapsed, scheduled, target_rate, interrupted }
}

/// The numbers a person reads after a load, and the JSON scripts read: `faultline load
/// --json` prints it, `--out` writes it as summary.json, and a run's summary.json holds
/// it as `load`. Readers of older files get defaults for what they lack.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Summary {
    pub started_unix_ms: i64,
    pub interrupted: bool,
    pub requests: u64,
    /// Intended starts of an open-loop schedule (none for closed loop).
    pub scheduled: Option<u64>,
    pub duration_s: f64,
    pub elapsed_s: f64,
    /// Achieved: answers (any status) per second of wall time, from the start to the last
    /// answer. Not the schedule: requests never sent or never answered do not count.
    pub rate: f64,
    pub target_rate: Option<f64>,
    /// Requests the target answered (any status).
    pub answered: u64,
    /// Intended starts never sent: every connection was busy until the run's end.
    pub not_started: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Answers by class ("ok" for non-HTTP successes, "2xx"...), classes seen only.
    pub status: std::collections::BTreeMap<String, u64>,
    /// Requests without an answer, by why (`Failure::name`), kinds seen only.
    pub failures: std::collections::BTreeMap<String, u64>,
    pub late_starts: u64,
    pub max_start_lag_ms: f64,
    /// From the intended start (coordinated-omission corrected).
    pub latency_ms: Latency,
    /// From the actual send (what a closed-loop tool reports).
    pub uncorrected_latency_ms: UncorrectedLatency,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct UncorrectedLatency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// How long a target's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
thread_local! {
    /// Set by the fuzz tests: the names their mutations invent must not become DNS queries.
    pub static OFFLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The address of `host` (an IP address, or a name resolved here, once, before the load
/// starts: the loop itself never waits on a resolver). The first address the system's
/// resolver gives, as curl would connect to.
pub fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, port));
    }
    #[cfg(test)]
    if OFFLINE.with(std::cell::Cell::get) {
        return Err(format!("{host}: not resolved (this test thread stays off the network)"));
    }
    // On a thread of its own, waited for at most RESOLVE_TIMEOUT: a resolver that does not
    // answer must not hold the caller for its own timeouts (5 s per try by default).
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ =
                tx.send((name.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>));
        })
        .map_err(|e| format!("{host}: resolving: {e}"))?;
    match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(addrs)) => {
            addrs.into_iter().next().ok_or_else(|| format!("{host}: resolves to no address"))
        }
        Ok(Err(e)) => Err(format!("{host}: does not resolve: {e}")),
        Err(_) => Err(format!(
            "{host}: the resolver did not answer within {} s",
            RESOLVE_TIMEOUT.as_secs()
        )),
    }
}

pub fn summary(run: &Run, duration: Duration) -> Summary {
    let t = &run.recorder.total;
    let q = record::ms_at;
    let requests = t.requests();
    Summary {
        started_unix_ms: run.started_unix_ms,
        interrupted: run.interrupted,
        requests,
        scheduled: run.scheduled,
        duration_s: duration.as_secs_f64(),
        elapsed_s: run.elapsed.as_secs_f64(),
        rate: t.answered() as f64 / run.elapsed.max(Duration::from_millis(1)).as_secs_f64(),
        target_rate: run.target_rate,
        answered: t.answered(),
        not_started: t.not_started(),
        errors: t.errors(),
        error_rate: if requests == 0 { 0.0 } else { t.errors() as f64 / requests as f64 },
        status: t
            .status
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (if i == 0 { "ok".to_owned() } else { format!("{i}xx") }, *n))
            .collect(),
        failures: Failure::ALL
            .iter()
            .zip(t.failures)
            .filter(|(_, n)| *n > 0)
            .map(|(f, n)| (f.name().to_owned(), n))
            .collect(),
        late_starts: t.late,
        max_start_lag_ms: run.recorder.max_lag.as_secs_f64() * 1000.0,
        latency_ms: Latency {
            p50: q(&t.corrected, 0.5),
            p90: q(&t.corrected, 0.9),
            p99: q(&t.corrected, 0.99),
            p999: q(&t.corrected, 0.999),
            max: q(&t.corrected, 1.0),
        },
        uncorrected_latency_ms: UncorrectedLatency {
            p50: q(&t.uncorrected, 0.5),
            p99: q(&t.uncorrected, 0.99),
            max: q(&t.uncorrected, 1.0),
        },
    }
}

/// The raw histograms, one interval per second and kind ("corrected": from the intended
/// start; "uncorrected": from the actual send), in µs, as an `HdrHistogram` interval log
/// (V2, compressed, base64) — readable by `HistogramLogProcessor`, `HdrHistogram`'s Python
/// and Go ports, and `hdrhistogram`'s `IntervalLogIterator`. Ends with the run's total.
pub fn interval_log(run: &Run) -> Vec<u8> {
    use hdrhistogram::serialization::{
        V2DeflateSerializer,
        interval_log::{IntervalLogWriterBuilder, Tag},
    };
    let start = std::time::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(run.started_unix_ms).unwrap_or(0));
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.add_comment("faultline load: latency in microseconds; tags corrected (from the intended start) and uncorrected (from the send)");
    builder.with_start_time(start).with_base_time(start).with_max_value_divisor(1000.0);
    let Ok(mut w) = builder.begin_log_with(&mut out, &mut serializer) else { return Vec::new() };
    let second = Duration::from_secs(1);
    for (i, s) in run.recorder.seconds.iter().enumerate() {
        let at = Duration::from_secs(i as u64);
        let _ = w.write_histogram(&s.corrected, at, second, Tag::new("corrected"));
        let _ = w.write_histogram(&s.uncorrected, at, second, Tag::new("uncorrected"));
    }
    let whole = Duration::from_secs(run.recorder.seconds.len() as u64);
    let _ = w.write_histogram(
        &run.recorder.total.corrected,
        Duration::ZERO,
        whole,
        Tag::new("total-corrected"),
    );
    let _ = w.write_histogram(
        &run.recorder.total.uncorrected,
        Duration::ZERO,
        whole,
        Tag::new("total-uncorrected"),
    );
    drop(w);
    out
}

/// seconds.csv: per second of intended starts, counts, latency percentiles (ms, corrected
/// and uncorrected; empty when the second had no answer), status classes and failure
/// classes. Columns are stable for pandas. Written by `faultline load --out` and by runs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SecondRow {
    pub second: usize,
    pub requests: u64,
    pub errors: u64,
    pub late: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub uncorrected_p50_ms: Option<f64>,
    pub uncorrected_p99_ms: Option<f64>,
    pub ok: u64,
    #[serde(rename = "1xx")]
    pub s1xx: u64,
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
    // One column per `Failure`, by its name.
    pub connect: u64,
    pub timeout: u64,
    pub io: u64,
    pub protocol: u64,
    pub rejected: u64,
    pub not_started: u64,
}

impl crate::table::Row for SecondRow {
    const FILE: &'static str = "seconds.csv";
    const COLUMNS: &'static [&'static str] = &[
        "second",
        "requests",
        "errors",
        "late",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
        "uncorrected_p50_ms",
        "uncorrected_p99_ms",
        "ok",
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "connect",
        "timeout",
        "io",
        "protocol",
        "rejected",
        "not_started",
    ];
    const REQUIRED: &'static [&'static str] = &["second", "requests", "errors"];
}

pub fn seconds_rows(rec: &Recorder) -> Vec<SecondRow> {
    // An empty second has no latency: an empty cell, not 0.
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| {
        (!h.is_empty()).then(|| crate::table::ms3(record::ms_at(h, p)))
    };
    rec.seconds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let [ok, s1xx, s2xx, s3xx, s4xx, s5xx] = s.status;
            let [connect, timeout, io, protocol, rejected, not_started] = s.failures;
            SecondRow {
                second: i,
                requests: s.requests(),
                errors: s.errors(),
                late: s.late,
                p50_ms: q(&s.corrected, 0.5),
                p90_ms: q(&s.corrected, 0.9),
                p95_ms: q(&s.corrected, 0.95),
                p99_ms: q(&s.corrected, 0.99),
                max_ms: q(&s.corrected, 1.0),
                uncorrected_p50_ms: q(&s.uncorrected, 0.5),
                uncorrected_p99_ms: q(&s.uncorrected, 0.99),
                ok,
                s1xx,
                s2xx,
                s3xx,
                s4xx,
                s5xx,
                connect,
                timeout,
                io,
                protocol,
                rejected,
                not_started,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: a target names a host (a compose service); it is resolved once, up front.
    #[test]
    fn names_resolve_once_and_addresses_pass_as_they_are() {
        assert_eq!(resolve("10.0.0.5", 80).unwrap(), "10.0.0.5:80".parse().unwrap());
        assert_eq!(resolve("[::1]", 8080).unwrap(), "[::1]:8080".parse().unwrap());
        assert!(resolve("localhost", 6379).unwrap().ip().is_loopback());
        let e = resolve("no-such-host.invalid", 80).unwrap_err();
        assert!(e.starts_with("no-such-host.invalid: does not resolve"), "{e}");
    }
}
