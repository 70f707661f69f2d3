//! Stream messages rendered once for every subscriber of a job.
//!
//! Every subscriber of a job receives the same entries; rendering each one
//! per subscriber cost a serialisation (and, for a status, the database
//! reads that complete it) times the number of subscribers. The first
//! subscriber to need an entry renders it; the others wait for that and
//! share the bytes.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::OnceCell;

use crate::job::{Job, JobId};
use crate::store::StreamEntry;

/// Rendered entries kept, newest last; older ones are rendered again if a
/// late subscriber replays them.
const KEPT: usize = 4096;

/// The bytes of rendered entries kept at most: a status carries the task
/// (up to 32 KiB), so entries alone would not bound the memory.
const KEPT_BYTES: usize = 16 * 1024 * 1024;

/// An entry of a job's stream: every subscriber of the job shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RenderKey {
    pub job: JobId,
    pub seq: i64,
}

impl RenderKey {
    pub fn of(job: &Job, entry: &StreamEntry) -> RenderKey {
        RenderKey {
            job: job.id,
            seq: entry.seq,
        }
    }
}

#[derive(Default)]
pub struct SharedRenders {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    cells: HashMap<RenderKey, Arc<OnceCell<Utf8Bytes>>>,
    order: VecDeque<RenderKey>,
    /// The bytes of the rendered entries in `cells`, as each was counted.
    bytes: usize,
}

impl SharedRenders {
    /// The entry at `key` as rendered by the first subscriber that asked;
    /// `render` runs only if nobody has.
    pub async fn get_or_render<F>(&self, key: RenderKey, render: F) -> Utf8Bytes
    where
        F: Future<Output = String>,
    {
        let cell = self.cell(key);
        let mut rendered_here = false;
        let text = cell
            .get_or_init(|| async {
                rendered_here = true;
                Utf8Bytes::from(render.await)
            })
            .await
            .clone();
        if rendered_here {
            self.count(text.as_str().len());
        }
        text
    }

    /// Counts a new rendering's bytes, and forgets the oldest renderings
    /// while there are more than [`KEPT_BYTES`].
    fn count(&self, bytes: usize) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.bytes += bytes;
        while kept.bytes > KEPT_BYTES && kept.order.len() > 1 {
            kept.forget_oldest();
        }
    }

    fn cell(&self, key: RenderKey) -> Arc<OnceCell<Utf8Bytes>> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cell) = kept.cells.get(&key) {
            return cell.clone();
        }
        if kept.order.len() >= KEPT {
            kept.forget_oldest();
        }
        let cell = Arc::new(OnceCell::new());
        kept.cells.insert(key, cell.clone());
        kept.order.push_back(key);
        cell
    }
}

impl Kept {
    fn forget_oldest(&mut self) {
        let Some(oldest) = self.order.pop_front() else {
            return;
        };
        let forgotten = self.cells.remove(&oldest);
        let bytes = forgotten.and_then(|cell| cell.get().map(|text| text.as_str().len()));
        self.bytes = self.bytes.saturating_sub(bytes.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key(seq: i64) -> RenderKey {
        RenderKey {
            job: JobId::new_random(),
            seq,
        }
    }

    #[tokio::test]
    async fn an_entry_is_rendered_once_however_many_subscribers_ask_at_once() {
        let renders = Arc::new(SharedRenders::default());
        let rendered = Arc::new(AtomicUsize::new(0));
        let key = key(7);
        let asking = (0..100).map(|_| {
            let (renders, rendered) = (renders.clone(), rendered.clone());
            tokio::spawn(async move {
                renders
                    .get_or_render(key, async move {
                        rendered.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        "{\"seq\":7}".to_owned()
                    })
                    .await
            })
        });
        for answer in futures::future::join_all(asking).await {
            assert_eq!(answer.unwrap().as_str(), "{\"seq\":7}");
        }
        assert_eq!(rendered.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_renders_kept_hold_a_bounded_number_of_bytes() {
        let renders = SharedRenders::default();
        let large = "x".repeat(1024 * 1024);
        for seq in 0..40 {
            renders
                .get_or_render(key(seq), async { large.clone() })
                .await;
        }
        let kept = renders.kept.lock().unwrap();
        assert!(kept.bytes <= KEPT_BYTES, "{} bytes kept", kept.bytes);
        assert_eq!(kept.cells.len(), KEPT_BYTES / large.len());
    }

    #[tokio::test]
    async fn only_the_newest_renders_are_kept() {
        let renders = SharedRenders::default();
        let oldest = key(0);
        renders
            .get_or_render(oldest, async { "a".to_owned() })
            .await;
        for seq in 1..=KEPT as i64 {
            renders
                .get_or_render(key(seq), async { String::new() })
                .await;
        }
        let again = renders
            .get_or_render(oldest, async { "b".to_owned() })
            .await;
        assert_eq!(again.as_str(), "b", "rendered again once dropped");
        assert!(renders.kept.lock().unwrap().cells.len() <= KEPT);
    }
}
