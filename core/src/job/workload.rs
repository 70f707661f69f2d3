//! What the controller observes about a job's agents: the workloads that exist
//! in the runtime (containers, Pods) and the reports agents sent through the
//! callback. Plain data, filled in by adapters, read by the planner.

use std::fmt;

use chrono::{DateTime, Utc};

use super::JobId;

/// The two agents of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Role {
    Builder,
    Checker,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Builder, Role::Checker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Builder => "builder",
            Role::Checker => "checker",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one workload: deterministic, so that a create after a crash
/// meets (and adopts) the workload the previous run created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkloadKey {
    pub job: JobId,
    pub role: Role,
    pub attempt: u32,
}

impl WorkloadKey {
    /// `icarus-<job>-<role>-<attempt>`: the container or Pod name.
    pub fn name(&self) -> String {
        crate::names::agent(self.job, self.role, self.attempt)
    }
}

/// The state a runtime reports for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WorkloadState {
    /// Exists but was never started (a crash between create and start).
    Created,
    Running,
    Exited {
        exit_code: i64,
        oom_killed: bool,
    },
    /// Exists and has not started yet, for a reason its runtime gives (a
    /// Pod the scheduler cannot place, a claim not bound yet): still
    /// expected to start, but the job says why it waits, and a deadline
    /// that passes meanwhile is a start that failed, not an agent's.
    Waiting {
        why: String,
    },
    /// Exists but can never run, for a reason the runtime found (an image
    /// the node cannot pull, a workspace claim that was deleted): a start
    /// that failed, not an agent that failed, and nothing to wait for.
    Unstartable {
        why: String,
    },
    /// Stopped by its runtime, not by itself (a Pod evicted or preempted,
    /// its node lost or shut down): the infrastructure's fault, so the
    /// agent is tried again rather than judged.
    Lost {
        why: String,
    },
}

/// One workload that exists in the runtime and carries this job's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ObservedWorkload {
    pub role: Role,
    pub attempt: u32,
    /// The runtime's id for it (container id, Pod uid).
    pub id: String,
    pub state: WorkloadState,
    /// The last lines of its output, kept for agents that failed so the
    /// job's error message can show them.
    pub log_tail: Option<String>,
    /// When it exited, as its runtime tells (the engine's or the kubelet's
    /// clock): what the hand-over and an agent's run are measured from.
    /// None while it runs, or where the runtime does not say.
    #[cfg_attr(feature = "serde", serde(default))]
    pub finished_at: Option<DateTime<Utc>>,
}

/// What agents of the current attempt said through the callback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReports {
    /// The builder posted `{"status": "error", "error": ...}`.
    pub builder_error: Option<String>,
    /// The checker posted `{"status": "error", "error": ...}`.
    pub checker_error: Option<String>,
    /// The checker posted its audit report.
    pub audit_report_received: bool,
}

impl AgentReports {
    pub fn error_of(&self, role: Role) -> Option<&str> {
        match role {
            Role::Builder => self.builder_error.as_deref(),
            Role::Checker => self.checker_error.as_deref(),
        }
    }
}

/// The runtime could not start an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub role: Role,
    pub attempt: u32,
    pub message: String,
    /// Retrying cannot fix it (the image does not exist, the runtime
    /// refused the settings): the job fails. Otherwise the runtime answered
    /// an error that may pass, and the next attempt tries again.
    pub permanent: bool,
}

/// What source control reported while this reconcile acted on the job's
/// code (checking it out, publishing it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFacts {
    /// The workspace is a checkout at this base commit.
    pub base_commit: Option<String>,
    /// The builder's work was recorded (or cannot be, here).
    pub snapshot: Option<SnapshotTaken>,
    /// The change was pushed.
    pub published: Option<PublishedChange>,
    /// The checkout, the snapshot or the publish failed for a reason
    /// retrying cannot fix.
    pub failure: Option<String>,
}

/// What recording the builder's work came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotTaken {
    /// The work tree is this Git tree.
    Tree(String),
    /// Workspaces cannot be read where the orchestrator runs (Docker
    /// volumes): the job goes on, with nothing to publish.
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedChange {
    pub branch: String,
    pub commit: String,
    /// The pull request opened for it (its address), or why none was,
    /// when pull requests are enabled.
    pub pull_request: Option<Result<String, String>>,
}

/// Everything the controller observed for one job, the planner's view of the world.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub workloads: Vec<ObservedWorkload>,
    pub reports: AgentReports,
    pub start_failure: Option<StartFailure>,
    pub source: SourceFacts,
    /// The runtime declined to create the next agent ahead of its turn
    /// (it cannot, or it failed): do not ask again in this reconcile.
    pub ahead_declined: bool,
    /// The record the job came from is gone (its IcarusJob was deleted):
    /// nobody wants it any more, whatever vanished with it.
    pub owner_gone: bool,
}
