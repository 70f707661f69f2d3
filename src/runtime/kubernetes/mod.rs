//! [`KubeRuntime`]: agents as Pods and workspaces as PersistentVolumeClaims,
//! behind the same [`Runtime`] trait as Docker, so the same controller and
//! planner drive them.
//!
//! Pods are named like local mode's containers (`icarus-<job>-<role>-<attempt>`)
//! and labelled with the job id, role and attempt: creating a Pod that exists
//! adopts it, and `restartPolicy: Never` means a finished agent never reruns.
//! A Pod watch (kube-runtime) wakes the controller on every change, and so
//! does a watch of the job's claims. Agents mount only the workspace claim;
//! the repository claim is the git Pods' ([`crate::source::pods`]).

pub mod claims;
mod follow;
mod metrics;
pub mod observe;
pub mod workloads;

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cluster::crd::IcarusJob;
pub(crate) use crate::cluster::objects::{JOB_ID, MANAGED_BY, job_labels, status_of};
use crate::job::JobId;
use crate::job::workload::{ObservedWorkload, WorkloadKey, WorkloadState};
use crate::runtime::{Result, Runtime, RuntimeError, WorkloadSpec};
use crate::store::kubernetes::ResourceIndex;
use claims::Claims;
use observe::observe_pod;
use workloads::{JobClaim, PodTarget, WorkloadSettings, pod};

use crate::names::kubernetes::{ATTEMPT, MANAGER, ROLE};
const LOG_TAIL_LINES: i64 = 20;
const KEPT_LOG_LINES: i64 = 10_000;
const KEPT_LOG_BYTES: i64 = 1024 * 1024;

pub struct KubeRuntime {
    pods: Api<Pod>,
    jobs: Api<IcarusJob>,
    claims: Claims,
    settings: WorkloadSettings,
    changes: broadcast::Sender<JobId>,
    /// The IcarusJobs jobs came from: their owners.
    owners: ResourceIndex,
    /// Whether every object must have its owner (set by [`KubeRuntime::owned_by`]).
    owner_required: bool,
    /// What agents use, from the cluster's metrics API.
    metrics: Arc<metrics::PodMetrics>,
    /// Stops the Pod watch when the runtime is dropped.
    _watch: Option<Arc<DropGuard>>,
}

impl KubeRuntime {
    /// A runtime in `namespace`, without a watch (wake-ups then come from
    /// the controller's resync only).
    pub fn new(client: Client, namespace: &str, settings: WorkloadSettings) -> Self {
        let (changes, _) = broadcast::channel(1024);
        KubeRuntime {
            pods: Api::namespaced(client.clone(), namespace),
            jobs: Api::namespaced(client.clone(), namespace),
            metrics: Arc::new(metrics::PodMetrics::new(client.clone(), namespace)),
            claims: Claims::new(Api::namespaced(client, namespace), settings.clone()),
            settings,
            changes,
            owners: ResourceIndex::default(),
            owner_required: false,
            _watch: None,
        }
    }

    /// Makes each job's Pods and claim owned by the IcarusJob it came from,
    /// as the sync loops learn them: deleting the resource deletes them.
    pub fn owned_by(mut self, owners: ResourceIndex) -> Self {
        self.owners = owners;
        self.owner_required = true;
        self
    }

    /// Also follows the namespace's Icarus Pods (agents and git Pods) and
    /// claims, waking their jobs on every change: a git step that is still
    /// running is looked at again only when this wakes its job.
    pub fn watching(mut self) -> Self {
        let stop = CancellationToken::new();
        follow(self.pods.clone(), "Pod", self.changes.clone(), stop.clone());
        follow(
            self.claims.api().clone(),
            "claim",
            self.changes.clone(),
            stop.clone(),
        );
        self._watch = Some(Arc::new(stop.drop_guard()));
        self
    }

    /// Pending agents whose workspace claim is gone or being deleted can
    /// never start (the scheduler refuses them): they are reported as
    /// ended, with the reason, instead of waiting for their deadline. Only
    /// agents: a git Pod (which may mount no workspace at all) is looked at
    /// by the step that runs it.
    async fn fail_pending_without_claim(
        &self,
        job: JobId,
        pods: &[Pod],
        observed: &mut [ObservedWorkload],
    ) -> Result<()> {
        let waiting: Vec<&str> = pods
            .iter()
            .filter(|pod| is_pending(pod))
            .filter_map(|pod| pod.metadata.name.as_deref())
            .filter(|name| observed.iter().any(|w| w.id == *name))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let Some(why) = self
            .claims
            .gone(job, JobClaim::Workspace, "the agent")
            .await
            .map_err(|e| failed("read the workspace claim", e))?
        else {
            return Ok(());
        };
        for workload in observed
            .iter_mut()
            .filter(|w| waiting.contains(&w.id.as_str()))
        {
            workload.state = WorkloadState::Unstartable { why: why.clone() };
        }
        Ok(())
    }
}

/// Wakes the job of every `what` (labelled as Icarus's) that changes, until `stop`.
fn follow<K>(
    api: Api<K>,
    what: &'static str,
    changes: broadcast::Sender<JobId>,
    stop: CancellationToken,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let mut events = watcher(api, config).boxed();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object))) => {
                    if let Some(job) = job_of(object.meta()) {
                        let _ = changes.send(job);
                    }
                }
                Some(Ok(_)) => {}
                // The watcher retries by itself; the resync covers the gap.
                Some(Err(error)) => tracing::warn!(%error, what, "watch interrupted"),
                None => return,
            }
        }
    });
}

impl KubeRuntime {
    /// The job's IcarusJob as owner. Until the resource watch has delivered
    /// it (a REST spawn on another replica, a slow watch), nothing is
    /// created: an unowned object would outlive its job's deletion.
    fn owner_references(&self, job: JobId) -> Result<Option<Vec<OwnerReference>>> {
        match self.owners.owner_of(job) {
            Some(owner) => Ok(Some(vec![owner])),
            None if self.owner_required => Err(RuntimeError::failed(
                "find the job's IcarusJob",
                format!("the IcarusJob of job {job} has not been seen yet"),
            )),
            None => Ok(None),
        }
    }
}

fn job_of(metadata: &ObjectMeta) -> Option<JobId> {
    metadata.labels.as_ref()?.get(JOB_ID)?.parse().ok()
}

/// Not yet running: being scheduled (or refused by the scheduler), or pulling its image.
pub(crate) fn is_pending(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, None | Some("Pending"))
}

/// An API call that failed: refused by the API server, or (no HTTP status)
/// never answered, which is worth retrying later.
fn failed(operation: &'static str, error: kube::Error) -> RuntimeError {
    match status_of(&error) {
        Some(_) => RuntimeError::failed(operation, error),
        None => RuntimeError::unavailable(operation, error),
    }
}

#[async_trait]
impl Runtime for KubeRuntime {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn observe(&self, job: JobId) -> Result<Vec<ObservedWorkload>> {
        let selector = format!("{JOB_ID}={job}");
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| failed("list pods", e))?;
        let mut observed = Vec::new();
        for pod in &pods.items {
            let Some(mut workload) = observe_pod(pod) else {
                continue;
            };
            if let WorkloadState::Exited {
                exit_code,
                oom_killed,
            } = workload.state
                && (exit_code != 0 || oom_killed)
                && workload.log_tail.is_none()
            {
                let params = LogParams {
                    tail_lines: Some(LOG_TAIL_LINES),
                    ..LogParams::default()
                };
                workload.log_tail = self.pods.logs(&workload.id, &params).await.ok();
            }
            observed.push(workload);
        }
        self.fail_pending_without_claim(job, &pods.items, &mut observed)
            .await?;
        Ok(observed)
    }

    /// The workspace claim only: agents never mount the repository claim,
    /// which the git Pods' steps make for themselves.
    async fn prepare_workspace(&self, job: JobId) -> Result<()> {
        let owners = self.owner_references(job)?;
        self.claims
            .ensure(job, JobClaim::Workspace, owners)
            .await
            .map_err(|e| failed("create workspace claim", e))
    }

    async fn start(&self, spec: &WorkloadSpec) -> Result<String> {
        let name = spec.key.name();
        let mut pod_labels = job_labels(spec.key.job);
        pod_labels.insert(ROLE.to_owned(), spec.key.role.to_string());
        pod_labels.insert(ATTEMPT.to_owned(), spec.key.attempt.to_string());
        let target = PodTarget {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(pod_labels),
                owner_references: self.owner_references(spec.key.job)?,
                ..ObjectMeta::default()
            },
            claim_name: JobClaim::Workspace.name(spec.key.job),
            image: Some(spec.image.clone()),
        };
        let pod = pod(&target, spec.key.role, &spec.env, &self.settings);
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => Ok(name),
            // It exists: a previous run created it. Pods never restart, so
            // adopting it can never run a finished agent again.
            Err(error) if status_of(&error) == Some(409) => Ok(name),
            Err(error) => Err(failed("create pod", error)),
        }
    }

    async fn owner_gone(&self, job: JobId) -> Result<bool> {
        // Only a resource this replica saw can be missed.
        let Some(name) = self.owners.name_of(job).filter(|_| self.owner_required) else {
            return Ok(false);
        };
        match self.jobs.get_opt(&name).await {
            Ok(None) => Ok(true),
            Ok(Some(resource)) => Ok(resource.metadata.deletion_timestamp.is_some()
                || resource.metadata.uid != Some(job.to_string())),
            Err(error) => Err(failed("read the job's IcarusJob", error)),
        }
    }

    async fn logs(&self, id: &str) -> Result<String> {
        let params = LogParams {
            tail_lines: Some(KEPT_LOG_LINES),
            limit_bytes: Some(KEPT_LOG_BYTES),
            ..LogParams::default()
        };
        self.pods
            .logs(id, &params)
            .await
            .map_err(|e| failed("read pod logs", e))
    }

    fn follow_logs(
        &self,
        id: &str,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Option<BoxStream<'static, Result<crate::runtime::LogChunk>>> {
        Some(follow::follow(self.pods.clone(), id.to_owned(), since))
    }

    async fn usage(&self, id: &str) -> Result<Option<crate::runtime::Usage>> {
        self.metrics.usage(id).await
    }

    async fn remove(&self, _key: WorkloadKey, id: &str) -> Result<()> {
        self.metrics.forget(id);
        match self.pods.delete(id, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(error) if status_of(&error) == Some(404) => Ok(()),
            Err(error) => Err(failed("delete pod", error)),
        }
    }

    async fn remove_workspace(&self, job: JobId) -> Result<()> {
        self.claims
            .delete(job, JobClaim::Workspace)
            .await
            .map_err(|e| failed("delete workspace claim", e))
    }

    async fn owners(&self) -> Result<Vec<JobId>> {
        let selector = format!("{MANAGED_BY}={MANAGER}");
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| failed("list pods", e))?;
        Ok(super::distinct_jobs(
            pods.items.iter().filter_map(|pod| job_of(&pod.metadata)),
        ))
    }

    fn changes(&self) -> BoxStream<'static, JobId> {
        super::wake_ups(&self.changes)
    }
}

#[cfg(test)]
mod tests {
    //! Against a mocked API server (no cluster runs here): each test asserts
    //! the exact requests a call makes and answers them.

    use http::{Method, Response};
    use kube::client::Body;
    use serde_json::json;

    use super::*;
    use crate::cluster::mock_api::{self, ApiServer, api_error, expect};
    use crate::config::Config;
    use crate::job::Role;

    fn runtime() -> (KubeRuntime, ApiServer) {
        let (client, server) = mock_api::client();
        let config = Config::embedded_default().unwrap();
        let settings = WorkloadSettings::from_config(&config);
        (KubeRuntime::new(client, "icarus", settings), server)
    }

    fn spec(job: JobId, role: Role) -> WorkloadSpec {
        WorkloadSpec {
            key: WorkloadKey {
                job,
                role,
                attempt: 1,
            },
            image: "icarus-checker:latest".to_owned(),
            env: vec![("JOB_ID".to_owned(), job.to_string())],
            cpu_limit: 0.5,
            memory_limit: 536_870_912,
            network_mode: "icarus-agents".to_owned(),
            workspace_read_only: role == Role::Checker,
        }
    }

    #[tokio::test]
    async fn mock_api_starting_an_agent_posts_one_labelled_pod_on_the_jobs_claim() {
        let (runtime, mut server) = runtime();
        let job = JobId::new_random();
        let call = tokio::spawn(async move { runtime.start(&spec(job, Role::Checker)).await });
        let pod = expect(
            &mut server,
            Method::POST,
            "/api/v1/namespaces/icarus/pods",
            201,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}),
        )
        .await;
        assert_eq!(
            call.await.unwrap().unwrap(),
            format!("icarus-{job}-checker-1")
        );
        assert_eq!(pod["metadata"]["name"], format!("icarus-{job}-checker-1"));
        assert_eq!(pod["metadata"]["labels"][JOB_ID], job.to_string());
        assert_eq!(pod["metadata"]["labels"][ROLE], "checker");
        let volume = &pod["spec"]["volumes"][0]["persistentVolumeClaim"];
        assert_eq!(volume["claimName"], format!("icarus-{job}-workspace"));
        assert_eq!(volume["readOnly"], true);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "JOB_ID");
    }

    #[tokio::test]
    async fn mock_api_a_pod_that_already_exists_is_adopted_not_created_twice() {
        let (runtime, mut server) = runtime();
        let job = JobId::new_random();
        let call = tokio::spawn(async move { runtime.start(&spec(job, Role::Builder)).await });
        expect(
            &mut server,
            Method::POST,
            "/api/v1/namespaces/icarus/pods",
            409,
            api_error(409, "AlreadyExists"),
        )
        .await;
        assert_eq!(
            call.await.unwrap().unwrap(),
            format!("icarus-{job}-builder-1")
        );
    }

    #[tokio::test]
    async fn mock_api_removing_a_pod_that_is_gone_is_not_an_error() {
        let (runtime, mut server) = runtime();
        let job = JobId::new_random();
        let key = WorkloadKey {
            job,
            role: Role::Builder,
            attempt: 1,
        };
        let call = tokio::spawn(async move { runtime.remove(key, "icarus-x-builder-1").await });
        expect(
            &mut server,
            Method::DELETE,
            "/api/v1/namespaces/icarus/pods/icarus-x-builder-1",
            404,
            api_error(404, "NotFound"),
        )
        .await;
        call.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn mock_api_the_workspace_claim_is_created_once() {
        let (runtime, mut server) = runtime();
        let job = JobId::new_random();
        let call = tokio::spawn(async move { runtime.prepare_workspace(job).await });
        let claim = expect(
            &mut server,
            Method::POST,
            "/api/v1/namespaces/icarus/persistentvolumeclaims",
            409,
            api_error(409, "AlreadyExists"),
        )
        .await;
        call.await.unwrap().unwrap();
        assert_eq!(claim["metadata"]["name"], format!("icarus-{job}-workspace"));
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    }

    /// A git Pod may mount no workspace at all (a publish), and its step
    /// looks at it: the workspace claim is looked up for waiting agents only.
    #[tokio::test]
    async fn mock_api_a_pending_git_pod_does_not_make_observing_read_the_workspace_claim() {
        let (runtime, mut server) = runtime();
        let job = JobId::new_random();
        let call = tokio::spawn(async move { runtime.observe(job).await });
        let git_pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("icarus-{job}-git-publish"),
                         "labels": {JOB_ID: job.to_string(), "icarus.dev/step": "publish"}},
            "status": {"phase": "Pending"}
        });
        expect(
            &mut server,
            Method::GET,
            "/api/v1/namespaces/icarus/pods",
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [git_pod]}),
        )
        .await;
        let observed = tokio::time::timeout(std::time::Duration::from_secs(5), call)
            .await
            .expect("no further request")
            .unwrap()
            .unwrap();
        assert!(observed.is_empty(), "a git Pod is no agent: {observed:?}");
    }

    #[tokio::test]
    async fn mock_api_a_pending_agent_whose_workspace_claim_is_gone_has_ended_saying_so() {
        let (runtime, mut server) = runtime();
        let job = JobId::new_random();
        let call = tokio::spawn(async move { runtime.observe(job).await });
        let waiting = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("icarus-{job}-checker-1"),
                         "labels": {JOB_ID: job.to_string(), ROLE: "checker", ATTEMPT: "1"}},
            "status": {"phase": "Pending"}
        });
        expect(
            &mut server,
            Method::GET,
            "/api/v1/namespaces/icarus/pods",
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [waiting]}),
        )
        .await;
        expect(
            &mut server,
            Method::GET,
            &format!("/api/v1/namespaces/icarus/persistentvolumeclaims/icarus-{job}-workspace"),
            404,
            api_error(404, "NotFound"),
        )
        .await;
        let observed = call.await.unwrap().unwrap();
        let why = format!(
            "the workspace claim icarus-{job}-workspace was deleted: the agent cannot start"
        );
        assert_eq!(observed[0].state, WorkloadState::Unstartable { why });
    }

    #[tokio::test]
    async fn mock_api_observing_lists_the_jobs_pods_and_reads_a_failed_ones_log() {
        let (runtime, mut server) = runtime();
        let job = JobId::new_random();
        let call = tokio::spawn(async move { runtime.observe(job).await });
        let failed_pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("icarus-{job}-builder-1"),
                         "labels": {JOB_ID: job.to_string(), ROLE: "builder", ATTEMPT: "1"}},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}
        });
        expect(
            &mut server,
            Method::GET,
            "/api/v1/namespaces/icarus/pods",
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [failed_pod]}),
        )
        .await;
        let (request, respond) = server.next_request().await.unwrap();
        assert_eq!(
            request.uri().path(),
            format!("/api/v1/namespaces/icarus/pods/icarus-{job}-builder-1/log")
        );
        respond.send_response(
            Response::builder()
                .body(Body::from(b"traceback: boom\n".to_vec()))
                .unwrap(),
        );
        let observed = call.await.unwrap().unwrap();
        assert_eq!(observed.len(), 1);
        assert_eq!(
            observed[0].state,
            WorkloadState::Exited {
                exit_code: 3,
                oom_killed: false
            }
        );
        assert_eq!(observed[0].log_tail.as_deref(), Some("traceback: boom\n"));
    }

    #[tokio::test]
    async fn mock_api_pods_of_a_job_from_an_icarusjob_are_owned_by_it() {
        use crate::cluster::crd::{IcarusJob, IcarusJobSpec};
        let (runtime, mut server) = runtime();
        let job = JobId::new_random();
        let mut resource = IcarusJob::new("add-logging", IcarusJobSpec::new("t"));
        resource.metadata.uid = Some(job.to_string());
        let owners = ResourceIndex::default();
        owners.remember(job, resource);
        let runtime = runtime.owned_by(owners);
        let call = tokio::spawn(async move { runtime.start(&spec(job, Role::Builder)).await });
        let pod = expect(
            &mut server,
            Method::POST,
            "/api/v1/namespaces/icarus/pods",
            201,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}),
        )
        .await;
        call.await.unwrap().unwrap();
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "IcarusJob");
        assert_eq!(owner["name"], "add-logging");
        assert_eq!(owner["uid"], job.to_string());
        assert_eq!(owner["controller"], true);
    }
}
