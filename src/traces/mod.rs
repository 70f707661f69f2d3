//! Traces for machines: an optional OpenTelemetry exporter, off by default.
//!
//! With `tracing.otlp_endpoint` set, the spans the code already makes for
//! logs (each HTTP request, each reconcile of a job, each runtime call that
//! starts or removes an agent) are also sent to an OpenTelemetry collector
//! over OTLP/HTTP (protobuf), through a `tracing-opentelemetry` layer on the
//! same subscriber as the log. Nothing is added when it is off: no layer,
//! no thread, no connection.
//!
//! Tracing must never cost the orchestrator its work: spans wait in a
//! bounded queue and are dropped when it is full; the export runs apart
//! from requests and reconciles ([`export`]); a collector that cannot be
//! reached is reported once, not once per span; and the flush at a graceful
//! stop is bounded.

mod export;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

use crate::config::TracingConfig;

/// Spans waiting for export; more are dropped.
const QUEUE_SPANS: usize = 2048;

/// How long a graceful stop waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this process exports spans (set once, when the layer is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("cannot build the OTLP trace exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot build the trace exporter's HTTP client")]
    Client(#[from] reqwest::Error),
}

/// Which kind of orchestrator sends the spans: the `icarus.mode` resource
/// attribute (`local` or `kubernetes`).
pub fn mode_name(kubernetes: bool) -> &'static str {
    if kubernetes { "kubernetes" } else { "local" }
}

/// The running exporter; [`Traces::flush`] sends what is queued at a stop.
pub struct Traces {
    provider: SdkTracerProvider,
}

/// An exporter and the `tracing` layer that feeds it, if traces are on.
/// Must be called inside the tokio runtime: the export runs on it.
pub fn pipeline<S>(
    config: &TracingConfig,
    mode: &'static str,
) -> Result<Option<(Traces, impl Layer<S>)>, TracesError>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !config.enabled() {
        return Ok(None);
    }
    let exporter = export::exporter(config)?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(QUEUE_SPANS)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_batch_config(batches)
                .build(),
        )
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource(config, mode))
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("icarus"))
        .with_filter(exported_spans());
    Ok(Some((Traces { provider }, layer)))
}

/// The orchestrator's own spans and the events in them, at `info` and
/// above, whatever the log's level: never a dependency's (the Docker
/// client's would carry agents' environments).
fn exported_spans() -> Targets {
    Targets::new()
        .with_target("icarus", tracing::Level::INFO)
        .with_target("icarus_core", tracing::Level::INFO)
}

fn resource(config: &TracingConfig, mode: &'static str) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("icarus.mode", mode),
        ])
        .build()
}

impl Traces {
    /// Notes that the layer is installed: request spans then carry their
    /// OpenTelemetry name and kind, and continue a caller's trace.
    pub fn installed(&self) {
        EXPORTING.store(true, Ordering::Relaxed);
    }

    /// Exports the spans still queued, waiting at most [`FLUSH_TIMEOUT`].
    pub async fn flush(self) {
        let provider = self.provider;
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT));
        match flushed.await {
            Ok(Ok(())) => tracing::debug!("traces flushed"),
            Ok(Err(error)) => tracing::warn!(%error, "the last traces could not all be exported"),
            Err(error) => tracing::warn!(%error, "the traces' flush did not finish"),
        }
    }
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Gives a server span its OpenTelemetry name (`GET /jobs/{job_id}`) and
/// kind, when spans are exported. The span must declare `otel.name` and
/// `otel.kind` (empty).
pub fn name_server_span(span: &tracing::Span, name: &str) {
    if exporting() {
        span.record("otel.name", name);
        span.record("otel.kind", "server");
    }
}

/// Makes `span` a child of the caller's trace, if the request carries a
/// W3C `traceparent` (an invalid one is ignored) and spans are exported.
pub fn continue_callers_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !exporting() || !headers.contains_key("traceparent") {
        return;
    }
    let parent =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_endpoint_there_is_no_exporter_and_no_layer() {
        let built = pipeline::<tracing_subscriber::Registry>(&TracingConfig::default(), "local");
        assert!(built.unwrap().is_none());
        assert!(!exporting());
    }

    #[test]
    fn only_the_orchestrators_own_spans_are_exported() {
        let targets = exported_spans();
        let at = |target: &str, level| targets.would_enable(target, &level);
        assert!(at("icarus::api::spans", tracing::Level::INFO));
        assert!(at("icarus_core::job", tracing::Level::WARN));
        assert!(!at("icarus::controller", tracing::Level::DEBUG));
        assert!(!at("bollard::docker", tracing::Level::INFO));
        assert!(!at("sqlx::query", tracing::Level::INFO));
    }
}
