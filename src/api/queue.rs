//! The queue of pending jobs: where each stands, why it waits and when it
//! may start (shown in every pending job's status and list row), and the
//! admins' levers: hold and release the queue (kept in the database, so
//! every replica obeys and a restart keeps it), drain a replica before
//! maintenance and resume it (kept in the database by the replica's name,
//! so its restarts keep it too).
//!
//! Positions and reasons come from the queue in memory ([`PendingJobs`],
//! kept in the order the controller admits in, the core's
//! [`admission::queue`] rule), so no read lists the unfinished jobs: the
//! places of a page of rows cost one walk down the queue to the last of
//! them (`O(its position)`), `GET /queue` one walk of the whole queue. The
//! estimate comes from [`admission::estimated_start`] and the average time
//! the latest jobs held a slot (one indexed read), the hold and the drains
//! from their rows.
//!
//! [`PendingJobs`]: crate::pending::PendingJobs

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{IgnoredBody, QueryParams};
use crate::config::AccessRole;
use crate::config::replica::{MAX_REPLICA_NAME_CHARS, REPLICA_NAME_PATTERN, replica_name_problem};
use crate::job::admission::{self, Admission, Gate, Place};
use crate::job::{Job, JobId, Phase, Reason, timestamp_now};
use crate::store::{QueueHold, ReplicaDrain};

/// At most this many drained replicas are named in a 404's message.
const NAMED_IN_A_MESSAGE: usize = 10;

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
    /// Whether this replica is drained (it admits nothing new; what it
    /// started goes on), as kept in the database.
    pub draining: bool,
    pub draining_since: Option<DateTime<Utc>>,
    /// This replica's name (`orchestrator.replica_name`): the one
    /// `draining` is about, which answered.
    pub replica: String,
    /// Every drained replica, this one or others, running or gone; the
    /// longest drained first.
    pub drained_replicas: Vec<DrainedReplica>,
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

/// A drained replica in `GET /queue`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DrainedReplica {
    /// Its name (`orchestrator.replica_name`).
    pub replica: String,
    /// Who drained it (the caller's token name).
    pub drained_by: String,
    pub drained_at: DateTime<Utc>,
}

impl From<ReplicaDrain> for DrainedReplica {
    fn from(drain: ReplicaDrain) -> Self {
        DrainedReplica {
            replica: drain.replica,
            drained_by: drain.drained_by,
            drained_at: drain.drained_at,
        }
    }
}

/// The answer to hold, release, drain and resume.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueChange {
    pub message: String,
    pub held: bool,
    /// Whether `replica` is drained now.
    pub draining: bool,
    /// The replica `draining` is about: the one named in the query, else
    /// the one that answered.
    pub replica: String,
}

/// `?replica=`: the replica to drain or resume; absent, the one that answers.
#[derive(Debug, Deserialize)]
pub struct ReplicaQuery {
    replica: Option<String>,
}

impl ReplicaQuery {
    /// The replica named, checked, if one is.
    fn named(self) -> ApiResult<Option<String>> {
        match self.replica {
            None => Ok(None),
            Some(name) => match replica_name_problem(&name) {
                None => Ok(Some(name)),
                Some(problem) => Err(ApiError::Unprocessable(format!("replica: {problem}"))),
            },
        }
    }
}

/// Documents the parameter exactly as [`replica_name_problem`] checks it.
impl IntoParams for ReplicaQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_REPLICA_NAME_CHARS))
            .pattern(Some(REPLICA_NAME_PATTERN));
        vec![
            ParameterBuilder::new()
                .name("replica")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(
                    "A replica's name (`orchestrator.replica_name`, by default its host name); \
                     absent: the replica that answers",
                ))
                .schema(Some(name))
                .build(),
        ]
    }
}

/// The queue as it stands for some jobs: their places, and what the
/// estimates are made of.
pub(super) struct QueueSnapshot {
    places: HashMap<JobId, Place>,
    active: usize,
    gate: Gate,
    hold: Option<QueueHold>,
    /// This replica's drain.
    drain: Option<ReplicaDrain>,
    /// Whether any replica is drained: a job whose controller last said
    /// `Draining` is shown so only then.
    any_drained: bool,
    average_run: Option<TimeDelta>,
    now: DateTime<Utc>,
}

impl QueueSnapshot {
    /// The places of those of `jobs` that are pending (as read: the queue in
    /// memory takes in these versions first, so a job just written has its
    /// place), the hold, this replica's drain and the run times.
    pub(super) async fn load(state: &AppState, jobs: &[Job]) -> ApiResult<QueueSnapshot> {
        let levers = state.store.queue_levers(state.drain.replica()).await?;
        let average_run = state.store.average_run_time().await?;
        let gate = gate(state, levers.hold.is_some(), levers.drain.is_some());
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
            hold: levers.hold,
            drain: levers.drain,
            any_drained: levers.any_drained,
            average_run,
            now,
        })
    }

    /// Where `job` stands, if it is pending. A job whose controller last
    /// said it drains is shown so while a replica is drained (another
    /// replica may lead, drained), not after the drains ended.
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
        if said == Some(&Reason::Draining) && !gate.held && self.any_drained {
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
            Reason::Draining => match &self.drain {
                Some(drain) => format!(
                    "this orchestrator ({}) is drained by {} since {}",
                    drain.replica,
                    drain.drained_by,
                    drain.drained_at.to_rfc3339()
                ),
                None => "the orchestrator is being drained".to_owned(),
            },
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

/// What admits or holds back every pending job, as this replica sees it.
fn gate(state: &AppState, held: bool, draining: bool) -> Gate {
    Gate {
        max_active: state.max_active_jobs,
        load: *state.load.borrow(),
        held,
        draining,
        ageing: state.queue.ageing(),
    }
}

/// The queue: whether it is held, whether this replica is drained (and
/// which replicas are), and every pending job in the order they start,
/// with its place, reason and estimate.
#[utoipa::path(get, path = "/queue", tag = "queue", operation_id = "get_queue",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The queue", body = QueueResponse),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn show(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<QueueResponse>> {
    caller.require(AccessRole::Viewer, "reading the queue")?;
    let hold = state.store.queue_hold().await?;
    let drains = state.store.replica_drains().await?;
    let replica = state.drain.replica();
    let drain = drains.iter().find(|d| d.replica == replica).cloned();
    let average_run = state.store.average_run_time().await?;
    let gate = gate(&state, hold.is_some(), drain.is_some());
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
        drain: drain.clone(),
        any_drained: !drains.is_empty(),
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
        draining: drain.is_some(),
        draining_since: drain.map(|d| d.drained_at),
        replica: replica.to_owned(),
        drained_replicas: drains.into_iter().map(DrainedReplica::from).collect(),
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
        draining: own_drain(&state).await?,
        replica: state.drain.replica().to_owned(),
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
        draining: own_drain(&state).await?,
        replica: state.drain.replica().to_owned(),
    }))
}

/// Whether the replica that answers is drained, as kept.
async fn own_drain(state: &AppState) -> ApiResult<bool> {
    let levers = state.store.queue_levers(state.drain.replica()).await?;
    Ok(levers.drain.is_some())
}

/// Drain an orchestrator before maintenance: the replica that answers, or
/// the one `replica` names (any replica, running or not yet: it obeys at
/// its next admission, and from its next start). It admits no new job
/// until resumed; the jobs it started go on to their end (`GET /queue`'s
/// `active` says when none is left). Kept in the database under the
/// replica's name, so its restarts keep it. Draining a drained replica
/// keeps the first drain. With replicas, only the leader admits.
#[utoipa::path(post, path = "/queue/drain", tag = "queue", operation_id = "drain_orchestrator",
    params(ReplicaQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The replica is drained", body = QueueChange),
        (status = 403, description = "Only an admin may drain; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 422, description = "`replica` is not a replica name (1 to 253 ASCII letters, digits, `.`, `_`, `-`, beginning and ending with a letter or digit)", body = ErrorBody),
    ))]
pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ReplicaQuery>,
    _body: IgnoredBody,
) -> ApiResult<Json<QueueChange>> {
    caller.require(AccessRole::Admin, "draining an orchestrator")?;
    let drain = match query.named()? {
        Some(name) if name != state.drain.replica() => {
            let wanted = ReplicaDrain {
                replica: name,
                drained_by: caller.name.clone(),
                drained_at: timestamp_now(),
            };
            state.store.drain_replica(&wanted).await?
        }
        _ => state.drain.start(&state.store, &caller.name).await?,
    };
    tracing::info!(by = %caller.name, replica = %drain.replica, drained_by = %drain.drained_by, since = %drain.drained_at, "replica drained: it admits no new job");
    Ok(Json(QueueChange {
        message: format!(
            "Replica {} is drained by {} since {}: it admits no new job; running jobs go on",
            drain.replica,
            drain.drained_by,
            drain.drained_at.to_rfc3339()
        ),
        held: state.store.queue_hold().await?.is_some(),
        draining: true,
        replica: drain.replica,
    }))
}

/// Resume a drained orchestrator: it admits jobs again, in order. Without
/// `replica`, the replica that answers (a 200 either way); with it, the
/// replica it names, which may be running or gone for good (its drain is
/// deleted; a running one obeys at its next admission, within
/// `orchestrator.resync_interval_seconds`). Naming a replica that is not
/// drained is a 404 that lists those that are.
#[utoipa::path(post, path = "/queue/resume", tag = "queue", operation_id = "resume_orchestrator",
    params(ReplicaQuery),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The replica admits jobs again (or, unnamed, was not drained)", body = QueueChange),
        (status = 403, description = "Only an admin may resume; or refused for browser safety: a foreign Origin, or a foreign Host with authentication off", body = ErrorBody),
        (status = 404, description = "The replica named is not drained", body = ErrorBody),
        (status = 422, description = "`replica` is not a replica name (1 to 253 ASCII letters, digits, `.`, `_`, `-`, beginning and ending with a letter or digit)", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ReplicaQuery>,
    _body: IgnoredBody,
) -> ApiResult<Json<QueueChange>> {
    caller.require(AccessRole::Admin, "resuming an orchestrator")?;
    let named = query.named()?;
    let replica = named
        .clone()
        .unwrap_or_else(|| state.drain.replica().to_owned());
    let was_drained = if replica == state.drain.replica() {
        state.drain.stop(&state.store).await?
    } else {
        state.store.resume_replica(&replica).await?
    };
    tracing::info!(by = %caller.name, %replica, was_drained, "drain ended");
    if named.is_some() && !was_drained {
        return Err(not_drained(&state, &replica).await?);
    }
    let message = if was_drained {
        format!("Replica {replica} admits jobs again")
    } else {
        format!("Replica {replica} was not drained")
    };
    Ok(Json(QueueChange {
        message,
        held: state.store.queue_hold().await?.is_some(),
        draining: false,
        replica,
    }))
}

/// The 404 for a resume of `replica`, which is not drained: which are.
async fn not_drained(state: &AppState, replica: &str) -> ApiResult<ApiError> {
    let drained: Vec<String> = state
        .store
        .replica_drains()
        .await?
        .into_iter()
        .map(|drain| drain.replica)
        .collect();
    let listed = match drained.len() {
        0 => "no replica is drained".to_owned(),
        n if n <= NAMED_IN_A_MESSAGE => format!("drained: {}", drained.join(", ")),
        n => format!(
            "drained: {} and {} more (GET /queue lists them)",
            drained[..NAMED_IN_A_MESSAGE].join(", "),
            n - NAMED_IN_A_MESSAGE
        ),
    };
    Ok(ApiError::NotFound(format!(
        "Replica {replica} is not drained ({listed})"
    )))
}
