//! Local mode's composition root: agents as Docker containers, state in SQL,
//! git on this host.
//!
//! Replicas: several `icarus serve` on one PostgreSQL each serve the API and
//! campaign for the lease in the database; the holder reconciles (see
//! [`crate::leadership`]). A SQLite file serves one process, which leads
//! alone; a second `icarus serve` on it refuses to start.

use std::sync::Arc;

use super::{Orchestrator, Parts, ServerError};
use crate::config::{Config, MountType};
use crate::leadership::Election;
use crate::runtime::{Runtime, RuntimeError};
use crate::source::{GitLayout, LocalGit, RemoteCredentials, SnapshotLimits, SourceControl};

/// Connects to the container engine and starts the orchestrator on it.
pub async fn start(config: &Config) -> anyhow::Result<Orchestrator> {
    let runtime = docker_runtime(config).await?;
    Ok(start_on(config, runtime).await?)
}

/// Local mode's runtime: the Docker engine, with agents named after the
/// database (whoever holds the jobs owns their agents).
pub async fn docker_runtime(config: &Config) -> Result<Arc<dyn Runtime>, RuntimeError> {
    let agents = &config.agents;
    let mut managed_networks: Vec<String> = [&agents.builder, &agents.checker]
        .iter()
        .map(|agent| agent.network_mode.clone())
        .filter(|mode| !crate::runtime::docker::is_builtin_network(mode))
        .collect();
    managed_networks.dedup();
    let settings = crate::runtime::docker::DockerSettings {
        mount_type: config.workspace.mount_type,
        base_path: config.workspace.base_path.clone(),
        instance: crate::runtime::instance_name(&config.database.url),
        network: agents.builder.network_mode.clone(),
        managed_networks,
        sealed_networks: agents.egress.mode.seals_the_network(),
        sandbox: crate::runtime::docker::Sandbox {
            user: agents.user.clone(),
            pids_limit: i64::from(agents.pids_limit),
        },
        cgroup_root: Some(&agents.usage_cgroup_root)
            .filter(|root| !root.as_os_str().is_empty())
            .cloned(),
    };
    Ok(Arc::new(
        crate::runtime::docker::DockerRuntime::connect(settings).await?,
    ))
}

/// Starts the orchestrator on `runtime` (tests give a fake or a shared one).
pub async fn start_on(
    config: &Config,
    runtime: Arc<dyn Runtime>,
) -> Result<Orchestrator, ServerError> {
    Orchestrator::start(config, Parts::local(config, runtime)).await
}

/// Who reconciles: on PostgreSQL, whichever replica holds the lease in it;
/// on SQLite, this process alone.
pub fn election(config: &Config) -> Election {
    if config.database.url.starts_with("sqlite:") {
        Election::Sole
    } else {
        Election::StoreLease(super::lease_timing(config))
    }
}

/// Git on this host, for workspaces that are host directories (`bind`).
pub fn source_control(config: &Config) -> Arc<dyn SourceControl> {
    let workspace = &config.workspace;
    let layout = GitLayout::new(workspace.base_path.clone(), workspace.repositories_path());
    let credentials = RemoteCredentials::new(config.publish.token(), config.publish.token_hosts());
    let limits = SnapshotLimits {
        max_bytes: workspace.snapshot_max_bytes,
        max_files: workspace.snapshot_max_files,
    };
    Arc::new(
        LocalGit::new(layout, workspace.mount_type == MountType::Bind, credentials)
            .with_limits(limits),
    )
}
