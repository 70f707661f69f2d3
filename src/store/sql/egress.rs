//! What agents did through the egress proxy: one `egress_traffic` row per
//! job, role, attempt, destination and verdict, added to by each flush of
//! the proxy's tallies (`egress::Ledger`).

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::changes::{Change, announce};
use super::columns::{attempt_column, corrupt, parse_role};
use super::{on_pool, on_pool_write};
use crate::job::JobId;
use crate::store::{EgressAllowance, EgressTraffic, EgressVerdict, Result, Store};

/// Destinations kept apart per agent attempt; those after share the host
/// `*` (port 0), so an agent cannot add rows without limit.
pub const MAX_DESTINATIONS: i64 = 100;

/// One write, no read first (see `usage.rs` on SQLite's busy writers): the
/// inner select counts the attempt's rows and whether this destination has
/// one, and a new destination beyond [`MAX_DESTINATIONS`] becomes `*`.
/// (`WHERE true` lets SQLite tell the upsert's `ON` from a join's.)
const ADD_TRAFFIC: &str = "INSERT INTO egress_traffic (job_id, role, attempt, host, port, \
     verdict, reason, connections, bytes_sent, bytes_received, cut_at_budget, first_at, last_at) \
     SELECT $1, $2, $3, \
     CASE WHEN kept.known OR kept.n < $14 THEN $4 ELSE '*' END, \
     CASE WHEN kept.known OR kept.n < $14 THEN $5 ELSE 0 END, \
     $6, $7, $8, $9, $10, $11, $12, $13 \
     FROM (SELECT COUNT(*) AS n, \
     COALESCE(SUM(CASE WHEN host = $4 AND port = $5 AND verdict = $6 THEN 1 ELSE 0 END), 0) > 0 \
     AS known FROM egress_traffic WHERE job_id = $1 AND role = $2 AND attempt = $3) AS kept \
     WHERE true \
     ON CONFLICT (job_id, role, attempt, host, port, verdict) DO UPDATE SET \
     reason = COALESCE(excluded.reason, egress_traffic.reason), \
     connections = egress_traffic.connections + excluded.connections, \
     bytes_sent = egress_traffic.bytes_sent + excluded.bytes_sent, \
     bytes_received = egress_traffic.bytes_received + excluded.bytes_received, \
     cut_at_budget = egress_traffic.cut_at_budget + excluded.cut_at_budget, \
     last_at = excluded.last_at \
     RETURNING connections";

const TRAFFIC_COLUMNS: &str = "role, attempt, host, port, verdict, reason, connections, \
     bytes_sent, bytes_received, cut_at_budget, first_at, last_at";

/// What one agent did with one destination since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressTally {
    pub job: JobId,
    pub traffic: EgressTraffic,
}

#[derive(sqlx::FromRow)]
struct TrafficRow {
    role: String,
    attempt: i32,
    host: String,
    port: i32,
    verdict: String,
    reason: Option<String>,
    connections: i64,
    bytes_sent: i64,
    bytes_received: i64,
    cut_at_budget: i64,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
}

impl TrafficRow {
    fn into_traffic(self, job: JobId) -> Result<EgressTraffic> {
        let count = |value: i64| u64::try_from(value).unwrap_or(0);
        Ok(EgressTraffic {
            role: parse_role(job, &self.role)?,
            attempt: u32::try_from(self.attempt).unwrap_or(0),
            host: self.host,
            port: u16::try_from(self.port).unwrap_or(0),
            verdict: EgressVerdict::parse(&self.verdict).ok_or_else(|| {
                corrupt(job, format!("unknown egress verdict '{}'", self.verdict))
            })?,
            reason: self.reason,
            connections: count(self.connections),
            bytes_sent: count(self.bytes_sent),
            bytes_received: count(self.bytes_received),
            cut_at_budget: count(self.cut_at_budget),
            first_at: self.first_at,
            last_at: self.last_at,
        })
    }
}

impl Store {
    /// Adds a tally to its destination's row; a new row (the agent's first
    /// connection to it under this verdict) also goes on the job's stream.
    pub async fn add_egress_traffic(&self, tally: &EgressTally) -> Result<()> {
        let traffic = &tally.traffic;
        let number = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let (connections,): (i64,) = on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            let added: (i64,) = sqlx::query_as(ADD_TRAFFIC)
                .bind(tally.job.to_string())
                .bind(traffic.role.as_str())
                .bind(attempt_column(traffic.attempt))
                .bind(&traffic.host)
                .bind(i32::from(traffic.port))
                .bind(traffic.verdict.as_str())
                .bind(&traffic.reason)
                .bind(number(traffic.connections))
                .bind(number(traffic.bytes_sent))
                .bind(number(traffic.bytes_received))
                .bind(number(traffic.cut_at_budget))
                .bind(traffic.first_at)
                .bind(traffic.last_at)
                .bind(MAX_DESTINATIONS)
                .fetch_one(&mut *tx)
                .await?;
            announce!(self, tx, Change::Facts, tally.job);
            tx.commit().await?;
            added
        });
        self.view.forget(tally.job);
        if connections == number(traffic.connections) {
            self.append_egress(tally.job, traffic).await?;
        }
        Ok(())
    }

    /// Everything the job's agents did through the egress proxy, by
    /// attempt and role, refusals and requests first, then by first use.
    pub async fn egress_traffic(&self, job: JobId) -> Result<Vec<EgressTraffic>> {
        let sql = format!(
            "SELECT {TRAFFIC_COLUMNS} FROM egress_traffic WHERE job_id = $1 \
             ORDER BY attempt, role, verdict DESC, first_at, host, port"
        );
        let rows: Vec<TrafficRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(job.to_string()).fetch_all(pool).await?
        });
        rows.into_iter().map(|row| row.into_traffic(job)).collect()
    }

    /// Bytes the job's agents moved through the proxy (every role, attempt
    /// and replica), as flushed so far.
    pub async fn egress_bytes(&self, job: JobId) -> Result<u64> {
        let (bytes,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(bytes_sent + bytes_received), 0) AS BIGINT) \
                 FROM egress_traffic WHERE job_id = $1",
            )
            .bind(job.to_string())
            .fetch_one(pool)
            .await?
        });
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// How many allowances this process has recorded or heard of (another
    /// replica's, relayed on PostgreSQL, or possibly missed while the relay
    /// did not listen): when it changes, what the proxy here remembered of
    /// agents' lists is stale.
    pub fn allowances_written(&self) -> u64 {
        self.allowances_written.load(Ordering::Acquire)
    }

    /// Counts an allowance written here or elsewhere (see
    /// [`Store::allowances_written`]).
    pub(super) fn allowance_heard(&self) {
        self.allowances_written.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a person's allowance (see [`EgressAllowance`]).
    pub async fn allow_egress(&self, allowance: &EgressAllowance) -> Result<()> {
        on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO egress_allowances (job_id, role, rule, allowed_by, allowed_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(allowance.job.map(|job| job.to_string()))
            .bind(allowance.role.as_str())
            .bind(&allowance.rule)
            .bind(&allowance.allowed_by)
            .bind(allowance.allowed_at)
            .execute(&mut *tx)
            .await?;
            match allowance.job {
                Some(job) => announce!(self, tx, Change::Allowance, job),
                // The payload of `Everyone` names no job: any id will do.
                None => announce!(self, tx, Change::Everyone, JobId::new_random()),
            }
            tx.commit().await?;
        });
        match allowance.job {
            Some(job) => self.view.forget(job),
            None => self.view.forget_all(),
        }
        self.allowance_heard();
        Ok(())
    }

    /// The allowances that count for `job`'s agents: its own and everyone's,
    /// oldest first.
    pub async fn egress_allowances(&self, job: JobId) -> Result<Vec<EgressAllowance>> {
        let rows: Vec<AllowanceRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT job_id, role, rule, allowed_by, allowed_at FROM egress_allowances \
                 WHERE job_id = $1 OR job_id IS NULL ORDER BY id",
            )
            .bind(job.to_string())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|row| {
                Ok(EgressAllowance {
                    job: row.job_id.map(|id| id.parse()).transpose().map_err(|_| {
                        corrupt(job, "an egress allowance names a job id that is not one")
                    })?,
                    role: parse_role(job, &row.role)?,
                    rule: row.rule,
                    allowed_by: row.allowed_by,
                    allowed_at: row.allowed_at,
                })
            })
            .collect()
    }
}

#[derive(sqlx::FromRow)]
struct AllowanceRow {
    job_id: Option<String>,
    role: String,
    rule: String,
    allowed_by: String,
    allowed_at: DateTime<Utc>,
}
