//! The Kubernetes objects a job runs on: two
//! PersistentVolumeClaims (its workspace and its repository), one Pod per
//! agent and attempt, and a short-lived git Pod per source step. Assembly
//! only, no I/O: the controller decides when each is created.
//!
//! Who mounts what is the security model (README "Security model") in
//! Kubernetes terms. The workspace is hostile once an agent has run; the
//! Git metadata must never be reachable from it:
//! - the **workspace** claim is the agents': the builder writes it, the
//!   checker only reads it;
//! - the **repository** claim (the job's bare Git repository) is the
//!   orchestrator's: only git Pods mount it, never an agent;
//! - a git Pod mounts the workspace as its step needs it
//!   ([`SourceStep::workspace_access`]): read-write to check out, read-only
//!   to snapshot, not at all to publish;
//! - the Git token (`kubernetes.git_credentials_secret`) goes to the checkout
//!   Pod (a private source) and the publish Pod (the push), never to the
//!   snapshot Pod, the one step that reads what an agent wrote. The checkout
//!   runs before any agent, on a claim only the orchestrator has written.
//!   Every git Pod is told `publish.token_hosts()` (`--token-host`), and
//!   `icarus source-step` sends the token only there, over HTTPS.
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

use crate::config::AgentConfig;
use crate::job::{JobId, Role};
use crate::source::SnapshotLimits;
use crate::source::step::{SOURCE_STEP_VARIABLE, SourceStep, WorkspaceAccess};

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
    /// SIGTERM → SIGKILL for every Pod (`kubernetes.termination_grace_seconds`).
    pub termination_grace_seconds: u64,
    /// The hosts git Pods may send the token to (`publish.token_hosts()`).
    pub token_hosts: Vec<String>,
    /// How much of a workspace a snapshot records (`workspace.snapshot_max_*`).
    pub snapshot_limits: SnapshotLimits,
}

impl WorkloadSettings {
    /// From the configuration: `agents.<role>.*`, `kubernetes.*`,
    /// `agents.user`'s uid (never root: the restricted profile forbids it),
    /// `publish.token_hosts()` and `workspace.snapshot_max_*`.
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
            termination_grace_seconds: config.kubernetes.termination_grace_seconds,
            token_hosts: config.publish.token_hosts(),
            snapshot_limits: SnapshotLimits {
                max_bytes: config.workspace.snapshot_max_bytes,
                max_files: config.workspace.snapshot_max_files,
            },
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

/// A job's claims, by what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobClaim {
    /// The agents' work tree.
    Workspace,
    /// The orchestrator's bare Git repository, which no agent mounts.
    Repository,
}

impl JobClaim {
    /// `icarus-<job>-workspace`, `icarus-<job>-repository`: deterministic,
    /// so creating one that exists adopts it.
    pub fn name(self, job: JobId) -> String {
        match self {
            JobClaim::Workspace => crate::names::workspace(job),
            JobClaim::Repository => crate::names::repository(job),
        }
    }

    /// `workspace` or `repository`: the claim's volume name in a Pod, and
    /// how messages call it.
    pub fn what(self) -> &'static str {
        match self {
            JobClaim::Workspace => "workspace",
            JobClaim::Repository => "repository",
        }
    }

    /// Where a git Pod mounts the claim: `<root>/<job id>`, the layout
    /// `icarus source-step` is given (`--workspace-root`, `--repository-root`).
    fn git_root(self) -> &'static str {
        match self {
            JobClaim::Workspace => GIT_WORKSPACE_ROOT,
            JobClaim::Repository => GIT_REPOSITORY_ROOT,
        }
    }
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
    let limits = resources(agent.cpu_limit, agent.memory_limit);
    // Never above the limit: the API server refuses a request over it.
    let requests = resources(
        agent
            .cpu_request
            .unwrap_or(agent.cpu_limit)
            .min(agent.cpu_limit),
        agent
            .memory_request
            .unwrap_or(agent.memory_limit)
            .min(agent.memory_limit),
    );
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
            requests: Some(requests),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(confined_container()),
        ..Container::default()
    };
    // The workspace alone: the job's repository is never an agent's. The
    // checker audits; it must not change what it audits.
    let workspace = ClaimMount {
        claim: JobClaim::Workspace,
        claim_name: target.claim_name.clone(),
        path: WORKSPACE_MOUNT.to_owned(),
        read_only: role == Role::Checker,
    };
    // The kubelet enforces the agent's deadline even if the controller is down.
    let spec = confined_pod(container, agent.timeout_seconds, &[workspace], settings);
    Pod {
        metadata: target.metadata.clone(),
        spec: Some(spec),
        status: None,
    }
}

/// Where a git Pod mounts the job's workspace: `<root>/<job id>`, so the same
/// `LocalGit` that works on `<workspace.base_path>/<job id>` on a host works here.
pub const GIT_WORKSPACE_ROOT: &str = "/claim/workspaces";
/// Where a git Pod mounts the job's repository claim: `<root>/<job id>`,
/// the repository being `<root>/<job id>/git`.
pub const GIT_REPOSITORY_ROOT: &str = "/claim/repositories";

/// The claims a git Pod for `step` mounts, each with whether it is
/// read-only: the workspace as the step needs it, and the repository,
/// read-write (every step records into it). Its Pod is created only once
/// each of them exists.
pub fn git_claims(step: &SourceStep) -> Vec<(JobClaim, bool)> {
    let workspace = match step.workspace_access() {
        WorkspaceAccess::ReadWrite => Some((JobClaim::Workspace, false)),
        WorkspaceAccess::ReadOnly => Some((JobClaim::Workspace, true)),
        WorkspaceAccess::None => None,
    };
    workspace
        .into_iter()
        .chain([(JobClaim::Repository, false)])
        .collect()
}

/// Whether the step's Pod is given the Git token: a checkout (of a private
/// source) and a publish (the push) are; a snapshot, which reads what an
/// agent wrote and talks to no remote, never is.
fn gets_credentials(step: &SourceStep) -> bool {
    match step {
        SourceStep::Checkout { .. } | SourceStep::Publish { .. } => true,
        SourceStep::Snapshot { .. } => false,
    }
}

/// A short-lived Pod running `icarus source-step` on the job's claims (see
/// [`git_claims`]), confined like an agent; its last output line is the outcome.
pub fn source_pod(
    metadata: ObjectMeta,
    job: JobId,
    step: &SourceStep,
    settings: &WorkloadSettings,
) -> Pod {
    let mut env = vec![
        plain_env(
            SOURCE_STEP_VARIABLE,
            serde_json::to_string(step).unwrap_or_default(),
        ),
        plain_env("HOME", "/tmp".to_owned()),
    ];
    if let Some(secret) = settings
        .git_credentials_secret
        .as_ref()
        .filter(|_| gets_credentials(step))
    {
        env.push(token_env(secret));
    }
    let container = Container {
        name: "git".to_owned(),
        image: Some(settings.git_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(source_step_command(job, settings)),
        env: Some(env),
        security_context: Some(confined_container()),
        ..Container::default()
    };
    let claims: Vec<ClaimMount> = git_claims(step)
        .into_iter()
        .map(|(claim, read_only)| ClaimMount {
            claim,
            claim_name: claim.name(job),
            path: format!("{}/{job}", claim.git_root()),
            read_only,
        })
        .collect();
    let spec = confined_pod(container, settings.git_timeout_seconds, &claims, settings);
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// `icarus source-step` for the job, on the claims' roots, with where the
/// token may go and the snapshot's limits; the outcome also goes to the
/// termination message.
fn source_step_command(job: JobId, settings: &WorkloadSettings) -> Vec<String> {
    let mut command: Vec<String> = [
        "icarus",
        "source-step",
        "--workspace-root",
        GIT_WORKSPACE_ROOT,
        "--repository-root",
        GIT_REPOSITORY_ROOT,
        "--job",
    ]
    .map(str::to_owned)
    .to_vec();
    command.push(job.to_string());
    for host in &settings.token_hosts {
        command.extend(["--token-host".to_owned(), host.clone()]);
    }
    let limits = settings.snapshot_limits;
    command.extend([
        "--snapshot-max-bytes".to_owned(),
        limits.max_bytes.to_string(),
        "--snapshot-max-files".to_owned(),
        limits.max_files.to_string(),
        "--outcome-file".to_owned(),
        "/dev/termination-log".to_owned(),
    ]);
    command
}

fn plain_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

/// `GITHUB_TOKEN` from the Secret's `token` key (optional: without it the
/// Pod still runs, anonymously).
fn token_env(secret: &str) -> EnvVar {
    EnvVar {
        name: "GITHUB_TOKEN".to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: "token".to_owned(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
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

/// One of the job's claims in a Pod: which, where, and whether read-only
/// (both in the volume and in the mount).
struct ClaimMount {
    claim: JobClaim,
    claim_name: String,
    path: String,
    read_only: bool,
}

/// The claims at their paths, and a writable `/tmp`.
fn mounts(claims: &[ClaimMount]) -> Vec<VolumeMount> {
    let tmp = VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    };
    claims
        .iter()
        .map(|mount| VolumeMount {
            name: mount.claim.what().to_owned(),
            mount_path: mount.path.clone(),
            read_only: Some(mount.read_only),
            ..VolumeMount::default()
        })
        .chain([tmp])
        .collect()
}

/// The claims as volumes, and an empty `/tmp`.
fn volumes(claims: &[ClaimMount]) -> Vec<Volume> {
    let tmp = Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    };
    claims
        .iter()
        .map(|mount| Volume {
            name: mount.claim.what().to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: mount.claim_name.clone(),
                read_only: Some(mount.read_only),
            }),
            ..Volume::default()
        })
        .chain([tmp])
        .collect()
}

/// A run-once Pod for `container` with a deadline, on `claims`, as a
/// non-root user with the runtime's default seccomp profile.
fn confined_pod(
    mut container: Container,
    deadline_seconds: u64,
    claims: &[ClaimMount],
    settings: &WorkloadSettings,
) -> PodSpec {
    container.volume_mounts = Some(mounts(claims));
    PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".to_owned()),
        active_deadline_seconds: Some(i64::try_from(deadline_seconds).unwrap_or(i64::MAX)),
        termination_grace_period_seconds: Some(
            i64::try_from(settings.termination_grace_seconds).unwrap_or(i64::MAX),
        ),
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
        volumes: Some(volumes(claims)),
        ..PodSpec::default()
    }
}

/// CPUs and bytes as a Pod's resource quantities.
fn resources(cpus: f64, memory: u64) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        (
            "cpu".to_owned(),
            Quantity(format!("{}m", (cpus * 1000.0).round() as i64)),
        ),
        ("memory".to_owned(), Quantity(memory.to_string())),
    ])
}

/// A claim (a workspace or a repository) with the given metadata: the
/// configured size and storage class, `ReadWriteOnce`.
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

    /// An agent's Pod as the runtime builds it (names from [`crate::names`]),
    /// the checker with an image of its own.
    fn agent_pod(
        role: Role,
        attempt: u32,
        env: &[(String, String)],
        settings: &WorkloadSettings,
    ) -> Pod {
        let job: JobId = JOB.parse().unwrap();
        let target = PodTarget {
            metadata: ObjectMeta {
                name: Some(crate::names::agent(job, role, attempt)),
                ..ObjectMeta::default()
            },
            claim_name: JobClaim::Workspace.name(job),
            image: (role == Role::Checker).then(|| "registry.example.com/checker:2".to_owned()),
        };
        pod(&target, role, env, settings)
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
        let pod = agent_pod(Role::Builder, 1, &[], &settings());
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

    const JOB: &str = "6b1f0b4e-1111-4222-8333-944444444444";

    fn checkout() -> SourceStep {
        SourceStep::Checkout {
            source: crate::job::JobSource {
                repository: "https://github.com/acme/r.git".to_owned(),
                reference: None,
            },
        }
    }

    fn snapshot() -> SourceStep {
        SourceStep::Snapshot { base: None }
    }

    fn publish() -> SourceStep {
        SourceStep::Publish {
            request: crate::source::PublishRequest {
                job: JOB.parse().unwrap(),
                repository: "https://github.com/acme/r.git".to_owned(),
                base: "a".repeat(40),
                snapshot: "b".repeat(40),
                branch: format!("icarus/{JOB}"),
                message: "Add logging".to_owned(),
                author_name: "Icarus".to_owned(),
                author_email: "icarus@example.com".to_owned(),
                committed_at: crate::job::fixtures::at(0),
            },
        }
    }

    fn with_secret() -> WorkloadSettings {
        let mut settings = settings();
        settings.git_credentials_secret = Some("git-token".to_owned());
        settings
    }

    fn git_pod(step: &SourceStep, settings: &WorkloadSettings) -> PodSpec {
        let pod = source_pod(ObjectMeta::default(), JOB.parse().unwrap(), step, settings);
        pod.spec.unwrap()
    }

    /// `(claim, mount path, read-only)` of each claim the Pod mounts, with
    /// the volume and the mount agreeing on read-only.
    fn claim_mounts(spec: &PodSpec) -> Vec<(String, String, bool)> {
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        spec.volumes
            .clone()
            .unwrap()
            .into_iter()
            .filter_map(|volume| {
                let claim = volume.persistent_volume_claim?;
                let mount = mounts.iter().find(|m| m.name == volume.name).unwrap();
                assert_eq!(claim.read_only, mount.read_only, "{}", volume.name);
                Some((
                    claim.claim_name,
                    mount.mount_path.clone(),
                    mount.read_only.unwrap(),
                ))
            })
            .collect()
    }

    fn has_token(spec: &PodSpec) -> bool {
        let env = spec.containers[0].env.clone().unwrap();
        env.iter().any(|e| e.name == "GITHUB_TOKEN")
    }

    fn command(spec: &PodSpec) -> Vec<String> {
        spec.containers[0].command.clone().unwrap()
    }

    /// The value after `flag` in the command, each time it occurs.
    fn flag_values(command: &[String], flag: &str) -> Vec<String> {
        command
            .windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].clone())
            .collect()
    }

    #[test]
    fn a_jobs_claims_are_named_after_the_job_and_what_they_hold() {
        let id: JobId = JOB.parse().unwrap();
        assert_eq!(
            JobClaim::Workspace.name(id),
            format!("icarus-{JOB}-workspace")
        );
        assert_eq!(
            JobClaim::Repository.name(id),
            format!("icarus-{JOB}-repository")
        );
    }

    #[test]
    fn a_git_pod_runs_icarus_source_step_confined_and_is_told_its_step() {
        let step = snapshot();
        let spec = git_pod(&step, &settings());
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("icarus:latest"));
        let command = command(&spec);
        assert_eq!(command[..2], ["icarus", "source-step"]);
        assert_eq!(flag_values(&command, "--job"), [JOB]);
        assert_eq!(
            flag_values(&command, "--outcome-file"),
            ["/dev/termination-log"]
        );
        let env = container.env.clone().unwrap();
        let step_env = env.iter().find(|e| e.name == SOURCE_STEP_VARIABLE).unwrap();
        let sent: SourceStep = serde_json::from_str(step_env.value.as_deref().unwrap()).unwrap();
        assert_eq!(sent, step);
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.automount_service_account_token, Some(false));
    }

    #[test]
    fn a_git_pod_is_given_the_claims_roots_the_token_hosts_and_the_snapshot_limits() {
        let mut settings = settings();
        settings.token_hosts = vec!["github.com".to_owned(), "git.example.com:8443".to_owned()];
        settings.snapshot_limits = SnapshotLimits {
            max_bytes: 5000,
            max_files: 7,
        };
        let command = command(&git_pod(&checkout(), &settings));
        assert_eq!(
            flag_values(&command, "--workspace-root"),
            ["/claim/workspaces"]
        );
        assert_eq!(
            flag_values(&command, "--repository-root"),
            ["/claim/repositories"]
        );
        assert_eq!(
            flag_values(&command, "--token-host"),
            ["github.com", "git.example.com:8443"]
        );
        assert_eq!(flag_values(&command, "--snapshot-max-bytes"), ["5000"]);
        assert_eq!(flag_values(&command, "--snapshot-max-files"), ["7"]);
    }

    #[test]
    fn the_token_hosts_and_snapshot_limits_come_from_the_configuration() {
        let mut config = Config::embedded_default().unwrap();
        config.publish.token_hosts = vec!["git.example.com".to_owned()];
        config.workspace.snapshot_max_bytes = 1234;
        config.workspace.snapshot_max_files = 56;
        let configured = WorkloadSettings::from_config(&config);
        assert_eq!(configured.token_hosts, ["git.example.com"]);
        assert_eq!(
            configured.snapshot_limits,
            SnapshotLimits {
                max_bytes: 1234,
                max_files: 56
            }
        );
        assert_eq!(settings().token_hosts, ["github.com"], "the forge's host");
    }

    #[test]
    fn a_checkout_pod_writes_the_workspace_and_the_repository() {
        assert_eq!(
            claim_mounts(&git_pod(&checkout(), &settings())),
            [
                (
                    format!("icarus-{JOB}-workspace"),
                    format!("/claim/workspaces/{JOB}"),
                    false
                ),
                (
                    format!("icarus-{JOB}-repository"),
                    format!("/claim/repositories/{JOB}"),
                    false
                ),
            ]
        );
    }

    #[test]
    fn a_snapshot_pod_reads_the_workspace_and_writes_the_repository() {
        assert_eq!(
            claim_mounts(&git_pod(&snapshot(), &settings())),
            [
                (
                    format!("icarus-{JOB}-workspace"),
                    format!("/claim/workspaces/{JOB}"),
                    true
                ),
                (
                    format!("icarus-{JOB}-repository"),
                    format!("/claim/repositories/{JOB}"),
                    false
                ),
            ]
        );
    }

    #[test]
    fn a_publish_pod_mounts_the_repository_and_no_workspace() {
        let spec = git_pod(&publish(), &settings());
        assert_eq!(
            claim_mounts(&spec),
            [(
                format!("icarus-{JOB}-repository"),
                format!("/claim/repositories/{JOB}"),
                false
            )]
        );
        let volumes = spec.volumes.unwrap();
        assert!(
            !volumes.iter().any(|v| v.name == "workspace"),
            "{volumes:?}"
        );
    }

    #[test]
    fn the_git_token_goes_to_checkout_and_publish_pods_and_never_to_a_snapshot_pod() {
        let settings = with_secret();
        assert!(has_token(&git_pod(&checkout(), &settings)));
        assert!(has_token(&git_pod(&publish(), &settings)));
        assert!(!has_token(&git_pod(&snapshot(), &settings)));
    }

    #[test]
    fn the_git_token_comes_from_the_configured_secrets_token_key() {
        let spec = git_pod(&publish(), &with_secret());
        let env = spec.containers[0].env.clone().unwrap();
        let token = env.iter().find(|e| e.name == "GITHUB_TOKEN").unwrap();
        assert_eq!(token.value, None, "never inline");
        let secret = token.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("git-token", "token")
        );
    }

    #[test]
    fn no_git_pod_gets_a_token_when_no_secret_is_configured() {
        for step in [checkout(), snapshot(), publish()] {
            assert!(!has_token(&git_pod(&step, &settings())), "{}", step.name());
        }
    }

    #[test]
    fn no_agent_mounts_the_jobs_repository_claim() {
        for role in [Role::Builder, Role::Checker] {
            let spec = agent_pod(role, 1, &[], &settings()).spec.unwrap();
            let claims: Vec<String> = claim_mounts(&spec).into_iter().map(|(c, _, _)| c).collect();
            assert_eq!(claims, [format!("icarus-{JOB}-workspace")], "{role}");
            let mounts = spec.containers[0].volume_mounts.clone().unwrap();
            let paths: Vec<&str> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
            assert_eq!(paths, ["/workspace", "/tmp"], "{role}");
        }
    }

    #[test]
    fn agents_go_to_any_node_unless_a_node_selector_is_configured() {
        let pod = agent_pod(Role::Builder, 1, &[], &settings());
        assert_eq!(pod.spec.unwrap().node_selector, None);
        let mut dedicated = settings();
        dedicated.node_selector = BTreeMap::from([("pool".to_owned(), "agents".to_owned())]);
        let pod = agent_pod(Role::Checker, 1, &[], &dedicated);
        assert_eq!(
            pod.spec.unwrap().node_selector,
            Some(BTreeMap::from([("pool".to_owned(), "agents".to_owned())]))
        );
    }

    #[test]
    fn the_checker_mounts_the_workspace_claim_read_only_and_the_builder_read_write() {
        for (role, read_only) in [(Role::Builder, false), (Role::Checker, true)] {
            let pod = agent_pod(role, 1, &[], &settings());
            let spec = pod.spec.unwrap();
            let claim = spec.volumes.unwrap()[0]
                .persistent_volume_claim
                .clone()
                .unwrap();
            assert_eq!(claim.claim_name, format!("icarus-{JOB}-workspace"));
            assert_eq!(claim.read_only, Some(read_only), "{role}");
            let mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
            assert_eq!(mount.read_only, Some(read_only), "{role}");
        }
    }

    #[test]
    fn a_pod_requests_its_limits_unless_a_lower_request_is_configured() {
        let pod = agent_pod(Role::Builder, 1, &[], &settings());
        let resources = pod.spec.unwrap().containers[0].resources.clone().unwrap();
        assert_eq!(resources.requests, resources.limits);

        let mut lower = settings();
        lower.builder.cpu_request = Some(0.25);
        lower.builder.memory_request = Some(256 << 20);
        let pod = agent_pod(Role::Builder, 1, &[], &lower);
        let resources = pod.spec.unwrap().containers[0].resources.clone().unwrap();
        let requests = resources.requests.unwrap();
        assert_eq!(requests["cpu"], Quantity("250m".to_owned()));
        assert_eq!(requests["memory"], Quantity((256u64 << 20).to_string()));
        assert_eq!(
            resources.limits.unwrap()["cpu"],
            Quantity("1000m".to_owned())
        );
    }

    #[test]
    fn a_request_above_the_limit_is_held_to_the_limit() {
        let mut greedy = settings();
        greedy.checker.cpu_request = Some(8.0);
        let pod = agent_pod(Role::Checker, 1, &[], &greedy);
        let requests = pod.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(requests["cpu"], Quantity("500m".to_owned()));
    }

    #[test]
    fn every_pod_is_stopped_within_the_configured_grace_not_kubernetes_30_s() {
        let mut settings = settings();
        assert_eq!(settings.termination_grace_seconds, 5, "the default");
        settings.termination_grace_seconds = 2;
        let agent = agent_pod(Role::Builder, 1, &[], &settings).spec.unwrap();
        assert_eq!(agent.termination_grace_period_seconds, Some(2));
        for step in [checkout(), snapshot(), publish()] {
            let git = git_pod(&step, &settings);
            assert_eq!(
                git.termination_grace_period_seconds,
                Some(2),
                "{}",
                step.name()
            );
        }
    }

    #[test]
    fn images_limits_and_the_contract_come_from_the_job_and_the_configuration() {
        let env = [("JOB_ID".to_owned(), "x".to_owned())];
        let pod = agent_pod(Role::Checker, 1, &env, &settings());
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
