//! Kubernetes mode end to end, against the API server test double in
//! [`crate::kube_api`] (no cluster runs here): the orchestrator is started as
//! `icarus serve` starts it with `kubernetes.enabled` (Lease campaign, gated
//! controller, IcarusJob sync loops), the test plays kubectl (creating and
//! merge-patching IcarusJobs), the kubelet (moving Pods through their phases,
//! exit codes and logs) and the agents (posting to the callback URL a Pod is
//! given), and every outcome is read back from the API server's state. The
//! REST routes, which in this mode write the IcarusJob before the store, are
//! called as named token holders.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use icarus::cluster::crd::{IcarusJob, IcarusJobSpec};
use icarus::config::{AccessRole, Config};
use icarus::job::{JobId, JobSource, ProjectPhase};
use icarus::leadership::{Election, Leadership, Term};
use icarus::serve::Orchestrator;
use icarus::serve::kubernetes::KubernetesMode;
use icarus::source::EMPTY_TREE;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::watch;

use crate::git::Remote;
use crate::kube_api::{Fault, KubeApi, ORCHESTRATOR, Recorded};
use crate::support::{self, init_test_logging};

const JOBS: &str = "icarusjobs.icarus.dev";
const PODS: &str = "pods";
const CLAIMS: &str = "persistentvolumeclaims";
const EVENTS: &str = "events.events.k8s.io";
/// How long any condition may take to be reached.
const PATIENCE: Duration = Duration::from_secs(20);
const SUBMITTED_BY: &str = "icarus.dev/submitted-by";

/// The API token of `sam`, a submitter (see [`with_tokens`]).
const SAM: &str = "submitter-sam-0123456789";
/// The API token of `ann`, an approver.
const ANN: &str = "approver-ann-0123456789";

/// Authentication on, with `sam` (submitter) and `ann` (approver).
fn with_tokens(config: &mut Config) {
    config.auth.enabled = true;
    config.auth.tokens = vec![
        support::token("sam", AccessRole::Submitter, SAM),
        support::token("ann", AccessRole::Approver, ANN),
    ];
}

/// One orchestrator in Kubernetes mode and the API server double it talks to.
struct Cluster {
    kube: KubeApi,
    /// The test as kubectl.
    jobs: Api<IcarusJob>,
    /// The test as the kubelet (and as anyone deleting a Pod).
    kubelet: Api<Pod>,
    rest: support::Api,
    orchestrator: Option<Orchestrator>,
    /// What the orchestrator was started with (a second replica shares it).
    config: Config,
    _dir: TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(|_| {}).await
    }

    /// As `icarus serve` does with `kubernetes.enabled` (src/cli.rs).
    async fn start_with(adjust: impl FnOnce(&mut Config)) -> Cluster {
        init_test_logging();
        let kube = KubeApi::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            support::test_config(&format!("sqlite://{}/icarus.db", dir.path().display()));
        config.workspace.base_path = dir.path().join("workspaces");
        config.kubernetes.enabled = true;
        config.kubernetes.namespace = crate::kube_api::NAMESPACE.to_owned();
        // Empty, the Pods are handed the API's own address, which the test,
        // playing the agents, can reach (a cluster needs the Service's name
        // here, which `Config::validate` insists on; nothing here validates).
        config.agents.callback_base_url = String::new();
        adjust(&mut config);

        // As `icarus serve` starts it in this mode.
        let (mode, runtime) = KubernetesMode::with_client(kube.client(), &config);
        let orchestrator = mode.start(&config, runtime).await.unwrap();
        Cluster {
            jobs: Api::default_namespaced(kube.client_as("kubectl")),
            kubelet: Api::default_namespaced(kube.client_as("kubelet")),
            rest: support::Api::new(&orchestrator),
            kube,
            orchestrator: Some(orchestrator),
            config,
            _dir: dir,
        }
    }

    /// A second replica on the same database and API server that does not
    /// lead (the Lease is the first one's): its REST API serves, its
    /// controller waits, and like any follower it runs no IcarusJob watch, so
    /// its registry of resources is empty.
    async fn follower(&self) -> Follower {
        let (mode, runtime) = KubernetesMode::with_client(self.kube.client(), &self.config);
        let (leading, terms) = watch::channel(None);
        let election = Election::Given(Leadership::given(terms));
        let orchestrator = Orchestrator::start(&self.config, mode.parts(runtime, election))
            .await
            .unwrap();
        Follower {
            rest: support::Api::new(&orchestrator),
            orchestrator: Some(orchestrator),
            _leading: leading,
        }
    }

    /// Waits until the leader's IcarusJob watch is up: its first list has
    /// been brought into the store and it watches for changes.
    async fn wait_for_the_resource_watch(&self) {
        self.until("the IcarusJob watch started", |kube| {
            kube.requests()
                .iter()
                .any(|r| r.actor == ORCHESTRATOR && r.resource == JOBS && r.verb == "watch")
                .then_some(())
        })
        .await;
    }

    /// `POST /jobs/spawn` as `token`'s holder; returns the job id and the
    /// name of the IcarusJob whose uid it is.
    async fn spawn_as(&self, token: &str, task: &str) -> (JobId, String) {
        self.spawn_body_as(token, json!({"task": task, "project_path": "/workspace"}))
            .await
    }

    /// `POST /jobs/spawn` of `body` as `token`'s holder; returns the job id
    /// and the name of the IcarusJob whose uid it is.
    async fn spawn_body_as(&self, token: &str, body: Value) -> (JobId, String) {
        let (code, body) = self
            .rest
            .as_holder_of(token)
            .post("/jobs/spawn", body)
            .await;
        assert_eq!(code, 201, "{body}");
        let id: JobId = body["job_id"].as_str().unwrap().parse().unwrap();
        let resource = self
            .kube
            .objects(JOBS)
            .into_iter()
            .find(|job| job["metadata"]["uid"] == id.to_string())
            .unwrap_or_else(|| panic!("no IcarusJob has the uid {id}: {}", self.kube.summary()));
        (id, name_of(&resource))
    }

    /// `kubectl apply` of a new IcarusJob; its uid is the job id.
    async fn submit(&self, name: &str, task: &str) -> JobId {
        self.submit_spec(name, IcarusJobSpec::new(task)).await
    }

    /// `kubectl apply` of a new IcarusJob with `spec`; its uid is the job id.
    async fn submit_spec(&self, name: &str, spec: IcarusJobSpec) -> JobId {
        let resource = IcarusJob::new(name, spec);
        let created = self
            .jobs
            .create(&PostParams::default(), &resource)
            .await
            .unwrap();
        created.metadata.uid.unwrap().parse().unwrap()
    }

    /// `kubectl patch ijob NAME --type merge -p '{"spec": ...}'`.
    async fn patch_spec(&self, name: &str, spec: Value) {
        self.jobs
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Polls `probe` every 25 ms until it gives a value; fails after [`PATIENCE`]
    /// with what the API server holds.
    async fn until<T>(&self, what: &str, mut probe: impl FnMut(&KubeApi) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(value) = probe(&self.kube) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not reached within {PATIENCE:?}; the API server holds {}",
                self.kube.summary()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the IcarusJob's `.status.phase` is `phase`; returns the resource.
    async fn wait_for_phase(&self, name: &str, phase: &str) -> Value {
        self.until(&format!("IcarusJob {name} {phase}"), |kube| {
            kube.object(JOBS, name)
                .filter(|job| job["status"]["phase"] == phase)
        })
        .await
    }

    /// Waits until the Pod exists; returns it.
    async fn wait_for_pod(&self, name: &str) -> Value {
        self.until(&format!("Pod {name} created"), |kube| {
            kube.object(PODS, name)
        })
        .await
    }

    /// Waits until no Pod of the job is left.
    async fn wait_for_no_pods(&self, id: JobId) {
        self.until(&format!("the Pods of {id} removed"), |kube| {
            pods_of(kube, id).is_empty().then_some(())
        })
        .await;
    }

    /// Waits until neither of the job's claims is left.
    async fn wait_for_no_claims(&self, id: JobId) {
        self.until(&format!("the claims of {id} deleted"), |kube| {
            let left = [workspace_claim(id), repository_claim(id)]
                .iter()
                .any(|claim| kube.object(CLAIMS, claim).is_some());
            (!left).then_some(())
        })
        .await;
    }

    /// The kubelet started the Pod's container.
    async fn run(&self, pod: &str) {
        let status = json!({"status": {
            "phase": "Running",
            "containerStatuses": [container_status(json!({"running": {"startedAt": now()}}), true)],
        }});
        self.kubelet
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// The kubelet saw the Pod's container end with `code` (`reason` as it
    /// reports it: `Completed`, `Error`, `OOMKilled`).
    async fn exit(&self, pod: &str, code: i32, reason: &str) {
        let terminated = json!({"terminated": {
            "exitCode": code, "reason": reason, "startedAt": now(), "finishedAt": now(),
        }});
        let status = json!({"status": {
            "phase": if code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [container_status(terminated, false)],
        }});
        self.kubelet
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// Plays an agent: posts `report` to the callback URL in the Pod's
    /// `ORCHESTRATOR_CALLBACK`, exactly as given.
    async fn report(&self, pod: &Value, report: Value) -> (u16, Value) {
        let url = env_of(pod, "ORCHESTRATOR_CALLBACK");
        let response = self
            .rest
            .client
            .post(url)
            .json(&report)
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        (code, response.json().await.unwrap_or(Value::Null))
    }

    /// From a new IcarusJob to `awaiting_approval`: the builder exits 0,
    /// its work is recorded, the checker posts its audit report and exits 0.
    /// Returns the checker Pod.
    async fn through_checks(&self, name: &str, id: JobId) -> Value {
        self.build(name, id).await;
        self.finish_git_pod(id, "snapshot", &empty_snapshot()).await;
        let checker = self.check(name, id).await;
        self.wait_for_phase(name, "awaiting_approval").await;
        checker
    }

    /// The builder runs and exits 0; the snapshot of its work is next.
    async fn build(&self, name: &str, id: JobId) {
        let builder = self.wait_for_pod(&pod_name(id, "builder")).await;
        self.run(&name_of(&builder)).await;
        self.wait_for_phase(name, "building").await;
        self.exit(&name_of(&builder), 0, "Completed").await;
    }

    /// Once the builder's work is recorded: the checker posts its audit
    /// report and exits 0. Returns the checker Pod.
    async fn check(&self, name: &str, id: JobId) -> Value {
        let checker = self.wait_for_pod(&pod_name(id, "checker")).await;
        self.wait_for_phase(name, "checking").await;
        self.run(&name_of(&checker)).await;
        let audit =
            json!({"status": "completed", "audit_report": {"summary": "clean", "files": 2}});
        let (code, body) = self.report(&checker, audit).await;
        assert_eq!(code, 200, "the checker's report is accepted: {body}");
        self.exit(&name_of(&checker), 0, "Completed").await;
        checker
    }

    /// Plays a git Pod (`icarus source-step`) to its end: exit 0 with
    /// `outcome` as its termination message, as the command writes it.
    async fn finish_git_pod(&self, id: JobId, step: &str, outcome: &Value) {
        let pod = self.wait_for_pod(&format!("icarus-{id}-git-{step}")).await;
        let terminated = json!({"terminated": {
            "exitCode": 0, "reason": "Completed", "message": outcome.to_string(),
            "startedAt": now(), "finishedAt": now(),
        }});
        let status = json!({"status": {
            "phase": "Succeeded",
            "containerStatuses": [container_status(terminated, false)],
        }});
        self.kubelet
            .patch_status(
                &name_of(&pod),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
    }

    /// The Event reasons recorded on the IcarusJob, oldest first.
    fn event_reasons(&self, name: &str) -> Vec<(String, String)> {
        let mut events: Vec<Value> = self
            .kube
            .objects(EVENTS)
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name)
            .collect();
        events.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
        });
        events
            .iter()
            .map(|e| {
                let text = |field: &str| e[field].as_str().unwrap_or_default().to_owned();
                (text("type"), text("reason"))
            })
            .collect()
    }

    /// Waits until the controller has listed the job's Pods (one reconcile
    /// observes once) in a request made after the first `since` in the
    /// journal. Reconciles of a job never overlap, so every reconcile that
    /// observed the Pods before then has finished.
    async fn wait_for_a_look_since(&self, id: JobId, since: usize) {
        let selector = format!("icarus.dev/job-id={id}");
        self.until("the controller observed the Pods again", |kube| {
            kube.requests()[since..]
                .iter()
                .any(|r| {
                    r.actor == ORCHESTRATOR
                        && r.resource == PODS
                        && r.verb == "list"
                        && r.query.get("labelSelector") == Some(&selector)
                        && r.code == 200
                })
                .then_some(())
        })
        .await;
    }

    /// The orchestrator's requests so far.
    fn orchestrator_requests(&self) -> Vec<Recorded> {
        self.kube
            .requests()
            .into_iter()
            .filter(|r| r.actor == ORCHESTRATOR)
            .collect()
    }

    async fn shut_down(mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.stop().await.unwrap();
        }
    }
}

/// A replica that does not lead; see [`Cluster::follower`].
struct Follower {
    rest: support::Api,
    orchestrator: Option<Orchestrator>,
    _leading: watch::Sender<Option<Term>>,
}

impl Follower {
    async fn shut_down(mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.stop().await.unwrap();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.abort();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.abort();
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn container_status(state: Value, ready: bool) -> Value {
    json!({
        "name": "agent", "image": "icarus-agent", "imageID": "", "ready": ready,
        "restartCount": 0, "state": state,
    })
}

/// `icarus-<job>-<role>-1`, the Pod of a job's first attempt.
fn pod_name(id: JobId, role: &str) -> String {
    format!("icarus-{id}-{role}-1")
}

fn workspace_claim(id: JobId) -> String {
    format!("icarus-{id}-workspace")
}

fn repository_claim(id: JobId) -> String {
    format!("icarus-{id}-repository")
}

/// What a snapshot Pod reports for a job without a source whose builder
/// wrote nothing: the empty tree, an empty diff.
fn empty_snapshot() -> Value {
    json!({"snapshot": {"tree": EMPTY_TREE,
                        "diff": {"text": "", "truncated": false}}})
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap().to_owned()
}

fn pods_of(kube: &KubeApi, id: JobId) -> Vec<Value> {
    kube.objects(PODS)
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["icarus.dev/job-id"] == id.to_string())
        .collect()
}

fn env_of(pod: &Value, name: &str) -> String {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("the Pod has no {name}"))
        .to_owned()
}

fn condition<'a>(job: &'a Value, kind: &str) -> &'a Value {
    job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {job}"))
}

/// Asserts that the object is owned by the IcarusJob, as the garbage collector reads it.
fn assert_owned_by(object: &Value, job: &str, id: JobId) {
    let owners = object["metadata"]["ownerReferences"]
        .as_array()
        .unwrap_or_else(|| panic!("no ownerReferences: {}", object["metadata"]));
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = &owners[0];
    assert_eq!(owner["apiVersion"], "icarus.dev/v1alpha1");
    assert_eq!(owner["kind"], "IcarusJob");
    assert_eq!(owner["name"], job);
    assert_eq!(owner["uid"], id.to_string());
    assert_eq!(owner["controller"], true);
}

/// `(group, resource[/sub], verb)` of a request, as RBAC names it.
fn as_grant(request: &Recorded) -> (String, String, String) {
    let (plural, group) = request
        .resource
        .split_once('.')
        .unwrap_or((request.resource.as_str(), ""));
    let resource = match &request.subresource {
        Some(sub) => format!("{plural}/{sub}"),
        None => plural.to_owned(),
    };
    (group.to_owned(), resource, request.verb.to_owned())
}

/// Asserts that the Role in `deploy/rbac.yaml` grants every one of `requests`.
fn assert_granted(requests: &[Recorded]) {
    let grants = crate::rbac::granted();
    for request in requests {
        assert!(
            grants.contains(&as_grant(request)),
            "not granted by deploy/rbac.yaml: {} {} ({:?})",
            request.method,
            request.path,
            as_grant(request)
        );
    }
}

#[tokio::test]
async fn mock_api_an_icarusjob_runs_its_agents_as_pods_and_completes_when_approved_in_its_spec() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("add-logging", "Add logging").await;

    // The workspace claim and the builder Pod, owned by the IcarusJob.
    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    assert_owned_by(&builder, "add-logging", id);
    let spec = &builder["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(
        spec["activeDeadlineSeconds"], 600,
        "agents.builder.timeout_seconds"
    );
    assert_eq!(
        spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
        workspace_claim(id)
    );
    assert_eq!(
        spec["volumes"][0]["persistentVolumeClaim"]["readOnly"],
        false
    );
    assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], false);
    assert_eq!(builder["metadata"]["labels"]["icarus.dev/role"], "builder");
    assert_eq!(env_of(&builder, "JOB_ID"), id.to_string());
    assert_eq!(env_of(&builder, "TASK"), "Add logging");
    let callback = env_of(&builder, "ORCHESTRATOR_CALLBACK");
    assert!(
        callback.starts_with(&format!(
            "{}/jobs/{id}/callback?role=builder&attempt=1&token=",
            cluster.rest.base
        )),
        "{callback}"
    );
    let claim = cluster
        .kube
        .object(CLAIMS, &workspace_claim(id))
        .expect("the workspace claim was created");
    assert_owned_by(&claim, "add-logging", id);
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");

    let checker = cluster.through_checks("add-logging", id).await;
    let spec = &checker["spec"];
    assert_owned_by(&checker, "add-logging", id);
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(
        spec["activeDeadlineSeconds"], 300,
        "agents.checker.timeout_seconds"
    );
    let volume = &spec["volumes"][0]["persistentVolumeClaim"];
    assert_eq!(
        volume["claimName"],
        workspace_claim(id),
        "the builder's workspace"
    );
    assert_eq!(volume["readOnly"], true, "the checker's claim is read-only");
    let mount = &spec["containers"][0]["volumeMounts"][0];
    assert_eq!(
        (mount["mountPath"].as_str(), mount["readOnly"].as_bool()),
        (Some("/workspace"), Some(true))
    );

    let waiting = cluster.kube.object(JOBS, "add-logging").unwrap();
    assert_eq!(condition(&waiting, "AwaitingApproval")["status"], "True");
    assert_eq!(waiting["status"]["builder"]["exitCode"], 0);
    assert_eq!(
        waiting["status"]["checker"]["podName"],
        pod_name(id, "checker")
    );
    let (code, audit) = cluster.rest.get(&format!("/jobs/{id}/audit")).await;
    assert_eq!(code, 200);
    assert_eq!(audit["audit_report"]["summary"], "clean");

    cluster
        .patch_spec(
            "add-logging",
            json!({"approval": {"approved": true, "comment": "LGTM"}}),
        )
        .await;
    let done = cluster.wait_for_phase("add-logging", "completed").await;
    assert_eq!(condition(&done, "Ready")["status"], "True");
    assert_eq!(condition(&done, "AwaitingApproval")["status"], "False");
    assert_eq!(
        done["status"]["observedGeneration"], done["metadata"]["generation"],
        "the status describes the approved spec"
    );
    cluster.wait_for_no_pods(id).await;
    for claim in [workspace_claim(id), repository_claim(id)] {
        let kept = cluster.kube.object(CLAIMS, &claim);
        let kept = kept.unwrap_or_else(|| panic!("a completed job keeps {claim}"));
        assert_owned_by(&kept, "add-logging", id);
    }
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["approval"]["decided_by"], "kubernetes");

    let expected: Vec<(String, String)> = [
        "Admitted",
        "BuilderSucceeded",
        "CheckerSucceeded",
        "Approved",
        "Completed",
    ]
    .iter()
    .map(|r| ("Normal".to_owned(), (*r).to_owned()))
    .collect();
    cluster
        .until("an Event for every transition", |_| {
            (cluster.event_reasons("add-logging") == expected).then_some(())
        })
        .await;

    // Every call the orchestrator made is one the Role grants, and status
    // writes are merge patches of the status subresource.
    let requests = cluster.orchestrator_requests();
    assert_granted(&requests);
    let pod_watch = requests
        .iter()
        .find(|r| r.resource == PODS && r.verb == "watch")
        .expect("the runtime watches Pods");
    assert_eq!(
        pod_watch.query.get("labelSelector").map(String::as_str),
        Some("app.kubernetes.io/managed-by=icarus"),
        "only its own"
    );
    let selector = format!("icarus.dev/job-id={id}");
    assert!(
        requests.iter().any(|r| r.resource == PODS
            && r.verb == "list"
            && r.query.get("labelSelector") == Some(&selector)),
        "a job's Pods are listed by its label"
    );
    let job_writes: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.resource == JOBS && !matches!(r.verb, "list" | "watch"))
        .collect();
    assert!(!job_writes.is_empty());
    for write in job_writes {
        assert_eq!(
            (write.verb, write.subresource.as_deref()),
            ("patch", Some("status"))
        );
        assert_eq!(
            write.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
    }
    cluster.shut_down().await;
}

async fn failing_builder(code: i32, reason: &str, log: &str) -> (Cluster, JobId, Value) {
    let cluster = Cluster::start().await;
    let id = building(&cluster).await;
    let builder = pod_name(id, "builder");
    cluster.kube.set_log(&builder, log);
    cluster.exit(&builder, code, reason).await;
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    (cluster, id, failed)
}

#[tokio::test]
async fn mock_api_a_builder_pod_that_exits_with_code_3_fails_the_icarusjob_naming_the_builder_and_code()
 {
    let (cluster, id, failed) = failing_builder(3, "Error", "cloning\nTraceback: boom\n").await;
    let status = &failed["status"];
    assert_eq!(status["reason"], "BuilderFailed");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("builder exited with code 3"),
        "{message}"
    );
    assert!(
        message.contains("Traceback: boom"),
        "the log tail: {message}"
    );
    assert_eq!(status["builder"]["exitCode"], 3);
    assert_eq!(condition(&failed, "Failed")["status"], "True");
    assert_eq!(condition(&failed, "Failed")["message"], message);

    cluster.wait_for_no_pods(id).await;
    assert!(
        cluster
            .kube
            .object(PODS, &pod_name(id, "checker"))
            .is_none()
            && !cluster.orchestrator_requests().iter().any(
                |r| r.verb == "create" && r.body["metadata"]["name"] == pod_name(id, "checker")
            ),
        "no checker is started after a failed build"
    );
    let (_, logs) = cluster.rest.get(&format!("/jobs/{id}/logs")).await;
    assert!(
        logs[0]["log"].as_str().unwrap().contains("Traceback: boom"),
        "the removed builder's log was kept: {logs}"
    );
    cluster
        .until("a Warning Event for the failure", |_| {
            let events = cluster.event_reasons("add-logging");
            events
                .contains(&("Warning".to_owned(), "BuilderFailed".to_owned()))
                .then_some(())
        })
        .await;
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_builder_pod_killed_for_memory_fails_the_icarusjob_as_oom() {
    let (cluster, id, failed) = failing_builder(137, "OOMKilled", "allocating\n").await;
    assert_eq!(failed["status"]["reason"], "BuilderOOMKilled");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("builder was killed for running out of memory (exit code 137)"),
        "{message}"
    );
    cluster.wait_for_no_pods(id).await;
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_builder_past_its_deadline_fails_the_icarusjob_and_its_pod_is_deleted() {
    let cluster = Cluster::start_with(|config| config.agents.builder.timeout_seconds = 1).await;
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    assert_eq!(
        builder["spec"]["activeDeadlineSeconds"], 1,
        "the kubelet enforces the deadline too"
    );
    // The container runs on and never exits: the controller's deadline ends it.
    cluster.run(&name_of(&builder)).await;
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    assert_eq!(failed["status"]["reason"], "BuilderTimedOut");
    assert_eq!(
        failed["status"]["message"],
        "builder exceeded its deadline of 1 s"
    );
    cluster.wait_for_no_pods(id).await;
    assert!(
        cluster
            .orchestrator_requests()
            .iter()
            .any(|r| r.verb == "delete"
                && r.resource == PODS
                && r.name.as_deref() == Some(name_of(&builder).as_str())),
        "the orchestrator deleted the builder Pod"
    );
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_cancel_in_the_spec_while_building_cancels_the_icarusjob_and_removes_its_pods() {
    let cluster = Cluster::start().await;
    let id = building(&cluster).await;

    cluster
        .patch_spec("add-logging", json!({"cancel": true}))
        .await;
    let cancelled = cluster.wait_for_phase("add-logging", "cancelled").await;
    assert_eq!(cancelled["status"]["reason"], "CancelRequested");
    cluster.wait_for_no_pods(id).await;
    cluster.wait_for_no_claims(id).await;
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "cancelled");
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_rejection_in_the_spec_rejects_the_icarusjob_and_deletes_both_its_claims() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("add-logging", "Add logging").await;
    cluster.through_checks("add-logging", id).await;
    assert!(cluster.kube.object(CLAIMS, &workspace_claim(id)).is_some());
    assert!(cluster.kube.object(CLAIMS, &repository_claim(id)).is_some());

    cluster
        .patch_spec(
            "add-logging",
            json!({"approval": {"approved": false, "comment": "no"}}),
        )
        .await;
    let rejected = cluster.wait_for_phase("add-logging", "rejected").await;
    assert_eq!(rejected["status"]["reason"], "Rejected");
    cluster.wait_for_no_claims(id).await;
    let deleted: Vec<Option<String>> = cluster
        .orchestrator_requests()
        .iter()
        .filter(|r| r.resource == CLAIMS && r.verb == "delete" && r.code == 200)
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(
        deleted,
        [Some(workspace_claim(id)), Some(repository_claim(id))],
        "the orchestrator deleted both, the workspace first"
    );
    cluster.wait_for_no_pods(id).await;
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["approval"]["approved"], false);
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_an_icarusjob_left_undecided_past_its_approval_deadline_expires_and_its_claims_go()
{
    let cluster = Cluster::start_with(|c| c.approval.timeout_seconds = 1).await;
    let id = cluster.submit("add-logging", "Add logging").await;
    cluster.through_checks("add-logging", id).await;
    let expired = cluster.wait_for_phase("add-logging", "expired").await;
    assert_eq!(expired["status"]["reason"], "ApprovalTimedOut");
    cluster.wait_for_no_claims(id).await;
    cluster.wait_for_no_pods(id).await;
    let said = ("Normal".to_owned(), "ApprovalTimedOut".to_owned());
    cluster
        .until("a Kubernetes Event says why", |_| {
            cluster
                .event_reasons("add-logging")
                .contains(&said)
                .then_some(())
        })
        .await;
    cluster.shut_down().await;
}

/// The status the REST API shows for job `id` once `done` holds of it.
async fn rest_status_once(cluster: &Cluster, id: JobId, done: impl Fn(&Value) -> bool) -> Value {
    crate::support::eventually(PATIENCE, || async {
        let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
        done(&status).then_some(status)
    })
    .await
}

#[tokio::test]
async fn mock_api_a_gitops_list_of_approvals_completes_the_icarusjob_once_enough_distinct_people_approved()
 {
    let cluster = Cluster::start().await;
    let id = cluster
        .submit_spec(
            "add-logging",
            IcarusJobSpec {
                required_approvals: Some(2),
                ..IcarusJobSpec::new("Add logging")
            },
        )
        .await;
    cluster.through_checks("add-logging", id).await;

    // alice twice is one person: the job waits for a second.
    let alice = json!({"approved": true, "comment": "LGTM", "by": "alice"});
    cluster
        .patch_spec("add-logging", json!({"approvals": [alice, alice]}))
        .await;
    let status = rest_status_once(&cluster, id, |s| s["approved_by"] == json!(["alice"])).await;
    assert_eq!(status["required_approvals"], 2);
    let since = cluster.kube.requests().len();
    cluster.wait_for_a_look_since(id, since).await;
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "awaiting_approval", "{status}");

    let bob = json!({"approved": true, "by": "bob"});
    cluster
        .patch_spec("add-logging", json!({"approvals": [alice, alice, bob]}))
        .await;
    cluster.wait_for_phase("add-logging", "completed").await;
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["approved_by"], json!(["alice", "bob"]));
    assert_eq!(status["approval"]["decided_by"], "bob");
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_under_separation_of_duties_an_approval_in_the_spec_by_the_rest_submitter_is_not_taken()
 {
    let cluster = Cluster::start_with(|c| {
        with_tokens(c);
        c.auth.separation_of_duties = true;
    })
    .await;
    cluster.wait_for_the_resource_watch().await;
    let (id, name) = cluster.spawn_as(SAM, "Add logging").await;
    cluster.through_checks(&name, id).await;
    cluster
        .patch_spec(
            &name,
            json!({"approvals": [
                {"approved": true, "comment": "mine", "by": "sam"},
                {"approved": true, "comment": "reviewed", "by": "ann"},
            ]}),
        )
        .await;
    cluster.wait_for_phase(&name, "completed").await;
    let (_, status) = cluster
        .rest
        .as_holder_of(ANN)
        .get(&format!("/jobs/{id}/status"))
        .await;
    assert_eq!(status["approved_by"], json!(["ann"]), "{status}");
    assert_eq!(
        support::each(&status["approvals"], "decided_by"),
        ["ann"],
        "sam's own approval was not taken"
    );
    cluster.shut_down().await;
}

/// Submits a job, runs its builder Pod and deletes it once the controller
/// has seen it running: someone (or something) removed it behind Icarus's back.
async fn delete_the_running_builder(cluster: &Cluster) -> (JobId, String) {
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    cluster.run(&builder).await;
    // Once the controller has seen the Pod (its name is in the status) and
    // looked at it running...
    let since = cluster.kube.requests().len();
    cluster
        .until("the builder Pod observed", |kube| {
            kube.object(JOBS, "add-logging")
                .filter(|job| job["status"]["builder"]["podName"] == builder)
        })
        .await;
    cluster.wait_for_a_look_since(id, since).await;
    // ...someone deletes it.
    cluster
        .kubelet
        .delete(&builder, &DeleteParams::default())
        .await
        .unwrap();
    (id, builder)
}

#[tokio::test]
async fn mock_api_a_builder_pod_deleted_while_building_runs_again_as_the_next_attempt() {
    let cluster = Cluster::start_with(|c| c.agents.retry_backoff_seconds = 0.1).await;
    let (id, builder) = delete_the_running_builder(&cluster).await;
    let retry = format!("icarus-{id}-builder-2");
    cluster.wait_for_pod(&retry).await;
    // The IcarusJob's status follows the store's a moment later.
    let job = cluster
        .until("the IcarusJob shows the second attempt", |kube| {
            kube.object(JOBS, "add-logging")
                .filter(|job| job["status"]["builder"]["podName"] == retry.as_str())
        })
        .await;
    assert_eq!(job["status"]["phase"], "building");
    assert_eq!(job["status"]["reason"], "BuilderRetried", "{job}");
    assert_eq!(job["status"]["attempt"], 2, "{job}");
    assert!(cluster.kube.object(PODS, &builder).is_none());
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_builder_pod_deleted_on_its_last_attempt_fails_the_icarusjob_as_vanished() {
    let cluster = Cluster::start_with(|c| c.agents.max_attempts = 1).await;
    let (id, builder) = delete_the_running_builder(&cluster).await;
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    assert_eq!(failed["status"]["reason"], "BuilderVanished");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&builder) && message.contains("disappeared"),
        "{message}"
    );
    cluster.wait_for_no_pods(id).await;
    assert!(
        cluster.kube.object(CLAIMS, &workspace_claim(id)).is_some(),
        "a failed job keeps its workspace"
    );
    cluster.shut_down().await;
}

/// A Pod waiting on a claim that is gone can never be scheduled: the job
/// fails at once, saying so, instead of at the agent's deadline.
#[tokio::test]
async fn mock_api_a_deleted_workspace_claim_fails_the_agent_waiting_on_it_saying_so() {
    let cluster = Cluster::start().await;
    let id = building(&cluster).await;
    let builder = pod_name(id, "builder");
    cluster.exit(&builder, 0, "Completed").await;
    cluster
        .finish_git_pod(id, "snapshot", &empty_snapshot())
        .await;
    cluster.wait_for_phase("add-logging", "checking").await;
    cluster.wait_for_pod(&pod_name(id, "checker")).await;

    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::default_namespaced(cluster.kube.client_as("kubectl"));
    claims
        .delete(&workspace_claim(id), &DeleteParams::default())
        .await
        .unwrap();
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    assert_eq!(failed["status"]["reason"], "CheckerStartFailed");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "workspace claim {} was deleted",
            workspace_claim(id)
        )),
        "{message}"
    );
    cluster.shut_down().await;
}

/// A git Pod waits on the repository claim as an agent waits on the
/// workspace claim: once the claim is gone, the step fails at once, naming
/// it, instead of at the git Pod's deadline.
#[tokio::test]
async fn mock_api_a_deleted_repository_claim_fails_the_git_pod_waiting_on_it_saying_so() {
    let cluster = Cluster::start().await;
    let id = building(&cluster).await;
    cluster.exit(&pod_name(id, "builder"), 0, "Completed").await;
    let snapshot = cluster.wait_for_pod(&git_pod_name(id, "snapshot")).await;

    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::default_namespaced(cluster.kube.client_as("kubectl"));
    claims
        .delete(&repository_claim(id), &DeleteParams::default())
        .await
        .unwrap();
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    assert_eq!(failed["status"]["reason"], "SnapshotFailed");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "repository claim {} was deleted: the git Pod cannot start",
            repository_claim(id)
        )),
        "{message}"
    );
    cluster
        .until("the snapshot Pod deleted", |kube| {
            kube.object(PODS, &name_of(&snapshot))
                .is_none()
                .then_some(())
        })
        .await;
    cluster.shut_down().await;
}

/// The orchestrator's writes of the IcarusJob's status, oldest first.
fn status_writes(cluster: &Cluster) -> Vec<Recorded> {
    cluster
        .orchestrator_requests()
        .into_iter()
        .filter(|r| r.resource == JOBS && r.subresource.as_deref() == Some("status"))
        .collect()
}

#[tokio::test]
async fn mock_api_a_status_write_answered_409_conflict_is_made_again_and_the_status_converges() {
    let cluster = Cluster::start().await;
    cluster.kube.fail_next(Fault {
        verb: "patch",
        resource: JOBS,
        subresource: Some("status"),
        code: 409,
        message: None,
        times: 1,
        only_if: None,
    });
    let id = building(&cluster).await;
    let builder = pod_name(id, "builder");
    cluster.exit(&builder, 3, "Error").await;
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    assert_eq!(failed["status"]["reason"], "BuilderFailed");
    assert_eq!(failed["status"]["builder"]["exitCode"], 3);

    let writes = status_writes(&cluster);
    assert_eq!(
        (writes[0].code, writes[0].body["status"]["phase"].as_str()),
        (409, Some("pending")),
        "the first write, of the pending job, was refused"
    );
    assert!(
        writes[1..].iter().all(|w| w.code == 200),
        "{:?}",
        writes.iter().map(|w| w.code).collect::<Vec<_>>()
    );
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(
        status["status"], "failed",
        "the store and the resource agree"
    );
    cluster.shut_down().await;
}

/// The write of a final phase is the last one the store causes: if the API
/// server refuses it, the status writer must try again by itself.
#[tokio::test]
async fn mock_api_a_refused_status_write_of_a_final_phase_is_made_again() {
    let cluster = Cluster::start().await;
    cluster.kube.fail_next(Fault {
        verb: "patch",
        resource: JOBS,
        subresource: Some("status"),
        code: 409,
        message: None,
        times: 1,
        only_if: Some(|request| request.body["status"]["phase"] == "failed"),
    });
    let id = building(&cluster).await;
    let builder = pod_name(id, "builder");
    cluster.exit(&builder, 3, "Error").await;
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    assert_eq!(failed["status"]["reason"], "BuilderFailed");
    assert!(status_writes(&cluster).iter().any(|w| w.code == 409));
    cluster.shut_down().await;
}

/// On a cluster a Pod is Pending until the kubelet has pulled its image and
/// started it, often for seconds; the Pod was created, and creating it
/// again cannot help.
#[tokio::test]
async fn mock_api_a_pod_pending_on_the_kubelet_is_not_created_over_and_over() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    // The image is being pulled: a second passes with the Pod Pending.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let creates = cluster
        .orchestrator_requests()
        .iter()
        .filter(|r| r.verb == "create" && r.resource == PODS)
        .count();
    assert!(
        creates <= 3,
        "the builder Pod was created {creates} times while Pending"
    );
    cluster.run(&builder).await;
    cluster.exit(&builder, 0, "Completed").await;
    cluster
        .finish_git_pod(id, "snapshot", &empty_snapshot())
        .await;
    cluster.wait_for_phase("add-logging", "checking").await;
    cluster.shut_down().await;
}

/// The orchestrator's requests about IcarusJobs (not their status) from the
/// `since`th request of the journal on, but for the watch's.
fn resource_calls_since(cluster: &Cluster, since: usize) -> Vec<Recorded> {
    cluster.kube.requests()[since..]
        .iter()
        .filter(|r| {
            r.actor == ORCHESTRATOR
                && r.resource == JOBS
                && r.subresource.is_none()
                && r.verb != "watch"
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn mock_api_a_rest_spawn_creates_a_generated_icarusjob_whose_uid_is_the_job_id_and_which_owns_the_jobs_objects()
 {
    let cluster = Cluster::start_with(with_tokens).await;
    cluster.wait_for_the_resource_watch().await;
    let since = cluster.kube.requests().len();
    let (id, name) = cluster.spawn_as(SAM, "Add logging").await;

    // One create, with a generated name, recording the caller.
    let calls = resource_calls_since(&cluster, since);
    assert_eq!(
        calls.iter().map(|r| (r.verb, r.code)).collect::<Vec<_>>(),
        [("create", 201)]
    );
    let sent = &calls[0].body["metadata"];
    assert_eq!(sent["generateName"], "job-");
    assert_eq!(sent.get("name"), None, "the API server names it");
    let suffix = name.strip_prefix("job-").unwrap();
    assert!(
        suffix.len() == 5
            && suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{name}"
    );
    let resource = cluster.kube.object(JOBS, &name).unwrap();
    assert_eq!(resource["metadata"]["annotations"][SUBMITTED_BY], "sam");
    assert_eq!(resource["spec"]["task"], "Add logging");
    assert_eq!(resource["spec"]["projectPath"], "/workspace");
    assert_eq!(resource["spec"].get("approval"), None);

    // The job's objects are owned by the resource, so deleting it removes them.
    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    assert_owned_by(&builder, &name, id);
    assert_eq!(env_of(&builder, "TASK"), "Add logging");
    let claim = cluster
        .kube
        .object(CLAIMS, &workspace_claim(id))
        .expect("the workspace claim was created");
    assert_owned_by(&claim, &name, id);

    // The REST API serves it, as one job (the route's write and the watch's
    // are the same job), submitted by sam.
    let sam = cluster.rest.as_holder_of(SAM);
    let (code, status) = sam.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["job_id"], id.to_string());
    assert_eq!(status["task"], "Add logging");
    assert_eq!(status["submitted_by"], "sam");
    let (_, jobs) = sam.get("/jobs").await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");

    // Its status is written back onto the resource.
    cluster.run(&name_of(&builder)).await;
    let building = cluster.wait_for_phase(&name, "building").await;
    assert_eq!(building["status"]["builder"]["podName"], name_of(&builder));
    assert_granted(&cluster.orchestrator_requests());
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_rest_spawns_phase_tests_and_project_are_written_into_the_icarusjob_and_reach_the_builder_pod()
 {
    let cluster = Cluster::start_with(with_tokens).await;
    cluster.wait_for_the_resource_watch().await;
    let tests = "def test_it():\n    assert True\n";
    let body =
        json!({"task": "Add logging", "phase": "II", "test_code": tests, "project_id": "acme"});
    let (id, name) = cluster.spawn_body_as(SAM, body).await;
    let resource = cluster.kube.object(JOBS, &name).unwrap();
    assert_eq!(resource["spec"]["phase"], "II");
    assert_eq!(resource["spec"]["testCode"], tests);
    assert_eq!(resource["spec"]["projectId"], "acme");

    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    assert_eq!(env_of(&builder, "TEST_CODE"), tests);
    assert_eq!(env_of(&builder, "ICARUS_PHASE"), "II");
    assert_eq!(env_of(&builder, "ICARUS_PROJECT_ID"), "acme");
    let sam = cluster.rest.as_holder_of(SAM);
    let (_, listed) = sam.get("/jobs?project_id=acme").await;
    assert_eq!(listed[0]["job_id"], id.to_string(), "{listed}");
    cluster.shut_down().await;
}

/// What a running agent uses is read from the metrics API, as metrics-server
/// serves it: the Pod's working-set memory, and CPU time from the windows'
/// rates (0.5 cores over the first 10 s window: 5 s).
#[tokio::test]
async fn mock_api_an_agents_usage_is_measured_from_the_metrics_api() {
    let cluster = Cluster::start_with(|c| {
        with_tokens(c);
        c.agents.usage_interval_seconds = 1;
    })
    .await;
    cluster.wait_for_the_resource_watch().await;
    let (id, _) = cluster
        .spawn_body_as(SAM, json!({"task": "Add logging"}))
        .await;
    let name = pod_name(id, "builder");
    cluster.wait_for_pod(&name).await;
    let resource = kube::api::ApiResource {
        group: "metrics.k8s.io".to_owned(),
        version: "v1beta1".to_owned(),
        api_version: "metrics.k8s.io/v1beta1".to_owned(),
        kind: "PodMetrics".to_owned(),
        plural: "pods".to_owned(),
    };
    let metrics: Api<kube::api::DynamicObject> = Api::namespaced_with(
        cluster.kube.client_as("metrics-server"),
        crate::kube_api::NAMESPACE,
        &resource,
    );
    let window = json!({
        "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
        "metadata": {"name": name},
        "timestamp": "2026-12-06T10:00:00Z", "window": "10s",
        "containers": [{"name": "agent", "usage": {"cpu": "500m", "memory": "64Mi"}}],
    });
    let window: kube::api::DynamicObject = serde_json::from_value(window).unwrap();
    metrics
        .create(&PostParams::default(), &window)
        .await
        .unwrap();
    let sam = cluster.rest.as_holder_of(SAM);
    let usage = support::eventually(Duration::from_secs(20), || async {
        let (_, status) = sam.get(&format!("/jobs/{id}/status")).await;
        let usage = status["builder_usage"].clone();
        (!usage.is_null()).then_some(usage)
    })
    .await;
    assert_eq!(usage["memory_bytes"], 64 << 20, "{usage}");
    assert_eq!(usage["cpu_seconds"], 5.0, "{usage}");
    cluster.shut_down().await;
}

/// In allow-list mode an agent Pod's proxy variables name the egress proxy
/// at the callback's host (the Service, in a cluster) with the agent's own
/// credentials, and the proxy answers there: a request without them is
/// refused (the NetworkPolicy that leaves agents no other way out is
/// deploy's, checked in `deploy::`).
#[tokio::test]
async fn mock_api_in_allow_list_mode_agent_pods_are_sent_through_the_egress_proxy() {
    let cluster = Cluster::start_with(|c| {
        with_tokens(c);
        c.agents.egress.mode = icarus::config::EgressMode::AllowList;
    })
    .await;
    cluster.wait_for_the_resource_watch().await;
    let (id, _) = cluster
        .spawn_body_as(SAM, json!({"task": "Add logging"}))
        .await;
    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    let proxy = env_of(&builder, "HTTPS_PROXY");
    let callback = env_of(&builder, "ORCHESTRATOR_CALLBACK");
    let host = callback
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap();
    let credentials = format!("http://{id}.builder.1:");
    assert!(proxy.starts_with(&credentials), "{proxy}");
    let (_, address) = proxy.rsplit_once('@').unwrap();
    assert!(
        address.starts_with(&format!("{host}:")),
        "{proxy} for {callback}"
    );
    assert_eq!(env_of(&builder, "NO_PROXY"), host);
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    client
        .write_all(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_an_applied_icarusjobs_phase_tests_and_project_are_the_jobs() {
    let cluster = Cluster::start_with(with_tokens).await;
    let tests = "def test_it():\n    assert True\n";
    let spec = IcarusJobSpec {
        phase: ProjectPhase::II,
        test_code: Some(tests.to_owned()),
        project_id: "acme".to_owned(),
        ..IcarusJobSpec::new("Add logging")
    };
    let id = cluster.submit_spec("add-logging", spec).await;
    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    assert_eq!(env_of(&builder, "TEST_CODE"), tests);
    let sam = cluster.rest.as_holder_of(SAM);
    let (code, status) = sam.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["phase"], "II");
    assert_eq!(status["test_code"], tests);
    assert_eq!(status["project_id"], "acme");
    let (_, listed) = sam.get("/jobs?project_id=default").await;
    assert_eq!(listed, json!([]), "the job is acme's");
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_rest_approval_is_merge_patched_into_the_icarusjob_spec_with_its_decider_and_the_job_completes()
 {
    let cluster = Cluster::start_with(with_tokens).await;
    cluster.wait_for_the_resource_watch().await;
    let (id, name) = cluster.spawn_as(SAM, "Add logging").await;
    cluster.through_checks(&name, id).await;

    let since = cluster.kube.requests().len();
    let (code, body) = cluster
        .rest
        .as_holder_of(ANN)
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "comment": "LGTM"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "approved");

    // Written onto the resource before the answer, as kubectl would patch
    // it, naming the snapshot decided on (this job's builder wrote nothing).
    let resource = cluster.kube.object(JOBS, &name).unwrap();
    assert_eq!(
        resource["spec"]["approvals"],
        json!([{"approved": true, "comment": "LGTM", "snapshot": EMPTY_TREE, "by": "ann"}])
    );
    assert_eq!(resource["metadata"]["annotations"][SUBMITTED_BY], "sam");
    let calls = resource_calls_since(&cluster, since);
    assert_eq!(
        calls
            .iter()
            .map(|r| (r.verb, r.name.as_deref(), r.code))
            .collect::<Vec<_>>(),
        [("patch", Some(name.as_str()), 200)],
        "the leader knows the name from its watch: no list"
    );
    assert_eq!(
        calls[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        calls[0].body,
        json!({
            "spec": {"approvals": [{"approved": true, "comment": "LGTM", "snapshot": EMPTY_TREE, "by": "ann"}]},
        })
    );

    let done = cluster.wait_for_phase(&name, "completed").await;
    assert_eq!(
        done["status"]["observedGeneration"], done["metadata"]["generation"],
        "the status describes the approved spec"
    );
    let (_, status) = cluster
        .rest
        .as_holder_of(SAM)
        .get(&format!("/jobs/{id}/status"))
        .await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["approval"]["approved"], true);
    assert_eq!(status["approval"]["comment"], "LGTM");
    assert_eq!(status["approval"]["decided_by"], "ann");
    cluster.wait_for_no_pods(id).await;
    assert_granted(&cluster.orchestrator_requests());
    cluster.shut_down().await;
}

/// Only the leader watches IcarusJobs; a REST call can land on any replica.
#[tokio::test]
async fn mock_api_a_rest_approval_on_a_replica_that_watched_nothing_finds_the_icarusjob_by_a_metadata_list()
 {
    let cluster = Cluster::start_with(with_tokens).await;
    cluster.wait_for_the_resource_watch().await;
    let (id, name) = cluster.spawn_as(SAM, "Add logging").await;
    cluster.through_checks(&name, id).await;
    let follower = cluster.follower().await;

    let since = cluster.kube.requests().len();
    let (code, body) = follower
        .rest
        .as_holder_of(ANN)
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "comment": "ship it"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    let calls = resource_calls_since(&cluster, since);
    assert_eq!(
        calls
            .iter()
            .map(|r| (r.verb, r.name.as_deref(), r.code))
            .collect::<Vec<_>>(),
        [("list", None, 200), ("patch", Some(name.as_str()), 200)],
        "found by listing, then patched"
    );
    assert_eq!(
        calls[0].accept.as_deref(),
        Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
        "a metadata-only list"
    );
    let resource = cluster.kube.object(JOBS, &name).unwrap();
    assert_eq!(
        resource["spec"]["approvals"],
        json!([{"approved": true, "comment": "ship it", "snapshot": EMPTY_TREE, "by": "ann"}])
    );

    cluster.wait_for_phase(&name, "completed").await;
    let (_, status) = follower
        .rest
        .as_holder_of(SAM)
        .get(&format!("/jobs/{id}/status"))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["approval"]["decided_by"], "ann");
    assert_granted(&cluster.orchestrator_requests());
    follower.shut_down().await;
    cluster.shut_down().await;
}

/// Deleted with kubectl a moment ago, before this replica's watch said so:
/// the patch finds nothing, and the route says the job is gone upstream.
#[tokio::test]
async fn mock_api_a_rest_approval_of_a_job_whose_icarusjob_was_deleted_answers_404_decides_nothing_and_the_job_goes()
 {
    let cluster = Cluster::start_with(with_tokens).await;
    cluster.wait_for_the_resource_watch().await;
    let (id, name) = cluster.spawn_as(SAM, "Add logging").await;
    cluster.through_checks(&name, id).await;

    cluster.kube.hold_watch_events(JOBS);
    cluster
        .jobs
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let (code, body) = cluster
        .rest
        .as_holder_of(ANN)
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "comment": "LGTM"}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("IcarusJob is gone")),
        "{body}"
    );
    let patches: Vec<(Option<String>, u16)> = cluster
        .orchestrator_requests()
        .iter()
        .filter(|r| r.resource == JOBS && r.verb == "patch" && r.subresource.is_none())
        .map(|r| (r.name.clone(), r.code))
        .collect();
    assert_eq!(patches, [(Some(name.clone()), 404)]);
    let (_, status) = cluster
        .rest
        .as_holder_of(SAM)
        .get(&format!("/jobs/{id}/status"))
        .await;
    assert_eq!(status["status"], "awaiting_approval", "{status}");
    assert_eq!(status["approval"], Value::Null, "nothing was decided");

    // Once the watch hears of the deletion, the job is cancelled, then
    // deleted with it.
    cluster.kube.release_watch_events(JOBS);
    let sam = cluster.rest.as_holder_of(SAM);
    if let Some(status) = final_status_or_gone(&sam, id).await {
        assert_eq!(status["status"], "cancelled", "{status}");
    }
    wait_until_gone(&sam, id).await;
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_rest_cancel_while_building_is_written_as_spec_cancel_and_the_job_ends_cancelled_without_pods()
 {
    let cluster = Cluster::start_with(with_tokens).await;
    cluster.wait_for_the_resource_watch().await;
    let (id, name) = cluster.spawn_as(SAM, "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    cluster.run(&builder).await;
    cluster.wait_for_phase(&name, "building").await;

    let since = cluster.kube.requests().len();
    let sam = cluster.rest.as_holder_of(SAM);
    let (code, body) = sam.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(code, 200, "{body}");
    let resource = cluster.kube.object(JOBS, &name).unwrap();
    assert_eq!(resource["spec"]["cancel"], true);
    let calls = resource_calls_since(&cluster, since);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].verb, "patch");
    assert_eq!(calls[0].body, json!({"spec": {"cancel": true}}));

    let cancelled = cluster.wait_for_phase(&name, "cancelled").await;
    assert_eq!(cancelled["status"]["reason"], "CancelRequested");
    cluster.wait_for_no_pods(id).await;
    let (_, status) = sam.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "cancelled");
    assert_eq!(status["cancel_requested"], true);
    cluster.shut_down().await;
}

/// A job Sam spawned and cancelled through the REST API, its resource
/// showing `cancelled`; the cluster, its id and its resource's name.
async fn cancelled_through_rest() -> (Cluster, JobId, String) {
    let cluster = Cluster::start_with(with_tokens).await;
    cluster.wait_for_the_resource_watch().await;
    let (id, name) = cluster.spawn_as(SAM, "Add logging").await;
    let sam = cluster.rest.as_holder_of(SAM);
    let (code, body) = sam.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(code, 200, "{body}");
    cluster.wait_for_phase(&name, "cancelled").await;
    (cluster, id, name)
}

/// `DELETE /jobs/{id}` through `rest`, which must answer 202.
async fn rest_delete(rest: &support::Api, id: JobId) {
    let request = rest.client.delete(rest.url(&format!("/jobs/{id}")));
    let (code, body) = rest.send(request).await;
    assert_eq!(code, 202, "{body}");
}

/// `DELETE /jobs/{id}` of a finished job deletes its IcarusJob too: one
/// deletion, whichever side it starts from.
#[tokio::test]
async fn mock_api_a_rest_deletion_of_a_finished_job_deletes_its_icarusjob_and_the_job() {
    let (cluster, id, name) = cancelled_through_rest().await;
    let sam = cluster.rest.as_holder_of(SAM);
    let since = cluster.kube.requests().len();
    rest_delete(&sam, id).await;
    let calls = resource_calls_since(&cluster, since);
    assert!(
        calls.iter().any(|call| call.verb == "delete"),
        "the IcarusJob was deleted: {calls:?}"
    );
    assert!(cluster.kube.object(JOBS, &name).is_none());
    wait_until_gone(&sam, id).await;
    cluster.shut_down().await;
}

/// The route's own deletion of the IcarusJob failed (the API server
/// answered 503): the deletion is recorded all the same, and the sync,
/// seeing the job asked to go, deletes the resource; the job is not
/// brought back from it.
#[tokio::test]
async fn mock_api_a_deleted_job_takes_its_icarusjob_with_it_even_when_the_route_could_not() {
    let (cluster, id, name) = cancelled_through_rest().await;
    let sam = cluster.rest.as_holder_of(SAM);
    cluster.kube.fail_next(Fault {
        verb: "delete",
        ..failing_create(503, 1)
    });
    rest_delete(&sam, id).await;
    cluster
        .until("the IcarusJob is deleted", |kube| {
            kube.object(JOBS, &name).is_none().then_some(())
        })
        .await;
    let deletes: Vec<u16> = cluster
        .orchestrator_requests()
        .iter()
        .filter(|r| r.resource == JOBS && r.verb == "delete")
        .map(|r| r.code)
        .collect();
    assert_eq!(
        deletes.first(),
        Some(&503),
        "the route's try failed: {deletes:?}"
    );
    assert!(
        deletes[1..].contains(&200),
        "the sync's succeeded: {deletes:?}"
    );
    wait_until_gone(&sam, id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, _) = sam.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 404, "not brought back");
    cluster.shut_down().await;
}

/// `GET /jobs` as the anonymous admin (authentication is off).
async fn listed_jobs(cluster: &Cluster) -> Vec<Value> {
    let (code, jobs) = cluster.rest.get("/jobs").await;
    assert_eq!(code, 200, "{jobs}");
    jobs.as_array().unwrap().clone()
}

/// Nothing was stored, and nothing comes of it later.
async fn assert_no_job_made(cluster: &Cluster) {
    assert_eq!(listed_jobs(cluster).await, Vec::<Value>::new());
    // A resync passes: nothing comes of it either.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(listed_jobs(cluster).await, Vec::<Value>::new());
    assert!(cluster.kube.objects(JOBS).is_empty());
    assert!(cluster.kube.objects(PODS).is_empty());
    assert!(cluster.kube.objects(CLAIMS).is_empty());
}

#[tokio::test]
async fn mock_api_a_rest_spawn_the_api_server_refuses_answers_422_with_its_message_and_stores_no_job()
 {
    let cluster = Cluster::start().await;
    const REFUSAL: &str = "IcarusJob.icarus.dev \"job-x7k2p\" is invalid: spec.task: Too long: may not be more than 32768 bytes";
    cluster.kube.fail_next(Fault {
        verb: "create",
        resource: JOBS,
        subresource: None,
        code: 422,
        message: Some(REFUSAL),
        times: 1,
        only_if: None,
    });
    let (code, body) = cluster
        .rest
        .post(
            "/jobs/spawn",
            json!({"task": "Add logging", "project_path": "/workspace"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(REFUSAL), "the server's message: {detail}");
    assert!(
        cluster
            .orchestrator_requests()
            .iter()
            .any(|r| r.resource == JOBS && r.verb == "create" && r.code == 422),
        "the refusal was the API server's"
    );
    assert_no_job_made(&cluster).await;
    cluster.shut_down().await;
}

/// The IcarusJob create, refused `times` times with `code`.
fn failing_create(code: u16, times: usize) -> Fault {
    Fault {
        verb: "create",
        resource: JOBS,
        subresource: None,
        code,
        message: None,
        times,
        only_if: None,
    }
}

/// A REST spawn of a simple task, as the anonymous admin.
async fn rest_spawn(cluster: &Cluster) -> (u16, Value) {
    cluster
        .rest
        .post(
            "/jobs/spawn",
            json!({"task": "Add logging", "project_path": "/workspace"}),
        )
        .await
}

/// 500 is not retried by the kube client; 403 (a Role without `create`) is
/// not the client's mistake either.
#[tokio::test]
async fn mock_api_a_rest_spawn_while_the_api_server_fails_answers_503_and_stores_no_job() {
    let cluster = Cluster::start().await;
    for failure in [500, 403] {
        cluster.kube.fail_next(failing_create(failure, 1));
        let (code, body) = rest_spawn(&cluster).await;
        assert_eq!(code, 503, "the API server answered {failure}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Kubernetes API")),
            "{body}"
        );
    }
    let creates: Vec<u16> = cluster
        .orchestrator_requests()
        .iter()
        .filter(|r| r.resource == JOBS && r.verb == "create")
        .map(|r| r.code)
        .collect();
    assert_eq!(creates, [500, 403], "each tried once");
    assert_no_job_made(&cluster).await;
    cluster.shut_down().await;
}

/// A 503 from the API server is the caller's to retry: it is answered at
/// once (the client does not retry it for minutes), and nothing is stored.
#[tokio::test]
async fn mock_api_a_rest_spawn_answered_503_is_answered_503_at_once_and_stores_no_job() {
    let cluster = Cluster::start().await;
    cluster.kube.fail_next(failing_create(503, 1));
    let (code, body) = rest_spawn(&cluster).await;
    assert_eq!(code, 503, "{body}");
    let creates: Vec<u16> = cluster
        .orchestrator_requests()
        .iter()
        .filter(|r| r.resource == JOBS && r.verb == "create")
        .map(|r| r.code)
        .collect();
    assert_eq!(creates, [503], "tried once");
    assert_no_job_made(&cluster).await;
    cluster.shut_down().await;
}

/// While the API server keeps answering 503 the caller still gets its
/// answer in seconds: kube's default client would retry 15 times with waits
/// doubling to minutes, past any proxy's timeout.
#[tokio::test]
async fn mock_api_a_rest_spawn_while_the_api_server_answers_503_answers_503_within_seconds() {
    let cluster = Cluster::start().await;
    cluster.kube.fail_next(failing_create(503, 10_000));
    let answer = tokio::time::timeout(Duration::from_secs(15), rest_spawn(&cluster)).await;
    let (code, body) = answer.expect("an answer within 15 s");
    assert_eq!(code, 503, "{body}");
    cluster.shut_down().await;
}

/// A running builder of a kubectl-applied IcarusJob `add-logging`.
async fn building(cluster: &Cluster) -> JobId {
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    cluster.run(&builder).await;
    cluster.wait_for_phase("add-logging", "building").await;
    id
}

/// Asserts that the job ended cancelled and left no Pod and no claim: on
/// the deletion's watch event (`CancelRequested`), or, when its Pods vanished
/// first, because its IcarusJob was found gone (`ResourceDeleted`).
async fn assert_cancelled_and_cleared(cluster: &Cluster, id: JobId) {
    // Deleting the IcarusJob deletes the job: cancelled first (never
    // failed as vanished), then its record goes.
    if let Some(status) = final_status_or_gone(&cluster.rest, id).await {
        assert_eq!(status["status"], "cancelled", "{status}");
        let reason = status["reason"].as_str().unwrap_or_default();
        assert!(
            ["CancelRequested", "ResourceDeleted"].contains(&reason),
            "{status}"
        );
    }
    wait_until_gone(&cluster.rest, id).await;
    cluster.wait_for_no_pods(id).await;
    cluster.wait_for_no_claims(id).await;
}

/// The job's status once it finished, or none if it is gone already.
async fn final_status_or_gone(rest: &support::Api, id: JobId) -> Option<Value> {
    support::eventually(PATIENCE, || async {
        let (code, status) = rest.get(&format!("/jobs/{id}/status")).await;
        if code == 404 {
            return Some(None);
        }
        let finished = ["completed", "failed", "cancelled", "rejected"];
        finished
            .contains(&status["status"].as_str().unwrap_or_default())
            .then_some(Some(status))
    })
    .await
}

/// Waits until the job's record is gone.
async fn wait_until_gone(rest: &support::Api, id: JobId) {
    support::eventually(PATIENCE, || async {
        let (code, _) = rest.get(&format!("/jobs/{id}/status")).await;
        (code == 404).then_some(())
    })
    .await
}

/// `kubectl delete ijob add-logging` (background propagation). The garbage
/// collector learns of the deletion through its own watch and deletes the
/// Pods some time later (and a Pod then terminates gracefully, for up to
/// 30 s); the double's collector lags 250 ms.
#[tokio::test]
async fn mock_api_deleting_an_icarusjob_while_building_cancels_and_deletes_its_job_and_its_pods_are_gone()
 {
    let cluster = Cluster::start().await;
    cluster
        .kube
        .collect_garbage_after(Duration::from_millis(250));
    let id = building(&cluster).await;

    cluster
        .jobs
        .delete("add-logging", &DeleteParams::default())
        .await
        .unwrap();
    assert_cancelled_and_cleared(&cluster, id).await;
    cluster.shut_down().await;
}

/// `kubectl delete ijob add-logging --cascade=foreground` (and GitOps tools
/// pruning in the foreground): the resource stays, with a
/// `deletionTimestamp`, until the collector has deleted its Pods, and only
/// then goes; the job must be cancelled, not failed as vanished.
#[tokio::test]
async fn mock_api_deleting_an_icarusjob_in_the_foreground_while_building_cancels_and_deletes_its_job()
 {
    let cluster = Cluster::start().await;
    cluster
        .kube
        .collect_garbage_after(Duration::from_millis(250));
    let id = building(&cluster).await;

    cluster
        .jobs
        .delete("add-logging", &DeleteParams::foreground())
        .await
        .unwrap();
    assert_cancelled_and_cleared(&cluster, id).await;
    cluster.shut_down().await;
}

/// The orchestrator's IcarusJob watch lags (it is reconnecting, say) while
/// the collector, on its own watch, already deleted the Pods: the
/// controller sees the builder vanish before it hears of the deletion.
#[tokio::test]
async fn mock_api_deleting_an_icarusjob_cancels_and_deletes_its_job_even_when_the_watch_hears_of_it_last()
 {
    let cluster = Cluster::start().await;
    let id = building(&cluster).await;

    cluster.kube.hold_watch_events(JOBS);
    cluster
        .jobs
        .delete("add-logging", &DeleteParams::default())
        .await
        .unwrap();
    cluster.wait_for_no_pods(id).await;
    let since = cluster.kube.requests().len();
    cluster.wait_for_a_look_since(id, since).await;
    cluster.kube.release_watch_events(JOBS);
    assert_cancelled_and_cleared(&cluster, id).await;
    cluster.shut_down().await;
}

/// The watch can deliver the new resource after the route has stored the
/// job and the controller has made its objects.
#[tokio::test]
async fn mock_api_a_rest_spawned_job_owns_its_objects_even_when_the_watch_delivers_its_resource_late()
 {
    let cluster = Cluster::start_with(with_tokens).await;
    cluster.wait_for_the_resource_watch().await;
    cluster.kube.hold_watch_events(JOBS);
    let (id, name) = cluster.spawn_as(SAM, "Add logging").await;
    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    cluster.kube.release_watch_events(JOBS);

    assert_owned_by(&builder, &name, id);
    let claim = cluster.kube.object(CLAIMS, &workspace_claim(id)).unwrap();
    assert_owned_by(&claim, &name, id);
    cluster.shut_down().await;
}

// Git sources. The git Pods are played by running their very command
// (`icarus source-step`) here, with a temporary directory standing for each
// of the job's claims (the workspace, the repository) where the Pod's spec
// mounts it, and ending them as the kubelet would: Succeeded, with what the
// command wrote to `/dev/termination-log` as the container's termination
// message. A claim the Pod does not mount is not there for the command, and
// one it mounts read-only must be left as it was.

/// `icarus-<job>-git-<step>`, the Pod of one git step.
fn git_pod_name(id: JobId, step: &str) -> String {
    format!("icarus-{id}-git-{step}")
}

/// Host directories standing for a job's claims, laid out as git Pods
/// mount them: `<root>/<job id>` is the claim, `<root>` what the command's
/// `--workspace-root` or `--repository-root` names.
pub struct ClaimDirs {
    workspaces: TempDir,
    repositories: TempDir,
    /// Holds nothing: an unmounted claim's root points in here.
    nowhere: TempDir,
}

impl ClaimDirs {
    pub fn new() -> ClaimDirs {
        ClaimDirs {
            workspaces: tempfile::tempdir().unwrap(),
            repositories: tempfile::tempdir().unwrap(),
            nowhere: tempfile::tempdir().unwrap(),
        }
    }

    /// The workspace claim: what agents see at `/workspace`.
    pub fn workspace(&self, id: JobId) -> PathBuf {
        self.workspaces.path().join(id.to_string())
    }

    /// The root standing for the claim named `claim`.
    fn root_of(&self, claim: &str, id: JobId) -> &Path {
        if claim == workspace_claim(id) {
            self.workspaces.path()
        } else if claim == repository_claim(id) {
            self.repositories.path()
        } else {
            panic!("{claim} is not one of the claims of {id}")
        }
    }

    fn unmounted(&self) -> PathBuf {
        self.nowhere.path().join("not-mounted")
    }
}

/// The claim a Pod mounts at `path`, and whether read-only (the volume and
/// the mount agreeing), if it mounts one there.
fn claim_mounted_at(pod: &Value, path: &str) -> Option<(String, bool)> {
    let spec = &pod["spec"];
    let mounts = spec["containers"][0]["volumeMounts"].as_array()?;
    let mount = mounts.iter().find(|m| m["mountPath"] == path)?;
    let volumes = spec["volumes"].as_array()?;
    let volume = volumes.iter().find(|v| v["name"] == mount["name"])?;
    let claim = &volume["persistentVolumeClaim"];
    assert_eq!(claim["readOnly"], mount["readOnly"], "{path}: {volume}");
    Some((
        claim["claimName"].as_str()?.to_owned(),
        mount["readOnly"] == true,
    ))
}

/// Every file under `dir` with its bytes, sorted: what a read-only mount keeps.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut to_read = vec![dir.to_owned()];
    while let Some(next) = to_read.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                to_read.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

/// Whether the Pod is given the Git token (from the configured Secret).
fn has_token(pod: &Value) -> bool {
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    env.iter().any(|e| e["name"] == "GITHUB_TOKEN")
}

/// A git Pod the test played, and where in the journal it ended.
struct PlayedGitPod {
    pod: Value,
    /// What the command reported (its termination message).
    outcome: Value,
    /// The journal's length once the kubelet had reported the Pod ended:
    /// the orchestrator's reads from there on see it ended.
    ended_at: usize,
}

impl Cluster {
    /// `kubectl apply` of an IcarusJob whose source is `remote`'s `main`.
    async fn submit_sourced(&self, name: &str, remote: &Remote) -> JobId {
        let mut spec = IcarusJobSpec::new("Add logging");
        spec.source = Some(JobSource {
            repository: remote.url(),
            reference: Some("main".to_owned()),
        });
        self.submit_spec(name, spec).await
    }

    /// Waits for the Pod `name` whose uid is not `earlier`'s: a step that
    /// runs again gets a Pod of the same name.
    async fn wait_for_pod_after(&self, name: &str, earlier: &Value) -> Value {
        let earlier_uid = &earlier["metadata"]["uid"];
        self.until(&format!("a new Pod {name} created"), |kube| {
            kube.object(PODS, name)
                .filter(|pod| pod["metadata"]["uid"] != *earlier_uid)
        })
        .await
    }

    /// Plays the git Pod `pod`: runs its command (see [`run_source_step`]),
    /// then ends the Pod Succeeded with the outcome as its termination message.
    async fn play_git_pod(&self, pod: &Value, claims: &ClaimDirs) -> PlayedGitPod {
        let container = &pod["spec"]["containers"][0];
        let message = run_source_step(pod, claims).await;
        let outcome: Value = serde_json::from_str(&message).unwrap();

        let terminated = json!({"terminated": {
            "exitCode": 0, "reason": "Completed", "message": message,
            "startedAt": now(), "finishedAt": now(),
        }});
        let status = json!({"status": {
            "phase": "Succeeded",
            "containerStatuses": [git_container_status(container, terminated)],
        }});
        self.kubelet
            .patch_status(
                &name_of(pod),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
        let ended_at = self.kube.requests().len();
        PlayedGitPod {
            pod: pod.clone(),
            outcome,
            ended_at,
        }
    }

    /// Asserts that the orchestrator had created both of the job's claims
    /// when it created `pod`: a Pod whose claim is missing waits, Pending,
    /// until a deadline fails the job for the wrong reason.
    fn assert_claims_made_before(&self, pod: &Value, id: JobId) {
        let requests = self.orchestrator_requests();
        let created = |resource: &str, name: &str| {
            requests.iter().position(|r| {
                r.resource == resource
                    && r.verb == "create"
                    && r.code == 201
                    && r.body["metadata"]["name"] == name
            })
        };
        let pod_at = created(PODS, &name_of(pod)).expect("the orchestrator created the Pod");
        for claim in [workspace_claim(id), repository_claim(id)] {
            let claim_at = created(CLAIMS, &claim)
                .unwrap_or_else(|| panic!("{claim} was never created: {requests:?}"));
            assert!(
                claim_at < pod_at,
                "{claim} was created after {}",
                name_of(pod)
            );
        }
    }

    /// Waits until the played Pod is gone, and asserts that the orchestrator
    /// deleted it, only after reading it ended, and took the outcome from
    /// its termination message (not its log).
    async fn assert_deleted_once_read(&self, played: &PlayedGitPod) {
        let name = name_of(&played.pod);
        let uid = &played.pod["metadata"]["uid"];
        self.until(&format!("the git Pod {name} deleted"), |kube| {
            let pod = kube.object(PODS, &name);
            pod.is_none_or(|pod| pod["metadata"]["uid"] != *uid)
                .then_some(())
        })
        .await;
        let requests = self.kube.requests();
        // A create names its Pod in the body, other requests in the path.
        let of_this_pod = |r: &&Recorded| {
            r.actor == ORCHESTRATOR
                && r.resource == PODS
                && (r.name.as_deref() == Some(&name) || r.body["metadata"]["name"] == name)
        };
        let created = requests[..played.ended_at]
            .iter()
            .rposition(|r| of_this_pod(&r) && r.verb == "create" && r.code == 201)
            .expect("the orchestrator created the Pod");
        assert!(
            !requests[created..played.ended_at]
                .iter()
                .filter(of_this_pod)
                .any(|r| r.verb == "delete"),
            "{name} was deleted before it ended"
        );
        let after: Vec<&Recorded> = requests[played.ended_at..]
            .iter()
            .filter(of_this_pod)
            .collect();
        let read = after
            .iter()
            .position(|r| r.verb == "get" && r.subresource.is_none() && r.code == 200)
            .unwrap_or_else(|| panic!("{name} was not read once it ended: {after:?}"));
        assert!(
            after[read..]
                .iter()
                .any(|r| r.verb == "delete" && r.code == 200),
            "{name} was not deleted after it was read: {after:?}"
        );
        assert!(
            !after
                .iter()
                .any(|r| r.subresource.as_deref() == Some("log")),
            "the outcome is in the termination message; no log is needed"
        );
    }

    /// From a new sourced IcarusJob to `awaiting_approval`: the checkout Pod
    /// clones `main` onto the claims, the builder writes `LOGGING.md` in the
    /// workspace, the snapshot Pod records it, and the checker passes.
    /// Returns the snapshot's tree.
    async fn through_checks_of_a_source(
        &self,
        name: &str,
        id: JobId,
        claims: &ClaimDirs,
    ) -> String {
        let checkout = self.wait_for_pod(&git_pod_name(id, "checkout")).await;
        self.play_git_pod(&checkout, claims).await;
        self.wait_for_pod(&pod_name(id, "builder")).await;
        let workspace = claims.workspace(id);
        std::fs::write(workspace.join("LOGGING.md"), "log every request\n").unwrap();
        self.build(name, id).await;
        let snapshot = self.wait_for_pod(&git_pod_name(id, "snapshot")).await;
        let snapshotted = self.play_git_pod(&snapshot, claims).await;
        self.check(name, id).await;
        self.wait_for_phase(name, "awaiting_approval").await;
        snapshotted.outcome["snapshot"]["tree"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", snapshotted.outcome))
            .to_owned()
    }
}

/// Runs a git Pod's command here as its container would run it: each claim
/// the Pod mounts is its directory in `claims`, a claim it does not mount
/// is not there, and one mounted read-only must be left as it was. Returns
/// the outcome the command wrote for the termination message.
pub async fn run_source_step(pod: &Value, claims: &ClaimDirs) -> String {
    let id: JobId = pod["metadata"]["labels"]["icarus.dev/job-id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let command: Vec<String> =
        serde_json::from_value(pod["spec"]["containers"][0]["command"].clone()).unwrap();
    let outcome_file = tempfile::NamedTempFile::new().unwrap();
    let mut args: Vec<OsString> = command[1..].iter().map(OsString::from).collect();
    let mut read_only = Vec::new();
    for flag in ["--workspace-root", "--repository-root"] {
        let at = args.iter().position(|arg| arg == flag).unwrap() + 1;
        let root = args[at].to_str().unwrap().to_owned();
        args[at] = match claim_mounted_at(pod, &format!("{root}/{id}")) {
            Some((claim, mounted_read_only)) => {
                let here = claims.root_of(&claim, id);
                if mounted_read_only {
                    read_only.push(here.join(id.to_string()));
                }
                here.into()
            }
            None => claims.unmounted().into(),
        };
    }
    let at = args.iter().position(|arg| arg == "--outcome-file").unwrap() + 1;
    args[at] = outcome_file.path().into();
    let before: Vec<_> = read_only.iter().map(|dir| contents(dir)).collect();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_icarus"))
        .args(args)
        .env("ICARUS_SOURCE_STEP", env_of(pod, "ICARUS_SOURCE_STEP"))
        .env_remove("GITHUB_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (dir, before) in read_only.iter().zip(before) {
        assert_eq!(
            contents(dir),
            before,
            "{} is mounted read-only",
            dir.display()
        );
    }
    let message = std::fs::read_to_string(outcome_file.path()).unwrap();
    assert!(
        serde_json::from_str::<Value>(&message).is_ok(),
        "{command:?} wrote no outcome: {output:?}"
    );
    message
}

/// A git Pod's container status, in `state`.
fn git_container_status(container: &Value, state: Value) -> Value {
    json!({
        "name": container["name"], "image": container["image"], "imageID": "",
        "ready": false, "restartCount": 0, "state": state,
    })
}

/// Asserts what a git Pod is: owned by the IcarusJob, running `icarus
/// source-step` for the job on its claims' roots, and mounting the claims
/// its step needs: the repository always, read-write; the workspace
/// read-write to check out, read-only to snapshot, not at all to publish.
fn assert_git_pod(pod: &Value, job: &str, id: JobId, step: &str) {
    assert_owned_by(pod, job, id);
    assert_eq!(pod["metadata"]["labels"]["icarus.dev/step"], step);
    assert_eq!(
        pod["metadata"]["labels"]["icarus.dev/job-id"],
        id.to_string()
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    let command: Vec<String> =
        serde_json::from_value(spec["containers"][0]["command"].clone()).unwrap();
    assert_eq!(
        command[..8],
        [
            "icarus",
            "source-step",
            "--workspace-root",
            "/claim/workspaces",
            "--repository-root",
            "/claim/repositories",
            "--job",
            &id.to_string(),
        ]
    );
    assert_eq!(
        command[command.len() - 2..],
        ["--outcome-file", "/dev/termination-log"]
    );
    let step_request: Value = serde_json::from_str(&env_of(pod, "ICARUS_SOURCE_STEP")).unwrap();
    assert_eq!(step_request["step"], step);

    let expected: Vec<(String, bool)> = match step {
        "checkout" => vec![(workspace_claim(id), false), (repository_claim(id), false)],
        "snapshot" => vec![(workspace_claim(id), true), (repository_claim(id), false)],
        "publish" => vec![(repository_claim(id), false)],
        other => panic!("no git step {other}"),
    };
    let mounted: Vec<(String, bool)> = ["/claim/workspaces", "/claim/repositories"]
        .iter()
        .filter_map(|root| claim_mounted_at(pod, &format!("{root}/{id}")))
        .collect();
    assert_eq!(mounted, expected, "the claims the {step} Pod mounts");
    let claims = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.get("persistentVolumeClaim").is_some())
        .count();
    assert_eq!(
        claims,
        expected.len(),
        "no other claim: {}",
        spec["volumes"]
    );
}

/// Makes every push to `remote` fail, with the hook's words on stderr.
fn refuse_pushes(remote: &Remote) {
    use std::os::unix::fs::PermissionsExt;
    let hook = pre_receive_hook(remote);
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'pushes are frozen for the release' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn accept_pushes(remote: &Remote) {
    std::fs::remove_file(pre_receive_hook(remote)).unwrap();
}

fn pre_receive_hook(remote: &Remote) -> PathBuf {
    Path::new(&remote.url()).join("hooks/pre-receive")
}

/// `git rev-parse <what>` in `dir`.
fn rev_parse(dir: &Path, what: &str) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--verify", what])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn mock_api_a_git_source_is_checked_out_snapshotted_and_published_by_git_pods() {
    let remote = Remote::new();
    let cluster = Cluster::start_with(|config| {
        remote.allow_in(config);
        config.kubernetes.git_credentials_secret = "git-token".to_owned();
    })
    .await;
    let claims = ClaimDirs::new();
    let id = cluster.submit_sourced("sourced", &remote).await;
    let base = remote.tip("main").unwrap();

    // The checkout, before any agent and once both claims exist: the base
    // is the remote's main.
    let checkout = cluster.wait_for_pod(&git_pod_name(id, "checkout")).await;
    assert_git_pod(&checkout, "sourced", id, "checkout");
    assert!(has_token(&checkout), "a private source needs the token");
    cluster.assert_claims_made_before(&checkout, id);
    assert!(
        cluster
            .kube
            .object(PODS, &pod_name(id, "builder"))
            .is_none(),
        "no builder before the checkout"
    );
    let checked_out = cluster.play_git_pod(&checkout, &claims).await;
    assert_eq!(checked_out.outcome["base_commit"], base.as_str());
    cluster.assert_deleted_once_read(&checked_out).await;
    cluster
        .until("the base commit in the IcarusJob status", |kube| {
            kube.object(JOBS, "sourced")
                .filter(|job| job["status"]["baseCommit"] == base.as_str())
        })
        .await;

    // The builder writes a file in the workspace, which holds no Git metadata.
    cluster.wait_for_pod(&pod_name(id, "builder")).await;
    let workspace = claims.workspace(id);
    assert!(workspace.join("README.md").is_file(), "main checked out");
    assert!(!workspace.join(".git").exists(), "the repository is apart");
    std::fs::write(workspace.join("LOGGING.md"), "log every request\n").unwrap();
    // It also plants Git metadata that would run a command on whoever ran
    // git on it: the git Pods never do.
    let canary = tempfile::tempdir().unwrap();
    let ran = canary.path().join("ran");
    plant_git_traps(&workspace, &ran);
    cluster.build("sourced", id).await;

    // The snapshot Pod records the workspace, read-only, without the token.
    let snapshot = cluster.wait_for_pod(&git_pod_name(id, "snapshot")).await;
    assert_git_pod(&snapshot, "sourced", id, "snapshot");
    assert!(
        !has_token(&snapshot),
        "what reads an agent's files never holds the token"
    );
    let snapshotted = cluster.play_git_pod(&snapshot, &claims).await;
    let tree = snapshotted.outcome["snapshot"]["tree"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", snapshotted.outcome))
        .to_owned();
    let text = snapshotted.outcome["snapshot"]["diff"]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains("+++ b/LOGGING.md"), "{text}");
    cluster.assert_deleted_once_read(&snapshotted).await;
    cluster.check("sourced", id).await;
    let waiting = cluster.wait_for_phase("sourced", "awaiting_approval").await;
    assert_eq!(waiting["status"]["snapshot"], tree.as_str());
    let (code, summary) = cluster
        .rest
        .get(&format!("/jobs/{id}/diff?format=json"))
        .await;
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["files"][0]["path"], "LOGGING.md", "{summary}");
    assert_eq!(summary["files"][0]["status"], "added", "{summary}");
    assert_eq!(summary["base_commit"], base.as_str());
    // What lands in the workspace after the snapshot is not published.
    std::fs::write(workspace.join("LATE.md"), "after the snapshot\n").unwrap();

    // Approved in the spec: the publish Pod, which has no workspace, pushes
    // exactly the snapshot onto the base.
    cluster
        .patch_spec(
            "sourced",
            json!({"approval": {"approved": true, "comment": "LGTM"}}),
        )
        .await;
    let publish = cluster.wait_for_pod(&git_pod_name(id, "publish")).await;
    assert_git_pod(&publish, "sourced", id, "publish");
    assert!(has_token(&publish), "the push needs the token");
    let volumes = publish["spec"]["volumes"].as_array().unwrap();
    assert!(
        !volumes.iter().any(|v| v["name"] == "workspace"
            || v["persistentVolumeClaim"]["claimName"] == workspace_claim(id)),
        "no workspace volume: {volumes:?}"
    );
    let published = cluster.play_git_pod(&publish, &claims).await;
    let commit = published.outcome["published"]["commit"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", published.outcome))
        .to_owned();
    let done = cluster.wait_for_phase("sourced", "completed").await;
    let branch = format!("icarus/{id}");
    assert_eq!(done["status"]["commit"], commit.as_str());
    assert_eq!(done["status"]["branch"], branch.as_str());
    assert_eq!(done["status"]["baseCommit"], base.as_str());
    assert_eq!(remote.tip(&branch).as_deref(), Some(commit.as_str()));
    let pushed = Path::new(&remote.url()).to_owned();
    assert_eq!(rev_parse(&pushed, &format!("{commit}^{{tree}}")), tree);
    assert_eq!(rev_parse(&pushed, &format!("{commit}^")), base);
    assert_eq!(remote.file_at(&commit, "LOGGING.md"), "log every request\n");
    assert!(!ran.exists(), "a command planted in the workspace ran");
    assert!(
        !remote
            .paths_at(&commit)
            .iter()
            .any(|p| p.split('/').any(|c| c == ".git")),
        "the planted metadata is not published"
    );
    assert_eq!(remote.tip("main").unwrap(), base, "main is untouched");
    cluster.assert_deleted_once_read(&published).await;
    cluster.wait_for_no_pods(id).await;
    for claim in [workspace_claim(id), repository_claim(id)] {
        assert!(
            cluster.kube.object(CLAIMS, &claim).is_some(),
            "a completed job keeps {claim}"
        );
    }
    assert_granted(&cluster.orchestrator_requests());
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_refused_push_fails_the_icarusjob_as_publish_failed_and_a_rest_retry_publishes()
{
    let remote = Remote::new();
    let cluster = Cluster::start_with(|config| {
        with_tokens(config);
        remote.allow_in(config);
    })
    .await;
    let claims = ClaimDirs::new();
    let id = cluster.submit_sourced("sourced", &remote).await;
    let base = remote.tip("main").unwrap();
    let tree = cluster
        .through_checks_of_a_source("sourced", id, &claims)
        .await;

    refuse_pushes(&remote);
    cluster
        .patch_spec("sourced", json!({"approval": {"approved": true}}))
        .await;
    let publish = cluster.wait_for_pod(&git_pod_name(id, "publish")).await;
    let refused = cluster.play_git_pod(&publish, &claims).await;
    assert_eq!(
        refused.outcome["failed"]["permanent"], true,
        "{}",
        refused.outcome
    );
    let failed = cluster.wait_for_phase("sourced", "failed").await;
    assert_eq!(failed["status"]["reason"], "PublishFailed");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("pushes are frozen for the release"),
        "{message}"
    );
    cluster.assert_deleted_once_read(&refused).await;
    let branch = format!("icarus/{id}");
    assert_eq!(remote.tip(&branch), None);

    accept_pushes(&remote);
    let (code, body) = cluster
        .rest
        .as_holder_of(ANN)
        .post(&format!("/jobs/{id}/publish"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let resource = cluster.kube.object(JOBS, "sourced").unwrap();
    assert_eq!(
        resource["spec"]["publishRequests"], 1,
        "the retry is on the IcarusJob, as kubectl would write it"
    );
    let again = cluster
        .wait_for_pod_after(&git_pod_name(id, "publish"), &publish)
        .await;
    assert_git_pod(&again, "sourced", id, "publish");
    let published = cluster.play_git_pod(&again, &claims).await;
    let commit = published.outcome["published"]["commit"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", published.outcome))
        .to_owned();
    let done = cluster.wait_for_phase("sourced", "completed").await;
    assert_eq!(done["status"]["commit"], commit.as_str());
    assert_eq!(done["status"]["branch"], branch.as_str());
    assert_eq!(remote.tip(&branch).as_deref(), Some(commit.as_str()));
    let pushed = Path::new(&remote.url()).to_owned();
    assert_eq!(rev_parse(&pushed, &format!("{commit}^")), base);
    assert_eq!(
        rev_parse(&pushed, &format!("{commit}^{{tree}}")),
        tree,
        "the approved snapshot, kept on the repository claim"
    );
    cluster.assert_deleted_once_read(&published).await;
    let (_, status) = cluster
        .rest
        .as_holder_of(SAM)
        .get(&format!("/jobs/{id}/status"))
        .await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_granted(&cluster.orchestrator_requests());
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_git_pod_whose_image_cannot_be_pulled_fails_the_job_saying_so() {
    const GIT_IMAGE: &str = "registry.example.com/icarus-git:no-such-tag";
    let remote = Remote::new();
    let cluster = Cluster::start_with(|config| {
        remote.allow_in(config);
        config.kubernetes.git_image = GIT_IMAGE.to_owned();
    })
    .await;
    let id = cluster.submit_sourced("sourced", &remote).await;
    let checkout = cluster.wait_for_pod(&git_pod_name(id, "checkout")).await;
    let container = &checkout["spec"]["containers"][0];
    assert_eq!(container["image"], GIT_IMAGE);

    // The kubelet cannot pull the image: the Pod stays Pending, backing off.
    let pull_failure = format!("Back-off pulling image \"{GIT_IMAGE}\": not found");
    let waiting = json!({"waiting": {"reason": "ImagePullBackOff", "message": pull_failure}});
    let status = json!({"status": {
        "phase": "Pending",
        "containerStatuses": [git_container_status(container, waiting)],
    }});
    cluster
        .kubelet
        .patch_status(
            &name_of(&checkout),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();

    let failed = cluster.wait_for_phase("sourced", "failed").await;
    assert_eq!(failed["status"]["reason"], "SourceCheckoutFailed");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(GIT_IMAGE) && message.contains("ImagePullBackOff"),
        "{message}"
    );
    cluster.wait_for_no_pods(id).await;
    assert!(
        cluster
            .orchestrator_requests()
            .iter()
            .any(|r| r.verb == "delete"
                && r.resource == PODS
                && r.name.as_deref() == Some(name_of(&checkout).as_str())),
        "the orchestrator deleted the checkout Pod"
    );
    assert!(
        !cluster
            .orchestrator_requests()
            .iter()
            .any(|r| r.verb == "create" && r.body["metadata"]["name"] == pod_name(id, "builder")),
        "no builder is started without a checkout"
    );
    cluster.shut_down().await;
}

/// More sourced jobs than the controller has workers (4), each with its
/// checkout Pod running: a reconcile that waited for its Pod would hold
/// every worker, and the job without a source would never get its builder.
#[tokio::test]
async fn mock_api_jobs_go_on_while_checkout_pods_run_and_a_finished_one_is_taken_on_its_next_wake()
{
    let remote = Remote::new();
    let cluster = Cluster::start_with(|config| {
        remote.allow_in(config);
        config.orchestrator.max_concurrent_jobs = 10;
    })
    .await;
    let mut sourced = Vec::new();
    for n in 0..5 {
        let id = cluster
            .submit_sourced(&format!("sourced-{n}"), &remote)
            .await;
        let checkout = cluster.wait_for_pod(&git_pod_name(id, "checkout")).await;
        cluster.run(&name_of(&checkout)).await;
        sourced.push(id);
    }

    let plain = cluster.submit("plain", "Add logging").await;
    cluster.wait_for_pod(&pod_name(plain, "builder")).await;
    for &id in &sourced {
        assert!(
            cluster
                .kube
                .object(PODS, &pod_name(id, "builder"))
                .is_none(),
            "no builder before its checkout"
        );
    }

    let first = sourced[0];
    let base = json!({"base_commit": "a".repeat(40)});
    cluster.finish_git_pod(first, "checkout", &base).await;
    cluster.wait_for_pod(&pod_name(first, "builder")).await;
    cluster
        .until("the finished checkout Pod deleted", |kube| {
            kube.object(PODS, &git_pod_name(first, "checkout"))
                .is_none()
                .then_some(())
        })
        .await;
    assert!(
        cluster
            .kube
            .object(PODS, &git_pod_name(sourced[1], "checkout"))
            .is_some(),
        "a running checkout Pod is left to run"
    );
    cluster.shut_down().await;
}

/// The kubelet stops a git Pod at its `activeDeadlineSeconds`
/// (`kubernetes.git_timeout_seconds`): the job fails naming the step and
/// the timeout, and the Pod is deleted.
#[tokio::test]
async fn mock_api_a_git_pod_stopped_at_its_deadline_fails_the_job_naming_the_step_and_the_timeout()
{
    let remote = Remote::new();
    let cluster = Cluster::start_with(|config| {
        remote.allow_in(config);
        config.kubernetes.git_timeout_seconds = 45;
    })
    .await;
    let id = cluster.submit_sourced("sourced", &remote).await;
    let checkout = cluster.wait_for_pod(&git_pod_name(id, "checkout")).await;
    assert_eq!(checkout["spec"]["activeDeadlineSeconds"], 45);
    cluster.run(&name_of(&checkout)).await;
    let stopped = json!({"status": {
        "phase": "Failed",
        "reason": "DeadlineExceeded",
        "message": "Pod was active on the node longer than the specified deadline",
    }});
    cluster
        .kubelet
        .patch_status(
            &name_of(&checkout),
            &PatchParams::default(),
            &Patch::Merge(&stopped),
        )
        .await
        .unwrap();

    let failed = cluster.wait_for_phase("sourced", "failed").await;
    assert_eq!(failed["status"]["reason"], "SourceCheckoutFailed");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("checkout step")
            && message.contains("45 s (kubernetes.git_timeout_seconds)"),
        "{message}"
    );
    cluster.wait_for_no_pods(id).await;
    cluster.shut_down().await;
}

/// A `.git` in `workspace` whose config and hooks would write `ran` if any
/// git command obeyed them.
fn plant_git_traps(workspace: &Path, ran: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let git = workspace.join(".git");
    std::fs::create_dir_all(git.join("hooks")).unwrap();
    std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    let command = format!("touch {}", ran.display());
    std::fs::write(
        git.join("config"),
        format!("[core]\n\tfsmonitor = \"{command}\"\n\tpager = \"{command}\"\n"),
    )
    .unwrap();
    for hook in ["pre-push", "post-checkout", "reference-transaction"] {
        let path = git.join("hooks").join(hook);
        std::fs::write(&path, format!("#!/bin/sh\n{command}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test]
async fn mock_api_an_agent_image_that_cannot_be_pulled_fails_the_start_saying_so_not_the_builder() {
    const IMAGE: &str = "registry.example.com/agents/builder:no-such-tag";
    let cluster = Cluster::start().await;
    let id = cluster
        .submit_spec(
            "add-logging",
            IcarusJobSpec {
                builder_image: Some(IMAGE.to_owned()),
                ..IcarusJobSpec::new("Add logging")
            },
        )
        .await;
    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    let container = &builder["spec"]["containers"][0];
    assert_eq!(container["image"], IMAGE);

    // A first failed pull is the kubelet's to retry: the job waits.
    let pulling = |reason: &str| {
        let state = json!({"waiting": {"reason": reason, "message": format!("pulling \"{IMAGE}\": not found")}});
        json!({"status": {"phase": "Pending", "containerStatuses": [git_container_status(container, state)]}})
    };
    let patch = |status: Value| {
        let kubelet = &cluster.kubelet;
        let name = name_of(&builder);
        async move {
            kubelet
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    };
    patch(pulling("ErrImagePull")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "building", "{status}");

    // Backing off, it has retried and failed: the start failed, nothing ran.
    patch(pulling("ImagePullBackOff")).await;
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    assert_eq!(failed["status"]["reason"], "BuilderStartFailed");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("builder cannot start")
            && message.contains("ImagePullBackOff")
            && message.contains(IMAGE),
        "{message}"
    );
    assert!(
        failed["status"]["builder"]["exitCode"].is_null(),
        "nothing exited"
    );
    cluster.wait_for_no_pods(id).await;
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_pod_the_scheduler_cannot_place_keeps_the_job_waiting_and_says_why() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = cluster.wait_for_pod(&pod_name(id, "builder")).await;
    let why = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims";
    let status = json!({"status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable", "message": why}],
    }});
    cluster
        .kubelet
        .patch_status(
            &name_of(&builder),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();

    let expected = format!("builder has not started: not scheduled: {why}");
    let resource = cluster
        .until("the IcarusJob says why the builder waits", |kube| {
            let job = kube.object(JOBS, "add-logging")?;
            (job["status"]["message"] == expected.as_str()).then_some(job)
        })
        .await;
    assert_eq!(resource["status"]["phase"], "building");
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "building");
    assert_eq!(status["waiting"], expected.as_str());
    assert!(status["error_message"].is_null(), "waiting is not failing");
    cluster.shut_down().await;
}
