//! `queue` and `retention`: how pending jobs are ordered (priorities, the
//! cap each role may ask for, ageing) and how long finished jobs are kept.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};

use super::AccessRole;
use crate::job::admission::{MAX_PRIORITY, MIN_PRIORITY};

/// `queue`: the order pending jobs are admitted in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// A job's priority when its submission names none.
    pub default_priority: i32,
    /// The highest priority each role may ask for; more is refused (403).
    pub max_priority: PriorityCaps,
    /// A pending job's priority grows by one for every this many seconds it
    /// waited, so none waits forever; 0: never (strict priorities).
    pub ageing_seconds: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            default_priority: 0,
            max_priority: PriorityCaps::default(),
            ageing_seconds: 300,
        }
    }
}

/// `queue.max_priority`: the cap per role that may submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityCaps {
    pub submitter: i32,
    pub approver: i32,
    pub admin: i32,
}

impl Default for PriorityCaps {
    fn default() -> Self {
        PriorityCaps {
            submitter: 0,
            approver: 10,
            admin: MAX_PRIORITY,
        }
    }
}

impl PriorityCaps {
    /// The highest priority `role` may ask for (a viewer submits nothing).
    pub fn of(&self, role: AccessRole) -> i32 {
        match role {
            AccessRole::Viewer => MIN_PRIORITY,
            AccessRole::Submitter => self.submitter,
            AccessRole::Approver => self.approver,
            AccessRole::Admin => self.admin,
        }
    }
}

impl QueueConfig {
    /// How long a wait raises a priority by one; none without ageing.
    pub fn ageing(&self) -> Option<TimeDelta> {
        (self.ageing_seconds > 0)
            .then(|| TimeDelta::try_seconds(i64::try_from(self.ageing_seconds).ok()?))
            .flatten()
    }

    /// What is wrong with these values, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let range = MIN_PRIORITY..=MAX_PRIORITY;
        let caps = &self.max_priority;
        for (key, value) in [
            ("default_priority", self.default_priority),
            ("max_priority.submitter", caps.submitter),
            ("max_priority.approver", caps.approver),
            ("max_priority.admin", caps.admin),
        ] {
            if !range.contains(&value) {
                problems.push(format!(
                    "queue.{key} must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {value}"
                ));
            }
        }
        if self.default_priority > caps.submitter {
            problems.push(format!(
                "queue.default_priority ({}) must not exceed queue.max_priority.submitter ({})",
                self.default_priority, caps.submitter
            ));
        }
        if caps.submitter > caps.approver || caps.approver > caps.admin {
            problems.push(
                "queue.max_priority must not decrease from submitter to approver to admin"
                    .to_owned(),
            );
        }
        if self.ageing_seconds > 365 * 24 * 3600 {
            problems.push("queue.ageing_seconds must be at most a year (31536000)".to_owned());
        }
        problems
    }
}

/// `retention`: how long finished jobs are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Finished jobs are deleted this many days after they ended; 0: kept.
    pub terminal_jobs_days: u32,
    /// When the workspaces on this host use more than this, finished jobs
    /// are deleted oldest first until they do not; 0: no budget.
    pub workspace_budget_bytes: u64,
    /// Jobs retention deletes keep their record and events (their
    /// workspace and stored output go); `DELETE /jobs/{id}` removes all.
    pub keep_events: bool,
    /// How often retention looks (and measures the workspaces).
    pub sweep_interval_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            terminal_jobs_days: 0,
            workspace_budget_bytes: 0,
            keep_events: false,
            sweep_interval_seconds: 600,
        }
    }
}

impl RetentionConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.sweep_interval_seconds == 0 || self.sweep_interval_seconds > 86_400 {
            problems
                .push("retention.sweep_interval_seconds must be between 1 and 86400".to_owned());
        }
        if self.terminal_jobs_days > 36_500 {
            problems.push("retention.terminal_jobs_days must be at most 36500".to_owned());
        }
        problems
    }
}
