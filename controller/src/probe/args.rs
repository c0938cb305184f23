//! `faultline probe KIND KEY=VALUE...`: ask a probe now, as a scenario's `probes:` entry
//! with the same settings would, and say pass or fail (the exit code too).

use anyhow::{Result, bail};

use super::{Settings, Trust, parse, sample};

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// http, tcp, redis, prometheus or command.
    kind: String,
    /// The probe's settings as in a scenario: url=http://10.0.0.2/ status=2xx match=ok
    /// within=200ms, address=10.0.0.2:6379, query='up' expect='> 0', run='redis-cli ping';
    /// a key given twice is a list (header=..., header=...).
    settings: Vec<String>,
    /// Samples to take, one per interval (0: until interrupted).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// One JSON object per sample.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: &ProbeArgs) -> Result<()> {
    let mut settings = Settings::new();
    settings.insert("kind".into(), vec![a.kind.clone()]);
    for s in &a.settings {
        let Some((k, v)) = s.split_once('=') else {
            bail!("{s:?} is not KEY=VALUE (e.g. url=http://10.0.0.2/)");
        };
        if k == "kind" {
            bail!("kind: given first, as the command's first word");
        }
        settings.entry(k.trim().to_owned()).or_default().push(v.to_owned());
    }
    // The command's own user: a command probe runs here, as that user.
    let p = parse(&a.kind, &settings, Trust::Local)
        .map_err(|e| anyhow::anyhow!("invalid probe: {e}"))?;
    let mut tick = tokio::time::interval(p.interval);
    let (mut n, mut failed) = (0u64, 0u64);
    while a.count == 0 || n < a.count {
        tick.tick().await;
        let s = sample(&p).await;
        n += 1;
        failed += u64::from(!s.ok);
        if a.json {
            println!(
                "{}",
                serde_json::json!({"probe": p.describe, "ok": s.ok, "ms": s.ms, "detail": s.detail})
            );
        } else {
            println!(
                "{} {}  {:.1} ms  {}",
                if s.ok { "pass" } else { "FAIL" },
                p.describe,
                s.ms,
                s.detail
            );
        }
    }
    if failed > 0 {
        bail!("{failed} of {n} samples failed");
    }
    Ok(())
}
