//! Admission's rules, and the properties of the queue's order over every
//! queue `proptest` can generate: priority first, oldest within it, and no
//! pending job waits forever.

use proptest::prelude::*;

use super::*;
use crate::job::fixtures::at;

fn entry(phase: Phase, created: i64) -> QueueEntry {
    QueueEntry {
        id: JobId::new_random(),
        phase,
        created_at: at(created),
        priority: 0,
    }
}

fn with_priority(mut entry: QueueEntry, priority: i32) -> QueueEntry {
    entry.priority = priority;
    entry
}

fn gate(max_active: usize) -> Gate {
    Gate::open(max_active)
}

#[test]
fn a_pending_job_is_admitted_when_a_slot_is_free() {
    let job = entry(Phase::Pending, 0);
    assert_eq!(admit(job.id, &[job], &gate(2), at(1)), Admission::Admitted);
}

#[test]
fn no_job_is_admitted_while_the_limit_is_reached() {
    let queue = [
        entry(Phase::Building, 0),
        entry(Phase::Checking, 1),
        entry(Phase::Pending, 2),
    ];
    assert_eq!(
        admit(queue[2].id, &queue, &gate(2), at(3)),
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
        admit(queue[2].id, &queue, &gate(2), at(6)),
        Admission::Admitted
    );
    assert_eq!(
        admit(queue[1].id, &queue, &gate(2), at(6)),
        Admission::Waiting(Reason::QueuedBehindOlderJobs)
    );
}

#[test]
fn a_higher_priority_job_gets_the_slot_before_an_older_one() {
    let queue = [
        entry(Phase::Pending, 0),
        with_priority(entry(Phase::Pending, 5), 3),
    ];
    assert_eq!(
        admit(queue[1].id, &queue, &gate(1), at(6)),
        Admission::Admitted
    );
    assert_eq!(
        admit(queue[0].id, &queue, &gate(1), at(6)),
        Admission::Waiting(Reason::QueuedBehindHigherPriority)
    );
}

#[test]
fn waiting_raises_a_jobs_priority_by_one_per_ageing_period() {
    let ageing = Some(TimeDelta::seconds(60));
    let job = with_priority(entry(Phase::Pending, 0), 2);
    assert_eq!(effective_priority(&job, ageing, at(59)), 2);
    assert_eq!(effective_priority(&job, ageing, at(60)), 3);
    assert_eq!(effective_priority(&job, ageing, at(600)), 12);
    assert_eq!(effective_priority(&job, None, at(600)), 2);
}

#[test]
fn an_old_low_priority_job_overtakes_a_new_high_priority_one() {
    let gate = Gate {
        ageing: Some(TimeDelta::seconds(10)),
        ..gate(1)
    };
    let old = entry(Phase::Pending, 0);
    let new = with_priority(entry(Phase::Pending, 100), 5);
    // At 100 s the old job has aged by 10: 10 > 5 + 0.
    let queue = [old, new];
    assert_eq!(admit(old.id, &queue, &gate, at(100)), Admission::Admitted);
    // Without ageing the newcomer would win.
    assert_eq!(
        admit(new.id, &queue, &Gate::open(1), at(100)),
        Admission::Admitted
    );
}

#[test]
fn a_busy_host_admits_nothing() {
    let job = entry(Phase::Pending, 0);
    for load in [LoadLevel::Yellow, LoadLevel::Red] {
        let busy = Gate { load, ..gate(2) };
        assert_eq!(
            admit(job.id, &[job], &busy, at(1)),
            Admission::Waiting(Reason::HostBusy)
        );
    }
}

#[test]
fn a_held_queue_admits_nothing_and_says_so() {
    let job = entry(Phase::Pending, 0);
    let held = Gate {
        held: true,
        load: LoadLevel::Yellow,
        ..gate(2)
    };
    assert_eq!(
        admit(job.id, &[job], &held, at(1)),
        Admission::Waiting(Reason::QueueHeld)
    );
}

#[test]
fn a_draining_orchestrator_admits_nothing_and_says_so() {
    let job = entry(Phase::Pending, 0);
    let draining = Gate {
        draining: true,
        ..gate(2)
    };
    assert_eq!(
        admit(job.id, &[job], &draining, at(1)),
        Admission::Waiting(Reason::Draining)
    );
}

#[test]
fn positions_count_from_one_in_the_order_jobs_start() {
    let queue = [
        entry(Phase::Building, 0),
        entry(Phase::Pending, 1),
        with_priority(entry(Phase::Pending, 2), 1),
        entry(Phase::Pending, 3),
    ];
    let places = super::queue(&queue, &gate(1), at(4));
    let order: Vec<(JobId, usize)> = places.iter().map(|p| (p.id, p.position)).collect();
    assert_eq!(
        order,
        vec![(queue[2].id, 1), (queue[1].id, 2), (queue[3].id, 3)]
    );
}

#[test]
fn the_estimate_counts_the_slots_that_must_free_up() {
    let queue = [
        entry(Phase::Building, 0),
        entry(Phase::Building, 0),
        entry(Phase::Pending, 1),
        entry(Phase::Pending, 2),
        entry(Phase::Pending, 3),
    ];
    let gate = gate(2);
    let places = super::queue(&queue, &gate, at(10));
    let run = Some(TimeDelta::seconds(100));
    let starts: Vec<Option<DateTime<Utc>>> = places
        .iter()
        .map(|place| estimated_start(place, 2, &gate, run, at(10)))
        .collect();
    // The first two need one slot each (one run), the third a second round.
    assert_eq!(starts, vec![Some(at(110)), Some(at(110)), Some(at(210))]);
}

#[test]
fn there_is_no_estimate_without_history_nor_while_the_queue_is_held() {
    let job = entry(Phase::Pending, 0);
    let places = super::queue(&[job], &gate(1), at(1));
    assert_eq!(estimated_start(&places[0], 0, &gate(1), None, at(1)), None);
    let held = Gate {
        held: true,
        ..gate(1)
    };
    let places = super::queue(&[job], &held, at(1));
    let run = Some(TimeDelta::seconds(100));
    assert_eq!(estimated_start(&places[0], 0, &held, run, at(1)), None);
}

#[test]
fn a_job_that_may_start_now_is_expected_now() {
    let job = entry(Phase::Pending, 0);
    let places = super::queue(&[job], &gate(1), at(1));
    let run = Some(TimeDelta::seconds(100));
    assert_eq!(
        estimated_start(&places[0], 0, &gate(1), run, at(1)),
        Some(at(1))
    );
}

fn arbitrary_queue() -> impl Strategy<Value = Vec<QueueEntry>> {
    let one = (
        prop_oneof![
            3 => Just(Phase::Pending),
            1 => Just(Phase::Building),
            1 => Just(Phase::Checking),
        ],
        0..1000i64,
        -5..5i32,
    )
        .prop_map(|(phase, created, priority)| with_priority(entry(phase, created), priority));
    prop::collection::vec(one, 0..20)
}

proptest! {
    /// Whoever is admitted, no pending job not admitted ranks before it:
    /// a higher unrounded effective priority, or the same and older.
    #[test]
    fn admission_takes_the_highest_priority_then_the_oldest(
        queue in arbitrary_queue(),
        max_active in 1..4usize,
        now in 1000..5000i64,
        ageing in prop::option::of(1..100i64),
    ) {
        let gate = Gate { ageing: ageing.map(TimeDelta::seconds), ..gate(max_active) };
        let now = at(now);
        let admitted: Vec<&QueueEntry> = queue
            .iter()
            .filter(|e| e.phase == Phase::Pending)
            .filter(|e| admit(e.id, &queue, &gate, now) == Admission::Admitted)
            .collect();
        let active = queue.iter().filter(|e| e.phase.is_active()).count();
        prop_assert!(admitted.len() + active <= max_active.max(active));
        let key = |e: &QueueEntry| Rank::of(e, gate.ageing);
        for waiting in queue.iter().filter(|e| e.phase == Phase::Pending) {
            if admitted.iter().any(|a| a.id == waiting.id) {
                continue;
            }
            for a in &admitted {
                prop_assert!(key(a) < key(waiting));
            }
        }
    }

    /// Positions are 1, 2, 3... with every pending job once.
    #[test]
    fn every_pending_job_has_one_place(queue in arbitrary_queue(), max_active in 1..4usize) {
        let places = super::queue(&queue, &gate(max_active), at(2000));
        let pending = queue.iter().filter(|e| e.phase == Phase::Pending).count();
        prop_assert_eq!(places.len(), pending);
        for (index, place) in places.iter().enumerate() {
            prop_assert_eq!(place.position, index + 1);
        }
    }

    /// With ageing, a pending job is overtaken only by jobs submitted
    /// within `ageing × (highest − its own + 1)` after it: every job
    /// submitted later, of any priority, at any time after, is behind it.
    /// As only so many jobs can be submitted in a bounded time, it starts.
    #[test]
    fn no_pending_job_waits_forever(
        low in -5..0i32,
        high in 0..5i32,
        ageing in 1..60i64,
        submitted_after in 0..10_000i64,
        looked_after in 0..10_000i64,
    ) {
        let gate = Gate { ageing: Some(TimeDelta::seconds(ageing)), ..gate(1) };
        let starving = with_priority(entry(Phase::Pending, 0), low);
        let bound = ageing * i64::from(high - low + 1);
        let submitted = bound + submitted_after;
        let newcomer = with_priority(entry(Phase::Pending, submitted), high);
        let queue = [newcomer, starving];
        let now = at(submitted + looked_after);
        prop_assert_eq!(admit(starving.id, &queue, &gate, now), Admission::Admitted);
    }
}

proptest! {
    /// The effective priority shown (whole periods waited) never increases
    /// down the queue: only between equal ones may the unrounded value put
    /// a younger job first.
    #[test]
    fn the_effective_priority_shown_never_increases_down_the_queue(
        queue in arbitrary_queue(),
        now in 1000..5000i64,
        ageing in prop::option::of(1..100i64),
    ) {
        let gate = Gate { ageing: ageing.map(TimeDelta::seconds), ..gate(1) };
        let places = super::queue(&queue, &gate, at(now));
        for pair in places.windows(2) {
            prop_assert!(pair[0].effective_priority >= pair[1].effective_priority);
        }
    }

    /// The documented guarantee: a job that waited `ageing × (p_high −
    /// p_low)` longer than a newcomer of higher priority is ahead of it,
    /// whenever one looks.
    #[test]
    fn a_job_that_waited_long_enough_is_ahead_of_a_higher_newcomer(
        low in -5..5i32,
        more in 1..5i32,
        ageing in 1..60i64,
        later in 0..1000i64,
        looked_after in 0..10_000i64,
    ) {
        let gate = Gate { ageing: Some(TimeDelta::seconds(ageing)), ..gate(1) };
        let waited = with_priority(entry(Phase::Pending, 0), low);
        let submitted = ageing * i64::from(more) + later;
        let newcomer = with_priority(entry(Phase::Pending, submitted), low + more);
        let places = super::queue(&[newcomer, waited], &gate, at(submitted + looked_after));
        prop_assert_eq!(places[0].id, waited.id);
    }
}

#[test]
fn within_the_same_period_the_unrounded_wait_decides() {
    // Both show effective priority 1 at 15 s; the order is that of
    // created_at − priority × ageing: 5 s for `old`, 14 − 10 = 4 s for
    // `urgent`, which goes first although it is younger.
    let gate = Gate {
        ageing: Some(TimeDelta::seconds(10)),
        ..gate(1)
    };
    let old = entry(Phase::Pending, 5);
    let urgent = with_priority(entry(Phase::Pending, 14), 1);
    let places = super::queue(&[old, urgent], &gate, at(15));
    let shown: Vec<(JobId, i64)> = places
        .iter()
        .map(|p| (p.id, p.effective_priority))
        .collect();
    assert_eq!(shown, vec![(urgent.id, 1), (old.id, 1)]);
}
