//! Following a container's output as it is printed: the engine's log stream
//! with `follow` and `timestamps`, stdout and stderr apart. Each frame the
//! engine sends is one line (or one part of a line longer than its own
//! limit), prefixed with its RFC 3339 timestamp in nanoseconds.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{failed, is_status};
use crate::logs::LogStream;
use crate::runtime::{LogChunk, Result};

/// The container's output from `since` (the engine counts in whole
/// seconds: it starts at the second `since` falls in) until it ends.
pub(super) fn follow(
    docker: &Docker,
    id: &str,
    since: Option<DateTime<Utc>>,
) -> BoxStream<'static, Result<LogChunk>> {
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        timestamps: true,
        since: since.map_or(0, |at| i32::try_from(at.timestamp()).unwrap_or(i32::MAX)),
        ..Default::default()
    };
    docker
        .logs(id, Some(options))
        .filter_map(|frame| async move {
            match frame {
                Ok(frame) => chunk(frame).map(Ok),
                // The container is gone: its output ended.
                Err(error) if is_status(&error, 404) => None,
                Err(error) => Some(Err(failed("follow logs", error))),
            }
        })
        .boxed()
}

/// One frame as a chunk; `None` for what is not output (stdin, console).
fn chunk(frame: LogOutput) -> Option<LogChunk> {
    let (stream, message) = match frame {
        LogOutput::StdOut { message } => (LogStream::Stdout, message),
        LogOutput::StdErr { message } => (LogStream::Stderr, message),
        LogOutput::StdIn { .. } | LogOutput::Console { .. } => return None,
    };
    let (timestamp, bytes) = split_timestamp(&message);
    Some(LogChunk {
        stream,
        timestamp: timestamp.unwrap_or_else(Utc::now),
        bytes: bytes.to_vec(),
    })
}

/// `<RFC 3339 timestamp> <bytes>` into its two parts; no timestamp when
/// the frame does not start with one.
fn split_timestamp(frame: &[u8]) -> (Option<DateTime<Utc>>, &[u8]) {
    let Some(space) = frame.iter().position(|b| *b == b' ') else {
        return (None, frame);
    };
    let parsed = std::str::from_utf8(&frame[..space])
        .ok()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok());
    match parsed {
        Some(at) => (Some(at.with_timezone(&Utc)), &frame[space + 1..]),
        None => (None, frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_splits_into_its_timestamp_and_its_line() {
        let (at, line) = split_timestamp(b"2026-01-02T03:04:05.123456789Z hello world\n");
        assert_eq!(
            at.unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "2026-01-02T03:04:05.123456789Z"
        );
        assert_eq!(line, b"hello world\n");
        assert_eq!(
            split_timestamp(b"no stamp here"),
            (None, &b"no stamp here"[..])
        );
    }
}
