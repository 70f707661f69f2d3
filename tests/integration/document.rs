//! The OpenAPI document as served, in process: what it says for this
//! configuration, and the server refusing what it says is refused. (The
//! whole of it is checked against the real binary by Schemathesis, in
//! `openapi_contract`.)

use icarus::job::Role;
use regex::Regex;
use serde_json::{Value, json};

use crate::support::{TestServer, detail, with_a_viewer};

const UNKNOWN_ID: &str = "550e8400-e29b-41d4-a716-446655440000";

async fn document(server: &TestServer) -> Value {
    let (code, doc) = server.get("/openapi.json").await;
    assert_eq!(code, 200);
    doc
}

/// The pattern of a property of a component schema, as a `Regex`.
fn pattern(doc: &Value, schema: &str, property: &str) -> Regex {
    let pointer = format!("/components/schemas/{schema}/properties/{property}/pattern");
    let text = doc.pointer(&pointer).and_then(Value::as_str);
    Regex::new(text.unwrap_or_else(|| panic!("no {pointer}"))).unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            found.push((method.clone(), path.clone(), operation));
        }
    }
    found
}

#[tokio::test]
async fn the_document_states_the_images_and_project_roots_configured() {
    let server = TestServer::sqlite_with(|c| {
        c.agents.allowed_images = vec!["registry.example.com/agents/*".to_owned()];
        c.workspace.allowed_project_roots = vec!["/workspace".to_owned(), "/srv/jobs/".to_owned()];
    })
    .await;
    let doc = document(&server).await;
    let image = pattern(&doc, "SpawnRequest", "builder_image");
    for allowed in [
        "icarus-builder:latest",
        "registry.example.com/agents/coder:2",
    ] {
        assert!(image.is_match(allowed), "{allowed}");
    }
    for refused in ["evil/miner:latest", "registry.example.com/agents/a b"] {
        assert!(!image.is_match(refused), "{refused}");
        let body = json!({"task": "t", "builder_image": refused});
        let (code, _) = server.post("/jobs/spawn", body).await;
        assert_eq!(code, 422, "{refused}");
    }
    let path = pattern(&doc, "SpawnRequest", "project_path");
    assert!(path.is_match("/srv/jobs/api"));
    for refused in [
        "/srv/jobs/../etc",
        "//workspace",
        "/workspace/./api",
        "/srv",
    ] {
        assert!(!path.is_match(refused), "{refused}");
        let body = json!({"task": "t", "project_path": refused});
        let (code, body) = server.post("/jobs/spawn", body).await;
        assert_eq!(code, 422, "{refused}: {body}");
    }
    let task = &doc["components"]["schemas"]["SpawnRequest"]["properties"]["task"];
    assert_eq!(task["maxLength"], icarus::api::MAX_TASK_CHARS);
}

#[tokio::test]
async fn with_authentication_off_no_operation_asks_for_a_token() {
    let server = TestServer::sqlite().await;
    let doc = document(&server).await;
    assert!(doc["components"].get("securitySchemes").is_none());
    for (method, path, operation) in operations(&doc) {
        assert!(operation.get("security").is_none(), "{method} {path}");
        let callback = path.ends_with("/callback");
        let lists_401 = operation["responses"].get("401").is_some();
        assert_eq!(
            lists_401, callback,
            "{method} {path}: 401 only for an agent's token"
        );
    }
}

#[tokio::test]
async fn with_authentication_on_the_operations_that_take_a_caller_ask_for_the_token_and_list_401() {
    let server = TestServer::sqlite_with(with_a_viewer).await;
    let doc = document(&server).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["api_token"]["scheme"],
        "bearer"
    );
    for (method, path, operation) in operations(&doc) {
        let secured_outside_jobs = ["/metrics", "/auth/me", "/images"].contains(&path.as_str());
        let public =
            (!path.starts_with("/jobs") && !path.starts_with("/queue") && !secured_outside_jobs)
                || path.ends_with("/callback");
        assert_eq!(
            operation.get("security").is_none(),
            public,
            "{method} {path}"
        );
        let lists_401 = operation["responses"].get("401").is_some();
        assert_eq!(
            lists_401,
            !public || path.ends_with("/callback"),
            "{method} {path}"
        );
        if !public {
            let url = server.url(&path.replace("{job_id}", UNKNOWN_ID));
            let request = server
                .client
                .request(method.to_uppercase().parse().unwrap(), url);
            let (code, body) = server.send(request).await;
            assert_eq!(code, 401, "{method} {path} without a token: {body}");
        }
    }
}

#[tokio::test]
async fn every_operation_lists_its_extractors_and_the_databases_answers() {
    let server = TestServer::sqlite().await;
    let doc = document(&server).await;
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().unwrap();
        let has = |code: &str| responses.contains_key(code);
        assert!(has("500"), "{method} {path}");
        if path.starts_with("/jobs") || path.starts_with("/queue") {
            assert!(has("503"), "{method} {path}");
        }
        if path.contains("{job_id}") {
            assert!(has("404") && has("422"), "{method} {path}");
        }
        if operation.get("requestBody").is_some() {
            assert!(has("413") && has("415") && has("422"), "{method} {path}");
        }
        for (code, response) in responses {
            let error = response.pointer("/content/application~1json/schema/$ref");
            if code.starts_with('4') || code.starts_with('5') {
                assert_eq!(
                    error.and_then(Value::as_str),
                    Some("#/components/schemas/ErrorBody"),
                    "{method} {path} {code}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_spawned_job_links_to_every_operation_on_a_job() {
    let server = TestServer::sqlite().await;
    let doc = document(&server).await;
    let links = doc
        .pointer("/paths/~1jobs~1spawn/post/responses/201/links")
        .and_then(Value::as_object)
        .unwrap();
    let on_a_job: Vec<&str> = operations(&doc)
        .into_iter()
        .filter(|(_, path, _)| path.contains("{job_id}"))
        .map(|(_, _, operation)| operation["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(links.len(), on_a_job.len());
    for id in on_a_job {
        assert_eq!(links[id]["operationId"], id);
        assert_eq!(links[id]["parameters"]["job_id"], "$response.body#/job_id");
    }
}

#[tokio::test]
async fn a_request_to_the_stream_that_is_not_a_websocket_handshake_is_400_in_the_error_format() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let (code, body) = server.get(&format!("/jobs/{id}/stream")).await;
    assert_eq!(code, 400);
    assert!(
        detail(&body).contains("not a WebSocket handshake"),
        "{body}"
    );
}

#[tokio::test]
async fn an_approval_comment_or_snapshot_over_its_limit_is_422() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let path = format!("/jobs/{id}/approve");
    for (field, value) in [("comment", 16 * 1024 + 1), ("snapshot", 257)] {
        let decision = json!({"approved": true, field: "x".repeat(value)});
        let (code, body) = server.post(&path, decision).await;
        assert_eq!(code, 422, "{field}");
        assert!(detail(&body).starts_with(field), "{body}");
    }
}

#[tokio::test]
async fn report_fields_are_limited_in_characters_as_the_document_counts_them() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let path = server.agent_path(id, Role::Builder, 1);
    // 256 two-byte characters: 512 bytes, within the limit of 256 characters.
    let (code, body) = server
        .post(&path, json!({"current_tool": "é".repeat(256)}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = server
        .post(&path, json!({"current_tool": "é".repeat(257)}))
        .await;
    assert_eq!(code, 422, "{body}");
}

#[tokio::test]
async fn the_document_states_the_original_fields_rules_and_the_server_keeps_to_them() {
    let server = TestServer::sqlite_with(|c| c.agents.max_test_code_bytes = 1000).await;
    let doc = document(&server).await;
    let spawn = &doc["components"]["schemas"]["SpawnRequest"]["properties"];
    let phase = doc.pointer("/components/schemas/ProjectPhase/enum");
    assert_eq!(phase, Some(&json!(["I", "II"])));
    assert_eq!(spawn["test_code"]["maxLength"], 1000);
    let described = spawn["test_code"]["description"].as_str().unwrap();
    assert!(described.contains("At most 1000 bytes"), "{described}");

    let project = pattern(&doc, "SpawnRequest", "project_id");
    let listing = doc["paths"]["/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "project_id")
        .unwrap();
    assert_eq!(listing["schema"]["pattern"], project.as_str());
    assert_eq!(listing["schema"]["maxLength"], 63);
    for (id, allowed) in [
        ("acme-api", true),
        ("a.b_c", true),
        ("-x", false),
        ("x-", false),
    ] {
        assert_eq!(project.is_match(id), allowed, "{id}");
        let (code, body) = server.get(&format!("/jobs?project_id={id}")).await;
        assert_eq!(code, if allowed { 200 } else { 422 }, "{id}: {body}");
    }
}

#[tokio::test]
async fn the_document_bounds_the_approvals_a_job_may_ask_for_as_configured() {
    let server = TestServer::sqlite_with(|c| {
        c.approval.required = 2;
        c.approval.max_required = 4;
    })
    .await;
    let doc = document(&server).await;
    let asked = &doc["components"]["schemas"]["SpawnRequest"]["properties"]["required_approvals"];
    assert_eq!(asked["minimum"], 2, "{asked}");
    assert_eq!(asked["maximum"], 4, "{asked}");
    for (value, code) in [(1, 422), (2, 201), (4, 201), (5, 422)] {
        let body = json!({"task": "t", "required_approvals": value});
        let (answered, body) = server.post("/jobs/spawn", body).await;
        assert_eq!(answered, code, "{value}: {body}");
    }
    let phases = &doc["components"]["schemas"]["Phase"]["enum"];
    assert!(
        phases.as_array().unwrap().contains(&json!("expired")),
        "{phases}"
    );
}
