//! The job routes. Handlers only write desired state (a new job, an approval,
//! a cancel request, a publish retry) and read status; the controller does
//! everything else.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::encoding;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{IgnoredBody, JobIdPath, JsonBody, QueryParams};
use super::models::{
    AllowEgressRequest, AllowanceView, ApprovalView, ApproveRequest, AuditResponse,
    DecisionResponse, DiffResponse, EgressResponse, EgressSummary, EgressView, EventView,
    JobStatusResponse, JobSummary, ListQuery, MessageResponse, SpawnRequest, SpawnResponse,
    TelemetryResponse,
};
use super::policy::SpawnPolicy;
use super::queue::QueueSnapshot;
use crate::config::AccessRole;
use crate::job::admission::{LoadLevel, MAX_PRIORITY, MIN_PRIORITY};
use crate::job::{
    DEFAULT_PROJECT_ID, Deletion, Job, JobId, JobSource, JobSpec, Phase, Role, TransitionError,
    Verdict, timestamp_now,
};
use crate::source::patch;
use crate::store::view::CachedJob;
use crate::store::view::pages::Page;
use crate::store::{
    EgressAllowance, EgressTraffic, EgressVerdict, JobFilter, SpecChange, SpecUpdate,
};
use icarus_core::egress::{AllowList, Destination};

/// Create a job; it starts when admission allows.
#[utoipa::path(post, path = "/jobs/spawn", tag = "jobs", operation_id = "spawn_job", request_body = SpawnRequest,
    security(("api_token" = [])),
    responses(
        (status = 201, description = "Created; it starts when admission allows", body = SpawnResponse),
        (status = 403, description = "The role may not submit, or not at this priority (queue.max_priority); or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 429, description = "This token submitted more than auth.spawns_per_minute jobs in the last minute (authentication on)", body = ErrorBody),
        (status = 503, description = "Host load is critical (sentinel RED), or the database is unavailable", body = ErrorBody),
    ))]
pub async fn spawn(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<SpawnRequest>,
) -> ApiResult<(StatusCode, Json<SpawnResponse>)> {
    caller.require(AccessRole::Submitter, "submitting a job")?;
    let priority = priority_for(&state, &caller, request.priority)?;
    let mut spec = validate_spawn(request, &state.policy)?;
    spec.priority = priority;
    spec.submitted_by = Some(caller.name.clone());
    state.auth.allow_spawn(&caller)?;
    if *state.load.borrow() == LoadLevel::Red {
        return Err(ApiError::Unavailable(
            "Host resources are critical (sentinel RED); no new job is accepted now".to_owned(),
        ));
    }
    let job = create(&state, spec).await?;
    tracing::info!(job = %job.id, submitter = %caller.name, "job created");
    let response = SpawnResponse {
        job_id: job.id.to_string(),
        status: job.status.phase,
        message: "Job created and queued for execution".to_owned(),
    };
    Ok((StatusCode::CREATED, Json(response)))
}

/// The priority a spawn gets: the one asked for, within the schema's range
/// (else 422) and the caller's role's cap (else 403), or the default.
fn priority_for(state: &AppState, caller: &Caller, asked: Option<i32>) -> ApiResult<i32> {
    let Some(priority) = asked else {
        return Ok(state.queue.default_priority);
    };
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        return Err(ApiError::Unprocessable(format!(
            "priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {priority}"
        )));
    }
    let cap = state.queue.max_priority.of(caller.role);
    if priority > cap {
        tracing::warn!(caller = %caller.name, priority, cap, "priority above the role's cap refused");
        return Err(ApiError::Forbidden(format!(
            "priority {priority} is above what {} may ask for: {cap} (queue.max_priority.{})",
            caller.name,
            caller.role_name()
        )));
    }
    Ok(priority)
}

/// Records the job upstream first, if there is an upstream (which names
/// it), then in the store.
async fn create(state: &AppState, spec: JobSpec) -> ApiResult<Job> {
    let Some(upstream) = &state.upstream else {
        let job = Job::new(spec, timestamp_now());
        return Ok(state.store.create_job(&job).await?);
    };
    let id = upstream.create(&spec).await?;
    let job = Job::with_id(id, spec, timestamp_now());
    match state.store.create_job(&job).await {
        Ok(stored) => Ok(stored),
        // The resource watch may have brought the new job in first.
        Err(error) => match state.store.get_job(job.id).await {
            Ok(Some(stored)) => Ok(stored),
            _ => Err(error.into()),
        },
    }
}

fn validate_spawn(request: SpawnRequest, policy: &SpawnPolicy) -> ApiResult<JobSpec> {
    policy.check_task(&request.task)?;
    policy.check_project_path(&request.project_path)?;
    for (field, image) in [
        ("builder_image", &request.builder_image),
        ("checker_image", &request.checker_image),
    ] {
        if let Some(image) = image {
            policy.check_image(field, image)?;
        }
    }
    let source = request
        .source
        .map(|source| {
            policy.check_repository(&source.repository)?;
            if let Some(reference) = &source.reference {
                policy.check_reference(reference)?;
            }
            Ok::<_, ApiError>(JobSource {
                repository: source.repository,
                reference: source.reference,
            })
        })
        .transpose()?;
    if let Some(code) = &request.test_code {
        policy.check_test_code(code)?;
    }
    if let Some(rules) = &request.allowed_domains {
        policy.check_job_egress(rules)?;
    }
    let project_id = request
        .project_id
        .unwrap_or_else(|| DEFAULT_PROJECT_ID.to_owned());
    policy.check_project_id(&project_id)?;
    let required_approvals = policy
        .approvals
        .required_for(request.required_approvals)
        .map_err(ApiError::Unprocessable)?;
    Ok(JobSpec {
        required_approvals,
        builder_image: request.builder_image,
        checker_image: request.checker_image,
        source,
        phase: request.phase.unwrap_or_default(),
        test_code: request.test_code,
        project_id,
        allowed_domains: request.allowed_domains,
        ..JobSpec::new(request.task, request.project_path)
    })
}

/// List jobs, newest first; of one phase, one project, or both.
#[utoipa::path(get, path = "/jobs", tag = "jobs", operation_id = "list_jobs", params(ListQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "Jobs, newest first; a full page names the next in `Link`", body = [JobSummary],
            headers(("Link" = String, description = "`</jobs?limit=N&after=ID...>; rel=\"next\"` when the page is full"))),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Response> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    let limit = query.limit.unwrap_or(50);
    let limit = u32::try_from(limit)
        .ok()
        .filter(|l| (1..=1000).contains(l))
        .ok_or_else(|| {
            ApiError::Unprocessable(format!("limit must be between 1 and 1000, not {limit}"))
        })?;
    let phase = match query.status.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<Phase>()
                .map_err(|e| ApiError::Unprocessable(e.to_string()))?,
        ),
    };
    if let Some(project_id) = &query.project_id {
        state.policy.check_project_id(project_id)?;
    }
    let after = match query.after.as_deref() {
        None => None,
        Some(text) => Some(text.parse::<JobId>().map_err(|_| {
            ApiError::Unprocessable(format!("after must be a job id (a UUID), not '{text}'"))
        })?),
    };
    let filter = JobFilter {
        phase,
        project_id: query.project_id.clone(),
        limit,
        after,
    };
    let gzip = encoding::accepts_gzip(&headers);
    let fill = match state.store.page_or_fill(&filter).await {
        Ok(page) => return Ok(page_response(&page, gzip)),
        Err(fill) => fill,
    };
    let ids = state.store.list_job_ids(filter).await?;
    let next = (ids.len() == limit as usize)
        .then(|| ids.last())
        .flatten()
        .map(|last| next_page(phase, query.project_id.as_deref(), limit, *last));
    let mut jobs = state.store.read_jobs(&ids).await?;
    // A job that left the phase asked for since its id was read is left out.
    jobs.retain(|cached| phase.is_none_or(|phase| cached.job.status.phase == phase));
    let pending: Vec<Job> = jobs
        .iter()
        .filter(|c| c.job.status.phase == Phase::Pending)
        .map(|c| c.job.clone())
        .collect();
    let queue = match pending.is_empty() {
        false => Some(QueueSnapshot::load(&state, &pending).await?),
        true => None,
    };
    let rows = jobs.iter().map(|cached| match &queue {
        Some(queue) if cached.job.status.phase == Phase::Pending => {
            let mut row = JobSummary::from(&cached.job);
            row.queue = queue.view(&cached.job);
            to_json_bytes(&row)
        }
        _ => cached.row(|job| to_json_bytes(&JobSummary::from(job))),
    });
    let body = json_array(rows);
    let page = Arc::new(match queue {
        // A pending job's place, reason and estimate move without a write
        // of any job (with time, the host's load, another replica's hold).
        Some(_) => Page::fresh_for(body, next, QUEUE_PAGE_FRESH),
        None => Page::new(body, next),
    });
    state.store.keep_page(fill, page.clone());
    Ok(page_response(&page, gzip))
}

/// How long a list page showing pending jobs is answered again as it was
/// (unless a job or this replica's queue levers change first): what else
/// moves their rows shows up within this time. A backlog's pages cost a
/// read of the database and a place in the queue per row; a dashboard
/// polling them at once is answered from memory.
const QUEUE_PAGE_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A list page: its rows, gzip-compressed once per kept page for a client
/// that accepts it, and a `Link` to the next page when there may be one.
fn page_response(page: &Page, gzip: bool) -> Response {
    let mut response = if gzip && page.body.len() >= encoding::MIN_GZIP_BYTES {
        let mut response = json_response(page.encoded(encoding::gzip));
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        json_response(page.body.clone())
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(url) = &page.next
        && let Ok(link) = HeaderValue::try_from(format!("<{url}>; rel=\"next\""))
    {
        headers.insert(header::LINK, link);
    }
    response
}

/// The address of the page after `last`, under the same filters (as
/// checked: a phase's name, a project id's characters, nothing to escape).
fn next_page(phase: Option<Phase>, project_id: Option<&str>, limit: u32, last: JobId) -> String {
    let mut url = format!("/jobs?limit={limit}&after={last}");
    if let Some(phase) = phase {
        url.push_str(&format!("&status={}", phase.as_str()));
    }
    if let Some(project_id) = project_id {
        url.push_str(&format!("&project_id={project_id}"));
    }
    url
}

/// A job's current status.
#[utoipa::path(get, path = "/jobs/{job_id}/status", tag = "jobs", operation_id = "get_job_status",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "The job's status", body = JobStatusResponse),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Response> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    let cached = read(&state, id).await?;
    let facts = state.store.read_facts(&cached).await?;
    let response = || {
        JobStatusResponse::from(&cached.job)
            .with_usage(&facts.usage)
            .with_egress(summarise_egress(
                &facts.egress_traffic,
                &facts.egress_allowances,
            ))
    };
    // A pending job's place moves as others come and go: never kept.
    if cached.job.status.phase == Phase::Pending {
        let mut pending = response();
        pending.queue = QueueSnapshot::load(&state, std::slice::from_ref(&cached.job))
            .await?
            .view(&cached.job);
        return Ok(json_response(to_json_bytes(&pending)));
    }
    Ok(json_response(cached.status(|| to_json_bytes(&response()))))
}

/// The latest progress an agent reported, and the latest usage Icarus measured.
#[utoipa::path(get, path = "/jobs/{job_id}/telemetry", tag = "jobs", operation_id = "get_job_telemetry",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "The latest progress report, if any", body = TelemetryResponse),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn telemetry(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<TelemetryResponse>> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    let cached = read(&state, id).await?;
    let facts = state.store.read_facts(&cached).await?;
    Ok(Json(
        TelemetryResponse::new(&cached.job, facts.reported.clone())
            .with_measured(facts.measured.clone()),
    ))
}

/// The checker's audit report.
#[utoipa::path(get, path = "/jobs/{job_id}/audit", tag = "jobs", operation_id = "get_job_audit",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "The checker's latest report", body = AuditResponse),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
        (status = 404, description = "Unknown job, or no report yet", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<AuditResponse>> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    load(&state, id).await?;
    let record = state
        .store
        .latest_audit(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Job {id} has no audit report yet")))?;
    Ok(Json(AuditResponse {
        job_id: id.to_string(),
        audit_report: record.report,
        created_at: record.created_at,
    }))
}

/// Every phase transition of a job, oldest first.
#[utoipa::path(get, path = "/jobs/{job_id}/events", tag = "jobs", operation_id = "list_job_events",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "Every transition, oldest first", body = [EventView]),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<Vec<EventView>>> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    load(&state, id).await?;
    let events = state.store.job_events(id).await?;
    Ok(Json(events.into_iter().map(EventView::from).collect()))
}

/// Every decision people took on a job, oldest first, as recorded when it
/// was taken (`job_approvals`): who, when, the verdict, the comment and
/// the snapshot it was about.
#[utoipa::path(get, path = "/jobs/{job_id}/approvals", tag = "jobs", operation_id = "list_job_approvals",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "Every decision, oldest first", body = [ApprovalView]),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn approvals(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<Vec<ApprovalView>>> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    load(&state, id).await?;
    let decisions = state.store.approvals(id).await?;
    Ok(Json(decisions.iter().map(ApprovalView::from).collect()))
}

/// What the job's agents did through the egress proxy (per agent,
/// destination and verdict: connections, bytes, the latest refusal's
/// words; written about a second after the connection), what people
/// allowed them, and the destinations they asked for that nobody allowed.
#[utoipa::path(get, path = "/jobs/{job_id}/egress", tag = "jobs", operation_id = "get_job_egress",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "Traffic by attempt and role (requests and refusals first, then by first use), allowances oldest first, open requests", body = EgressResponse),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn egress(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> ApiResult<Json<EgressResponse>> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    load(&state, id).await?;
    let traffic = state.store.egress_traffic(id).await?;
    let allowances = state.store.egress_allowances(id).await?;
    let requests = open_requests(&traffic, &allowances);
    Ok(Json(EgressResponse {
        traffic: traffic.into_iter().map(EgressView::from).collect(),
        allowances: allowances.into_iter().map(AllowanceView::from).collect(),
        requests,
    }))
}

/// The job's egress for its status: totals and open requests; `None` if
/// its agents never asked the proxy for anything.
pub(crate) async fn egress_summary(
    store: &crate::store::Store,
    id: JobId,
) -> Result<Option<EgressSummary>, crate::store::StoreError> {
    let traffic = store.egress_traffic(id).await?;
    if traffic.is_empty() {
        return Ok(None);
    }
    let allowances = store.egress_allowances(id).await?;
    Ok(summarise_egress(&traffic, &allowances))
}

/// The job's egress for its status from its traffic and the allowances
/// that count for it; `None` if there was none.
fn summarise_egress(
    traffic: &[EgressTraffic],
    allowances: &[EgressAllowance],
) -> Option<EgressSummary> {
    if traffic.is_empty() {
        return None;
    }
    let mut summary = EgressSummary {
        requests: open_requests(traffic, allowances),
        ..EgressSummary::default()
    };
    for row in traffic {
        match row.verdict {
            EgressVerdict::Allowed => summary.allowed += row.connections,
            EgressVerdict::Refused | EgressVerdict::Unlisted => summary.refused += row.connections,
        }
        summary.bytes_sent += row.bytes_sent;
        summary.bytes_received += row.bytes_received;
    }
    Some(summary)
}

/// The unlisted destinations no allowance of their role covers, each once.
fn open_requests(traffic: &[EgressTraffic], allowances: &[EgressAllowance]) -> Vec<String> {
    let mut requests: Vec<String> = traffic
        .iter()
        .filter(|row| row.verdict == EgressVerdict::Unlisted && row.host != "*")
        .filter(|row| {
            let Ok(destination) = Destination::parse(&row.host) else {
                return false;
            };
            let granted = allowances
                .iter()
                .filter(|allowance| allowance.role == row.role)
                .filter_map(|allowance| allowance.rule.parse().ok())
                .fold(AllowList::default(), AllowList::with);
            !granted.allows(&destination, row.port)
        })
        .map(|row| format!("{}:{}", row.host, row.port))
        .collect();
    requests.dedup();
    requests
}

/// Allow the job's agents of a role (or every job's) a destination beyond
/// their configured list, from their next connection on; recorded with who
/// and when.
#[utoipa::path(post, path = "/jobs/{job_id}/egress/allow", tag = "jobs", operation_id = "allow_job_egress", request_body = AllowEgressRequest,
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "The allowance is recorded", body = MessageResponse),
        (status = 403, description = "The role may not allow egress; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
    ))]
pub async fn allow_egress(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    JsonBody(request): JsonBody<AllowEgressRequest>,
) -> ApiResult<Json<MessageResponse>> {
    caller.require(AccessRole::Approver, "allowing agents a destination")?;
    state.policy.check_egress_rule(&request.domain)?;
    load(&state, id).await?;
    let role = request.role.unwrap_or(Role::Builder);
    let everyone = request.everyone.unwrap_or(false);
    let allowance = EgressAllowance {
        job: (!everyone).then_some(id),
        role,
        rule: request.domain.clone(),
        allowed_by: caller.name.clone(),
        allowed_at: timestamp_now(),
    };
    state.store.allow_egress(&allowance).await?;
    let whose = if everyone {
        format!("every job's {role}")
    } else {
        format!("job {id}'s {role}")
    };
    tracing::info!(job = %id, rule = %request.domain, %role, everyone, by = %caller.name, "egress allowed");
    Ok(Json(MessageResponse {
        message: format!(
            "{} allowed for {whose}, from its next connection",
            request.domain
        ),
    }))
}

/// Approve or reject a job that awaits approval. A job needs approvals from
/// `required_approvals` distinct people (the caller's name is the person);
/// one rejection rejects it. The answer's `status` is the phase the job
/// moves to: `awaiting_approval` while approvals are missing.
#[utoipa::path(post, path = "/jobs/{job_id}/approve", tag = "jobs", operation_id = "approve_job", request_body = ApproveRequest,
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "The decision is recorded", body = DecisionResponse),
        (status = 403, description = "The role may not approve; the caller submitted the job and `auth.separation_of_duties` is on; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 409, description = "The job is not awaiting approval, was already decided (rejected, or approved by enough people), shows another snapshot, or the caller's approval is already counted", body = ErrorBody),
    ))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    JsonBody(request): JsonBody<ApproveRequest>,
) -> ApiResult<Json<DecisionResponse>> {
    caller.require(AccessRole::Approver, "approving or rejecting a job")?;
    check_verdict(&request)?;
    let approved = request.approved;
    let verdict = Verdict {
        approved,
        comment: request.comment.unwrap_or_default(),
        snapshot: request.snapshot,
    };
    let rules = state.policy.approval_rules();
    let job = change_spec(&state, id, |job| {
        job.decide(verdict.clone(), &caller.name, timestamp_now(), rules)
    })
    .await?;
    let tally = job.tally();
    let (message, phase) = match tally.outcome() {
        Some(true) => (format!("Job {id} approved"), Phase::Approved),
        Some(false) => (format!("Job {id} rejected"), Phase::Rejected),
        None => (
            format!(
                "Job {id}: approval {} of {} recorded; {} more needed, each from someone else",
                tally.approvers.len(),
                tally.required,
                tally.required as usize - tally.approvers.len()
            ),
            Phase::AwaitingApproval,
        ),
    };
    tracing::info!(job = %id, approved, by = %caller.name, "decision recorded");
    Ok(Json(DecisionResponse {
        message,
        status: phase,
    }))
}

pub use crate::job::approval::{MAX_COMMENT_CHARS, MAX_SNAPSHOT_CHARS};

fn check_verdict(request: &ApproveRequest) -> ApiResult<()> {
    for (field, value, limit) in [
        ("comment", &request.comment, MAX_COMMENT_CHARS),
        ("snapshot", &request.snapshot, MAX_SNAPSHOT_CHARS),
    ] {
        let length = value.as_deref().map_or(0, |v| v.chars().count());
        if length > limit {
            return Err(ApiError::Unprocessable(format!(
                "{field} is {length} characters long; the limit is {limit}"
            )));
        }
    }
    Ok(())
}

/// Cancel a job that has not finished; its agents are stopped and removed.
#[utoipa::path(post, path = "/jobs/{job_id}/cancel", tag = "jobs", operation_id = "cancel_job",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "The cancel is recorded", body = DecisionResponse),
        (status = 403, description = "The role may not cancel this job; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 409, description = "The job already finished", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    _body: IgnoredBody,
) -> ApiResult<Json<DecisionResponse>> {
    caller.require(AccessRole::Submitter, "cancelling a job")?;
    let job = load(&state, id).await?;
    let own = job.spec.submitted_by.as_deref() == Some(caller.name.as_str());
    if !own {
        caller.require(AccessRole::Admin, "cancelling someone else's job")?;
    }
    change_spec(&state, id, Job::request_cancel).await?;
    tracing::info!(job = %id, "cancel requested");
    Ok(Json(DecisionResponse {
        message: format!("Job {id} cancellation requested"),
        status: Phase::Cancelled,
    }))
}

/// Delete a finished job: its workspace, stored output (logs, diff,
/// telemetry, audit, stream) and its record with its events go. The
/// controller carries it out within moments; the job's status answers 404
/// once it is done. In Kubernetes mode its IcarusJob is deleted too (which
/// is the same deletion). A job that has not finished: 409, cancel it first.
#[utoipa::path(delete, path = "/jobs/{job_id}", tag = "jobs", operation_id = "delete_job",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 202, description = "The deletion is recorded; the controller carries it out", body = MessageResponse),
        (status = 403, description = "The role may not delete this job (an admin may delete any, a submitter their own); or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 409, description = "The job has not finished: cancel it first", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    _body: IgnoredBody,
) -> ApiResult<(StatusCode, Json<MessageResponse>)> {
    caller.require(AccessRole::Submitter, "deleting a job")?;
    let job = load(&state, id).await?;
    let own = job.spec.submitted_by.as_deref() == Some(caller.name.as_str());
    if !own {
        caller.require(AccessRole::Admin, "deleting someone else's job")?;
    }
    let full = Deletion { keep_events: false };
    change_spec(&state, id, |job| job.request_delete(full)).await?;
    // The deletion is recorded: the leader's sync deletes the IcarusJob
    // when it sees it, should this first try fail.
    if let Some(upstream) = &state.upstream
        && let Err(error) = upstream.delete(id).await
    {
        tracing::warn!(job = %id, %error, "IcarusJob not deleted now; the sync will");
    }
    tracing::info!(job = %id, by = %caller.name, "deletion requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageResponse {
            message: format!("Job {id} will be deleted with its workspace, logs, diff and events"),
        }),
    ))
}

/// Publish again after a push failed; the kept commit is pushed, not redone.
#[utoipa::path(post, path = "/jobs/{job_id}/publish", tag = "jobs", operation_id = "publish_job",
    params(JobIdPath), security(("api_token" = [])),
    responses(
        (status = 200, description = "The publish retry is recorded", body = DecisionResponse),
        (status = 403, description = "The role may not publish; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 409, description = "The job is not one whose publishing failed", body = ErrorBody),
    ))]
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    _body: IgnoredBody,
) -> ApiResult<Json<DecisionResponse>> {
    caller.require(AccessRole::Approver, "publishing a job")?;
    change_spec(&state, id, Job::request_publish_retry).await?;
    tracing::info!(job = %id, "publish retry requested");
    Ok(Json(DecisionResponse {
        message: format!("Job {id} will try to publish again"),
        status: Phase::Approved,
    }))
}

/// The header naming the snapshot a diff shows (empty where there is none).
pub const SNAPSHOT_HEADER: &str = "x-icarus-snapshot";

/// The builder's change against the base, for review: unified diff text
/// (default) or, with `?format=json`, files with their status, line counts
/// and hunks. Either way the `X-Icarus-Snapshot` header names the snapshot
/// shown, which an approval may quote.
#[utoipa::path(get, path = "/jobs/{job_id}/diff", tag = "jobs", operation_id = "get_job_diff",
    params(JobIdPath, DiffQuery), security(("api_token" = [])),
    responses(
        (status = 200, description = "The diff: unified diff text, or with `format=json` its files and hunks",
            headers(("X-Icarus-Snapshot" = String, description = "The snapshot shown (empty where there is none), which an approval may quote")),
            content(
                (String = "text/plain"),
                (DiffResponse = "application/json"),
            )),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
        (status = 409, description = "The job has no diff yet: it is recorded when the builder succeeds", body = ErrorBody),
    ))]
pub async fn diff(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    QueryParams(query): QueryParams<DiffQuery>,
) -> ApiResult<Response> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    let job = load(&state, id).await?;
    let Some(record) = state.store.diff(id).await? else {
        return Err(ApiError::Conflict(format!(
            "Job {id} is {}; its diff is recorded when the builder succeeds",
            job.status.phase
        )));
    };
    let snapshot_header = record.snapshot.clone().unwrap_or_default();
    let body = match query.format.unwrap_or(DiffFormat::Text) {
        DiffFormat::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            record.diff,
        )
            .into_response(),
        DiffFormat::Json => Json(DiffResponse {
            job_id: id.to_string(),
            base_commit: record.base_commit,
            summary: patch::parse(&record.diff),
            snapshot: record.snapshot,
        })
        .into_response(),
    };
    Ok(([(SNAPSHOT_HEADER, snapshot_header)], body).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// `text` (the default) or `json`.
    pub format: Option<DiffFormat>,
}

/// How a diff is shown.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiffFormat {
    /// Unified diff text.
    Text,
    /// Files with their status, line counts and hunks.
    Json,
}

/// The job as reads show it (from the read view), or 404.
async fn read(state: &AppState, id: JobId) -> ApiResult<Arc<CachedJob>> {
    state
        .store
        .read_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Job {id} not found")))
}

/// Our response types always serialise (no maps with non-string keys, no
/// failing `Serialize`), as the streams' messages do.
fn to_json_bytes(value: &impl serde::Serialize) -> Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON array of rendered elements, without parsing them again.
fn json_array(elements: impl Iterator<Item = Bytes>) -> Bytes {
    let mut body = Vec::with_capacity(1024);
    body.push(b'[');
    for (index, element) in elements.enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&element);
    }
    body.push(b']');
    body.into()
}

pub(super) async fn load(state: &AppState, id: JobId) -> ApiResult<Job> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Job {id} not found")))
}

/// Whether `current` already carries the requests of `wanted` (the same
/// decision by the same person, the cancel, the publish retries), whenever
/// they were recorded.
fn already_applied(current: &JobSpec, wanted: &JobSpec) -> bool {
    let decisions = |spec: &JobSpec| -> Vec<_> {
        spec.approvals
            .iter()
            .map(|d| (d.approved, d.comment.clone(), d.decided_by.clone()))
            .collect()
    };
    decisions(current) == decisions(wanted)
        && current.cancel_requested == wanted.cancel_requested
        && current.publish_requests == wanted.publish_requests
        && current.delete_requested == wanted.delete_requested
}

/// Changes the spec through the store's compare-and-swap, which decides
/// again after a lost race, so a decision is never written over a state that
/// forbids it.
async fn change_spec(
    state: &AppState,
    id: JobId,
    change: impl Fn(&Job) -> Result<JobSpec, TransitionError> + Send,
) -> ApiResult<Job> {
    let change = RouteChange {
        state,
        change,
        wanted: None,
    };
    Ok(state.store.update_spec(id, change).await?.job)
}

/// A route's spec change, written upstream (if there is an upstream) before
/// the store.
struct RouteChange<'a, F> {
    state: &'a AppState,
    change: F,
    /// The spec last decided: a write that lost its race may have lost it to
    /// the resource watch bringing in this very change from upstream.
    wanted: Option<JobSpec>,
}

impl<F> SpecChange<ApiError> for RouteChange<'_, F>
where
    F: Fn(&Job) -> Result<JobSpec, TransitionError> + Send,
{
    async fn decide(&mut self, job: &Job) -> ApiResult<SpecUpdate> {
        if let Some(wanted) = &self.wanted
            && already_applied(&job.spec, wanted)
        {
            return Ok(SpecUpdate::Unchanged);
        }
        let mut changed = job.clone();
        changed.spec = (self.change)(job)?;
        if let Some(upstream) = &self.state.upstream {
            upstream.write_spec(&changed, &job.spec).await?;
        }
        self.wanted = Some(changed.spec.clone());
        Ok(SpecUpdate::write(changed.spec))
    }
}
