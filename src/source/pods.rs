//! [`SourceControl`] in Kubernetes mode: each checkout, snapshot and publish
//! runs as a short-lived Pod on the job's claims.
//!
//! The orchestrator cannot read a claim; a Pod that mounts it can. Each Pod
//! runs `icarus source-step` from the orchestrator's own image — the same
//! `LocalGit` code as local mode — and its last output line is the outcome.
//! What each step's Pod mounts, and which get the token, is in
//! [`crate::runtime::kubernetes::workloads`]: the repository claim always, the workspace claim
//! as the step needs it (not at all for a publish).
//!
//! A Pod's claims are made before the Pod (a 409 means they exist): the
//! checkout is the job's first step, before the agents' runtime has made
//! the workspace claim, and a Pod created before its claim only waits,
//! Pending, until a deadline fails the job for the wrong reason. A Pod
//! that waits on a claim someone deleted fails the step at once, naming
//! the claim. A rejected or cancelled job's repository claim is deleted
//! ([`SourceControl::discard`]); a completed or failed job keeps both
//! claims until its IcarusJob goes (they are owned by it).
//!
//! Pods are named per job and step (`icarus-<job>-git-<step>`): after a crash
//! the next attempt adopts the Pod that exists and reads its result, and a
//! Pod is deleted once its result is read, so a retried publish runs anew.
//! The reconcile that asked waits for the Pod (its deadline is
//! `kubernetes.git_timeout_seconds`); other jobs go on in other workers.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, LogParams, PostParams};

use super::step::{SourceStep, StepOutcome};
use crate::job::{JobId, JobSource};
use crate::runtime::kubernetes::claims::Claims;
use crate::runtime::kubernetes::observe::{terminated, unstartable};
use crate::runtime::kubernetes::workloads::{JobClaim, WorkloadSettings, git_claims, source_pod};
use crate::runtime::kubernetes::{is_pending, job_labels, status_of};
use crate::source::{PublishRequest, Published, Result, Snapshot, SourceControl, SourceError};
use crate::store::kubernetes::ResourceIndex;

/// How often a running git Pod is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Time for scheduling and pulling the image, beyond the Pod's own deadline.
const SCHEDULING_GRACE: Duration = Duration::from_secs(120);
/// The outcome is the last line; a diff is at most a few MiB.
const OUTPUT_LIMIT_BYTES: i64 = 8 * 1024 * 1024;

pub struct PodSourceControl {
    pods: Api<Pod>,
    claims: Claims,
    /// The IcarusJobs jobs came from: the owners of their git Pods and claims.
    owners: ResourceIndex,
    settings: WorkloadSettings,
}

impl PodSourceControl {
    pub fn new(
        pods: Api<Pod>,
        claims: Api<PersistentVolumeClaim>,
        owners: ResourceIndex,
        settings: WorkloadSettings,
    ) -> Self {
        PodSourceControl {
            pods,
            claims: Claims::new(claims, settings.clone()),
            owners,
            settings,
        }
    }

    /// Runs `step` in a Pod (or adopts the one a previous run started),
    /// waits for it, reads its outcome and deletes it.
    async fn run(&self, job: JobId, step: SourceStep) -> Result<StepOutcome> {
        let name = crate::names::git_step(job, step.name());
        let mut labels = job_labels(job);
        labels.insert(
            crate::names::kubernetes::STEP.to_owned(),
            step.name().to_owned(),
        );
        // Owned like the job's other objects; not created before its owner is known.
        let owner = self.owners.owner_of(job).ok_or_else(|| {
            SourceError::Transient(format!("the IcarusJob of job {job} has not been seen yet"))
        })?;
        let claims: Vec<JobClaim> = git_claims(&step).into_iter().map(|(c, _)| c).collect();
        self.ensure_claims(job, &claims, &owner).await?;
        let metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        };
        let pod = source_pod(metadata, job, &step, &self.settings);
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => tracing::info!(%job, step = step.name(), pod = %name, "git Pod started"),
            Err(error) if status_of(&error) == Some(409) => {
                tracing::info!(%job, pod = %name, "git Pod adopted");
            }
            Err(error) => return Err(unreachable_api("create the git Pod", &error)),
        }
        let finished = self.wait(&name, job, &claims).await;
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

    /// Makes the claims the step's Pod mounts, owned like the Pod, unless
    /// they exist.
    async fn ensure_claims(
        &self,
        job: JobId,
        claims: &[JobClaim],
        owner: &OwnerReference,
    ) -> Result<()> {
        for &which in claims {
            self.claims
                .ensure(job, which, Some(vec![owner.clone()]))
                .await
                .map_err(|e| unreachable_api(&format!("create the {} claim", which.what()), &e))?;
        }
        Ok(())
    }

    /// Why the Pending Pod can never start because one of its `claims` is
    /// gone, if one is.
    async fn claim_gone(&self, job: JobId, claims: &[JobClaim]) -> Result<Option<String>> {
        for &which in claims {
            let gone = self
                .claims
                .gone(job, which, "the git Pod")
                .await
                .map_err(|e| unreachable_api(&format!("read the {} claim", which.what()), &e))?;
            if gone.is_some() {
                return Ok(gone);
            }
        }
        Ok(None)
    }

    /// Waits until the Pod finishes: whether it succeeded and its termination
    /// message, or why it never will finish.
    async fn wait(
        &self,
        name: &str,
        job: JobId,
        claims: &[JobClaim],
    ) -> Result<(bool, Option<String>)> {
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
            if is_pending(&pod)
                && let Some(why) = self.claim_gone(job, claims).await?
            {
                return Err(SourceError::Permanent(why));
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

    /// Deletes the job's repository claim (the runtime has deleted its
    /// workspace claim already).
    async fn discard(&self, job: JobId) -> Result<()> {
        self.claims
            .delete(job, JobClaim::Repository)
            .await
            .map_err(|e| unreachable_api("delete the repository claim", &e))
    }
}

fn termination_message(pod: &Pod) -> Option<String> {
    terminated(pod)?.message.clone()
}

fn unreachable_api(what: &str, error: &kube::Error) -> SourceError {
    SourceError::Transient(format!("cannot {what}: {error}"))
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

#[cfg(test)]
mod tests {
    //! Against a scripted API server: the order of a step's calls, and what
    //! a waiting Pod's vanished claim makes of it.

    use http::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::cluster::crd::{IcarusJob, IcarusJobSpec};
    use crate::cluster::mock_api::{self, ApiServer, api_error, expect};
    use crate::config::Config;

    const CLAIMS: &str = "/api/v1/namespaces/icarus/persistentvolumeclaims";
    const PODS: &str = "/api/v1/namespaces/icarus/pods";

    /// Git over a scripted API server, for a job whose IcarusJob is `add-logging`.
    fn git(job: JobId) -> (PodSourceControl, ApiServer) {
        let (client, server) = mock_api::client();
        let mut resource = IcarusJob::new("add-logging", IcarusJobSpec::new("t"));
        resource.metadata.uid = Some(job.to_string());
        let owners = ResourceIndex::default();
        owners.remember(job, resource);
        let settings = WorkloadSettings::from_config(&Config::embedded_default().unwrap());
        let git = PodSourceControl::new(
            Api::namespaced(client.clone(), "icarus"),
            Api::namespaced(client, "icarus"),
            owners,
            settings,
        );
        (git, server)
    }

    fn checkout() -> JobSource {
        JobSource {
            repository: "https://github.com/acme/r.git".to_owned(),
            reference: None,
        }
    }

    fn created() -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "x"}})
    }

    fn pod_in(phase: &str, message: Option<&str>) -> Value {
        let state = match message {
            Some(message) => json!({"terminated": {"exitCode": 0, "message": message}}),
            None => json!({"waiting": {"reason": "ContainerCreating"}}),
        };
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
               "status": {"phase": phase, "containerStatuses": [{
                   "name": "git", "image": "i", "imageID": "", "ready": false,
                   "restartCount": 0, "state": state}]}})
    }

    #[tokio::test]
    async fn mock_api_a_checkout_makes_both_claims_owned_by_the_job_before_its_pod() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.checkout(job, &checkout()).await });
        let workspace = expect(&mut server, Method::POST, CLAIMS, 201, created()).await;
        // Made by the runtime already: adopted.
        let repository = expect(
            &mut server,
            Method::POST,
            CLAIMS,
            409,
            api_error(409, "AlreadyExists"),
        )
        .await;
        let pod = expect(
            &mut server,
            Method::POST,
            PODS,
            201,
            pod_in("Pending", None),
        )
        .await;
        let pod_path = format!("{PODS}/icarus-{job}-git-checkout");
        let outcome = r#"{"base_commit":"abc123"}"#;
        expect(
            &mut server,
            Method::GET,
            &pod_path,
            200,
            pod_in("Succeeded", Some(outcome)),
        )
        .await;
        expect(&mut server, Method::DELETE, &pod_path, 200, created()).await;
        assert_eq!(call.await.unwrap().unwrap(), "abc123");

        for (claim, which) in [(&workspace, "workspace"), (&repository, "repository")] {
            assert_eq!(claim["metadata"]["name"], format!("icarus-{job}-{which}"));
            assert_eq!(
                claim["metadata"]["ownerReferences"][0]["uid"],
                job.to_string()
            );
            assert_eq!(
                claim["metadata"]["labels"]["icarus.dev/job-id"],
                job.to_string()
            );
            assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
            assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
        }
        assert_eq!(
            pod["metadata"]["name"],
            format!("icarus-{job}-git-checkout")
        );
    }

    #[tokio::test]
    async fn mock_api_a_publish_makes_only_the_repository_claim_before_its_pod() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let request = PublishRequest {
            job,
            repository: "https://github.com/acme/r.git".to_owned(),
            base: "a".repeat(40),
            snapshot: "b".repeat(40),
            branch: format!("icarus/{job}"),
            message: "Add logging".to_owned(),
            author_name: "Icarus".to_owned(),
            author_email: "icarus@example.com".to_owned(),
            committed_at: crate::job::fixtures::at(0),
        };
        let call = tokio::spawn(async move { git.publish(&request).await });
        let claim = expect(&mut server, Method::POST, CLAIMS, 201, created()).await;
        assert_eq!(
            claim["metadata"]["name"],
            format!("icarus-{job}-repository")
        );
        let pod = expect(
            &mut server,
            Method::POST,
            PODS,
            201,
            pod_in("Pending", None),
        )
        .await;
        assert_eq!(pod["metadata"]["name"], format!("icarus-{job}-git-publish"));
        call.abort();
    }

    #[tokio::test]
    async fn mock_api_a_git_pod_waiting_on_a_deleted_repository_claim_fails_the_step_naming_it() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.snapshot(job, None).await });
        expect(&mut server, Method::POST, CLAIMS, 201, created()).await;
        expect(&mut server, Method::POST, CLAIMS, 201, created()).await;
        expect(
            &mut server,
            Method::POST,
            PODS,
            201,
            pod_in("Pending", None),
        )
        .await;
        let pod_path = format!("{PODS}/icarus-{job}-git-snapshot");
        expect(
            &mut server,
            Method::GET,
            &pod_path,
            200,
            pod_in("Pending", None),
        )
        .await;
        let workspace = format!("{CLAIMS}/icarus-{job}-workspace");
        expect(&mut server, Method::GET, &workspace, 200, created()).await;
        let repository = format!("{CLAIMS}/icarus-{job}-repository");
        expect(
            &mut server,
            Method::GET,
            &repository,
            404,
            api_error(404, "NotFound"),
        )
        .await;
        expect(&mut server, Method::DELETE, &pod_path, 200, created()).await;
        let error = call.await.unwrap().unwrap_err();
        assert!(error.is_permanent(), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "the repository claim icarus-{job}-repository was deleted: the git Pod cannot start"
            )
        );
    }

    #[tokio::test]
    async fn mock_api_discarding_a_job_deletes_its_repository_claim_even_when_gone_already() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.discard(job).await });
        expect(
            &mut server,
            Method::DELETE,
            &format!("{CLAIMS}/icarus-{job}-repository"),
            404,
            api_error(404, "NotFound"),
        )
        .await;
        call.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn mock_api_nothing_is_made_for_a_job_whose_icarusjob_is_not_known_yet() {
        let (git, _server) = git(JobId::new_random());
        let unknown = JobId::new_random();
        // A request would wait for an answer that never comes.
        let answer =
            tokio::time::timeout(Duration::from_secs(5), git.checkout(unknown, &checkout()))
                .await
                .expect("refused without a request");
        let error = answer.unwrap_err();
        assert!(!error.is_permanent(), "{error}");
        assert!(
            error.to_string().contains("has not been seen yet"),
            "{error}"
        );
    }
}
