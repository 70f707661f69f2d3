//! What the queue keeps in the store: the admins' hold (one at a time,
//! kept until released), the drained replicas (one drain each, kept until
//! resumed) and the run times estimates are made of, with each job's
//! priority; run on a SQLite file and on PostgreSQL.

use chrono::TimeDelta;
use icarus::job::{Job, JobId, Phase, timestamp_now};
use icarus::store::{JobFilter, QueueHold, RECENT_RUNS, ReplicaDrain, Store, StoreEvent};

use crate::support::{new_job, spec};

on_both_databases!(
    a_hold_is_kept_until_released_and_the_first_hold_stays,
    holding_and_releasing_wake_the_queue,
    a_drain_is_kept_per_replica_until_resumed_and_the_first_drain_stays,
    the_levers_read_the_hold_and_one_replicas_own_drain_at_once,
    draining_and_resuming_wake_the_queue,
    the_average_run_time_is_of_the_latest_jobs_that_held_a_slot,
    there_is_no_run_time_before_any_job_ran,
    a_jobs_priority_reads_back_as_submitted,
    the_queue_reads_each_unfinished_job_with_its_version,
    the_resync_reads_the_jobs_past_pending_and_the_cancels_asked,
);

fn hold_by(name: &str) -> QueueHold {
    QueueHold {
        held_by: name.to_owned(),
        held_at: timestamp_now(),
    }
}

async fn a_hold_is_kept_until_released_and_the_first_hold_stays(store: Store) {
    assert_eq!(store.queue_hold().await.unwrap(), None);
    let first = store.hold_queue(&hold_by("ada")).await.unwrap();
    assert_eq!(first.held_by, "ada");
    let again = store.hold_queue(&hold_by("bob")).await.unwrap();
    assert_eq!(again, first, "the first hold stays");
    assert_eq!(store.queue_hold().await.unwrap(), Some(first));
    assert!(store.release_queue().await.unwrap());
    assert_eq!(store.queue_hold().await.unwrap(), None);
    assert!(!store.release_queue().await.unwrap(), "nothing to release");
}

async fn holding_and_releasing_wake_the_queue(store: Store) {
    let mut events = store.subscribe();
    store.hold_queue(&hold_by("ada")).await.unwrap();
    assert!(matches!(events.recv().await, Ok(StoreEvent::QueueChanged)));
    store.release_queue().await.unwrap();
    assert!(matches!(events.recv().await, Ok(StoreEvent::QueueChanged)));
}

fn drain_of(replica: &str, by: &str) -> ReplicaDrain {
    ReplicaDrain {
        replica: replica.to_owned(),
        drained_by: by.to_owned(),
        drained_at: timestamp_now(),
    }
}

async fn a_drain_is_kept_per_replica_until_resumed_and_the_first_drain_stays(store: Store) {
    assert_eq!(store.replica_drains().await.unwrap(), vec![]);
    let first = store
        .drain_replica(&drain_of("icarus-0", "ada"))
        .await
        .unwrap();
    assert_eq!(first.drained_by, "ada");
    let again = store
        .drain_replica(&drain_of("icarus-0", "bob"))
        .await
        .unwrap();
    assert_eq!(again, first, "the first drain stays");
    let other = store
        .drain_replica(&drain_of("icarus-1", "bob"))
        .await
        .unwrap();
    assert_eq!(
        store.replica_drains().await.unwrap(),
        vec![first.clone(), other.clone()],
        "the longest drained first"
    );
    assert!(store.resume_replica("icarus-0").await.unwrap());
    assert!(
        !store.resume_replica("icarus-0").await.unwrap(),
        "resumed already"
    );
    assert!(
        !store.resume_replica("icarus-9").await.unwrap(),
        "never drained"
    );
    assert_eq!(store.replica_drains().await.unwrap(), vec![other]);
}

async fn the_levers_read_the_hold_and_one_replicas_own_drain_at_once(store: Store) {
    let levers = store.queue_levers("icarus-0").await.unwrap();
    assert_eq!((levers.hold, levers.drain), (None, None));
    assert!(!levers.any_drained);
    let drained = store
        .drain_replica(&drain_of("icarus-0", "ada"))
        .await
        .unwrap();
    let levers = store.queue_levers("icarus-1").await.unwrap();
    assert_eq!(levers.drain, None, "another replica's drain is not its own");
    assert!(levers.any_drained, "but it is told of it");
    let hold = store.hold_queue(&hold_by("bob")).await.unwrap();
    let levers = store.queue_levers("icarus-0").await.unwrap();
    assert_eq!(levers.hold, Some(hold));
    assert_eq!(levers.drain, Some(drained));
}

async fn draining_and_resuming_wake_the_queue(store: Store) {
    let mut events = store.subscribe();
    store
        .drain_replica(&drain_of("icarus-0", "ada"))
        .await
        .unwrap();
    assert!(matches!(events.recv().await, Ok(StoreEvent::QueueChanged)));
    store.resume_replica("icarus-0").await.unwrap();
    assert!(matches!(events.recv().await, Ok(StoreEvent::QueueChanged)));
}

/// A job that built for `seconds` and then awaited approval, stored.
async fn ran_for(store: &Store, seconds: i64, ended: i64) -> Job {
    let start = timestamp_now() - TimeDelta::days(1) + TimeDelta::seconds(ended - seconds);
    let mut job = store.create_job(&new_job("ran")).await.unwrap();
    job.status.phase = Phase::AwaitingApproval;
    job.status.times.building_at = Some(start);
    job.status.times.awaiting_approval_at = Some(start + TimeDelta::seconds(seconds));
    store.update_job(&job, None).await.unwrap()
}

async fn the_average_run_time_is_of_the_latest_jobs_that_held_a_slot(store: Store) {
    // An old run of 1000 s, then RECENT_RUNS runs of 60 s: only they count.
    ran_for(&store, 1000, 0).await;
    for n in 0..RECENT_RUNS {
        ran_for(&store, 60, 100 + n).await;
    }
    // Pending and running jobs have no run time yet.
    store.create_job(&new_job("pending")).await.unwrap();
    let average = store.average_run_time().await.unwrap().unwrap();
    assert_eq!(average, TimeDelta::seconds(60));
}

async fn there_is_no_run_time_before_any_job_ran(store: Store) {
    let mut job = store.create_job(&new_job("cancelled")).await.unwrap();
    job.status.phase = Phase::Cancelled;
    job.status.times.finished_at = Some(timestamp_now());
    store.update_job(&job, None).await.unwrap();
    assert_eq!(store.average_run_time().await.unwrap(), None);
}

async fn a_jobs_priority_reads_back_as_submitted(store: Store) {
    let mut urgent = spec("urgent");
    urgent.priority = 7;
    let job = store
        .create_job(&Job::new(urgent, timestamp_now()))
        .await
        .unwrap();
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().spec.priority,
        7
    );
    let listed = store
        .list_jobs(JobFilter {
            phase: None,
            project_id: None,
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(listed[0].spec.priority, 7);
}

/// Moves a stored job to `phase`.
async fn now_in(store: &Store, job: &Job, phase: Phase) -> Job {
    let mut job = store.get_job(job.id).await.unwrap().unwrap();
    job.status.phase = phase;
    store.update_job(&job, None).await.unwrap()
}

async fn the_queue_reads_each_unfinished_job_with_its_version(store: Store) {
    let mut waiting = new_job("waiting");
    waiting.spec.priority = -4;
    let waiting = store.create_job(&waiting).await.unwrap();
    let building = store.create_job(&new_job("building")).await.unwrap();
    let building = now_in(&store, &building, Phase::Building).await;
    let done = store.create_job(&new_job("done")).await.unwrap();
    now_in(&store, &done, Phase::Completed).await;

    let mut entries = store.queue_entries().await.unwrap();
    entries.sort_by_key(|(entry, _)| entry.phase.rank());
    let read: Vec<(JobId, Phase, i32, i64)> = entries
        .iter()
        .map(|(e, version)| (e.id, e.phase, e.priority, *version))
        .collect();
    assert_eq!(
        read,
        vec![
            (waiting.id, Phase::Pending, -4, waiting.resource_version),
            (building.id, Phase::Building, 0, building.resource_version),
        ]
    );
    assert_eq!(entries[0].0.created_at, waiting.created_at);
}

async fn the_resync_reads_the_jobs_past_pending_and_the_cancels_asked(store: Store) {
    let waiting = store.create_job(&new_job("waiting")).await.unwrap();
    let mut asked = store.create_job(&new_job("asked")).await.unwrap();
    asked.spec.cancel_requested = true;
    store.update_job(&asked, None).await.unwrap();
    let approving = store.create_job(&new_job("approving")).await.unwrap();
    let approving = now_in(&store, &approving, Phase::AwaitingApproval).await;
    let failed = store.create_job(&new_job("failed")).await.unwrap();
    now_in(&store, &failed, Phase::Failed).await;

    assert_eq!(
        store.unfinished_beyond_pending().await.unwrap(),
        vec![approving.id]
    );
    assert_eq!(
        store.pending_asked_to_cancel().await.unwrap(),
        vec![asked.id],
        "not {}",
        waiting.id
    );
}
