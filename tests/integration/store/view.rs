//! The read view: jobs as the API reads them, from memory, never staler than
//! the writes this process made, nor than the other replicas' once their
//! notification arrived; run on a SQLite file and on PostgreSQL.

use std::time::Duration;

use icarus::job::{Phase, Role, timestamp_now};
use icarus::store::{
    EgressAllowance, EgressVerdict, JobFilter, Store, TelemetrySample, TelemetrySource,
    UsageReading,
};

use super::egress::tally;
use crate::support::{eventually, first_heard_write, new_job, two_stores_on_one_postgres_database};

on_both_databases!(
    a_read_after_a_write_sees_the_write,
    a_read_after_a_facts_write_sees_it,
    a_deleted_job_reads_as_none,
    listed_ids_read_back_in_their_order_without_the_deleted,
);

fn reading(cpu_seconds: f64) -> UsageReading {
    UsageReading {
        role: Role::Builder,
        attempt: 1,
        cpu_seconds,
        memory_bytes: 1 << 20,
        sampled_at: timestamp_now(),
    }
}

fn progress(tool: &str) -> TelemetrySample {
    TelemetrySample {
        timestamp: timestamp_now(),
        cpu_usage: Some(1.0),
        ram_usage_mb: None,
        current_tool: Some(tool.into()),
        role: Role::Builder,
        attempt: 1,
        source: TelemetrySource::Agent,
    }
}

async fn a_read_after_a_write_sees_the_write(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    for _ in 0..2 {
        let read = store.read_job(job.id).await.unwrap().unwrap();
        assert_eq!(read.job.resource_version, 1);
    }
    let mut building = job.clone();
    building.status.phase = Phase::Building;
    store.update_job(&building, None).await.unwrap();
    let read = store.read_job(job.id).await.unwrap().unwrap();
    assert_eq!(
        (read.job.resource_version, read.job.status.phase),
        (2, Phase::Building)
    );
}

async fn a_read_after_a_facts_write_sees_it(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let facts = |store: Store| async move {
        let cached = store.read_job(job.id).await.unwrap().unwrap();
        store.read_facts(&cached).await.unwrap()
    };
    let before = facts(store.clone()).await;
    assert!(before.usage.is_empty() && before.reported.is_none());

    store.record_usage(job.id, &reading(2.0)).await.unwrap();
    let after = facts(store.clone()).await;
    assert_eq!(after.usage.first().map(|u| u.cpu_seconds), Some(2.0));
    assert!(after.measured.is_some(), "a reading is a measured sample");

    store
        .record_telemetry(job.id, &progress("grep"))
        .await
        .unwrap();
    let after = facts(store.clone()).await;
    let tool = after.reported.as_ref().and_then(|r| r.current_tool.clone());
    assert_eq!(tool.as_deref(), Some("grep"));

    let refused = tally(job.id, "pypi.org", EgressVerdict::Unlisted, timestamp_now());
    store.add_egress_traffic(&refused).await.unwrap();
    let after = facts(store.clone()).await;
    assert_eq!(after.egress_traffic.len(), 1);
    assert!(after.egress_allowances.is_empty());

    store
        .allow_egress(&EgressAllowance {
            job: None,
            role: Role::Builder,
            rule: "pypi.org".into(),
            allowed_by: "ann".into(),
            allowed_at: timestamp_now(),
        })
        .await
        .unwrap();
    let after = facts(store.clone()).await;
    assert_eq!(
        after.egress_allowances.len(),
        1,
        "an allowance for every job"
    );
}

async fn a_deleted_job_reads_as_none(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    assert!(store.read_job(job.id).await.unwrap().is_some());
    store.purge_job(job.id, false).await.unwrap();
    assert!(store.read_job(job.id).await.unwrap().is_none());
}

async fn listed_ids_read_back_in_their_order_without_the_deleted(store: Store) {
    let mut created = Vec::new();
    for task in ["a", "b", "c", "d"] {
        created.push(store.create_job(&new_job(task)).await.unwrap());
    }
    // One is held in memory, the others are read in one query.
    store.read_job(created[1].id).await.unwrap();
    let filter = JobFilter {
        phase: None,
        project_id: None,
        limit: 10,
        after: None,
    };
    let ids = store.list_job_ids(filter).await.unwrap();
    let newest_first: Vec<_> = created.iter().rev().map(|job| job.id).collect();
    assert_eq!(ids, newest_first);
    store.purge_job(created[2].id, false).await.unwrap();
    let read: Vec<String> = store
        .read_jobs(&ids)
        .await
        .unwrap()
        .iter()
        .map(|cached| cached.job.spec.task.clone())
        .collect();
    assert_eq!(read, ["d", "b", "a"]);
}

#[tokio::test]
async fn sqlite_a_job_read_again_is_answered_from_memory() {
    let (store, _dir) = crate::support::sqlite_store().await;
    let job = store.create_job(&new_job("t")).await.unwrap();
    store.read_job(job.id).await.unwrap();
    let before = store.view_counters().hits.get();
    store.read_job(job.id).await.unwrap();
    store.read_jobs(&[job.id]).await.unwrap();
    assert_eq!(store.view_counters().hits.get(), before + 2);
}

#[tokio::test]
async fn postgres_without_listening_to_other_replicas_every_read_goes_to_the_database() {
    let store = crate::support::postgres_store().await;
    let job = store.create_job(&new_job("t")).await.unwrap();
    for _ in 0..3 {
        store.read_job(job.id).await.unwrap();
    }
    assert_eq!(store.view_counters().hits.get(), 0);
}

#[tokio::test]
async fn postgres_another_replicas_writes_are_seen_once_their_notification_arrives() {
    let (writer, reader) = two_stores_on_one_postgres_database().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = tokio::spawn(reader.relay_changes(shutdown.clone()).unwrap());
    let mut events = reader.subscribe();
    let job = first_heard_write(&writer, &mut events).await;
    reader.read_job(job.id).await.unwrap();
    reader.read_job(job.id).await.unwrap();
    assert!(
        reader.view_counters().hits.get() >= 1,
        "held while listening"
    );

    let mut building = job.clone();
    building.status.phase = Phase::Building;
    writer.update_job(&building, None).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        let read = reader.read_job(job.id).await.unwrap().unwrap();
        (read.job.status.phase == Phase::Building).then_some(())
    })
    .await;

    writer.record_usage(job.id, &reading(7.0)).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        let cached = reader.read_job(job.id).await.unwrap().unwrap();
        let facts = reader.read_facts(&cached).await.unwrap();
        (facts.usage.first().map(|u| u.cpu_seconds) == Some(7.0)).then_some(())
    })
    .await;

    writer.purge_job(job.id, false).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        reader
            .read_job(job.id)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    shutdown.cancel();
    relay.await.unwrap();
}
