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
//! Nothing here waits for a Pod. Pods are named per job and step
//! (`icarus-<job>-git-<step>`), so asking for a step is idempotent: the
//! first ask creates the Pod and answers [`Progress::Running`]; each later
//! ask (the Pod watch wakes the job on every change of its Pods, git Pods
//! included, and the planner, still without the step's result, asks again)
//! looks at the Pod once. An ended Pod gives its outcome and is deleted, so
//! a retried publish runs anew; one that never will end fails the step at
//! once: its image cannot run, a claim it waits on is gone, or it outlived
//! `kubernetes.git_timeout_seconds` (stopped by the kubelet at its
//! `activeDeadlineSeconds`, or, if it never got a node, counted from its
//! creation, plus time to be scheduled, so a restart gives it no new
//! deadline). After a crash the next ask finds the Pod as it is.

mod spec;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, LogParams, PostParams};

use super::step::{SourceStep, StepOutcome};
use crate::job::{JobId, JobSource};
use crate::runtime::kubernetes::claims::Claims;
use crate::runtime::kubernetes::observe::{terminated, unstartable};
use crate::runtime::kubernetes::workloads::{JobClaim, WorkloadSettings};
use spec::{git_claims, source_pod};

use crate::runtime::kubernetes::{is_pending, job_labels, status_of};
use crate::source::{
    Progress, PublishRequest, Published, Result, Snapshot, SourceControl, SourceError,
};
use crate::store::kubernetes::ResourceIndex;
pub use spec::GitPodSettings;

/// Time for scheduling and pulling the image, beyond the Pod's own deadline
/// (`activeDeadlineSeconds` counts only from when a node took the Pod).
const SCHEDULING_GRACE: Duration = Duration::from_secs(120);
/// The outcome is the last line; a diff is at most a few MiB.
const OUTPUT_LIMIT_BYTES: i64 = 8 * 1024 * 1024;
/// What the kubelet reports of a Pod it stopped at `activeDeadlineSeconds`.
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

pub struct PodSourceControl {
    pods: Api<Pod>,
    claims: Claims,
    /// The IcarusJobs jobs came from: the owners of their git Pods and claims.
    owners: ResourceIndex,
    /// What every Pod is given (the node selector, the grace period...).
    pods_settings: WorkloadSettings,
    settings: GitPodSettings,
}

/// One step's Pod, and what it mounts.
struct StepPod<'a> {
    job: JobId,
    step: &'a SourceStep,
    name: String,
    claims: Vec<JobClaim>,
}

impl PodSourceControl {
    pub fn new(
        pods: Api<Pod>,
        claims: Api<PersistentVolumeClaim>,
        owners: ResourceIndex,
        pods_settings: WorkloadSettings,
        settings: GitPodSettings,
    ) -> Self {
        PodSourceControl {
            pods,
            claims: Claims::new(claims, pods_settings.clone()),
            owners,
            pods_settings,
            settings,
        }
    }

    /// Starts `step`'s Pod unless it exists, then looks at it once: its
    /// outcome if it ended (the Pod is then deleted), `Running` if not yet.
    /// Never waits: the Pod watch wakes the job when the Pod changes.
    async fn run(&self, job: JobId, step: SourceStep) -> Result<Progress<StepOutcome>> {
        let target = StepPod {
            job,
            name: crate::names::git_step(job, step.name()),
            claims: git_claims(&step).into_iter().map(|(c, _)| c).collect(),
            step: &step,
        };
        // Owned like the job's other objects; not created before its owner is known.
        let owner = self.owners.owner_of(job).ok_or_else(|| {
            SourceError::transient(
                "make a git Pod",
                format!("the IcarusJob of job {job} has not been seen yet"),
            )
        })?;
        let found = self
            .pods
            .get_opt(&target.name)
            .await
            .map_err(|e| unreachable_api("read the git Pod", e))?;
        match found {
            Some(pod) => self.look_at(&target, &pod).await,
            None => self.start(&target, owner).await,
        }
    }

    /// Makes the step's claims, then its Pod, which has only just begun;
    /// one another run made first is looked at instead.
    async fn start(
        &self,
        target: &StepPod<'_>,
        owner: OwnerReference,
    ) -> Result<Progress<StepOutcome>> {
        self.ensure_claims(target.job, &target.claims, &owner)
            .await?;
        let mut labels = job_labels(target.job);
        labels.insert(
            crate::names::kubernetes::STEP.to_owned(),
            target.step.name().to_owned(),
        );
        let metadata = ObjectMeta {
            name: Some(target.name.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        };
        let pod = source_pod(
            metadata,
            target.job,
            target.step,
            &self.pods_settings,
            &self.settings,
        );
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                tracing::info!(job = %target.job, step = target.step.name(), pod = %target.name, "git Pod started");
                Ok(Progress::Running)
            }
            Err(error) if status_of(&error) == Some(409) => {
                let pod = self
                    .pods
                    .get_opt(&target.name)
                    .await
                    .map_err(|e| unreachable_api("read the git Pod", e))?
                    .ok_or_else(|| {
                        SourceError::transient(
                            "read the git Pod",
                            format!("the git Pod {} disappeared", target.name),
                        )
                    })?;
                self.look_at(target, &pod).await
            }
            Err(error) => Err(unreachable_api("create the git Pod", error)),
        }
    }

    /// What the Pod has come to: its outcome once it ended, a failure once
    /// it never will, `Running` otherwise.
    async fn look_at(&self, target: &StepPod<'_>, pod: &Pod) -> Result<Progress<StepOutcome>> {
        // An earlier run's Pod on its way out: its outcome was taken already,
        // and its deletion wakes the job to start the step anew.
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(Progress::Running);
        }
        if let Some("Succeeded" | "Failed") = pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            return self.finish(target, pod).await.map(Progress::Done);
        }
        if let Some(why) = self.never_ends(target, pod).await? {
            self.delete(&target.name).await;
            return Err(SourceError::Permanent(why));
        }
        Ok(Progress::Running)
    }

    /// Why the unfinished Pod never will finish, if it never will: its image
    /// cannot run, a claim it waits on is gone, or it outlived its deadline.
    async fn never_ends(&self, target: &StepPod<'_>, pod: &Pod) -> Result<Option<String>> {
        if let Some(reason) = unstartable(pod) {
            return Ok(Some(format!(
                "the git Pod cannot start its image {} ({reason}); kubernetes.git_image must name an image with git and icarus",
                self.settings.git_image
            )));
        }
        if is_pending(pod)
            && let Some(why) = self.claim_gone(target.job, &target.claims).await?
        {
            return Ok(Some(why));
        }
        let limit = self.deadline() + SCHEDULING_GRACE;
        if age(pod, Utc::now()).is_some_and(|age| age > limit) {
            return Ok(Some(self.timed_out(target)));
        }
        Ok(None)
    }

    /// The ended Pod's outcome, read from its termination message or its
    /// output; the Pod is deleted, so a step asked for again runs anew.
    async fn finish(&self, target: &StepPod<'_>, pod: &Pod) -> Result<StepOutcome> {
        let name = &target.name;
        if pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some(DEADLINE_EXCEEDED) {
            self.delete(name).await;
            return Err(SourceError::Permanent(self.timed_out(target)));
        }
        let output = match termination_message(pod) {
            // A small outcome is in the termination message; a diff may be
            // too big for it, and is read from the output.
            Some(message) if StepOutcome::from_output(&message).is_some() => message,
            _ => self.output(name).await,
        };
        self.delete(name).await;
        let succeeded = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded");
        match StepOutcome::from_output(&output) {
            Some(outcome) => Ok(outcome),
            None if succeeded => Err(SourceError::transient(
                format!("the git Pod {name} gave no outcome"),
                format!("its output ended: {}", last_lines(&output)),
            )),
            None => Err(SourceError::transient(
                format!("the git Pod {name} failed"),
                last_lines(&output),
            )),
        }
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(self.settings.git_timeout_seconds)
    }

    fn timed_out(&self, target: &StepPod<'_>) -> String {
        format!(
            "the {} step's git Pod {} did not finish within {} s (kubernetes.git_timeout_seconds)",
            target.step.name(),
            target.name,
            self.deadline().as_secs()
        )
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
                .map_err(|e| unreachable_api(&format!("create the {} claim", which.what()), e))?;
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
                .map_err(|e| unreachable_api(&format!("read the {} claim", which.what()), e))?;
            if gone.is_some() {
                return Ok(gone);
            }
        }
        Ok(None)
    }

    async fn output(&self, name: &str) -> String {
        let params = LogParams {
            limit_bytes: Some(OUTPUT_LIMIT_BYTES),
            ..LogParams::default()
        };
        self.pods.logs(name, &params).await.unwrap_or_default()
    }

    /// Best effort: a Pod left behind is read again by the next look at its step.
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
    async fn checkout(&self, job: JobId, source: &JobSource) -> Result<Progress<String>> {
        let step = SourceStep::Checkout {
            source: source.clone(),
        };
        self.run(job, step)
            .await?
            .try_map(StepOutcome::into_base_commit)
    }

    async fn snapshot(&self, job: JobId, base: Option<&str>) -> Result<Progress<Snapshot>> {
        let step = SourceStep::Snapshot {
            base: base.map(str::to_owned),
        };
        self.run(job, step)
            .await?
            .try_map(StepOutcome::into_snapshot)
    }

    async fn publish(&self, request: &PublishRequest) -> Result<Progress<Published>> {
        let step = SourceStep::Publish {
            request: request.clone(),
        };
        self.run(request.job, step)
            .await?
            .try_map(StepOutcome::into_published)
    }

    /// Deletes the job's repository claim (the runtime has deleted its
    /// workspace claim already).
    async fn discard(&self, job: JobId) -> Result<()> {
        self.claims
            .delete(job, JobClaim::Repository)
            .await
            .map_err(|e| unreachable_api("delete the repository claim", e))
    }
}

/// How long ago the API server created the Pod: a deadline counted from
/// there holds across orchestrator restarts.
fn age(pod: &Pod, now: DateTime<Utc>) -> Option<Duration> {
    let created = pod.metadata.creation_timestamp.as_ref()?;
    let created = DateTime::parse_from_rfc3339(&created.0.to_string()).ok()?;
    (now - created.with_timezone(&Utc)).to_std().ok()
}

fn termination_message(pod: &Pod) -> Option<String> {
    terminated(pod)?.message.clone()
}

fn unreachable_api(what: &str, error: kube::Error) -> SourceError {
    SourceError::transient(format!("cannot {what}"), error)
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

#[cfg(test)]
mod tests {
    //! Against a scripted API server: the order of a step's calls, that
    //! each call looks at the Pod once and never waits for it, and what a
    //! vanished claim or a deadline makes of a Pod that has not ended.

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
        let config = Config::embedded_default().unwrap();
        let git = PodSourceControl::new(
            Api::namespaced(client.clone(), "icarus"),
            Api::namespaced(client, "icarus"),
            owners,
            WorkloadSettings::from_config(&config),
            GitPodSettings::from_config(&config),
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

    fn pod_path(job: JobId, step: &str) -> String {
        format!("{PODS}/icarus-{job}-git-{step}")
    }

    /// Answers the look at a step's Pod that starts every step: none yet.
    async fn no_pod_yet(server: &mut ApiServer, job: JobId, step: &str) {
        let path = pod_path(job, step);
        expect(server, Method::GET, &path, 404, api_error(404, "NotFound")).await;
    }

    /// A call that must answer without another request: none is answered.
    async fn answered<T>(call: tokio::task::JoinHandle<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("answered without another request")
            .unwrap()
    }

    #[tokio::test]
    async fn mock_api_a_checkout_makes_both_claims_owned_by_the_job_before_its_pod() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.checkout(job, &checkout()).await });
        no_pod_yet(&mut server, job, "checkout").await;
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
        assert_eq!(answered(call).await.unwrap(), Progress::Running);

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

    /// The caller is a reconcile: it must not wait while the Pod runs.
    #[tokio::test]
    async fn mock_api_a_git_pod_still_running_is_reported_running_after_one_look() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.checkout(job, &checkout()).await });
        let path = pod_path(job, "checkout");
        expect(
            &mut server,
            Method::GET,
            &path,
            200,
            pod_in("Running", None),
        )
        .await;
        assert_eq!(answered(call).await.unwrap(), Progress::Running);
    }

    #[tokio::test]
    async fn mock_api_a_finished_git_pod_gives_its_outcome_on_the_next_look_and_is_deleted() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.checkout(job, &checkout()).await });
        let path = pod_path(job, "checkout");
        let outcome = r#"{"base_commit":"abc123"}"#;
        let ended = pod_in("Succeeded", Some(outcome));
        expect(&mut server, Method::GET, &path, 200, ended).await;
        expect(&mut server, Method::DELETE, &path, 200, created()).await;
        assert_eq!(
            answered(call).await.unwrap(),
            Progress::Done("abc123".to_owned())
        );
    }

    /// Another run's deletion of the Pod is under way: its outcome was taken.
    #[tokio::test]
    async fn mock_api_a_git_pod_being_deleted_is_waited_out_not_read_again() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.checkout(job, &checkout()).await });
        let mut going = pod_in("Succeeded", Some(r#"{"base_commit":"abc123"}"#));
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let path = pod_path(job, "checkout");
        expect(&mut server, Method::GET, &path, 200, going).await;
        assert_eq!(answered(call).await.unwrap(), Progress::Running);
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
        no_pod_yet(&mut server, job, "publish").await;
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
        assert_eq!(answered(call).await.unwrap(), Progress::Running);
    }

    /// Answers the reads of the job's two claims: both still there.
    async fn both_claims_there(server: &mut ApiServer, job: JobId) {
        for which in ["workspace", "repository"] {
            let claim = format!("{CLAIMS}/icarus-{job}-{which}");
            expect(server, Method::GET, &claim, 200, created()).await;
        }
    }

    #[tokio::test]
    async fn mock_api_a_git_pod_waiting_on_a_deleted_repository_claim_fails_the_step_naming_it() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.snapshot(job, None).await });
        let path = pod_path(job, "snapshot");
        expect(
            &mut server,
            Method::GET,
            &path,
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
        expect(&mut server, Method::DELETE, &path, 200, created()).await;
        let error = call.await.unwrap().unwrap_err();
        assert!(error.is_permanent(), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "the repository claim icarus-{job}-repository was deleted: the git Pod cannot start"
            )
        );
    }

    /// Counted from the Pod's creation, so an orchestrator restart does not
    /// give a stuck Pod a new deadline.
    #[tokio::test]
    async fn mock_api_a_git_pod_older_than_its_deadline_fails_the_step_naming_it_and_the_timeout() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.snapshot(job, None).await });
        let mut stuck = pod_in("Pending", None);
        stuck["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z");
        let path = pod_path(job, "snapshot");
        expect(&mut server, Method::GET, &path, 200, stuck).await;
        both_claims_there(&mut server, job).await;
        expect(&mut server, Method::DELETE, &path, 200, created()).await;
        let error = answered(call).await.unwrap_err();
        assert!(error.is_permanent(), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "the snapshot step's git Pod icarus-{job}-git-snapshot did not finish within 600 s (kubernetes.git_timeout_seconds)"
            )
        );
    }

    #[tokio::test]
    async fn mock_api_a_recent_pending_git_pod_is_still_running() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.snapshot(job, None).await });
        let mut waiting = pod_in("Pending", None);
        waiting["metadata"]["creationTimestamp"] = json!(Utc::now().to_rfc3339());
        let path = pod_path(job, "snapshot");
        expect(&mut server, Method::GET, &path, 200, waiting).await;
        both_claims_there(&mut server, job).await;
        assert_eq!(answered(call).await.unwrap(), Progress::Running);
    }

    /// The kubelet stopped it at `activeDeadlineSeconds`: no retry can help.
    #[tokio::test]
    async fn mock_api_a_git_pod_stopped_at_its_deadline_fails_the_step_naming_the_timeout() {
        let job = JobId::new_random();
        let (git, mut server) = git(job);
        let call = tokio::spawn(async move { git.checkout(job, &checkout()).await });
        let mut stopped = pod_in("Failed", None);
        stopped["status"]["reason"] = json!("DeadlineExceeded");
        let path = pod_path(job, "checkout");
        expect(&mut server, Method::GET, &path, 200, stopped).await;
        expect(&mut server, Method::DELETE, &path, 200, created()).await;
        let error = answered(call).await.unwrap_err();
        assert!(error.is_permanent(), "{error}");
        assert!(
            error.to_string().contains("checkout step")
                && error
                    .to_string()
                    .contains("600 s (kubernetes.git_timeout_seconds)"),
            "{error}"
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
        let error = crate::errors::error_chain(&error);
        assert!(error.contains("has not been seen yet"), "{error}");
    }
}
