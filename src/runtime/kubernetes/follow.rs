//! Following a Pod's output as it is printed: the Pod log API with
//! `follow` and `timestamps`. The API merges the container's stdout and
//! stderr into one stream (it does not say which a line came from), so
//! every line is reported as stdout. Each line starts with its RFC 3339
//! timestamp; the bytes after it are passed on as they come, so a line
//! without an end costs the follower no more than its line limit.

use chrono::{DateTime, Utc};
use futures::io::{AsyncBufRead, AsyncBufReadExt};
use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;

use super::failed;
use crate::logs::LogStream;
use crate::runtime::{LogChunk, Result};

/// The longest timestamp prefix looked for at the start of a line.
const MAX_PREFIX: usize = 40;

/// The Pod's output from `since` (in whole seconds, rounded back) on,
/// until it ends.
pub(super) fn follow(
    pods: Api<Pod>,
    name: String,
    since: Option<DateTime<Utc>>,
) -> BoxStream<'static, Result<LogChunk>> {
    let params = LogParams {
        follow: true,
        timestamps: true,
        since_seconds: since.map(|at| (Utc::now() - at).num_seconds().max(0) + 1),
        ..LogParams::default()
    };
    stream::once(async move { pods.log_stream(&name, &params).await })
        .flat_map(|opened| match opened {
            Ok(reader) => chunks(Box::pin(reader)).boxed(),
            Err(error) => stream::iter([Err(failed("follow pod logs", error))]).boxed(),
        })
        .boxed()
}

/// Where a reader is within the current line.
struct Reader<R> {
    reader: R,
    /// The line's start, until its timestamp is read.
    prefix: Vec<u8>,
    /// The current line's timestamp, once read.
    at: Option<DateTime<Utc>>,
}

fn chunks<R: AsyncBufRead + Unpin + Send + 'static>(
    reader: R,
) -> impl futures::Stream<Item = Result<LogChunk>> + Send {
    let state = Reader {
        reader,
        prefix: Vec::new(),
        at: None,
    };
    stream::unfold(state, |mut state| async move {
        loop {
            let buffer = match state.reader.fill_buf().await {
                Ok(buffer) => buffer.to_vec(),
                Err(error) => {
                    let error = crate::runtime::RuntimeError::failed("follow pod logs", error);
                    return Some((Err(error), state));
                }
            };
            if buffer.is_empty() {
                return None;
            }
            let (consumed, chunk) = state.take(&buffer);
            state.reader.consume_unpin(consumed);
            if let Some(chunk) = chunk {
                return Some((Ok(chunk), state));
            }
        }
    })
}

impl<R> Reader<R> {
    /// Takes what `buffer` starts with: returns how much was used, and the
    /// bytes of a line to pass on, if any.
    fn take(&mut self, buffer: &[u8]) -> (usize, Option<LogChunk>) {
        let Some(at) = self.at else {
            return self.take_prefix(buffer);
        };
        let end = buffer
            .iter()
            .position(|b| *b == b'\n')
            .map_or(buffer.len(), |n| n + 1);
        if buffer[..end].ends_with(b"\n") {
            self.at = None;
        }
        let chunk = LogChunk {
            stream: LogStream::Stdout,
            timestamp: at,
            bytes: buffer[..end].to_vec(),
        };
        (end, Some(chunk))
    }

    /// Reads the timestamp at a line's start (a line without one keeps its
    /// bytes, with the time it was read).
    fn take_prefix(&mut self, buffer: &[u8]) -> (usize, Option<LogChunk>) {
        let room = MAX_PREFIX.saturating_sub(self.prefix.len());
        let end = buffer
            .iter()
            .take(room)
            .position(|b| *b == b' ' || *b == b'\n');
        match end {
            None if buffer.len() < room => {
                self.prefix.extend_from_slice(buffer);
                (buffer.len(), None)
            }
            None => {
                // No timestamp: what was read is the line's start.
                let mut bytes = std::mem::take(&mut self.prefix);
                bytes.extend_from_slice(&buffer[..room]);
                self.at = Some(Utc::now());
                let chunk = self.chunk_of(bytes);
                (room, Some(chunk))
            }
            Some(n) => {
                self.prefix.extend_from_slice(&buffer[..n]);
                let prefix = std::mem::take(&mut self.prefix);
                let parsed = std::str::from_utf8(&prefix)
                    .ok()
                    .and_then(|text| DateTime::parse_from_rfc3339(text).ok());
                match parsed {
                    Some(at) if buffer[n] == b' ' => {
                        self.at = Some(at.with_timezone(&Utc));
                        (n + 1, None)
                    }
                    _ => {
                        self.at = Some(Utc::now());
                        (n, Some(self.chunk_of(prefix)))
                    }
                }
            }
        }
    }

    fn chunk_of(&self, bytes: Vec<u8>) -> LogChunk {
        LogChunk {
            stream: LogStream::Stdout,
            timestamp: self.at.unwrap_or_else(Utc::now),
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(text: &'static [u8]) -> Vec<LogChunk> {
        chunks(futures::io::Cursor::new(text))
            .map(|chunk| chunk.unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn each_line_carries_its_timestamp_and_its_bytes() {
        let chunks = read_all(b"2026-01-02T03:04:05.5Z first\n2026-01-02T03:04:06Z second\n").await;
        let lines: Vec<&[u8]> = chunks.iter().map(|c| c.bytes.as_slice()).collect();
        assert_eq!(lines, [&b"first\n"[..], &b"second\n"[..]]);
        assert_eq!(
            chunks[1].timestamp.timestamp() - chunks[0].timestamp.timestamp(),
            1
        );
    }

    #[tokio::test]
    async fn mock_api_the_pod_log_is_asked_to_follow_with_timestamps_from_the_resume_point() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let answer = tokio::spawn(async move {
            let (request, respond) = server.next_request().await.unwrap();
            let body = Body::from(b"2026-01-02T03:04:05Z built\n".to_vec());
            respond.send_response(Response::builder().body(body).unwrap());
            (
                request.uri().path().to_owned(),
                request.uri().query().unwrap_or_default().to_owned(),
            )
        });
        let pods: Api<Pod> = Api::namespaced(kube::Client::new(service, "icarus"), "icarus");
        let since = Utc::now() - chrono::TimeDelta::seconds(30);
        let chunks: Vec<LogChunk> = follow(pods, "agent".to_owned(), Some(since))
            .map(|chunk| chunk.unwrap())
            .collect()
            .await;
        let (path, query) = answer.await.unwrap();
        assert_eq!(path, "/api/v1/namespaces/icarus/pods/agent/log");
        assert!(
            query.contains("follow=true") && query.contains("timestamps=true"),
            "{query}"
        );
        let seconds: i64 = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("sinceSeconds="))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{query}"));
        assert!(
            (31..=33).contains(&seconds),
            "from at or before the resume point: {seconds}"
        );
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].bytes, b"built\n");
    }

    #[tokio::test]
    async fn a_line_without_a_timestamp_keeps_its_bytes() {
        let chunks = read_all(b"no-stamp here\n").await;
        let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
        assert_eq!(bytes, b"no-stamp here\n");
    }
}
