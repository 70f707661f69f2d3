//! A domain [`JobStatus`] as the IcarusJob's `.status`, with conditions
//! `kubectl wait` and GitOps tools read.

use crate::cluster::crd::{AgentStatus, IcarusJobStatus, JobCondition};
use crate::job::{JobStatus, Phase, WorkloadStatus};

/// The IcarusJob status for a domain status, keeping the conditions' last
/// transition times when their status did not change.
pub fn resource_status(
    status: &JobStatus,
    previous: Option<&IcarusJobStatus>,
    generation: Option<i64>,
    now: &str,
) -> IcarusJobStatus {
    let phase = status.phase;
    let conditions = [
        ("Building", phase == Phase::Building),
        ("Checking", phase == Phase::Checking),
        ("AwaitingApproval", phase == Phase::AwaitingApproval),
        ("Ready", phase == Phase::Completed),
        ("Failed", phase == Phase::Failed),
    ]
    .into_iter()
    .map(|(kind, holds)| {
        let value = if holds { "True" } else { "False" };
        let kept_time = previous
            .and_then(|p| p.conditions.iter().find(|c| c.kind == kind))
            .filter(|c| c.status == value)
            .map(|c| c.last_transition_time.clone());
        JobCondition {
            kind: kind.to_owned(),
            status: value.to_owned(),
            reason: status.reason.to_string(),
            message: if holds {
                status
                    .error_message
                    .clone()
                    .or_else(|| status.waiting.clone())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            last_transition_time: kept_time.unwrap_or_else(|| now.to_owned()),
        }
    })
    .collect();
    IcarusJobStatus {
        phase: Some(phase.to_string()),
        reason: Some(status.reason.to_string()),
        message: status
            .error_message
            .clone()
            .or_else(|| status.waiting.clone()),
        conditions,
        builder: AgentStatus::from(&status.builder),
        checker: AgentStatus::from(&status.checker),
        attempt: Some(status.attempt),
        base_commit: status.source.base_commit.clone(),
        snapshot: status.source.snapshot.clone(),
        branch: status.source.branch.clone(),
        commit: status.source.commit.clone(),
        pull_request_url: status.source.pull_request_url.clone(),
        observed_generation: generation,
    }
}

impl From<&WorkloadStatus> for AgentStatus {
    fn from(workload: &WorkloadStatus) -> Self {
        AgentStatus {
            pod_name: workload.workload_id.clone(),
            exit_code: workload.exit_code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Reason;

    #[test]
    fn conditions_follow_the_phase_and_keep_their_time_while_unchanged() {
        let mut status = JobStatus::new_pending();
        status.phase = Phase::Building;
        status.reason = Reason::Admitted;
        let first = resource_status(&status, None, Some(1), "t1");
        let building = first
            .conditions
            .iter()
            .find(|c| c.kind == "Building")
            .unwrap();
        assert_eq!(
            (
                building.status.as_str(),
                building.last_transition_time.as_str()
            ),
            ("True", "t1")
        );

        let again = resource_status(&status, Some(&first), Some(1), "t2");
        let building = again
            .conditions
            .iter()
            .find(|c| c.kind == "Building")
            .unwrap();
        assert_eq!(
            building.last_transition_time, "t1",
            "unchanged, so not re-stamped"
        );

        status.phase = Phase::Failed;
        status.error_message = Some("builder exited with code 3".to_owned());
        let failed = resource_status(&status, Some(&again), Some(2), "t3");
        let condition = failed
            .conditions
            .iter()
            .find(|c| c.kind == "Failed")
            .unwrap();
        assert_eq!(condition.status, "True");
        assert_eq!(condition.message, "builder exited with code 3");
        assert_eq!(condition.last_transition_time, "t3");
        assert_eq!(failed.phase.as_deref(), Some("failed"));
        assert_eq!(failed.observed_generation, Some(2));
    }
}
