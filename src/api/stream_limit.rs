//! How many WebSocket streams are open: in total, and per caller (a token's
//! name, `anonymous` with authentication off), so one client cannot hold
//! every stream the server will keep. A stream holds a [`StreamTicket`]
//! while it is open; dropping it frees the place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The counts of open streams, shared by every request.
pub struct StreamLimiter {
    max_total: usize,
    max_per_caller: usize,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_caller: HashMap<String, usize>,
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
}

impl StreamLimiter {
    pub fn new(max_total: usize, max_per_caller: usize) -> Self {
        StreamLimiter {
            max_total: max_total.max(1),
            max_per_caller: max_per_caller.max(1),
            open: Arc::default(),
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
        Ok(StreamTicket {
            caller: caller.to_owned(),
            open: Arc::clone(&self.open),
        })
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
}
