//! Orchestration overhead on the real Docker engine, measured in one run.
//!
//! (a) N jobs through Icarus (builder then checker each, one job at a time)
//!     against the same containers run back to back with the raw engine API:
//!     the ratio of the two wall-clock times is the orchestration overhead.
//! (b) Builder exit → checker start latency, from the engine's own
//!     timestamps (`State.FinishedAt` of the builder, `State.StartedAt` of the
//!     checker), p50 and p99 over the N jobs.
//!
//! Run with `scripts/build-images && cargo bench --bench orchestration`
//! (`BENCH_JOBS=50` for more jobs). Prints a Markdown table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use icarus::config::Config;
use icarus::server::Orchestrator;
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let docker = Docker::connect_with_defaults().expect("Docker engine");
    let dir = tempfile::tempdir().unwrap();

    // Warm both paths once so image layers and the binary's pages are cached.
    raw_engine_run(&docker, dir.path(), 1).await;
    let baseline = raw_engine_run(&docker, dir.path(), jobs).await;
    let (through_icarus, latencies) = icarus_run(&docker, dir.path(), jobs).await;

    let ratio = through_icarus.as_secs_f64() / baseline.as_secs_f64();
    println!("| measure ({jobs} jobs, builder + checker each) | result |");
    println!("|---|---|");
    println!(
        "| raw engine API, back to back | {:.2} s ({:.0} ms/job) |",
        baseline.as_secs_f64(),
        per_job(baseline, jobs)
    );
    println!(
        "| through Icarus, one job at a time | {:.2} s ({:.0} ms/job) |",
        through_icarus.as_secs_f64(),
        per_job(through_icarus, jobs)
    );
    println!("| overhead ratio (Icarus / raw) | {ratio:.2}x |");
    println!(
        "| builder exit → checker start, p50 | {:.1} ms |",
        percentile(&latencies, 50.0)
    );
    println!(
        "| builder exit → checker start, p99 | {:.1} ms |",
        percentile(&latencies, 99.0)
    );
}

fn per_job(total: Duration, jobs: usize) -> f64 {
    total.as_secs_f64() * 1000.0 / jobs as f64
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Each job's builder then checker, created, started, awaited and removed
/// with the engine API directly, on a fresh directory mounted like Icarus does.
async fn raw_engine_run(docker: &Docker, root: &std::path::Path, jobs: usize) -> Duration {
    let started = Instant::now();
    for n in 0..jobs {
        let workspace = root.join(format!("raw-{n}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&workspace).unwrap();
        for (role, read_only) in [("builder", ""), ("checker", ":ro")] {
            let body = ContainerCreateBody {
                image: Some(format!("icarus-{role}:latest")),
                env: Some(vec![
                    format!("TASK=benchmark job {n}"),
                    format!("JOB_ID={n}"),
                ]),
                host_config: Some(bollard::models::HostConfig {
                    binds: Some(vec![format!(
                        "{}:/workspace{read_only}",
                        workspace.display()
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let id = docker
                .create_container(None::<CreateContainerOptions>, body)
                .await
                .unwrap()
                .id;
            docker.start_container(&id, None).await.unwrap();
            let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
            while wait.next().await.is_some() {}
            let remove = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            docker.remove_container(&id, Some(remove)).await.unwrap();
        }
    }
    started.elapsed()
}

/// The same work submitted to Icarus over HTTP, one job admitted at a time;
/// timed until every job awaits approval. Returns the per-job hand-over latencies too.
async fn icarus_run(docker: &Docker, root: &std::path::Path, jobs: usize) -> (Duration, Vec<f64>) {
    let mut config = Config::embedded_default().unwrap();
    config.orchestrator.port = 0;
    config.orchestrator.max_concurrent_jobs = 1;
    config.sentinel.enabled = false;
    config.database.url = format!("sqlite://{}/bench.db", root.display());
    config.workspace.base_path = root.join("workspaces");
    let runtime = icarus::runtime::connect(&config).await.unwrap();
    let orchestrator = Orchestrator::start(&config, runtime).await.unwrap();
    let base = format!("http://{}", orchestrator.address());
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..jobs {
        let body: Value = client
            .post(format!("{base}/jobs/spawn"))
            .json(&json!({"task": format!("benchmark job {n}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(body["job_id"].as_str().unwrap().to_owned());
    }
    let mut remaining: Vec<String> = ids.clone();
    while !remaining.is_empty() {
        let listing: Vec<Value> = client
            .get(format!("{base}/jobs?status=awaiting_approval&limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done: Vec<&str> = listing
            .iter()
            .filter_map(|j| j["job_id"].as_str())
            .collect();
        remaining.retain(|id| !done.contains(&id.as_str()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();

    let mut latencies = Vec::new();
    for id in &ids {
        let builder = docker
            .inspect_container(&format!("icarus-{id}-builder-1"), None)
            .await
            .unwrap();
        let checker = docker
            .inspect_container(&format!("icarus-{id}-checker-1"), None)
            .await
            .unwrap();
        let finished = parse_time(builder.state.unwrap().finished_at.unwrap());
        let next_started = parse_time(checker.state.unwrap().started_at.unwrap());
        latencies.push((next_started - finished).num_microseconds().unwrap() as f64 / 1000.0);
    }
    for id in &ids {
        client
            .post(format!("{base}/jobs/{id}/cancel"))
            .send()
            .await
            .unwrap();
    }
    wait_until_removed(
        docker,
        &icarus::runtime::instance_name(&config.database.url),
    )
    .await;
    orchestrator.stop().await.unwrap();
    (elapsed, latencies)
}

fn parse_time(text: String) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&text)
        .unwrap()
        .with_timezone(&Utc)
}

async fn wait_until_removed(docker: &Docker, instance: &str) {
    for _ in 0..200 {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("icarus.instance={instance}")],
        )]);
        let options = bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
