//! The queue in memory against the specification: after any sequence of
//! changes, late ones included, it answers what [`queue`] and [`admit`]
//! answer over the same jobs.

use std::collections::HashMap;

use proptest::prelude::*;

use super::super::{admit, queue};
use super::*;
use crate::job::fixtures::at;

fn entry(phase: Phase, created: i64, priority: i32) -> QueueEntry {
    QueueEntry {
        id: JobId::new_random(),
        phase,
        created_at: at(created),
        priority,
    }
}

fn in_phase(entry: QueueEntry, phase: Phase) -> QueueEntry {
    QueueEntry { phase, ..entry }
}

#[test]
fn an_older_version_of_a_job_is_ignored() {
    let mut queue = PendingQueue::new(None);
    let job = entry(Phase::Pending, 0, 0);
    assert!(queue.apply(in_phase(job, Phase::Building), 2));
    assert!(!queue.apply(job, 1), "version 1 came late");
    assert_eq!((queue.active(), queue.pending()), (1, 0));
}

#[test]
fn a_late_change_does_not_bring_a_finished_job_back() {
    let mut queue = PendingQueue::new(None);
    let job = entry(Phase::Pending, 0, 0);
    queue.apply(job, 1);
    queue.apply(in_phase(job, Phase::Cancelled), 3);
    assert!(!queue.apply(job, 2));
    queue.rebuild([]);
    assert!(!queue.apply(job, 2), "still finished after a rebuild");
    assert_eq!(queue.pending(), 0);
}

#[test]
fn a_deleted_job_leaves_the_queue() {
    let mut queue = PendingQueue::new(None);
    let job = entry(Phase::Pending, 0, 0);
    queue.apply(job, 1);
    queue.forget(job.id);
    assert_eq!(queue.head(1), vec![]);
    assert!(!queue.apply(job, 2));
}

#[test]
fn a_rebuild_replaces_what_was_known() {
    let mut queue = PendingQueue::new(None);
    let stale = entry(Phase::Building, 0, 0);
    queue.apply(stale, 1);
    let waiting = entry(Phase::Pending, 1, 0);
    queue.rebuild([(waiting, 4)]);
    assert_eq!(queue.active(), 0);
    assert_eq!(queue.head(5), vec![waiting.id]);
    assert!(!queue.apply(waiting, 3), "the rebuild's version holds");
}

#[test]
fn the_head_is_the_first_jobs_to_start() {
    let mut queue = PendingQueue::new(None);
    let old = entry(Phase::Pending, 0, 0);
    let urgent = entry(Phase::Pending, 5, 3);
    let young = entry(Phase::Pending, 9, 0);
    for job in [young, old, urgent] {
        queue.apply(job, 1);
    }
    assert_eq!(queue.head(2), vec![urgent.id, old.id]);
}

#[test]
fn a_job_behind_a_newer_higher_priority_one_says_so() {
    let mut queue = PendingQueue::new(Some(TimeDelta::seconds(10)));
    let running = entry(Phase::Building, 0, 0);
    let old = entry(Phase::Pending, 0, 0);
    // Ahead by 2 periods (20 s) less its 5 s head start.
    let urgent = entry(Phase::Pending, 5, 2);
    let newcomer = entry(Phase::Pending, 30, 2);
    for job in [running, old, urgent, newcomer] {
        queue.apply(job, 1);
    }
    let gate = Gate {
        ageing: Some(TimeDelta::seconds(10)),
        ..Gate::open(2)
    };
    assert_eq!(queue.admission(urgent.id, &gate), Admission::Admitted);
    assert_eq!(
        queue.admission(old.id, &gate),
        Admission::Waiting(Reason::QueuedBehindHigherPriority)
    );
    // The newcomer came 30 s after `old`: 30 > 2 × 10, so it is behind.
    assert_eq!(
        queue.admission(newcomer.id, &gate),
        Admission::Waiting(Reason::QueuedBehindOlderJobs)
    );
}

/// One change fed to the queue: which of a few jobs, in which phase, with
/// which priority, and whether it comes late (an older version).
#[derive(Debug, Clone)]
enum Change {
    Write {
        job: usize,
        phase: Phase,
        priority: i32,
        late: bool,
    },
    Delete(usize),
    Rebuild,
}

fn change() -> impl Strategy<Value = Change> {
    let phase = prop_oneof![
        4 => Just(Phase::Pending),
        2 => Just(Phase::Building),
        1 => Just(Phase::Checking),
        1 => Just(Phase::AwaitingApproval),
        1 => Just(Phase::Cancelled),
        1 => Just(Phase::Failed),
    ];
    prop_oneof![
        12 => (0..JOBS, phase, -3..3i32, prop::bool::weighted(0.15)).prop_map(
            |(job, phase, priority, late)| Change::Write { job, phase, priority, late }
        ),
        1 => (0..JOBS).prop_map(Change::Delete),
        1 => Just(Change::Rebuild),
    ]
}

const JOBS: usize = 12;

/// What the database holds: every job's latest version.
#[derive(Default)]
struct Truth {
    jobs: HashMap<usize, (QueueEntry, i64)>,
    deleted: std::collections::HashSet<usize>,
}

impl Truth {
    fn unfinished(&self) -> Vec<(QueueEntry, i64)> {
        self.jobs
            .values()
            .filter(|(entry, _)| !entry.phase.is_terminal())
            .copied()
            .collect()
    }
}

proptest! {
    /// Whatever changes arrive, late ones included, the queue in memory
    /// places and admits every job as the specification does over the
    /// jobs as they are.
    #[test]
    fn the_queue_in_memory_answers_as_the_specification(
        changes in prop::collection::vec(change(), 1..60),
        max_active in 0..4usize,
        ageing in prop::option::of(1..50i64),
        held in prop::bool::weighted(0.1),
        now in 1000..3000i64,
    ) {
        let ids: Vec<JobId> = (0..JOBS).map(|_| JobId::new_random()).collect();
        let created: Vec<i64> = (0..JOBS as i64).map(|i| (i * 37) % 200).collect();
        let ageing = ageing.map(TimeDelta::seconds);
        let gate = Gate { ageing, held, ..Gate::open(max_active) };
        let now = at(now);
        let mut truth = Truth::default();
        let mut memory = PendingQueue::new(ageing);
        for change in changes {
            match change {
                Change::Write { job, phase, priority, late } => {
                    if truth.deleted.contains(&job) {
                        continue;
                    }
                    let previous = truth.jobs.get(&job).copied();
                    // Phases never go backwards: a finished job stays so.
                    if previous.is_some_and(|(e, _)| e.phase.is_terminal()) {
                        continue;
                    }
                    let version = previous.map_or(1, |(_, v)| v + 1);
                    let entry = QueueEntry {
                        id: ids[job],
                        phase,
                        created_at: at(created[job]),
                        priority,
                    };
                    truth.jobs.insert(job, (entry, version));
                    if late {
                        // Seen now, then an older version arrives late.
                        memory.apply(entry, version);
                        if let Some((older, v)) = previous {
                            prop_assert!(!memory.apply(older, v));
                        }
                    } else {
                        memory.apply(entry, version);
                    }
                }
                Change::Delete(job) => {
                    truth.jobs.remove(&job);
                    truth.deleted.insert(job);
                    memory.forget(ids[job]);
                }
                Change::Rebuild => memory.rebuild(truth.unfinished()),
            }
            let unfinished: Vec<QueueEntry> =
                truth.unfinished().into_iter().map(|(entry, _)| entry).collect();
            let expected = queue(&unfinished, &gate, now);
            prop_assert_eq!(&memory.places(&gate, now), &expected);
            let active = unfinished.iter().filter(|e| e.phase.is_active()).count();
            prop_assert_eq!(memory.active(), active);
            for place in &expected {
                prop_assert_eq!(
                    memory.admission(place.id, &gate),
                    admit(place.id, &unfinished, &gate, now)
                );
            }
            let some: Vec<JobId> = ids.iter().step_by(2).copied().collect();
            let places = memory.places_of(&some, &gate, now);
            for place in expected.iter().filter(|p| some.contains(&p.id)) {
                prop_assert_eq!(places.get(&place.id), Some(place));
            }
            prop_assert_eq!(places.len(), expected.iter().filter(|p| some.contains(&p.id)).count());
            let head: Vec<JobId> = expected.iter().take(2).map(|p| p.id).collect();
            prop_assert_eq!(memory.head(2), head);
        }
    }
}
