//! The HTTP and WebSocket API (axum): the seed's routes with the seed's shapes,
//! plus cancel, the event log, health, documentation and the review
//! dashboard (`/ui`).
//!
//! The API holds only what it needs — the store, the host load level, the
//! shutdown signal — never the runtime: it writes desired state and reads
//! status, and the controller does the rest.

mod auth;
mod browser;
mod callback;
mod docs;
mod encoding;
pub mod error;
mod extract;
mod jobs;
mod logs;
mod meta;
mod metrics;
pub mod models;
mod policy;
mod queue;
mod rendered;
pub mod report_limit;
mod request_id;
mod rules;
mod session;
mod spans;
mod stream;
pub mod stream_limit;
mod stream_messages;
mod tail;
mod ui;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

pub use docs::ApiDoc;
pub use metrics::{MetricsState, metrics_router};
pub use policy::MAX_TASK_CHARS;

use crate::credentials::AgentKeys;
use crate::job::admission::LoadLevel;
use crate::leadership::Leadership;
use crate::ports::upstream::Upstream;
use crate::store::Store;
pub use auth::Authenticator;
pub use browser::AllowedHosts;
use browser::BrowserGuard;
use error::ApiError;
pub use policy::SpawnPolicy;
use report_limit::ReportLimiter;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub load: watch::Receiver<LoadLevel>,
    /// Cancelled when the server shuts down; open WebSockets close on it.
    pub shutdown: CancellationToken,
    /// Checks API callers' tokens and roles.
    pub auth: Arc<Authenticator>,
    /// What a submitted job may ask for.
    pub policy: Arc<SpawnPolicy>,
    /// Checks agents' callback tokens.
    pub agent_keys: Arc<AgentKeys>,
    /// Per-agent limit on progress reports.
    pub progress_reports: Arc<ReportLimiter>,
    /// Open WebSocket streams, in total and per caller.
    pub streams: Arc<stream_limit::StreamLimiter>,
    /// Messages one stream subscriber may have waiting (`agents.logs.subscriber_buffer`).
    pub stream_buffer: usize,
    /// Where jobs' desired state is written before the store, if anywhere
    /// (the IcarusJob resources in Kubernetes mode).
    pub upstream: Option<Arc<dyn Upstream>>,
    /// The registry every part records into; `/metrics` encodes it.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether this replica leads, for `/metrics`; `None`: it always does.
    pub leadership: Option<Leadership>,
    /// Stream messages rendered once for all of a job's subscribers.
    pub rendered: Arc<rendered::SharedRenders>,
    /// Priorities: the default, each role's cap, the ageing (`queue`).
    pub queue: crate::config::QueueConfig,
    /// `orchestrator.max_concurrent_jobs`, for queue positions and estimates.
    pub max_active_jobs: usize,
    /// This process's drain, shared with its controller.
    pub drain: Arc<crate::drain::Drain>,
    /// The unfinished jobs in memory, for pending jobs' places.
    pub pending: Arc<crate::pending::PendingJobs>,
}

/// Limits applied to every request.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub max_request_bytes: usize,
    /// Browser origins allowed by CORS, and to change state or open a
    /// stream; none by default.
    pub cors_allowed_origins: Vec<String>,
    /// The `Host` names answered (DNS-rebinding protection).
    pub allowed_hosts: AllowedHosts,
}

/// CORS headers only for the configured origins: with none, browsers keep
/// other sites' pages from calling the API.
fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| origin.parse().ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

/// The complete router. The `Host` check leaves out the routes that must
/// answer any name (the `browser` module says which and why); the `Origin`
/// check covers all.
pub fn router(state: AppState, limits: ApiLimits) -> Router {
    let guard = BrowserGuard::new(limits.allowed_hosts.clone(), &limits.cors_allowed_origins);
    let document = docs::document(&docs::Deployment {
        policy: &state.policy,
        authenticated: state.auth.enabled(),
        max_request_bytes: limits.max_request_bytes,
    });
    let named_host = Router::new()
        .route("/jobs", get(jobs::list))
        .route("/jobs/spawn", post(jobs::spawn))
        .route("/jobs/{job_id}", delete(jobs::delete))
        .route("/jobs/{job_id}/status", get(jobs::status))
        .route("/jobs/{job_id}/telemetry", get(jobs::telemetry))
        .route("/jobs/{job_id}/audit", get(jobs::audit))
        .route("/jobs/{job_id}/events", get(jobs::events))
        .route("/jobs/{job_id}/approvals", get(jobs::approvals))
        .route("/jobs/{job_id}/egress", get(jobs::egress))
        .route("/jobs/{job_id}/egress/allow", post(jobs::allow_egress))
        .route("/jobs/{job_id}/logs", get(logs::logs))
        .route("/jobs/{job_id}/diff", get(jobs::diff))
        .route("/jobs/{job_id}/publish", post(jobs::publish))
        .route("/jobs/{job_id}/approve", post(jobs::approve))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/jobs/{job_id}/stream", get(stream::stream))
        .route("/queue", get(queue::show))
        .route("/queue/hold", post(queue::hold))
        .route("/queue/release", post(queue::release))
        .route("/queue/drain", post(queue::drain))
        .route("/queue/resume", post(queue::resume))
        .route("/metrics", get(metrics::metrics))
        .route("/auth/me", get(session::me))
        .route("/images", get(session::images))
        .route("/", get(meta::root))
        .with_state(state.clone())
        .merge(docs::routes(document))
        .merge(ui::routes())
        .route_layer(from_fn_with_state(guard.clone(), browser::host_check));
    let any_host = Router::new()
        .route("/jobs/{job_id}/callback", post(callback::callback))
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .with_state(state);
    named_host
        .merge(any_host)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(guard, browser::origin_check))
        .layer(DefaultBodyLimit::max(limits.max_request_bytes))
        .layer(cors(&limits.cors_allowed_origins))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(spans::api_span)
                .on_response(spans::RecordStatus),
        )
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn(request_id::tag))
}

/// The router for the agents' own listener: the callback route only, so a
/// container can report on its job but never approve or spawn anything.
/// Agents call it by whatever name reaches it, so only `Origin` is checked.
pub fn agent_router(state: AppState, limits: ApiLimits) -> Router {
    let guard = BrowserGuard::new(limits.allowed_hosts.clone(), &limits.cors_allowed_origins);
    Router::new()
        .route("/jobs/{job_id}/callback", post(callback::callback))
        .route("/healthz", get(meta::healthz))
        .with_state(state)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(guard, browser::origin_check))
        .layer(DefaultBodyLimit::max(limits.max_request_bytes))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(spans::agent_span)
                .on_response(spans::RecordStatus),
        )
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn(request_id::tag))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("Method Not Allowed".to_owned())
}

/// The last line of defence: a bug answers 500 in the API's format and is logged.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    tracing::error!(panic = %detail, "a request handler panicked");
    let body = error::ErrorBody {
        detail: "Internal Server Error".to_owned(),
    };
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}
