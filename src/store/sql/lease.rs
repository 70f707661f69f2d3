//! Leases in the database: which of several processes on one database may
//! reconcile, and the fence that refuses the writes of one that no longer may.
//!
//! A lease is one row of `leases`: its holder, a version bumped by every
//! acquisition, and when it expires. Acquiring, renewing and releasing are
//! single compare-and-swap statements, so two candidates racing for a free
//! lease cannot both win: the database serialises them on the row, and the
//! second finds it held. Every time is the database's own clock (milliseconds
//! since the epoch, computed inside the statement): replicas on hosts whose
//! clocks disagree still agree on when a lease expires.
//!
//! The fence: a store made by [`Store::fenced`] checks, in the transaction of
//! each job write, that its lease still has the holder and version it was
//! acquired with and has not expired, and refuses the write
//! ([`crate::store::StoreError::Fenced`]) otherwise. On PostgreSQL the check locks the lease
//! row (`FOR SHARE`), so a takeover waits for a write under way and no write
//! of the old term commits after the takeover has. A leader paused past its
//! lease (a stopped VM, a long GC, a debugger) therefore cannot overwrite what
//! its successor wrote, whatever it believes when it wakes.

use std::sync::Arc;
use std::time::Duration;

use super::{Pool, Store, on_pool_write};
use crate::store::Result;

/// A lease as stored, seen by a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    pub version: i64,
    /// How long until it expires by the database's clock; zero once it has.
    pub expires_in: Duration,
}

/// The term a fenced store writes for: the lease's name, and the holder and
/// version it had when this term acquired it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub holder: String,
    pub version: i64,
}

/// A fence and the statement that checks it on this store's database.
#[derive(Debug)]
pub(super) struct FenceCheck {
    pub(super) fence: Fence,
    pub(super) sql: String,
}

impl Store {
    /// The database's clock in milliseconds since the epoch, as SQL.
    fn now_ms(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Pool::Postgres(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Takes lease `name` for `holder` if nobody holds it or it has expired
    /// (whoever held it, `holder` included), for `duration`. Returns the new
    /// version, or `None` while another holds it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> Result<Option<i64>> {
        let now = self.now_ms();
        let sql = format!(
            "INSERT INTO leases (name, holder, version, acquired_at_ms, renewed_at_ms, expires_at_ms) \
             VALUES ($1, $2, 1, {now}, {now}, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             version = leases.version + 1, acquired_at_ms = excluded.acquired_at_ms, \
             renewed_at_ms = excluded.renewed_at_ms, expires_at_ms = excluded.expires_at_ms \
             WHERE leases.expires_at_ms <= {now} \
             RETURNING version"
        );
        let row: Option<(i64,)> = on_pool_write!(self, pool => {
            sqlx::query_as(&sql)
                .bind(name)
                .bind(holder)
                .bind(millis(duration))
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(version,)| version))
    }

    /// Extends `holder`'s lease by `duration` from now, if it still holds it
    /// at `version` and it has not expired; false otherwise (lost, or expired:
    /// then only a new acquisition, at a new version, brings it back).
    pub async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        version: i64,
        duration: Duration,
    ) -> Result<bool> {
        let now = self.now_ms();
        let sql = format!(
            "UPDATE leases SET renewed_at_ms = {now}, expires_at_ms = {now} + $4 \
             WHERE name = $1 AND holder = $2 AND version = $3 AND expires_at_ms > {now}"
        );
        let renewed = on_pool_write!(self, pool => {
            sqlx::query(&sql)
                .bind(name)
                .bind(holder)
                .bind(version)
                .bind(millis(duration))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(renewed == 1)
    }

    /// Ends `holder`'s lease now, if it still holds it at `version`, so the
    /// next candidate need not wait for it to expire. True if it did.
    pub async fn release_lease(&self, name: &str, holder: &str, version: i64) -> Result<bool> {
        // A renewal for no time: it expires as it is written.
        self.renew_lease(name, holder, version, Duration::ZERO)
            .await
    }

    /// Lease `name` as stored, if it was ever taken.
    pub async fn lease(&self, name: &str) -> Result<Option<LeaseRecord>> {
        let now = self.now_ms();
        let sql =
            format!("SELECT holder, version, expires_at_ms - {now} FROM leases WHERE name = $1");
        let row: Option<(String, i64, i64)> = super::on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(name).fetch_optional(pool).await?
        });
        Ok(row.map(|(holder, version, remaining)| LeaseRecord {
            holder,
            version,
            expires_in: Duration::from_millis(u64::try_from(remaining).unwrap_or(0)),
        }))
    }

    /// This store, with every job write refused unless `fence` still holds:
    /// what a leader's controller writes through for one term.
    pub fn fenced(&self, fence: Fence) -> Store {
        let now = self.now_ms();
        let lock = match self.pool {
            Pool::Sqlite(_) => "",
            // A takeover's write waits for ours, and ours for it.
            Pool::Postgres(_) => " FOR SHARE",
        };
        let sql = format!(
            "SELECT version FROM leases \
             WHERE name = $1 AND holder = $2 AND version = $3 AND expires_at_ms > {now}{lock}"
        );
        Store {
            fence: Some(Arc::new(FenceCheck { fence, sql })),
            ..self.clone()
        }
    }

    /// The fence this store writes under, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_deref().map(|check| &check.fence)
    }
}

/// Refuses the write under way unless this store's fence still holds; run
/// first in the write's transaction.
macro_rules! check_fence {
    ($store:expr, $tx:expr) => {
        if let Some(check) = &$store.fence {
            let held: Option<(i64,)> = sqlx::query_as(&check.sql)
                .bind(&check.fence.lease)
                .bind(&check.fence.holder)
                .bind(check.fence.version)
                .fetch_optional(&mut *$tx)
                .await?;
            if held.is_none() {
                return Err($crate::store::StoreError::Fenced {
                    lease: check.fence.lease.clone(),
                    version: check.fence.version,
                });
            }
        }
    };
}
pub(super) use check_fence;

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
