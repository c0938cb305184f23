//! The Web API's operations, each with its OpenAPI description (utoipa): the same calls
//! the CLI makes through a controller.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode},
    response::sse::{Event, KeepAlive, Sse},
};
use faultline_proto::controller::v1 as pb;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    ApiError, Body, ErrorBody, MAX_BODY, Query, Web,
    auth::{Operator, Reader},
    views::{
        AgentView, ApplyRequest, ContainerList, EventView, FaultKindView, FaultView, Health, Mode,
        PartitionRequest, PodList, PreviewView, ProbeCheck, ProbeView, RenewRequest, Rest,
        RevertView, RunLink, RunStart, RunView, SettingValue, Shape, TrafficStart, TrafficView,
    },
};
use crate::faults::Setting;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "faultline controller",
        description = "Faults across a fleet of faultline agents: list agents and their containers, apply, list and revert faults, cut partitions, send traffic to the system under test, follow events. Every call but /api/health needs `Authorization: Bearer TOKEN` (a token from the controller's web_token_file: viewers read, operators also change faults and traffic) or, over HTTPS, a client certificate from the controller's CA carrying the operator or viewer role."
    ),
    modifiers(&BearerAuth),
    tags((name = "agents"), (name = "faults"), (name = "traffic"), (name = "probes"), (name = "runs"), (name = "events"), (name = "health"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from the controller's web_token_file"))
                    .build(),
            ),
        );
    }
}

/// Every operation with its description.
fn operations() -> OpenApiRouter<Arc<Web>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(agents))
        .routes(routes!(containers))
        .routes(routes!(pods))
        .routes(routes!(fault_kinds))
        .routes(routes!(faults, apply, revert_all))
        .routes(routes!(preview))
        .routes(routes!(revert_one))
        .routes(routes!(renew))
        .routes(routes!(partition))
        .routes(routes!(events))
        .routes(routes!(event_stream))
        .routes(routes!(traffic))
        .routes(routes!(traffic_start))
        .routes(routes!(traffic_stop))
        .routes(routes!(probe_check))
        .routes(routes!(runs, run_start))
        .routes(routes!(run))
        .routes(routes!(run_stop))
        .routes(routes!(run_file))
        .routes(routes!(run_link))
        .routes(routes!(run_file_by_link))
}

/// Every route, its OpenAPI description at /api/openapi.json and Swagger UI at /api/docs
/// (its assets compiled in: nothing is fetched from the internet).
pub fn router(web: Arc<Web>) -> Router {
    let guard = web.clone();
    let (router, api) = operations().with_state(web).split_for_parts();
    router
        // Swagger UI would otherwise send the description's URL to validator.swagger.io
        // for its badge: nothing leaves the machine.
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/api/docs")
                .url("/api/openapi.json", api)
                .config(utoipa_swagger_ui::Config::default().validator_url("none")),
        )
        .merge(super::console::router())
        .fallback(async || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such path; the API is described at /api/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(within_deadline))
        .layer(axum::middleware::from_fn_with_state(guard, from_here))
}

/// Refuses, before any handler, a Host that is not this controller's (DNS rebinding: 421)
/// and a change requested by a page of another origin (403).
async fn from_here(
    State(web): State<Arc<Web>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Err(refused) = check_from_here(&web, req.method(), req.headers()) {
        return refused.into_response();
    }
    next.run(req).await
}

fn check_from_here(
    web: &Web,
    method: &axum::http::Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let header = |name: axum::http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header(axum::http::header::HOST);
    if !super::auth::host_allowed(host, &web.hosts) {
        let message = format!(
            "Host: {} is not a name this controller answers to (IP addresses, localhost, and the names in its web_hosts setting are)",
            host.unwrap_or_default()
        );
        return Err(ApiError::new(StatusCode::MISDIRECTED_REQUEST, "misdirected_request", message));
    }
    let changes = !matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes
        && !super::auth::origin_allowed(
            header(axum::http::header::ORIGIN),
            header(axum::http::HeaderName::from_static("sec-fetch-site")),
            host,
        )
    {
        let message = format!(
            "Origin: a page at {} may not change this controller (only its own console may)",
            header(axum::http::header::ORIGIN).unwrap_or("another site")
        );
        return Err(ApiError::forbidden(message));
    }
    Ok(())
}

/// How long a request may take to arrive and be answered (a stream's body goes on after):
/// a body sent a byte at a time holds its connection no longer than this.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

async fn within_deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(r) => r,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request did not arrive and get its answer within 30 s",
        )),
    }
}

/// Whether the controller serves (no credentials needed: a health check's).
#[utoipa::path(get, path = "/api/health", tag = "health", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Every agent the controller knows, with its health and what it can do.
#[utoipa::path(get, path = "/api/agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = Vec<AgentView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn agents(_: Reader, State(w): State<Arc<Web>>) -> Json<Vec<AgentView>> {
    Json(w.ctl.agent_list().into_iter().map(AgentView::from).collect())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ContainersQuery {
    /// Only containers carrying these labels, "key=value" comma-separated.
    #[serde(default)]
    select: Option<String>,
    /// Ask only the agents with these labels, e.g. "zone=a".
    #[serde(default)]
    agents: Option<String>,
}

/// The running containers on the agents' hosts (every agent asked at once).
#[utoipa::path(get, path = "/api/containers", tag = "agents", security(("bearer" = [])), params(ContainersQuery),
    responses((status = 200, body = ContainerList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn containers(
    _: Reader,
    State(w): State<Arc<Web>>,
    Query(q): Query<ContainersQuery>,
) -> Result<Json<ContainerList>, ApiError> {
    let select = q
        .select
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let r = w
        .ctl
        .container_list(pb::ListContainersRequest {
            selector: q.agents.unwrap_or_default(),
            select,
        })
        .await?;
    Ok(Json(r.into()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PodsQuery {
    /// Only this namespace (default: every namespace).
    #[serde(default)]
    namespace: Option<String>,
    /// Only pods whose own labels meet these requirements, as kubectl's -l reads them
    /// ("app=web,tier in (a,b)").
    #[serde(default)]
    select: Option<String>,
    /// Ask only the agents with these labels, e.g. "zone=a".
    #[serde(default)]
    agents: Option<String>,
}

/// The ready Kubernetes pods on the agents' nodes, through each node's CRI runtime.
#[utoipa::path(get, path = "/api/pods", tag = "agents", security(("bearer" = [])), params(PodsQuery),
    responses((status = 200, body = PodList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn pods(
    _: Reader,
    State(w): State<Arc<Web>>,
    Query(q): Query<PodsQuery>,
) -> Result<Json<PodList>, ApiError> {
    let r = w
        .ctl
        .pod_list(pb::ListPodsRequest {
            selector: q.agents.unwrap_or_default(),
            namespace: q.namespace.unwrap_or_default(),
            // The agent splits at commas outside a set's parentheses.
            select: q.select.into_iter().filter(|s| !s.trim().is_empty()).collect(),
        })
        .await?;
    Ok(Json(r.into()))
}

/// The fault kinds and the settings each takes, as `faultline fault apply KIND --help`
/// lists them (the console builds its forms from this).
#[utoipa::path(get, path = "/api/fault-kinds", tag = "faults", security(("bearer" = [])),
    responses((status = 200, body = Vec<FaultKindView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn fault_kinds(_: Reader) -> Json<Vec<FaultKindView>> {
    Json(crate::faults::catalogue().into_iter().map(FaultKindView::from).collect())
}

/// The active faults, oldest first, with time left.
#[utoipa::path(get, path = "/api/faults", tag = "faults", security(("bearer" = [])),
    responses((status = 200, body = Vec<FaultView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn faults(_: Reader, State(w): State<Arc<Web>>) -> Json<Vec<FaultView>> {
    Json(w.ctl.fault_list().into_iter().map(FaultView::from).collect())
}

/// "10" for 10.0: flags read numbers as the CLI's users write them.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { n.to_string() }
}

/// An apply request as the settings `fault apply` takes.
fn settings_of(r: &ApplyRequest) -> Vec<(String, Setting)> {
    let mut out: Vec<(String, Setting)> = r
        .settings
        .iter()
        .map(|(k, v)| {
            let s = match v {
                SettingValue::Switch(b) => Setting::Switch(*b),
                SettingValue::Number(n) => Setting::Value(number(*n)),
                SettingValue::Word(w) => Setting::Value(w.clone()),
                SettingValue::Words(ws) => Setting::Values(ws.clone()),
            };
            (k.clone(), s)
        })
        .collect();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push((k.to_owned(), Setting::Value(v)));
        }
    };
    add("lease", r.lease.clone());
    add("select", r.select.clone());
    add(
        "mode",
        r.mode.map(|m| match m {
            Mode::All => "all".to_owned(),
            Mode::One => "one".to_owned(),
            Mode::Fixed => "fixed".to_owned(),
            Mode::Percent => "percent".to_owned(),
        }),
    );
    add("count", r.count.map(|c| c.to_string()));
    add("percent", r.percent.map(number));
    add("label", r.label.clone());
    if !r.on.is_empty() {
        out.push(("on".into(), Setting::Values(r.on.clone())));
    }
    if r.all {
        out.push(("all".into(), Setting::Switch(true)));
    }
    out
}

/// An apply request as the controller's: the CLI's one parser, errors naming the field
/// as the request does (`settings.loss`, `lease`); a request that says nowhere to act is
/// refused here, naming `all`, before any agent is asked.
fn fault_request(req: &ApplyRequest, dry_run: bool) -> Result<pb::ApplyFaultRequest, ApiError> {
    let settings = settings_of(req);
    let (spec, target) = crate::faults::from_entry(
        req.kind.name(),
        settings.iter().map(|(k, v)| (k.as_str(), v)),
        None,
    )
    .map_err(|e| {
        let field = match e.field.as_str() {
            "" => String::new(),
            f if crate::faults::ENTRY_FIELDS.contains(&f) => format!("{f}: "),
            f => format!("settings.{f}: "),
        };
        ApiError::invalid(format!("{field}{}", e.problem))
    })?;
    if !crate::faults::names_a_target(&target, &spec) {
        let words =
            crate::faults::no_target_in_fields("settings.", Some("POST /api/faults/preview"));
        return Err(ApiError::invalid(format!("all: {words}")));
    }
    Ok(pb::ApplyFaultRequest { target: Some(target), spec: Some(spec), dry_run })
}

/// Where a fault would act, changing nothing: the target resolved as an apply resolves
/// it, and each agent checking the fault as it does before applying.
#[utoipa::path(post, path = "/api/faults/preview", tag = "faults", security(("bearer" = [])), request_body = ApplyRequest,
    responses(
        (status = 200, description = "Where it would act; nothing was changed", body = PreviewView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn preview(
    _: Operator,
    State(w): State<Arc<Web>>,
    Body(req): Body<ApplyRequest>,
) -> Result<Json<PreviewView>, ApiError> {
    let f = FaultView::from(w.ctl.apply(fault_request(&req, true)?).await?);
    Ok(Json(PreviewView { kind: f.kind, settings: f.settings, parts: f.parts }))
}

/// Applies a fault on the agents it targets, all or nothing; a kill or restart acts once
/// and answers the id "done".
#[utoipa::path(post, path = "/api/faults", tag = "faults", security(("bearer" = [])), request_body = ApplyRequest,
    responses(
        (status = 201, description = "Applied", body = FaultView),
        (status = 200, description = "A retry of a request with the same client_request_id: its fault, nothing applied again", body = FaultView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn apply(
    _: Operator,
    State(w): State<Arc<Web>>,
    Body(req): Body<ApplyRequest>,
) -> Result<(StatusCode, Json<FaultView>), ApiError> {
    remembered(&w, req.client_request_id.clone(), &req, async || {
        Ok(w.ctl.apply(fault_request(&req, false)?).await?.into())
    })
    .await
}

/// Runs `make` once per `client_request_id`: a retry of the same request answers the first
/// one's fault (200) instead of applying again.
async fn remembered<R: serde::Serialize>(
    w: &Web,
    id: Option<String>,
    req: &R,
    make: impl AsyncFnOnce() -> Result<FaultView, ApiError>,
) -> Result<(StatusCode, Json<FaultView>), ApiError> {
    let Some(id) = id else {
        return Ok((StatusCode::CREATED, Json(make().await?)));
    };
    let request =
        serde_json::to_string(req).map_err(|e| ApiError::invalid(format!("body: {e}")))?;
    if let Some(first) = w.recall(&id, &request)? {
        return Ok((StatusCode::OK, Json(first)));
    }
    let answer = make().await;
    w.remember(&id, answer.as_ref().ok());
    Ok((StatusCode::CREATED, Json(answer?)))
}

/// Cuts the agents (or the containers on their hosts) into groups that cannot reach each
/// other; reverted like any fault.
#[utoipa::path(post, path = "/api/partitions", tag = "faults", security(("bearer" = [])), request_body = PartitionRequest,
    responses(
        (status = 201, description = "Cut", body = FaultView),
        (status = 200, description = "A retry of a request with the same client_request_id", body = FaultView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn partition(
    _: Operator,
    State(w): State<Arc<Web>>,
    Body(req): Body<PartitionRequest>,
) -> Result<(StatusCode, Json<FaultView>), ApiError> {
    remembered(&w, req.client_request_id.clone(), &req, async || {
        let lease = crate::units::lease(&req.lease)
            .map_err(|e| ApiError::invalid(format!("lease: {e}")))?;
        let r = pb::PartitionRequest {
            selector: req.select.clone().unwrap_or_default(),
            shape: match req.shape {
                Shape::Isolate => pb::Shape::Isolate,
                Shape::Halves => pb::Shape::Halves,
                Shape::MajoritiesRing => pb::Shape::MajoritiesRing,
                Shape::Bridge => pb::Shape::Bridge,
                Shape::Groups => pb::Shape::Groups,
            } as i32,
            groups: req.groups.iter().map(|g| pb::Group { agents: g.clone() }).collect(),
            node: req.node.clone().unwrap_or_default(),
            lease_ms: lease.as_millis() as u64,
            label: req.label.clone().unwrap_or_default(),
            rest: match req.rest {
                None | Some(Rest::Untouched) => pb::Rest::Untouched,
                Some(Rest::Isolated) => pb::Rest::Isolated,
            } as i32,
            container_select: req.container_select.clone(),
            containers: req.containers.clone(),
            pod_select: req.pod_select.clone(),
            pod_namespace: req.namespace.clone().unwrap_or_default(),
            all_namespaces: req.all_namespaces,
        };
        Ok(w.ctl.cut(r).await?.into())
    })
    .await
}

/// Reverts one fault everywhere it acts.
#[utoipa::path(delete, path = "/api/faults/{id}", tag = "faults", security(("bearer" = [])), params(("id" = String, Path, description = "The controller's fault id")),
    responses((status = 200, body = RevertView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revert_one(
    _: Operator,
    State(w): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<Json<RevertView>, ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::invalid("id: 1 to 128 characters"));
    }
    Ok(Json(w.ctl.revert_faults(pb::RevertFaultRequest { id, all: false }).await?.into()))
}

/// Sets a fault's lease anew, from now: it ends then instead (the agents hold the new
/// lease before this answers).
#[utoipa::path(post, path = "/api/faults/{id}/renew", tag = "faults", security(("bearer" = [])), params(("id" = String, Path, description = "The controller's fault id")), request_body = RenewRequest,
    responses((status = 200, body = FaultView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn renew(
    _: Operator,
    State(w): State<Arc<Web>>,
    Path(id): Path<String>,
    Body(req): Body<RenewRequest>,
) -> Result<Json<FaultView>, ApiError> {
    let lease =
        crate::units::lease(&req.lease).map_err(|e| ApiError::invalid(format!("lease: {e}")))?;
    Ok(Json(
        w.ctl
            .renew_fault(pb::RenewFaultRequest { id, lease_ms: lease.as_millis() as u64 })
            .await?
            .into(),
    ))
}

/// Reverts every active fault.
#[utoipa::path(delete, path = "/api/faults", tag = "faults", security(("bearer" = [])),
    responses((status = 200, body = RevertView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn revert_all(_: Operator, State(w): State<Arc<Web>>) -> Result<Json<RevertView>, ApiError> {
    Ok(Json(
        w.ctl.revert_faults(pb::RevertFaultRequest { id: String::new(), all: true }).await?.into(),
    ))
}

/// A seq as the description declares it (int64): larger values are refused, not read
/// as "nothing yet".
fn seq(field: &str, v: Option<u64>) -> Result<u64, ApiError> {
    let v = v.unwrap_or(0);
    if v > i64::MAX as u64 {
        return Err(ApiError::invalid(format!("{field}: at most {}", i64::MAX)));
    }
    Ok(v)
}

/// How many stored events one request reads at most.
const MAX_EVENTS: u32 = 10_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only events with a larger seq (default 0: from the first).
    #[serde(default)]
    after_seq: Option<u64>,
    /// At most this many of the latest (default 100, at most 10000).
    #[serde(default)]
    last: Option<u32>,
}

/// What happened, oldest first: stored history survives controller restarts.
#[utoipa::path(get, path = "/api/events", tag = "events", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = Vec<EventView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn events(
    _: Reader,
    State(w): State<Arc<Web>>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let last = q.last.unwrap_or(100);
    if last == 0 || last > MAX_EVENTS {
        return Err(ApiError::invalid(format!("last: 1 to {MAX_EVENTS}")));
    }
    let stream = w.ctl.event_stream(seq("after_seq", q.after_seq)?, last, false)?;
    let events: Vec<Result<pb::Event, _>> = stream.collect().await;
    Ok(Json(
        events
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(EventView::from)
            .collect(),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Resume after this seq (a reconnecting `EventSource` sends `Last-Event-ID` instead,
    /// which wins).
    #[serde(default)]
    after_seq: Option<u64>,
}

/// The events as Server-Sent Events: stored history after `after_seq` (or Last-Event-ID),
/// then each new event as it happens; every event's `id` is its seq, so a reconnecting
/// browser resumes where it stopped. A watcher too far behind gets an `error` event
/// naming the seq to resume from.
#[utoipa::path(get, path = "/api/events/stream", tag = "events", security(("bearer" = [])), params(StreamQuery),
    responses((status = 200, description = "text/event-stream: each `data` an EventView", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn event_stream(
    _: Reader,
    State(w): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(v) => seq(
            "Last-Event-ID",
            Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| ApiError::invalid("Last-Event-ID: a seq (a number)"))?,
            ),
        )?,
        None => seq("after_seq", q.after_seq)?,
    };
    let stream = w.ctl.event_stream(resume, 0, true)?;
    let sse = stream.map(|e| {
        Ok(match e {
            Ok(e) => {
                let v = EventView::from(e);
                Event::default()
                    .id(v.seq.to_string())
                    .event("event")
                    .json_data(&v)
                    .unwrap_or_else(|_| Event::default().event("error").data("unencodable event"))
            }
            Err(e) => Event::default().event("error").data(e.message),
        })
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The address of an `https://IP:PORT` URL (an agent's); None for a name.
fn url_addr(url: &str) -> Option<std::net::SocketAddr> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    authority.parse().ok()
}

/// Seconds as a caller writes them, checked: finite, positive, at most a day.
fn seconds(field: &str, v: f64) -> Result<Duration, ApiError> {
    if !(v.is_finite() && v > 0.0 && v <= crate::daemon::traffic::MAX_DURATION.as_secs_f64()) {
        return Err(ApiError::invalid(format!(
            "{field}: more than 0, at most {}",
            crate::daemon::traffic::MAX_DURATION.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Starts sending load to the system under test from the controller: the engine
/// `faultline load` uses (open loop, latency from each request's intended start), one
/// load at a time.
#[utoipa::path(post, path = "/api/traffic/start", tag = "traffic", security(("bearer" = [])), request_body = TrafficStart,
    responses((status = 201, description = "Started", body = TrafficView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "A load is running", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn traffic_start(
    _: Operator,
    State(w): State<Arc<Web>>,
    Body(req): Body<TrafficStart>,
) -> Result<(StatusCode, Json<TrafficView>), ApiError> {
    let start = crate::daemon::traffic::Start {
        duration: seconds("duration_seconds", req.duration_seconds)?,
        timeout: req.timeout_seconds.map(|t| seconds("timeout_seconds", t)).transpose()?,
        target_url: req.target_url,
        rps: req.rps,
        connections: req.connections.map(|c| c as usize),
        shape: req.shape,
        method: req.method,
    };
    // Not a way to load faultline itself: the controller's own ports and its agents'.
    let mut own = w.own.clone();
    own.extend(w.ctl.agent_list().iter().filter_map(|a| url_addr(&a.url)));
    // Off the runtime's thread: a target's name is resolved while the load is set up.
    let started = tokio::task::spawn_blocking(move || w.ctl.traffic.start(start, &own))
        .await
        .map_err(|e| crate::daemon::DaemonError::internal(format!("traffic: {e}")))?;
    Ok((StatusCode::CREATED, Json(started?.into())))
}

/// The longest a probe asked through the Web API may wait: well inside the 30 s every
/// request must be answered in.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks a probe once from the controller (an HTTP endpoint, a TCP port, Redis, a
/// Prometheus query) and answers pass or fail with what was seen; a failed sample is an
/// answer (200), not an error. Chaos Toolkit's faultline probes use it.
#[utoipa::path(post, path = "/api/probes/check", tag = "probes", security(("bearer" = [])), request_body = ProbeCheck,
    responses((status = 200, body = ProbeView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn probe_check(
    _: Operator,
    State(w): State<Arc<Web>>,
    Body(req): Body<ProbeCheck>,
) -> Result<Json<ProbeView>, ApiError> {
    let mut settings = crate::probe::Settings::new();
    settings.insert("kind".into(), vec![req.kind.clone()]);
    for (k, v) in &req.settings {
        if k == "kind" {
            return Err(ApiError::invalid("settings.kind: the request's own `kind` says it"));
        }
        let values = match v {
            SettingValue::Switch(b) => vec![b.to_string()],
            SettingValue::Number(n) => vec![number(*n)],
            SettingValue::Word(x) => vec![x.clone()],
            SettingValue::Words(xs) => xs.clone(),
        };
        settings.insert(k.clone(), values);
    }
    let mut own = w.own.clone();
    own.extend(w.ctl.agent_list().iter().filter_map(|a| url_addr(&a.url)));
    // Off the runtime's thread: a name in a URL is resolved when the probe is read.
    let probe = tokio::task::spawn_blocking(move || {
        let p = crate::probe::parse(&req.kind, &settings, crate::probe::Trust::Remote).map_err(
            |e| {
                let at = if e.field == "kind" { "kind".to_owned() } else { format!("settings.{}", e.field) };
                ApiError::invalid(format!("{at}: {}", e.problem))
            },
        )?;
        if p.timeout > MAX_PROBE_TIMEOUT {
            return Err(ApiError::invalid("settings.timeout: at most 10s through the Web API"));
        }
        // Not a way to reach faultline itself through its own controller.
        if p.check.address().is_some_and(|a| crate::daemon::traffic::is_own(&own, a)) {
            return Err(ApiError::invalid(
                "settings: the probe names faultline's own listener (the controller's or an agent's); probes are for the system under test",
            ));
        }
        Ok(p)
    })
    .await
    .map_err(|e| crate::daemon::DaemonError::internal(format!("probe: {e}")))??;
    let s = crate::probe::sample(&probe).await;
    Ok(Json(ProbeView { asks: probe.describe, ok: s.ok, ms: s.ms, detail: s.detail }))
}

/// Stops the running load; answers it as it ended (what was answered is kept).
#[utoipa::path(post, path = "/api/traffic/stop", tag = "traffic", security(("bearer" = [])),
    responses((status = 200, body = TrafficView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "No load was started", body = ErrorBody)))]
async fn traffic_stop(
    _: Operator,
    State(w): State<Arc<Web>>,
) -> Result<Json<TrafficView>, ApiError> {
    Ok(Json(w.ctl.traffic.stop().await?.into()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TrafficQuery {
    /// Only the latest this many seconds (1 to 3600; default all kept, at most an hour): a
    /// watcher polling every second asks for the few that still change.
    #[serde(default)]
    last: Option<u32>,
}

/// The running load (or the last one): per-second requests, errors and latency.
#[utoipa::path(get, path = "/api/traffic", tag = "traffic", security(("bearer" = [])), params(TrafficQuery),
    responses((status = 200, body = TrafficView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "No load was started", body = ErrorBody)))]
async fn traffic(
    _: Reader,
    State(w): State<Arc<Web>>,
    Query(q): Query<TrafficQuery>,
) -> Result<Json<TrafficView>, ApiError> {
    if q.last.is_some_and(|l| l == 0 || l > 3600) {
        return Err(ApiError::invalid("last: 1 to 3600"));
    }
    let mut status = w.ctl.traffic.status().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "traffic: no load was started")
    })?;
    if let Some(last) = q.last {
        let keep = status.seconds.len().saturating_sub(last as usize);
        status.seconds.drain(..keep);
    }
    Ok(Json(status.into()))
}

/// The runs, newest first (at most 200): the one running, then those whose directories
/// the controller keeps.
#[utoipa::path(get, path = "/api/runs", tag = "runs", security(("bearer" = [])),
    responses((status = 200, body = Vec<RunView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn runs(_: Reader, State(w): State<Arc<Web>>) -> Json<Vec<RunView>> {
    Json(w.runs.list().into_iter().map(RunView::from).collect())
}

/// Starts a scenario as `faultline run` does (load and faults on one clock, guardrails,
/// the run directory and its report), one run at a time.
#[utoipa::path(post, path = "/api/runs", tag = "runs", security(("bearer" = [])), request_body = RunStart,
    responses((status = 201, description = "Started", body = RunView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "A run is running", body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, description = "This controller cannot run scenarios (see the message)", body = ErrorBody)))]
async fn run_start(
    _: Operator,
    State(w): State<Arc<Web>>,
    Body(req): Body<RunStart>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    // Off the runtime's thread: checking the scenario resolves its load target's name.
    let runs = w.runs.clone();
    let started = tokio::task::spawn_blocking(move || runs.start(&req.scenario))
        .await
        .map_err(|e| crate::daemon::DaemonError::internal(format!("runs: {e}")))?;
    Ok((StatusCode::CREATED, Json(started?.into())))
}

/// One run: its state and, once it ended, its analysis.
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs", security(("bearer" = [])), params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run(
    _: Reader,
    State(w): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let info = w.runs.info(&id)?;
    let analysis = w.runs.analysis(&info)?;
    let mut v = RunView::from(info);
    v.analysis = analysis;
    Ok(Json(v))
}

/// Stops the running run early: its faults are reverted, what it measured is kept and
/// reported.
#[utoipa::path(post, path = "/api/runs/{id}/stop", tag = "runs", security(("bearer" = [])), params(("id" = String, Path, description = "The run's id")),
    responses((status = 202, description = "Stopping", body = RunView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run_stop(
    _: Operator,
    State(w): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    w.runs.stop(&id)?;
    Ok((StatusCode::ACCEPTED, Json(w.runs.info(&id)?.into())))
}

/// A run's file as it is: report.html (its PNGs are beside it), throughput.png, seconds.csv,
/// summary.json, scenario.yaml, ...; served so that a page cannot run script.
fn file_response((bytes, content_type): (Vec<u8>, &'static str)) -> axum::response::Response {
    use axum::{http::header, response::IntoResponse};
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(
            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    r
}

/// A file of a run's directory.
#[utoipa::path(get, path = "/api/runs/{id}/files/{name}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "The run's id"), ("name" = String, Path, description = "A file name from the run's `files`")),
    responses((status = 200, description = "The file", content(("text/html"), ("image/png"), ("text/csv"), ("application/json"), ("application/yaml"), ("text/markdown"), ("text/plain"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run_file(
    _: Reader,
    State(w): State<Arc<Web>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<axum::response::Response, ApiError> {
    Ok(file_response(w.runs.file(&id, &name)?))
}

/// A link that opens the run's files for 15 minutes with no other credential, for a
/// browser tab (which cannot send a token with a link) or a colleague.
#[utoipa::path(post, path = "/api/runs/{id}/link", tag = "runs", security(("bearer" = [])), params(("id" = String, Path, description = "The run's id")),
    responses((status = 201, body = RunLink), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn run_link(
    _: Reader,
    State(w): State<Arc<Web>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunLink>), ApiError> {
    let (ticket, expires_unix_ms) = w.runs.link(&id)?;
    Ok((
        StatusCode::CREATED,
        Json(RunLink { url: format!("/runs/{id}/{ticket}/"), expires_unix_ms }),
    ))
}

/// A run's file through a link from POST /api/runs/{id}/link (the link is the credential).
#[utoipa::path(get, path = "/runs/{id}/{ticket}/{name}", tag = "runs",
    params(("id" = String, Path, description = "The run's id"), ("ticket" = String, Path, description = "The link's secret"), ("name" = String, Path, description = "A file name")),
    responses((status = 200, description = "The file", content(("text/html"), ("image/png"), ("text/csv"), ("application/json"), ("application/yaml"), ("text/markdown"), ("text/plain"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run_file_by_link(
    State(w): State<Arc<Web>>,
    Path((id, ticket, name)): Path<(String, String, String)>,
) -> Result<axum::response::Response, ApiError> {
    Ok(file_response(w.runs.file_by_link(&id, &ticket, &name)?))
}

#[cfg(test)]
mod tests {
    use faultline_proto::agent::v1 as apb;

    use super::*;

    /// One dialect (issue 31): every field of every request and answer the description
    /// lists, and every query parameter, is `snake_case`.
    #[test]
    fn every_field_the_api_describes_is_snake_case() {
        let (_, api) = operations().split_for_parts();
        let doc = serde_json::to_value(&api).unwrap();
        let mut names = Vec::new();
        fn walk(v: &serde_json::Value, names: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                        names.extend(props.keys().cloned());
                    }
                    if m.get("in").is_some_and(|i| i == "query")
                        && let Some(n) = m.get("name").and_then(|n| n.as_str())
                    {
                        names.push(n.to_owned());
                    }
                    m.values().for_each(|x| walk(x, names));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, names)),
                _ => {}
            }
        }
        walk(&doc, &mut names);
        assert!(names.len() > 50, "{names:?}");
        let odd: Vec<&String> = names
            .iter()
            .filter(|n| {
                !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
            .collect();
        assert!(odd.is_empty(), "not snake_case: {odd:?}");
        // The seed's camelCase traffic call is still accepted.
        let seed: TrafficStart = serde_json::from_value(serde_json::json!(
            {"targetUrl": "http://x/", "rps": 1, "durationSeconds": 2, "timeoutSeconds": 3}
        ))
        .unwrap();
        assert_eq!(
            (seed.target_url.as_str(), seed.duration_seconds, seed.timeout_seconds),
            ("http://x/", 2.0, Some(3.0))
        );
    }

    #[test]
    fn apply_requests_become_the_cli_s_flags() {
        let req: ApplyRequest = serde_json::from_value(serde_json::json!({
            "kind": "drop", "lease": "60s", "settings": {"interface": "eth0", "loss": "10%", "peer": ["10.0.0.2/32"]}, "select": "role=db", "mode": "one"
        }))
        .unwrap();
        let s = settings_of(&req);
        let (spec, target) = crate::faults::from_entry(
            req.kind.name(),
            s.iter().map(|(k, v)| (k.as_str(), v)),
            None,
        )
        .unwrap();
        assert_eq!((spec.interface.as_str(), spec.lease_ms), ("eth0", 60_000));
        assert!(
            matches!(spec.kind, Some(apb::fault_spec::Kind::Drop(ref d)) if (d.percent - 10.0).abs() < 1e-9)
        );
        assert_eq!((target.selector.as_str(), target.mode), ("role=db", pb::Mode::One as i32));
        assert_eq!(number(10.0), "10");
        assert_eq!(number(0.5), "0.5");
        let bad: ApplyRequest = serde_json::from_value(serde_json::json!({"kind": "drop", "lease": "60s", "settings": {"interface": "eth0", "los": "10%"}})).unwrap();
        let s = settings_of(&bad);
        let e = crate::faults::from_entry(
            bad.kind.name(),
            s.iter().map(|(k, v)| (k.as_str(), v)),
            None,
        )
        .unwrap_err();
        assert!(e.problem.contains("los"), "{e:?}");
        assert!(
            serde_json::from_value::<ApplyRequest>(
                serde_json::json!({"kind": "drop", "lese": "60s"})
            )
            .is_err(),
            "unknown fields are refused"
        );
    }
}
