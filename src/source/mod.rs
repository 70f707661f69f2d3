//! Where a job's code comes from and where it goes: the workspace as a Git
//! checkout of the job's source, the diff a human reviews, and the commit
//! pushed on approval.
//!
//! An adapter like the runtime: it does what it is told and reports what it
//! found; the planner decides when (see `job::plan`). Every operation is
//! idempotent, so a crash at any point is repaired by doing it again:
//! checking out an existing checkout returns its recorded base, publishing a
//! job that was already committed pushes the same commit.

pub mod forge;
mod git;
pub mod patch;
pub mod step;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use git::{JOB_TRAILER, LocalGit};

use crate::job::{JobId, JobSource};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Retrying cannot help (the repository or ref does not exist, the push
    /// was refused...): the job fails with this message.
    #[error("{0}")]
    Permanent(String),
    /// Something that may pass (an I/O error on the host).
    #[error("{0}")]
    Transient(String),
}

impl SourceError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SourceError::Permanent(_))
    }
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;

/// The review material: the builder's change against the base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedDiff {
    /// Unified diff text, cut at a limit (then ending in a truncation marker).
    pub text: String,
    pub truncated: bool,
}

/// What a publish needs besides the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest {
    pub job: JobId,
    pub branch: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
}

/// Where the change went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub branch: String,
    pub commit: String,
}

#[async_trait]
pub trait SourceControl: Send + Sync + 'static {
    /// Makes the job's workspace a checkout of `source` at its base commit,
    /// unless it already is one; returns the base commit.
    async fn checkout(&self, job: JobId, source: &JobSource) -> Result<String>;

    /// The workspace's change against the base (against nothing, for a job
    /// without a source: every file is new).
    async fn diff(&self, job: JobId) -> Result<CapturedDiff>;

    /// Commits the workspace to the job's branch (once) and pushes it to the
    /// source's remote.
    async fn publish(&self, request: &PublishRequest) -> Result<Published>;
}
