//! The OTLP/HTTP exporter, on the orchestrator's own HTTP client.
//!
//! The SDK batches spans on a thread of its own and hands each batch to an
//! HTTP client; this one sends it with `reqwest` as a task on the tokio
//! runtime (no second HTTP stack, no second runtime), bounded by a timeout.
//! It also keeps the log quiet: the first failed export is one warning, the
//! next success one line, and nothing in between (the batch is dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};

use super::TracesError;
use crate::config::TracingConfig;

/// One export's deadline, connecting included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The most of a collector's answer read (it is normally empty).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The exporter of `config`'s collector.
pub(super) fn exporter(config: &TracingConfig) -> Result<SpanExporter, TracesError> {
    let client = TokioHttp::new(config.traces_url())?;
    let headers = config
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Ok(SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_url())
        .with_timeout(EXPORT_TIMEOUT)
        .with_headers(headers)
        .with_http_client(client)
        .build()?)
}

/// Sends the SDK's requests as tasks on the runtime it was made on.
#[derive(Debug, Clone)]
struct TokioHttp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// The collector, for the warning.
    url: String,
    /// The last export failed (a warning was logged).
    failing: Arc<AtomicBool>,
}

impl TokioHttp {
    fn new(url: String) -> Result<TokioHttp, TracesError> {
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(TokioHttp {
            client,
            runtime: tokio::runtime::Handle::current(),
            url,
            failing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Logs the first failure after a success, and the first success after a failure.
    fn note(&self, outcome: &Result<http::Response<Bytes>, HttpError>) {
        let failure = match outcome {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("the collector answered {}", answer.status())),
            Err(error) => Some(crate::errors::error_chain(error.as_ref())),
        };
        match failure {
            None if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(collector = %self.url, "traces are exported again");
            }
            Some(error) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(collector = %self.url, %error, "cannot export traces; spans are dropped until the collector answers (said once)");
            }
            _ => {}
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for TokioHttp {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            receive(client.execute(request).await?).await
        });
        let outcome = match sent.await {
            Ok(answer) => answer.map_err(HttpError::from),
            Err(join) => Err(HttpError::from(join)),
        };
        self.note(&outcome);
        outcome
    }
}

/// The collector's answer, its body cut at [`MAX_ANSWER_BYTES`].
async fn receive(mut response: reqwest::Response) -> Result<http::Response<Bytes>, reqwest::Error> {
    let mut answer = http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = std::mem::take(response.headers_mut());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(answer
        .body(Bytes::from(body))
        .unwrap_or_else(|_| http::Response::new(Bytes::new())))
}
