//! `GET /jobs/{job_id}/logs`: what the job's agents printed.
//!
//! Lines followed while an agent ran are stored in the job's stream, so the
//! log is there while the job runs and waits for approval, and it is
//! exactly what the stream sent. An agent without stored lines (one that
//! ran before lines were followed, or on a runtime that cannot follow)
//! falls back to the output saved when its workload was removed; no
//! agent's output is served twice.
//!
//! `?follow=true` serves the stream itself, as `text/event-stream` (SSE:
//! `id:` is the position, so `Last-Event-ID` resumes) when the client
//! accepts it, else as `text/plain` lines, until the job ends.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JobIdPath, QueryParams};
use super::jobs::load;
use super::models::AgentLogView;
use super::stream::{check_since, refused};
use super::stream_limit::StreamTicket;
use super::stream_messages::{is_final, render};
use super::tail::Tail;
use crate::config::AccessRole;
use crate::job::{Job, Role};
use crate::store::{StreamBody, StreamEntry, StreamQuery};

/// Stored entries read at once.
const PAGE: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsParams {
    /// Serve the job's stream from `since` (or `Last-Event-ID`) on, live
    /// until the job ends, as SSE or plain text (by `Accept`).
    #[serde(default)]
    pub follow: bool,
    /// With `follow`: only this agent's lines (status updates still come).
    #[param(value_type = Option<super::models::RoleName>)]
    pub role: Option<Role>,
    /// With `follow`: start after this position (default: the beginning).
    #[param(minimum = 0)]
    pub since: Option<i64>,
}

/// What the job's agents printed: one entry per agent (role and attempt),
/// from the lines kept while it ran, or else the output saved when its
/// workload was removed. `?follow=true`: the job's stream itself.
#[utoipa::path(get, path = "/jobs/{job_id}/logs", tag = "jobs", operation_id = "get_job_logs",
    params(JobIdPath, LogsParams, LastEventId),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "Each agent's output (JSON); with `follow=true`, the stream as `text/event-stream` (`id:` the position, `event:` `log` or `status_update`, `data:` the message as on the WebSocket) or `text/plain` lines", content(
            ([AgentLogView] = "application/json"),
            (String = "text/event-stream"),
            (String = "text/plain"),
        )),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "A parameter is not valid: `role` not builder or checker, `since` or `Last-Event-ID` not a position (an integer, 0 or more), `follow` not a boolean", body = ErrorBody),
        (status = 429, description = "With `follow`: too many streams open, in total or by this caller", body = ErrorBody),
    ))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    QueryParams(params): QueryParams<LogsParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(AccessRole::Viewer, "reading jobs")?;
    // Checked with or without `follow`: a bad value is refused either way.
    let since = check_since(params.since)?.or(check_since(last_event_id(&headers)?)?);
    if params.follow {
        let ticket = state.streams.admit(&caller.name).map_err(refused)?;
        let format = Format::of(&headers);
        let events = state.store.subscribe_streams();
        let position = state.store.stream_position(id).await?.unwrap_or(0);
        let job = load(&state, id).await?;
        let follow = Follow {
            // An ended job's stream ends where it is now (also a job that
            // ended before its stream had status entries).
            end_at: job.status.phase.is_terminal().then_some(position),
            tail: Tail::new(state.store.clone(), id, events, since.unwrap_or(0), true),
            state,
            job,
            role: params.role,
            format,
            ended: false,
            _ticket: ticket,
        };
        let body = Body::from_stream(follow.into_stream());
        return Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response());
    }
    let job = load(&state, id).await?;
    Ok(Json(saved(&state, &job).await?).into_response())
}

/// The `Last-Event-ID` header, documented: optional, and an integer (0 or
/// more) when sent, never `null`.
pub struct LastEventId;

impl IntoParams for LastEventId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0));
        vec![
            ParameterBuilder::new()
                .name("Last-Event-ID")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "With `follow`: the last position received (SSE resumes with it); \
                     `since` wins when both are given",
                ))
                .schema(Some(schema))
                .build(),
        ]
    }
}

/// `Last-Event-ID`, if sent: a position.
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::Unprocessable("Last-Event-ID must be a position (an integer)".to_owned())
        })
}

/// Each agent's output: its stored lines, or else its saved output.
async fn saved(state: &AppState, job: &Job) -> ApiResult<Vec<AgentLogView>> {
    let mut by_agent: BTreeMap<(u32, &'static str), AgentLogView> = BTreeMap::new();
    let mut after = 0;
    loop {
        let query = StreamQuery {
            after,
            until: None,
            limit: PAGE,
        };
        let page = state.store.stream_entries(job.id, query).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            let StreamBody::Log(line) = &entry.body else {
                continue;
            };
            let view = by_agent
                .entry((line.attempt, line.role.as_str()))
                .or_insert_with(|| AgentLogView {
                    role: line.role.to_string(),
                    attempt: line.attempt,
                    container_id: workload_of(job, line.role, line.attempt),
                    log: String::new(),
                    saved_at: line.at,
                });
            view.log.push_str(&line.message);
            view.log.push('\n');
            view.saved_at = line.at;
        }
    }
    for log in state.store.agent_logs(job.id).await? {
        let key = (log.attempt, log.role.as_str());
        match by_agent.get_mut(&key) {
            Some(view) => view.container_id = log.workload_id,
            None => {
                by_agent.insert(key, AgentLogView::from(log));
            }
        }
    }
    Ok(by_agent.into_values().collect())
}

/// The agent's workload id as the job's status knows it (its latest attempt).
fn workload_of(job: &Job, role: Role, attempt: u32) -> String {
    let workload = job.status.workload(role);
    match &workload.workload_id {
        Some(id) if job.status.attempt == attempt => id.clone(),
        _ => String::new(),
    }
}

/// How a followed log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    EventStream,
    Text,
}

impl Format {
    fn of(headers: &HeaderMap) -> Format {
        let accepts = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("text/event-stream"));
        if accepts {
            Format::EventStream
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::EventStream => "text/event-stream",
            Format::Text => "text/plain; charset=utf-8",
        }
    }
}

/// A followed log: the stream after a position, until the job ends.
struct Follow {
    state: AppState,
    job: Job,
    tail: Tail,
    role: Option<Role>,
    format: Format,
    ended: bool,
    end_at: Option<i64>,
    _ticket: StreamTicket,
}

impl Follow {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        stream::unfold(self, |mut follow| async move {
            let chunk = follow.next_chunk().await?;
            Some((Ok(chunk), follow))
        })
    }

    /// The next entry this follower shows, written; `None` at the end.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.ended || self.end_at.is_some_and(|end| self.tail.position() >= end) {
                return None;
            }
            let next = tokio::select! {
                _ = self.state.shutdown.cancelled() => return None,
                next = self.tail.next() => next,
            };
            let (entry, _) = match next {
                Ok(Some(next)) => next,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(job = %self.job.id, error = %crate::errors::error_chain(&error), "a job's stream could not be read");
                    return None;
                }
            };
            self.ended = is_final(&entry);
            if let Some(text) = self.write(&entry).await {
                return Some(Bytes::from(text));
            }
        }
    }

    async fn write(&self, entry: &StreamEntry) -> Option<String> {
        if let (StreamBody::Log(line), Some(role)) = (&entry.body, self.role)
            && line.role != role
        {
            return None;
        }
        Some(match self.format {
            Format::EventStream => {
                let event = match entry.body {
                    StreamBody::Log(_) => "log",
                    StreamBody::Status { .. } => "status_update",
                    StreamBody::Egress(_) => "egress",
                };
                let data = render(&self.state, &self.job, entry).await;
                format!("id: {}\nevent: {event}\ndata: {data}\n\n", entry.seq)
            }
            Format::Text => match &entry.body {
                StreamBody::Log(line) => format!(
                    "[{} #{} {}] {}\n",
                    line.role,
                    line.attempt,
                    line.stream.as_str(),
                    line.message
                ),
                StreamBody::Status { status, .. } => {
                    format!("[icarus] status: {} (seq {})\n", status.phase, entry.seq)
                }
                StreamBody::Egress(traffic) => format!(
                    "[icarus] egress: {} #{} {}:{} {}{}\n",
                    traffic.role,
                    traffic.attempt,
                    traffic.host,
                    traffic.port,
                    traffic.verdict.as_str(),
                    traffic
                        .reason
                        .as_deref()
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default()
                ),
            },
        })
    }
}
