//! Where `kubectl apply` meets the job store.
//!
//! In Kubernetes mode an `IcarusJob` is the user's record and the job store
//! (SQL) is the controller's, which the REST API also reads. The bridge keeps
//! them in step, both ways and idempotently: a new resource becomes a job
//! with the resource's uid as its id; a later approval or cancel in the spec
//! goes through the same domain rules as the REST routes (an approval counts
//! only while the job awaits it, and is applied when it gets there); and the
//! job's status is written back to the resource's status subresource.
//! Task, images, source, phase, tests and project are fixed at creation, as
//! with a REST spawn.

use chrono::{DateTime, Utc};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::status::resource_status;
use crate::cluster::crd::{IcarusJob, IcarusJobStatus};
use crate::config::ApprovalConfig;
use crate::job::{ApprovalRules, Job, JobId, JobStatus, Verdict};
use crate::store::SpecUpdate;

/// Who submitted a job created through the REST API, kept on its resource.
pub const SUBMITTED_BY_ANNOTATION: &str = "icarus.dev/submitted-by";

/// Who decided through the REST API, kept on the resource beside the decision.
pub const DECIDED_BY_ANNOTATION: &str = "icarus.dev/decided-by";

/// Recorded as the submitter and approver of jobs that come from resources.
pub const KUBERNETES_CALLER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("IcarusJob {0} has no uid yet")]
    NoUid(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("a status could not be encoded: {0}")]
    Json(#[from] serde_json::Error),
}

/// Who submitted or decided, as the REST route that wrote the resource
/// recorded it; `kubernetes` for a resource written with kubectl or GitOps.
fn annotated<'a>(resource: &'a IcarusJob, annotation: &str) -> &'a str {
    resource
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(annotation))
        .map_or(KUBERNETES_CALLER, String::as_str)
}

/// The job id of a resource: its uid, stable for its whole life.
pub fn job_id(resource: &IcarusJob) -> Result<JobId, BridgeError> {
    resource
        .metadata
        .uid
        .as_deref()
        .and_then(|uid| uid.parse().ok())
        .ok_or_else(|| BridgeError::NoUid(resource.metadata.name.clone().unwrap_or_default()))
}

/// What the configuration says of decisions taken in resources' specs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionRules {
    /// `approval.*`: how many approvals a resource's job needs.
    pub approvals: ApprovalConfig,
    /// `auth.separation_of_duties`: applied where the job's submitter is
    /// known (a REST spawn recorded them), not to resources applied with
    /// kubectl, whose submitter is only `kubernetes`.
    pub separation_of_duties: bool,
}

impl DecisionRules {
    pub fn from_config(config: &crate::config::Config) -> Self {
        DecisionRules {
            approvals: config.approval.clone(),
            separation_of_duties: config.auth.separation_of_duties,
        }
    }

    fn for_job(&self, job: &Job) -> ApprovalRules {
        let submitter_known = job
            .spec
            .submitted_by
            .as_deref()
            .is_some_and(|by| by != KUBERNETES_CALLER);
        ApprovalRules {
            separation_of_duties: self.separation_of_duties && submitter_known,
        }
    }
}

/// The job a resource not yet in the store becomes; one whose spec names
/// no priority gets `default_priority`.
pub fn new_job(
    resource: &IcarusJob,
    now: DateTime<Utc>,
    default_priority: i32,
    rules: &DecisionRules,
) -> Result<Job, BridgeError> {
    let id = job_id(resource)?;
    let mut spec = resource.spec.to_job_spec(now);
    spec.priority = resource.spec.priority.unwrap_or(default_priority);
    spec.submitted_by = Some(annotated(resource, SUBMITTED_BY_ANNOTATION).to_owned());
    // The schema bounds it; the configuration may bound it more.
    spec.required_approvals = rules
        .approvals
        .required_within(resource.spec.required_approvals);
    // Decisions present at creation are applied when the job gets there.
    spec.approvals = Vec::new();
    spec.cancel_requested = false;
    spec.publish_requests = 0;
    let created_at = resource
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::parse_from_rfc3339(&t.0.to_string()).ok())
        .map_or(now, |t| t.with_timezone(&Utc));
    Ok(Job {
        id,
        created_at,
        spec,
        status: JobStatus::new_pending(),
        resource_version: 0,
    })
}

/// What the resource's spec changes in the stored `job`'s.
pub fn spec_update(
    resource: &IcarusJob,
    job: &Job,
    now: DateTime<Utc>,
    rules: &DecisionRules,
) -> SpecUpdate {
    // The domain decides what a cancel or an approval may do now; a refused
    // one (a finished job, an approval before awaiting_approval) is simply
    // tried again the next time the resource or the job changes.
    let mut spec = job.spec.clone();
    if resource.spec.cancel
        && let Ok(cancelled) = job.request_cancel()
    {
        spec.cancel_requested = cancelled.cancel_requested;
    }
    // Each decision in turn, on the job as the ones before left it: one
    // already taken (the same person's approval, anything once the job is
    // settled) is refused, so seeing the resource again changes nothing.
    let approval_rules = rules.for_job(job);
    let mut deciding = job.clone();
    for approval in resource.spec.decisions() {
        let by = match (&approval.by, resource.spec.approval.as_ref()) {
            (Some(by), _) => by.as_str(),
            // The form from before `approvals`: the REST route that wrote
            // it kept its decider in an annotation.
            (None, Some(single)) if std::ptr::eq(single, approval) => {
                annotated(resource, DECIDED_BY_ANNOTATION)
            }
            (None, _) => KUBERNETES_CALLER,
        };
        let verdict = Verdict {
            approved: approval.approved,
            comment: approval.comment.clone(),
            snapshot: approval.snapshot.clone(),
        };
        match deciding.decide(verdict, by, now, approval_rules) {
            Ok(decided) => deciding.spec.approvals = decided.approvals,
            Err(refused) => {
                tracing::debug!(job = %job.id, %refused, "a decision in the IcarusJob's spec is not taken")
            }
        }
    }
    spec.approvals = deciding.spec.approvals;
    // A count above the job's asks for a retry; the domain says if one may
    // be asked now (only after a failed publish). The job takes the
    // resource's count, so one raise, by any amount, is one retry.
    if resource.spec.publish_requests > job.spec.publish_requests
        && job.request_publish_retry().is_ok()
    {
        spec.publish_requests = resource.spec.publish_requests;
    }
    if spec == job.spec {
        SpecUpdate::Unchanged
    } else {
        SpecUpdate::write(spec)
    }
}

/// The merge patch that writes `job`'s status onto its resource.
pub fn status_patch(
    job: &Job,
    previous: Option<&IcarusJobStatus>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> serde_json::Value {
    let status = resource_status(&job.status, previous, generation, &now.to_rfc3339());
    json!({ "status": status })
}

/// Writes the status through the status subresource.
pub async fn write_status(
    api: &Api<IcarusJob>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), BridgeError> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response};
    use kube::Client;
    use kube::client::Body;
    use tower_test::mock::pair;

    use super::*;
    use crate::cluster::crd::{ApprovalSpec, IcarusJobSpec};
    use crate::job::{Phase, Reason, Role};

    const UID: &str = "6b1f0b4e-1111-4222-8333-944444444444";

    fn resource() -> IcarusJob {
        let mut resource = IcarusJob::new("add-logging", IcarusJobSpec::new("Add logging"));
        resource.metadata.namespace = Some("icarus".to_owned());
        resource.metadata.uid = Some(UID.to_owned());
        resource
    }

    fn stored(phase: Phase) -> Job {
        let mut job = new_job(&resource(), Utc::now(), 0, &DecisionRules::default()).unwrap();
        job.status.phase = phase;
        job
    }

    #[test]
    fn a_new_resource_becomes_a_pending_job_with_its_uid_as_id() {
        let job = new_job(&resource(), Utc::now(), 0, &DecisionRules::default()).unwrap();
        assert_eq!(job.id.to_string(), UID);
        assert_eq!(job.status.phase, Phase::Pending);
        assert_eq!(job.spec.task, "Add logging");
        assert_eq!(job.spec.submitted_by.as_deref(), Some(KUBERNETES_CALLER));
    }

    #[test]
    fn a_publish_retry_in_the_spec_counts_only_after_a_failed_publish() {
        let mut retried = resource();
        retried.spec.publish_requests = 3;
        let building = stored(Phase::Building);
        assert_eq!(
            spec_update(&retried, &building, Utc::now(), &DecisionRules::default()),
            SpecUpdate::Unchanged
        );
        let mut failed = stored(Phase::Failed);
        failed.status.reason = Reason::PublishFailed;
        let SpecUpdate::Write(spec) =
            spec_update(&retried, &failed, Utc::now(), &DecisionRules::default())
        else {
            panic!("a retry after a failed publish is taken");
        };
        assert_eq!(spec.publish_requests, 3, "one raise by 2 is one retry");
    }

    #[test]
    fn an_approval_in_the_spec_waits_until_the_job_awaits_it() {
        let mut approved = resource();
        approved.spec.approval = Some(ApprovalSpec {
            approved: true,
            comment: "LGTM".to_owned(),
            snapshot: None,
            by: None,
        });
        let building = stored(Phase::Building);
        assert_eq!(
            spec_update(&approved, &building, Utc::now(), &DecisionRules::default()),
            SpecUpdate::Unchanged
        );
        let waiting = stored(Phase::AwaitingApproval);
        let SpecUpdate::Write(spec) =
            spec_update(&approved, &waiting, Utc::now(), &DecisionRules::default())
        else {
            panic!("expected the decision to be written");
        };
        let decision = &spec.approvals[0];
        assert!(decision.approved);
        assert_eq!(decision.comment, "LGTM");
        assert_eq!(decision.decided_by.as_deref(), Some(KUBERNETES_CALLER));
    }

    fn approval_by(by: &str, approved: bool) -> ApprovalSpec {
        ApprovalSpec {
            approved,
            comment: String::new(),
            snapshot: None,
            by: Some(by.to_owned()),
        }
    }

    fn awaiting(required: u32) -> Job {
        let mut job = stored(Phase::AwaitingApproval);
        job.spec.required_approvals = required;
        job
    }

    #[test]
    fn a_list_of_approvals_in_the_spec_counts_each_person_once() {
        let mut approved = resource();
        approved.spec.approvals = vec![
            approval_by("alice", true),
            approval_by("alice", true),
            approval_by("bob", true),
        ];
        let job = awaiting(3);
        let SpecUpdate::Write(spec) =
            spec_update(&approved, &job, Utc::now(), &DecisionRules::default())
        else {
            panic!("expected the decisions to be written");
        };
        assert_eq!(
            crate::job::fixtures::deciders(&spec),
            [Some("alice"), Some("bob")]
        );
        let seen_again = Job { spec: *spec, ..job };
        assert_eq!(
            spec_update(
                &approved,
                &seen_again,
                Utc::now(),
                &DecisionRules::default()
            ),
            SpecUpdate::Unchanged,
            "the same resource seen again adds nothing"
        );
    }

    #[test]
    fn unnamed_approvals_in_the_spec_are_one_person() {
        let mut approved = resource();
        let mut unnamed = approval_by("x", true);
        unnamed.by = None;
        approved.spec.approvals = vec![unnamed.clone(), unnamed];
        let SpecUpdate::Write(spec) = spec_update(
            &approved,
            &awaiting(2),
            Utc::now(),
            &DecisionRules::default(),
        ) else {
            panic!("expected a decision to be written");
        };
        assert_eq!(spec.approvals.len(), 1);
    }

    #[test]
    fn a_rejection_in_the_spec_list_settles_the_job_and_nothing_after_it_counts() {
        let mut decided = resource();
        decided.spec.approvals = vec![
            approval_by("alice", true),
            approval_by("bob", false),
            approval_by("carol", true),
        ];
        let SpecUpdate::Write(spec) = spec_update(
            &decided,
            &awaiting(2),
            Utc::now(),
            &DecisionRules::default(),
        ) else {
            panic!("expected the decisions to be written");
        };
        assert_eq!(spec.approvals.len(), 2);
        assert!(!spec.approvals[1].approved);
    }

    #[test]
    fn separation_of_duties_refuses_a_spec_approval_by_a_known_submitter_only() {
        let rules = DecisionRules {
            separation_of_duties: true,
            ..DecisionRules::default()
        };
        let mut own = resource();
        own.spec.approvals = vec![approval_by("alice", true)];
        let mut by_alice = awaiting(1);
        by_alice.spec.submitted_by = Some("alice".to_owned());
        assert_eq!(
            spec_update(&own, &by_alice, Utc::now(), &rules),
            SpecUpdate::Unchanged
        );
        // Applied with kubectl: the submitter is not known, so not refused.
        let mut unnamed = resource();
        unnamed.spec.approvals = vec![ApprovalSpec {
            by: None,
            ..approval_by("x", true)
        }];
        let applied = awaiting(1);
        assert_eq!(
            applied.spec.submitted_by.as_deref(),
            Some(KUBERNETES_CALLER)
        );
        assert!(matches!(
            spec_update(&unnamed, &applied, Utc::now(), &rules),
            SpecUpdate::Write(_)
        ));
    }

    #[test]
    fn a_resource_asking_for_fewer_approvals_than_configured_gets_the_configured_number() {
        let rules = DecisionRules {
            approvals: ApprovalConfig {
                required: 2,
                max_required: 3,
                ..ApprovalConfig::default()
            },
            ..DecisionRules::default()
        };
        let mut fewer = resource();
        fewer.spec.required_approvals = Some(1);
        assert_eq!(
            new_job(&fewer, Utc::now(), 0, &rules)
                .unwrap()
                .spec
                .required_approvals,
            2
        );
        fewer.spec.required_approvals = Some(9);
        assert_eq!(
            new_job(&fewer, Utc::now(), 0, &rules)
                .unwrap()
                .spec
                .required_approvals,
            3
        );
    }

    #[test]
    fn a_cancel_in_the_spec_is_requested_once_and_never_on_a_finished_job() {
        let mut cancelled = resource();
        cancelled.spec.cancel = true;
        let running = stored(Phase::Checking);
        let SpecUpdate::Write(spec) =
            spec_update(&cancelled, &running, Utc::now(), &DecisionRules::default())
        else {
            panic!("expected a cancel request");
        };
        assert!(spec.cancel_requested);
        let done = stored(Phase::Completed);
        assert_eq!(
            spec_update(&cancelled, &done, Utc::now(), &DecisionRules::default()),
            SpecUpdate::Unchanged
        );
    }

    #[test]
    fn a_resource_without_a_uid_is_an_error_not_a_guess() {
        let mut unsaved = resource();
        unsaved.metadata.uid = None;
        assert!(matches!(
            new_job(&unsaved, Utc::now(), 0, &DecisionRules::default()),
            Err(BridgeError::NoUid(_))
        ));
    }

    #[tokio::test]
    async fn mock_api_the_status_is_merge_patched_through_the_status_subresource() {
        let (service, mut server) = pair::<Request<Body>, Response<Body>>();
        let api: Api<IcarusJob> = Api::namespaced(Client::new(service, "icarus"), "icarus");
        let mut job = stored(Phase::Failed);
        job.status.reason = Reason::Failed(Role::Builder);
        job.status.error_message = Some("builder exited with code 3".to_owned());
        let patch = status_patch(&job, None, Some(1), Utc::now());
        let call = tokio::spawn(async move { write_status(&api, "add-logging", &patch).await });
        let (request, respond) = server.next_request().await.unwrap();
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(
            request.uri().path(),
            "/apis/icarus.dev/v1alpha1/namespaces/icarus/icarusjobs/add-logging/status"
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/merge-patch+json"
        );
        let body = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["status"]["phase"], "failed");
        assert_eq!(sent["status"]["message"], "builder exited with code 3");
        let reply = serde_json::to_vec(&resource()).unwrap();
        respond.send_response(Response::builder().body(Body::from(reply)).unwrap());
        call.await.unwrap().unwrap();
    }
}
