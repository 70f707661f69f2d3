//! The messages of a job's stream, as `WS /jobs/{id}/stream` sends them and
//! `GET /jobs/{id}/logs?follow=true` writes them: a `status_update` (the
//! job's status as a transition left it), a `log` line, or an `egress`
//! message (an agent's first connection to a destination through the egress
//! proxy, and the verdict), each with its position (`seq`) for resuming.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::models::{EgressView, JobStatusResponse};
use crate::job::{Job, JobStatus};
use crate::store::{LogLine, StreamBody, StreamEntry};

/// `{"type": "status_update", ...the status fields, "seq"}`.
#[derive(Debug, Serialize)]
pub struct StatusUpdate {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    status: JobStatusResponse,
    /// The position of this update in the job's stream.
    seq: i64,
}

/// One line an agent printed (or Icarus wrote about its output), as
/// `{"type": "log", ...}` on the stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogMessage {
    /// Always `log`.
    #[serde(rename = "type")]
    #[schema(example = "log")]
    pub kind: &'static str,
    #[schema(example = "builder")]
    pub role: &'static str,
    pub attempt: u32,
    /// `stdout` or `stderr` (Icarus's own notes, such as a summary of
    /// dropped lines, are on `stderr` and start with `[icarus]`).
    #[schema(example = "stdout")]
    pub stream: &'static str,
    pub message: String,
    /// When the agent printed it, as its runtime recorded it.
    pub timestamp: DateTime<Utc>,
    /// The position in the job's stream: resume with `since=<seq>`.
    pub seq: i64,
}

impl LogMessage {
    pub fn new(line: &LogLine, seq: i64) -> LogMessage {
        LogMessage {
            kind: "log",
            role: line.role.as_str(),
            attempt: line.attempt,
            stream: line.stream.as_str(),
            message: line.message.clone(),
            timestamp: line.at,
            seq,
        }
    }
}

/// The job's status at `seq`, with what was measured of its agents (left
/// out when the database cannot say: the status still goes).
pub async fn status_update(state: &AppState, job: &Job, seq: i64) -> StatusUpdate {
    let usage = state
        .store
        .agent_usage(job.id, job.status.attempt)
        .await
        .unwrap_or_default();
    let egress = super::jobs::egress_summary(&state.store, job.id)
        .await
        .unwrap_or_default();
    StatusUpdate {
        kind: "status_update",
        status: JobStatusResponse::from(job)
            .with_usage(&usage)
            .with_egress(egress),
        seq,
    }
}

/// `{"type": "egress", ...the traffic's fields, "seq"}`: an agent's first
/// connection to a destination under a verdict.
#[derive(Debug, Serialize)]
pub struct EgressMessage {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    traffic: EgressView,
    seq: i64,
}

/// An entry as its JSON message; a status entry gets the job's spec as it
/// is now (`job`'s if it cannot be read), its own status replacing the
/// job's.
pub async fn render(state: &AppState, job: &Job, entry: &StreamEntry) -> String {
    match &entry.body {
        StreamBody::Log(line) => to_json(&LogMessage::new(line, entry.seq)),
        StreamBody::Egress(traffic) => to_json(&EgressMessage {
            kind: "egress",
            traffic: EgressView::from(traffic.clone()),
            seq: entry.seq,
        }),
        // Boxed: it reads the store, a large future that would otherwise
        // be part of every subscriber's task all its life.
        StreamBody::Status { status, .. } => {
            Box::pin(render_status(state, job, status, entry.seq)).await
        }
    }
}

/// A status entry's message: the spec as it is now (the decision or
/// cancel that caused the transition included), with the status the entry
/// recorded.
async fn render_status(state: &AppState, job: &Job, status: &JobStatus, seq: i64) -> String {
    let now = state.store.get_job(job.id).await.ok().flatten();
    let mut then = now.unwrap_or_else(|| job.clone());
    then.status = status.clone();
    to_json(&status_update(state, &then, seq).await)
}

pub fn to_json(message: &impl Serialize) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

/// Whether the entry ends the stream: a status in a terminal phase.
pub fn is_final(entry: &StreamEntry) -> bool {
    matches!(&entry.body, StreamBody::Status { status, .. } if status.phase.is_terminal())
}
