//! The HTTP API's contract over real HTTP: the seed's shapes, and a clear
//! `{"detail": ...}` with the right status for every client mistake.

use icarus::job::Role;
use serde_json::json;

use crate::support::{TestServer, detail};

const UNKNOWN_ID: &str = "550e8400-e29b-41d4-a716-446655440000";

#[tokio::test]
async fn spawn_answers_201_with_the_seed_shape() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "Create a user login endpoint", "project_path": "/workspace"}),
        )
        .await;
    assert_eq!(code, 201);
    assert_eq!(body["status"], "pending");
    assert_eq!(body["message"], "Job created and queued for execution");
    assert!(
        body["job_id"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .is_ok()
    );
}

#[tokio::test]
async fn spawn_without_project_path_defaults_to_the_workspace() {
    let server = TestServer::sqlite().await;
    let (code, body) = server.post("/jobs/spawn", json!({"task": "t"})).await;
    assert_eq!(code, 201);
    let (_, status) = server
        .get(&format!(
            "/jobs/{}/status",
            body["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status["project_path"], "/workspace");
}

#[tokio::test]
async fn spawn_with_malformed_json_is_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server.post_raw("/jobs/spawn", "{\"task\": ").await;
    assert_eq!(code, 422);
    assert!(detail(&body).contains("invalid JSON"), "{body}");
}

#[tokio::test]
async fn spawn_with_an_empty_body_is_422() {
    let server = TestServer::sqlite().await;
    let (code, _) = server.post_raw("/jobs/spawn", "").await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn spawn_without_a_task_is_422_naming_the_field() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post("/jobs/spawn", json!({"project_path": "/workspace"}))
        .await;
    assert_eq!(code, 422);
    assert!(detail(&body).contains("task"), "{body}");
}

#[tokio::test]
async fn spawn_with_a_blank_task_is_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server.post("/jobs/spawn", json!({"task": "   "})).await;
    assert_eq!(code, 422);
    assert_eq!(detail(&body), "task must not be empty");
}

#[tokio::test]
async fn spawn_with_a_control_character_in_the_task_is_422_and_stores_nothing() {
    let server = TestServer::sqlite().await;
    for task in ["add\u{0}logging", "ring \u{7} the bell", "esc \u{1b}[31m"] {
        let (code, body) = server.post("/jobs/spawn", json!({"task": task})).await;
        assert_eq!(code, 422, "{task:?}");
        assert!(detail(&body).contains("control characters"), "{body}");
    }
    let (_, jobs) = server.get("/jobs").await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
    let (code, _) = server
        .post("/jobs/spawn", json!({"task": "two lines\n\tand a tab\r\n"}))
        .await;
    assert_eq!(code, 201, "newlines and tabs are text");
}

#[tokio::test]
async fn spawn_with_a_task_of_the_wrong_type_is_422() {
    let server = TestServer::sqlite().await;
    let (code, _) = server.post("/jobs/spawn", json!({"task": 42})).await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn spawn_with_a_task_over_the_limit_is_422() {
    let server = TestServer::sqlite().await;
    let task = "x".repeat(icarus::api::MAX_TASK_CHARS + 1);
    let (code, body) = server.post("/jobs/spawn", json!({"task": task})).await;
    assert_eq!(code, 422);
    assert!(detail(&body).contains("limit"), "{body}");
}

#[tokio::test]
async fn an_oversized_body_is_413_and_creates_nothing() {
    let server = TestServer::sqlite().await;
    let task = "x".repeat(server.config.orchestrator.max_request_bytes + 1);
    let (code, body) = server.post("/jobs/spawn", json!({"task": task})).await;
    assert_eq!(code, 413);
    assert!(detail(&body).contains("too large"), "{body}");
    let (_, jobs) = server.get("/jobs").await;
    assert_eq!(jobs.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn spawn_with_a_bad_image_override_is_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "builder_image": "two words"}),
        )
        .await;
    assert_eq!(code, 422);
    assert!(detail(&body).contains("builder_image"), "{body}");
}

#[tokio::test]
async fn the_status_of_a_job_has_the_seed_fields() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("Create a FastAPI endpoint").await;
    let (code, body) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 200);
    assert_eq!(body["job_id"], id.to_string());
    assert_eq!(body["task"], "Create a FastAPI endpoint");
    for field in ["status", "created_at", "completed_at", "error_message"] {
        assert!(body.get(field).is_some(), "missing {field} in {body}");
    }
}

#[tokio::test]
async fn an_unknown_job_is_404_on_every_job_route() {
    let server = TestServer::sqlite().await;
    for path in ["status", "telemetry", "audit", "events"] {
        let (code, body) = server.get(&format!("/jobs/{UNKNOWN_ID}/{path}")).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(detail(&body), format!("Job {UNKNOWN_ID} not found"));
    }
    let (code, _) = server
        .post(
            &format!("/jobs/{UNKNOWN_ID}/approve"),
            json!({"approved": true}),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = server
        .post(&format!("/jobs/{UNKNOWN_ID}/cancel"), json!({}))
        .await;
    assert_eq!(code, 404);
    let (code, _) = server
        .post(
            &format!("/jobs/{UNKNOWN_ID}/callback"),
            json!({"cpu_usage": 1.0}),
        )
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn an_invalid_job_id_is_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server.get("/jobs/not-a-uuid/status").await;
    assert_eq!(code, 422);
    assert!(detail(&body).contains("not a valid job id"), "{body}");
    let (code, _) = server
        .post("/jobs/12/approve", json!({"approved": true}))
        .await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn a_limit_outside_one_to_a_thousand_is_422() {
    let server = TestServer::sqlite().await;
    for limit in ["0", "1001", "-5", "abc"] {
        let (code, body) = server.get(&format!("/jobs?limit={limit}")).await;
        assert_eq!(code, 422, "limit={limit}: {body}");
    }
    let (code, _) = server.get("/jobs?limit=1000").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn an_unknown_or_empty_status_filter_is_422_listing_the_valid_ones() {
    let server = TestServer::sqlite().await;
    for filter in ["done", ""] {
        let (code, body) = server.get(&format!("/jobs?status={filter}")).await;
        assert_eq!(code, 422, "{filter:?}");
        assert!(detail(&body).contains("awaiting_approval"), "{body}");
    }
}

#[tokio::test]
async fn the_listing_is_newest_first_and_honours_limit_and_status() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 1).await;
    let first = server.spawn("first").await;
    server.wait_for_builder(first).await;
    let second = server.spawn("second").await;
    let third = server.spawn("third").await;

    let (_, all) = server.get("/jobs").await;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [third.to_string(), second.to_string(), first.to_string()]
    );
    let row = &all[0];
    for field in ["job_id", "task", "status", "created_at", "completed_at"] {
        assert!(row.get(field).is_some(), "missing {field}");
    }

    let (_, limited) = server.get("/jobs?limit=2").await;
    assert_eq!(limited.as_array().unwrap().len(), 2);

    let (_, pending) = server.get("/jobs?status=pending&limit=10").await;
    assert_eq!(pending.as_array().unwrap().len(), 2);
    let (_, building) = server.get("/jobs?status=building").await;
    assert_eq!(building[0]["job_id"], first.to_string());
}

#[tokio::test]
async fn approving_a_building_job_is_409_and_changes_nothing() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let (code, body) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 409);
    assert!(detail(&body).contains("building"), "{body}");
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["approval"], serde_json::Value::Null);
}

#[tokio::test]
async fn approve_with_a_malformed_body_is_422() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let (code, _) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": "yes"}))
        .await;
    assert_eq!(code, 422);
    let (code, _) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"comment": "no verdict"}),
        )
        .await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn cancelling_a_finished_job_is_409() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    server.runtime.exit(id, Role::Builder, 1);
    server.wait_for(id, "failed").await;
    let (code, body) = server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(code, 409);
    assert!(detail(&body).contains("failed"), "{body}");
}

#[tokio::test]
async fn telemetry_callbacks_show_in_the_telemetry_route() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let (_, before) = server.get(&format!("/jobs/{id}/telemetry")).await;
    assert_eq!(before["current_tool"], serde_json::Value::Null);
    server.wait_for_builder(id).await;
    let report = json!({"current_tool": "web_search(python logging)", "cpu_usage": 35.0, "ram_usage_mb": 450.0});
    let (code, _) = server
        .post(&server.agent_path(id, Role::Builder, 1), report)
        .await;
    assert_eq!(code, 200);
    let (code, body) = server.get(&format!("/jobs/{id}/telemetry")).await;
    assert_eq!(code, 200);
    assert_eq!(body["job_id"], id.to_string());
    assert_eq!(body["status"], "building");
    assert_eq!(body["cpu_usage"], 35.0);
    assert_eq!(body["ram_usage_mb"], 450.0);
    assert_eq!(body["current_tool"], "web_search(python logging)");
}

#[tokio::test]
async fn a_callback_for_a_job_with_no_running_agent_is_409() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 1).await;
    let first = server.spawn("first").await;
    server.wait_for_builder(first).await;
    let waiting = server.spawn("second").await;
    let (code, body) = server
        .post(
            &server.agent_path(waiting, Role::Checker, 1),
            json!({"cpu_usage": 1.0}),
        )
        .await;
    assert_eq!(code, 409);
    assert!(detail(&body).contains("pending"), "{body}");
}

#[tokio::test]
async fn callback_bodies_that_say_nothing_or_nonsense_are_422() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let path = server.agent_path(id, Role::Builder, 1);
    for body in [
        json!({}),
        json!({"status": "finished"}),
        json!({"cpu_usage": -1.0}),
        json!([1, 2]),
    ] {
        let (code, answer) = server.post(&path, body.clone()).await;
        assert_eq!(code, 422, "{body} -> {answer}");
    }
}

#[tokio::test]
async fn an_agent_reports_its_outcome_once_a_second_is_409_and_not_stored() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let path = server.agent_path(id, Role::Builder, 1);
    let (code, _) = server
        .post(&path, json!({"status": "completed", "message": "done"}))
        .await;
    assert_eq!(code, 200);
    let (code, body) = server
        .post(
            &path,
            json!({"status": "error", "error": "changed my mind"}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(detail(&body).contains("already reported"), "{body}");
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_ne!(
        status["status"], "failed",
        "the refused error changed nothing"
    );
}

#[tokio::test]
async fn the_checker_posts_its_audit_once_a_second_is_409_and_the_first_stands() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    server.runtime.exit(id, Role::Builder, 0);
    server.wait_for(id, "checking").await;
    let path = server.agent_path(id, Role::Checker, 1);
    let (code, _) = server
        .post(
            &path,
            json!({"current_tool": "audit", "audit_report": {"summary": "first"}}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = server
        .post(
            &path,
            json!({"current_tool": "audit", "audit_report": {"summary": "second"}}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let (_, audit) = server.get(&format!("/jobs/{id}/audit")).await;
    assert_eq!(audit["audit_report"]["summary"], "first", "{audit}");
}

#[tokio::test]
async fn report_fields_over_their_limits_are_422_and_name_the_field() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let path = server.agent_path(id, Role::Builder, 1);
    let long = |bytes: usize| "x".repeat(bytes + 1);
    for (field, body) in [
        (
            "message",
            json!({"status": "completed", "message": long(16 * 1024)}),
        ),
        (
            "error",
            json!({"status": "error", "error": long(16 * 1024)}),
        ),
        ("current_tool", json!({"current_tool": long(256)})),
    ] {
        let (code, answer) = server.post(&path, body).await;
        assert_eq!(code, 422, "{field}: {answer}");
        assert!(detail(&answer).starts_with(field), "{answer}");
    }
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "building", "nothing was recorded");
}

#[tokio::test]
async fn an_audit_report_from_the_builder_is_409() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let (code, _) = server
        .post(
            &server.agent_path(id, Role::Builder, 1),
            json!({"status": "completed", "audit_report": {"summary": "x"}}),
        )
        .await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn the_audit_route_is_404_until_the_checker_reports() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let (code, body) = server.get(&format!("/jobs/{id}/audit")).await;
    assert_eq!(code, 404);
    assert!(detail(&body).contains("no audit report"), "{body}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_format() {
    let server = TestServer::sqlite().await;
    let (code, body) = server.get("/nope").await;
    assert_eq!(code, 404);
    assert_eq!(detail(&body), "Not Found");
    let (code, body) = server.get("/jobs/spawn").await;
    assert_eq!(code, 405);
    assert_eq!(detail(&body), "Method Not Allowed");
}

#[tokio::test]
async fn the_service_routes_answer() {
    let server = TestServer::sqlite().await;
    let (code, body) = server.get("/").await;
    assert_eq!(code, 200);
    assert_eq!(body["name"], "icarus");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let (code, body) = server.get("/healthz").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 200);
    assert_eq!(body["database"], "sqlite");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let server = TestServer::sqlite().await;
    let (code, doc) = server.get("/openapi.json").await;
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/jobs/spawn",
        "/jobs",
        "/jobs/{job_id}/status",
        "/jobs/{job_id}/telemetry",
        "/jobs/{job_id}/audit",
        "/jobs/{job_id}/approve",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/callback",
        "/jobs/{job_id}/stream",
        "/jobs/{job_id}/events",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_lists_the_browser_safety_refusals() {
    let server = TestServer::sqlite().await;
    let (_, doc) = server.get("/openapi.json").await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let any_host = path == "/healthz" || path == "/readyz";
            assert_eq!(
                responses.contains_key("403"),
                !any_host,
                "{method} {path}: 403 listed only where a Host or Origin can be refused"
            );
            if operation.get("requestBody").is_some() {
                assert!(
                    responses.contains_key("415"),
                    "{method} {path} lists no 415"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_documentation_pages_are_served_from_the_binary_without_a_cdn() {
    let server = TestServer::sqlite().await;
    for (page, asset) in [
        ("/docs/", "swagger-ui-bundle.js"),
        ("/redoc", "/redoc/redoc.standalone.js"),
    ] {
        let response = server.client.get(server.url(page)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{page}");
        let html = response.text().await.unwrap();
        assert!(html.contains(asset), "{page} does not load {asset}");
        assert!(
            !html.contains("https://"),
            "{page} loads something from the network"
        );
    }
    let script = server
        .client
        .get(server.url("/redoc/redoc.standalone.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.bytes().await.unwrap().len() > 100_000);
    let swagger_js = server
        .client
        .get(server.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(swagger_js.status(), 200);
}

#[tokio::test]
async fn progress_reports_beyond_an_agents_rate_get_429_but_its_completion_does_not() {
    let server = TestServer::sqlite_with(|c| c.agents.progress_reports_per_second = 3).await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let path = server.agent_path(id, Role::Builder, 1);
    let mut codes = Vec::new();
    for n in 0..20 {
        let (code, _) = server
            .post(&path, json!({"current_tool": format!("step({n})")}))
            .await;
        codes.push(code);
    }
    assert_eq!(codes[0], 200);
    let refused = codes.iter().filter(|&&c| c == 429).count();
    assert!(refused > 0, "a burst of 20 was never refused: {codes:?}");
    let (code, body) = server
        .post(&path, json!({"status": "completed", "message": "done"}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, telemetry) = server.get(&format!("/jobs/{id}/telemetry")).await;
    let shown = telemetry["current_tool"].as_str().unwrap().to_owned();
    let last_accepted = codes.iter().rposition(|&c| c == 200).unwrap();
    assert_eq!(shown, format!("step({last_accepted})"));
}

#[tokio::test]
async fn a_builder_report_that_arrives_before_building_is_written_is_accepted() {
    // An agent may call back before the controller has recorded the phase
    // that started it; refusing would make it wait out a retry.
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 1).await;
    let first = server.spawn("first").await;
    server.wait_for_builder(first).await;
    let second = server.spawn("second").await;
    let (code, body) = server
        .post(
            &server.agent_path(second, Role::Builder, 1),
            json!({"current_tool": "plan(task)"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, telemetry) = server.get(&format!("/jobs/{second}/telemetry")).await;
    assert_eq!(telemetry["current_tool"], "plan(task)", "{telemetry}");
}

#[tokio::test]
async fn a_checker_report_that_arrives_before_the_phase_change_is_attributed_to_the_checker() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let path = server.agent_path(id, Role::Checker, 1);
    let (code, _) = server
        .post(
            &path,
            json!({"status": "completed", "audit_report": {"summary": "early"}}),
        )
        .await;
    assert_eq!(
        code, 200,
        "a fast checker may report while the job still reads building"
    );
    let (code, _) = server.get(&format!("/jobs/{id}/audit")).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn reports_from_another_attempt_or_an_agent_that_is_not_running_are_409() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let (code, body) = server
        .post(
            &server.agent_path(id, Role::Builder, 7),
            json!({"cpu_usage": 1.0}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    server.runtime.exit(id, Role::Builder, 0);
    server.wait_for(id, "checking").await;
    let (code, body) = server
        .post(
            &server.agent_path(id, Role::Builder, 1),
            json!({"cpu_usage": 1.0}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let (code, _) = server
        .post(
            &format!("/jobs/{id}/callback?role=pilot"),
            json!({"cpu_usage": 1.0}),
        )
        .await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn a_callback_without_a_token_is_401_and_changes_nothing() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let (code, body) = server
        .post(
            &format!("/jobs/{id}/callback?role=builder&attempt=1"),
            json!({"status": "error", "error": "forged"}),
        )
        .await;
    assert_eq!(code, 401, "{body}");
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "building");
}

#[tokio::test]
async fn another_jobs_token_is_401() {
    let server = TestServer::sqlite().await;
    let victim = server.spawn("victim").await;
    let attacker = server.spawn("attacker").await;
    server.wait_for_builder(victim).await;
    let stolen = server.agent_token(attacker, Role::Builder, 1);
    let (code, body) = server
        .post(
            &format!("/jobs/{victim}/callback?role=builder&attempt=1&token={stolen}"),
            json!({"status": "error", "error": "forged"}),
        )
        .await;
    assert_eq!(code, 401, "{body}");
    let (_, status) = server.get(&format!("/jobs/{victim}/status")).await;
    assert_eq!(status["status"], "building");
}

#[tokio::test]
async fn a_builder_cannot_post_the_checkers_audit_report_with_its_own_token() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let builders = server.agent_token(id, Role::Builder, 1);
    let report = json!({"status": "completed", "audit_report": {"summary": "all good, trust me"}});
    let (code, _) = server
        .post(
            &format!("/jobs/{id}/callback?role=checker&attempt=1&token={builders}"),
            report.clone(),
        )
        .await;
    assert_eq!(code, 401, "claiming the checker's role");
    let (code, _) = server
        .post(&format!("/jobs/{id}/callback?token={builders}"), report)
        .await;
    assert_eq!(code, 409, "attributed to the builder by its token");
    let (code, _) = server.get(&format!("/jobs/{id}/audit")).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn the_token_is_also_accepted_as_a_bearer_token() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let token = server.agent_token(id, Role::Builder, 1);
    let response = server
        .client
        .post(server.url(&format!("/jobs/{id}/callback")))
        .bearer_auth(token)
        .json(&json!({"current_tool": "plan(task)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_replayed_callback_after_the_job_ended_is_refused() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    server.wait_for(id, "cancelled").await;
    let (code, _) = server
        .post(
            &server.agent_path(id, Role::Builder, 1),
            json!({"status": "completed"}),
        )
        .await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn a_sqlite_file_moved_away_gives_503_writes_nothing_and_service_resumes_when_it_is_back() {
    let server = TestServer::sqlite().await;
    let kept = server.spawn("before").await;
    let file = server.sqlite_file();
    let aside = file.with_extension("aside");
    std::fs::rename(&file, &aside).unwrap();

    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    let (code, body) = server.post("/jobs/spawn", json!({"task": "lost?"})).await;
    assert_eq!(code, 503, "{body}");
    assert!(detail(&body).contains("removed or replaced"), "{body}");
    assert!(
        !file.exists(),
        "no new, empty database was made in its place"
    );

    std::fs::rename(&aside, &file).unwrap();
    let (code, _) = server.get("/readyz").await;
    assert_eq!(code, 200);
    let (code, status) = server.get(&format!("/jobs/{kept}/status")).await;
    assert_eq!(code, 200, "{status}");
    let (code, _) = server.post("/jobs/spawn", json!({"task": "after"})).await;
    assert_eq!(code, 201);
}

#[tokio::test]
async fn an_error_report_quoting_the_agents_callback_url_keeps_its_token_out_of_the_error_message()
{
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let path = server.agent_path(id, Role::Builder, 1);
    let token = server.agent_token(id, Role::Builder, 1);
    let report = json!({"status": "error", "error": format!("POST http://icarus{path} failed")});
    let (code, _) = server.post(&path, report).await;
    assert_eq!(code, 200);
    server.runtime.exit(id, Role::Builder, 3);

    let status = server.wait_for(id, "failed").await;
    let message = status["error_message"].as_str().unwrap();
    assert!(!message.contains(&token), "{message}");
    assert!(message.contains("token=[redacted] failed"), "{message}");
}

#[tokio::test]
async fn a_full_page_links_the_next_and_following_the_links_lists_every_job_once() {
    let server = TestServer::sqlite().await;
    let mut spawned = Vec::new();
    for n in 0..5 {
        spawned.push(server.spawn(&format!("job {n}")).await.to_string());
    }
    let mut listed: Vec<String> = Vec::new();
    let mut next = Some("/jobs?limit=2".to_owned());
    while let Some(path) = next.take() {
        let answer = server
            .client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        next = answer
            .headers()
            .get("link")
            .map(|link| link.to_str().unwrap().to_owned())
            .map(|link| {
                let (url, rel) = link.split_once("; ").unwrap();
                assert_eq!(rel, "rel=\"next\"");
                url.trim_matches(['<', '>']).to_owned()
            });
        let page: serde_json::Value = answer.json().await.unwrap();
        listed.extend(
            page.as_array()
                .unwrap()
                .iter()
                .map(|j| j["job_id"].as_str().unwrap().to_owned()),
        );
    }
    spawned.reverse();
    assert_eq!(listed, spawned, "newest first, each once");
}

#[tokio::test]
async fn a_page_after_something_that_is_no_job_id_is_422() {
    let server = TestServer::sqlite().await;
    let (code, body) = server.get("/jobs?after=yesterday").await;
    assert_eq!(code, 422, "{body}");
    assert!(detail(&body).contains("after"), "{body}");
}

#[tokio::test]
async fn the_next_page_keeps_the_filters_of_the_page_before() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 1).await;
    let first = server.spawn("first").await;
    server.wait_for_builder(first).await;
    server.spawn("second").await;
    let newest = server.spawn("third").await;
    let answer = server
        .client
        .get(format!(
            "{}/jobs?limit=1&status=pending&project_id=default",
            server.base
        ))
        .send()
        .await
        .unwrap();
    let link = answer.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!("</jobs?limit=1&after={newest}&status=pending&project_id=default>; rel=\"next\"")
    );
}

/// A page of the list is answered from memory until a job changes, and a
/// read after a write on this replica shows the write.
#[tokio::test]
async fn a_list_page_is_read_once_until_a_job_changes_and_then_shows_the_change() {
    let server = TestServer::sqlite().await;
    let store = server.orchestrator.as_ref().unwrap().store();
    let first = server.spawn("first").await;
    server
        .post(&format!("/jobs/{first}/cancel"), json!({}))
        .await;
    server.wait_for(first, "cancelled").await;
    let (_, page) = server.get("/jobs").await;
    assert_eq!(page[0]["status"], "cancelled");
    let hits = store.view_counters().hits.get();
    let (_, again) = server.get("/jobs").await;
    assert_eq!(again, page);
    assert_eq!(
        store.view_counters().hits.get(),
        hits + 1,
        "one hit: the whole page"
    );

    let second = server.spawn("second").await;
    let (_, page) = server.get("/jobs").await;
    assert_eq!(page[0]["job_id"], second.to_string(), "{page}");
    server
        .post(&format!("/jobs/{second}/cancel"), json!({}))
        .await;
    server.wait_for(second, "cancelled").await;
    let (_, page) = server.get("/jobs").await;
    assert_eq!(page[0]["status"], "cancelled", "{page}");
    assert_eq!(page.as_array().unwrap().len(), 2);
}

/// A kept page goes gzip-compressed to a client that asks (as browsers do),
/// the same rows as without, and says it varies with the asking.
#[tokio::test]
async fn a_list_page_is_gzipped_for_a_client_that_accepts_it() {
    use std::io::Read;
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 6).await;
    for n in 0..6 {
        let id = server
            .spawn(&format!("job {n}: {}", "words ".repeat(40)))
            .await;
        server.wait_for_builder(id).await;
    }
    let get = |encoding: Option<&str>| {
        let mut request = server.client.get(format!("{}/jobs", server.base));
        if let Some(encoding) = encoding {
            request = request.header("accept-encoding", encoding);
        }
        async move { request.send().await.unwrap() }
    };
    let plain = get(None).await;
    assert_eq!(plain.headers()["vary"], "accept-encoding");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: serde_json::Value = plain.json().await.unwrap();
    for _ in 0..2 {
        let answer = get(Some("gzip, deflate, br")).await;
        assert_eq!(answer.headers()["content-encoding"], "gzip");
        assert_eq!(answer.headers()["vary"], "accept-encoding");
        let compressed = answer.bytes().await.unwrap();
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut body)
            .unwrap();
        assert!(compressed.len() < body.len() / 2, "compressed");
        let rows: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(rows, plain);
    }
    let refused = get(Some("gzip;q=0, identity")).await;
    assert!(refused.headers().get("content-encoding").is_none());
}
