//! Request and response bodies, in the shapes the seed documents. Fields the
//! seed names keep its names; fields Icarus adds come after them.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::job::timers::{PhaseDurations, Stretch};
use crate::job::{ApprovalDecision, Job, Phase, ProjectPhase, Role};
use crate::store::{
    AgentLog, AgentUsage, EgressAllowance, EgressTraffic, JobEvent, TelemetrySample,
};

/// A string schema that allows these values only.
fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    let values: Vec<&str> = values.into_iter().collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

/// A schema-only stand-in for an enum of the core (whose crate knows
/// nothing of utoipa): a string schema named `$name` in the document,
/// allowing the core's own spellings.
macro_rules! core_enum_schema {
    ($(#[$doc:meta])* $stand_in:ident, $name:literal, $values:expr) => {
        $(#[$doc])*
        pub struct $stand_in;

        impl PartialSchema for $stand_in {
            fn schema() -> RefOr<Schema> {
                string_enum($values)
            }
        }

        impl ToSchema for $stand_in {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

core_enum_schema!(
    /// A job's phase (`Phase` in the document).
    PhaseName,
    "Phase",
    Phase::ALL.map(Phase::as_str)
);
core_enum_schema!(
    /// An agent's role (`Role` in the document).
    RoleName,
    "Role",
    Role::ALL.map(Role::as_str)
);
core_enum_schema!(
    /// The original service's phase of a job (`ProjectPhase` in the document).
    ProjectPhaseName,
    "ProjectPhase",
    ProjectPhase::ALL.map(ProjectPhase::as_str)
);

/// `POST /jobs/spawn`. Unknown fields are refused: a typo must not pass
/// silently as a default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// What the builder should do.
    #[schema(example = "Create a FastAPI endpoint for user authentication")]
    pub task: String,
    /// The workspace path the task is about: an absolute path under one of
    /// `workspace.allowed_project_roots`.
    #[serde(default = "default_project_path")]
    #[schema(example = "/workspace", default = "/workspace")]
    pub project_path: String,
    /// Overrides the configured builder image for this job.
    #[serde(default)]
    pub builder_image: Option<String>,
    /// Overrides the configured checker image for this job.
    #[serde(default)]
    pub checker_image: Option<String>,
    /// A Git repository to check the workspace out from and publish back to.
    #[serde(default)]
    pub source: Option<SourceBody>,
    /// The original service's phase, `I` (when absent or null) or `II`.
    /// Stored, shown and handed to the agents as `ICARUS_PHASE`; it changes
    /// nothing in how the job runs.
    #[serde(default)]
    #[schema(value_type = Option<ProjectPhaseName>, default = "I", example = "I")]
    pub phase: Option<ProjectPhase>,
    /// Tests the builder's code should pass: handed to the builder as the
    /// environment variable `TEST_CODE` (not written into the workspace),
    /// and shown in the job's status. No NUL character.
    #[serde(default)]
    pub test_code: Option<String>,
    /// The project the job belongs to, `default` when absent or null:
    /// 1 to 63 letters, digits, `.`, `_` or `-`, starting and ending with a
    /// letter or digit (a Kubernetes label value). `GET /jobs?project_id=`
    /// lists one project's jobs.
    #[serde(default)]
    #[schema(default = "default", example = "default")]
    pub project_id: Option<String>,
    /// What this job's agents may reach through the egress proxy: at most
    /// 100 rules as in `agents.<role>.allowed_domains` (`name`, `*.name`,
    /// optional `:port`). Each role keeps the rules its configured list
    /// covers, so a job narrows its agents' egress, never widens it (an
    /// entry no configured rule covers is left out). Absent: the lists.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub allowed_domains: Option<Vec<String>>,
    /// Where the job stands in the queue: higher starts first; absent or
    /// null: `queue.default_priority`. Above the caller's role's cap
    /// (`queue.max_priority`): 403. Pending jobs also age (README: "Queue").
    #[serde(default, deserialize_with = "whole_priority")]
    #[schema(minimum = -1000, maximum = 1000, example = 0)]
    pub priority: Option<i32>,
    /// How many distinct people must approve the job: at least
    /// `approval.required` (the default when absent or null), at most
    /// `approval.max_required`; outside that, 422.
    #[serde(default, deserialize_with = "whole_count")]
    #[schema(minimum = 1)]
    pub required_approvals: Option<u32>,
}

/// An integer as JSON Schema counts one: `5`, or `5.0` (a number whose
/// fraction is zero), within what an `i32` holds; null is none.
fn whole_priority<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i32>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = match (number.as_i64(), number.as_f64()) {
        (Some(integer), _) => Some(integer),
        (None, Some(float)) if float.fract() == 0.0 && float.abs() < 1e15 => Some(float as i64),
        _ => None,
    };
    whole
        .and_then(|integer| i32::try_from(integer).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom(format!("{number} is not a whole number from -1000 to 1000"))
        })
}

/// A whole number, written as JSON Schema's `integer` allows: `2` or `2.0`.
fn whole_count<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(number) = Option::<f64>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&number);
    if !whole {
        return Err(serde::de::Error::custom(format!(
            "expected a whole number from 0 to {}, not {number}",
            u32::MAX
        )));
    }
    Ok(Some(number as u32))
}

/// Where a job's code comes from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceBody {
    /// A local repository path or a URL `git clone` accepts.
    #[schema(example = "https://github.com/acme/api.git")]
    pub repository: String,
    /// The base branch, tag or commit; the remote's default branch when absent.
    #[serde(default, rename = "ref")]
    #[schema(example = "main")]
    pub reference: Option<String>,
}

/// `GET /jobs/{job_id}/diff?format=json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffResponse {
    #[schema(format = Uuid)]
    pub job_id: String,
    /// The commit the change is against; none for a job without a source.
    pub base_commit: Option<String>,
    /// The snapshot shown: the tree an approval publishes.
    pub snapshot: Option<String>,
    #[serde(flatten)]
    pub summary: crate::source::patch::DiffSummary,
}

fn default_project_path() -> String {
    "/workspace".to_owned()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SpawnResponse {
    #[schema(format = Uuid)]
    pub job_id: String,
    #[schema(value_type = PhaseName, example = "pending")]
    pub status: Phase,
    pub message: String,
}

/// `POST /jobs/{job_id}/approve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub approved: bool,
    #[serde(default)]
    pub comment: Option<String>,
    /// The snapshot the decider reviewed (`snapshot` of the diff, or its
    /// `X-Icarus-Snapshot` header); any other is refused with 409.
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// The answer to approve and cancel.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecisionResponse {
    pub message: String,
    /// The phase the decision moves the job to.
    #[schema(value_type = PhaseName, example = "approved")]
    pub status: Phase,
}

/// `GET /jobs/{job_id}/status`, and each WebSocket message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobStatusResponse {
    #[schema(format = Uuid)]
    pub job_id: String,
    #[schema(value_type = PhaseName, example = "building")]
    pub status: Phase,
    pub task: String,
    pub created_at: DateTime<Utc>,
    /// When the job reached a terminal phase.
    pub completed_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    /// Why the job is in this phase (`Admitted`, `BuilderFailed`, `ConcurrencyLimit`...).
    pub reason: String,
    /// Why the current agent has not started yet, as its runtime says
    /// (Kubernetes: the scheduler's message); null once it runs.
    pub waiting: Option<String>,
    pub project_path: String,
    pub builder_image: Option<String>,
    pub checker_image: Option<String>,
    pub builder_container_id: Option<String>,
    pub checker_container_id: Option<String>,
    pub builder_exit_code: Option<i64>,
    pub checker_exit_code: Option<i64>,
    pub building_at: Option<DateTime<Utc>>,
    pub checking_at: Option<DateTime<Utc>>,
    pub awaiting_approval_at: Option<DateTime<Utc>>,
    pub approved_at: Option<DateTime<Utc>>,
    /// Which run of the agents this is: raised when the infrastructure cut
    /// one short (see `retry_at`). Starts at 1.
    pub attempt: u32,
    /// When the current attempt may start, if it is a retry.
    pub retry_at: Option<DateTime<Utc>>,
    /// Who submitted the job (`anonymous` when authentication is off).
    pub submitted_by: Option<String>,
    pub source: Option<SourceBody>,
    /// The commit the workspace was checked out at.
    pub base_commit: Option<String>,
    /// The builder's work as recorded when it succeeded: what is reviewed and published.
    pub snapshot: Option<String>,
    /// Where the approved change was pushed.
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// The pull request opened for `branch` (`publish.pull_request`).
    pub pull_request_url: Option<String>,
    /// The decision that settled the job: the rejection, or the approval
    /// that completed the count. Null while approvals are missing.
    pub approval: Option<ApprovalView>,
    /// Every decision on the job, in the order they came (a decision about
    /// another snapshot than `snapshot` does not count).
    #[serde(default)]
    pub approvals: Vec<ApprovalView>,
    /// How many distinct people must approve the job.
    #[serde(default = "one")]
    pub required_approvals: u32,
    /// The distinct people whose approval of `snapshot` is counted, in order.
    #[serde(default)]
    pub approved_by: Vec<String>,
    pub cancel_requested: bool,
    /// Bumped on every write of the job.
    pub resource_version: i64,
    /// The original service's phase (`I` or `II`); changes nothing.
    #[serde(default)]
    #[schema(value_type = ProjectPhaseName)]
    pub phase: ProjectPhase,
    /// The tests handed to the builder (`TEST_CODE`), as submitted.
    #[serde(default)]
    pub test_code: Option<String>,
    /// The project the job belongs to.
    #[serde(default)]
    pub project_id: String,
    /// The job's own narrowing of its agents' egress, as submitted; null:
    /// the roles' configured lists (`GET /jobs/{job_id}/egress` shows what
    /// they did with it).
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    /// How long each part of the job's life took, once it is over (the
    /// part under way is null: its start is its `<phase>_at`). Approval
    /// waits count only here and against `approval.timeout_seconds`: the
    /// agents' and the job's deadlines pause while the job waits on a person.
    #[serde(default)]
    pub phase_seconds: PhaseSecondsView,
    /// What Icarus measured of the builder in this attempt; kept after it ends.
    #[serde(default)]
    pub builder_usage: Option<UsageView>,
    /// What Icarus measured of the checker in this attempt; kept after it ends.
    #[serde(default)]
    pub checker_usage: Option<UsageView>,
    /// What the job's agents did through the egress proxy, every attempt
    /// together, and the destinations they were refused that nobody has
    /// allowed yet; null until their first request (or where the database
    /// cannot say). `GET /jobs/{job_id}/egress` has the detail.
    #[serde(default)]
    pub egress: Option<EgressSummary>,
    /// The job's priority in the queue (higher starts first).
    #[serde(default)]
    pub priority: i32,
    /// While pending: its place in the queue, why it waits, and when it
    /// may start; null otherwise (and in stream messages).
    #[serde(default)]
    pub queue: Option<super::queue::QueueView>,
}

/// A job's egress in its status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EgressSummary {
    /// Connections the proxy allowed (and that have closed).
    pub allowed: u64,
    /// Requests the proxy refused, unlisted or forbidden.
    pub refused: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `host:port` an agent was refused as unlisted and no allowance covers
    /// yet: the job's pending requests, what an approver may allow
    /// (`POST /jobs/{job_id}/egress/allow`).
    pub requests: Vec<String>,
}

/// Seconds spent in each part of a job's life; null until that part is over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhaseSecondsView {
    /// From submission to admission (`building_at`), or to the end of a job
    /// that never started.
    pub queued: Option<f64>,
    /// From admission to the hand-over to the checker, retries included.
    pub building: Option<f64>,
    pub checking: Option<f64>,
    /// From `awaiting_approval_at` to the decision that settled the job, or
    /// to its end (expired, cancelled).
    pub awaiting_approval: Option<f64>,
    /// From submission to the end (`completed_at`).
    pub total: Option<f64>,
}

impl From<PhaseDurations> for PhaseSecondsView {
    fn from(durations: PhaseDurations) -> Self {
        let seconds = |stretch| {
            durations
                .of(stretch)
                .map(|d: chrono::TimeDelta| d.num_milliseconds() as f64 / 1000.0)
        };
        PhaseSecondsView {
            queued: seconds(Stretch::Queued),
            building: seconds(Stretch::Building),
            checking: seconds(Stretch::Checking),
            awaiting_approval: seconds(Stretch::AwaitingApproval),
            total: seconds(Stretch::Total),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    pub approved: bool,
    pub comment: String,
    pub decided_at: DateTime<Utc>,
    /// Who decided (`anonymous` when authentication is off).
    pub decided_by: Option<String>,
    /// The snapshot the decision is about.
    #[serde(default)]
    pub snapshot: Option<String>,
}

impl From<&ApprovalDecision> for ApprovalView {
    fn from(decision: &ApprovalDecision) -> Self {
        ApprovalView {
            approved: decision.approved,
            comment: decision.comment.clone(),
            decided_at: decision.decided_at,
            decided_by: decision.decided_by.clone(),
            snapshot: decision.snapshot.clone(),
        }
    }
}

fn one() -> u32 {
    1
}

/// The decision that settled `job`, if one did.
fn settling_decision(job: &Job) -> Option<&ApprovalDecision> {
    let tally = job.tally();
    match tally.outcome()? {
        true => tally.approvers.last().copied(),
        false => tally.rejection,
    }
}

impl From<&Job> for JobStatusResponse {
    fn from(job: &Job) -> Self {
        let status = &job.status;
        JobStatusResponse {
            job_id: job.id.to_string(),
            status: status.phase,
            task: job.spec.task.clone(),
            created_at: job.created_at,
            completed_at: status.times.finished_at,
            error_message: status.error_message.clone(),
            reason: status.reason.to_string(),
            waiting: status.waiting.clone(),
            project_path: job.spec.project_path.clone(),
            builder_image: job.spec.builder_image.clone(),
            checker_image: job.spec.checker_image.clone(),
            builder_container_id: status.builder.workload_id.clone(),
            checker_container_id: status.checker.workload_id.clone(),
            builder_exit_code: status.builder.exit_code,
            checker_exit_code: status.checker.exit_code,
            building_at: status.times.building_at,
            checking_at: status.times.checking_at,
            awaiting_approval_at: status.times.awaiting_approval_at,
            approved_at: status.times.approved_at,
            attempt: status.attempt,
            retry_at: status.times.retry_at,
            submitted_by: job.spec.submitted_by.clone(),
            source: job.spec.source.as_ref().map(|source| SourceBody {
                repository: source.repository.clone(),
                reference: source.reference.clone(),
            }),
            base_commit: status.source.base_commit.clone(),
            snapshot: status.source.snapshot.clone(),
            branch: status.source.branch.clone(),
            commit: status.source.commit.clone(),
            pull_request_url: status.source.pull_request_url.clone(),
            approval: settling_decision(job).map(ApprovalView::from),
            approvals: job.spec.approvals.iter().map(ApprovalView::from).collect(),
            required_approvals: job.spec.required_approvals.max(1),
            approved_by: job
                .tally()
                .approver_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            cancel_requested: job.spec.cancel_requested,
            resource_version: job.resource_version,
            phase: job.spec.phase,
            test_code: job.spec.test_code.clone(),
            project_id: job.spec.project_id.clone(),
            allowed_domains: job.spec.allowed_domains.clone(),
            phase_seconds: job.phase_durations().into(),
            builder_usage: None,
            checker_usage: None,
            egress: None,
            priority: job.spec.priority,
            queue: None,
        }
    }
}

impl JobStatusResponse {
    /// Adds what was measured of the agents (the current attempt's rows).
    pub fn with_usage(mut self, usage: &[AgentUsage]) -> Self {
        let of = |role: Role| {
            usage
                .iter()
                .find(|u| u.role == role && u.attempt == self.attempt)
                .map(UsageView::from)
        };
        self.builder_usage = of(Role::Builder);
        self.checker_usage = of(Role::Checker);
        self
    }

    /// Adds what the agents did through the egress proxy.
    pub fn with_egress(mut self, egress: Option<EgressSummary>) -> Self {
        self.egress = egress;
        self
    }
}

/// One row of `GET /jobs`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    #[schema(format = Uuid)]
    pub job_id: String,
    pub task: String,
    #[schema(value_type = PhaseName, example = "completed")]
    pub status: Phase,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The project the job belongs to.
    #[serde(default)]
    pub project_id: String,
    /// Why the job is in this phase (for a pending job, why it waits:
    /// `ConcurrencyLimit`, `HostBusy`, `QueuedBehindOlderJobs`...).
    #[serde(default)]
    pub reason: String,
    /// Why the current agent has not started yet, as its runtime says.
    #[serde(default)]
    pub waiting: Option<String>,
    /// Who submitted the job (`anonymous` when authentication is off).
    #[serde(default)]
    pub submitted_by: Option<String>,
    /// The job's priority in the queue (higher starts first).
    #[serde(default)]
    pub priority: i32,
    /// While pending: its place in the queue, why it waits, and when it
    /// may start; null otherwise.
    #[serde(default)]
    pub queue: Option<super::queue::QueueView>,
}

impl From<&Job> for JobSummary {
    fn from(job: &Job) -> Self {
        JobSummary {
            job_id: job.id.to_string(),
            task: job.spec.task.clone(),
            status: job.status.phase,
            created_at: job.created_at,
            completed_at: job.status.times.finished_at,
            project_id: job.spec.project_id.clone(),
            reason: job.status.reason.to_string(),
            waiting: job.status.waiting.clone(),
            submitted_by: job.spec.submitted_by.clone(),
            priority: job.spec.priority,
            queue: None,
        }
    }
}

/// `GET /jobs` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Maximum number of results, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    pub limit: Option<i64>,
    /// Only jobs in this phase.
    #[param(value_type = Option<PhaseName>)]
    pub status: Option<String>,
    /// Only jobs of this project.
    pub project_id: Option<String>,
    /// The next page: the jobs listed after this one (older, under the
    /// same filters), as a full page's `Link: <...>; rel="next"` header
    /// names it. A job that no longer exists has nothing after it.
    #[param(format = Uuid)]
    pub after: Option<String>,
}

/// `GET /jobs/{job_id}/telemetry`: the latest progress report.
///
/// `cpu_usage` and `ram_usage_mb` are always numbers, as in the original
/// service (whose dashboard formats them with `toFixed`): `0.0` before any
/// report, and where the latest report left one out.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TelemetryResponse {
    #[schema(format = Uuid)]
    pub job_id: String,
    #[schema(value_type = PhaseName, example = "building")]
    pub status: Phase,
    /// Percent of a CPU, as the agent last reported it; 0.0 if it did not.
    pub cpu_usage: f64,
    /// Memory in MiB, as the agent last reported it; 0.0 if it did not.
    pub ram_usage_mb: f64,
    pub current_tool: Option<String>,
    /// When the agent sent it; null if no report arrived yet.
    pub timestamp: Option<DateTime<Utc>>,
    /// The fields above are the agent's own report (`agent`).
    #[serde(default)]
    pub source: Option<String>,
    /// The latest sample Icarus measured itself through the runtime (source
    /// `icarus`); null until one was taken or where the runtime cannot say.
    #[serde(default)]
    pub measured: Option<MeasuredSample>,
}

impl TelemetryResponse {
    pub fn new(job: &Job, sample: Option<TelemetrySample>) -> Self {
        TelemetryResponse {
            job_id: job.id.to_string(),
            status: job.status.phase,
            cpu_usage: sample.as_ref().and_then(|s| s.cpu_usage).unwrap_or(0.0),
            ram_usage_mb: sample.as_ref().and_then(|s| s.ram_usage_mb).unwrap_or(0.0),
            current_tool: sample.as_ref().and_then(|s| s.current_tool.clone()),
            source: sample.as_ref().map(|s| s.source.as_str().to_owned()),
            timestamp: sample.map(|s| s.timestamp),
            measured: None,
        }
    }

    pub fn with_measured(mut self, sample: Option<TelemetrySample>) -> Self {
        self.measured = sample.map(|s| MeasuredSample {
            source: s.source.as_str().to_owned(),
            role: s.role.to_string(),
            attempt: s.attempt,
            cpu_usage: s.cpu_usage,
            ram_usage_mb: s.ram_usage_mb,
            timestamp: s.timestamp,
        });
        self
    }
}

/// `GET /jobs/{job_id}/audit`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditResponse {
    #[schema(format = Uuid)]
    pub job_id: String,
    /// The report the checker posted: a JSON object.
    #[schema(value_type = Object)]
    pub audit_report: Value,
    pub created_at: DateTime<Utc>,
}

/// `GET /jobs/{job_id}/events`: one transition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    #[schema(value_type = Option<PhaseName>)]
    pub from: Option<Phase>,
    #[schema(value_type = PhaseName)]
    pub to: Phase,
    pub reason: String,
    pub message: Option<String>,
    pub resource_version: i64,
    pub created_at: DateTime<Utc>,
}

impl From<JobEvent> for EventView {
    fn from(event: JobEvent) -> Self {
        EventView {
            from: event.from,
            to: event.to,
            reason: event.reason.to_string(),
            message: event.message,
            resource_version: event.resource_version,
            created_at: event.created_at,
        }
    }
}

/// `POST /jobs/{job_id}/egress/allow`: a destination a person allows the
/// job's agents of a role beyond their configured list (or every job's).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowEgressRequest {
    /// An allow-list rule: `name`, `*.name` (any name below it), optional
    /// `:port` (else 80 and 443); as a request lists it (`host:port`).
    pub domain: String,
    /// Whose agents: `builder` (the default) or `checker`.
    #[serde(default)]
    #[schema(value_type = Option<RoleName>)]
    pub role: Option<Role>,
    /// For every job's agents of the role, not only this job's (default false).
    #[serde(default)]
    pub everyone: Option<bool>,
}

/// `GET /jobs/{job_id}/egress`: what the job's agents did through the
/// egress proxy, what people allowed them, and what they asked for that
/// nobody has allowed yet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EgressResponse {
    pub traffic: Vec<EgressView>,
    pub allowances: Vec<AllowanceView>,
    /// `host:port` an agent was refused as unlisted and no allowance covers
    /// yet: what an approver may allow.
    pub requests: Vec<String>,
}

/// One allowance that counts for the job's agents.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AllowanceView {
    pub rule: String,
    #[schema(value_type = RoleName)]
    pub role: Role,
    /// `job` (this job's agents) or `everyone` (every job's).
    #[schema(pattern = "^(job|everyone)$")]
    pub scope: String,
    pub allowed_by: String,
    pub allowed_at: DateTime<Utc>,
}

impl From<EgressAllowance> for AllowanceView {
    fn from(allowance: EgressAllowance) -> Self {
        AllowanceView {
            rule: allowance.rule,
            role: allowance.role,
            scope: if allowance.job.is_some() {
                "job"
            } else {
                "everyone"
            }
            .to_owned(),
            allowed_by: allowance.allowed_by,
            allowed_at: allowance.allowed_at,
        }
    }
}

/// `GET /jobs/{job_id}/egress`: what one agent did through the egress proxy
/// with one destination, under one verdict.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EgressView {
    #[schema(value_type = RoleName)]
    pub role: Role,
    pub attempt: u32,
    /// The host as the agent named it; `*` for its destinations beyond the
    /// hundredth (each attempt keeps at most 100 apart).
    pub host: String,
    pub port: u16,
    /// `allowed`; `refused` (an IP literal, a private address, a spent
    /// budget: nobody can lift it); or `unlisted` (no rule lists it: an
    /// approver may allow it).
    #[schema(pattern = "^(allowed|refused|unlisted)$")]
    pub verdict: String,
    /// The latest refusal's words, as the agent was told them.
    pub reason: Option<String>,
    pub connections: u64,
    /// Bytes from the agent to the destination (allowed connections).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Connections cut off at the agent's byte budget.
    pub cut_at_budget: u64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

impl From<EgressTraffic> for EgressView {
    fn from(traffic: EgressTraffic) -> Self {
        EgressView {
            role: traffic.role,
            attempt: traffic.attempt,
            host: traffic.host,
            port: traffic.port,
            verdict: traffic.verdict.as_str().to_owned(),
            reason: traffic.reason,
            connections: traffic.connections,
            bytes_sent: traffic.bytes_sent,
            bytes_received: traffic.bytes_received,
            cut_at_budget: traffic.cut_at_budget,
            first_at: traffic.first_at,
            last_at: traffic.last_at,
        }
    }
}

/// `POST /jobs/{job_id}/callback`: one body type covers the seed's three shapes —
/// progress (`current_tool`, `cpu_usage`, `ram_usage_mb`), completion
/// (`status: "completed"`, optionally with `message` or `audit_report`) and
/// failure (`status: "error"`, `error`).
///
/// A body must hold `status` or at least one of the progress fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CallbackRequest {
    /// The agent's outcome; absent in a progress report.
    #[schema(example = "completed")]
    pub status: Option<ReportStatus>,
    pub message: Option<String>,
    /// Why the agent failed, with `status: "error"`.
    pub error: Option<String>,
    /// The checker's findings, with `status: "completed"`: a JSON object of
    /// at most 256 KiB, serialised.
    #[schema(value_type = Option<Object>)]
    pub audit_report: Option<Value>,
    pub current_tool: Option<String>,
    /// Percent of a CPU.
    #[schema(minimum = 0, maximum = 1.7976931348623157e308)]
    pub cpu_usage: Option<f64>,
    #[schema(minimum = 0, maximum = 1.7976931348623157e308)]
    pub ram_usage_mb: Option<f64>,
}

/// An agent's outcome, in a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Completed,
    Error,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageResponse {
    pub message: String,
}

/// `GET /jobs/{job_id}/logs`: one agent's saved output.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentLogView {
    #[schema(value_type = RoleName, example = "builder")]
    pub role: String,
    pub attempt: u32,
    pub container_id: String,
    pub log: String,
    pub saved_at: DateTime<Utc>,
}

impl From<AgentLog> for AgentLogView {
    fn from(log: AgentLog) -> Self {
        AgentLogView {
            role: log.role.to_string(),
            attempt: log.attempt,
            container_id: log.workload_id,
            log: log.log,
            saved_at: log.created_at,
        }
    }
}

/// What Icarus measured of one agent (`/jobs/{job_id}/status`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    /// CPU time the agent used, in seconds, as of `sampled_at`.
    pub cpu_seconds: f64,
    /// The highest memory in use at any sample, in bytes (page cache left out).
    pub memory_peak_bytes: u64,
    /// Memory in use at the latest sample, in bytes.
    pub memory_bytes: u64,
    pub sampled_at: DateTime<Utc>,
}

impl From<&AgentUsage> for UsageView {
    fn from(usage: &AgentUsage) -> Self {
        UsageView {
            cpu_seconds: usage.cpu_seconds,
            memory_peak_bytes: usage.memory_peak_bytes,
            memory_bytes: usage.memory_bytes,
            sampled_at: usage.sampled_at,
        }
    }
}

/// A telemetry sample Icarus measured (`/jobs/{job_id}/telemetry`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MeasuredSample {
    #[schema(example = "icarus")]
    pub source: String,
    #[schema(value_type = RoleName, example = "builder")]
    pub role: String,
    pub attempt: u32,
    /// Percent of one CPU over the last sampling interval; null for an
    /// agent's first sample.
    pub cpu_usage: Option<f64>,
    pub ram_usage_mb: Option<f64>,
    pub timestamp: DateTime<Utc>,
}
