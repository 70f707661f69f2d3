//! `POST /jobs/{job_id}/callback`: how agents report. Reports are observations
//! kept as history (telemetry, audit report, completion or error); the
//! controller reads them when it plans, and an error report wakes it.
//!
//! An agent is hostile input, so what one attempt can store is bounded: each
//! field has a size limit, an agent reports its outcome once and the checker
//! its audit once (a second is 409), and the store keeps only the newest
//! [`TELEMETRY_KEPT`](crate::store::TELEMETRY_KEPT) progress samples per agent.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JobIdPath, JsonBody, QueryParams};
use super::jobs::load;
use super::models::{CallbackRequest, MessageResponse, ReportStatus, RoleName};
use crate::job::{Job, JobId, Role, timestamp_now};
use crate::metrics::{CallbackOutcome, ReportKind};
use crate::store::{AgentReport, AuditRecord, ReportOutcome, TelemetrySample, TelemetrySource};

/// (Internal) An agent reports progress, completion, its audit report or an error.
#[utoipa::path(post, path = "/jobs/{job_id}/callback", tag = "agents", operation_id = "report_from_agent", request_body = CallbackRequest,
    params(JobIdPath, CallerQuery),
    responses(
        (status = 200, description = "The report is recorded", body = MessageResponse),
        (status = 401, description = "No token, or not this agent's", body = ErrorBody),
        (status = 403, description = "Refused for browser safety: a foreign Origin", body = ErrorBody),
        (status = 409, description = "No agent of this job is running, or this agent already reported its outcome (or the checker its audit) for this attempt", body = ErrorBody),
        (status = 429, description = "Too many progress reports from this agent", body = ErrorBody),
    ))]
pub async fn callback(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
    QueryParams(caller): QueryParams<CallerQuery>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CallbackRequest>,
) -> ApiResult<Json<MessageResponse>> {
    let kind = report_kind(&request);
    let answer = record(&state, id, &caller, &headers, &request).await;
    state.metrics.callbacks.report(kind, counted_as(&answer));
    answer
}

/// What a report carries, as counted.
fn report_kind(request: &CallbackRequest) -> ReportKind {
    if request.audit_report.is_some() {
        return ReportKind::Audit;
    }
    match request.status {
        None => ReportKind::Progress,
        Some(ReportStatus::Completed) => ReportKind::Completed,
        Some(ReportStatus::Error) => ReportKind::Error,
    }
}

/// How a report was answered, as counted.
fn counted_as<T>(answer: &ApiResult<T>) -> CallbackOutcome {
    match answer {
        Ok(_) => CallbackOutcome::Accepted,
        Err(ApiError::Unauthorized(_)) => CallbackOutcome::Unauthorized,
        Err(ApiError::Conflict(_)) => CallbackOutcome::Conflict,
        Err(ApiError::TooManyRequests(_)) => CallbackOutcome::RateLimited,
        Err(ApiError::Unprocessable(_)) => CallbackOutcome::Invalid,
        Err(ApiError::NotFound(_)) => CallbackOutcome::NotFound,
        Err(ApiError::Unavailable(_)) => CallbackOutcome::Unavailable,
        Err(_) => CallbackOutcome::Failed,
    }
}

/// Checks a report and stores what it carries.
async fn record(
    state: &AppState,
    id: JobId,
    caller: &CallerQuery,
    headers: &HeaderMap,
    request: &CallbackRequest,
) -> ApiResult<Json<MessageResponse>> {
    let job = load(state, id).await?;
    let authenticated = authenticate(state, &job, caller, headers)?;
    let role = reporting_role(&job, authenticated, caller.attempt)?;
    let outcome = request.status.map(|status| match status {
        ReportStatus::Completed => ReportOutcome::Completed,
        ReportStatus::Error => ReportOutcome::Error,
    });
    let has_telemetry = request.current_tool.is_some()
        || request.cpu_usage.is_some()
        || request.ram_usage_mb.is_some();
    if outcome.is_none() && !has_telemetry {
        return Err(ApiError::Unprocessable(
            "callback body must contain 'status' or at least one of 'current_tool', 'cpu_usage', 'ram_usage_mb'"
                .to_owned(),
        ));
    }
    check_numbers(request)?;
    check_sizes(request)?;
    if request
        .audit_report
        .as_ref()
        .is_some_and(|r| !r.is_object())
    {
        return Err(ApiError::Unprocessable(
            "audit_report must be a JSON object".to_owned(),
        ));
    }
    if request.audit_report.is_some() && role != Role::Checker {
        return Err(ApiError::Conflict(format!(
            "Job {id} is {}; audit reports come from the checker",
            job.status.phase
        )));
    }
    let progress_only = outcome.is_none() && request.audit_report.is_none();
    if progress_only && !state.progress_reports.allows(id, role) {
        return Err(ApiError::TooManyRequests(format!(
            "Job {id}: its {role} sent more than {} progress reports per second; this one was not stored",
            state.progress_reports.per_second()
        )));
    }
    let attempt = job.status.attempt;
    refuse_a_second(
        state,
        &job,
        role,
        outcome.is_some(),
        request.audit_report.is_some(),
    )
    .await?;
    let now = timestamp_now();
    if has_telemetry {
        let sample = TelemetrySample {
            timestamp: now,
            cpu_usage: request.cpu_usage,
            ram_usage_mb: request.ram_usage_mb,
            current_tool: request.current_tool.clone(),
            role,
            attempt,
            source: TelemetrySource::Agent,
        };
        state.store.record_telemetry(id, &sample).await?;
    }
    if let Some(report) = &request.audit_report {
        let record = AuditRecord {
            report: report.clone(),
            created_at: now,
            attempt,
        };
        state.store.record_audit(id, &record).await?;
    }
    if let Some(outcome) = outcome {
        let message = match outcome {
            ReportOutcome::Error => request.error.clone().or(request.message.clone()),
            ReportOutcome::Completed => request.message.clone(),
        };
        // An error report becomes the job's error_message: an agent that
        // quotes its own callback URL must not publish its token there.
        let token = state.agent_keys.token(id, role, attempt);
        let message =
            message.map(|text| crate::logs::redact(&text, &[token.as_str()]).into_owned());
        let report = AgentReport {
            role,
            attempt,
            outcome,
            message,
            created_at: now,
        };
        state.store.record_agent_report(id, &report).await?;
        tracing::info!(job = %id, %role, outcome = outcome.as_str(), "agent reported");
    }
    Ok(Json(MessageResponse {
        message: format!("Callback for job {id} recorded"),
    }))
}

/// The longest `message` or `error`, in characters: a sentence or a stack trace.
pub const MAX_MESSAGE_CHARS: usize = 16 * 1024;
/// The longest `current_tool`, in characters: a name.
pub const MAX_TOOL_CHARS: usize = 256;
/// The largest audit report, serialised, in bytes.
pub const MAX_AUDIT_REPORT_BYTES: usize = 256 * 1024;

/// Every field within its limit, so one report stores a known amount.
/// Text is counted in characters, as the OpenAPI document's `maxLength` is.
fn check_sizes(request: &CallbackRequest) -> ApiResult<()> {
    let too_long = |field: &str, length: usize, limit: usize, unit: &str| {
        Err(ApiError::Unprocessable(format!(
            "{field} is {length} {unit} long; the limit is {limit}"
        )))
    };
    for (field, value, limit) in [
        ("message", &request.message, MAX_MESSAGE_CHARS),
        ("error", &request.error, MAX_MESSAGE_CHARS),
        ("current_tool", &request.current_tool, MAX_TOOL_CHARS),
    ] {
        let length = value.as_deref().map_or(0, |v| v.chars().count());
        if length > limit {
            return too_long(field, length, limit, "characters");
        }
    }
    if let Some(report) = &request.audit_report {
        let length = report.to_string().len();
        if length > MAX_AUDIT_REPORT_BYTES {
            return too_long("audit_report", length, MAX_AUDIT_REPORT_BYTES, "bytes");
        }
    }
    Ok(())
}

/// An agent reports its outcome once per attempt, and the checker its audit
/// once: a second changes nothing the controller decides, and only grows the
/// store.
async fn refuse_a_second(
    state: &AppState,
    job: &Job,
    role: Role,
    outcome: bool,
    audit: bool,
) -> ApiResult<()> {
    let attempt = job.status.attempt;
    if outcome {
        let reports = state.store.agent_reports(job.id, attempt).await?;
        if reports.iter().any(|r| r.role == role) {
            return Err(ApiError::Conflict(format!(
                "Job {}: its {role} already reported its outcome for attempt {attempt}",
                job.id
            )));
        }
    }
    if audit
        && let Some(stored) = state.store.latest_audit(job.id).await?
        && stored.attempt == attempt
    {
        return Err(ApiError::Conflict(format!(
            "Job {}: the checker already posted its audit report for attempt {attempt}",
            job.id
        )));
    }
    Ok(())
}

/// Who is calling: the orchestrator puts `?role=...&attempt=...&token=...`
/// in every callback URL it hands out.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallerQuery {
    /// `builder` or `checker`.
    #[param(value_type = Option<RoleName>)]
    pub role: Option<String>,
    /// The attempt the agent belongs to.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295.0)]
    pub attempt: Option<u32>,
    /// The agent's credential (or send it as `Authorization: Bearer ...`).
    pub token: Option<String>,
}

/// The role whose token the caller holds, for this job and attempt. Without
/// a `role` in the query, the token itself says which agent is calling, so
/// one agent can never report as the other.
fn authenticate(
    state: &AppState,
    job: &Job,
    caller: &CallerQuery,
    headers: &HeaderMap,
) -> ApiResult<Role> {
    let claimed = match caller.role.as_deref() {
        None => None,
        Some(text) => Some(Role::parse(text).ok_or_else(|| {
            ApiError::Unprocessable(format!("role must be builder or checker, not '{text}'"))
        })?),
    };
    let Some(token) = caller.token.as_deref().or_else(|| bearer_token(headers)) else {
        tracing::warn!(job = %job.id, "callback without a token refused");
        return Err(ApiError::Unauthorized(
            "callbacks must carry the agent's token: post to ORCHESTRATOR_CALLBACK exactly as given"
                .to_owned(),
        ));
    };
    let attempt = caller.attempt.unwrap_or(job.status.attempt);
    let candidates = claimed.map_or(Role::ALL.to_vec(), |role| vec![role]);
    candidates
        .into_iter()
        .find(|role| state.agent_keys.verify(job.id, *role, attempt, token))
        .ok_or_else(|| {
            tracing::warn!(job = %job.id, ?claimed, attempt, "callback with a foreign token refused");
            ApiError::Unauthorized(format!(
                "the token is not that of an agent of job {} (attempt {attempt})",
                job.id
            ))
        })
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    super::extract::bearer_token(headers)
}

/// Reports are accepted only from an agent the job may be running now: the
/// phase's own agent, or one that called between its start and the write of
/// the phase that started it (a fast agent often does).
fn reporting_role(job: &Job, role: Role, attempt: Option<u32>) -> ApiResult<Role> {
    let phase = job.status.phase;
    let not_running = |what: &str| ApiError::Conflict(format!("Job {} is {phase}; {what}", job.id));
    if attempt.is_some_and(|attempt| attempt != job.status.attempt) {
        return Err(not_running("the report is from another attempt"));
    }
    if job.may_be_running(role, job.status.attempt) {
        Ok(role)
    } else {
        tracing::warn!(job = %job.id, %role, %phase, "report from an agent that is not running refused");
        Err(not_running(&format!("its {role} is not running")))
    }
}

fn check_numbers(request: &CallbackRequest) -> ApiResult<()> {
    for (field, value) in [
        ("cpu_usage", request.cpu_usage),
        ("ram_usage_mb", request.ram_usage_mb),
    ] {
        if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(ApiError::Unprocessable(format!(
                "{field} must be a non-negative number"
            )));
        }
    }
    Ok(())
}
