//! An LLM-written summary for `faultline report`, when an OpenAI-compatible endpoint is
//! configured: `FAULTLINE_LLM_URL` (or `OPENAI_BASE_URL`), e.g. <https://api.openai.com/v1> or a
//! local llama.cpp/vLLM server; `OPENAI_API_KEY` if it needs one; `FAULTLINE_LLM_MODEL`
//! (default gpt-4o-mini). The model gets the findings and the analysis (JSON) and is asked
//! for a short account for an on-call engineer; its text goes into report.html under a
//! label saying who wrote it, and into llm-summary.md. Without the variables nothing is
//! sent; a failing endpoint leaves the report as it was, with a note.

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::{analyze::Analysis, esc};
use crate::load::tls::{Stream, Tls, TlsOptions};

use super::LLM_MARKER as MARKER;

pub struct Endpoint {
    base: hyper::Uri,
    key: Option<String>,
    model: String,
}

impl Endpoint {
    /// None when no endpoint is configured.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(url) = std::env::var("FAULTLINE_LLM_URL")
            .ok()
            .or_else(|| std::env::var("OPENAI_BASE_URL").ok())
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let base: hyper::Uri = url.trim_end_matches('/').parse().with_context(|| {
            format!("FAULTLINE_LLM_URL / OPENAI_BASE_URL: {url:?} is not a URL")
        })?;
        if !matches!(base.scheme_str(), Some("http" | "https")) || base.host().is_none() {
            bail!(
                "FAULTLINE_LLM_URL / OPENAI_BASE_URL: {url:?}: give http(s)://HOST[:PORT]/PATH, e.g. https://api.openai.com/v1"
            );
        }
        let model = std::env::var("FAULTLINE_LLM_MODEL")
            .ok()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "gpt-4o-mini".into());
        Ok(Some(Self {
            base,
            key: std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty()),
            model,
        }))
    }

    pub fn describe(&self) -> String {
        format!("{} at {}", self.model, self.base)
    }
}

/// The chat request: pure, so its content is checked without a server.
pub fn request(model: &str, findings: &[String], analysis: &Analysis) -> Value {
    let system = "You summarise the results of a chaos-engineering run for an on-call engineer. \
                  Use only the figures given; do not invent numbers or causes. In at most 150 words: \
                  did the steady-state hypothesis hold, what each fault did to the service (errors, latency, \
                  throughput) and to the kernel (retransmits, RTT, drops), how long recovery took, and one \
                  concrete thing worth checking next.";
    let user = format!(
        "Findings:\n- {}\n\nAnalysis (JSON):\n{}",
        findings.join("\n- "),
        serde_json::to_string(analysis).unwrap_or_default()
    );
    json!({"model": model, "temperature": 0.2, "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]})
}

async fn post(e: &Endpoint, body: Vec<u8>) -> Result<Value> {
    let host =
        e.base.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let https = e.base.scheme_str() == Some("https");
    let port = e.base.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host}: no address"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let io = if https {
        let name = if host.parse::<IpAddr>().is_ok() { None } else { Some(host.clone()) };
        let tls = Tls::new(
            &TlsOptions { server_name: name, ..TlsOptions::default() },
            addr.ip(),
            "http/1.1",
        )
        .map_err(anyhow::Error::msg)?;
        Stream::Tls(Box::new(tls.connector.connect(tls.name.clone(), tcp).await.context("TLS")?))
    } else {
        Stream::Plain(tcp)
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(conn);
    let path = format!("{}/chat/completions", e.base.path().trim_end_matches('/'));
    let mut req = hyper::Request::post(path)
        .header("host", e.base.authority().map(ToString::to_string).unwrap_or_default())
        .header("content-type", "application/json");
    if let Some(k) = &e.key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await
        .context("sending the request")?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>()
        );
    }
    serde_json::from_slice(&bytes).context("the answer is not JSON")
}

/// Asks the endpoint; Ok(text) or why not.
pub async fn summarize(e: &Endpoint, findings: &[String], analysis: &Analysis) -> Result<String> {
    let body = serde_json::to_vec(&request(&e.model, findings, analysis))?;
    let answer = tokio::time::timeout(Duration::from_mins(2), post(e, body))
        .await
        .context("no answer within 120 s")??;
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .context("the answer has no choices[0].message.content")?
        .trim()
        .to_owned();
    if text.is_empty() {
        bail!("the model answered with an empty text");
    }
    Ok(text)
}

/// After `report::write`: if an endpoint is configured, puts its summary (or why there is
/// none) into report.html and llm-summary.md. Never fails the report.
pub async fn add_to_report(dir: &Path) -> Option<std::path::PathBuf> {
    let e = match Endpoint::from_env() {
        Ok(Some(e)) => e,
        Ok(None) => return None,
        Err(err) => {
            eprintln!("report: no LLM summary: {err:#}");
            return None;
        }
    };
    let html_path = dir.join("report.html");
    let read = || -> Result<(String, Analysis, Vec<String>)> {
        let html = std::fs::read_to_string(&html_path)?;
        let an: Analysis = serde_json::from_str(&std::fs::read_to_string(
            dir.join(crate::run::files::ANALYSIS_JSON),
        )?)?;
        let summary = crate::run::files::Summary::read(dir)?;
        let findings = crate::report::findings(&an, &summary);
        Ok((html, an, findings))
    };
    let Ok((html, an, findings)) = read() else { return None };
    let section = match summarize(&e, &findings, &an).await {
        Ok(text) => {
            let md = dir.join("llm-summary.md");
            let _ = std::fs::write(
                &md,
                format!(
                    "<!-- written by {} from analysis.json; check it against the report's figures -->\n\n{text}\n",
                    e.describe()
                ),
            );
            let paras: String = text
                .split("\n\n")
                .map(|p| format!("<p>{}</p>", esc(p).replace('\n', "<br>")))
                .collect();
            format!(
                "<h2>Summary written by an LLM</h2><div class=\"llm\"><p><i>Written by {} from this report's analysis; it can be wrong — the figures below are the measurements.</i></p>{paras}</div>",
                esc(&e.describe())
            )
        }
        Err(err) => {
            eprintln!("report: no LLM summary from {}: {err:#}", e.describe());
            format!(
                "<p><i>No LLM summary: {} did not give one ({}).</i></p>",
                esc(&e.describe()),
                esc(&format!("{err:#}"))
            )
        }
    };
    let _ = std::fs::write(&html_path, html.replacen(MARKER, &section, 1));
    Some(dir.join("llm-summary.md")).filter(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_the_findings_and_the_analysis_and_asks_for_figures_only() {
        let r = request(
            "m1",
            &["Faults: drop (from 4.0 s to 6.0 s).".into()],
            &Analysis { recovery_s: Some(1.0), ..Analysis::default() },
        );
        assert_eq!(r["model"], "m1");
        let msgs = r["messages"].as_array().unwrap();
        assert_eq!(
            (msgs[0]["role"].as_str(), msgs[1]["role"].as_str()),
            (Some("system"), Some("user"))
        );
        assert!(msgs[0]["content"].as_str().unwrap().contains("do not invent numbers"));
        let user = msgs[1]["content"].as_str().unwrap();
        assert!(
            user.contains("- Faults: drop (from 4.0 s to 6.0 s).")
                && user.contains("\"recovery_s\":1.0"),
            "{user}"
        );
    }
}
