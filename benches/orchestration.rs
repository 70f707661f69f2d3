//! Orchestration overhead on the real Docker engine, measured in one run.
//!
//! (a) N jobs through Icarus (builder then checker each, one job at a time)
//!     against the same containers run back to back with the raw engine API:
//!     the ratio of the two wall-clock times is the orchestration overhead.
//!     Both keep their containers until the timed part is over (Icarus keeps
//!     them until a job ends) and remove them afterwards, untimed. On the raw
//!     path the agents post their reports to a sink that only answers 200,
//!     and are confined as Icarus confines them, so both paths run the same
//!     containers doing the same work. A third run without the confinement
//!     shows what the sandbox itself costs.
//! (b) Builder exit → checker start latency, p50 and p99 over the N jobs, in
//!     two parts: the reaction (the builder's `State.FinishedAt` in the engine
//!     to the job's `checking_at`, when Icarus decided to start the checker),
//!     set beside the engine's own report of a stop on the raw path (its wait
//!     API answering), which Icarus waits for too; and the whole hand-over
//!     (to the checker's `State.StartedAt`), which includes the engine's own
//!     create + start, on both paths.
//!
//! Run with `scripts/build-images && cargo bench --bench orchestration`
//! (`BENCH_JOBS=50` for more jobs; `RUST_LOG=icarus=debug` to trace). Prints a
//! Markdown table.

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
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let docker = Docker::connect_with_defaults().expect("Docker engine");
    let dir = tempfile::tempdir().unwrap();

    // Connecting once creates the agents' network the sandboxed runs use.
    let defaults = Config::embedded_default().unwrap();
    icarus::serve::local::docker_runtime(&defaults)
        .await
        .unwrap();
    // Warm both paths once so image layers and the binary's pages are cached.
    raw_engine_run(&docker, dir.path(), 1, Some(&defaults)).await;
    let raw = raw_engine_run(&docker, dir.path(), jobs, Some(&defaults)).await;
    let unconfined = raw_engine_run(&docker, dir.path(), jobs, None).await;
    let icarus = icarus_run(&docker, dir.path(), jobs).await;

    let ratio = icarus.elapsed.as_secs_f64() / raw.elapsed.as_secs_f64();
    println!("| measure ({jobs} jobs, builder + checker each) | result |");
    println!("|---|---|");
    println!(
        "| raw engine API, back to back | {:.2} s ({:.0} ms/job) |",
        raw.elapsed.as_secs_f64(),
        per_job(raw.elapsed, jobs)
    );
    println!(
        "| through Icarus, one job at a time | {:.2} s ({:.0} ms/job) |",
        icarus.elapsed.as_secs_f64(),
        per_job(icarus.elapsed, jobs)
    );
    println!("| overhead ratio (Icarus / raw) | {ratio:.2}x |");
    println!(
        "| raw engine API, without the sandbox | {:.2} s ({:.0} ms/job): the sandbox costs {:.2}x |",
        unconfined.elapsed.as_secs_f64(),
        per_job(unconfined.elapsed, jobs),
        raw.elapsed.as_secs_f64() / unconfined.elapsed.as_secs_f64()
    );
    for (what, samples) in [
        (
            "builder exit → Icarus starts the checker",
            &icarus.reactions,
        ),
        (
            "raw path: builder exit → engine reports it stopped",
            &raw.stop_reports,
        ),
        ("builder exit → checker running", &icarus.handovers),
        ("raw path: builder exit → checker running", &raw.handovers),
        ("raw path: create + start of one container", &raw.starts),
    ] {
        println!(
            "| {what}, p50 / p99 | {:.1} ms / {:.1} ms |",
            percentile(samples, 50.0),
            percentile(samples, 99.0)
        );
    }
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

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

struct RawRun {
    elapsed: Duration,
    /// Create + start of each container, in milliseconds.
    starts: Vec<f64>,
    /// Builder `FinishedAt` → the engine's wait API answering, in milliseconds.
    stop_reports: Vec<f64>,
    /// Builder `FinishedAt` → checker `StartedAt`, in milliseconds.
    handovers: Vec<f64>,
}

/// Answers every agent callback with 200 and does nothing else, so the raw
/// path's agents do the same work (their HTTP reports) as under Icarus.
/// Returns the port it listens on, on all interfaces so containers reach it.
async fn callback_sink() -> u16 {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|| async { "{}" });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// Each job's builder then checker, created, started and awaited with the
/// engine API directly, on a fresh directory mounted like Icarus does.
/// With `sandbox`, the containers are confined exactly as Icarus confines
/// agents under that configuration (user, capabilities, read-only root,
/// `/tmp`, process limit, network, CPU and memory); without, Docker's defaults.
async fn raw_engine_run(
    docker: &Docker,
    root: &std::path::Path,
    jobs: usize,
    sandbox: Option<&Config>,
) -> RawRun {
    let sink = callback_sink().await;
    let mut starts = Vec::new();
    let mut stops_reported = Vec::new();
    let mut containers = Vec::new();
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
                    format!(
                        "ORCHESTRATOR_CALLBACK=http://host.docker.internal:{sink}/jobs/{n}/callback"
                    ),
                ]),
                host_config: Some(bollard::models::HostConfig {
                    extra_hosts: Some(vec!["host.docker.internal:host-gateway".to_owned()]),
                    binds: Some(vec![format!(
                        "{}:/workspace{read_only}",
                        workspace.display()
                    )]),
                    ..sandbox.map(|c| confined(c, role)).unwrap_or_default()
                }),
                user: sandbox.map(|c| c.agents.user.clone()),
                ..Default::default()
            };
            let asked = Instant::now();
            let id = docker
                .create_container(None::<CreateContainerOptions>, body)
                .await
                .unwrap()
                .id;
            docker.start_container(&id, None).await.unwrap();
            starts.push(millis(asked.elapsed()));
            let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
            while wait.next().await.is_some() {}
            stops_reported.push(Utc::now());
            containers.push(id);
        }
    }
    let elapsed = started.elapsed();
    let mut handovers = Vec::new();
    let mut stop_reports = Vec::new();
    for (pair, reported) in containers.chunks(2).zip(stops_reported.chunks(2)) {
        let builder_exit = finished_at(docker, &pair[0]).await;
        stop_reports.push(millis_between(builder_exit, reported[0]));
        handovers.push(millis_between(
            builder_exit,
            started_at(docker, &pair[1]).await,
        ));
    }
    for id in containers {
        let remove = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        docker.remove_container(&id, Some(remove)).await.unwrap();
    }
    RawRun {
        elapsed,
        starts,
        stop_reports,
        handovers,
    }
}

/// The confinement `DockerRuntime` applies, from the same configuration.
fn confined(config: &Config, role: &str) -> bollard::models::HostConfig {
    let agent = if role == "builder" {
        &config.agents.builder
    } else {
        &config.agents.checker
    };
    let sandbox = icarus::runtime::docker::Sandbox {
        user: config.agents.user.clone(),
        pids_limit: i64::from(config.agents.pids_limit),
    };
    let instance = icarus::runtime::instance_name(&config.database.url);
    let network = icarus::runtime::docker::engine_network_name(&agent.network_mode, &instance);
    icarus::runtime::docker::confinement(&sandbox, agent.cpu_limit, agent.memory_limit, &network)
}

struct IcarusRun {
    elapsed: Duration,
    /// Builder exit → the job's `checking_at`, in milliseconds.
    reactions: Vec<f64>,
    /// Builder exit → checker `StartedAt`, in milliseconds.
    handovers: Vec<f64>,
}

/// The same work submitted to Icarus over HTTP, one job admitted at a time;
/// timed until every job awaits approval.
async fn icarus_run(docker: &Docker, root: &std::path::Path, jobs: usize) -> IcarusRun {
    let mut config = Config::embedded_default().unwrap();
    config.orchestrator.port = 0;
    config.orchestrator.max_concurrent_jobs = 1;
    config.sentinel.enabled = false;
    config.database.url = format!("sqlite://{}/bench.db", root.display());
    config.workspace.base_path = root.join("workspaces");
    let runtime = icarus::serve::local::docker_runtime(&config).await.unwrap();
    let orchestrator = icarus::serve::local::start_on(&config, runtime)
        .await
        .unwrap();
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
    let mut listing = Vec::new();
    while listing.len() < jobs {
        listing = client
            .get(format!("{base}/jobs?status=awaiting_approval&limit=1000"))
            .send()
            .await
            .unwrap()
            .json::<Vec<Value>>()
            .await
            .unwrap();
        // Coarse on purpose: a busy poller would steal CPU from the engine.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();

    let mut reactions = Vec::new();
    let mut handovers = Vec::new();
    for id in &ids {
        let job: Value = client
            .get(format!("{base}/jobs/{id}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let builder_exit = finished_at(docker, &format!("icarus-{id}-builder-1")).await;
        let checker_start = started_at(docker, &format!("icarus-{id}-checker-1")).await;
        let decided = parse_time(job["checking_at"].as_str().unwrap());
        reactions.push(millis_between(builder_exit, decided));
        handovers.push(millis_between(builder_exit, checker_start));
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
    IcarusRun {
        elapsed,
        reactions,
        handovers,
    }
}

async fn finished_at(docker: &Docker, name: &str) -> DateTime<Utc> {
    let state = docker.inspect_container(name, None).await.unwrap().state;
    parse_time(&state.unwrap().finished_at.unwrap())
}

async fn started_at(docker: &Docker, name: &str) -> DateTime<Utc> {
    let state = docker.inspect_container(name, None).await.unwrap().state;
    parse_time(&state.unwrap().started_at.unwrap())
}

fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap() as f64 / 1000.0
}

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
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
