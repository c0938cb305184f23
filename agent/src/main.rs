//! `faultline-agent --listen ADDR --state-dir DIR`

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use faultline_agent::{
    engine::Engine,
    metrics::{self, Host},
    server::Service,
};
use faultline_proto::{agent::v1::agent_service_server::AgentServiceServer, transport::Security};
use tracing::info;

#[derive(Parser)]
#[command(version, about = "faultline node agent: injects and reverts faults on this host")]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// ca.pem, agent.pem and agent-key.pem: callers must present a certificate from
    /// this CA (`faultline certs init DIR` makes a lab set).
    #[arg(long, env = "FAULTLINE_TLS_DIR", default_value = faultline_proto::transport::DEFAULT_TLS_DIR)]
    tls_dir: PathBuf,
    /// Serve and call in plaintext, without TLS: refused unless --listen and
    /// --controller are loopback addresses.
    #[arg(long)]
    insecure: bool,
    /// Where the journal of kernel changes lives; must survive agent restarts.
    #[arg(long, default_value = "/var/lib/faultline")]
    state_dir: PathBuf,
    /// Serve Prometheus metrics at <http://ADDR/metrics> (off unless given).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Do not serve the local socket: by default root on this host (holding `CAP_NET_ADMIN`
    /// and `CAP_SYS_ADMIN`) reaches the agent without TLS at the abstract socket
    /// `@faultline/agent:PORT` of its network namespace, PORT from --listen; the CLI uses
    /// it when run as root without --agent, or with --agent local[:PORT].
    #[arg(long)]
    no_local_socket: bool,
    /// Do not load the eBPF tracepoint programs behind the kernel metrics.
    #[arg(long)]
    no_kernel_metrics: bool,
    /// Attach the drop/partition classifier at start to up to this many of the host's
    /// interfaces that are up and hold an address (not lo), so the first such fault there
    /// does not wait ~15 ms for the kernel's attach; it passes every packet until a fault
    /// uses it (~0.1 µs each). TCX kernels (>= 6.6) only; 0: attach on a fault's first use.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(0..=256))]
    attach_ahead: u16,
    /// Export metrics over OTLP/gRPC to this collector, e.g. <http://collector:4317>.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Register with this controller and keep a session open, e.g. <https://10.0.0.1:7080>.
    #[arg(long, env = "FAULTLINE_CONTROLLER")]
    controller: Option<String>,
    /// This agent's name at the controller (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// Enrol with --controller before serving (a Kubernetes node's agent): prove the node
    /// with the pod's projected service-account token in this file (audience `faultline`)
    /// and get a certificate bound to the node's name, which becomes the agent's name. The
    /// TLS directory then holds only ca.pem and the shared bootstrap agent.pem, which names
    /// no agent.
    #[arg(long, env = "FAULTLINE_ENROLL_TOKEN_FILE", value_name = "FILE")]
    enroll_token_file: Option<PathBuf>,
    /// A label the controller can select this agent by, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = label)]
    labels: Vec<(String, String)>,
    /// The URL the controller reaches this agent at (default: <https://LISTEN>).
    #[arg(long)]
    advertise: Option<String>,
    /// How often metrics are exported over OTLP, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    otlp_interval_ms: u64,
    /// Undo whatever the journal in --state-dir records, then exit: for systemd's
    /// `ExecStopPost`, after an agent that was killed before it could revert.
    #[arg(long)]
    cleanup: bool,
    /// Process faults reach only processes in the agent's own network namespace, and
    /// the kernel metrics count only TCP whose local address is the namespace's: for
    /// labs whose hosts are network namespaces of one kernel (`faultline lab`).
    #[arg(long)]
    same_netns_only: bool,
    /// Let `restart` run a command the caller gives (as the target's user). Without it a
    /// restart starts the killed process again exactly as it ran, or restarts its unit:
    /// any operator certificate could otherwise run anything as root here.
    #[arg(long)]
    allow_restart_command: bool,
    /// Print what this host supports (kernel features, eBPF, tracepoints, cgroups,
    /// capabilities, container runtimes; per fault kind) with what to do where something
    /// is missing, then exit. The same probes the running agent reports to the controller.
    #[arg(long)]
    doctor: bool,
    /// With --doctor: JSON instead of text.
    #[arg(long, requires = "doctor")]
    json: bool,
    /// The Docker Engine API socket containers are found through (Podman's
    /// Docker-compatible socket works too). Default: the first of
    /// /var/run/docker.sock, /run/docker.sock, /run/podman/podman.sock that exists.
    #[arg(long, env = "FAULTLINE_DOCKER_SOCKET")]
    docker_socket: Option<PathBuf>,
    /// containerd's API socket, asked after Docker's (every namespace but Docker's own
    /// `moby`; `k8s.io` holds a Kubernetes node's pods). Default: the first of
    /// /run/containerd/containerd.sock, /run/k3s/containerd/containerd.sock,
    /// /var/run/docker/containerd/containerd.sock that exists.
    #[arg(long, env = "FAULTLINE_CONTAINERD_SOCKET")]
    containerd_socket: Option<PathBuf>,
    /// The CRI runtime's socket a Kubernetes node's pods are found through (containerd's
    /// CRI plugin, CRI-O). Default: the first of /run/containerd/containerd.sock,
    /// /run/k3s/containerd/containerd.sock, /var/run/crio/crio.sock, /run/crio/crio.sock
    /// whose runtime answers CRI.
    #[arg(long, env = "FAULTLINE_CRI_SOCKET")]
    cri_socket: Option<PathBuf>,
    /// Act only in containers carrying this label (KEY=VALUE, repeatable: every one must
    /// match), never on the host's own interfaces or processes: e.g.
    /// `com.docker.compose.project=faultline` for an agent that serves one Compose project.
    #[arg(long = "scope-label", value_name = "KEY=VALUE")]
    scope_labels: Vec<String>,
}

/// The addresses `url`'s host resolves to (none if it does not).
async fn controller_addresses(url: &str) -> Vec<std::net::IpAddr> {
    let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() else { return Vec::new() };
    let Some(host) = uri.host() else { return Vec::new() };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse() {
        return vec![ip];
    }
    tokio::net::lookup_host((host, uri.port_u16().unwrap_or(443)))
        .await
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default()
}

fn label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn main() -> Result<()> {
    // The agent re-executes itself as a stress worker for cpu_stress and memory_pressure.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__stress") {
        faultline_agent::process::run_stress(&argv[2..]);
    }
    serve()
}

#[tokio::main]
#[expect(
    clippy::too_many_lines,
    reason = "the agent's start-up, in the order it must happen, read top to bottom"
)]
async fn serve() -> Result<()> {
    let args = Args::parse();
    let logs = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
    );
    if args.doctor {
        // stdout carries the report (JSON with --json): logs go elsewhere.
        logs.with_writer(std::io::stderr).init();
    } else {
        logs.init();
    }
    if !args.doctor {
        faultline_proto::listener::raise_descriptor_limit_and_log();
    }
    if args.doctor {
        // Loads the programs as the agent would (and unloads them on exit): a probe that
        // only read files could say yes where the agent then fails.
        let (_, _, caps) = faultline_agent::engine::load_programs(!args.no_kernel_metrics);
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kernel = faultline_agent::kernel::caps::release();
        if args.json {
            println!("{}", faultline_proto::doctor::json(&host, &kernel, &caps.probes));
        } else {
            print!("{}", faultline_proto::doctor::render(&host, &kernel, &caps.probes));
        }
        return Ok(());
    }
    // The unit's LimitNOFILE is the hard limit; take all of it (connections are capped far
    // below it, and the undo path keeps a reserve).
    if let Err(e) = faultline_agent::kernel::fds::raise_limit() {
        tracing::warn!("raising the descriptor limit: {e}");
    }
    if args.cleanup {
        let (conn, nl, _) = rtnetlink::new_connection().context("opening rtnetlink socket")?;
        tokio::spawn(conn);
        let undone = Engine::cleanup(&args.state_dir, nl).await.context("cleaning up")?;
        info!(undone, state_dir = %args.state_dir.display(), "cleanup done");
        return Ok(());
    }
    // Checked before any kernel state is touched: a refused setup changes nothing.
    let (name, security) = if let Some(token) = &args.enroll_token_file {
        enroll(&args, token).await?
    } else {
        let name = args.name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
        });
        let security = Security::for_agent(args.insecure, &args.tls_dir, &name)?;
        (name, security)
    };
    let mut server = security.server(args.listen)?;
    if args.allow_restart_command {
        faultline_agent::process::allow_restart_command();
    }
    if args.same_netns_only {
        faultline_agent::process::scope_to_own_netns().context("--same-netns-only")?;
    }
    if let Some(url) = &args.controller {
        security.endpoint("--controller", url, faultline_proto::transport::CONTROLLER_NAME)?;
    }
    let (conn, nl, _) = rtnetlink::new_connection().context("opening rtnetlink socket")?;
    tokio::spawn(conn);
    let scope = faultline_agent::containers::parse_labels("--scope-label", &args.scope_labels)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !scope.is_empty() {
        info!(scope = ?args.scope_labels, "scoped: only containers with these labels; the host's interfaces and processes are refused");
    }
    let runtimes = faultline_agent::containers::Runtimes::new(
        args.docker_socket.clone(),
        args.containerd_socket.clone(),
    )
    .with_cri_socket(args.cri_socket.clone())
    .scoped(scope);
    let engine = Arc::new(
        Engine::start(&args.state_dir, nl, !args.no_kernel_metrics, runtimes)
            .await
            .context("starting the fault engine")?,
    );
    let host = Arc::new(Host::new());
    if let Some(url) = &args.controller {
        if args.listen.ip().is_unspecified() && args.advertise.is_none() {
            anyhow::bail!(
                "--advertise: required with --controller when --listen is {} (the controller needs an address it can reach)",
                args.listen
            );
        }
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
            .with_context(|| {
                format!("--controller {url}: give the port, e.g. https://10.0.0.1:7080")
            })?;
        // The session with the controller is control traffic: no fault may cut it.
        engine.exclude_control_port(port).await?;
        let me = faultline_agent::session::Registration {
            controller: url.clone(),
            name,
            url: args
                .advertise
                .clone()
                .unwrap_or_else(|| format!("{}://{}", security.scheme(), args.listen)),
            labels: args.labels.iter().cloned().collect(),
            security: security.clone(),
        };
        tokio::spawn(me.keep());
    }
    let _otlp = match &args.otlp_endpoint {
        Some(endpoint) => {
            info!(endpoint, "exporting metrics over OTLP");
            Some(faultline_agent::otlp::start(
                endpoint,
                Duration::from_millis(args.otlp_interval_ms),
                engine.clone(),
                host.clone(),
            )?)
        }
        None => None,
    };
    if let Some(addr) = args.metrics_listen {
        // Bounded like every port: strangers' idle connections cannot take the descriptors
        // the agent needs to revert.
        let listener = faultline_proto::listener::bind_metrics(addr)
            .await
            .with_context(|| format!("binding --metrics-listen {addr}"))?;
        let (engine, host) = (engine.clone(), host.clone());
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(async move || {
                let text = metrics::prometheus(&metrics::sample(&engine, &host).await);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }),
        );
        info!(%addr, "serving Prometheus metrics at /metrics");
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    engine.exclude_control_port(args.listen.port()).await?;

    // A classifier loaded ahead, so a fault's first apply in a container does not wait
    // for the verifier.
    tokio::spawn(engine.clone().keep_spares());
    tokio::spawn(engine.clone().attach_ahead(usize::from(args.attach_ahead)));
    tokio::spawn(engine.clone().keep_owners());

    // Leases end on time: sleep until exactly the next deadline (woken early when a
    // fault is applied or renewed), not a polling tick that adds up to its period.
    let leases = engine.clone();
    tokio::spawn(async move {
        loop {
            let next = leases.next_deadline().await;
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = leases.wake.notified() => {}
            }
            leases.expire().await;
        }
    });

    let (health_service, reflection) =
        faultline_proto::service::health_and_reflection::<AgentServiceServer<Service>>()
            .await
            .context("building reflection service")?;

    // Bounded: a stranger's idle connections cannot take the descriptors the agent needs
    // to revert; the controller's address is never refused for the total.
    let mut limits = faultline_proto::listener::Limits::agent().within(50);
    if let Some(url) = &args.controller {
        limits.privileged = controller_addresses(url).await;
    }
    let incoming = security
        .incoming(args.listen, limits)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // The local socket is a convenience beside the TCP listener: one already bound (by an
    // agent on the same port at another address, or by a squatter, whom the CLI refuses
    // since it is not root) leaves the agent serving TCP only, and says so.
    let local = if args.no_local_socket {
        None
    } else {
        match faultline_proto::listener::bind_local(
            args.listen.port(),
            &faultline_proto::listener::Limits::local(),
        ) {
            Ok(incoming) => Some(incoming),
            Err(e) => {
                tracing::warn!(
                    "local socket @{}: {e}; serving TCP only",
                    faultline_proto::listener::local_name(args.listen.port())
                );
                None
            }
        }
    };
    info!(listen = %args.listen, local = local.is_some().then(|| faultline_proto::listener::local_name(args.listen.port())), state_dir = %args.state_dir.display(), tls = security.is_tls(), "agent ready");
    let shutdown_engine = engine.clone();
    let local_server =
        faultline_proto::transport::plain_server().add_service(AgentServiceServer::new(Service {
            engine: engine.clone(),
            host: host.clone(),
            tls: false,
        }));
    let server = server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(AgentServiceServer::new(Service { engine, host, tls: security.is_tls() }));
    // A clean stop leaves nothing behind: faults are reverted as soon as the signal comes.
    // Boxed: the two servers' state is a large future to keep on the stack.
    Box::pin(faultline_proto::service::serve_until_stopped(
        |stopping| async move {
            // Both servers stop on the one signal (or when the TCP server ends, which
            // drops the sender).
            let (stop, mut stopped) = tokio::sync::watch::channel(());
            let tcp = server.serve_with_incoming_shutdown(incoming, async move {
                stopping.await;
                let _ = stop.send(());
            });
            let local = async move {
                match local {
                    Some(incoming) => {
                        local_server
                            .serve_with_incoming_shutdown(incoming, async move {
                                let _ = stopped.changed().await;
                            })
                            .await
                    }
                    None => Ok(()),
                }
            };
            let (tcp, local) = tokio::join!(tcp, local);
            tcp.and(local)
        },
        async {
            let reverted = shutdown_engine.revert_all().await;
            info!(?reverted, "stopping");
        },
    ))
    .await?;
    // A fault applied while the server drained is reverted too.
    let reverted = shutdown_engine.revert_all().await;
    info!(?reverted, "stopped");
    Ok(())
}

/// `--enroll-token-file`: what a previous agent left is reverted first (the controller may
/// be away for a while, and a crash must not leave faults behind until it answers), then
/// the agent waits for its certificate.
async fn enroll(args: &Args, token: &std::path::Path) -> Result<(String, Security)> {
    let Some(url) = &args.controller else {
        anyhow::bail!("--enroll-token-file: needs --controller (the controller enrols agents)");
    };
    anyhow::ensure!(
        !args.insecure,
        "--enroll-token-file: enrolment is over mutual TLS, not --insecure"
    );
    let bootstrap = Security::load(&args.tls_dir, faultline_proto::transport::Role::Agent)?;
    let (conn, nl, _) = rtnetlink::new_connection().context("opening rtnetlink socket")?;
    tokio::spawn(conn);
    let undone = Engine::cleanup(&args.state_dir, nl).await.context("cleaning up")?;
    if undone > 0 {
        info!(undone, "reverted what a previous agent left, before enrolling");
    }
    let (name, security) = faultline_agent::session::enroll(url, &bootstrap, token)
        .await
        .map_err(anyhow::Error::msg)?;
    if let Some(n) = &args.name
        && *n != name
    {
        anyhow::bail!("--name {n}: the controller enrolled this agent as {name} (its node's name)");
    }
    Ok((name, security))
}
