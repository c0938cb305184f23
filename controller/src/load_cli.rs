//! `faultline load URL...`: load on its own, with a progress line and a summary.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::{
    load::{self, LoadSpec, Target, http::HttpTarget, record::Recorder, schedule::Shape},
    units,
};

#[derive(clap::Args)]
pub struct LoadArgs {
    /// http://IP:PORT/PATH (several: used in turn; one host and port).
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
    /// Request body; @FILE reads it from a file.
    #[arg(long, default_value = "")]
    body: String,
    /// HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    http2: bool,
    /// A new connection for every request.
    #[arg(long)]
    no_reuse: bool,
    /// Seed for Poisson arrivals (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl LoadArgs {
    pub fn spec(&self) -> Result<LoadSpec> {
        let body = match self.body.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|e| anyhow::anyhow!("--body: reading {path}: {e}"))?,
            None => self.body.clone().into_bytes(),
        };
        let target = HttpTarget::new(&self.urls, self.http2, &self.method, &self.headers, body.into(), !self.no_reuse).map_err(anyhow::Error::msg)?;
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
        let seed = self.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64));
        let spec = LoadSpec { target: Target::Http(target), shape, duration: self.duration, connections, timeout: self.timeout, seed };
        spec.check().map_err(anyhow::Error::msg)?;
        Ok(spec)
    }
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 }
}

fn progress_line(rec: &Recorder, elapsed: Duration, target: Option<f64>) {
    // The last whole second of intended starts.
    let i = elapsed.as_secs().saturating_sub(1) as usize;
    let Some(s) = rec.seconds.get(i) else { return };
    let target = target.map_or(String::new(), |r| format!(" (target {r:.0})"));
    eprintln!(
        "[{:>4}s] {:>7}/s{target}  p50 {:.2} ms  p99 {:.2} ms  errors {}  late {}",
        i + 1,
        s.requests(),
        ms(&s.corrected, 0.5),
        ms(&s.corrected, 0.99),
        s.errors(),
        s.late
    );
}

pub async fn run(a: &LoadArgs) -> Result<()> {
    let spec = a.spec()?;
    let target_rate = a.rate;
    let quiet = a.json;
    let run = load::run(&spec, move |rec, elapsed| {
        if !quiet {
            progress_line(rec, elapsed, target_rate);
        }
    })
    .await;
    let s = load::summary(&run, run.elapsed.min(spec.duration).max(Duration::from_millis(1)));
    if a.json {
        println!("{s}");
        return Ok(());
    }
    let l = &s["latency_ms"];
    let u = &s["uncorrected_latency_ms"];
    println!(
        "requests {} in {:.1} s: {:.1}/s{}",
        s["requests"],
        s["duration_s"].as_f64().unwrap_or(0.0),
        s["rate"].as_f64().unwrap_or(0.0),
        s["target_rate"].as_f64().map_or(String::new(), |r| format!(" (target {r:.1}/s, scheduled {})", s["scheduled"]))
    );
    println!("status {}  failures {}  error rate {:.2} %", s["status"], s["failures"], s["error_rate"].as_f64().unwrap_or(0.0) * 100.0);
    println!("latency from intended start (ms): p50 {} p90 {} p99 {} p99.9 {} max {}", l["p50"], l["p90"], l["p99"], l["p999"], l["max"]);
    println!("latency from actual start (ms):   p50 {} p99 {} max {}", u["p50"], u["p99"], u["max"]);
    println!("late starts (> 5 ms) {}  max start lag {:.1} ms", s["late_starts"], s["max_start_lag_ms"].as_f64().unwrap_or(0.0));
    Ok(())
}
