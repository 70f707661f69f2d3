//! The planner's specification: examples of each step, then properties that
//! hold for every job and every observed state `proptest` can generate.

use chrono::TimeDelta;
use proptest::prelude::*;

use super::*;
use crate::job::fixtures::at;
use crate::job::workload::{
    AgentReports, PublishedChange, SnapshotTaken, SourceFacts, StartFailure,
};
use crate::job::{ApprovalDecision, JobId, JobSource, WorkloadStatus};

const APPROVAL_DEADLINE: ApprovalDeadline = ApprovalDeadline {
    timeout: TimeDelta::seconds(3000),
    outcome: TimeoutOutcome::Expired,
    reminder_after: Some(TimeDelta::seconds(1500)),
};

const DEADLINES: Deadlines = Deadlines {
    builder: TimeDelta::seconds(600),
    checker: TimeDelta::seconds(300),
    job: TimeDelta::seconds(1800),
    approval: Some(APPROVAL_DEADLINE),
};

const RETRIES: Retries = Retries {
    max_attempts: 3,
    first_backoff: TimeDelta::seconds(2),
    max_backoff: TimeDelta::seconds(60),
    report_grace: TimeDelta::seconds(5),
};

fn workload(role: Role, state: WorkloadState) -> ObservedWorkload {
    ObservedWorkload {
        role,
        attempt: 1,
        id: format!("{role}-id"),
        state,
        log_tail: None,
        finished_at: None,
    }
}

fn exited(role: Role, exit_code: i64) -> ObservedWorkload {
    workload(
        role,
        WorkloadState::Exited {
            exit_code,
            oom_killed: false,
        },
    )
}

fn observed(workloads: Vec<ObservedWorkload>) -> Observed {
    Observed {
        workloads,
        ..Observed::default()
    }
}

fn plan_at(job: &Job, observed: &Observed, admission: &Admission, now: i64) -> Plan {
    plan_serving_since(job, observed, admission, now, -1)
}

/// As [`plan_at`], for an orchestrator serving only since `serving_since`
/// (every other plan here has it serving from before any job).
fn plan_serving_since(
    job: &Job,
    observed: &Observed,
    admission: &Admission,
    now: i64,
    serving_since: i64,
) -> Plan {
    plan(&PlanInput {
        admission,
        serving_since: at(serving_since),
        ..input(job, observed, now)
    })
}

/// The planner's input in local mode, for an admitted job, by an
/// orchestrator serving from before any job.
fn input<'a>(job: &'a Job, observed: &'a Observed, now: i64) -> PlanInput<'a> {
    PlanInput {
        job,
        observed,
        admission: &Admission::Admitted,
        deadlines: &DEADLINES,
        retries: &RETRIES,
        serving_since: at(-1),
        now: at(now),
        hand_over: HandOver::DuringSnapshot,
    }
}

fn plan_admitted(job: &Job, observed: &Observed, now: i64) -> Plan {
    plan_at(job, observed, &Admission::Admitted, now)
}

/// `job` once `plan`'s status is recorded.
fn as_recorded(job: &Job, plan: &Plan) -> Job {
    Job {
        status: plan.status.clone(),
        ..job.clone()
    }
}

/// What `job` removes of `world` once it has recorded the plan made of
/// them: the workloads the recorded status still wanted go only then.
fn removed_once_recorded(job: &Job, world: &Observed, now: i64) -> Vec<String> {
    let first = plan_admitted(job, world, now);
    let second = plan_admitted(&as_recorded(job, &first), world, now);
    removed_ids(&first)
        .into_iter()
        .chain(removed_ids(&second))
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_admitted_pending_job_is_recorded_building_before_anything_starts() {
    let plan = plan_admitted(&Job::pending(), &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::Building);
    assert_eq!(plan.status.times.building_at, Some(at(10)));
    // A crash before the record must not leave a builder that a pending
    // job disowns (and a later admission would create again).
    assert!(plan.actions.is_empty());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(600)));
}

#[test]
fn a_recorded_building_job_prepares_its_workspace_and_starts_the_builder_then_creates_the_checker_ahead()
 {
    let job = Job::pending().in_phase(Phase::Building, at(10));
    let plan = plan_admitted(&job, &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::Building);
    assert_eq!(
        plan.actions,
        vec![
            Action::PrepareWorkspace,
            Action::Start {
                role: Role::Builder,
                attempt: 1
            },
            Action::CreateAhead {
                role: Role::Checker,
                attempt: 1
            }
        ]
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(600)));
}

#[test]
fn a_pending_job_that_is_not_admitted_waits_and_says_why() {
    let plan = plan_at(
        &Job::pending(),
        &Observed::default(),
        &Admission::Waiting(Reason::ConcurrencyLimit),
        10,
    );
    assert_eq!(plan.status.phase, Phase::Pending);
    assert_eq!(plan.status.reason, Reason::ConcurrencyLimit);
    assert!(plan.actions.is_empty());
    assert!(plan.transition.is_none());
}

#[test]
fn a_running_builder_is_adopted_not_started_again() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let plan = plan_admitted(
        &job,
        &observed(vec![workload(Role::Builder, WorkloadState::Running)]),
        10,
    );
    assert_eq!(plan.status.phase, Phase::Building);
    assert_eq!(
        plan.status.builder.workload_id.as_deref(),
        Some("builder-id")
    );
    assert!(starts(&plan).next().is_none());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(590)));
}

#[test]
fn while_the_builder_runs_the_checker_is_created_ahead_not_started() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let plan = plan_admitted(
        &job,
        &observed(vec![workload(Role::Builder, WorkloadState::Running)]),
        10,
    );
    assert_eq!(
        plan.actions,
        vec![Action::CreateAhead {
            role: Role::Checker,
            attempt: 1
        }]
    );
}

#[test]
fn a_checker_created_ahead_is_kept_while_building_and_asked_for_only_once() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![
        workload(Role::Builder, WorkloadState::Running),
        workload(Role::Checker, WorkloadState::Created),
    ]);
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Building);
    assert!(plan.actions.is_empty());
}

#[test]
fn a_job_whose_icarusjob_was_deleted_is_cancelled_not_failed_for_its_vanished_builder() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let mut world = observed(vec![]);
    let mut seen = job.clone();
    seen.status.builder.workload_id = Some("builder-id".to_owned());
    assert_eq!(
        plan_admitted(&seen, &world, 10).status.reason,
        Reason::Retried(Role::Builder)
    );
    world.owner_gone = true;
    let plan = plan_admitted(&seen, &world, 10);
    assert_eq!(plan.status.phase, Phase::Cancelled);
    assert_eq!(plan.status.reason, Reason::ResourceDeleted);
    assert!(plan.actions.contains(&Action::RemoveWorkspace));
}

#[test]
fn a_runtime_that_declines_to_create_ahead_is_not_asked_again() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = Observed {
        ahead_declined: true,
        ..observed(vec![workload(Role::Builder, WorkloadState::Running)])
    };
    assert!(plan_admitted(&job, &world, 10).actions.is_empty());
}

#[test]
fn when_the_builder_succeeds_the_checker_created_ahead_is_started() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![
        exited(Role::Builder, 0),
        workload(Role::Checker, WorkloadState::Created),
    ]);
    let plan = plan_admitted(&job, &recorded(world, "tree1"), 10);
    assert_eq!(plan.status.phase, Phase::Checking);
    assert_eq!(
        plan.actions,
        vec![Action::Start {
            role: Role::Checker,
            attempt: 1
        }]
    );
}

#[test]
fn when_the_builder_fails_the_checker_created_ahead_is_removed() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![
        exited(Role::Builder, 3),
        workload(Role::Checker, WorkloadState::Created),
    ]);
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert!(removed_once_recorded(&job, &world, 10).contains(&"checker-id".to_owned()));
}

#[test]
fn a_builder_created_but_never_started_is_started() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let plan = plan_admitted(
        &job,
        &observed(vec![workload(Role::Builder, WorkloadState::Created)]),
        10,
    );
    assert!(plan.actions.contains(&Action::Start {
        role: Role::Builder,
        attempt: 1
    }));
}

#[test]
fn a_builder_that_exits_zero_hands_over_to_the_checker_while_its_work_is_recorded() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![
        exited(Role::Builder, 0),
        workload(Role::Checker, WorkloadState::Created),
    ]);
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Building, "checking once recorded");
    let start_checker = Action::Start {
        role: Role::Checker,
        attempt: 1,
    };
    assert_eq!(plan.actions, vec![start_checker, Action::TakeSnapshot]);
}

#[test]
fn where_the_hand_over_waits_a_builder_that_exits_zero_has_its_work_recorded_first() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![
        exited(Role::Builder, 0),
        workload(Role::Checker, WorkloadState::Created),
    ]);
    let plan = plan(&PlanInput {
        hand_over: HandOver::AfterSnapshot,
        ..input(&job, &world, 10)
    });
    assert_eq!(plan.status.phase, Phase::Building);
    assert_eq!(plan.actions, vec![Action::TakeSnapshot]);
}

#[test]
fn a_checker_already_started_during_the_snapshot_is_not_started_again() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![
        exited(Role::Builder, 0),
        workload(Role::Checker, WorkloadState::Running),
    ]);
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.actions, vec![Action::TakeSnapshot]);
}

#[test]
fn a_snapshot_that_fails_ends_the_job_and_removes_the_checker_started_beside_it() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let mut world = observed(vec![
        exited(Role::Builder, 0),
        workload(Role::Checker, WorkloadState::Running),
    ]);
    world.source.failure = Some("the workspace holds more than 100000 files".to_owned());
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::SnapshotFailed);
    let removed = removed_once_recorded(&job, &world, 10);
    assert!(removed.contains(&"checker-id".to_owned()), "{removed:?}");
}

#[test]
fn a_recorded_snapshot_is_kept_in_the_status_and_the_checker_started() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = recorded(observed(vec![exited(Role::Builder, 0)]), "tree1");
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Checking);
    assert_eq!(plan.status.source.snapshot.as_deref(), Some("tree1"));
    assert_eq!(plan.status.builder.exit_code, Some(0));
    assert_eq!(
        plan.actions,
        vec![Action::Start {
            role: Role::Checker,
            attempt: 1
        }]
    );
}

#[test]
fn a_checker_found_after_a_crash_is_adopted_when_the_builder_succeeded() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![
        exited(Role::Builder, 0),
        workload(Role::Checker, WorkloadState::Running),
    ]);
    let plan = plan_admitted(&job, &recorded(world, "tree1"), 10);
    assert_eq!(plan.status.phase, Phase::Checking);
    assert!(plan.actions.is_empty());
}

#[test]
fn a_builder_that_exits_non_zero_fails_the_job_with_its_code() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let plan = plan_admitted(&job, &observed(vec![exited(Role::Builder, 3)]), 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::Failed(Role::Builder));
    assert_eq!(
        plan.status.error_message.as_deref(),
        Some("builder exited with code 3")
    );
    // The exited builder stays until its verdict is recorded: a crash
    // before that must find it, not a builder that vanished.
    assert!(plan.actions.is_empty());
    let world = observed(vec![exited(Role::Builder, 3)]);
    assert_eq!(
        plan_admitted(&as_recorded(&job, &plan), &world, 10).actions,
        vec![Action::Remove {
            role: Role::Builder,
            attempt: 1,
            id: "builder-id".to_owned()
        }]
    );
}

#[test]
fn an_out_of_memory_kill_is_named_as_such() {
    let job = Job::pending().in_phase(Phase::Checking, at(0));
    let oom = workload(
        Role::Checker,
        WorkloadState::Exited {
            exit_code: 137,
            oom_killed: true,
        },
    );
    let plan = plan_admitted(&job, &observed(vec![oom]), 10);
    assert_eq!(plan.status.reason, Reason::OomKilled(Role::Checker));
}

#[test]
fn a_waiting_agent_says_why_in_the_status_and_goes_on_waiting() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let pending = workload(
        Role::Builder,
        WorkloadState::Waiting {
            why: "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims"
                .to_owned(),
        },
    );
    let plan = plan_admitted(&job, &observed(vec![pending]), 10);
    assert_eq!(plan.status.phase, Phase::Building);
    assert_eq!(
        plan.status.waiting.as_deref(),
        Some(
            "builder has not started: 0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims"
        )
    );
    assert_eq!(
        starts(&plan).count(),
        0,
        "no second start: {:?}",
        plan.actions
    );

    let running = observed(vec![workload(Role::Builder, WorkloadState::Running)]);
    let mut told = job.clone();
    told.status = plan.status;
    let plan = plan_admitted(&told, &running, 20);
    assert_eq!(plan.status.waiting, None, "cleared once it runs");
}

#[test]
fn a_deadline_that_passes_while_an_agent_waits_is_a_start_failure_saying_why() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let pending = workload(
        Role::Builder,
        WorkloadState::Waiting {
            why: "0/1 nodes are available: 1 Insufficient cpu".to_owned(),
        },
    );
    let plan = plan_admitted(&job, &observed(vec![pending]), 601);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::StartFailed(Role::Builder));
    let message = plan.status.error_message.unwrap();
    assert!(
        message.contains("without starting") && message.contains("Insufficient cpu"),
        "{message}"
    );
    assert_eq!(plan.status.waiting, None);
}

#[test]
fn an_agent_that_can_never_start_fails_the_job_as_a_start_saying_why() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let stuck = workload(
        Role::Builder,
        WorkloadState::Unstartable {
            why: "ImagePullBackOff: pull access denied for ghost".to_owned(),
        },
    );
    let plan = plan_admitted(&job, &observed(vec![stuck]), 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::StartFailed(Role::Builder));
    assert_eq!(
        plan.status.error_message.as_deref(),
        Some("builder cannot start: ImagePullBackOff: pull access denied for ghost")
    );
    assert_eq!(plan.status.builder.exit_code, None, "nothing ran");
}

#[test]
fn an_agent_that_reported_an_error_and_exited_keeps_its_exit_code() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let mut world = observed(vec![exited(Role::Builder, 3)]);
    world.reports.builder_error = Some("builder was asked to fail".to_owned());
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.reason, Reason::ReportedError(Role::Builder));
    assert_eq!(plan.status.builder.exit_code, Some(3));
    assert_eq!(
        plan.status.builder.workload_id.as_deref(),
        Some("builder-id")
    );
}

#[test]
fn an_error_callback_fails_the_job_and_stops_the_agent() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let mut world = observed(vec![workload(Role::Builder, WorkloadState::Running)]);
    world.reports.builder_error = Some("model quota exhausted".to_owned());
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::ReportedError(Role::Builder));
    assert!(
        plan.status
            .error_message
            .unwrap()
            .contains("model quota exhausted")
    );
    assert_eq!(removed_once_recorded(&job, &world, 10), ["builder-id"]);
}

#[test]
fn a_checker_that_exits_zero_with_its_report_awaits_approval() {
    let job = Job::pending().in_phase(Phase::Checking, at(0));
    let mut world = observed(vec![exited(Role::Builder, 0), exited(Role::Checker, 0)]);
    world.reports.audit_report_received = true;
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::AwaitingApproval);
    assert!(
        plan.actions.is_empty(),
        "exited agents are kept for their logs: {:?}",
        plan.actions
    );
}

#[test]
fn a_snapshot_that_cannot_be_made_fails_the_job_and_starts_no_checker() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let mut world = observed(vec![exited(Role::Builder, 0)]);
    world.source.failure = Some("the workspace holds more than 10 files".to_owned());
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::SnapshotFailed);
    assert_eq!(starts(&plan).count(), 0);
}

#[test]
fn where_workspaces_cannot_be_read_the_job_goes_on_without_a_snapshot() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let mut world = observed(vec![exited(Role::Builder, 0)]);
    world.source.snapshot = Some(SnapshotTaken::Unreadable);
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Checking);
    assert_eq!(plan.status.source.snapshot, None);
}

#[test]
fn an_approved_job_with_a_source_but_no_snapshot_fails_instead_of_publishing() {
    let mut job = sourced(Phase::Approved);
    job.status.source.snapshot = None;
    let plan = plan_admitted(&job, &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::SnapshotMissing);
    assert!(!plan.actions.contains(&Action::Publish));
}

#[test]
fn a_decision_about_another_snapshot_is_not_acted_on() {
    let mut job = sourced(Phase::AwaitingApproval).with_approval(true);
    job.spec.approvals[0].snapshot = Some("some-other-tree".to_owned());
    let plan = plan_admitted(&job, &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::AwaitingApproval);
    assert_eq!(plan.status.reason, Reason::SnapshotMismatch);
    let bound = sourced(Phase::AwaitingApproval).with_approval(true);
    assert_eq!(
        plan_admitted(&bound, &Observed::default(), 10).status.phase,
        Phase::Approved
    );
}

#[test]
fn a_checker_that_exits_zero_without_a_report_fails() {}

#[test]
fn a_builder_that_cannot_be_started_fails_the_job_saying_why() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = Observed {
        start_failure: Some(StartFailure {
            role: Role::Builder,
            attempt: 1,
            message: "image 'nope:latest' is not available".to_owned(),
            permanent: true,
        }),
        ..Observed::default()
    };
    let plan = plan_admitted(&job, &world, 1);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::StartFailed(Role::Builder));
    assert!(starts(&plan).next().is_none());
    assert!(plan.status.error_message.unwrap().contains("nope:latest"));
}

#[test]
fn a_checker_that_cannot_start_at_the_hand_over_fails_the_job_in_one_transition() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = Observed {
        start_failure: Some(StartFailure {
            role: Role::Checker,
            attempt: 1,
            message: "image missing".to_owned(),
            permanent: true,
        }),
        ..recorded(observed(vec![exited(Role::Builder, 0)]), "tree1")
    };
    let plan = plan_admitted(&job, &world, 1);
    assert_eq!(plan.status.reason, Reason::StartFailed(Role::Checker));
    let transition = plan.transition.unwrap();
    assert_eq!(
        (transition.from, transition.to),
        (Phase::Building, Phase::Failed)
    );
}

#[test]
fn a_builder_past_its_deadline_fails_the_job_and_is_removed() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![workload(Role::Builder, WorkloadState::Running)]);
    let plan = plan_admitted(&job, &world, 600);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::TimedOut(Role::Builder));
    assert_eq!(removed_once_recorded(&job, &world, 600), ["builder-id"]);
}

#[test]
fn the_job_deadline_counts_from_the_start_of_building() {
    let mut job = Job::pending().in_phase(Phase::Checking, at(1700));
    job.status.times.building_at = Some(at(0));
    let plan = plan_admitted(
        &job,
        &observed(vec![workload(Role::Checker, WorkloadState::Running)]),
        1800,
    );
    assert_eq!(plan.status.reason, Reason::JobTimedOut);
}

#[test]
fn approval_moves_an_awaiting_job_to_approved_then_completed() {
    let job = Job::pending()
        .in_phase(Phase::AwaitingApproval, at(0))
        .with_approval(true);
    let plan = plan_admitted(&job, &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::Approved);
    assert_eq!(
        plan.transition.unwrap().message.as_deref(),
        Some("approved by reviewer: reviewed")
    );

    let approved = Job {
        status: plan.status,
        ..job
    };
    let plan = plan_admitted(&approved, &Observed::default(), 11);
    assert_eq!(plan.status.phase, Phase::Completed);
    assert_eq!(plan.status.times.finished_at, Some(at(11)));
}

fn plan_with_deadlines(job: &Job, observed: &Observed, deadlines: &Deadlines, now: i64) -> Plan {
    plan(&PlanInput {
        job,
        observed,
        admission: &Admission::Admitted,
        deadlines,
        retries: &RETRIES,
        serving_since: at(-1),
        now: at(now),
        hand_over: HandOver::DuringSnapshot,
    })
}

#[test]
fn a_job_needing_two_approvals_waits_after_one_and_is_approved_after_two() {
    let job = Job::pending()
        .requiring_approvals(2)
        .in_phase(Phase::AwaitingApproval, at(0))
        .with_decision_by("alice", true);
    let plan = plan_admitted(&job, &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::AwaitingApproval);
    assert_eq!(plan.transition, None);
    let job = job.with_decision_by("bob", true);
    let plan = plan_admitted(&job, &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::Approved);
    assert_eq!(
        plan.transition.unwrap().message.as_deref(),
        Some("approved by alice: reviewed; bob: reviewed")
    );
}

#[test]
fn an_unsettled_job_past_its_approval_deadline_expires_and_its_work_is_removed() {
    let job = Job::pending()
        .requiring_approvals(2)
        .in_phase(Phase::AwaitingApproval, at(0))
        .with_decision_by("alice", true);
    let world = observed(vec![exited(Role::Builder, 0), exited(Role::Checker, 0)]);
    let waiting = plan_admitted(&job, &world, 2999);
    assert_eq!(waiting.status.phase, Phase::AwaitingApproval);
    assert_eq!(waiting.requeue_after, Some(Duration::from_secs(1)));
    let plan = plan_admitted(&job, &world, 3000);
    assert_eq!(plan.status.phase, Phase::Expired);
    assert_eq!(plan.status.reason, Reason::ApprovalTimedOut);
    assert_eq!(plan.status.times.finished_at, Some(at(3000)));
    let message = plan.transition.as_ref().unwrap().message.clone().unwrap();
    assert!(message.contains("1 of the 2 approvals"), "{message}");
    assert_eq!(removed_ids(&plan), ["builder-id", "checker-id"]);
    assert_eq!(plan.actions.last(), Some(&Action::RemoveWorkspace));
}

#[test]
fn an_approval_deadline_configured_to_reject_rejects() {
    let job = Job::pending().in_phase(Phase::AwaitingApproval, at(0));
    let deadlines = Deadlines {
        approval: Some(ApprovalDeadline {
            outcome: TimeoutOutcome::Rejected,
            ..APPROVAL_DEADLINE
        }),
        ..DEADLINES
    };
    let plan = plan_with_deadlines(&job, &Observed::default(), &deadlines, 3000);
    assert_eq!(plan.status.phase, Phase::Rejected);
    assert_eq!(plan.status.reason, Reason::ApprovalTimedOut);
}

#[test]
fn without_an_approval_deadline_a_job_awaits_approval_for_ever() {
    let job = Job::pending().in_phase(Phase::AwaitingApproval, at(0));
    let deadlines = Deadlines {
        approval: None,
        ..DEADLINES
    };
    let plan = plan_with_deadlines(&job, &Observed::default(), &deadlines, 1_000_000);
    assert_eq!(plan.status.phase, Phase::AwaitingApproval);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn a_decision_in_time_settles_the_job_even_when_planned_after_the_deadline() {
    let job = Job::pending()
        .in_phase(Phase::AwaitingApproval, at(0))
        .with_approval(true);
    let plan = plan_admitted(&job, &Observed::default(), 5000);
    assert_eq!(plan.status.phase, Phase::Approved);
}

#[test]
fn a_reminder_goes_out_once_at_its_share_of_the_approval_deadline() {
    let job = Job::pending().in_phase(Phase::AwaitingApproval, at(0));
    let early = plan_admitted(&job, &Observed::default(), 1000);
    assert_eq!(early.transition, None);
    assert_eq!(early.requeue_after, Some(Duration::from_secs(500)));
    let plan = plan_admitted(&job, &Observed::default(), 1500);
    let transition = plan.transition.clone().unwrap();
    assert_eq!(
        (transition.from, transition.to, transition.reason),
        (
            Phase::AwaitingApproval,
            Phase::AwaitingApproval,
            Reason::ApprovalReminder
        )
    );
    assert!(transition.message.unwrap().contains("1500 s"));
    assert_eq!(plan.status.times.reminded_at, Some(at(1500)));
    let reminded = Job {
        status: plan.status,
        ..job
    };
    let again = plan_admitted(&reminded, &Observed::default(), 1600);
    assert_eq!(again.transition, None, "once");
    assert_eq!(again.requeue_after, Some(Duration::from_secs(1400)));
}

#[test]
fn rejection_removes_the_agents_and_the_workspace() {
    let job = Job::pending()
        .in_phase(Phase::AwaitingApproval, at(0))
        .with_approval(false);
    let world = observed(vec![exited(Role::Builder, 0), exited(Role::Checker, 0)]);
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Rejected);
    assert_eq!(removed_ids(&plan), ["builder-id", "checker-id"]);
    assert_eq!(plan.actions.last(), Some(&Action::RemoveWorkspace));
}

#[test]
fn cancelling_a_building_job_removes_its_builder_and_workspace() {
    let job = Job::pending()
        .in_phase(Phase::Building, at(0))
        .with_cancel_requested();
    let world = observed(vec![workload(Role::Builder, WorkloadState::Running)]);
    let plan = plan_admitted(&job, &world, 10);
    assert_eq!(plan.status.phase, Phase::Cancelled);
    assert_eq!(plan.status.reason, Reason::CancelRequested);
    // A decision of the spec, taken again after a crash: the agents go at
    // once, then their workspace.
    assert_eq!(
        plan.actions,
        vec![
            Action::Remove {
                role: Role::Builder,
                attempt: 1,
                id: "builder-id".to_owned()
            },
            Action::RemoveWorkspace
        ]
    );
}

#[test]
fn a_finished_job_only_collects_leftover_workloads() {
    let job = Job::pending().in_phase(Phase::Completed, at(0));
    let plan = plan_admitted(&job, &observed(vec![exited(Role::Checker, 0)]), 10);
    assert_eq!(plan.status, job.status);
    assert!(plan.transition.is_none());
    assert_eq!(plan.actions.len(), 1);
    assert!(matches!(plan.actions[0], Action::Remove { .. }));
}

// ---------------------------------------------------------------------------
// Properties over random jobs and random observed worlds.

fn any_phase() -> impl Strategy<Value = Phase> {
    prop::sample::select(Phase::ALL.to_vec())
}

fn sourced(phase: Phase) -> Job {
    let mut job = Job::pending().in_phase(phase, at(0));
    job.spec.source = Some(JobSource {
        repository: "/repo".to_owned(),
        reference: Some("main".to_owned()),
    });
    if phase.rank() >= Phase::Checking.rank() {
        job.status.source.base_commit = Some("abc123".to_owned());
        job.status.source.snapshot = Some("tree1".to_owned());
    }
    job
}

/// The world after the builder's work was recorded as `tree`.
fn recorded(mut world: Observed, tree: &str) -> Observed {
    world.source.snapshot = Some(SnapshotTaken::Tree(tree.to_owned()));
    world
}

fn with_source_facts(facts: SourceFacts) -> Observed {
    Observed {
        source: facts,
        ..Observed::default()
    }
}

#[test]
fn a_building_job_with_a_source_checks_it_out_before_starting_its_builder() {
    let plan = plan_admitted(&sourced(Phase::Building), &Observed::default(), 10);
    assert_eq!(plan.actions, vec![Action::CheckoutSource]);
    assert_eq!(plan.status.phase, Phase::Building);
}

#[test]
fn admitting_a_job_with_a_source_records_building_before_the_checkout() {
    let mut job = sourced(Phase::Building);
    job.status = JobStatus::new_pending();
    let plan = plan_admitted(&job, &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::Building);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
}

#[test]
fn the_checked_out_base_is_recorded_and_the_builder_started() {
    let facts = SourceFacts {
        base_commit: Some("abc123".to_owned()),
        ..SourceFacts::default()
    };
    let plan = plan_admitted(&sourced(Phase::Building), &with_source_facts(facts), 10);
    assert_eq!(plan.status.source.base_commit.as_deref(), Some("abc123"));
    assert!(plan.actions.contains(&Action::Start {
        role: Role::Builder,
        attempt: 1
    }));
}

#[test]
fn a_checkout_that_cannot_work_fails_the_job_without_a_builder() {
    let facts = SourceFacts {
        failure: Some("repository not found".to_owned()),
        ..SourceFacts::default()
    };
    let plan = plan_admitted(&sourced(Phase::Building), &with_source_facts(facts), 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::SourceCheckoutFailed);
    assert_eq!(starts(&plan).count(), 0);
}

#[test]
fn an_approved_job_with_a_source_publishes_then_completes_with_its_commit() {
    let job = sourced(Phase::Approved);
    let plan = plan_admitted(&job, &Observed::default(), 10);
    assert_eq!(plan.actions, vec![Action::Publish]);
    assert_eq!(plan.status.phase, Phase::Approved);

    let facts = SourceFacts {
        published: Some(PublishedChange {
            branch: "icarus/j".to_owned(),
            commit: "def456".to_owned(),
            pull_request: None,
        }),
        ..SourceFacts::default()
    };
    let plan = plan_admitted(&job, &with_source_facts(facts), 10);
    assert_eq!(plan.status.phase, Phase::Completed);
    assert_eq!(plan.status.reason, Reason::Published);
    assert_eq!(plan.status.source.commit.as_deref(), Some("def456"));
    assert_eq!(plan.status.source.pull_request_url, None);
}

#[test]
fn a_pull_request_is_recorded_and_one_the_forge_refused_still_completes_saying_why() {
    let job = sourced(Phase::Approved);
    let published = |pull_request| SourceFacts {
        published: Some(PublishedChange {
            branch: "icarus/j".to_owned(),
            commit: "def456".to_owned(),
            pull_request: Some(pull_request),
        }),
        ..SourceFacts::default()
    };
    let url = "https://github.com/acme/api/pull/7".to_owned();
    let opened = plan_admitted(&job, &with_source_facts(published(Ok(url.clone()))), 10);
    assert_eq!(opened.status.source.pull_request_url, Some(url));
    let refused = published(Err("the forge refused".to_owned()));
    let plan = plan_admitted(&job, &with_source_facts(refused), 10);
    assert_eq!(plan.status.phase, Phase::Completed);
    let message = plan.transition.unwrap().message.unwrap();
    assert!(
        message.contains("no pull request: the forge refused"),
        "{message}"
    );
}

#[test]
fn a_refused_push_fails_the_job_and_a_requested_retry_takes_it_back_to_approved() {
    let facts = SourceFacts {
        failure: Some("pre-receive hook declined".to_owned()),
        ..SourceFacts::default()
    };
    let plan = plan_admitted(&sourced(Phase::Approved), &with_source_facts(facts), 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::PublishFailed);

    let mut failed = sourced(Phase::Approved);
    failed.status = plan.status;
    failed.spec.publish_requests = 1;
    let retry = plan_admitted(&failed, &Observed::default(), 20);
    assert_eq!(retry.status.phase, Phase::Approved);
    assert_eq!(retry.status.reason, Reason::PublishRetried);
    assert_eq!(retry.status.error_message, None);
    assert_eq!(retry.status.times.finished_at, None);
    assert_eq!(retry.status.source.publish_requests_seen, 1);
    let again = plan_admitted(
        &Job {
            status: retry.status,
            ..failed
        },
        &Observed::default(),
        30,
    );
    assert_eq!(
        again.actions,
        vec![Action::Publish],
        "the retry publishes once more"
    );
}

#[test]
fn an_approved_job_without_a_source_completes_and_keeps_its_workspace() {
    let plan = plan_admitted(
        &Job::pending().in_phase(Phase::Approved, at(0)),
        &Observed::default(),
        10,
    );
    assert_eq!(plan.status.phase, Phase::Completed);
    assert!(plan.actions.is_empty());
}

// Faults of the infrastructure: the next attempt, never the agent's verdict.

/// A building job whose builder was seen as `abc` and is gone now.
fn with_vanished_builder(attempt: u32) -> Job {
    let mut job = Job::pending().in_phase(Phase::Building, at(0));
    job.status.attempt = attempt;
    job.status.builder.workload_id = Some("abc".to_owned());
    job
}

/// A checking job whose checker exited 0 without an audit report, first
/// seen exited at `exited_at`.
fn with_silent_checker(exited_at: i64) -> (Job, Observed) {
    let mut job = Job::pending().in_phase(Phase::Checking, at(100));
    job.status.checker.exit_code = Some(0);
    job.status.checker.exited_at = Some(at(exited_at));
    (job, observed(vec![exited(Role::Checker, 0)]))
}

fn retried_to(plan: &Plan, attempt: u32, role: Role) {
    assert_eq!(plan.status.attempt, attempt);
    assert_eq!(plan.status.reason, Reason::Retried(role));
    let transition = plan.transition.as_ref().expect("a retry is an event");
    assert_eq!(transition.from, transition.to);
    assert_eq!(transition.reason, Reason::Retried(role));
}

#[test]
fn a_builder_that_vanished_runs_again_as_the_next_attempt_after_a_backoff() {
    let plan = plan_admitted(&with_vanished_builder(1), &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::Building);
    retried_to(&plan, 2, Role::Builder);
    let message = plan.transition.clone().unwrap().message.unwrap();
    assert!(
        message.contains("builder workload abc disappeared"),
        "{message}"
    );
    assert!(message.contains("attempt 2 of 3"), "{message}");
    assert_eq!(plan.status.builder, WorkloadStatus::default());
    // The attempt is recorded before it starts, and it waits its backoff.
    assert!(creations(&plan).next().is_none());
    let retry_at = plan.status.times.retry_at.unwrap();
    assert!(retry_at > at(10));
    assert_eq!(
        plan.requeue_after,
        Some((retry_at - at(10)).to_std().unwrap())
    );
}

#[test]
fn a_recorded_retry_starts_its_attempt_once_the_backoff_is_over() {
    let job = Job {
        status: plan_admitted(&with_vanished_builder(1), &Observed::default(), 10).status,
        ..with_vanished_builder(1)
    };
    let retry_at = job.status.times.retry_at.unwrap();
    let early = (retry_at - at(0)).num_seconds() - 1;
    assert!(
        creations(&plan_admitted(&job, &Observed::default(), early))
            .next()
            .is_none()
    );
    let due = (retry_at - at(0)).num_seconds() + 1;
    let plan = plan_admitted(&job, &Observed::default(), due);
    assert!(starts(&plan).any(|start| start == (Role::Builder, 2)));
    assert!(plan.transition.is_none());
}

#[test]
fn a_retried_agent_gets_its_whole_deadline_from_the_start_of_its_attempt() {
    let mut job = Job::pending().in_phase(Phase::Building, at(0));
    job.status.attempt = 2;
    job.status.times.retry_at = Some(at(500));
    let running = observed(vec![ObservedWorkload {
        attempt: 2,
        ..workload(Role::Builder, WorkloadState::Running)
    }]);
    assert_eq!(
        plan_admitted(&job, &running, 1000).status.phase,
        Phase::Building
    );
    let plan = plan_admitted(&job, &running, 1100);
    assert_eq!(plan.status.reason, Reason::TimedOut(Role::Builder));
}

#[test]
fn a_retry_removes_the_previous_attempts_workloads() {
    let mut job = Job::pending().in_phase(Phase::Checking, at(0));
    job.status.checker.workload_id = Some("checker-id".to_owned());
    let world = observed(vec![exited(Role::Builder, 0)]);
    let plan = plan_admitted(&job, &world, 10);
    retried_to(&plan, 2, Role::Checker);
    assert_eq!(removed_once_recorded(&job, &world, 10), ["builder-id"]);
}

#[test]
fn a_fault_with_no_attempt_left_fails_the_job_with_its_own_reason() {
    let plan = plan_admitted(&with_vanished_builder(3), &Observed::default(), 10);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::Vanished(Role::Builder));
    let message = plan.status.error_message.unwrap();
    assert!(message.contains("attempt 3 of 3; none left"), "{message}");
}

#[test]
fn an_agent_its_runtime_stopped_runs_again() {
    let job = Job::pending().in_phase(Phase::Checking, at(0));
    let lost = WorkloadState::Lost {
        why: "Evicted: the node was low on memory".to_owned(),
    };
    let plan = plan_admitted(&job, &observed(vec![workload(Role::Checker, lost)]), 10);
    retried_to(&plan, 2, Role::Checker);
    let message = plan.transition.unwrap().message.unwrap();
    assert!(message.contains("Evicted"), "{message}");
}

#[test]
fn an_agent_that_says_it_could_not_reach_the_orchestrator_runs_again() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![exited(Role::Builder, EXIT_TEMPFAIL)]);
    retried_to(&plan_admitted(&job, &world, 10), 2, Role::Builder);
}

#[test]
fn a_start_the_runtime_failed_runs_as_the_next_attempt_and_one_it_refused_fails() {
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let failed_start = |permanent| Observed {
        start_failure: Some(StartFailure {
            role: Role::Builder,
            attempt: 1,
            message: "500: the engine is busy".to_owned(),
            permanent,
        }),
        ..Observed::default()
    };
    retried_to(
        &plan_admitted(&job, &failed_start(false), 10),
        2,
        Role::Builder,
    );
    let refused = plan_admitted(&job, &failed_start(true), 10);
    assert_eq!(refused.status.reason, Reason::StartFailed(Role::Builder));
}

#[test]
fn an_agents_own_verdict_is_never_retried() {
    let building = Job::pending().in_phase(Phase::Building, at(0));
    let oom = WorkloadState::Exited {
        exit_code: 137,
        oom_killed: true,
    };
    let error_report = Observed {
        reports: AgentReports {
            builder_error: Some("cannot".to_owned()),
            ..AgentReports::default()
        },
        ..observed(vec![workload(Role::Builder, WorkloadState::Running)])
    };
    for world in [
        observed(vec![exited(Role::Builder, 1)]),
        observed(vec![workload(Role::Builder, oom)]),
        error_report,
    ] {
        let plan = plan_admitted(&building, &world, 10);
        assert_eq!(plan.status.phase, Phase::Failed, "{world:?}");
        assert_eq!(plan.status.attempt, 1);
    }
}

#[test]
fn a_checker_that_exits_without_its_report_has_a_grace_period_for_it() {
    let job = Job::pending().in_phase(Phase::Checking, at(100));
    let plan = plan_admitted(&job, &observed(vec![exited(Role::Checker, 0)]), 110);
    assert_eq!(plan.status.phase, Phase::Checking);
    assert_eq!(plan.status.checker.exited_at, Some(at(110)));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(5)));
    let (job, world) = with_silent_checker(110);
    let late_report = Observed {
        reports: AgentReports {
            audit_report_received: true,
            ..AgentReports::default()
        },
        ..world
    };
    let plan = plan_admitted(&job, &late_report, 114);
    assert_eq!(plan.status.phase, Phase::AwaitingApproval);
}

#[test]
fn a_checker_without_its_report_fails_the_job_when_the_orchestrator_served_its_whole_run() {
    let (job, world) = with_silent_checker(110);
    let plan = plan_serving_since(&job, &world, &Admission::Admitted, 115, 100);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.status.reason, Reason::CheckerReportMissing);
}

#[test]
fn a_checker_without_its_report_runs_again_when_the_orchestrator_was_down_during_its_run() {
    let (job, world) = with_silent_checker(110);
    let plan = plan_serving_since(&job, &world, &Admission::Admitted, 115, 105);
    retried_to(&plan, 2, Role::Checker);
    let message = plan.transition.unwrap().message.unwrap();
    assert!(message.contains("not serving"), "{message}");
}

#[test]
fn the_backoff_doubles_with_each_attempt_within_a_quarter_and_is_capped() {
    let retries = Retries {
        max_attempts: 10,
        ..RETRIES
    };
    for _ in 0..50 {
        let job = JobId::new_random();
        for attempt in 1..8u32 {
            let expected = (2_i64 << (attempt - 1)).min(60) * 1000;
            let wait = retries.backoff(job, attempt).num_milliseconds();
            assert!(
                wait >= expected * 3 / 4 && wait < expected * 5 / 4,
                "{attempt}: {wait}"
            );
            assert_eq!(retries.backoff(job, attempt), retries.backoff(job, attempt));
        }
    }
}

#[test]
fn a_started_checker_found_while_still_building_is_kept_not_run_twice() {
    // The hand-over started it, then a crash lost the record of checking.
    let job = Job::pending().in_phase(Phase::Building, at(0));
    let world = observed(vec![
        exited(Role::Builder, 0),
        workload(Role::Checker, WorkloadState::Running),
    ]);
    let plan = plan_admitted(&job, &world, 10);
    assert!(removed_ids(&plan).is_empty(), "{:?}", plan.actions);
}

fn any_role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}

fn any_state() -> impl Strategy<Value = WorkloadState> {
    prop_oneof![
        Just(WorkloadState::Created),
        Just(WorkloadState::Running),
        Just(WorkloadState::Unstartable {
            why: "ImagePullBackOff: not found".to_owned()
        }),
        Just(WorkloadState::Waiting {
            why: "0/1 nodes are available".to_owned()
        }),
        Just(WorkloadState::Lost {
            why: "Evicted: the node was low on memory".to_owned()
        }),
        (-2i64..140, any::<bool>()).prop_map(|(exit_code, oom_killed)| WorkloadState::Exited {
            exit_code,
            oom_killed
        }),
    ]
}

fn any_workload() -> impl Strategy<Value = ObservedWorkload> {
    (any_role(), 1u32..=2, 0u8..4, any_state()).prop_map(|(role, attempt, n, state)| {
        ObservedWorkload {
            role,
            attempt,
            id: format!("{role}-{attempt}-{n}"),
            state,
            log_tail: None,
            finished_at: None,
        }
    })
}

fn any_source_facts() -> impl Strategy<Value = SourceFacts> {
    (
        prop::option::of(Just("base".to_owned())),
        prop::option::of(Just(PublishedChange {
            branch: "icarus/x".to_owned(),
            commit: "tip".to_owned(),
            pull_request: None,
        })),
        prop::option::of(Just("refused".to_owned())),
        prop::option::of(prop_oneof![
            Just(SnapshotTaken::Tree("tree".to_owned())),
            Just(SnapshotTaken::Unreadable)
        ]),
    )
        .prop_map(|(base_commit, published, failure, snapshot)| SourceFacts {
            base_commit,
            snapshot,
            published,
            failure,
        })
}

fn any_observed() -> impl Strategy<Value = Observed> {
    (
        prop::collection::vec(any_workload(), 0..5),
        prop::option::of(Just("boom".to_owned())),
        prop::option::of(Just("bang".to_owned())),
        any::<bool>(),
        prop::option::of((any_role(), any::<bool>())),
        any_source_facts(),
        any::<bool>(),
    )
        .prop_map(
            |(
                mut workloads,
                builder_error,
                checker_error,
                audit,
                unstartable,
                source,
                declined,
            )| {
                // A runtime's ids are unique: two workloads may share a
                // role and attempt, never an id.
                let mut ids = Vec::new();
                workloads.retain(|w| {
                    let new = !ids.contains(&w.id);
                    ids.push(w.id.clone());
                    new
                });
                Observed {
                    workloads,
                    reports: AgentReports {
                        builder_error,
                        checker_error,
                        audit_report_received: audit,
                    },
                    start_failure: unstartable.map(|(role, permanent)| StartFailure {
                        role,
                        attempt: 1,
                        message: "image missing".to_owned(),
                        permanent,
                    }),
                    source,
                    ahead_declined: declined,
                    owner_gone: false,
                }
            },
        )
}

fn any_job() -> impl Strategy<Value = Job> {
    (
        any_phase(),
        0i64..2000,
        any_decisions(),
        any::<bool>(),
        prop::option::of(Just("seen-before".to_owned())),
        any::<bool>(),
        (0u32..3, 0u32..3, any::<bool>()),
    )
        .prop_map(
            |(phase, since, (required, decisions), cancel, builder_id, sourced, publish)| {
                let mut job = Job::pending().in_phase(phase, at(since));
                // A retry can only be pending on a job whose publishing failed
                // (the API refuses it otherwise); everywhere else it was seen.
                let (requests, seen, publish_failed) = publish;
                job.spec.publish_requests = requests;
                job.status.source.publish_requests_seen = requests;
                if publish_failed && phase == Phase::Failed {
                    job.status.reason = Reason::PublishFailed;
                    job.status.source.publish_requests_seen = seen.min(requests);
                }
                job.spec.source = sourced.then(|| JobSource {
                    repository: "/repo".to_owned(),
                    reference: None,
                });
                job.spec.required_approvals = required;
                job.spec.approvals = decisions
                    .into_iter()
                    .map(|(by, approved, snapshot)| ApprovalDecision {
                        decided_by: by.map(str::to_owned),
                        approved,
                        comment: String::new(),
                        decided_at: at(since),
                        snapshot: snapshot.map(str::to_owned),
                    })
                    .collect();
                job.spec.cancel_requested = cancel;
                job.status.builder.workload_id = builder_id;
                job
            },
        )
}

type AnyDecision = (Option<&'static str>, bool, Option<&'static str>);

/// How many approvals a job needs, and the decisions it holds: by a few
/// people (some twice, some unnamed), about its snapshot (none recorded,
/// as the fixtures' jobs have) or another one.
fn any_decisions() -> impl Strategy<Value = (u32, Vec<AnyDecision>)> {
    let decider = prop::option::weighted(0.9, prop::sample::select(vec!["alice", "bob", "carol"]));
    let snapshot = prop::option::weighted(0.2, Just("other-tree"));
    let decision = (decider, prop::bool::weighted(0.8), snapshot);
    (0u32..4, prop::collection::vec(decision, 0..5))
}

/// The distinct people who approved the job's snapshot, and whether anyone rejected it.
fn decisions_on_the_snapshot(job: &Job) -> (usize, bool) {
    let mut approvers: Vec<Option<&str>> = Vec::new();
    let mut rejected = false;
    for decision in &job.spec.approvals {
        if decision.snapshot.is_some() && decision.snapshot != job.status.source.snapshot {
            continue;
        }
        if !decision.approved {
            rejected = true;
        } else if !approvers.contains(&decision.decided_by.as_deref()) {
            approvers.push(decision.decided_by.as_deref());
        }
    }
    (approvers.len(), rejected)
}

fn any_admission() -> impl Strategy<Value = Admission> {
    prop_oneof![
        Just(Admission::Admitted),
        Just(Admission::Waiting(Reason::ConcurrencyLimit))
    ]
}

fn any_input() -> impl Strategy<Value = (Job, Observed, Admission, i64)> {
    (any_job(), any_observed(), any_admission(), 0i64..6000)
}

/// Jobs in building or checking with no cancel, for the deadline property.
fn any_agent_phase_input() -> impl Strategy<Value = (Job, Observed, Admission, i64)> {
    any_input().prop_map(|(mut job, observed, admission, now)| {
        let phase = if now % 2 == 0 {
            Phase::Building
        } else {
            Phase::Checking
        };
        let since = job.created_at + TimeDelta::seconds(now % 1000);
        job = Job::pending().in_phase(phase, since);
        (job, observed, admission, now)
    })
}

/// Jobs awaiting approval with no cancel, holding decisions, for the
/// approval properties.
fn any_awaiting_input() -> impl Strategy<Value = (Job, Observed, Admission, i64)> {
    (any_input(), 0i64..2000).prop_map(|((job, observed, admission, now), since)| {
        let mut awaiting = Job::pending().in_phase(Phase::AwaitingApproval, at(since));
        awaiting.spec.approvals = job.spec.approvals;
        awaiting.spec.required_approvals = job.spec.required_approvals;
        (awaiting, observed, admission, now)
    })
}

fn run((job, observed, admission, now): &(Job, Observed, Admission, i64)) -> Plan {
    plan_at(job, observed, admission, *now)
}

fn starts(plan: &Plan) -> impl Iterator<Item = (Role, u32)> + '_ {
    plan.actions.iter().filter_map(|a| match a {
        Action::Start { role, attempt } => Some((*role, *attempt)),
        _ => None,
    })
}

/// Starts and creations ahead: every workload the plan may bring into being.
fn creations(plan: &Plan) -> impl Iterator<Item = (Role, u32)> + '_ {
    plan.actions.iter().filter_map(|a| match a {
        Action::Start { role, attempt } | Action::CreateAhead { role, attempt } => {
            Some((*role, *attempt))
        }
        _ => None,
    })
}

fn removed_ids(plan: &Plan) -> Vec<&str> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

fn deadline_has_passed(job: &Job, now: i64) -> bool {
    let times = &job.status.times;
    let building = times.building_at.map(|t| at(now) >= t + DEADLINES.job);
    let role = match job.status.phase {
        Phase::Building => times.building_at.map(|t| at(now) >= t + DEADLINES.builder),
        Phase::Checking => times.checking_at.map(|t| at(now) >= t + DEADLINES.checker),
        _ => None,
    };
    building == Some(true) || role == Some(true)
}

proptest! {
    #[test]
    fn phases_never_go_backwards_but_for_a_requested_publish_retry(input in any_input()) {
        let plan = run(&input);
        let job = &input.0;
        let before = job.status.phase;
        let retry = before == Phase::Failed
            && job.status.reason == Reason::PublishFailed
            && job.spec.publish_requests > job.status.source.publish_requests_seen;
        if retry {
            prop_assert_eq!(plan.status.phase, Phase::Approved);
            prop_assert_eq!(plan.status.source.publish_requests_seen, job.spec.publish_requests);
            // It starts nothing; the push itself waits for the next reconcile.
            prop_assert_eq!(starts(&plan).count(), 0);
            prop_assert!(!plan.actions.contains(&Action::Publish));
        } else {
            prop_assert!(plan.status.phase.rank() >= before.rank());
            if before.is_terminal() {
                prop_assert_eq!(plan.status.phase, before);
            }
        }
    }

    #[test]
    fn a_terminal_job_starts_nothing(input in any_input()) {
        let plan = run(&input);
        if input.0.status.phase.is_terminal() || plan.status.phase.is_terminal() {
            prop_assert_eq!(creations(&plan).count(), 0);
            prop_assert!(!plan.actions.contains(&Action::PrepareWorkspace));
        }
    }

    #[test]
    fn at_most_one_workload_per_role_and_attempt_exists_after_the_plan(input in any_input()) {
        let plan = run(&input);
        let removed = removed_ids(&plan);
        let mut remaining: Vec<(Role, u32)> = input.1.workloads.iter()
            .filter(|w| !removed.contains(&w.id.as_str()))
            .map(|w| (w.role, w.attempt))
            .collect();
        for created in creations(&plan) {
            if !remaining.contains(&created) {
                remaining.push(created);
            }
        }
        for key in &remaining {
            prop_assert_eq!(remaining.iter().filter(|k| *k == key).count(), 1);
        }
        let mut created: Vec<_> = creations(&plan).collect();
        created.dedup();
        prop_assert_eq!(created.len(), creations(&plan).count());
    }

    #[test]
    fn a_passed_deadline_always_ends_in_failed_with_a_reason(input in any_agent_phase_input()) {
        let (job, observed, _, now) = &input;
        prop_assume!(deadline_has_passed(job, *now));
        let plan = run(&input);
        prop_assert_eq!(plan.status.phase, Phase::Failed);
        // An agent that was still waiting to start failed its start instead.
        let waited = |role: Role| {
            find(&observed.workloads, role, job.status.attempt)
                .is_some_and(|w| matches!(w.state, WorkloadState::Waiting { .. }))
        };
        prop_assert!(match plan.status.reason {
            Reason::TimedOut(_) | Reason::JobTimedOut => true,
            Reason::StartFailed(role) => waited(role),
            _ => false,
        }, "{:?}", plan.status.reason);
        prop_assert!(plan.status.error_message.is_some());
    }

    #[test]
    fn a_cancel_ends_in_cancelled_and_removes_every_workload(input in any_input()) {
        let (job, observed, _, _) = &input;
        prop_assume!(job.spec.cancel_requested && !job.status.phase.is_terminal());
        let plan = run(&input);
        prop_assert_eq!(plan.status.phase, Phase::Cancelled);
        prop_assert_eq!(removed_ids(&plan).len(), observed.workloads.len());
        prop_assert_eq!(starts(&plan).count(), 0);
    }

    #[test]
    fn what_a_plan_removes_a_crash_that_loses_its_record_never_brings_back(input in any_input()) {
        // Act, crash before the status is written, plan again from the job
        // as it was recorded: nothing the first plan removed is created
        // again (it would be a second run of the same agent).
        let (job, observed, admission, now) = &input;
        let first = run(&input);
        let removed = removed_ids(&first);
        let mut world = observed.clone();
        world.workloads.retain(|w| !removed.contains(&w.id.as_str()));
        let gone: Vec<(Role, u32)> = observed
            .workloads
            .iter()
            .filter(|w| removed.contains(&w.id.as_str()))
            .filter(|w| !world.workloads.iter().any(|kept| kept.role == w.role && kept.attempt == w.attempt))
            .map(|w| (w.role, w.attempt))
            .collect();
        let second = plan_at(job, &world, admission, *now);
        for created in creations(&second) {
            prop_assert!(!gone.contains(&created), "{:?} then {:?}", first.actions, second.actions);
        }
    }

    #[test]
    fn approval_is_accepted_only_in_awaiting_approval(input in any_input()) {
        let plan = run(&input);
        let before = input.0.status.phase;
        let decided = matches!(plan.status.phase, Phase::Approved | Phase::Rejected);
        let retried = plan.status.reason == Reason::PublishRetried;
        if decided && plan.status.phase != before && !retried {
            prop_assert_eq!(before, Phase::AwaitingApproval);
        }
        if retried && before != Phase::Approved {
            prop_assert_eq!(before, Phase::Failed);
            prop_assert_eq!(&input.0.status.reason, &Reason::PublishFailed);
        }
    }

    #[test]
    fn an_awaiting_job_is_approved_exactly_when_enough_distinct_people_approved_and_none_rejected(input in any_awaiting_input()) {
        let job = &input.0;
        let plan = run(&input);
        let (approvers, rejected) = decisions_on_the_snapshot(job);
        let required = job.spec.required_approvals.max(1) as usize;
        let since = job.status.times.awaiting_approval_at.unwrap();
        let expected = if rejected {
            Phase::Rejected
        } else if approvers >= required {
            Phase::Approved
        } else if at(input.3) >= since + APPROVAL_DEADLINE.timeout {
            Phase::Expired
        } else {
            Phase::AwaitingApproval
        };
        prop_assert_eq!(plan.status.phase, expected, "{:?}", job.spec.approvals);
    }

    #[test]
    fn an_approval_deadline_ends_only_an_unsettled_wait_and_always_says_why(input in any_awaiting_input()) {
        let plan = run(&input);
        if plan.status.reason == Reason::ApprovalTimedOut && input.0.status.reason != Reason::ApprovalTimedOut {
            let job = &input.0;
            prop_assert_eq!(job.status.phase, Phase::AwaitingApproval);
            prop_assert_eq!(job.tally().outcome(), None);
            prop_assert_eq!(plan.status.phase, Phase::Expired);
            prop_assert!(plan.transition.as_ref().and_then(|t| t.message.as_ref()).is_some());
            prop_assert!(plan.actions.contains(&Action::RemoveWorkspace));
        }
    }

    #[test]
    fn a_reminder_is_sent_at_most_once_and_never_after_the_deadline(input in any_awaiting_input()) {
        let (job, observed, admission, now) = &input;
        let first = run(&input);
        let reminded = first.transition.as_ref().is_some_and(|t| t.reason == Reason::ApprovalReminder);
        if reminded {
            let since = job.status.times.awaiting_approval_at.unwrap();
            prop_assert!(at(*now) < since + APPROVAL_DEADLINE.timeout);
            let written = Job { status: first.status.clone(), ..job.clone() };
            let second = plan_at(&written, observed, admission, *now);
            prop_assert!(second.transition.is_none_or(|t| t.reason != Reason::ApprovalReminder));
        }
    }

    #[test]
    fn a_failed_job_always_says_why(input in any_input()) {
        let plan = run(&input);
        if plan.status.phase == Phase::Failed && input.0.status.phase != Phase::Failed {
            prop_assert!(plan.status.error_message.as_deref().is_some_and(|m| !m.is_empty()));
            prop_assert!(plan.transition.is_some());
        }
    }

    #[test]
    fn a_retry_follows_only_a_fault_of_the_infrastructure(input in any_input()) {
        let (job, observed, _, _) = &input;
        let plan = run(&input);
        if plan.status.attempt > job.status.attempt {
            prop_assert_eq!(plan.status.attempt, job.status.attempt + 1);
            prop_assert!(matches!(plan.status.reason, Reason::Retried(_)));
            let role = running_role(plan.status.phase).unwrap();
            prop_assert!(observed.reports.error_of(role).is_none());
            let verdict = find(&observed.workloads, role, job.status.attempt).is_some_and(|w| {
                matches!(w.state, WorkloadState::Exited { exit_code, oom_killed }
                    if oom_killed || (exit_code != 0 && exit_code != EXIT_TEMPFAIL))
            });
            prop_assert!(!verdict);
        }
        prop_assert!(plan.status.attempt <= RETRIES.max_attempts.max(job.status.attempt));
    }

    #[test]
    fn what_a_plan_starts_survives_a_crash_that_loses_its_record(input in any_input()) {
        // Act, crash before the status is written, plan again from the
        // job as it was recorded: nothing the first plan brought into being
        // may be removed (it would be created a second time).
        let (job, observed, admission, now) = &input;
        let first = run(&input);
        let mut world = observed.clone();
        let removed = removed_ids(&first);
        world.workloads.retain(|w| !removed.contains(&w.id.as_str()));
        world.start_failure = None;
        let started: Vec<_> = starts(&first).collect();
        for (role, attempt) in creations(&first) {
            let state = if started.contains(&(role, attempt)) {
                WorkloadState::Running
            } else {
                WorkloadState::Created
            };
            match world.workloads.iter_mut().find(|w| w.role == role && w.attempt == attempt) {
                Some(existing) => existing.state = state,
                None => world.workloads.push(ObservedWorkload {
                    role,
                    attempt,
                    id: format!("new-{role}-{attempt}"),
                    state,
                    log_tail: None,
                    finished_at: None,
                }),
            }
        }
        // Meanwhile other jobs may have taken every admission slot.
        let waiting = Admission::Waiting(Reason::ConcurrencyLimit);
        for admission in [admission, &waiting] {
            let second = plan_at(job, &world, admission, *now);
            for action in &second.actions {
            if let Action::Remove { role, attempt, .. } = action {
                    prop_assert!(
                        !creations(&first).any(|c| c == (*role, *attempt)),
                        "{:?} then {:?}", first.actions, second.actions
                    );
                }
            }
        }
    }

    #[test]
    fn planning_is_deterministic(input in any_input()) {
        prop_assert_eq!(run(&input), run(&input));
    }

    #[test]
    fn a_plan_applied_and_planned_again_changes_nothing_more_when_the_world_is_unchanged(input in any_input()) {
        // Level-triggered: once the status is written, planning again with the same
        // observations must not move the phase a second time (except the one-step
        // approved -> completed hop, which is its own transition).
        let (job, observed, admission, now) = &input;
        let first = run(&input);
        let written = Job { status: first.status.clone(), ..job.clone() };
        let second = plan_at(&written, observed, admission, *now);
        let hops = [Phase::Building, Phase::Checking, Phase::Approved];
        if !hops.contains(&first.status.phase) {
            prop_assert_eq!(second.status.phase, first.status.phase);
        }
    }
}
