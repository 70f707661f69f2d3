//! The lifecycle, decided in one pure function.
//!
//! [`plan`] takes a job, what the runtime and the agents showed of it, the
//! admission answer and the clock, and returns a [`Plan`]: the actions that move
//! the world towards the job's desired state, the new status, and when to look
//! again. It does no I/O, so the same inputs always give the same plan — which
//! is what makes the controller level-triggered and crash-safe: after a restart
//! or a lost event, planning again from what exists gives the same next step.
//!
//! Planning happens in two steps: `decide` picks the new status from the
//! current one, then `converge` derives the actions that make the runtime
//! match that status (start what is missing, remove what is stray).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::admission::Admission;
use super::workload::{Observed, ObservedWorkload, Role, SnapshotTaken, WorkloadState};
use super::{Job, JobStatus, Phase, Reason};

/// How long agents and jobs may run. Measured from the start of the phase
/// (an agent's deadline) or from the start of building (the job's deadline);
/// time spent pending or awaiting a human does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub builder: TimeDelta,
    pub checker: TimeDelta,
    pub job: TimeDelta,
}

impl Deadlines {
    fn of(&self, role: Role) -> TimeDelta {
        match role {
            Role::Builder => self.builder,
            Role::Checker => self.checker,
        }
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub job: &'a Job,
    pub observed: &'a Observed,
    /// Consulted only for a pending job.
    pub admission: &'a Admission,
    pub deadlines: &'a Deadlines,
    pub now: DateTime<Utc>,
}

/// One step the controller takes in the runtime. Every action is idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the job's workspace if it does not exist.
    PrepareWorkspace,
    /// Create (or adopt, if its deterministic name exists) and start the workload.
    Start { role: Role, attempt: u32 },
    /// Create the next agent's workload without starting it while the current
    /// one runs, so that the hand-over is only a start. An optimisation: a
    /// runtime that cannot do it declines, and `Start` creates as usual.
    CreateAhead { role: Role, attempt: u32 },
    /// Stop and delete a workload that the job no longer wants.
    Remove {
        role: Role,
        attempt: u32,
        id: String,
    },
    /// Delete the workspace: the result was rejected or the job cancelled.
    RemoveWorkspace,
    /// Make the workspace a checkout of the job's source (once).
    CheckoutSource,
    /// Record the builder's work, now that it is final, and its diff for
    /// review: what the checker audits and an approval publishes.
    TakeSnapshot,
    /// Commit the approved snapshot on the base and push it.
    Publish,
}

/// A change of phase, recorded in the job's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    pub reason: Reason,
    pub message: Option<String>,
}

/// What to do next for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The status to write (equal to the current one when nothing changed).
    pub status: JobStatus,
    pub transition: Option<Transition>,
    /// Look again after this long even if nothing wakes the job (a deadline).
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// Whether this plan fails the job because an agent disappeared: the
    /// one decision that depends on whether the job's record still exists
    /// ([`Observed::owner_gone`]), which the controller then finds out.
    pub fn fails_for_a_vanished_agent(&self) -> bool {
        self.transition
            .as_ref()
            .is_some_and(|t| t.to == Phase::Failed && matches!(t.reason, Reason::Vanished(_)))
    }
}

/// Decides the next step for one job. Pure: no I/O, no clock but `input.now`.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let (status, transition) = decide(input);
    let actions = converge(input, &status, transition.as_ref());
    let requeue_after = next_deadline(&status, input.deadlines)
        .map(|deadline| (deadline - input.now).to_std().unwrap_or(Duration::ZERO));
    Plan {
        actions,
        status,
        transition,
        requeue_after,
    }
}

/// Picks the new status. Returns the transition when the phase changes.
fn decide(input: &PlanInput<'_>) -> (JobStatus, Option<Transition>) {
    let job = input.job;
    let mut next = Next::new(job.status.clone(), input.now);
    let phase = job.status.phase;
    if phase.is_terminal() {
        if publish_retry_requested(job) {
            next.retry_publish(job.spec.publish_requests);
        }
        return next.finish();
    }
    if job.spec.cancel_requested {
        next.move_to(
            Phase::Cancelled,
            Reason::CancelRequested,
            Some("cancelled on request".to_owned()),
        );
        return next.finish();
    }
    if input.observed.owner_gone {
        let message = "its IcarusJob was deleted".to_owned();
        next.move_to(Phase::Cancelled, Reason::ResourceDeleted, Some(message));
        return next.finish();
    }
    match phase {
        Phase::Pending => decide_pending(&mut next, input.admission),
        Phase::Building => decide_agent(&mut next, input, Role::Builder),
        Phase::Checking => decide_agent(&mut next, input, Role::Checker),
        Phase::AwaitingApproval => decide_awaiting_approval(&mut next, job),
        Phase::Approved => decide_approved(&mut next, input),
        Phase::Completed | Phase::Rejected | Phase::Failed | Phase::Cancelled => {}
    }
    fail_if_unstartable(&mut next, input);
    next.finish()
}

/// An agent the runtime cannot start (its image is missing...) ends the job
/// in the phase that needs it, whether the job was already there or just moved.
fn fail_if_unstartable(next: &mut Next, input: &PlanInput<'_>) {
    let Some(role) = running_role(next.status.phase) else {
        return;
    };
    if let Some(failure) = input
        .observed
        .start_failure
        .as_ref()
        .filter(|f| f.role == role)
    {
        let message = format!("{role} could not be started: {}", failure.message);
        next.fail(Reason::StartFailed(role), message);
    }
}

fn decide_pending(next: &mut Next, admission: &Admission) {
    match admission {
        Admission::Admitted => next.move_to(Phase::Building, Reason::Admitted, None),
        Admission::Waiting(reason) => next.status.reason = reason.clone(),
    }
}

/// A failed publish that the user asked to try again (spec counter ahead of status).
fn publish_retry_requested(job: &Job) -> bool {
    job.status.phase == Phase::Failed
        && job.status.reason == Reason::PublishFailed
        && job.spec.publish_requests > job.status.source.publish_requests_seen
}

/// Whether the builder must wait for the workspace to become a checkout.
fn awaits_checkout(job: &Job, status: &JobStatus) -> bool {
    job.spec.source.is_some() && status.source.base_commit.is_none()
}

fn decide_agent(next: &mut Next, input: &PlanInput<'_>, role: Role) {
    let attempt = next.status.attempt;
    let workload = find(&input.observed.workloads, role, attempt);
    let waiting = workload.and_then(|w| match &w.state {
        WorkloadState::Waiting { why } => Some(why.as_str()),
        _ => None,
    });
    next.status.waiting = waiting.map(|why| format!("{role} has not started: {why}"));
    if let Some((reason, message)) = deadline_passed(&next.status, input.deadlines, role, input.now)
    {
        match waiting {
            // It never ran: the start failed, and the runtime said why.
            Some(why) => next.fail(
                Reason::StartFailed(role),
                format!("{message} without starting: {why}"),
            ),
            None => next.fail(reason, message),
        }
        return;
    }
    if role == Role::Builder && awaits_checkout(input.job, &next.status) {
        let facts = &input.observed.source;
        if let Some(base) = &facts.base_commit {
            next.status.source.base_commit = Some(base.clone());
        } else {
            if let Some(error) = &facts.failure {
                let message = format!("the source could not be checked out: {error}");
                next.fail(Reason::SourceCheckoutFailed, message);
            }
            return;
        }
    }
    // What was seen of the workload is recorded whatever decides the job,
    // so a failure reported before the exit still shows the exit code.
    if let Some(workload) = workload {
        record_workload(next, workload);
    }
    if let Some(error) = input.observed.reports.error_of(role) {
        next.fail(
            Reason::ReportedError(role),
            format!("{role} reported an error: {error}"),
        );
        return;
    }
    let Some(workload) = workload else {
        if let Some(id) = &next.status.workload(role).workload_id {
            let message = format!("{role} workload {id} disappeared before it finished");
            next.fail(Reason::Vanished(role), message);
        }
        return;
    };
    match &workload.state {
        WorkloadState::Exited {
            exit_code,
            oom_killed,
        } => decide_exit(next, input, workload, *exit_code, *oom_killed),
        WorkloadState::Unstartable { why } => {
            next.fail(
                Reason::StartFailed(role),
                format!("{role} cannot start: {why}"),
            );
        }
        WorkloadState::Created | WorkloadState::Running | WorkloadState::Waiting { .. } => {}
    }
}

/// The workload's id, and its exit code once it exited.
fn record_workload(next: &mut Next, workload: &ObservedWorkload) {
    let status = next.status.workload_mut(workload.role);
    status.workload_id = Some(workload.id.clone());
    if let WorkloadState::Exited { exit_code, .. } = workload.state {
        status.exit_code = Some(exit_code);
    }
}

fn decide_exit(
    next: &mut Next,
    input: &PlanInput<'_>,
    workload: &ObservedWorkload,
    exit_code: i64,
    oom_killed: bool,
) {
    let role = workload.role;
    if oom_killed {
        let message =
            format!("{role} was killed for running out of memory (exit code {exit_code})");
        next.fail(Reason::OomKilled(role), with_log_tail(message, workload));
    } else if exit_code != 0 {
        let message = format!("{role} exited with code {exit_code}");
        next.fail(Reason::Failed(role), with_log_tail(message, workload));
    } else if role == Role::Builder {
        decide_builder_success(next, input);
    } else if input.observed.reports.audit_report_received {
        next.move_to(
            Phase::AwaitingApproval,
            Reason::Succeeded(Role::Checker),
            None,
        );
    } else {
        let message = "checker exited with code 0 without posting an audit report".to_owned();
        next.fail(Reason::CheckerReportMissing, message);
    }
}

/// A builder that succeeded hands over to the checker once its work is
/// recorded: the snapshot is what everyone after it looks at.
fn decide_builder_success(next: &mut Next, input: &PlanInput<'_>) {
    let facts = &input.observed.source;
    match &facts.snapshot {
        Some(taken) => {
            if let SnapshotTaken::Tree(tree) = taken {
                next.status.source.snapshot = Some(tree.clone());
            }
            next.move_to(Phase::Checking, Reason::Succeeded(Role::Builder), None);
        }
        None => {
            if let Some(error) = &facts.failure {
                let message = format!("the builder's work could not be recorded: {error}");
                next.fail(Reason::SnapshotFailed, message);
            }
        }
    }
}

/// Whether the builder of the current attempt exited 0 and its work is not
/// recorded yet.
fn awaits_snapshot(input: &PlanInput<'_>, status: &JobStatus) -> bool {
    status.phase == Phase::Building
        && find(&input.observed.workloads, Role::Builder, status.attempt).is_some_and(|w| {
            w.state
                == WorkloadState::Exited {
                    exit_code: 0,
                    oom_killed: false,
                }
        })
}

/// Appends the agent's last output lines, when the runtime kept them.
fn with_log_tail(message: String, workload: &ObservedWorkload) -> String {
    match workload.log_tail.as_deref().map(str::trim_end) {
        Some(tail) if !tail.is_empty() => format!("{message}; last log lines:\n{tail}"),
        _ => message,
    }
}

/// Publishes an approved job that has a source; completes one that has none.
fn decide_approved(next: &mut Next, input: &PlanInput<'_>) {
    if input.job.spec.source.is_none() {
        let message = "approved; the job has no source repository, so nothing was published and the workspace is kept";
        next.move_to(
            Phase::Completed,
            Reason::Completed,
            Some(message.to_owned()),
        );
        return;
    }
    if input.job.status.source.snapshot.is_none() {
        let message = "approved, but no snapshot of the builder's work was recorded, so there is nothing to publish";
        next.fail(Reason::SnapshotMissing, message.to_owned());
        return;
    }
    let facts = &input.observed.source;
    if let Some(published) = &facts.published {
        next.status.source.branch = Some(published.branch.clone());
        next.status.source.commit = Some(published.commit.clone());
        let mut message = format!("pushed {} to {}", published.commit, published.branch);
        match &published.pull_request {
            Some(Ok(url)) => {
                next.status.source.pull_request_url = Some(url.clone());
                message.push_str(&format!("; pull request: {url}"));
            }
            Some(Err(error)) => message.push_str(&format!("; no pull request: {error}")),
            None => {}
        }
        next.move_to(Phase::Completed, Reason::Published, Some(message));
    } else if let Some(error) = &facts.failure {
        let message = format!(
            "publishing failed: {error}; the workspace and its commit are kept (POST /jobs/{}/publish to try again)",
            input.job.id
        );
        next.fail(Reason::PublishFailed, message);
    }
}

fn decide_awaiting_approval(next: &mut Next, job: &Job) {
    let Some(decision) = &job.spec.approval else {
        return;
    };
    // A decision about another snapshot is not a decision about this one.
    if decision.snapshot.is_some() && decision.snapshot != job.status.source.snapshot {
        next.status.reason = Reason::SnapshotMismatch;
        return;
    }
    let comment = Some(decision.comment.clone()).filter(|c| !c.is_empty());
    if decision.approved {
        next.move_to(Phase::Approved, Reason::Approved, comment);
    } else {
        next.move_to(Phase::Rejected, Reason::Rejected, comment);
    }
}

/// The reason and message if a deadline that applies to `role` has passed.
fn deadline_passed(
    status: &JobStatus,
    deadlines: &Deadlines,
    role: Role,
    now: DateTime<Utc>,
) -> Option<(Reason, String)> {
    if let Some(started) = status.times.building_at
        && now >= started + deadlines.job
    {
        let message = format!(
            "job exceeded its deadline of {} s",
            deadlines.job.num_seconds()
        );
        return Some((Reason::JobTimedOut, message));
    }
    let phase_started = phase_start(status, role)?;
    let limit = deadlines.of(role);
    (now >= phase_started + limit).then(|| {
        let message = format!("{role} exceeded its deadline of {} s", limit.num_seconds());
        (Reason::TimedOut(role), message)
    })
}

fn phase_start(status: &JobStatus, role: Role) -> Option<DateTime<Utc>> {
    match role {
        Role::Builder => status.times.building_at,
        Role::Checker => status.times.checking_at,
    }
}

/// The earliest deadline still ahead of a job in an agent phase.
fn next_deadline(status: &JobStatus, deadlines: &Deadlines) -> Option<DateTime<Utc>> {
    let role = match status.phase {
        Phase::Building => Role::Builder,
        Phase::Checking => Role::Checker,
        _ => return None,
    };
    let job_deadline = status.times.building_at.map(|t| t + deadlines.job);
    let role_deadline = phase_start(status, role).map(|t| t + deadlines.of(role));
    job_deadline.into_iter().chain(role_deadline).min()
}

/// Derives the runtime actions that make the world match `status`.
fn converge(
    input: &PlanInput<'_>,
    status: &JobStatus,
    transition: Option<&Transition>,
) -> Vec<Action> {
    let attempt = status.attempt;
    let mut actions = Vec::new();
    let mut seen: Vec<Role> = Vec::new();
    for workload in &input.observed.workloads {
        let wanted = workload.attempt == attempt && is_kept(status.phase, workload);
        if wanted && !seen.contains(&workload.role) {
            seen.push(workload.role);
        } else {
            actions.push(Action::Remove {
                role: workload.role,
                attempt: workload.attempt,
                id: workload.id.clone(),
            });
        }
    }
    let was = input.job.status.phase;
    if status.phase == Phase::Building && awaits_checkout(input.job, status) {
        // Checked out in the reconcile after admission is recorded, so the
        // checkout's time counts against the builder's deadline.
        if was == Phase::Building {
            actions.push(Action::CheckoutSource);
        }
    } else if let Some(role) = running_role(status.phase) {
        let current = find(&input.observed.workloads, role, attempt);
        let needs_start = current.is_none_or(|w| w.state == WorkloadState::Created);
        if needs_start {
            if role == Role::Builder {
                actions.push(Action::PrepareWorkspace);
            }
            actions.push(Action::Start { role, attempt });
        }
        actions.extend(ahead_of(input, status));
        if awaits_snapshot(input, status) {
            actions.push(Action::TakeSnapshot);
        }
    }
    let publishes = was == Phase::Approved
        && status.phase == Phase::Approved
        && input.job.spec.source.is_some();
    if publishes {
        actions.push(Action::Publish);
    }
    let discards_workspace = matches!(status.phase, Phase::Rejected | Phase::Cancelled);
    if discards_workspace && transition.is_some() {
        actions.push(Action::RemoveWorkspace);
    }
    actions
}

/// The checker to create ahead while the builder runs, unless it exists or
/// the runtime declined.
fn ahead_of(input: &PlanInput<'_>, status: &JobStatus) -> Option<Action> {
    let attempt = status.attempt;
    let exists = find(&input.observed.workloads, Role::Checker, attempt).is_some();
    let wanted = status.phase == Phase::Building && !exists && !input.observed.ahead_declined;
    wanted.then_some(Action::CreateAhead {
        role: Role::Checker,
        attempt,
    })
}

/// Whether a workload (of the current attempt) stays in this phase; all others
/// are removed. Exited agents are kept until the job ends so their logs stay
/// readable; a checker created ahead waits, never started, for its turn.
fn is_kept(phase: Phase, workload: &ObservedWorkload) -> bool {
    let created_ahead = phase == Phase::Building
        && workload.role == Role::Checker
        && workload.state == WorkloadState::Created;
    created_ahead || kept_roles(phase).contains(&workload.role)
}

/// The roles (of the current attempt) a phase keeps.
fn kept_roles(phase: Phase) -> &'static [Role] {
    match phase {
        Phase::Building => &[Role::Builder],
        Phase::Checking | Phase::AwaitingApproval | Phase::Approved => {
            &[Role::Builder, Role::Checker]
        }
        Phase::Pending | Phase::Completed | Phase::Rejected | Phase::Failed | Phase::Cancelled => {
            &[]
        }
    }
}

/// The agent that must be running in a phase.
fn running_role(phase: Phase) -> Option<Role> {
    match phase {
        Phase::Building => Some(Role::Builder),
        Phase::Checking => Some(Role::Checker),
        _ => None,
    }
}

fn find(workloads: &[ObservedWorkload], role: Role, attempt: u32) -> Option<&ObservedWorkload> {
    workloads
        .iter()
        .find(|w| w.role == role && w.attempt == attempt)
}

/// The status being decided, and the transition once the phase changes.
struct Next {
    status: JobStatus,
    transition: Option<Transition>,
    now: DateTime<Utc>,
}

impl Next {
    fn new(status: JobStatus, now: DateTime<Utc>) -> Self {
        Next {
            status,
            transition: None,
            now,
        }
    }

    fn move_to(&mut self, to: Phase, reason: Reason, message: Option<String>) {
        // Two moves in one plan (admitted, then unstartable) are one transition.
        let from = self
            .transition
            .as_ref()
            .map_or(self.status.phase, |t| t.from);
        let times = &mut self.status.times;
        match to {
            Phase::Building => times.building_at = Some(self.now),
            Phase::Checking => times.checking_at = Some(self.now),
            Phase::AwaitingApproval => times.awaiting_approval_at = Some(self.now),
            Phase::Approved => times.approved_at = Some(self.now),
            _ => {}
        }
        if to.is_terminal() {
            times.finished_at = Some(self.now);
        }
        if to == Phase::Failed {
            self.status.error_message = message.clone();
        }
        // What an agent waited for belongs to the phase being left.
        self.status.waiting = None;
        self.status.phase = to;
        self.status.reason = reason.clone();
        self.transition = Some(Transition {
            from,
            to,
            reason,
            message,
        });
    }

    fn fail(&mut self, reason: Reason, message: String) {
        self.move_to(Phase::Failed, reason, Some(message));
    }

    /// The one way out of a terminal phase: a failed publish, asked to try
    /// again, goes back to `approved` with its error cleared.
    fn retry_publish(&mut self, requests: u32) {
        self.move_to(Phase::Approved, Reason::PublishRetried, None);
        self.status.error_message = None;
        self.status.times.finished_at = None;
        self.status.source.publish_requests_seen = requests;
    }

    fn finish(self) -> (JobStatus, Option<Transition>) {
        (self.status, self.transition)
    }
}

#[cfg(test)]
mod tests;
