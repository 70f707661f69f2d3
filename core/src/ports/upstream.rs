//! Where a job's desired state is recorded when the job store is not the
//! first record of it.
//!
//! In local mode the store is the record: the routes write it and that is
//! all. In Kubernetes mode the `IcarusJob` resource is the record (what
//! `kubectl` and GitOps tools see and write) and the store mirrors it, so a
//! route writes the resource first and then the store, the same write the
//! resource watch would make a moment later. Writing the store too gives
//! read-your-writes on every replica; the watch finding the job already there
//! is a no-op.

use async_trait::async_trait;

use crate::job::{Job, JobId, JobSpec};

/// Why the upstream record refused or could not take a write.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The record's own validation refused it: the client's mistake.
    #[error("{0}")]
    Refused(String),
    /// The job has no upstream record (it was deleted there).
    #[error("{0}")]
    Missing(String),
    /// The record could not be reached or failed: try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// The first record of jobs' desired state, ahead of the job store.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Records a new job there; the record names it, so the id it returns
    /// is the job's one and only id.
    async fn create(&self, spec: &JobSpec) -> Result<JobId, UpstreamError>;

    /// Records what changed in a job's spec from `previous` (a decision, a
    /// cancel request, a publish retry).
    async fn write_spec(&self, job: &Job, previous: &JobSpec) -> Result<(), UpstreamError>;

    /// Deletes the job's record there (`DELETE /jobs/{id}`); one already
    /// gone is not an error.
    async fn delete(&self, id: JobId) -> Result<(), UpstreamError>;
}
