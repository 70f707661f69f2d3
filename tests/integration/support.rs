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
    std::env::var("POSTGRES_TEST_URL").expect(
        "POSTGRES_TEST_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
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

/// An orchestrator on an ephemeral port with the in-memory runtime test double.
pub struct TestServer {
    pub base: String,
    pub runtime: icarus::runtime::fake::FakeRuntime,
    pub client: reqwest::Client,
    pub orchestrator: Option<icarus::server::Orchestrator>,
    pub config: icarus::config::Config,
    _dir: Option<TempDir>,
}

/// The embedded default with test-friendly values: port 0, sentinel off, a fast resync.
pub fn test_config(database_url: &str) -> icarus::config::Config {
    let mut config = icarus::config::Config::embedded_default().unwrap();
    config.orchestrator.host = "127.0.0.1".to_owned();
    config.orchestrator.port = 0;
    config.orchestrator.resync_interval_seconds = 1;
    config.sentinel.enabled = false;
    config.database.url = database_url.to_owned();
    config
}

impl TestServer {
    /// On a new SQLite file.
    pub async fn sqlite() -> TestServer {
        Self::sqlite_with(|_| {}).await
    }

    pub async fn sqlite_with(adjust: impl FnOnce(&mut icarus::config::Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&format!("sqlite://{}/icarus.db", dir.path().display()));
        adjust(&mut config);
        let mut server = Self::start(config, icarus::runtime::fake::FakeRuntime::new()).await;
        server._dir = Some(dir);
        server
    }

    /// On a new PostgreSQL database.
    pub async fn postgres() -> TestServer {
        let config = test_config(&postgres_database_url().await);
        Self::start(config, icarus::runtime::fake::FakeRuntime::new()).await
    }

    /// With a given configuration and runtime (share a runtime to "restart").
    pub async fn start(
        config: icarus::config::Config,
        runtime: icarus::runtime::fake::FakeRuntime,
    ) -> TestServer {
        init_test_logging();
        let shared: std::sync::Arc<dyn icarus::runtime::Runtime> =
            std::sync::Arc::new(runtime.clone());
        let orchestrator = icarus::server::Orchestrator::start(&config, shared)
            .await
            .unwrap();
        TestServer {
            base: format!("http://{}", orchestrator.address()),
            runtime,
            client: reqwest::Client::new(),
            orchestrator: Some(orchestrator),
            config,
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        decode(response).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    /// Submits a job and returns its id.
    pub async fn spawn(&self, task: &str) -> icarus::job::JobId {
        let (code, body) = self
            .post(
                "/jobs/spawn",
                serde_json::json!({"task": task, "project_path": "/workspace"}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        body["job_id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn phase(&self, id: icarus::job::JobId) -> String {
        let (code, body) = self.get(&format!("/jobs/{id}/status")).await;
        assert_eq!(code, 200, "{body}");
        body["status"].as_str().unwrap().to_owned()
    }

    /// Waits until the job reaches `phase` (fails after 10 s).
    pub async fn wait_for(&self, id: icarus::job::JobId, phase: &str) -> serde_json::Value {
        eventually(Duration::from_secs(10), || async {
            let (_, body) = self.get(&format!("/jobs/{id}/status")).await;
            (body["status"] == phase).then_some(body)
        })
        .await
    }

    /// Stops gracefully and returns the configuration for a restart.
    pub async fn stop(
        mut self,
    ) -> (
        icarus::config::Config,
        icarus::runtime::fake::FakeRuntime,
        Option<TempDir>,
    ) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.stop().await.unwrap();
        }
        (self.config.clone(), self.runtime.clone(), self._dir.take())
    }

    /// Kills every task at once, as a crash would.
    pub fn crash(
        mut self,
    ) -> (
        icarus::config::Config,
        icarus::runtime::fake::FakeRuntime,
        Option<TempDir>,
    ) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.abort();
        }
        (self.config.clone(), self.runtime.clone(), self._dir.take())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.abort();
        }
    }
}

async fn decode(response: reqwest::Response) -> (u16, serde_json::Value) {
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (code, body)
}

/// Logs are silent unless `TEST_LOG` is set (to a filter such as `icarus=debug`).
pub fn init_test_logging() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}
