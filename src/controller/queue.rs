//! A work queue keyed by job id, in the manner of client-go's workqueue.
//!
//! - A key queued many times before a worker takes it runs once.
//! - A key is never processed by two workers at once: queued while in
//!   progress, it runs again after the current run finishes.
//! - `add_after` schedules a later visit; only the earliest pending timer per
//!   key is kept, so repeated scheduling does not pile up tasks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
struct State<K> {
    queue: VecDeque<K>,
    /// Keys waiting to run (in `queue`, or re-queued while processing).
    dirty: HashSet<K>,
    processing: HashSet<K>,
    timers: HashMap<K, Instant>,
    shut_down: bool,
}

#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
}

impl<K: Copy + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                timers: HashMap::new(),
                shut_down: false,
            }),
            ready: Notify::new(),
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
            state.queue.push_back(key);
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
            state.queue.push_back(key);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Wakes every waiting worker with `None`; later adds are ignored.
    pub fn shut_down(&self) {
        self.state().shut_down = true;
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
}
