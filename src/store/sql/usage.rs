//! What Icarus measured of each agent: one `agent_usage` row per job, role
//! and attempt (the latest reading and the peak memory), and a measured
//! row in the telemetry series for each reading.

use chrono::{DateTime, Utc};

use super::changes::{Change, announce};
use super::columns::{attempt_column, corrupt, parse_role};
use super::queries::insert_telemetry;
use super::{on_pool, on_pool_write};
use crate::job::{JobId, Role};
use crate::store::{AgentUsage, Result, Store, TelemetrySample, TelemetrySource};

const USAGE_COLUMNS: &str =
    "role, attempt, cpu_seconds, memory_bytes, memory_peak_bytes, sampled_at";

/// One write, no read before it (a SQLite transaction that reads first and
/// writes after fails as busy when another writer came in between): the
/// latest reading moves to `previous_*`, the higher peak stays (`CASE`:
/// `max(a, b)` is SQLite's, `GREATEST` PostgreSQL's), and the row comes back.
const UPSERT_USAGE: &str = "INSERT INTO agent_usage (job_id, role, attempt, cpu_seconds, \
     memory_bytes, memory_peak_bytes, sampled_at) VALUES ($1, $2, $3, $4, $5, $5, $6) \
     ON CONFLICT (job_id, role, attempt) DO UPDATE SET \
     previous_cpu_seconds = agent_usage.cpu_seconds, \
     previous_sampled_at = agent_usage.sampled_at, \
     cpu_seconds = excluded.cpu_seconds, memory_bytes = excluded.memory_bytes, \
     memory_peak_bytes = CASE WHEN excluded.memory_peak_bytes > agent_usage.memory_peak_bytes \
     THEN excluded.memory_peak_bytes ELSE agent_usage.memory_peak_bytes END, \
     sampled_at = excluded.sampled_at \
     RETURNING role, attempt, cpu_seconds, memory_bytes, memory_peak_bytes, sampled_at, \
     previous_cpu_seconds, previous_sampled_at";

/// One reading of an agent, as the sampler hands it to the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsageReading {
    pub role: Role,
    pub attempt: u32,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub sampled_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct UsageRow {
    role: String,
    attempt: i32,
    cpu_seconds: f64,
    memory_bytes: i64,
    memory_peak_bytes: i64,
    sampled_at: DateTime<Utc>,
}

/// The upserted row, with the reading it replaced.
#[derive(sqlx::FromRow)]
struct UpsertedRow {
    #[sqlx(flatten)]
    row: UsageRow,
    previous_cpu_seconds: Option<f64>,
    previous_sampled_at: Option<DateTime<Utc>>,
}

impl UsageRow {
    fn into_usage(self, job: JobId) -> Result<AgentUsage> {
        let bytes = |value: i64| {
            u64::try_from(value).map_err(|_| corrupt(job, format!("negative memory {value}")))
        };
        Ok(AgentUsage {
            role: parse_role(job, &self.role)?,
            attempt: u32::try_from(self.attempt).unwrap_or(0),
            cpu_seconds: self.cpu_seconds,
            memory_bytes: bytes(self.memory_bytes)?,
            memory_peak_bytes: bytes(self.memory_peak_bytes)?,
            sampled_at: self.sampled_at,
        })
    }
}

/// Percent of one CPU used since the reading before; none for the first
/// reading, or when the clock did not move forward.
fn cpu_percent(row: &UpsertedRow) -> Option<f64> {
    let (previous_cpu, previous_at) = (row.previous_cpu_seconds?, row.previous_sampled_at?);
    let elapsed = (row.row.sampled_at - previous_at).as_seconds_f64();
    let used = row.row.cpu_seconds - previous_cpu;
    (elapsed > 0.0 && used >= 0.0).then(|| used / elapsed * 100.0)
}

impl Store {
    /// Records one reading of an agent: its `agent_usage` row (the peak
    /// memory only rises) and a measured telemetry sample, whose CPU is the
    /// percent of one CPU since the previous reading. Returns the row.
    pub async fn record_usage(&self, job: JobId, reading: &UsageReading) -> Result<AgentUsage> {
        let memory = i64::try_from(reading.memory_bytes).unwrap_or(i64::MAX);
        let row: UpsertedRow = on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: UpsertedRow = sqlx::query_as(UPSERT_USAGE)
                .bind(job.to_string())
                .bind(reading.role.as_str())
                .bind(attempt_column(reading.attempt))
                .bind(reading.cpu_seconds)
                .bind(memory)
                .bind(reading.sampled_at)
                .fetch_one(&mut *tx)
                .await?;
            let sample = TelemetrySample {
                timestamp: reading.sampled_at,
                cpu_usage: cpu_percent(&row),
                ram_usage_mb: Some(reading.memory_bytes as f64 / (1024.0 * 1024.0)),
                current_tool: None,
                role: reading.role,
                attempt: reading.attempt,
                source: TelemetrySource::Icarus,
            };
            insert_telemetry!(&mut *tx, job, &sample);
            announce!(self, tx, Change::Facts, job);
            tx.commit().await?;
            row
        });
        self.view.forget(job);
        row.row.into_usage(job)
    }

    /// What was measured of the job's agents in `attempt`, builder first.
    pub async fn agent_usage(&self, job: JobId, attempt: u32) -> Result<Vec<AgentUsage>> {
        let sql = format!(
            "SELECT {USAGE_COLUMNS} FROM agent_usage WHERE job_id = $1 AND attempt = $2 ORDER BY role"
        );
        let rows: Vec<UsageRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(job.to_string())
                .bind(attempt_column(attempt))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|row| row.into_usage(job)).collect()
    }
}
