//! `WS /jobs/{job_id}/stream`: the job's stream of status updates and its
//! agents' log lines, in the order of their positions, pushed from the
//! store's change broadcast (nothing polls; see [`super::tail`]), and a
//! close once the job reaches a terminal phase.
//!
//! One reader per socket reads the stream and queues messages for the
//! socket's writer, a bounded queue (`agents.logs.subscriber_buffer`): a
//! client too slow for the live stream is closed with a reason that names
//! where to resume, instead of holding ever more memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::Receiver;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JobIdPath, QueryParams};
use super::jobs::load;
use super::rendered::RenderKey;
use super::stream_limit::StreamRefused;
use super::stream_messages::{is_final, render, status_update, to_json};
use super::tail::{Origin, Tail};
use crate::config::AccessRole;
use crate::job::Job;
use crate::store::StreamEvent;

/// The job's stream: a WebSocket (RFC 6455) whose messages are
/// `{"type": "status_update", ...the status fields, "seq"}` (one per
/// transition) and `{"type": "log", "role", "attempt", "stream", "message",
/// "timestamp", "seq"}` (one per line its agents print) and `{"type":
/// "egress", "role", "attempt", "host", "port", "verdict", "reason", ...,
/// "seq"}` (an agent's first connection to a destination under a verdict,
/// through the egress proxy), in the order of their positions (`seq`). Without `since`, the current status comes
/// first; with it, every message after that position, then the live ones.
/// Closed once the job ends (1000), at shutdown (1001), or when the client
/// cannot keep up (1013, the reason naming the `since` to reconnect with).
#[utoipa::path(get, path = "/jobs/{job_id}/stream", tag = "jobs", operation_id = "stream_job",
    params(
        JobIdPath, StreamParams, Handshake,
        ("access_token" = Option<String>, Query, description = "The API token, for clients that cannot set `Authorization` on a WebSocket (browsers); only on this route"),
    ),
    security(("api_token" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket: `status_update`, `log` and `egress` messages until the job ends"),
        (status = 400, description = "Not a WebSocket handshake: a header it needs is missing or wrong", body = ErrorBody),
        (status = 403, description = "Refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "`since` is not a position (an integer, 0 or more)", body = ErrorBody),
        (status = 429, description = "Too many streams open, in total or by this caller", body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    QueryParams(params): QueryParams<StreamParams>,
    Handshake(upgrade): Handshake,
) -> ApiResult<Response> {
    caller.require(AccessRole::Viewer, "following a job")?;
    let since = check_since(params.since)?;
    let ticket = state.streams.admit(&caller.name).map_err(refused)?;
    // Subscribe before reading, so no write falls between the two; the
    // position before the job, so the status is at least that new.
    let events = state.store.subscribe_streams();
    let position = state.store.stream_position(id).await?.unwrap_or(0);
    let job = load(&state, id).await?;
    let start = Start {
        job: Box::new(job),
        position: since.unwrap_or(position),
        replay: since.is_some(),
    };
    Ok(upgrade.on_upgrade(move |socket| async move {
        follow(socket, state, start, events).await;
        drop(ticket);
    }))
}

/// A position to resume after: none, or at least 0.
pub fn check_since(since: Option<i64>) -> ApiResult<Option<i64>> {
    match since {
        Some(since) if since < 0 => Err(ApiError::Unprocessable(format!(
            "since and Last-Event-ID are positions (0 or more), not {since}"
        ))),
        _ => Ok(since),
    }
}

/// What a subscriber's socket reads into at once. Clients of a stream
/// send nothing but pings and a close (at most 125 bytes each), so the
/// WebSocket default (128 KiB, allocated with every socket) was nearly all
/// of what a subscriber cost; a larger message grows the buffer to fit.
const CLIENT_BUFFER_BYTES: usize = 1024;

/// The largest message (and frame) a subscriber may send; more closes its
/// stream (1009, message too big) instead of the default's 64 MiB held in
/// memory for a client that has no reason to send any.
const CLIENT_MESSAGE_BYTES: usize = 16 * 1024;

/// The WebSocket handshake of a request. A request that is not one is
/// answered in the API's error format (400, naming what is missing), and
/// the headers it needs are documented as the route's parameters.
pub struct Handshake(WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(|upgrade| {
                Handshake(
                    upgrade
                        .read_buffer_size(CLIENT_BUFFER_BYTES)
                        .max_frame_size(CLIENT_MESSAGE_BYTES)
                        .max_message_size(CLIENT_MESSAGE_BYTES),
                )
            })
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
pub(super) fn refused(why: StreamRefused) -> ApiError {
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

/// `?since=`: resume after a position.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Replay every message after this position (a message's `seq`), then
    /// go on live; without it, the current status comes first.
    #[param(minimum = 0)]
    pub since: Option<i64>,
}

/// Why a subscriber was closed for being slow: its reason names where to
/// resume.
fn too_slow(delivered: i64) -> String {
    format!("subscriber too slow; reconnect with since={delivered}")
}

/// What the reader hands the socket's writer.
enum Outgoing {
    Text(Utf8Bytes, i64),
    Close(u16, String),
}

/// Reads the job's stream and hands it to the writer, which owns the
/// socket: a live message that finds the writer's queue full
/// (`agents.logs.subscriber_buffer`) closes the stream as too slow; a
/// replay waits for room instead.
async fn follow(socket: WebSocket, state: AppState, start: Start, events: Receiver<StreamEvent>) {
    let (sink, mut incoming) = socket.split();
    let (queue, waiting) = mpsc::channel(state.stream_buffer.max(1));
    let overflowed = CancellationToken::new();
    let delivered = Arc::new(AtomicI64::new(start.position));
    let writer = write(sink, waiting, overflowed.clone(), delivered.clone());
    let reader = async {
        let ending = read(&state, &start, events, &queue, &mut incoming).await;
        match ending {
            Ending::Overflow => overflowed.cancel(),
            Ending::Close(code, reason) => {
                let _ = queue.send(Outgoing::Close(code, reason.to_owned())).await;
            }
            Ending::Gone => {}
        }
        drop(queue);
    };
    tokio::join!(reader, writer);
}

/// How the reader ended.
enum Ending {
    Close(u16, &'static str),
    Overflow,
    /// The client left, or the writer did.
    Gone,
}

/// Where a subscriber starts: the job, the position it has seen, whether
/// it asked to replay from there.
struct Start {
    /// Boxed: a job is large, and a subscriber's task would hold it
    /// inline, in several of its states.
    job: Box<Job>,
    position: i64,
    replay: bool,
}

async fn read(
    state: &AppState,
    start: &Start,
    events: Receiver<StreamEvent>,
    queue: &mpsc::Sender<Outgoing>,
    incoming: &mut SplitStream<WebSocket>,
) -> Ending {
    let job = &start.job;
    if !start.replay {
        // Boxed, as every read of the store here (see `render`).
        let update = Box::pin(status_update(state, job, start.position)).await;
        let text = to_json(&update).into();
        if queue
            .send(Outgoing::Text(text, start.position))
            .await
            .is_err()
        {
            return Ending::Gone;
        }
        if job.status.phase.is_terminal() {
            return Ending::Close(close_code::NORMAL, "job finished");
        }
    }
    let mut tail = Tail::new(
        state.store.clone(),
        job.id,
        events,
        start.position,
        start.replay,
    );
    loop {
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => return Ending::Close(close_code::AWAY, "server shutting down"),
            _ = queue.closed() => return Ending::Gone,
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ending::Gone,
                Some(Ok(_)) => continue,
            },
            next = tail.next() => next,
        };
        let (entry, origin) = match next {
            Ok(Some(next)) => next,
            Ok(None) => return Ending::Close(close_code::AWAY, "server shutting down"),
            Err(error) => {
                tracing::warn!(job = %job.id, error = %crate::errors::error_chain(&error), "a job's stream could not be read");
                return Ending::Close(
                    close_code::ERROR,
                    "the job's stream could not be read; reconnect with since",
                );
            }
        };
        let text = state
            .rendered
            .get_or_render(RenderKey::of(job, &entry), render(state, job, &entry))
            .await;
        let message = Outgoing::Text(text, entry.seq);
        let queued = match origin {
            Origin::Replay => queue.send(message).await.map_err(|_| Ending::Gone),
            Origin::Live => queue.try_send(message).map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => Ending::Overflow,
                mpsc::error::TrySendError::Closed(_) => Ending::Gone,
            }),
        };
        if let Err(ending) = queued {
            return ending;
        }
        if is_final(&entry) {
            return Ending::Close(close_code::NORMAL, "job finished");
        }
    }
}

/// Sends what the reader queued, in order; on overflow, closes at once
/// (what is queued is dropped: the client resumes from the last message
/// it got).
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut waiting: mpsc::Receiver<Outgoing>,
    overflowed: CancellationToken,
    delivered: Arc<AtomicI64>,
) {
    loop {
        let outgoing = tokio::select! {
            biased;
            _ = overflowed.cancelled() => {
                let reason = too_slow(delivered.load(Ordering::Relaxed));
                close(&mut sink, close_code::AGAIN, reason).await;
                return;
            }
            outgoing = waiting.recv() => outgoing,
        };
        match outgoing {
            Some(Outgoing::Text(text, seq)) => {
                if sink.send(Message::Text(text)).await.is_err() {
                    return;
                }
                delivered.store(seq, Ordering::Relaxed);
            }
            Some(Outgoing::Close(code, reason)) => {
                close(&mut sink, code, reason).await;
                return;
            }
            None => return,
        }
    }
}

async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: String) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}
