use chrono::TimeDelta;

use super::*;
use crate::job::Reason;
use crate::job::fixtures::at;
use crate::job::workload::ObservedWorkload;

fn exited(role: Role, attempt: u32, finished_at: Option<DateTime<Utc>>) -> Observed {
    Observed {
        workloads: vec![ObservedWorkload {
            role,
            attempt,
            id: format!("{role}-{attempt}"),
            state: WorkloadState::Exited {
                exit_code: 0,
                oom_killed: false,
            },
            log_tail: None,
            finished_at,
        }],
        ..Observed::default()
    }
}

fn transition(from: Phase, to: Phase, reason: Reason) -> Transition {
    Transition {
        from,
        to,
        reason,
        message: None,
    }
}

fn millis(ms: i64) -> TimeDelta {
    TimeDelta::milliseconds(ms)
}

#[test]
fn an_admission_measures_the_wait_since_submission() {
    let job = Job::pending();
    let next = Job::pending().in_phase(Phase::Building, at(30)).status;
    let admitted = transition(Phase::Pending, Phase::Building, Reason::Admitted);
    let measures = measure(&job, &next, Some(&admitted), &Observed::default());
    assert_eq!(measures.admission_wait, Some(Duration::from_secs(30)));
    assert_eq!(measures.handover, None);
    assert!(measures.runs.is_empty());
}

/// A job building since 10 s hands over to its checker at `checking_at`,
/// the controller having seen the builder's exit at `seen`, the runtime
/// reporting it at `exit`.
fn hand_over(
    exit: Option<DateTime<Utc>>,
    seen: DateTime<Utc>,
    checking_at: DateTime<Utc>,
) -> Measures {
    let job = Job::pending().in_phase(Phase::Building, at(10));
    let mut next = job.clone().in_phase(Phase::Checking, checking_at).status;
    next.builder.exited_at = Some(seen);
    let handed_over = transition(
        Phase::Building,
        Phase::Checking,
        Reason::Succeeded(Role::Builder),
    );
    measure(
        &job,
        &next,
        Some(&handed_over),
        &exited(Role::Builder, 1, exit),
    )
}

#[test]
fn the_hand_over_runs_from_the_builders_exit_as_the_runtime_saw_it_to_the_checkers_start() {
    let exit = at(40) + millis(85);
    let measures = hand_over(Some(exit), at(40) + millis(190), at(40) + millis(200));
    assert_eq!(measures.handover, Some(Duration::from_millis(115)));
    assert_eq!(
        measures.runs,
        [(Role::Builder, Duration::from_millis(30_085))],
        "the builder ran from the start of building to its exit"
    );
}

#[test]
fn an_exit_the_runtime_gave_no_time_for_counts_from_when_the_controller_saw_it() {
    let measures = hand_over(None, at(40), at(41));
    assert_eq!(measures.handover, Some(Duration::from_secs(1)));
}

#[test]
fn an_exit_recorded_before_is_not_counted_again() {
    let mut job = Job::pending().in_phase(Phase::Checking, at(10));
    job.status.builder.exited_at = Some(at(9));
    job.status.times.building_at = Some(at(0));
    let mut next = job.status.clone();
    next.waiting = Some("a later write of the same phase".to_owned());
    let measures = measure(&job, &next, None, &exited(Role::Builder, 1, Some(at(9))));
    assert_eq!(measures, Measures::default());
}

#[test]
fn an_agent_retried_after_its_exit_is_counted_for_the_attempt_it_ran() {
    let job = Job::pending().in_phase(Phase::Building, at(10));
    let mut next = job.status.clone();
    next.attempt = 2;
    next.reason = Reason::Retried(Role::Builder);
    let retried = transition(
        Phase::Building,
        Phase::Building,
        Reason::Retried(Role::Builder),
    );
    let measures = measure(
        &job,
        &next,
        Some(&retried),
        &exited(Role::Builder, 1, Some(at(25))),
    );
    assert_eq!(measures.runs, [(Role::Builder, Duration::from_secs(15))]);
    assert_eq!(measures.handover, None);
}

#[test]
fn a_running_agent_has_no_run_to_count() {
    let job = Job::pending().in_phase(Phase::Building, at(10));
    let mut observed = exited(Role::Builder, 1, None);
    observed.workloads[0].state = WorkloadState::Running;
    let mut next = job.status.clone();
    next.builder.workload_id = Some("builder-1".to_owned());
    assert!(measure(&job, &next, None, &observed).runs.is_empty());
}

#[test]
fn leaving_a_phase_measures_that_part_of_the_jobs_life_once() {
    let job = Job::pending().in_phase(Phase::AwaitingApproval, at(100));
    let mut next = job.status.clone();
    next.phase = Phase::Expired;
    next.times.finished_at = Some(at(400));
    let expired = transition(
        Phase::AwaitingApproval,
        Phase::Expired,
        Reason::ApprovalTimedOut,
    );
    let measures = measure(&job, &next, Some(&expired), &Observed::default());
    assert_eq!(
        measures.stretches,
        [
            (Stretch::AwaitingApproval, Duration::from_secs(300)),
            (Stretch::Total, Duration::from_secs(400)),
        ],
        "queued, building and checking were over before this write"
    );
    let written = Job {
        status: next.clone(),
        ..job
    };
    assert!(
        measure(&written, &next, None, &Observed::default())
            .stretches
            .is_empty()
    );
}
