//! The OpenAPI document and the two documentation UIs, served from the
//! binary with no CDN: Swagger UI (`utoipa-swagger-ui`'s vendored copy) at
//! `/docs`, and ReDoc (vendored under `assets/redoc/`) at `/redoc`.
//!
//! The document tells the truth about this server as configured, so that
//! clients generated from it, and contract tests run against it, meet the
//! server they were told of. It is built once, at start ([`document`]),
//! from what utoipa derives of the routes and types ([`ApiDoc`]), and then:
//!
//! - every text field of a request gets its rule ([`TextRule`]): the same
//!   rule the handler checks, some of them made of the configuration (the
//!   images, project roots and source roots a job may name);
//! - every operation gets the answers of what stands around its handler,
//!   which its own `utoipa::path` does not list: the `job_id` extractor's
//!   404 and 422, the JSON body's 413, 415 and 422, the query's 422, the
//!   database's 503, a fault's 500;
//! - with authentication on, the operations that take a caller (those whose
//!   `utoipa::path` names `security(("api_token" = []))`) require the bearer
//!   token and list 401; with it off they require nothing, as the server does.
//!
//! Checked by `tests/integration/openapi_contract.rs`, which runs
//! Schemathesis against the real binary, and generates a Python client.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::callback::{MAX_MESSAGE_CHARS, MAX_TOOL_CHARS};
use super::jobs::{MAX_COMMENT_CHARS, MAX_SNAPSHOT_CHARS};
use super::policy::SpawnPolicy;
use super::rules::TextRule;
use super::{
    callback, error, jobs, logs, meta, metrics, models, queue, session, stream, stream_messages,
};
use crate::source::patch;

#[derive(OpenApi)]
#[openapi(
    info(title = "Icarus", description = "Orchestrator for autonomous coding jobs: builder and checker agents, a human approval gate."),
    paths(
        jobs::spawn, jobs::list, jobs::status, jobs::telemetry, jobs::audit, jobs::events, jobs::approvals, jobs::egress, jobs::allow_egress, logs::logs,
        jobs::diff, jobs::approve, jobs::cancel, jobs::publish, jobs::delete, callback::callback, stream::stream,
        queue::show, queue::hold, queue::release, queue::drain, queue::resume,
        meta::root, meta::healthz, meta::readyz, metrics::metrics, session::me, session::images,
    ),
    components(schemas(
        models::SpawnRequest, models::SpawnResponse, models::ApproveRequest, models::DecisionResponse,
        models::JobStatusResponse, models::ApprovalView, models::PhaseSecondsView, models::JobSummary, models::TelemetryResponse,
        models::AuditResponse, models::EventView, models::EgressView, models::EgressResponse, models::EgressSummary,
        models::AllowanceView, models::AllowEgressRequest, models::AgentLogView, models::CallbackRequest, models::MessageResponse,
        models::SourceBody, models::DiffResponse, models::PhaseName, models::RoleName, models::ProjectPhaseName, models::ReportStatus,
        jobs::DiffFormat, patch::DiffSummary, patch::FileChange, patch::Hunk,
        meta::ServiceInfo, meta::Health, session::Me, session::Images, error::ErrorBody, stream_messages::LogMessage,
        queue::QueueView, queue::QueueResponse, queue::QueuedJob, queue::QueueChange, queue::DrainedReplica,
    )),
    tags(
        (name = "jobs", description = "Submit, follow and decide jobs"),
        (name = "agents", description = "Called by agent containers"),
        (name = "queue", description = "The queue of pending jobs: positions, hold, drain"),
        (name = "service", description = "Identity and health"),
    )
)]
pub struct ApiDoc;

/// What the document depends on besides the code.
pub struct Deployment<'a> {
    pub policy: &'a SpawnPolicy,
    /// `auth.enabled`.
    pub authenticated: bool,
    /// `orchestrator.max_request_bytes`.
    pub max_request_bytes: usize,
}

/// The document `/openapi.json` serves (see the module's documentation).
pub fn document(deployment: &Deployment) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    for (schema, field, rule) in field_rules(deployment.policy) {
        if let Some(property) =
            doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{field}"))
        {
            rule.describe(property);
        }
    }
    describe_test_code(&mut doc, deployment.policy.test_code_max_bytes());
    bound_required_approvals(&mut doc, &deployment.policy.approvals);
    let listing = doc.pointer_mut("/paths/~1jobs/get/parameters");
    for parameter in listing.and_then(Value::as_array_mut).into_iter().flatten() {
        if parameter["name"] == "project_id" {
            deployment
                .policy
                .project_id
                .describe(&mut parameter["schema"]);
        }
    }
    if let Some(callback) = doc.pointer_mut("/components/schemas/CallbackRequest") {
        callback["not"] = a_report_that_says_nothing();
    }
    if deployment.authenticated {
        doc["components"]["securitySchemes"] = json!({"api_token": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token, configured by its SHA-256 in auth.tokens",
        }});
    }
    link_to_jobs(&mut doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let operations = item
                .as_object_mut()
                .into_iter()
                .flat_map(|i| i.values_mut());
            for operation in operations.filter_map(Value::as_object_mut) {
                surround(path, operation, deployment);
            }
        }
    }
    doc
}

/// Links from a spawned job, and from the newest job listed, to every
/// operation on a job, so a client (or a contract test) can follow one.
/// (Written here: utoipa 5.5 spells a link's `operationId` `operation_id`.)
fn link_to_jobs(doc: &mut Value) {
    let mut ids = Vec::new();
    let operations = doc["paths"].as_object().into_iter().flat_map(|paths| {
        paths
            .values()
            .filter_map(Value::as_object)
            .flat_map(|item| item.values())
    });
    for operation in operations {
        let on_a_job = operation["parameters"]
            .as_array()
            .is_some_and(|list| list.iter().any(|p| p["name"] == "job_id"));
        if let (true, Some(id)) = (on_a_job, operation["operationId"].as_str()) {
            ids.push(id.to_owned());
        }
    }
    for (response, job_id) in [
        (
            "/paths/~1jobs~1spawn/post/responses/201",
            "$response.body#/job_id",
        ),
        (
            "/paths/~1jobs/get/responses/200",
            "$response.body#/0/job_id",
        ),
    ] {
        let links: Map<String, Value> = ids
            .iter()
            .map(|id| {
                let link = json!({"operationId": id, "parameters": {"job_id": job_id}});
                (id.clone(), link)
            })
            .collect();
        if let Some(response) = doc.pointer_mut(response) {
            response["links"] = Value::Object(links);
        }
    }
}

/// Each request field's rule, by component schema and property.
fn field_rules(policy: &SpawnPolicy) -> Vec<(&'static str, &'static str, TextRule)> {
    let mut rules = vec![
        ("SpawnRequest", "task", policy.task.clone()),
        ("SpawnRequest", "project_path", policy.project_path.clone()),
        ("SpawnRequest", "builder_image", policy.image.clone()),
        ("SpawnRequest", "checker_image", policy.image.clone()),
        ("SpawnRequest", "project_id", policy.project_id.clone()),
        ("SpawnRequest", "test_code", policy.test_code.clone()),
        ("AllowEgressRequest", "domain", policy.egress_rule.clone()),
        (
            "SpawnRequest",
            "allowed_domains/items",
            policy.egress_rule.clone(),
        ),
        ("SourceBody", "repository", policy.repository.clone()),
        ("SourceBody", "ref", policy.reference.clone()),
    ];
    let lengths = [
        ("ApproveRequest", "comment", MAX_COMMENT_CHARS),
        ("ApproveRequest", "snapshot", MAX_SNAPSHOT_CHARS),
        ("CallbackRequest", "message", MAX_MESSAGE_CHARS),
        ("CallbackRequest", "error", MAX_MESSAGE_CHARS),
        ("CallbackRequest", "current_tool", MAX_TOOL_CHARS),
    ];
    rules.extend(lengths.map(|(schema, field, max)| (schema, field, TextRule::length(max))));
    rules
}

/// `test_code`'s limit is in bytes, which no schema keyword counts: its
/// `maxLength` (characters) is only what follows from it, so the
/// description says the rest.
fn describe_test_code(doc: &mut Value, max_bytes: usize) {
    if let Some(property) = doc.pointer_mut("/components/schemas/SpawnRequest/properties/test_code")
    {
        let said = property["description"].as_str().unwrap_or_default();
        property["description"] = json!(format!(
            "{said} At most {max_bytes} bytes as UTF-8 (agents.max_test_code_bytes); more: 422."
        ));
    }
}

/// `required_approvals` accepts what the configuration allows: from
/// `approval.required` to `approval.max_required`.
fn bound_required_approvals(doc: &mut Value, approvals: &crate::config::ApprovalConfig) {
    let pointer = "/components/schemas/SpawnRequest/properties/required_approvals";
    if let Some(property) = doc.pointer_mut(pointer) {
        property["minimum"] = json!(approvals.required);
        property["maximum"] = json!(approvals.max_required);
        property["default"] = json!(approvals.required);
    }
}

/// A callback must carry an outcome or some progress (the handler's 422
/// otherwise): not all of these fields absent or null. (As `not`, rather
/// than `anyOf` of the four, which client generators read as four body types.)
fn a_report_that_says_nothing() -> Value {
    let properties: Map<String, Value> = ["status", "current_tool", "cpu_usage", "ram_usage_mb"]
        .into_iter()
        .map(|field| (field.to_owned(), json!({"type": "null"})))
        .collect();
    json!({"properties": properties})
}

/// Adds to one operation the answers of its extractors, of the database
/// and of a fault, and its security as the deployment has it.
fn surround(path: &str, operation: &mut Map<String, Value>, deployment: &Deployment) {
    let parameters = operation.get("parameters").and_then(Value::as_array);
    let any_parameter =
        |test: &dyn Fn(&Value) -> bool| parameters.is_some_and(|list| list.iter().any(test));
    let job_id = any_parameter(&|p| p["in"] == "path" && p["name"] == "job_id");
    // The stream's `access_token` is the authenticator's, not parsed as a query.
    let query = any_parameter(&|p| p["in"] == "query" && p["name"] != "access_token");
    let body = operation.contains_key("requestBody");
    let secured = operation.contains_key("security");

    let mut invalid = Vec::new();
    if job_id {
        invalid.push("the job id is not a UUID");
    }
    if query {
        invalid.push("a query parameter is not valid");
    }
    if body {
        invalid.push("the body is not JSON of the documented shape, or a field breaks its rule");
    }
    let mut answers: Vec<(u16, String)> = Vec::new();
    if secured && deployment.authenticated {
        answers.push((401, "No bearer token, or one that is not valid".to_owned()));
    }
    if job_id {
        answers.push((404, "No job has this id".to_owned()));
    }
    if body {
        answers.push((
            413,
            format!(
                "The body is larger than orchestrator.max_request_bytes ({} bytes)",
                deployment.max_request_bytes
            ),
        ));
        answers.push((415, "The body is not sent as application/json".to_owned()));
    }
    if !invalid.is_empty() {
        answers.push((422, capitalised(&invalid.join("; or "))));
    }
    answers.push((
        500,
        "An internal error: a bug, whose cause is logged".to_owned(),
    ));
    // Every job and queue route reads or writes the store.
    if path.starts_with("/jobs") || path.starts_with("/queue") {
        answers.push((
            503,
            "The database is unavailable; the detail says how (unreachable, busy, read-only, full, failing)"
                .to_owned(),
        ));
    }

    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(responses) = responses {
        for (status, description) in answers {
            responses
                .entry(status.to_string())
                .or_insert_with(|| error_response(status, &description));
        }
    }
    if !deployment.authenticated {
        operation.remove("security");
    }
}

/// A response whose body is the API's error, `{"detail": "..."}`.
fn error_response(status: u16, description: &str) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    });
    if status == 401 {
        response["headers"] = json!({"WWW-Authenticate": {
            "description": "`Bearer`",
            "schema": {"type": "string"},
        }});
    }
    response
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

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

/// `/openapi.json` (serving `document`), `/docs` (Swagger UI) and `/redoc`.
pub fn routes<S: Clone + Send + Sync + 'static>(document: Value) -> Router<S> {
    let swagger: Router<S> = SwaggerUi::new("/docs")
        .external_url_unchecked("/openapi.json", document)
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
