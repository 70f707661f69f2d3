//! Which replica reconciles: one abstraction for a lease, two backends.
//!
//! Several `icarus serve` may share one job store. Every one serves the API;
//! exactly one — the holder of a lease — runs the controller and the other
//! leader loops (notifications, the IcarusJob sync). A replica campaigns
//! ([`campaign`]) by asking its [`Lease`] backend to hold the lease every
//! `renew_every`: to acquire it when it is free or expired, to renew it while
//! it is ours. Two backends implement [`Lease`]:
//!
//! - a row in the job store's database ([`sql::StoreLease`]): local mode on
//!   PostgreSQL. Its [`Term`]s carry a [`Fence`], and the leader's store
//!   refuses job writes once the term is over, by the database's clock.
//! - a `coordination.k8s.io` Lease ([`crate::cluster::lease::Elector`]):
//!   Kubernetes mode. No fence: the store and the Lease are apart.
//!
//! Each acquisition starts a new [`Term`] with a version no earlier term had.
//! A leader that cannot renew stops leading on its own clock before its lease
//! can expire on the database's (after `duration - renew_every` from the
//! last renewal it sent), so with the default 8 s lease renewed every 2 s a
//! leader that stalls stops within 6 s, and a standby takes over within 8 s
//! of the last renewal (it sleeps until the expiry it read). Losing the lease
//! stops the leader loops; the API keeps serving and the replica campaigns
//! again. A graceful shutdown releases the lease, so a standby takes over at
//! once.

mod campaign;
pub mod sql;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

pub use campaign::campaign;

use crate::store::{Fence, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the lease in the database cannot be read or written")]
    Store(#[from] StoreError),
    #[error("the Kubernetes Lease cannot be read or written")]
    Kubernetes(#[from] kube::Error),
}

/// One tenure of this replica as leader, from an acquisition of the lease
/// until it is lost or released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The lease's version at the acquisition: every acquisition bumps it,
    /// so no two terms share one.
    pub version: i64,
    /// What the store checks before each of this term's job writes; `None`
    /// when the lease is not in the store (Kubernetes).
    pub fence: Option<Fence>,
}

/// Where this replica stands after a step of its campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// It holds the lease, in this term.
    Leading(Term),
    /// Another replica holds it.
    Following {
        holder: String,
        /// When its lease expires, if the backend knows: the time to try again.
        expires_in: Option<Duration>,
    },
}

/// A lease that one replica at a time holds.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Renews the lease if `held` is the term this replica holds and it has
    /// not expired; otherwise acquires it if it is free or expired. Either
    /// way, a compare-and-swap: two replicas never both come out leading.
    async fn hold(&self, held: Option<&Term>) -> Result<Standing, LeaseError>;

    /// Gives the lease up now, so a standby need not wait for it to expire.
    async fn release(&self, term: &Term) -> Result<(), LeaseError>;
}

/// How long a lease lasts and how often its holder renews it (candidates
/// try as often).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub duration: Duration,
    pub renew_every: Duration,
}

impl LeaseTiming {
    /// How long after sending a renewal the leader may go on believing in
    /// it: the lease's duration, less one renewal period of margin for clock
    /// drift and a write still in flight.
    pub fn trusted_for(&self) -> Duration {
        self.duration.saturating_sub(self.renew_every)
    }
}

/// Whether this replica leads now, and in which term; what the leader loops
/// follow.
#[derive(Debug, Clone)]
pub struct Leadership {
    terms: watch::Receiver<Option<Term>>,
}

impl Leadership {
    /// Leadership decided elsewhere: the sender's `Some(term)` makes this
    /// replica lead (tests play the campaign with it).
    pub fn given(terms: watch::Receiver<Option<Term>>) -> Leadership {
        Leadership { terms }
    }

    /// The term this replica leads in now, if it does.
    pub fn current(&self) -> Option<Term> {
        self.terms.borrow().clone()
    }

    /// Waits until this replica leads; `None` once the campaign has ended
    /// (its last term, if any, is over with it).
    pub async fn next_term(&mut self) -> Option<Term> {
        self.terms.has_changed().ok()?;
        let term = self.terms.wait_for(Option::is_some).await.ok()?;
        term.clone()
    }

    /// Waits until `term` is over: lost, released, replaced by a newer one,
    /// or the campaign ended.
    pub async fn term_over(&mut self, term: &Term) {
        let _ = self.terms.wait_for(|now| now.as_ref() != Some(term)).await;
    }
}

/// How a replica comes to lead.
pub enum Election {
    /// It is the only one (a SQLite file, which serves one process): it
    /// leads from start to shutdown.
    Sole,
    /// It campaigns for the lease in the job store's database.
    StoreLease(LeaseTiming),
    /// It campaigns for this lease.
    Campaign(Arc<dyn Lease>, LeaseTiming),
    /// Decided elsewhere (tests).
    Given(Leadership),
}

/// This process's name as a lease holder: unique per process (host, process
/// id and a random part, so two orchestrators in one test process differ).
pub fn holder_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{}/{}", std::process::id(), &nonce[..8])
}
