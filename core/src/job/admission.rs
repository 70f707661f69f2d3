//! Admission: may a pending job start now, and where does each pending job
//! stand? Pure, so the rule (a concurrency limit, priorities with ageing,
//! a hold, host load) is decided and tested in one place, with the time as
//! an input.
//!
//! The queue's order: the highest *effective* priority first, the oldest
//! within it, the id last (so every caller agrees). A job's effective
//! priority is its own priority plus what it has waited since submission,
//! measured in `ageing` periods, so a low priority is overtaken only for a
//! while: a job that waited `ageing × (p_high − p_low)` longer than a
//! newcomer of higher priority is ahead of it, and no job waits forever
//! behind a stream of higher ones (`no_pending_job_waits_forever` in the
//! tests).
//!
//! Two waiting jobs age alike, so the order between them never changes
//! while they wait: it is the order of `created_at − priority × ageing`
//! (the [`Rank`]), the unrounded form of "own priority plus periods
//! waited". That is what lets [`PendingQueue`] keep the queue sorted once,
//! in memory, instead of sorting every pending job at every admission. The
//! effective priority shown ([`effective_priority`]) counts whole periods;
//! it never increases down the queue, and between two equal ones the
//! unrounded value decides, which may put the younger job first.

use chrono::{DateTime, TimeDelta, Utc};

use super::{JobId, Phase, Reason};

mod pending;

pub use pending::PendingQueue;

/// The lowest priority a job may have.
pub const MIN_PRIORITY: i32 = -1000;
/// The highest priority a job may have (a role's cap may be lower).
pub const MAX_PRIORITY: i32 = 1000;

/// Host load, as the sentinel classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "UPPERCASE"))]
pub enum LoadLevel {
    /// Normal: jobs are admitted.
    Green,
    /// Busy: running jobs go on, no new job is admitted.
    Yellow,
    /// Critical: nothing new is admitted and spawning is refused.
    Red,
}

/// The answer for one pending job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Not now, for this reason, which becomes the pending job's status reason.
    Waiting(Reason),
}

/// The facts admission needs about one unfinished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: JobId,
    pub phase: Phase,
    pub created_at: DateTime<Utc>,
    /// The job's own priority (higher goes first).
    pub priority: i32,
}

impl QueueEntry {
    pub fn of(job: &super::Job) -> QueueEntry {
        QueueEntry {
            id: job.id,
            phase: job.status.phase,
            created_at: job.created_at,
            priority: job.spec.priority,
        }
    }
}

/// What admits or holds back every pending job alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Jobs building or checking at once.
    pub max_active: usize,
    pub load: LoadLevel,
    /// An admin held the queue: nothing new is admitted.
    pub held: bool,
    /// This orchestrator is being drained: it admits nothing new.
    pub draining: bool,
    /// A pending job's priority grows by one for every `ageing` it waited;
    /// `None`: priorities never change.
    pub ageing: Option<TimeDelta>,
}

impl Gate {
    /// A gate that admits up to `max_active` jobs by priority alone, with
    /// nothing held back.
    pub fn open(max_active: usize) -> Gate {
        Gate {
            max_active,
            load: LoadLevel::Green,
            held: false,
            draining: false,
            ageing: None,
        }
    }

    /// What holds back every pending job, whatever its place: a hold, a
    /// drain, a busy host.
    pub fn closed_by(&self) -> Option<Reason> {
        if self.held {
            Some(Reason::QueueHeld)
        } else if self.draining {
            Some(Reason::Draining)
        } else if self.load != LoadLevel::Green {
            Some(Reason::HostBusy)
        } else {
            None
        }
    }
}

/// Where a pending job stands in the order jobs start in: lower first. It
/// does not change while the job waits (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// `created_at − priority × ageing` in microseconds (the stores' precision);
    /// without ageing, `−priority`.
    standing: i128,
    created_at: DateTime<Utc>,
    id: JobId,
}

impl Rank {
    /// `entry`'s rank when a wait of `ageing` raises a priority by one.
    pub fn of(entry: &QueueEntry, ageing: Option<TimeDelta>) -> Rank {
        Rank {
            standing: standing(entry.priority, entry.created_at, ageing),
            created_at: entry.created_at,
            id: entry.id,
        }
    }

    pub fn id(&self) -> JobId {
        self.id
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}

/// The first part of a [`Rank`]: exact in `i128` for any priority,
/// timestamp and ageing chrono can represent.
fn standing(priority: i32, created_at: DateTime<Utc>, ageing: Option<TimeDelta>) -> i128 {
    let priority = i128::from(priority);
    match ageing_micros(ageing) {
        Some(ageing) => micros(created_at) - priority * ageing,
        None => -priority,
    }
}

/// Microseconds since the epoch, the precision every store keeps.
fn micros(at: DateTime<Utc>) -> i128 {
    i128::from(at.timestamp()) * 1_000_000 + i128::from(at.timestamp_subsec_micros())
}

/// A positive ageing in microseconds; none when priorities never change.
fn ageing_micros(ageing: Option<TimeDelta>) -> Option<i128> {
    let ageing = ageing.filter(|a| *a > TimeDelta::zero())?;
    let micros =
        i128::from(ageing.num_seconds()) * 1_000_000 + i128::from(ageing.subsec_nanos() / 1_000);
    Some(micros.max(1))
}

/// A pending job's effective priority at `now`: its own, plus one for each
/// whole `ageing` it has waited (saturating; never less than its own).
pub fn effective_priority(
    entry: &QueueEntry,
    ageing: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> i64 {
    let own = i64::from(entry.priority);
    let Some(ageing) = ageing_micros(ageing) else {
        return own;
    };
    let waited = micros(now) - micros(entry.created_at);
    let steps = i64::try_from(waited.max(0) / ageing).unwrap_or(i64::MAX);
    own.saturating_add(steps)
}

/// One pending job's place in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub id: JobId,
    /// 1-based: 1 is the next job to start.
    pub position: usize,
    /// Its effective priority at the time the queue was ordered.
    pub effective_priority: i64,
    /// Admitted now, or why not.
    pub admission: Admission,
}

/// Every pending job of `unfinished`, in the order they start, each with its
/// place and whether it may start now. Sorts them all: the specification
/// [`PendingQueue`] is tested against, and fine for a few jobs.
pub fn queue(unfinished: &[QueueEntry], gate: &Gate, now: DateTime<Utc>) -> Vec<Place> {
    let active = unfinished.iter().filter(|e| e.phase.is_active()).count();
    let free_slots = gate.max_active.saturating_sub(active);
    let mut pending: Vec<(i64, &QueueEntry)> = unfinished
        .iter()
        .filter(|e| e.phase == Phase::Pending)
        .map(|e| (effective_priority(e, gate.ageing, now), e))
        .collect();
    pending.sort_by_cached_key(|(_, entry)| Rank::of(entry, gate.ageing));
    let closed = gate.closed_by();
    pending
        .iter()
        .enumerate()
        .map(|(index, (effective, entry))| {
            let admission = if let Some(reason) = &closed {
                Admission::Waiting(reason.clone())
            } else if free_slots == 0 {
                Admission::Waiting(Reason::ConcurrencyLimit)
            } else if index < free_slots {
                Admission::Admitted
            } else {
                let jumped = pending[..index]
                    .iter()
                    .any(|(_, ahead)| ahead.created_at > entry.created_at);
                Admission::Waiting(if jumped {
                    Reason::QueuedBehindHigherPriority
                } else {
                    Reason::QueuedBehindOlderJobs
                })
            };
            Place {
                id: entry.id,
                position: index + 1,
                effective_priority: *effective,
                admission,
            }
        })
        .collect()
}

/// Decides whether `candidate` may leave `pending`: at most
/// `gate.max_active` jobs are building or checking, and free slots go to
/// the first pending jobs in [`queue`]'s order.
pub fn admit(
    candidate: JobId,
    unfinished: &[QueueEntry],
    gate: &Gate,
    now: DateTime<Utc>,
) -> Admission {
    queue(unfinished, gate, now)
        .into_iter()
        .find(|place| place.id == candidate)
        .map_or(Admission::Waiting(Reason::QueuedBehindOlderJobs), |place| {
            place.admission
        })
}

/// When a pending job at `place` may be expected to start, from
/// `average_run`, the time recent jobs held a slot (building and checking).
///
/// Before it, `active + position - max_active` slots must free up (none:
/// it starts at once); the `max_active` slots free up about once per
/// `average_run` each, so that takes `ceil(needed / max_active)` runs. No
/// estimate without a history, nor while the gate is closed (a hold, a
/// drain, a busy host): nobody can say when that ends.
pub fn estimated_start(
    place: &Place,
    active: usize,
    gate: &Gate,
    average_run: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if gate.closed_by().is_some() || gate.max_active == 0 {
        return None;
    }
    let average_run = average_run?;
    let needed = (active + place.position).saturating_sub(gate.max_active);
    if needed == 0 {
        return Some(now);
    }
    let runs = needed.div_ceil(gate.max_active);
    let runs = i32::try_from(runs).ok()?;
    now.checked_add_signed(average_run.checked_mul(runs)?)
}

#[cfg(test)]
mod tests;
