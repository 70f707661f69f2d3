//! The API calls on a job's claims (its workspace and its repository, see
//! [`JobClaim`]), shared by the agents' runtime and the git Pods.
//!
//! One place creates them, so both kinds are made the same way (size,
//! storage class, labels, owner), and one place says what a Pod waiting on
//! a vanished claim is told. A Pod created before its claim stays Pending
//! (`persistentvolumeclaim not found`) until a deadline fails the job for
//! the wrong reason, so every caller ensures a Pod's claims before the Pod.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use super::workloads::{JobClaim, WorkloadSettings, claim};
use crate::cluster::objects::{job_labels, status_of};
use crate::job::JobId;

/// A namespace's claims, made with the configured size and storage class.
#[derive(Clone)]
pub struct Claims {
    api: Api<PersistentVolumeClaim>,
    settings: WorkloadSettings,
}

impl Claims {
    pub fn new(api: Api<PersistentVolumeClaim>, settings: WorkloadSettings) -> Self {
        Claims { api, settings }
    }

    pub fn api(&self) -> &Api<PersistentVolumeClaim> {
        &self.api
    }

    /// Creates the job's `which` claim, labelled with the job and owned by
    /// `owners`, unless it exists (a 409 is success: it was made before).
    pub async fn ensure(
        &self,
        job: JobId,
        which: JobClaim,
        owners: Option<Vec<OwnerReference>>,
    ) -> Result<(), kube::Error> {
        let metadata = ObjectMeta {
            name: Some(which.name(job)),
            labels: Some(job_labels(job)),
            owner_references: owners,
            ..ObjectMeta::default()
        };
        let wanted = claim(metadata, &self.settings);
        match self.api.create(&PostParams::default(), &wanted).await {
            Ok(_) => Ok(()),
            Err(error) if status_of(&error) == Some(409) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Deletes the job's `which` claim; one that is gone already is fine.
    pub async fn delete(&self, job: JobId, which: JobClaim) -> Result<(), kube::Error> {
        match self
            .api
            .delete(&which.name(job), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if status_of(&error) == Some(404) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Why a Pod waiting on the job's `which` claim can never start, if it
    /// cannot: the claim is gone or being deleted (the scheduler refuses
    /// such Pods). `who` names the Pod's kind in the message.
    pub async fn gone(
        &self,
        job: JobId,
        which: JobClaim,
        who: &str,
    ) -> Result<Option<String>, kube::Error> {
        let name = which.name(job);
        let found = self.api.get_opt(&name).await?;
        if found.is_some_and(|c| c.metadata.deletion_timestamp.is_none()) {
            return Ok(None);
        }
        Ok(Some(format!(
            "the {} claim {name} was deleted: {who} cannot start",
            which.what()
        )))
    }
}
