//! The Kubernetes objects a job's agents run on: two PersistentVolumeClaims
//! (its workspace and its repository) and one Pod per agent and attempt,
//! confined the way every Pod of Icarus is (the git Pods' own specs are in
//! [`crate::source::pods`], built from the same confinement). Assembly only,
//! no I/O: the controller decides when each is created.
//!
//! Who mounts what is the security model (README "Security model") in
//! Kubernetes terms. The workspace is hostile once an agent has run; the
//! Git metadata must never be reachable from it:
//! - the **workspace** claim is the agents': the builder writes it, the
//!   checker only reads it;
//! - the **repository** claim (the job's bare Git repository) is the
//!   orchestrator's: only git Pods mount it, never an agent;
//! - what each git Pod mounts, and which get the Git token, is in
//!   [`crate::source::pods`].
//!
//! Every object is owned by its IcarusJob (deleting the job deletes them),
//! labelled like local mode's containers, and each Pod passes the Pod
//! Security "restricted" profile: non-root, no privilege escalation, every
//! capability dropped, the runtime's default seccomp profile.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::AgentConfig;
use crate::job::{JobId, Role};

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
    /// SIGTERM → SIGKILL for every Pod (`kubernetes.termination_grace_seconds`).
    pub termination_grace_seconds: u64,
}

impl WorkloadSettings {
    /// From the configuration: `agents.<role>.*`, `kubernetes.*` and
    /// `agents.user`'s uid (never root: the restricted profile forbids it).
    pub fn from_config(config: &crate::config::Config) -> Self {
        WorkloadSettings {
            builder: config.agents.builder.clone(),
            checker: config.agents.checker.clone(),
            workspace_size: config.kubernetes.workspace_size.clone(),
            storage_class: Some(config.kubernetes.storage_class.clone()).filter(|s| !s.is_empty()),
            run_as_user: run_as_user(&config.agents.user),
            node_selector: config.kubernetes.node_selector.clone(),
            termination_grace_seconds: config.kubernetes.termination_grace_seconds,
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

/// No privilege, no capability, a read-only root: what the restricted profile asks and more.
pub(crate) fn confined_container() -> SecurityContext {
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
pub(crate) struct ClaimMount {
    pub claim: JobClaim,
    pub claim_name: String,
    pub path: String,
    pub read_only: bool,
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
pub(crate) fn confined_pod(
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
pub(crate) mod tests {
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

    /// `(claim, mount path, read-only)` of each claim the Pod mounts, with
    /// the volume and the mount agreeing on read-only (the git Pods' tests
    /// use it too).
    pub(crate) fn claim_mounts(spec: &PodSpec) -> Vec<(String, String, bool)> {
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
    fn every_agent_pod_is_stopped_within_the_configured_grace_not_kubernetes_30_s() {
        let mut settings = settings();
        assert_eq!(settings.termination_grace_seconds, 5, "the default");
        settings.termination_grace_seconds = 2;
        let agent = agent_pod(Role::Builder, 1, &[], &settings).spec.unwrap();
        assert_eq!(agent.termination_grace_period_seconds, Some(2));
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
