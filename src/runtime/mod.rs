//! Where agents actually run. The controller sees the world only through the
//! [`Runtime`] trait: list a job's workloads, start one, remove one, manage the
//! workspace, and a stream of wake-ups when a workload changes. Adapters carry
//! out actions; they never decide the lifecycle (that is [`crate::job::plan`]).
//!
//! Every operation is idempotent: starting a workload whose deterministic name
//! exists adopts it, removing one that is gone succeeds.

pub mod docker;
pub mod fake;
pub mod kubernetes;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use crate::job::JobId;
use crate::job::workload::{ObservedWorkload, WorkloadKey};

/// What the engine or the API server said, kept as the error's source so
/// that logs print the whole chain (`controller::error_chain`).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image '{0}' is not available to the runtime (nothing is pulled; build it locally)")]
    ImageNotFound(String),
    #[error("the runtime is unreachable ({operation})")]
    Unavailable {
        operation: &'static str,
        #[source]
        source: Cause,
    },
    #[error("{operation} failed")]
    Failed {
        operation: &'static str,
        #[source]
        source: Cause,
    },
}

impl RuntimeError {
    /// An engine call that failed, with what the engine said (an error, or
    /// a sentence where there is none).
    pub fn failed(operation: &'static str, cause: impl Into<Cause>) -> RuntimeError {
        RuntimeError::Failed {
            operation,
            source: cause.into(),
        }
    }

    /// An engine call that never reached the engine.
    pub fn unavailable(operation: &'static str, cause: impl Into<Cause>) -> RuntimeError {
        RuntimeError::Unavailable {
            operation,
            source: cause.into(),
        }
    }

    /// Whether retrying cannot help, so the job should fail instead.
    pub fn is_permanent(&self) -> bool {
        matches!(self, RuntimeError::ImageNotFound(_))
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Everything needed to start one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    pub key: WorkloadKey,
    pub image: String,
    /// `JOB_ID`, `TASK`, `ORCHESTRATOR_CALLBACK` and the role, as the agent contract says.
    pub env: Vec<(String, String)>,
    pub cpu_limit: f64,
    pub memory_limit: u64,
    pub network_mode: String,
    /// The checker audits the workspace; it must not change it.
    pub workspace_read_only: bool,
}

/// The actual state of the world, as seen and changed by the controller.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// A short name for logs and `/readyz` ("docker", "kubernetes", ...).
    fn name(&self) -> &'static str;

    /// Every workload labelled with this job, in any state.
    async fn observe(&self, job: JobId) -> Result<Vec<ObservedWorkload>>;

    /// Creates the job's workspace unless it exists.
    async fn prepare_workspace(&self, job: JobId) -> Result<()>;

    /// Creates and starts the workload, or adopts (and starts) the one that
    /// already has its name. Returns the runtime's id for it.
    async fn start(&self, spec: &WorkloadSpec) -> Result<String>;

    /// Creates the workload without starting it, so that a later `start`
    /// only starts it. Returns false when this runtime cannot create a
    /// workload without starting it (the default); `start` then creates it.
    async fn create_ahead(&self, _spec: &WorkloadSpec) -> Result<bool> {
        Ok(false)
    }

    /// Whether the record the job came from was deleted (Kubernetes: its
    /// IcarusJob), asked when its workloads vanished: the watch that says
    /// so may come after the garbage collector took them.
    async fn owner_gone(&self, _job: JobId) -> Result<bool> {
        Ok(false)
    }

    /// The workload's output so far (stdout and stderr), up to a runtime-defined cap.
    async fn logs(&self, id: &str) -> Result<String>;

    /// Stops and deletes a workload; one already gone is not an error.
    async fn remove(&self, key: WorkloadKey, id: &str) -> Result<()>;

    /// Deletes the job's workspace; one already gone is not an error.
    async fn remove_workspace(&self, job: JobId) -> Result<()>;

    /// An address of this host that agents can reach and the orchestrator
    /// should listen on for callbacks (the container network's gateway), if any.
    async fn agent_gateway(&self) -> Result<Option<std::net::IpAddr>> {
        Ok(None)
    }

    /// Those of `images` the runtime does not have, to warn about at start:
    /// a job that needs one fails when it gets there. Empty if it cannot tell.
    async fn missing_images(&self, _images: &[String]) -> Vec<String> {
        Vec::new()
    }

    /// Jobs that own at least one workload, for collecting what no job owns.
    async fn owners(&self) -> Result<Vec<JobId>>;

    /// A job id each time one of its workloads changes (exits, dies, vanishes).
    /// Wake-ups only: the controller re-observes, so a lost or duplicate one is harmless.
    fn changes(&self) -> BoxStream<'static, JobId>;
}

/// A runtime's wake-ups as the stream [`Runtime::changes`] returns. A
/// subscriber that falls behind loses wake-ups rather than blocking the
/// runtime; the controller's periodic resync makes up for them.
pub fn wake_ups(changes: &broadcast::Sender<JobId>) -> BoxStream<'static, JobId> {
    BroadcastStream::new(changes.subscribe())
        .filter_map(|wake_up| async move { wake_up.ok() })
        .boxed()
}

/// The jobs that own some workloads, each once, in order: what
/// [`Runtime::owners`] returns.
pub fn distinct_jobs(owners: impl IntoIterator<Item = JobId>) -> Vec<JobId> {
    let owners: std::collections::BTreeSet<JobId> = owners.into_iter().collect();
    owners.into_iter().collect()
}

/// Names this orchestrator's agents after its database: whoever holds the
/// jobs owns their agents. FNV-1a, so the name is stable across builds.
pub fn instance_name(database_url: &str) -> String {
    let hash = database_url
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::errors::error_chain;

    #[test]
    fn a_failed_call_keeps_what_the_engine_said_as_its_source() {
        let engine = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no access");
        let error = RuntimeError::failed("create volume", engine);
        assert_eq!(error.to_string(), "create volume failed");
        let source = error.source().expect("the engine's error is kept");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(error_chain(&error), "create volume failed: no access");
        assert!(!error.is_permanent());
    }

    #[test]
    fn an_unreachable_runtime_says_which_call_and_is_retried() {
        let error = RuntimeError::unavailable("list pods", "connection refused");
        assert_eq!(
            error_chain(&error),
            "the runtime is unreachable (list pods): connection refused"
        );
        assert!(!error.is_permanent());
        assert!(RuntimeError::ImageNotFound("agent:1".to_owned()).is_permanent());
    }
}
