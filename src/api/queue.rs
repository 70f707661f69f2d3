//! The queue of pending jobs: where each stands, why it waits and when it
//! may start (shown in every pending job's status and list row), and the
//! admins' levers: hold and release the queue (kept in the database, so
//! every replica obeys and a restart keeps it), drain this process before
//! maintenance.
//!
//! Positions and reasons come from the queue in memory ([`PendingJobs`],
//! kept in the order the controller admits in, the core's
//! [`admission::queue`] rule), so no read lists the unfinished jobs: the
//! places of a page of rows cost one walk down the queue to the last of
//! them (`O(its position)`), `GET /queue` one walk of the whole queue. The
//! estimate comes from [`admission::estimated_start`] and the average time
//! the latest jobs held a slot (one indexed read), the hold from its row.
//!
//! [`PendingJobs`]: crate::pending::PendingJobs

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiResult, ErrorBody};
use super::extract::IgnoredBody;
use crate::config::AccessRole;
use crate::job::admission::{self, Admission, Gate, Place};
use crate::job::{Job, JobId, Phase, Reason, timestamp_now};
use crate::store::QueueHold;

/// Where a pending job stands in the queue (null once it left `pending`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// Its place in the order jobs start in: 1 is next.
    #[schema(minimum = 1)]
    pub position: u32,
    /// Pending jobs ahead of it.
    pub jobs_ahead: u32,
    /// Why it waits: `QueueHeld` (an admin held the queue), `Draining`
    /// (the orchestrator admits nothing new), `HostBusy` (sentinel),
    /// `ConcurrencyLimit` (every slot is taken), `QueuedBehindOlderJobs`
    /// or `QueuedBehindHigherPriority` (the free slots go to the jobs
    /// ahead); `Admitted` when it starts at the next look.
    #[schema(example = "ConcurrencyLimit")]
    pub reason: String,
    /// The same, in words.
    #[schema(example = "all 2 slots are taken (orchestrator.max_concurrent_jobs)")]
    pub detail: String,
    /// Its priority now: its own plus one per `queue.ageing_seconds` waited.
    pub effective_priority: i64,
    /// When it may be expected to start (see the README's "Queue"); null
    /// without a history of run times, or while the queue is held, the
    /// orchestrator drains or the host is busy.
    pub estimated_start_at: Option<DateTime<Utc>>,
}

/// `GET /queue`: the queue as a whole.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueResponse {
    /// Whether an admin holds the queue: nothing new is admitted.
    pub held: bool,
    pub held_by: Option<String>,
    pub held_at: Option<DateTime<Utc>>,
    /// Whether this process is being drained (it admits nothing new; what
    /// it started goes on).
    pub draining: bool,
    pub draining_since: Option<DateTime<Utc>>,
    /// Jobs building or checking.
    pub active: u32,
    /// `orchestrator.max_concurrent_jobs`.
    pub max_active: u32,
    /// The average time the latest 20 jobs held a slot, which estimates
    /// are made of; null before any job ran.
    pub average_run_seconds: Option<f64>,
    /// Every pending job, in the order they start.
    pub pending: Vec<QueuedJob>,
}

/// One pending job in `GET /queue`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuedJob {
    #[schema(format = Uuid)]
    pub job_id: String,
    pub priority: i32,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub queue: QueueView,
}

/// The answer to hold, release, drain and resume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueChange {
    pub message: String,
    pub held: bool,
    pub draining: bool,
}

/// The queue as it stands for some jobs: their places, and what the
/// estimates are made of.
pub(super) struct QueueSnapshot {
    places: HashMap<JobId, Place>,
    active: usize,
    gate: Gate,
    hold: Option<QueueHold>,
    average_run: Option<TimeDelta>,
    now: DateTime<Utc>,
}

impl QueueSnapshot {
    /// The places of those of `jobs` that are pending (as read: the queue in
    /// memory takes in these versions first, so a job just written has its
    /// place), the hold and the run times.
    pub(super) async fn load(state: &AppState, jobs: &[Job]) -> ApiResult<QueueSnapshot> {
        let hold = state.store.queue_hold().await?;
        let average_run = state.store.average_run_time().await?;
        let gate = gate(state, hold.is_some());
        let now = timestamp_now();
        let ids: Vec<JobId> = jobs
            .iter()
            .filter(|job| job.status.phase == Phase::Pending)
            .map(|job| {
                state.pending.observe(job);
                job.id
            })
            .collect();
        Ok(QueueSnapshot {
            places: state.pending.places_of(&ids, &gate, now),
            active: state.pending.active(),
            gate,
            hold,
            average_run,
            now,
        })
    }

    /// Where `job` stands, if it is pending. A job whose controller last
    /// said it drains (another replica leads and drains) is shown so.
    pub(super) fn view(&self, job: &Job) -> Option<QueueView> {
        if job.status.phase != Phase::Pending {
            return None;
        }
        self.view_of(job.id, Some(&job.status.reason))
    }

    /// Where the job `id` stands; `said`: the reason its controller last gave.
    fn view_of(&self, id: JobId, said: Option<&Reason>) -> Option<QueueView> {
        let place = self.places.get(&id)?;
        let mut gate = self.gate;
        let mut reason = match &place.admission {
            Admission::Admitted => Reason::Admitted,
            Admission::Waiting(reason) => reason.clone(),
        };
        if said == Some(&Reason::Draining) && !gate.held {
            gate.draining = true;
            reason = Reason::Draining;
        }
        let estimated_start_at =
            admission::estimated_start(place, self.active, &gate, self.average_run, self.now);
        let position = u32::try_from(place.position).unwrap_or(u32::MAX);
        Some(QueueView {
            position,
            jobs_ahead: position.saturating_sub(1),
            detail: self.detail(&reason, position.saturating_sub(1)),
            reason: reason.to_string(),
            effective_priority: place.effective_priority,
            estimated_start_at,
        })
    }

    fn detail(&self, reason: &Reason, ahead: u32) -> String {
        match reason {
            Reason::QueueHeld => match &self.hold {
                Some(hold) => format!(
                    "the queue is held by {} since {}",
                    hold.held_by,
                    hold.held_at.to_rfc3339()
                ),
                None => "the queue is held".to_owned(),
            },
            Reason::Draining => "the orchestrator is being drained".to_owned(),
            Reason::HostBusy => "the host is busy (sentinel)".to_owned(),
            Reason::ConcurrencyLimit => format!(
                "all {} slots are taken (orchestrator.max_concurrent_jobs)",
                self.gate.max_active
            ),
            Reason::Admitted => "a slot is free: it starts at once".to_owned(),
            _ => format!("queued behind {ahead} jobs"),
        }
    }
}

/// What admits or holds back every pending job, as this process sees it.
fn gate(state: &AppState, held: bool) -> Gate {
    Gate {
        max_active: state.max_active_jobs,
        load: *state.load.borrow(),
        held,
        draining: state.drain.is_draining(),
        ageing: state.queue.ageing(),
    }
}

/// The queue: whether it is held, whether this process drains, and every
/// pending job in the order they start, with its place, reason and estimate.
#[utoipa::path(get, path = "/queue", tag = "queue", operation_id = "get_queue",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The queue", body = QueueResponse),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn show(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<QueueResponse>> {
    caller.require(AccessRole::Viewer, "reading the queue")?;
    let hold = state.store.queue_hold().await?;
    let average_run = state.store.average_run_time().await?;
    let gate = gate(&state, hold.is_some());
    let now = timestamp_now();
    let queued = state.pending.places(&gate, now);
    let snapshot = QueueSnapshot {
        places: queued
            .iter()
            .map(|(entry, place)| (entry.id, place.clone()))
            .collect(),
        active: state.pending.active(),
        gate,
        hold: hold.clone(),
        average_run,
        now,
    };
    let pending = queued
        .iter()
        .filter_map(|(entry, _)| {
            Some(QueuedJob {
                job_id: entry.id.to_string(),
                priority: entry.priority,
                created_at: entry.created_at,
                queue: snapshot.view_of(entry.id, None)?,
            })
        })
        .collect();
    Ok(Json(QueueResponse {
        held: hold.is_some(),
        held_by: hold.as_ref().map(|h| h.held_by.clone()),
        held_at: hold.as_ref().map(|h| h.held_at),
        draining: state.drain.is_draining(),
        draining_since: state.drain.since(),
        active: u32::try_from(snapshot.active).unwrap_or(u32::MAX),
        max_active: u32::try_from(state.max_active_jobs).unwrap_or(u32::MAX),
        average_run_seconds: average_run.map(TimeDelta::as_seconds_f64),
        pending,
    }))
}

/// Hold the queue: no pending job is admitted until it is released; jobs
/// already running go on. Kept in the database: every replica obeys it and
/// it survives restarts. Holding a held queue keeps the first hold.
#[utoipa::path(post, path = "/queue/hold", tag = "queue", operation_id = "hold_queue",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The queue is held", body = QueueChange),
        (status = 403, description = "Only an admin may hold the queue; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
    ))]
pub async fn hold(
    State(state): State<AppState>,
    caller: Caller,
    _body: IgnoredBody,
) -> ApiResult<Json<QueueChange>> {
    caller.require(AccessRole::Admin, "holding the queue")?;
    let wanted = QueueHold {
        held_by: caller.name.clone(),
        held_at: timestamp_now(),
    };
    let hold = state.store.hold_queue(&wanted).await?;
    tracing::info!(by = %caller.name, held_by = %hold.held_by, "queue held");
    Ok(Json(QueueChange {
        message: format!(
            "The queue is held by {} since {}: nothing new is admitted",
            hold.held_by,
            hold.held_at.to_rfc3339()
        ),
        held: true,
        draining: state.drain.is_draining(),
    }))
}

/// Release the queue: pending jobs are admitted again, in order.
#[utoipa::path(post, path = "/queue/release", tag = "queue", operation_id = "release_queue",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The queue is released (or was not held)", body = QueueChange),
        (status = 403, description = "Only an admin may release the queue; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
    ))]
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    _body: IgnoredBody,
) -> ApiResult<Json<QueueChange>> {
    caller.require(AccessRole::Admin, "releasing the queue")?;
    let was_held = state.store.release_queue().await?;
    tracing::info!(by = %caller.name, was_held, "queue released");
    let message = if was_held {
        "The queue is released: pending jobs are admitted again"
    } else {
        "The queue was not held"
    };
    Ok(Json(QueueChange {
        message: message.to_owned(),
        held: false,
        draining: state.drain.is_draining(),
    }))
}

/// Drain this orchestrator process before maintenance: it admits no new
/// job from now on; the jobs it started go on to their end (`GET /queue`'s
/// `active` says when none is left). Not kept: a restart ends it. With
/// replicas, only the leader admits: drain the leader.
#[utoipa::path(post, path = "/queue/drain", tag = "queue", operation_id = "drain_orchestrator",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "This process drains", body = QueueChange),
        (status = 403, description = "Only an admin may drain; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
    ))]
pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
    _body: IgnoredBody,
) -> ApiResult<Json<QueueChange>> {
    caller.require(AccessRole::Admin, "draining the orchestrator")?;
    let since = state.drain.start();
    tracing::info!(by = %caller.name, %since, "draining: no new job is admitted");
    Ok(Json(QueueChange {
        message: format!(
            "This orchestrator drains since {}: it admits no new job; running jobs go on",
            since.to_rfc3339()
        ),
        held: state.store.queue_hold().await?.is_some(),
        draining: true,
    }))
}

/// Stop draining this process: it admits jobs again.
#[utoipa::path(post, path = "/queue/resume", tag = "queue", operation_id = "resume_orchestrator",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "This process admits jobs again (or was not draining)", body = QueueChange),
        (status = 403, description = "Only an admin may resume; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    _body: IgnoredBody,
) -> ApiResult<Json<QueueChange>> {
    caller.require(AccessRole::Admin, "resuming the orchestrator")?;
    let was_draining = state.drain.stop();
    tracing::info!(by = %caller.name, was_draining, "drain ended");
    let message = if was_draining {
        "This orchestrator admits jobs again"
    } else {
        "This orchestrator was not draining"
    };
    Ok(Json(QueueChange {
        message: message.to_owned(),
        held: state.store.queue_hold().await?.is_some(),
        draining: false,
    }))
}
