//! The REST routes' writes in Kubernetes mode go to the `IcarusJob` first.
//!
//! `POST /jobs/spawn` creates a resource (its uid becomes the job id, as for
//! one applied with kubectl, and the job's objects are owned by it); approve
//! and cancel merge-patch the same `spec.approvals` and `spec.cancel` fields
//! a `kubectl patch` would. Only fields that are set are sent, so a decision a
//! GitOps commit put in the spec is never erased by a REST write.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};

use super::bridge::{SUBMITTED_BY_ANNOTATION, job_id};
use super::index::ResourceIndex;
use crate::cluster::crd::{IcarusJob, IcarusJobSpec};
use crate::job::{Job, JobId, JobSpec};
use crate::ports::upstream::{Upstream, UpstreamError};

/// Resources created through the REST API are named `job-<random suffix>`.
const GENERATED_NAME_PREFIX: &str = "job-";

/// Writes jobs' desired state onto their `IcarusJob` resources.
pub struct ResourceUpstream {
    api: Api<IcarusJob>,
    seen: ResourceIndex,
}

impl ResourceUpstream {
    pub fn new(api: Api<IcarusJob>, seen: ResourceIndex) -> Self {
        ResourceUpstream { api, seen }
    }

    /// The resource's name: from the watch when this replica runs it, else
    /// by listing (names are not derived from uids, and only the leader
    /// watches; approvals are rare enough for a metadata list).
    async fn name_of(&self, id: JobId) -> Result<String, UpstreamError> {
        if let Some(name) = self.seen.name_of(id) {
            return Ok(name);
        }
        let listed = self
            .api
            .list_metadata(&ListParams::default())
            .await
            .map_err(upstream_error)?;
        let uid = id.to_string();
        listed
            .items
            .into_iter()
            .find(|meta| meta.metadata.uid.as_deref() == Some(uid.as_str()))
            .and_then(|meta| meta.metadata.name)
            .ok_or_else(|| UpstreamError::Missing(format!("Job {id} has no IcarusJob resource")))
    }
}

#[async_trait]
impl Upstream for ResourceUpstream {
    async fn create(&self, spec: &JobSpec) -> Result<JobId, UpstreamError> {
        let resource = new_resource(spec);
        let created = self
            .api
            .create(&PostParams::default(), &resource)
            .await
            .map_err(upstream_error)?;
        let id = job_id(&created).map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        // Known at once to this replica's runtime: its objects get their owner.
        self.seen.remember(id, created.clone());
        tracing::info!(job = %id, name = ?created.metadata.name, "IcarusJob created for a REST spawn");
        Ok(id)
    }

    async fn delete(&self, id: JobId) -> Result<(), UpstreamError> {
        let name = match self.name_of(id).await {
            Ok(name) => name,
            Err(UpstreamError::Missing(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        match self.api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(error) => return Err(upstream_error(error)),
        }
        tracing::info!(job = %id, %name, "IcarusJob deleted for a REST deletion");
        Ok(())
    }

    async fn write_spec(&self, job: &Job, previous: &JobSpec) -> Result<(), UpstreamError> {
        let Some(patch) = spec_patch(previous, &job.spec) else {
            return Ok(());
        };
        let name = self.name_of(job.id).await?;
        self.api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(upstream_error)?;
        Ok(())
    }
}

/// The resource a REST spawn creates for `spec`.
pub fn new_resource(spec: &JobSpec) -> IcarusJob {
    let annotations = spec
        .submitted_by
        .as_ref()
        .map(|by| BTreeMap::from([(SUBMITTED_BY_ANNOTATION.to_owned(), by.clone())]));
    let resource_spec = IcarusJobSpec {
        project_path: spec.project_path.clone(),
        builder_image: spec.builder_image.clone(),
        checker_image: spec.checker_image.clone(),
        source: spec.source.clone(),
        phase: spec.phase,
        test_code: spec.test_code.clone(),
        project_id: spec.project_id.clone(),
        allowed_domains: spec.allowed_domains.clone(),
        priority: Some(spec.priority),
        required_approvals: (spec.required_approvals != 1).then_some(spec.required_approvals),
        ..IcarusJobSpec::new(spec.task.clone())
    };
    IcarusJob {
        metadata: ObjectMeta {
            generate_name: Some(GENERATED_NAME_PREFIX.to_owned()),
            annotations,
            ..ObjectMeta::default()
        },
        spec: resource_spec,
        status: None,
    }
}

/// The merge patch carrying what changed from `previous` to `spec`: a new
/// decision (and who made it), a cancel request, a publish retry; none when
/// nothing the resource holds changed.
pub fn spec_patch(previous: &JobSpec, spec: &JobSpec) -> Option<Value> {
    let mut fields = Map::new();
    let mut patch = Map::new();
    // A merge patch replaces a list whole: the job's decisions, each
    // naming its decider, so the bridge seeing them again takes none twice.
    if spec.approvals.len() > previous.approvals.len() {
        let approvals: Vec<Value> = spec
            .approvals
            .iter()
            .map(|decision| {
                let mut approval =
                    json!({"approved": decision.approved, "comment": decision.comment});
                if let Some(snapshot) = &decision.snapshot {
                    approval["snapshot"] = json!(snapshot);
                }
                if let Some(by) = &decision.decided_by {
                    approval["by"] = json!(by);
                }
                approval
            })
            .collect();
        fields.insert("approvals".to_owned(), Value::Array(approvals));
    }
    if spec.cancel_requested && !previous.cancel_requested {
        fields.insert("cancel".to_owned(), Value::Bool(true));
    }
    if spec.publish_requests > previous.publish_requests {
        fields.insert("publishRequests".to_owned(), json!(spec.publish_requests));
    }
    if fields.is_empty() {
        return None;
    }
    patch.insert("spec".to_owned(), Value::Object(fields));
    Some(Value::Object(patch))
}

/// A client's mistake (the schema refused the object) or the cluster's trouble.
fn upstream_error(error: kube::Error) -> UpstreamError {
    match &error {
        kube::Error::Api(status) if status.code == 404 => {
            UpstreamError::Missing(format!("the IcarusJob is gone: {}", status.message))
        }
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
            UpstreamError::Refused(format!(
                "the cluster refused the IcarusJob: {}",
                status.message
            ))
        }
        _ => UpstreamError::Unavailable(format!("the Kubernetes API failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::job::ApprovalDecision;

    fn spec() -> JobSpec {
        let mut spec = IcarusJobSpec::new("Add logging").to_job_spec(Utc::now());
        spec.submitted_by = Some("alice".to_owned());
        spec
    }

    #[test]
    fn a_rest_spawn_becomes_a_generated_resource_that_records_its_submitter() {
        let resource = new_resource(&spec());
        assert_eq!(resource.metadata.generate_name.as_deref(), Some("job-"));
        assert_eq!(resource.metadata.name, None);
        assert_eq!(
            resource.metadata.annotations.unwrap()[SUBMITTED_BY_ANNOTATION],
            "alice"
        );
        let expected = IcarusJobSpec {
            priority: Some(0),
            ..IcarusJobSpec::new("Add logging")
        };
        assert_eq!(
            resource.spec, expected,
            "the priority it was given is written"
        );
    }

    #[test]
    fn a_rest_spawn_carries_its_phase_tests_and_project_into_the_resource() {
        let spawned = JobSpec {
            phase: crate::job::ProjectPhase::II,
            test_code: Some("assert run()".to_owned()),
            project_id: "acme".to_owned(),
            ..spec()
        };
        let resource = new_resource(&spawned);
        assert_eq!(resource.spec.phase, crate::job::ProjectPhase::II);
        assert_eq!(resource.spec.test_code.as_deref(), Some("assert run()"));
        assert_eq!(resource.spec.project_id, "acme");
        let mut back = resource.spec.to_job_spec(Utc::now());
        back.submitted_by = spawned.submitted_by.clone();
        assert_eq!(
            back, spawned,
            "the job the resource becomes is the one spawned"
        );
    }

    #[test]
    fn an_unchanged_spec_patches_nothing() {
        assert_eq!(spec_patch(&spec(), &spec()), None);
    }

    #[test]
    fn a_decision_is_patched_without_touching_the_cancel_field() {
        let mut spec = spec();
        spec.approvals.push(ApprovalDecision {
            approved: false,
            comment: "too broad".to_owned(),
            decided_at: Utc::now(),
            decided_by: Some("bob".to_owned()),
            snapshot: None,
        });
        assert_eq!(
            spec_patch(&self::spec(), &spec),
            Some(json!({
                "spec": {"approvals": [{"approved": false, "comment": "too broad", "by": "bob"}]}
            }))
        );
    }

    #[test]
    fn a_further_decision_patches_the_whole_list_each_naming_its_decider() {
        let mut first = spec();
        first.approvals.push(ApprovalDecision {
            approved: true,
            comment: String::new(),
            decided_at: Utc::now(),
            decided_by: Some("alice".to_owned()),
            snapshot: Some("tree".to_owned()),
        });
        let mut second = first.clone();
        second.approvals.push(ApprovalDecision {
            decided_by: Some("bob".to_owned()),
            ..first.approvals[0].clone()
        });
        let entry =
            |by: &str| json!({"approved": true, "comment": "", "snapshot": "tree", "by": by});
        assert_eq!(
            spec_patch(&first, &second),
            Some(json!({"spec": {"approvals": [entry("alice"), entry("bob")]}}))
        );
    }

    #[test]
    fn a_rest_spawn_asking_for_more_approvals_says_so_in_the_resource() {
        let spawned = JobSpec {
            required_approvals: 3,
            ..spec()
        };
        assert_eq!(new_resource(&spawned).spec.required_approvals, Some(3));
    }

    #[test]
    fn a_cancel_request_is_patched_without_touching_the_approval() {
        let mut spec = spec();
        spec.cancel_requested = true;
        assert_eq!(
            spec_patch(&self::spec(), &spec),
            Some(json!({"spec": {"cancel": true}}))
        );
    }

    #[test]
    fn a_publish_retry_is_patched_alone_even_after_a_decision() {
        let mut decided = spec();
        decided.approvals.push(ApprovalDecision {
            approved: true,
            comment: String::new(),
            decided_at: Utc::now(),
            decided_by: Some("kubernetes".to_owned()),
            snapshot: None,
        });
        let mut retried = decided.clone();
        retried.publish_requests = 1;
        assert_eq!(
            spec_patch(&decided, &retried),
            Some(json!({"spec": {"publishRequests": 1}}))
        );
    }
}
