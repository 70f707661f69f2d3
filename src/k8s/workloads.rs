//! The Kubernetes objects a job runs on, built from an `IcarusJob`: one
//! PersistentVolumeClaim (the workspace) and one Pod per agent and attempt.
//! Assembly only, no I/O: the controller decides when each is created.
//!
//! Every object is owned by its IcarusJob (deleting the job deletes them),
//! labelled like local mode's containers, and each Pod passes the Pod
//! Security "restricted" profile: non-root, no privilege escalation, every
//! capability dropped, the runtime's default seccomp profile.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::crd::IcarusJob;
use crate::config::AgentConfig;
use crate::job::{JobId, Role};
use crate::source::step::SOURCE_STEP_VARIABLE;
use crate::source::step::{SourceStep, WorkspaceAccess};

/// Where the workspace is mounted in every agent, as in local mode.
pub const WORKSPACE_MOUNT: &str = "/workspace";

/// What the builders need from the configuration.
#[derive(Debug, Clone)]
pub struct WorkloadSettings {
    pub builder: AgentConfig,
    pub checker: AgentConfig,
    /// Requested size of each job's workspace claim (`1Gi`).
    pub workspace_size: String,
    /// The claim's storage class; the cluster default when absent.
    pub storage_class: Option<String>,
    /// uid agents run as (non-zero: the restricted profile forbids root).
    pub run_as_user: i64,
    /// Labels a node must carry to run agents; empty: any node.
    pub node_selector: BTreeMap<String, String>,
    /// The image, deadline and credentials of the git Pods.
    pub git_image: String,
    pub git_timeout_seconds: u64,
    pub git_credentials_secret: Option<String>,
}

impl WorkloadSettings {
    /// From the configuration: `agents.<role>.*`, `kubernetes.*`, and
    /// `agents.user`'s uid (never root: the restricted profile forbids it).
    pub fn from_config(config: &crate::config::Config) -> Self {
        WorkloadSettings {
            builder: config.agents.builder.clone(),
            checker: config.agents.checker.clone(),
            workspace_size: config.kubernetes.workspace_size.clone(),
            storage_class: Some(config.kubernetes.storage_class.clone()).filter(|s| !s.is_empty()),
            run_as_user: run_as_user(&config.agents.user),
            node_selector: config.kubernetes.node_selector.clone(),
            git_image: config.kubernetes.git_image.clone(),
            git_timeout_seconds: config.kubernetes.git_timeout_seconds,
            git_credentials_secret: Some(config.kubernetes.git_credentials_secret.clone())
                .filter(|s| !s.is_empty()),
        }
    }
}

/// The uid of `agents.user` (`uid:gid`); anything else (empty, `0`, a name)
/// becomes 65534.
fn run_as_user(user: &str) -> i64 {
    user.split(':')
        .next()
        .and_then(|uid| uid.parse::<i64>().ok())
        .filter(|uid| *uid > 0)
        .unwrap_or(65534)
}

/// The name of a job's workspace claim.
pub fn claim_name(job: &IcarusJob) -> String {
    format!("{}-workspace", job.name_any())
}

/// The name of an agent's Pod: deterministic, so a restarted controller
/// finds it instead of creating another.
pub fn pod_name(job: &IcarusJob, role: Role, attempt: u32) -> String {
    format!("{}-{role}-{attempt}", job.name_any())
}

fn labels(job: &IcarusJob, role: Option<Role>, attempt: Option<u32>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "icarus".to_owned(),
        ),
        ("icarus.dev/job".to_owned(), job.name_any()),
    ]);
    if let Some(role) = role {
        labels.insert("icarus.dev/role".to_owned(), role.to_string());
    }
    if let Some(attempt) = attempt {
        labels.insert("icarus.dev/attempt".to_owned(), attempt.to_string());
    }
    labels
}

fn metadata(job: &IcarusJob, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.namespace(),
        labels: Some(labels),
        owner_references: job.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The job's workspace: one claim, written by the builder, read by the checker.
pub fn workspace_claim(job: &IcarusJob, settings: &WorkloadSettings) -> PersistentVolumeClaim {
    claim(
        metadata(job, claim_name(job), labels(job, None, None)),
        settings,
    )
}

/// One agent's Pod. `env` is the agent contract (`JOB_ID`, `TASK`,
/// `ORCHESTRATOR_CALLBACK` with the agent's token...), built by the caller.
pub fn agent_pod(
    job: &IcarusJob,
    role: Role,
    attempt: u32,
    env: &[(String, String)],
    settings: &WorkloadSettings,
) -> Pod {
    let image = match role {
        Role::Builder => job.spec.builder_image.clone(),
        Role::Checker => job.spec.checker_image.clone(),
    };
    let target = PodTarget {
        metadata: metadata(
            job,
            pod_name(job, role, attempt),
            labels(job, Some(role), Some(attempt)),
        ),
        claim_name: claim_name(job),
        image,
    };
    pod(&target, role, env, settings)
}

/// Where and under what name a Pod goes, and which image overrides the configured one.
pub struct PodTarget {
    pub metadata: ObjectMeta,
    pub claim_name: String,
    pub image: Option<String>,
}

/// The Pod itself, confined for the restricted profile.
pub fn pod(
    target: &PodTarget,
    role: Role,
    env: &[(String, String)],
    settings: &WorkloadSettings,
) -> Pod {
    let agent = match role {
        Role::Builder => &settings.builder,
        Role::Checker => &settings.checker,
    };
    let limits = BTreeMap::from([
        (
            "cpu".to_owned(),
            Quantity(format!("{}m", (agent.cpu_limit * 1000.0).round() as i64)),
        ),
        (
            "memory".to_owned(),
            Quantity(agent.memory_limit.to_string()),
        ),
    ]);
    let container = Container {
        name: "agent".to_owned(),
        image: Some(
            target
                .image
                .clone()
                .unwrap_or_else(|| agent.image_name.clone()),
        ),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        env: Some(
            env.iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(limits.clone()),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(confined_container()),
        // The checker audits; it must not change what it audits.
        volume_mounts: Some(mounts(WORKSPACE_MOUNT, role == Role::Checker)),
        ..Container::default()
    };
    // The kubelet enforces the agent's deadline even if the controller is down.
    let spec = confined_pod(
        container,
        agent.timeout_seconds,
        &target.claim_name,
        role == Role::Checker,
        settings,
    );
    Pod {
        metadata: target.metadata.clone(),
        spec: Some(spec),
        status: None,
    }
}

/// Where a git Pod mounts the job's workspace: `<root>/<job id>`, so the same
/// `LocalGit` that works on `<workspace.base_path>/<job id>` on a host works here.
pub const GIT_WORKSPACE_ROOT: &str = "/claim/workspaces";
/// Where a git Pod keeps the job's repository: `<root>/<job id>/git`.
pub const GIT_REPOSITORY_ROOT: &str = "/claim/repositories";

/// A short-lived Pod running `icarus source-step` on the job's claim (read-only
/// for a diff), confined like an agent; its last output line is the outcome.
pub fn source_pod(
    metadata: ObjectMeta,
    claim_name: &str,
    job: JobId,
    step: &SourceStep,
    settings: &WorkloadSettings,
) -> Pod {
    let mut env = vec![
        EnvVar {
            name: SOURCE_STEP_VARIABLE.to_owned(),
            value: Some(serde_json::to_string(step).unwrap_or_default()),
            value_from: None,
        },
        EnvVar {
            name: "HOME".to_owned(),
            value: Some("/tmp".to_owned()),
            value_from: None,
        },
    ];
    if let Some(secret) = &settings.git_credentials_secret {
        env.push(EnvVar {
            name: "GITHUB_TOKEN".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: "token".to_owned(),
                    optional: Some(true),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    let workspace = format!("{GIT_WORKSPACE_ROOT}/{job}");
    let container = Container {
        name: "git".to_owned(),
        image: Some(settings.git_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(
            [
                "icarus",
                "source-step",
                "--workspace-root",
                GIT_WORKSPACE_ROOT,
                "--repository-root",
                GIT_REPOSITORY_ROOT,
                "--job",
                &job.to_string(),
                "--outcome-file",
                "/dev/termination-log",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        env: Some(env),
        security_context: Some(confined_container()),
        volume_mounts: Some(mounts(
            &workspace,
            step.workspace_access() != WorkspaceAccess::ReadWrite,
        )),
        ..Container::default()
    };
    let spec = confined_pod(
        container,
        settings.git_timeout_seconds,
        claim_name,
        step.workspace_access() != WorkspaceAccess::ReadWrite,
        settings,
    );
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// No privilege, no capability, a read-only root: what the restricted profile asks and more.
fn confined_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// The claim at `workspace`, and a writable `/tmp`.
fn mounts(workspace: &str, read_only: bool) -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: "workspace".to_owned(),
            mount_path: workspace.to_owned(),
            read_only: Some(read_only),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        },
    ]
}

/// A run-once Pod for `container` with a deadline, on the job's claim, as a
/// non-root user with the runtime's default seccomp profile.
fn confined_pod(
    container: Container,
    deadline_seconds: u64,
    claim_name: &str,
    read_only: bool,
    settings: &WorkloadSettings,
) -> PodSpec {
    PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".to_owned()),
        active_deadline_seconds: Some(i64::try_from(deadline_seconds).unwrap_or(i64::MAX)),
        node_selector: Some(settings.node_selector.clone()).filter(|s| !s.is_empty()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(settings.run_as_user),
            run_as_group: Some(settings.run_as_user),
            fs_group: Some(settings.run_as_user),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "workspace".to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name.to_owned(),
                    read_only: Some(read_only),
                }),
                ..Volume::default()
            },
            Volume {
                name: "tmp".to_owned(),
                empty_dir: Some(Default::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

/// A workspace claim with the given metadata.
pub fn claim(metadata: ObjectMeta, settings: &WorkloadSettings) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: settings.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(settings.workspace_size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::k8s::crd::IcarusJobSpec;

    fn job() -> IcarusJob {
        let mut job = IcarusJob::new(
            "add-logging",
            IcarusJobSpec {
                checker_image: Some("registry.example.com/checker:2".to_owned()),
                ..IcarusJobSpec::new("Add logging")
            },
        );
        job.metadata.namespace = Some("icarus".to_owned());
        job.metadata.uid = Some("6b1f0b4e-1111-4222-8333-944444444444".to_owned());
        job
    }

    fn settings() -> WorkloadSettings {
        WorkloadSettings::from_config(&Config::embedded_default().unwrap())
    }

    #[test]
    fn agents_never_run_as_root_on_a_cluster() {
        assert_eq!(run_as_user("1000:1000"), 1000);
        assert_eq!(run_as_user(""), 65534);
        assert_eq!(run_as_user("0:0"), 65534);
        assert_eq!(run_as_user("nobody"), 65534);
    }

    #[test]
    fn agent_pods_pass_the_restricted_pod_security_profile() {
        let pod = agent_pod(&job(), Role::Builder, 1, &[], &settings());
        let spec = pod.spec.unwrap();
        let pod_security = spec.security_context.unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        let container = &spec.containers[0];
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.unwrap().drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.active_deadline_seconds, Some(600));
    }

    #[test]
    fn a_git_pod_runs_the_step_on_the_claim_confined_and_read_only_for_a_diff() {
        let id: JobId = "6b1f0b4e-1111-4222-8333-944444444444".parse().unwrap();
        let mut with_secret = settings();
        with_secret.git_credentials_secret = Some("git-token".to_owned());
        for (step, read_only) in [
            (SourceStep::Snapshot { base: None }, true),
            (
                SourceStep::Checkout {
                    source: crate::job::JobSource {
                        repository: "https://example.com/r.git".to_owned(),
                        reference: None,
                    },
                },
                false,
            ),
        ] {
            let pod = source_pod(ObjectMeta::default(), "claim", id, &step, &with_secret);
            let spec = pod.spec.unwrap();
            let container = &spec.containers[0];
            assert_eq!(container.image.as_deref(), Some("icarus:latest"));
            let command = container.command.clone().unwrap();
            assert_eq!(command[..2], ["icarus", "source-step"]);
            assert!(command.contains(&"/dev/termination-log".to_owned()));
            let mount = &container.volume_mounts.as_ref().unwrap()[0];
            assert_eq!(mount.mount_path, format!("/claim/workspaces/{id}"));
            assert_eq!(mount.read_only, Some(read_only));
            let env = container.env.clone().unwrap();
            let step_env = env.iter().find(|e| e.name == SOURCE_STEP_VARIABLE).unwrap();
            let sent: SourceStep =
                serde_json::from_str(step_env.value.as_deref().unwrap()).unwrap();
            assert_eq!(sent, step);
            let token = env.iter().find(|e| e.name == "GITHUB_TOKEN").unwrap();
            let secret = token.value_from.clone().unwrap().secret_key_ref.unwrap();
            assert_eq!(
                (secret.name.as_str(), secret.key.as_str()),
                ("git-token", "token")
            );
            let security = container.security_context.clone().unwrap();
            assert_eq!(security.read_only_root_filesystem, Some(true));
            assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
            assert_eq!(spec.active_deadline_seconds, Some(600));
        }
    }

    #[test]
    fn agents_go_to_any_node_unless_a_node_selector_is_configured() {
        let pod = agent_pod(&job(), Role::Builder, 1, &[], &settings());
        assert_eq!(pod.spec.unwrap().node_selector, None);
        let mut dedicated = settings();
        dedicated.node_selector = BTreeMap::from([("pool".to_owned(), "agents".to_owned())]);
        let pod = agent_pod(&job(), Role::Checker, 1, &[], &dedicated);
        assert_eq!(
            pod.spec.unwrap().node_selector,
            Some(BTreeMap::from([("pool".to_owned(), "agents".to_owned())]))
        );
    }

    #[test]
    fn the_checker_mounts_the_workspace_claim_read_only_and_the_builder_read_write() {
        for (role, read_only) in [(Role::Builder, false), (Role::Checker, true)] {
            let pod = agent_pod(&job(), role, 1, &[], &settings());
            let spec = pod.spec.unwrap();
            let claim = spec.volumes.unwrap()[0]
                .persistent_volume_claim
                .clone()
                .unwrap();
            assert_eq!(claim.claim_name, "add-logging-workspace");
            assert_eq!(claim.read_only, Some(read_only), "{role}");
            let mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
            assert_eq!(mount.read_only, Some(read_only), "{role}");
        }
    }

    #[test]
    fn every_object_is_owned_by_its_job_and_named_deterministically() {
        let job = job();
        let pod = agent_pod(&job, Role::Checker, 2, &[], &settings());
        assert_eq!(pod.metadata.name.as_deref(), Some("add-logging-checker-2"));
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "IcarusJob");
        assert_eq!(owner.uid, "6b1f0b4e-1111-4222-8333-944444444444");
        assert_eq!(owner.controller, Some(true));
        let claim = workspace_claim(&job, &settings());
        assert_eq!(
            claim.metadata.owner_references.unwrap()[0].name,
            "add-logging"
        );
        assert_eq!(claim.metadata.namespace.as_deref(), Some("icarus"));
    }

    #[test]
    fn images_limits_and_the_contract_come_from_the_job_and_the_configuration() {
        let env = [("JOB_ID".to_owned(), "x".to_owned())];
        let pod = agent_pod(&job(), Role::Checker, 1, &env, &settings());
        let container = &pod.spec.unwrap().containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example.com/checker:2")
        );
        let limits = container.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["cpu"], Quantity("500m".to_owned()));
        assert_eq!(limits["memory"], Quantity("536870912".to_owned()));
        assert_eq!(container.env.as_ref().unwrap()[0].name, "JOB_ID");
    }
}
