//! The job store on SQL: SQLite (a file, WAL mode) by default, PostgreSQL
//! when the URL says so.
//!
//! The same queries serve both databases: [`Store`] holds one of two pools and
//! the `on_pool!` macro compiles each query once per database.

mod queries;

pub use queries::TELEMETRY_KEPT;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::broadcast;

use super::{Result, StoreError, StoreEvent};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How many change events a slow subscriber may fall behind before it must re-read.
const EVENT_BUFFER: usize = 1024;

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
}

/// Runs `$body` with `$pool` bound to whichever pool the store holds. The body
/// is compiled once per database, so one query text serves both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::sql::Pool::Sqlite($pool) => $body,
            $crate::store::sql::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// Connects to `url` (`sqlite:PATH` or `postgres://...`). A SQLite file and
    /// its directory are created if missing, and WAL mode is switched on.
    pub async fn connect(url: &str) -> Result<Store> {
        let pool = if url.starts_with("sqlite:") {
            Pool::Sqlite(connect_sqlite(url).await?)
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await?;
            Pool::Postgres(pool)
        };
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(Store { pool, events })
    }

    /// Applies every pending migration for this database.
    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Answers whether the database is reachable now.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
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

    /// Closes the pool, waiting for queries in flight.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }

    fn publish(&self, event: StoreEvent) {
        // No subscriber is fine: nobody is waiting for this change.
        let _ = self.events.send(event);
    }
}

async fn connect_sqlite(url: &str) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    create_parent_directory(options.get_filename())?;
    Ok(SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
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
