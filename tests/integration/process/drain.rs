//! A drained orchestrator as a user runs it: the real binary on a SQLite
//! file and the real engine, drained, killed with SIGKILL and started
//! again. Its drain is kept in the file under its name, so it comes back
//! drained and admits nothing until resumed; then it admits in order.

use std::time::Duration;

use icarus::job::JobId;
use serde_json::{Value, json};

use super::Process;

const REPLICA: &str = "maintained-0";

impl Process {
    async fn post(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }
}

/// Waits until the pending job's own reason, the controller's last word, is `reason`.
async fn said(process: &Process, id: JobId, reason: &str) -> Value {
    process
        .wait_until(id, |s| s["status"] == "pending" && s["reason"] == reason)
        .await
}

#[tokio::test]
async fn a_drained_binary_killed_and_started_again_admits_nothing_until_resumed_then_in_order() {
    super::super::docker::ensure_agent_images().await;
    let mut process = Process::start_with(&[
        ("orchestrator.max_concurrent_jobs", "1"),
        ("orchestrator.replica_name", REPLICA),
    ])
    .await;
    let (code, body) = process.post("/queue/drain").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["replica"], REPLICA, "{body}");
    let first = process.spawn("first [builder:hang]").await;
    let second = process.spawn("second [builder:hang]").await;
    said(&process, second, "Draining").await;

    process.kill();
    process.launch().await;
    let queue = process.get("/queue").await;
    assert_eq!(queue["draining"], true, "{queue}");
    assert_eq!(queue["replica"], REPLICA, "{queue}");
    assert_eq!(queue["pending"][0]["reason"], "Draining", "{queue}");
    let ready = process.get("/readyz").await;
    assert_eq!(ready["draining"], true, "{ready}");
    // Resyncs come every second: none admits while the drain lasts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in [first, second] {
        assert_eq!(process.status(id).await["status"], "pending");
    }
    assert_eq!(super::containers_of(first).await, 0, "no agent was started");

    let (code, body) = process.post("/queue/resume").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["draining"], false, "{body}");
    process.wait_for(first, "building").await;
    let waiting = process.status(second).await;
    assert_eq!(waiting["status"], "pending", "one slot: {waiting}");
    assert_eq!(waiting["queue"]["position"], 1, "{waiting}");
    let queue = process.get("/queue").await;
    assert_eq!(queue["drained_replicas"], json!([]), "{queue}");
    process.cancel(first).await;
    process.cancel(second).await;
    process.wait_for(first, "cancelled").await;
}
