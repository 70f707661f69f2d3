//! Where a job's code comes from and where it goes: the workspace filled
//! from the job's source, the snapshot of what the builder left that a human
//! reviews, and the commit of exactly that snapshot pushed on approval.
//!
//! The trust boundary runs through here. The workspace is the agents'; the
//! Git metadata (objects, refs, config) is the orchestrator's own, kept
//! where no agent can write, and git never reads anything from the
//! workspace but the bytes of its files. See README "Security model".
//!
//! An adapter like the runtime: it does what it is told and reports what it
//! found; the planner decides when (see `job::plan`). Every operation is
//! idempotent, so a crash at any point is repaired by doing it again:
//! checking out an existing checkout returns its recorded base, a snapshot
//! of the same files is the same tree, publishing again pushes the same
//! commit. A step may answer [`Progress::Running`] (a git Pod that has not
//! finished): it is asked again when it changes, and never waited for.

pub mod forge;
mod git;
pub mod patch;
pub mod pods;
pub mod step;

pub use git::{EMPTY_TREE, GitLayout, LocalGit, RemoteCredentials, SnapshotLimits};

pub use icarus_core::ports::source::{
    CapturedDiff, Cause, Progress, PublishRequest, Published, Result, Snapshot, SourceControl,
    SourceError,
};
