//! What every object Icarus makes in the cluster shares: the labels that
//! say it is ours and whose job it is, and how an API server's answer is
//! read. Used by the Pods' runtime, the claims and the git Pods alike.

use std::collections::BTreeMap;

use crate::job::JobId;
use crate::names::kubernetes::MANAGER;
pub use crate::names::kubernetes::{JOB as JOB_ID, MANAGED_BY};

pub fn job_labels(job: JobId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (JOB_ID.to_owned(), job.to_string()),
    ])
}

/// The HTTP status of an API server's refusal; none for a transport error.
pub fn status_of(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
