//! A work queue keyed by job id, in the manner of client-go's workqueue.
//!
//! - A key queued many times before a worker takes it runs once.
//! - A key is never processed by two workers at once: queued while in
//!   progress, it runs again after the current run finishes.
//! - `add_after` schedules a later visit; only the earliest pending timer per
//!   key is kept, so repeated scheduling does not pile up tasks.
//! - `add_rate_limited` retries a failed key after a backoff that doubles
//!   with each failure of that key ([`ERROR_BACKOFF_BASE`] up to
//!   [`ERROR_BACKOFF_CAP`]), so one broken job is not retried hot while
//!   others are unaffected; `forget` (after a success) starts it over.
//! - With [`WorkQueue::with_metrics`], its depth, adds, retries and how long
//!   each key waited for a worker are recorded, as client-go's `workqueue_*`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::QueueMetrics;

#[derive(Debug)]
struct State<K> {
    queue: VecDeque<K>,
    /// Keys waiting to run (in `queue`, or re-queued while processing).
    dirty: HashSet<K>,
    processing: HashSet<K>,
    timers: HashMap<K, Instant>,
    /// Failures in a row per key, since it was last forgotten.
    failures: HashMap<K, u32>,
    /// When each key in `queue` was put there.
    queued_at: HashMap<K, Instant>,
    shut_down: bool,
}

impl<K: Copy + Eq + Hash> State<K> {
    /// Puts `key` at the back of the queue, noting when.
    fn push(&mut self, key: K, metrics: Option<&QueueMetrics>) {
        self.queue.push_back(key);
        self.queued_at.insert(key, Instant::now());
        if let Some(metrics) = metrics {
            metrics.added(self.queue.len());
        }
    }
}

/// The first retry of a failed key comes this soon.
pub const ERROR_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// However often a key failed, it is retried at least this often.
pub const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(180);

/// The wait before the retry after `failures` earlier failures in a row:
/// the base, doubled for each, at most the cap.
pub fn error_backoff(failures: u32) -> Duration {
    let factor = 2u32.checked_pow(failures).unwrap_or(u32::MAX);
    ERROR_BACKOFF_BASE
        .checked_mul(factor)
        .map_or(ERROR_BACKOFF_CAP, |wait| wait.min(ERROR_BACKOFF_CAP))
}

#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
    metrics: Option<QueueMetrics>,
}

impl<K: Copy + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Self::with(None)
    }

    /// A queue that records its depth, adds, retries and waits in `metrics`.
    pub fn with_metrics(metrics: QueueMetrics) -> Arc<Self> {
        Self::with(Some(metrics))
    }

    fn with(metrics: Option<QueueMetrics>) -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                timers: HashMap::new(),
                failures: HashMap::new(),
                queued_at: HashMap::new(),
                shut_down: false,
            }),
            ready: Notify::new(),
            metrics,
        })
    }

    fn state(&self) -> MutexGuard<'_, State<K>> {
        // The state stays consistent at every await-free step; a poisoned lock
        // only means another thread panicked, so carry on with the data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: K) {
        let mut state = self.state();
        if state.shut_down || !state.dirty.insert(key) {
            return;
        }
        if !state.processing.contains(&key) {
            state.push(key, self.metrics.as_ref());
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`, unless an earlier visit is already scheduled.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let due = Instant::now() + delay;
        {
            let mut state = self.state();
            if state.shut_down || state.timers.get(&key).is_some_and(|at| *at <= due) {
                return;
            }
            state.timers.insert(key, due);
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let still_current = {
                let mut state = queue.state();
                let current = state.timers.get(&key) == Some(&due);
                if current {
                    state.timers.remove(&key);
                }
                current
            };
            if still_current {
                queue.add(key);
            }
        });
    }

    /// Queues `key` again after its failure backoff, which doubles with each
    /// call until [`WorkQueue::forget`]; returns the wait.
    pub fn add_rate_limited(self: &Arc<Self>, key: K) -> Duration {
        let wait = {
            let mut state = self.state();
            let failures = state.failures.entry(key).or_insert(0);
            let wait = error_backoff(*failures);
            *failures = failures.saturating_add(1);
            wait
        };
        if let Some(metrics) = &self.metrics {
            metrics.retried();
        }
        self.add_after(key, wait);
        wait
    }

    /// Forgets `key`'s failures: its next failure is retried after the base wait.
    pub fn forget(&self, key: K) {
        self.state().failures.remove(&key);
    }

    /// Waits for the next key and marks it in progress; `None` once shut down.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state();
                if state.shut_down {
                    return None;
                }
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key);
                    let queued_at = state.queued_at.remove(&key);
                    if let (Some(metrics), Some(at)) = (&self.metrics, queued_at) {
                        metrics.taken(at.elapsed(), state.queue.len());
                    }
                    if !state.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` finished; if it was queued meanwhile, it becomes ready again.
    pub fn done(&self, key: K) {
        let mut state = self.state();
        state.processing.remove(&key);
        if state.dirty.contains(&key) && !state.shut_down {
            state.push(key, self.metrics.as_ref());
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Wakes every waiting worker with `None`; later adds are ignored.
    pub fn shut_down(&self) {
        self.state().shut_down = true;
        if let Some(metrics) = &self.metrics {
            metrics.set_depth(0);
        }
        self.ready.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_queued_twice_runs_once() {
        let queue = WorkQueue::new();
        queue.add(1);
        queue.add(1);
        queue.add(2);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next().await, Some(1));
        assert_eq!(queue.next().await, Some(2));
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_runs_again_after_done_and_not_before() {
        let queue = WorkQueue::new();
        queue.add(7);
        let key = queue.next().await.unwrap();
        queue.add(7);
        assert!(
            queue.is_empty(),
            "must not be handed to a second worker while in progress"
        );
        queue.done(key);
        assert_eq!(queue.next().await, Some(7));
    }

    #[tokio::test]
    async fn shutting_down_releases_waiting_workers() {
        let queue: Arc<WorkQueue<u32>> = WorkQueue::new();
        let waiter = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.next().await })
        };
        tokio::task::yield_now().await;
        queue.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_add_arrives_after_its_delay_and_only_the_earliest_timer_counts() {
        let queue = WorkQueue::new();
        queue.add_after(3, Duration::from_secs(60));
        queue.add_after(3, Duration::from_secs(10));
        queue.add_after(3, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(queue.is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(queue.next().await, Some(3));
        queue.done(3);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(queue.is_empty(), "superseded timers must not fire");
    }

    /// Takes `key` as a worker does and reports that its reconcile failed;
    /// returns the backoff the queue chose.
    async fn fail(queue: &Arc<WorkQueue<u32>>, key: u32) -> Duration {
        assert_eq!(queue.next().await, Some(key));
        queue.done(key);
        queue.add_rate_limited(key)
    }

    /// Fails `key` `times` in a row, taking each retry as it comes; the
    /// last retry is left pending. Returns its wait.
    async fn fail_in_a_row(queue: &Arc<WorkQueue<u32>>, key: u32, times: usize) -> Duration {
        let mut wait = fail(queue, key).await;
        for _ in 1..times {
            tokio::time::sleep(wait).await;
            wait = fail(queue, key).await;
        }
        wait
    }

    /// Whether a retry is ready a moment after `wait`, and not a moment before.
    async fn arrives_after(queue: &Arc<WorkQueue<u32>>, wait: Duration) -> bool {
        let moment = Duration::from_millis(1);
        tokio::time::sleep(wait - moment).await;
        let early = !queue.is_empty();
        tokio::time::sleep(moment * 2).await;
        !early && !queue.is_empty()
    }

    #[tokio::test(start_paused = true)]
    async fn each_failure_of_a_key_doubles_its_retry_wait() {
        let queue = WorkQueue::new();
        queue.add(1);
        for expected in [100, 200, 400, 800] {
            let wait = fail(&queue, 1).await;
            assert_eq!(wait, Duration::from_millis(expected));
            assert!(arrives_after(&queue, wait).await, "retried after {wait:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_keys_failures_do_not_slow_another_keys_retry() {
        let queue = WorkQueue::new();
        queue.add(1);
        assert_eq!(
            fail_in_a_row(&queue, 1, 3).await,
            Duration::from_millis(400)
        );
        queue.add(2);
        assert_eq!(fail(&queue, 2).await, ERROR_BACKOFF_BASE);
        assert!(arrives_after(&queue, ERROR_BACKOFF_BASE).await);
        assert_eq!(queue.next().await, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_starts_a_keys_backoff_over() {
        let queue = WorkQueue::new();
        queue.add(1);
        let wait = fail_in_a_row(&queue, 1, 3).await;
        tokio::time::sleep(wait).await;
        assert_eq!(queue.next().await, Some(1));
        queue.done(1);
        queue.forget(1);
        queue.add(1);
        assert_eq!(fail(&queue, 1).await, ERROR_BACKOFF_BASE);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_records_how_long_a_key_waited_for_a_worker_and_its_depth() {
        use crate::metrics::{Format, Metrics};
        let metrics = Metrics::new();
        let queue = WorkQueue::with_metrics(metrics.queue.clone());
        queue.add(1);
        queue.add(1);
        queue.add(2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(queue.next().await, Some(1));
        let text = metrics.encode(Format::Prometheus);
        for line in [
            "icarus_workqueue_adds_total 2",
            "icarus_workqueue_depth 1",
            "icarus_workqueue_queue_duration_seconds_sum 2.0",
            "icarus_workqueue_queue_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        queue.done(1);
        queue.add_rate_limited(1);
        queue.shut_down();
        let text = metrics.encode(Format::Prometheus);
        assert!(
            text.lines()
                .any(|l| l == "icarus_workqueue_retries_total 1")
        );
        assert!(text.lines().any(|l| l == "icarus_workqueue_depth 0"));
    }

    #[test]
    fn the_retry_wait_stops_growing_at_its_cap() {
        assert_eq!(error_backoff(0), ERROR_BACKOFF_BASE);
        assert!(error_backoff(10) < ERROR_BACKOFF_CAP);
        assert_eq!(error_backoff(11), ERROR_BACKOFF_CAP);
        assert_eq!(error_backoff(u32::MAX), ERROR_BACKOFF_CAP);
    }
}
