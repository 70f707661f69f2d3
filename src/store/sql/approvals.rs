//! The record of people's decisions on jobs (`job_approvals`): one row per
//! decision a spec took, written with that spec (see
//! `Store::update_job_spec`), in the order they came.

use chrono::{DateTime, Utc};

use super::on_pool;
use crate::job::{ApprovalDecision, JobId};
use crate::store::{Result, Store};

#[derive(sqlx::FromRow)]
struct ApprovalRow {
    approved: bool,
    decided_by: Option<String>,
    comment: String,
    snapshot: Option<String>,
    decided_at: DateTime<Utc>,
}

impl Store {
    /// Every decision recorded for `job`, oldest first.
    pub async fn approvals(&self, job: JobId) -> Result<Vec<ApprovalDecision>> {
        let sql = "SELECT approved, decided_by, comment, snapshot, decided_at \
                   FROM job_approvals WHERE job_id = $1 ORDER BY position";
        let rows: Vec<ApprovalRow> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(job.to_string()).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|row| ApprovalDecision {
                approved: row.approved,
                comment: row.comment,
                decided_at: row.decided_at,
                decided_by: row.decided_by,
                snapshot: row.snapshot,
            })
            .collect())
    }
}
