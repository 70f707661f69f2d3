//! The queue of unfinished jobs, in memory, as an informer's cache: read
//! from the database at start, then kept current by the store's change feed
//! ([`Store::subscribe`], into which other replicas' writes are relayed on
//! PostgreSQL), and read again after any gap (a lagged receiver, or
//! [`Store::gaps`]). The ordered structure and its rules are the core's
//! [`PendingQueue`]; this adapter feeds it and shares it.
//!
//! Every process keeps one: its API shows each pending job's place from it,
//! and the controller (on the leader) admits from it in `O(log n)` however
//! many jobs wait, instead of reading and sorting every unfinished job at
//! each admission. The controller also feeds it the versions it reads and
//! writes, so that its own admissions are counted before their changes come
//! round the feed. It announces when the jobs that may start next change
//! ([`PendingJobs::heads`]): the controller wakes just those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::job::admission::{Admission, Gate, PendingQueue, Place, QueueEntry};
use crate::job::{Job, JobId};
use crate::store::{Store, StoreError, StoreEvent};

/// How long to wait before reading the database again after a failed read.
const RETRY_AFTER: Duration = Duration::from_secs(1);

struct State {
    queue: PendingQueue,
    /// The free slots and the jobs that would take them, as last announced.
    head: (usize, Vec<JobId>),
}

/// The process's queue of unfinished jobs; shared by the API and the controller.
pub struct PendingJobs {
    state: Mutex<State>,
    max_active: usize,
    heads: watch::Sender<u64>,
}

impl PendingJobs {
    /// An empty queue ordered with `ageing`, with `max_active` slots.
    pub fn new(ageing: Option<TimeDelta>, max_active: usize) -> Arc<PendingJobs> {
        Arc::new(PendingJobs {
            state: Mutex::new(State {
                queue: PendingQueue::new(ageing),
                head: (0, Vec::new()),
            }),
            max_active,
            heads: watch::Sender::new(0),
        })
    }

    /// Reads the unfinished jobs into a new queue, and returns it with the
    /// loop that keeps it current until `shutdown` (to be spawned). The feed
    /// is subscribed to before the read, so nothing written meanwhile is lost.
    pub async fn start(
        store: &Store,
        ageing: Option<TimeDelta>,
        max_active: usize,
        shutdown: CancellationToken,
    ) -> Result<(Arc<PendingJobs>, impl Future<Output = ()> + Send + 'static), StoreError> {
        let pending = PendingJobs::new(ageing, max_active);
        let events = store.subscribe();
        let mut gaps = store.gaps();
        gaps.mark_unchanged();
        pending.rebuild(store.queue_entries().await?);
        let follow = Arc::clone(&pending).follow(store.clone(), events, gaps, shutdown);
        Ok((pending, follow))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is applied whole between two awaits; a panic
        // elsewhere leaves the data consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes `unfinished` as the truth.
    pub fn rebuild(&self, unfinished: Vec<(QueueEntry, i64)>) {
        let mut state = self.state();
        state.queue.rebuild(unfinished);
        self.announce_head(&mut state);
    }

    /// Takes in a version of `job` read or written (older ones are ignored).
    pub fn observe(&self, job: &Job) {
        let mut state = self.state();
        if state.queue.apply(QueueEntry::of(job), job.resource_version) {
            self.announce_head(&mut state);
        }
    }

    /// The job no longer exists.
    pub fn forget(&self, id: JobId) {
        let mut state = self.state();
        state.queue.forget(id);
        self.announce_head(&mut state);
    }

    /// Tells [`heads`](Self::heads)' receivers if the free slots or the jobs
    /// that would take them changed.
    fn announce_head(&self, state: &mut State) {
        let free = self.max_active.saturating_sub(state.queue.active());
        let head = (free, state.queue.head(free));
        if head != state.head {
            state.head = head;
            self.heads.send_modify(|count| *count += 1);
        }
    }

    /// Changes whenever the free slots or the pending jobs first in line for
    /// them change: a slot freed, the first job left, one came ahead.
    pub fn heads(&self) -> watch::Receiver<u64> {
        self.heads.subscribe()
    }

    /// The pending jobs that would take the free slots now: as many as there
    /// are free slots, first in line first.
    pub fn head(&self) -> Vec<JobId> {
        self.state().head.1.clone()
    }

    /// Whether `id` may start now under `gate` (its `max_active` and ageing
    /// are this queue's).
    pub fn admission(&self, id: JobId, gate: &Gate) -> Admission {
        self.state().queue.admission(id, gate)
    }

    /// Jobs building or checking.
    pub fn active(&self) -> usize {
        self.state().queue.active()
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.state().queue.pending()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The places of those of `ids` that are pending: one walk down the
    /// queue to the last of them, `O(its position)`.
    pub fn places_of(
        &self,
        ids: &[JobId],
        gate: &Gate,
        now: DateTime<Utc>,
    ) -> HashMap<JobId, Place> {
        self.state().queue.places_of(ids, gate, now)
    }

    /// Every pending job, in the order they start, with its place: `O(n)`.
    pub fn places(&self, gate: &Gate, now: DateTime<Utc>) -> Vec<(QueueEntry, Place)> {
        let state = self.state();
        state
            .queue
            .places(gate, now)
            .into_iter()
            .filter_map(|place| Some((state.queue.get(place.id)?, place)))
            .collect()
    }

    /// Applies every job written, until `shutdown`; reads the database again
    /// after a gap.
    async fn follow(
        self: Arc<Self>,
        store: Store,
        mut events: broadcast::Receiver<StoreEvent>,
        mut gaps: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Ok(StoreEvent::JobWritten(job)) => self.observe(&job),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "the queue missed changes; reading it again");
                        self.reread(&store, &shutdown).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = gaps.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reread(&store, &shutdown).await;
                }
            }
        }
    }

    /// Reads the unfinished jobs again, until it succeeds or `shutdown`.
    async fn reread(&self, store: &Store, shutdown: &CancellationToken) {
        loop {
            match store.queue_entries().await {
                Ok(entries) => return self.rebuild(entries),
                Err(error) => {
                    tracing::warn!(error = %crate::errors::error_chain(&error), "the queue could not be read again; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
