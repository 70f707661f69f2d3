//! The planner on a finished job whose deletion was asked for: its
//! workspace goes, then what is stored of it; an unfinished one is not
//! touched until it ends.

use chrono::TimeDelta;

use super::*;
use crate::job::Deletion;
use crate::job::fixtures::at;

fn plan_now(job: &Job, now: i64) -> Plan {
    plan(&PlanInput {
        job,
        observed: &Observed::default(),
        admission: &Admission::Admitted,
        deadlines: &Deadlines {
            builder: TimeDelta::seconds(600),
            checker: TimeDelta::seconds(300),
            job: TimeDelta::seconds(1800),
            approval: None,
        },
        retries: &Retries {
            max_attempts: 3,
            first_backoff: TimeDelta::seconds(2),
            max_backoff: TimeDelta::seconds(60),
            report_grace: TimeDelta::seconds(5),
        },
        serving_since: at(-1),
        now: at(now),
        hand_over: HandOver::DuringSnapshot,
    })
}

fn asked_to_go(mut job: Job, keep_events: bool) -> Job {
    job.spec.delete_requested = Some(Deletion { keep_events });
    job
}

#[test]
fn a_finished_job_asked_to_go_loses_its_workspace_then_its_record() {
    let job = asked_to_go(Job::pending().in_phase(Phase::Completed, at(1)), false);
    let plan = plan_now(&job, 10);
    assert_eq!(
        plan.actions,
        vec![
            Action::RemoveWorkspace,
            Action::Purge { keep_events: false }
        ]
    );
    assert_eq!(plan.transition, None);
}

#[test]
fn a_job_keeping_its_events_is_purged_once() {
    let job = asked_to_go(Job::pending().in_phase(Phase::Rejected, at(1)), true);
    let plan = plan_now(&job, 10);
    assert!(plan.actions.contains(&Action::Purge { keep_events: true }));
    assert_eq!(plan.status.times.purged_at, Some(at(10)));
    let purged = Job {
        status: plan.status,
        ..job
    };
    assert!(plan_now(&purged, 20).actions.is_empty());
}

#[test]
fn a_running_job_is_not_purged_before_it_ends() {
    for phase in [Phase::Pending, Phase::Building, Phase::AwaitingApproval] {
        let job = asked_to_go(Job::pending().in_phase(phase, at(1)), false);
        let plan = plan_now(&job, 10);
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Purge { .. } | Action::RemoveWorkspace)),
            "{phase}: {:?}",
            plan.actions
        );
    }
}

#[test]
fn a_finished_job_may_be_deleted_and_a_running_one_may_not() {
    let done = Job::pending().in_phase(Phase::Failed, at(1));
    let spec = done
        .request_delete(Deletion { keep_events: false })
        .unwrap();
    assert_eq!(spec.delete_requested, Some(Deletion { keep_events: false }));
    let running = Job::pending().in_phase(Phase::Checking, at(1));
    let refused = running
        .request_delete(Deletion { keep_events: false })
        .unwrap_err();
    assert!(refused.to_string().contains("cancel it first"), "{refused}");
}
