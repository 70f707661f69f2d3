//! Draining one orchestrator before maintenance: from the moment it is
//! asked, this process admits no new job (pending jobs wait with reason
//! `Draining`), while the jobs it already started go on to their end.
//! Per process and not kept: a restart ends it. Shared by the API (which
//! starts and stops it, and shows it) and the controller (which obeys it).

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Whether, and since when, this process is draining.
#[derive(Debug)]
pub struct Drain {
    since: watch::Sender<Option<DateTime<Utc>>>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            since: watch::Sender::new(None),
        }
    }
}

impl Drain {
    /// Starts draining now, or keeps the drain under way; since when it drains.
    pub fn start(&self) -> DateTime<Utc> {
        let now = crate::job::timestamp_now();
        self.since.send_if_modified(|since| {
            let started = since.is_none();
            since.get_or_insert(now);
            started
        });
        self.since().unwrap_or(now)
    }

    /// Stops draining; whether it was.
    pub fn stop(&self) -> bool {
        self.since.send_if_modified(|since| since.take().is_some())
    }

    /// Since when this process drains, if it does.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        *self.since.borrow()
    }

    pub fn is_draining(&self) -> bool {
        self.since().is_some()
    }

    /// Wakes on every start and stop.
    pub fn subscribe(&self) -> watch::Receiver<Option<DateTime<Utc>>> {
        self.since.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_keeps_its_start_until_stopped() {
        let drain = Drain::default();
        assert!(!drain.is_draining());
        let since = drain.start();
        assert_eq!(drain.start(), since);
        assert!(drain.stop());
        assert!(!drain.stop());
        assert_eq!(drain.since(), None);
    }
}
