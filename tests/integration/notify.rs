//! Webhook notifications, received by a local HTTP server in the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use icarus::job::Role;
use serde_json::{Value, json};

use crate::support::{TestServer, eventually};

/// Records every body posted to `/{name}`; the first `failures` posts get 500.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(String, Value)>>>,
    failures: Arc<Mutex<u32>>,
}

impl Receiver {
    async fn start(failures: u32) -> (Receiver, String) {
        let receiver = Receiver::default();
        *receiver.failures.lock().unwrap() = failures;
        let app = Router::new()
            .route("/{name}", post(record))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, base)
    }

    fn bodies(&self, name: &str) -> Vec<Value> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, body)| body.clone())
            .collect()
    }

    async fn wait_for(&self, name: &str, count: usize) -> Vec<Value> {
        eventually(Duration::from_secs(10), || async {
            let bodies = self.bodies(name);
            (bodies.len() >= count).then_some(bodies)
        })
        .await
    }
}

async fn record(
    State(receiver): State<Receiver>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> StatusCode {
    let mut failures = receiver.failures.lock().unwrap();
    if *failures > 0 {
        *failures -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    receiver.received.lock().unwrap().push((name, body));
    StatusCode::NO_CONTENT
}

async fn run_to_approval(server: &TestServer, task: &str) -> icarus::job::JobId {
    let id = server.spawn(task).await;
    server.wait_for_builder(id).await;
    server.pass_build_and_check(id).await;
    id
}

#[tokio::test]
async fn webhooks_hear_of_awaiting_approval_and_completion_despite_a_failing_first_try() {
    let (receiver, base) = Receiver::start(1).await;
    let server = TestServer::sqlite_with(|c| {
        c.notifications.webhooks = vec![format!("{base}/generic")];
        c.notifications.retry_delay_ms = 10;
    })
    .await;
    let id = run_to_approval(&server, "Add logging").await;
    let bodies = receiver.wait_for("generic", 1).await;
    assert_eq!(bodies[0]["event"], "job.awaiting_approval");
    assert_eq!(bodies[0]["job_id"], id.to_string());
    assert_eq!(bodies[0]["task"], "Add logging");

    server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    let bodies = receiver.wait_for("generic", 2).await;
    assert_eq!(bodies[1]["event"], "job.completed");
    assert_eq!(
        bodies.len(),
        2,
        "building, checking and approved are not announced"
    );
}

#[tokio::test]
async fn a_discord_webhook_gets_a_discord_message_and_failures_are_announced() {
    let (receiver, base) = Receiver::start(0).await;
    let server = TestServer::sqlite_with(|c| {
        c.notifications.discord_webhook_url = format!("{base}/discord");
    })
    .await;
    let id = server.spawn("Break things").await;
    server.wait_for_builder(id).await;
    server.runtime.exit(id, Role::Builder, 7);
    server.wait_for(id, "failed").await;
    let bodies = receiver.wait_for("discord", 1).await;
    let content = bodies[0]["content"].as_str().unwrap();
    assert!(content.contains(&id.to_string()), "{content}");
    assert!(content.contains("**failed** (BuilderFailed)"), "{content}");
    assert!(content.contains("builder exited with code 7"), "{content}");
}

#[tokio::test]
async fn an_unreachable_webhook_does_not_hold_up_jobs() {
    let server = TestServer::sqlite_with(|c| {
        // Nothing listens on port 9 (discard) here; every try fails.
        c.notifications.webhooks = vec!["http://127.0.0.1:9/hook".to_owned()];
        c.notifications.retry_delay_ms = 60_000;
    })
    .await;
    let id = run_to_approval(&server, "t").await;
    server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    server.wait_for(id, "completed").await;
}

#[tokio::test]
async fn a_notification_pending_at_a_crash_is_sent_after_the_restart() {
    let (receiver, base) = Receiver::start(u32::MAX).await;
    let server = TestServer::sqlite_with(|c| {
        c.notifications.webhooks = vec![format!("{base}/generic")];
        // The first try fails, the retry is far away: the crash comes first.
        c.notifications.retry_delay_ms = 600_000;
    })
    .await;
    let id = run_to_approval(&server, "Add logging").await;
    eventually(Duration::from_secs(10), || async {
        (*receiver.failures.lock().unwrap() < u32::MAX).then_some(())
    })
    .await;
    let (config, runtime, _dir) = server.crash();

    *receiver.failures.lock().unwrap() = 0;
    let server = TestServer::start(config, runtime).await;
    let bodies = receiver.wait_for("generic", 1).await;
    assert_eq!(bodies[0]["event"], "job.awaiting_approval");
    assert_eq!(bodies[0]["job_id"], id.to_string());
    drop(server);
}

#[tokio::test]
async fn a_new_webhook_does_not_replay_history() {
    let (receiver, base) = Receiver::start(0).await;
    let server = TestServer::sqlite().await;
    run_to_approval(&server, "before the webhook").await;
    let (mut config, runtime, _dir) = server.stop().await;
    config.notifications.webhooks = vec![format!("{base}/generic")];
    let server = TestServer::start(config, runtime).await;
    let later = run_to_approval(&server, "after the webhook").await;
    let bodies = receiver.wait_for("generic", 1).await;
    assert_eq!(bodies[0]["job_id"], later.to_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.bodies("generic").len(), 1, "only the new job's");
}

#[tokio::test]
async fn messages_delivered_and_given_up_are_counted_in_the_metrics() {
    let (receiver, base) = Receiver::start(0).await;
    let server = TestServer::sqlite_with(|c| {
        c.notifications.webhooks = vec![
            format!("{base}/generic"),
            // Nothing listens on port 9 (discard) here.
            "http://127.0.0.1:9/hook".to_owned(),
        ];
        c.notifications.max_attempts = 2;
        c.notifications.retry_delay_ms = 10;
    })
    .await;
    run_to_approval(&server, "Count me").await;
    receiver.wait_for("generic", 1).await;
    let counted = |outcome: &'static str| {
        let server = &server;
        async move {
            let series =
                format!("icarus_notifications_total{{target=\"webhook\",outcome=\"{outcome}\"}}");
            server.metrics().await.value(&series)
        }
    };
    eventually(Duration::from_secs(10), || async {
        (counted("delivered").await == 1.0 && counted("failed").await == 1.0).then_some(())
    })
    .await;
}
