//! Recovery after a crash: `icarus serve` with live jobs (reference builders
//! that hang, so each job stays `building` with a running container) is
//! killed with SIGKILL and started again on the same database. Measured from
//! the new process's start until it is ready (`/readyz` 200), and until
//! every job is adopted again: the controller has reconciled as many jobs as
//! there are (each compared with its containers), its work queue is empty,
//! and every job reads back `building` in the same attempt with the same
//! builder container, none started twice. The baseline is the same restart
//! after SIGKILL with no job, in the same run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use futures::StreamExt;
use serde_json::{Value, json};

use super::server::Server;

pub struct Settings {
    /// Live jobs when the server is killed.
    pub jobs: usize,
    /// Restarts with no job, the median of which is the baseline.
    pub baseline_runs: usize,
}

impl Settings {
    /// `BENCH_JOBS` (100) live jobs, three baseline restarts.
    pub fn from_env() -> Settings {
        Settings {
            jobs: super::env_number("BENCH_JOBS", 100),
            baseline_runs: 3,
        }
    }
}

pub struct Report {
    pub jobs: usize,
    /// Every baseline restart, to ready.
    pub baseline: Vec<Duration>,
    /// Spawn → every builder running, before the kill.
    pub all_running_in: Duration,
    /// Restart → `/readyz` 200, with the live jobs.
    pub ready: Duration,
    /// Restart → every job adopted.
    pub adopted: Duration,
    /// Jobs that read back as they were before the kill.
    pub kept: usize,
}

/// What a live job's status must still say after the restart.
#[derive(Debug, PartialEq)]
struct Live {
    phase: Value,
    attempt: Value,
    builder: Value,
}

impl Live {
    fn of(status: &Value) -> Live {
        Live {
            phase: status["status"].clone(),
            attempt: status["attempt"].clone(),
            builder: status["builder_container_id"].clone(),
        }
    }
}

pub async fn measure(settings: &Settings) -> Report {
    let baseline = restarts_without_jobs(settings.baseline_runs).await;

    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::configured(dir.path(), settings.jobs);
    server.start().await;
    let spawning = Instant::now();
    let ids = spawn_hanging_jobs(&server, settings.jobs).await;
    wait_until_builders_run(&server, settings.jobs).await;
    let before = wait_until_recorded(&server, &ids).await;
    let all_running_in = spawning.elapsed();

    server.kill().await;
    let restarted = Instant::now();
    let ready = server.start().await;
    let kept = wait_until_adopted(&server, &before).await;
    let adopted = restarted.elapsed();

    cancel_all(&server, &ids).await;
    server.stop().await;
    Report {
        jobs: settings.jobs,
        baseline,
        all_running_in,
        ready,
        adopted,
        kept,
    }
}

/// Start → ready after SIGKILL with no job, `runs` times (after a first
/// start that creates the database and the agents' network).
async fn restarts_without_jobs(runs: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::configured(dir.path(), 1);
    server.start().await;
    let mut samples = Vec::new();
    for _ in 0..runs.max(1) {
        server.kill().await;
        samples.push(server.start().await);
    }
    server.stop().await;
    samples
}

async fn spawn_hanging_jobs(server: &Server, count: usize) -> Vec<String> {
    futures::stream::iter(0..count)
        .map(|n| async move {
            let answer = server
                .client
                .post(server.url("/jobs/spawn"))
                .json(&json!({"task": format!("recovery benchmark {n} [builder:hang]")}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 201, "spawned");
            let body: Value = answer.json().await.unwrap();
            body["job_id"].as_str().unwrap().to_owned()
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Until the engine runs `count` builders of this orchestrator.
async fn wait_until_builders_run(server: &Server, count: usize) {
    let docker = Docker::connect_with_defaults().unwrap();
    let filters = HashMap::from([
        (
            "label".to_owned(),
            vec![
                format!("icarus.instance={}", server.instance()),
                "icarus.role=builder".to_owned(),
            ],
        ),
        ("status".to_owned(), vec!["running".to_owned()]),
    ]);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let options = ListContainersOptions {
            filters: Some(filters.clone()),
            ..Default::default()
        };
        let running = docker.list_containers(Some(options)).await.unwrap().len();
        if running >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{running} of {count} builders run after 10 minutes; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn statuses(server: &Server, ids: &[String]) -> HashMap<String, Live> {
    futures::stream::iter(ids)
        .map(|id| async move {
            let status: Value = server
                .client
                .get(server.url(&format!("/jobs/{id}/status")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (id.clone(), Live::of(&status))
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Until every job's status records its running builder (the engine may
/// run it a moment before the controller writes its container id): the
/// statuses the restart must keep.
async fn wait_until_recorded(server: &Server, ids: &[String]) -> HashMap<String, Live> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let live = statuses(server, ids).await;
        let recorded = |status: &Live| status.phase == "building" && status.builder.is_string();
        if live.values().all(recorded) {
            return live;
        }
        assert!(
            Instant::now() < deadline,
            "not every job records its builder: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the controller has reconciled every job and emptied its
/// queue, and every job reads back as `before`; how many do (all, unless
/// the deadline passed).
async fn wait_until_adopted(server: &Server, before: &HashMap<String, Live>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let ids: Vec<String> = before.keys().cloned().collect();
    loop {
        let reconciled = server
            .metric("icarus_reconcile_duration_seconds_count{outcome=\"success\"}")
            .await
            .unwrap_or_default();
        let depth = server
            .metric("icarus_workqueue_depth")
            .await
            .unwrap_or(f64::MAX);
        if reconciled >= before.len() as f64 && depth == 0.0 {
            let after = statuses(server, &ids).await;
            let changed: Vec<_> = ids
                .iter()
                .filter(|id| after.get(*id) != before.get(*id))
                .map(|id| (&before[id], &after[id]))
                .collect();
            if changed.is_empty() || Instant::now() > deadline {
                if !changed.is_empty() {
                    eprintln!("jobs changed by the restart (before, after): {changed:?}");
                }
                return ids.len() - changed.len();
            }
        }
        assert!(
            Instant::now() < deadline,
            "not adopted within 2 minutes: {reconciled} reconciled, queue depth {depth}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Cancels every job and waits until none of their containers is left.
async fn cancel_all(server: &Server, ids: &[String]) {
    futures::stream::iter(ids)
        .for_each_concurrent(8, |id| async move {
            let _ = server
                .client
                .post(server.url(&format!("/jobs/{id}/cancel")))
                .send()
                .await;
        })
        .await;
    let docker = Docker::connect_with_defaults().unwrap();
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("icarus.instance={}", server.instance())],
    )]);
    for _ in 0..600 {
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        };
        if docker
            .list_containers(Some(options))
            .await
            .unwrap()
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Report {
    pub fn baseline_median(&self) -> Duration {
        super::median(self.baseline.clone())
    }

    /// Rows of the suite's table: figure, result, baseline, ratio.
    pub fn rows(&self) -> Vec<String> {
        let baseline = self.baseline_median();
        let runs = self
            .baseline
            .iter()
            .map(|run| super::millis(*run))
            .collect::<Vec<_>>()
            .join(", ");
        let base = format!(
            "restart after SIGKILL with 0 jobs → ready: {} (median of {runs})",
            super::millis(baseline)
        );
        vec![
            format!(
                "| restart after SIGKILL with {} live jobs → ready (`/readyz` 200) | {} | {base} | {} |",
                self.jobs,
                super::millis(self.ready),
                super::ratio(self.ready.as_secs_f64(), baseline.as_secs_f64()),
            ),
            format!(
                "| restart after SIGKILL with {} live jobs → every job adopted (reconciled, same builder) | {} ({}/{} jobs kept their builder) | {base} | {} |",
                self.jobs,
                super::millis(self.adopted),
                self.kept,
                self.jobs,
                super::ratio(self.adopted.as_secs_f64(), baseline.as_secs_f64()),
            ),
        ]
    }

    pub fn print(&self) {
        println!(
            "{} jobs spawned until every builder ran: {:.1} s\n",
            self.jobs,
            self.all_running_in.as_secs_f64()
        );
        println!("{}", super::TABLE_HEADER);
        for row in self.rows() {
            println!("{row}");
        }
    }
}
