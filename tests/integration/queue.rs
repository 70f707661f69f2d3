//! The queue over real HTTP: priorities and the role caps on them, each
//! pending job's place, reason and estimate (in its status and list rows),
//! an admin's hold and a replica's drain (both kept across restarts), shown
//! in `GET /queue`, `/readyz` and the metrics. The real binary drained,
//! killed and started again: `process::drain`.

use std::time::Duration;

use icarus::config::AccessRole;
use icarus::job::{JobId, Role};
use serde_json::{Value, json};

use crate::support::{Api, TestServer, detail, token};

const SAM: &str = "submitter-sam-0123456789";
const ANN: &str = "approver-ann-0123456789";
const ROOT: &str = "admin-root-0123456789";

async fn secured() -> TestServer {
    TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![
            token("sam", AccessRole::Submitter, SAM),
            token("ann", AccessRole::Approver, ANN),
            token("root", AccessRole::Admin, ROOT),
        ];
    })
    .await
}

/// One slot, so every further job queues.
async fn one_slot() -> TestServer {
    TestServer::sqlite_with(|c| c.orchestrator.max_concurrent_jobs = 1).await
}

async fn spawn_at(api: &Api, task: &str, priority: impl serde::Serialize) -> JobId {
    let (code, body) = api
        .post("/jobs/spawn", json!({"task": task, "priority": priority}))
        .await;
    assert_eq!(code, 201, "{body}");
    body["job_id"].as_str().unwrap().parse().unwrap()
}

async fn status(api: &Api, id: JobId) -> Value {
    let (code, body) = api.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// Waits until the pending job's queue view says `reason`.
async fn wait_for_reason(api: &Api, id: JobId, reason: &str) -> Value {
    crate::support::eventually(Duration::from_secs(10), || async {
        let body = status(api, id).await;
        (body["queue"]["reason"] == reason && body["reason"] == reason).then_some(body)
    })
    .await
}

#[tokio::test]
async fn a_higher_priority_job_starts_before_older_ones() {
    let server = one_slot().await;
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    let older = spawn_at(&server, "older", 0).await;
    let urgent = spawn_at(&server, "urgent", 5).await;
    let body = wait_for_reason(&server, older, "ConcurrencyLimit").await;
    assert_eq!(body["queue"]["position"], 2, "{body}");
    assert_eq!(status(&server, urgent).await["queue"]["position"], 1);

    server.runtime.exit(running, Role::Builder, 1);
    server.wait_for_builder(urgent).await;
    assert_eq!(server.phase(older).await, "pending");
}

#[tokio::test]
async fn pending_jobs_show_their_place_and_reason_in_status_and_list_rows() {
    let server = one_slot().await;
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    let first = server.spawn("first").await;
    let second = server.spawn("second").await;

    let body = wait_for_reason(&server, second, "ConcurrencyLimit").await;
    assert_eq!(body["queue"]["position"], 2);
    assert_eq!(body["queue"]["jobs_ahead"], 1);
    assert_eq!(body["priority"], 0);
    assert!(detail_of(&body).contains("all 1 slots are taken"), "{body}");
    let (code, rows) = server.get("/jobs").await;
    assert_eq!(code, 200);
    let row = |id: JobId| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|row| row["job_id"] == id.to_string())
            .unwrap()
            .clone()
    };
    assert_eq!(row(first)["queue"]["position"], 1);
    assert_eq!(row(second)["queue"]["position"], 2);
    assert_eq!(
        row(running)["queue"],
        Value::Null,
        "a running job has no place"
    );
    // No job has run yet: no estimate rather than a wrong one.
    assert_eq!(row(first)["queue"]["estimated_start_at"], Value::Null);
}

fn detail_of(body: &Value) -> &str {
    body["queue"]["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn after_a_job_ran_pending_jobs_get_an_estimate() {
    let server = one_slot().await;
    let ran = server.spawn("ran").await;
    server.pass_build_and_check(ran).await;
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    let waiting = server.spawn("waiting").await;
    let body = wait_for_reason(&server, waiting, "ConcurrencyLimit").await;
    let estimate = body["queue"]["estimated_start_at"].as_str();
    assert!(estimate.is_some(), "{body}");
    let (_, queue) = server.get("/queue").await;
    assert!(
        queue["average_run_seconds"].as_f64().unwrap() >= 0.0,
        "{queue}"
    );
    assert_eq!(queue["pending"][0]["job_id"], waiting.to_string());
}

#[tokio::test]
async fn a_submitter_cannot_ask_for_more_than_their_roles_cap() {
    let server = secured().await;
    let sam = server.as_holder_of(SAM);
    let (code, body) = sam
        .post("/jobs/spawn", json!({"task": "t", "priority": 1}))
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        detail(&body).contains("queue.max_priority.submitter"),
        "{body}"
    );
    // Lower than the cap is anyone's right; the approver's cap is higher.
    spawn_at(&sam, "t", -3).await;
    spawn_at(&server.as_holder_of(ANN), "t", 10).await;
    let (code, _) = server
        .as_holder_of(ANN)
        .post("/jobs/spawn", json!({"task": "t", "priority": 11}))
        .await;
    assert_eq!(code, 403);
    spawn_at(&server.as_holder_of(ROOT), "t", 1000).await;
}

#[tokio::test]
async fn a_priority_out_of_range_is_refused_and_none_is_the_default() {
    let server = TestServer::sqlite_with(|c| c.queue.default_priority = -2).await;
    for priority in [json!(1001), json!(-1001), json!("high"), json!(1.5)] {
        let (code, body) = server
            .post("/jobs/spawn", json!({"task": "t", "priority": priority}))
            .await;
        assert_eq!(code, 422, "{priority}: {body}");
    }
    let id = server.spawn("t").await;
    assert_eq!(status(&server, id).await["priority"], -2);
    // JSON Schema's integers include 3.0.
    let id = spawn_at(&server, "t", -3.0).await;
    assert_eq!(status(&server, id).await["priority"], -3);
}

#[tokio::test]
async fn a_held_queue_admits_nothing_until_released_even_after_a_restart() {
    let server = TestServer::sqlite().await;
    let (code, body) = server.post("/queue/hold", json!({})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["held"], true);
    let id = server.spawn("t").await;
    let body = wait_for_reason(&server, id, "QueueHeld").await;
    assert!(detail_of(&body).contains("held by anonymous"), "{body}");
    assert_eq!(body["queue"]["estimated_start_at"], Value::Null);

    let (config, runtime, _dir) = server.stop().await;
    let server = TestServer::start(config, runtime).await;
    let (_, queue) = server.get("/queue").await;
    assert_eq!(queue["held"], true, "{queue}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.phase(id).await, "pending");

    let (code, body) = server.post("/queue/release", json!({})).await;
    assert_eq!(code, 200, "{body}");
    server.wait_for_builder(id).await;
}

#[tokio::test]
async fn holding_the_queue_lets_running_jobs_go_on() {
    let server = TestServer::sqlite().await;
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    server.post("/queue/hold", json!({})).await;
    server.runtime.exit(running, Role::Builder, 0);
    server.wait_for(running, "checking").await;
}

#[tokio::test]
async fn only_an_admin_may_hold_release_drain_or_resume() {
    let server = secured().await;
    for path in [
        "/queue/hold",
        "/queue/release",
        "/queue/drain",
        "/queue/resume",
    ] {
        for holder in [SAM, ANN] {
            let (code, body) = server.as_holder_of(holder).post(path, json!({})).await;
            assert_eq!(code, 403, "{path}: {body}");
        }
        let (code, body) = server.as_holder_of(ROOT).post(path, json!({})).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, _) = server.as_holder_of(SAM).get("/queue").await;
    assert_eq!(code, 200, "every role may read the queue");
}

#[tokio::test]
async fn a_drained_orchestrator_admits_nothing_new_and_finishes_what_it_runs() {
    let server = TestServer::sqlite().await;
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    let (code, body) = server.post("/queue/drain", json!({})).await;
    assert_eq!(code, 200, "{body}");
    let waiting = server.spawn("waiting").await;
    wait_for_reason(&server, waiting, "Draining").await;
    server.runtime.exit(running, Role::Builder, 0);
    server.wait_for(running, "checking").await;
    let (_, ready) = server.get("/readyz").await;
    assert_eq!(ready["draining"], true, "{ready}");
    assert_eq!(server.metrics().await.value("icarus_draining"), 1.0);

    server.post("/queue/resume", json!({})).await;
    server.wait_for_builder(waiting).await;
    assert_eq!(server.metrics().await.value("icarus_draining"), 0.0);
}

/// A server on a new SQLite file named `replica`, with one slot.
async fn replica_named(replica: &str) -> TestServer {
    TestServer::sqlite_with(|c| {
        c.orchestrator.replica_name = replica.to_owned();
        c.orchestrator.max_concurrent_jobs = 1;
    })
    .await
}

/// `POST /queue/resume?replica=NAME`.
async fn resume_named(api: &Api, replica: &str) -> (u16, Value) {
    api.post(&format!("/queue/resume?replica={replica}"), json!({}))
        .await
}

#[tokio::test]
async fn a_drain_is_kept_across_a_crash_and_a_resume_then_admits_in_order() {
    let server = replica_named("icarus-0").await;
    let (code, body) = server.post("/queue/drain", json!({})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["replica"], "icarus-0", "{body}");
    let first = server.spawn("first").await;
    let second = server.spawn("second").await;
    let body = wait_for_reason(&server, second, "Draining").await;
    assert!(
        detail_of(&body).contains("(icarus-0) is drained by anonymous"),
        "{body}"
    );

    let (config, runtime, _dir) = server.crash();
    let server = TestServer::start(config, runtime).await;
    let (_, queue) = server.get("/queue").await;
    assert_eq!(queue["draining"], true, "{queue}");
    assert_eq!(queue["replica"], "icarus-0", "{queue}");
    let (_, ready) = server.get("/readyz").await;
    assert_eq!(ready["draining"], true, "{ready}");
    assert_eq!(ready["replica"], "icarus-0", "{ready}");
    assert_eq!(server.metrics().await.value("icarus_draining"), 1.0);
    // Resyncs come every second here: none may admit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.phase(first).await, "pending");
    assert_eq!(status(&server, first).await["reason"], "Draining");

    let (code, body) = server.post("/queue/resume", json!({})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["draining"], false, "{body}");
    server.wait_for_builder(first).await;
    let waiting = status(&server, second).await;
    assert_eq!(waiting["status"], "pending", "one slot: {waiting}");
    assert_eq!(waiting["queue"]["reason"], "ConcurrencyLimit", "{waiting}");
}

#[tokio::test]
async fn get_queue_lists_every_drained_replica_and_says_which_one_answers() {
    let server = replica_named("icarus-0").await;
    for replica in ["old-pod-7f9c", "icarus-1"] {
        let (code, body) = server
            .post(&format!("/queue/drain?replica={replica}"), json!({}))
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["replica"], replica, "{body}");
        assert_eq!(body["draining"], true, "{body}");
    }
    let (code, queue) = server.get("/queue").await;
    assert_eq!(code, 200);
    assert_eq!(queue["replica"], "icarus-0", "{queue}");
    assert_eq!(queue["draining"], false, "others' drains are not its own");
    assert_eq!(queue["draining_since"], Value::Null);
    let drained = &queue["drained_replicas"];
    assert_eq!(drained[0]["replica"], "old-pod-7f9c", "{queue}");
    assert_eq!(drained[0]["drained_by"], "anonymous", "{queue}");
    assert!(drained[0]["drained_at"].is_string(), "{queue}");
    assert_eq!(drained[1]["replica"], "icarus-1", "{queue}");
    let id = server.spawn("admitted here").await;
    server.wait_for_builder(id).await;
}

#[tokio::test]
async fn a_replica_gone_for_good_is_resumed_by_name() {
    let server = replica_named("icarus-0").await;
    server
        .post("/queue/drain?replica=old-pod-7f9c", json!({}))
        .await;
    let (code, body) = resume_named(&server, "old-pod-7f9c").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["replica"], "old-pod-7f9c", "{body}");
    assert_eq!(body["draining"], false, "{body}");
    let (_, queue) = server.get("/queue").await;
    assert_eq!(queue["drained_replicas"], json!([]), "{queue}");
}

#[tokio::test]
async fn resuming_a_replica_by_name_that_is_not_drained_is_a_404_naming_those_that_are() {
    let server = replica_named("icarus-0").await;
    let (code, body) = resume_named(&server, "icarus-9").await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        detail(&body),
        "Replica icarus-9 is not drained (no replica is drained)"
    );
    server
        .post("/queue/drain?replica=icarus-1", json!({}))
        .await;
    server.post("/queue/drain", json!({})).await;
    let (code, body) = resume_named(&server, "icarus-9").await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        detail(&body),
        "Replica icarus-9 is not drained (drained: icarus-1, icarus-0)"
    );
    let (_, queue) = server.get("/queue").await;
    assert_eq!(queue["drained_replicas"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_replica_name_out_of_shape_is_refused_with_422_saying_why() {
    let server = replica_named("icarus-0").await;
    let too_long = "a".repeat(254);
    for (query, says) in [
        ("replica=", "must not be empty"),
        ("replica=a%2Fb", "only ASCII letters"),
        ("replica=two%20words", "only ASCII letters"),
        ("replica=-dash", "begin and end"),
        (&format!("replica={too_long}"), "the limit is 253"),
    ] {
        for path in ["/queue/drain", "/queue/resume"] {
            let (code, body) = server.post(&format!("{path}?{query}"), json!({})).await;
            assert_eq!(code, 422, "{path}?{query}: {body}");
            assert!(detail(&body).contains(says), "{path}?{query}: {body}");
        }
    }
    let (_, queue) = server.get("/queue").await;
    assert_eq!(queue["drained_replicas"], json!([]), "nothing was kept");
}

#[tokio::test]
async fn only_an_admin_may_drain_or_resume_a_replica_by_name() {
    let server = secured().await;
    let root = server.as_holder_of(ROOT);
    root.post("/queue/drain?replica=icarus-1", json!({})).await;
    for path in [
        "/queue/drain?replica=icarus-2",
        "/queue/resume?replica=icarus-1",
    ] {
        for holder in [SAM, ANN] {
            let (code, body) = server.as_holder_of(holder).post(path, json!({})).await;
            assert_eq!(code, 403, "{path}: {body}");
        }
    }
    let (_, queue) = root.get("/queue").await;
    let drained = &queue["drained_replicas"];
    assert_eq!(drained.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(drained[0]["drained_by"], "root", "{queue}");
}

#[tokio::test]
async fn readyz_and_the_metrics_show_the_hold() {
    let server = TestServer::sqlite().await;
    let (code, ready) = server.get("/readyz").await;
    assert_eq!(code, 200);
    assert_eq!(ready["queue_held"], false);
    assert_eq!(server.metrics().await.value("icarus_queue_held"), 0.0);
    server.post("/queue/hold", json!({})).await;
    let (code, ready) = server.get("/readyz").await;
    assert_eq!(code, 200, "a held queue is still ready");
    assert_eq!(ready["queue_held"], true);
    assert_eq!(server.metrics().await.value("icarus_queue_held"), 1.0);
}

#[tokio::test]
async fn the_hold_works_the_same_on_postgres() {
    let server = TestServer::postgres().await;
    server.post("/queue/hold", json!({})).await;
    let id = server.spawn("t").await;
    wait_for_reason(&server, id, "QueueHeld").await;
    server.post("/queue/release", json!({})).await;
    server.wait_for_builder(id).await;
}

#[tokio::test]
async fn the_client_submits_at_a_priority() {
    let server = TestServer::sqlite().await;
    let run = crate::client::run(&server, &["submit", "Add logging", "--priority", "-7"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (_, jobs) = server.get("/jobs").await;
    assert_eq!(jobs[0]["priority"], -7, "{jobs}");
}

/// Reconciles so far, whatever their outcome.
async fn reconciles(api: &Api) -> f64 {
    let metrics = api.metrics().await;
    ["success", "error"]
        .iter()
        .map(|outcome| {
            metrics.value(&format!(
                "icarus_reconcile_duration_seconds_count{{outcome=\"{outcome}\"}}"
            ))
        })
        .sum()
}

#[tokio::test]
async fn a_freed_slot_wakes_the_head_of_the_queue_and_the_resync_leaves_the_rest_alone() {
    let server = one_slot().await;
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    let mut waiting = Vec::new();
    for n in 0..20 {
        waiting.push(server.spawn(&format!("waiting {n}")).await);
    }
    // Each was looked at once, when submitted.
    wait_for_reason(&server, waiting[19], "ConcurrencyLimit").await;
    let before = reconciles(&server).await;
    // At least two resyncs (one a second here): before the queue was kept
    // in memory, each reconciled all 20 pending jobs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = reconciles(&server).await - before;
    assert!(
        during < 10.0,
        "{during} reconciles while nothing could start"
    );

    server.runtime.exit(running, Role::Builder, 1);
    server.wait_for_builder(waiting[0]).await;
    for later in &waiting[1..] {
        assert_eq!(server.phase(*later).await, "pending");
    }
    let (_, queue) = server.get("/queue").await;
    assert_eq!(queue["pending"][0]["job_id"], waiting[1].to_string());
    assert_eq!(queue["pending"][18]["position"], 19, "{queue}");
}

#[tokio::test]
async fn cancelling_a_pending_job_deep_in_the_queue_takes_effect_at_once() {
    let server = one_slot().await;
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    let first = server.spawn("first").await;
    let last = server.spawn("last").await;
    let (code, body) = server
        .post(&format!("/jobs/{last}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    server.wait_for(last, "cancelled").await;
    assert_eq!(status(&server, first).await["queue"]["position"], 1);
}

#[tokio::test]
async fn a_cancel_written_while_no_controller_ran_is_carried_out_at_the_next_start() {
    let server = one_slot().await;
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    let first = server.spawn("first").await;
    let last = server.spawn("last").await;
    wait_for_reason(&server, last, "ConcurrencyLimit").await;
    let (config, runtime, _dir) = server.stop().await;
    let store = icarus::store::Store::connect(&config.database.url)
        .await
        .unwrap();
    let mut job = store.get_job(last).await.unwrap().unwrap();
    job.spec.cancel_requested = true;
    store.update_job(&job, None).await.unwrap();
    store.close().await;

    let server = TestServer::start(config, runtime).await;
    server.wait_for(last, "cancelled").await;
    assert_eq!(server.phase(first).await, "pending");
}

/// The list row of `id` in `GET /jobs`.
async fn list_row(api: &Api, id: JobId) -> Value {
    let (code, rows) = api.get("/jobs").await;
    assert_eq!(code, 200, "{rows}");
    rows.as_array()
        .unwrap()
        .iter()
        .find(|row| row["job_id"] == id.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not listed: {rows}"))
}

/// A job that waits for the one slot, which a running job holds.
async fn waiting_behind_a_running_job(server: &TestServer) -> JobId {
    let running = server.spawn("running").await;
    server.wait_for_builder(running).await;
    let waiting = server.spawn("waiting").await;
    wait_for_reason(server, waiting, "ConcurrencyLimit").await;
    waiting
}

#[tokio::test]
async fn a_hold_shows_in_the_pending_rows_of_the_next_list_read() {
    let server = one_slot().await;
    let waiting = waiting_behind_a_running_job(&server).await;
    assert_eq!(
        list_row(&server, waiting).await["queue"]["reason"],
        "ConcurrencyLimit"
    );

    let (code, body) = server.post("/queue/hold", json!({})).await;
    assert_eq!(code, 200, "{body}");

    assert_eq!(
        list_row(&server, waiting).await["queue"]["reason"],
        "QueueHeld",
        "the page read before the hold is not answered again"
    );
}

#[tokio::test]
async fn the_pending_rows_of_a_list_page_follow_the_time_within_a_second_or_two() {
    let server = TestServer::sqlite_with(|c| {
        c.orchestrator.max_concurrent_jobs = 1;
        c.queue.ageing_seconds = 1;
    })
    .await;
    let waiting = waiting_behind_a_running_job(&server).await;
    let first = list_row(&server, waiting).await["queue"]["effective_priority"]
        .as_i64()
        .unwrap();

    // It ages one step a second; a page kept for good would show `first` still.
    crate::support::eventually(Duration::from_secs(5), || async {
        let now = list_row(&server, waiting).await["queue"]["effective_priority"]
            .as_i64()
            .unwrap();
        (now > first).then_some(())
    })
    .await;
}
