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

/// A request head announcing a JSON body of `length` bytes.
fn oversized_head(length: u64) -> String {
    format!(
        "POST /jobs/spawn HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Sends a whole request with a body of `length` bytes and only then
/// reads, as a simple client does; what it read, or how it failed.
async fn send_then_read(server: &TestServer, length: usize) -> std::io::Result<String> {
    let mut client = connect(server).await;
    client
        .write_all(oversized_head(length as u64).as_bytes())
        .await?;
    let body = vec![b' '; length];
    client.write_all(&body).await?;
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The `Content-Length` a response head gives, if any.
fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// The status code and the JSON body of a whole HTTP/1.1 response.
fn parse_response(answer: &str) -> (u16, serde_json::Value) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete head");
    let code = head.split(' ').nth(1).and_then(|code| code.parse().ok());
    let length = content_length(head).expect("a Content-Length");
    assert_eq!(body.len(), length, "the whole body arrived: {answer}");
    (code.expect("a status"), serde_json::from_str(body).unwrap())
}

const EIGHT_MIB: usize = 8 * 1024 * 1024;
const ROUNDS: usize = 10;

/// Runs `round` [`ROUNDS`] times; fails naming every round that got no 413.
async fn every_round<F, Fut>(mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut failures = Vec::new();
    for n in 0..ROUNDS {
        if let Err(error) = round().await {
            failures.push(format!("round {n}: {error}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ROUNDS} got no 413: {failures:?}",
        failures.len()
    );
}

#[tokio::test]
async fn a_body_over_the_limit_reaches_a_client_that_sends_it_all_as_a_413_every_time() {
    let server = TestServer::sqlite().await;
    every_round(|| async {
        let answer = send_then_read(&server, EIGHT_MIB).await;
        let (code, body) = parse_response(&answer.map_err(|error| error.to_string())?);
        assert_eq!(code, 413, "{body}");
        assert_eq!(body["detail"], "request body is too large");
        Ok(())
    })
    .await;
    let (_, jobs) = server.get("/jobs").await;
    assert_eq!(jobs, serde_json::json!([]), "none was stored");
}

#[tokio::test]
async fn a_body_over_the_limit_reaches_an_http_client_as_a_413_every_time() {
    let server = TestServer::sqlite().await;
    every_round(|| async {
        let request = server
            .client
            .post(server.url("/jobs/spawn"))
            .header("content-type", "application/json")
            .body(vec![b' '; EIGHT_MIB]);
        let response = request.send().await.map_err(|error| format!("{error:?}"))?;
        assert_eq!(response.status(), 413);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["detail"], "request body is too large");
        Ok(())
    })
    .await;
}

/// Writes `chunk` again and again until the server cuts the connection
/// off; fails the test if it has not within `patience`.
async fn send_until_cut_off(client: &mut TcpStream, chunk: &[u8], pause: Duration) {
    let patience = Duration::from_secs(60);
    let sending = async {
        loop {
            if client.write_all(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    };
    tokio::time::timeout(patience, sending)
        .await
        .expect("the server stopped reading and closed the connection");
}

#[tokio::test]
async fn a_client_that_keeps_sending_after_its_413_is_cut_off() {
    let server = TestServer::sqlite().await;
    let mut endless = connect(&server).await;
    let head = oversized_head(1 << 40);
    endless.write_all(head.as_bytes()).await.unwrap();
    send_until_cut_off(&mut endless, &[b' '; 64 * 1024], Duration::ZERO).await;
}

#[tokio::test]
async fn a_client_that_trickles_after_its_413_is_cut_off() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_request_bytes = 1024).await;
    let mut trickle = connect(&server).await;
    let head = oversized_head(1 << 30);
    trickle.write_all(head.as_bytes()).await.unwrap();
    trickle.write_all(&[b' '; 2048]).await.unwrap();
    // A byte now and then: never enough to reach a byte limit.
    send_until_cut_off(&mut trickle, b" ", Duration::from_millis(50)).await;
}

/// Reads one response from a kept-alive connection: its head, then as many
/// body bytes as its `Content-Length` says. Fails the test if the server
/// closes the connection first.
async fn next_response(stream: &mut TcpStream) -> String {
    let reading = async {
        let mut received = Vec::new();
        let mut byte = [0u8; 1];
        while !received.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut byte).await.unwrap();
            assert!(
                read > 0,
                "the server closed the connection mid-way: {received:?}"
            );
            received.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&received).into_owned();
        let length = content_length(&head).unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.unwrap();
        head
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("a response in time")
}

/// A client whose body arrives in a segment after its head (as with
/// `Expect`-less clients on a busy network) gets its answer and may send its
/// next request on the same connection: a route that ignores the body still
/// reads it, so the server never closes a kept-alive connection under it.
/// Every route that takes a body is tried, from the OpenAPI document.
#[tokio::test]
async fn a_body_that_arrives_after_its_head_keeps_the_connection_alive_on_every_route() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("answer me twice").await;
    let (_, document) = server.get("/openapi.json").await;
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            // The agents' callback refuses a caller without an agent's
            // token before its body, as it should.
            if operations.get(method).is_some() && !path.ends_with("/callback") {
                let path = path.replace("{job_id}", &id.to_string());
                routes.push((method.to_uppercase(), path));
            }
        }
    }
    assert!(routes.len() >= 10, "{routes:?}");
    for (method, path) in routes {
        let action = format!("{method} {path}");
        let mut client = connect(&server).await;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        client.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b"{}").await.unwrap();
        let first = next_response(&mut client).await;
        assert!(first.starts_with("HTTP/1.1 "), "{action}: {first}");
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let second = next_response(&mut client).await;
        assert!(
            second.starts_with("HTTP/1.1 200"),
            "{action}: the next request on the connection: {second}"
        );
    }
}
