//! The controller's Role grants exactly what Kubernetes mode calls: every
//! component runs its operations against a recording mock of the API server
//! (no cluster runs here), and the set of (group, resource, verb) it used is
//! compared with `deploy/rbac.yaml`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use http::{Method, Request, Response};
use icarus::cluster::crd::{IcarusJob, IcarusJobSpec};
use icarus::cluster::lease::Elector;
use icarus::config::Config;
use icarus::job::workload::WorkloadKey;
use icarus::job::{Job, JobId, Role};
use icarus::ports::upstream::Upstream;
use icarus::runtime::kubernetes::KubeRuntime;
use icarus::runtime::kubernetes::workloads::WorkloadSettings;
use icarus::runtime::{Runtime, WorkloadSpec};
use icarus::source::SourceControl;
use icarus::source::pods::{GitPodSettings, PodSourceControl};
use icarus::store::kubernetes::upstream::ResourceUpstream;
use kube::api::Api;
use kube::client::Body;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource};
use serde_json::{Value, json};

/// `(group, resource[/subresource], verb)`, as RBAC names a call.
pub type Call = (String, String, String);

/// Answers every request plausibly and records what it was for.
fn recording_client() -> (Client, Arc<Mutex<BTreeSet<Call>>>) {
    let (service, mut server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls: Arc<Mutex<BTreeSet<Call>>> = Arc::default();
    let recorded = calls.clone();
    tokio::spawn(async move {
        let mut lease_reads = 0;
        let mut open_watches = Vec::new();
        while let Some((request, respond)) = server.next_request().await {
            let call = classify(
                request.method(),
                request.uri().path(),
                request.uri().query(),
            );
            recorded.lock().unwrap().insert(call.clone());
            let query = request.uri().query().map(str::to_owned);
            let query = query.as_deref();
            let (_, resource, verb) = &call;
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, reply) = match (resource.as_str(), verb.as_str()) {
                (_, "watch") => {
                    open_watches.push(respond);
                    continue;
                }
                ("leases", "get") => {
                    lease_reads += 1;
                    if lease_reads == 1 {
                        (
                            404,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
                        )
                    } else {
                        (
                            200,
                            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": "icarus-controller", "resourceVersion": "1"},
                            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                                     "renewTime": "2026-01-01T00:00:00.000000Z"}}),
                        )
                    }
                }
                ("pods/log", _) => (200, Value::String("log".to_owned())),
                // One Pod waiting to start, whose claim is then looked up (and is gone).
                ("pods", "list") if query.is_some_and(|q| q.contains("job-id")) => (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"},
                           "items": [{"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": "waiting", "labels": {
                                          "icarus.dev/role": "builder", "icarus.dev/attempt": "1"}},
                                      "status": {"phase": "Pending"}}]}),
                ),
                ("persistentvolumeclaims", "get") => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
                ),
                (_, "list") => (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
                ),
                (_, "delete") => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                _ => (200, sent),
            };
            let bytes = match &reply {
                Value::String(text) => text.clone().into_bytes(),
                other => serde_json::to_vec(other).unwrap(),
            };
            respond.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(bytes))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "icarus"), calls)
}

/// `(group, resource[/subresource], verb)` of one request, as RBAC names them.
fn classify(method: &Method, path: &str, query: Option<&str>) -> Call {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.first() {
        Some(&"api") => (String::new(), &parts[2..]),
        _ => (parts[1].to_owned(), &parts[3..]),
    };
    // namespaces/{ns}/{resource}[/{name}[/{sub}]]
    let rest = if rest.first() == Some(&"namespaces") {
        &rest[2..]
    } else {
        rest
    };
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_owned(),
    };
    let named = rest.len() > 1;
    let verb = match *method {
        Method::GET if query.is_some_and(|q| q.contains("watch=true")) => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    };
    (group, resource, verb.to_owned())
}

/// The grants of the Role in `deploy/rbac.yaml`.
pub fn granted() -> BTreeSet<Call> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    let role = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|doc: &serde_yaml::Value| doc["kind"] == "Role")
        .unwrap();
    let mut grants = BTreeSet::new();
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
                    grants.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    grants
}

fn settings() -> WorkloadSettings {
    WorkloadSettings::from_config(&Config::embedded_default().unwrap())
}

#[tokio::test]
async fn mock_api_the_role_grants_exactly_the_calls_kubernetes_mode_makes() {
    let (client, calls) = recording_client();
    let job = JobId::new_random();

    // The runtime: every Runtime operation, and its Pod watch.
    let runtime = KubeRuntime::new(client.clone(), "icarus", settings()).watching();
    runtime.prepare_workspace(job).await.unwrap();
    let spec = WorkloadSpec {
        key: WorkloadKey {
            job,
            role: Role::Builder,
            attempt: 1,
        },
        image: "icarus-builder:latest".to_owned(),
        env: vec![],
        cpu_limit: 1.0,
        memory_limit: 1 << 30,
        network_mode: "icarus-agents".to_owned(),
        workspace_read_only: false,
    };
    let pod = runtime.start(&spec).await.unwrap();
    runtime.observe(job).await.unwrap();
    runtime.logs(&pod).await.unwrap();
    let _ = runtime.usage(&pod).await;
    let followed: Vec<_> = runtime.follow_logs(&pod, None).unwrap().collect().await;
    assert!(followed.iter().all(Result::is_ok), "{followed:?}");
    runtime.remove(spec.key, &pod).await.unwrap();
    runtime.remove_workspace(job).await.unwrap();
    runtime.owners().await.unwrap();

    // The sync loops: the IcarusJob watch, status writes, Events.
    let api: Api<IcarusJob> = Api::namespaced(client.clone(), "icarus");
    let store = icarus::store::Store::connect("sqlite::memory:")
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let recorder = Recorder::new(client.clone(), "icarus".into());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _sync = icarus::store::kubernetes::sync::spawn(
        api.clone(),
        recorder.clone(),
        store,
        Default::default(),
        0,
        Default::default(),
        shutdown.clone(),
    );
    let _ = icarus::store::kubernetes::bridge::write_status(
        &api,
        "add-logging",
        &json!({"status": {}}),
    )
    .await;
    let mut resource = IcarusJob::new("add-logging", IcarusJobSpec::new("t"));
    resource.metadata.namespace = Some("icarus".to_owned());
    resource.metadata.uid = Some(job.to_string());
    let event = Event {
        type_: EventType::Normal,
        reason: "Admitted".to_owned(),
        note: None,
        action: "Transition".to_owned(),
        secondary: None,
    };
    recorder
        .publish(&event, &resource.object_ref(&()))
        .await
        .unwrap();

    // The REST routes in this mode: a spawn creates a resource, a cancel or
    // a decision merge-patches its spec.
    let seen = icarus::store::kubernetes::ResourceIndex::default();
    seen.remember(job, resource.clone());
    let upstream = ResourceUpstream::new(api.clone(), seen);
    let mut submitted = Job::new(IcarusJobSpec::new("t").to_job_spec(Utc::now()), Utc::now());
    let _ = upstream.create(&submitted.spec).await;
    submitted.id = job;
    let previous = submitted.spec.clone();
    submitted.spec.cancel_requested = true;
    let _ = upstream.write_spec(&submitted, &previous).await;

    // Git in this mode: a get of the step's Pod, its claims made first, the
    // Pod created (and looked at with a get on later asks); a discarded
    // job's repository claim deleted.
    let seen = icarus::store::kubernetes::ResourceIndex::default();
    seen.remember(job, resource.clone());
    let git = PodSourceControl::new(
        Api::namespaced(client.clone(), "icarus"),
        Api::namespaced(client.clone(), "icarus"),
        seen.clone(),
        settings(),
        GitPodSettings::from_config(&Config::embedded_default().unwrap()),
    );
    let _ = git.snapshot(job, None).await;
    git.discard(job).await.unwrap();
    // Vanished Pods: was their IcarusJob deleted?
    let owned = KubeRuntime::new(client.clone(), "icarus", settings()).owned_by(seen);
    let _ = owned.owner_gone(job).await;

    // Leader election: create the Lease, then renew it.
    let leases = Api::namespaced(client.clone(), "icarus");
    let elector = Elector::new(leases, "icarus-controller", "me", Duration::from_secs(15));
    assert!(elector.step().await.unwrap());
    assert!(elector.step().await.unwrap());

    // Let the watches reach the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    let made = calls.lock().unwrap().clone();
    let grants = granted();
    let missing: Vec<&Call> = made.difference(&grants).collect();
    let unused: Vec<&Call> = grants.difference(&made).collect();
    assert!(
        missing.is_empty(),
        "calls the Role does not grant: {missing:?}"
    );
    assert!(unused.is_empty(), "grants no call needs: {unused:?}");
}
