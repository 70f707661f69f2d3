//! After SQLite failed a write (a read-only, full or failing file), a
//! pooled connection can be left inside a transaction SQLite could not roll
//! back, holding the write lock — and sqlx does not know. Every other
//! writer then waits out its busy timeout and fails as "busy", and whatever
//! that connection writes later stays in a transaction never committed.
//!
//! So for a while after such a failure, each connection returned to the pool
//! is checked: a `BEGIN` it can start (and roll back at once) shows it is
//! outside any transaction and stays; one it cannot start is closed, which
//! releases its locks, and the pool opens a fresh one. Outside that window
//! nothing is checked, so writes pay nothing for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after a failed write released connections are checked: longer
/// than any outage test and than the pool keeps an idle connection busy.
const CHECK_FOR: Duration = Duration::from_secs(300);

/// When the last write failed, in milliseconds since the epoch (0: never).
static LAST_FAILED_WRITE_MS: AtomicU64 = AtomicU64::new(0);

/// Notes that SQLite failed a write: connections are checked from now on.
pub(crate) fn write_failed() {
    LAST_FAILED_WRITE_MS.store(now_ms(), Ordering::Relaxed);
}

/// Whether released connections are checked now (`BEGIN`, then
/// `ROLLBACK`, in the pool's `after_release`: one that cannot begin is
/// closed).
pub(crate) fn checking() -> bool {
    let failed_at = LAST_FAILED_WRITE_MS.load(Ordering::Relaxed);
    failed_at != 0 && now_ms().saturating_sub(failed_at) <= CHECK_FOR.as_millis() as u64
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
