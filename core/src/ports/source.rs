//! The source-control port: where a job's code comes from and where it
//! goes. The controller asks [`SourceControl`] for a checkout, a snapshot
//! and a publish; adapters (git on this host, git Pods) carry them out and
//! report what they found, and the planner decides when.

use async_trait::async_trait;

use crate::job::{JobId, JobSource};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Retrying cannot help (the repository or ref does not exist, the push
    /// was refused...): the job fails with this message.
    #[error("{0}")]
    Permanent(String),
    /// Something that may pass (an I/O error on the host, an API server
    /// out of reach): what was being done, and the error that stopped it.
    #[error("{what}")]
    Transient {
        what: String,
        #[source]
        source: Cause,
    },
    /// Workspaces cannot be read where this runs (Docker volumes): the job
    /// goes on without a snapshot, and says so.
    #[error("{0}")]
    Unsupported(String),
}

/// The error under a [`SourceError::Transient`]: an error, or a sentence
/// where there is none.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

impl SourceError {
    /// `what` was stopped by `cause`, which may pass.
    pub fn transient(what: impl Into<String>, cause: impl Into<Cause>) -> SourceError {
        SourceError::Transient {
            what: what.into(),
            source: cause.into(),
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, SourceError::Permanent(_))
    }
}

pub type Result<T, E = SourceError> = std::result::Result<T, E>;

/// The review material: the builder's change against the base.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CapturedDiff {
    /// Unified diff text, cut at a limit (then ending in a truncation marker).
    pub text: String,
    pub truncated: bool,
}

/// The builder's work as recorded when it succeeded: the one thing that is
/// audited, reviewed and published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    /// The Git tree object of the work tree: the snapshot's id.
    pub tree: String,
    /// Base → snapshot, for review.
    pub diff: CapturedDiff,
}

/// What a publish needs. Everything comes from the job's record; nothing is
/// read back from the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PublishRequest {
    pub job: JobId,
    /// The remote recorded at spawn: the only place the commit goes.
    pub repository: String,
    /// The commit the snapshot is a change of: the new commit's parent.
    pub base: String,
    /// The approved snapshot: the new commit's tree.
    pub snapshot: String,
    pub branch: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// The commit's date (the approval's), so a retry makes the same commit.
    pub committed_at: chrono::DateTime<chrono::Utc>,
}

/// Where the change went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Published {
    pub branch: String,
    pub commit: String,
}

/// How far a step asked for has got. Local git finishes before it answers;
/// a step that runs elsewhere (a git Pod) is only started or looked at, so
/// no caller waits for it: asking again, once it has changed, finds it done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    Done(T),
    /// Not finished yet; whoever runs it wakes the job when that changes.
    Running,
}

impl<T> Progress<T> {
    /// Turns a finished step's answer into its result; `Running` stays so.
    pub fn try_map<U>(self, into: impl FnOnce(T) -> Result<U>) -> Result<Progress<U>> {
        match self {
            Progress::Done(value) => into(value).map(Progress::Done),
            Progress::Running => Ok(Progress::Running),
        }
    }
}

/// Each step is asked for again until it answers `Done`: asking again for a
/// running step must neither wait for it nor start it twice.
#[async_trait]
pub trait SourceControl: Send + Sync + 'static {
    /// Makes the job's workspace a checkout of `source` at its base commit,
    /// unless it already is one; gives the base commit.
    async fn checkout(&self, job: JobId, source: &JobSource) -> Result<Progress<String>>;

    /// Records the workspace as a tree in the job's own repository and
    /// diffs it against `base` (against nothing, for a job without a
    /// source: every file is new).
    async fn snapshot(&self, job: JobId, base: Option<&str>) -> Result<Progress<Snapshot>>;

    /// Commits the approved snapshot on the base and pushes it to the
    /// job's branch on the recorded remote.
    async fn publish(&self, request: &PublishRequest) -> Result<Progress<Published>>;

    /// Deletes the job's repository (a rejected or cancelled job).
    async fn discard(&self, job: JobId) -> Result<()>;
}
