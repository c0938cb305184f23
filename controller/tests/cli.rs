//! The CLI on its own: completions and errors that say what to do.

use std::process::{Command, Stdio};

fn faultline(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .env_remove("FAULTLINE_CONTROLLER")
        .output()
        .unwrap()
}

#[test]
fn bash_completions_parse_and_know_every_command() {
    let out = faultline(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for word in ["partition", "agents", "metrics", "cpu-throttle", "majorities-ring"] {
        assert!(script.contains(word), "completion script lacks {word}");
    }
    let mut bash = Command::new("bash").arg("-n").stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut bash.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(bash.wait().unwrap().success(), "bash -n rejects the script");
}

#[test]
fn controller_commands_without_a_controller_say_what_to_do() {
    let out = faultline(&["agents", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --controller URL"));
    let out = faultline(&[
        "fault",
        "apply",
        "freeze",
        "--pid",
        "1",
        "--interface",
        "eth0",
        "--lease",
        "1s",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--interface is for network faults"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    // `faultline completions bash | head -1`: the reader goes away after one line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small scenario run directory: 14 s at 100/s, errors in the fault phase.
fn run_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("second,requests,errors,late,p50_ms,p90_ms,p95_ms,p99_ms,max_ms\n");
    for t in 0..14 {
        let errors = if (6..9).contains(&t) { 50 } else { 0 };
        std::fmt::Write::write_fmt(
            &mut csv,
            format_args!("{t},100,{errors},0,1.0,1.5,2.0,3.0,4.0\n"),
        )
        .unwrap();
    }
    std::fs::write(dir.join("seconds.csv"), csv).unwrap();
    let m = serde_json::json!({"requests": 500, "errors": 0, "rate": 100.0, "error_rate": 0.0, "p50_ms": 1.0, "p90_ms": 1.5, "p95_ms": 2.0, "p99_ms": 3.0});
    let summary = serde_json::json!({
        "scenario": "stub", "description": "", "aborted": null,
        "phases": [{"name": "warmup", "from_s": 0, "to_s": 1, "measured": m}, {"name": "baseline", "from_s": 1, "to_s": 6, "measured": m},
                   {"name": "fault", "from_s": 6, "to_s": 9, "measured": m}, {"name": "recovery", "from_s": 9, "to_s": 14, "measured": m}],
        "hypothesis": [], "faults": [{"index": 0, "fault": "drop on role=db", "id": "c-1", "agents": ["h1"], "applied_at_s": 6.0, "reverted_at_s": 9.0, "error": ""}],
    });
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    dir
}

#[test]
fn an_llm_summary_is_added_and_labelled_only_where_an_endpoint_is_configured() {
    use std::io::{BufRead, Read, Write};
    // A stand-in for an OpenAI-compatible server (no model is reachable from CI): it keeps
    // the request it got and answers one chat completion.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head += &line;
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let answer = r#"{"choices":[{"message":{"role":"assistant","content":"The drop on h1 made half the requests fail.\n\nCheck the <retry> budget."}}]}"#;
        write!(&stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len()).unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    let dir = run_dir("llm-report");
    let report = |env: &[(&str, String)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
        cmd.arg("report")
            .arg(&dir)
            .env_remove("FAULTLINE_LLM_URL")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(dir.join("report.html")).unwrap()
    };
    let html = report(&[
        ("FAULTLINE_LLM_URL", format!("http://127.0.0.1:{port}/v1")),
        ("FAULTLINE_LLM_MODEL", "test-model".into()),
        ("OPENAI_API_KEY", "k123".into()),
    ]);
    let (head, body) = server.join().unwrap();
    assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1"), "{head}");
    assert!(head.to_ascii_lowercase().contains("authorization: bearer k123"), "{head}");
    let req: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(req["model"], "test-model");
    assert!(req["messages"][1]["content"].as_str().unwrap().contains("drop on role=db"), "{req}");
    assert!(
        html.contains("Summary written by an LLM")
            && html.contains("test-model at http://127.0.0.1"),
        "labelled with who wrote it"
    );
    assert!(
        html.contains("half the requests fail.") && html.contains("&lt;retry&gt;"),
        "the text, escaped"
    );
    assert!(
        std::fs::read_to_string(dir.join("llm-summary.md"))
            .unwrap()
            .contains("half the requests fail")
    );

    // No endpoint: no section and nothing sent. An endpoint that is down: a note, no failure.
    std::fs::remove_file(dir.join("llm-summary.md")).unwrap();
    assert!(!report(&[]).contains("LLM"));
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let html = report(&[("OPENAI_BASE_URL", format!("http://127.0.0.1:{down}/v1"))]);
    assert!(
        html.contains("No LLM summary") && !dir.join("llm-summary.md").exists(),
        "a failing endpoint is said, not fatal"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 32: README's `faultline report runs/lab-*/` once there are two runs (and a
/// directory that is no run among them): each run gets its report, the bad one is named,
/// and the command fails for it.
#[test]
fn report_takes_several_runs_and_names_the_one_it_could_not_draw() {
    let (a, b) = (run_dir("several-a"), run_dir("several-b"));
    let report = |dirs: &[&std::path::Path]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
        cmd.arg("report")
            .args(dirs)
            .env_remove("FAULTLINE_LLM_URL")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY");
        cmd.output().unwrap()
    };
    let out = report(&[&a, &b]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(a.join("report.html").exists() && b.join("report.html").exists());
    let empty = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("several-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::remove_file(a.join("report.html")).unwrap();
    let out = report(&[&empty, &a]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&empty.display().to_string())
            && err.contains("1 of 2 runs"),
        "{err}"
    );
    assert!(
        a.join("report.html").exists(),
        "the good run was reported despite the bad one before it"
    );
    for d in [a, b, empty] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
