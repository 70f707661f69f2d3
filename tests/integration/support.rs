//! Shared test helpers: fresh databases, jobs, waiting with a bound.

use std::time::Duration;

use icarus::job::{Job, JobSpec, timestamp_now};
use icarus::store::Store;
use tempfile::TempDir;

/// A migrated store on a new SQLite file. Keep the directory alive as long as the store.
pub async fn sqlite_store() -> (Store, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db/icarus.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// The admin URL of the PostgreSQL the test command started.
pub fn postgres_admin_url() -> String {
    std::env::var("ICARUS_TEST_POSTGRES_URL").expect(
        "ICARUS_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
    )
}

/// A migrated store on a new, empty PostgreSQL database.
pub async fn postgres_store() -> Store {
    let url = postgres_database_url().await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Creates an empty database and returns its URL.
pub async fn postgres_database_url() -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let name = format!("icarus_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

pub fn spec(task: &str) -> JobSpec {
    JobSpec {
        task: task.to_owned(),
        project_path: "/workspace".to_owned(),
        builder_image: None,
        checker_image: None,
        approval: None,
        cancel_requested: false,
    }
}

pub fn new_job(task: &str) -> Job {
    Job::new(spec(task), timestamp_now())
}

/// Polls `probe` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
