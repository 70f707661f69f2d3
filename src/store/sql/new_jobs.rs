//! New jobs written together: a group commit on SQLite.
//!
//! SQLite takes one writer at a time, so this process's writes take turns
//! in the write lane (see [`super::on_pool_write!`]), and every commit
//! writes the pages it changed to the WAL. Spawns that arrive while the
//! lane is busy wait in [`NewJobs`]; whichever of them gets the lane first
//! writes every job waiting then in one transaction, so at 16 connections
//! a commit carries several spawns instead of one. If that transaction
//! fails, each job is written again on its own, so a failure is only ever
//! its own job's.
//!
//! The write runs in a task of its own: a spawn whose client went away
//! mid-write must not take the other jobs of its group with it. A spawn
//! that goes away while it still waits takes its job out of the queue:
//! like a spawn that never reached the lane, it stores nothing.
//! PostgreSQL writes concurrently on its own connections, and each job is
//! written alone there.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::Pool;
use crate::job::{Job, JobId};
use crate::store::{Result, Store, StoreError};

/// Jobs waiting for the write lane, taken by whichever spawn gets it first.
#[derive(Debug, Default)]
pub(super) struct NewJobs {
    waiting: Mutex<Vec<NewJob>>,
}

/// One job to insert, and where to say how its insert went.
#[derive(Debug)]
pub(super) struct NewJob {
    pub(super) job: Job,
    pub(super) at: DateTime<Utc>,
    written: oneshot::Sender<Result<()>>,
}

impl NewJobs {
    fn push(&self, job: NewJob) {
        self.lock().push(job);
    }

    fn take(&self) -> Vec<NewJob> {
        std::mem::take(&mut *self.lock())
    }

    /// Takes `id`'s job out, if no spawn has taken it to write yet.
    fn withdraw(&self, id: JobId) {
        self.lock().retain(|new| new.job.id != id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<NewJob>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store {
    /// Inserts `job` (at version 1, created `at`), with any others waiting
    /// for the lane on SQLite.
    pub(super) async fn insert_new_job(&self, job: &Job, at: DateTime<Utc>) -> Result<()> {
        if let Pool::Postgres(_) = self.pool {
            return self.insert_jobs(&[(job, at)]).await;
        }
        let (written, mut outcome) = oneshot::channel();
        self.new_jobs.push(NewJob {
            job: job.clone(),
            at,
            written,
        });
        let waiting = Waiting {
            new_jobs: &self.new_jobs,
            id: job.id,
        };
        let turn = tokio::select! {
            biased;
            // Another spawn took the lane first and is writing this job too.
            result = &mut outcome => return delivered(result),
            turn = self.write_lane.clone().lock_owned() => turn,
        };
        let group = self.new_jobs.take();
        drop(waiting);
        if group.is_empty() {
            // Taken by a spawn that had the lane just before.
            drop(turn);
            return delivered(outcome.await);
        }
        let store = self.clone();
        tokio::spawn(async move {
            store.write_group(group).await;
            drop(turn);
        });
        delivered(outcome.await)
    }

    /// Writes `group` in one transaction, or each job alone once that
    /// failed, and tells each spawn how its job's insert went.
    async fn write_group(&self, group: Vec<NewJob>) {
        let jobs: Vec<_> = group.iter().map(|new| (&new.job, new.at)).collect();
        let together = self.insert_jobs(&jobs).await;
        if together.is_err() && group.len() > 1 {
            for new in group {
                let alone = self.insert_jobs(&[(&new.job, new.at)]).await;
                let _ = new.written.send(alone);
            }
            return;
        }
        // Every job written, or the failure of the only one.
        let mut together = Some(together);
        for new in group {
            let _ = new.written.send(together.take().unwrap_or(Ok(())));
        }
    }
}

/// A spawn's job in the queue, withdrawn if the spawn goes away first.
struct Waiting<'a> {
    new_jobs: &'a NewJobs,
    id: JobId,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.new_jobs.withdraw(self.id);
    }
}

/// What the write of a job said; a write task that ended without saying
/// (it panicked) is a failed write.
fn delivered(result: Result<Result<()>, oneshot::error::RecvError>) -> Result<()> {
    result.unwrap_or(Err(StoreError::Database(sqlx::Error::WorkerCrashed)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::sql::temporary_sqlite as store;

    /// Spawns `jobs`' creations while the write lane is held, and lets the
    /// lane go once every one of them waits: they are written as one group.
    async fn create_as_one_group(store: &Store, jobs: Vec<Job>) -> Vec<Result<Job>> {
        let lane = store.write_lane.clone().lock_owned().await;
        let count = jobs.len();
        let creations: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let store = store.clone();
                tokio::spawn(async move { store.create_job(&job).await })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.new_jobs.lock().len() < count {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("every creation waits for the lane");
        drop(lane);
        let mut results = Vec::new();
        for creation in creations {
            results.push(creation.await.unwrap());
        }
        results
    }

    #[tokio::test]
    async fn jobs_created_while_the_lane_is_busy_are_all_stored_in_one_group() {
        let (store, _dir) = store().await;
        let jobs: Vec<Job> = (0..5).map(|_| Job::pending()).collect();

        let results = create_as_one_group(&store, jobs.clone()).await;

        for (job, result) in jobs.iter().zip(results) {
            let created = result.unwrap();
            assert_eq!(created.resource_version, 1);
            let stored = store.get_job(job.id).await.unwrap().expect("stored");
            assert_eq!(stored.spec, job.spec);
            assert_eq!(store.stream_position(job.id).await.unwrap(), Some(1));
            assert_eq!(store.job_events(job.id).await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn a_spawn_that_goes_away_while_it_waits_for_the_lane_stores_nothing() {
        let (store, _dir) = store().await;
        let lane = store.write_lane.clone().lock_owned().await;
        let abandoned = Job::pending();
        let spawn = tokio::spawn({
            let (store, job) = (store.clone(), abandoned.clone());
            async move { store.create_job(&job).await }
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.new_jobs.lock().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the spawn waits for the lane");

        spawn.abort();
        let _ = spawn.await;
        drop(lane);
        let next = store.create_job(&Job::pending()).await.unwrap();

        assert!(store.get_job(next.id).await.unwrap().is_some());
        assert_eq!(store.get_job(abandoned.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_job_that_cannot_be_stored_fails_alone_and_the_rest_of_its_group_is_stored() {
        let (store, _dir) = store().await;
        let existing = store.create_job(&Job::pending()).await.unwrap();
        let fresh: Vec<Job> = (0..3).map(|_| Job::pending()).collect();
        let mut group = vec![existing.clone()];
        group.extend(fresh.iter().cloned());

        let results = create_as_one_group(&store, group).await;

        assert!(
            matches!(results[0], Err(StoreError::Database(_))),
            "the same id again is refused: {:?}",
            results[0].as_ref().map(|job| job.id)
        );
        for (job, result) in fresh.iter().zip(&results[1..]) {
            assert!(result.is_ok(), "{:?}", result.as_ref().err());
            assert!(store.get_job(job.id).await.unwrap().is_some());
        }
        assert_eq!(store.job_events(existing.id).await.unwrap().len(), 1);
    }
}
