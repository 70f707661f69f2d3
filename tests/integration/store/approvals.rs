//! People's decisions on a job, as the store keeps them: in the job's spec
//! (what the planner reads) and, written in the same transaction, one
//! `job_approvals` row each, with who, when, the comment and the snapshot;
//! run on a SQLite file and on PostgreSQL.

use icarus::job::{ApprovalRules, Job, Phase, Verdict, timestamp_now};
use icarus::store::{SpecUpdate, Store, StoreError};

use crate::support::new_job;

on_both_databases!(
    each_decision_a_spec_takes_is_recorded_once_with_who_when_and_comment,
    a_decision_refused_by_the_domain_leaves_no_record,
    decisions_taken_together_in_one_write_are_each_recorded_in_order,
);

async fn awaiting_approval(store: &Store, required: u32) -> Job {
    let mut job = new_job("t");
    job.spec.required_approvals = required;
    job.status.source.snapshot = Some("tree-1".to_owned());
    let mut job = store.create_job(&job).await.unwrap();
    job.status.phase = Phase::AwaitingApproval;
    store.update_job(&job, None).await.unwrap()
}

fn verdict(approved: bool, comment: &str) -> Verdict {
    Verdict {
        approved,
        comment: comment.to_owned(),
        snapshot: Some("tree-1".to_owned()),
    }
}

/// `by`'s decision through the store's compare-and-swap, as the routes take it.
async fn decide(store: &Store, job: &Job, by: &str, approved: bool, comment: &str) -> Job {
    let change = |job: &Job| {
        Ok::<_, StoreError>(SpecUpdate::write(
            job.decide(
                verdict(approved, comment),
                by,
                timestamp_now(),
                ApprovalRules::default(),
            )
            .expect("the domain takes it"),
        ))
    };
    store.update_spec(job.id, change).await.unwrap().job
}

async fn each_decision_a_spec_takes_is_recorded_once_with_who_when_and_comment(store: Store) {
    let job = awaiting_approval(&store, 2).await;
    let job = decide(&store, &job, "alice", true, "looks right").await;
    let job = decide(&store, &job, "bob", true, "").await;
    let recorded = store.approvals(job.id).await.unwrap();
    assert_eq!(
        recorded, job.spec.approvals,
        "the record is the spec's decisions"
    );
    let who: Vec<_> = recorded.iter().map(|d| d.decided_by.as_deref()).collect();
    assert_eq!(who, [Some("alice"), Some("bob")]);
    assert_eq!(recorded[0].comment, "looks right");
    assert_eq!(recorded[0].snapshot.as_deref(), Some("tree-1"));
    assert!(recorded[0].decided_at <= recorded[1].decided_at);
}

async fn a_decision_refused_by_the_domain_leaves_no_record(store: Store) {
    let job = awaiting_approval(&store, 2).await;
    let job = decide(&store, &job, "alice", true, "").await;
    let again = job.decide(
        verdict(true, "twice"),
        "alice",
        timestamp_now(),
        ApprovalRules::default(),
    );
    assert!(again.is_err(), "the same person is counted once");
    assert_eq!(store.approvals(job.id).await.unwrap().len(), 1);
}

async fn decisions_taken_together_in_one_write_are_each_recorded_in_order(store: Store) {
    // As a resource's spec list brings several at once in Kubernetes mode.
    let job = awaiting_approval(&store, 3).await;
    let both = |job: &Job| {
        let rules = ApprovalRules::default();
        let mut deciding = job.clone();
        for by in ["carol", "dave"] {
            deciding.spec = deciding
                .decide(verdict(true, by), by, timestamp_now(), rules)
                .expect("the domain takes it");
        }
        Ok::<_, StoreError>(SpecUpdate::write(deciding.spec))
    };
    let job = store.update_spec(job.id, both).await.unwrap().job;
    let recorded = store.approvals(job.id).await.unwrap();
    let comments: Vec<_> = recorded.iter().map(|d| d.comment.as_str()).collect();
    assert_eq!(comments, ["carol", "dave"]);
    assert_eq!(job.status.phase, Phase::AwaitingApproval);
}
