//! One source operation as a message: what a short-lived Pod is told to do
//! (`icarus source-step`) and what it reports, as one JSON line on its output.
//!
//! Kubernetes mode cannot run git on the orchestrator's host against a job's
//! workspace: the workspace is a claim mounted only into Pods. So the same
//! [`LocalGit`](super::LocalGit) runs inside a Pod that mounts the job's
//! claims (its workspace, and its repository that agents never mount), and
//! this is the whole interface between the two.

use serde::{Deserialize, Serialize};

use super::{LocalGit, PublishRequest, Published, Result, Snapshot, SourceError};
use crate::job::{JobId, JobSource};

/// The environment variable `icarus source-step` reads its step from.
pub const SOURCE_STEP_VARIABLE: &str = "ICARUS_SOURCE_STEP";

/// What to do to the job's workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SourceStep {
    Checkout {
        source: JobSource,
    },
    Snapshot {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<String>,
    },
    Publish {
        request: PublishRequest,
    },
}

impl SourceStep {
    /// A short name, for Pod names and logs.
    pub fn name(&self) -> &'static str {
        match self {
            SourceStep::Checkout { .. } => "checkout",
            SourceStep::Snapshot { .. } => "snapshot",
            SourceStep::Publish { .. } => "publish",
        }
    }

    /// How the step's Pod mounts the workspace: written by a checkout, only
    /// read by a snapshot, not mounted at all for a publish (the step that
    /// holds the token never sees what an agent wrote).
    pub fn workspace_access(&self) -> WorkspaceAccess {
        match self {
            SourceStep::Checkout { .. } => WorkspaceAccess::ReadWrite,
            SourceStep::Snapshot { .. } => WorkspaceAccess::ReadOnly,
            SourceStep::Publish { .. } => WorkspaceAccess::None,
        }
    }
}

/// How a step needs the job's workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceAccess {
    ReadWrite,
    ReadOnly,
    None,
}

/// What came of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    BaseCommit(String),
    Snapshot(Snapshot),
    Published(Published),
    Failed { message: String, permanent: bool },
    Unsupported(String),
}

/// Runs `step` on `job`'s workspace with `source` (where the workspace is),
/// to its end: this is what a git Pod runs.
pub async fn perform(source: &LocalGit, job: JobId, step: &SourceStep) -> StepOutcome {
    let outcome = match step {
        SourceStep::Checkout { source: from } => source
            .checkout(job, from)
            .await
            .map(StepOutcome::BaseCommit),
        SourceStep::Snapshot { base } => source
            .snapshot(job, base.as_deref())
            .await
            .map(StepOutcome::Snapshot),
        SourceStep::Publish { request } => {
            source.publish(request).await.map(StepOutcome::Published)
        }
    };
    outcome.unwrap_or_else(|error| match error {
        SourceError::Unsupported(message) => StepOutcome::Unsupported(message),
        other => StepOutcome::Failed {
            permanent: other.is_permanent(),
            message: crate::errors::error_chain(&other),
        },
    })
}

impl StepOutcome {
    fn failure(self) -> SourceError {
        match self {
            StepOutcome::Failed {
                message,
                permanent: true,
            } => SourceError::Permanent(message),
            StepOutcome::Failed { message, .. } => {
                SourceError::transient("the source step failed", message)
            }
            StepOutcome::Unsupported(message) => SourceError::Unsupported(message),
            other => {
                SourceError::transient("the source step answered out of turn", format!("{other:?}"))
            }
        }
    }

    pub fn into_base_commit(self) -> Result<String> {
        match self {
            StepOutcome::BaseCommit(base) => Ok(base),
            other => Err(other.failure()),
        }
    }

    pub fn into_snapshot(self) -> Result<Snapshot> {
        match self {
            StepOutcome::Snapshot(snapshot) => Ok(snapshot),
            other => Err(other.failure()),
        }
    }

    pub fn into_published(self) -> Result<Published> {
        match self {
            StepOutcome::Published(published) => Ok(published),
            other => Err(other.failure()),
        }
    }

    /// The outcome in the last line of a step's output that holds one.
    pub fn from_output(output: &str) -> Option<StepOutcome> {
        output
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line.trim()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_and_its_outcome_survive_the_trip_through_json() {
        let step = SourceStep::Checkout {
            source: JobSource {
                repository: "https://example.com/repo.git".to_owned(),
                reference: Some("main".to_owned()),
            },
        };
        let text = serde_json::to_string(&step).unwrap();
        assert_eq!(serde_json::from_str::<SourceStep>(&text).unwrap(), step);
        let outcome = StepOutcome::BaseCommit("abc123".to_owned());
        let output = format!("cloning...\n{}\n", serde_json::to_string(&outcome).unwrap());
        assert_eq!(StepOutcome::from_output(&output), Some(outcome));
    }

    #[test]
    fn a_failed_step_keeps_whether_retrying_can_help() {
        let refused = StepOutcome::Failed {
            message: "push refused".to_owned(),
            permanent: true,
        };
        assert!(refused.into_published().unwrap_err().is_permanent());
        let flaky = StepOutcome::Failed {
            message: "disk busy".to_owned(),
            permanent: false,
        };
        assert!(!flaky.into_snapshot().unwrap_err().is_permanent());
    }

    #[test]
    fn output_without_an_outcome_gives_none() {
        assert_eq!(StepOutcome::from_output("fatal: oops\n"), None);
    }
}
