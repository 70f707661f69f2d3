//! Hostile input: traversal, unknown fields, foreign images, cross-site
//! calls, and a property run of random requests that must never get a 5xx.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::TestServer;

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
