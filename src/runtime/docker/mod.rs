//! `DockerRuntime`: agents as containers on the local Docker engine (bollard).
//!
//! Containers are named `icarus-<job>-<role>-<attempt>` and labelled with the
//! job, role, attempt and this orchestrator's instance, so a restart finds
//! (and adopts) what the previous run created and never starts one twice, and
//! two orchestrators sharing an engine never collect each other's agents.
//! The workspace is a directory (`bind`) or a named volume (`volume`) per job,
//! mounted at `/workspace`, read-only for the checker. Nothing is pulled:
//! there may be no registry, so a missing image is a permanent error.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, Mount,
    MountType as EngineMountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StartContainerOptions,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

mod cgroups;
mod disk;
mod events;
mod follow;
mod holders;
mod networks;
mod pause_image;
mod stats;

use crate::names::docker::{
    ATTEMPT as LABEL_ATTEMPT, INSTANCE as LABEL_INSTANCE, JOB as LABEL_JOB, ROLE as LABEL_ROLE,
};
use events::{EventFollower, Exits};
use holders::Holders;
pub use holders::{holder_body, holder_name};
pub use networks::ISOLATING_OPTION;
use networks::{ensure_network, network_gateway};
pub use pause_image::ensure as ensure_holder_image;

use super::{Cause, Result, Runtime, RuntimeError, WorkloadSpec};
use crate::config::MountType;
use crate::job::JobId;
use crate::job::workload::{ObservedWorkload, Role, WorkloadKey, WorkloadState};

const WORKSPACE_MOUNT: &str = "/workspace";
/// How much of an agent's output is kept when its container is removed.
const KEPT_LOG_LINES: usize = 10_000;
const KEPT_LOG_BYTES: usize = 1024 * 1024;
/// How much of a failed agent's output goes into the job's error message.
const LOG_TAIL_LINES: usize = 20;
/// How often one start is asked of the engine before it counts as failed.
const START_TRIES: u32 = 3;
/// The wait before the second try; the third waits twice as long.
const START_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// Where workspaces live and whose agents these are.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    pub mount_type: MountType,
    /// Parent directory of `bind` workspaces; made absolute at connect.
    pub base_path: PathBuf,
    /// Distinguishes this orchestrator's agents from another's on the same engine.
    pub instance: String,
    /// The network whose gateway agents call back through (the builder's `network_mode`).
    pub network: String,
    /// Networks agents join that Icarus creates when missing (not Docker's
    /// own `bridge`, `host`, `none`).
    pub managed_networks: Vec<String>,
    /// Whether those networks must have no route out (`internal`): agents
    /// then reach the gateway (callback, egress proxy) and nothing beyond.
    pub sealed_networks: bool,
    pub sandbox: Sandbox,
    /// Where this host shows the engine's cgroup tree, to read containers'
    /// usage from their files; `None`, or a container not found there: the
    /// engine's stats API.
    pub cgroup_root: Option<PathBuf>,
}

/// How tightly agents are confined, beyond CPU and memory limits.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// `uid:gid` agents run as; empty: the image's own user.
    pub user: String,
    /// Most processes an agent may have (a fork bomb stops there).
    pub pids_limit: i64,
}

/// The limits and confinement of one agent container (everything of its
/// host configuration but its mounts and host names). Public so the
/// benchmark's raw path confines its containers exactly the same way.
pub fn confinement(sandbox: &Sandbox, cpus: f64, memory: u64, network: &str) -> HostConfig {
    let memory = i64::try_from(memory).unwrap_or(i64::MAX);
    HostConfig {
        nano_cpus: Some((cpus * 1e9) as i64),
        memory: Some(memory),
        memory_swap: Some(memory),
        pids_limit: Some(sandbox.pids_limit),
        network_mode: Some(network.to_owned()),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
        readonly_rootfs: Some(true),
        mounts: Some(vec![private_tmp(HashMap::new())]),
        ..Default::default()
    }
}

/// The agent's `/tmp`: 64 MiB of memory, mode 1777 whatever the image's own
/// `/tmp` is. Not a plain tmpfs mount: the engine gives one the mode of the
/// image's directory (often 0755, root's), which an unprivileged agent
/// cannot write. An anonymous local volume of type tmpfs, created empty
/// (`NoCopy`), takes the mode asked; it goes with its container (`remove`
/// deletes anonymous volumes), and `labels` say whose it is.
pub fn private_tmp(labels: HashMap<String, String>) -> Mount {
    let tmpfs = HashMap::from([
        ("type".to_owned(), "tmpfs".to_owned()),
        ("device".to_owned(), "tmpfs".to_owned()),
        ("o".to_owned(), "size=64m,mode=1777,nosuid,nodev".to_owned()),
    ]);
    Mount {
        target: Some("/tmp".to_owned()),
        typ: Some(EngineMountType::VOLUME),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            labels: Some(labels).filter(|labels| !labels.is_empty()),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some("local".to_owned()),
                options: Some(tmpfs),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Docker's built-in network modes, which are never created.
/// What `network_mode` names on the engine: `{instance}` in it stands for
/// this orchestrator's instance (its database's name), so the default
/// (`icarus-agents-{instance}`) gives every orchestrator a network of its
/// own, shared by its replicas and kept across its restarts.
pub fn engine_network_name(network_mode: &str, instance: &str) -> String {
    network_mode.replace(INSTANCE_PLACEHOLDER, instance)
}

/// Stands for the orchestrator's instance in `agents.<role>.network_mode`.
pub const INSTANCE_PLACEHOLDER: &str = "{instance}";

pub fn is_builtin_network(mode: &str) -> bool {
    matches!(mode, "bridge" | "host" | "none" | "default") || mode.starts_with("container:")
}

/// The Docker engine as a [`Runtime`]. Cheap to clone.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    settings: Arc<DockerSettings>,
    /// The agents' network gateway: where the orchestrator's callback
    /// listener is, and what `host.docker.internal` means to agents.
    gateway: Option<IpAddr>,
    /// The ids of the networks Icarus manages, by name.
    network_ids: HashMap<String, String>,
    changes: broadcast::Sender<JobId>,
    /// Exits the event stream reported, by container id: an observation
    /// then needs no inspect of each exited container.
    exits: Exits,
    /// The network holders agents on a network of their own join; `None`
    /// where the engine has no holder image (then agents join the network).
    holders: Option<Holders>,
    /// Containers an observation just found created and never started, by
    /// name: a start soon after starts them by id at once.
    never_started: NeverStarted,
    /// Stops the event follower when the last clone is dropped.
    _follower: Arc<DropGuard>,
}

impl DockerRuntime {
    /// Connects to the engine (`DOCKER_HOST` or the local socket) and checks it answers.
    pub async fn connect(mut settings: DockerSettings) -> Result<DockerRuntime> {
        let docker = Docker::connect_with_defaults().map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        if settings.base_path.is_relative() {
            let cwd = std::env::current_dir().map_err(|e| failed("resolve workspace path", e))?;
            settings.base_path = cwd.join(&settings.base_path);
        }
        let mut network_ids = HashMap::new();
        for network in &settings.managed_networks {
            let on_the_engine = engine_network_name(network, &settings.instance);
            let id = ensure_network(&docker, &on_the_engine, settings.sealed_networks).await?;
            network_ids.insert(network.clone(), id);
        }
        let gateway_network = network_ids
            .get(&settings.network)
            .unwrap_or(&settings.network);
        let gateway = match network_gateway(&docker, gateway_network).await {
            Ok(gateway) => gateway,
            Err(error) => {
                tracing::warn!(%error, "no gateway for the agents' network");
                None
            }
        };
        let holders = match pause_image::ensure(&docker).await {
            Ok(image) => image.map(|image| Holders {
                docker: docker.clone(),
                image,
                instance: settings.instance.clone(),
                sandbox: settings.sandbox.clone(),
                running: Arc::default(),
            }),
            Err(error) => {
                tracing::warn!(%error, "no network holders: agents join their network themselves");
                None
            }
        };
        let (changes, _) = broadcast::channel(1024);
        let exits = Exits::default();
        let stop = CancellationToken::new();
        let follower = EventFollower {
            docker: docker.clone(),
            instance: settings.instance.clone(),
            changes: changes.clone(),
            exits: exits.clone(),
        };
        tokio::spawn(follower.run(stop.clone()));
        Ok(DockerRuntime {
            docker,
            gateway,
            network_ids,
            settings: Arc::new(settings),
            changes,
            exits,
            holders,
            never_started: NeverStarted::default(),
            _follower: Arc::new(stop.drop_guard()),
        })
    }

    /// The last `lines` lines of a container's output (stdout and stderr).
    pub async fn logs_tail(&self, id: &str, lines: usize) -> Result<String> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut output = self.docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(chunk) => text.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
                Err(error) if is_status(&error, 404) => break,
                Err(error) => return Err(failed("read logs", error)),
            }
        }
        Ok(text)
    }

    fn workspace_path(&self, job: JobId) -> PathBuf {
        self.settings.base_path.join(job.to_string())
    }

    /// The `binds` entry that mounts the job's workspace.
    fn workspace_bind(&self, job: JobId, read_only: bool) -> String {
        let source = match self.settings.mount_type {
            MountType::Bind => self.workspace_path(job).display().to_string(),
            MountType::Volume => volume_name(job),
        };
        let mode = if read_only { ":ro" } else { "" };
        format!("{source}:{WORKSPACE_MOUNT}{mode}")
    }

    fn labels(&self, key: WorkloadKey) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_JOB.to_owned(), key.job.to_string()),
            (LABEL_ROLE.to_owned(), key.role.to_string()),
            (LABEL_ATTEMPT.to_owned(), key.attempt.to_string()),
            (LABEL_INSTANCE.to_owned(), self.settings.instance.clone()),
        ])
    }

    /// An agent runs untrusted, model-written code: it gets no capability,
    /// cannot gain privileges, runs as an unprivileged user on a read-only
    /// root with a small private `/tmp`, with a process limit, and sees no
    /// host path but its workspace.
    fn container_body(&self, spec: &WorkloadSpec) -> ContainerCreateBody {
        let sandbox = &self.settings.sandbox;
        // On its job's holder, an agent has the holder's network and hosts.
        let (network, extra_hosts) = match self.holder_of(spec) {
            Some(holder) => (format!("container:{holder}"), None),
            None => (
                self.engine_network(spec).to_owned(),
                Some(vec![format!(
                    "host.docker.internal:{}",
                    self.host_gateway()
                )]),
            ),
        };
        let host_config = HostConfig {
            binds: Some(vec![
                self.workspace_bind(spec.key.job, spec.workspace_read_only),
            ]),
            extra_hosts,
            mounts: Some(vec![private_tmp(HashMap::from([
                (LABEL_JOB.to_owned(), spec.key.job.to_string()),
                (LABEL_INSTANCE.to_owned(), self.settings.instance.clone()),
            ]))]),
            ..confinement(sandbox, spec.cpu_limit, spec.memory_limit, &network)
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: Some(sandbox.user.clone()).filter(|u| !u.is_empty()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(self.labels(spec.key)),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// What agents reach the orchestrator on the host as (`host.docker.internal`).
    fn host_gateway(&self) -> String {
        self.gateway
            .map_or("host-gateway".to_owned(), |gateway| gateway.to_string())
    }

    /// The network `spec` asks for as the engine knows it (a managed one by id).
    fn engine_network<'a>(&'a self, spec: &'a WorkloadSpec) -> &'a str {
        self.network_ids
            .get(&spec.network_mode)
            .unwrap_or(&spec.network_mode)
    }

    /// The holder whose namespace `spec`'s agent joins, if it joins one:
    /// on a network of its own (not Docker's built-in modes), where holders exist.
    fn holder_of(&self, spec: &WorkloadSpec) -> Option<String> {
        self.holders.as_ref()?;
        (!is_builtin_network(&spec.network_mode))
            .then(|| holder_name(spec.key.job, &spec.network_mode))
    }

    /// Makes sure the holder `spec`'s agent joins runs, if it joins one.
    async fn ensure_holder(&self, spec: &WorkloadSpec) -> Result<()> {
        let (Some(holders), Some(name)) = (&self.holders, self.holder_of(spec)) else {
            return Ok(());
        };
        holders
            .ensure(
                spec.key.job,
                &name,
                self.engine_network(spec),
                &self.host_gateway(),
            )
            .await
    }

    /// Removes `job`'s holders once none of its agents is left.
    async fn release_holders(&self, job: JobId) -> Result<()> {
        let Some(holders) = &self.holders else {
            return Ok(());
        };
        if !self.list(format!("{LABEL_JOB}={job}")).await?.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self
            .settings
            .managed_networks
            .iter()
            .map(|network| holder_name(job, network))
            .collect();
        holders.remove(&names).await
    }

    /// Starts `id`, which the last observation found created (a checker
    /// created ahead), without first asking the engine who has its name:
    /// the hand-over from builder to checker is then one engine call. Any
    /// failure is left to the full path (create, adopt, start, with retries).
    async fn start_seen(&self, id: &str, spec: &WorkloadSpec) -> bool {
        if self.ensure_holder(spec).await.is_err() {
            return false;
        }
        tracing::debug!(container = %spec.key.name(), "start call");
        let started = self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await;
        started.is_ok() || started.is_err_and(|error| is_status(&error, 304))
    }

    /// Starts a created container. A start can fail for a passing reason
    /// (two networks of one name while a duplicate is removed, an engine
    /// slow under load), so the call is made again a few times, a moment
    /// apart, before the failure is reported — and the planner spends an
    /// attempt on it.
    async fn start_container(&self, id: &str, spec: &WorkloadSpec) -> Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            self.ensure_holder(spec).await?;
            tracing::debug!(container = %spec.key.name(), "start call");
            match self
                .docker
                .start_container(id, None::<StartContainerOptions>)
                .await
            {
                Ok(()) => return Ok(()),
                Err(error) if is_status(&error, 304) => return Ok(()),
                Err(error) if tries < START_TRIES => {
                    tracing::debug!(container = %id, tries, %error, "start failed; trying again");
                    // Its holder may have gone: the next try asks the engine.
                    if let (Some(holders), Some(holder)) = (&self.holders, self.holder_of(spec)) {
                        holders.forget(&holder);
                    }
                    tokio::time::sleep(START_RETRY_DELAY * tries).await;
                }
                Err(error) => return Err(failed("start container", error)),
            }
        }
    }

    /// The id of the container named `name`, and whether it was never started.
    async fn existing(&self, name: &str) -> Result<(String, bool)> {
        let inspected = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| failed("inspect container", e))?;
        let never_started = inspected
            .state
            .and_then(|s| s.status)
            .is_some_and(|status| status.to_string() == "created");
        Ok((
            inspected.id.unwrap_or_else(|| name.to_owned()),
            never_started,
        ))
    }

    /// How an exited container ended, and when (the engine's `FinishedAt`).
    async fn exited_state(
        &self,
        id: &str,
    ) -> Result<Option<(WorkloadState, Option<DateTime<Utc>>)>> {
        let inspected = match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(error) if is_status(&error, 404) => return Ok(None),
            Err(error) => return Err(failed("inspect container", error)),
        };
        let state = inspected.state.unwrap_or_default();
        let finished_at = state
            .finished_at
            .as_deref()
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc))
            // The engine's zero time: never finished.
            .filter(|at| at.timestamp() > 0);
        let exited = WorkloadState::Exited {
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
        };
        Ok(Some((exited, finished_at)))
    }

    async fn list(&self, label: String) -> Result<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([("label".to_owned(), vec![label])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("list containers", e))
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn observe(&self, job: JobId) -> Result<Vec<ObservedWorkload>> {
        let mut observed = Vec::new();
        for container in self.list(format!("{LABEL_JOB}={job}")).await? {
            let labels = container.labels.unwrap_or_default();
            let (Some(role), Some(attempt), Some(id)) = (
                labels.get(LABEL_ROLE).and_then(|r| Role::parse(r)),
                labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok()),
                container.id,
            ) else {
                continue;
            };
            let (state, finished_at) = match container.state {
                _ if self.exits.get(&id).is_some() => self.exits.get(&id).unzip(),
                Some(ContainerSummaryStateEnum::CREATED) => {
                    let key = WorkloadKey { job, role, attempt };
                    self.never_started.saw(key.name(), &id);
                    (Some(WorkloadState::Created), None)
                }
                Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD) => {
                    self.exited_state(&id).await?.unzip()
                }
                // Being removed on our own request: as good as gone.
                Some(ContainerSummaryStateEnum::REMOVING) => (None, None),
                _ => (Some(WorkloadState::Running), None),
            };
            if let Some(state) = state {
                let log_tail = match state {
                    WorkloadState::Exited {
                        exit_code,
                        oom_killed,
                    } if exit_code != 0 || oom_killed => {
                        self.logs_tail(&id, LOG_TAIL_LINES).await.ok()
                    }
                    _ => None,
                };
                observed.push(ObservedWorkload {
                    role,
                    attempt,
                    id,
                    state,
                    log_tail,
                    finished_at: finished_at.flatten(),
                });
            }
        }
        Ok(observed)
    }

    async fn prepare_workspace(&self, job: JobId) -> Result<()> {
        match self.settings.mount_type {
            MountType::Bind => {
                let path = self.workspace_path(job);
                tokio::fs::create_dir_all(&path)
                    .await
                    .map_err(|e| failed("create workspace directory", e))?;
                // Agent images may run as any user; the directory is theirs.
                let writable = std::fs::Permissions::from_mode(0o777);
                tokio::fs::set_permissions(&path, writable)
                    .await
                    .map_err(|e| failed("open up workspace directory", e))
            }
            MountType::Volume => {
                let labels = HashMap::from([
                    (LABEL_JOB.to_owned(), job.to_string()),
                    (LABEL_INSTANCE.to_owned(), self.settings.instance.clone()),
                ]);
                let request = VolumeCreateRequest {
                    name: Some(volume_name(job)),
                    labels: Some(labels),
                    ..Default::default()
                };
                // Creating an existing volume with the same name succeeds.
                let volume = self
                    .docker
                    .create_volume(request)
                    .await
                    .map_err(|e| failed("create volume", e))?;
                open_volume_to_agents(&volume.mountpoint).await;
                Ok(())
            }
        }
    }

    async fn start(&self, spec: &WorkloadSpec) -> Result<String> {
        let name = spec.key.name();
        if let Some(id) = self.never_started.take(&name)
            && self.start_seen(&id, spec).await
        {
            return Ok(id);
        }
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        // The holder (on the first agent of a job) is made while the agent is.
        let (created, _) = tokio::join!(
            self.docker
                .create_container(Some(options), self.container_body(spec)),
            self.ensure_holder(spec)
        );
        let (id, needs_start) = match created {
            Ok(created) => (created.id, true),
            // The name exists: a previous run created it. Adopt it, and start
            // it only if it never ran, so a finished agent is never rerun.
            Err(error) if is_status(&error, 409) => self.existing(&name).await?,
            // No agent came of it: a holder made for it alone goes again.
            Err(error) if is_status(&error, 404) => {
                self.release_holders(spec.key.job).await?;
                return Err(RuntimeError::ImageNotFound(spec.image.clone()));
            }
            Err(error) => {
                self.release_holders(spec.key.job).await?;
                return Err(create_failed(error));
            }
        };
        tracing::debug!(container = %id, needs_start, "created or adopted");
        if needs_start {
            self.start_container(&id, spec).await?;
        }
        Ok(id)
    }

    async fn create_ahead(&self, spec: &WorkloadSpec) -> Result<bool> {
        let name = spec.key.name();
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        match self
            .docker
            .create_container(Some(options), self.container_body(spec))
            .await
        {
            // A start soon after starts it by id at once.
            Ok(created) => {
                self.never_started.saw(name, &created.id);
                Ok(true)
            }
            // 409: it exists already, which is all this asked for.
            Err(error) if is_status(&error, 409) => Ok(true),
            Err(error) if is_status(&error, 404) => {
                Err(RuntimeError::ImageNotFound(spec.image.clone()))
            }
            Err(error) => Err(create_failed(error)),
        }
    }

    async fn logs(&self, id: &str) -> Result<String> {
        let log = self.logs_tail(id, KEPT_LOG_LINES).await?;
        Ok(keep_end(log, KEPT_LOG_BYTES))
    }

    fn follow_logs(
        &self,
        id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Option<BoxStream<'static, Result<crate::runtime::LogChunk>>> {
        Some(follow::follow(&self.docker, id, since))
    }

    async fn usage(&self, id: &str) -> Result<Option<crate::runtime::Usage>> {
        if let Some(root) = &self.settings.cgroup_root
            && let Some(usage) = cgroups::usage(root, id).await
        {
            return Ok(Some(usage));
        }
        self.one_shot_usage(id).await
    }

    async fn remove(&self, key: WorkloadKey, id: &str) -> Result<()> {
        // `v`: its anonymous volumes (the private `/tmp`) go with it.
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => {}
            // Gone already, or its removal is already under way.
            Err(error) if is_status(&error, 404) || is_status(&error, 409) => {}
            Err(error) => return Err(failed("remove container", error)),
        }
        self.release_holders(key.job).await
    }

    async fn workspace_usage(&self) -> Result<Vec<(JobId, u64)>> {
        // Volumes are the engine's to measure (`docker system df`), at a
        // cost; only directories are walked.
        if self.settings.mount_type != MountType::Bind {
            return Ok(Vec::new());
        }
        let base = self.settings.base_path.clone();
        tokio::task::spawn_blocking(move || disk::workspace_usage(&base))
            .await
            .map_err(|error| failed("measure workspaces", error))?
            .map_err(|error| failed("measure workspaces", error))
    }

    async fn remove_workspace(&self, job: JobId) -> Result<()> {
        match self.settings.mount_type {
            MountType::Bind => match tokio::fs::remove_dir_all(self.workspace_path(job)).await {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(failed("remove workspace directory", error))
                }
                _ => Ok(()),
            },
            MountType::Volume => {
                match self
                    .docker
                    .remove_volume(&volume_name(job), None::<RemoveVolumeOptions>)
                    .await
                {
                    Err(error) if !is_status(&error, 404) => Err(failed("remove volume", error)),
                    _ => Ok(()),
                }
            }
        }
    }

    async fn agent_gateway(&self) -> Result<Option<IpAddr>> {
        Ok(self.gateway)
    }

    async fn missing_images(&self, images: &[String]) -> Vec<String> {
        let mut missing = Vec::new();
        for image in images {
            if let Err(error) = self.docker.inspect_image(image).await
                && is_status(&error, 404)
            {
                missing.push(image.clone());
            }
        }
        missing
    }

    async fn owners(&self) -> Result<Vec<JobId>> {
        let containers = self
            .list(format!("{LABEL_INSTANCE}={}", self.settings.instance))
            .await?;
        if let Some(holders) = &self.holders {
            let abandoned = holders.abandoned(&containers);
            if let Err(error) = holders.remove(&abandoned).await {
                tracing::warn!(%error, "could not remove abandoned network holders");
            }
        }
        Ok(super::distinct_jobs(
            containers
                .into_iter()
                .filter_map(|c| c.labels?.get(LABEL_JOB)?.parse().ok()),
        ))
    }

    fn changes(&self) -> BoxStream<'static, JobId> {
        super::wake_ups(&self.changes)
    }
}

/// How long an observation that a container was created and never
/// started is trusted by a start: about one reconcile.
const NEVER_STARTED_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Containers observed created and never started, by name, with their id.
#[derive(Clone, Default)]
struct NeverStarted(Arc<std::sync::Mutex<HashMap<String, (String, std::time::Instant)>>>);

impl NeverStarted {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, std::time::Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn saw(&self, name: String, id: &str) {
        let mut map = self.map();
        map.retain(|_, (_, seen)| seen.elapsed() < NEVER_STARTED_FOR);
        map.insert(name, (id.to_owned(), std::time::Instant::now()));
    }

    /// The id of `name` if it was seen never started just now; forgotten either way.
    fn take(&self, name: &str) -> Option<String> {
        let (id, seen) = self.map().remove(name)?;
        (seen.elapsed() < NEVER_STARTED_FOR).then_some(id)
    }
}

/// A new local volume is root's, mode 0755, unless the agent image carries
/// a permissive `/workspace` for Docker to copy: agents running
/// unprivileged could not write. When the engine is on this host and we may,
/// open the volume's directory like a bind workspace; otherwise say so.
async fn open_volume_to_agents(mountpoint: &str) {
    let writable = std::fs::Permissions::from_mode(0o777);
    if let Err(error) = tokio::fs::set_permissions(mountpoint, writable).await {
        tracing::warn!(
            %mountpoint, %error,
            "cannot open the volume to unprivileged agents; images without a writable /workspace may fail"
        );
    }
}

/// The last `limit` bytes of `text` (cut at a character boundary).
fn keep_end(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

fn volume_name(job: JobId) -> String {
    crate::names::workspace(job)
}

/// A refused creation is the engine's verdict on the specification (400:
/// "No command specified"), which no retry changes; anything else may pass.
fn create_failed(error: DockerError) -> RuntimeError {
    match error {
        DockerError::DockerResponseServerError {
            status_code: 400,
            message,
        } => RuntimeError::Refused {
            operation: "create container",
            message,
        },
        other => failed("create container", other),
    }
}

fn is_status(error: &DockerError, code: u16) -> bool {
    matches!(error, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

fn unavailable(error: DockerError) -> RuntimeError {
    RuntimeError::unavailable("connect to the Docker engine", error)
}

fn failed(operation: &'static str, error: impl Into<Cause>) -> RuntimeError {
    RuntimeError::failed(operation, error)
}
