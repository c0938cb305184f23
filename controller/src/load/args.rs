//! `faultline load URL...`: load on its own, with a progress line and a summary.

use std::time::Duration;

use anyhow::{Result, bail};

use super::{
    LoadSpec, Target,
    grpc::GrpcTarget,
    http::HttpTarget,
    record::{Recorder, ms_at},
    redis::RedisTarget,
    schedule::Shape,
    tcp::TcpTarget,
    tls::TlsOptions,
};
use crate::{load, units};

/// The largest request body a load sends (a file named by `--body @FILE` included).
pub const MAX_BODY: u64 = 16 * 1024 * 1024;

/// Whether the load's settings may name files to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// The `faultline` command for the user who runs it, on that user's files.
    Local,
    /// What a remote caller sent: the controller opens no path a caller names.
    Refused,
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// http://HOST:PORT/PATH or https:// (several: used in turn; one host and port), tcp://HOST:PORT,
    /// redis://HOST:PORT, grpc://HOST:PORT[/SERVICE] (the standard health check) or
    /// grpc://HOST:PORT/package.Service/Method (a unary call; --body @FILE: the request as protobuf bytes).
    /// A HOST name is resolved once, before the load starts.
    #[arg(required = true)]
    urls: Vec<String>,
    /// Requests per second (open loop): the constant rate, or the base of --shape.
    #[arg(long)]
    rate: Option<f64>,
    /// constant, poisson, ramp:FROM..TO/DUR[,..], spike:PEAK@AT/LEN, burst:N/EVERY, sine:AMPLITUDE/PERIOD.
    #[arg(long, default_value = "constant")]
    shape: String,
    /// Closed loop instead: this many connections, each sending as soon as its last answer came (like wrk).
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    #[arg(long, value_parser = units::duration, default_value = "10s")]
    duration: Duration,
    /// Open loop: connections, so the most requests in flight at once.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, value_parser = units::duration, default_value = "5s")]
    timeout: Duration,
    #[arg(long, default_value = "GET")]
    method: String,
    /// NAME: VALUE (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Request body; @FILE reads it from a file (a regular file of at most 16 MiB).
    #[arg(long, default_value = "")]
    body: String,
    /// HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    http2: bool,
    /// A new connection for every request.
    #[arg(long)]
    no_reuse: bool,
    /// <tcp://>: bytes to send per request (with \r \n \t \\ escapes); without it a request is a connect.
    #[arg(long)]
    send: Option<String>,
    /// <tcp://>: read until these bytes arrive (default: any answer).
    #[arg(long, default_value = "")]
    expect: String,
    /// <redis://>: percent of requests that are SET (the rest GET).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    redis_set_percent: u32,
    /// <redis://>: keys faultline:0..N.
    #[arg(long, default_value_t = 1000)]
    redis_keys: u64,
    /// https://: trust the CA(s) in this PEM file instead of the system's (or the PEM text itself).
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// https://: accept any server certificate (a self-signed test service).
    #[arg(long)]
    tls_no_verify: bool,
    /// https://: the name the server's certificate must carry (default: the URL's IP).
    #[arg(long)]
    tls_server_name: Option<String>,
    /// <redis://>: bytes per SET value.
    #[arg(long, default_value_t = 100)]
    redis_value_size: usize,
    /// Also write summary.json and seconds.csv (one row per second) here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Seed for Poisson arrivals (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Parser)]
#[command(no_binary_name = true)]
struct Words {
    #[command(flatten)]
    args: LoadArgs,
}

impl LoadArgs {
    /// `faultline load`'s arguments from words, as a command line gives them: the
    /// controller's traffic (Web API) takes the CLI's path and its checks.
    pub fn from_words(words: &[String]) -> Result<Self, String> {
        <Words as clap::Parser>::try_parse_from(words).map(|w| w.args).map_err(|e| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .replace("--", "")
        })
    }

    fn target(&self, body: Vec<u8>) -> Result<Target> {
        let first = &self.urls[0];
        let (scheme, rest) = first.split_once("://").ok_or_else(|| {
            anyhow::anyhow!("url: {first:?}: give SCHEME://HOST:PORT (http, tcp, redis, grpc)")
        })?;
        if !["http", "https"].contains(&scheme) && self.urls.len() > 1 {
            bail!("url: several URLs are for http:// and https:// only");
        }
        let addr = || -> Result<std::net::SocketAddr> {
            let hostport = rest.split('/').next().unwrap_or("");
            let (host, port) = hostport
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "url: {first:?}: give a host and a port, e.g. {scheme}://10.0.0.5:6379"
                    )
                })?;
            super::resolve(host, port).map_err(|e| anyhow::anyhow!("url: {first:?}: {e}"))
        };
        Ok(match scheme {
            "http" | "https" => {
                let tls = TlsOptions {
                    cacert: self.cacert.clone(),
                    no_verify: self.tls_no_verify,
                    server_name: self.tls_server_name.clone(),
                };
                Target::Http(
                    HttpTarget::new(
                        &self.urls,
                        self.http2,
                        &self.method,
                        &self.headers,
                        body.into(),
                        !self.no_reuse,
                        &tls,
                    )
                    .map_err(anyhow::Error::msg)?,
                )
            }
            "tcp" => Target::Tcp(TcpTarget {
                addr: addr()?,
                send: self.send.as_deref().map(unescape),
                expect: unescape(&self.expect),
                reuse: !self.no_reuse,
            }),
            "redis" => Target::Redis(RedisTarget {
                addr: addr()?,
                set_percent: self.redis_set_percent,
                keys: self.redis_keys,
                value: vec![b'x'; self.redis_value_size],
            }),
            "grpc" => Target::Grpc(
                GrpcTarget::new(addr()?, rest.split_once('/').map_or("", |(_, s)| s), body.into())
                    .map_err(anyhow::Error::msg)?,
            ),
            other => {
                bail!("url: {first:?}: unknown scheme {other:?} (http, https, tcp, redis, grpc)")
            }
        })
    }

    /// The load as the `faultline` command's user asked for it: `--body @FILE` and
    /// `--cacert FILE` are read (bounded, regular files only).
    pub fn spec(&self) -> Result<LoadSpec> {
        self.spec_with(Files::Local)
    }

    /// The load, reading files only if `files` allows: what a remote caller sends (a
    /// scenario through the Web API, its traffic) carries its body and CA inline.
    pub fn spec_with(&self, files: Files) -> Result<LoadSpec> {
        let body = match (self.body.strip_prefix('@'), files) {
            (Some(path), Files::Local) => {
                crate::localfile::read(std::path::Path::new(path), MAX_BODY, "--body")
                    .map_err(anyhow::Error::msg)?
            }
            (Some(_), Files::Refused) => bail!(
                "--body: a file (@PATH) is read by the faultline command only, never by the controller for a caller; give the body inline"
            ),
            (None, _) => self.body.clone().into_bytes(),
        };
        if files == Files::Refused
            && self.cacert.as_deref().is_some_and(|c| !super::tls::is_inline_pem(c))
        {
            bail!(
                "--cacert: a file is read by the faultline command only, never by the controller for a caller; give the CA's PEM text inline (-----BEGIN CERTIFICATE----- ...)"
            );
        }
        let target = self.target(body)?;
        if self.rate.is_none() && self.concurrency.is_none() {
            bail!("give --rate R (open loop) or --concurrency N (closed loop)");
        }
        let (shape, connections) = match (self.rate, self.concurrency) {
            (_, Some(c)) => {
                if self.shape != "constant" {
                    bail!("--shape: needs an open-loop --rate, not --concurrency");
                }
                (None, c)
            }
            (rate, None) => (Some(Shape::parse(&self.shape, rate)?), self.connections),
        };
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        let spec = LoadSpec {
            target,
            shape,
            duration: self.duration,
            connections,
            timeout: self.timeout,
            seed,
        };
        spec.check().map_err(anyhow::Error::msg)?;
        Ok(spec)
    }
}

/// `\r`, `\n`, `\t` and `\\` in a command-line string.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let c = if c == '\\' {
            match chars.next() {
                Some('r') => '\r',
                Some('n') => '\n',
                Some('t') => '\t',
                Some(other) => other,
                None => '\\',
            }
        } else {
            c
        };
        let mut utf8 = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
    out
}

fn progress_line(rec: &Recorder, elapsed: Duration, target: Option<f64>) {
    // The last whole second of intended starts.
    let i = elapsed.as_secs().saturating_sub(1) as usize;
    let Some(s) = rec.seconds.get(i) else { return };
    let target = target.map_or(String::new(), |r| format!(" (target {r:.0})"));
    let unsent = if s.not_started() > 0 {
        format!("  not started {}", s.not_started())
    } else {
        String::new()
    };
    // Answers, not starts: what the target served in that second.
    eprintln!(
        "[{:>4}s] {:>7}/s{target}  p50 {:.2} ms  p99 {:.2} ms  errors {}  late {}{unsent}",
        i + 1,
        s.answered(),
        ms_at(&s.corrected, 0.5),
        ms_at(&s.corrected, 0.99),
        s.errors(),
        s.late
    );
}

pub async fn run(a: &LoadArgs) -> Result<()> {
    let spec = a.spec()?;
    let target_rate = a.rate;
    let quiet = a.json;
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let run = load::run(
        &spec,
        std::time::Instant::now() + Duration::from_millis(20),
        stop,
        move |rec, elapsed| {
            if !quiet {
                progress_line(rec, elapsed, target_rate);
            }
        },
    )
    .await;
    let s = load::summary(&run, run.elapsed.min(spec.duration).max(Duration::from_millis(1)));
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--out {}: {e}", dir.display()))?;
        std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&s)? + "\n")?;
        crate::table::write(dir, &load::seconds_rows(&run.recorder))?;
        std::fs::write(dir.join("latency.hlog"), load::interval_log(&run))?;
    }
    if run.interrupted {
        eprintln!("interrupted: the summary covers what was answered until then");
    }
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    let (l, u) = (&s.latency_ms, &s.uncorrected_latency_ms);
    println!(
        "requests {} in {:.1} s: {} answered, {:.1}/s achieved{}",
        s.requests,
        s.elapsed_s,
        s.answered,
        s.rate,
        s.target_rate.map_or(String::new(), |r| format!(
            " (target {r:.1}/s, scheduled {}, not started {})",
            s.scheduled.map_or("-".to_owned(), |n| n.to_string()),
            s.not_started
        ))
    );
    println!(
        "status {}  failures {}  error rate {:.2} %",
        serde_json::to_string(&s.status)?,
        serde_json::to_string(&s.failures)?,
        s.error_rate * 100.0
    );
    println!(
        "latency from intended start (ms): p50 {} p90 {} p99 {} p99.9 {} max {}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    println!("latency from actual start (ms):   p50 {} p99 {} max {}", u.p50, u.p99, u.max);
    println!("late starts (> 5 ms) {}  max start lag {:.1} ms", s.late_starts, s.max_start_lag_ms);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_become_bytes() {
        assert_eq!(super::unescape("PING\\r\\n"), b"PING\r\n");
        assert_eq!(super::unescape("a\\\\b\\"), b"a\\b\\");
        assert_eq!(super::unescape("é"), "é".as_bytes());
    }
}
