//! What the queue keeps besides jobs: an admin's hold (the `queue_hold`
//! row, so it survives restarts and every replica sees it), the drained
//! replicas (a `replica_drains` row each, kept across their restarts) and
//! the run times of recent jobs, from which a pending job's start is
//! estimated; and the lean reads the queue in memory and the resync are
//! made of.

use chrono::{DateTime, TimeDelta, Utc};

use super::queries::UNFINISHED;
use super::{Pool, on_pool, on_pool_write};
use crate::job::admission::QueueEntry;
use crate::job::{JobId, Phase};
use crate::store::{Result, Store, StoreError, StoreEvent};

/// The unfinished phases but `pending`: the jobs the resync looks at.
const BEYOND_PENDING: &str = "('building', 'checking', 'awaiting_approval', 'approved')";

/// How many of the latest runs the estimate averages.
pub const RECENT_RUNS: i64 = 20;

/// Who held the queue, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHold {
    pub held_by: String,
    pub held_at: DateTime<Utc>,
}

/// A drained replica: who drained it, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDrain {
    /// The replica's name (`orchestrator.replica_name`).
    pub replica: String,
    pub drained_by: String,
    pub drained_at: DateTime<Utc>,
}

/// What stops one replica admitting, as read at one moment: the hold on
/// the queue, and its own drain; and whether any replica is drained (the
/// one that leads may be another).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueLevers {
    pub hold: Option<QueueHold>,
    pub drain: Option<ReplicaDrain>,
    pub any_drained: bool,
}

impl Store {
    /// A lever of the queue changed here: the controller is told, and the
    /// list pages showing pending jobs' reasons are dropped.
    fn queue_changed(&self) {
        self.view.forget_pages();
        self.publish(StoreEvent::QueueChanged);
    }

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
        self.queue_changed();
        Ok(self.queue_hold().await?.unwrap_or_else(|| hold.clone()))
    }

    /// Releases the queue; whether it was held.
    pub async fn release_queue(&self) -> Result<bool> {
        let sql = "DELETE FROM queue_hold WHERE id = 1";
        let released = on_pool_write!(self, pool => {
            sqlx::query(sql).execute(pool).await?.rows_affected() > 0
        });
        self.queue_changed();
        Ok(released)
    }

    /// The hold, and the drain of `replica`: what admission obeys, in one
    /// read (with whether any replica is drained).
    pub async fn queue_levers(&self, replica: &str) -> Result<QueueLevers> {
        let sql = "SELECT h.held_by, h.held_at, d.drained_by, d.drained_at, \
                   EXISTS (SELECT 1 FROM replica_drains) \
                   FROM (SELECT 1 AS one) AS levers \
                   LEFT JOIN queue_hold AS h ON h.id = 1 \
                   LEFT JOIN replica_drains AS d ON d.replica = $1";
        type Row = (
            Option<String>,
            Option<DateTime<Utc>>,
            Option<String>,
            Option<DateTime<Utc>>,
            bool,
        );
        let (held_by, held_at, drained_by, drained_at, any_drained): Row = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(replica).fetch_one(pool).await?
        });
        Ok(QueueLevers {
            hold: held_by
                .zip(held_at)
                .map(|(held_by, held_at)| QueueHold { held_by, held_at }),
            drain: drained_by
                .zip(drained_at)
                .map(|(drained_by, drained_at)| ReplicaDrain {
                    replica: replica.to_owned(),
                    drained_by,
                    drained_at,
                }),
            any_drained,
        })
    }

    /// Every drained replica, the longest drained first.
    pub async fn replica_drains(&self) -> Result<Vec<ReplicaDrain>> {
        let sql = "SELECT replica, drained_by, drained_at FROM replica_drains \
                   ORDER BY drained_at, replica";
        let rows: Vec<(String, String, DateTime<Utc>)> = on_pool!(self, pool => {
            sqlx::query_as(sql).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(replica, drained_by, drained_at)| ReplicaDrain {
                replica,
                drained_by,
                drained_at,
            })
            .collect())
    }

    /// Drains `drain.replica`: it admits nothing new until resumed, across
    /// its restarts. A replica drained already keeps its first drain, which
    /// is returned.
    pub async fn drain_replica(&self, drain: &ReplicaDrain) -> Result<ReplicaDrain> {
        let sql = "INSERT INTO replica_drains (replica, drained_by, drained_at) \
                   VALUES ($1, $2, $3) ON CONFLICT (replica) DO NOTHING";
        on_pool_write!(self, pool => {
            sqlx::query(sql)
                .bind(&drain.replica)
                .bind(&drain.drained_by)
                .bind(drain.drained_at)
                .execute(pool)
                .await?;
        });
        self.queue_changed();
        let kept = self.queue_levers(&drain.replica).await?.drain;
        Ok(kept.unwrap_or_else(|| drain.clone()))
    }

    /// Ends the drain of `replica`; whether it was drained.
    pub async fn resume_replica(&self, replica: &str) -> Result<bool> {
        let sql = "DELETE FROM replica_drains WHERE replica = $1";
        let resumed = on_pool_write!(self, pool => {
            sqlx::query(sql).bind(replica).execute(pool).await?.rows_affected() > 0
        });
        self.queue_changed();
        Ok(resumed)
    }

    /// Every unfinished job as admission sees it, with its version: what
    /// the queue in memory is built from. Reads the five small columns,
    /// none of the documents.
    pub async fn queue_entries(&self) -> Result<Vec<(QueueEntry, i64)>> {
        let sql = format!(
            "SELECT job_id, status, created_at, priority, resource_version FROM jobs \
             WHERE status IN {UNFINISHED}"
        );
        let rows: Vec<(String, String, DateTime<Utc>, i32, i64)> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        let mut entries = Vec::with_capacity(rows.len());
        for (id, phase, created_at, priority, version) in rows {
            // A phase this version does not know (another version wrote
            // it) is not one admission counts.
            let Ok(phase) = phase.parse::<Phase>() else {
                continue;
            };
            let id = parse_id(&id)?;
            let entry = QueueEntry {
                id,
                phase,
                created_at,
                priority,
            };
            entries.push((entry, version));
        }
        Ok(entries)
    }

    /// The unfinished jobs past `pending` (building up to approved): the
    /// ones a resync looks at, however long the queue. One read of the
    /// status index.
    pub async fn unfinished_beyond_pending(&self) -> Result<Vec<JobId>> {
        let sql = format!("SELECT job_id FROM jobs WHERE status IN {BEYOND_PENDING}");
        let ids: Vec<(String,)> =
            on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        ids.iter().map(|(id,)| parse_id(id)).collect()
    }

    /// Pending jobs asked to cancel: those a controller starting its term
    /// must look at although they are not first in line (their cancel may
    /// have been written while no controller ran). One read of the pending
    /// jobs' specs, at the start of a term only.
    pub async fn pending_asked_to_cancel(&self) -> Result<Vec<JobId>> {
        let asked = match self.pool {
            Pool::Sqlite(_) => "json_extract(spec, '$.cancel_requested') = 1",
            Pool::Postgres(_) => "(spec ->> 'cancel_requested') = 'true'",
        };
        let sql = format!("SELECT job_id FROM jobs WHERE status = 'pending' AND {asked}");
        let ids: Vec<(String,)> =
            on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        ids.iter().map(|(id,)| parse_id(id)).collect()
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

fn parse_id(id: &str) -> Result<JobId> {
    id.parse()
        .map_err(|e: crate::job::InvalidJobId| StoreError::Corrupt {
            id: id.to_owned(),
            detail: e.to_string(),
        })
}
