//! The git Pods' specifications: what each step's Pod runs, mounts and is
//! given. Assembly only, no I/O; [`super::PodSourceControl`] creates them.
//!
//! Who mounts what is the security model in Kubernetes terms
//! ([`crate::runtime::kubernetes::workloads`] has the agents' half):
//! - every git Pod mounts the job's **repository** claim (the bare Git
//!   repository no agent ever mounts), read-write;
//! - and the **workspace** as its step needs it
//!   ([`SourceStep::workspace_access`]): read-write to check out, read-only
//!   to snapshot, not at all to publish;
//! - the Git token (`kubernetes.git_credentials_secret`) goes to the checkout
//!   Pod (a private source) and the publish Pod (the push), never to the
//!   snapshot Pod, the one step that reads what an agent wrote. The checkout
//!   runs before any agent, on a claim only the orchestrator has written.
//!   Every git Pod is told `publish.token_hosts()` (`--token-host`), and
//!   `icarus source-step` sends the token only there, over HTTPS.
//!
//! The Pod itself is confined as an agent's is (the restricted profile).

use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, Pod, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::Config;
use crate::job::JobId;
use crate::runtime::kubernetes::workloads::{
    ClaimMount, JobClaim, WorkloadSettings, confined_container, confined_pod,
};
use crate::source::SnapshotLimits;
use crate::source::step::{SOURCE_STEP_VARIABLE, SourceStep, WorkspaceAccess};

/// What the git Pods need from the configuration, beside what every Pod
/// does ([`WorkloadSettings`]).
#[derive(Debug, Clone)]
pub struct GitPodSettings {
    /// The image: the orchestrator's own, which has `git` and `icarus`.
    pub git_image: String,
    /// How long one step's Pod may run.
    pub git_timeout_seconds: u64,
    /// A Secret whose `token` key checkout and publish Pods get.
    pub git_credentials_secret: Option<String>,
    /// The hosts git Pods may send the token to (`publish.token_hosts()`).
    pub token_hosts: Vec<String>,
    /// How much of a workspace a snapshot records (`workspace.snapshot_max_*`).
    pub snapshot_limits: SnapshotLimits,
}

impl GitPodSettings {
    /// From `kubernetes.git_*`, `publish.token_hosts()` and
    /// `workspace.snapshot_max_*`.
    pub fn from_config(config: &Config) -> Self {
        GitPodSettings {
            git_image: config.kubernetes.git_image.clone(),
            git_timeout_seconds: config.kubernetes.git_timeout_seconds,
            git_credentials_secret: Some(config.kubernetes.git_credentials_secret.clone())
                .filter(|s| !s.is_empty()),
            token_hosts: config.publish.token_hosts(),
            snapshot_limits: SnapshotLimits {
                max_bytes: config.workspace.snapshot_max_bytes,
                max_files: config.workspace.snapshot_max_files,
            },
        }
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
    pods: &WorkloadSettings,
    settings: &GitPodSettings,
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
            path: format!("{}/{job}", git_root(claim)),
            read_only,
        })
        .collect();
    let spec = confined_pod(container, settings.git_timeout_seconds, &claims, pods);
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// `icarus source-step` for the job, on the claims' roots, with where the
/// token may go and the snapshot's limits; the outcome also goes to the
/// termination message.
fn source_step_command(job: JobId, settings: &GitPodSettings) -> Vec<String> {
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

/// Where a git Pod mounts the claim: `<root>/<job id>`, the layout
/// `icarus source-step` is given (`--workspace-root`, `--repository-root`).
fn git_root(claim: JobClaim) -> &'static str {
    match claim {
        JobClaim::Workspace => GIT_WORKSPACE_ROOT,
        JobClaim::Repository => GIT_REPOSITORY_ROOT,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;
    use crate::runtime::kubernetes::workloads::tests::claim_mounts;

    /// What every Pod is given, as configured by default.
    fn pods() -> WorkloadSettings {
        WorkloadSettings::from_config(&Config::embedded_default().unwrap())
    }

    fn settings() -> GitPodSettings {
        GitPodSettings::from_config(&Config::embedded_default().unwrap())
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

    fn with_secret() -> GitPodSettings {
        let mut settings = settings();
        settings.git_credentials_secret = Some("git-token".to_owned());
        settings
    }

    fn git_pod(step: &SourceStep, settings: &GitPodSettings) -> PodSpec {
        let job = JOB.parse().unwrap();
        let pod = source_pod(ObjectMeta::default(), job, step, &pods(), settings);
        pod.spec.unwrap()
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
        let configured = GitPodSettings::from_config(&config);
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
    fn every_git_pod_is_stopped_within_the_configured_grace() {
        let mut pods = pods();
        pods.termination_grace_seconds = 2;
        for step in [checkout(), snapshot(), publish()] {
            let job = JOB.parse().unwrap();
            let pod = source_pod(ObjectMeta::default(), job, &step, &pods, &settings());
            let spec = pod.spec.unwrap();
            assert_eq!(
                spec.termination_grace_period_seconds,
                Some(2),
                "{}",
                step.name()
            );
        }
    }
}
