//! Shared test helpers: fresh databases, jobs, waiting with a bound.

pub mod postgres_server;

use std::time::Duration;

use std::sync::Arc;

use icarus::config::Config;
use icarus::credentials::AgentKeys;
use icarus::job::{Job, JobId, JobSpec, Role, WorkloadState, timestamp_now};
use icarus::runtime::Runtime;
use icarus::runtime::fake::FakeRuntime;
use icarus::serve::Orchestrator;
use icarus::store::Store;
use serde_json::{Value, json};
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

/// Two stores on one PostgreSQL database, as two replicas have.
pub async fn two_stores_on_one_postgres_database() -> (Store, Store) {
    let url = postgres_database_url().await;
    let first = Store::connect(&url).await.unwrap();
    first.migrate().await.unwrap();
    (first, Store::connect(&url).await.unwrap())
}

/// Creates jobs through `writer` until `events` hears of one (the listener
/// behind them is up from then on); returns that job.
pub async fn first_heard_write(
    writer: &Store,
    events: &mut tokio::sync::broadcast::Receiver<icarus::store::StoreEvent>,
) -> icarus::job::Job {
    for _ in 0..20 {
        let job = writer.create_job(&new_job("t")).await.unwrap();
        let heard =
            tokio::time::timeout(std::time::Duration::from_millis(500), events.recv()).await;
        if matches!(heard, Ok(Ok(icarus::store::StoreEvent::JobWritten(ref j))) if j.id == job.id) {
            return job;
        }
    }
    panic!("no write was heard in 10 s");
}

/// The phases an approved job passes through, in order.
pub const APPROVED_JOB_PHASES: [&str; 6] = [
    "pending",
    "building",
    "checking",
    "awaiting_approval",
    "approved",
    "completed",
];

pub fn spec(task: &str) -> JobSpec {
    JobSpec::new(task, "/workspace")
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

/// An HTTP client bound to one orchestrator, with the calls tests make.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(orchestrator: &Orchestrator) -> Api {
        Api {
            base: format!("http://{}", orchestrator.address()),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The same API, called with `token` as the bearer token.
    pub fn as_holder_of(&self, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {token}").parse().unwrap();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        Api {
            base: self.base.clone(),
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        decode(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        decode(
            self.client
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json");
        decode(request.body(body).send().await.unwrap()).await
    }

    /// Sends a request built on this API's client.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        decode(request.send().await.unwrap()).await
    }

    /// Scrapes `/metrics` (the Prometheus text format).
    pub async fn metrics(&self) -> Metrics {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET /metrics");
        Metrics(response.text().await.unwrap())
    }

    /// Submits a job and returns its id.
    pub async fn spawn(&self, task: &str) -> JobId {
        let (code, body) = self
            .post(
                "/jobs/spawn",
                json!({"task": task, "project_path": "/workspace"}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        body["job_id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn phase(&self, id: JobId) -> String {
        let (code, body) = self.get(&format!("/jobs/{id}/status")).await;
        assert_eq!(code, 200, "{body}");
        body["status"].as_str().unwrap().to_owned()
    }

    /// Waits until the job reaches `phase` (fails after 10 s).
    pub async fn wait_for(&self, id: JobId, phase: &str) -> Value {
        self.wait_for_within(id, phase, Duration::from_secs(10))
            .await
    }

    pub async fn wait_for_within(&self, id: JobId, phase: &str, limit: Duration) -> Value {
        eventually(limit, || async {
            let (_, body) = self.get(&format!("/jobs/{id}/status")).await;
            (body["status"] == phase).then_some(body)
        })
        .await
    }
}

/// `field` of each object in the list `list` (a status's `approvals`, say).
pub fn each<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item[field].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// One scrape of `/metrics`.
#[derive(Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of `series` as written, `name{label="value",...}` with the
    /// labels in the order the family declares them; 0 for a series not
    /// there (a counter or histogram nothing has been counted in yet).
    pub fn value(&self, series: &str) -> f64 {
        let prefix = format!("{series} ");
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0.0, |value| {
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("{series}: {value}"))
            })
    }

    /// Whether any line holds `series`.
    pub fn has(&self, series: &str) -> bool {
        self.0.lines().any(|line| line.starts_with(series))
    }
}

/// The `detail` of an error body in the API's (FastAPI's) format.
pub fn detail(body: &Value) -> &str {
    body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"))
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, body)
}

/// The embedded default with test-friendly values: port 0, sentinel off, a fast resync.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::embedded_default().unwrap();
    config.orchestrator.host = "127.0.0.1".to_owned();
    config.orchestrator.port = 0;
    config.orchestrator.resync_interval_seconds = 1;
    config.sentinel.enabled = false;
    config.database.url = database_url.to_owned();
    // One network for every test orchestrator, as before networks were
    // named per instance: each test's own would be left behind by every
    // test that drops its server without stopping it.
    config.agents.builder.network_mode = TEST_AGENTS_NETWORK.to_owned();
    config.agents.checker.network_mode = TEST_AGENTS_NETWORK.to_owned();
    config
}

/// The agents' network of the tests' orchestrators (see [`test_config`]).
pub const TEST_AGENTS_NETWORK: &str = "icarus-agents";

/// What a stopped or crashed test server leaves for the next start.
pub type Remains = (Config, FakeRuntime, Option<TempDir>);

/// An orchestrator on an ephemeral port with the in-memory runtime test double.
pub struct TestServer {
    pub api: Api,
    pub runtime: FakeRuntime,
    pub orchestrator: Option<Orchestrator>,
    pub config: Config,
    dir: Option<TempDir>,
}

impl std::ops::Deref for TestServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestServer {
    /// On a new SQLite file.
    pub async fn sqlite() -> TestServer {
        Self::sqlite_with(|_| {}).await
    }

    pub async fn sqlite_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&format!("sqlite://{}/icarus.db", dir.path().display()));
        config.workspace.base_path = dir.path().join("workspaces");
        adjust(&mut config);
        let mut server = Self::start(config, FakeRuntime::new()).await;
        server.dir = Some(dir);
        server
    }

    /// On a new PostgreSQL database.
    pub async fn postgres() -> TestServer {
        Self::on_database(&postgres_database_url().await, |_| {}).await
    }

    /// On the database at `url`, with workspaces in a directory of its own.
    pub async fn on_database(url: &str, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(url);
        config.workspace.base_path = dir.path().join("workspaces");
        adjust(&mut config);
        let mut server = Self::start(config, FakeRuntime::new()).await;
        server.dir = Some(dir);
        server
    }

    /// The SQLite file it serves from.
    pub fn sqlite_file(&self) -> std::path::PathBuf {
        let url = &self.config.database.url;
        let path = url.strip_prefix("sqlite://").expect("a SQLite database");
        std::path::PathBuf::from(path)
    }

    /// With a given configuration and runtime (share a runtime to "restart").
    pub async fn start(config: Config, runtime: FakeRuntime) -> TestServer {
        init_test_logging();
        let shared: Arc<dyn Runtime> = Arc::new(runtime.clone());
        let orchestrator = icarus::serve::local::start_on(&config, shared)
            .await
            .unwrap();
        TestServer {
            api: Api::new(&orchestrator),
            runtime,
            orchestrator: Some(orchestrator),
            config,
            dir: None,
        }
    }

    /// The callback path an agent of this job is handed (with its token).
    pub fn agent_path(&self, id: JobId, role: Role, attempt: u32) -> String {
        format!(
            "/jobs/{id}/callback?role={role}&attempt={attempt}&token={}",
            self.agent_token(id, role, attempt)
        )
    }

    /// The token the orchestrator gives that agent.
    pub fn agent_token(&self, id: JobId, role: Role, attempt: u32) -> String {
        AgentKeys::load_or_create(&self.config.callback_key_file())
            .unwrap()
            .token(id, role, attempt)
    }

    /// Plays a builder that exits 0, then a checker that posts its audit
    /// report and exits 0; returns the status at `awaiting_approval`.
    /// Waits until the job is building and its builder was started: the
    /// controller records the phase first, then starts the agent.
    pub async fn wait_for_builder(&self, id: JobId) -> Value {
        self.wait_for_builder_as(&self.api, id).await
    }

    /// The same, reading the job through `api` (with a token, when
    /// authentication is on).
    pub async fn wait_for_builder_as(&self, api: &Api, id: JobId) -> Value {
        self.wait_until_running(id, Role::Builder).await;
        api.wait_for(id, "building").await
    }

    /// Waits until the runtime runs the job's `role` agent. A phase is
    /// recorded before its agent starts, so a test that plays the agent's
    /// exit as soon as it sees the phase may find no agent to end.
    pub async fn wait_until_running(&self, id: JobId, role: Role) {
        eventually(Duration::from_secs(10), || async {
            let running = self.runtime.state_of(id, role) == Some(WorkloadState::Running);
            running.then_some(())
        })
        .await;
    }

    pub async fn pass_build_and_check(&self, id: JobId) -> Value {
        self.pass_build_and_check_as(&self.api, id).await
    }

    /// The same, reading the job through `api`.
    pub async fn pass_build_and_check_as(&self, api: &Api, id: JobId) -> Value {
        self.wait_for_builder_as(api, id).await;
        self.runtime.exit(id, Role::Builder, 0);
        api.wait_for(id, "checking").await;
        let (code, body) = self
            .post(
                &self.agent_path(id, Role::Checker, 1),
                json!({"status": "completed", "audit_report": {"summary": "ok"}}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        self.wait_until_running(id, Role::Checker).await;
        self.runtime.exit(id, Role::Checker, 0);
        api.wait_for(id, "awaiting_approval").await
    }

    /// Stops gracefully and returns what a restart needs.
    pub async fn stop(mut self) -> Remains {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.stop().await.unwrap();
        }
        (self.config.clone(), self.runtime.clone(), self.dir.take())
    }

    /// Kills every task at once, as a crash would.
    pub fn crash(mut self) -> Remains {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.abort();
        }
        (self.config.clone(), self.runtime.clone(), self.dir.take())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.abort();
        }
    }
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

/// Authentication on, with one token: a viewer's, `vic`.
pub fn with_a_viewer(config: &mut Config) {
    config.auth.enabled = true;
    config.auth.tokens = vec![token(
        "vic",
        icarus::config::AccessRole::Viewer,
        "viewer-token-0123456789",
    )];
}

/// A configured API token for `name` with `role`, whose secret is `secret`.
pub fn token(
    name: &str,
    role: icarus::config::AccessRole,
    secret: &str,
) -> icarus::config::ApiToken {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secret.as_bytes());
    icarus::config::ApiToken {
        name: name.to_owned(),
        role,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    }
}
