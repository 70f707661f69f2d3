//! Whole list pages, kept until any job changes.
//!
//! Dashboards and CI pollers read the same page of `GET /jobs` over and over
//! (the dashboard every 3 s per open tab) while nothing changes. Each read
//! used to ask the database for the page's ids, look up every row in the
//! view and concatenate them. A page here is the answer itself, shared by
//! every reader until a job is created, written or deleted anywhere (a
//! change to what a job's status shows beside it — usage, egress,
//! telemetry — does not change its row, so it keeps the pages).
//!
//! The same rule as the jobs' entries makes it safe: a fill takes the
//! generation before it reads, and a page is kept only if no change came in
//! between, so a stale page never outlives the request that made it. The
//! pages go whenever the view stops or starts listening.
//!
//! Rows whose content moves without a write of their job (a pending job's
//! place in the queue, its reason under a hold or a busy host, its
//! estimate) make a page that is kept for a while only
//! ([`Page::fresh_for`]): whoever made it says how long. A change of the
//! queue's levers on this replica (a hold, a drain) forgets every page at
//! once, as a job's change does. Once such a page's time is up, one reader
//! makes it again while the others are still answered the page as it was
//! (for at most [`REMAKE_WAIT`]): at 64 readers, all making the same page
//! at once every second was most of their slowest answers.
//!
//! For the same reason a page is made by one reader at a time: readers that
//! find the page being made wait for it ([`PageFill`] marks it under way
//! until it is handed back or dropped) instead of each reading the same
//! 1,000 jobs, for at most [`FILL_WAIT`]. 64 readers of a page nobody had
//! made yet (the first reads, or the reads after a job changed) made it 64
//! times at once: p99 700 ms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use bytes::Bytes;

use crate::store::JobFilter;

/// The most bytes of pages kept; past it the pages are dropped and kept
/// again as they are read.
pub const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// The most pages kept (different filters, limits and cursors).
pub const MAX_PAGES: usize = 1024;

/// How long a page past its time is still answered while one reader makes
/// it again; after that, the next reader makes it too (the first may have
/// failed).
pub const REMAKE_WAIT: Duration = Duration::from_secs(1);

/// How long a reader waits for another's fill of the page it wants before
/// making the page itself.
pub const FILL_WAIT: Duration = Duration::from_secs(2);

/// A page of the job list as the API answers it.
#[derive(Debug)]
pub struct Page {
    /// The JSON array of the page's rows.
    pub body: Bytes,
    /// The next page's address, when there may be one.
    pub next: Option<String>,
    /// The body as the API encodes it for a client that asks (compressed),
    /// made by the first such reader of a kept page and shared after.
    encoded: OnceLock<Bytes>,
    /// When the page is stale even if no job changed; never, if `None`.
    stale_at: Option<Instant>,
}

impl Page {
    /// A page that stays right until a job changes.
    pub fn new(body: Bytes, next: Option<String>) -> Page {
        Page {
            body,
            next,
            encoded: OnceLock::new(),
            stale_at: None,
        }
    }

    /// A page that is also stale once `fresh` has passed.
    pub fn fresh_for(body: Bytes, next: Option<String>, fresh: Duration) -> Page {
        Page {
            stale_at: Some(Instant::now() + fresh),
            ..Page::new(body, next)
        }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.stale_at.is_none_or(|stale_at| now < stale_at)
    }

    /// The body encoded with `encode`, once per page.
    pub fn encoded(&self, encode: impl FnOnce(&[u8]) -> Bytes) -> Bytes {
        self.encoded.get_or_init(|| encode(&self.body)).clone()
    }

    /// The page's size for the bound: its body, counted twice so that an
    /// encoding made later (smaller than the body) is inside it.
    fn size(&self) -> usize {
        2 * self.body.len() + self.next.as_ref().map_or(0, String::len)
    }
}

/// A page's fill under way: hand it back with what was read. Dropped,
/// kept or not, it wakes the readers waiting for it.
#[derive(Debug)]
pub struct PageFill {
    filter: JobFilter,
    generation: u64,
    under_way: Arc<UnderWay>,
}

/// What readers waiting for a fill watch.
#[derive(Debug, Default)]
pub(super) struct UnderWay {
    ended: AtomicBool,
    pub(super) done: Notify,
}

impl Drop for PageFill {
    fn drop(&mut self) {
        self.under_way.ended.store(true, Ordering::Release);
        self.under_way.done.notify_waiters();
    }
}

/// The pages kept, and the generation of the jobs they were read at.
#[derive(Debug, Default)]
pub(super) struct Pages {
    generation: u64,
    kept: HashMap<JobFilter, Arc<Page>>,
    bytes: usize,
    /// Pages past their time being made again, since when.
    remaking: HashMap<JobFilter, Instant>,
    /// The fills under way, one a page at most.
    filling: HashMap<JobFilter, Arc<UnderWay>>,
}

impl Pages {
    /// The page kept for `filter`; `None` for the reader that is to make it
    /// (again).
    pub(super) fn get(&mut self, filter: &JobFilter) -> Option<Arc<Page>> {
        let page = self.kept.get(filter)?;
        let now = Instant::now();
        if page.is_fresh(now) {
            return Some(page.clone());
        }
        match self.remaking.get(filter) {
            Some(since) if now.duration_since(*since) < REMAKE_WAIT => Some(page.clone()),
            _ => {
                self.remaking.insert(filter.clone(), now);
                None
            }
        }
    }

    /// Starts a fill of `filter`'s page; readers who come meanwhile wait
    /// for it ([`Pages::under_way`]).
    pub(super) fn begin(&mut self, filter: &JobFilter) -> PageFill {
        // A fill given up (its read failed) stays listed, ended, until the
        // jobs change; readers asking for ever new pages meanwhile must not
        // grow the list without end.
        if self.filling.len() >= MAX_PAGES {
            self.filling
                .retain(|_, under_way| !under_way.ended.load(Ordering::Acquire));
        }
        let under_way = Arc::new(UnderWay::default());
        self.filling.insert(filter.clone(), under_way.clone());
        PageFill {
            filter: filter.clone(),
            generation: self.generation,
            under_way,
        }
    }

    /// The fill of `filter`'s page under way since the jobs last changed.
    pub(super) fn under_way(&self, filter: &JobFilter) -> Option<Arc<UnderWay>> {
        self.filling
            .get(filter)
            .filter(|under_way| !under_way.ended.load(Ordering::Acquire))
            .cloned()
    }

    /// Keeps `page` if no job changed since `fill` began.
    pub(super) fn finish(&mut self, fill: PageFill, page: Arc<Page>) {
        if self
            .filling
            .get(&fill.filter)
            .is_some_and(|under_way| Arc::ptr_eq(under_way, &fill.under_way))
        {
            self.filling.remove(&fill.filter);
        }
        if fill.generation != self.generation || page.size() > MAX_PAGE_BYTES {
            return;
        }
        if self.bytes + page.size() > MAX_PAGE_BYTES || self.kept.len() >= MAX_PAGES {
            self.forget();
        }
        self.bytes += page.size();
        self.remaking.remove(&fill.filter);
        if let Some(replaced) = self.kept.insert(fill.filter.clone(), page) {
            self.bytes -= replaced.size();
        }
    }

    /// A job or the queue's levers changed: every page may be stale.
    pub(super) fn forget(&mut self) {
        self.generation += 1;
        self.kept.clear();
        self.remaking.clear();
        self.filling.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page after a job of its own: a filter no reader asked for before.
    fn another_page() -> JobFilter {
        JobFilter {
            phase: None,
            project_id: None,
            limit: 50,
            after: Some(crate::job::JobId::new_random()),
        }
    }

    #[test]
    fn fills_given_up_for_ever_new_pages_are_not_held_without_end() {
        let mut pages = Pages::default();
        for _ in 0..3 * MAX_PAGES {
            drop(pages.begin(&another_page()));
        }
        assert!(pages.filling.len() <= MAX_PAGES, "{}", pages.filling.len());
    }
}
