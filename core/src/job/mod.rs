//! The domain: what a job is, plain data with no I/O.
//!
//! A [`Job`] is a desired-state record ([`JobSpec`]: the task, the approval
//! decision, a cancel request) plus what the controller last observed and
//! decided ([`JobStatus`]). The API only changes the spec (through the checked
//! methods here); the controller only changes the status (through
//! [`plan::plan`]).

pub mod admission;
pub mod approval;
pub mod phase;
pub mod plan;
pub mod project;
pub mod reason;
pub mod timers;
pub mod workload;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

pub use approval::{ApprovalRules, Tally};
pub use phase::Phase;
pub use project::{
    DEFAULT_PROJECT_ID, MAX_PROJECT_ID_CHARS, PROJECT_ID_PATTERN, ProjectPhase,
    TEST_CODE_CEILING_BYTES,
};
pub use reason::Reason;
pub use workload::{ObservedWorkload, Role, WorkloadState};

/// The current time at the precision every store keeps (microseconds), so a
/// timestamp read back equals the one written.
pub fn timestamp_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A job's identity: a UUID, rendered in its hyphenated lowercase form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct JobId(Uuid);

impl JobId {
    pub fn new_random() -> Self {
        JobId(Uuid::new_v4())
    }

    /// The id as a number, for a deterministic spread (a retry's jitter).
    pub(crate) fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The text is not a job id.
#[derive(Debug)]
pub struct InvalidJobId(pub String);

impl fmt::Display for InvalidJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a valid job id (expected a UUID)", self.0)
    }
}

impl std::error::Error for InvalidJobId {}

impl FromStr for JobId {
    type Err = InvalidJobId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text)
            .map(JobId)
            .map_err(|_| InvalidJobId(text.to_owned()))
    }
}

/// The human's verdict on a job that awaits approval.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApprovalDecision {
    pub approved: bool,
    #[cfg_attr(feature = "serde", serde(default))]
    pub comment: String,
    pub decided_at: DateTime<Utc>,
    /// The API caller who decided.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub decided_by: Option<String>,
    /// The snapshot the decision is about: only this tree is published.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub snapshot: Option<String>,
}

/// A human's decision as asked for, before the domain accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub approved: bool,
    pub comment: String,
    /// The snapshot the decider was shown, if they say; another is refused.
    pub snapshot: Option<String>,
}

/// Where the job's code comes from: the workspace starts as a checkout of it,
/// and an approved change is pushed back to it on a branch of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobSource {
    /// A URL `git clone` accepts, or a local repository path where allowed.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 4096)))]
    pub repository: String,
    /// The base: a branch, tag or commit. The remote's default branch when absent.
    /// Never starts with `-` (it reaches git as an argument).
    #[cfg_attr(
        feature = "serde",
        serde(default, rename = "ref", skip_serializing_if = "Option::is_none")
    )]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[^-\s][^\s]*$")))]
    pub reference: Option<String>,
}

/// Desired state: what the user asked for. Written by the API, read by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobSpec {
    pub task: String,
    pub project_path: String,
    /// Overrides `agents.builder.image_name` for this job.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub builder_image: Option<String>,
    /// Overrides `agents.checker.image_name` for this job.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub checker_image: Option<String>,
    /// Every decision people took on the change, in the order they came
    /// (see [`approval`]). Read from a spec written before there could be
    /// several as its one `approval`.
    #[cfg_attr(
        feature = "serde",
        serde(
            default,
            alias = "approval",
            deserialize_with = "one_or_many",
            skip_serializing_if = "Vec::is_empty"
        )
    )]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<ApprovalDecision>"))]
    pub approvals: Vec<ApprovalDecision>,
    /// How many distinct people must approve; fixed at submission.
    #[cfg_attr(
        feature = "serde",
        serde(default = "one", skip_serializing_if = "is_one")
    )]
    pub required_approvals: u32,
    #[cfg_attr(feature = "serde", serde(default))]
    pub cancel_requested: bool,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub source: Option<JobSource>,
    /// The API caller who submitted the job.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub submitted_by: Option<String>,
    /// Raised by each request to publish again after a failed push.
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_zero"))]
    pub publish_requests: u32,
    /// The original service's phase (see [`project`]): stored, shown and
    /// handed to the agents; it changes nothing in the lifecycle.
    #[cfg_attr(feature = "serde", serde(default))]
    pub phase: ProjectPhase,
    /// Tests the submitter wants the builder's code to pass, handed to the
    /// builder as `TEST_CODE`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub test_code: Option<String>,
    /// The project the job belongs to ([`DEFAULT_PROJECT_ID`] unless named).
    #[cfg_attr(feature = "serde", serde(default = "default_project_id"))]
    pub project_id: String,
    /// What this job's agents may reach through the egress proxy, narrowing
    /// their roles' configured lists (each role keeps the rules of its list
    /// that this one covers; never more); `None`: the configured lists.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub allowed_domains: Option<Vec<String>>,
    /// Where the job stands in the queue: higher is admitted first (see
    /// [`admission`]). Fixed at submission; jobs from before priorities
    /// existed have 0.
    #[cfg_attr(feature = "serde", serde(default))]
    pub priority: i32,
    /// Asked to go once finished (`DELETE /jobs/{id}`, retention, its
    /// IcarusJob deleted): its workspace and stored output are removed,
    /// and its record too unless the events are kept.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub delete_requested: Option<Deletion>,
}

/// What a deletion removes besides the workspace and the stored output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Deletion {
    /// Keep the job's record and its transitions (`retention.keep_events`);
    /// else they go too.
    pub keep_events: bool,
}

#[cfg(feature = "serde")]
fn one() -> u32 {
    1
}

#[cfg(feature = "serde")]
fn is_one(n: &u32) -> bool {
    *n == 1
}

/// A list of decisions, or the one decision (or `null`) a spec written
/// before there could be several held.
#[cfg(feature = "serde")]
fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<ApprovalDecision>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<ApprovalDecision>),
        One(Option<ApprovalDecision>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(decisions) => decisions,
        OneOrMany::One(decision) => decision.into_iter().collect(),
    })
}

#[cfg(feature = "serde")]
fn default_project_id() -> String {
    DEFAULT_PROJECT_ID.to_owned()
}

impl JobSpec {
    /// A spec asking only for `task` in `project_path`: the configured
    /// images, no source, no tests, phase I of the default project, no
    /// decision yet.
    pub fn new(task: impl Into<String>, project_path: impl Into<String>) -> Self {
        JobSpec {
            task: task.into(),
            project_path: project_path.into(),
            builder_image: None,
            checker_image: None,
            approvals: Vec::new(),
            required_approvals: 1,
            cancel_requested: false,
            source: None,
            submitted_by: None,
            publish_requests: 0,
            phase: ProjectPhase::I,
            test_code: None,
            project_id: DEFAULT_PROJECT_ID.to_owned(),
            allowed_domains: None,
            priority: 0,
            delete_requested: None,
        }
    }
}

#[cfg(feature = "serde")]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What happened to the job's code: the checkout's base and where it was published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SourceStatus {
    /// The commit the workspace was checked out at.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub base_commit: Option<String>,
    /// The tree recorded when the builder succeeded: what is audited,
    /// reviewed and published. None where workspaces cannot be read.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub snapshot: Option<String>,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub branch: Option<String>,
    /// The commit pushed to `branch`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub commit: Option<String>,
    /// The pull request opened for `branch`, if one was.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub pull_request_url: Option<String>,
    /// How many of the spec's `publish_requests` have been acted on.
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "is_zero"))]
    pub publish_requests_seen: u32,
}

/// What is known about one agent of the current attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkloadStatus {
    /// The workload's id in its runtime once it was seen: the Docker
    /// container id, or the Pod's name (deterministic, so it is the handle
    /// the Pod API takes). The REST API calls it `builder_container_id` /
    /// `checker_container_id` (the original service's names), the
    /// IcarusJob status `podName`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub workload_id: Option<String>,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub exit_code: Option<i64>,
    /// When the controller first saw it exit: a report may still arrive
    /// for a short while after (see [`plan::Retries::report_grace`]).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub exited_at: Option<DateTime<Utc>>,
}

/// When each transition happened. `finished_at` is the seed's `completed_at`:
/// the moment the job reached any terminal phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PhaseTimes {
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub building_at: Option<DateTime<Utc>>,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub checking_at: Option<DateTime<Utc>>,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub awaiting_approval_at: Option<DateTime<Utc>>,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub approved_at: Option<DateTime<Utc>>,
    /// When the reminder of a job awaiting approval went out.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub reminded_at: Option<DateTime<Utc>>,
    /// When the current attempt may start, if it is a retry: the backoff
    /// after the infrastructure cut the previous one short. Its agent's
    /// deadline counts from then.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub retry_at: Option<DateTime<Utc>>,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// When what was kept of the finished job was removed, its deletion
    /// asked for (its record and events kept, else there is no record).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub purged_at: Option<DateTime<Utc>>,
}

/// Observed state: what the controller saw and decided. Only the planner changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobStatus {
    pub phase: Phase,
    /// A short machine-readable cause of the last transition (`Admitted`, `BuilderFailed`...).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub reason: Reason,
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub error_message: Option<String>,
    #[cfg_attr(feature = "serde", serde(default))]
    pub times: PhaseTimes,
    #[cfg_attr(feature = "serde", serde(default))]
    pub builder: WorkloadStatus,
    #[cfg_attr(feature = "serde", serde(default))]
    pub checker: WorkloadStatus,
    /// Which run of the agents this is; workload names carry it. Starts at 1.
    pub attempt: u32,
    #[cfg_attr(feature = "serde", serde(default))]
    pub source: SourceStatus,
    /// Why the current agent has not started yet, as its runtime says (the
    /// scheduler's message, a claim not bound); none once it runs.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub waiting: Option<String>,
}

impl JobStatus {
    pub fn new_pending() -> Self {
        JobStatus {
            phase: Phase::Pending,
            reason: Reason::Created,
            error_message: None,
            times: PhaseTimes::default(),
            builder: WorkloadStatus::default(),
            checker: WorkloadStatus::default(),
            attempt: 1,
            source: SourceStatus::default(),
            waiting: None,
        }
    }

    pub fn workload(&self, role: Role) -> &WorkloadStatus {
        match role {
            Role::Builder => &self.builder,
            Role::Checker => &self.checker,
        }
    }

    /// When the current attempt of `role` began: its phase's start, or the
    /// moment a retry let it start, whichever is later.
    pub fn attempt_start(&self, role: Role) -> Option<DateTime<Utc>> {
        let phase_start = match role {
            Role::Builder => self.times.building_at,
            Role::Checker => self.times.checking_at,
        }?;
        Some(
            self.times
                .retry_at
                .map_or(phase_start, |retry| retry.max(phase_start)),
        )
    }

    /// When the job gave up its slot (it left building and checking) and
    /// how long it held it, once it has: what a pending job's start is
    /// estimated from. None for a job that never started, or still runs.
    pub fn slot_held(&self) -> Option<(DateTime<Utc>, chrono::TimeDelta)> {
        if matches!(
            self.phase,
            Phase::Pending | Phase::Building | Phase::Checking
        ) {
            return None;
        }
        let started = self.times.building_at?;
        let ended = self.times.awaiting_approval_at.or(self.times.finished_at)?;
        Some((ended, (ended - started).max(chrono::TimeDelta::zero())))
    }

    pub fn workload_mut(&mut self, role: Role) -> &mut WorkloadStatus {
        match role {
            Role::Builder => &mut self.builder,
            Role::Checker => &mut self.checker,
        }
    }
}

/// One job: identity, desired state, observed state and the version that
/// makes every write a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Job {
    pub id: JobId,
    pub created_at: DateTime<Utc>,
    pub spec: JobSpec,
    pub status: JobStatus,
    /// Bumped by the store on every write; a write names the version it read.
    pub resource_version: i64,
}

/// A change of desired state that the job's current state forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    NotAwaitingApproval {
        id: JobId,
        phase: Phase,
    },
    AlreadyDecided {
        id: JobId,
        verdict: &'static str,
    },
    AlreadyFinished {
        id: JobId,
        phase: Phase,
    },
    SnapshotMismatch {
        id: JobId,
        shown: String,
        current: String,
    },
    /// Separation of duties: the job's submitter may not decide on it.
    OwnSubmission {
        id: JobId,
        by: String,
    },
    /// This person's approval is already counted; another is needed.
    AlreadyApprovedBy {
        id: JobId,
        by: String,
        approvals: usize,
        required: u32,
    },
    NotPublishFailed {
        id: JobId,
        phase: Phase,
        reason: Reason,
    },
    NotFinished {
        id: JobId,
        phase: Phase,
    },
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionError::NotAwaitingApproval { id, phase } => write!(
                f,
                "job {id} is {phase}; approval is only possible while it is awaiting_approval"
            ),
            TransitionError::AlreadyDecided { id, verdict } => {
                write!(f, "job {id} was already {verdict}")
            }
            TransitionError::AlreadyFinished { id, phase } => {
                write!(f, "job {id} is already {phase} and cannot be cancelled")
            }
            TransitionError::SnapshotMismatch { id, shown, current } => write!(
                f,
                "job {id}'s change is snapshot {current}, not {shown}: look at the change again before deciding"
            ),
            TransitionError::OwnSubmission { id, by } => write!(
                f,
                "{by} submitted job {id} and may not decide on it: separation of duties \
                 (auth.separation_of_duties) asks for someone else"
            ),
            TransitionError::AlreadyApprovedBy {
                id,
                by,
                approvals,
                required,
            } => write!(
                f,
                "{by} already approved job {id}; it has {approvals} of the {required} \
                 approvals it needs, each from a different person"
            ),
            TransitionError::NotPublishFailed { id, phase, reason } => write!(
                f,
                "job {id} is {phase} ({reason}); only a job whose publishing failed can publish again"
            ),
            TransitionError::NotFinished { id, phase } => write!(
                f,
                "job {id} is {phase}; only a finished job can be deleted: cancel it first"
            ),
        }
    }
}

impl std::error::Error for TransitionError {}

impl Job {
    /// A freshly submitted job: pending, version 0 until the store writes it.
    pub fn new(spec: JobSpec, now: DateTime<Utc>) -> Self {
        Job::with_id(JobId::new_random(), spec, now)
    }

    /// A new job under an id its first record gave it (in Kubernetes mode,
    /// its IcarusJob's uid).
    pub fn with_id(id: JobId, spec: JobSpec, now: DateTime<Utc>) -> Self {
        Job {
            id,
            created_at: now,
            spec,
            status: JobStatus::new_pending(),
            resource_version: 0,
        }
    }

    /// Whether this job's `role` agent of `attempt` may be running now: the
    /// phase's own agent, or one started just before the write of the phase
    /// that started it (a fast agent acts between the two). What an agent's
    /// credentials open — its reports, its egress — is open only then.
    pub fn may_be_running(&self, role: Role, attempt: u32) -> bool {
        attempt == self.status.attempt
            && matches!(
                (self.status.phase, role),
                (Phase::Pending | Phase::Building, Role::Builder)
                    | (Phase::Building | Phase::Checking, Role::Checker)
            )
    }

    /// Records a person's decision. Only a job awaiting approval, and not
    /// yet settled (rejected, or approved by enough people), accepts one;
    /// the controller then moves it on once the decisions add up (see
    /// [`approval`]). Each decision is bound to the job's snapshot: a decider
    /// who names the snapshot they were shown is refused if it is not the
    /// job's. A second approval by the same person is refused; a rejection
    /// by someone who approved before is taken (they changed their mind).
    pub fn decide(
        &self,
        verdict: Verdict,
        by: &str,
        now: DateTime<Utc>,
        rules: ApprovalRules,
    ) -> Result<JobSpec, TransitionError> {
        let current = self.status.source.snapshot.as_deref();
        let tally = Tally::of(&self.spec, current);
        if let Some(approved) = tally.outcome() {
            return Err(TransitionError::AlreadyDecided {
                id: self.id,
                verdict: if approved { "approved" } else { "rejected" },
            });
        }
        if self.status.phase != Phase::AwaitingApproval {
            return Err(TransitionError::NotAwaitingApproval {
                id: self.id,
                phase: self.status.phase,
            });
        }
        if let Some(shown) = &verdict.snapshot
            && Some(shown.as_str()) != current
        {
            return Err(TransitionError::SnapshotMismatch {
                id: self.id,
                shown: shown.clone(),
                current: current
                    .unwrap_or("none (no snapshot was recorded)")
                    .to_owned(),
            });
        }
        if rules.separation_of_duties && self.spec.submitted_by.as_deref() == Some(by) {
            return Err(TransitionError::OwnSubmission {
                id: self.id,
                by: by.to_owned(),
            });
        }
        if verdict.approved && tally.has_approved(by) {
            return Err(TransitionError::AlreadyApprovedBy {
                id: self.id,
                by: by.to_owned(),
                approvals: tally.approvers.len(),
                required: tally.required,
            });
        }
        let mut spec = self.spec.clone();
        spec.approvals.push(ApprovalDecision {
            approved: verdict.approved,
            comment: verdict.comment,
            decided_at: now,
            decided_by: Some(by.to_owned()),
            snapshot: self.status.source.snapshot.clone(),
        });
        Ok(spec)
    }

    /// What the decisions on this job add up to, for its current snapshot.
    pub fn tally(&self) -> Tally<'_> {
        Tally::of(&self.spec, self.status.source.snapshot.as_deref())
    }

    /// Asks for the job to stop. Idempotent while the job runs; a finished job refuses.
    pub fn request_cancel(&self) -> Result<JobSpec, TransitionError> {
        if self.status.phase.is_terminal() {
            return Err(TransitionError::AlreadyFinished {
                id: self.id,
                phase: self.status.phase,
            });
        }
        let mut spec = self.spec.clone();
        spec.cancel_requested = true;
        Ok(spec)
    }

    /// Asks for the job to go (its workspace, stored output and, unless
    /// `deletion` keeps them, its record and events). Only a finished job;
    /// asking again changes nothing but what is kept.
    pub fn request_delete(&self, deletion: Deletion) -> Result<JobSpec, TransitionError> {
        if !self.status.phase.is_terminal() {
            return Err(TransitionError::NotFinished {
                id: self.id,
                phase: self.status.phase,
            });
        }
        let mut spec = self.spec.clone();
        spec.delete_requested = Some(deletion);
        Ok(spec)
    }

    /// Asks for another try at publishing, after a push that failed. The
    /// workspace and its commit were kept, so nothing is redone but the push.
    pub fn request_publish_retry(&self) -> Result<JobSpec, TransitionError> {
        let failed_to_publish =
            self.status.phase == Phase::Failed && self.status.reason == Reason::PublishFailed;
        let already_asked = self.spec.publish_requests > self.status.source.publish_requests_seen;
        if !failed_to_publish || already_asked {
            return Err(TransitionError::NotPublishFailed {
                id: self.id,
                phase: self.status.phase,
                reason: self.status.reason.clone(),
            });
        }
        let mut spec = self.spec.clone();
        spec.publish_requests += 1;
        Ok(spec)
    }
}

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    //! Builder-style fixtures for planner and domain tests (and, with the
    //! `fixtures` feature, for the adapters' tests).
    use super::*;

    pub fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    impl Job {
        pub fn pending() -> Job {
            Job::new(JobSpec::new("add logging to the API", "/workspace"), at(0))
        }

        pub fn in_phase(mut self, phase: Phase, since: DateTime<Utc>) -> Job {
            self.status.phase = phase;
            let times = &mut self.status.times;
            if phase.rank() >= Phase::Building.rank() {
                times.building_at.get_or_insert(since);
            }
            if phase.rank() >= Phase::Checking.rank() {
                times.checking_at.get_or_insert(since);
            }
            if phase.rank() >= Phase::AwaitingApproval.rank() {
                times.awaiting_approval_at.get_or_insert(since);
            }
            if phase.is_terminal() {
                times.finished_at = Some(since);
            }
            self
        }

        pub fn with_approval(self, approved: bool) -> Job {
            self.with_decision_by("reviewer", approved)
        }

        /// Adds `by`'s decision on the job's current snapshot.
        pub fn with_decision_by(mut self, by: &str, approved: bool) -> Job {
            self.spec.approvals.push(ApprovalDecision {
                decided_by: Some(by.to_owned()),
                approved,
                comment: "reviewed".to_owned(),
                decided_at: at(0),
                snapshot: self.status.source.snapshot.clone(),
            });
            self
        }

        pub fn requiring_approvals(mut self, required: u32) -> Job {
            self.spec.required_approvals = required;
            self
        }

        pub fn submitted_by(mut self, by: &str) -> Job {
            self.spec.submitted_by = Some(by.to_owned());
            self
        }

        pub fn with_snapshot(mut self, tree: &str) -> Job {
            self.status.source.snapshot = Some(tree.to_owned());
            self
        }

        pub fn with_cancel_requested(mut self) -> Job {
            self.spec.cancel_requested = true;
            self
        }
    }

    /// Who took each of `spec`'s decisions, in order.
    pub fn deciders(spec: &JobSpec) -> Vec<Option<&str>> {
        spec.approvals
            .iter()
            .map(|a| a.decided_by.as_deref())
            .collect()
    }

    pub fn verdict(approved: bool, comment: &str) -> Verdict {
        Verdict {
            approved,
            comment: comment.to_owned(),
            snapshot: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{at, verdict};
    use super::*;

    #[test]
    fn a_job_id_round_trips_through_its_text() {
        let id = JobId::new_random();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("not-a-uuid".parse::<JobId>().is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_status_with_a_reason_this_version_does_not_know_loads_and_keeps_it() {
        let mut written = serde_json::to_value(JobStatus::new_pending()).unwrap();
        written["reason"] = "ReasonOfANewerVersion".into();
        let status: JobStatus = serde_json::from_value(written.clone()).unwrap();
        assert!(
            matches!(&status.reason, Reason::Unrecognized(text) if text.as_str() == "ReasonOfANewerVersion")
        );
        assert_eq!(serde_json::to_value(&status).unwrap(), written);
    }

    #[cfg(feature = "schema")]
    #[test]
    fn a_status_reason_is_a_string_in_the_schema() {
        let schema = schemars::schema_for!(JobStatus);
        let reason = &schema.as_value()["properties"]["reason"];
        assert_eq!(reason["type"], "string", "{reason}");
    }

    #[test]
    fn only_a_failed_publish_can_publish_again() {
        let failed = Job::pending().in_phase(Phase::Failed, at(1));
        let mut publish_failed = failed.clone();
        publish_failed.status.reason = Reason::PublishFailed;
        assert_eq!(
            publish_failed
                .request_publish_retry()
                .unwrap()
                .publish_requests,
            1
        );
        let err = failed.request_publish_retry().unwrap_err();
        assert!(
            matches!(
                err,
                TransitionError::NotPublishFailed {
                    reason: Reason::Created,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn approving_a_building_job_is_refused() {
        let job = Job::pending().in_phase(Phase::Building, at(1));
        let err = job
            .decide(verdict(true, ""), "tester", at(2), ApprovalRules::default())
            .unwrap_err();
        assert!(matches!(
            err,
            TransitionError::NotAwaitingApproval {
                phase: Phase::Building,
                ..
            }
        ));
    }

    #[test]
    fn approving_a_job_awaiting_approval_records_the_decision() {
        let job = Job::pending().in_phase(Phase::AwaitingApproval, at(1));
        let spec = job
            .decide(
                verdict(false, "not yet"),
                "tester",
                at(2),
                ApprovalRules::default(),
            )
            .unwrap();
        let [decision] = &spec.approvals[..] else {
            panic!("one decision: {:?}", spec.approvals);
        };
        assert!(!decision.approved);
        assert_eq!(decision.decided_by.as_deref(), Some("tester"));
        assert_eq!(decision.comment, "not yet");
        assert_eq!(decision.decided_at, at(2));
    }

    #[test]
    fn an_approval_is_bound_to_the_snapshot_the_job_has() {
        let job = Job::pending()
            .with_snapshot("aaaa")
            .in_phase(Phase::AwaitingApproval, at(1));
        let spec = job
            .decide(verdict(true, ""), "tester", at(2), ApprovalRules::default())
            .unwrap();
        assert_eq!(spec.approvals[0].snapshot.as_deref(), Some("aaaa"));
    }

    #[test]
    fn approving_a_snapshot_other_than_the_jobs_is_refused() {
        let job = Job::pending()
            .with_snapshot("aaaa")
            .in_phase(Phase::AwaitingApproval, at(1));
        let shown = Verdict {
            snapshot: Some("bbbb".to_owned()),
            ..verdict(true, "")
        };
        let err = job
            .decide(shown, "tester", at(2), ApprovalRules::default())
            .unwrap_err();
        assert!(
            matches!(err, TransitionError::SnapshotMismatch { .. }),
            "{err}"
        );
        let same = Verdict {
            snapshot: Some("aaaa".to_owned()),
            ..verdict(true, "")
        };
        assert!(
            job.decide(same, "tester", at(2), ApprovalRules::default())
                .is_ok()
        );
    }

    #[test]
    fn deciding_twice_is_refused() {
        let job = Job::pending()
            .in_phase(Phase::AwaitingApproval, at(1))
            .with_approval(true);
        let err = job
            .decide(
                verdict(false, ""),
                "tester",
                at(2),
                ApprovalRules::default(),
            )
            .unwrap_err();
        assert!(matches!(
            err,
            TransitionError::AlreadyDecided {
                verdict: "approved",
                ..
            }
        ));
    }

    #[test]
    fn a_submitter_may_not_decide_on_their_own_job_under_separation_of_duties() {
        let job = Job::pending()
            .submitted_by("alice")
            .in_phase(Phase::AwaitingApproval, at(1));
        let separated = ApprovalRules {
            separation_of_duties: true,
        };
        for approved in [true, false] {
            let err = job
                .decide(verdict(approved, ""), "alice", at(2), separated)
                .unwrap_err();
            assert!(
                matches!(&err, TransitionError::OwnSubmission { by, .. } if by == "alice"),
                "{err}"
            );
            assert!(err.to_string().contains("separation of duties"), "{err}");
        }
        assert!(
            job.decide(verdict(true, ""), "bob", at(2), separated)
                .is_ok()
        );
        let unseparated = ApprovalRules::default();
        assert!(
            job.decide(verdict(true, ""), "alice", at(2), unseparated)
                .is_ok()
        );
    }

    #[test]
    fn a_second_approval_by_the_same_person_is_refused_and_another_persons_counts() {
        let job = Job::pending()
            .requiring_approvals(2)
            .in_phase(Phase::AwaitingApproval, at(1))
            .with_decision_by("alice", true);
        let rules = ApprovalRules::default();
        let err = job
            .decide(verdict(true, ""), "alice", at(2), rules)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TransitionError::AlreadyApprovedBy {
                    approvals: 1,
                    required: 2,
                    ..
                }
            ),
            "{err}"
        );
        let spec = job.decide(verdict(true, ""), "bob", at(2), rules).unwrap();
        let job = Job { spec, ..job };
        assert_eq!(job.tally().approver_names(), ["alice", "bob"]);
        let err = job
            .decide(verdict(true, ""), "carol", at(3), rules)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TransitionError::AlreadyDecided {
                    verdict: "approved",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_approver_may_still_reject_before_the_job_is_settled() {
        let job = Job::pending()
            .requiring_approvals(2)
            .in_phase(Phase::AwaitingApproval, at(1))
            .with_decision_by("alice", true);
        let spec = job
            .decide(
                verdict(false, "on second thought"),
                "alice",
                at(2),
                ApprovalRules::default(),
            )
            .unwrap();
        assert_eq!(Job { spec, ..job }.tally().outcome(), Some(false));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_spec_written_with_one_approval_reads_as_a_list_of_one() {
        let mut written = serde_json::to_value(JobSpec::new("task", "/workspace")).unwrap();
        written["approval"] = serde_json::json!({
            "approved": true, "comment": "ok", "decided_at": "2026-01-01T00:00:00Z",
            "decided_by": "alice"
        });
        let spec: JobSpec = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(spec.approvals.len(), 1);
        assert_eq!(spec.approvals[0].decided_by.as_deref(), Some("alice"));
        assert_eq!(spec.required_approvals, 1);
        written["approval"] = serde_json::Value::Null;
        let spec: JobSpec = serde_json::from_value(written).unwrap();
        assert!(spec.approvals.is_empty());
    }

    #[test]
    fn cancelling_a_running_job_is_idempotent_and_a_finished_one_refuses() {
        let running = Job::pending().in_phase(Phase::Checking, at(1));
        let spec = running.request_cancel().unwrap();
        assert!(spec.cancel_requested);
        let again = Job { spec, ..running };
        assert!(again.request_cancel().unwrap().cancel_requested);

        let failed = Job::pending().in_phase(Phase::Failed, at(1));
        assert!(failed.request_cancel().is_err());
    }
}
