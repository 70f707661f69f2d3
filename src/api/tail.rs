//! A job's stream from a position on: what the database holds after it,
//! then each entry as it is written, without duplicates or gaps. Both
//! `WS /jobs/{id}/stream` and `GET /jobs/{id}/logs?follow=true` read it.
//!
//! Live entries come with the store's change broadcast (this process's
//! writes carry their entries; other replicas' are relayed once per replica,
//! `store::sql::changes`). An entry that does not follow the last one
//! delivered (appends published out of order, another replica's, a
//! subscriber that fell behind the broadcast) sends the tail back to the
//! database, from the last position it delivered: positions are given under
//! the job's row lock, so everything before a visible position is visible.

use std::collections::VecDeque;

use tokio::sync::broadcast;

use crate::job::JobId;
use crate::store::{Store, StoreError, StreamEntry, StreamEvent, StreamQuery};

/// Entries read from the database at once.
const PAGE: i64 = 500;

/// Where an entry came from: a replay is paced by the reader, live entries
/// by the writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Replay,
    Live,
}

/// One job's stream after a position.
pub struct Tail {
    store: Store,
    job: JobId,
    events: broadcast::Receiver<StreamEvent>,
    /// The last position delivered.
    last: i64,
    backlog: VecDeque<(StreamEntry, Origin)>,
    /// The database may hold entries after `last` not read yet.
    behind: bool,
}

impl Tail {
    /// The stream after `last`. `events` must have been subscribed before
    /// `last` was read (or chosen), so nothing falls between.
    pub fn new(
        store: Store,
        job: JobId,
        events: broadcast::Receiver<StreamEvent>,
        last: i64,
        replay: bool,
    ) -> Tail {
        Tail {
            store,
            job,
            events,
            last,
            backlog: VecDeque::new(),
            behind: replay,
        }
    }

    /// The last position delivered.
    pub fn position(&self) -> i64 {
        self.last
    }

    /// The next entry; `None` once the store's broadcast is closed (the
    /// server stops).
    pub async fn next(&mut self) -> Result<Option<(StreamEntry, Origin)>, StoreError> {
        loop {
            while let Some((entry, origin)) = self.backlog.pop_front() {
                if entry.seq > self.last {
                    self.last = entry.seq;
                    return Ok(Some((entry, origin)));
                }
            }
            if self.behind {
                // Boxed: a read of the database is a large future, and
                // inline it would be part of every subscriber's task all
                // its life (see `stream.rs`).
                Box::pin(self.catch_up()).await?;
                continue;
            }
            match self.events.recv().await {
                Ok(StreamEvent { job, entries }) if job == self.job => match entries.first() {
                    Some(first) if first.seq <= self.last + 1 => self
                        .backlog
                        .extend(entries.iter().map(|entry| (entry.clone(), Origin::Live))),
                    Some(_) => self.behind = true,
                    None => {}
                },
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// Reads a page after the last position delivered.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let query = StreamQuery {
            after: self.last,
            until: None,
            limit: PAGE,
        };
        let page = self.store.stream_entries(self.job, query).await?;
        self.behind = page.len() as i64 == PAGE;
        self.backlog
            .extend(page.into_iter().map(|entry| (entry, Origin::Replay)));
        Ok(())
    }
}
