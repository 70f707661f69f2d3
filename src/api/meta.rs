//! Service routes: identity, liveness, readiness.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::ui;
use crate::errors::error_chain;
use crate::store::StoreError;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceInfo {
    pub name: String,
    pub version: String,
    pub docs: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// The database backend (`sqlite` or `postgres`), on `/readyz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// On `/readyz`: whether an admin holds the queue (nothing new is
    /// admitted; the service is still ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_held: Option<bool>,
    /// On `/readyz`: whether this replica is drained (it admits no new
    /// job; it still answers, and its running jobs go on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<bool>,
    /// On `/readyz`: this replica's name (`orchestrator.replica_name`),
    /// which `draining` is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// Name and version of the service; a browser (whose `Accept` prefers
/// `text/html`) is sent to the dashboard instead.
#[utoipa::path(get, path = "/", tag = "service", operation_id = "get_service_info", responses(
    (status = 200, description = "The service's name and version", body = ServiceInfo),
    (status = 303, description = "To the dashboard (`/ui`), when `Accept` prefers text/html",
        headers(("Location" = String, description = "`/ui`"))),
    (status = 403, description = "Refused: a foreign Host with authentication off", body = ErrorBody),
))]
pub async fn root(headers: HeaderMap) -> Response {
    if ui::wants_html(&headers) {
        return ui::to_dashboard();
    }
    Json(ServiceInfo {
        name: "icarus".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        docs: "/docs".to_owned(),
    })
    .into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "service", operation_id = "healthz",
    responses((status = 200, description = "The process answers", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        database: None,
        queue_held: None,
        draining: None,
        replica: None,
    })
}

/// Readiness: the database answers, and a SQLite file can be written. The
/// detail says whether the queue is held and whether this replica (named)
/// is drained, as kept in the database.
#[utoipa::path(get, path = "/readyz", tag = "service", operation_id = "readyz",
    responses(
        (status = 200, description = "The database answers", body = Health),
        (status = 503, description = "The database is unreachable, busy, read-only, full or failing", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.store.ping().await.map_err(not_ready)?;
    let replica = state.drain.replica();
    let levers = state.store.queue_levers(replica).await.map_err(not_ready)?;
    Ok(Json(Health {
        status: "ready".to_owned(),
        database: Some(state.store.backend_name().to_owned()),
        queue_held: Some(levers.hold.is_some()),
        draining: Some(levers.drain.is_some()),
        replica: Some(replica.to_owned()),
    }))
}

/// Why the service is not ready, in a few words: `database unreachable`,
/// `database read-only`, `database full`... The cause goes to the log.
fn not_ready(error: StoreError) -> ApiError {
    tracing::warn!(error = %error_chain(&error), "readiness check failed");
    let detail = match error {
        StoreError::Unavailable { why, .. } => format!("database {why}"),
        StoreError::FileReplaced { .. } => {
            "database file removed or replaced after start".to_owned()
        }
        _ => "database check failed".to_owned(),
    };
    ApiError::Unavailable(detail)
}
