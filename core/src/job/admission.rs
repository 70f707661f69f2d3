//! Admission: may a pending job start now, and where does each pending job
//! stand? Pure, so the rule (a concurrency limit, priorities with ageing,
//! a hold, host load) is decided and tested in one place, with the time as
//! an input.
//!
//! The queue's order: the highest *effective* priority first, the oldest
//! within it, the id last (so every caller agrees). A job's effective
//! priority is its own priority plus one for every `ageing` it has waited
//! since submission, so a low priority is overtaken only for a while: a job
//! that waited `ageing × (p_high − p_low)` longer than a newcomer of higher
//! priority is ahead of it, and no job waits forever behind a stream of
//! higher ones (`no_pending_job_waits_forever` in the tests).

use chrono::{DateTime, TimeDelta, Utc};

use super::{JobId, Phase, Reason};

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
    fn closed_by(&self) -> Option<Reason> {
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

/// A pending job's effective priority at `now`: its own, plus one for each
/// whole `ageing` it has waited (saturating; never less than its own).
pub fn effective_priority(
    entry: &QueueEntry,
    ageing: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> i64 {
    let own = i64::from(entry.priority);
    let Some(ageing) = ageing.filter(|a| *a > TimeDelta::zero()) else {
        return own;
    };
    let waited = (now - entry.created_at).max(TimeDelta::zero());
    let steps = waited.num_milliseconds() / ageing.num_milliseconds().max(1);
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
/// place and whether it may start now.
pub fn queue(unfinished: &[QueueEntry], gate: &Gate, now: DateTime<Utc>) -> Vec<Place> {
    let active = unfinished.iter().filter(|e| e.phase.is_active()).count();
    let free_slots = gate.max_active.saturating_sub(active);
    let mut pending: Vec<(i64, &QueueEntry)> = unfinished
        .iter()
        .filter(|e| e.phase == Phase::Pending)
        .map(|e| (effective_priority(e, gate.ageing, now), e))
        .collect();
    pending.sort_by(|(pa, a), (pb, b)| {
        pb.cmp(pa)
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.cmp(&b.id))
    });
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
