//! The original dashboard's session replayed against a real server: the
//! Docker engine, the reference agents, real HTTP and a real WebSocket
//! client, and every request the dashboard makes, as it makes it.
//!
//! The dashboard's source (`dashboard/src/api/client.js`) is not available
//! here. Its requests are reconstructed from the original service's
//! specification (the seed's orchestrator README: the request and response
//! shapes, its JavaScript examples) and from the issue that reported it:
//!
//! - `spawnJob` posts `{"task", "project_path", "phase": "I"}` to `/jobs/spawn`;
//! - the job list is `GET /jobs`;
//! - a job's page reads `/status`, `/telemetry` (formatting `cpu_usage` and
//!   `ram_usage_mb` with `toFixed(1)`, so both must be numbers) and `/audit`
//!   (showing each `logic_verification.file_list` item as text), and follows
//!   `WS /jobs/{id}/stream`, reading `type` and `status` of each message;
//! - the review page approves with `{"approved": true, "comment": null}` and
//!   rejects with `{"approved": false, "comment": "..."}` (the seed's
//!   `POST /jobs/{id}/approve`; there is no other reject route).
//!
//! The dashboard is a page on an origin of its own, so each request carries
//! `Origin` and each JSON post is preceded by the browser's CORS preflight;
//! its origin is listed in `orchestrator.cors_allowed_origins`, the one
//! thing an operator configures for it.

use std::time::Duration;

use futures::StreamExt;
use icarus::job::JobId;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::docker::DockerServer;
use crate::support::eventually;

/// Where the dashboard is served from (its development server).
const ORIGIN: &str = "http://localhost:3000";

/// The dashboard's API client, as a browser on its origin sends it.
struct Dashboard {
    base: String,
    http: reqwest::Client,
}

impl Dashboard {
    fn new(server: &DockerServer) -> Dashboard {
        let mut headers = HeaderMap::new();
        headers.insert("origin", HeaderValue::from_static(ORIGIN));
        Dashboard {
            base: server.base.clone(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
        }
    }

    /// A read, whose answer the page may see (CORS allows its origin).
    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        read(response, &format!("GET {path}")).await
    }

    /// A JSON post: the browser's preflight first, then the post itself.
    async fn post(&self, path: &str, body: Value) -> Value {
        let preflight = self
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", self.base))
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .unwrap();
        assert!(
            preflight.status().is_success(),
            "preflight of {path}: {}",
            preflight.status()
        );
        assert_allowed(preflight.headers(), &format!("preflight of {path}"));
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        read(response, &format!("POST {path}")).await
    }

    /// `spawnJob(task)`: what the dashboard's form submits.
    async fn spawn_job(&self, task: &str) -> JobId {
        let body = json!({"task": task, "project_path": "/workspace", "phase": "I"});
        let answer = self.post("/jobs/spawn", body).await;
        assert_eq!(answer["status"], "pending", "{answer}");
        assert!(answer["message"].is_string(), "{answer}");
        answer["job_id"].as_str().unwrap().parse().unwrap()
    }

    /// The job's page: status and telemetry, as it polls them.
    async fn job_page(&self, id: JobId) -> Value {
        let status = self.get(&format!("/jobs/{id}/status")).await;
        for field in ["job_id", "status", "task", "created_at"] {
            assert!(status[field].is_string(), "{field} in {status}");
        }
        let telemetry = self.get(&format!("/jobs/{id}/telemetry")).await;
        for field in ["cpu_usage", "ram_usage_mb"] {
            assert!(
                telemetry[field].is_f64(),
                "{field} must be a number for toFixed: {telemetry}"
            );
        }
        status
    }

    /// Opens the job's stream as the browser does, naming the page's origin.
    async fn stream(&self, id: JobId) -> Socket {
        let url = format!(
            "{}/jobs/{id}/stream",
            self.base.replacen("http://", "ws://", 1)
        );
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_static(ORIGIN));
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Every status the stream sends until it closes (the job ended). The
/// agents' `log` lines in between are what the dashboard's terminal shows:
/// each carries the `message` it prints.
async fn statuses_until_closed(socket: &mut Socket) -> Vec<String> {
    let mut statuses = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("the stream sent nothing for 60 s");
        let Some(message) = message else {
            return statuses;
        };
        match message.unwrap() {
            Message::Text(text) => {
                let update: Value = serde_json::from_str(&text).unwrap();
                if update["type"] == "log" {
                    assert!(update["message"].is_string(), "{update}");
                    continue;
                }
                assert_eq!(update["type"], "status_update", "{update}");
                statuses.push(update["status"].as_str().unwrap().to_owned());
            }
            Message::Close(_) => return statuses,
            _ => {}
        }
    }
}

fn assert_allowed(headers: &HeaderMap, request: &str) {
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(ORIGIN),
        "{request}: the page could not read the answer"
    );
}

async fn read(response: reqwest::Response, request: &str) -> Value {
    let code = response.status();
    assert_allowed(response.headers(), request);
    let body: Value = response.json().await.unwrap();
    assert!(code.is_success(), "{request}: {code} {body}");
    body
}

/// Polls the job's page, as the dashboard does, until it shows `phase`.
async fn until(dashboard: &Dashboard, id: JobId, phase: &str) -> Value {
    eventually(Duration::from_secs(60), || async {
        let status = dashboard.job_page(id).await;
        (status["status"] == phase).then_some(status)
    })
    .await
}

#[tokio::test]
async fn the_original_dashboards_requests_drive_jobs_to_completion_and_rejection() {
    let server = DockerServer::start(|c| {
        c.orchestrator.cors_allowed_origins = vec![ORIGIN.to_owned()];
    })
    .await;
    let dashboard = Dashboard::new(&server);

    let approved = dashboard.spawn_job("Create a user login endpoint").await;
    let rejected = dashboard
        .spawn_job("Add logging to the API endpoints")
        .await;
    let mut stream = dashboard.stream(approved).await;

    let jobs = dashboard.get("/jobs").await;
    let rows = jobs.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{jobs}");
    for row in rows {
        for field in ["job_id", "task", "status", "created_at"] {
            assert!(row[field].is_string(), "{field} in {row}");
        }
    }
    let status = dashboard.job_page(approved).await;
    assert_eq!(status["phase"], "I");

    for id in [approved, rejected] {
        until(&dashboard, id, "awaiting_approval").await;
        let audit = dashboard.get(&format!("/jobs/{id}/audit")).await;
        let report = &audit["audit_report"];
        assert!(report["summary"].is_string(), "{audit}");
        let files = report["logic_verification"]["file_list"]
            .as_array()
            .unwrap_or_else(|| panic!("no file_list in {audit}"));
        assert!(!files.is_empty(), "{audit}");
        assert!(
            files.iter().all(Value::is_string),
            "file_list items are shown as text: {audit}"
        );
    }

    let decision = dashboard
        .post(
            &format!("/jobs/{approved}/approve"),
            json!({"approved": true, "comment": null}),
        )
        .await;
    assert_eq!(decision["status"], "approved", "{decision}");
    let decision = dashboard
        .post(
            &format!("/jobs/{rejected}/approve"),
            json!({"approved": false, "comment": "Security issues need fixing"}),
        )
        .await;
    assert_eq!(decision["status"], "rejected", "{decision}");

    let seen = statuses_until_closed(&mut stream).await;
    assert_eq!(
        seen.iter().rev().take(3).rev().collect::<Vec<_>>(),
        ["awaiting_approval", "approved", "completed"],
        "the stream's statuses: {seen:?}"
    );
    until(&dashboard, approved, "completed").await;
    until(&dashboard, rejected, "rejected").await;
    server.assert_nothing_left().await;
}
