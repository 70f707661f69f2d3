//! The read view: jobs as the API reads them, kept in memory.
//!
//! A dashboard or a CI poller asks for the same job's status many times
//! between two changes of it; each ask used to cost five queries and a JSON
//! rendering. The view keeps, per job, what those reads need (the job, and on
//! demand what Icarus measured of its agents, its egress and its latest
//! telemetry) and the API's rendering of it, as an informer's cache serves a
//! controller: filled from the database on a miss, and dropped the moment
//! anything it holds changes.
//!
//! The database stays the source of truth; the view only ever forgets:
//!
//! - **A write in this process** drops the job's entry after it commits and
//!   before the write returns, so a read after a write on the same replica
//!   sees it.
//! - **Another replica's write** (PostgreSQL) drops it when its change
//!   notification arrives, typically within milliseconds. While this process
//!   is not listening (before the first listen, or after the listening
//!   connection failed) the view is off and every read goes to the
//!   database; it is emptied when listening starts again, since what was
//!   missed meanwhile is unknown.
//! - **A fill that raced a change** is not kept: a fill takes the entry's
//!   generation before it reads, and stores what it read only if no change
//!   dropped the entry in between. So a stale read never outlives the
//!   request that made it.
//!
//! Memory is bounded: past [`MAX_BYTES`] (an estimate of each entry's size)
//! the entries kept longest are forgotten first.
//!
//! Whole pages of the job list are kept beside the jobs, until any job
//! changes ([`pages`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::OnceCell;

use super::{AgentUsage, EgressAllowance, EgressTraffic, JobFilter, TelemetrySample};
use crate::job::{Job, JobId};

pub mod pages;

use pages::{Page, PageFill, Pages};

/// The most the view keeps, by its estimate of each entry's size.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a cached job's estimate adds to its task and its renderings.
const ENTRY_OVERHEAD: usize = 2048;

/// One job as the view holds it: immutable but for what it memoises, and
/// replaced, never updated, when the job changes.
#[derive(Debug)]
pub struct CachedJob {
    pub job: Job,
    /// What the status and telemetry reads add to the job, read on demand.
    facts: OnceCell<Arc<JobFacts>>,
    /// The API's rendering of the job as a list row.
    row: OnceLock<Bytes>,
    /// The API's rendering of the job's status, with its facts.
    status: OnceLock<Bytes>,
}

/// What the status and telemetry reads show beside the job itself.
#[derive(Debug, Clone, Default)]
pub struct JobFacts {
    /// What Icarus measured of the agents of the job's current attempt.
    pub usage: Vec<AgentUsage>,
    pub egress_traffic: Vec<EgressTraffic>,
    /// Read only when there is traffic to judge against them.
    pub egress_allowances: Vec<EgressAllowance>,
    /// The agents' latest progress report.
    pub reported: Option<TelemetrySample>,
    /// Icarus's latest measurement.
    pub measured: Option<TelemetrySample>,
}

impl CachedJob {
    pub fn new(job: Job) -> CachedJob {
        CachedJob {
            job,
            facts: OnceCell::new(),
            row: OnceLock::new(),
            status: OnceLock::new(),
        }
    }

    /// The job's facts, read with `read` the first time they are asked for.
    pub async fn facts<E, F, Fut>(&self, read: F) -> Result<Arc<JobFacts>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<JobFacts, E>>,
    {
        self.facts
            .get_or_try_init(|| async { read().await.map(Arc::new) })
            .await
            .cloned()
    }

    /// The job's list row, rendered with `render` once.
    pub fn row(&self, render: impl FnOnce(&Job) -> Bytes) -> Bytes {
        self.row.get_or_init(|| render(&self.job)).clone()
    }

    /// The job's status, rendered with `render` once (from the facts that
    /// come with it).
    pub fn status(&self, render: impl FnOnce() -> Bytes) -> Bytes {
        self.status.get_or_init(render).clone()
    }

    /// A guess at what the entry holds, for the view's bound.
    fn estimated_size(&self) -> usize {
        ENTRY_OVERHEAD + 2 * self.job.spec.task.len()
    }
}

/// An entry of the view: the job as last filled, or a fill under way.
#[derive(Debug)]
struct Slot {
    generation: u64,
    cached: Option<Arc<CachedJob>>,
}

#[derive(Debug, Default)]
struct Entries {
    slots: HashMap<JobId, Slot>,
    /// Filled entries, oldest first, to forget past the bound (an id whose
    /// slot was dropped or refilled since is skipped).
    order: VecDeque<(JobId, u64)>,
    bytes: usize,
    pages: Pages,
}

/// The view itself; one per store, shared by its clones.
#[derive(Debug)]
pub struct ReadView {
    entries: Mutex<Entries>,
    generations: AtomicU64,
    /// Whether the view may be trusted: every change reaches it.
    live: AtomicBool,
    max_bytes: usize,
    metrics: ViewCounters,
}

/// Reads the view answered and reads it sent to the database.
#[derive(Debug, Clone, Default)]
pub struct ViewCounters {
    pub hits: Counter,
    pub misses: Counter,
}

/// A fill under way: hand it back with what was read.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    id: JobId,
    generation: u64,
}

impl ReadView {
    /// A view that is live from the start (a store no one else writes to)
    /// or only once [`ReadView::start_listening`] says so.
    pub fn new(live: bool, counters: ViewCounters) -> ReadView {
        ReadView::bounded(live, MAX_BYTES, counters)
    }

    pub fn bounded(live: bool, max_bytes: usize, counters: ViewCounters) -> ReadView {
        ReadView {
            entries: Mutex::default(),
            generations: AtomicU64::new(1),
            live: AtomicBool::new(live),
            max_bytes,
            metrics: counters,
        }
    }

    pub fn counters(&self) -> &ViewCounters {
        &self.metrics
    }

    /// The job as the view holds it, if it does.
    pub fn get(&self, id: JobId) -> Option<Arc<CachedJob>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let cached = self
            .lock()
            .slots
            .get(&id)
            .and_then(|slot| slot.cached.clone());
        match cached {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        };
        cached
    }

    /// Starts filling the job's entry: call before reading the database.
    /// `None` while the view is off.
    pub fn begin_fill(&self, id: JobId) -> Option<Fill> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let mut entries = self.lock();
        let slot = entries.slots.entry(id).or_insert_with(|| Slot {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            cached: None,
        });
        Some(Fill {
            id,
            generation: slot.generation,
        })
    }

    /// Keeps what a fill read, unless the job changed since it began; the
    /// entry to serve the read from either way.
    pub fn finish_fill(&self, fill: Option<Fill>, job: Job) -> Arc<CachedJob> {
        let cached = Arc::new(CachedJob::new(job));
        let Some(fill) = fill else {
            return cached;
        };
        let mut entries = self.lock();
        let Some(slot) = entries.slots.get_mut(&fill.id) else {
            return cached;
        };
        if slot.generation != fill.generation {
            return cached;
        }
        if let Some(kept) = &slot.cached {
            // A concurrent fill of the same generation came first.
            return kept.clone();
        }
        slot.cached = Some(cached.clone());
        entries.bytes += cached.estimated_size();
        entries.order.push_back((fill.id, fill.generation));
        self.forget_beyond_bound(&mut entries);
        cached
    }

    /// A fill that found nothing (or failed) leaves no slot behind.
    pub fn abandon_fill(&self, fill: Option<Fill>) {
        let Some(fill) = fill else { return };
        let mut entries = self.lock();
        if entries
            .slots
            .get(&fill.id)
            .is_some_and(|slot| slot.generation == fill.generation && slot.cached.is_none())
        {
            entries.slots.remove(&fill.id);
        }
    }

    /// What the job's status shows changed: whatever is held of the job, or
    /// being filled, is dropped; its list row did not change.
    pub fn forget(&self, id: JobId) {
        Self::forget_entry(&mut self.lock(), id);
    }

    /// The job itself was created, written or deleted: its entry and every
    /// list page are dropped.
    pub fn job_changed(&self, id: JobId) {
        let mut entries = self.lock();
        Self::forget_entry(&mut entries, id);
        entries.pages.forget();
    }

    fn forget_entry(entries: &mut Entries, id: JobId) {
        if let Some(slot) = entries.slots.remove(&id)
            && let Some(cached) = slot.cached
        {
            entries.bytes -= cached.estimated_size();
        }
    }

    /// The queue's levers changed (a hold, a drain): a pending job's row
    /// on a list page may say something else now.
    pub fn forget_pages(&self) {
        self.lock().pages.forget();
    }

    /// Something that counts for every job changed (an allowance for all
    /// jobs), or changes may have been missed: everything is dropped.
    pub fn forget_all(&self) {
        let mut entries = self.lock();
        entries.slots.clear();
        entries.order.clear();
        entries.bytes = 0;
        entries.pages.forget();
    }

    /// The list page for `filter` as last read, if no job changed since
    /// and it is still fresh (the API asks [`ReadView::page_or_fill`]).
    #[cfg(test)]
    pub fn page(&self, filter: &JobFilter) -> Option<Arc<Page>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let page = self.lock().pages.get(filter);
        if page.is_some() {
            self.metrics.hits.inc();
        }
        page
    }

    /// The list page for `filter`: the kept one, or the one another reader
    /// is making (waited for, [`pages::FILL_WAIT`] at most); else the fill
    /// this reader is to make and hand back ([`ReadView::finish_page`]),
    /// `None` while the view is off.
    pub async fn page_or_fill(&self, filter: &JobFilter) -> Result<Arc<Page>, Option<PageFill>> {
        if !self.live.load(Ordering::Acquire) {
            return Err(None);
        }
        loop {
            let under_way;
            let ended;
            {
                let mut entries = self.lock();
                if let Some(page) = entries.pages.get(filter) {
                    self.metrics.hits.inc();
                    return Ok(page);
                }
                match entries.pages.under_way(filter) {
                    Some(fill) => under_way = fill,
                    None => return Err(Some(entries.pages.begin(filter))),
                }
                // Registered before the lock goes, so its end is not missed.
                ended = under_way.done.notified();
            }
            if tokio::time::timeout(pages::FILL_WAIT, ended).await.is_err() {
                return Err(Some(self.lock().pages.begin(filter)));
            }
        }
    }

    /// Starts reading a list page: call before reading its ids. `None`
    /// while the view is off (the API asks [`ReadView::page_or_fill`]).
    #[cfg(test)]
    pub fn begin_page(&self, filter: &JobFilter) -> Option<PageFill> {
        self.live
            .load(Ordering::Acquire)
            .then(|| self.lock().pages.begin(filter))
    }

    /// Keeps the page a fill read, unless a job changed since it began.
    pub fn finish_page(&self, fill: Option<PageFill>, page: Arc<Page>) {
        if let Some(fill) = fill {
            self.lock().pages.finish(fill, page);
        }
    }

    /// Every change reaches the view from now on: it starts empty, since
    /// what changed while it was off is unknown.
    pub fn start_listening(&self) {
        self.forget_all();
        self.live.store(true, Ordering::Release);
    }

    /// Changes may be missed from now on: the view is off until listening
    /// starts again.
    pub fn stop_listening(&self) {
        self.live.store(false, Ordering::Release);
        self.forget_all();
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// How many jobs the view holds, and its estimate of their size.
    pub fn size(&self) -> (usize, usize) {
        let entries = self.lock();
        let held = entries
            .slots
            .values()
            .filter(|s| s.cached.is_some())
            .count();
        (held, entries.bytes)
    }

    fn forget_beyond_bound(&self, entries: &mut Entries) {
        while entries.bytes > self.max_bytes {
            let Some((id, generation)) = entries.order.pop_front() else {
                break;
            };
            let current = entries
                .slots
                .get(&id)
                .is_some_and(|slot| slot.generation == generation && slot.cached.is_some());
            if current && let Some(slot) = entries.slots.remove(&id) {
                let size = slot.cached.map_or(0, |c| c.estimated_size());
                entries.bytes -= size;
            }
        }
        // Ids dropped by changes stay in `order` until they reach its front;
        // keep it from growing past the entries themselves.
        if entries.order.len() > 2 * entries.slots.len() + 1024 {
            let slots = &entries.slots;
            let kept: VecDeque<(JobId, u64)> = entries
                .order
                .iter()
                .copied()
                .filter(|(id, generation)| {
                    slots
                        .get(id)
                        .is_some_and(|slot| slot.generation == *generation)
                })
                .collect();
            entries.order = kept;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves nothing half-done that a
        // later reader could misread: at worst an entry the bound missed.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
