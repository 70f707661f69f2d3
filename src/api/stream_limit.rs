//! How many WebSocket streams are open: in total, and per caller (a token's
//! name, `anonymous` with authentication off), so one client cannot hold
//! every stream the server will keep. A stream holds a [`StreamTicket`]
//! while it is open; dropping it frees the place.
//!
//! It also tells when a crowd of streams has left (see
//! [`crate::memory`]): each close is signalled, and
//! [`StreamLimiter::take_departed`] says how many closed since the most
//! that were open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The counts of open streams, shared by every request.
pub struct StreamLimiter {
    max_total: usize,
    max_per_caller: usize,
    open: Arc<Mutex<Open>>,
    closed: Arc<Notify>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_caller: HashMap<String, usize>,
    /// The most streams open at once since [`StreamLimiter::take_departed`]
    /// last counted.
    high_mark: usize,
}

/// Why a stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamRefused {
    /// The server holds as many streams as it will.
    Full { max_total: usize },
    /// This caller holds as many as one caller may.
    CallerFull { max_per_caller: usize },
}

/// One open stream's place; freed when dropped.
pub struct StreamTicket {
    caller: String,
    open: Arc<Mutex<Open>>,
    closed: Arc<Notify>,
}

impl StreamLimiter {
    pub fn new(max_total: usize, max_per_caller: usize) -> Self {
        StreamLimiter {
            max_total: max_total.max(1),
            max_per_caller: max_per_caller.max(1),
            open: Arc::default(),
            closed: Arc::default(),
        }
    }

    /// A place for one more stream of `caller`'s, if there is one.
    pub fn admit(&self, caller: &str) -> Result<StreamTicket, StreamRefused> {
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            return Err(StreamRefused::Full {
                max_total: self.max_total,
            });
        }
        let held = open.by_caller.entry(caller.to_owned()).or_default();
        if *held >= self.max_per_caller {
            return Err(StreamRefused::CallerFull {
                max_per_caller: self.max_per_caller,
            });
        }
        *held += 1;
        open.total += 1;
        open.high_mark = open.high_mark.max(open.total);
        Ok(StreamTicket {
            caller: caller.to_owned(),
            open: Arc::clone(&self.open),
            closed: Arc::clone(&self.closed),
        })
    }

    /// Wakes once a stream closes (or at once, if one closed since the
    /// last wake).
    pub async fn closed(&self) {
        self.closed.notified().await;
    }

    /// How many streams closed since the most were open, if at least
    /// `at_least`; the count starts again from the streams open now.
    pub fn take_departed(&self, at_least: usize) -> Option<usize> {
        let mut open = lock(&self.open);
        let departed = open.high_mark.saturating_sub(open.total);
        if departed < at_least.max(1) {
            return None;
        }
        open.high_mark = open.total;
        Some(departed)
    }
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        open.total = open.total.saturating_sub(1);
        if let Some(held) = open.by_caller.get_mut(&self.caller) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
        drop(open);
        self.closed.notify_one();
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_at_its_limit_is_refused_while_another_is_not() {
        let limiter = StreamLimiter::new(10, 2);
        let _first = limiter.admit("sam").unwrap();
        let _second = limiter.admit("sam").unwrap();
        assert_eq!(
            limiter.admit("sam").err(),
            Some(StreamRefused::CallerFull { max_per_caller: 2 })
        );
        assert!(limiter.admit("ann").is_ok());
    }

    #[test]
    fn the_total_is_a_limit_too_and_a_closed_stream_frees_its_place() {
        let limiter = StreamLimiter::new(2, 5);
        let first = limiter.admit("sam").unwrap();
        let _second = limiter.admit("ann").unwrap();
        assert_eq!(
            limiter.admit("vic").err(),
            Some(StreamRefused::Full { max_total: 2 })
        );
        drop(first);
        assert!(limiter.admit("vic").is_ok());
    }

    #[test]
    fn departures_are_counted_from_the_most_streams_open_and_counted_once() {
        let limiter = StreamLimiter::new(100, 100);
        let mut tickets: Vec<_> = (0..10).map(|_| limiter.admit("sam").unwrap()).collect();
        tickets.truncate(7);
        assert_eq!(limiter.take_departed(4), None, "3 left, fewer than 4");
        tickets.truncate(4);
        assert_eq!(limiter.take_departed(4), Some(6));
        assert_eq!(limiter.take_departed(1), None, "counted already");
        tickets.truncate(1);
        assert_eq!(limiter.take_departed(1), Some(3));
    }

    #[tokio::test]
    async fn a_close_before_anyone_waits_still_wakes_the_next_wait() {
        let limiter = StreamLimiter::new(10, 10);
        drop(limiter.admit("sam").unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(5), limiter.closed())
            .await
            .expect("the close was kept for the next wait");
    }
}
