//! Creating an agent ahead of its turn, beside the reconcile rather than in
//! it.
//!
//! The checker is created while the builder runs so that the hand-over is
//! only a start ([`Action::CreateAhead`](crate::job::plan::Action)). The
//! creation is an engine call of tens of milliseconds, and a reconcile in
//! progress holds its job: a builder that ended meanwhile would wait for
//! it before anything reacted to its exit. So the creation runs as a task
//! of its own, at most one per workload, and a reconcile only waits for it
//! where it must: before starting that same workload, which then finds it
//! made. Its outcome needs no reporting: the workload's own events wake the
//! job, and a creation that did not come about is simply asked for again
//! (or left to the start, which creates what is missing); but a runtime
//! that cannot create ahead at all is not asked again.
//!
//! A creation under way at the end of the controller's term is waited for
//! (briefly), so none lands after the term.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::logs::lock;
use crate::job::workload::WorkloadKey;
use crate::runtime::{Runtime, WorkloadSpec};

/// How long the end of a term waits for creations under way.
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// The creations under way, by workload; each entry's flag turns true once
/// its creation is over, and the entry goes with it.
#[derive(Default)]
pub(crate) struct AheadCreations {
    under_way: Arc<Mutex<HashMap<WorkloadKey, watch::Receiver<bool>>>>,
    /// The creation tasks: dropped with the controller's context, which
    /// aborts those under way, as a crash would (a graceful stop waits for
    /// them first, [`AheadCreations::finish`]).
    tasks: Mutex<JoinSet<()>>,
    /// The runtime answered that it cannot create a workload without
    /// starting it: it is not asked again.
    declined: Arc<AtomicBool>,
}

/// What asking for a creation ahead came to.
pub(crate) enum Ahead {
    /// Under way (begun now, or before).
    UnderWay,
    /// This runtime cannot create ahead.
    Declined,
}

impl AheadCreations {
    /// Creates `spec`'s workload in a task of its own, unless its creation
    /// is under way already or the runtime cannot.
    pub(crate) fn begin(&self, runtime: Arc<dyn Runtime>, spec: WorkloadSpec) -> Ahead {
        if self.declined.load(Ordering::Relaxed) {
            return Ahead::Declined;
        }
        let key = spec.key;
        let (done, over) = watch::channel(false);
        {
            let mut under_way = lock(&self.under_way);
            if under_way.contains_key(&key) {
                return Ahead::UnderWay;
            }
            under_way.insert(key, over);
        }
        let under_way = Arc::clone(&self.under_way);
        let declined = Arc::clone(&self.declined);
        let span = tracing::debug_span!(parent: None, "create ahead", job = %key.job, role = %key.role, attempt = key.attempt);
        let mut tasks = lock(&self.tasks);
        // Forget the tasks that have ended.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(
            async move {
                match runtime.create_ahead(&spec).await {
                    Ok(true) => tracing::debug!("created agent ahead of its turn"),
                    Ok(false) => declined.store(true, Ordering::Relaxed),
                    Err(error) => {
                        tracing::debug!(error = %super::error_chain(&error), "could not create agent ahead of its turn");
                    }
                }
                lock(&under_way).remove(&key);
                let _ = done.send(true);
            }
            .instrument(span),
        );
        Ahead::UnderWay
    }

    /// Waits until no creation of `key` is under way.
    pub(crate) async fn settled(&self, key: WorkloadKey) {
        let over = lock(&self.under_way).get(&key).cloned();
        if let Some(mut over) = over {
            // A creation that ended without a word (its task gone) is over too.
            let _ = over.wait_for(|over| *over).await;
        }
    }

    /// Waits (up to [`FINISH_WAIT`] in all) for every creation under way.
    pub(crate) async fn finish(&self) {
        let deadline = Instant::now() + FINISH_WAIT;
        let under_way: Vec<_> = lock(&self.under_way).values().cloned().collect();
        for mut over in under_way {
            let _ = tokio::time::timeout_at(deadline, over.wait_for(|over| *over)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobId;
    use crate::job::workload::{Role, WorkloadState};
    use crate::runtime::fake::FakeRuntime;

    fn checker(job: JobId) -> WorkloadSpec {
        WorkloadSpec {
            key: WorkloadKey {
                job,
                role: Role::Checker,
                attempt: 1,
            },
            image: "icarus-checker:latest".to_owned(),
            env: Vec::new(),
            cpu_limit: 1.0,
            memory_limit: 1 << 30,
            network_mode: "bridge".to_owned(),
            workspace_read_only: true,
        }
    }

    /// An engine that holds every creation ahead until released, a
    /// checker's spec, and creations ahead of none yet.
    fn held() -> (FakeRuntime, Arc<AheadCreations>, WorkloadSpec) {
        let fake = FakeRuntime::new();
        fake.hold_creations_ahead(true);
        let spec = checker(JobId::new_random());
        (fake, Arc::default(), spec)
    }

    /// Lets spawned tasks run as far as they can.
    async fn settle_tasks() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_creation_ahead_does_not_hold_up_the_reconcile_that_asks_for_it() {
        let (fake, ahead, spec) = held();
        assert!(matches!(
            ahead.begin(Arc::new(fake.clone()), spec.clone()),
            Ahead::UnderWay
        ));
        settle_tasks().await;
        assert_eq!(fake.creations_ahead_asked(), 1);
        assert_eq!(fake.creations(spec.key), 0, "the engine has not answered");
    }

    #[tokio::test]
    async fn a_start_waits_until_the_creation_ahead_of_its_workload_is_over() {
        let (fake, ahead, spec) = held();
        let job = spec.key.job;
        let _ = ahead.begin(Arc::new(fake.clone()), spec.clone());
        let waiting = {
            let ahead = Arc::clone(&ahead);
            tokio::spawn(async move { ahead.settled(spec.key).await })
        };
        settle_tasks().await;
        assert!(!waiting.is_finished());
        fake.hold_creations_ahead(false);
        waiting.await.unwrap();
        assert_eq!(
            fake.state_of(job, Role::Checker),
            Some(WorkloadState::Created)
        );
    }

    #[tokio::test]
    async fn a_workload_whose_creation_is_under_way_is_not_created_again() {
        let (fake, ahead, spec) = held();
        let runtime: Arc<dyn Runtime> = Arc::new(fake.clone());
        let _ = ahead.begin(Arc::clone(&runtime), spec.clone());
        let _ = ahead.begin(Arc::clone(&runtime), spec.clone());
        settle_tasks().await;
        fake.hold_creations_ahead(false);
        ahead.settled(spec.key).await;
        assert_eq!(fake.creations_ahead_asked(), 1);
        assert_eq!(fake.creations(spec.key), 1);
    }

    #[tokio::test]
    async fn a_runtime_that_cannot_create_ahead_is_not_asked_again() {
        let fake = FakeRuntime::new();
        fake.decline_creations_ahead();
        let ahead = AheadCreations::default();
        let runtime: Arc<dyn Runtime> = Arc::new(fake.clone());
        let first = checker(JobId::new_random());
        let _ = ahead.begin(Arc::clone(&runtime), first.clone());
        ahead.settled(first.key).await;
        settle_tasks().await;
        let again = ahead.begin(runtime, checker(JobId::new_random()));
        assert!(matches!(again, Ahead::Declined));
        assert_eq!(fake.creations_ahead_asked(), 1);
    }

    #[tokio::test]
    async fn the_end_of_a_term_waits_for_creations_under_way() {
        let (fake, ahead, spec) = held();
        let _ = ahead.begin(Arc::new(fake.clone()), spec.clone());
        let finishing = {
            let ahead = Arc::clone(&ahead);
            tokio::spawn(async move { ahead.finish().await })
        };
        settle_tasks().await;
        assert!(!finishing.is_finished());
        fake.hold_creations_ahead(false);
        finishing.await.unwrap();
        assert_eq!(fake.creations(spec.key), 1);
    }
}
