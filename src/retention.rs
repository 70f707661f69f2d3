//! Retention: the leader's periodic sweep that deletes finished jobs past
//! `retention.terminal_jobs_days`, and, while the workspaces on this host
//! use more than `retention.workspace_budget_bytes`, the oldest finished
//! jobs that have one. It only asks for the deletion (the job's spec, as
//! `DELETE /jobs/{id}` does); the controller carries it out, so a crash
//! in between loses nothing. Each sweep also measures the workspaces
//! (`icarus_workspace_bytes`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::errors::error_chain;
use crate::job::{Deletion, Job, JobId, timestamp_now};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::store::{SpecUpdate, Store, StoreError};

/// Finished jobs looked at per sweep and rule.
const BATCH: i64 = 500;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Jobs whose deletion it asked for.
    pub deleted: Vec<JobId>,
    /// The disk the workspaces used when measured, if the runtime can tell.
    pub workspace_bytes: Option<u64>,
}

/// The sweep, with what it needs besides the store.
#[derive(Clone)]
pub struct Retention {
    config: RetentionConfig,
    runtime: Arc<dyn Runtime>,
    metrics: Arc<Metrics>,
}

impl Retention {
    pub fn new(config: RetentionConfig, runtime: Arc<dyn Runtime>, metrics: Arc<Metrics>) -> Self {
        Retention {
            config,
            runtime,
            metrics,
        }
    }

    /// Sweeps now and every `retention.sweep_interval_seconds` until `stop`.
    pub async fn run(self, store: Store, stop: CancellationToken) {
        let every = Duration::from_secs(self.config.sweep_interval_seconds.max(1));
        loop {
            match self.sweep(&store).await {
                Ok(swept) if !swept.deleted.is_empty() => {
                    tracing::info!(
                        deleted = swept.deleted.len(),
                        "retention deleted finished jobs"
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "retention sweep failed")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One sweep: the jobs past their days, then the budget.
    pub async fn sweep(&self, store: &Store) -> Result<Swept, StoreError> {
        let deletion = Deletion {
            keep_events: self.config.keep_events,
        };
        let mut swept = Swept::default();
        let now = timestamp_now();
        if self.config.terminal_jobs_days > 0 {
            let before = now - TimeDelta::days(i64::from(self.config.terminal_jobs_days));
            for id in store.finished_before(before, BATCH).await? {
                if ask_to_delete(store, id, deletion).await? == Asked::Now {
                    swept.deleted.push(id);
                }
            }
        }
        let usage = match self.runtime.workspace_usage().await {
            Ok(usage) => usage,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "workspaces could not be measured");
                return Ok(swept);
            }
        };
        let mut total: u64 = usage.iter().map(|(_, bytes)| bytes).sum();
        swept.workspace_bytes = Some(total);
        self.metrics.set_workspace_bytes(total);
        let budget = self.config.workspace_budget_bytes;
        if budget == 0 || total <= budget {
            return Ok(swept);
        }
        let sizes: HashMap<JobId, u64> = usage.into_iter().collect();
        for id in store.finished_before(now, BATCH).await? {
            if total <= budget {
                break;
            }
            let Some(bytes) = sizes.get(&id).copied().filter(|b| *b > 0) else {
                continue;
            };
            let asked = if swept.deleted.contains(&id) {
                Asked::Before
            } else {
                ask_to_delete(store, id, deletion).await?
            };
            if asked == Asked::Now {
                swept.deleted.push(id);
            }
            // Going already (asked in an earlier sweep, or just now): its
            // workspace is as good as freed.
            if asked != Asked::Refused {
                total = total.saturating_sub(bytes);
            }
        }
        Ok(swept)
    }
}

/// What asking for a job's deletion came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// Asked now.
    Now,
    /// Asked already, by someone before.
    Before,
    /// Not asked: the job is gone, or has not finished.
    Refused,
}

/// Asks for a finished job's deletion, unless it was asked already.
async fn ask_to_delete(store: &Store, id: JobId, deletion: Deletion) -> Result<Asked, StoreError> {
    let change = |job: &Job| {
        Ok::<_, StoreError>(match job.request_delete(deletion) {
            Ok(spec) if job.spec.delete_requested.is_none() => SpecUpdate::write(spec),
            _ => SpecUpdate::Unchanged,
        })
    };
    match store.update_spec(id, change).await {
        Ok(write) if write.written => Ok(Asked::Now),
        Ok(write) if write.job.spec.delete_requested.is_some() => Ok(Asked::Before),
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(Asked::Refused),
        Err(error) => Err(error),
    }
}
