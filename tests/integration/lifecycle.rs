//! The whole lifecycle through the real server, with the in-memory runtime
//! test double (`FakeRuntime`) playing the agents: happy paths, failures,
//! deadlines, cancel, admission, and restarts that lose nothing.

use std::time::Duration;

use icarus::job::workload::WorkloadKey;
use icarus::job::{JobId, Role};
use serde_json::json;

use crate::support::{APPROVED_JOB_PHASES, TestServer, eventually};

/// Drives a job from spawn to `awaiting_approval`, playing both agents.
async fn to_awaiting_approval(server: &TestServer) -> JobId {
    let id = server.spawn("Add logging to the API endpoints").await;
    server.wait_for_builder(id).await;
    assert!(server.runtime.exit(id, Role::Builder, 0));
    server.wait_for(id, "checking").await;
    let audit = json!({"status": "completed", "audit_report": {"summary": "clean", "logic_verification": {"files_created": 1}}});
    let (code, _) = server
        .post(&server.agent_path(id, Role::Checker, 1), audit)
        .await;
    assert_eq!(code, 200);
    server.wait_until_running(id, Role::Checker).await;
    assert!(server.runtime.exit(id, Role::Checker, 0));
    server.wait_for(id, "awaiting_approval").await;
    id
}

fn key(id: JobId, role: Role) -> WorkloadKey {
    WorkloadKey {
        job: id,
        role,
        attempt: 1,
    }
}

async fn transitions(server: &TestServer, id: JobId) -> Vec<String> {
    let (_, events) = server.get(&format!("/jobs/{id}/events")).await;
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_job_runs_builder_then_checker_then_completes_on_approval() {
    let server = TestServer::sqlite().await;
    let id = to_awaiting_approval(&server).await;

    let spec = server.runtime.spec_of(id, Role::Checker).unwrap();
    assert!(
        spec.workspace_read_only,
        "the checker must see the workspace read-only"
    );
    let env: std::collections::HashMap<_, _> = spec.env.into_iter().collect();
    assert_eq!(env["JOB_ID"], id.to_string());
    assert_eq!(env["TASK"], "Add logging to the API endpoints");
    assert!(
        env["ORCHESTRATOR_CALLBACK"].ends_with(&server.agent_path(id, Role::Checker, 1)),
        "the callback names the agent and carries its token: {}",
        env["ORCHESTRATOR_CALLBACK"]
    );

    let (code, audit) = server.get(&format!("/jobs/{id}/audit")).await;
    assert_eq!(code, 200);
    assert_eq!(audit["audit_report"]["summary"], "clean");

    let (code, body) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "comment": "LGTM!"}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({"message": format!("Job {id} approved"), "status": "approved"})
    );
    let done = server.wait_for(id, "completed").await;
    assert!(done["completed_at"].is_string());
    assert_eq!(done["approval"]["comment"], "LGTM!");

    assert_eq!(transitions(&server, id).await, APPROVED_JOB_PHASES);
    assert_eq!(server.runtime.creations(key(id, Role::Builder)), 1);
    assert_eq!(server.runtime.creations(key(id, Role::Checker)), 1);
    eventually(Duration::from_secs(5), || async {
        (server.runtime.workload_count() == 0).then_some(())
    })
    .await;
    assert!(
        server.runtime.has_workspace(id),
        "completion keeps the workspace"
    );
}

#[tokio::test]
async fn approving_twice_is_409() {
    let server = TestServer::sqlite().await;
    let id = to_awaiting_approval(&server).await;
    let (code, _) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": false}))
        .await;
    assert_eq!(code, 200);
    let (code, body) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 409, "{body}");
    server.wait_for(id, "rejected").await;
}

#[tokio::test]
async fn rejection_removes_the_workspace_and_the_agents() {
    let server = TestServer::sqlite().await;
    let id = to_awaiting_approval(&server).await;
    let (code, body) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": false, "comment": "Security issues need fixing"}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "rejected");
    server.wait_for(id, "rejected").await;
    assert!(!server.runtime.has_workspace(id));
    assert_eq!(server.runtime.workload_count(), 0);
}

#[tokio::test]
async fn a_builder_that_exits_non_zero_fails_the_job_with_its_exit_code() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    server
        .runtime
        .exit_with_output(id, Role::Builder, 2, "compiling...\nerror: no space left\n");
    let status = server.wait_for(id, "failed").await;
    assert_eq!(
        status["error_message"],
        "builder exited with code 2; last log lines:\ncompiling...\nerror: no space left"
    );
    assert_eq!(status["reason"], "BuilderFailed");
    assert_eq!(status["builder_exit_code"], 2);
    // The checker created ahead goes once the failure is recorded.
    eventually(Duration::from_secs(5), || async {
        server
            .runtime
            .spec_of(id, Role::Checker)
            .is_none()
            .then_some(())
    })
    .await;
    let logs = eventually(Duration::from_secs(5), || async {
        let (_, logs) = server.get(&format!("/jobs/{id}/logs")).await;
        (!logs.as_array().unwrap().is_empty()).then_some(logs)
    })
    .await;
    assert_eq!(logs[0]["role"], "builder");
    assert_eq!(logs[0]["log"], "compiling...\nerror: no space left\n");
}

#[tokio::test]
async fn a_checker_killed_for_memory_fails_the_job_saying_so() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    server.runtime.exit(id, Role::Builder, 0);
    server.wait_for(id, "checking").await;
    server.wait_until_running(id, Role::Checker).await;
    server.runtime.oom_kill(id, Role::Checker);
    let status = server.wait_for(id, "failed").await;
    assert_eq!(status["reason"], "CheckerOOMKilled");
    assert!(
        status["error_message"]
            .as_str()
            .unwrap()
            .contains("out of memory")
    );
}

#[tokio::test]
async fn an_error_callback_fails_the_job_and_stops_the_agent() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let (code, _) = server
        .post(
            &server.agent_path(id, Role::Builder, 1),
            json!({"status": "error", "error": "model quota exhausted"}),
        )
        .await;
    assert_eq!(code, 200);
    let status = server.wait_for(id, "failed").await;
    assert_eq!(
        status["error_message"],
        "builder reported an error: model quota exhausted"
    );
    eventually(Duration::from_secs(5), || async {
        (server.runtime.workload_count() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_builder_past_its_deadline_fails_the_job() {
    let server = TestServer::sqlite_with(|c| c.agents.builder.timeout_seconds = 1).await;
    let id = server.spawn("hang").await;
    server.wait_for_builder(id).await;
    let status = server.wait_for(id, "failed").await;
    assert_eq!(status["reason"], "BuilderTimedOut");
    assert_eq!(
        status["error_message"],
        "builder exceeded its deadline of 1 s"
    );
    eventually(Duration::from_secs(5), || async {
        (server.runtime.workload_count() == 0).then_some(())
    })
    .await;
}

/// A server whose agents get `attempts` attempts, waiting `backoff`
/// seconds before the second.
async fn retrying_server(attempts: u32, backoff: f64) -> TestServer {
    TestServer::sqlite_with(move |c| {
        c.agents.max_attempts = attempts;
        c.agents.retry_backoff_seconds = backoff;
    })
    .await
}

/// Waits until the controller has recorded the builder it started.
async fn builder_recorded(server: &TestServer, id: JobId) {
    eventually(Duration::from_secs(5), || async {
        let (_, s) = server.get(&format!("/jobs/{id}/status")).await;
        s["builder_container_id"].is_string().then_some(())
    })
    .await;
}

fn attempt(id: JobId, role: Role, attempt: u32) -> WorkloadKey {
    WorkloadKey {
        attempt,
        ..key(id, role)
    }
}

#[tokio::test]
async fn a_vanished_builder_runs_again_as_the_next_attempt_and_the_job_goes_on() {
    let server = retrying_server(3, 0.05).await;
    let id = server.spawn("t").await;
    builder_recorded(&server, id).await;
    server.runtime.vanish(id, Role::Builder);
    eventually(Duration::from_secs(5), || async {
        (server.runtime.creations(attempt(id, Role::Builder, 2)) == 1).then_some(())
    })
    .await;
    let (_, events) = server.get(&format!("/jobs/{id}/events")).await;
    let retried = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "BuilderRetried")
        .unwrap_or_else(|| panic!("no retry event in {events}"));
    assert!(
        retried["message"].as_str().unwrap().contains("disappeared"),
        "{retried}"
    );
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "building");
    assert_eq!(status["attempt"], 2);
    assert!(status["retry_at"].is_string(), "{status}");
    server.runtime.exit(id, Role::Builder, 0);
    server.wait_for(id, "checking").await;
    assert_eq!(server.runtime.creations(attempt(id, Role::Checker, 2)), 1);
    assert_eq!(server.runtime.creations(attempt(id, Role::Checker, 1)), 1);
}

#[tokio::test]
async fn a_builder_that_vanishes_on_its_last_attempt_fails_the_job() {
    let server = retrying_server(1, 0.05).await;
    let id = server.spawn("t").await;
    builder_recorded(&server, id).await;
    server.runtime.vanish(id, Role::Builder);
    let status = server.wait_for(id, "failed").await;
    assert_eq!(status["reason"], "BuilderVanished");
    let message = status["error_message"].as_str().unwrap();
    assert!(message.contains("attempt 1 of 1; none left"), "{message}");
}

#[tokio::test]
async fn cancel_stops_the_job_in_each_phase() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 1).await;
    // building
    let building = server.spawn("building").await;
    server.wait_for_builder(building).await;
    // pending (the only slot is taken)
    let pending = server.spawn("pending").await;
    for id in [pending, building] {
        let (code, body) = server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
        assert_eq!(code, 200);
        assert_eq!(body["status"], "cancelled");
        server.wait_for(id, "cancelled").await;
        assert!(!server.runtime.has_workspace(id));
    }
    // checking and awaiting approval
    let checking = server.spawn("checking").await;
    server.wait_for_builder(checking).await;
    server.runtime.exit(checking, Role::Builder, 0);
    server.wait_for(checking, "checking").await;
    server
        .post(&format!("/jobs/{checking}/cancel"), json!({}))
        .await;
    server.wait_for(checking, "cancelled").await;
    let awaiting = to_awaiting_approval(&server).await;
    server
        .post(&format!("/jobs/{awaiting}/cancel"), json!({}))
        .await;
    server.wait_for(awaiting, "cancelled").await;
    eventually(Duration::from_secs(5), || async {
        (server.runtime.workload_count() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn at_most_max_concurrent_jobs_run_and_the_oldest_waiting_goes_next() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 2).await;
    let jobs = [
        server.spawn("a").await,
        server.spawn("b").await,
        server.spawn("c").await,
        server.spawn("d").await,
    ];
    server.wait_for_builder(jobs[0]).await;
    server.wait_for_builder(jobs[1]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.phase(jobs[2]).await, "pending");
    assert_eq!(server.phase(jobs[3]).await, "pending");
    let (_, status) = server.get(&format!("/jobs/{}/status", jobs[3])).await;
    assert_eq!(status["reason"], "ConcurrencyLimit");

    server.runtime.exit(jobs[1], Role::Builder, 1);
    server.wait_for_builder(jobs[2]).await;
    assert_eq!(server.phase(jobs[3]).await, "pending");
    assert!(server.runtime.running_count() <= 2);
}

#[tokio::test]
async fn the_lifecycle_works_the_same_on_postgres() {
    let server = TestServer::postgres().await;
    let id = to_awaiting_approval(&server).await;
    server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    server.wait_for(id, "completed").await;
    assert_eq!(transitions(&server, id).await.len(), 6);
}

#[tokio::test]
async fn jobs_survive_a_crash_and_continue_without_starting_agents_twice() {
    let server = TestServer::sqlite().await;
    let building = server.spawn("building").await;
    let checking = server.spawn("checking").await;
    server.wait_for_builder(building).await;
    server.wait_for_builder(checking).await;
    server.runtime.exit(checking, Role::Builder, 0);
    server.wait_for(checking, "checking").await;
    let (config, runtime, _dir) = server.crash();

    // Agents go on while the orchestrator is down.
    runtime.exit(building, Role::Builder, 0);
    let server = TestServer::start(config, runtime).await;
    server.wait_for(building, "checking").await;
    assert_eq!(server.phase(checking).await, "checking");
    assert_eq!(
        server.runtime.creations(key(checking, Role::Checker)),
        1,
        "the running checker was adopted"
    );
    assert_eq!(server.runtime.creations(key(building, Role::Builder)), 1);
    assert_eq!(server.runtime.creations(key(building, Role::Checker)), 1);
}

#[tokio::test]
async fn a_graceful_stop_leaves_agents_running_for_the_next_start() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let (config, runtime, _dir) = server.stop().await;
    assert_eq!(runtime.running_count(), 1);
    let server = TestServer::start(config, runtime).await;
    assert_eq!(server.phase(id).await, "building");
    server.runtime.exit(id, Role::Builder, 0);
    server.wait_for(id, "checking").await;
    assert_eq!(server.runtime.creations(key(id, Role::Builder)), 1);
}

#[tokio::test]
async fn a_missing_image_fails_the_job_naming_the_image() {
    let server =
        TestServer::sqlite_with(|c| c.agents.allowed_images = vec!["ghost:*".to_owned()]).await;
    server.runtime.forget_image("ghost:latest");
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "builder_image": "ghost:latest"}),
        )
        .await;
    assert_eq!(code, 201);
    let id = body["job_id"].as_str().unwrap();
    let status = eventually(Duration::from_secs(10), || async {
        let (_, s) = server.get(&format!("/jobs/{id}/status")).await;
        (s["status"] == "failed").then_some(s)
    })
    .await;
    assert_eq!(status["reason"], "BuilderStartFailed");
    assert!(
        status["error_message"]
            .as_str()
            .unwrap()
            .contains("ghost:latest"),
        "{status}"
    );
}

#[tokio::test]
async fn an_unreachable_runtime_spends_no_attempt_and_the_agent_starts_once_it_is_back() {
    let server = retrying_server(2, 0.05).await;
    server.runtime.make_unreachable(true);
    let id = server.spawn("t").await;
    server.wait_for(id, "building").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.runtime.state_of(id, Role::Builder).is_none());
    server.runtime.make_unreachable(false);
    eventually(Duration::from_secs(10), || async {
        server.runtime.state_of(id, Role::Builder)
    })
    .await;
    assert_eq!(server.runtime.creations(key(id, Role::Builder)), 1);
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["reason"], "Admitted", "{status}");
}

#[tokio::test]
async fn a_start_the_runtime_answers_with_an_error_is_tried_as_each_next_attempt_then_fails() {
    let server = retrying_server(3, 0.05).await;
    server.runtime.fail_starts(Some("engine hiccup"));
    let id = server.spawn("t").await;
    let status = server.wait_for(id, "failed").await;
    assert_eq!(status["reason"], "BuilderStartFailed");
    let message = status["error_message"].as_str().unwrap();
    assert!(message.contains("engine hiccup"), "{message}");
    assert!(message.contains("attempt 3 of 3; none left"), "{message}");
    let (_, events) = server.get(&format!("/jobs/{id}/events")).await;
    let retries = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "BuilderRetried")
        .count();
    assert_eq!(retries, 2, "{events}");
}

#[tokio::test]
async fn a_start_error_that_passes_costs_one_attempt_and_the_next_runs() {
    let server = retrying_server(3, 2.0).await;
    server.runtime.fail_starts(Some("engine hiccup"));
    let id = server.spawn("t").await;
    eventually(Duration::from_secs(5), || async {
        let (_, s) = server.get(&format!("/jobs/{id}/status")).await;
        (s["reason"] == "BuilderRetried").then_some(())
    })
    .await;
    server.runtime.fail_starts(None);
    eventually(Duration::from_secs(10), || async {
        server.runtime.state_of(id, Role::Builder)
    })
    .await;
    assert_eq!(server.phase(id).await, "building");
}
