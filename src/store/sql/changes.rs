//! Changes across processes: what another replica wrote, into this one's
//! change broadcast.
//!
//! In one process every write is broadcast as a [`StoreEvent`] (it wakes the
//! controller, feeds the WebSocket streams). Several `icarus serve` on one
//! PostgreSQL need the same across processes: a job spawned through a
//! standby's API must wake the leader's controller now, not at the next
//! resync, and a standby's stream must see the leader's transitions. So on
//! PostgreSQL each job write and agent report also sends a `NOTIFY` on
//! [`CHANNEL`] in its own transaction (delivered only if it commits), naming
//! the writing store, and [`Store::relay_changes`] `LISTEN`s and rebroadcasts
//! the others' writes as this process's own events. Notifications sent
//! while the listening connection was down are lost: each time it listens
//! (again), the store says so ([`Store::gaps`]), and whoever keeps a view
//! of the changes reads the database again. SQLite serves one process and
//! needs none of this.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio_util::sync::CancellationToken;

use super::{Pool, Store};
use crate::job::JobId;
use crate::store::StoreEvent;

/// The channel every replica's writes are announced on.
pub const CHANNEL: &str = "icarus_changes";

/// How long to wait before listening again after the connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What a notification says was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// A job was created or written.
    Job,
    /// An agent reported its outcome.
    Report,
    /// Positions `first..=last` of the job's stream were written.
    Stream { first: i64, last: i64 },
    /// What the job's status shows beside the job changed: its agents'
    /// usage, egress or telemetry.
    Facts,
    /// A person allowed the job's agents a destination: what the egress
    /// proxy remembers of their lists is stale, as is the job's status.
    Allowance,
    /// What every job's status shows changed: an allowance for all jobs.
    /// Its payload names no job.
    Everyone,
}

/// The job an [`Change::Everyone`] is announced with: none in particular.
pub(super) const NO_JOB: &str = "*";

/// `origin:kind:job`, the notification's payload; a stream's range follows
/// the job (`origin:stream:job:first:last`).
pub(super) fn payload(origin: &str, change: Change, job: JobId) -> String {
    match change {
        Change::Job => format!("{origin}:job:{job}"),
        Change::Report => format!("{origin}:report:{job}"),
        Change::Stream { first, last } => format!("{origin}:stream:{job}:{first}:{last}"),
        Change::Facts => format!("{origin}:facts:{job}"),
        Change::Allowance => format!("{origin}:allowance:{job}"),
        Change::Everyone => format!("{origin}:everyone:{NO_JOB}"),
    }
}

/// The origin, the change, and the job it names (none for
/// [`Change::Everyone`]).
fn parse_payload(payload: &str) -> Option<(&str, Change, Option<JobId>)> {
    let mut parts = payload.split(':');
    let origin = parts.next()?;
    let kind = parts.next()?;
    let job = parts.next()?;
    if kind == "everyone" {
        return (job == NO_JOB && parts.next().is_none()).then_some((
            origin,
            Change::Everyone,
            None,
        ));
    }
    let job = job.parse().ok()?;
    let change = match kind {
        "job" => Change::Job,
        "report" => Change::Report,
        "facts" => Change::Facts,
        "allowance" => Change::Allowance,
        "stream" => Change::Stream {
            first: parts.next()?.parse().ok()?,
            last: parts.next()?.parse().ok()?,
        },
        _ => return None,
    };
    parts
        .next()
        .is_none()
        .then_some((origin, change, Some(job)))
}

/// A name for one connected store: its own notifications are not relayed back.
pub(super) fn new_origin() -> Arc<str> {
    uuid::Uuid::new_v4().simple().to_string().into()
}

/// Announces a change in the write's transaction, on PostgreSQL only.
macro_rules! announce {
    ($store:expr, $tx:expr, $change:expr, $job:expr) => {
        if $store.announces_changes() {
            let payload = $crate::store::sql::changes::payload(&$store.origin, $change, $job);
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind($crate::store::sql::changes::CHANNEL)
                .bind(payload)
                .execute(&mut *$tx)
                .await?;
        }
    };
}
pub(super) use announce;

impl Store {
    /// Whether writes are announced to other processes (PostgreSQL).
    pub(super) fn announces_changes(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// On PostgreSQL, the loop that rebroadcasts other processes' writes as
    /// this store's events, until `shutdown`; `None` on SQLite.
    pub fn relay_changes(
        &self,
        shutdown: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let Pool::Postgres(pool) = &self.pool else {
            return None;
        };
        Some(relay(self.clone(), pool.clone(), shutdown))
    }

    /// Rebroadcasts one notification, unless it is this store's own.
    async fn relay_one(&self, payload: &str) {
        let Some((origin, change, job)) = parse_payload(payload) else {
            tracing::warn!(payload, "an unreadable change notification was ignored");
            return;
        };
        if origin == &*self.origin {
            return;
        }
        let Some(job) = job else {
            // An allowance for every job.
            self.view.forget_all();
            self.allowance_heard();
            return;
        };
        match change {
            Change::Everyone => {
                self.view.forget_all();
                self.allowance_heard();
            }
            Change::Allowance => {
                self.view.forget(job);
                self.allowance_heard();
            }
            Change::Facts => self.view.forget(job),
            Change::Report => self.publish(StoreEvent::AgentReported(job)),
            Change::Stream { first, last } => self.relay_stream(job, first, last).await,
            Change::Job => self.relay_job(job).await,
        }
    }

    /// Another replica wrote the job: what is held of it is stale, and this
    /// process's subscribers hear of its new version.
    async fn relay_job(&self, job: JobId) {
        self.view.job_changed(job);
        match self.get_job(job).await {
            Ok(Some(job)) => self.publish(StoreEvent::JobWritten(Arc::new(job))),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%job, error = %crate::errors::error_chain(&error), "a job another replica wrote could not be read");
                self.gap();
            }
        }
    }
}

async fn relay(store: Store, pool: PgPool, shutdown: CancellationToken) {
    loop {
        if let Err(error) = listen(&store, &pool, &shutdown).await {
            tracing::warn!(error = %crate::errors::error_chain(&error), "listening for other replicas' changes failed; listening again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_AFTER) => {}
        }
    }
}

/// Relays notifications until `shutdown` or the connection's loss (`Ok`),
/// or a failure (`Err`).
async fn listen(store: &Store, pool: &PgPool, shutdown: &CancellationToken) -> sqlx::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    store.view.start_listening();
    // What was written before now, while nobody listened, is not relayed.
    store.gap();
    store.allowance_heard();
    let listened = relay_until_lost(store, &mut listener, shutdown).await;
    store.view.stop_listening();
    listened
}

/// Relays notifications until `shutdown` or until the connection is lost
/// (`Err` if it failed): whatever is announced after that is missed.
async fn relay_until_lost(
    store: &Store,
    listener: &mut PgListener,
    shutdown: &CancellationToken,
) -> sqlx::Result<()> {
    loop {
        let notification = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            notification = listener.try_recv() => notification?,
        };
        match notification {
            Some(notification) => store.relay_one(notification.payload()).await,
            // The connection was lost: listen again on a new one, and say
            // what was missed meanwhile.
            None => {
                tracing::warn!(
                    "the connection for other replicas' changes was lost; listening again"
                );
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_as_what_was_announced() {
        let job = JobId::new_random();
        let text = payload("origin-1", Change::Report, job);
        assert_eq!(
            parse_payload(&text),
            Some(("origin-1", Change::Report, Some(job)))
        );
        assert_eq!(parse_payload("origin:bogus:x"), None);
        let stream = Change::Stream { first: 3, last: 7 };
        let text = payload("o", stream, job);
        assert_eq!(parse_payload(&text), Some(("o", stream, Some(job))));
        assert_eq!(parse_payload(&format!("o:job:{job}:1")), None);
        let text = payload("o", Change::Facts, job);
        assert_eq!(parse_payload(&text), Some(("o", Change::Facts, Some(job))));
        let text = payload("o", Change::Allowance, job);
        assert_eq!(
            parse_payload(&text),
            Some(("o", Change::Allowance, Some(job)))
        );
        let text = payload("o", Change::Everyone, job);
        assert_eq!(parse_payload(&text), Some(("o", Change::Everyone, None)));
        assert_eq!(parse_payload("o:everyone:x"), None);
    }
}
