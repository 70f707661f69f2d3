//! Traces as an operator turns them on: the real binary with
//! `tracing.otlp_endpoint` pointing at a collector stand-in in this test
//! process, which accepts `POST /v1/traces`, decodes the OTLP protobuf body
//! with the protocol's own types and keeps the spans. Spans are flushed at
//! a graceful stop (SIGTERM), so each test stops the process before it
//! reads what arrived. A collector that fails or never answers must cost
//! requests nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use icarus::job::JobId;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;

use super::{Process, containers_of, free_port};
use crate::support::eventually;

/// A caller's trace context (W3C Trace Context's example).
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALLERS_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLERS_SPAN: &str = "00f067aa0ba902b7";

/// OTLP's `STATUS_CODE_ERROR`.
const ERROR: i32 = 2;

/// One span as the collector received it, ids in hex.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: i32,
    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    status_code: i32,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

impl Received {
    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// What the stand-in has seen.
#[derive(Default)]
struct Seen {
    spans: Mutex<Vec<Received>>,
    posts: AtomicUsize,
    headers: Mutex<Option<HeaderMap>>,
    /// Answer 503 instead of accepting.
    failing: AtomicBool,
}

/// An OTLP/HTTP collector on a port of its own.
struct Collector {
    url: String,
    seen: Arc<Seen>,
}

impl Collector {
    async fn start() -> Collector {
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, seen }
    }

    fn spans(&self) -> Vec<Received> {
        self.seen.spans.lock().unwrap().clone()
    }

    /// The one span named `name` (fails if there is none, or several).
    fn span_named(&self, name: &str) -> Received {
        let spans: Vec<Received> = self
            .spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        assert_eq!(spans.len(), 1, "spans named {name}: {:#?}", self.names());
        spans[0].clone()
    }

    fn names(&self) -> Vec<String> {
        self.spans().into_iter().map(|s| s.name).collect()
    }

    fn posts(&self) -> usize {
        self.seen.posts.load(Ordering::SeqCst)
    }
}

async fn receive(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    seen.posts.fetch_add(1, Ordering::SeqCst);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    seen.headers.lock().unwrap().replace(headers);
    if seen.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut spans = seen.spans.lock().unwrap();
    for batch in request.resource_spans {
        let resource = batch
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for span in batch.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Received {
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                kind: span.kind,
                status_code: span.status.map_or(0, |status| status.code),
                attributes: attributes(&span.attributes),
                resource: resource.clone(),
            });
        }
    }
    // An empty ExportTraceServiceResponse encodes to no bytes.
    StatusCode::OK
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), text(pair.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The binary exporting to `endpoint`, with `settings` and `env` besides.
async fn traced(endpoint: &str, settings: &[(&str, &str)], env: &[(&str, &str)]) -> Process {
    let mut all = vec![("tracing.otlp_endpoint", endpoint)];
    all.extend_from_slice(settings);
    launched(&all, env).await
}

/// The binary with `settings` (configuration keys) and `env` (variables as named).
async fn launched(settings: &[(&str, &str)], env: &[(&str, &str)]) -> Process {
    let mut process = Process::configured(settings);
    process
        .settings
        .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    process.launch().await;
    process
}

/// SIGTERM, which must end in a clean exit (the spans are flushed on the
/// way). It blocks its thread: the collector answers on the test runtime's
/// other worker, so every test here runs on two.
fn stop(process: &mut Process) {
    let status = process.terminate();
    assert!(status.success(), "{status:?}; log:\n{}", process.log());
}

/// The process's threads named as the SDK names its batching thread
/// (`OpenTelemetry.Traces.BatchProcessor`, cut to 15 bytes by Linux).
fn exporter_threads(process: &Process) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", process.pid())).unwrap();
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.starts_with("OpenTelemetry"))
        .count()
}

async fn get(process: &Process, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = process.client.get(process.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_a_server_span_named_by_its_route_with_its_status_and_the_service() {
    let collector = Collector::start().await;
    let settings = [
        ("tracing.service_name", "icarus-under-test"),
        ("tracing.headers.x-api-key", "collector-secret"),
    ];
    let mut process = traced(&collector.url, &settings, &[]).await;
    let unknown = JobId::new_random();
    let missing = get(&process, &format!("/jobs/{unknown}/status"), &[]).await;
    assert_eq!(missing.status(), 404);
    let request_id = missing.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&process, "/jobs", &[]).await.status(), 200);
    assert_eq!(exporter_threads(&process), 1);
    stop(&mut process);

    let status = collector.span_named("GET /jobs/{job_id}/status");
    assert_eq!(status.kind, SpanKind::Server as i32);
    assert_eq!(status.attribute("route"), "/jobs/{job_id}/status");
    assert_eq!(status.attribute("status"), "404");
    assert_eq!(status.attribute("method"), "GET");
    assert_eq!(status.attribute("job"), unknown.to_string());
    assert_eq!(status.attribute("request_id"), request_id);
    assert_eq!(status.resource["service.name"], "icarus-under-test");
    assert_eq!(
        status.resource["service.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(status.resource["icarus.mode"], "local");
    assert_eq!(collector.span_named("GET /jobs").attribute("status"), "200");
    assert!(
        collector
            .names()
            .iter()
            .all(|name| !name.contains(&unknown.to_string())),
        "a span's name never holds an id: {:?}",
        collector.names()
    );
    let headers = collector.seen.headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["x-api-key"], "collector-secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_an_error_span_and_a_client_error_is_not() {
    let collector = Collector::start().await;
    let mut process = traced(&collector.url, &[], &[]).await;
    let missing = format!("/jobs/{}/status", JobId::new_random());
    assert_eq!(get(&process, &missing, &[]).await.status(), 404);
    // With its SQLite file gone, the store refuses to go on: 503.
    let database = process.dir.path().join("icarus.db");
    let aside = process.dir.path().join("icarus.db.aside");
    std::fs::rename(&database, &aside).unwrap();
    assert_eq!(get(&process, "/jobs", &[]).await.status(), 503);
    std::fs::rename(&aside, &database).unwrap();
    stop(&mut process);

    let failed = collector.span_named("GET /jobs");
    assert_eq!(failed.attribute("status"), "503");
    assert_eq!(failed.status_code, ERROR);
    assert_ne!(
        collector
            .span_named("GET /jobs/{job_id}/status")
            .status_code,
        ERROR
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_exporter_runs_and_nothing_is_sent() {
    let collector = Collector::start().await;
    // The SDK's own variables name the collector; Icarus's key does not.
    let endpoint = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_TRACES_EXPORTER", "otlp"),
    ];
    let mut process = launched(&[], &endpoint).await;
    assert_eq!(get(&process, "/jobs", &[]).await.status(), 200);
    assert_eq!(exporter_threads(&process), 0);
    stop(&mut process);
    assert_eq!(collector.posts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_makes_the_request_part_of_the_callers_trace() {
    let collector = Collector::start().await;
    let mut process = traced(&collector.url, &[], &[]).await;
    let answer = get(&process, "/jobs", &[("traceparent", TRACEPARENT)]).await;
    assert_eq!(answer.status(), 200);
    stop(&mut process);

    let span = collector.span_named("GET /jobs");
    assert_eq!(span.trace_id, CALLERS_TRACE);
    assert_eq!(span.parent_span_id, CALLERS_SPAN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_traceparent_on_its_callback_is_ignored() {
    let collector = Collector::start().await;
    let mut process = traced(&collector.url, &[], &[]).await;
    let callback = process
        .client
        .post(process.url(&format!("/jobs/{}/callback", JobId::new_random())))
        .header("traceparent", TRACEPARENT)
        .json(&json!({"status": "completed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(callback.status(), 404, "no such job");
    stop(&mut process);

    let span = collector.span_named("POST /jobs/{job_id}/callback");
    assert_eq!(span.attribute("status"), "404");
    assert_ne!(span.trace_id, CALLERS_TRACE);
    assert_eq!(span.parent_span_id, "", "a trace of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_is_a_span_of_its_job_and_phase_with_the_runtime_calls_inside() {
    let collector = Collector::start().await;
    let mut process = traced(&collector.url, &[], &[]).await;
    let id = building(&process).await;
    cancelled(&process, id).await;
    stop(&mut process);

    let spans = collector.spans();
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    // The reconcile span a span happened in, through the spans between.
    let reconcile_of = |span: &Received| {
        let mut at = by_id.get(span.parent_span_id.as_str()).copied();
        while let Some(parent) = at {
            if parent.name == "reconcile" {
                return Some(parent.clone());
            }
            at = by_id.get(parent.parent_span_id.as_str()).copied();
        }
        None
    };
    for call in ["runtime.start", "runtime.remove"] {
        let span = spans
            .iter()
            .find(|s| s.name == call && s.attribute("role") == "builder")
            .unwrap_or_else(|| panic!("no {call} span: {:?}", collector.names()));
        assert_eq!(span.attribute("attempt"), "1");
        let reconcile = reconcile_of(span).unwrap_or_else(|| panic!("{call} outside a reconcile"));
        assert_eq!(reconcile.attribute("job"), id.to_string());
    }
    let phases: Vec<&str> = spans
        .iter()
        .filter(|s| s.name == "reconcile" && s.attribute("job") == id.to_string())
        .map(|s| s.attribute("phase"))
        .collect();
    for phase in ["pending", "building", "cancelled"] {
        assert!(phases.contains(&phase), "{phase} not in {phases:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reconcile_is_an_error_span_of_its_job() {
    let collector = Collector::start().await;
    let mut process = traced(&collector.url, &[], &[]).await;
    let id = building(&process).await;
    // With its SQLite file gone the store refuses to go on, and the next
    // reconcile (the resync is every second) fails.
    let database = process.dir.path().join("icarus.db");
    let aside = process.dir.path().join("icarus.db.aside");
    std::fs::rename(&database, &aside).unwrap();
    eventually(Duration::from_secs(20), || async {
        process.log().contains("reconcile failed").then_some(())
    })
    .await;
    std::fs::rename(&aside, &database).unwrap();
    cancelled(&process, id).await;
    stop(&mut process);

    let reconciles: Vec<Received> = collector
        .spans()
        .into_iter()
        .filter(|s| s.name == "reconcile" && s.attribute("job") == id.to_string())
        .collect();
    assert!(
        reconciles.iter().any(|s| s.status_code == ERROR),
        "{reconciles:#?}"
    );
    assert!(reconciles.iter().any(|s| s.status_code != ERROR));
}

/// A job whose builder was started and hangs.
async fn building(process: &Process) -> JobId {
    super::super::docker::ensure_agent_images().await;
    let id = process.spawn("traced [builder:hang]").await;
    process
        .wait_until(id, |s| s["builder_container_id"].is_string())
        .await;
    id
}

/// Cancels the job and waits until its agents are gone.
async fn cancelled(process: &Process, id: JobId) {
    process.cancel(id).await;
    process.wait_for(id, "cancelled").await;
    eventually(Duration::from_secs(20), || async {
        (containers_of(id).await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_collector_is_warned_about_once_and_again_when_it_recovers() {
    let collector = Collector::start().await;
    collector.seen.failing.store(true, Ordering::SeqCst);
    // Exports every 100 ms instead of every 5 s (the SDK's own variable).
    let process = traced(&collector.url, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    eventually(Duration::from_secs(20), || async {
        assert_eq!(get(&process, "/jobs", &[]).await.status(), 200);
        (collector.posts() >= 3).then_some(())
    })
    .await;
    let warnings = |log: &str| log.matches("cannot export traces").count();
    assert_eq!(warnings(&process.log()), 1, "{}", process.log());

    collector.seen.failing.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(20), || async {
        get(&process, "/jobs", &[]).await;
        process
            .log()
            .contains("traces are exported again")
            .then_some(())
    })
    .await;
    // The export that logged the recovery may have carried other spans; a
    // request's span comes with one of the next batches.
    eventually(Duration::from_secs(20), || async {
        get(&process, "/jobs", &[]).await;
        collector
            .spans()
            .iter()
            .any(|s| s.name == "GET /jobs")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_slows_no_request_nor_the_graceful_stop() {
    // Accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            open.push(socket);
        }
    });
    let mut process = traced(&endpoint, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    let started = Instant::now();
    for _ in 0..200 {
        let answered = Instant::now();
        assert_eq!(get(&process, "/jobs", &[]).await.status(), 200);
        assert!(answered.elapsed() < Duration::from_secs(1));
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let stopping = Instant::now();
    stop(&mut process);
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "the flush is bounded: {:?}",
        stopping.elapsed()
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_no_request() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut process = traced(&endpoint, &[], &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    for _ in 0..50 {
        assert_eq!(get(&process, "/jobs", &[]).await.status(), 200);
    }
    eventually(Duration::from_secs(20), || async {
        process.log().contains("cannot export traces").then_some(())
    })
    .await;
    stop(&mut process);
}
