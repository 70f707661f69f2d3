//! Each job's ordered stream: its agents' output line by line and its phase
//! transitions, in one table (`job_stream`) at positions (`seq`) from one
//! per-job counter (`jobs.stream_seq`).
//!
//! A writer takes its positions with `UPDATE jobs SET stream_seq = ...
//! RETURNING`, which holds the job's row until the transaction commits: two
//! writers of one job take turns, so positions become visible in the order
//! they were given, and a reader that saw position N has seen every position
//! before it. Each append is broadcast with its entries (subscribers in this
//! process need no read) and, on PostgreSQL, announced with its range to the
//! other replicas, whose relay reads the range once for all its subscribers.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::changes::{Change, announce};
use super::columns::{attempt_column, corrupt, parse_role};
use super::lease::check_fence;
use super::{on_pool, on_pool_write};
use crate::job::{JobId, JobStatus, Role};
use crate::logs::LogStream;
use crate::store::{EgressTraffic, EgressVerdict, Result, Store};

/// One line an agent printed, or one Icarus wrote about its output (a
/// summary of dropped lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub role: Role,
    pub attempt: u32,
    pub stream: LogStream,
    pub message: String,
    /// When the agent printed it, as its runtime says.
    pub at: DateTime<Utc>,
    /// Written by Icarus about the agent's output, not by the agent.
    pub note: bool,
}

/// What sits at one position of a job's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamBody {
    Log(LogLine),
    /// The job's status as a transition left it.
    Status {
        status: Box<JobStatus>,
        at: DateTime<Utc>,
    },
    /// An agent's first connection through the egress proxy to one
    /// destination under one verdict (allowed, refused, unlisted): what it
    /// reaches and asks for, as it happens. The connections after are only
    /// counted (`GET /jobs/{id}/egress`), so an agent adds at most a bounded
    /// number of these.
    Egress(EgressTraffic),
}

/// One position of a job's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    pub seq: i64,
    pub body: StreamBody,
}

impl StreamEntry {
    pub fn at(&self) -> DateTime<Utc> {
        match &self.body {
            StreamBody::Log(line) => line.at,
            StreamBody::Status { at, .. } => *at,
            StreamBody::Egress(traffic) => traffic.first_at,
        }
    }
}

/// Where a follower of one agent resumes: after the last line it stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogResume {
    /// The timestamp of the agent's last stored line, if it has one.
    pub last_at: Option<DateTime<Utc>>,
    /// How many of its stored lines have exactly that timestamp: as many
    /// lines with it are skipped when the runtime sends them again.
    pub lines_at_last: u32,
    /// The length of every line stored, against the agent's budget.
    pub kept: u64,
}

/// Takes `count` positions of `$job`'s stream in transaction `$tx`;
/// evaluates to the last one.
macro_rules! take_positions {
    ($tx:expr, $job:expr, $count:expr) => {{
        let (last,): (i64,) = sqlx::query_as(
            "UPDATE jobs SET stream_seq = stream_seq + $1 WHERE job_id = $2 RETURNING stream_seq",
        )
        .bind($count)
        .bind($job)
        .fetch_one(&mut *$tx)
        .await?;
        last
    }};
}
pub(super) use take_positions;

const INSERT_ENTRY: &str = "INSERT INTO job_stream \
     (job_id, seq, kind, role, attempt, stream, message, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Inserts a status entry at `$seq` in transaction `$tx`.
macro_rules! insert_status {
    ($tx:expr, $job:expr, $seq:expr, $status:expr, $at:expr) => {
        sqlx::query($crate::store::sql::stream::INSERT_STATUS)
            .bind($job)
            .bind($seq)
            .bind(serde_json::to_string($status).unwrap_or_default())
            .bind($at)
            .execute(&mut *$tx)
            .await?
    };
}
pub(super) use insert_status;

pub(super) const INSERT_STATUS: &str = "INSERT INTO job_stream \
     (job_id, seq, kind, message, created_at) VALUES ($1, $2, 'status', $3, $4)";

const ENTRY_COLUMNS: &str = "seq, kind, role, attempt, stream, message, created_at";

#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    kind: String,
    role: Option<String>,
    attempt: Option<i32>,
    stream: Option<String>,
    message: String,
    created_at: DateTime<Utc>,
}

impl EntryRow {
    fn into_entry(self, job: JobId) -> Result<StreamEntry> {
        let body = match self.kind.as_str() {
            "status" => StreamBody::Status {
                status: serde_json::from_str(&self.message)
                    .map_err(|e| corrupt(job, format!("stream entry {}: {e}", self.seq)))?,
                at: self.created_at,
            },
            kind @ ("log" | "note") => StreamBody::Log(LogLine {
                role: parse_role(job, self.role.as_deref().unwrap_or_default())?,
                attempt: self
                    .attempt
                    .and_then(|a| u32::try_from(a).ok())
                    .unwrap_or(0),
                stream: self
                    .stream
                    .as_deref()
                    .and_then(LogStream::parse)
                    .unwrap_or(LogStream::Stderr),
                message: self.message,
                at: self.created_at,
                note: kind == "note",
            }),
            "egress" => {
                let record: EgressRecord = serde_json::from_str(&self.message)
                    .map_err(|e| corrupt(job, format!("stream entry {}: {e}", self.seq)))?;
                StreamBody::Egress(EgressTraffic {
                    role: parse_role(job, self.role.as_deref().unwrap_or_default())?,
                    attempt: self
                        .attempt
                        .and_then(|a| u32::try_from(a).ok())
                        .unwrap_or(0),
                    host: record.host,
                    port: record.port,
                    verdict: EgressVerdict::parse(&record.verdict).ok_or_else(|| {
                        corrupt(job, format!("stream entry {}: a verdict unknown", self.seq))
                    })?,
                    reason: record.reason,
                    connections: record.connections,
                    bytes_sent: record.bytes_sent,
                    bytes_received: record.bytes_received,
                    cut_at_budget: record.cut_at_budget,
                    first_at: self.created_at,
                    last_at: record.last_at,
                })
            }
            other => return Err(corrupt(job, format!("unknown stream entry kind '{other}'"))),
        };
        Ok(StreamEntry {
            seq: self.seq,
            body,
        })
    }
}

/// An egress entry's message: the tally's fields the columns do not hold.
#[derive(serde::Serialize, serde::Deserialize)]
struct EgressRecord {
    host: String,
    port: u16,
    verdict: String,
    reason: Option<String>,
    connections: u64,
    bytes_sent: u64,
    bytes_received: u64,
    cut_at_budget: u64,
    last_at: DateTime<Utc>,
}

/// Which entries a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamQuery {
    /// Entries after this position.
    pub after: i64,
    /// Up to this position (`None`: the newest).
    pub until: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

impl Store {
    /// Appends `lines` to the job's stream (fenced on a leader's store: a
    /// replica whose term ended writes nothing more), and broadcasts them.
    pub async fn append_log(&self, job: JobId, lines: &[LogLine]) -> Result<Arc<[StreamEntry]>> {
        if lines.is_empty() {
            return Ok(Arc::from([]));
        }
        let id = job.to_string();
        let count = i64::try_from(lines.len()).unwrap_or(i64::MAX);
        let last = on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            check_fence!(self, tx);
            let last = take_positions!(tx, &id, count);
            for (seq, line) in (last - count + 1..).zip(lines) {
                sqlx::query(INSERT_ENTRY)
                    .bind(&id)
                    .bind(seq)
                    .bind(if line.note { "note" } else { "log" })
                    .bind(line.role.as_str())
                    .bind(attempt_column(line.attempt))
                    .bind(line.stream.as_str())
                    .bind(&line.message)
                    .bind(line.at)
                    .execute(&mut *tx)
                    .await?;
            }
            announce!(self, tx, Change::Stream { first: last - count + 1, last }, job);
            tx.commit().await?;
            last
        });
        let entries: Arc<[StreamEntry]> = (last - count + 1..)
            .zip(lines)
            .map(|(seq, line)| StreamEntry {
                seq,
                body: StreamBody::Log(line.clone()),
            })
            .collect();
        self.publish_stream(job, entries.clone());
        Ok(entries)
    }

    /// Appends an agent's first connection to a destination (see
    /// [`StreamBody::Egress`]) to the job's stream, and broadcasts it.
    pub async fn append_egress(&self, job: JobId, traffic: &EgressTraffic) -> Result<()> {
        let id = job.to_string();
        let record = EgressRecord {
            host: traffic.host.clone(),
            port: traffic.port,
            verdict: traffic.verdict.as_str().to_owned(),
            reason: traffic.reason.clone(),
            connections: traffic.connections,
            bytes_sent: traffic.bytes_sent,
            bytes_received: traffic.bytes_received,
            cut_at_budget: traffic.cut_at_budget,
            last_at: traffic.last_at,
        };
        let message = serde_json::to_string(&record).unwrap_or_default();
        let seq = on_pool_write!(self, pool => {
            let mut tx = pool.begin().await?;
            let seq = take_positions!(tx, &id, 1_i64);
            sqlx::query(INSERT_ENTRY)
                .bind(&id)
                .bind(seq)
                .bind("egress")
                .bind(traffic.role.as_str())
                .bind(attempt_column(traffic.attempt))
                .bind(None::<&str>)
                .bind(&message)
                .bind(traffic.first_at)
                .execute(&mut *tx)
                .await?;
            announce!(self, tx, Change::Stream { first: seq, last: seq }, job);
            tx.commit().await?;
            seq
        });
        let entry = StreamEntry {
            seq,
            body: StreamBody::Egress(traffic.clone()),
        };
        self.publish_stream(job, Arc::from([entry]));
        Ok(())
    }

    /// The job's entries after `query.after`, oldest first.
    pub async fn stream_entries(&self, job: JobId, query: StreamQuery) -> Result<Vec<StreamEntry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM job_stream WHERE job_id = $1 AND seq > $2 AND seq <= $3 \
             ORDER BY seq LIMIT $4"
        );
        let rows: Vec<EntryRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(job.to_string())
                .bind(query.after)
                .bind(query.until.unwrap_or(i64::MAX))
                .bind(query.limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|row| row.into_entry(job)).collect()
    }

    /// The job's newest position (0: nothing yet); `None` for no such job.
    pub async fn stream_position(&self, job: JobId) -> Result<Option<i64>> {
        let sql = "SELECT stream_seq FROM jobs WHERE job_id = $1";
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as(sql).bind(job.to_string()).fetch_optional(pool).await?
        });
        Ok(row.map(|(seq,)| seq))
    }

    /// Where a follower of the agent (job, role, attempt) resumes.
    pub async fn log_resume(&self, job: JobId, role: Role, attempt: u32) -> Result<LogResume> {
        let agent = "job_id = $1 AND role = $2 AND attempt = $3 AND kind = 'log'";
        let last =
            format!("SELECT created_at FROM job_stream WHERE {agent} ORDER BY seq DESC LIMIT 1");
        let at_last = format!("SELECT COUNT(*) FROM job_stream WHERE {agent} AND created_at = $4");
        let kept =
            format!("SELECT COALESCE(SUM(LENGTH(message)), 0) FROM job_stream WHERE {agent}");
        let (id, attempt) = (job.to_string(), attempt_column(attempt));
        let resume = on_pool!(self, pool => {
            let last: Option<(DateTime<Utc>,)> = sqlx::query_as(&last)
                .bind(&id).bind(role.as_str()).bind(attempt)
                .fetch_optional(pool).await?;
            let Some((last_at,)) = last else {
                return Ok(LogResume::default());
            };
            let (lines_at_last,): (i64,) = sqlx::query_as(&at_last)
                .bind(&id).bind(role.as_str()).bind(attempt).bind(last_at)
                .fetch_one(pool).await?;
            let (kept,): (i64,) = sqlx::query_as(&kept)
                .bind(&id).bind(role.as_str()).bind(attempt)
                .fetch_one(pool).await?;
            LogResume {
                last_at: Some(last_at),
                lines_at_last: u32::try_from(lines_at_last).unwrap_or(u32::MAX),
                kept: u64::try_from(kept).unwrap_or(0),
            }
        });
        Ok(resume)
    }

    /// Reads positions `first..=last` once and broadcasts them, so this
    /// replica's subscribers of the job need no read of their own.
    pub(super) async fn relay_stream(&self, job: JobId, first: i64, last: i64) {
        let query = StreamQuery {
            after: first - 1,
            until: Some(last),
            limit: last - first + 1,
        };
        match self.stream_entries(job, query).await {
            Ok(entries) => self.publish_stream(job, entries.into()),
            Err(error) => {
                tracing::warn!(%job, error = %crate::errors::error_chain(&error), "a job's stream another replica wrote could not be read")
            }
        }
    }
}
