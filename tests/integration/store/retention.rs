//! What deleting a finished job removes from the store, and which finished
//! jobs retention finds; run on a SQLite file and on PostgreSQL.

use chrono::TimeDelta;
use icarus::job::{Job, Phase, Role, timestamp_now};
use icarus::store::{AgentLog, Store};

use crate::support::new_job;

on_both_databases!(
    purging_a_job_removes_its_record_events_and_output,
    purging_a_job_that_keeps_its_events_removes_only_its_output,
    finished_jobs_are_found_oldest_first_and_purged_ones_not_again,
);

async fn finished(store: &Store, ended_ago_days: i64) -> Job {
    let mut job = store.create_job(&new_job("t")).await.unwrap();
    job.status.phase = Phase::Completed;
    job.status.times.finished_at = Some(timestamp_now() - TimeDelta::days(ended_ago_days));
    store.update_job(&job, None).await.unwrap()
}

async fn with_a_log(store: &Store, job: &Job) {
    let log = AgentLog {
        role: Role::Builder,
        attempt: 1,
        workload_id: "w".to_owned(),
        log: "hello".to_owned(),
        created_at: timestamp_now(),
    };
    store.save_agent_log(job.id, &log).await.unwrap();
}

async fn purging_a_job_removes_its_record_events_and_output(store: Store) {
    let job = finished(&store, 1).await;
    with_a_log(&store, &job).await;
    store.purge_job(job.id, false).await.unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap(), None);
    assert!(store.job_events(job.id).await.unwrap().is_empty());
    assert!(store.agent_logs(job.id).await.unwrap().is_empty());
    store.purge_job(job.id, false).await.unwrap();
}

async fn purging_a_job_that_keeps_its_events_removes_only_its_output(store: Store) {
    let job = finished(&store, 1).await;
    with_a_log(&store, &job).await;
    store.purge_job(job.id, true).await.unwrap();
    assert!(store.get_job(job.id).await.unwrap().is_some());
    assert!(!store.job_events(job.id).await.unwrap().is_empty());
    assert!(store.agent_logs(job.id).await.unwrap().is_empty());
}

async fn finished_jobs_are_found_oldest_first_and_purged_ones_not_again(store: Store) {
    let old = finished(&store, 30).await;
    let older = finished(&store, 40).await;
    let recent = finished(&store, 1).await;
    store.create_job(&new_job("running")).await.unwrap();
    let before = timestamp_now() - TimeDelta::days(7);
    assert_eq!(
        store.finished_before(before, 10).await.unwrap(),
        vec![older.id, old.id]
    );
    let mut purged = store.get_job(older.id).await.unwrap().unwrap();
    purged.status.times.purged_at = Some(timestamp_now());
    store.update_job(&purged, None).await.unwrap();
    assert_eq!(
        store.finished_before(before, 10).await.unwrap(),
        vec![old.id]
    );
    let all = store.finished_before(timestamp_now(), 10).await.unwrap();
    assert_eq!(all, vec![old.id, recent.id]);
}
