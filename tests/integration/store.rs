//! The store's specification, run twice: on a SQLite file and on PostgreSQL.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::TimeDelta;
use icarus::job::plan::Transition;
use icarus::job::{
    ApprovalRules, Job, JobId, Phase, Reason, Role, TransitionError, Verdict, timestamp_now,
};
use icarus::store::{
    AgentReport, AuditRecord, JobFilter, ReportOutcome, SPEC_WRITE_ATTEMPTS, SpecChange,
    SpecUpdate, Store, StoreError, StoreEvent, TelemetrySample, TelemetrySource,
};
use serde_json::json;

use crate::support::{new_job, postgres_store, sqlite_store};

/// Declares each listed test once per database.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = crate::support::sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::postgres_store().await).await;
                }
            )*
        }
    };
}

mod approvals;
mod egress;
mod lease;
mod queue;
mod retention;
mod stream;
mod usage;
mod view;

on_both_databases!(
    a_created_job_reads_back_equal_at_version_one,
    creating_a_job_logs_its_first_event,
    a_write_bumps_the_version_and_logs_the_transition,
    a_write_with_a_stale_version_is_a_conflict_and_changes_nothing,
    concurrent_read_modify_write_loops_lose_no_update,
    writing_an_unknown_job_is_not_found,
    listing_is_newest_first_with_limit_and_phase_filter,
    listing_one_project_leaves_the_others_out_and_combines_with_a_phase,
    listing_after_a_job_continues_with_the_next_page_under_the_same_filter,
    every_listing_reads_an_index_in_its_order_and_sorts_nothing,
    the_fields_of_the_original_service_read_back_as_stored,
    unfinished_jobs_are_oldest_first_without_terminal_ones,
    jobs_are_counted_by_phase,
    the_latest_telemetry_sample_is_returned,
    only_the_newest_progress_samples_of_an_agent_are_kept,
    the_latest_audit_report_round_trips,
    agent_errors_are_observed_per_role_and_attempt,
    every_write_is_broadcast_to_subscribers,
    running_the_migrations_again_changes_nothing,
    the_database_answers_a_ping,
    saving_an_agent_log_twice_keeps_the_latest,
    a_spec_change_is_written_once_at_the_next_version,
    a_spec_change_lost_to_a_status_write_is_decided_again_and_keeps_both,
    a_spec_change_the_winner_of_a_race_made_illegal_is_refused,
    a_spec_change_that_keeps_losing_gives_up_after_the_bound,
    a_spec_change_with_nothing_to_change_writes_nothing,
    a_spec_change_on_an_unknown_job_is_not_found,
);

async fn a_created_job_reads_back_equal_at_version_one(store: Store) {
    let job = new_job("add logging");
    let stored = store.create_job(&job).await.unwrap();
    assert_eq!(stored.resource_version, 1);
    let read = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(read, stored);
    assert_eq!(read.spec.task, "add logging");
}

async fn creating_a_job_logs_its_first_event(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let events = store.job_events(job.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].from, None);
    assert_eq!(events[0].to, Phase::Pending);
    assert_eq!(events[0].reason, Reason::Created);
}

async fn a_write_bumps_the_version_and_logs_the_transition(store: Store) {
    let mut job = store.create_job(&new_job("t")).await.unwrap();
    job.status.phase = Phase::Building;
    let transition = Transition {
        from: Phase::Pending,
        to: Phase::Building,
        reason: Reason::Admitted,
        message: Some("slot free".to_owned()),
    };
    let written = store.update_job(&job, Some(&transition)).await.unwrap();
    assert_eq!(written.resource_version, 2);
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap(), written);
    let events = store.job_events(job.id).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].from, Some(Phase::Pending));
    assert_eq!(events[1].to, Phase::Building);
    assert_eq!(events[1].message.as_deref(), Some("slot free"));
    assert_eq!(events[1].resource_version, 2);
}

async fn a_write_with_a_stale_version_is_a_conflict_and_changes_nothing(store: Store) {
    let original = store.create_job(&new_job("t")).await.unwrap();
    let mut first = original.clone();
    first.spec.cancel_requested = true;
    let winner = store.update_job(&first, None).await.unwrap();

    let mut second = original.clone();
    second.status.phase = Phase::Building;
    let err = store.update_job(&second, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { expected: 1, .. }),
        "{err:?}"
    );
    assert_eq!(store.get_job(original.id).await.unwrap().unwrap(), winner);
}

async fn concurrent_read_modify_write_loops_lose_no_update(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let writers = 8;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let mut current = store.get_job(job.id).await.unwrap().unwrap();
                current.status.attempt += 1;
                match store.update_job(&current, None).await {
                    Ok(_) => return,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(other) => panic!("{other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(last.status.attempt, 1 + writers);
    assert_eq!(last.resource_version, 1 + i64::from(writers));
}

async fn writing_an_unknown_job_is_not_found(store: Store) {
    let mut job = new_job("never stored");
    job.resource_version = 1;
    let err = store.update_job(&job, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(id) if id == job.id));
}

async fn listing_is_newest_first_with_limit_and_phase_filter(store: Store) {
    let mut ids = Vec::new();
    for n in 0..5i64 {
        let mut job = new_job(&format!("job {n}"));
        job.created_at += TimeDelta::seconds(n);
        if n % 2 == 0 {
            job.status.phase = Phase::Failed;
        }
        ids.push(store.create_job(&job).await.unwrap().id);
    }
    let all = store
        .list_jobs(JobFilter {
            phase: None,
            project_id: None,
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    let listed: Vec<_> = all.iter().map(|j| j.id).collect();
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(listed, newest_first);

    let two = store
        .list_jobs(JobFilter {
            phase: None,
            project_id: None,
            limit: 2,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(two.len(), 2);

    let failed = store
        .list_jobs(JobFilter {
            phase: Some(Phase::Failed),
            project_id: None,
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|j| j.status.phase == Phase::Failed));
}

async fn listing_after_a_job_continues_with_the_next_page_under_the_same_filter(store: Store) {
    let mut ids = Vec::new();
    for n in 0..7i64 {
        let mut job = new_job(&format!("job {n}"));
        // Two jobs share each second: the id orders them.
        job.created_at += TimeDelta::seconds(n / 2);
        if n % 3 == 0 {
            job.status.phase = Phase::Failed;
        }
        ids.push(store.create_job(&job).await.unwrap().id);
    }
    let page = |phase: Option<Phase>, after: Option<JobId>| {
        let store = store.clone();
        async move {
            let filter = JobFilter {
                phase,
                project_id: None,
                limit: 3,
                after,
            };
            let jobs = store.list_jobs(filter).await.unwrap();
            jobs.iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let mut listed: Vec<JobId> = Vec::new();
    let mut after = None;
    loop {
        let next = page(None, after).await;
        listed.extend(&next);
        match next.last() {
            Some(last) if next.len() == 3 => after = Some(*last),
            _ => break,
        }
    }
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(listed, newest_first, "every job once, in order");
    let failed_after_newest = page(Some(Phase::Failed), Some(ids[6])).await;
    assert_eq!(failed_after_newest, [ids[3], ids[0]]);
    assert!(page(None, Some(JobId::new_random())).await.is_empty());
}

/// Every filter `GET /jobs` offers is served by an index in the listing's
/// order: no step scans the table or sorts what it found, so a page costs
/// the same whatever the number of jobs, the tenth page as the first.
async fn every_listing_reads_an_index_in_its_order_and_sorts_nothing(store: Store) {
    let cursor = store.create_job(&new_job("a cursor")).await.unwrap().id;
    for phase in [None, Some(Phase::Pending)] {
        for project_id in [None, Some("acme".to_owned())] {
            for after in [None, Some(cursor)] {
                let filter = JobFilter {
                    phase,
                    project_id: project_id.clone(),
                    limit: 50,
                    after,
                };
                let plan = store.explain_list_jobs(filter).await.unwrap();
                let said = format!("{phase:?} {project_id:?} {after:?}: {plan:#?}");
                let sorts = plan.iter().any(|line| {
                    line.contains("TEMP B-TREE") || line.trim_start().starts_with("Sort")
                });
                let scans = plan.iter().any(|line| {
                    (line.starts_with("SCAN jobs") && !line.contains("INDEX"))
                        || line.contains("Seq Scan on jobs")
                });
                assert!(!sorts && !scans, "{said}");
            }
        }
    }
}

async fn listing_one_project_leaves_the_others_out_and_combines_with_a_phase(store: Store) {
    let mut stored = Vec::new();
    for (n, (project, phase)) in [
        ("acme", Phase::Failed),
        ("default", Phase::Failed),
        ("acme", Phase::Pending),
        ("acme", Phase::Failed),
    ]
    .into_iter()
    .enumerate()
    {
        let mut job = new_job(&format!("job {n}"));
        job.created_at += TimeDelta::seconds(n as i64);
        job.spec.project_id = project.to_owned();
        job.status.phase = phase;
        stored.push(store.create_job(&job).await.unwrap().id);
    }
    let list = |phase: Option<Phase>, project: &str| {
        let filter = JobFilter {
            phase,
            project_id: Some(project.to_owned()),
            limit: 10,
            after: None,
        };
        let store = store.clone();
        async move {
            let jobs = store.list_jobs(filter).await.unwrap();
            jobs.iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(None, "acme").await, [stored[3], stored[2], stored[0]]);
    assert_eq!(list(None, "default").await, [stored[1]]);
    assert_eq!(
        list(Some(Phase::Failed), "acme").await,
        [stored[3], stored[0]]
    );
    assert!(list(None, "nobody").await.is_empty());
}

async fn the_fields_of_the_original_service_read_back_as_stored(store: Store) {
    let mut job = new_job("add logging");
    job.spec.phase = icarus::job::ProjectPhase::II;
    job.spec.test_code = Some("def test_it():\n    assert run()\n".to_owned());
    job.spec.project_id = "acme-api".to_owned();
    store.create_job(&job).await.unwrap();
    let read = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(read.spec, job.spec);
}

async fn jobs_are_counted_by_phase(store: Store) {
    assert!(store.count_jobs_by_phase().await.unwrap().is_empty());
    for phase in [Phase::Checking, Phase::Failed, Phase::Checking] {
        let mut job = new_job("t");
        job.status.phase = phase;
        store.create_job(&job).await.unwrap();
    }
    let mut counts = store.count_jobs_by_phase().await.unwrap();
    counts.sort();
    assert_eq!(counts, [(Phase::Checking, 2), (Phase::Failed, 1)]);
}

async fn unfinished_jobs_are_oldest_first_without_terminal_ones(store: Store) {
    let mut expected = Vec::new();
    for (n, phase) in [
        Phase::Checking,
        Phase::Completed,
        Phase::Pending,
        Phase::Cancelled,
    ]
    .into_iter()
    .enumerate()
    {
        let mut job = new_job("t");
        job.created_at += TimeDelta::seconds(10 - n as i64);
        job.status.phase = phase;
        let job = store.create_job(&job).await.unwrap();
        if !phase.is_terminal() {
            expected.insert(0, job.id);
        }
    }
    let unfinished: Vec<_> = store
        .unfinished_jobs()
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(unfinished, expected);
}

async fn the_latest_telemetry_sample_is_returned(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    assert_eq!(
        store
            .latest_telemetry(job.id, TelemetrySource::Agent)
            .await
            .unwrap(),
        None
    );
    for (cpu, tool) in [(10.0, "read_file"), (45.2, "web_search(fastapi)")] {
        let sample = TelemetrySample {
            timestamp: icarus::job::timestamp_now(),
            cpu_usage: Some(cpu),
            ram_usage_mb: Some(512.8),
            current_tool: Some(tool.to_owned()),
            role: Role::Builder,
            attempt: 1,
            source: TelemetrySource::Agent,
        };
        store.record_telemetry(job.id, &sample).await.unwrap();
    }
    let latest = store
        .latest_telemetry(job.id, TelemetrySource::Agent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.cpu_usage, Some(45.2));
    assert_eq!(latest.current_tool.as_deref(), Some("web_search(fastapi)"));
}

async fn only_the_newest_progress_samples_of_an_agent_are_kept(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let sample = |n: i64, role: Role| TelemetrySample {
        timestamp: icarus::job::timestamp_now(),
        cpu_usage: Some(n as f64),
        ram_usage_mb: None,
        current_tool: None,
        role,
        attempt: 1,
        source: TelemetrySource::Agent,
    };
    let kept = icarus::store::TELEMETRY_KEPT;
    for n in 0..kept + 5 {
        store
            .record_telemetry(job.id, &sample(n, Role::Builder))
            .await
            .unwrap();
    }
    assert_eq!(store.telemetry_kept(job.id).await.unwrap(), kept);
    let latest = store
        .latest_telemetry(job.id, TelemetrySource::Agent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        latest.cpu_usage,
        Some((kept + 4) as f64),
        "the newest stays"
    );
    // Each agent has its own allowance.
    store
        .record_telemetry(job.id, &sample(0, Role::Checker))
        .await
        .unwrap();
    assert_eq!(store.telemetry_kept(job.id).await.unwrap(), kept + 1);
}

async fn the_latest_audit_report_round_trips(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let report = json!({"summary": "ok", "logic_verification": {"files_created": 2, "file_list": ["a.py", "b.py"]}});
    let record = AuditRecord {
        report: report.clone(),
        created_at: icarus::job::timestamp_now(),
        attempt: 1,
    };
    store.record_audit(job.id, &record).await.unwrap();
    assert_eq!(store.latest_audit(job.id).await.unwrap(), Some(record));
}

async fn agent_errors_are_observed_per_role_and_attempt(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let report = |role, attempt, outcome, message: &str| AgentReport {
        role,
        attempt,
        outcome,
        message: Some(message.to_owned()),
        created_at: icarus::job::timestamp_now(),
    };
    store
        .record_agent_report(
            job.id,
            &report(Role::Builder, 1, ReportOutcome::Completed, "done"),
        )
        .await
        .unwrap();
    store
        .record_agent_report(
            job.id,
            &report(Role::Checker, 1, ReportOutcome::Error, "lint crashed"),
        )
        .await
        .unwrap();
    store
        .record_agent_report(
            job.id,
            &report(Role::Builder, 2, ReportOutcome::Error, "other attempt"),
        )
        .await
        .unwrap();

    let observed = store.observed_reports(job.id, 1).await.unwrap();
    assert_eq!(observed.builder_error, None);
    assert_eq!(observed.checker_error.as_deref(), Some("lint crashed"));
    assert!(!observed.audit_report_received);
    assert_eq!(store.agent_reports(job.id, 1).await.unwrap().len(), 2);
}

async fn every_write_is_broadcast_to_subscribers(store: Store) {
    let mut events = store.subscribe();
    let mut job = store.create_job(&new_job("t")).await.unwrap();
    job.spec.cancel_requested = true;
    store.update_job(&job, None).await.unwrap();
    let versions: Vec<i64> = [events.recv().await.unwrap(), events.recv().await.unwrap()]
        .into_iter()
        .map(|event| match event {
            StoreEvent::JobWritten(job) => job.resource_version,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(versions, vec![1, 2]);
}

async fn running_the_migrations_again_changes_nothing(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap(), Some(job));
}

async fn the_database_answers_a_ping(store: Store) {
    store.ping().await.unwrap();
}

#[tokio::test]
async fn a_sqlite_database_and_its_directory_are_created_in_wal_mode() {
    let (store, dir) = sqlite_store().await;
    assert!(dir.path().join("db/icarus.db").is_file());
    store.create_job(&new_job("t")).await.unwrap();
    assert!(
        dir.path().join("db/icarus.db-wal").exists(),
        "WAL file missing"
    );
}

#[tokio::test]
async fn a_postgres_store_reports_its_backend() {
    assert_eq!(postgres_store().await.backend_name(), "postgres");
}

async fn saving_an_agent_log_twice_keeps_the_latest(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    for text in ["first", "second"] {
        let log = icarus::store::AgentLog {
            role: Role::Checker,
            attempt: 1,
            workload_id: "c1".to_owned(),
            log: text.to_owned(),
            created_at: icarus::job::timestamp_now(),
        };
        store.save_agent_log(job.id, &log).await.unwrap();
    }
    let logs = store.agent_logs(job.id).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].log, "second");
}

/// A caller's own error beside the store's, as the API and the sync have.
#[derive(Debug)]
enum SpecError {
    Refused(TransitionError),
    Store(StoreError),
}

impl From<StoreError> for SpecError {
    fn from(error: StoreError) -> Self {
        SpecError::Store(error)
    }
}

fn approval(comment: &str) -> Verdict {
    Verdict {
        approved: true,
        comment: comment.to_owned(),
        snapshot: None,
    }
}

async fn awaiting_approval(store: &Store) -> Job {
    let mut job = store.create_job(&new_job("t")).await.unwrap();
    job.status.phase = Phase::AwaitingApproval;
    store.update_job(&job, None).await.unwrap()
}

/// An approval whose first `races` attempts lose to `rival`, a write made
/// between the read and the compare-and-swap.
struct RacedApproval<'a> {
    store: Store,
    races: u32,
    calls: &'a AtomicU32,
    rival: fn(&mut Job),
}

impl SpecChange<SpecError> for RacedApproval<'_> {
    async fn decide(&mut self, job: &Job) -> Result<SpecUpdate, SpecError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let spec = job
            .decide(
                approval("ship it"),
                "alice",
                timestamp_now(),
                ApprovalRules::default(),
            )
            .map_err(SpecError::Refused)?;
        if call <= self.races {
            let mut current = self.store.get_job(job.id).await?.unwrap();
            (self.rival)(&mut current);
            self.store.update_job(&current, None).await?;
        }
        Ok(SpecUpdate::write(spec))
    }
}

fn raced<'a>(
    store: &Store,
    races: u32,
    calls: &'a AtomicU32,
    rival: fn(&mut Job),
) -> RacedApproval<'a> {
    RacedApproval {
        store: store.clone(),
        races,
        calls,
        rival,
    }
}

async fn a_spec_change_is_written_once_at_the_next_version(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let cancel = |job: &Job| Ok::<_, StoreError>(SpecUpdate::write(job.request_cancel().unwrap()));
    let write = store.update_spec(job.id, cancel).await.unwrap();
    assert!(write.written);
    assert_eq!(write.job.resource_version, 2);
    assert!(write.job.spec.cancel_requested);
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap(), write.job);
}

async fn a_spec_change_lost_to_a_status_write_is_decided_again_and_keeps_both(store: Store) {
    let job = awaiting_approval(&store).await;
    let calls = AtomicU32::new(0);
    let change = raced(&store, 1, &calls, |job| {
        job.status.error_message = Some("audited".to_owned())
    });
    let write = store.update_spec(job.id, change).await.unwrap();
    assert_eq!(calls.into_inner(), 2, "the lost write was decided again");
    assert_eq!(write.job.resource_version, job.resource_version + 2);
    assert_eq!(
        write.job.status.error_message.as_deref(),
        Some("audited"),
        "the winner's write is kept"
    );
    assert_eq!(write.job.spec.approvals[0].comment, "ship it");
}

async fn a_spec_change_the_winner_of_a_race_made_illegal_is_refused(store: Store) {
    let job = awaiting_approval(&store).await;
    let calls = AtomicU32::new(0);
    let change = raced(&store, 1, &calls, |job| {
        let mut rejection = approval("no");
        rejection.approved = false;
        job.spec = job
            .decide(rejection, "bob", timestamp_now(), ApprovalRules::default())
            .unwrap();
    });
    let error = store.update_spec(job.id, change).await.unwrap_err();
    assert!(
        matches!(
            error,
            SpecError::Refused(TransitionError::AlreadyDecided { .. })
        ),
        "{error:?}"
    );
    assert_eq!(calls.into_inner(), 2);
    let stored = store.get_job(job.id).await.unwrap().unwrap();
    let [decision] = &stored.spec.approvals[..] else {
        panic!("one decision: {:?}", stored.spec.approvals);
    };
    assert!(!decision.approved, "the winner's rejection stands");
    assert_eq!(decision.decided_by.as_deref(), Some("bob"));
}

async fn a_spec_change_that_keeps_losing_gives_up_after_the_bound(store: Store) {
    let job = awaiting_approval(&store).await;
    let calls = AtomicU32::new(0);
    let change = raced(&store, u32::MAX, &calls, |job| job.status.attempt += 1);
    let error = store.update_spec(job.id, change).await.unwrap_err();
    assert!(
        matches!(
            error,
            SpecError::Store(StoreError::KeptChanging { id, attempts })
                if id == job.id && attempts == SPEC_WRITE_ATTEMPTS
        ),
        "{error:?}"
    );
    assert_eq!(calls.into_inner(), SPEC_WRITE_ATTEMPTS);
    let stored = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.spec.approvals, [], "no lost write landed");
}

async fn a_spec_change_with_nothing_to_change_writes_nothing(store: Store) {
    let job = store.create_job(&new_job("t")).await.unwrap();
    let mut events = store.subscribe();
    let unchanged = |_: &Job| Ok::<_, StoreError>(SpecUpdate::Unchanged);
    let write = store.update_spec(job.id, unchanged).await.unwrap();
    assert!(!write.written);
    assert_eq!(write.job, job);
    assert_eq!(
        store
            .get_job(job.id)
            .await
            .unwrap()
            .unwrap()
            .resource_version,
        1
    );
    assert!(events.try_recv().is_err(), "nothing was broadcast");
}

async fn a_spec_change_on_an_unknown_job_is_not_found(store: Store) {
    let id = JobId::new_random();
    let unreachable = |_: &Job| -> Result<SpecUpdate, StoreError> { panic!("no job to decide on") };
    let error = store.update_spec(id, unreachable).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound(missing) if missing == id));
}
