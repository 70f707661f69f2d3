//! The `IcarusJob` custom resource (`icarus.dev/v1alpha1`).
//!
//! Its spec is what a user or a GitOps tool writes: the task, optional image
//! overrides and Git source, and — set later by `kubectl patch` or a commit —
//! the approval and the cancel request. Its status is what the controller
//! observed, with conditions as Kubernetes tools expect them. The schema,
//! including its validation, comes from these types (`icarus crd`).

use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::MAX_REQUIRED_APPROVALS;
use crate::job::admission::{MAX_PRIORITY, MIN_PRIORITY};
use crate::job::approval::{MAX_COMMENT_CHARS, MAX_SNAPSHOT_CHARS};
use crate::job::{
    ApprovalDecision, DEFAULT_PROJECT_ID, JobSource, JobSpec, MAX_PROJECT_ID_CHARS,
    PROJECT_ID_PATTERN, ProjectPhase, TEST_CODE_CEILING_BYTES,
};
use icarus_core::egress::{MAX_JOB_RULES, MAX_RULE_CHARS, RULE_PATTERN};

/// A container image reference: `[registry[:port]/]name[:tag][@digest]`.
pub const IMAGE_PATTERN: &str = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$";

/// What the user asked for. The task, path, images, source, phase, tests and
/// project are fixed at creation; the approval, the cancel and a publish
/// retry are written later.
// The API server refuses a change to what is fixed (CEL transition rules)
// rather than accepting an edit the controller would never act on.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "icarus.dev",
    version = "v1alpha1",
    kind = "IcarusJob",
    namespaced,
    status = "IcarusJobStatus",
    shortname = "ijob",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Project","type":"string","jsonPath":".spec.projectId"}"#,
    printcolumn = r#"{"name":"Builder","type":"string","jsonPath":".status.builder.podName"}"#,
    printcolumn = r#"{"name":"Checker","type":"string","jsonPath":".status.checker.podName"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = immutable("task"))]
#[x_kube(validation = immutable("projectPath"))]
#[x_kube(validation = immutable("builderImage"))]
#[x_kube(validation = immutable("checkerImage"))]
#[x_kube(validation = immutable("source"))]
#[x_kube(validation = immutable("phase"))]
#[x_kube(validation = immutable("testCode"))]
#[x_kube(validation = immutable("projectId"))]
#[x_kube(validation = immutable("allowedDomains"))]
#[x_kube(validation = immutable("priority"))]
#[x_kube(validation = immutable("requiredApprovals"))]
#[x_kube(validation = test_code_bytes())]
#[serde(rename_all = "camelCase")]
pub struct IcarusJobSpec {
    /// What the builder should do.
    #[schemars(length(min = 1, max = 32768))]
    pub task: String,
    /// The path inside the workspace the task is about.
    #[serde(default = "default_project_path")]
    #[schemars(length(min = 1, max = 4096))]
    pub project_path: String,
    /// Overrides the configured builder image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IMAGE_PATTERN))]
    pub builder_image: Option<String>,
    /// Overrides the configured checker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IMAGE_PATTERN))]
    pub checker_image: Option<String>,
    /// A Git repository the workspace is checked out from and published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<JobSource>,
    /// One person's verdict; honoured only while the job awaits approval.
    /// The form from before `approvals`, taken as their first entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSpec>,
    /// People's verdicts, in order (a GitOps pipeline appends one per
    /// reviewer): each honoured while the job awaits approval, under the
    /// same rules as `POST /jobs/{id}/approve` (one per person counted, one
    /// rejection rejects). Taken once: removing an entry undoes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SPEC_APPROVALS))]
    pub approvals: Vec<ApprovalSpec>,
    /// How many distinct people must approve: raised to
    /// `approval.required` and lowered to `approval.max_required` of the
    /// configuration; absent: `approval.required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>", range(min = 1, max = MAX_REQUIRED_APPROVALS))]
    pub required_approvals: Option<u32>,
    /// Stop the job (agents are removed) unless it already finished.
    #[serde(default)]
    pub cancel: bool,
    /// Raise by one to try publishing again after a failed push (what
    /// `POST /jobs/{id}/publish` does); the kept commit is pushed.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(with = "i32", range(min = 0))]
    pub publish_requests: u32,
    /// The original service's phase, `I` or `II`: shown and handed to the
    /// agents (`ICARUS_PHASE`); it changes nothing in how the job runs.
    #[serde(default)]
    pub phase: ProjectPhase,
    /// Tests the builder's code should pass, handed to the builder as
    /// `TEST_CODE`; at most 130,048 bytes of UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TEST_CODE_CEILING_BYTES))]
    pub test_code: Option<String>,
    /// The project the job belongs to (a label value: letters, digits, `.`,
    /// `_`, `-`).
    #[serde(default = "default_project_id")]
    #[schemars(length(min = 1, max = MAX_PROJECT_ID_CHARS), regex(pattern = PROJECT_ID_PATTERN))]
    pub project_id: String,
    /// What the job's agents may reach through the egress proxy: rules as
    /// in `agents.<role>.allowed_domains` (`name`, `*.name`, optional
    /// `:port`); each role keeps those its configured list covers, so a job
    /// narrows its agents' egress, never widens it. Absent: the lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_JOB_RULES), inner(length(max = MAX_RULE_CHARS), regex(pattern = RULE_PATTERN)))]
    pub allowed_domains: Option<Vec<String>>,
    /// Where the job stands in the queue: higher starts first (-1000 to
    /// 1000); absent: `queue.default_priority`. Who may create IcarusJobs
    /// (RBAC) may ask for any; `queue.max_priority` caps REST callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_PRIORITY, max = MAX_PRIORITY))]
    pub priority: Option<i32>,
}

/// The rule that `field` of the spec keeps the value (or the absence) it
/// was created with.
fn immutable(field: &str) -> Rule {
    Rule::new(format!(
        "has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    ))
    .message(
        format!("spec.{field} cannot change after creation: create a new IcarusJob").as_str(),
    )
}

/// Test code reaches the builder as one environment variable, which holds
/// bytes, not characters (see [`TEST_CODE_CEILING_BYTES`]).
fn test_code_bytes() -> Rule {
    Rule::new(format!(
        "!has(self.testCode) || bytes(self.testCode).size() <= {TEST_CODE_CEILING_BYTES}"
    ))
    .message(
        format!("spec.testCode must be at most {TEST_CODE_CEILING_BYTES} bytes of UTF-8").as_str(),
    )
}

fn default_project_id() -> String {
    DEFAULT_PROJECT_ID.to_owned()
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn default_project_path() -> String {
    "/workspace".to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    pub approved: bool,
    #[serde(default)]
    #[schemars(length(max = MAX_COMMENT_CHARS))]
    pub comment: String,
    /// The snapshot (`status.snapshot`) the decision is about; a decision
    /// naming another is not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SNAPSHOT_CHARS))]
    pub snapshot: Option<String>,
    /// Who decided: the person counted (once) towards the approvals, and
    /// refused if they submitted the job under separation of duties.
    /// Absent: `kubernetes` (so unnamed entries count as one person).
    /// Whoever may write the spec may write any name here: RBAC on
    /// IcarusJobs is what vouches for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_APPROVER_CHARS))]
    pub by: Option<String>,
}

/// The most entries `spec.approvals` may hold.
pub const MAX_SPEC_APPROVALS: u32 = 100;

/// The longest approver name `spec.approvals[].by` may hold.
pub const MAX_APPROVER_CHARS: u32 = 256;

/// What the controller observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IcarusJobStatus {
    /// `pending`, `building`, `checking`, `awaiting_approval`, `approved`,
    /// `completed`, `rejected`, `failed`, `cancelled` or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<JobCondition>,
    #[serde(default)]
    pub builder: AgentStatus,
    #[serde(default)]
    pub checker: AgentStatus,
    /// Which run of the agents this is.
    // As `int32`: API servers do not know the `uint32` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// The builder's work as recorded when it succeeded: what is reviewed
    /// and published (a Git tree id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_url: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// A standard Kubernetes condition (`Building`, `AwaitingApproval`, `Ready`...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCondition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub last_transition_time: String,
}

impl IcarusJobSpec {
    /// A spec with only its task: default path, configured images, no source.
    pub fn new(task: impl Into<String>) -> Self {
        IcarusJobSpec {
            task: task.into(),
            project_path: default_project_path(),
            builder_image: None,
            checker_image: None,
            source: None,
            approval: None,
            approvals: Vec::new(),
            required_approvals: None,
            cancel: false,
            publish_requests: 0,
            phase: ProjectPhase::I,
            test_code: None,
            project_id: default_project_id(),
            allowed_domains: None,
            priority: None,
        }
    }

    /// Every decision in the spec, in order: `approval`, then `approvals`.
    pub fn decisions(&self) -> impl Iterator<Item = &ApprovalSpec> {
        self.approval.iter().chain(&self.approvals)
    }

    /// The domain's desired state for this resource. `decided_at` is the
    /// moment the controller first saw the decision.
    pub fn to_job_spec(&self, seen_at: chrono::DateTime<chrono::Utc>) -> JobSpec {
        JobSpec {
            task: self.task.clone(),
            project_path: self.project_path.clone(),
            builder_image: self.builder_image.clone(),
            checker_image: self.checker_image.clone(),
            approvals: self
                .decisions()
                .map(|approval| ApprovalDecision {
                    approved: approval.approved,
                    comment: approval.comment.clone(),
                    decided_at: seen_at,
                    decided_by: approval.by.clone(),
                    snapshot: approval.snapshot.clone(),
                })
                .collect(),
            required_approvals: self.required_approvals.unwrap_or(1),
            cancel_requested: self.cancel,
            source: self.source.clone(),
            publish_requests: self.publish_requests,
            submitted_by: None,
            phase: self.phase,
            test_code: self.test_code.clone(),
            project_id: self.project_id.clone(),
            allowed_domains: self.allowed_domains.clone(),
            priority: self.priority.unwrap_or(0),
            delete_requested: None,
        }
    }
}

/// The CustomResourceDefinition as YAML, as checked in under `crds/`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let header = "# Generated by `icarus crd` from src/cluster/crd.rs; do not edit by hand.\n";
    format!(
        "{header}{}",
        serde_yaml::to_string(&IcarusJob::crd()).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_crd_matches_the_rust_types() {
        let checked_in = include_str!("../../crds/icarusjob.yaml");
        assert!(
            checked_in == crd_yaml(),
            "crds/icarusjob.yaml is stale: run `cargo run -- crd > crds/icarusjob.yaml`"
        );
    }

    fn created(spec: IcarusJobSpec) -> IcarusJob {
        IcarusJob::new("add-logging", spec)
    }

    fn update_refused(old: &IcarusJob, new: &IcarusJob) -> Option<String> {
        kube::core::cel::validate_cel_update(new, old)
            .err()
            .map(|errors| errors.to_string())
    }

    #[test]
    fn what_a_job_is_cannot_change_after_creation() {
        let source = JobSource {
            repository: "https://github.com/acme/api.git".to_owned(),
            reference: None,
        };
        let old = created(IcarusJobSpec {
            builder_image: Some("icarus-builder:1".to_owned()),
            source: Some(source.clone()),
            test_code: Some("assert True".to_owned()),
            ..IcarusJobSpec::new("Add logging")
        });
        type Edit = fn(&mut IcarusJobSpec);
        let edits: [(&str, Edit); 9] = [
            ("priority", |s| s.priority = Some(1000)),
            ("phase", |s| s.phase = ProjectPhase::II),
            ("testCode", |s| {
                s.test_code = Some("assert False".to_owned())
            }),
            ("projectId", |s| s.project_id = "elsewhere".to_owned()),
            ("task", |s| s.task = "Delete everything".to_owned()),
            ("projectPath", |s| s.project_path = "/elsewhere".to_owned()),
            ("builderImage", |s| s.builder_image = None),
            ("checkerImage", |s| {
                s.checker_image = Some("evil:1".to_owned())
            }),
            ("source", |s| {
                s.source.as_mut().unwrap().repository = "https://evil.example/x.git".to_owned()
            }),
        ];
        for (field, edit) in edits {
            let mut new = old.clone();
            edit(&mut new.spec);
            let refused = update_refused(&old, &new).unwrap_or_else(|| panic!("{field} changed"));
            assert!(
                refused.contains(&format!("spec.{field} cannot change")),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_decisions_are_written_after_creation() {
        let old = created(IcarusJobSpec::new("Add logging"));
        let mut new = old.clone();
        new.spec.approval = Some(ApprovalSpec {
            approved: true,
            comment: "LGTM".to_owned(),
            snapshot: None,
            by: None,
        });
        new.spec.cancel = true;
        new.spec.publish_requests = 1;
        assert_eq!(update_refused(&old, &new), None);
        assert!(
            kube::core::cel::validate_cel(&new).is_ok(),
            "creation rules"
        );
    }

    #[test]
    fn test_code_is_held_to_what_one_environment_variable_holds_in_bytes() {
        let within = "é".repeat(TEST_CODE_CEILING_BYTES / 2);
        let job = created(IcarusJobSpec {
            test_code: Some(within),
            ..IcarusJobSpec::new("Add logging")
        });
        assert!(kube::core::cel::validate_cel(&job).is_ok());
        let over = "é".repeat(TEST_CODE_CEILING_BYTES / 2 + 1);
        let job = created(IcarusJobSpec {
            test_code: Some(over),
            ..IcarusJobSpec::new("Add logging")
        });
        let refused = kube::core::cel::validate_cel(&job).unwrap_err().to_string();
        assert!(
            refused.contains("spec.testCode must be at most"),
            "{refused}"
        );
    }

    #[test]
    fn a_manifest_without_the_original_fields_is_phase_i_of_the_default_project() {
        let manifest = "{apiVersion: icarus.dev/v1alpha1, kind: IcarusJob, metadata: {name: x}, \
                        spec: {task: Add logging}}";
        let job: IcarusJob = serde_yaml::from_str(manifest).unwrap();
        let spec = job.spec.to_job_spec(chrono::Utc::now());
        assert_eq!(spec.phase, ProjectPhase::I);
        assert_eq!(spec.project_id, "default");
        assert_eq!(spec.test_code, None);
    }

    #[test]
    fn the_schema_states_the_phases_and_the_project_id_pattern() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(IcarusJob::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["phase"]["enum"],
            serde_json::json!(["I", "II"])
        );
        assert_eq!(
            spec["properties"]["projectId"]["pattern"],
            PROJECT_ID_PATTERN
        );
        assert_eq!(spec["properties"]["projectId"]["maxLength"], 63);
    }

    #[test]
    fn the_schema_uses_only_formats_an_api_server_knows() {
        // A real API server warned about `uint32` (an unknown format).
        assert!(!crd_yaml().contains("format: uint"), "{}", crd_yaml());
    }

    /// The job spec of a manifest whose spec is the task and `more` (YAML
    /// lines indented under `spec:`).
    fn applied(more: &str) -> JobSpec {
        let manifest = format!(
            "apiVersion: icarus.dev/v1alpha1\nkind: IcarusJob\nmetadata: {{name: add-logging}}\n\
             spec:\n  task: Add logging to the API{more}"
        );
        let job: IcarusJob = serde_yaml::from_str(&manifest).unwrap();
        job.spec.to_job_spec(chrono::Utc::now())
    }

    #[test]
    fn a_manifest_with_an_approval_becomes_a_decided_job_spec() {
        let spec = applied(
            r#"
  source: {repository: "https://github.com/acme/api.git", ref: main}
  approval: {approved: true, comment: LGTM}
"#,
        );
        assert_eq!(spec.project_path, "/workspace");
        assert_eq!(spec.source.unwrap().reference.as_deref(), Some("main"));
        let approval = &spec.approvals[0];
        assert!(approval.approved);
        assert_eq!(approval.comment, "LGTM");
    }

    #[test]
    fn a_manifest_with_a_list_of_approvals_becomes_the_decisions_in_order() {
        let spec = applied(
            r#"
  requiredApprovals: 2
  approvals:
  - {approved: true, by: alice}
  - {approved: true, by: bob, comment: fine}
"#,
        );
        assert_eq!(spec.required_approvals, 2);
        assert_eq!(
            crate::job::fixtures::deciders(&spec),
            [Some("alice"), Some("bob")]
        );
    }

    #[test]
    fn the_required_approvals_are_fixed_at_creation() {
        let old = created(IcarusJobSpec {
            required_approvals: Some(2),
            ..IcarusJobSpec::new("Add logging")
        });
        let mut new = old.clone();
        new.spec.required_approvals = Some(1);
        let refused = update_refused(&old, &new).unwrap();
        assert!(
            refused.contains("spec.requiredApprovals cannot change"),
            "{refused}"
        );
    }

    #[test]
    fn the_schema_refuses_an_empty_task_and_a_malformed_image() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(IcarusJob::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["task"]));
        assert_eq!(spec["properties"]["task"]["minLength"], 1);
        assert_eq!(spec["properties"]["builderImage"]["pattern"], IMAGE_PATTERN);
        let image = regex::Regex::new(IMAGE_PATTERN).unwrap();
        assert!(image.is_match("icarus-builder:latest"));
        assert!(image.is_match("registry.example.com:5000/agents/coder:v2"));
        assert!(!image.is_match("Two Words"));
        assert!(!image.is_match("--privileged"));
    }
}
