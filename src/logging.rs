//! What the orchestrator's log looks like, set once at start.
//!
//! Text for a person (`logging.format: text`, the default), coloured only
//! when stderr is a terminal and `NO_COLOR` is unset, so a file or a pipe
//! never holds escape codes; JSON lines for machines (`logging.format:
//! json`): one object per event with its level, target, message, fields and
//! the spans it happened in (a reconcile's `job`, a request's `request_id`).
//! `RUST_LOG` wins over `logging.level`.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LoggingConfig, TracingConfig};
use crate::traces::{Traces, TracesError};

/// Installs the process's logger (a second call changes nothing).
pub fn init(config: &LoggingConfig) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(config))
        .try_init();
}

/// Installs the logger and, if `tracing.otlp_endpoint` is set, the trace
/// exporter beside it (see [`crate::traces`]); `mode` is the orchestrator's.
/// Inside the tokio runtime only. Spans reach the exporter whatever the
/// log's level.
pub fn init_with_traces(
    config: &LoggingConfig,
    tracing: &TracingConfig,
    mode: &'static str,
) -> Result<Option<Traces>, TracesError> {
    let Some((traces, exporter)) = crate::traces::pipeline(tracing, mode)? else {
        init(config);
        return Ok(None);
    };
    let installed = tracing_subscriber::registry()
        .with(log_layer(config))
        .with(exporter)
        .try_init();
    if installed.is_ok() {
        traces.installed();
    }
    Ok(Some(traces))
}

/// The log, filtered by `RUST_LOG` or `logging.level`.
fn log_layer(config: &LoggingConfig) -> impl Layer<Registry> + Send + Sync {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    let filter = EnvFilter::try_new(filter_spec(&spec))
        .unwrap_or_else(|_| EnvFilter::new(filter_spec(&config.level)));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match config.format {
        LogFormat::Text => layer.with_ansi(wants_colour()).boxed(),
        LogFormat::Json => layer
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    layer.with_filter(filter)
}

/// Colour only for a person at a terminal who has not asked for none
/// (<https://no-color.org>).
fn wants_colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// `spec` with the Docker client held at `info`: at `debug` it prints each
/// container's configuration, agent tokens in its environment included. An
/// operator who names `bollard` in the filter asks for it knowingly.
fn filter_spec(spec: &str) -> String {
    if spec.contains("bollard") {
        spec.to_owned()
    } else {
        format!("{spec},bollard=info")
    }
}

#[cfg(test)]
mod tests {
    use super::filter_spec;

    #[test]
    fn the_docker_client_never_logs_agents_environments_unless_asked_by_name() {
        assert_eq!(filter_spec("debug"), "debug,bollard=info");
        assert_eq!(filter_spec("icarus=trace"), "icarus=trace,bollard=info");
        assert_eq!(filter_spec("debug,bollard=trace"), "debug,bollard=trace");
    }
}
