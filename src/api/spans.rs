//! Each request's span: in the log (every line it causes names it) and,
//! with traces on, at the collector as a server span named by its route.
//!
//! The span is made after routing, so it knows the route's template
//! (`/jobs/{job_id}/status`: few distinct names, never an id), and gets
//! the response's status when the handler answers. A caller of the API
//! may continue its own trace with a W3C `traceparent` header; agents
//! cannot (their listener and their callback route ignore it): an agent is
//! not trusted to say which trace its reports belong to.

use std::time::Duration;

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tower_http::trace::{DefaultOnResponse, OnResponse};
use tracing::field::Empty;

use super::request_id;

/// The callback route, whose callers are agents.
const CALLBACK_ROUTE: &str = "/jobs/{job_id}/callback";

/// A span on the API's listener: continues a caller's trace, but an agent's.
pub fn api_span(request: &Request<Body>) -> tracing::Span {
    let span = request_span(request);
    if route(request) != CALLBACK_ROUTE {
        crate::traces::continue_callers_trace(&span, request.headers());
    }
    span
}

/// A span on the agents' listener: never continues a trace an agent names.
pub fn agent_span(request: &Request<Body>) -> tracing::Span {
    request_span(request)
}

/// The request's id (also in the `x-request-id` response header), method,
/// path, route and the job it is about. Never the query string: it can
/// carry credentials (an agent's callback token).
fn request_span(request: &Request<Body>) -> tracing::Span {
    let path = request.uri().path();
    let job = path
        .strip_prefix("/jobs/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| id.parse::<crate::job::JobId>().ok());
    let job = tracing::field::display(job.map(|id| id.to_string()).unwrap_or_default());
    let route = route(request);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id::of(request),
        method = %request.method(),
        path = %path,
        job = job,
        route = route,
        status = Empty,
        "otel.name" = Empty,
        "otel.kind" = Empty,
        "otel.status_code" = Empty,
    );
    let name = if route.is_empty() {
        request.method().to_string()
    } else {
        format!("{} {route}", request.method())
    };
    crate::traces::name_server_span(&span, &name);
    span
}

/// The template of the route that matched; empty when none did (404).
fn route<B>(request: &Request<B>) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str)
}

/// Records the response's status in the request's span (a 5xx marks the
/// span as an error, whether or not anything was logged as one in it), then
/// logs as tower-http does by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordStatus;

impl<B> OnResponse<B> for RecordStatus {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &tracing::Span) {
        let status = response.status();
        span.record("status", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
        DefaultOnResponse::default().on_response(response, latency, span);
    }
}
