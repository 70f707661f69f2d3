//! Deleting finished jobs over real HTTP: `DELETE /jobs/{id}` (who may,
//! and not a live job), and retention's sweep by the workspaces' budget,
//! keeping the events or not.

use std::time::Duration;

use icarus::config::AccessRole;
use icarus::job::JobId;
use serde_json::json;

use crate::support::{TestServer, eventually, token};

const SAM: &str = "submitter-sam-0123456789";
const SUE: &str = "submitter-sue-0123456789";
const ROOT: &str = "admin-root-0123456789";

/// A job that built and was approved: completed, its workspace kept.
async fn completed(server: &TestServer) -> JobId {
    let id = server.spawn("done").await;
    server.pass_build_and_check(id).await;
    let (code, body) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 200, "{body}");
    server.wait_for(id, "completed").await;
    id
}

async fn wait_until_gone(server: &TestServer, id: JobId) {
    eventually(Duration::from_secs(10), || async {
        let (code, _) = server.get(&format!("/jobs/{id}/status")).await;
        (code == 404).then_some(())
    })
    .await;
}

async fn delete(server: &crate::support::Api, id: JobId) -> (u16, serde_json::Value) {
    let request = server.client.delete(server.url(&format!("/jobs/{id}")));
    server.send(request).await
}

#[tokio::test]
async fn deleting_a_finished_job_removes_it_its_workspace_and_its_events() {
    let server = TestServer::sqlite().await;
    let id = completed(&server).await;
    assert!(server.runtime.has_workspace(id));
    let (code, body) = delete(&server, id).await;
    assert_eq!(code, 202, "{body}");
    wait_until_gone(&server, id).await;
    assert!(!server.runtime.has_workspace(id));
    let (code, _) = server.get(&format!("/jobs/{id}/events")).await;
    assert_eq!(code, 404);
    let (_, rows) = server.get("/jobs").await;
    assert!(rows.as_array().unwrap().is_empty(), "{rows}");
}

#[tokio::test]
async fn deleting_a_live_job_is_a_conflict_until_it_is_cancelled() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("live").await;
    server.wait_for_builder(id).await;
    let (code, body) = delete(&server, id).await;
    assert_eq!(code, 409, "{body}");
    assert!(crate::support::detail(&body).contains("cancel it first"));
    assert_eq!(server.phase(id).await, "building");

    server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    server.wait_for(id, "cancelled").await;
    let (code, _) = delete(&server, id).await;
    assert_eq!(code, 202);
    wait_until_gone(&server, id).await;
}

#[tokio::test]
async fn a_submitter_deletes_only_their_own_finished_jobs_and_an_admin_any() {
    let server = TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![
            token("sam", AccessRole::Submitter, SAM),
            token("sue", AccessRole::Submitter, SUE),
            token("root", AccessRole::Admin, ROOT),
        ];
    })
    .await;
    let sam = server.as_holder_of(SAM);
    let sue = server.as_holder_of(SUE);
    let root = server.as_holder_of(ROOT);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, body) = sam.post("/jobs/spawn", json!({"task": "t"})).await;
        assert_eq!(code, 201, "{body}");
        let id: JobId = body["job_id"].as_str().unwrap().parse().unwrap();
        sam.post(&format!("/jobs/{id}/cancel"), json!({})).await;
        sam.wait_for(id, "cancelled").await;
        ids.push(id);
    }
    let (code, body) = delete(&sue, ids[0]).await;
    assert_eq!(code, 403, "someone else's job: {body}");
    let (code, _) = delete(&sam, ids[0]).await;
    assert_eq!(code, 202, "their own");
    let (code, _) = delete(&root, ids[1]).await;
    assert_eq!(code, 202, "an admin, anyone's");
    let (code, _) = delete(&server, ids[1]).await;
    assert_eq!(code, 401, "no token");
}

#[tokio::test]
async fn over_the_workspace_budget_the_oldest_finished_jobs_go_first() {
    let server = TestServer::sqlite_with(|c| {
        c.retention.workspace_budget_bytes = 1000;
        c.retention.sweep_interval_seconds = 1;
    })
    .await;
    let oldest = completed(&server).await;
    let newer = completed(&server).await;
    server.runtime.set_workspace_bytes(oldest, 600);
    server.runtime.set_workspace_bytes(newer, 600);
    wait_until_gone(&server, oldest).await;
    assert_eq!(server.phase(newer).await, "completed");
    assert!(server.runtime.has_workspace(newer));
    eventually(Duration::from_secs(10), || async {
        let bytes = server.metrics().await.value("icarus_workspace_bytes");
        (bytes == 600.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn retention_can_keep_the_events_of_the_jobs_it_deletes() {
    let server = TestServer::sqlite_with(|c| {
        c.retention.workspace_budget_bytes = 1;
        c.retention.keep_events = true;
        c.retention.sweep_interval_seconds = 1;
    })
    .await;
    let id = completed(&server).await;
    server.runtime.set_workspace_bytes(id, 100);
    eventually(Duration::from_secs(10), || async {
        (!server.runtime.has_workspace(id)).then_some(())
    })
    .await;
    let (code, events) = server.get(&format!("/jobs/{id}/events")).await;
    assert_eq!(code, 200, "the record and its events are kept");
    assert_eq!(events.as_array().unwrap().len(), 6, "{events}");
    eventually(Duration::from_secs(10), || async {
        let (_, logs) = server.get(&format!("/jobs/{id}/logs")).await;
        logs.as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .await;
    let (code, _) = server.get(&format!("/jobs/{id}/audit")).await;
    assert_eq!(code, 404, "its output is gone");
}
