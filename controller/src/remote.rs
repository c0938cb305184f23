//! Calls to agents and the controller as a user sees them fail: an unreachable endpoint
//! (and why, TLS included) and a refused call, in words. Shared by the CLI and runs.

pub fn unreachable_error(what: &str, url: &str, e: &tonic::transport::Error) -> anyhow::Error {
    let mut causes = faultline_proto::error_chain(e);
    causes.dedup();
    let hint = match what {
        "agent" => "is faultline-agent running there? set --agent",
        _ => "is `faultline controller serve` running there? set --controller",
    };
    let tls = causes.iter().any(|c| {
        c.contains("certificate") || c.contains("alert") || c.contains("tls") || c.contains("TLS")
    });
    let tls_hint = if tls {
        "; TLS refused: both sides need certificates from the same CA (--tls-dir)"
    } else {
        ""
    };
    anyhow::anyhow!("cannot reach the {what} at {url} ({hint}{tls_hint}): {}", causes.join(": "))
}

#[expect(clippy::needless_pass_by_value, reason = "by value, so it serves as `map_err(explain)`")]
pub fn explain(e: tonic::Status) -> anyhow::Error {
    // A plaintext client talking to a TLS server sees only a broken HTTP/2 stream.
    let hint = if e.message().ends_with("h2 protocol error: http2 error") {
        " (is the server using TLS? then use https:// and --tls-dir instead of --insecure)"
    } else {
        ""
    };
    anyhow::anyhow!("{}{hint}", faultline_proto::status_in_words(&e))
}
