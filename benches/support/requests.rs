//! The request mix as a user would measure it: `wrk` against a real
//! `icarus serve` holding many stored jobs (finished ones, written through
//! the store before it starts), each route right after `GET /healthz` with
//! the same load, so that each figure is a ratio against the cost of the
//! HTTP stack alone measured moments before. Then spawn throughput: `POST
//! /jobs/spawn` with the queue held (every job stays pending: no agent
//! starts), checked against the jobs the store then counts.

use std::time::{Duration, Instant};

use futures::StreamExt;
use icarus::job::{Job, JobId, JobSpec, Phase, Reason, Role};
use icarus::store::Store;

use super::server::Server;
use super::wrk::{self, Load, Outcome};

pub struct Settings {
    /// Jobs stored before the server starts.
    pub jobs: usize,
    /// Each wrk run, baselines included.
    pub seconds: u64,
    pub threads: usize,
    /// Connections of the reads.
    pub connections: usize,
    /// Connections of the spawns.
    pub spawn_connections: usize,
}

impl Settings {
    /// `BENCH_JOBS` (10,000) stored, `BENCH_SECONDS` (15) per run.
    pub fn from_env() -> Settings {
        Settings {
            jobs: super::env_number("BENCH_JOBS", 10_000),
            seconds: super::env_number("BENCH_SECONDS", 15) as u64,
            threads: 2,
            connections: 64,
            spawn_connections: 16,
        }
    }
}

/// One route under load and the baseline measured just before it.
pub struct Figure {
    pub what: String,
    pub measured: Outcome,
    pub baseline: Outcome,
}

pub struct Report {
    pub stored: usize,
    pub seeded_in: Duration,
    pub reads: Vec<Figure>,
    pub spawn: Figure,
    /// Pending jobs the server counted after the spawn run.
    pub spawned: u64,
    /// A page of 1,000 of the spawned jobs, all pending, once the
    /// controller has said why each waits.
    pub backlog: Figure,
}

pub async fn measure(settings: &Settings) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::configured(dir.path(), 2);
    let seeding = Instant::now();
    let sample = seed(&server.database_url(), settings.jobs).await;
    let seeded_in = seeding.elapsed();
    server.start().await;
    hold_queue(&server).await;
    settle(&server).await;

    let mut reads = Vec::new();
    const GZIP: &[&str] = &["Accept-Encoding: gzip"];
    for (what, path, headers) in [
        (
            "`GET /jobs/{id}/status`".to_owned(),
            format!("/jobs/{sample}/status"),
            &[][..],
        ),
        (
            "`GET /jobs?limit=50`".to_owned(),
            "/jobs?limit=50".to_owned(),
            &[],
        ),
        (
            "`GET /jobs?limit=1000`".to_owned(),
            "/jobs?limit=1000".to_owned(),
            &[],
        ),
        (
            "`GET /jobs?limit=1000`, gzip accepted (as a browser asks)".to_owned(),
            "/jobs?limit=1000".to_owned(),
            GZIP,
        ),
    ] {
        let load = |path: &str, headers| Load {
            url: server.url(path),
            threads: settings.threads,
            connections: settings.connections,
            seconds: settings.seconds,
            script: None,
            headers,
        };
        let baseline = wrk::run(&load("/healthz", headers)).await;
        let measured = wrk::run(&load(&path, headers)).await;
        reads.push(Figure {
            what: format!("{what}, {} connections", settings.connections),
            measured,
            baseline,
        });
    }

    let script = dir.path().join("spawn.lua");
    std::fs::write(&script, SPAWN_SCRIPT).unwrap();
    let load = |path: &str, script| Load {
        url: server.url(path),
        threads: settings.threads,
        connections: settings.spawn_connections,
        seconds: settings.seconds,
        script,
        headers: &[],
    };
    let baseline = wrk::run(&load("/healthz", None)).await;
    let measured = wrk::run(&load("/jobs/spawn", Some(&script))).await;
    let spawned = server
        .metric("icarus_jobs{phase=\"pending\"}")
        .await
        .unwrap_or_default() as u64;

    settle(&server).await;
    let load = |path: &str| Load {
        url: server.url(path),
        threads: settings.threads,
        connections: settings.connections,
        seconds: settings.seconds,
        script: None,
        headers: &[],
    };
    let backlog = Figure {
        what: format!(
            "`GET /jobs?limit=1000`, every row a pending job of the spawned backlog (its place, reason and estimate), {} connections",
            settings.connections
        ),
        baseline: wrk::run(&load("/healthz")).await,
        measured: wrk::run(&load("/jobs?limit=1000")).await,
    };
    server.stop().await;
    Report {
        stored: settings.jobs,
        seeded_in,
        reads,
        spawn: Figure {
            what: format!(
                "spawn (`POST /jobs/spawn`, queue held), {} connections",
                settings.spawn_connections
            ),
            measured,
            baseline,
        },
        spawned,
        backlog,
    }
}

/// Waits (up to two minutes) until the controller has nothing left to do:
/// its work queue empty and no reconcile for two seconds. (Half a second
/// was not enough: after 70,000 spawns it returned while the controller
/// was still writing why each job waits, and every such write drops the
/// kept pages.)
async fn settle(server: &Server) {
    let reconciles =
        || server.metric("icarus_reconcile_duration_seconds_count{outcome=\"success\"}");
    let mut last = reconciles().await;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = reconciles().await;
        let idle = server.metric("icarus_workqueue_depth").await == Some(0.0);
        if idle && now == last {
            return;
        }
        last = now;
    }
}

/// wrk's request: a valid spawn, as a client sends it.
const SPAWN_SCRIPT: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"task": "benchmark spawn: add logging to the API"}'
"#;

/// Stores `count` finished jobs (completed, rejected, cancelled and failed
/// in turn, a second apart, the newest now) on a fresh database; returns
/// the id of one in the middle, whose status the benchmark reads.
async fn seed(database_url: &str, count: usize) -> JobId {
    let store = Store::connect(database_url).await.unwrap();
    store.migrate().await.unwrap();
    let now = chrono::Utc::now();
    let jobs: Vec<Job> = (0..count)
        .map(|n| {
            let created = now - chrono::TimeDelta::seconds((count - n) as i64);
            finished_job(n, created)
        })
        .collect();
    let sample = jobs[count / 2].id;
    futures::stream::iter(&jobs)
        .map(|job| store.create_job(job))
        .buffer_unordered(8)
        .for_each(|stored| async move {
            stored.unwrap();
        })
        .await;
    store.close().await;
    sample
}

fn finished_job(n: usize, created: chrono::DateTime<chrono::Utc>) -> Job {
    let spec = JobSpec::new(
        format!("benchmark job {n}: add logging to the API"),
        "/workspace",
    );
    let (phase, reason) = match n % 4 {
        0 => (Phase::Completed, Reason::Completed),
        1 => (Phase::Rejected, Reason::Rejected),
        2 => (Phase::Cancelled, Reason::CancelRequested),
        _ => (Phase::Failed, Reason::Failed(Role::Builder)),
    };
    let mut job = Job::new(spec, created).in_phase(phase, created + chrono::TimeDelta::seconds(30));
    job.status.reason = reason;
    if phase == Phase::Failed {
        job.status.error_message = Some("the builder exited with code 1".to_owned());
    }
    job
}

/// `POST /queue/hold` (authentication is off: every caller is admin).
async fn hold_queue(server: &Server) {
    let answer = server
        .client
        .post(server.url("/queue/hold"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the queue is held");
}

impl Report {
    /// Rows of the suite's table: figure, result, baseline, ratio.
    pub fn rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = self
            .reads
            .iter()
            .map(|figure| figure.row(&figure.measured.summary()))
            .collect();
        let spawn = &self.spawn.measured;
        rows.push(self.spawn.row(&format!(
            "{} jobs/s, p50 {}, p99 {} ({} jobs stored){}",
            wrk::thousands(spawn.requests_per_second),
            super::millis(spawn.p50),
            super::millis(spawn.p99),
            wrk::thousands(self.spawned as f64),
            failures(spawn),
        )));
        rows.push(self.backlog.row(&self.backlog.measured.summary()));
        rows
    }

    pub fn print(&self) {
        println!(
            "{} jobs stored (seeded in {:.1} s)\n",
            wrk::thousands(self.stored as f64),
            self.seeded_in.as_secs_f64()
        );
        println!("{}", super::TABLE_HEADER);
        for row in self.rows() {
            println!("{row}");
        }
    }
}

impl Figure {
    fn row(&self, result: &str) -> String {
        format!(
            "| {} | {result} | `GET /healthz`: {} | throughput {}, p99 {} |",
            self.what,
            self.baseline.summary(),
            super::ratio(
                self.measured.requests_per_second,
                self.baseline.requests_per_second
            ),
            super::ratio(
                self.measured.p99.as_secs_f64(),
                self.baseline.p99.as_secs_f64()
            ),
        )
    }
}

fn failures(outcome: &Outcome) -> String {
    if outcome.failed > 0 || outcome.socket_errors > 0 {
        format!(
            " ({} non-2xx, {} socket errors)",
            outcome.failed, outcome.socket_errors
        )
    } else {
        String::new()
    }
}
