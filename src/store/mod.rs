//! Where state is kept: desired state and history.
//!
//! - [`sql`]: the [`Store`] itself, on SQLite or PostgreSQL; every mode keeps
//!   its jobs there.
//! - [`kubernetes`]: in Kubernetes mode, the IcarusJob resources in front of
//!   it: resources into the store, statuses and Events back, and the REST
//!   routes' writes onto the resource first.
//!
//! Every job write is a compare-and-swap on `resource_version`: the writer
//! names the version it read, and a write that lost a race fails with
//! [`StoreError::Conflict`] instead of overwriting. After each successful write
//! the store broadcasts a [`StoreEvent`], which wakes the controller and feeds
//! the WebSocket streams, so nothing has to poll. Spec writes go through
//! [`Store::update_spec`], which reads and decides again after a lost race.

pub mod kubernetes;
mod records;
mod spec;
pub mod sql;
mod unavailable;
pub mod view;

use std::sync::Arc;

use crate::job::plan::Transition;
use crate::job::{Job, JobId};

pub use records::{
    AgentLog, AgentReport, AgentUsage, AuditRecord, DiffRecord, EgressAllowance, EgressTraffic,
    EgressVerdict, JobEvent, JobFilter, ReportOutcome, TelemetrySample, TelemetrySource,
};
pub use spec::{SPEC_WRITE_ATTEMPTS, SpecChange, SpecUpdate, SpecWrite};
pub use sql::queue::{QueueHold, QueueLevers, RECENT_RUNS, ReplicaDrain};
pub use sql::{
    EgressTally, Fence, LeaseRecord, LogLine, LogResume, MAX_EGRESS_DESTINATIONS, SoleUse, Store,
    StreamBody, StreamEntry, StreamQuery, TELEMETRY_KEPT, UsageReading,
};
pub use unavailable::Unavailable;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("job {id} was changed by another writer since version {expected}")]
    Conflict { id: JobId, expected: i64 },
    #[error("job {id} kept changing: {attempts} writes of its spec lost their race")]
    KeptChanging { id: JobId, attempts: u32 },
    #[error("cannot create the database directory {path}")]
    CreateDirectory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stored job {id} cannot be read: {detail}")]
    Corrupt { id: String, detail: String },
    /// An outage: the same call succeeds once the database is back.
    #[error("the database is {why}")]
    Unavailable {
        why: Unavailable,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The SQLite file the store opened is gone or is another file now:
    /// writing on would go to a file no one will read, or to an empty one.
    #[error("the database file {path} was removed or replaced after start")]
    FileReplaced { path: String },
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A fenced write (a leader's) found its lease lost or expired: another
    /// replica may lead now, and this write must not land over its writes.
    #[error("the write was refused: lease {lease} is no longer held at version {version}")]
    Fenced { lease: String, version: i64 },
    /// Another process serves this SQLite file already.
    #[error(
        "the SQLite database {path} is already served by another icarus process; \
         SQLite serves one process (run replicas on PostgreSQL)"
    )]
    InUse { path: String },
    #[error("cannot lock {path}")]
    Lock {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// What a database error is counted as (`icarus_database_errors_total`):
    /// an outage by its kind, a file replaced, or a fault. `None` for what is
    /// not the database's failure (a lost race, a fenced write, a missing job).
    pub fn database_error_kind(&self) -> Option<&'static str> {
        match self {
            StoreError::Unavailable { why, .. } => Some(why.label()),
            StoreError::FileReplaced { .. } => Some("file_replaced"),
            StoreError::Database(_) => Some("fault"),
            _ => None,
        }
    }
}

/// Every database error is sorted here, once: an outage, or a fault.
impl From<sqlx::Error> for StoreError {
    fn from(source: sqlx::Error) -> Self {
        match Unavailable::of(&source) {
            Some(why) => StoreError::Unavailable { why, source },
            None => StoreError::Database(source),
        }
    }
}

/// Something changed; subscribers re-read what they care about.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// A job was created or written; this is the version now stored.
    JobWritten(Arc<Job>),
    /// An agent reported completion or an error through the callback.
    AgentReported(JobId),
    /// A write changed the job's phase (sent after its `JobWritten`).
    Transitioned {
        job: Arc<Job>,
        transition: Transition,
    },
    /// The queue was held or released, a replica drained or resumed:
    /// pending jobs look again.
    QueueChanged,
}

/// Positions were written to a job's stream (lines, a transition): these
/// entries, in order. Appends may be published out of order. Broadcast
/// apart from [`StoreEvent`]s, so that a noisy agent's lines never push
/// a job write out of a slow subscriber's reach.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub job: JobId,
    pub entries: Arc<[StreamEntry]>,
}

impl StoreEvent {
    /// The job the event is about; none for the queue's.
    pub fn job_id(&self) -> Option<JobId> {
        match self {
            StoreEvent::JobWritten(job) | StoreEvent::Transitioned { job, .. } => Some(job.id),
            StoreEvent::AgentReported(id) => Some(*id),
            StoreEvent::QueueChanged => None,
        }
    }
}
