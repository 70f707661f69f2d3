//! The reconcile loop.
//!
//! Workers take job ids from a [`WorkQueue`] and reconcile each: load the
//! job, observe its workloads and agent reports, ask the pure planner what to
//! do, carry out the actions, write the new status (compare-and-swap). The loop
//! never asks *why* it was woken: store writes, runtime events, deadlines and
//! a periodic resync all just queue the id, and the same comparison gives the
//! same next step.
//!
//! Pending jobs are the exception to "everything, every resync": however
//! many wait, only those first in line for a free slot can start, so only
//! they are woken when a slot frees or the queue opens (the queue in memory,
//! [`PendingJobs`], says which). Each is reconciled when written (submitted,
//! cancelled), and all once after a gap in the change feed.

mod ahead;
mod fact;
mod logs;
mod measure;
mod queue;
mod reconcile;
mod source_actions;
mod workload_spec;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use futures::StreamExt;
use tokio::sync::{Mutex, broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentsConfig, Config, PublishConfig};
use crate::credentials::AgentKeys;
use crate::job::JobId;
use crate::job::admission::LoadLevel;
use crate::job::plan::{Deadlines, HandOver, Retries};
use crate::metrics::{ControllerMetrics, Metrics, ReconcileOutcome};
use crate::pending::PendingJobs;
use crate::runtime::{Runtime, RuntimeError};
use crate::source::{SourceControl, SourceError};
use crate::store::{Store, StoreError, StoreEvent};

pub use crate::errors::error_chain;
pub use queue::WorkQueue;
use reconcile::Requeue;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl ControllerError {
    /// What a failed reconcile is counted as (`icarus_reconcile_errors_total`):
    /// which port failed, and whether it was an outage.
    pub fn kind(&self) -> &'static str {
        match self {
            ControllerError::Store(StoreError::Fenced { .. }) => "fenced",
            ControllerError::Store(error) if error.database_error_kind().is_some() => "database",
            ControllerError::Store(_) => "store",
            ControllerError::Runtime(RuntimeError::Unavailable { .. }) => "runtime_unavailable",
            ControllerError::Runtime(_) => "runtime",
            ControllerError::Source(_) => "source",
        }
    }
}

/// What the controller needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    pub deadlines: Deadlines,
    pub retries: Retries,
    /// Since when this orchestrator has been taking agents' reports (it
    /// starts serving as the controller starts): a report missing from an
    /// agent that ran before may have been lost while it was down.
    pub serving_since: DateTime<Utc>,
    pub max_active_jobs: usize,
    pub resync_interval: Duration,
    pub workers: usize,
    pub agents: AgentsConfig,
    /// Base URL agents use to reach the API; `/jobs/{id}/callback` is appended.
    pub callback_base_url: String,
    pub publish: PublishConfig,
    /// Signs each agent's callback token.
    pub agent_keys: AgentKeys,
    /// `host:port` of the egress proxy as agents reach it, where one serves
    /// them; their proxy variables point there.
    pub egress_proxy: Option<String>,
    /// A pending job's priority grows by one per this long waited (`queue.ageing_seconds`).
    pub ageing: Option<chrono::TimeDelta>,
    /// This replica's drain, as last read: what wakes the head of the
    /// queue when it starts or stops (admission reads the row itself).
    pub drain: Arc<crate::drain::Drain>,
    /// Whether the checker starts while the builder's work is recorded
    /// (local mode) or after (Kubernetes mode); see [`HandOver`].
    pub hand_over: HandOver,
}

impl ControllerSettings {
    pub fn from_config(
        config: &Config,
        callback_base_url: String,
        agent_keys: AgentKeys,
        drain: Arc<crate::drain::Drain>,
    ) -> Self {
        ControllerSettings {
            deadlines: config.deadlines(),
            retries: config.retries(),
            serving_since: crate::job::timestamp_now(),
            max_active_jobs: config.orchestrator.max_concurrent_jobs as usize,
            resync_interval: Duration::from_secs(config.orchestrator.resync_interval_seconds),
            workers: 4,
            agents: config.agents.clone(),
            callback_base_url,
            publish: config.publish.clone(),
            agent_keys,
            egress_proxy: None,
            ageing: config.queue.ageing(),
            drain,
            hand_over: if config.kubernetes.enabled {
                HandOver::AfterSnapshot
            } else {
                HandOver::DuringSnapshot
            },
        }
    }
}

/// Everything a reconcile needs: clients, settings, the queue. Shared by workers.
pub struct Context {
    pub(crate) store: Store,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) source: Arc<dyn SourceControl>,
    pub(crate) settings: ControllerSettings,
    pub(crate) queue: Arc<WorkQueue<JobId>>,
    /// The unfinished jobs in memory: who may start, and who is next.
    pub(crate) pending: Arc<PendingJobs>,
    pub(crate) load: watch::Receiver<LoadLevel>,
    /// Held from reading the queue to writing the status of a pending job, so
    /// two workers never hand out the same free slot.
    pub(crate) admission: Mutex<()>,
    pub(crate) metrics: ControllerMetrics,
    /// The followers of running agents' output.
    pub(crate) logs: logs::LogFollowers,
    /// Agents being created ahead of their turn.
    pub(crate) ahead: ahead::AheadCreations,
}

/// The running controller's handle.
pub struct Controller {
    context: Arc<Context>,
}

impl Controller {
    pub fn new(
        store: Store,
        runtime: Arc<dyn Runtime>,
        source: Arc<dyn SourceControl>,
        settings: ControllerSettings,
        pending: Arc<PendingJobs>,
        load: watch::Receiver<LoadLevel>,
        metrics: &Metrics,
    ) -> Self {
        let settings_logs = settings.agents.logs;
        let context = Context {
            store,
            runtime,
            source,
            settings,
            queue: WorkQueue::with_metrics(metrics.queue.clone()),
            pending,
            load,
            admission: Mutex::new(()),
            metrics: metrics.controller.clone(),
            logs: logs::LogFollowers::new(&settings_logs),
            ahead: ahead::AheadCreations::default(),
        };
        Controller {
            context: Arc::new(context),
        }
    }

    /// Runs until `shutdown` is cancelled, then lets workers finish the
    /// reconcile in hand. Agents keep running for the next start to adopt.
    ///
    /// Which replica runs it, and for how long, is the supervisor's
    /// business: it runs the controller once per term this replica leads
    /// and cancels `shutdown` when the term ends (`serve::supervisor`).
    pub async fn run(self, shutdown: CancellationToken) {
        let context = self.context;
        let stop = shutdown.child_token();
        let mut tasks = JoinSet::new();
        tasks.spawn(follow_store(Arc::clone(&context), stop.clone()));
        tasks.spawn(follow_runtime(Arc::clone(&context), stop.clone()));
        tasks.spawn(follow_drain(Arc::clone(&context), stop.clone()));
        tasks.spawn(follow_head(Arc::clone(&context), stop.clone()));
        tasks.spawn(cancel_what_was_asked(Arc::clone(&context)));
        tasks.spawn(follow_load(Arc::clone(&context), stop.clone()));
        tasks.spawn(resync_periodically(Arc::clone(&context), stop.clone()));
        for worker in 0..context.settings.workers.max(1) {
            tasks.spawn(work(Arc::clone(&context), worker));
        }
        shutdown.cancelled().await;
        stop.cancel();
        context.queue.shut_down();
        while tasks.join_next().await.is_some() {}
        context.ahead.finish().await;
        context.logs.stop_all();
        tracing::info!("controller stopped");
    }
}

async fn work(context: Arc<Context>, worker: usize) {
    while let Some(id) = context.queue.next().await {
        // `phase` is recorded once the job is read; a failed reconcile is
        // an error span in a trace.
        let span = tracing::info_span!(
            "reconcile",
            job = %id,
            worker,
            phase = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
        );
        let started = tokio::time::Instant::now();
        let outcome = reconcile::reconcile(&context, id);
        let outcome = tracing::Instrument::instrument(outcome, span.clone()).await;
        if outcome.is_err() {
            span.record("otel.status_code", "error");
        }
        let (ended, error_kind) = match &outcome {
            Ok(_) => (ReconcileOutcome::Success, None),
            Err(error) => (ReconcileOutcome::Error, Some(error.kind())),
        };
        context
            .metrics
            .reconciled(started.elapsed(), ended, error_kind);
        context.queue.done(id);
        match outcome {
            Ok(requeue) => {
                context.queue.forget(id);
                if let Requeue::After(after) = requeue {
                    context.queue.add_after(id, after);
                }
            }
            Err(error) => {
                let after = context.queue.add_rate_limited(id);
                tracing::warn!(job = %id, error = %error_chain(&error), ?after, "reconcile failed; will retry");
            }
        }
    }
}

/// Every store write wakes its job; after a gap (a lagging subscriber,
/// other replicas' changes possibly missed) every unfinished job looks again.
async fn follow_store(context: Arc<Context>, shutdown: CancellationToken) {
    let mut events = context.store.subscribe();
    let mut gaps = context.store.gaps();
    gaps.mark_unchanged();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => event,
            changed = gaps.changed() => {
                if changed.is_err() {
                    return;
                }
                resync_all(&context).await;
                continue;
            }
        };
        match event {
            Ok(StoreEvent::JobWritten(job)) => context.queue.add(job.id),
            Ok(StoreEvent::AgentReported(id)) => context.queue.add(id),
            // Its `JobWritten` came first and already woke the job.
            Ok(StoreEvent::Transitioned { .. }) => {}
            Ok(StoreEvent::QueueChanged) => reconcile::wake_head(&context),
            Err(broadcast::error::RecvError::Lagged(_)) => resync_all(&context).await,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A drain that starts or stops wakes the head of the queue: it says so, or starts.
async fn follow_drain(context: Arc<Context>, shutdown: CancellationToken) {
    let mut drain = context.settings.drain.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = drain.changed() => if changed.is_err() { return },
        }
        reconcile::wake_head(&context);
    }
}

/// A host no longer busy (or newly busy) wakes the head of the queue.
async fn follow_load(context: Arc<Context>, shutdown: CancellationToken) {
    let mut load = context.load.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = load.changed() => if changed.is_err() { return },
        }
        reconcile::wake_head(&context);
    }
}

/// A slot freed, or the jobs first in line for the free slots changed: those
/// jobs look again, and no other pending job (they cannot start before them).
async fn follow_head(context: Arc<Context>, shutdown: CancellationToken) {
    let mut heads = context.pending.heads();
    loop {
        reconcile::wake_head(&context);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = heads.changed() => if changed.is_err() { return },
        }
    }
}

/// Every workload change (exit, OOM, removal) wakes its job.
async fn follow_runtime(context: Arc<Context>, shutdown: CancellationToken) {
    let mut changes = context.runtime.changes();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            change = changes.next() => match change {
                Some(id) => {
                    tracing::debug!(job = %id, "runtime change");
                    context.queue.add(id);
                }
                None => return,
            },
        }
    }
}

/// At the start of a term: a pending job asked to cancel while no
/// controller ran is cancelled now, not once it reaches the head.
async fn cancel_what_was_asked(context: Arc<Context>) {
    match context.store.pending_asked_to_cancel().await {
        Ok(ids) => ids.into_iter().for_each(|id| context.queue.add(id)),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "could not list pending jobs asked to cancel")
        }
    }
}

/// At a fixed interval, the safety net for anything an event missed: queues
/// every unfinished job past `pending`, every job that owns workloads, and
/// the head of the queue. The other pending jobs are not: they cannot start
/// before the head, and a change of theirs comes with the job's own write
/// (or, missed, with a gap that wakes every job).
async fn resync_periodically(context: Arc<Context>, shutdown: CancellationToken) {
    loop {
        resync(&context).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(context.settings.resync_interval) => {}
        }
    }
}

async fn resync(context: &Context) {
    match context.store.unfinished_beyond_pending().await {
        Ok(ids) => ids.into_iter().for_each(|id| context.queue.add(id)),
        Err(error) => tracing::warn!(error = %error_chain(&error), "resync could not list jobs"),
    }
    reconcile::wake_head(context);
    resync_owners(context).await;
}

/// After changes were missed: every unfinished job looks again, pending ones
/// included (one of them may have been asked to cancel), once.
async fn resync_all(context: &Context) {
    match context.store.queue_entries().await {
        Ok(entries) => entries
            .iter()
            .for_each(|(entry, _)| context.queue.add(entry.id)),
        Err(error) => tracing::warn!(error = %error_chain(&error), "resync could not list jobs"),
    }
    resync_owners(context).await;
}

async fn resync_owners(context: &Context) {
    match context.runtime.owners().await {
        Ok(owners) => owners.into_iter().for_each(|id| context.queue.add(id)),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "resync could not list workloads")
        }
    }
}
