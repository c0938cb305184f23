//! The web console at `/`: one page of static HTML, CSS and JavaScript compiled into the
//! binary (nothing fetched from elsewhere), which drives the Web API with the caller's own
//! credentials: a bearer token it keeps in the tab's session storage and sends as a header
//! (never a cookie, so another site cannot make the browser act for it), or the client
//! certificate the browser presents. The page itself holds no data and needs none.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// uPlot, vendored from npm at a pinned version (see console/vendor/README.md).
const UPLOT: &str = "uplot-1.6.32";

/// Only this page's own scripts, styles and API: no inline script, no other origin, no
/// framing (clickjacking a revert button).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A new controller build serves new assets: the browser asks again each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    Router::new()
        .route(
            "/",
            get(async || asset("text/html; charset=utf-8", include_str!("console/index.html"))),
        )
        .route("/console/app.js", get(async || asset(JS, include_str!("console/app.js"))))
        .route("/console/app.css", get(async || asset(CSS, include_str!("console/app.css"))))
        .route(
            &format!("/console/vendor/{UPLOT}/uPlot.iife.min.js"),
            get(async || asset(JS, include_str!("console/vendor/uplot-1.6.32/uPlot.iife.min.js"))),
        )
        .route(
            &format!("/console/vendor/{UPLOT}/uPlot.min.css"),
            get(async || asset(CSS, include_str!("console/vendor/uplot-1.6.32/uPlot.min.css"))),
        )
        .route(
            &format!("/console/vendor/{UPLOT}/LICENSE"),
            get(async || {
                asset(
                    "text/plain; charset=utf-8",
                    include_str!("console/vendor/uplot-1.6.32/LICENSE"),
                )
            }),
        )
}
