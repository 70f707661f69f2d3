//! Who may approve a job and how many must: separation of duties and N
//! distinct approvals, over real HTTP with tokens of real roles.

use icarus::config::{AccessRole, Config};
use icarus::job::JobId;
use serde_json::{Value, json};

use crate::support::{Api, TestServer, detail, each, token};

const ANN: &str = "approver-ann-0123456789";
const BEN: &str = "approver-ben-0123456789";
const ROOT: &str = "admin-root-0123456789";

async fn secured(adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![
            token("ann", AccessRole::Approver, ANN),
            token("ben", AccessRole::Approver, BEN),
            token("root", AccessRole::Admin, ROOT),
        ];
        adjust(c);
    })
    .await
}

/// A job `api`'s holder submitted, asking for `body`'s extra fields.
async fn submit(api: &Api, extra: Value) -> JobId {
    let mut body = json!({"task": "Add logging", "project_path": "/workspace"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (code, body) = api.post("/jobs/spawn", body).await;
    assert_eq!(code, 201, "{body}");
    body["job_id"].as_str().unwrap().parse().unwrap()
}

async fn awaiting_approval(server: &TestServer, submitter: &str, extra: Value) -> JobId {
    let api = server.as_holder_of(submitter);
    let id = submit(&api, extra).await;
    server.pass_build_and_check_as(&api, id).await;
    id
}

async fn decide(server: &TestServer, who: &str, id: JobId, approved: bool) -> (u16, Value) {
    server
        .as_holder_of(who)
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": approved, "comment": format!("by {who}")}),
        )
        .await
}

#[tokio::test]
async fn under_separation_of_duties_the_submitter_may_neither_approve_nor_reject_their_job() {
    let server = secured(|c| c.auth.separation_of_duties = true).await;
    let id = awaiting_approval(&server, ANN, json!({})).await;
    for approved in [true, false] {
        let (code, body) = decide(&server, ANN, id, approved).await;
        assert_eq!(code, 403, "{body}");
        assert!(detail(&body).contains("separation of duties"), "{body}");
    }
    let (_, status) = server
        .as_holder_of(ANN)
        .get(&format!("/jobs/{id}/status"))
        .await;
    assert_eq!(status["status"], "awaiting_approval");
    assert_eq!(status["approvals"], json!([]), "nothing was recorded");
    let (code, body) = decide(&server, BEN, id, true).await;
    assert_eq!(code, 200, "someone else may: {body}");
    server.as_holder_of(BEN).wait_for(id, "completed").await;
}

#[tokio::test]
async fn without_separation_of_duties_an_approver_may_approve_their_own_job() {
    let server = secured(|_| {}).await;
    let id = awaiting_approval(&server, ANN, json!({})).await;
    let (code, body) = decide(&server, ANN, id, true).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_job_needing_two_approvals_waits_for_a_second_person_and_counts_each_once() {
    let server = secured(|c| c.approval.required = 2).await;
    let id = awaiting_approval(&server, ROOT, json!({})).await;
    let (code, body) = decide(&server, ANN, id, true).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "awaiting_approval", "{body}");
    let (code, body) = decide(&server, ANN, id, true).await;
    assert_eq!(code, 409, "the same person twice: {body}");
    assert!(detail(&body).contains("already approved"), "{body}");
    let viewer = server.as_holder_of(ROOT);
    let (_, status) = viewer.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "awaiting_approval");
    assert_eq!(status["required_approvals"], 2);
    assert_eq!(status["approved_by"], json!(["ann"]));
    assert_eq!(status["approval"], Value::Null, "not settled yet");

    let (code, body) = decide(&server, BEN, id, true).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "approved");
    let status = viewer.wait_for(id, "completed").await;
    assert_eq!(status["approved_by"], json!(["ann", "ben"]));
    assert_eq!(status["approval"]["decided_by"], "ben");
    assert_eq!(
        each(&status["approvals"], "comment"),
        [format!("by {ANN}"), format!("by {BEN}")]
    );
    let (code, _) = decide(&server, ROOT, id, true).await;
    assert_eq!(code, 409, "a settled job takes no more decisions");
    let (code, recorded) = viewer.get(&format!("/jobs/{id}/approvals")).await;
    assert_eq!(code, 200, "{recorded}");
    assert_eq!(
        recorded, status["approvals"],
        "the record is what was taken"
    );
}

#[tokio::test]
async fn one_rejection_rejects_a_job_whatever_the_approvals_so_far() {
    let server = secured(|c| c.approval.required = 2).await;
    let id = awaiting_approval(&server, ROOT, json!({})).await;
    let (code, _) = decide(&server, ANN, id, true).await;
    assert_eq!(code, 200);
    let (code, body) = decide(&server, BEN, id, false).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "rejected");
    let status = server.as_holder_of(ROOT).wait_for(id, "rejected").await;
    assert_eq!(status["approval"]["decided_by"], "ben");
    assert_eq!(status["approval"]["approved"], false);
}

#[tokio::test]
async fn a_job_may_ask_for_more_approvals_than_configured_but_never_fewer_or_beyond_the_cap() {
    let server = secured(|c| {
        c.approval.required = 2;
        c.approval.max_required = 3;
    })
    .await;
    let root = server.as_holder_of(ROOT);
    for asked in [0, 1, 4] {
        let (code, body) = root
            .post(
                "/jobs/spawn",
                json!({"task": "t", "required_approvals": asked}),
            )
            .await;
        assert_eq!(code, 422, "{asked}: {body}");
        assert!(detail(&body).contains("required_approvals"), "{body}");
    }
    let (code, body) = root
        .post(
            "/jobs/spawn",
            json!({"task": "t", "required_approvals": 2.5}),
        )
        .await;
    assert_eq!(code, 422, "not a whole number: {body}");
    let id = submit(&root, json!({"required_approvals": 3.0})).await;
    let (_, status) = root.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["required_approvals"], 3);
    let id = submit(&root, json!({"required_approvals": null})).await;
    let (_, status) = root.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["required_approvals"], 2, "the configured default");
}

#[tokio::test]
async fn an_unsettled_job_expires_at_its_approval_deadline_and_its_workspace_goes() {
    let server = TestServer::sqlite_with(|c| {
        c.approval.timeout_seconds = 1;
        c.approval.required = 2;
    })
    .await;
    let id = server.spawn("t").await;
    server.pass_build_and_check(id).await;
    let (code, body) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 200, "{body}");
    let status = server.wait_for(id, "expired").await;
    assert_eq!(status["reason"], "ApprovalTimedOut");
    assert!(status["completed_at"].is_string(), "{status}");
    assert!(
        status["phase_seconds"]["awaiting_approval"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    assert!(!server.runtime.has_workspace(id));
    assert_eq!(server.runtime.workload_count(), 0);
    let (_, events) = server.get(&format!("/jobs/{id}/events")).await;
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("1 of the 2 approvals"),
        "{last}"
    );
    let (code, body) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 409, "too late: {body}");
}

#[tokio::test]
async fn an_approval_deadline_configured_to_reject_rejects_the_job() {
    let server = TestServer::sqlite_with(|c| {
        c.approval.timeout_seconds = 1;
        c.approval.on_timeout = icarus::config::OnApprovalTimeout::Rejected;
    })
    .await;
    let id = server.spawn("t").await;
    server.pass_build_and_check(id).await;
    let status = server.wait_for(id, "rejected").await;
    assert_eq!(status["reason"], "ApprovalTimedOut");
}

#[tokio::test]
async fn the_status_shows_how_long_each_part_of_a_completed_job_took() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.pass_build_and_check(id).await;
    let (code, _) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 200);
    let status = server.wait_for(id, "completed").await;
    let timers = &status["phase_seconds"];
    let parts = ["queued", "building", "checking", "awaiting_approval"];
    let sum: f64 = parts.iter().map(|p| timers[p].as_f64().unwrap()).sum();
    let total = timers["total"].as_f64().unwrap();
    assert!(sum <= total, "the parts lie within the whole: {timers}");
    let metrics = server.metrics().await;
    for phase in parts.iter().chain(&["total"]) {
        let series = format!("icarus_job_phase_duration_seconds_count{{phase=\"{phase}\"}}");
        assert_eq!(metrics.value(&series), 1.0, "{phase}");
    }
}
