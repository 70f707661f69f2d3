//! Kubernetes mode end to end, against the API server test double in
//! [`crate::kube_api`] (no cluster runs here): the orchestrator is started as
//! `icarus serve` starts it with `kubernetes.enabled` (Lease campaign, gated
//! controller, IcarusJob sync loops), the test plays kubectl (creating and
//! merge-patching IcarusJobs), the kubelet (moving Pods through their phases,
//! exit codes and logs) and the agents (posting to the callback URL a Pod is
//! given), and every outcome is read back from the API server's state.

use std::time::Duration;

use icarus::config::Config;
use icarus::job::JobId;
use icarus::k8s::KubernetesMode;
use icarus::k8s::crd::{IcarusJob, IcarusJobSpec};
use icarus::server::Orchestrator;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::kube_api::{Fault, KubeApi, ORCHESTRATOR, Recorded};
use crate::support::{self, init_test_logging};

const JOBS: &str = "icarusjobs.icarus.dev";
const PODS: &str = "pods";
const CLAIMS: &str = "persistentvolumeclaims";
const EVENTS: &str = "events.events.k8s.io";
/// How long any condition may take to be reached.
const PATIENCE: Duration = Duration::from_secs(20);

/// One orchestrator in Kubernetes mode and the API server double it talks to.
struct Cluster {
    kube: KubeApi,
    /// The test as kubectl.
    jobs: Api<IcarusJob>,
    /// The test as the kubelet (and as anyone deleting a Pod).
    kubelet: Api<Pod>,
    rest: support::Api,
    orchestrator: Option<Orchestrator>,
    stop: CancellationToken,
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

        let stop = CancellationToken::new();
        let (mode, runtime) = KubernetesMode::with_client(kube.client(), &config);
        let leadership = mode.campaign(stop.clone());
        let orchestrator =
            Orchestrator::start_in_cluster(&config, runtime, mode.in_cluster(leadership.clone()))
                .await
                .unwrap();
        mode.sync_when_leading(orchestrator.store().clone(), leadership, stop.clone());
        Cluster {
            jobs: Api::default_namespaced(kube.client_as("kubectl")),
            kubelet: Api::default_namespaced(kube.client_as("kubelet")),
            rest: support::Api::new(&orchestrator),
            kube,
            orchestrator: Some(orchestrator),
            stop,
            _dir: dir,
        }
    }

    /// `kubectl apply` of a new IcarusJob; its uid is the job id.
    async fn submit(&self, name: &str, task: &str) -> JobId {
        let resource = IcarusJob::new(name, IcarusJobSpec::new(task));
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

    /// From a new IcarusJob to `awaiting_approval`: the builder exits 0, the
    /// checker posts its audit report and exits 0. Returns the checker Pod.
    async fn through_checks(&self, name: &str, id: JobId) -> Value {
        let builder = self.wait_for_pod(&pod_name(id, "builder")).await;
        self.run(&name_of(&builder)).await;
        self.wait_for_phase(name, "building").await;
        self.exit(&name_of(&builder), 0, "Completed").await;
        let checker = self.wait_for_pod(&pod_name(id, "checker")).await;
        self.wait_for_phase(name, "checking").await;
        self.run(&name_of(&checker)).await;
        let audit =
            json!({"status": "completed", "audit_report": {"summary": "clean", "files": 2}});
        let (code, body) = self.report(&checker, audit).await;
        assert_eq!(code, 200, "the checker's report is accepted: {body}");
        self.exit(&name_of(&checker), 0, "Completed").await;
        // The diff for review is taken by a git Pod on the claim; this job
        // has no source and its builder wrote nothing: an empty diff.
        let empty_diff = json!({"diff": {"text": "", "truncated": false}});
        self.finish_git_pod(id, "diff", &empty_diff).await;
        self.wait_for_phase(name, "awaiting_approval").await;
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
        self.stop.cancel();
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.stop().await.unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
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

fn claim_name(id: JobId) -> String {
    format!("icarus-{id}-workspace")
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

/// `(group, resource[/sub], verb)` grants of the Role in `deploy/rbac.yaml`.
fn granted() -> Vec<(String, String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    let mut grants = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let role: serde_yaml::Value = serde::Deserialize::deserialize(document).unwrap();
        if role["kind"] != "Role" {
            continue;
        }
        for rule in role["rules"].as_sequence().unwrap() {
            let strings = |field: &str| -> Vec<String> {
                rule[field]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        grants.push((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    grants
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
        claim_name(id)
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
        .object(CLAIMS, &claim_name(id))
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
        claim_name(id),
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
    assert!(
        cluster.kube.object(CLAIMS, &claim_name(id)).is_some(),
        "a completed job keeps its workspace"
    );
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
    let grants = granted();
    let requests = cluster.orchestrator_requests();
    for request in &requests {
        assert!(
            grants.contains(&as_grant(request)),
            "not granted by deploy/rbac.yaml: {} {} ({:?})",
            request.method,
            request.path,
            as_grant(request)
        );
    }
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
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    cluster.run(&builder).await;
    cluster.wait_for_phase("add-logging", "building").await;
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
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    cluster.run(&builder).await;
    cluster.wait_for_phase("add-logging", "building").await;

    cluster
        .patch_spec("add-logging", json!({"cancel": true}))
        .await;
    let cancelled = cluster.wait_for_phase("add-logging", "cancelled").await;
    assert_eq!(cancelled["status"]["reason"], "CancelRequested");
    cluster.wait_for_no_pods(id).await;
    cluster
        .until("the workspace claim deleted", |kube| {
            kube.object(CLAIMS, &claim_name(id)).is_none().then_some(())
        })
        .await;
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "cancelled");
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_rejection_in_the_spec_rejects_the_icarusjob_and_deletes_its_workspace_claim() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("add-logging", "Add logging").await;
    cluster.through_checks("add-logging", id).await;
    assert!(cluster.kube.object(CLAIMS, &claim_name(id)).is_some());

    cluster
        .patch_spec(
            "add-logging",
            json!({"approval": {"approved": false, "comment": "no"}}),
        )
        .await;
    let rejected = cluster.wait_for_phase("add-logging", "rejected").await;
    assert_eq!(rejected["status"]["reason"], "Rejected");
    cluster
        .until("the workspace claim deleted", |kube| {
            kube.object(CLAIMS, &claim_name(id)).is_none().then_some(())
        })
        .await;
    cluster.wait_for_no_pods(id).await;
    let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "rejected");
    assert_eq!(status["approval"]["approved"], false);
    cluster.shut_down().await;
}

#[tokio::test]
async fn mock_api_a_builder_pod_deleted_while_building_fails_the_icarusjob_as_vanished() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    cluster.run(&builder).await;
    // Once the controller has seen the Pod (its name is in the status), and
    // running: a reconcile that saw it Pending would create it again after
    // the deletion (see the ignored test of Pending Pods below)...
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
    let failed = cluster.wait_for_phase("add-logging", "failed").await;
    assert_eq!(failed["status"]["reason"], "BuilderVanished");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&builder) && message.contains("disappeared"),
        "{message}"
    );
    cluster.wait_for_no_pods(id).await;
    assert!(
        cluster.kube.object(CLAIMS, &claim_name(id)).is_some(),
        "a failed job keeps its workspace"
    );
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
        times: 1,
        only_if: None,
    });
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    cluster.run(&builder).await;
    cluster.wait_for_phase("add-logging", "building").await;
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
        times: 1,
        only_if: Some(|request| request.body["status"]["phase"] == "failed"),
    });
    let id = cluster.submit("add-logging", "Add logging").await;
    let builder = pod_name(id, "builder");
    cluster.wait_for_pod(&builder).await;
    cluster.run(&builder).await;
    cluster.wait_for_phase("add-logging", "building").await;
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
    cluster.wait_for_phase("add-logging", "checking").await;
    cluster.shut_down().await;
}
