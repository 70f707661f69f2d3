//! One reconcile: observe, plan, act, record. Returns when to look again.

use std::time::Duration;

use chrono::{DateTime, Utc};

use tracing::Instrument;

use crate::job::admission::{Admission, Gate};
use crate::job::plan::{self, Action, Plan, PlanInput};
use crate::job::workload::{Observed, Role, StartFailure, WorkloadKey};
use crate::job::{Job, JobId, Phase, timestamp_now};
use crate::logs::redact;
use crate::store::{AgentLog, StoreError};

use super::ahead::Ahead;
use super::fact::{Applied, Fact};
use super::logs::LastLines;
use super::measure::measure;
use super::workload_spec::workload_spec;
use super::{Context, ControllerError, source_actions};
use crate::runtime::{RuntimeError, WorkloadSpec};

/// When a reconciled job is to be looked at again (beyond the wake-ups
/// every change brings), as kube-rs's `Action::requeue` / `await_change`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// After this long, even if nothing changes: a deadline, or a look
    /// at what an action did.
    After(Duration),
    /// Only when something changes (a store write, a workload event, the
    /// resync): nothing is due until then.
    OnChange,
}

impl From<Option<Duration>> for Requeue {
    /// The planner's `requeue_after`: none means nothing is due.
    fn from(after: Option<Duration>) -> Self {
        after.map_or(Requeue::OnChange, Requeue::After)
    }
}

/// Brings one job one step closer to its desired state.
pub async fn reconcile(context: &Context, id: JobId) -> Result<Requeue, ControllerError> {
    tracing::trace!("reconcile starts");
    let loaded = context.store.get_job(id);
    let Some(job) = loaded.instrument(step(Step::Load)).await? else {
        context.pending.forget(id);
        collect_unowned(context, id).await?;
        return Ok(Requeue::OnChange);
    };
    // The queue in memory may not have seen this version yet.
    context.pending.observe(&job);
    tracing::Span::current().record("phase", tracing::field::display(&job.status.phase));
    tracing::trace!("loaded");
    let (workloads, mut last_lines) = observe(context, id).await?;
    let mut observed = Observed {
        workloads,
        reports: context
            .store
            .observed_reports(id, job.status.attempt)
            .instrument(step(Step::Reports))
            .await?,
        ..Observed::default()
    };
    tracing::trace!(?observed, "observed");
    // Admission must read the queue and write the result without another
    // worker admitting in between; other phases need no lock, nor does a
    // pending job asked to cancel (it is cancelled whatever its place).
    let admitting = job.status.phase == Phase::Pending && !job.spec.cancel_requested;
    let _admission_guard = if admitting {
        Some(context.admission.lock().await)
    } else {
        None
    };
    let admission = if admitting {
        admit(context, &job).await?
    } else {
        Admission::Admitted
    };
    // One time for every plan of this reconcile, the time its world was
    // observed: what an action learns (a snapshot) is dated with it too, so
    // a phase recorded after an action that started its agent (the checker,
    // started during the snapshot) never begins after that agent did.
    let now = timestamp_now();
    let mut plan = make_plan(context, &job, &observed, &admission, now);
    if plan.gives_up_on_an_attempt() && context.runtime.owner_gone(id).await? {
        observed.owner_gone = true;
        plan = make_plan(context, &job, &observed, &admission, now);
    }
    // Some actions report what they found (a checkout's base, a pushed
    // commit, a start that can never work); the planner then decides again
    // with that knowledge, in the same reconcile. Each such action reports at
    // most once per reconcile, so this ends. An action is applied once per
    // reconcile: the plans after a fact repeat the ones before it.
    let mut acted = Acted::default();
    for _ in 0..MAX_REPLANS {
        let applied = apply_all(context, &job, &plan, &mut acted, &mut last_lines);
        let Some(fact) = applied.await? else {
            break;
        };
        fact.teach(&mut observed);
        plan = make_plan(context, &job, &observed, &admission, now);
    }
    let recorded = record(context, job, plan, &observed, acted.running, last_lines);
    recorded.instrument(step(Step::Record)).await
}

/// The job's workloads, with any output of theirs that may end up in an
/// error message redacted; and the wait for the last lines of those that
/// ended, which their output followers are storing meanwhile.
async fn observe(
    context: &Context,
    id: JobId,
) -> Result<(Vec<crate::job::workload::ObservedWorkload>, LastLines), ControllerError> {
    let observed = context.runtime.observe(id);
    let mut workloads = observed.instrument(step(Step::Observe)).await?;
    let last_lines = context.logs.track(context, id, &workloads);
    for workload in &mut workloads {
        if let Some(tail) = &workload.log_tail {
            let token = agent_token(context, id, workload.role, workload.attempt);
            workload.log_tail = Some(redact(tail, &[token.as_str()]).into_owned());
        }
    }
    Ok((workloads, last_lines))
}

/// Waits until ended agents' last lines are stored, so that what follows
/// comes after them in the job's stream.
async fn after_last_lines(last_lines: &mut LastLines) {
    last_lines.stored().instrument(step(Step::Logs)).await;
}

/// Whether `action` must wait for ended agents' last lines: any that
/// removes an agent or leads to a status write. The snapshot reads the
/// workspace and writes neither, so it is taken meanwhile; so is an agent's
/// start, whose follower stores its lines after theirs (see `LastLines`),
/// which keeps the wait off the builder-to-checker hand-over.
fn waits_for_last_lines(action: &Action) -> bool {
    !matches!(action, Action::TakeSnapshot | Action::Start { .. })
}

fn agent_token(context: &Context, job: JobId, role: Role, attempt: u32) -> String {
    context.settings.agent_keys.token(job, role, attempt)
}

/// The parts of a reconcile but its actions (which have spans of their
/// own), each in a span of its own (debug level: the log shows them on
/// asking, traces do not carry them), so that a slow reaction says where
/// its time went.
#[derive(Clone, Copy)]
enum Step {
    /// Reading the job.
    Load,
    /// Asking the runtime for the job's workloads.
    Observe,
    /// Waiting for ended agents' last lines to be stored.
    Logs,
    /// Reading the agents' reports.
    Reports,
    /// Writing the planned status.
    Record,
}

fn step(step: Step) -> tracing::Span {
    match step {
        Step::Load => tracing::debug_span!("reconcile.load"),
        Step::Observe => tracing::debug_span!("reconcile.observe"),
        Step::Logs => tracing::debug_span!("reconcile.logs"),
        Step::Reports => tracing::debug_span!("reconcile.reports"),
        Step::Record => tracing::debug_span!("reconcile.record"),
    }
}

/// What this reconcile's actions have done so far.
#[derive(Default)]
struct Acted {
    /// Each action is applied once per reconcile.
    applied: Vec<Action>,
    /// A step is still running elsewhere: it wakes the job when it changes.
    running: bool,
}

/// How soon a job whose actions changed nothing recordable is looked at again.
const LOOK_AGAIN_AFTER_ACTING: Duration = Duration::from_millis(100);

/// Checkout, snapshot, publish, a failed start and a declined creation
/// ahead: the actions that can report a fact.
const MAX_REPLANS: usize = 6;

fn make_plan(
    context: &Context,
    job: &Job,
    observed: &Observed,
    admission: &Admission,
    now: DateTime<Utc>,
) -> Plan {
    plan::plan(&PlanInput {
        job,
        observed,
        admission,
        deadlines: &context.settings.deadlines,
        retries: &context.settings.retries,
        serving_since: context.settings.serving_since,
        now,
        hand_over: context.settings.hand_over,
    })
}

/// Applies the plan's actions in order, but those applied already; stops
/// at the first that reports a fact.
async fn apply_all(
    context: &Context,
    job: &Job,
    plan: &Plan,
    acted: &mut Acted,
    last_lines: &mut LastLines,
) -> Result<Option<Fact>, ControllerError> {
    for action in &plan.actions {
        if acted.applied.contains(action) {
            continue;
        }
        if waits_for_last_lines(action) {
            after_last_lines(last_lines).await;
        }
        acted.applied.push(action.clone());
        match apply(context, job, action).await? {
            Applied::Done => {}
            Applied::Learned(fact) => return Ok(Some(fact)),
            Applied::Running => acted.running = true,
        }
    }
    Ok(None)
}

/// Whether the pending `job` may start now: the queue in memory answers in
/// `O(log n)`; the hold and this replica's drain are one read of their
/// rows, which the drain in memory is brought in line with.
async fn admit(context: &Context, job: &Job) -> Result<Admission, ControllerError> {
    let drain = &context.settings.drain;
    let levers = context.store.queue_levers(drain.replica()).await?;
    drain.observe(levers.drain.as_ref());
    let gate = Gate {
        max_active: context.settings.max_active_jobs,
        load: *context.load.borrow(),
        held: levers.hold.is_some(),
        draining: levers.drain.is_some(),
        ageing: context.settings.ageing,
    };
    Ok(context.pending.admission(job.id, &gate))
}

/// One action, in a span of its own inside the reconcile's (which names
/// the job), so whatever it logs (a git step, an engine call) says which.
#[tracing::instrument(level = "info", skip_all, fields(action = ?action))]
async fn apply(context: &Context, job: &Job, action: &Action) -> Result<Applied, ControllerError> {
    tracing::debug!("applying");
    let runtime = &context.runtime;
    match action {
        Action::PrepareWorkspace => runtime.prepare_workspace(job.id).await?,
        Action::Start { role, attempt } => {
            return start(context, job, *role, *attempt)
                .await
                .map(Applied::from);
        }
        Action::CreateAhead { role, attempt } => {
            let spec = spec_for(context, job, *role, *attempt);
            return Ok(match context.ahead.begin(context.runtime.clone(), spec) {
                Ahead::UnderWay => Applied::Running,
                Ahead::Declined => Applied::Learned(Fact::AheadDeclined),
            });
        }
        Action::Remove { role, attempt, id } => {
            let key = WorkloadKey {
                job: job.id,
                role: *role,
                attempt: *attempt,
            };
            save_log(context, job.id, key, id).await?;
            runtime
                .remove(key, id)
                .instrument(runtime_call(RuntimeCall::Remove, key))
                .await?;
            tracing::info!(%role, attempt, workload = %id, "removed agent");
        }
        Action::RemoveWorkspace => {
            runtime.remove_workspace(job.id).await?;
            context.source.discard(job.id).await?;
        }
        Action::CheckoutSource => return source_actions::checkout(context, job).await,
        Action::TakeSnapshot => return source_actions::take_snapshot(context, job).await,
        Action::Publish => return source_actions::publish(context, job).await,
        Action::Purge { keep_events } => {
            context.store.purge_job(job.id, *keep_events).await?;
            tracing::info!(keep_events, "finished job deleted");
        }
    }
    Ok(Applied::Done)
}

/// The runtime calls that start or remove an agent.
#[derive(Clone, Copy)]
enum RuntimeCall {
    Start,
    Remove,
}

/// A runtime call in a span of its own: a trace shows how long the engine
/// (or the API server) took.
fn runtime_call(call: RuntimeCall, key: WorkloadKey) -> tracing::Span {
    let (role, attempt) = (tracing::field::display(key.role), key.attempt);
    match call {
        RuntimeCall::Start => tracing::info_span!("runtime.start", role, attempt),
        RuntimeCall::Remove => tracing::info_span!("runtime.remove", role, attempt),
    }
}

fn spec_for(context: &Context, job: &Job, role: Role, attempt: u32) -> WorkloadSpec {
    let settings = &context.settings;
    let token = agent_token(context, job.id, role, attempt);
    workload_spec(
        job,
        role,
        attempt,
        &settings.agents,
        &settings.callback_base_url,
        &token,
        settings.egress_proxy.as_deref(),
    )
}

async fn start(
    context: &Context,
    job: &Job,
    role: Role,
    attempt: u32,
) -> Result<Option<Fact>, ControllerError> {
    let spec = spec_for(context, job, role, attempt);
    let starting = tokio::time::Instant::now();
    let key = WorkloadKey {
        job: job.id,
        role,
        attempt,
    };
    // Created ahead, perhaps still: the start then finds it made.
    context.ahead.settled(key).await;
    let started = context
        .runtime
        .start(&spec)
        .instrument(runtime_call(RuntimeCall::Start, key))
        .await;
    match started {
        Ok(id) => {
            context.metrics.agent_started(role, starting.elapsed());
            tracing::info!(%role, attempt, workload = %id, "started agent");
            Ok(None)
        }
        // The runtime answered: the planner decides what follows (the end
        // of the job if retrying cannot help, else the next attempt).
        Err(
            error @ (RuntimeError::ImageNotFound(_)
            | RuntimeError::Refused { .. }
            | RuntimeError::Failed { .. }),
        ) => {
            let token = agent_token(context, job.id, role, attempt);
            let message = redact(&super::error_chain(&error), &[token.as_str()]).into_owned();
            tracing::warn!(%role, attempt, error = %message, "agent could not be started");
            Ok(Some(Fact::StartFailed(StartFailure {
                role,
                attempt,
                message,
                permanent: error.is_permanent(),
            })))
        }
        // The runtime is out of reach: no attempt is spent on an outage;
        // the reconcile is tried again after a backoff.
        Err(error @ RuntimeError::Unavailable { .. }) => Err(error.into()),
    }
}

/// Writes the planned status if it changed, after ended agents' last
/// lines. A lost compare-and-swap means
/// someone else wrote first: plan again at once from what they wrote.
/// `running`: a step is under way elsewhere, and its changes wake the job.
/// What the write completes (a transition, a hand-over...) is counted once
/// it has landed.
async fn record(
    context: &Context,
    job: Job,
    plan: Plan,
    observed: &Observed,
    running: bool,
    mut last_lines: LastLines,
) -> Result<Requeue, ControllerError> {
    if plan.status == job.status {
        // Acted, nothing to record yet: look again soon (events usually come
        // first), never in a tight loop if an action changes nothing. A step
        // still running is not polled: its Pod's changes wake the job.
        return Ok(if plan.actions.is_empty() || running {
            plan.requeue_after.into()
        } else {
            Requeue::After(LOOK_AGAIN_AFTER_ACTING)
        });
    }
    after_last_lines(&mut last_lines).await;
    let measures = measure(&job, &plan.status, plan.transition.as_ref(), observed);
    let mut next = job;
    next.status = plan.status;
    match context
        .store
        .update_job(&next, plan.transition.as_ref())
        .await
    {
        Ok(stored) => {
            if let Some(transition) = &plan.transition {
                tracing::info!(from = %transition.from, to = %transition.to, reason = %transition.reason, "transition");
            }
            measures.report(&context.metrics);
            // Counted before the next admission, whenever the feed brings
            // it; a slot this frees wakes the head of the queue (`heads`).
            context.pending.observe(&stored);
            Ok(plan.requeue_after.into())
        }
        Err(StoreError::Conflict { .. }) => Ok(Requeue::After(Duration::ZERO)),
        // Deleted meanwhile (its deletion asked for, and just carried out):
        // nothing is left to record.
        Err(StoreError::NotFound(_)) => Ok(Requeue::OnChange),
        Err(error) => Err(error.into()),
    }
}

/// A slot was freed, or the queue may have opened: the pending jobs first
/// in line for the free slots look again, as many as there are free slots.
/// The others cannot start before them.
pub(super) fn wake_head(context: &Context) {
    for id in context.pending.head() {
        context.queue.add(id);
    }
}

/// Workloads whose job does not exist (deleted, or from another database) are removed.
async fn collect_unowned(context: &Context, id: JobId) -> Result<(), ControllerError> {
    for workload in context.runtime.observe(id).await? {
        let key = WorkloadKey {
            job: id,
            role: workload.role,
            attempt: workload.attempt,
        };
        tracing::info!(job = %id, workload = %workload.id, "removing a workload no job owns");
        context
            .runtime
            .remove(key, &workload.id)
            .instrument(runtime_call(RuntimeCall::Remove, key))
            .await?;
    }
    Ok(())
}

/// Keeps an agent's output before its workload goes. A log that cannot be
/// read is noted in its place rather than blocking the removal.
async fn save_log(
    context: &Context,
    job: JobId,
    key: WorkloadKey,
    id: &str,
) -> Result<(), ControllerError> {
    let token = agent_token(context, job, key.role, key.attempt);
    let log = match context.runtime.logs(id).await {
        Ok(log) => redact(&log, &[token.as_str()]).into_owned(),
        Err(error) => format!(
            "(the log could not be read: {})",
            super::error_chain(&error)
        ),
    };
    let record = AgentLog {
        role: key.role,
        attempt: key.attempt,
        workload_id: id.to_owned(),
        log,
        created_at: timestamp_now(),
    };
    context.store.save_agent_log(job, &record).await?;
    Ok(())
}
