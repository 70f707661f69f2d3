//! The queue kept sorted in memory: what [`queue`](super::queue) computes by
//! sorting every unfinished job, kept current one change at a time, so that
//! admitting a job costs `O(log n + max_active)` whatever the backlog.
//!
//! It is fed the unfinished jobs once (`rebuild`, from the database), then
//! every job version written (`apply`). Versions older than the one it holds
//! are ignored, and so is any version of a job it saw finish (phases never go
//! backwards), so a late or repeated change cannot bring a finished job back
//! into the queue. Pure: whoever feeds it does the I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Admission, Gate, Place, QueueEntry, Rank, effective_priority, standing};
use crate::job::{JobId, Phase, Reason};

/// How many finished jobs are remembered, so that a late change about one
/// is not taken for a job still waiting. Late changes arrive within
/// moments; this many finished jobs take far longer than that.
const FINISHED_REMEMBERED: usize = 65_536;

/// One unfinished job as last seen.
#[derive(Debug, Clone, Copy)]
struct Known {
    entry: QueueEntry,
    version: i64,
}

/// The unfinished jobs, the pending ones in the order they start.
#[derive(Debug, Clone)]
pub struct PendingQueue {
    ageing: Option<TimeDelta>,
    jobs: HashMap<JobId, Known>,
    /// The pending jobs, first to start first.
    order: BTreeSet<Rank>,
    /// The pending jobs by priority, then how many were created at each
    /// moment: who may have overtaken whom (the reason a job waits).
    by_priority: BTreeMap<i32, BTreeMap<DateTime<Utc>, u32>>,
    /// Jobs building or checking.
    active: usize,
    finished: HashSet<JobId>,
    finished_order: VecDeque<JobId>,
}

impl PendingQueue {
    /// An empty queue, ordered with `ageing` (`queue.ageing_seconds`).
    pub fn new(ageing: Option<TimeDelta>) -> PendingQueue {
        PendingQueue {
            ageing,
            jobs: HashMap::new(),
            order: BTreeSet::new(),
            by_priority: BTreeMap::new(),
            active: 0,
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
        }
    }

    /// Forgets everything but the finished jobs, and takes `unfinished`
    /// (each job with its version) as the truth.
    pub fn rebuild(&mut self, unfinished: impl IntoIterator<Item = (QueueEntry, i64)>) {
        self.jobs.clear();
        self.order.clear();
        self.by_priority.clear();
        self.active = 0;
        for (entry, version) in unfinished {
            self.finished.remove(&entry.id);
            self.apply(entry, version);
        }
    }

    /// Takes in the job's version `version`; whether it changed anything
    /// (`false` for a version older than the one held, or a finished job).
    pub fn apply(&mut self, entry: QueueEntry, version: i64) -> bool {
        if self.finished.contains(&entry.id) {
            return false;
        }
        if let Some(known) = self.jobs.get(&entry.id) {
            if known.version >= version {
                return false;
            }
            let known = known.entry;
            self.remove(&known);
        }
        if entry.phase.is_terminal() {
            self.remember_finished(entry.id);
        } else {
            self.insert(entry, version);
        }
        true
    }

    /// The job is gone (deleted): it leaves the queue for good.
    pub fn forget(&mut self, id: JobId) {
        if let Some(known) = self.jobs.get(&id) {
            let known = known.entry;
            self.remove(&known);
        }
        self.remember_finished(id);
    }

    fn insert(&mut self, entry: QueueEntry, version: i64) {
        self.jobs.insert(entry.id, Known { entry, version });
        if entry.phase.is_active() {
            self.active += 1;
        }
        if entry.phase == Phase::Pending {
            self.order.insert(Rank::of(&entry, self.ageing));
            *self
                .by_priority
                .entry(entry.priority)
                .or_default()
                .entry(entry.created_at)
                .or_default() += 1;
        }
    }

    fn remove(&mut self, entry: &QueueEntry) {
        self.jobs.remove(&entry.id);
        if entry.phase.is_active() {
            self.active -= 1;
        }
        if entry.phase == Phase::Pending {
            self.order.remove(&Rank::of(entry, self.ageing));
            if let Some(created) = self.by_priority.get_mut(&entry.priority) {
                if let Some(count) = created.get_mut(&entry.created_at) {
                    *count -= 1;
                    if *count == 0 {
                        created.remove(&entry.created_at);
                    }
                }
                if created.is_empty() {
                    self.by_priority.remove(&entry.priority);
                }
            }
        }
    }

    fn remember_finished(&mut self, id: JobId) {
        if !self.finished.insert(id) {
            return;
        }
        self.finished_order.push_back(id);
        if self.finished_order.len() > FINISHED_REMEMBERED {
            if let Some(oldest) = self.finished_order.pop_front() {
                self.finished.remove(&oldest);
            }
        }
    }

    /// Jobs building or checking.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Jobs waiting.
    pub fn pending(&self) -> usize {
        self.order.len()
    }

    /// The job as last seen, if it is unfinished.
    pub fn get(&self, id: JobId) -> Option<QueueEntry> {
        self.jobs.get(&id).map(|known| known.entry)
    }

    /// Every unfinished job as last seen, in no order.
    pub fn entries(&self) -> impl Iterator<Item = QueueEntry> + '_ {
        self.jobs.values().map(|known| known.entry)
    }

    /// Slots free for pending jobs under `gate`'s limit.
    pub fn free_slots(&self, gate: &Gate) -> usize {
        gate.max_active.saturating_sub(self.active)
    }

    /// The first `n` pending jobs, first to start first.
    pub fn head(&self, n: usize) -> Vec<JobId> {
        self.order.iter().take(n).map(Rank::id).collect()
    }

    /// What [`admit`](super::admit) answers for `candidate`, in
    /// `O(log n + max_active)` (and, for a job that must wait behind
    /// others, `O(log n)` per priority above its own that has jobs waiting).
    pub fn admission(&self, candidate: JobId, gate: &Gate) -> Admission {
        if let Some(reason) = gate.closed_by() {
            return Admission::Waiting(reason);
        }
        let free = self.free_slots(gate);
        if free == 0 {
            return Admission::Waiting(Reason::ConcurrencyLimit);
        }
        let Some(entry) = self.get(candidate).filter(|e| e.phase == Phase::Pending) else {
            return Admission::Waiting(Reason::QueuedBehindOlderJobs);
        };
        if self
            .order
            .iter()
            .take(free)
            .any(|rank| rank.id() == candidate)
        {
            return Admission::Admitted;
        }
        Admission::Waiting(if self.overtaken(&entry) {
            Reason::QueuedBehindHigherPriority
        } else {
            Reason::QueuedBehindOlderJobs
        })
    }

    /// Whether a job submitted after `entry` is ahead of it: one of a
    /// higher priority, created later, whose rank is lower.
    fn overtaken(&self, entry: &QueueEntry) -> bool {
        let own = standing(entry.priority, entry.created_at, self.ageing);
        let above = (Bound::Excluded(entry.priority), Bound::Unbounded);
        self.by_priority.range(above).any(|(priority, created)| {
            let later = (Bound::Excluded(entry.created_at), Bound::Unbounded);
            created
                .range(later)
                .next()
                .is_some_and(|(at, _)| standing(*priority, *at, self.ageing) < own)
        })
    }

    /// The places of those of `ids` that are pending, in one walk of the
    /// queue down to the last of them: `O(position of the last)`.
    pub fn places_of(
        &self,
        ids: &[JobId],
        gate: &Gate,
        now: DateTime<Utc>,
    ) -> HashMap<JobId, Place> {
        let mut wanted: Vec<Rank> = ids
            .iter()
            .filter_map(|id| self.get(*id))
            .filter(|entry| entry.phase == Phase::Pending)
            .map(|entry| Rank::of(&entry, self.ageing))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut places = HashMap::with_capacity(wanted.len());
        let Some(last) = wanted.last().copied() else {
            return places;
        };
        let mut next = wanted.iter().peekable();
        let mut walk = Walk::new(self, gate, now);
        for rank in self.order.range(..=last) {
            let place = walk.step(rank);
            if next.peek() == Some(&rank) {
                next.next();
                places.insert(rank.id(), place);
            }
        }
        places
    }

    /// Every pending job's place, in the order they start: what
    /// [`queue`](super::queue) answers over the same jobs, in `O(n)`.
    pub fn places(&self, gate: &Gate, now: DateTime<Utc>) -> Vec<Place> {
        let mut walk = Walk::new(self, gate, now);
        self.order.iter().map(|rank| walk.step(rank)).collect()
    }
}

/// A walk down the queue from its head, placing each job it passes.
struct Walk<'a> {
    queue: &'a PendingQueue,
    gate: &'a Gate,
    now: DateTime<Utc>,
    closed: Option<Reason>,
    free: usize,
    position: usize,
    /// The latest submission among the jobs passed.
    latest: Option<DateTime<Utc>>,
}

impl<'a> Walk<'a> {
    fn new(queue: &'a PendingQueue, gate: &'a Gate, now: DateTime<Utc>) -> Walk<'a> {
        Walk {
            queue,
            gate,
            now,
            closed: gate.closed_by(),
            free: queue.free_slots(gate),
            position: 0,
            latest: None,
        }
    }

    fn step(&mut self, rank: &Rank) -> Place {
        let index = self.position;
        self.position += 1;
        let overtaken = self.latest.is_some_and(|at| at > rank.created_at());
        self.latest = self.latest.max(Some(rank.created_at()));
        let admission = if let Some(reason) = &self.closed {
            Admission::Waiting(reason.clone())
        } else if self.free == 0 {
            Admission::Waiting(Reason::ConcurrencyLimit)
        } else if index < self.free {
            Admission::Admitted
        } else if overtaken {
            Admission::Waiting(Reason::QueuedBehindHigherPriority)
        } else {
            Admission::Waiting(Reason::QueuedBehindOlderJobs)
        };
        let effective = self.queue.get(rank.id()).map_or(0, |entry| {
            effective_priority(&entry, self.gate.ageing, self.now)
        });
        Place {
            id: rank.id(),
            position: self.position,
            effective_priority: effective,
            admission,
        }
    }
}

#[cfg(test)]
mod tests;
