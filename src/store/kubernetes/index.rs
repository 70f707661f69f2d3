//! The IcarusJobs this replica has seen, by job id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::cluster::crd::IcarusJob;
use crate::job::JobId;

/// The IcarusJobs seen, by job id: what the store→resource direction patches,
/// and whom [`KubeRuntime`](crate::runtime::kubernetes::KubeRuntime) makes the owner of a
/// job's Pods and claim (so deleting the resource deletes them).
#[derive(Clone, Default)]
pub struct ResourceIndex(Arc<Mutex<HashMap<JobId, IcarusJob>>>);

impl ResourceIndex {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, IcarusJob>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn forget(&self, id: JobId) {
        self.map().remove(&id);
    }

    pub fn get(&self, id: JobId) -> Option<IcarusJob> {
        self.map().get(&id).cloned()
    }

    pub fn remember(&self, id: JobId, resource: IcarusJob) {
        self.map().insert(id, resource);
    }

    /// The name of the job's resource, if this replica watched it.
    pub fn name_of(&self, id: JobId) -> Option<String> {
        self.map().get(&id)?.metadata.name.clone()
    }

    /// The owner reference to the job's resource, if it came from one.
    pub fn owner_of(&self, id: JobId) -> Option<OwnerReference> {
        self.map().get(&id)?.controller_owner_ref(&())
    }
}
