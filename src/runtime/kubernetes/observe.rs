//! Reading Pods in the planner's terms: a Pod becomes an [`ObservedWorkload`],
//! so the same planner decides as for local mode's containers.

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, Pod};
use kube::ResourceExt;

use crate::job::workload::{ObservedWorkload, Role, WorkloadState};

/// The agent a Pod runs, from its labels and state; `None` for a Pod that is
/// not an agent's or is being deleted (as good as gone).
pub fn observe_pod(pod: &Pod) -> Option<ObservedWorkload> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let labels = pod.labels();
    let role = Role::parse(labels.get(crate::names::kubernetes::ROLE)?)?;
    let attempt = labels
        .get(crate::names::kubernetes::ATTEMPT)?
        .parse()
        .ok()?;
    let status = pod.status.as_ref();
    let terminated = terminated(pod);
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if let Some(why) = unstartable(pod) {
        // An image that cannot be pulled or run never becomes an exit: it
        // would wait for its deadline. Report it as the start failure it is.
        return Some(ObservedWorkload {
            role,
            attempt,
            id: pod.name_any(),
            state: WorkloadState::Unstartable { why },
            log_tail: None,
            finished_at: None,
        });
    }
    let state = match (phase, terminated) {
        ("Failed", _) if let Some(why) = lost(pod) => WorkloadState::Lost { why },
        (_, Some(terminated)) => WorkloadState::Exited {
            exit_code: i64::from(terminated.exit_code),
            oom_killed: terminated.reason.as_deref() == Some("OOMKilled"),
        },
        // Killed by the kubelet before its container ran to an exit (its
        // deadline): a failure with no exit code of its own.
        ("Failed", None) => WorkloadState::Exited {
            exit_code: -1,
            oom_killed: false,
        },
        // A created Pod starts itself (scheduling, image pull): there is no
        // start to ask for, so a pending one is as good as running, unless
        // the scheduler says why it cannot place it yet.
        _ => match unscheduled(pod) {
            Some(why) => WorkloadState::Waiting { why },
            None => WorkloadState::Running,
        },
    };
    let finished_at = terminated
        .and_then(|terminated| terminated.finished_at.as_ref())
        .and_then(|time| {
            let nanos = time.0.as_nanosecond();
            let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
            let rest = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
            chrono::DateTime::from_timestamp(seconds, rest)
        });
    Some(ObservedWorkload {
        role,
        attempt,
        id: pod.name_any(),
        state,
        log_tail: None,
        finished_at,
    })
}

/// The state of the Pod's (only) container, once the kubelet reports one.
fn container_state(pod: &Pod) -> Option<&ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()
}

/// How the Pod's (only) container ended, once it has.
pub(crate) fn terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    container_state(pod)?.terminated.as_ref()
}

/// Why the cluster stopped a failed Pod, if it did rather than the agent:
/// the kubelet evicted it (node pressure), its node was lost or shut down,
/// or a disruption (preemption, an eviction through the API, the taint
/// manager) ended it. Its deadline (`DeadlineExceeded`) is not one: that
/// is the agent's own time running out.
fn lost(pod: &Pod) -> Option<String> {
    const STOPPED_BY_THE_NODE: [&str; 5] = [
        "Evicted",
        "NodeLost",
        "Shutdown",
        "NodeShutdown",
        "UnexpectedAdmissionError",
    ];
    let status = pod.status.as_ref()?;
    let message = |reason: &str, message: Option<&str>| match message {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_owned(),
    };
    if let Some(reason) = status.reason.as_deref()
        && STOPPED_BY_THE_NODE.contains(&reason)
    {
        return Some(message(reason, status.message.as_deref()));
    }
    let disruption = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")?;
    let reason = disruption.reason.as_deref().unwrap_or("DisruptionTarget");
    Some(message(reason, disruption.message.as_deref()))
}

/// The scheduler's word on a Pod it has not placed (condition `PodScheduled`
/// false, usually for `Unschedulable`): no node fits, a claim is not bound... It may pass (a
/// node frees up, a volume is provisioned), so the Pod waits, saying why.
fn unscheduled(pod: &Pod) -> Option<String> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    let message = condition
        .message
        .as_deref()
        .unwrap_or("no node fits it yet");
    Some(format!("not scheduled: {message}"))
}

/// Why the kubelet cannot start the agent's container, if it cannot.
///
/// A first failed pull (`ErrImagePull`) may be a registry's hiccup: the
/// kubelet tries again. Once it backs off (`ImagePullBackOff`), it has
/// retried and failed again, and the image is not coming.
pub(crate) fn unstartable(pod: &Pod) -> Option<String> {
    const HOPELESS: [&str; 3] = [
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
    ];
    let waiting = container_state(pod)?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    HOPELESS.contains(&reason).then(|| {
        format!(
            "{reason}: {}",
            waiting
                .message
                .as_deref()
                .unwrap_or("the container cannot start")
        )
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };

    use super::*;

    fn pod(phase: &str, terminated: Option<(i32, &str)>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("add-logging-builder-1".to_owned());
        pod.metadata.labels = Some(
            [("icarus.dev/role", "builder"), ("icarus.dev/attempt", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
        pod.status = Some(PodStatus {
            phase: Some(phase.to_owned()),
            container_statuses: terminated.map(|(code, reason)| {
                vec![ContainerStatus {
                    name: "agent".to_owned(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            reason: Some(reason.to_owned()),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]
            }),
            ..PodStatus::default()
        });
        pod
    }

    #[test]
    fn pod_phases_and_exits_become_workload_states() {
        let state = |p: &Pod| observe_pod(p).unwrap().state;
        // Pending: being scheduled or pulling its image; it needs no start.
        assert_eq!(state(&pod("Pending", None)), WorkloadState::Running);
        assert_eq!(state(&pod("Running", None)), WorkloadState::Running);
        assert_eq!(
            state(&pod("Succeeded", Some((0, "Completed")))),
            WorkloadState::Exited {
                exit_code: 0,
                oom_killed: false
            }
        );
        assert_eq!(
            state(&pod("Failed", Some((137, "OOMKilled")))),
            WorkloadState::Exited {
                exit_code: 137,
                oom_killed: true
            }
        );
        assert_eq!(
            state(&pod("Failed", None)),
            WorkloadState::Exited {
                exit_code: -1,
                oom_killed: false
            }
        );
    }

    /// A Pending Pod whose container waits, for `reason`.
    fn waiting(reason: &str, message: &str) -> Pod {
        let mut pending = pod("Pending", None);
        let status = pending.status.as_mut().unwrap();
        status.container_statuses = Some(vec![ContainerStatus {
            name: "agent".to_owned(),
            state: Some(ContainerState {
                waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                    reason: Some(reason.to_owned()),
                    message: Some(message.to_owned()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        pending
    }

    #[test]
    fn a_pod_the_cluster_evicted_or_preempted_is_lost_not_failed() {
        let mut evicted = pod("Failed", None);
        let status = evicted.status.as_mut().unwrap();
        status.reason = Some("Evicted".to_owned());
        status.message = Some("The node was low on resource: memory.".to_owned());
        assert_eq!(
            observe_pod(&evicted).unwrap().state,
            WorkloadState::Lost {
                why: "Evicted: The node was low on resource: memory.".to_owned()
            }
        );
        let mut preempted = pod("Failed", Some((143, "Error")));
        preempted.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "DisruptionTarget".to_owned(),
            status: "True".to_owned(),
            reason: Some("PreemptionByScheduler".to_owned()),
            message: None,
            ..PodCondition::default()
        }]);
        assert_eq!(
            observe_pod(&preempted).unwrap().state,
            WorkloadState::Lost {
                why: "PreemptionByScheduler".to_owned()
            }
        );
        let mut out_of_time = pod("Failed", None);
        out_of_time.status.as_mut().unwrap().reason = Some("DeadlineExceeded".to_owned());
        assert!(matches!(
            observe_pod(&out_of_time).unwrap().state,
            WorkloadState::Exited { exit_code: -1, .. }
        ));
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_a_start_failure_that_says_so() {
        let stuck = waiting("ImagePullBackOff", "pull access denied for ghost");
        let observed = observe_pod(&stuck).unwrap();
        assert_eq!(
            observed.state,
            WorkloadState::Unstartable {
                why: "ImagePullBackOff: pull access denied for ghost".to_owned()
            }
        );
    }

    #[test]
    fn a_pod_the_scheduler_cannot_place_waits_saying_why() {
        let mut pending = pod("Pending", None);
        pending.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".to_owned(),
            status: "False".to_owned(),
            reason: Some("Unschedulable".to_owned()),
            message: Some(
                "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims"
                    .to_owned(),
            ),
            ..PodCondition::default()
        }]);
        assert_eq!(
            observe_pod(&pending).unwrap().state,
            WorkloadState::Waiting {
                why: "not scheduled: 0/1 nodes are available: pod has unbound immediate \
                      PersistentVolumeClaims"
                    .to_owned()
            }
        );
    }

    #[test]
    fn a_first_failed_pull_is_waited_for_the_kubelet_tries_again() {
        let pulling = waiting("ErrImagePull", "registry timed out");
        assert_eq!(observe_pod(&pulling).unwrap().state, WorkloadState::Running);
    }

    #[test]
    fn a_pod_being_deleted_or_without_agent_labels_is_not_a_workload() {
        let mut deleting = pod("Running", None);
        deleting.metadata.deletion_timestamp =
            Some(serde_json::from_value(serde_json::json!("2026-11-25T00:00:00Z")).unwrap());
        assert!(observe_pod(&deleting).is_none());
        let mut stranger = pod("Running", None);
        stranger.metadata.labels = None;
        assert!(observe_pod(&stranger).is_none());
    }

    #[test]
    fn the_local_planner_decides_from_pods_as_it_does_from_containers() {
        use crate::job::admission::Admission;
        use crate::job::plan::{Action, Deadlines, HandOver, PlanInput, Retries, plan};
        use crate::job::workload::{Observed, SnapshotTaken, SourceFacts};
        use crate::job::{Job, Phase};

        let now = crate::job::fixtures::at(0);
        let job = Job::pending().in_phase(Phase::Building, now);
        let observed = Observed {
            workloads: vec![observe_pod(&pod("Succeeded", Some((0, "Completed")))).unwrap()],
            source: SourceFacts {
                snapshot: Some(SnapshotTaken::Tree("tree".to_owned())),
                ..SourceFacts::default()
            },
            ..Observed::default()
        };
        let deadlines = Deadlines {
            builder: chrono::TimeDelta::seconds(600),
            checker: chrono::TimeDelta::seconds(300),
            job: chrono::TimeDelta::seconds(1800),
            approval: None,
        };
        let next = plan(&PlanInput {
            job: &job,
            observed: &observed,
            admission: &Admission::Admitted,
            deadlines: &deadlines,
            retries: &Retries {
                max_attempts: 3,
                first_backoff: chrono::TimeDelta::seconds(2),
                max_backoff: chrono::TimeDelta::seconds(60),
                report_grace: chrono::TimeDelta::seconds(5),
            },
            serving_since: now,
            now,
            hand_over: HandOver::AfterSnapshot,
        });
        assert_eq!(next.status.phase, Phase::Checking);
        assert_eq!(
            next.status.builder.workload_id.as_deref(),
            Some("add-logging-builder-1"),
            "the Pod's name is the workload id"
        );
        assert!(next.actions.contains(&Action::Start {
            role: Role::Checker,
            attempt: 1
        }));
    }
}
