//! What the queue keeps besides jobs: an admin's hold (the `queue_hold`
//! row, so it survives restarts and every replica sees it) and the run
//! times of recent jobs, from which a pending job's start is estimated.

use chrono::{DateTime, TimeDelta, Utc};

use super::{on_pool, on_pool_write};
use crate::store::{Result, Store, StoreEvent};

/// How many of the latest runs the estimate averages.
pub const RECENT_RUNS: i64 = 20;

/// Who held the queue, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHold {
    pub held_by: String,
    pub held_at: DateTime<Utc>,
}

impl Store {
    /// The hold on the queue, if there is one.
    pub async fn queue_hold(&self) -> Result<Option<QueueHold>> {
        let sql = "SELECT held_by, held_at FROM queue_hold WHERE id = 1";
        let row: Option<(String, DateTime<Utc>)> = on_pool!(self, pool => {
            sqlx::query_as(sql).fetch_optional(pool).await?
        });
        Ok(row.map(|(held_by, held_at)| QueueHold { held_by, held_at }))
    }

    /// Holds the queue: nothing new is admitted until it is released. A
    /// queue already held keeps its first hold, which is returned.
    pub async fn hold_queue(&self, hold: &QueueHold) -> Result<QueueHold> {
        let sql = "INSERT INTO queue_hold (id, held_by, held_at) VALUES (1, $1, $2) \
                   ON CONFLICT (id) DO NOTHING";
        on_pool_write!(self, pool => {
            sqlx::query(sql)
                .bind(&hold.held_by)
                .bind(hold.held_at)
                .execute(pool)
                .await?;
        });
        self.publish(StoreEvent::QueueChanged);
        Ok(self.queue_hold().await?.unwrap_or_else(|| hold.clone()))
    }

    /// Releases the queue; whether it was held.
    pub async fn release_queue(&self) -> Result<bool> {
        let sql = "DELETE FROM queue_hold WHERE id = 1";
        let released = on_pool_write!(self, pool => {
            sqlx::query(sql).execute(pool).await?.rows_affected() > 0
        });
        self.publish(StoreEvent::QueueChanged);
        Ok(released)
    }

    /// How long the latest [`RECENT_RUNS`] jobs that held a slot held it,
    /// on average (building and checking, retries included); none before
    /// any job ran. One read of the `run_ended_at` index.
    pub async fn average_run_time(&self) -> Result<Option<TimeDelta>> {
        let sql = "SELECT AVG(run_seconds) FROM (SELECT run_seconds FROM jobs \
                   WHERE run_ended_at IS NOT NULL ORDER BY run_ended_at DESC LIMIT $1) AS recent";
        let (average,): (Option<f64>,) = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(RECENT_RUNS).fetch_one(pool).await?
        });
        Ok(average
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .and_then(|seconds| TimeDelta::try_milliseconds((seconds * 1000.0) as i64)))
    }
}
