//! Admission: may a pending job start now? Pure, so the rule (a concurrency
//! limit, oldest first, host load) is decided and tested in one place.

use chrono::{DateTime, Utc};

use super::{JobId, Phase, Reason};

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
}

/// Decides whether `candidate` may leave `pending`.
///
/// At most `max_active` jobs are building or checking; free slots go to the
/// oldest pending jobs first (ties broken by id so every caller agrees).
pub fn admit(
    candidate: JobId,
    unfinished: &[QueueEntry],
    max_active: usize,
    load: LoadLevel,
) -> Admission {
    if load != LoadLevel::Green {
        return Admission::Waiting(Reason::HostBusy);
    }
    let active = unfinished.iter().filter(|e| e.phase.is_active()).count();
    let free_slots = max_active.saturating_sub(active);
    if free_slots == 0 {
        return Admission::Waiting(Reason::ConcurrencyLimit);
    }
    let mut pending: Vec<&QueueEntry> = unfinished
        .iter()
        .filter(|e| e.phase == Phase::Pending)
        .collect();
    pending.sort_by_key(|e| (e.created_at, e.id));
    let position = pending.iter().position(|e| e.id == candidate);
    match position {
        Some(position) if position < free_slots => Admission::Admitted,
        _ => Admission::Waiting(Reason::QueuedBehindOlderJobs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::fixtures::at;

    fn entry(phase: Phase, created: i64) -> QueueEntry {
        QueueEntry {
            id: JobId::new_random(),
            phase,
            created_at: at(created),
        }
    }

    #[test]
    fn a_pending_job_is_admitted_when_a_slot_is_free() {
        let job = entry(Phase::Pending, 0);
        assert_eq!(
            admit(job.id, &[job], 2, LoadLevel::Green),
            Admission::Admitted
        );
    }

    #[test]
    fn no_job_is_admitted_while_the_limit_is_reached() {
        let queue = [
            entry(Phase::Building, 0),
            entry(Phase::Checking, 1),
            entry(Phase::Pending, 2),
        ];
        assert_eq!(
            admit(queue[2].id, &queue, 2, LoadLevel::Green),
            Admission::Waiting(Reason::ConcurrencyLimit)
        );
    }

    #[test]
    fn the_oldest_pending_job_gets_the_last_free_slot() {
        let queue = [
            entry(Phase::Building, 0),
            entry(Phase::Pending, 5),
            entry(Phase::Pending, 3),
        ];
        assert_eq!(
            admit(queue[2].id, &queue, 2, LoadLevel::Green),
            Admission::Admitted
        );
        assert_eq!(
            admit(queue[1].id, &queue, 2, LoadLevel::Green),
            Admission::Waiting(Reason::QueuedBehindOlderJobs)
        );
    }

    #[test]
    fn a_busy_host_admits_nothing() {
        let job = entry(Phase::Pending, 0);
        for load in [LoadLevel::Yellow, LoadLevel::Red] {
            assert_eq!(
                admit(job.id, &[job], 2, load),
                Admission::Waiting(Reason::HostBusy)
            );
        }
    }
}
