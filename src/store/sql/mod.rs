//! The job store on SQL: SQLite (a file, WAL mode) by default, PostgreSQL
//! when the URL says so.
//!
//! The same queries serve both databases: [`Store`] holds one of two pools and
//! the `on_pool!` macro compiles each query once per database.
//!
//! Several processes may share one PostgreSQL database (replicas: [`lease`]
//! decides which one reconciles, [`changes`] carries each one's writes to
//! the others). A SQLite file serves one process: [`Store::claim_sole_use`]
//! makes a second `icarus serve` on the same file refuse to start.

mod approvals;
pub mod changes;
mod columns;
mod egress;
pub mod lease;
mod new_jobs;
pub(crate) mod pooled_sqlite;
mod queries;
pub mod queue;
mod reads;
mod retention;
pub mod stream;
mod usage;

pub use egress::{EgressTally, MAX_DESTINATIONS as MAX_EGRESS_DESTINATIONS};
pub use lease::{Fence, LeaseRecord};
pub use queries::TELEMETRY_KEPT;
pub use stream::{LogLine, LogResume, StreamBody, StreamEntry, StreamQuery};
pub use usage::UsageReading;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Executor};
use tokio::sync::{broadcast, watch};

use super::view::{ReadView, ViewCounters};
use super::{Result, StoreError, StoreEvent, StreamEvent};
use crate::metrics::DatabaseMetrics;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How many change events a slow subscriber may fall behind before it must re-read.
const EVENT_BUFFER: usize = 1024;
/// The same for appends to jobs' streams (a subscriber that falls behind
/// reads the database instead).
const STREAM_EVENT_BUFFER: usize = 4096;

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    events: broadcast::Sender<StoreEvent>,
    stream_events: broadcast::Sender<StreamEvent>,
    /// The SQLite file opened at start, to notice it removed or replaced.
    file: Option<FileIdentity>,
    /// Set on a leader's store: job writes are refused once its term is over.
    fence: Option<Arc<lease::FenceCheck>>,
    /// Names this connected store in its change notifications.
    origin: Arc<str>,
    /// Counts the database's errors, when given.
    metrics: Option<DatabaseMetrics>,
    /// Bumped by each egress allowance this process records, so the egress
    /// proxy here reads allowances again at once (see `egress.rs`).
    allowances_written: Arc<AtomicU64>,
    /// Jobs as the API reads them, in memory (see [`crate::store::view`]).
    view: Arc<ReadView>,
    /// This process's SQLite writes, one at a time (see [`on_pool_write!`]).
    write_lane: Arc<tokio::sync::Mutex<()>>,
    /// New jobs waiting for the write lane, to be written together.
    new_jobs: Arc<new_jobs::NewJobs>,
    /// Bumped each time other processes' changes may have been missed (see
    /// [`Store::gaps`]).
    gaps: Arc<watch::Sender<u64>>,
}

/// Held while this process serves a SQLite file: an exclusive lock on a
/// file beside it, which the kernel drops when the process ends, however.
#[derive(Debug)]
pub struct SoleUse {
    _lock: std::fs::File,
}

/// Which file a path named when the store opened it.
#[derive(Debug, Clone)]
struct FileIdentity {
    path: std::path::PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            path: path.to_owned(),
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    /// Whether the path still names the same file. SQLite keeps writing to a
    /// file it has open even once it is deleted or renamed over: that would
    /// lose every write from then on, silently.
    fn still_there(&self) -> bool {
        FileIdentity::of(&self.path)
            .is_some_and(|now| now.device == self.device && now.inode == self.inode)
    }
}

/// Runs `$body` with `$pool` bound to whichever pool the store holds. The body
/// is compiled once per database, so one query text serves both. An error
/// it returns (`?` inside it converts a database error into a
/// [`StoreError`]) is counted, then returned from the calling method.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        $crate::store::sql::on_pool!(@run $store, $pool, (), $body)
    };
    // `$sqlite_turn` is awaited, and held, before a SQLite body runs.
    (@run $store:expr, $pool:ident, $sqlite_turn:expr, $body:expr) => {{
        let outcome = async {
            Ok::<_, $crate::store::StoreError>(match &$store.pool {
                $crate::store::sql::Pool::Sqlite($pool) => {
                    $store.check_file()?;
                    let _turn = $sqlite_turn;
                    $body
                }
                $crate::store::sql::Pool::Postgres($pool) => $body,
            })
        }
        .await;
        match outcome {
            Ok(value) => value,
            Err(error) => return Err($store.counted(error)),
        }
    }};
}
pub(crate) use on_pool;

/// [`on_pool!`] for a write: on SQLite, writes of this process wait their
/// turn in the store's write lane instead of in SQLite's busy handler.
///
/// SQLite takes one writer at a time. A writer that finds the lock taken
/// sleeps in SQLite's busy handler, 1 ms at first and up to 100 ms a try,
/// whatever happens meanwhile, so under concurrent writes most wait far
/// longer than the write ahead of them lasted (spawns at 16 connections:
/// p99 in the hundreds of milliseconds). The lane is a fair async mutex:
/// each write starts as the one before it ends. SQLite is served by one
/// process, so the lane covers every writer.
macro_rules! on_pool_write {
    ($store:expr, $pool:ident => $body:expr) => {
        $crate::store::sql::on_pool!(@run $store, $pool, $store.write_lane.lock().await, $body)
    };
}
pub(crate) use on_pool_write;

impl Store {
    /// Connects to `url` (`sqlite:PATH` or `postgres://...`). A SQLite file and
    /// its directory are created if missing, and WAL mode is switched on.
    pub async fn connect(url: &str) -> Result<Store> {
        let mut file = None;
        let sqlite = url.starts_with("sqlite:");
        let pool = if sqlite {
            let (pool, path) = connect_sqlite(url).await?;
            file = path.as_deref().and_then(FileIdentity::of);
            Pool::Sqlite(pool)
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await?;
            Pool::Postgres(pool)
        };
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (stream_events, _) = broadcast::channel(STREAM_EVENT_BUFFER);
        Ok(Store {
            pool,
            events,
            stream_events,
            file,
            fence: None,
            origin: changes::new_origin(),
            metrics: None,
            allowances_written: Arc::default(),
            // SQLite serves one process, whose writes all pass here; on
            // PostgreSQL the view waits until other replicas' are heard.
            view: Arc::new(ReadView::new(sqlite, ViewCounters::default())),
            write_lane: Arc::default(),
            new_jobs: Arc::default(),
            gaps: Arc::new(watch::Sender::new(0)),
        })
    }

    /// The same store, counting its database errors into `metrics`.
    pub fn with_metrics(self, metrics: DatabaseMetrics) -> Store {
        // Before any read: the view is empty, and counts from now on.
        let view = ReadView::new(self.view.is_live(), metrics.view_counters());
        Store {
            metrics: Some(metrics),
            view: Arc::new(view),
            ..self
        }
    }

    /// Counts `error` if it came from the database, and hands it back.
    fn counted(&self, error: StoreError) -> StoreError {
        if let (Some(metrics), Some(kind)) = (&self.metrics, error.database_error_kind()) {
            metrics.error(kind);
        }
        error
    }

    /// On a SQLite file, makes sure no other process serves it: SQLite is
    /// one process's database, and a second `icarus serve` on the same file
    /// would run a second controller beside the first. Takes an exclusive
    /// lock on `<file>.serve-lock` for as long as the returned guard lives,
    /// or fails with [`StoreError::InUse`]. The kernel drops the lock when the
    /// process ends, so a restart after a crash starts at once. `None` on
    /// PostgreSQL (replicas share it through a lease) and in memory.
    pub fn claim_sole_use(&self) -> Result<Option<SoleUse>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let mut path = file.path.clone().into_os_string();
        path.push(".serve-lock");
        let path = std::path::PathBuf::from(path);
        let lock_error = |source| StoreError::Lock {
            path: path.display().to_string(),
            source,
        };
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_error)?;
        match lock.try_lock() {
            Ok(()) => Ok(Some(SoleUse { _lock: lock })),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
                path: file.path.display().to_string(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(lock_error(source)),
        }
    }

    /// Refuses to go on when the SQLite file opened at start is gone or
    /// replaced; it passes again once the file is put back.
    fn check_file(&self) -> Result<()> {
        match &self.file {
            Some(file) if !file.still_there() => Err(StoreError::FileReplaced {
                path: file.path.display().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Applies every pending migration for this database.
    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Answers whether the database serves now: PostgreSQL answers a query;
    /// a SQLite file takes a write, since one that can be read but not
    /// written (read-only, full, failing) is not ready either.
    pub async fn ping(&self) -> Result<()> {
        let query = match &self.pool {
            Pool::Sqlite(_) => mark_as_icarus(),
            Pool::Postgres(_) => "SELECT 1".to_owned(),
        };
        on_pool!(self, pool => {
            sqlx::query(&query).execute(pool).await?;
        });
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Every write from now on, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    /// Changes from now on that the change broadcast may have missed: the
    /// count goes up each time the relay of other processes' writes starts
    /// listening (again), as notifications sent before may be lost.
    /// Whoever keeps a view from [`Store::subscribe`] reads the database
    /// again then, as after a lagged receiver. Never changes on SQLite.
    pub fn gaps(&self) -> watch::Receiver<u64> {
        self.gaps.subscribe()
    }

    /// Tells [`Store::gaps`]' receivers that changes may have been missed.
    fn gap(&self) {
        self.gaps.send_modify(|count| *count += 1);
    }

    /// Every append to any job's stream from now on, as it happens.
    pub fn subscribe_streams(&self) -> broadcast::Receiver<StreamEvent> {
        self.stream_events.subscribe()
    }

    /// Closes the pool, waiting for queries in flight.
    pub async fn close(&self) {
        // Whatever the file's fate, the pool closes.
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    fn publish(&self, event: StoreEvent) {
        // No subscriber is fine: nobody is waiting for this change.
        let _ = self.events.send(event);
    }

    fn publish_stream(
        &self,
        job: crate::job::JobId,
        entries: std::sync::Arc<[stream::StreamEntry]>,
    ) {
        let _ = self.stream_events.send(StreamEvent { job, entries });
    }
}

/// A migrated store on a SQLite file of its own, for unit tests; the file
/// goes with the directory.
#[cfg(test)]
pub(crate) async fn temporary_sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/icarus.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// The pool, and the file it opened (none for an in-memory database).
async fn connect_sqlite(url: &str) -> Result<(SqlitePool, Option<std::path::PathBuf>)> {
    // Every connection writes when it opens. SQLite opens a file it cannot
    // open for writing read-only, silently, and such a connection stays
    // read-only when the file is writable again: in the pool it would fail
    // writes for good. With a write at open, it fails to connect instead,
    // and the request that wanted it is told why (503).
    let options = SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("application_id", APPLICATION_ID.to_string());
    let file = options.get_filename().to_owned();
    create_parent_directory(&file)?;
    // The file is created once, here, at start. The pool's own connections,
    // opened later, never create it: a file gone after start is an error
    // then, never a new empty database quietly written to.
    let creating = options.clone().create_if_missing(true);
    sqlx::SqliteConnection::connect_with(&creating)
        .await?
        .close()
        .await?;
    let options = options.create_if_missing(false);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .after_release(|connection, _| {
            Box::pin(async move {
                if !pooled_sqlite::checking() {
                    return Ok(true);
                }
                if connection.execute("BEGIN").await.is_err() {
                    tracing::warn!(
                        "a pooled SQLite connection was left inside a transaction: closed"
                    );
                    return Ok(false);
                }
                Ok(connection.execute("ROLLBACK").await.is_ok())
            })
        })
        .connect_with(options)
        .await?;
    let on_disk = !url.contains(":memory:") && file.is_file();
    Ok((pool, on_disk.then_some(file)))
}

/// The file's application id (`PRAGMA application_id`): "ICAR".
const APPLICATION_ID: i32 = 0x4943_4152;

/// Writes the application id into the file's header: a real write (a frame
/// in the WAL) that changes nothing once it is there, so it fails exactly
/// when any write would (SQLITE_READONLY, SQLITE_FULL, SQLITE_IOERR).
fn mark_as_icarus() -> String {
    format!("PRAGMA application_id = {APPLICATION_ID}")
}

fn create_parent_directory(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDirectory {
                path: dir.display().to_string(),
                source,
            })
        }
        _ => Ok(()),
    }
}
