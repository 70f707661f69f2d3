//! The OpenAPI document and the two documentation UIs, served from the
//! binary with no CDN: Swagger UI (`utoipa-swagger-ui`'s vendored copy) at
//! `/docs`, and ReDoc (vendored under `assets/redoc/`) at `/redoc`.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::{callback, error, jobs, meta, models, stream};
use crate::source::patch;

#[derive(OpenApi)]
#[openapi(
    info(title = "Icarus", description = "Orchestrator for autonomous coding jobs: builder and checker agents, a human approval gate."),
    paths(
        jobs::spawn, jobs::list, jobs::status, jobs::telemetry, jobs::audit, jobs::events, jobs::logs,
        jobs::diff, jobs::approve, jobs::cancel, jobs::publish, callback::callback, stream::stream,
        meta::root, meta::healthz, meta::readyz,
    ),
    components(schemas(
        models::SpawnRequest, models::SpawnResponse, models::ApproveRequest, models::DecisionResponse,
        models::JobStatusResponse, models::ApprovalView, models::JobSummary, models::TelemetryResponse,
        models::AuditResponse, models::EventView, models::AgentLogView, models::CallbackRequest, models::MessageResponse,
        models::SourceBody, models::DiffResponse, patch::DiffSummary, patch::FileChange, patch::Hunk,
        meta::ServiceInfo, meta::Health, error::ErrorBody,
    )),
    tags(
        (name = "jobs", description = "Submit, follow and decide jobs"),
        (name = "agents", description = "Called by agent containers"),
        (name = "service", description = "Identity and health"),
    )
)]
pub struct ApiDoc;

const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>Icarus API - ReDoc</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="/openapi.json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
"#;

/// `/openapi.json`, `/docs` (Swagger UI) and `/redoc`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let swagger: Router<S> = SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into();
    swagger
        .route("/redoc", get(|| async { Html(REDOC_PAGE) }))
        .route(
            "/redoc/redoc.standalone.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "application/javascript")], REDOC_JS).into_response()
            }),
        )
}
