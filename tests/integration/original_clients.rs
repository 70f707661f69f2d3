//! What the original service's clients send and read, over real HTTP: the
//! spawn body's `phase`, `test_code` and `project_id`, the listing's
//! project filter, and telemetry numbers that are always numbers. (The
//! original dashboard's whole session, replayed on the Docker engine, is in
//! `dashboard.rs`.)

use icarus::job::Role;
use serde_json::{Value, json};

use crate::support::{TestServer, detail};

/// Spawns `body` and returns the job's status.
async fn spawn_and_read(server: &TestServer, body: Value) -> Value {
    let (code, spawned) = server.post("/jobs/spawn", body).await;
    assert_eq!(code, 201, "{spawned}");
    let id = spawned["job_id"].as_str().unwrap();
    let (code, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 200, "{status}");
    status
}

#[tokio::test]
async fn the_original_dashboards_spawn_body_is_accepted_and_its_phase_shown() {
    let server = TestServer::sqlite().await;
    let body =
        json!({"task": "Create a user login endpoint", "project_path": "/workspace", "phase": "I"});
    let (code, spawned) = server.post("/jobs/spawn", body).await;
    assert_eq!(code, 201, "{spawned}");
    // The spawn answers for the moment of spawning; by the status read the
    // controller may already have started the builder.
    assert_eq!(spawned["status"], "pending");
    let id = spawned["job_id"].as_str().unwrap();
    let (code, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["phase"], "I");
}

#[tokio::test]
async fn a_spawn_without_the_original_fields_is_phase_i_of_the_default_project_without_tests() {
    let server = TestServer::sqlite().await;
    let status = spawn_and_read(&server, json!({"task": "t"})).await;
    assert_eq!(status["phase"], "I");
    assert_eq!(status["project_id"], "default");
    assert_eq!(status["test_code"], Value::Null);
}

#[tokio::test]
async fn null_phase_and_project_id_read_as_their_defaults() {
    let server = TestServer::sqlite().await;
    let status = spawn_and_read(
        &server,
        json!({"task": "t", "phase": null, "project_id": null, "test_code": null}),
    )
    .await;
    assert_eq!(status["phase"], "I");
    assert_eq!(status["project_id"], "default");
    assert_eq!(status["test_code"], Value::Null);
}

#[tokio::test]
async fn every_field_of_the_original_request_model_is_stored_and_shown() {
    let server = TestServer::sqlite().await;
    let tests = "def test_login():\n    assert login('a', 'b')\n";
    let status = spawn_and_read(
        &server,
        json!({
            "task": "Create a user login endpoint",
            "project_path": "/workspace",
            "phase": "II",
            "test_code": tests,
            "project_id": "acme-api",
        }),
    )
    .await;
    assert_eq!(status["phase"], "II");
    assert_eq!(status["test_code"], tests);
    assert_eq!(status["project_id"], "acme-api");
}

#[tokio::test]
async fn a_phase_other_than_i_or_ii_is_422_naming_both() {
    let server = TestServer::sqlite().await;
    for phase in [json!("III"), json!("i"), json!(""), json!(2)] {
        let (code, body) = server
            .post("/jobs/spawn", json!({"task": "t", "phase": phase}))
            .await;
        assert_eq!(code, 422, "{phase}: {body}");
    }
    let (code, body) = server
        .post("/jobs/spawn", json!({"task": "t", "phase": "III"}))
        .await;
    assert_eq!(code, 422);
    assert!(detail(&body).contains("`I` or `II`"), "{body}");
    let (_, jobs) = server.get("/jobs").await;
    assert_eq!(jobs, json!([]), "nothing was stored");
}

#[tokio::test]
async fn an_unknown_field_beside_the_original_ones_is_still_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "phase": "I", "project_id": "p", "urgency": "high"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(detail(&body).contains("unknown field `urgency`"), "{body}");
}

#[tokio::test]
async fn a_project_id_that_is_not_a_label_value_is_422() {
    let server = TestServer::sqlite().await;
    for project in ["", "-acme", "acme/api", "a b", &"x".repeat(64)] {
        let (code, body) = server
            .post("/jobs/spawn", json!({"task": "t", "project_id": project}))
            .await;
        assert_eq!(code, 422, "{project:?}: {body}");
        assert!(detail(&body).contains("project_id"), "{body}");
    }
}

#[tokio::test]
async fn test_code_over_its_limit_in_bytes_is_422_naming_the_key() {
    let server = TestServer::sqlite_with(|c| c.agents.max_test_code_bytes = 16).await;
    let (code, _) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "test_code": "x".repeat(16)}),
        )
        .await;
    assert_eq!(code, 201, "exactly the limit is accepted");
    // Nine characters, eighteen bytes.
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "test_code": "é".repeat(9)}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        detail(&body).contains("agents.max_test_code_bytes"),
        "{body}"
    );
}

#[tokio::test]
async fn test_code_with_a_nul_is_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post("/jobs/spawn", json!({"task": "t", "test_code": "a\u{0}b"}))
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(detail(&body).contains("NUL"), "{body}");
}

#[tokio::test]
async fn the_builder_is_started_with_the_test_code_and_the_checker_without() {
    let server = TestServer::sqlite().await;
    let tests = "def test_it():\n    assert run() == 'ok'\n";
    let (_, spawned) = server
        .post("/jobs/spawn", json!({"task": "t", "test_code": tests}))
        .await;
    let id = spawned["job_id"].as_str().unwrap().parse().unwrap();
    server.wait_for_builder(id).await;
    let variable = |role: Role| {
        let spec = server.runtime.spec_of(id, role).unwrap();
        spec.env
            .into_iter()
            .find(|(name, _)| name == "TEST_CODE")
            .map(|(_, value)| value)
    };
    assert_eq!(variable(Role::Builder).as_deref(), Some(tests));
    server.runtime.exit(id, Role::Builder, 0);
    server.wait_for(id, "checking").await;
    assert_eq!(variable(Role::Checker), None);
}

#[tokio::test]
async fn the_listing_filters_by_project_and_shows_each_rows_project() {
    let server = TestServer::sqlite().await;
    let mut ids = Vec::new();
    for project in [Some("acme"), None, Some("acme"), Some("globex")] {
        let mut body = json!({"task": "t"});
        if let Some(project) = project {
            body["project_id"] = json!(project);
        }
        let (code, spawned) = server.post("/jobs/spawn", body).await;
        assert_eq!(code, 201, "{spawned}");
        ids.push(spawned["job_id"].as_str().unwrap().to_owned());
    }
    let listed = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| row["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (code, acme) = server.get("/jobs?project_id=acme").await;
    assert_eq!(code, 200, "{acme}");
    assert_eq!(listed(&acme), [ids[2].clone(), ids[0].clone()]);
    assert!(
        acme.as_array()
            .unwrap()
            .iter()
            .all(|r| r["project_id"] == "acme")
    );
    let (_, default) = server.get("/jobs?project_id=default").await;
    assert_eq!(listed(&default), [ids[1].clone()]);
    let (_, all) = server.get("/jobs").await;
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert_eq!(all[0]["project_id"], "globex");
    let (_, none) = server.get("/jobs?project_id=initech&status=pending").await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn a_project_filter_that_is_not_a_project_id_is_422() {
    let server = TestServer::sqlite().await;
    for filter in ["", "a%20b", "-x"] {
        let (code, body) = server.get(&format!("/jobs?project_id={filter}")).await;
        assert_eq!(code, 422, "{filter:?}: {body}");
        assert!(detail(&body).contains("project_id"), "{body}");
    }
}

#[tokio::test]
async fn telemetry_before_any_report_is_zero_cpu_and_memory_not_null() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let (code, body) = server.get(&format!("/jobs/{id}/telemetry")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["cpu_usage"], json!(0.0));
    assert_eq!(body["ram_usage_mb"], json!(0.0));
    assert_eq!(body["timestamp"], Value::Null, "no report yet");
    assert_eq!(body["measured"], Value::Null, "nothing measured yet");
}

#[tokio::test]
async fn a_progress_report_without_numbers_reads_as_zero_cpu_and_memory() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let (code, _) = server
        .post(
            &server.agent_path(id, Role::Builder, 1),
            json!({"current_tool": "read_file(README.md)"}),
        )
        .await;
    assert_eq!(code, 200);
    let (_, body) = server.get(&format!("/jobs/{id}/telemetry")).await;
    assert_eq!(body["current_tool"], "read_file(README.md)");
    assert_eq!(body["cpu_usage"], json!(0.0));
    assert_eq!(body["ram_usage_mb"], json!(0.0));
    assert!(body["timestamp"].is_string());
}
