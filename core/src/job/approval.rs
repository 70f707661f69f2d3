//! How people's decisions on a job add up: N distinct approvals approve it,
//! one rejection by anyone rejects it.
//!
//! A job's spec keeps every decision it accepted, in the order they came
//! ([`JobSpec::approvals`]), and how many distinct people must approve
//! ([`JobSpec::required_approvals`]). [`Tally`] reads them against the job's
//! snapshot; the planner ends the wait from it, the API shows it, and
//! [`Job::decide`](super::Job::decide) refuses what it could not count.

use super::{ApprovalDecision, JobSpec};

/// The longest comment a decision may carry, in characters.
pub const MAX_COMMENT_CHARS: usize = 16 * 1024;
/// The longest snapshot a decision may name, in characters.
pub const MAX_SNAPSHOT_CHARS: usize = 256;

/// The rules a decision is checked against, from configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApprovalRules {
    /// The job's own submitter may not decide on it.
    pub separation_of_duties: bool,
}

/// Who decided: the name recorded, or `""` for a decision recorded without
/// one (a version that did not record it); such decisions count as one person.
pub fn decider(decision: &ApprovalDecision) -> &str {
    decision.decided_by.as_deref().unwrap_or("")
}

/// What the decisions on a job's current snapshot add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally<'a> {
    /// The distinct people who approved, in the order they first did.
    pub approvers: Vec<&'a ApprovalDecision>,
    /// The first rejection, if anyone rejected.
    pub rejection: Option<&'a ApprovalDecision>,
    /// How many distinct approvals the job needs.
    pub required: u32,
    /// Whether some decision names a snapshot other than the job's (it does
    /// not count).
    pub other_snapshot: bool,
}

impl<'a> Tally<'a> {
    /// Counts `spec`'s decisions that are about `snapshot` (or name none).
    pub fn of(spec: &'a JobSpec, snapshot: Option<&str>) -> Tally<'a> {
        let mut tally = Tally {
            approvers: Vec::new(),
            rejection: None,
            required: spec.required_approvals.max(1),
            other_snapshot: false,
        };
        for decision in &spec.approvals {
            if decision.snapshot.is_some() && decision.snapshot.as_deref() != snapshot {
                tally.other_snapshot = true;
                continue;
            }
            if !decision.approved {
                tally.rejection.get_or_insert(decision);
            } else if !tally.has_approved(decider(decision)) {
                tally.approvers.push(decision);
            }
        }
        tally
    }

    /// Whether `who` is among the approvers.
    pub fn has_approved(&self, who: &str) -> bool {
        self.approvers.iter().any(|a| decider(a) == who)
    }

    /// Whether enough distinct people approved.
    pub fn is_approved(&self) -> bool {
        self.approvers.len() >= self.required as usize
    }

    /// The decision that settles the job: a rejection, or the approvals
    /// once there are enough; none while it still waits.
    pub fn outcome(&self) -> Option<bool> {
        if self.rejection.is_some() {
            Some(false)
        } else if self.is_approved() {
            Some(true)
        } else {
            None
        }
    }

    /// The approvers' names, in order, as recorded.
    pub fn approver_names(&self) -> Vec<&'a str> {
        self.approvers.iter().map(|a| decider(a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::fixtures::at;

    fn decision(by: &str, approved: bool, snapshot: Option<&str>) -> ApprovalDecision {
        ApprovalDecision {
            approved,
            comment: String::new(),
            decided_at: at(0),
            decided_by: Some(by.to_owned()),
            snapshot: snapshot.map(str::to_owned),
        }
    }

    fn spec(required: u32, decisions: Vec<ApprovalDecision>) -> JobSpec {
        JobSpec {
            approvals: decisions,
            required_approvals: required,
            ..JobSpec::new("task", "/workspace")
        }
    }

    #[test]
    fn the_same_person_approving_twice_counts_once() {
        let spec = spec(
            2,
            vec![decision("alice", true, None), decision("alice", true, None)],
        );
        let tally = Tally::of(&spec, None);
        assert_eq!(tally.approver_names(), ["alice"]);
        assert_eq!(tally.outcome(), None);
    }

    #[test]
    fn enough_distinct_approvals_approve() {
        let spec = spec(
            2,
            vec![decision("alice", true, None), decision("bob", true, None)],
        );
        assert_eq!(Tally::of(&spec, None).outcome(), Some(true));
    }

    #[test]
    fn one_rejection_by_anyone_rejects_whatever_the_approvals() {
        let spec = spec(
            1,
            vec![decision("alice", true, None), decision("bob", false, None)],
        );
        assert_eq!(Tally::of(&spec, None).outcome(), Some(false));
    }

    #[test]
    fn a_decision_about_another_snapshot_does_not_count() {
        let spec = spec(1, vec![decision("alice", true, Some("old"))]);
        let tally = Tally::of(&spec, Some("new"));
        assert_eq!(tally.outcome(), None);
        assert!(tally.other_snapshot);
        assert_eq!(Tally::of(&spec, Some("old")).outcome(), Some(true));
    }

    #[test]
    fn a_required_count_of_zero_still_needs_one_approval() {
        let spec = spec(0, vec![]);
        assert_eq!(Tally::of(&spec, None).required, 1);
    }
}
