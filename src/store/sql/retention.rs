//! Removing finished jobs: what a deletion asked for takes away (the
//! stored output, and the record with its events unless they are kept),
//! and which finished jobs retention picks.

use chrono::{DateTime, Utc};

use super::changes::{Change, announce};
use super::{on_pool, on_pool_write};
use crate::job::JobId;
use crate::store::{Result, Store, StoreError};

/// The tables that hold a job's output beside its record and events. Each
/// row names its job in `job_id` (every one cascades when the record goes).
const OUTPUT_TABLES: [&str; 9] = [
    "telemetry",
    "audit_logs",
    "agent_reports",
    "agent_logs",
    "job_diffs",
    "agent_usage",
    "job_stream",
    "egress_traffic",
    "egress_allowances",
];

const TERMINAL: &str = "('completed', 'rejected', 'failed', 'cancelled')";

impl Store {
    /// Removes what is stored of a job: its output (logs, diff, telemetry,
    /// audit, stream, usage, egress) and, unless `keep_events`, its record
    /// and transitions. One transaction; a job already gone is no error.
    pub async fn purge_job(&self, job: JobId, keep_events: bool) -> Result<()> {
        let id = job.to_string();
        on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            if keep_events {
                for table in OUTPUT_TABLES {
                    let sql = format!("DELETE FROM {table} WHERE job_id = $1");
                    sqlx::query(&sql).bind(&id).execute(&mut *tx).await?;
                }
                announce!(self, tx, Change::Facts, job);
            } else {
                sqlx::query("DELETE FROM jobs WHERE job_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                announce!(self, tx, Change::Job, job);
            }
            tx.commit().await?;
        });
        self.view.job_changed(job);
        Ok(())
    }

    /// Finished jobs that ended before `before` and were not purged yet,
    /// those that ended first first, at most `limit`.
    pub async fn finished_before(&self, before: DateTime<Utc>, limit: i64) -> Result<Vec<JobId>> {
        let sql = format!(
            "SELECT job_id FROM jobs WHERE completed_at IS NOT NULL AND purged_at IS NULL \
             AND completed_at < $1 AND status IN {TERMINAL} ORDER BY completed_at, id LIMIT $2"
        );
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(before).bind(limit).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id,)| {
                id.parse().map_err(|_| StoreError::Corrupt {
                    id: id.clone(),
                    detail: "not a job id".to_owned(),
                })
            })
            .collect()
    }
}
