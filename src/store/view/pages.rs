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
//! once, as a job's change does.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::store::JobFilter;

/// The most bytes of pages kept; past it the pages are dropped and kept
/// again as they are read.
pub const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// The most pages kept (different filters, limits and cursors).
pub const MAX_PAGES: usize = 1024;

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

    fn is_fresh(&self) -> bool {
        self.stale_at
            .is_none_or(|stale_at| Instant::now() < stale_at)
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

/// A page's fill under way: hand it back with what was read.
#[derive(Debug, Clone)]
pub struct PageFill {
    filter: JobFilter,
    generation: u64,
}

/// The pages kept, and the generation of the jobs they were read at.
#[derive(Debug, Default)]
pub(super) struct Pages {
    generation: u64,
    kept: HashMap<JobFilter, Arc<Page>>,
    bytes: usize,
}

impl Pages {
    pub(super) fn get(&self, filter: &JobFilter) -> Option<Arc<Page>> {
        self.kept
            .get(filter)
            .filter(|page| page.is_fresh())
            .cloned()
    }

    pub(super) fn begin(&self, filter: &JobFilter) -> PageFill {
        PageFill {
            filter: filter.clone(),
            generation: self.generation,
        }
    }

    /// Keeps `page` if no job changed since `fill` began.
    pub(super) fn finish(&mut self, fill: PageFill, page: Arc<Page>) {
        if fill.generation != self.generation || page.size() > MAX_PAGE_BYTES {
            return;
        }
        if self.bytes + page.size() > MAX_PAGE_BYTES || self.kept.len() >= MAX_PAGES {
            self.forget();
        }
        self.bytes += page.size();
        if let Some(replaced) = self.kept.insert(fill.filter, page) {
            self.bytes -= replaced.size();
        }
    }

    /// A job or the queue's levers changed: every page may be stale.
    pub(super) fn forget(&mut self) {
        self.generation += 1;
        self.kept.clear();
        self.bytes = 0;
    }
}
