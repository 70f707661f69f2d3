//! The listener's limits, against raw TCP clients that misbehave on purpose:
//! one that never finishes its request head, and more connections than allowed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestServer;

async fn connect(server: &TestServer) -> TcpStream {
    let address = server.base.trim_start_matches("http://");
    TcpStream::connect(address).await.unwrap()
}

/// Reads until the server closes the connection; what it sent before.
async fn until_closed(stream: &mut TcpStream, patience: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(patience, stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection in time")
        .ok();
    received
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.header_read_timeout_seconds = 1).await;
    let mut slow = connect(&server).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // No blank line: the head never ends. Within the timeout (and a margin
    // for a loaded machine), the server hangs up.
    until_closed(&mut slow, Duration::from_secs(10)).await;
    let (code, _) = server.get("/healthz").await;
    assert_eq!(code, 200, "the server itself is fine");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_on_arrival_and_the_limit_frees_up() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_connections = 2).await;
    let held = [connect(&server).await, connect(&server).await];
    // Give the server the moment to accept both.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut third = connect(&server).await;
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let answer = until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(
        answer.is_empty(),
        "closed unanswered: {}",
        String::from_utf8_lossy(&answer)
    );

    drop(held);
    crate::support::eventually(Duration::from_secs(5), || async {
        let (code, _) = server.get("/healthz").await;
        (code == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_disconnected_too() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.header_read_timeout_seconds = 1).await;
    let mut idle = connect(&server).await;
    // Held open without a byte, it would keep a place under the connection
    // limit forever.
    until_closed(&mut idle, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_kept_alive_connection_that_goes_quiet_is_disconnected() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.header_read_timeout_seconds = 1).await;
    let mut quiet = connect(&server).await;
    quiet
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut quiet, Duration::from_secs(10)).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "answered, then let go: {}",
        String::from_utf8_lossy(&answer)
    );
}
