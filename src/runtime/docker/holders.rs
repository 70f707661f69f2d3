//! Network holders: each job's agents share one network namespace, held by
//! a container that runs nothing but a pause program, instead of each agent
//! joining the agents' network itself.
//!
//! Why: on a network of its own (anything but Docker's `bridge`), the engine
//! gives every container it attaches an embedded DNS server, set up inside
//! the container's namespace by a re-exec and ten `iptables` calls, and
//! tears it down at exit. Measured on the development machine (Docker
//! 20.10), that made a job on the default network `icarus-agents-{instance}`
//! slower than on `bridge` (1,447 ms against 1,236 ms p50 for builder then
//! checker, raw engine calls); with one holder per job, which the agents
//! join (`network_mode: container:<holder>`, no network set-up of their
//! own), it took 1,186 ms, holder included.
//!
//! Isolation is unchanged: the holder is on the agents' network (isolating,
//! sealed as configured), one per job, so agents of different jobs are
//! still in different namespaces that cannot reach each other, and agents
//! of different orchestrators on different networks. The builder and the
//! checker of one job share a namespace, one after the other. The holder
//! carries `host.docker.internal`, which the agents' `/etc/hosts` is (read
//! only, as their root is).
//!
//! Holders carry the instance's label but no job label, so listing a job's
//! workloads never sees them; they go when their job's last agent is
//! removed, and a holder left behind (a crash in between) is swept by the
//! next [`super::DockerRuntime::owners`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StartContainerOptions,
};

use super::{Sandbox, confinement, is_status};
use crate::job::JobId;
use crate::names::docker::INSTANCE as LABEL_INSTANCE;
use crate::runtime::{Result, RuntimeError};

/// Names the job a holder is for.
pub(super) const HOLDER_OF: &str = "icarus.network-holder-of";

/// A holder's limits: it runs one process that does nothing.
const HOLDER_CPUS: f64 = 0.05;
const HOLDER_MEMORY: u64 = 16 * 1024 * 1024;

/// How old a holder this process ensured must be, with no agent of its
/// job left, before a sweep takes it (one whose agent was never created).
const ABANDONED_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// The holder of `job`'s namespace on `network_mode` (the configured name),
/// named after both so builder and checker on different networks get one each.
pub fn holder_name(job: JobId, network_mode: &str) -> String {
    let hash = network_mode.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("icarus-{job}-net-{hash:08x}")
}

/// The holder of `job`'s namespace: the pause program of `image`, on
/// `network` (the engine's id or name), where agents reach the orchestrator
/// as `host`, confined as agents are. Public so the benchmark's raw path
/// runs the same containers.
pub fn holder_body(
    image: &str,
    instance: &str,
    sandbox: &Sandbox,
    job: JobId,
    network: &str,
    host: &str,
) -> ContainerCreateBody {
    let labels = HashMap::from([
        (HOLDER_OF.to_owned(), job.to_string()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
    ]);
    ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(vec![super::pause_image::PROGRAM_PATH.to_owned()]),
        user: Some(sandbox.user.clone()).filter(|u| !u.is_empty()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            extra_hosts: Some(vec![format!("host.docker.internal:{host}")]),
            mounts: None,
            ..confinement(sandbox, HOLDER_CPUS, HOLDER_MEMORY, network)
        }),
        ..Default::default()
    }
}

/// Makes and starts holders; remembers which it knows to be running.
#[derive(Clone)]
pub(super) struct Holders {
    pub(super) docker: Docker,
    pub(super) image: String,
    pub(super) instance: String,
    pub(super) sandbox: Sandbox,
    /// Holders this process made or found running, by name.
    pub(super) running: Arc<Mutex<HashMap<String, JobId>>>,
}

impl Holders {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, JobId>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the holder `name` of `job` on `network` (the engine's id or
    /// name), where agents reach the orchestrator as `host`, unless it is
    /// known to run; starts it unless it runs.
    pub(super) async fn ensure(
        &self,
        job: JobId,
        name: &str,
        network: &str,
        host: &str,
    ) -> Result<()> {
        if self.running().contains_key(name) {
            return Ok(());
        }
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let body = self.body(job, network, host);
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => {}
            // Made before (by this run or the last): started below if it stopped.
            Err(error) if is_status(&error, 409) => {}
            Err(error) => return Err(RuntimeError::failed("create network holder", error)),
        }
        match self
            .docker
            .start_container(name, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => {}
            Err(error) if is_status(&error, 304) => {}
            Err(error) => return Err(RuntimeError::failed("start network holder", error)),
        }
        self.running().insert(name.to_owned(), job);
        Ok(())
    }

    /// Forgets that `name` runs: the next [`Holders::ensure`] asks the engine.
    pub(super) fn forget(&self, name: &str) {
        self.running().remove(name);
    }

    fn body(&self, job: JobId, network: &str, host: &str) -> ContainerCreateBody {
        holder_body(
            &self.image,
            &self.instance,
            &self.sandbox,
            job,
            network,
            host,
        )
    }

    /// Removes `names` (the holders of a job none of whose agents is left).
    pub(super) async fn remove(&self, names: &[String]) -> Result<()> {
        for name in names {
            self.forget(name);
            let options = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            match self.docker.remove_container(name, Some(options)).await {
                Ok(()) => tracing::debug!(holder = %name, "removed network holder"),
                Err(error) if is_status(&error, 404) || is_status(&error, 409) => {}
                Err(error) => return Err(RuntimeError::failed("remove network holder", error)),
            }
        }
        Ok(())
    }

    /// Of this instance's `containers` (agents and holders), the holders
    /// to sweep: see [`abandoned`].
    pub(super) fn abandoned(&self, containers: &[ContainerSummary]) -> Vec<String> {
        let running = self.running().clone();
        abandoned(
            containers,
            |name| running.contains_key(name),
            chrono::Utc::now().timestamp(),
        )
    }
}

/// The holders among `containers` whose job has no agent left: left behind
/// by a crash, or whose agent was never made. One this process ensured
/// (`ours`) is given a while, since its agent may be about to be created.
fn abandoned(
    containers: &[ContainerSummary],
    ours: impl Fn(&str) -> bool,
    now: i64,
) -> Vec<String> {
    let label = |c: &ContainerSummary, key: &str| {
        c.labels
            .as_ref()
            .and_then(|labels| labels.get(key).cloned())
    };
    let with_agents: Vec<String> = containers
        .iter()
        .filter_map(|c| label(c, crate::names::docker::JOB))
        .collect();
    containers
        .iter()
        .filter(|c| label(c, HOLDER_OF).is_some_and(|job| !with_agents.contains(&job)))
        .filter_map(|c| {
            let name = c
                .names
                .as_ref()?
                .first()?
                .trim_start_matches('/')
                .to_owned();
            let age = now - c.created.unwrap_or(now);
            (!ours(&name) || age > ABANDONED_AFTER.num_seconds()).then_some(name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_named_after_its_job_and_network() {
        let job = JobId::new_random();
        let default = holder_name(job, "icarus-agents-{instance}");
        assert!(default.starts_with(&format!("icarus-{job}-net-")));
        assert_eq!(default, holder_name(job, "icarus-agents-{instance}"));
        assert_ne!(default, holder_name(job, "other-network"));
        assert_ne!(
            default,
            holder_name(JobId::new_random(), "icarus-agents-{instance}")
        );
    }

    fn container(name: &str, labels: &[(&str, String)], created: i64) -> ContainerSummary {
        ContainerSummary {
            names: Some(vec![format!("/{name}")]),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            ),
            created: Some(created),
            ..Default::default()
        }
    }

    #[test]
    fn a_holder_is_swept_once_its_job_has_no_agent_and_this_process_is_not_about_to_use_it() {
        let now = 1_000_000;
        let (busy, idle, fresh, stale) = (
            JobId::new_random(),
            JobId::new_random(),
            JobId::new_random(),
            JobId::new_random(),
        );
        let holder = |job: JobId, created| {
            container(
                &holder_name(job, "n"),
                &[(HOLDER_OF, job.to_string())],
                created,
            )
        };
        let containers = [
            container(
                &format!("icarus-{busy}-builder-1"),
                &[(crate::names::docker::JOB, busy.to_string())],
                now,
            ),
            holder(busy, now - 3600),
            // Left by an earlier run: nobody here is about to use it.
            holder(idle, now),
            // Just ensured here: its agent is being created.
            holder(fresh, now - 5),
            // Ensured here long ago, and still no agent: it never came.
            holder(stale, now - 3600),
        ];
        let ours = [holder_name(fresh, "n"), holder_name(stale, "n")];
        let swept = abandoned(&containers, |name| ours.iter().any(|o| o == name), now);
        assert_eq!(swept, [holder_name(idle, "n"), holder_name(stale, "n")]);
    }
}
