//! `WS /jobs/{job_id}/stream`: the job's status on connect, then one message
//! per transition, pushed from the store's change broadcast (nothing polls),
//! and a close once the job reaches a terminal phase.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::JobIdPath;
use super::jobs::load;
use super::models::JobStatusResponse;
use super::stream_limit::StreamRefused;
use crate::config::AccessRole;
use crate::job::{Job, JobId};
use crate::store::StoreEvent;

/// One WebSocket message: `{"type": "status_update", ...the status fields}`.
#[derive(Debug, Serialize)]
struct StatusUpdate<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    status: JobStatusResponse,
}

/// Live status updates for one job: a WebSocket (RFC 6455) whose messages
/// are `{"type": "status_update", ...the status fields}`, the first on
/// connect, then one per transition; closed once the job ends.
#[utoipa::path(get, path = "/jobs/{job_id}/stream", tag = "jobs", operation_id = "stream_job",
    params(
        JobIdPath, Handshake,
        ("access_token" = Option<String>, Query, description = "The API token, for clients that cannot set `Authorization` on a WebSocket (browsers); only on this route"),
    ),
    security(("api_token" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket: `status_update` messages until the job ends"),
        (status = 400, description = "Not a WebSocket handshake: a header it needs is missing or wrong", body = ErrorBody),
        (status = 403, description = "Refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 429, description = "Too many streams open, in total or by this caller", body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    Handshake(upgrade): Handshake,
) -> ApiResult<Response> {
    caller.require(AccessRole::Viewer, "following a job")?;
    let ticket = state.streams.admit(&caller.name).map_err(refused)?;
    // Subscribe before reading, so no transition falls between the two.
    let events = state.store.subscribe();
    let job = load(&state, id).await?;
    Ok(upgrade.on_upgrade(move |socket| async move {
        follow(socket, state, job, events).await;
        drop(ticket);
    }))
}

/// The WebSocket handshake of a request. A request that is not one is
/// answered in the API's error format (400, naming what is missing), and
/// the headers it needs are documented as the route's parameters.
pub struct Handshake(WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(Handshake)
            .map_err(|rejection| {
                let why = rejection.body_text();
                if rejection.status() == StatusCode::METHOD_NOT_ALLOWED {
                    ApiError::MethodNotAllowed(why)
                } else {
                    ApiError::BadRequest(format!("not a WebSocket handshake: {why}"))
                }
            })
    }
}

impl IntoParams for Handshake {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let header = |name: &str, description: &str, schema: ObjectBuilder| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(schema.schema_type(Type::String)))
                .build()
        };
        vec![
            header(
                "Connection",
                "Must include `upgrade` (any case)",
                ObjectBuilder::new().pattern(Some("[Uu][Pp][Gg][Rr][Aa][Dd][Ee]")),
            ),
            header(
                "Upgrade",
                "`websocket` (any case)",
                ObjectBuilder::new().pattern(Some("^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$")),
            ),
            header(
                "Sec-WebSocket-Version",
                "The protocol's version",
                ObjectBuilder::new().enum_values(Some(["13"])),
            ),
            header(
                "Sec-WebSocket-Key",
                "The client's nonce (16 random bytes in base64), whose hash the answer carries",
                ObjectBuilder::new(),
            ),
        ]
    }
}

/// A stream over a limit: 429, saying which and what to do.
fn refused(why: StreamRefused) -> ApiError {
    ApiError::TooManyRequests(match why {
        StreamRefused::Full { max_total } => format!(
            "the server holds {max_total} streams, its limit (orchestrator.max_streams); try again later"
        ),
        StreamRefused::CallerFull { max_per_caller } => format!(
            "this caller holds {max_per_caller} streams, the limit per caller \
             (orchestrator.max_streams_per_caller); close one first"
        ),
    })
}

async fn follow(
    mut socket: WebSocket,
    state: AppState,
    job: Job,
    mut events: broadcast::Receiver<StoreEvent>,
) {
    let mut sent = None;
    let mut current = job;
    loop {
        if sent != Some(current.status.phase) {
            if send(&mut socket, &state, &current).await.is_err() {
                return;
            }
            sent = Some(current.status.phase);
        }
        if current.status.phase.is_terminal() {
            close(socket, close_code::NORMAL, "job finished").await;
            return;
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                close(socket, close_code::AWAY, "server shutting down").await;
                return;
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            event = events.recv() => match next_version(&state, current.id, event).await {
                // Writes may be published out of order; only a newer version counts.
                Update::Changed(job) if job.resource_version > current.resource_version => current = *job,
                Update::Changed(_) | Update::Unchanged => {}
                Update::End => return,
            },
        }
    }
}

enum Update {
    Changed(Box<Job>),
    Unchanged,
    End,
}

/// What a store event means for the job being followed: the event's copy when
/// it is for this job, a fresh read when the subscriber lagged behind.
async fn next_version(
    state: &AppState,
    id: JobId,
    event: Result<StoreEvent, broadcast::error::RecvError>,
) -> Update {
    match event {
        Ok(StoreEvent::JobWritten(job)) if job.id == id => {
            Update::Changed(Box::new(job.as_ref().clone()))
        }
        Ok(_) => Update::Unchanged,
        Err(broadcast::error::RecvError::Lagged(_)) => match state.store.get_job(id).await {
            Ok(Some(job)) => Update::Changed(Box::new(job)),
            Ok(None) | Err(_) => Update::End,
        },
        Err(broadcast::error::RecvError::Closed) => Update::End,
    }
}

/// Sends the job's status, with what was measured of its agents (left out
/// when the database cannot say: the status still goes).
async fn send(socket: &mut WebSocket, state: &AppState, job: &Job) -> Result<(), axum::Error> {
    let usage = state
        .store
        .agent_usage(job.id, job.status.attempt)
        .await
        .unwrap_or_default();
    let update = StatusUpdate {
        kind: "status_update",
        status: JobStatusResponse::from(job).with_usage(&usage),
    };
    let text = serde_json::to_string(&update).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
