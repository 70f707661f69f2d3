//! The lease as a row of the job store's database (local mode on
//! PostgreSQL): the queries are the store's ([`crate::store::sql::lease`]);
//! here they become a [`Lease`] whose terms fence the leader's writes.

use std::time::Duration;

use async_trait::async_trait;

use super::{Lease, LeaseError, Standing, Term};
use crate::store::{Fence, Store};

/// The lease local-mode replicas campaign for.
pub const LEASE_NAME: &str = "icarus-controller";

/// Lease [`LEASE_NAME`] in `store`'s database, campaigned for as `holder`.
pub struct StoreLease {
    store: Store,
    holder: String,
    duration: Duration,
}

impl StoreLease {
    pub fn new(store: Store, holder: String, duration: Duration) -> StoreLease {
        StoreLease {
            store,
            holder,
            duration,
        }
    }

    fn term(&self, version: i64) -> Term {
        Term {
            version,
            fence: Some(Fence {
                lease: LEASE_NAME.to_owned(),
                holder: self.holder.clone(),
                version,
            }),
        }
    }
}

#[async_trait]
impl Lease for StoreLease {
    async fn hold(&self, held: Option<&Term>) -> Result<Standing, LeaseError> {
        let store = &self.store;
        if let Some(term) = held {
            let renewed = store
                .renew_lease(LEASE_NAME, &self.holder, term.version, self.duration)
                .await?;
            if renewed {
                return Ok(Standing::Leading(term.clone()));
            }
        }
        if let Some(version) = store
            .acquire_lease(LEASE_NAME, &self.holder, self.duration)
            .await?
        {
            return Ok(Standing::Leading(self.term(version)));
        }
        // Held by another (or taken between the two statements): wait for
        // its expiry; a lease gone again meanwhile is tried at once.
        let lease = store.lease(LEASE_NAME).await?;
        Ok(Standing::Following {
            holder: lease
                .as_ref()
                .map_or_else(String::new, |lease| lease.holder.clone()),
            expires_in: Some(lease.map_or(Duration::ZERO, |lease| lease.expires_in)),
        })
    }

    async fn release(&self, term: &Term) -> Result<(), LeaseError> {
        self.store
            .release_lease(LEASE_NAME, &self.holder, term.version)
            .await?;
        Ok(())
    }
}
