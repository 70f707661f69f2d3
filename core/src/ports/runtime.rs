//! The runtime port: where agents actually run. The controller sees the
//! world only through [`Runtime`]: list a job's workloads, start one, remove
//! one, manage the workspace, and a stream of wake-ups when a workload
//! changes. Adapters (Docker, Pods, an in-memory fake) carry out actions;
//! they never decide the lifecycle (that is [`crate::job::plan`]).
//!
//! Every operation is idempotent: starting a workload whose deterministic name
//! exists adopts it, removing one that is gone succeeds.

use async_trait::async_trait;
use futures_core::stream::BoxStream;

use chrono::{DateTime, Utc};

use crate::job::JobId;
use crate::job::workload::{ObservedWorkload, WorkloadKey};
use crate::logs::LogStream;

/// What the engine or the API server said, kept as the error's source so
/// that logs print the whole chain (the orchestrator's `error_chain`).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image '{0}' is not available to the runtime (nothing is pulled; build it locally)")]
    ImageNotFound(String),
    /// The runtime refused the workload as specified (an image without a
    /// command, a configuration the engine rejects): asking again cannot
    /// help. The message is the runtime's own words.
    #[error("the runtime refused to {operation}: {message}")]
    Refused {
        operation: &'static str,
        message: String,
    },
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
        matches!(
            self,
            RuntimeError::ImageNotFound(_) | RuntimeError::Refused { .. }
        )
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

/// What a running workload uses, as its runtime measures it (not as the
/// agent says).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time used since the workload started, over all its processes.
    pub cpu_seconds: f64,
    /// Memory in use now, without the page cache the kernel can reclaim
    /// (what `docker stats` shows).
    pub memory_bytes: u64,
}

/// One line (or, for a line longer than the runtime's own limit, one part
/// of it) a workload printed, as its runtime recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: LogStream,
    /// When the runtime received it (nanoseconds where the runtime has them).
    pub timestamp: DateTime<Utc>,
    /// The bytes printed, with the newline if there was one.
    pub bytes: Vec<u8>,
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

    /// The workload's output from `since` on (everything when `None`; the
    /// runtime may start earlier, at its own granularity, never later),
    /// then each line as it is printed, until the workload ends. `None`:
    /// this runtime cannot follow a workload's output (the default); its
    /// log is read once, by [`Runtime::logs`], before it is removed.
    fn follow_logs(
        &self,
        _id: &str,
        _since: Option<DateTime<Utc>>,
    ) -> Option<BoxStream<'static, Result<LogChunk>>> {
        None
    }

    /// What the workload with runtime id `id` uses now; `None` when this
    /// runtime cannot measure it (the default) or the workload is not
    /// running.
    async fn usage(&self, _id: &str) -> Result<Option<Usage>> {
        Ok(None)
    }

    /// Stops and deletes a workload; one already gone is not an error.
    async fn remove(&self, key: WorkloadKey, id: &str) -> Result<()>;

    /// Deletes the job's workspace; one already gone is not an error.
    async fn remove_workspace(&self, job: JobId) -> Result<()>;

    /// The disk each job's workspace on this host uses, in bytes; empty
    /// when this runtime cannot tell (the default).
    async fn workspace_usage(&self) -> Result<Vec<(JobId, u64)>> {
        Ok(Vec::new())
    }

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
