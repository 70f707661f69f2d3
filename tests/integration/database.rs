//! What clients see when the database goes away: 503s with a clear message,
//! never a 500 or a crash, and service again once it is back, with no
//! job lost or doubled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use icarus::store::Unavailable;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::support::postgres_server::PostgresServer;
use crate::support::{Api, TestServer, eventually, postgres_admin_url};

/// Refuses new connections first, then ends the open ones.
async fn terminate_connections(database: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    let refuse = format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false");
    sqlx::query(&refuse).execute(&mut admin).await.unwrap();
    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()";
    sqlx::query(terminate)
        .bind(database)
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn allow_connections(database: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dead_database_gives_503_not_500_and_service_resumes_when_it_returns() {
    let server = TestServer::postgres().await;
    let id = server.spawn("t").await;
    let database = server
        .config
        .database
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    terminate_connections(&database).await;
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["detail"], "database unreachable");
    let (code, body) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        !body["detail"].as_str().unwrap().contains("pg_"),
        "no database internals leak: {body}"
    );
    let (code, _) = server
        .post("/jobs/spawn", serde_json::json!({"task": "lost?"}))
        .await;
    assert_eq!(code, 503);
    let (code, _) = server.get("/healthz").await;
    assert_eq!(code, 200, "liveness does not depend on the database");

    allow_connections(&database).await;
    let (code, _) = server.get("/readyz").await;
    assert_eq!(code, 200);
    // The controller retried through the outage and carries on.
    server.wait_for_builder(id).await;
}

/// What the clients of [`Load`] have been answered so far.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Every spawn answered 201: its task and the job id it was given.
    created: Vec<(String, String)>,
    spawns_refused: usize,
    reads_refused: usize,
    /// Every answer but a 201, a 200 or a 503 saying why.
    unexpected: Vec<String>,
}

impl Tally {
    /// Counts a spawn's answer; the new job's id if it was created.
    fn spawned(&mut self, task: String, code: u16, body: &Value) -> Option<String> {
        match code {
            201 => {
                let id = body["job_id"].as_str().unwrap().to_owned();
                self.created.push((task, id.clone()));
                return Some(id);
            }
            503 => self.spawns_refused += 1,
            _ => self
                .unexpected
                .push(format!("spawn answered {code}: {body}")),
        }
        self.check_refusal(code, body);
        None
    }

    fn read(&mut self, code: u16, body: &Value) {
        match code {
            200 => {}
            503 => self.reads_refused += 1,
            _ => self
                .unexpected
                .push(format!("status answered {code}: {body}")),
        }
        self.check_refusal(code, body);
    }

    /// A 503 says the database is unavailable, in the API's words.
    fn check_refusal(&mut self, code: u16, body: &Value) {
        if code == 503 && body["detail"] != Unavailable::Unreachable.message() {
            self.unexpected
                .push(format!("a 503 that does not say why: {body}"));
        }
    }
}

/// Clients that spawn jobs and read their statuses, each on connections of
/// its own, until stopped.
struct Load {
    tally: Arc<Mutex<Tally>>,
    stop: CancellationToken,
    clients: JoinSet<()>,
}

impl Load {
    fn start(server: &TestServer, clients: usize) -> Load {
        let mut load = Load {
            tally: Arc::default(),
            stop: CancellationToken::new(),
            clients: JoinSet::new(),
        };
        for client in 0..clients {
            let api = Api {
                base: server.base.clone(),
                client: reqwest::Client::new(),
            };
            let run = keep_spawning(api, client, load.tally.clone(), load.stop.clone());
            load.clients.spawn(run);
        }
        load
    }

    /// The answers so far; fails the test at the first unexpected one.
    fn tally(&self) -> Tally {
        let tally = self.tally.lock().unwrap().clone();
        assert_eq!(tally.unexpected, Vec::<String>::new());
        tally
    }

    /// Waits until the answers so far satisfy `enough`.
    async fn until(&self, enough: impl Fn(&Tally) -> bool) {
        eventually(Duration::from_secs(60), || async {
            enough(&self.tally()).then_some(())
        })
        .await;
    }

    async fn stop(mut self) -> Tally {
        self.stop.cancel();
        while let Some(ended) = self.clients.join_next().await {
            ended.unwrap();
        }
        self.tally()
    }
}

/// Spawns a job, then reads the status of the latest it created, again
/// and again.
async fn keep_spawning(api: Api, client: usize, tally: Arc<Mutex<Tally>>, stop: CancellationToken) {
    let mut latest = None;
    for n in 0.. {
        if stop.is_cancelled() {
            return;
        }
        let task = format!("client {client}, spawn {n}");
        let (code, body) = api.post("/jobs/spawn", json!({"task": task})).await;
        let id = tally.lock().unwrap().spawned(task, code, &body);
        latest = id.or(latest);
        if let Some(id) = &latest {
            let (code, body) = api.get(&format!("/jobs/{id}/status")).await;
            tally.lock().unwrap().read(code, &body);
        }
    }
}

/// Every stored job: its task and its id.
async fn stored_jobs(url: &str) -> Vec<(String, String)> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as("SELECT task, job_id FROM jobs")
        .fetch_all(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_restarted_under_load_answers_503_meanwhile_and_loses_no_job() {
    let Some(postgres) = PostgresServer::start().await else {
        return;
    };
    let server = TestServer::on_database(&postgres.url(), |config| {
        // Every job may start: each reaches building, the fake runtime's end.
        config.orchestrator.max_concurrent_jobs = 10_000;
    })
    .await;
    let load = Load::start(&server, 4);
    load.until(|tally| tally.created.len() >= 8).await;

    postgres.stop_immediately().await;
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["detail"], "database unreachable");
    load.until(|tally| tally.spawns_refused >= 4 && tally.reads_refused >= 4)
        .await;

    postgres.start_again().await;
    eventually(Duration::from_secs(60), || async {
        let (code, _) = server.get("/readyz").await;
        (code == 200).then_some(())
    })
    .await;
    let before = load.tally().created.len();
    load.until(|tally| tally.created.len() >= before + 8).await;
    let tally = load.stop().await;

    let stored = stored_jobs(&postgres.url()).await;
    let mut tasks: Vec<&str> = stored.iter().map(|(task, _)| task.as_str()).collect();
    tasks.sort_unstable();
    tasks.dedup();
    assert_eq!(tasks.len(), stored.len(), "no job is stored twice");
    for job in &tally.created {
        assert!(stored.contains(job), "answered 201, then lost: {job:?}");
    }
    for (_, id) in &stored {
        let id = id.parse().unwrap();
        server
            .wait_for_within(id, "building", Duration::from_secs(60))
            .await;
    }
}
