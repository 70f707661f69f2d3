//! Orchestration overhead on the real Docker engine, measured in one run.
//!
//! (a) N jobs through Icarus on the default configuration (builder then
//!     checker each, one job at a time, agents on the default network
//!     `icarus-agents-{instance}`) against the same containers run back to
//!     back with the raw engine API: the ratio of the two wall-clock times is
//!     the orchestration overhead. Both keep their containers until the
//!     timed part is over (Icarus keeps them until a job ends) and remove
//!     them afterwards, untimed. On the raw path the agents post their
//!     reports to a sink that only answers 200, and are confined as Icarus
//!     confines them — the same network, each job's agents in the namespace
//!     of a network holder as Icarus runs them — so both paths run the same
//!     containers doing the same work. Two more raw runs show what the
//!     holders save (agents joining the network themselves) and what the
//!     sandbox costs (Docker's defaults); one more Icarus run shows the
//!     default network against Docker's `bridge`.
//! (b) Icarus's reaction to a builder's exit: from the engine's `die` event
//!     (what Icarus reacts to) to Icarus's start call for the checker, p50
//!     and p99 over the N jobs; and the whole hand-over, builder exit
//!     (`State.FinishedAt`) to checker running (`State.StartedAt`), which
//!     includes the engine's own work, on both paths.
//!
//!     The reaction is cut into its parts (the controller's steps, caught
//!     from its spans: `timeline`), printed as a second table.
//!
//! Run with `scripts/build-images && cargo bench --bench orchestration`
//! (`BENCH_JOBS=50` for more jobs; `BENCH_REACTION_ONLY=1` for (b) alone;
//! `RUST_LOG=icarus=debug` to trace). Prints Markdown tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use icarus::config::{Config, EgressMode};
use icarus::job::JobId;
use icarus::runtime::docker::Sandbox;
use serde_json::{Value, json};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[path = "orchestration/timeline.rs"]
mod timeline;
use timeline::{STEPS, Timeline};

#[tokio::main]
async fn main() {
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let start_calls = StartCalls::default();
    let timeline = Timeline::default();
    let log = std::env::var("RUST_LOG").ok().map(|filter| {
        tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::EnvFilter::new(filter))
    });
    tracing_subscriber::registry()
        .with(
            start_calls.clone().with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("icarus::runtime::docker", tracing::Level::DEBUG),
            ),
        )
        .with(
            timeline.clone().with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("icarus::controller", tracing::Level::DEBUG)
                    .with_target("icarus::runtime::docker::events", tracing::Level::TRACE),
            ),
        )
        .with(log)
        .init();
    let docker = Docker::connect_with_defaults().expect("Docker engine");
    let dir = tempfile::tempdir().unwrap();
    let deaths = Deaths::follow(&docker);

    // Connecting once creates the agents' network and the holders' image.
    let defaults = Config::embedded_default().unwrap();
    icarus::serve::local::docker_runtime(&defaults)
        .await
        .unwrap();
    let holders = icarus::runtime::docker::ensure_holder_image(&docker)
        .await
        .unwrap();
    let watch = Watch {
        deaths: &deaths,
        start_calls: &start_calls,
        timeline: &timeline,
    };
    if std::env::var_os("BENCH_REACTION_ONLY").is_some() {
        // A warm-up job, then the reaction alone.
        icarus_run(&docker, dir.path(), 1, &watch, |_| {}).await;
        let icarus = icarus_run(&docker, dir.path(), jobs, &watch, |_| {}).await;
        print_reaction(jobs, &icarus);
        return;
    }
    let confined = Raw::confined(&docker, &defaults, holders.clone()).await;
    let direct = Raw::confined(&docker, &defaults, None).await;
    // Warm both paths once so image layers and the binary's pages are cached.
    raw_engine_run(&docker, dir.path(), 1, &confined).await;
    let raw = raw_engine_run(&docker, dir.path(), jobs, &confined).await;
    let joined = raw_engine_run(&docker, dir.path(), jobs, &direct).await;
    let unconfined = raw_engine_run(&docker, dir.path(), jobs, &Raw::Unconfined).await;
    let icarus = icarus_run(&docker, dir.path(), jobs, &watch, |_| {}).await;
    let on_bridge = icarus_run(&docker, dir.path(), jobs, &watch, |c| {
        c.agents.builder.network_mode = "bridge".to_owned();
        c.agents.checker.network_mode = "bridge".to_owned();
        // `bridge` has a route out, which only the open egress mode allows.
        c.agents.egress.mode = EgressMode::Open;
    })
    .await;

    let ratio = icarus.elapsed.as_secs_f64() / raw.elapsed.as_secs_f64();
    let holder_note = if holders.is_some() {
        "each job's agents in its network holder"
    } else {
        "no network holders on this engine"
    };
    println!("| measure ({jobs} jobs, builder + checker each) | result |");
    println!("|---|---|");
    println!(
        "| raw engine API, back to back, default network ({holder_note}) | {:.2} s ({:.0} ms/job) |",
        raw.elapsed.as_secs_f64(),
        per_job(raw.elapsed, jobs)
    );
    println!(
        "| through Icarus, one job at a time, default configuration | {:.2} s ({:.0} ms/job) |",
        icarus.elapsed.as_secs_f64(),
        per_job(icarus.elapsed, jobs)
    );
    println!("| overhead ratio (Icarus / raw) | {ratio:.2}x |");
    println!(
        "| raw engine API, agents joining the default network themselves | {:.2} s ({:.0} ms/job): {:.2}x the holders' |",
        joined.elapsed.as_secs_f64(),
        per_job(joined.elapsed, jobs),
        joined.elapsed.as_secs_f64() / raw.elapsed.as_secs_f64()
    );
    println!(
        "| raw engine API, without the sandbox | {:.2} s ({:.0} ms/job): the sandbox costs {:.2}x |",
        unconfined.elapsed.as_secs_f64(),
        per_job(unconfined.elapsed, jobs),
        raw.elapsed.as_secs_f64() / unconfined.elapsed.as_secs_f64()
    );
    println!(
        "| through Icarus, agents on `bridge` (egress open) | {:.2} s ({:.0} ms/job): default / bridge {:.2}x |",
        on_bridge.elapsed.as_secs_f64(),
        per_job(on_bridge.elapsed, jobs),
        icarus.elapsed.as_secs_f64() / on_bridge.elapsed.as_secs_f64()
    );
    for (what, samples) in [
        (
            "Icarus: admitted → awaiting approval, default configuration",
            &icarus.latencies,
        ),
        (
            "Icarus: admitted → awaiting approval, agents on `bridge`",
            &on_bridge.latencies,
        ),
        (
            "**Icarus's own share: builder `die` event → checker start call**",
            &icarus.reactions,
        ),
        (
            "builder exit → the engine's `die` event",
            &icarus.die_delays,
        ),
        ("builder exit → checker running", &icarus.handovers),
        ("raw path: builder exit → checker running", &raw.handovers),
        (
            "raw path: builder exit → engine's wait API answers",
            &raw.stop_reports,
        ),
        ("raw path: create + start of one agent", &raw.starts),
    ] {
        println!(
            "| {what}, p50 / p99 | {:.1} ms / {:.1} ms |",
            percentile(samples, 50.0),
            percentile(samples, 99.0)
        );
    }
    print_breakdown(&icarus.breakdowns);
}

/// `BENCH_REACTION_ONLY`: Icarus's reaction and its parts, nothing else.
fn print_reaction(jobs: usize, icarus: &IcarusRun) {
    println!("| measure ({jobs} jobs, builder + checker each) | result |");
    println!("|---|---|");
    println!(
        "| **Icarus's own share: builder `die` event → checker start call**, p50 / p99 | {:.1} ms / {:.1} ms |",
        percentile(&icarus.reactions, 50.0),
        percentile(&icarus.reactions, 99.0)
    );
    print_breakdown(&icarus.breakdowns);
}

/// Where the reaction went (default configuration): each part's p50 and
/// mean, and its share of the mean reaction.
fn print_breakdown(breakdowns: &[timeline::Breakdown]) {
    let mut parts: Vec<(&str, Vec<f64>)> = vec![(
        "the engine's `die` → Icarus hears of it",
        breakdowns.iter().map(|b| b.heard).collect(),
    )];
    for (index, (_, what)) in STEPS.iter().enumerate() {
        parts.push((what, breakdowns.iter().map(|b| b.steps[index]).collect()));
    }
    parts.push((
        "no step under way (queue, planning, between steps)",
        breakdowns.iter().map(|b| b.waiting).collect(),
    ));
    let mean = |samples: &[f64]| samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    let whole: f64 = parts.iter().map(|(_, samples)| mean(samples)).sum();
    println!();
    println!("| part of the reaction (default configuration) | p50 | mean | share of the mean |");
    println!("|---|---|---|---|");
    for (what, samples) in &parts {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.0} % |",
            percentile(samples, 50.0),
            mean(samples),
            100.0 * mean(samples) / whole
        );
    }
    println!("| the whole reaction | | {whole:.1} ms | 100 % |");
}

/// What the Icarus runs watch: the engine's `die` events and Icarus's own
/// trace.
struct Watch<'a> {
    deaths: &'a Deaths,
    start_calls: &'a StartCalls,
    timeline: &'a Timeline,
}

/// When Icarus asked the engine to start each container, by name: the
/// Docker runtime's `start call` debug event, caught as it is emitted.
#[derive(Clone, Default)]
struct StartCalls(Arc<Mutex<HashMap<String, DateTime<Utc>>>>);

impl<S: tracing::Subscriber> Layer<S> for StartCalls {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let at = Utc::now();
        let mut fields = EventFields::default();
        event.record(&mut fields);
        if fields.message == "start call" {
            self.0.lock().unwrap().insert(fields.container, at);
        }
    }
}

#[derive(Default)]
struct EventFields {
    message: String,
    container: String,
}

impl tracing::field::Visit for EventFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "container" => self.container = format!("{value:?}"),
            _ => {}
        }
    }
}

/// The engine's `die` events, by container name, with the engine's time.
#[derive(Clone, Default)]
struct Deaths(Arc<Mutex<HashMap<String, DateTime<Utc>>>>);

impl Deaths {
    fn follow(docker: &Docker) -> Deaths {
        let deaths = Deaths::default();
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["die".to_owned()]),
        ]);
        let mut events = docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        let seen = deaths.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                let (Some(actor), Some(nanos)) = (event.actor, event.time_nano) else {
                    continue;
                };
                let Some(name) = actor.attributes.and_then(|a| a.get("name").cloned()) else {
                    continue;
                };
                let at = DateTime::from_timestamp_nanos(nanos);
                seen.0.lock().unwrap().insert(name, at);
            }
        });
        deaths
    }

    async fn of(&self, name: &str) -> DateTime<Utc> {
        for _ in 0..100 {
            if let Some(at) = self.0.lock().unwrap().get(name) {
                return *at;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no die event for {name}");
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
    /// Create + start of each agent, in milliseconds.
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

/// How the raw path runs its agents.
enum Raw {
    /// Confined as Icarus confines agents under the default configuration
    /// (user, capabilities, read-only root, `/tmp`, process limit, CPU and
    /// memory), on the agents' network, reaching the host at its gateway;
    /// with `holder_image`, each job's agents in a network holder of its
    /// own (as Icarus runs them), else each agent joining the network itself.
    Confined {
        config: Box<Config>,
        network: String,
        gateway: String,
        holder_image: Option<String>,
    },
    /// Docker's defaults: the `bridge` network, no limits.
    Unconfined,
}

impl Raw {
    async fn confined(docker: &Docker, config: &Config, holder_image: Option<String>) -> Raw {
        let instance = icarus::runtime::instance_name(&config.database.url);
        let network = icarus::runtime::docker::engine_network_name(
            &config.agents.builder.network_mode,
            &instance,
        );
        let inspected = docker
            .inspect_network(
                &network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .unwrap();
        let gateway = inspected
            .ipam
            .and_then(|ipam| ipam.config)
            .and_then(|configs| configs.into_iter().find_map(|c| c.gateway))
            .expect("the agents' network has a gateway");
        Raw::Confined {
            config: Box::new(config.clone()),
            network,
            gateway,
            holder_image,
        }
    }

    fn sandbox(config: &Config) -> Sandbox {
        Sandbox {
            user: config.agents.user.clone(),
            pids_limit: i64::from(config.agents.pids_limit),
        }
    }

    /// The holder of one job's namespace, if agents run in one.
    fn holder(&self, job: JobId) -> Option<(String, ContainerCreateBody)> {
        let Raw::Confined {
            config,
            network,
            gateway,
            holder_image: Some(image),
        } = self
        else {
            return None;
        };
        let instance = icarus::runtime::instance_name(&config.database.url);
        let name = icarus::runtime::docker::holder_name(job, network);
        let body = icarus::runtime::docker::holder_body(
            image,
            &instance,
            &Raw::sandbox(config),
            job,
            network,
            gateway,
        );
        Some((name, body))
    }

    /// The agent's host configuration and user, but for its workspace.
    fn agent(&self, role: &str, holder: Option<&str>) -> (HostConfig, Option<String>) {
        let Raw::Confined {
            config,
            network,
            gateway,
            ..
        } = self
        else {
            let host = HostConfig {
                extra_hosts: Some(vec!["host.docker.internal:host-gateway".to_owned()]),
                ..Default::default()
            };
            return (host, None);
        };
        let agent = if role == "builder" {
            &config.agents.builder
        } else {
            &config.agents.checker
        };
        let (network, extra_hosts) = match holder {
            Some(holder) => (format!("container:{holder}"), None),
            None => (
                network.clone(),
                Some(vec![format!("host.docker.internal:{gateway}")]),
            ),
        };
        let host = HostConfig {
            extra_hosts,
            ..icarus::runtime::docker::confinement(
                &Raw::sandbox(config),
                agent.cpu_limit,
                agent.memory_limit,
                &network,
            )
        };
        (host, Some(config.agents.user.clone()))
    }
}

/// Each job's builder then checker (after its network holder, where agents
/// run in one), created, started and awaited with the engine API directly,
/// on a fresh directory mounted like Icarus does.
async fn raw_engine_run(docker: &Docker, root: &std::path::Path, jobs: usize, raw: &Raw) -> RawRun {
    let sink = callback_sink().await;
    let mut starts = Vec::new();
    let mut stops_reported = Vec::new();
    let mut containers = Vec::new();
    let mut holders = Vec::new();
    let started = Instant::now();
    for n in 0..jobs {
        let workspace = root.join(format!("raw-{n}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&workspace).unwrap();
        let holder = raw.holder(JobId::new_random());
        for (role, read_only) in [("builder", ""), ("checker", ":ro")] {
            let (host, user) = raw.agent(role, holder.as_ref().map(|(name, _)| name.as_str()));
            let body = ContainerCreateBody {
                image: Some(format!("icarus-{role}:latest")),
                env: Some(vec![
                    format!("TASK=benchmark job {n}"),
                    format!("JOB_ID={n}"),
                    format!(
                        "ORCHESTRATOR_CALLBACK=http://host.docker.internal:{sink}/jobs/{n}/callback"
                    ),
                ]),
                host_config: Some(HostConfig {
                    binds: Some(vec![format!(
                        "{}:/workspace{read_only}",
                        workspace.display()
                    )]),
                    ..host
                }),
                user,
                ..Default::default()
            };
            let asked = Instant::now();
            let create = docker.create_container(None::<CreateContainerOptions>, body);
            // The first agent's holder is made while the agent is, as Icarus does.
            let id = match (&holder, role) {
                (Some((name, holder_body)), "builder") => {
                    let make_holder = async {
                        let options = CreateContainerOptions {
                            name: Some(name.clone()),
                            ..Default::default()
                        };
                        docker
                            .create_container(Some(options), holder_body.clone())
                            .await
                            .unwrap();
                        docker.start_container(name, None).await.unwrap();
                    };
                    let (created, ()) = tokio::join!(create, make_holder);
                    holders.push(name.clone());
                    created.unwrap().id
                }
                _ => create.await.unwrap().id,
            };
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
    for id in containers.into_iter().chain(holders) {
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

struct IcarusRun {
    elapsed: Duration,
    /// Admitted (`building_at`) → `awaiting_approval_at`, in milliseconds.
    latencies: Vec<f64>,
    /// The builder's `die` event → Icarus's start call for the checker, in milliseconds.
    reactions: Vec<f64>,
    /// Builder exit (`FinishedAt`) → its `die` event, in milliseconds.
    die_delays: Vec<f64>,
    /// Builder exit → checker `StartedAt`, in milliseconds.
    handovers: Vec<f64>,
    /// Each reaction cut into its parts.
    breakdowns: Vec<timeline::Breakdown>,
}

/// The same work submitted to Icarus over HTTP, one job admitted at a time,
/// on the default configuration as `adjust` leaves it; timed until every
/// job awaits approval.
async fn icarus_run(
    docker: &Docker,
    root: &std::path::Path,
    jobs: usize,
    watch: &Watch<'_>,
    adjust: impl FnOnce(&mut Config),
) -> IcarusRun {
    let mut config = Config::embedded_default().unwrap();
    config.orchestrator.port = 0;
    config.orchestrator.max_concurrent_jobs = 1;
    config.sentinel.enabled = false;
    let run = uuid::Uuid::new_v4();
    config.database.url = format!("sqlite://{}/bench-{run}.db", root.display());
    config.workspace.base_path = root.join(format!("workspaces-{run}"));
    adjust(&mut config);
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

    let mut run = IcarusRun {
        elapsed,
        latencies: Vec::new(),
        reactions: Vec::new(),
        die_delays: Vec::new(),
        handovers: Vec::new(),
        breakdowns: Vec::new(),
    };
    for id in &ids {
        let job: Value = client
            .get(format!("{base}/jobs/{id}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let time = |field: &str| parse_time(job[field].as_str().unwrap());
        run.latencies.push(millis_between(
            time("building_at"),
            time("awaiting_approval_at"),
        ));
        let builder = format!("icarus-{id}-builder-1");
        let checker = format!("icarus-{id}-checker-1");
        let builder_exit = finished_at(docker, &builder).await;
        let died = watch.deaths.of(&builder).await;
        let start_call = watch.start_calls.0.lock().unwrap()[&checker];
        run.reactions.push(millis_between(died, start_call));
        run.breakdowns
            .push(watch.timeline.breakdown(id, died, start_call));
        run.die_delays.push(millis_between(builder_exit, died));
        run.handovers.push(millis_between(
            builder_exit,
            started_at(docker, &checker).await,
        ));
    }
    for id in &ids {
        client
            .post(format!("{base}/jobs/{id}/cancel"))
            .send()
            .await
            .unwrap();
    }
    let instance = icarus::runtime::instance_name(&config.database.url);
    wait_until_removed(docker, &instance).await;
    orchestrator.stop().await.unwrap();
    // Each run's database names an instance with an agents' network of its
    // own: left behind, they would use up the engine's address pools.
    let mode = &config.agents.builder.network_mode;
    if !icarus::runtime::docker::is_builtin_network(mode) {
        let network = icarus::runtime::docker::engine_network_name(mode, &instance);
        docker.remove_network(&network).await.unwrap();
    }
    run
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
