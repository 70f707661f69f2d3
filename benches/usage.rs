//! What measuring agents costs, on the real Docker engine, in one run.
//!
//! N idle agents (the reference builder in its `hang` mode, confined as
//! Icarus confines agents; 50 by default) are started and recorded as
//! building jobs. Then, alternately, R rounds of each:
//!
//! - the baseline: one `observe` per job (the engine's list of the job's
//!   containers, what the controller's resync already asks of every job);
//! - a sampling round: [`UsageSampler::round`], each agent read and its
//!   reading stored (SQLite): from its cgroup files (the default where this
//!   host shows them), and, in a round of its own, from the engine's one-shot
//!   stats API (`agents.usage_cgroup_root: ""`).
//!
//! Each round's wall time, the CPU this process used (every thread's
//! `schedstat`), and the engine's (dockerd, containerd and the shims). The
//! ratios are sampling / baseline; the share of a CPU is what a round
//! costs at the default interval of 5 s.
//!
//! Run with `scripts/build-images && cargo bench --bench usage`
//! (`BENCH_AGENTS=50`, `BENCH_ROUNDS=10`). Prints a Markdown table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use icarus::config::Config;
use icarus::job::workload::WorkloadKey;
use icarus::job::{Job, JobId, JobSpec, Phase, Role, timestamp_now};
use icarus::metrics::Metrics;
use icarus::runtime::{Runtime, WorkloadSpec};
use icarus::store::Store;
use icarus::usage::UsageSampler;

const INTERVAL_SECONDS: f64 = 5.0;

#[tokio::main]
async fn main() {
    let agents = env_number("BENCH_AGENTS", 50);
    let rounds = env_number("BENCH_ROUNDS", 10);
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded_default().unwrap();
    config.workspace.base_path = dir.path().join("workspaces");
    config.database.url = format!("sqlite://{}/icarus.db", dir.path().display());
    let runtime = icarus::serve::local::docker_runtime(&config).await.unwrap();
    let store = Store::connect(&config.database.url).await.unwrap();
    store.migrate().await.unwrap();

    let started = start_agents(&runtime, &store, &config, agents).await;
    // Let the agents settle before anything is timed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sampler = UsageSampler::new(runtime.clone(), 5, Metrics::new().usage).unwrap();
    let mut engine_only = config.clone();
    engine_only.agents.usage_cgroup_root = Default::default();
    let engine_runtime = icarus::serve::local::docker_runtime(&engine_only)
        .await
        .unwrap();
    let engine_sampler = UsageSampler::new(engine_runtime, 5, Metrics::new().usage).unwrap();
    let jobs: Vec<JobId> = started.iter().map(|(key, _)| key.job).collect();

    let mut baseline = Vec::new();
    let mut sampling = Vec::new();
    let mut stats_api = Vec::new();
    let mut failed = 0;
    for _ in 0..rounds {
        baseline.push(
            measure(|| async {
                let seen = futures::stream::iter(&jobs)
                    .map(|job| runtime.observe(*job))
                    .buffer_unordered(16)
                    .filter(|observed| {
                        let one = matches!(observed, Ok(workloads) if workloads.len() == 1);
                        async move { one }
                    })
                    .count()
                    .await;
                failed += agents - seen;
            })
            .await,
        );
        sampling.push(
            measure(|| async {
                let round = sampler.round(&store).await;
                failed += round.failed + round.unmeasured;
            })
            .await,
        );
        stats_api.push(
            measure(|| async {
                let round = engine_sampler.round(&store).await;
                failed += round.failed + round.unmeasured;
            })
            .await,
        );
    }
    for (key, id) in &started {
        runtime.remove(*key, id).await.unwrap();
        runtime.remove_workspace(key.job).await.unwrap();
    }

    println!(
        "observations and readings that failed or measured nothing: {failed} of {}\n",
        3 * agents * rounds
    );
    let base = Cost::median(&baseline);
    let files = Cost::median(&sampling);
    let api = Cost::median(&stats_api);
    println!(
        "| {agents} idle agents, median of {rounds} rounds | baseline: observe each job | sampling: cgroup files | ratio | sampling: stats API | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    let row = |what: &str, pick: fn(&Cost) -> f64| {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.2}x | {:.1} ms | {:.2}x |",
            pick(&base),
            pick(&files),
            pick(&files) / pick(&base),
            pick(&api),
            pick(&api) / pick(&base)
        );
    };
    row("wall time of a round", |c| c.wall_ms);
    row("Icarus's CPU per round", |c| c.own_cpu_ms);
    row("the engine's CPU per round", |c| c.engine_cpu_ms);
    println!(
        "| share of one CPU at a round every {INTERVAL_SECONDS} s (Icarus + engine) | {:.2} % | {:.2} % | | {:.2} % | |",
        base.share(),
        files.share(),
        api.share()
    );
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Starts `n` idle builders, each recorded as a building job.
async fn start_agents(
    runtime: &Arc<dyn Runtime>,
    store: &Store,
    config: &Config,
    n: usize,
) -> Vec<(WorkloadKey, String)> {
    let mut started = Vec::new();
    for i in 0..n {
        let spec = JobSpec::new(format!("idle {i} [builder:hang]"), "/workspace");
        let mut job = store
            .create_job(&Job::new(spec, timestamp_now()))
            .await
            .unwrap();
        let key = WorkloadKey {
            job: job.id,
            role: Role::Builder,
            attempt: 1,
        };
        let agent = &config.agents.builder;
        let workload = WorkloadSpec {
            key,
            image: agent.image_name.clone(),
            env: vec![
                ("JOB_ID".to_owned(), job.id.to_string()),
                ("TASK".to_owned(), job.spec.task.clone()),
                ("ICARUS_ROLE".to_owned(), "builder".to_owned()),
            ],
            cpu_limit: agent.cpu_limit,
            memory_limit: agent.memory_limit,
            network_mode: agent.network_mode.clone(),
            workspace_read_only: false,
        };
        runtime.prepare_workspace(job.id).await.unwrap();
        let id = runtime.start(&workload).await.unwrap();
        job.status.phase = Phase::Building;
        job.status.builder.workload_id = Some(id.clone());
        store.update_job(&job, None).await.unwrap();
        started.push((key, id));
    }
    started
}

/// What one round cost.
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall_ms: f64,
    own_cpu_ms: f64,
    engine_cpu_ms: f64,
}

impl Cost {
    fn median(costs: &[Cost]) -> Cost {
        let median = |pick: fn(&Cost) -> f64| {
            let mut values: Vec<f64> = costs.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        Cost {
            wall_ms: median(|c| c.wall_ms),
            own_cpu_ms: median(|c| c.own_cpu_ms),
            engine_cpu_ms: median(|c| c.engine_cpu_ms),
        }
    }

    /// Percent of one CPU, at one round per interval.
    fn share(&self) -> f64 {
        (self.own_cpu_ms + self.engine_cpu_ms) / (INTERVAL_SECONDS * 1000.0) * 100.0
    }
}

async fn measure<F, Fut>(round: F) -> Cost
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (own, engine) = (cpu_ns(&[std::process::id()]), cpu_ns(&engine_pids()));
    let start = Instant::now();
    round().await;
    let wall = start.elapsed();
    let (own_after, engine_after) = (cpu_ns(&[std::process::id()]), cpu_ns(&engine_pids()));
    Cost {
        wall_ms: wall.as_secs_f64() * 1000.0,
        own_cpu_ms: own_after.saturating_sub(own) as f64 / 1e6,
        engine_cpu_ms: engine_after.saturating_sub(engine) as f64 / 1e6,
    }
}

/// The engine's processes: dockerd, containerd and the containers' shims.
fn engine_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            matches!(comm.trim(), "dockerd" | "containerd") || comm.starts_with("containerd-shim")
        })
        .collect()
}

/// CPU time of every thread of `pids`, in nanoseconds (`schedstat`).
fn cpu_ns(pids: &[u32]) -> u64 {
    pids.iter()
        .flat_map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .filter_map(|task| {
                    let path = task.ok()?.path().join("schedstat");
                    let text = std::fs::read_to_string(path).ok()?;
                    text.split_whitespace().next()?.parse::<u64>().ok()
                })
        })
        .sum()
}
