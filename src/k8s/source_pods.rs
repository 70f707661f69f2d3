//! [`SourceControl`] in Kubernetes mode: each checkout, diff and publish runs
//! as a short-lived Pod on the job's workspace claim.
//!
//! The orchestrator cannot read a claim; a Pod that mounts it can. Each Pod
//! runs `icarus source-step` from the orchestrator's own image — the same
//! `LocalGit` code as local mode — and its last output line is the outcome.
//! Pods are named per job and step (`icarus-<job>-git-<step>`): after a crash
//! the next attempt adopts the Pod that exists and reads its result, and a
//! Pod is deleted once its result is read, so a retried publish runs anew.
//! The reconcile that asked waits for the Pod (its deadline is
//! `kubernetes.git_timeout_seconds`); other jobs go on in other workers.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, LogParams, PostParams};

use super::observe::{terminated, unstartable};
use super::runtime::{claim_name, job_labels};
use super::sync::Seen;
use super::workloads::{WorkloadSettings, source_pod};
use crate::job::{JobId, JobSource};
use crate::source::step::{SourceStep, StepOutcome};
use crate::source::{PublishRequest, Published, Result, Snapshot, SourceControl, SourceError};

/// How often a running git Pod is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Time for scheduling and pulling the image, beyond the Pod's own deadline.
const SCHEDULING_GRACE: Duration = Duration::from_secs(120);
/// The outcome is the last line; a diff is at most a few MiB.
const OUTPUT_LIMIT_BYTES: i64 = 8 * 1024 * 1024;

pub struct PodSourceControl {
    pods: Api<Pod>,
    /// The IcarusJobs jobs came from: the owners of their git Pods.
    owners: Seen,
    settings: WorkloadSettings,
}

impl PodSourceControl {
    pub fn new(pods: Api<Pod>, owners: Seen, settings: WorkloadSettings) -> Self {
        PodSourceControl {
            pods,
            owners,
            settings,
        }
    }

    /// Runs `step` in a Pod (or adopts the one a previous run started),
    /// waits for it, reads its outcome and deletes it.
    async fn run(&self, job: JobId, step: SourceStep) -> Result<StepOutcome> {
        let name = format!("icarus-{job}-git-{}", step.name());
        let mut labels = job_labels(job);
        labels.insert("icarus.dev/step".to_owned(), step.name().to_owned());
        // Owned like the job's other objects; not created before its owner is known.
        let owner = self.owners.owner_of(job).ok_or_else(|| {
            SourceError::Transient(format!("the IcarusJob of job {job} has not been seen yet"))
        })?;
        let metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        };
        let pod = source_pod(metadata, &claim_name(job), job, &step, &self.settings);
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => tracing::info!(%job, step = step.name(), pod = %name, "git Pod started"),
            Err(error) if status_of(&error) == Some(409) => {
                tracing::info!(%job, pod = %name, "git Pod adopted");
            }
            Err(error) => return Err(unreachable_api("create the git Pod", &error)),
        }
        let finished = self.wait(&name).await;
        let output = match &finished {
            // A small outcome is in the termination message; a diff may be
            // too big for it, and is read from the output.
            Ok((_, Some(message))) if StepOutcome::from_output(message).is_some() => {
                message.clone()
            }
            Ok(_) => self.output(&name).await,
            Err(_) => String::new(),
        };
        self.delete(&name).await;
        let (succeeded, _) = finished?;
        match StepOutcome::from_output(&output) {
            Some(outcome) => Ok(outcome),
            None if succeeded => Err(SourceError::Transient(format!(
                "the git Pod {name} gave no outcome; its output ended: {}",
                last_lines(&output)
            ))),
            None => Err(SourceError::Transient(format!(
                "the git Pod {name} failed: {}",
                last_lines(&output)
            ))),
        }
    }

    /// Waits until the Pod finishes: whether it succeeded and its termination
    /// message, or why it never will finish.
    async fn wait(&self, name: &str) -> Result<(bool, Option<String>)> {
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(self.settings.git_timeout_seconds)
            + SCHEDULING_GRACE;
        loop {
            let pod = self
                .pods
                .get_opt(name)
                .await
                .map_err(|e| unreachable_api("read the git Pod", &e))?
                .ok_or_else(|| SourceError::Transient(format!("the git Pod {name} disappeared")))?;
            match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Succeeded") => return Ok((true, termination_message(&pod))),
                Some("Failed") => return Ok((false, termination_message(&pod))),
                _ => {}
            }
            if let Some(reason) = unstartable(&pod) {
                return Err(SourceError::Permanent(format!(
                    "the git Pod cannot start its image {} ({reason}); kubernetes.git_image must name an image with git and icarus",
                    self.settings.git_image
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SourceError::Transient(format!(
                    "the git Pod {name} did not finish in time"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn output(&self, name: &str) -> String {
        let params = LogParams {
            limit_bytes: Some(OUTPUT_LIMIT_BYTES),
            ..LogParams::default()
        };
        self.pods.logs(name, &params).await.unwrap_or_default()
    }

    /// Best effort: a Pod left behind is adopted by the next run of its step.
    async fn delete(&self, name: &str) {
        match self.pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if status_of(&error) == Some(404) => {}
            Err(error) => tracing::warn!(pod = %name, %error, "git Pod not deleted"),
        }
    }
}

#[async_trait]
impl SourceControl for PodSourceControl {
    async fn checkout(&self, job: JobId, source: &JobSource) -> Result<String> {
        let step = SourceStep::Checkout {
            source: source.clone(),
        };
        self.run(job, step).await?.into_base_commit()
    }

    async fn snapshot(&self, job: JobId, base: Option<&str>) -> Result<Snapshot> {
        let step = SourceStep::Snapshot {
            base: base.map(str::to_owned),
        };
        self.run(job, step).await?.into_snapshot()
    }

    async fn publish(&self, request: &PublishRequest) -> Result<Published> {
        let step = SourceStep::Publish {
            request: request.clone(),
        };
        self.run(request.job, step).await?.into_published()
    }

    /// The repository lives on the job's claims, which go with the job.
    async fn discard(&self, _job: JobId) -> Result<()> {
        Ok(())
    }
}

fn termination_message(pod: &Pod) -> Option<String> {
    terminated(pod)?.message.clone()
}

fn status_of(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn unreachable_api(what: &str, error: &kube::Error) -> SourceError {
    SourceError::Transient(format!("cannot {what}: {error}"))
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
