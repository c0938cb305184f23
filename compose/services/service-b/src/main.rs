//! service-b of the Compose platform's demo system: `POST /api/message-b` answers with a
//! small JSON document after a little work. Instrumented with the OpenTelemetry Rust SDK:
//! a span per request (continuing service-a's trace from `traceparent`) and the semantic
//! conventions' `http.server.request.duration` histogram, exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector, and always on `GET /metrics` for
//! Prometheus. `service.name` and further resource attributes come from `OTEL_SERVICE_NAME`
//! and `OTEL_RESOURCE_ATTRIBUTES`, as every OpenTelemetry SDK reads them.

use std::{collections::HashMap, time::Instant};

use anyhow::{Context, Result};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use opentelemetry::{
    KeyValue, global,
    metrics::Histogram,
    propagation::Extractor,
    trace::{Span, SpanKind, Status, Tracer},
};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};

#[derive(Clone)]
struct App {
    registry: prometheus::Registry,
    duration: Histogram<f64>,
}

/// W3C trace context from the request's headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

fn resource() -> Resource {
    // Docker sets the hostname to the container's short id.
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_owned();
    Resource::builder().with_attributes([KeyValue::new("container.id", host)]).build()
}

/// Whether the OTLP collector's name resolves: compose names only running containers, and
/// the collector runs only with the `observability` profile.
async fn collector_runs(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<axum::http::Uri>() else { return false };
    let (Some(host), port) = (uri.host(), uri.port_u16().unwrap_or(4317)) else { return false };
    for _ in 0..10 {
        if tokio::net::lookup_host((host, port)).await.is_ok_and(|mut a| a.next().is_some()) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    false
}

async fn telemetry() -> Result<(SdkMeterProvider, Option<SdkTracerProvider>, prometheus::Registry)>
{
    let registry = prometheus::Registry::new();
    let prom = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .context("prometheus exporter")?;
    let mut meters = SdkMeterProvider::builder().with_resource(resource()).with_reader(prom);
    let mut tracer = None;
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default();
    let otlp = !endpoint.is_empty() && collector_runs(&endpoint).await;
    if !endpoint.is_empty() && !otlp {
        println!("no collector at {endpoint}: metrics on /metrics only, no traces exported");
    }
    if otlp {
        // The exporters read the endpoint from the environment.
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .context("OTLP metric exporter")?;
        meters = meters.with_periodic_exporter(metrics);
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .context("OTLP span exporter")?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_batch_exporter(spans)
            .build();
        global::set_tracer_provider(provider.clone());
        tracer = Some(provider);
    }
    let meters = meters.build();
    global::set_meter_provider(meters.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    Ok((meters, tracer, registry))
}

async fn message(
    State(app): State<App>,
    headers: HeaderMap,
    body: Option<Json<serde_json::Value>>,
) -> impl IntoResponse {
    let start = Instant::now();
    let parent = global::get_text_map_propagator(|p| p.extract(&Headers(&headers)));
    let mut span = global::tracer("service-b")
        .span_builder("POST /api/message-b")
        .with_kind(SpanKind::Server)
        .start_with_context(&global::tracer("service-b"), &parent);
    // A little work, as a real handler would do: hash the message a few thousand times.
    let text = body
        .as_ref()
        .and_then(|b| b.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_owned();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..2000 {
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h = h.rotate_left(5);
    }
    span.set_attribute(KeyValue::new("http.response.status_code", 200));
    span.set_status(Status::Ok);
    span.end();
    record(&app, "/api/message-b", 200, start);
    Json(
        serde_json::json!({"service": "service-b", "received": text, "digest": format!("{h:016x}")}),
    )
}

fn record(app: &App, route: &'static str, status: u16, start: Instant) {
    app.duration.record(
        start.elapsed().as_secs_f64(),
        &[
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&app.registry.gather(), &mut out) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let (meters, tracer, registry) = telemetry().await?;
    // The semantic conventions' buckets for request durations (the SDK's default ones are
    // meant for milliseconds), with two below 5 ms: this service answers in well under one.
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0,
    ];
    let duration = global::meter("service-b")
        .f64_histogram("http.server.request.duration")
        .with_unit("s")
        .with_description("Duration of HTTP server requests")
        .with_boundaries(buckets)
        .build();
    let app = App { registry, duration };
    let router = Router::new()
        .route("/api/message-b", post(message))
        .route("/health", get(|| async { Json(HashMap::from([("status", "ok")])) }))
        .route("/metrics", get(metrics))
        .with_state(app);
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:80".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("service-b listening on {listen}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        })
        .await?;
    if let Some(t) = tracer {
        let _ = t.shutdown();
    }
    let _ = meters.shutdown();
    Ok(())
}
