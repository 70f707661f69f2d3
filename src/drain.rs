//! Draining one orchestrator (a replica) before maintenance: from the
//! moment it is asked, that replica admits no new job (pending jobs wait
//! with reason `Draining`), while the jobs it already started go on to
//! their end. Kept in the database, a `replica_drains` row keyed by the
//! replica's name (`orchestrator.replica_name`, by default the host name),
//! so it lasts across the replica's restarts until an admin resumes it.
//!
//! The row is the truth: admission reads it at every decision (with the
//! hold, in one read), and so do the views. [`Drain`] mirrors this
//! replica's row in memory for the controller's wake-ups: read from the
//! database at start, before any controller runs; on drain and resume
//! written after the row (a crash in between leaves the row, which the
//! next start reads); and brought in line by every admission's read (a
//! request cancelled between the two, another replica's API resuming this
//! one). So no moment exists at which this replica admits while its row
//! says it is drained. Shared by the API (which drains, resumes and shows)
//! and the controller (which obeys).

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::store::{ReplicaDrain, Store, StoreError};

/// This replica's drain as last read or written: whether, and since when.
#[derive(Debug)]
pub struct Drain {
    replica: String,
    since: watch::Sender<Option<DateTime<Utc>>>,
}

impl Drain {
    /// The drain of the replica named `replica`, not read yet (see [`Drain::load`]).
    pub fn new(replica: String) -> Drain {
        Drain {
            replica,
            since: watch::Sender::new(None),
        }
    }

    /// This replica's name, which its row is kept under.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Reads this replica's row: at start, before its controller's first
    /// admission.
    pub async fn load(&self, store: &Store) -> Result<Option<ReplicaDrain>, StoreError> {
        let drain = store.queue_levers(&self.replica).await?.drain;
        self.observe(drain.as_ref());
        Ok(drain)
    }

    /// Drains this replica on behalf of `by`: the row first, then memory.
    /// A replica drained already keeps its first drain, which is returned.
    pub async fn start(&self, store: &Store, by: &str) -> Result<ReplicaDrain, StoreError> {
        let wanted = ReplicaDrain {
            replica: self.replica.clone(),
            drained_by: by.to_owned(),
            drained_at: crate::job::timestamp_now(),
        };
        let drain = store.drain_replica(&wanted).await?;
        self.observe(Some(&drain));
        Ok(drain)
    }

    /// Ends this replica's drain: the row first, then memory; whether it
    /// was drained.
    pub async fn stop(&self, store: &Store) -> Result<bool, StoreError> {
        let was_drained = store.resume_replica(&self.replica).await?;
        self.observe(None);
        Ok(was_drained)
    }

    /// What a read of this replica's row found (`drain` of another replica
    /// is ignored); subscribers wake when it changes.
    pub fn observe(&self, drain: Option<&ReplicaDrain>) {
        if drain.is_some_and(|drain| drain.replica != self.replica) {
            return;
        }
        let read = drain.map(|drain| drain.drained_at);
        self.since.send_if_modified(|since| {
            let changed = *since != read;
            *since = read;
            changed
        });
    }

    /// Since when this replica drains, as last read or written.
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

    fn drain_of(replica: &str) -> ReplicaDrain {
        ReplicaDrain {
            replica: replica.to_owned(),
            drained_by: "root".to_owned(),
            drained_at: crate::job::timestamp_now(),
        }
    }

    #[test]
    fn a_drain_follows_what_was_read_of_its_own_replica_only() {
        let drain = Drain::new("icarus-0".to_owned());
        let mut woken = drain.subscribe();
        assert!(!drain.is_draining());
        let read = drain_of("icarus-0");
        drain.observe(Some(&read));
        assert_eq!(drain.since(), Some(read.drained_at));
        assert!(woken.has_changed().unwrap());
        woken.mark_unchanged();
        drain.observe(Some(&read));
        assert!(!woken.has_changed().unwrap(), "the same read wakes nobody");
        drain.observe(Some(&drain_of("icarus-1")));
        assert_eq!(drain.since(), Some(read.drained_at), "another's row");
        drain.observe(None);
        assert!(!drain.is_draining());
        assert!(woken.has_changed().unwrap());
    }
}
