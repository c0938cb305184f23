//! A daemon's life under a service manager: readiness and stopping told to systemd
//! (`sd_notify`), and a stop that undoes faults before it waits for anything.

use std::time::Duration;

/// Tells systemd (`Type=notify`) about the service's state, e.g. "READY=1": one datagram
/// to $`NOTIFY_SOCKET`. Without a service manager (no variable) it does nothing.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket, as systemd names it with a leading '@'.
            let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("sd_notify {state:?}: {e}");
    }
}

/// How long open streams (a metrics watch, an event follow) may hold a stopping server.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Serves until SIGTERM or Ctrl-C, then runs `on_stop` at once, then lets the server
/// drain for at most [`DRAIN`]. `serve` gets the future its graceful shutdown waits on.
/// `on_stop` runs before the drain because a client's open stream must not keep faults
/// in the kernel (nor make systemd escalate to SIGKILL before they are reverted).
pub async fn serve_until_stopped<S, E>(
    serve: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> S,
    on_stop: impl Future<Output = ()>,
) -> Result<(), E>
where
    S: Future<Output = Result<(), E>>,
{
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = serve(Box::pin(async {
        let _ = stopped.await;
    }));
    tokio::pin!(server);
    notify("READY=1");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        r = &mut server => return r,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    notify("STOPPING=1");
    on_stop.await;
    let _ = stopping.send(());
    if let Ok(r) = tokio::time::timeout(DRAIN, server).await {
        r
    } else {
        tracing::info!("streams still open after {DRAIN:?}: closing them");
        Ok(())
    }
}

/// The health service (reporting `S` as serving) and the reflection service that every
/// daemon offers beside its own.
pub async fn health_and_reflection<S: tonic::server::NamedService>() -> Result<
    (
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let (health, service) = tonic_health::server::health_reporter();
    health.set_serving::<S>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok((service, reflection))
}
