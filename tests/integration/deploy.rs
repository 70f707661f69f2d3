//! The Kubernetes manifests, rendered by the real `kubectl kustomize` and
//! checked as objects (no API server runs here to apply them).

use std::process::Command;

use icarus::cluster::crd::IcarusJob;
use serde::Deserialize;
use serde_yaml::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn rendered() -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/deploy")])
        .output()
        .expect("kubectl (with kustomize) must be installed to render deploy/");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/"))
}

#[test]
fn deploy_renders_to_named_kubernetes_objects_in_the_icarus_namespace() {
    let objects = rendered();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    for object in &objects {
        assert!(object["apiVersion"].as_str().is_some(), "{object:?}");
        assert!(object["metadata"]["name"].as_str().is_some(), "{object:?}");
        let cluster_scoped = ["Namespace", "CustomResourceDefinition"];
        if !cluster_scoped.contains(&object["kind"].as_str().unwrap()) {
            assert_eq!(object["metadata"]["namespace"], "icarus", "{object:?}");
        }
    }
}

#[test]
fn the_rendered_crd_is_the_one_generated_from_the_types() {
    let objects = rendered();
    let crd = find(&objects, "CustomResourceDefinition");
    let generated: Value = serde_yaml::from_str(&icarus::cluster::crd::crd_yaml()).unwrap();
    assert_eq!(
        numbers_as_floats(&crd["spec"]),
        numbers_as_floats(&generated["spec"])
    );
}

/// kustomize writes `0.0` as `0`: compare numbers by value, not by spelling.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        Value::Sequence(items) => Value::Sequence(items.iter().map(numbers_as_floats).collect()),
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn the_deployment_runs_unprivileged_with_probes_and_limits() {
    let objects = rendered();
    let pod = &find(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(
        container["resources"]["limits"]["memory"]
            .as_str()
            .is_some()
    );
}

#[test]
fn the_controller_role_grants_no_wildcards_and_nothing_cluster_wide() {
    let objects = rendered();
    assert!(objects.iter().all(|o| o["kind"] != "ClusterRole"));
    let role = find(&objects, "Role");
    for rule in role["rules"].as_sequence().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            let values = rule[field].as_sequence().unwrap();
            assert!(
                values.iter().all(|v| v != "*"),
                "wildcard in {field}: {rule:?}"
            );
        }
    }
}

#[test]
fn the_example_jobs_are_valid_icarus_jobs() {
    for entry in std::fs::read_dir(format!("{ROOT}/deploy/examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let job: IcarusJob =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!job.spec.task.is_empty(), "{}", path.display());
        let refused = kube::core::cel::validate_cel(&job);
        assert!(refused.is_ok(), "{}: {refused:?}", path.display());
    }
}

/// The configuration the Deployment runs with: the embedded default with
/// the rendered ConfigMap laid over it, as `icarus serve --config` loads it.
fn deployed_config(objects: &[Value]) -> icarus::config::Config {
    let map = find(objects, "ConfigMap");
    let text = map["data"]["config.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    icarus::config::Config::load(Some(&path)).unwrap()
}

/// Where each volume of the orchestrator's container is mounted, with its
/// volume's definition.
fn mounts(objects: &[Value]) -> Vec<(String, Value)> {
    let pod = &find(objects, "Deployment")["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_sequence().unwrap();
    pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|mount| {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap()
                .clone();
            (mount["mountPath"].as_str().unwrap().to_owned(), volume)
        })
        .collect()
}

fn volume_holding<'a>(mounts: &'a [(String, Value)], path: &std::path::Path) -> &'a Value {
    mounts
        .iter()
        .find(|(mount, _)| path.starts_with(mount))
        .map(|(_, volume)| volume)
        .unwrap_or_else(|| panic!("{} is on no volume", path.display()))
}

#[test]
fn every_replica_reads_the_callback_key_from_one_secret_and_never_makes_its_own() {
    let objects = rendered();
    let config = deployed_config(&objects);
    let key = config.callback_key_file();
    let mounts = mounts(&objects);
    let volume = volume_holding(&mounts, &key);
    assert_eq!(
        volume["secret"]["secretName"], "icarus-agent-key",
        "{key:?}"
    );
    assert_eq!(key.file_name().unwrap(), "key");
}

#[test]
fn what_the_orchestrator_writes_is_on_a_writable_volume_not_the_read_only_root() {
    let objects = rendered();
    let config = deployed_config(&objects);
    let mounts = mounts(&objects);
    for path in [config.workspace.base_path.clone(), "/tmp".into()] {
        let volume = volume_holding(&mounts, &path);
        assert!(
            volume["emptyDir"].is_mapping(),
            "{}: {volume:?}",
            path.display()
        );
    }
}

#[test]
fn a_disruption_budget_keeps_one_replica_through_a_drain() {
    let objects = rendered();
    let budget = find(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    let deployment = find(&objects, "Deployment");
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn the_service_monitor_scrapes_each_replicas_metrics_listener() {
    let objects = rendered();
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/servicemonitor.yaml")).unwrap();
    let monitor: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(monitor["kind"], "ServiceMonitor");
    assert_eq!(monitor["metadata"]["namespace"], "icarus");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    let service = objects
        .iter()
        .find(|o| {
            o["kind"] == "Service"
                && selector
                    .iter()
                    .all(|(key, value)| &o["metadata"]["labels"][key] == value)
        })
        .expect("a Service the ServiceMonitor selects");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .expect("the Service has the port the ServiceMonitor names");
    let container = &find(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let container_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("the container has the port the Service targets");
    let listen = deployed_config(&objects).metrics.listen;
    let listened: std::net::SocketAddr = listen.parse().unwrap();
    assert_eq!(
        container_port["containerPort"].as_u64(),
        Some(u64::from(listened.port())),
        "metrics.listen is the port the Service reaches"
    );
    assert!(
        listened.ip().is_unspecified(),
        "reachable from the Pod's IP"
    );
}

/// The policy that keeps agent Pods from everything but the orchestrator
/// and DNS: it selects the Pods the runtime labels with a role (not the git
/// step Pods), lets them reach the orchestrator's Pods on exactly the API's
/// and the egress proxy's ports, which the Service carries, and DNS.
#[test]
fn agent_pods_may_reach_only_the_orchestrators_callback_and_proxy_and_dns() {
    let objects = rendered();
    let policy = &find(&objects, "NetworkPolicy")["spec"];
    let config = deployed_config(&objects);
    let selector = &policy["podSelector"]["matchExpressions"][0];
    assert_eq!(selector["key"], icarus::names::kubernetes::ROLE);
    assert_eq!(selector["operator"], "Exists");
    let types: Vec<&str> = policy["policyTypes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types, ["Ingress", "Egress"]);
    let ingress = policy["ingress"].as_sequence().unwrap();
    assert!(ingress.is_empty(), "nothing reaches an agent");
    let rules = policy["egress"].as_sequence().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");

    let pod_labels = &find(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
    let to_orchestrator = rules[0]["to"][0]["podSelector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    for (key, value) in to_orchestrator {
        let key = key.as_str().unwrap();
        assert_eq!(
            &pod_labels[key], value,
            "the orchestrator's Pods carry {key}"
        );
    }
    let ports: Vec<u64> = rules[0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    let proxy = u64::from(config.agents.egress.proxy_port);
    assert_eq!(ports, [u64::from(config.orchestrator.port), proxy]);
    let service_ports: Vec<u64> = objects
        .iter()
        .filter(|o| o["kind"] == "Service" && o["metadata"]["name"] == "icarus")
        .flat_map(|s| s["spec"]["ports"].as_sequence().unwrap().clone())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(service_ports.contains(&proxy), "{service_ports:?}");

    let dns = &rules[1];
    assert_eq!(
        dns["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    let dns_ports: Vec<(&str, u64)> = dns["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| (p["protocol"].as_str().unwrap(), p["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(dns_ports, [("UDP", 53), ("TCP", 53)]);
}
