//! The usage sampler on the in-memory runtime: what it measures reaches the
//! job's status and telemetry, the peak outlives the agent, and a failing
//! reading neither stops sampling nor touches the job.

use std::sync::Arc;
use std::time::Duration;

use icarus::job::{JobId, Role};
use icarus::metrics::Metrics;
use icarus::runtime::Usage;
use icarus::usage::{Round, UsageSampler};
use serde_json::Value;

use crate::support::{TestServer, eventually};

const MB: u64 = 1 << 20;

fn usage(cpu_seconds: f64, memory_mb: u64) -> Usage {
    Usage {
        cpu_seconds,
        memory_bytes: memory_mb * MB,
    }
}

/// Spawns a job and waits until its builder runs and its id is recorded.
async fn running_builder(server: &TestServer) -> JobId {
    let id = server.spawn("measure me").await;
    server.wait_for_builder(id).await;
    eventually(Duration::from_secs(10), || async {
        let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
        status["builder_container_id"].is_string().then_some(())
    })
    .await;
    id
}

/// The job's measured usage of `role` once `ready` holds for it.
async fn usage_when(
    server: &TestServer,
    id: JobId,
    role: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    eventually(Duration::from_secs(10), || async {
        let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
        let usage = status[format!("{role}_usage")].clone();
        ready(&usage).then_some(usage)
    })
    .await
}

#[tokio::test]
async fn the_status_shows_measured_usage_and_keeps_its_peak_after_the_agent_ends() {
    let server = TestServer::sqlite_with(|c| c.agents.usage_interval_seconds = 1).await;
    let id = running_builder(&server).await;
    assert!(server.runtime.set_usage(id, Role::Builder, usage(2.0, 300)));
    usage_when(&server, id, "builder", |u| {
        u["memory_peak_bytes"] == 300 * MB
    })
    .await;
    assert!(server.runtime.set_usage(id, Role::Builder, usage(4.0, 100)));
    let latest = usage_when(&server, id, "builder", |u| u["memory_bytes"] == 100 * MB).await;
    assert_eq!(latest["memory_peak_bytes"], 300 * MB, "the peak stays");
    assert_eq!(latest["cpu_seconds"], 4.0);

    let (_, telemetry) = server.get(&format!("/jobs/{id}/telemetry")).await;
    assert_eq!(telemetry["measured"]["source"], "icarus", "{telemetry}");
    assert_eq!(telemetry["measured"]["role"], "builder");
    assert_eq!(telemetry["measured"]["ram_usage_mb"], 100.0);
    assert!(telemetry["current_tool"].is_null(), "no agent report yet");

    assert!(server.runtime.exit(id, Role::Builder, 0));
    let status = server.wait_for(id, "checking").await;
    assert_eq!(status["builder_usage"]["memory_peak_bytes"], 300 * MB);
    assert_eq!(status["builder_usage"]["cpu_seconds"], 4.0);
    assert!(
        status["checker_usage"].is_null(),
        "nothing measured of the checker yet"
    );
}

#[tokio::test]
async fn the_stream_carries_the_measured_usage_with_each_status() {
    let server = TestServer::sqlite_with(|c| c.agents.usage_interval_seconds = 1).await;
    let id = running_builder(&server).await;
    assert!(server.runtime.set_usage(id, Role::Builder, usage(3.0, 200)));
    usage_when(&server, id, "builder", |u| u.is_object()).await;
    let mut socket = crate::stream::connect(&server, &format!("/jobs/{id}/stream")).await;
    let now = crate::stream::next_update(&mut socket).await.unwrap();
    assert_eq!(now["status"], "building");
    assert_eq!(now["builder_usage"]["memory_peak_bytes"], 200 * MB, "{now}");
    assert!(server.runtime.exit(id, Role::Builder, 0));
    let next = crate::stream::next_update(&mut socket).await.unwrap();
    assert_eq!(next["status"], "checking");
    assert_eq!(
        next["builder_usage"]["memory_peak_bytes"],
        200 * MB,
        "{next}"
    );
}

#[tokio::test]
async fn a_failing_reading_is_counted_and_the_next_round_measures_again() {
    let server = TestServer::sqlite_with(|c| c.agents.usage_interval_seconds = 0).await;
    let id = running_builder(&server).await;
    assert!(server.runtime.set_usage(id, Role::Builder, usage(1.0, 64)));
    // The server's own store: SQLite serves one process, whose writes the
    // read view sees.
    let store = server.orchestrator.as_ref().unwrap().store().clone();
    let metrics = Metrics::new();
    let sampler = UsageSampler::new(Arc::new(server.runtime.clone()), 1, metrics.usage.clone())
        .expect("an interval of one second samples");

    server.runtime.fail_usage(true);
    let failed = sampler.round(&store).await;
    assert_eq!(
        failed,
        Round {
            failed: 1,
            ..Round::default()
        }
    );
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "building", "the job goes on: {status}");
    assert!(status["builder_usage"].is_null());

    server.runtime.fail_usage(false);
    let measured = sampler.round(&store).await;
    assert_eq!(
        measured,
        Round {
            recorded: 1,
            ..Round::default()
        }
    );
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["builder_usage"]["memory_peak_bytes"], 64 * MB);

    let text = metrics.encode(icarus::metrics::Format::Prometheus);
    assert!(
        text.contains(r#"icarus_usage_samples_total{outcome="failed"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"icarus_usage_samples_total{outcome="recorded"} 1"#));
}

#[tokio::test]
async fn sampling_off_measures_nothing() {
    assert!(
        UsageSampler::new(
            Arc::new(icarus::runtime::fake::FakeRuntime::new()),
            0,
            Metrics::new().usage
        )
        .is_none()
    );
}

#[tokio::test]
async fn the_openapi_document_describes_measured_usage() {
    let server = TestServer::sqlite().await;
    let (_, doc) = server.get("/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    for name in ["UsageView", "MeasuredSample"] {
        assert!(schemas[name].is_object(), "{name} is not described");
    }
    let status = &schemas["JobStatusResponse"]["properties"];
    assert!(status["builder_usage"].is_object() && status["checker_usage"].is_object());
    assert!(schemas["TelemetryResponse"]["properties"]["measured"].is_object());
}
