//! Hostile input: traversal, unknown fields, foreign images, cross-site
//! calls (non-JSON bodies, foreign origins, DNS rebinding), and a property
//! run of random requests that must never get a 5xx.

use icarus::config::AccessRole;
use icarus::job::Role;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, token, with_a_viewer};

const SPAWN: &str = r#"{"task": "t", "project_path": "/workspace"}"#;

#[tokio::test]
async fn project_paths_outside_the_allowed_roots_are_422() {
    let server = TestServer::sqlite().await;
    for path in [
        "/workspace/../etc",
        "/etc/passwd",
        "relative/path",
        "/workspacex",
    ] {
        let (code, body) = server
            .post("/jobs/spawn", json!({"task": "t", "project_path": path}))
            .await;
        assert_eq!(code, 422, "{path}: {body}");
    }
    let (code, _) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "project_path": "/workspace/api"}),
        )
        .await;
    assert_eq!(code, 201);
}

#[tokio::test]
async fn unknown_fields_in_spawn_and_approve_bodies_are_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "builder_imge": "typo:1"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let id = server.spawn("t").await;
    let (code, _) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "force": true}),
        )
        .await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn an_image_outside_the_allow_list_is_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "checker_image": "evil/miner:latest"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("agents.allowed_images")
    );
}

#[tokio::test]
async fn cross_origin_callers_get_cors_headers_only_when_their_origin_is_configured() {
    let closed = TestServer::sqlite().await;
    let response = closed
        .client
        .get(closed.url("/jobs"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let open = TestServer::sqlite_with(|c| {
        c.orchestrator.cors_allowed_origins = vec!["https://dash.example".to_owned()];
    })
    .await;
    let response = open
        .client
        .get(open.url("/jobs"))
        .header("Origin", "https://dash.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://dash.example"
    );
}

/// How many jobs the server holds, asked the ordinary way.
async fn job_count(server: &TestServer) -> usize {
    let (code, jobs) = server.get("/jobs").await;
    assert_eq!(code, 200, "{jobs}");
    jobs.as_array().unwrap().len()
}

/// `POST /jobs/spawn` with a JSON body and these extra headers.
async fn spawn_with(server: &TestServer, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = server
        .client
        .post(server.url("/jobs/spawn"))
        .header("content-type", "application/json")
        .body(SPAWN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    server.send(request).await
}

/// `GET /jobs` naming `host` in the `Host` header.
async fn list_as_host(server: &TestServer, host: &str) -> (u16, Value) {
    let request = server.client.get(server.url("/jobs")).header("host", host);
    server.send(request).await
}

fn port(server: &TestServer) -> &str {
    server.base.rsplit_once(':').unwrap().1
}

#[tokio::test]
async fn a_spawn_sent_as_text_plain_is_415_and_creates_no_job() {
    let server = TestServer::sqlite().await;
    let request = server
        .client
        .post(server.url("/jobs/spawn"))
        .header("content-type", "text/plain")
        .body(SPAWN);
    let (code, body) = server.send(request).await;
    assert_eq!(code, 415, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("text/plain") && detail.contains("application/json"),
        "{detail}"
    );
    assert_eq!(job_count(&server).await, 0);
}

#[tokio::test]
async fn a_spawn_without_a_content_type_is_415() {
    let server = TestServer::sqlite().await;
    let request = server.client.post(server.url("/jobs/spawn")).body(SPAWN);
    let (code, body) = server.send(request).await;
    assert_eq!(code, 415, "{body}");
    assert_eq!(job_count(&server).await, 0);
}

#[tokio::test]
async fn a_spawn_sent_as_json_with_a_charset_is_created() {
    let server = TestServer::sqlite().await;
    let request = server
        .client
        .post(server.url("/jobs/spawn"))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(SPAWN);
    let (code, body) = server.send(request).await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn approve_and_callback_bodies_sent_as_a_form_are_415() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    for path in [
        format!("/jobs/{id}/approve"),
        server.agent_path(id, Role::Builder, 1),
    ] {
        let request = server
            .client
            .post(server.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(r#"{"approved": true, "status": "error"}"#);
        let (code, body) = server.send(request).await;
        assert_eq!(code, 415, "{path}: {body}");
    }
}

#[tokio::test]
async fn cancel_and_publish_need_no_body() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let publish = server
        .client
        .post(server.url(&format!("/jobs/{id}/publish")));
    let (code, body) = server.send(publish).await;
    assert_eq!(
        code, 409,
        "publish is refused for the job's phase, not its body: {body}"
    );
    let cancel = server
        .client
        .post(server.url(&format!("/jobs/{id}/cancel")));
    let (code, body) = server.send(cancel).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_foreign_host_is_403_when_authentication_is_off() {
    let server = TestServer::sqlite().await;
    let (code, body) = list_as_host(&server, "attacker.example").await;
    assert_eq!(code, 403, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("DNS rebinding") && detail.contains("orchestrator.allowed_hosts"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_rebound_page_cannot_spawn_even_from_its_own_origin() {
    let server = TestServer::sqlite().await;
    let page = format!("attacker.example:{}", port(&server));
    let origin = format!("http://{page}");
    let (code, body) = spawn_with(&server, &[("host", &page), ("origin", &origin)]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(job_count(&server).await, 0);
}

#[tokio::test]
async fn a_foreign_host_is_not_refused_for_its_name_when_authentication_is_on() {
    let server = TestServer::sqlite_with(with_a_viewer).await;
    let (code, body) = list_as_host(&server, "attacker.example").await;
    assert_eq!(
        code, 401,
        "the token check answers, not the Host check: {body}"
    );
    let holder = server.as_holder_of("viewer-token-0123456789");
    let request = holder
        .client
        .get(holder.url("/jobs"))
        .header("host", "icarus.example");
    let (code, body) = holder.send(request).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn loopback_hosts_are_answered_with_any_port() {
    let server = TestServer::sqlite().await;
    let port = port(&server);
    for host in [
        "localhost:8000".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "api.localhost".to_owned(),
    ] {
        let (code, body) = list_as_host(&server, &host).await;
        assert_eq!(code, 200, "{host}: {body}");
    }
}

#[tokio::test]
async fn a_host_in_allowed_hosts_is_answered() {
    let server = TestServer::sqlite_with(|c| {
        c.orchestrator.allowed_hosts = vec!["icarus.lan".to_owned()];
    })
    .await;
    let (code, body) = list_as_host(&server, "icarus.lan:8000").await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = list_as_host(&server, "other.lan:8000").await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn the_host_of_the_callback_base_url_is_answered() {
    let server = TestServer::sqlite_with(|c| {
        c.agents.callback_base_url = "http://icarus.agents.internal:8000".to_owned();
    })
    .await;
    let (code, body) = list_as_host(&server, "icarus.agents.internal:8000").await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_request_without_a_host_is_403_when_authentication_is_off() {
    let server = TestServer::sqlite().await;
    let address = server.base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /jobs HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status_line = response.lines().next().unwrap_or_default();
    assert!(status_line.contains(" 403 "), "{response}");
}

#[tokio::test]
async fn an_agent_callback_to_a_foreign_host_still_reaches_its_token_check() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let host = format!("host.docker.internal:{}", port(&server));
    let forged = format!("/jobs/{id}/callback?role=builder&attempt=1&token=forged");
    let request = server
        .client
        .post(server.url(&forged))
        .header("host", &host)
        .json(&json!({"status": "error", "error": "x"}));
    let (code, body) = server.send(request).await;
    assert_eq!(code, 401, "{body}");
    let genuine = server
        .client
        .post(server.url(&server.agent_path(id, Role::Builder, 1)))
        .header("host", &host)
        .json(&json!({"current_tool": "cargo"}));
    let (code, body) = server.send(genuine).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_spawn_from_a_foreign_origin_is_403_and_creates_no_job() {
    let server = TestServer::sqlite().await;
    let (code, body) = spawn_with(&server, &[("origin", "https://evil.example")]).await;
    assert_eq!(code, 403, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("orchestrator.cors_allowed_origins"),
        "{detail}"
    );
    assert_eq!(job_count(&server).await, 0);
}

#[tokio::test]
async fn a_spawn_from_a_foreign_origin_is_403_with_authentication_on_too() {
    let server = TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![token(
            "sam",
            AccessRole::Submitter,
            "submitter-sam-0123456789",
        )];
    })
    .await;
    let sam = server.as_holder_of("submitter-sam-0123456789");
    let request = sam
        .client
        .post(sam.url("/jobs/spawn"))
        .header("origin", "https://evil.example")
        .json(&json!({"task": "t"}));
    let (code, body) = sam.send(request).await;
    assert_eq!(code, 403, "{body}");
}

#[tokio::test]
async fn a_spawn_from_the_null_origin_is_403() {
    let server = TestServer::sqlite().await;
    let (code, body) = spawn_with(&server, &[("origin", "null")]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(job_count(&server).await, 0);
}

#[tokio::test]
async fn a_spawn_from_a_configured_origin_is_created() {
    let server = TestServer::sqlite_with(|c| {
        c.orchestrator.cors_allowed_origins = vec!["https://dash.example".to_owned()];
    })
    .await;
    let (code, body) = spawn_with(&server, &[("origin", "https://dash.example")]).await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn a_spawn_from_the_apis_own_origin_is_created() {
    let server = TestServer::sqlite().await;
    let (code, body) = spawn_with(&server, &[("origin", &server.base)]).await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn a_preflight_from_a_configured_origin_is_still_answered() {
    let server = TestServer::sqlite_with(|c| {
        c.orchestrator.cors_allowed_origins = vec!["https://dash.example".to_owned()];
    })
    .await;
    let response = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/jobs/spawn"))
        .header("origin", "https://dash.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://dash.example"
    );
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map(
                prop_oneof![
                    Just("task".to_owned()),
                    Just("approved".to_owned()),
                    Just("status".to_owned()),
                    Just("source".to_owned()),
                    Just("audit_report".to_owned()),
                    ".{0,8}".prop_map(|s| s),
                ],
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn any_path() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        Just("00000000-0000-0000-0000-000000000000".to_owned()),
        Just("not-a-uuid".to_owned()),
        Just("%2e%2e".to_owned()),
        "[a-z0-9%.-]{0,12}",
    ];
    let tail = prop_oneof![
        Just("status"),
        Just("approve"),
        Just("cancel"),
        Just("callback"),
        Just("diff?format=json"),
        Just("publish"),
        Just("events"),
        Just("callback?role=checker&attempt=99999999999&token=%ff"),
    ];
    prop_oneof![
        (id, tail).prop_map(|(id, tail)| format!("/jobs/{id}/{tail}")),
        Just("/jobs/spawn".to_owned()),
        "/jobs\\?limit=[-0-9a-z]{0,6}&status=[a-z_]{0,10}".prop_map(|p| p),
    ]
}

#[test]
fn random_requests_never_get_a_server_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::sqlite());
    let config = ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    };
    proptest!(config, |(path in any_path(), body in any_json(), raw in any::<bool>())| {
        let (code, answer) = runtime.block_on(async {
            if raw {
                server.post_raw(&path, body.to_string().into_bytes()[..body.to_string().len() / 2].to_vec()).await
            } else {
                server.post(&path, body.clone()).await
            }
        });
        prop_assert!(code < 500, "POST {} {} -> {} {}", path, body, code, answer);
        let (code, answer) = runtime.block_on(server.get(&path));
        prop_assert!(code < 500, "GET {} -> {} {}", path, code, answer);
    });
}
