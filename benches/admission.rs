//! What a backlog of pending jobs costs the orchestrator, in one run.
//!
//! For each backlog size N (10 first: the baseline every ratio is against),
//! an orchestrator on a fresh SQLite file with the in-memory runtime
//! (`src/runtime/fake.rs`: no engine, so what is measured is Icarus alone),
//! `max_concurrent_jobs: 2` and a resync every second, starts with N + 2
//! pending jobs; the first two start, N wait. Then, in this process:
//!
//! - **idle**: the CPU the process uses while nothing happens but resyncs
//!   (share of one core, over `BENCH_IDLE_SECONDS`);
//! - **admission**: K times, a running builder exits (the job fails, a slot
//!   frees) and the next job in line starts: the wall time and CPU from the
//!   exit to the start, per admission;
//! - **cancel**: C pending jobs at the back of the queue cancelled through
//!   `POST /jobs/{id}/cancel` (16 at a time), until every one is
//!   `cancelled`: wall time and CPU per cancel.
//!
//! CPU is every thread's run time (`/proc/self/task/*/schedstat`), the load
//! generator included (it is small). Each figure's ratio is against the
//! N = 10 run of the same invocation: flat means the cost per job does not
//! grow with the backlog.
//!
//! Run with `cargo bench --bench admission` (quick: N = 10, 1,000, 10,000).
//! `BENCH_PENDING=10,1000,10000,100000` for the README table;
//! `BENCH_ADMISSIONS` (K, 20, at most N / 2), `BENCH_CANCELS` (C, 1,000,
//! at most N − K),
//! `BENCH_IDLE_SECONDS` (3). Prints a Markdown table.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use icarus::config::Config;
use icarus::job::{Job, JobId, JobSpec, Phase, Role, timestamp_now};
use icarus::runtime::Runtime;
use icarus::runtime::fake::FakeRuntime;
use icarus::serve::Orchestrator;
use icarus::store::{JobFilter, Store, StoreEvent};
use tokio::sync::broadcast;

const SLOTS: u32 = 2;

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_PENDING")
        .unwrap_or_else(|_| "10,1000,10000".to_owned())
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_PENDING: numbers"))
        .collect();
    let admissions = env_number("BENCH_ADMISSIONS", 20);
    let cancels = env_number("BENCH_CANCELS", 1000);
    let idle = Duration::from_secs(env_number("BENCH_IDLE_SECONDS", 3) as u64);
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .init();
    let load_before = load_average();
    let mut runs = Vec::new();
    for &pending in &sizes {
        // Admissions take jobs from the head, cancels from the back: at
        // most half each, so that they never meet.
        let admissions = admissions.min(pending / 2).max(1);
        let cancels = cancels.min(pending - admissions);
        let run = measure(pending, admissions, cancels, idle).await;
        eprintln!("{pending} pending: {run:?}");
        runs.push(run);
    }
    print_table(&runs, &load_before);
}

#[derive(Debug, Clone)]
struct Run {
    pending: usize,
    /// Start to the first two jobs running.
    startup: Duration,
    /// Share of one core while idle.
    idle_cpu: f64,
    admissions: usize,
    admission_wall: Duration,
    admission_cpu: Duration,
    cancels: usize,
    cancel_wall: Duration,
    cancel_cpu: Duration,
}

async fn measure(pending: usize, admissions: usize, cancels: usize, idle: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/icarus.db", dir.path().display());
    let queued = fill(&url, pending + SLOTS as usize).await;
    let mut config = Config::embedded_default().unwrap();
    config.orchestrator.host = "127.0.0.1".to_owned();
    config.orchestrator.port = 0;
    config.orchestrator.max_concurrent_jobs = SLOTS;
    config.orchestrator.resync_interval_seconds = 1;
    config.sentinel.enabled = false;
    config.database.url = url;
    config.workspace.base_path = dir.path().join("workspaces");
    let runtime = FakeRuntime::new();
    let shared: Arc<dyn Runtime> = Arc::new(runtime.clone());

    let started = Instant::now();
    let orchestrator = icarus::serve::local::start_on(&config, shared)
        .await
        .unwrap();
    let mut events = orchestrator.store().subscribe();
    let mut running = VecDeque::from(building(&orchestrator).await);
    let startup = started.elapsed();
    // Whatever start-up work is left settles before the idle window.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let cpu = cpu_time();
    let wall = Instant::now();
    tokio::time::sleep(idle).await;
    let idle_cpu = (cpu_time() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();

    let cpu = cpu_time();
    let wall = Instant::now();
    for _ in 0..admissions {
        let done = running.pop_front().unwrap();
        // Its builder starts just after the transition is recorded.
        while !runtime.exit(done, Role::Builder, 1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        running.push_back(next_start(&mut events).await);
    }
    let admission_wall = wall.elapsed() / admissions as u32;
    let admission_cpu = (cpu_time() - cpu) / admissions as u32;

    let last: Vec<JobId> = queued[queued.len() - cancels..].to_vec();
    let cpu = cpu_time();
    let wall = Instant::now();
    cancel_all(&orchestrator, &last, &mut events).await;
    let per = cancels.max(1) as u32;
    let run = Run {
        pending,
        startup,
        idle_cpu,
        admissions,
        admission_wall,
        admission_cpu,
        cancels,
        cancel_wall: wall.elapsed() / per,
        cancel_cpu: (cpu_time() - cpu) / per,
    };
    orchestrator.stop().await.unwrap();
    run
}

/// Stores `count` pending jobs, oldest first, before the orchestrator
/// starts (so that its store's feed is not what brings them); their ids.
async fn fill(url: &str, count: usize) -> Vec<JobId> {
    let store = Store::connect(url).await.unwrap();
    store.migrate().await.unwrap();
    let base = timestamp_now();
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let created = base + chrono::TimeDelta::microseconds(n as i64);
        let job = Job::new(JobSpec::new(format!("task {n}"), "/workspace"), created);
        ids.push(store.create_job(&job).await.unwrap().id);
    }
    store.close().await;
    ids
}

/// The jobs building once both slots are taken.
async fn building(orchestrator: &Orchestrator) -> Vec<JobId> {
    loop {
        let filter = JobFilter {
            phase: Some(Phase::Building),
            project_id: None,
            limit: SLOTS,
            after: None,
        };
        let jobs = orchestrator.store().list_jobs(filter).await.unwrap();
        if jobs.len() == SLOTS as usize {
            return jobs.iter().map(|job| job.id).collect();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next job to move to `building`.
async fn next_start(events: &mut broadcast::Receiver<StoreEvent>) -> JobId {
    next_transition(events, Phase::Building).await
}

async fn next_transition(events: &mut broadcast::Receiver<StoreEvent>, to: Phase) -> JobId {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Transitioned { job, transition }) if transition.to == to => {
                    return job.id;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the store closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(600), wait)
        .await
        .expect("a transition within 10 minutes")
}

/// Cancels `jobs` through the API and waits until each is `cancelled`.
async fn cancel_all(
    orchestrator: &Orchestrator,
    jobs: &[JobId],
    events: &mut broadcast::Receiver<StoreEvent>,
) {
    let client = reqwest::Client::new();
    let base = format!("http://{}", orchestrator.address());
    let requests = futures::stream::iter(jobs)
        .map(|id| {
            let request = client
                .post(format!("{base}/jobs/{id}/cancel"))
                .json(&serde_json::json!({}))
                .send();
            async move {
                let response = request.await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    let mut seen = std::collections::HashSet::new();
    let wait = async {
        while seen.len() < jobs.len() {
            seen.insert(next_transition(events, Phase::Cancelled).await);
        }
    };
    tokio::join!(requests, wait);
}

/// CPU time of every thread of this process so far.
fn cpu_time() -> Duration {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            nanos += text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(nanos)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ratio(value: f64, baseline: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}×", value / baseline)
    } else {
        "—".to_owned()
    }
}

fn print_table(runs: &[Run], load_before: &str) {
    let Some(base) = runs.first() else { return };
    println!(
        "\n{} CPUs; load average before: {load_before}, after: {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!(
        "| pending | start-up | idle CPU (share of a core) | admission: wall, CPU per job (ratio) | cancel through the API: wall, CPU per job (ratio) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for run in runs {
        println!(
            "| {} | {:.0} ms | {:.3} | {} jobs: {:.2} ms, {:.2} ms ({}) | {} jobs: {:.2} ms, {:.2} ms ({}) |",
            run.pending,
            ms(run.startup),
            run.idle_cpu,
            run.admissions,
            ms(run.admission_wall),
            ms(run.admission_cpu),
            ratio(ms(run.admission_cpu), ms(base.admission_cpu)),
            run.cancels,
            ms(run.cancel_wall),
            ms(run.cancel_cpu),
            ratio(ms(run.cancel_cpu), ms(base.cancel_cpu)),
        );
    }
}
