//! What Icarus measured of agents: one row per job, role and attempt whose
//! peak memory only rises, and a measured sample in the telemetry series
//! for each reading; run on a SQLite file and on PostgreSQL.

use chrono::TimeDelta;
use icarus::job::{Role, timestamp_now};
use icarus::store::{Store, TelemetrySource, UsageReading};

use crate::support::new_job;

on_both_databases!(
    a_reading_is_kept_with_its_peak_memory_which_only_rises,
    each_agent_and_attempt_has_its_own_usage,
    a_reading_adds_a_measured_sample_with_the_cpu_percent_since_the_last,
    measured_samples_leave_the_agents_reports_alone,
    readings_of_many_agents_at_once_are_all_stored,
);

fn reading(role: Role, attempt: u32, cpu_seconds: f64, memory_mb: u64) -> UsageReading {
    UsageReading {
        role,
        attempt,
        cpu_seconds,
        memory_bytes: memory_mb << 20,
        sampled_at: timestamp_now(),
    }
}

async fn a_reading_is_kept_with_its_peak_memory_which_only_rises(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    assert!(store.agent_usage(job.id, 1).await.unwrap().is_empty());
    for (cpu, memory) in [(1.0, 100), (2.0, 300), (3.5, 200)] {
        store
            .record_usage(job.id, &reading(Role::Builder, 1, cpu, memory))
            .await
            .unwrap();
    }
    let usage = store.agent_usage(job.id, 1).await.unwrap();
    assert_eq!(usage.len(), 1);
    let builder = usage[0];
    assert_eq!(builder.role, Role::Builder);
    assert_eq!(builder.cpu_seconds, 3.5, "the latest CPU time");
    assert_eq!(builder.memory_bytes, 200 << 20, "the latest memory");
    assert_eq!(builder.memory_peak_bytes, 300 << 20, "the highest memory");
}

async fn each_agent_and_attempt_has_its_own_usage(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    for (role, attempt, memory) in [
        (Role::Checker, 1, 50),
        (Role::Builder, 1, 400),
        (Role::Builder, 2, 10),
    ] {
        store
            .record_usage(job.id, &reading(role, attempt, 1.0, memory))
            .await
            .unwrap();
    }
    let first = store.agent_usage(job.id, 1).await.unwrap();
    let peaks: Vec<_> = first
        .iter()
        .map(|u| (u.role, u.memory_peak_bytes >> 20))
        .collect();
    assert_eq!(peaks, [(Role::Builder, 400), (Role::Checker, 50)]);
    let second = store.agent_usage(job.id, 2).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].memory_peak_bytes, 10 << 20);
}

async fn a_reading_adds_a_measured_sample_with_the_cpu_percent_since_the_last(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let first = reading(Role::Builder, 1, 10.0, 64);
    store.record_usage(job.id, &first).await.unwrap();
    let measured = store
        .latest_telemetry(job.id, TelemetrySource::Icarus)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(measured.source, TelemetrySource::Icarus);
    assert_eq!(
        measured.cpu_usage, None,
        "no interval before the first reading"
    );
    assert_eq!(measured.ram_usage_mb, Some(64.0));
    // 1.5 s of CPU over 2 s: 75 % of one CPU.
    let second = UsageReading {
        cpu_seconds: 11.5,
        sampled_at: first.sampled_at + TimeDelta::seconds(2),
        ..first
    };
    store.record_usage(job.id, &second).await.unwrap();
    let measured = store
        .latest_telemetry(job.id, TelemetrySource::Icarus)
        .await
        .unwrap()
        .unwrap();
    let percent = measured.cpu_usage.unwrap();
    assert!((percent - 75.0).abs() < 1e-6, "{percent}");
    assert_eq!(measured.timestamp, second.sampled_at);
}

async fn measured_samples_leave_the_agents_reports_alone(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    store
        .record_usage(job.id, &reading(Role::Builder, 1, 1.0, 1))
        .await
        .unwrap();
    assert_eq!(
        store
            .latest_telemetry(job.id, TelemetrySource::Agent)
            .await
            .unwrap(),
        None,
        "a measured sample is not the agent's report"
    );
}

/// The sampler stores its readings concurrently: on SQLite, a transaction
/// that read before writing would fail as busy when another came between.
async fn readings_of_many_agents_at_once_are_all_stored(store: Store) {
    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(
            store
                .create_job(&new_job(&format!("t{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    for round in 1u32..=3 {
        let writes = jobs.iter().map(|job| {
            let store = store.clone();
            let reading = reading(Role::Builder, 1, f64::from(round), 10 * u64::from(round));
            async move { store.record_usage(*job, &reading).await }
        });
        for written in futures::future::join_all(writes).await {
            written.unwrap();
        }
    }
    for job in jobs {
        let usage = store.agent_usage(job, 1).await.unwrap();
        assert_eq!(usage[0].memory_peak_bytes, 30 << 20);
    }
}
