//! The SQL. Each query text is valid on SQLite and PostgreSQL alike
//! (`$n` placeholders, portable types); `on_pool!` compiles it for both.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::changes::{Change, announce};
use super::columns::{attempt_column, corrupt, parse_role};
use super::lease::check_fence;
use super::stream::{StreamBody, StreamEntry, insert_status, take_positions};
use super::{Pool, on_pool, on_pool_write};
use crate::job::plan::Transition;
use crate::job::workload::AgentReports;
use crate::job::{Job, JobId, JobSpec, JobStatus, Phase, Role};
use crate::store::{
    AgentLog, AgentReport, AuditRecord, DiffRecord, JobEvent, JobFilter, ReportOutcome,
    TelemetrySample, TelemetrySource,
};
use crate::store::{Result, Store, StoreError, StoreEvent};
use sqlx::Row;

/// Telemetry samples kept per agent (job, role and attempt) and source;
/// older ones go.
pub const TELEMETRY_KEPT: i64 = 1000;

pub(super) const JOB_COLUMNS: &str = "job_id, created_at, spec, status_detail, resource_version";

/// The project and the priority are written once: they never change (nor
/// does the task, but that column is rewritten with the rest).
/// A new job holds its first stream position (its status entry) from its
/// insert on: the counter starts at [`FIRST_POSITION`], not taken by a
/// second statement.
const INSERT_JOB: &str = "INSERT INTO jobs (task, project_path, status, builder_container_id, \
     checker_container_id, completed_at, error_message, spec, status_detail, updated_at, \
     run_ended_at, run_seconds, purged_at, \
     job_id, created_at, resource_version, project_id, priority, stream_seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

/// A new job's status entry: the first position of its stream.
const FIRST_POSITION: i64 = 1;

/// The compare-and-swap: only the version the writer read may be replaced.
const UPDATE_JOB: &str = "UPDATE jobs SET task = $1, project_path = $2, status = $3, \
     builder_container_id = $4, checker_container_id = $5, completed_at = $6, \
     error_message = $7, spec = $8, status_detail = $9, updated_at = $10, \
     run_ended_at = $11, run_seconds = $12, purged_at = $13, \
     resource_version = resource_version + 1 \
     WHERE job_id = $14 AND resource_version = $15";

const INSERT_EVENT: &str = "INSERT INTO job_events \
     (job_id, from_phase, to_phase, reason, message, resource_version, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// A decision as the spec took it; one already recorded at its position stays.
const INSERT_APPROVAL: &str = "INSERT INTO job_approvals \
     (job_id, position, approved, decided_by, comment, snapshot, decided_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id, position) DO NOTHING";

pub(super) const UNFINISHED: &str =
    "('pending', 'building', 'checking', 'awaiting_approval', 'approved')";

/// Binds the thirteen columns that every job write sets, as `$1`..`$13`.
macro_rules! bind_job_columns {
    ($query:expr, $job:expr, $now:expr) => {{
        let slot = $job.status.slot_held();
        $query
            .bind(&$job.spec.task)
            .bind(&$job.spec.project_path)
            .bind($job.status.phase.as_str())
            .bind($job.status.builder.workload_id.as_deref())
            .bind($job.status.checker.workload_id.as_deref())
            .bind($job.status.times.finished_at)
            .bind($job.status.error_message.as_deref())
            .bind(Json(&$job.spec))
            .bind(Json(&$job.status))
            .bind($now)
            .bind(slot.map(|(ended, _)| ended))
            .bind(slot.map(|(_, held)| held.as_seconds_f64()))
            .bind($job.status.times.purged_at)
    }};
}

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    job_id: String,
    created_at: DateTime<Utc>,
    spec: Json<JobSpec>,
    status_detail: Json<JobStatus>,
    resource_version: i64,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Job> {
        let id = row
            .job_id
            .parse()
            .map_err(|e: crate::job::InvalidJobId| StoreError::Corrupt {
                id: row.job_id.clone(),
                detail: e.to_string(),
            })?;
        Ok(Job {
            id,
            created_at: row.created_at,
            spec: row.spec.0,
            status: row.status_detail.0,
            resource_version: row.resource_version,
        })
    }
}

#[derive(sqlx::FromRow)]
struct TelemetryRow {
    timestamp: DateTime<Utc>,
    cpu_usage: Option<f64>,
    ram_usage_mb: Option<f64>,
    current_tool: Option<String>,
    role: String,
    attempt: i32,
    source: String,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    from_phase: Option<String>,
    to_phase: String,
    reason: String,
    message: Option<String>,
    resource_version: i64,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    job_id: String,
    from_phase: Option<String>,
    to_phase: String,
    reason: String,
    message: Option<String>,
    resource_version: i64,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ReportRow {
    role: String,
    attempt: i32,
    outcome: String,
    message: Option<String>,
    created_at: DateTime<Utc>,
}

fn parse_phase(job: JobId, text: &str) -> Result<Phase> {
    text.parse()
        .map_err(|_| corrupt(job, format!("unknown phase '{text}'")))
}

/// Inserts one telemetry row in transaction `$tx` and prunes the agent's
/// oldest rows of the same source past [`TELEMETRY_KEPT`]: an agent
/// reporting for hours cannot grow the store past a known size.
macro_rules! insert_telemetry {
    ($tx:expr, $job:expr, $sample:expr) => {{
        let sample: &TelemetrySample = $sample;
        sqlx::query(
            "INSERT INTO telemetry (job_id, timestamp, cpu_usage, ram_usage_mb, current_tool, \
             role, attempt, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind($job.to_string())
        .bind(sample.timestamp)
        .bind(sample.cpu_usage)
        .bind(sample.ram_usage_mb)
        .bind(sample.current_tool.as_deref())
        .bind(sample.role.as_str())
        .bind($crate::store::sql::columns::attempt_column(sample.attempt))
        .bind(sample.source.as_str())
        .execute($tx)
        .await?;
        sqlx::query(
            "DELETE FROM telemetry WHERE job_id = $1 AND role = $2 AND attempt = $3 \
             AND source = $4 AND id <= (SELECT id FROM telemetry WHERE job_id = $1 \
             AND role = $2 AND attempt = $3 AND source = $4 ORDER BY id DESC LIMIT 1 OFFSET $5)",
        )
        .bind($job.to_string())
        .bind(sample.role.as_str())
        .bind($crate::store::sql::columns::attempt_column(sample.attempt))
        .bind(sample.source.as_str())
        .bind($crate::store::sql::queries::TELEMETRY_KEPT)
        .execute($tx)
        .await?;
    }};
}
pub(super) use insert_telemetry;

impl Store {
    /// Stores a new job at version 1 and logs its creation.
    pub async fn create_job(&self, job: &Job) -> Result<Job> {
        let mut stored = job.clone();
        stored.resource_version = 1;
        let now = Utc::now();
        self.insert_new_job(&stored, now).await?;
        self.view.job_changed(stored.id);
        self.publish(StoreEvent::JobWritten(stored.clone().into()));
        self.publish_status(&stored, FIRST_POSITION, now);
        Ok(stored)
    }

    /// Inserts each of `jobs` (at version 1, created at the time beside
    /// it) in one transaction: its row, its creation event and its status,
    /// the first entry of its stream. On SQLite the caller holds the write
    /// lane (see [`super::new_jobs`]).
    pub(super) async fn insert_jobs(&self, jobs: &[(&Job, DateTime<Utc>)]) -> Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (stored, now) in jobs {
                let id = stored.id.to_string();
                bind_job_columns!(sqlx::query(INSERT_JOB), stored, now)
                    .bind(&id)
                    .bind(stored.created_at)
                    .bind(stored.resource_version)
                    .bind(&stored.spec.project_id)
                    .bind(stored.spec.priority)
                    .bind(FIRST_POSITION)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(INSERT_EVENT)
                    .bind(&id)
                    .bind(None::<&str>)
                    .bind(stored.status.phase.as_str())
                    .bind(stored.status.reason.to_string())
                    .bind(None::<&str>)
                    .bind(stored.resource_version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                insert_status!(tx, &id, FIRST_POSITION, &stored.status, now);
                announce!(self, tx, Change::Job, stored.id);
                let first = Change::Stream { first: FIRST_POSITION, last: FIRST_POSITION };
                announce!(self, tx, first, stored.id);
            }
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1");
        let row: Option<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_string()).fetch_optional(pool).await?
        });
        row.map(Job::try_from).transpose()
    }

    /// Jobs newest first, as the `GET /jobs` listing shows them.
    pub async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>> {
        let listing = Listing::of(&filter, JOB_COLUMNS);
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&listing.sql);
            for value in &listing.values {
                query = query.bind(value.as_str());
            }
            query.bind(listing.limit).fetch_all(pool).await?
        });
        rows.into_iter().map(Job::try_from).collect()
    }

    /// How the database would read the listing of `filter` (its ids, as
    /// [`list_job_ids`](Self::list_job_ids) asks): SQLite's query plan, or PostgreSQL's with table scans and
    /// sorts discouraged (on a small table it would otherwise take them
    /// whatever its indexes; one that remains means no index can serve),
    /// one line per step. What the tests check for full scans.
    pub async fn explain_list_jobs(&self, filter: JobFilter) -> Result<Vec<String>> {
        let listing = Listing::of(&filter, "job_id");
        let lines = match &self.pool {
            Pool::Sqlite(pool) => {
                let sql = format!("EXPLAIN QUERY PLAN {}", listing.sql);
                let mut query = sqlx::query(&sql);
                for value in &listing.values {
                    query = query.bind(value.as_str());
                }
                let rows = query.bind(listing.limit).fetch_all(pool).await?;
                rows.iter()
                    .map(|row| row.try_get::<String, _>("detail"))
                    .collect::<std::result::Result<_, _>>()?
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
                    sqlx::query(&format!("SET LOCAL {setting} = off"))
                        .execute(&mut *tx)
                        .await?;
                }
                let sql = format!("EXPLAIN {}", listing.sql);
                let mut query = sqlx::query(&sql);
                for value in &listing.values {
                    query = query.bind(value.as_str());
                }
                let rows = query.bind(listing.limit).fetch_all(&mut *tx).await?;
                rows.iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect::<std::result::Result<_, _>>()?
            }
        };
        Ok(lines)
    }

    /// Every job not yet in a terminal phase, oldest first, whole. The
    /// controller and the queue in memory read less: `queue_entries`,
    /// `unfinished_beyond_pending`.
    pub async fn unfinished_jobs(&self) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN {UNFINISHED} ORDER BY created_at, id"
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        rows.into_iter().map(Job::try_from).collect()
    }

    /// How many jobs are in each phase; phases with none are left out. A
    /// phase this version does not know (another version wrote it) is not
    /// counted. One scan of the status index.
    pub async fn count_jobs_by_phase(&self) -> Result<Vec<(Phase, i64)>> {
        let sql = "SELECT status, COUNT(*) FROM jobs GROUP BY status";
        let rows: Vec<(String, i64)> =
            on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .filter_map(|(phase, count)| Some((phase.parse().ok()?, count)))
            .collect())
    }

    /// Writes `job` if the stored version is still `job.resource_version`, and
    /// logs `transition` in the same transaction. Returns the job as stored,
    /// with its new version; a lost race returns [`StoreError::Conflict`],
    /// and on a fenced store a lost lease [`StoreError::Fenced`].
    pub async fn update_job(&self, job: &Job, transition: Option<&Transition>) -> Result<Job> {
        self.write_job(job, transition, None).await
    }

    /// [`update_job`](Self::update_job) for a spec change: the decisions of
    /// `job.spec.approvals` from index `new_decisions` on are new, and are
    /// recorded in `job_approvals` in the same transaction.
    pub(crate) async fn update_job_spec(&self, job: &Job, new_decisions: usize) -> Result<Job> {
        self.write_job(job, None, Some(new_decisions)).await
    }

    async fn write_job(
        &self,
        job: &Job,
        transition: Option<&Transition>,
        new_decisions: Option<usize>,
    ) -> Result<Job> {
        let now = Utc::now();
        let id = job.id.to_string();
        let mut stored = job.clone();
        stored.resource_version += 1;
        let (updated, seq) = on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            check_fence!(self, tx);
            let mut seq = None;
            let result = bind_job_columns!(sqlx::query(UPDATE_JOB), job, now)
                .bind(&id)
                .bind(job.resource_version)
                .execute(&mut *tx)
                .await?;
            let updated = result.rows_affected() == 1;
            if updated && let Some(transition) = transition {
                sqlx::query(INSERT_EVENT)
                    .bind(&id)
                    .bind(transition.from.as_str())
                    .bind(transition.to.as_str())
                    .bind(transition.reason.to_string())
                    .bind(transition.message.as_deref())
                    .bind(stored.resource_version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let at = take_positions!(tx, &id, 1_i64);
                insert_status!(tx, &id, at, &job.status, now);
                announce!(self, tx, Change::Stream { first: at, last: at }, job.id);
                seq = Some(at);
            }
            if updated && let Some(first) = new_decisions {
                let decisions = job.spec.approvals.iter().enumerate().skip(first);
                for (position, decision) in decisions {
                    sqlx::query(INSERT_APPROVAL)
                        .bind(&id)
                        .bind(i32::try_from(position).unwrap_or(i32::MAX))
                        .bind(decision.approved)
                        .bind(decision.decided_by.as_deref())
                        .bind(&decision.comment)
                        .bind(decision.snapshot.as_deref())
                        .bind(decision.decided_at)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if updated {
                announce!(self, tx, Change::Job, job.id);
            }
            tx.commit().await?;
            (updated, seq)
        });
        if updated {
            self.view.job_changed(job.id);
        }
        if !updated {
            return match self.get_job(job.id).await? {
                Some(_) => Err(StoreError::Conflict {
                    id: job.id,
                    expected: job.resource_version,
                }),
                None => Err(StoreError::NotFound(job.id)),
            };
        }
        let stored = Arc::new(stored);
        self.publish(StoreEvent::JobWritten(stored.clone()));
        if let Some(transition) = transition {
            self.publish(StoreEvent::Transitioned {
                job: stored.clone(),
                transition: transition.clone(),
            });
        }
        if let Some(seq) = seq {
            self.publish_status(&stored, seq, now);
        }
        Ok(Arc::unwrap_or_clone(stored))
    }

    /// Broadcasts the status entry a write put at `seq` of the job's stream.
    fn publish_status(&self, job: &Job, seq: i64, at: DateTime<Utc>) {
        let entry = StreamEntry {
            seq,
            body: StreamBody::Status {
                status: Box::new(job.status.clone()),
                at,
            },
        };
        self.publish_stream(job.id, Arc::from([entry]));
    }

    pub async fn record_telemetry(&self, job: JobId, sample: &TelemetrySample) -> Result<()> {
        on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_telemetry!(&mut *tx, job, sample);
            announce!(self, tx, Change::Facts, job);
            tx.commit().await?;
        });
        self.view.forget(job);
        Ok(())
    }

    /// How many progress samples are kept for the job (at most
    /// [`TELEMETRY_KEPT`] per agent and attempt).
    pub async fn telemetry_kept(&self, job: JobId) -> Result<i64> {
        let sql = "SELECT COUNT(*) FROM telemetry WHERE job_id = $1";
        let (count,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(job.to_string()).fetch_one(pool).await?
        });
        Ok(count)
    }

    /// The most recent telemetry row from `source`, if any.
    pub async fn latest_telemetry(
        &self,
        job: JobId,
        source: TelemetrySource,
    ) -> Result<Option<TelemetrySample>> {
        let sql = "SELECT timestamp, cpu_usage, ram_usage_mb, current_tool, role, attempt, source \
                   FROM telemetry WHERE job_id = $1 AND source = $2 ORDER BY id DESC LIMIT 1";
        let row: Option<TelemetryRow> = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(job.to_string())
                .bind(source.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(|row| {
            Ok(TelemetrySample {
                timestamp: row.timestamp,
                cpu_usage: row.cpu_usage,
                ram_usage_mb: row.ram_usage_mb,
                current_tool: row.current_tool,
                role: parse_role(job, &row.role)?,
                attempt: u32::try_from(row.attempt).unwrap_or(0),
                source: TelemetrySource::parse(&row.source)
                    .ok_or_else(|| corrupt(job, format!("unknown source '{}'", row.source)))?,
            })
        })
        .transpose()
    }

    pub async fn record_audit(&self, job: JobId, record: &AuditRecord) -> Result<()> {
        let sql = "INSERT INTO audit_logs (job_id, audit_report, created_at, attempt) VALUES ($1, $2, $3, $4)";
        on_pool_write!(self, pool => {
            sqlx::query(sql)
                .bind(job.to_string())
                .bind(Json(&record.report))
                .bind(record.created_at)
                .bind(attempt_column(record.attempt))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The most recent audit report, if the checker posted one.
    pub async fn latest_audit(&self, job: JobId) -> Result<Option<AuditRecord>> {
        let sql = "SELECT audit_report, created_at, attempt FROM audit_logs \
                   WHERE job_id = $1 ORDER BY id DESC LIMIT 1";
        let row: Option<(Json<serde_json::Value>, DateTime<Utc>, i32)> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(job.to_string()).fetch_optional(pool).await?
        });
        Ok(row.map(|(report, created_at, attempt)| AuditRecord {
            report: report.0,
            created_at,
            attempt: u32::try_from(attempt).unwrap_or(0),
        }))
    }

    /// Stores a completion or error report and wakes whoever watches the job.
    pub async fn record_agent_report(&self, job: JobId, report: &AgentReport) -> Result<()> {
        let sql = "INSERT INTO agent_reports (job_id, role, attempt, outcome, message, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql)
                .bind(job.to_string())
                .bind(report.role.as_str())
                .bind(attempt_column(report.attempt))
                .bind(report.outcome.as_str())
                .bind(report.message.as_deref())
                .bind(report.created_at)
                .execute(&mut *tx)
                .await?;
            announce!(self, tx, Change::Report, job);
            tx.commit().await?;
        });
        self.publish(StoreEvent::AgentReported(job));
        Ok(())
    }

    /// Every report of one attempt, oldest first.
    pub async fn agent_reports(&self, job: JobId, attempt: u32) -> Result<Vec<AgentReport>> {
        let sql = "SELECT role, attempt, outcome, message, created_at FROM agent_reports \
                   WHERE job_id = $1 AND attempt = $2 ORDER BY id";
        let rows: Vec<ReportRow> = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(job.to_string())
                .bind(attempt_column(attempt))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|row| {
                let outcome = match row.outcome.as_str() {
                    "completed" => ReportOutcome::Completed,
                    "error" => ReportOutcome::Error,
                    other => return Err(corrupt(job, format!("unknown report outcome '{other}'"))),
                };
                Ok(AgentReport {
                    role: parse_role(job, &row.role)?,
                    attempt: u32::try_from(row.attempt).unwrap_or(0),
                    outcome,
                    message: row.message,
                    created_at: row.created_at,
                })
            })
            .collect()
    }

    /// What the agents of one attempt reported, as the planner sees it.
    pub async fn observed_reports(&self, job: JobId, attempt: u32) -> Result<AgentReports> {
        let mut observed = AgentReports::default();
        for report in self.agent_reports(job, attempt).await? {
            if report.outcome == ReportOutcome::Error {
                let message = report.message.unwrap_or_else(|| "no message".to_owned());
                match report.role {
                    Role::Builder => observed.builder_error.get_or_insert(message),
                    Role::Checker => observed.checker_error.get_or_insert(message),
                };
            }
        }
        observed.audit_report_received = self
            .latest_audit(job)
            .await?
            .is_some_and(|audit| audit.attempt == attempt);
        Ok(observed)
    }

    /// The job's transitions, oldest first.
    pub async fn job_events(&self, job: JobId) -> Result<Vec<JobEvent>> {
        let sql = "SELECT from_phase, to_phase, reason, message, resource_version, created_at \
                   FROM job_events WHERE job_id = $1 ORDER BY id";
        let rows: Vec<EventRow> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(job.to_string()).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|row| {
                Ok(JobEvent {
                    from: row.from_phase.map(|p| parse_phase(job, &p)).transpose()?,
                    to: parse_phase(job, &row.to_phase)?,
                    reason: row.reason.into(),
                    message: row.message,
                    resource_version: row.resource_version,
                    created_at: row.created_at,
                })
            })
            .collect()
    }

    /// Saves an agent's output; saving the same agent again replaces it.
    pub async fn save_agent_log(&self, job: JobId, log: &AgentLog) -> Result<()> {
        let sql = "INSERT INTO agent_logs (job_id, role, attempt, workload_id, log, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6) \
                   ON CONFLICT (job_id, role, attempt) \
                   DO UPDATE SET workload_id = excluded.workload_id, log = excluded.log, created_at = excluded.created_at";
        on_pool_write!(self, pool => {
            sqlx::query(sql)
                .bind(job.to_string())
                .bind(log.role.as_str())
                .bind(attempt_column(log.attempt))
                .bind(&log.workload_id)
                .bind(&log.log)
                .bind(log.created_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The saved output of every agent of a job, in the order they were saved.
    pub async fn agent_logs(&self, job: JobId) -> Result<Vec<AgentLog>> {
        let sql = "SELECT role, attempt, workload_id, log, created_at FROM agent_logs WHERE job_id = $1 ORDER BY id";
        let rows: Vec<(String, i32, String, String, DateTime<Utc>)> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(job.to_string()).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(role, attempt, workload_id, log, created_at)| {
                Ok(AgentLog {
                    role: parse_role(job, &role)?,
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    workload_id,
                    log,
                    created_at,
                })
            })
            .collect()
    }

    /// Keeps the job's diff, replacing one captured before (a retried capture).
    pub async fn save_diff(&self, job: JobId, diff: &DiffRecord) -> Result<()> {
        let sql = "INSERT INTO job_diffs (job_id, base_commit, diff, truncated, created_at, snapshot) \
                   VALUES ($1, $2, $3, $4, $5, $6) \
                   ON CONFLICT (job_id) DO UPDATE SET base_commit = excluded.base_commit, \
                   diff = excluded.diff, truncated = excluded.truncated, \
                   created_at = excluded.created_at, snapshot = excluded.snapshot";
        on_pool_write!(self, pool => {
            sqlx::query(sql)
                .bind(job.to_string())
                .bind(diff.base_commit.as_deref())
                .bind(&diff.diff)
                .bind(diff.truncated)
                .bind(diff.created_at)
                .bind(diff.snapshot.as_deref())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The job's captured diff, if there is one yet.
    pub async fn diff(&self, job: JobId) -> Result<Option<DiffRecord>> {
        let sql = "SELECT base_commit, diff, truncated, created_at, snapshot \
                   FROM job_diffs WHERE job_id = $1";
        type Row = (Option<String>, String, bool, DateTime<Utc>, Option<String>);
        let row: Option<Row> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(job.to_string()).fetch_optional(pool).await?
        });
        Ok(row.map(
            |(base_commit, diff, truncated, created_at, snapshot)| DiffRecord {
                base_commit,
                snapshot,
                diff,
                truncated,
                created_at,
            },
        ))
    }

    /// Transitions after event `after`, oldest first, into any of `phases`:
    /// job_events doubles as the notification outbox.
    pub async fn events_after(
        &self,
        after: i64,
        phases: &[Phase],
        limit: i64,
    ) -> Result<Vec<(i64, JobId, JobEvent)>> {
        if phases.is_empty() {
            return Ok(Vec::new());
        }
        // Phase names are our own constants, so they can be spelled into the SQL.
        let wanted: Vec<String> = phases.iter().map(|p| format!("'{}'", p.as_str())).collect();
        let sql = format!(
            "SELECT id, job_id, from_phase, to_phase, reason, message, resource_version, created_at \
             FROM job_events WHERE id > $1 AND to_phase IN ({}) ORDER BY id LIMIT $2",
            wanted.join(", ")
        );
        let rows: Vec<OutboxRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(after).bind(limit).fetch_all(pool).await?
        });
        let mut events = Vec::new();
        for row in rows {
            let job: JobId = row.job_id.parse().map_err(|_| StoreError::Corrupt {
                id: row.job_id.clone(),
                detail: format!("job_events row {} names no valid job", row.id),
            })?;
            let event = JobEvent {
                from: row.from_phase.map(|p| parse_phase(job, &p)).transpose()?,
                to: parse_phase(job, &row.to_phase)?,
                reason: row.reason.into(),
                message: row.message,
                resource_version: row.resource_version,
                created_at: row.created_at,
            };
            events.push((row.id, job, event));
        }
        Ok(events)
    }

    /// The id of the newest transition, 0 when there is none.
    pub async fn last_event_id(&self) -> Result<i64> {
        let sql = "SELECT COALESCE(MAX(id), 0) FROM job_events";
        let (id,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as(sql).fetch_one(pool).await?
        });
        Ok(id)
    }

    /// How far a notification target has been sent, if it has a cursor yet.
    pub async fn notification_cursor(&self, target: &str) -> Result<Option<i64>> {
        let sql = "SELECT last_event_id FROM notification_cursors WHERE target = $1";
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(target).fetch_optional(pool).await?
        });
        Ok(row.map(|(id,)| id))
    }

    pub async fn set_notification_cursor(&self, target: &str, last_event_id: i64) -> Result<()> {
        let sql = "INSERT INTO notification_cursors (target, last_event_id) VALUES ($1, $2) \
                   ON CONFLICT (target) DO UPDATE SET last_event_id = excluded.last_event_id";
        on_pool_write!(self, pool => {
            sqlx::query(sql).bind(target).bind(last_event_id).execute(pool).await?;
        });
        Ok(())
    }
}

/// The SQL of a listing and the values it binds, in order, before its limit.
/// A listing's query: `columns` of the jobs `filter` names, newest first.
pub(super) struct Listing {
    pub sql: String,
    pub values: Vec<String>,
    pub limit: i64,
}

impl Listing {
    pub fn of(filter: &JobFilter, columns: &str) -> Listing {
        // Each condition with `$?` where its value is bound.
        let conditions: Vec<(&str, String)> = [
            ("status = $?", filter.phase.map(|p| p.as_str().to_owned())),
            ("project_id = $?", filter.project_id.clone()),
            // Keyset: the rows that sort after the cursor's, by the index
            // the order uses (none if the cursor's job is gone).
            (
                "(created_at, id) < (SELECT created_at, id FROM jobs WHERE job_id = $?)",
                filter.after.map(|id| id.to_string()),
            ),
        ]
        .into_iter()
        .filter_map(|(condition, value)| Some((condition, value?)))
        .collect();
        let clauses: Vec<String> = conditions
            .iter()
            .enumerate()
            .map(|(n, (condition, _))| condition.replace("$?", &format!("${}", n + 1)))
            .collect();
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        Listing {
            sql: format!(
                "SELECT {columns} FROM jobs {filter_sql} ORDER BY created_at DESC, id DESC LIMIT ${}",
                conditions.len() + 1
            ),
            values: conditions.into_iter().map(|(_, value)| value).collect(),
            limit: i64::from(filter.limit),
        }
    }
}
