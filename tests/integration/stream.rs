//! `WS /jobs/{id}/stream` with a real WebSocket client, including one that
//! a foreign page's browser would open.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use icarus::job::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::TestServer;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(server: &TestServer, path: &str) -> Socket {
    connect_url(&format!(
        "{}{path}",
        server.base.replacen("http://", "ws://", 1)
    ))
    .await
}

pub async fn connect_url(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Opens the stream as a browser would, naming `origin` (and `host`, if given).
async fn connect_as(
    server: &TestServer,
    path: &str,
    origin: &str,
    host: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}{path}", server.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    if let Some(host) = host {
        request.headers_mut().insert("host", host.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next JSON message, or `None` when the server closed the stream.
pub async fn next_update(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no message within 10 s")?;
        match message.unwrap() {
            Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn the_stream_sends_the_current_status_then_every_transition_then_closes() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.wait_for_builder(id).await;
    let mut socket = connect(&server, &format!("/jobs/{id}/stream")).await;

    let first = next_update(&mut socket).await.unwrap();
    assert_eq!(first["type"], "status_update");
    assert_eq!(first["job_id"], id.to_string());
    assert_eq!(first["status"], "building");

    server.wait_until_running(id, Role::Builder).await;
    server.runtime.exit(id, Role::Builder, 0);
    assert_eq!(
        next_update(&mut socket).await.unwrap()["status"],
        "checking"
    );
    server
        .post(
            &server.agent_path(id, Role::Checker, 1),
            json!({"status": "completed", "audit_report": {}}),
        )
        .await;
    server.wait_until_running(id, Role::Checker).await;
    server.runtime.exit(id, Role::Checker, 0);
    assert_eq!(
        next_update(&mut socket).await.unwrap()["status"],
        "awaiting_approval"
    );
    server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(
        next_update(&mut socket).await.unwrap()["status"],
        "approved"
    );
    let last = next_update(&mut socket).await.unwrap();
    assert_eq!(last["status"], "completed");
    assert!(last["completed_at"].is_string());
    assert!(
        next_update(&mut socket).await.is_none(),
        "the stream closes after a terminal phase"
    );
}

#[tokio::test]
async fn the_stream_of_a_finished_job_sends_its_status_and_closes() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    server.wait_for(id, "cancelled").await;
    let mut socket = connect(&server, &format!("/jobs/{id}/stream")).await;
    assert_eq!(
        next_update(&mut socket).await.unwrap()["status"],
        "cancelled"
    );
    assert!(next_update(&mut socket).await.is_none());
}

#[tokio::test]
async fn a_client_that_closes_first_is_let_go() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let mut socket = connect(&server, &format!("/jobs/{id}/stream")).await;
    next_update(&mut socket).await.unwrap();
    socket.send(Message::Close(None)).await.unwrap();
    let (code, _) = server.get("/healthz").await;
    assert_eq!(code, 200);
}

/// A status message carries the job's spec as it is, not as it was when
/// the stream opened: the approval that moved the job is in the message
/// that says it moved.
#[tokio::test]
async fn the_message_of_an_approval_carries_the_decision() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    server.pass_build_and_check(id).await;
    let mut socket = connect(&server, &format!("/jobs/{id}/stream")).await;
    let first = next_update(&mut socket).await.unwrap();
    assert_eq!(first["status"], "awaiting_approval");
    assert!(first["approval"].is_null(), "{first}");
    let decision = json!({"approved": true, "comment": "ship it"});
    server.post(&format!("/jobs/{id}/approve"), decision).await;
    let approved = next_update(&mut socket).await.unwrap();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["approval"]["comment"], "ship it", "{approved}");
}

/// A subscriber has nothing to send but a close; one that sends a large
/// message is let go rather than held in memory.
#[tokio::test]
async fn a_client_that_sends_a_large_message_loses_its_stream() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let mut socket = connect(&server, &format!("/jobs/{id}/stream")).await;
    next_update(&mut socket).await.unwrap();
    let large = "x".repeat(1024 * 1024);
    let _ = socket.send(Message::Text(large.into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a live job went on");
    let (code, _) = server.get("/healthz").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn the_stream_of_an_unknown_or_invalid_job_is_refused_before_upgrading() {
    let server = TestServer::sqlite().await;
    let unknown = format!(
        "{}/jobs/550e8400-e29b-41d4-a716-446655440000/stream",
        server.base.replacen("http", "ws", 1)
    );
    let error = tokio_tungstenite::connect_async(unknown).await.unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
    let invalid = format!("{}/jobs/nope/stream", server.base.replacen("http", "ws", 1));
    let error = tokio_tungstenite::connect_async(invalid).await.unwrap_err();
    assert!(error.to_string().contains("422"), "{error}");
}

#[tokio::test]
async fn a_stream_opened_from_a_foreign_origin_is_refused() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let path = format!("/jobs/{id}/stream");
    let error = connect_as(&server, &path, "https://evil.example", None)
        .await
        .expect_err("a foreign page may not follow a job");
    assert!(error.to_string().contains("403"), "{error}");
}

#[tokio::test]
async fn a_stream_opened_from_the_null_origin_is_refused() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let path = format!("/jobs/{id}/stream");
    let error = connect_as(&server, &path, "null", None).await;
    assert!(error.expect_err("refused").to_string().contains("403"));
}

#[tokio::test]
async fn a_stream_opened_for_a_rebound_name_is_refused_when_authentication_is_off() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let page = server
        .base
        .replacen("http://127.0.0.1", "attacker.example", 1);
    let origin = format!("http://{page}");
    let path = format!("/jobs/{id}/stream");
    let error = connect_as(&server, &path, &origin, Some(&page)).await;
    assert!(error.expect_err("refused").to_string().contains("403"));
}

#[tokio::test]
async fn a_stream_opened_from_a_configured_origin_is_accepted() {
    let server = TestServer::sqlite_with(|c| {
        c.orchestrator.cors_allowed_origins = vec!["https://dash.example".to_owned()];
    })
    .await;
    let id = server.spawn("t").await;
    let path = format!("/jobs/{id}/stream");
    let mut socket = connect_as(&server, &path, "https://dash.example", None)
        .await
        .unwrap();
    assert_eq!(
        next_update(&mut socket).await.unwrap()["type"],
        "status_update"
    );
}

#[tokio::test]
async fn a_stream_opened_from_the_apis_own_origin_is_accepted() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let path = format!("/jobs/{id}/stream");
    let mut socket = connect_as(&server, &path, &server.base, None)
        .await
        .unwrap();
    assert_eq!(
        next_update(&mut socket).await.unwrap()["type"],
        "status_update"
    );
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_with_429_until_one_closes() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_streams_per_caller = 2).await;
    let id = server.spawn("t").await;
    let path = format!("/jobs/{id}/stream");
    let mut first = connect(&server, &path).await;
    let _second = connect(&server, &path).await;
    next_update(&mut first)
        .await
        .expect("the first stream is live");

    let url = format!("{}{path}", server.base.replacen("http://", "ws://", 1));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("max_streams_per_caller"), "{body}");
        }
        other => panic!("a third stream was not refused: {:?}", other.map(|_| ())),
    }

    first.close(None).await.unwrap();
    drop(first);
    crate::support::eventually(Duration::from_secs(5), || async {
        let url = format!("{}{path}", server.base.replacen("http://", "ws://", 1));
        tokio_tungstenite::connect_async(url).await.ok().map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn memory_is_handed_back_once_a_crowd_of_subscribers_has_left() {
    let crowd = icarus::memory::RETURN_AFTER_DEPARTED;
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_streams_per_caller = crowd).await;
    let id = server.spawn("t").await;
    let path = format!("/jobs/{id}/stream");
    let returns = "icarus_memory_returns_total";
    let mut sockets = Vec::new();
    for _ in 0..crowd {
        let mut socket = connect(&server, &path).await;
        next_update(&mut socket).await.expect("a live stream");
        sockets.push(socket);
    }
    tokio::time::sleep(icarus::memory::QUIET * 2).await;
    assert_eq!(
        server.metrics().await.value(returns),
        0.0,
        "nothing is handed back while they are connected"
    );

    for mut socket in sockets {
        socket.close(None).await.unwrap();
    }
    crate::support::eventually(Duration::from_secs(10), || async {
        (server.metrics().await.value(returns) == 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_few_subscribers_leaving_cost_no_memory_return() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    let path = format!("/jobs/{id}/stream");
    for _ in 0..3 {
        let mut socket = connect(&server, &path).await;
        next_update(&mut socket).await.expect("a live stream");
        socket.close(None).await.unwrap();
    }
    tokio::time::sleep(icarus::memory::QUIET * 3).await;
    assert_eq!(
        server.metrics().await.value("icarus_memory_returns_total"),
        0.0
    );
}
