//! Kubernetes mode against a real API server: the cluster `KUBECONFIG` names.
//!
//! Ignored unless asked for (`scripts/test-cluster`, which checks that
//! `KUBECONFIG` is set): no cluster runs in CI here. Each test makes its own
//! namespace (restricted Pod Security), applies the CRD from `crds/`, and
//! runs an orchestrator in this process as `icarus serve` runs it. Agent Pods
//! are given a node selector no node matches, so they stay unscheduled on any
//! cluster — kind, k3d, or a bare API server without kubelets — and the test
//! plays the kubelet (through the Pods' status subresource) and the agents
//! (posting to the callback URL a Pod was given). What this adds to the
//! mock-backed scenarios is the real API server's semantics: schema
//! validation, the status subresource, merge patches, owner references and
//! the garbage collector, Lease writes, RBAC-free admission of the Pods under
//! the restricted profile.

use std::time::Duration;

use icarus::cluster::crd::{IcarusJob, IcarusJobSpec};
use icarus::serve::Orchestrator;
use icarus::serve::kubernetes::KubernetesMode;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::kube_scenarios::{ClaimDirs, run_source_step};
use crate::support;

/// How long a real API server (and its garbage collector) may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// One orchestrator in Kubernetes mode in a namespace of its own.
struct Cluster {
    client: Client,
    namespace: String,
    jobs: Api<IcarusJob>,
    pods: Api<Pod>,
    rest: support::Api,
    orchestrator: Option<Orchestrator>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut icarus::config::Config)) -> Cluster {
        support::init_test_logging();
        let client = Client::try_default()
            .await
            .expect("a cluster: set KUBECONFIG");
        let namespace = format!(
            "icarus-e2e-{}",
            &icarus::job::JobId::new_random().to_string()[..8]
        );
        apply_crd(&client).await;
        create_namespace(&client, &namespace).await;

        let dir = tempfile::tempdir().unwrap();
        let mut config =
            support::test_config(&format!("sqlite://{}/icarus.db", dir.path().display()));
        config.workspace.base_path = dir.path().join("workspaces");
        config.kubernetes.enabled = true;
        config.kubernetes.namespace = namespace.clone();
        // No node has this label: the Pods stay unscheduled and the test is the kubelet.
        config.kubernetes.node_selector =
            [("icarus.dev/e2e-node".to_owned(), "none".to_owned())].into();
        config.agents.callback_base_url = String::new();
        adjust(&mut config);

        // As `icarus serve` starts it in this mode.
        let (mode, runtime) = KubernetesMode::with_client(client.clone(), &config);
        let orchestrator = mode.start(&config, runtime).await.unwrap();
        Cluster {
            jobs: Api::namespaced(client.clone(), &namespace),
            pods: Api::namespaced(client.clone(), &namespace),
            rest: support::Api::new(&orchestrator),
            client,
            namespace,
            orchestrator: Some(orchestrator),
            _dir: dir,
        }
    }

    /// `kubectl apply` of a new IcarusJob; returns its uid, the job id.
    async fn submit(&self, name: &str, task: &str) -> String {
        let resource = IcarusJob::new(name, IcarusJobSpec::new(task));
        let created = self
            .jobs
            .create(&PostParams::default(), &resource)
            .await
            .unwrap();
        created.uid().unwrap()
    }

    async fn wait_for_phase(&self, name: &str, phase: &str) -> IcarusJob {
        until(&format!("IcarusJob {name} {phase}"), || async {
            let job = self.jobs.get(name).await.ok()?;
            let reached = job.status.as_ref()?.phase.as_deref() == Some(phase);
            reached.then_some(job)
        })
        .await
    }

    async fn wait_for_pod(&self, name: &str) -> Pod {
        until(&format!("Pod {name}"), || async {
            self.pods.get_opt(name).await.ok().flatten()
        })
        .await
    }

    async fn wait_until_gone(&self, what: &str, gone: impl AsyncFn() -> bool) {
        until(what, || async { gone().await.then_some(()) }).await
    }

    /// The kubelet saw the agent's container end with `code`.
    async fn exit(&self, pod: &str, code: i32) {
        self.exit_with_message(pod, code, "").await;
    }

    /// Exits with a termination message, as a container that wrote one.
    async fn exit_with_message(&self, pod: &str, code: i32, message: &str) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let status = json!({"status": {
            "phase": if code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [{
                "name": "agent", "image": "icarus-agent", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                         "message": message, "startedAt": now, "finishedAt": now}},
            }],
        }});
        self.pods
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// Plays the checker: posts its audit report to the URL its Pod was given.
    async fn post_audit(&self, pod: &Pod) {
        let env = pod.spec.as_ref().unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        let url = env
            .iter()
            .find(|var| var.name == "ORCHESTRATOR_CALLBACK")
            .and_then(|var| var.value.clone())
            .expect("the Pod is given ORCHESTRATOR_CALLBACK");
        let report = json!({"status": "completed", "audit_report": {"summary": "clean"}});
        let response = reqwest::Client::new()
            .post(url)
            .json(&report)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// Builder exits 0, the snapshot of its work is taken, the checker
    /// reports and exits 0: the job awaits approval. `claims` play the
    /// job's claims.
    async fn pass_build_and_check(&self, name: &str, id: &str, claims: &ClaimDirs) {
        let builder = format!("icarus-{id}-builder-1");
        self.wait_for_pod(&builder).await;
        self.exit(&builder, 0).await;
        self.run_git_pod(id, "snapshot", claims).await;
        let checker = format!("icarus-{id}-checker-1");
        let checker_pod = self.wait_for_pod(&checker).await;
        self.wait_for_phase(name, "checking").await;
        self.post_audit(&checker_pod).await;
        self.exit(&checker, 0).await;
        self.wait_for_phase(name, "awaiting_approval").await;
    }

    /// Plays a git Pod: runs its command here on the claims it mounts (in
    /// `claims`), and ends it with the outcome as its termination message.
    /// Returns the Pod and the outcome.
    async fn run_git_pod(&self, id: &str, step: &str, claims: &ClaimDirs) -> (Pod, Value) {
        let name = format!("icarus-{id}-git-{step}");
        let pod = self.wait_for_pod(&name).await;
        let outcome = run_source_step(&serde_json::to_value(&pod).unwrap(), claims).await;
        self.exit_with_message(&name, 0, &outcome).await;
        (pod, serde_json::from_str(&outcome).unwrap())
    }

    /// The job's claims, workspace and repository, as the API server has them.
    async fn claims_of(&self, id: &str) -> Vec<Option<PersistentVolumeClaim>> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let mut found = Vec::new();
        for which in ["workspace", "repository"] {
            let claim = claims.get_opt(&format!("icarus-{id}-{which}")).await;
            found.push(claim.unwrap());
        }
        found
    }

    async fn job_pods(&self, id: &str) -> Vec<Pod> {
        let selector = format!("icarus.dev/job-id={id}");
        self.pods
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    }

    async fn finish(mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.stop().await.unwrap();
        }
    }
}

impl Drop for Cluster {
    /// The namespace goes with everything in it, even after a failed test.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args(["delete", "namespace", &self.namespace, "--wait=false"])
            .output();
    }
}

/// Polls `probe` until it gives a value; fails naming `what` after [`PATIENCE`].
async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apply_crd(client: &Client) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/icarusjob.yaml"))
        .unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "icarusjobs.icarus.dev",
        &PatchParams::apply("icarus-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    until("the CRD established", || async {
        let crd = crds.get("icarusjobs.icarus.dev").await.ok()?;
        let conditions = crd.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// A namespace enforcing the restricted profile, with the `default`
/// ServiceAccount Pods need (a bare API server has no controller to make it).
async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [(
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    "restricted".to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let mut made = false;
    for _ in 0..50 {
        if accounts.get_opt("default").await.ok().flatten().is_some() {
            made = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !made {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let _ = accounts.create(&PostParams::default(), &account).await;
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: KUBECONFIG=... scripts/test-cluster"]
async fn cluster_an_applied_icarusjob_runs_its_pods_and_completes_when_approved_in_its_spec() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("add-logging", "Add logging").await;

    let builder = cluster
        .wait_for_pod(&format!("icarus-{id}-builder-1"))
        .await;
    let owner = &builder.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("IcarusJob", id.as_str())
    );
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let claim = claims.get(&format!("icarus-{id}-workspace")).await.unwrap();
    assert_eq!(claim.owner_references()[0].uid, id);

    let claims = ClaimDirs::new();
    cluster
        .pass_build_and_check("add-logging", &id, &claims)
        .await;
    for claim in cluster.claims_of(&id).await {
        let claim = claim.expect("both claims made by the snapshot");
        assert_eq!(claim.owner_references()[0].uid, id);
    }
    let patch = json!({"spec": {"approval": {"approved": true, "comment": "ship it"}}});
    cluster
        .jobs
        .patch(
            "add-logging",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let done = cluster.wait_for_phase("add-logging", "completed").await;
    let conditions = done.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True"),
        "{conditions:?}"
    );
    cluster
        .wait_until_gone("the job's Pods removed", async || {
            cluster.job_pods(&id).await.is_empty()
        })
        .await;
    cluster.finish().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: KUBECONFIG=... scripts/test-cluster"]
async fn cluster_a_rest_spawn_creates_an_icarusjob_and_a_rest_approval_lands_in_its_spec() {
    let cluster = Cluster::start().await;
    let (code, body) = cluster
        .rest
        .post(
            "/jobs/spawn",
            json!({"task": "Add logging", "project_path": "/workspace"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id = body["job_id"].as_str().unwrap().to_owned();
    let resources = cluster
        .jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let resource = resources
        .iter()
        .find(|r| r.uid().as_deref() == Some(id.as_str()))
        .expect("the spawn created an IcarusJob whose uid is the job id");
    let name = resource.name_any();
    assert!(name.starts_with("job-"), "{name}");

    let claims = ClaimDirs::new();
    cluster.pass_build_and_check(&name, &id, &claims).await;
    let (code, body) = cluster
        .rest
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 200, "{body}");
    let approved = cluster.jobs.get(&name).await.unwrap();
    let decisions: Vec<_> = approved.spec.approvals.iter().map(|a| a.approved).collect();
    assert_eq!(decisions, [true]);
    cluster.wait_for_phase(&name, "completed").await;
    cluster.finish().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: KUBECONFIG=... scripts/test-cluster"]
async fn cluster_a_failing_builder_fails_the_icarusjob_with_a_warning_event() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("will-fail", "Fail").await;
    let builder = format!("icarus-{id}-builder-1");
    cluster.wait_for_pod(&builder).await;
    cluster.exit(&builder, 3).await;
    let failed = cluster.wait_for_phase("will-fail", "failed").await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("BuilderFailed"));
    assert!(status.message.unwrap().contains("code 3"));
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let warning = until("a Warning Event on the IcarusJob", || async {
        let listed = events.list(&ListParams::default()).await.ok()?;
        listed.items.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("will-fail")
        })
    })
    .await;
    assert_eq!(warning.reason.as_deref(), Some("BuilderFailed"));
    cluster.finish().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: KUBECONFIG=... scripts/test-cluster"]
async fn cluster_deleting_an_icarusjob_cancels_its_job_and_collects_its_pods_and_claim() {
    let cluster = Cluster::start().await;
    let id = cluster.submit("short-lived", "Never mind").await;
    cluster
        .wait_for_pod(&format!("icarus-{id}-builder-1"))
        .await;
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let claim = format!("icarus-{id}-workspace");
    assert!(claims.get_opt(&claim).await.unwrap().is_some());
    cluster
        .jobs
        .delete("short-lived", &DeleteParams::background())
        .await
        .unwrap();
    cluster
        .wait_until_gone("the Pods and the claim collected", async || {
            cluster.job_pods(&id).await.is_empty()
                && claims.get_opt(&claim).await.ok().flatten().is_none()
        })
        .await;
    let phase = until("the job cancelled", || async {
        let (_, status) = cluster.rest.get(&format!("/jobs/{id}/status")).await;
        (status["status"] == "cancelled").then_some(status)
    })
    .await;
    assert_eq!(phase["status"], "cancelled");
    cluster.finish().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: KUBECONFIG=... scripts/test-cluster"]
async fn cluster_a_git_source_is_checked_out_snapshotted_and_published_by_git_pods() {
    let remote = crate::git::Remote::new();
    let cluster = Cluster::start_with(|config| remote.allow_in(config)).await;
    let mut spec = IcarusJobSpec::new("Add logging");
    spec.source = Some(icarus::job::JobSource {
        repository: remote.url(),
        reference: Some("main".to_owned()),
    });
    let created = cluster
        .jobs
        .create(&PostParams::default(), &IcarusJob::new("sourced", spec))
        .await
        .unwrap();
    let id = created.uid().unwrap();
    let claims = ClaimDirs::new();

    // Both claims are there before the checkout Pod, which could otherwise
    // wait on a missing one until a deadline.
    let (_, checked_out) = cluster.run_git_pod(&id, "checkout", &claims).await;
    assert_eq!(
        checked_out["base_commit"].as_str(),
        remote.tip("main").as_deref()
    );
    assert!(cluster.claims_of(&id).await.iter().all(Option::is_some));
    // The builder, on the workspace claim: one new file.
    cluster
        .wait_for_pod(&format!("icarus-{id}-builder-1"))
        .await;
    let workspace = claims.workspace(id.parse().unwrap());
    std::fs::write(workspace.join("LOGGING.md"), "log it\n").unwrap();
    cluster.pass_build_and_check("sourced", &id, &claims).await;
    let (_, diff) = cluster
        .rest
        .get(&format!("/jobs/{id}/diff?format=json"))
        .await;
    assert_eq!(diff["files"][0]["path"], "LOGGING.md", "{diff}");

    let patch = json!({"spec": {"approval": {"approved": true}}});
    cluster
        .jobs
        .patch("sourced", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let (publish, published) = cluster.run_git_pod(&id, "publish", &claims).await;
    let volumes = publish.spec.unwrap().volumes.unwrap_or_default();
    assert!(
        !volumes.iter().any(|v| v.name == "workspace"),
        "the publish Pod has no workspace: {volumes:?}"
    );
    let commit = published["published"]["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = cluster.wait_for_phase("sourced", "completed").await;
    let status = done.status.unwrap();
    assert_eq!(status.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(remote.file_at(&commit, "LOGGING.md"), "log it\n");
    assert_eq!(remote.tip(&format!("icarus/{id}")), Some(commit));
    cluster.finish().await;
}
