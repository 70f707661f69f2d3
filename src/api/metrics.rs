//! `GET /metrics`: the Prometheus exposition.
//!
//! On the API it is a read like any other: open with authentication off,
//! and with it on it needs a token of any role. [`metrics_router`] serves it
//! alone, without authentication, on a listener of its own
//! (`metrics.listen`) for a scraper that holds no token.
//!
//! Jobs by phase are counted in the store at each scrape, and leadership
//! read from the campaign, so both are right whatever happened before
//! (a restart, another replica's writes). A scrape while the database is
//! down answers the rest, without the jobs' series.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::auth::Caller;
use super::error::ApiResult;
use crate::config::AccessRole;
use crate::drain::Drain;
use crate::errors::error_chain;
use crate::leadership::Leadership;
use crate::metrics::{Format, Metrics};
use crate::store::Store;

/// What a scrape reads.
#[derive(Clone)]
pub struct MetricsState {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    /// `None`: this replica leads from start to end.
    pub leadership: Option<Leadership>,
    /// This replica's drain: its name, which its row is kept under.
    pub drain: Arc<Drain>,
}

impl From<&AppState> for MetricsState {
    fn from(state: &AppState) -> Self {
        MetricsState {
            metrics: state.metrics.clone(),
            store: state.store.clone(),
            leadership: state.leadership.clone(),
            drain: state.drain.clone(),
        }
    }
}

impl MetricsState {
    /// The exposition as of now, in the format the scraper asked for.
    async fn scrape(&self, headers: &HeaderMap) -> Response {
        match self.store.count_jobs_by_phase().await {
            Ok(counts) => self.metrics.set_jobs_by_phase(Some(&counts)),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "jobs could not be counted for the metrics");
                self.metrics.set_jobs_by_phase(None);
            }
        }
        let leading = self
            .leadership
            .as_ref()
            .is_none_or(|leadership| leadership.current().is_some());
        self.metrics.set_leading(leading);
        match self.store.queue_levers(self.drain.replica()).await {
            Ok(levers) => self
                .metrics
                .set_queue(Some(levers.hold.is_some()), Some(levers.drain.is_some())),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "the queue's hold and drain could not be read for the metrics");
                self.metrics.set_queue(None, None);
            }
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok());
        let format = Format::negotiate(accept);
        let body = self.metrics.encode(format);
        ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
    }
}

/// `GET /metrics` on the API: any caller with a token (everyone with
/// authentication off).
#[utoipa::path(get, path = "/metrics", tag = "service", operation_id = "get_metrics",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "Every metric, in the Prometheus text format (0.0.4), or OpenMetrics 1.0 when `Accept` asks for it",
            content((String = "text/plain"), (String = "application/openmetrics-text"))),
        (status = 403, description = "Refused: a foreign Host with authentication off", body = super::error::ErrorBody),
    ))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(AccessRole::Viewer, "reading metrics")?;
    Ok(MetricsState::from(&state).scrape(&headers).await)
}

/// The router of the metrics listener: `/metrics` and nothing else, open.
pub fn metrics_router(state: MetricsState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |State(state): State<MetricsState>, headers: HeaderMap| async move {
                    state.scrape(&headers).await
                },
            ),
        )
        .with_state(state)
}
