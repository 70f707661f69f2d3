//! Talking to Kubernetes, for every adapter that does: the client's retry
//! policy, the `IcarusJob` resource ([`crd`]), what every object Icarus
//! makes shares ([`objects`]), and leader election ([`lease`]).
//!
//! The adapters themselves live with the port they implement:
//! [`crate::runtime::kubernetes`] (agents as Pods),
//! [`crate::store::kubernetes`] (IcarusJobs in front of the store) and
//! [`crate::source::pods`] (git steps as Pods).

pub mod crd;
pub mod lease;
#[cfg(test)]
pub(crate) mod mock_api;
pub mod objects;

use crate::job::JobId;

/// A client for `config` that reports a 429, 503 or 504 at once instead of
/// retrying it. kube's default (15 tries, waits doubling to minutes) would
/// hold a REST caller far past any proxy's patience; everything else here
/// tries again by itself (the controller requeues with backoff, watches
/// restart, the Lease is renewed every few seconds).
pub fn client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    kube::Client::try_from(config)
}

/// This replica's name: `POD_NAME`, else the host name, else a random one.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| JobId::new_random().to_string())
}
