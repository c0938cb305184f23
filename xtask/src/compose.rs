//! The Compose platform (compose/): its images built with no registry reachable, `up`
//! until every service is healthy, a scenario run through the Web API (`demo --compose`),
//! the CI test, and `down` leaving Docker as it was.
//!
//! Images: the Dockerfiles build `FROM debian:bookworm-slim`. Where that image is neither
//! present nor pullable, it is made here: debootstrap (with what the images need, so no
//! `RUN` step installs anything: containers cannot reach the package mirrors on every
//! machine) and `docker import` under that name. faultline's and service-b's binaries are
//! built on the host, service-a's Python libraries installed on the host (`pip --target`),
//! and copied in.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{codegen::workspace_root, setup::run_cmd};

const FILE: &str = "compose/docker-compose.yml";
const BASE: &str = "debian:bookworm-slim";
/// What the base tree holds besides a minimal Debian: what the Dockerfiles would install
/// from the network (python3 for service-a, redis, Prometheus) and CA certificates.
const BASE_PACKAGES: &str = "python3,redis-server,prometheus,ca-certificates";
/// Services of the default profile: each must report healthy.
const SERVICES: &[&str] =
    &["faultline-controller", "faultline-agent", "service-a", "service-b", "redis", "prometheus"];

/// What Docker holds: compared before and after, so `down` can show it left nothing.
#[derive(PartialEq, Eq, Debug)]
struct DockerState {
    containers: BTreeSet<String>,
    networks: BTreeSet<String>,
    volumes: BTreeSet<String>,
    tags: BTreeSet<String>,
}

fn lines(args: &[&str]) -> Result<BTreeSet<String>> {
    let out =
        Command::new("docker").args(args).output().context("running docker (apt: docker.io)")?;
    ensure!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn docker_state() -> Result<DockerState> {
    Ok(DockerState {
        containers: lines(&["ps", "-aq", "--no-trunc"])?,
        networks: lines(&["network", "ls", "-q", "--no-trunc"])?,
        volumes: lines(&["volume", "ls", "-q"])?,
        tags: lines(&["images", "--format", "{{.Repository}}:{{.Tag}}"])?
            .into_iter()
            .filter(|t| !t.contains("<none>"))
            .collect(),
    })
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running platform: `docker compose -p PROJECT`, with the ports it publishes on the
/// host's loopback.
pub struct Platform {
    project: String,
    web_port: u16,
    prometheus_port: u16,
    before: DockerState,
    keep: bool,
    /// The operator token the controller made on first start (`/tls/web-tokens`): acting
    /// needs it, requests without it are viewers'.
    token: std::sync::OnceLock<String>,
}

/// `docker compose` (v2) where installed, else Debian's `docker-compose` 1.29, on FILE.
fn compose_cmd() -> Command {
    // Asked once: every compose call would otherwise start a `docker compose version`.
    static V2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let mut cmd = if *V2.get_or_init(|| docker_ok(&["compose", "version"])) {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    cmd.args(["-f", FILE]).current_dir(workspace_root());
    cmd
}

impl Platform {
    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = compose_cmd();
        cmd.args(["-p", &self.project]).args(args);
        cmd.env("FAULTLINE_WEB_PORT", self.web_port.to_string())
            .env("PROMETHEUS_PORT", self.prometheus_port.to_string());
        cmd
    }

    /// Builds the images and starts the default profile; returns once every service is
    /// healthy and the agent has registered.
    pub fn up(project: &str, web_port: u16, prometheus_port: u16, keep: bool) -> Result<Self> {
        let before = docker_state()?;
        let p = Self {
            project: project.into(),
            web_port,
            prometheus_port,
            before,
            keep,
            token: std::sync::OnceLock::new(),
        };
        ensure_base()?;
        stage()?;
        if let Err(e) = p.start() {
            // Nothing half-started is left behind either.
            let _ = p.compose(&["logs", "--tail", "30"]).status();
            let _ = p.down();
            return Err(e);
        }
        Ok(p)
    }

    fn start(&self) -> Result<()> {
        run_cmd(&mut self.compose(&["build"]))?;
        let started = Instant::now();
        run_cmd(&mut self.compose(&["up", "-d"]))?;
        self.wait_healthy()?;
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let agents = self.api("GET", "/api/agents", None)?;
            if agents.as_array().is_some_and(|a| {
                a.iter().any(|x| x["name"] == "faultline-agent" && x["healthy"] == true)
            }) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the agent did not register with the controller within 60 s: {agents}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        println!(
            "compose: {} services healthy and the agent registered {:.1} s after `up`",
            SERVICES.len(),
            started.elapsed().as_secs_f64()
        );
        println!(
            "compose: the Web API's operator token (acting needs it; without it a request only reads): {}",
            self.token()?
        );
        Ok(())
    }

    fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_mins(3);
        loop {
            let out = self.compose(&["ps", "-q"]).output()?;
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let mut states = Vec::new();
            for id in &ids {
                let o = Command::new("docker").args(["inspect", "-f", "{{index .Config.Labels \"com.docker.compose.service\"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id]).output()?;
                states.push(String::from_utf8_lossy(&o.stdout).trim().to_owned());
            }
            let healthy = |s: &str| states.iter().any(|x| x == &format!("{s} running healthy"));
            if SERVICES.iter().all(|s| healthy(s)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("compose: not every service healthy within 3 min: {states:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The operator token, read from the controller's volume as the README shows
    /// (`docker compose exec faultline-controller sed -n 's/^operator //p' /tls/web-tokens`).
    pub fn token(&self) -> Result<&str> {
        if let Some(t) = self.token.get() {
            return Ok(t);
        }
        let out = self
            .compose(&[
                "exec",
                "-T",
                "faultline-controller",
                "sed",
                "-n",
                "s/^operator //p",
                "/tls/web-tokens",
            ])
            .output()?;
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(
            out.status.success() && token.len() >= 24,
            "reading the operator token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(self.token.get_or_init(|| token))
    }

    /// A Web API call as an operator's script makes it: curl with the operator token (the
    /// platform answers requests without one as a viewer's).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, text) = self.http(
            method,
            &format!("http://127.0.0.1:{}{path}", self.web_port),
            body,
            Some(self.token()?),
        )?;
        ensure!((200..300).contains(&status), "{method} {path}: HTTP {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }

    fn http(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<(u16, String)> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-X", method, "-w", "\n%{http_code}", url]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
        }
        let out = cmd.output().context("running curl")?;
        ensure!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
    }

    /// A `PromQL` query against the platform's Prometheus, over `[start, end]` (unix seconds).
    fn prom_range(&self, query: &str, start: f64, end: f64) -> Result<Value> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-G",
                &format!("http://127.0.0.1:{}/api/v1/query_range", self.prometheus_port),
            ])
            .args([
                "--data-urlencode",
                &format!("query={query}"),
                "--data-urlencode",
                &format!("start={start}"),
                "--data-urlencode",
                &format!("end={end}"),
                "--data-urlencode",
                "step=2",
            ])
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("Prometheus: {}", String::from_utf8_lossy(&out.stdout)))?;
        ensure!(v["status"] == "success", "PromQL {query}: {v}");
        Ok(v["data"]["result"].clone())
    }

    /// Runs `scenario` through the Web API and copies its run directory into `into`.
    pub fn run_scenario(&self, scenario: &str, into: &Path) -> Result<(String, PathBuf)> {
        let run = self.api("POST", "/api/runs", Some(&json!({ "scenario": scenario })))?;
        let id = run["id"].as_str().context("POST /api/runs: no id")?.to_owned();
        println!("compose: run {id} started through the Web API");
        let deadline = Instant::now() + Duration::from_mins(5);
        let info = loop {
            let info = self.api("GET", &format!("/api/runs/{id}"), None)?;
            if info["state"] != "running" {
                break info;
            }
            ensure!(Instant::now() < deadline, "run {id} still running after 5 min");
            std::thread::sleep(Duration::from_secs(2));
        };
        let dir = into.join(&id);
        std::fs::create_dir_all(&dir)?;
        for name in info["files"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let out = Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "30", "-o"])
                .arg(dir.join(name))
                .arg(format!("http://127.0.0.1:{}/api/runs/{id}/files/{name}", self.web_port))
                .status()?;
            ensure!(out.success(), "downloading {name} of run {id}");
        }
        let state = info["state"].as_str().unwrap_or("").to_owned();
        println!(
            "compose: run {id}: {state} ({}); {}",
            info["message"].as_str().unwrap_or(""),
            dir.join("report.html").display()
        );
        Ok((state, dir))
    }

    /// `down`, volumes included, and the image tags made since `up` removed (unless kept);
    /// fails if Docker then holds anything it did not hold before.
    pub fn down(&self) -> Result<()> {
        if self.keep {
            // The command this machine has: Compose v2 (`docker compose`) or v1.
            let cmd = if docker_ok(&["compose", "version"]) {
                "docker compose"
            } else {
                "docker-compose"
            };
            println!(
                "compose: left up (--keep): `{cmd} -f {FILE} -p {} down -v` removes it",
                self.project
            );
            return Ok(());
        }
        run_cmd(&mut self.compose(&["down", "-v", "--remove-orphans"]))?;
        let now = docker_state()?;
        // The images built FROM the base before the base itself.
        let mut made: Vec<&String> = now.tags.difference(&self.before.tags).collect();
        made.reverse();
        for tag in &made {
            run_cmd(Command::new("docker").args(["rmi", tag.as_str()]).stdout(Stdio::null()))?;
        }
        let after = docker_state()?;
        ensure!(
            after == self.before,
            "compose: Docker does not hold what it held before `up`:\nbefore {:?}\nafter  {after:?}",
            self.before
        );
        println!(
            "compose: down; no container, network, volume or image tag left that was not there before"
        );
        Ok(())
    }
}

/// `debian:bookworm-slim`: present, pulled, or made here from a debootstrap tree (kept in
/// target/compose/base-bookworm, so only the first run on a machine downloads it).
fn ensure_base() -> Result<()> {
    if docker_ok(&["image", "inspect", BASE]) || docker_ok(&["pull", "-q", BASE]) {
        return Ok(());
    }
    let dir = workspace_root().join("target/compose/base-bookworm");
    let marker = dir.join(".faultline-base");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(BASE_PACKAGES) {
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_dir_all(&dir);
        println!("compose: no registry answers for {BASE}; debootstrap bookworm ({BASE_PACKAGES})");
        run_cmd(
            Command::new("debootstrap")
                .args(["--variant=minbase", &format!("--include={BASE_PACKAGES}"), "bookworm"])
                .arg(&tmp)
                .arg(crate::setup::debian_uri()?),
        )?;
        // What an image does not need: downloaded packages and the mirror's lists.
        for sub in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            for e in std::fs::read_dir(tmp.join(sub))?.flatten() {
                if e.file_type()?.is_file() {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
        std::fs::write(tmp.join(".faultline-base"), BASE_PACKAGES)?;
        std::fs::rename(&tmp, &dir)?;
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["--exclude=./.faultline-base", "-c", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let status = Command::new("docker")
        .args(["import", "--change", "CMD [\"bash\"]", "-", BASE])
        .stdin(tar.stdout.context("tar's output")?)
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "docker import {BASE} failed");
    println!("compose: {BASE} imported from {}", dir.display());
    Ok(())
}

/// Puts what the Dockerfiles copy into their `build/` directories: the release binaries
/// and service-a's Python libraries.
fn stage() -> Result<()> {
    let ws = workspace_root();
    crate::setup::build_release(&["demo-service-b"])?;
    let copy = |from: &str, to: &str| -> Result<()> {
        let to = ws.join(to);
        std::fs::create_dir_all(to.parent().context("a file in a directory")?)?;
        std::fs::copy(ws.join(from), &to).with_context(|| format!("{from} -> {}", to.display()))?;
        Ok(())
    };
    copy("target/release/faultline", "compose/images/faultline/build/faultline")?;
    copy("target/release/faultline-agent", "compose/images/faultline/build/faultline-agent")?;
    copy("target/release/demo-service-b", "compose/services/service-b/build/demo-service-b")?;
    let req = std::fs::read_to_string(ws.join("compose/services/service-a/requirements.txt"))?;
    let site = ws.join("compose/services/service-a/build/site");
    let marker = ws.join("compose/services/service-a/build/requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(req.as_str()) {
        let _ = std::fs::remove_dir_all(&site);
        // Wheels for Debian 12's Python (3.11), whatever Python the host runs.
        run_cmd(
            Command::new(ws.join(crate::setup::PY_VENV).join("bin/pip"))
                .args([
                    "install",
                    "-q",
                    "--no-compile",
                    "--only-binary=:all:",
                    "--python-version",
                    "3.11.2",
                    "--platform",
                    "manylinux2014_x86_64",
                    "--implementation",
                    "cp",
                    "--target",
                ])
                .arg(&site)
                .arg("-r")
                .arg(ws.join("compose/services/service-a/requirements.txt")),
        )?;
        std::fs::write(&marker, &req)?;
    }
    Ok(())
}

/// `cargo xtask compose-build`: the images, for `docker compose up` by hand.
pub fn build() -> Result<()> {
    let _docker = crate::docker::start()?;
    ensure_base()?;
    stage()?;
    run_cmd(compose_cmd().args(["-p", "faultline", "build"]))?;
    println!(
        "compose: images built; `cd compose && docker-compose -p faultline up -d` (or `docker compose`) starts the platform"
    );
    Ok(())
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `cargo xtask demo --compose`: up, the scenario of compose/scenario.yaml, the report
/// under runs/, down (unless `keep`).
pub fn demo(keep: bool) -> Result<()> {
    let docker = crate::docker::start()?;
    let p = Platform::up("faultline", 5050, 9090, keep)?;
    let scenario = std::fs::read_to_string(workspace_root().join("compose/scenario.yaml"))?;
    let ran = p.run_scenario(&scenario, &workspace_root().join("runs"));
    if keep {
        println!(
            "compose: console http://localhost:5050/ (sign in with the operator token {}), Prometheus http://localhost:9090/",
            p.token().unwrap_or("in /tls/web-tokens")
        );
    }
    let downed = p.down();
    // "Left up" means up: the engine this demo started keeps running with it.
    if keep {
        docker.keep_running();
    }
    ran?;
    downed
}

/// The CI test of the platform (issue 16): see the README's Compose section.
pub fn test() -> Result<()> {
    let started = Instant::now();
    let profile = compose_cmd().args(["--profile", "observability", "config", "-q"]).status()?;
    ensure!(profile.success(), "the observability profile's compose config does not validate");
    let p = Platform::up("faultline-ci", 15050, 19090, false)?;
    let checked = check(&p);
    if checked.is_err() {
        let _ = p.compose(&["logs", "--tail", "40"]).status();
    }
    let downed = p.down();
    checked?;
    downed?;
    println!("compose test: passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Issue 30: without the token a local user only reads (every write refused, as user
/// nobody), and with it the agent still acts only in the platform's containers: a host
/// process is refused.
fn check_closed(p: &Platform) -> Result<()> {
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", p.web_port);
    let anyone = |method: &str, path: &str, body: Option<&Value>| -> Result<u16> {
        let mut cmd = Command::new("runuser");
        cmd.args([
            "-u",
            "nobody",
            "--",
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "30",
            "-X",
            method,
            "-w",
            "%{http_code}",
            &url(path),
        ]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
        }
        let out = cmd.output().context("runuser (util-linux)")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
    };
    ensure!(anyone("GET", "/api/agents", None)? == 200, "a viewer without a token cannot read");
    for (method, path, body) in [
        (
            "POST",
            "/api/faults",
            Some(json!({"kind": "freeze", "lease": "10s", "settings": {"container": "service-b"}})),
        ),
        (
            "POST",
            "/api/traffic/start",
            Some(
                json!({"targetUrl": "http://service-a/api/message-a", "rps": 1, "durationSeconds": 1}),
            ),
        ),
        ("POST", "/api/runs", Some(json!({"scenario": "name: x"}))),
        ("DELETE", "/api/faults", None),
    ] {
        let code = anyone(method, path, body.as_ref())?;
        ensure!(code == 401 || code == 403, "{method} {path} without the token: HTTP {code}");
    }
    let mut sleeper = Command::new("sleep").arg("60").spawn()?;
    let refused = p.http(
        "POST",
        &url("/api/faults"),
        Some(&json!({"kind": "freeze", "lease": "5s", "settings": {"pid": sleeper.id()}, "all": true})),
        Some(p.token()?),
    );
    let frozen = std::fs::read_to_string(format!("/proc/{}/stat", sleeper.id()))
        .unwrap_or_default()
        .contains(") T ");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let (code, text) = refused?;
    ensure!(
        !(200..300).contains(&code) && text.contains("scope-label") && !frozen,
        "a host process was not refused by the scoped agent: HTTP {code} {text}"
    );
    println!(
        "compose: without the token every write is refused; with it, a host process is refused (HTTP {code})"
    );
    Ok(())
}

fn check(p: &Platform) -> Result<()> {
    check_closed(p)?;
    // Seed-style: the traffic call exactly as the platform's users write it.
    let t0 = unix_now();
    let traffic = p.api("POST", "/api/traffic/start", Some(&json!({"targetUrl": "http://service-a/api/message-a", "rps": 20, "durationSeconds": 300})))?;
    ensure!(traffic["running"] == true, "traffic did not start: {traffic}");
    std::thread::sleep(Duration::from_secs(12));
    // service-b frozen for 10 s, through the Web API, named by its compose service.
    let applied = p.api(
        "POST",
        "/api/faults",
        Some(&json!({"kind": "freeze", "lease": "10s", "settings": {"container": "service-b"}})),
    )?;
    let (f0, f1) = (unix_now(), unix_now() + 10.0);
    println!("compose: {} applied: {}", applied["id"], applied["container"]);
    std::thread::sleep(Duration::from_secs(12));
    let faults = p.api("GET", "/api/faults", None)?;
    ensure!(
        faults.as_array().is_some_and(Vec::is_empty),
        "the fault outlived its 10 s lease: {faults}"
    );
    std::thread::sleep(Duration::from_secs(14));
    let t1 = unix_now();

    // The run's own figures: errors while service-b was frozen, none in the last 8 s.
    let status = p.api("GET", "/api/traffic", None)?;
    let started = status["started_unix_ms"].as_f64().context("traffic: started_unix_ms")? / 1000.0;
    let seconds = status["seconds"].as_array().context("traffic: seconds")?;
    let errors_between = |from: f64, to: f64| -> u64 {
        seconds
            .iter()
            .filter(|s| (from..to).contains(&(started + s["second"].as_f64().unwrap_or(-1.0))))
            .map(|s| s["errors"].as_u64().unwrap_or(0))
            .sum()
    };
    let (during, before, after) = (
        errors_between(f0 + 2.0, f1 - 1.0),
        errors_between(t0 + 3.0, f0 - 1.0),
        errors_between(t1 - 8.0, t1 - 1.0),
    );
    println!(
        "compose: the load's errors: {before} in the baseline, {during} while service-b was frozen, {after} in the last 8 s"
    );
    ensure!(
        during >= 50 && before == 0 && after == 0,
        "the freeze's effect is not in the load's figures: {before} / {during} / {after} errors"
    );
    p.api("POST", "/api/traffic/stop", Some(&json!({})))?;

    // Prometheus saw it too: service-a's 5xx rate and p99 rose while the fault was active.
    let max_in = |v: &Value, from: f64, to: f64| -> f64 {
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter(|x| (from..=to).contains(&x[0].as_f64().unwrap_or(0.0)))
            .filter_map(|x| x[1].as_str()?.parse::<f64>().ok())
            .filter(|x| x.is_finite())
            .fold(0.0, f64::max)
    };
    let errors = p.prom_range(r#"sum(rate(http_server_request_duration_seconds_count{job="service-a", http_response_status_code=~"5.."}[6s]))"#, t0, t1)?;
    let p99 = p.prom_range(r#"histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="service-a"}[6s])))"#, t0, t1)?;
    let active = p.prom_range(r#"sum(faultline_fault_active{kind="freeze"})"#, t0, t1)?;
    let (e_during, e_after) = (max_in(&errors, f0 + 3.0, f1), max_in(&errors, t1 - 6.0, t1));
    let (l_before, l_during, l_after) =
        (max_in(&p99, t0 + 8.0, f0 - 1.0), max_in(&p99, f0 + 3.0, f1), max_in(&p99, t1 - 6.0, t1));
    println!(
        "compose: Prometheus: service-a 5xx/s {e_during:.1} during, {e_after:.1} after; p99 {l_before:.3} s before, {l_during:.3} s during, {l_after:.3} s after; freeze active {}",
        max_in(&active, f0, f1)
    );
    ensure!(
        e_during > 1.0 && e_after == 0.0,
        "service-a's 5xx in Prometheus did not rise and fall with the fault"
    );
    ensure!(
        l_during > 0.5 && l_during > 5.0 * l_after.max(l_before),
        "service-a's p99 in Prometheus did not rise with the fault"
    );
    ensure!(max_in(&active, f0, f1) == 1.0, "faultline_fault_active did not show the freeze");

    // Every PromQL expression of every provisioned dashboard parses and returns data.
    let dir = workspace_root().join("compose/observability/grafana/dashboards");
    let mut n = 0;
    for file in std::fs::read_dir(&dir)? {
        let path = file?.path();
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| path.display().to_string())?;
        let mut exprs = Vec::new();
        collect_exprs(&dash, &mut exprs);
        for e in exprs {
            let q = e
                .replace("$__rate_interval", "10s")
                .replace("$__interval", "2s")
                .replace("$__range", "5m");
            let got =
                p.prom_range(&q, t0, t1).with_context(|| format!("{}: {e}", path.display()))?;
            ensure!(
                got.as_array().is_some_and(|a| !a.is_empty()),
                "{}: no data for {e}",
                path.display()
            );
            n += 1;
        }
    }
    println!("compose: {n} dashboard expressions parse and return data");

    // The scenario of `demo --compose`, run through the Web API, with its report.
    let scenario = std::fs::read_to_string(workspace_root().join("compose/scenario.yaml"))?;
    let (state, dir) = p.run_scenario(&scenario, &workspace_root().join("target/artifacts"))?;
    ensure!(state == "passed", "the compose scenario ended {state}; see {}", dir.display());
    ensure!(dir.join("report.html").exists(), "no report.html in {}", dir.display());
    let faults = p.api("GET", "/api/faults", None)?;
    ensure!(faults.as_array().is_some_and(Vec::is_empty), "faults left after the run: {faults}");
    Ok(())
}

/// Every `expr` string in a dashboard (panels' targets and annotations).
fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}
