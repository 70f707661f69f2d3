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
//!
//! Two rules keep a crash between acting and recording harmless:
//! nothing is started for a status that is not recorded yet (an admission
//! or a new attempt is written before its agent starts), but for the
//! builder-to-checker hand-over, whose checker the building phase keeps.
//! And whose fault a failure is decides what follows: an agent's own verdict
//! (an exit code, an error report, a missing audit) ends the job; the
//! infrastructure's ([`Fault`]) runs the agent again as the next attempt,
//! up to [`Retries::max_attempts`].

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::admission::Admission;
use super::workload::{Observed, ObservedWorkload, Role, SnapshotTaken, WorkloadState};
use super::{ApprovalDecision, Job, JobStatus, Phase, Reason, approval};

/// How long agents and jobs may run. Measured from the start of the phase
/// (an agent's deadline) or from the start of building (the job's deadline);
/// time spent pending or awaiting a human does not count: those deadlines
/// pause while the job waits on a person. Waiting on a person has its own,
/// optional deadline ([`ApprovalDeadline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub builder: TimeDelta,
    pub checker: TimeDelta,
    pub job: TimeDelta,
    /// How long a job may await approval; none: for ever.
    pub approval: Option<ApprovalDeadline>,
}

/// How long a job may await approval, from the moment it started to, and
/// how it ends when no decision settled it by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalDeadline {
    pub timeout: TimeDelta,
    pub outcome: TimeoutOutcome,
    /// When after the wait began the reminder goes out (once); none: never.
    pub reminder_after: Option<TimeDelta>,
}

/// The end of a job whose approval deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutOutcome {
    /// `rejected`, as if someone had rejected it.
    Rejected,
    /// `expired`: a phase of its own, so that nobody's silence reads as a verdict.
    Expired,
}

impl TimeoutOutcome {
    fn phase(self) -> Phase {
        match self {
            TimeoutOutcome::Rejected => Phase::Rejected,
            TimeoutOutcome::Expired => Phase::Expired,
        }
    }
}

impl Deadlines {
    fn of(&self, role: Role) -> TimeDelta {
        match role {
            Role::Builder => self.builder,
            Role::Checker => self.checker,
        }
    }
}

/// How agents whose attempt the infrastructure cut short are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Attempts a job's agents get in all, the first included.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles for each one after,
    /// up to `max_backoff`, give or take a quarter so that the jobs of one
    /// outage do not all come back at once.
    pub first_backoff: TimeDelta,
    pub max_backoff: TimeDelta,
    /// How long after a checker's exit its audit report may still arrive
    /// (a report in flight while the agent's client gave up).
    pub report_grace: TimeDelta,
}

impl Retries {
    /// The wait before `attempt + 1`: exponential, with a jitter drawn
    /// from the job and the attempt, so that the same inputs give the
    /// same plan.
    fn backoff(&self, job: super::JobId, attempt: u32) -> TimeDelta {
        let doublings = attempt.saturating_sub(1).min(20);
        let exponential = self.first_backoff * (1_i32 << doublings);
        let capped = exponential.min(self.max_backoff);
        // A factor in [0.75, 1.25), from the job id and the attempt.
        let spread = (mix(job.as_u128() ^ u128::from(attempt)) % 500) as i32;
        let jittered = capped * (750 + spread) / 1000;
        jittered.max(TimeDelta::zero())
    }
}

/// A 64-bit mix of a 128-bit value (splitmix64's finaliser over both
/// halves): a deterministic stand-in for randomness.
fn mix(value: u128) -> u64 {
    let mut x = (value as u64) ^ ((value >> 64) as u64);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub job: &'a Job,
    pub observed: &'a Observed,
    /// Consulted only for a pending job.
    pub admission: &'a Admission,
    pub deadlines: &'a Deadlines,
    pub retries: &'a Retries,
    /// Since when the orchestrator has been taking agents' reports without
    /// a break (it was down, or restarted, before). A report missing from
    /// an agent that ran before then may have been lost with it.
    pub serving_since: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub hand_over: HandOver,
}

/// When the checker starts after a builder that succeeded: the snapshot of
/// the builder's work is what the job moves on with either way.
///
/// The checker mounts the workspace read-only and the builder is gone, so
/// the files it audits are the ones the snapshot records whether it starts
/// before or after. Starting it first takes the snapshot off the hand-over's
/// path (the engine starts the container meanwhile); a snapshot that fails
/// still fails the job, and the checker goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOver {
    /// Start the checker, then record the snapshot (local mode: the
    /// snapshot is git on the orchestrator's host, beside the container).
    DuringSnapshot,
    /// Record the snapshot, then start the checker (Kubernetes mode: the
    /// snapshot is a Pod of its own that mounts the workspace's
    /// `ReadWriteOnce` claim, which a checker Pod on another node would
    /// hold until it ended).
    AfterSnapshot,
}

/// Why an agent's attempt ended without a verdict of its own: the
/// infrastructure's fault, so the agent runs again as the next attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Its workload disappeared (removed behind Icarus's back, its node gone).
    Vanished { id: String },
    /// Its runtime stopped it: evicted, preempted, its node lost.
    Lost { why: String },
    /// The runtime answered an error when asked to start it.
    StartError { message: String },
    /// It exited 0 without the report it owed, and the orchestrator was
    /// not serving for its whole run: the report may have been lost then.
    ReportLost,
    /// It exited with [`EXIT_TEMPFAIL`]: it could not reach the orchestrator.
    Unreachable,
}

/// The exit code (sysexits' `EX_TEMPFAIL`) by which an agent says that a
/// failure outside it stopped it (it could not deliver its report): it is
/// run again, like any other fault of the infrastructure.
pub const EXIT_TEMPFAIL: i64 = 75;

impl Fault {
    fn describe(&self, role: Role) -> String {
        match self {
            Fault::Vanished { id } => {
                format!("{role} workload {id} disappeared before it finished")
            }
            Fault::Lost { why } => format!("{role} was stopped by its runtime: {why}"),
            Fault::StartError { message } => format!("{role} could not be started: {message}"),
            Fault::ReportLost => format!(
                "{role} exited with code 0 without a report, while the orchestrator was not serving for all of its run"
            ),
            Fault::Unreachable => format!(
                "{role} exited with code {EXIT_TEMPFAIL}: it could not reach the orchestrator"
            ),
        }
    }

    /// The reason the job fails with when no attempt is left.
    fn reason(&self, role: Role) -> Reason {
        match self {
            Fault::Vanished { .. } => Reason::Vanished(role),
            Fault::Lost { .. } => Reason::Lost(role),
            Fault::StartError { .. } => Reason::StartFailed(role),
            Fault::ReportLost => Reason::CheckerReportMissing,
            Fault::Unreachable => Reason::Failed(role),
        }
    }
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
    /// Remove what is kept of a finished job whose deletion was asked
    /// for: its stored output, and its record unless `keep_events`.
    Purge { keep_events: bool },
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
    /// Whether this plan gives up on the current attempt because the
    /// infrastructure cut it short (a retry, or a failure once no attempt is
    /// left): the one decision that depends on whether the job's record
    /// still exists ([`Observed::owner_gone`]) — its deletion takes its
    /// workloads with it — which the controller then finds out.
    pub fn gives_up_on_an_attempt(&self) -> bool {
        self.transition.as_ref().is_some_and(|t| {
            matches!(
                t.reason,
                Reason::Retried(_) | Reason::Vanished(_) | Reason::Lost(_)
            )
        })
    }
}

/// Decides the next step for one job. Pure: no I/O, no clock but `input.now`.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let (status, transition) = decide(input);
    let actions = converge(input, &status, transition.as_ref());
    let requeue_after = next_wake_up(&status, input)
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
        if purge_due(job) {
            next.status.times.purged_at = Some(input.now);
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
        Phase::AwaitingApproval => decide_awaiting_approval(&mut next, input),
        Phase::Approved => decide_approved(&mut next, input),
        Phase::Completed | Phase::Rejected | Phase::Failed | Phase::Cancelled | Phase::Expired => {}
    }
    react_to_a_failed_start(&mut next, input);
    next.finish()
}

/// An agent the runtime could not start, in the phase that needs it,
/// whether the job was already there or just moved: the end of the job if
/// retrying cannot help (its image is missing...), the next attempt if the
/// runtime's error may pass.
fn react_to_a_failed_start(next: &mut Next, input: &PlanInput<'_>) {
    let Some(role) = running_role(next.status.phase) else {
        return;
    };
    // Only a start this plan asks for can have failed; and an agent's own
    // error report, which the next plan reads, outranks it.
    if !starts_agent(input, &next.status, role) || input.observed.reports.error_of(role).is_some() {
        return;
    }
    let Some(failure) = input
        .observed
        .start_failure
        .as_ref()
        .filter(|f| f.role == role && f.attempt == next.status.attempt)
    else {
        return;
    };
    if failure.permanent {
        let message = format!("{role} could not be started: {}", failure.message);
        next.fail(Reason::StartFailed(role), message);
    } else {
        let message = failure.message.clone();
        retry_or_fail(next, input, role, Fault::StartError { message });
    }
}

/// Runs the agent again as the next attempt, after a backoff, or ends the
/// job once every attempt was used.
fn retry_or_fail(next: &mut Next, input: &PlanInput<'_>, role: Role, fault: Fault) {
    let attempt = next.status.attempt;
    let max = input.retries.max_attempts;
    let what = fault.describe(role);
    if attempt >= max {
        let message = format!("{what} (attempt {attempt} of {max}; none left)");
        next.fail(fault.reason(role), message);
        return;
    }
    let wait = input.retries.backoff(input.job.id, attempt);
    let message = format!(
        "{what}; attempt {} of {max} starts in {:.1} s",
        attempt + 1,
        wait.as_seconds_f64()
    );
    next.retry(role, message, wait);
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
        if let Some(id) = next.status.workload(role).workload_id.clone() {
            retry_or_fail(next, input, role, Fault::Vanished { id });
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
        WorkloadState::Lost { why } => {
            let why = why.clone();
            retry_or_fail(next, input, role, Fault::Lost { why });
        }
        WorkloadState::Created | WorkloadState::Running | WorkloadState::Waiting { .. } => {}
    }
}

/// The workload's id, and its exit code (and when it was first seen) once
/// it exited.
fn record_workload(next: &mut Next, workload: &ObservedWorkload) {
    let now = next.now;
    let status = next.status.workload_mut(workload.role);
    status.workload_id = Some(workload.id.clone());
    if let WorkloadState::Exited { exit_code, .. } = workload.state {
        status.exit_code = Some(exit_code);
        status.exited_at.get_or_insert(now);
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
    } else if exit_code == EXIT_TEMPFAIL {
        retry_or_fail(next, input, role, Fault::Unreachable);
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
        decide_missing_report(next, input);
    }
}

/// A checker that exited 0 without its audit report: a report may still be
/// on its way for a moment; after that, it is the checker's fault if the
/// orchestrator took reports for all of its run, and a fault of the
/// orchestrator's own (retried) if it was down meanwhile.
fn decide_missing_report(next: &mut Next, input: &PlanInput<'_>) {
    let status = &next.status;
    let exited_at = status.checker.exited_at.unwrap_or(input.now);
    if input.now < exited_at + input.retries.report_grace {
        return;
    }
    let ran_from = status.attempt_start(Role::Checker).unwrap_or(input.now);
    if ran_from >= input.serving_since {
        let message = "checker exited with code 0 without posting an audit report".to_owned();
        next.fail(Reason::CheckerReportMissing, message);
    } else {
        retry_or_fail(next, input, Role::Checker, Fault::ReportLost);
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

/// Whether the checker starts now, while the builder's work is recorded:
/// where the mode allows it, once, for a status whose agents may start.
fn hands_over_during_snapshot(input: &PlanInput<'_>, status: &JobStatus) -> bool {
    let checker = find(&input.observed.workloads, Role::Checker, status.attempt);
    input.hand_over == HandOver::DuringSnapshot
        && checker.is_none_or(|w| w.state == WorkloadState::Created)
        && may_start(input, status)
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

/// Ends the wait once the decisions on the job's snapshot add up: one
/// rejection rejects; enough distinct approvals approve. A decision about
/// another snapshot is not a decision about this one. Unsettled past its
/// approval deadline, the job ends as configured; before, a reminder goes
/// out once at the configured moment.
fn decide_awaiting_approval(next: &mut Next, input: &PlanInput<'_>) {
    let job = input.job;
    let tally = job.tally();
    match tally.outcome() {
        Some(true) => {
            let message = describe_decisions("approved by", &tally.approvers);
            next.move_to(Phase::Approved, Reason::Approved, Some(message));
            return;
        }
        Some(false) => {
            let rejection = tally.rejection.into_iter().collect::<Vec<_>>();
            let message = describe_decisions("rejected by", &rejection);
            next.move_to(Phase::Rejected, Reason::Rejected, Some(message));
            return;
        }
        None if tally.other_snapshot => next.status.reason = Reason::SnapshotMismatch,
        None => {}
    }
    let (Some(deadline), Some(since)) = (
        input.deadlines.approval,
        job.status.times.awaiting_approval_at,
    ) else {
        return;
    };
    let so_far = format!(
        "{} of the {} approvals it needs",
        tally.approvers.len(),
        tally.required
    );
    if input.now >= since + deadline.timeout {
        let message = format!(
            "no decision within the approval deadline of {} s ({so_far})",
            deadline.timeout.num_seconds()
        );
        next.move_to(
            deadline.outcome.phase(),
            Reason::ApprovalTimedOut,
            Some(message),
        );
    } else if let Some(after) = deadline.reminder_after
        && job.status.times.reminded_at.is_none()
        && input.now >= since + after
    {
        let left = since + deadline.timeout - input.now;
        let message = format!(
            "awaiting approval for {} s ({so_far}); the deadline passes in {} s",
            (input.now - since).num_seconds(),
            left.num_seconds()
        );
        next.remind(message);
    }
}

/// `approved by alice: looks right; bob` — who decided, with their comments.
fn describe_decisions(verb: &str, decisions: &[&ApprovalDecision]) -> String {
    let each: Vec<String> = decisions
        .iter()
        .map(|decision| {
            let who = approval::decider(decision);
            let who = if who.is_empty() { "someone" } else { who };
            match decision.comment.trim() {
                "" => who.to_owned(),
                comment => format!("{who}: {comment}"),
            }
        })
        .collect();
    format!("{verb} {}", each.join("; "))
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
    let phase_started = status.attempt_start(role)?;
    let limit = deadlines.of(role);
    (now >= phase_started + limit).then(|| {
        let message = format!("{role} exceeded its deadline of {} s", limit.num_seconds());
        (Reason::TimedOut(role), message)
    })
}

/// The earliest moment something is due for a job in an agent phase: a
/// deadline, a retry's start, or the end of a report's grace period.
fn next_wake_up(status: &JobStatus, input: &PlanInput<'_>) -> Option<DateTime<Utc>> {
    if status.phase == Phase::AwaitingApproval {
        return approval_wake_up(status, input);
    }
    let role = running_role(status.phase)?;
    let deadlines = input.deadlines;
    let job_deadline = status.times.building_at.map(|t| t + deadlines.job);
    let role_deadline = status.attempt_start(role).map(|t| t + deadlines.of(role));
    let retry = status.times.retry_at.filter(|t| *t > input.now);
    let checker = &status.checker;
    let report_due = (role == Role::Checker && checker.exit_code == Some(0))
        .then(|| checker.exited_at.map(|t| t + input.retries.report_grace))
        .flatten()
        .filter(|t| *t > input.now);
    [job_deadline, role_deadline, retry, report_due]
        .into_iter()
        .flatten()
        .min()
}

/// When a job awaiting approval is due a reminder or its deadline.
fn approval_wake_up(status: &JobStatus, input: &PlanInput<'_>) -> Option<DateTime<Utc>> {
    let deadline = input.deadlines.approval?;
    let since = status.times.awaiting_approval_at?;
    let reminder = deadline
        .reminder_after
        .filter(|_| status.times.reminded_at.is_none())
        .map(|after| since + after)
        .filter(|t| *t > input.now);
    [Some(since + deadline.timeout), reminder]
        .into_iter()
        .flatten()
        .min()
}

/// Derives the runtime actions that make the world match `status`.
fn converge(
    input: &PlanInput<'_>,
    status: &JobStatus,
    transition: Option<&Transition>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut seen: Vec<(Role, u32)> = Vec::new();
    for workload in &input.observed.workloads {
        let key = (workload.role, workload.attempt);
        let duplicate = seen.contains(&key);
        seen.push(key);
        if keeps(status, workload) && !duplicate {
            continue;
        }
        if duplicate || discards_workspace(status) || !keeps(&input.job.status, workload) {
            actions.push(Action::Remove {
                role: workload.role,
                attempt: workload.attempt,
                id: workload.id.clone(),
            });
        }
        // Else the recorded status still wants it: it goes once the new
        // status is recorded (the record wakes the job), so a crash in
        // between loses no agent's verdict (an exit it was judged by) and
        // brings nothing back twice (an attempt's agents, retried).
    }
    let was = input.job.status.phase;
    if status.phase == Phase::Building && awaits_checkout(input.job, status) {
        // Checked out in the reconcile after admission is recorded, so the
        // checkout's time counts against the builder's deadline.
        if was == Phase::Building {
            actions.push(Action::CheckoutSource);
        }
    } else if let Some(role) = running_role(status.phase) {
        if starts_agent(input, status, role) {
            if role == Role::Builder {
                actions.push(Action::PrepareWorkspace);
            }
            actions.push(Action::Start {
                role,
                attempt: status.attempt,
            });
        }
        if may_start(input, status) {
            actions.extend(ahead_of(input, status));
        }
        if awaits_snapshot(input, status) {
            if hands_over_during_snapshot(input, status) {
                actions.push(Action::Start {
                    role: Role::Checker,
                    attempt: status.attempt,
                });
            }
            actions.push(Action::TakeSnapshot);
        }
    }
    let publishes = was == Phase::Approved
        && status.phase == Phase::Approved
        && input.job.spec.source.is_some();
    if publishes {
        actions.push(Action::Publish);
    }
    // After its agents, which must not be using it (a volume) any more.
    if discards_workspace(status) && transition.is_some() {
        actions.push(Action::RemoveWorkspace);
    }
    // A finished job asked to go: its workspace, then what is stored of it.
    if let Some(deletion) = input.job.spec.delete_requested
        && purge_due(input.job)
    {
        if !actions.contains(&Action::RemoveWorkspace) {
            actions.push(Action::RemoveWorkspace);
        }
        actions.push(Action::Purge {
            keep_events: deletion.keep_events,
        });
    }
    actions
}

/// Whether a finished job asked to go still has something to remove: its
/// record (unless its events are kept), or what was kept beside it.
fn purge_due(job: &Job) -> bool {
    job.status.phase.is_terminal()
        && job
            .spec
            .delete_requested
            .is_some_and(|d| !d.keep_events || job.status.times.purged_at.is_none())
}

/// Whether the job ends by a decision of its spec (a rejection, a cancel,
/// its resource deleted) or by nobody deciding in time, so the work is
/// discarded. Planning again after a
/// crash comes to the same end, so its agents may go before it is recorded.
fn discards_workspace(status: &JobStatus) -> bool {
    matches!(
        status.phase,
        Phase::Rejected | Phase::Cancelled | Phase::Expired
    )
}

/// Whether the plan starts `role`'s agent of `status`'s attempt: it is
/// missing or was never started, the checkout it builds on is done, and
/// agents may start now.
fn starts_agent(input: &PlanInput<'_>, status: &JobStatus, role: Role) -> bool {
    if role == Role::Builder && awaits_checkout(input.job, status) {
        return false;
    }
    let current = find(&input.observed.workloads, role, status.attempt);
    current.is_none_or(|w| w.state == WorkloadState::Created) && may_start(input, status)
}

/// Whether agents of `status`'s attempt may start now: the status that wants
/// them is recorded (a crash before the record would otherwise find agents
/// no recorded status accounts for; the hand-over to the checker is the
/// exception, as building keeps the checker), and a retry's backoff is over.
fn may_start(input: &PlanInput<'_>, status: &JobStatus) -> bool {
    let recorded = &input.job.status;
    let same_phase = recorded.phase == status.phase
        || (recorded.phase == Phase::Building && status.phase == Phase::Checking);
    let backed_off = status.times.retry_at.is_none_or(|t| input.now >= t);
    same_phase && recorded.attempt == status.attempt && backed_off
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

/// Whether `status` wants `workload` to stay: one of its attempt, in a role
/// its phase keeps.
fn keeps(status: &JobStatus, workload: &ObservedWorkload) -> bool {
    workload.attempt == status.attempt && kept_roles(status.phase).contains(&workload.role)
}

/// The roles whose workloads (of the current attempt) a phase keeps; all
/// others are removed. Exited agents are kept until the job ends so their
/// logs stay readable. Building keeps the checker too: one created ahead
/// waits, never started, for its turn, and one already started was handed
/// over to by a plan whose record a crash lost — removing it would run it
/// twice.
fn kept_roles(phase: Phase) -> &'static [Role] {
    match phase {
        Phase::Building | Phase::Checking | Phase::AwaitingApproval | Phase::Approved => {
            &[Role::Builder, Role::Checker]
        }
        Phase::Pending
        | Phase::Completed
        | Phase::Rejected
        | Phase::Failed
        | Phase::Cancelled
        | Phase::Expired => &[],
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

    /// The next attempt of `role`'s phase, after `wait`: recorded as an
    /// event of the phase to itself, naming the fault.
    fn retry(&mut self, role: Role, message: String, wait: TimeDelta) {
        let phase = self.status.phase;
        let from = self.transition.as_ref().map_or(phase, |t| t.from);
        self.status.attempt += 1;
        self.status.times.retry_at = Some(self.now + wait);
        *self.status.workload_mut(role) = super::WorkloadStatus::default();
        self.status.waiting = None;
        self.status.reason = Reason::Retried(role);
        self.transition = Some(Transition {
            from,
            to: phase,
            reason: Reason::Retried(role),
            message: Some(message),
        });
    }

    /// The reminder of a job awaiting approval: recorded as an event of
    /// the phase to itself, which notifies as the wait's start did.
    fn remind(&mut self, message: String) {
        let phase = self.status.phase;
        let from = self.transition.as_ref().map_or(phase, |t| t.from);
        self.status.times.reminded_at = Some(self.now);
        self.status.reason = Reason::ApprovalReminder;
        self.transition = Some(Transition {
            from,
            to: phase,
            reason: Reason::ApprovalReminder,
            message: Some(message),
        });
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
mod deletion_tests;
#[cfg(test)]
mod tests;
