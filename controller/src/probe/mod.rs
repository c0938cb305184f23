//! Probes: the system's own signals, asked at an interval (issue 33). An HTTP endpoint,
//! a TCP port, Redis, a Prometheus query or a command answers each sample with pass or
//! fail; a refused connection, a timeout or an answer that cannot be read is a failure,
//! never a pass or a skip. Scenarios (`probes:`), `faultline probe` and the run's
//! hypothesis, `during:` and guardrails use these definitions.
//!
//! A probe is written as settings, the same in a scenario entry and on the command line
//! (`faultline probe http url=http://10.0.0.2/ status=2xx`): see [`parse`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

pub mod args;
mod command;
mod http;
mod prometheus;
mod redis;

use crate::units;

/// One probe, checked whole: every address resolved, every pattern compiled.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// A failing answer counts as a failure only once it has lasted this long
    /// (Prometheus's `for:`); 0 elsewhere.
    pub grace: Duration,
    pub check: Check,
    /// What it asks, for tables and reports (`GET http://10.0.0.2/`, `tcp 10.0.0.2:6379`).
    pub describe: String,
}

#[derive(Debug, Clone)]
pub enum Check {
    Http(http::Http),
    Tcp(SocketAddr),
    Redis(redis::Redis),
    Prometheus(prometheus::Prometheus),
    Command(command::Command),
}

impl Check {
    /// The address it connects to; None for a command.
    pub fn address(&self) -> Option<SocketAddr> {
        match self {
            Self::Http(h) => Some(h.addr()),
            Self::Tcp(a) => Some(*a),
            Self::Redis(r) => Some(r.addr),
            Self::Prometheus(p) => Some(p.addr()),
            Self::Command(_) => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Tcp(_) => "tcp",
            Self::Redis(_) => "redis",
            Self::Prometheus(_) => "prometheus",
            Self::Command(_) => "command",
        }
    }
}

/// One answer: pass or fail, how long it took, and what was seen (a status, a value, an
/// error), at most [`DETAIL`] characters.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ok: bool,
    pub ms: f64,
    pub detail: String,
}

pub const DETAIL: usize = 160;

/// A probe setting that is wrong, and why; `field` is the setting's name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ProbeError {
    pub field: String,
    pub problem: String,
}

fn bad(field: &str, problem: impl Into<String>) -> ProbeError {
    ProbeError { field: field.to_owned(), problem: problem.into() }
}

/// Who wrote the probe: the command's own user may run commands on this host; a scenario
/// a remote caller sent the controller may not (issue 33: an operator-only capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Local,
    Remote,
}

/// The longest answer read from a probed service (a page, a query result, a command's
/// output): enough to match a pattern in, bounded against a hostile endpoint.
pub const MAX_ANSWER: usize = 1024 * 1024;

/// Settings as written: each key with its value, or several for a list.
pub type Settings = BTreeMap<String, Vec<String>>;

/// Reads a probe from its settings: `kind` (http, tcp, redis, prometheus, command),
/// `interval` (1s) and `timeout` (1s, at most the interval), and the kind's own:
///
/// | kind       | settings                                                                        |
/// |------------|---------------------------------------------------------------------------------|
/// | http       | url, method, header (list), body, status (200, 2xx, 200,204; 2xx), match (regex on the body), within (a latency bound), tls_no_verify |
/// | tcp        | address (HOST:PORT)                                                             |
/// | redis      | address, info (an INFO field, else PING), match (regex on the reply or field)  |
/// | prometheus | url (the server), query (PromQL), expect (`< 0.05`, `> 0`, `== 1`), for         |
/// | command    | run (the program and its arguments), exit (0), match (regex on its output)     |
pub fn parse(name: &str, settings: &Settings, trust: Trust) -> Result<Probe, ProbeError> {
    let one = |k: &str| -> Result<Option<&str>, ProbeError> {
        match settings.get(k).map(Vec::as_slice) {
            None => Ok(None),
            Some([v]) => Ok(Some(v.as_str())),
            Some(_) => Err(bad(k, "one value, not a list")),
        }
    };
    let kind = one("kind")?
        .ok_or_else(|| bad("kind", "required: http, tcp, redis, prometheus or command"))?;
    let allowed: &[&str] = match kind {
        "http" => {
            &["url", "method", "header", "body", "status", "match", "within", "tls_no_verify"]
        }
        "tcp" => &["address"],
        "redis" => &["address", "info", "match"],
        "prometheus" => &["url", "query", "expect", "for"],
        "command" => &["run", "exit", "match"],
        other => {
            return Err(bad(
                "kind",
                format!("unknown kind {other:?} (http, tcp, redis, prometheus, command)"),
            ));
        }
    };
    for k in settings.keys() {
        if !["kind", "interval", "timeout"].contains(&k.as_str()) && !allowed.contains(&k.as_str())
        {
            return Err(bad(
                k,
                format!(
                    "not a setting of a {kind} probe ({}, interval, timeout)",
                    allowed.join(", ")
                ),
            ));
        }
    }
    let duration = |k: &str, default: Duration| -> Result<Duration, ProbeError> {
        one(k)?.map_or(Ok(default), |v| units::duration(v).map_err(|e| bad(k, e)))
    };
    let interval = duration("interval", Duration::from_secs(1))?;
    if !(Duration::from_millis(100)..=Duration::from_hours(1)).contains(&interval) {
        return Err(bad("interval", "from 100ms to 1h"));
    }
    let timeout = duration("timeout", Duration::from_secs(1).min(interval))?;
    if timeout < Duration::from_millis(10) || timeout > interval {
        // A timeout past the interval would let one slow answer hide the samples after it.
        return Err(bad(
            "timeout",
            format!("from 10ms to the interval ({})", units::show_duration(interval)),
        ));
    }
    let pattern = |k: &str| -> Result<Option<regex_lite::Regex>, ProbeError> {
        one(k)?.map(|p| regex(p).map_err(|e| bad(k, e))).transpose()
    };
    let required = |k: &str, what: &str| -> Result<&str, ProbeError> {
        one(k)?.ok_or_else(|| bad(k, format!("required: {what}")))
    };
    let mut grace = Duration::ZERO;
    let (check, describe) = match kind {
        "http" => {
            let h = http::Http::new(
                required("url", "the URL to ask (http:// or https://)")?,
                one("method")?.unwrap_or("GET"),
                settings.get("header").map_or(&[][..], Vec::as_slice),
                one("body")?.unwrap_or(""),
                one("status")?.unwrap_or("2xx"),
                pattern("match")?,
                one("within")?
                    .map(|w| units::duration(w).map_err(|e| bad("within", e)))
                    .transpose()?,
                switch(one("tls_no_verify")?, "tls_no_verify")?,
            )?;
            let d = format!("{} {}", h.method, h.url);
            (Check::Http(h), d)
        }
        "tcp" => {
            let a = address(required("address", "HOST:PORT")?, "address")?;
            (Check::Tcp(a), format!("tcp {a}"))
        }
        "redis" => {
            let r = redis::Redis {
                addr: address(required("address", "HOST:PORT of the Redis server")?, "address")?,
                info: one("info")?.map(str::to_owned),
                pattern: pattern("match")?,
            };
            let d = match &r.info {
                Some(f) => format!("redis {} INFO {f}", r.addr),
                None => format!("redis {} PING", r.addr),
            };
            (Check::Redis(r), d)
        }
        "prometheus" => {
            grace = duration("for", Duration::ZERO)?;
            let p = prometheus::Prometheus::new(
                required("url", "the Prometheus server, e.g. http://127.0.0.1:9090")?,
                required("query", "a PromQL instant query")?,
                required("expect", "a comparison on the value: < 0.05, > 0, == 1")?,
            )?;
            let d = format!("prometheus {} {}", p.query, p.expect);
            (Check::Prometheus(p), d)
        }
        "command" => {
            if trust == Trust::Remote {
                return Err(bad(
                    "kind",
                    "a command probe runs a program on the controller's host: only a scenario of the command's own user (`faultline run FILE`) may have one",
                ));
            }
            let run = settings
                .get("run")
                .ok_or_else(|| bad("run", "required: the program and its arguments"))?;
            // One string is split on spaces; a list is taken as it is (no shell either way).
            let argv: Vec<String> = match run.as_slice() {
                [one] => one.split_whitespace().map(str::to_owned).collect(),
                many => many.to_vec(),
            };
            if argv.is_empty() || argv[0].is_empty() {
                return Err(bad("run", "the program and its arguments"));
            }
            let exit = one("exit")?.map_or(Ok(0), |e| {
                e.parse::<i32>().map_err(|_| bad("exit", format!("{e:?} is not an exit code")))
            })?;
            let d = format!("command {}", argv.join(" "));
            (Check::Command(command::Command { argv, exit, pattern: pattern("match")? }), d)
        }
        _ => unreachable!("kinds checked above"),
    };
    Ok(Probe { name: name.to_owned(), interval, timeout, grace, check, describe })
}

fn switch(v: Option<&str>, field: &str) -> Result<bool, ProbeError> {
    match v {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(bad(field, format!("{other:?} is not true or false"))),
    }
}

/// A pattern from a file or a caller: bounded in size, so it cannot make a huge program.
pub fn regex(p: &str) -> Result<regex_lite::Regex, String> {
    regex_lite::RegexBuilder::new(p)
        .size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| format!("{p:?} is not a regular expression: {e}"))
}

fn address(s: &str, field: &str) -> Result<SocketAddr, ProbeError> {
    let (host, port) =
        s.rsplit_once(':').ok_or_else(|| bad(field, format!("{s:?} is not HOST:PORT")))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(field, format!("{s:?}: the port is 1 to 65535")))?;
    crate::load::resolve(host, port).map_err(|e| bad(field, e))
}

/// `text` cut to [`DETAIL`] characters, on one line.
pub fn detail(text: &str) -> String {
    let one_line: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(DETAIL + 1).collect();
    let one_line = one_line.trim().to_owned();
    if one_line.chars().count() > DETAIL {
        format!("{}…", one_line.chars().take(DETAIL - 1).collect::<String>())
    } else {
        one_line
    }
}

/// Asks once, within the probe's timeout.
pub async fn sample(p: &Probe) -> Sample {
    let start = Instant::now();
    let answer = tokio::time::timeout(p.timeout, async {
        match &p.check {
            Check::Http(h) => h.check().await,
            Check::Tcp(a) => tokio::net::TcpStream::connect(a)
                .await
                .map(|_| "connected".to_owned())
                .map_err(|e| format!("connect: {e}")),
            Check::Redis(r) => r.check().await,
            Check::Prometheus(q) => q.check().await,
            Check::Command(c) => c.check().await,
        }
    })
    .await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let (ok, text) = match answer {
        Ok(Ok(seen)) => (true, seen),
        Ok(Err(why)) => (false, why),
        Err(_) => (false, format!("no answer within {}", units::show_duration(p.timeout))),
    };
    Sample { ok, ms, detail: detail(&text) }
}

/// Asks every `interval` from `start` until dropped, handing each sample (with its time
/// since `start`) to `seen`. A failure inside the probe's grace (`for:`) is passed on as
/// a pass, saying so; a sample that overruns its tick makes the next one wait for the
/// next whole tick, so samples never overlap.
pub async fn watch(p: Probe, start: tokio::time::Instant, mut seen: impl FnMut(f64, Sample)) {
    let mut tick = tokio::time::interval_at(start, p.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        let at = tick.tick().await;
        let mut s = sample(&p).await;
        if s.ok {
            failing_since = None;
        } else {
            let since = *failing_since.get_or_insert(at);
            if at.duration_since(since) < p.grace {
                s.ok = true;
                s.detail =
                    detail(&format!("pending (failing for less than its for:): {}", s.detail));
            }
        }
        seen(at.duration_since(start).as_secs_f64(), s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut s = Settings::new();
        for (k, v) in pairs {
            s.entry((*k).to_owned()).or_default().push((*v).to_owned());
        }
        s
    }

    fn err(pairs: &[(&str, &str)]) -> ProbeError {
        parse("p", &settings(pairs), Trust::Local).unwrap_err()
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        assert_eq!(err(&[]).field, "kind");
        assert_eq!(err(&[("kind", "smtp")]).field, "kind");
        assert_eq!(err(&[("kind", "tcp")]).field, "address");
        assert_eq!(err(&[("kind", "tcp"), ("address", "10.0.0.1")]).field, "address");
        assert_eq!(err(&[("kind", "tcp"), ("address", "10.0.0.1:0")]).field, "address");
        let e = err(&[("kind", "tcp"), ("address", "10.0.0.1:80"), ("url", "x")]);
        assert!(e.field == "url" && e.problem.contains("not a setting of a tcp probe"), "{e}");
        let e = err(&[("kind", "tcp"), ("address", "10.0.0.1:80"), ("interval", "1")]);
        assert!(e.field == "interval" && e.problem.contains("no unit"), "{e}");
        let e = err(&[("kind", "tcp"), ("address", "10.0.0.1:80"), ("timeout", "2s")]);
        assert!(e.field == "timeout" && e.problem.contains("to the interval (1s)"), "{e}");
        assert_eq!(
            err(&[("kind", "tcp"), ("address", "10.0.0.1:80"), ("interval", "10ms")]).field,
            "interval"
        );
        assert_eq!(err(&[("kind", "http"), ("url", "ftp://x/")]).field, "url");
        assert_eq!(
            err(&[("kind", "http"), ("url", "http://10.0.0.1/"), ("status", "6xx")]).field,
            "status"
        );
        assert_eq!(
            err(&[("kind", "http"), ("url", "http://10.0.0.1/"), ("match", "(")]).field,
            "match"
        );
        assert_eq!(
            err(&[
                ("kind", "prometheus"),
                ("url", "http://10.0.0.1:9090"),
                ("query", "up"),
                ("expect", "about 1")
            ])
            .field,
            "expect"
        );
        assert_eq!(err(&[("kind", "command")]).field, "run");
        let remote = parse("p", &settings(&[("kind", "command"), ("run", "true")]), Trust::Remote)
            .unwrap_err();
        assert!(
            remote.field == "kind" && remote.problem.contains("command's own user"),
            "{remote}"
        );
    }

    #[test]
    fn a_probe_says_what_it_asks() {
        let p = parse(
            "web",
            &settings(&[("kind", "http"), ("url", "http://10.0.0.2:8080/health")]),
            Trust::Local,
        )
        .unwrap();
        assert_eq!(
            (p.describe.as_str(), p.interval, p.timeout),
            ("GET http://10.0.0.2:8080/health", Duration::from_secs(1), Duration::from_secs(1))
        );
        let p = parse(
            "c",
            &settings(&[("kind", "command"), ("run", "redis-cli ping"), ("interval", "500ms")]),
            Trust::Local,
        )
        .unwrap();
        assert_eq!(
            (p.describe.as_str(), p.timeout),
            ("command redis-cli ping", Duration::from_millis(500))
        );
        let Check::Command(c) = p.check else { panic!() };
        assert_eq!(c.argv, ["redis-cli", "ping"]);
    }

    #[test]
    fn details_stay_short_and_on_one_line() {
        assert_eq!(detail("a\nb\r\n"), "a b");
        let long = "x".repeat(1000);
        assert_eq!(detail(&long).chars().count(), DETAIL);
    }

    #[tokio::test]
    async fn a_closed_port_fails_and_a_slow_answer_times_out() {
        // Port 1 on loopback: nothing listens there in a test host.
        let closed =
            parse("c", &settings(&[("kind", "tcp"), ("address", "127.0.0.1:1")]), Trust::Local)
                .unwrap();
        let s = sample(&closed).await;
        assert!(!s.ok && s.detail.contains("connect"), "{s:?}");
        let slow = parse(
            "s",
            &settings(&[("kind", "command"), ("run", "sleep 5"), ("timeout", "100ms")]),
            Trust::Local,
        )
        .unwrap();
        let s = sample(&slow).await;
        assert!(!s.ok && s.detail.contains("no answer within 100ms"), "{s:?}");
        let ok = parse(
            "t",
            &settings(&[("kind", "command"), ("run", "false"), ("exit", "1")]),
            Trust::Local,
        )
        .unwrap();
        assert!(sample(&ok).await.ok);
    }
}
