//! The API's authentication and roles, called by a real HTTP client with
//! every kind of credential: none, a wrong one, each role, another's job.

use icarus::config::AccessRole;
use serde_json::json;

use crate::support::{Api, TestServer, token};

const VIEWER: &str = "viewer-token-0123456789";
const SAM: &str = "submitter-sam-0123456789";
const SUE: &str = "submitter-sue-0123456789";
const ANN: &str = "approver-ann-0123456789";
const ROOT: &str = "admin-root-0123456789";

async fn secured() -> TestServer {
    TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.spawns_per_minute = 3;
        c.auth.tokens = vec![
            token("vic", AccessRole::Viewer, VIEWER),
            token("sam", AccessRole::Submitter, SAM),
            token("sue", AccessRole::Submitter, SUE),
            token("ann", AccessRole::Approver, ANN),
            token("root", AccessRole::Admin, ROOT),
        ];
    })
    .await
}

async fn spawn_as(api: &Api, task: &str) -> String {
    let (code, body) = api.post("/jobs/spawn", json!({"task": task})).await;
    assert_eq!(code, 201, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_job_route_without_a_token_is_401_and_public_ones_answer() {
    let server = secured().await;
    let id = spawn_as(&server.as_holder_of(SAM), "t").await;
    for path in [
        "/jobs".to_owned(),
        format!("/jobs/{id}/status"),
        format!("/jobs/{id}/telemetry"),
        format!("/jobs/{id}/audit"),
        format!("/jobs/{id}/events"),
        format!("/jobs/{id}/logs"),
        format!("/jobs/{id}/diff"),
    ] {
        let (code, body) = server.get(&path).await;
        assert_eq!(code, 401, "GET {path}: {body}");
    }
    for path in [
        "/jobs/spawn".to_owned(),
        format!("/jobs/{id}/approve"),
        format!("/jobs/{id}/cancel"),
        format!("/jobs/{id}/publish"),
    ] {
        let (code, body) = server
            .post(&path, json!({"task": "x", "approved": true}))
            .await;
        assert_eq!(code, 401, "POST {path}: {body}");
    }
    for path in ["/", "/healthz", "/readyz", "/openapi.json"] {
        let (code, _) = server.get(path).await;
        assert_eq!(code, 200, "{path} is public");
    }
    let (code, _) = server.as_holder_of("not-a-token").get("/jobs").await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_submit_approve_or_cancel() {
    let server = secured().await;
    let id = spawn_as(&server.as_holder_of(SAM), "t").await;
    let viewer = server.as_holder_of(VIEWER);
    let (code, _) = viewer.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 200);
    let (code, body) = viewer.post("/jobs/spawn", json!({"task": "t"})).await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = viewer.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(code, 403);
    let (code, _) = viewer
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn a_submitter_cancels_only_their_own_jobs_and_an_admin_any() {
    let server = secured().await;
    let sams = spawn_as(&server.as_holder_of(SAM), "sam's").await;
    let (_, status) = server
        .as_holder_of(VIEWER)
        .get(&format!("/jobs/{sams}/status"))
        .await;
    assert_eq!(status["submitted_by"], "sam");
    let (code, body) = server
        .as_holder_of(SUE)
        .post(&format!("/jobs/{sams}/cancel"), json!({}))
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = server
        .as_holder_of(SAM)
        .post(&format!("/jobs/{sams}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200);
    let sues = spawn_as(&server.as_holder_of(SUE), "sue's").await;
    let (code, _) = server
        .as_holder_of(ROOT)
        .post(&format!("/jobs/{sues}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn only_an_approver_decides_and_the_decision_names_them() {
    let server = secured().await;
    let id: icarus::job::JobId = spawn_as(&server.as_holder_of(SAM), "t")
        .await
        .parse()
        .unwrap();
    let viewer = server.as_holder_of(VIEWER);
    server.pass_build_and_check_as(&viewer, id).await;
    let (code, _) = server
        .as_holder_of(SAM)
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(
        code, 403,
        "a submitter cannot approve, not even their own job"
    );
    let (code, _) = server
        .as_holder_of(ANN)
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "comment": "ok"}),
        )
        .await;
    assert_eq!(code, 200);
    let (_, status) = viewer.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["approval"]["decided_by"], "ann");
}

#[tokio::test]
async fn the_stream_takes_its_token_from_the_query_since_browsers_cannot_set_headers() {
    let server = secured().await;
    let id = spawn_as(&server.as_holder_of(SAM), "t").await;
    let ws = server.base.replacen("http", "ws", 1);
    let refused = tokio_tungstenite::connect_async(format!("{ws}/jobs/{id}/stream")).await;
    assert!(refused.is_err(), "no token, no stream");
    let (_, response) =
        tokio_tungstenite::connect_async(format!("{ws}/jobs/{id}/stream?access_token={VIEWER}"))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
}

#[tokio::test]
async fn spawning_is_rate_limited_per_token() {
    let server = secured().await;
    let sam = server.as_holder_of(SAM);
    for n in 0..3 {
        spawn_as(&sam, &format!("job {n}")).await;
    }
    let (code, body) = sam
        .post("/jobs/spawn", json!({"task": "one too many"}))
        .await;
    assert_eq!(code, 429, "{body}");
    spawn_as(&server.as_holder_of(SUE), "sue has her own budget").await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_as_http_says() {
    let server = secured().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = reqwest::Client::new()
            .get(server.url("/jobs"))
            .header("Authorization", format!("{scheme} {VIEWER}"));
        let (code, body) = server.send(request).await;
        assert_eq!(code, 200, "{scheme}: {body}");
    }
    let request = reqwest::Client::new()
        .get(server.url("/jobs"))
        .header("Authorization", format!("Basic {VIEWER}"));
    let (code, _) = server.send(request).await;
    assert_eq!(code, 401, "another scheme is no bearer token");
}
