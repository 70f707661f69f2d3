//! Egress control on the real engine, from inside agent containers: what
//! an agent reaches in each `agents.egress.mode`.
//!
//! "Out there" is a server in a network namespace of its own, joined to the
//! host by a veth pair: reaching it takes a route out of the agents'
//! network through the host, as the internet would (this machine has no
//! internet to try). The control test shows an agent on an open network
//! does reach it, so that "no route" in the sealed test means something.
//! A listed name is a server on the host's loopback, which the proxy's
//! host map (the operator's word) resolves the name to.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use icarus::config::EgressMode;
use icarus::job::JobId;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::docker::DockerServer;
use crate::support::eventually;

/// What the reference agents' `connect` and `fetch` modes expect to read.
const GREETING: &str = "icarus-neighbour\n";

/// A server outside the host's own addresses (see the module's doc);
/// removed, with its namespace and link, when dropped.
struct Outside {
    namespace: String,
    link: String,
    address: String,
    server: Child,
}

impl Outside {
    fn start() -> Outside {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed)) % 200 + 20;
        let namespace = format!("icarus-out-{n}");
        let link = format!("icarus-o{n}h");
        let inside = format!("icarus-o{n}n");
        let _ = Command::new("ip")
            .args(["netns", "del", &namespace])
            .status();
        let _ = Command::new("ip").args(["link", "del", &link]).status();
        let host_ip = format!("10.213.{n}.1/30");
        let outside_ip = format!("10.213.{n}.2");
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", namespace.as_str(), "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        run("ip", &["netns", "add", &namespace]);
        run(
            "ip",
            &[
                "link", "add", &link, "type", "veth", "peer", "name", &inside,
            ],
        );
        run("ip", &["link", "set", &inside, "netns", &namespace]);
        run("ip", &["addr", "add", &host_ip, "dev", &link]);
        run("ip", &["link", "set", &link, "up"]);
        in_ns(&["addr", "add", &format!("{outside_ip}/30"), "dev", &inside]);
        in_ns(&["link", "set", &inside, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        let serve = format!(
            "import socket\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{outside_ip}', 7070)); s.listen()\n\
             while True:\n    c, _ = s.accept(); c.sendall({GREETING:?}.encode()); c.close()\n"
        );
        let server = Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-c", &serve])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 serves in the namespace");
        Outside {
            namespace,
            link,
            address: format!("{outside_ip}:7070"),
            server,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// A server on the host's loopback answering [`GREETING`]; its port.
async fn server_on_loopback() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let _ = connection.write_all(GREETING.as_bytes()).await;
        }
    });
    port
}

/// An orchestrator in allow-list mode whose builders may reach `listed`,
/// with the proxy resolving `mapped` to the host's loopback.
async fn allow_list_server(listed: Vec<String>, mapped: &str) -> DockerServer {
    DockerServer::start(|c| {
        c.agents.egress.mode = EgressMode::AllowList;
        c.agents.builder.allowed_domains = listed;
        let loopback = std::net::Ipv4Addr::LOCALHOST.into();
        c.agents.egress.hosts.insert(mapped.to_owned(), loopback);
    })
    .await
}

/// Runs a job whose builder is in test `mode`; its status once the builder
/// has ended: `awaiting_approval` if it exited 0, `failed` if not.
async fn builder_outcome(server: &DockerServer, mode: &str) -> Value {
    builder_outcome_of(server, mode, json!({})).await
}

/// The same for a job spawned with `extra` fields in its body.
async fn builder_outcome_of(server: &DockerServer, mode: &str, extra: Value) -> Value {
    let mut body =
        json!({"task": format!("egress [builder:{mode}]"), "project_path": "/workspace"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (code, spawned) = server.post("/jobs/spawn", body).await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["job_id"].as_str().unwrap().to_owned();
    let status = eventually(Duration::from_secs(90), || async {
        let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
        matches!(
            status["status"].as_str(),
            Some("awaiting_approval" | "failed")
        )
        .then_some(status)
    })
    .await;
    server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    status
}

/// The job's saved agent output, once it holds `expected` (the builder's
/// is saved when its container goes).
async fn builder_output(server: &DockerServer, status: &Value, expected: &str) -> String {
    let id = status["job_id"].as_str().unwrap();
    eventually(Duration::from_secs(30), || async {
        let (_, logs) = server.get(&format!("/jobs/{id}/logs")).await;
        let text = logs.to_string();
        text.contains(expected).then_some(text)
    })
    .await
}

fn reached(status: &Value) -> bool {
    if status["status"] == "failed" {
        let message = status["error_message"].as_str().unwrap_or_default();
        assert!(message.contains("exited with code 7"), "{status}");
        return false;
    }
    true
}

#[tokio::test]
async fn on_an_open_network_an_agent_reaches_a_server_out_there() {
    let outside = Outside::start();
    let network = format!("icarus-test-open-{}", JobId::new_random());
    let server = DockerServer::start(|c| {
        c.agents.egress.mode = EgressMode::Open;
        c.agents.builder.network_mode = network.clone();
        c.agents.checker.network_mode = network.clone();
    })
    .await;
    let status = builder_outcome(&server, &format!("connect={}", outside.address)).await;
    server.assert_nothing_left().await;
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    let _ = docker.remove_network(&network).await;
    assert!(reached(&status), "the control failed: {status}");
}

#[tokio::test]
async fn in_allow_list_mode_an_agent_has_no_route_out() {
    let outside = Outside::start();
    let server = DockerServer::start(|c| c.agents.egress.mode = EgressMode::AllowList).await;
    let status = builder_outcome(&server, &format!("connect={}", outside.address)).await;
    assert!(!reached(&status), "{status}");
}

#[tokio::test]
async fn in_allow_list_mode_an_agent_reaches_a_listed_name_through_the_proxy() {
    let port = server_on_loopback().await;
    let server = allow_list_server(vec![format!("allowed.test:{port}")], "allowed.test").await;
    let status = builder_outcome(&server, &format!("fetch=allowed.test:{port}")).await;
    assert!(reached(&status), "{status}");
    let traffic = egress_of(&server, &status).await;
    assert_eq!(traffic["host"], "allowed.test", "{traffic}");
    assert_eq!(traffic["verdict"], "allowed", "{traffic}");
    assert_eq!(traffic["role"], "builder", "{traffic}");
    assert_eq!(traffic["bytes_received"], GREETING.len(), "{traffic}");
}

#[tokio::test]
async fn in_allow_list_mode_the_proxy_refuses_an_agent_an_unlisted_name() {
    let port = server_on_loopback().await;
    let server = allow_list_server(vec!["pypi.org".to_owned()], "unlisted.test").await;
    let status = builder_outcome(&server, &format!("fetch=unlisted.test:{port}")).await;
    assert!(!reached(&status), "{status}");
    let said = builder_output(&server, &status, "403 Forbidden").await;
    assert!(said.contains("not on this agent's allow-list"), "{said}");
    let traffic = egress_of(&server, &status).await;
    assert_eq!(traffic["host"], "unlisted.test", "{traffic}");
    assert_eq!(traffic["verdict"], "unlisted", "{traffic}");
    let reason = traffic["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not on this agent's allow-list"),
        "{traffic}"
    );
}

#[tokio::test]
async fn a_domain_an_approver_allows_after_a_refusal_is_reached_from_the_next_connection() {
    let port = server_on_loopback().await;
    let server = allow_list_server(vec!["pypi.org".to_owned()], "mirror.test").await;
    let fetch = format!("fetch=mirror.test:{port}");
    let refused = builder_outcome(&server, &fetch).await;
    assert!(!reached(&refused), "{refused}");
    let id = refused["job_id"].as_str().unwrap();
    let pending = eventually(Duration::from_secs(30), || async {
        let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
        let egress = status["egress"].clone();
        (egress["requests"] != json!([]) && !egress.is_null()).then_some(egress)
    })
    .await;
    assert_eq!(
        pending["requests"],
        json!([format!("mirror.test:{port}")]),
        "the job's status lists its pending request"
    );
    assert!(pending["refused"].as_u64().unwrap() >= 1, "{pending}");
    let (_, egress) = server.get(&format!("/jobs/{id}/egress")).await;
    assert_eq!(egress["requests"], pending["requests"], "{egress}");
    let (code, body) = server
        .post(
            &format!("/jobs/{id}/egress/allow"),
            json!({"domain": format!("mirror.test:{port}"), "everyone": true}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, egress) = server.get(&format!("/jobs/{id}/egress")).await;
    assert_eq!(egress["requests"], json!([]), "{egress}");
    assert_eq!(egress["allowances"][0]["scope"], "everyone", "{egress}");
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["egress"]["requests"], json!([]), "{status}");
    let allowed = builder_outcome(&server, &fetch).await;
    assert!(reached(&allowed), "{allowed}");
}

#[tokio::test]
async fn a_job_narrows_its_agents_egress_and_cannot_widen_it() {
    let port = server_on_loopback().await;
    let listed = format!("allowed.test:{port}");
    let server = DockerServer::start(|c| {
        c.agents.egress.mode = EgressMode::AllowList;
        c.agents.builder.allowed_domains = vec![listed.clone()];
        let loopback: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
        for name in ["allowed.test", "beyond.test"] {
            c.agents.egress.hosts.insert(name.to_owned(), loopback);
        }
    })
    .await;
    let fetch_listed = format!("fetch={listed}");
    let narrowed = json!({"allowed_domains": ["pypi.org"]});
    let status = builder_outcome_of(&server, &fetch_listed, narrowed).await;
    assert!(!reached(&status), "narrowed away: {status}");
    assert_eq!(status["allowed_domains"], json!(["pypi.org"]));
    let widened = json!({"allowed_domains": [listed, format!("beyond.test:{port}")]});
    let status = builder_outcome_of(&server, &fetch_listed, widened.clone()).await;
    assert!(reached(&status), "what the job keeps of the list: {status}");
    let beyond = format!("fetch=beyond.test:{port}");
    let status = builder_outcome_of(&server, &beyond, widened).await;
    assert!(!reached(&status), "never wider than configured: {status}");
}

/// The first row of the job's egress record, once there is one (the proxy
/// writes its tallies about a second after the connection).
async fn egress_of(server: &DockerServer, status: &Value) -> Value {
    let id = status["job_id"].as_str().unwrap();
    eventually(Duration::from_secs(30), || async {
        let (code, egress) = server.get(&format!("/jobs/{id}/egress")).await;
        assert_eq!(code, 200, "{egress}");
        egress["traffic"].as_array()?.first().cloned()
    })
    .await
}

#[tokio::test]
async fn with_egress_none_an_agent_has_no_proxy_and_no_route_out() {
    let outside = Outside::start();
    let server = DockerServer::start(|c| c.agents.egress.mode = EgressMode::Sealed).await;
    let status = builder_outcome(&server, &format!("connect={}", outside.address)).await;
    assert!(!reached(&status), "{status}");
    let status = builder_outcome(&server, "fetch=pypi.org:443").await;
    assert!(!reached(&status), "{status}");
    builder_output(&server, &status, "no proxy in the environment").await;
}

/// Makes a bridge network called `name` with a route out, `labels` on it.
async fn open_network(name: &str, labels: HashMap<String, String>) -> String {
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(labels),
            options: Some(HashMap::from([(
                icarus::runtime::docker::ISOLATING_OPTION.to_owned(),
                "false".to_owned(),
            )])),
            ..Default::default()
        })
        .await
        .unwrap()
        .id
}

fn allow_list_on(network: &str) -> icarus::config::Config {
    let mut config = crate::support::test_config("sqlite::memory:");
    config.agents.egress.mode = EgressMode::AllowList;
    config.agents.builder.network_mode = network.to_owned();
    config.agents.checker.network_mode = network.to_owned();
    config
}

#[tokio::test]
async fn in_allow_list_mode_an_operators_network_with_a_route_out_is_refused_at_start() {
    let name = format!("icarus-test-leaky-{}", JobId::new_random());
    open_network(&name, HashMap::new()).await;
    let started = icarus::serve::local::docker_runtime(&allow_list_on(&name)).await;
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    let _ = docker.remove_network(&name).await;
    let error = started.err().expect("the start is refused");
    let said = icarus::errors::error_chain(&error);
    assert!(said.contains("has a route out"), "{said}");
}

#[tokio::test]
async fn a_network_icarus_made_with_a_route_out_is_made_again_sealed_once_unused() {
    let name = format!("icarus-test-unsealed-{}", JobId::new_random());
    let labels = HashMap::from([("icarus.managed".to_owned(), "true".to_owned())]);
    let before = open_network(&name, labels).await;
    icarus::serve::local::docker_runtime(&allow_list_on(&name))
        .await
        .unwrap();
    let docker = bollard::Docker::connect_with_defaults().unwrap();
    let after = docker
        .inspect_network(
            &name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    let _ = docker.remove_network(&name).await;
    assert_ne!(after.id.as_deref(), Some(before.as_str()), "made again");
    assert_eq!(after.internal, Some(true), "with no route out");
}
