//! The egress proxy against real TCP clients and servers on this host: what
//! a hostile agent would try (IP literals, private names, unlisted names,
//! floods, no credentials) and what a well-behaved one needs (a tunnel and
//! a plain HTTP request to a listed name).
//!
//! The agent's side is a raw TCP client speaking to the proxy, as `curl` or
//! pip would through `HTTPS_PROXY`; the servers it reaches are listeners on
//! loopback, which configuration maps listed names to (the proxy's host map
//! is the operator's word, like `/etc/hosts`, and the only way a name may
//! lead to loopback).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use icarus::egress::{Admission, EgressEvent, EgressProxy, Gatekeeper, ProxySettings, Verdict};
use icarus_core::egress::AllowList;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const AGENT: &str = "job.builder.1";
/// Another agent of the same job.
const CHECKER: &str = "job.checker.1";
const SECRET: &str = "the-agents-token";

/// The orchestrator's side, as the proxy sees it: one agent with these
/// credentials, whose allow-list a test may change, and the events.
#[derive(Default)]
struct Recorder {
    allowed: Mutex<Vec<String>>,
    /// What the job's record says its agents have moved already.
    spent: Mutex<u64>,
    events: Mutex<Vec<EgressEvent>>,
}

#[async_trait]
impl Gatekeeper for Recorder {
    async fn admit(&self, user: &str, secret: &str) -> Option<Admission> {
        let entries = self.allowed.lock().unwrap().clone();
        ([AGENT, CHECKER].contains(&user) && secret == SECRET).then(|| Admission {
            agent: user.to_owned(),
            allowed: AllowList::parse(&entries).unwrap(),
            budget: "job".to_owned(),
            spent: *self.spent.lock().unwrap(),
        })
    }

    fn record(&self, event: EgressEvent) {
        self.events.lock().unwrap().push(event);
    }
}

struct Proxy {
    address: SocketAddr,
    recorder: Arc<Recorder>,
    _stop: tokio_util::sync::DropGuard,
}

impl Proxy {
    async fn start(allowed: &[String], adjust: impl FnOnce(&mut ProxySettings)) -> Proxy {
        let mut settings = ProxySettings {
            max_bytes_per_job: 64 * 1024 * 1024,
            max_connections_per_job: 16,
            head_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            hosts: HashMap::from([("allowed.test".to_owned(), IpAddr::V4(Ipv4Addr::LOCALHOST))]),
        };
        adjust(&mut settings);
        let recorder = Arc::new(Recorder::default());
        *recorder.allowed.lock().unwrap() = allowed.to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let proxy = EgressProxy::new(settings, recorder.clone());
        tokio::spawn(proxy.serve(listener, stop.clone()));
        Proxy {
            address,
            recorder,
            _stop: stop.drop_guard(),
        }
    }

    /// Sends a request head (with the agent's credentials unless told
    /// otherwise) and returns the connection and the proxy's first answer line.
    async fn ask(&self, head: &str) -> (TcpStream, String) {
        self.ask_as(AGENT, head).await
    }

    async fn ask_as(&self, agent: &str, head: &str) -> (TcpStream, String) {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{agent}:{SECRET}"));
        let head = head.replace(
            "\r\n\r\n",
            &format!("\r\nProxy-Authorization: Basic {credentials}\r\n\r\n"),
        );
        self.ask_as_is(&head).await
    }

    async fn ask_as_is(&self, head: &str) -> (TcpStream, String) {
        let mut client = TcpStream::connect(self.address).await.unwrap();
        client.write_all(head.as_bytes()).await.unwrap();
        let line = first_line(&mut client).await;
        (client, line)
    }

    async fn connect(&self, target: &str) -> (TcpStream, String) {
        self.connect_as(AGENT, target).await
    }

    async fn connect_as(&self, agent: &str, target: &str) -> (TcpStream, String) {
        let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        self.ask_as(agent, &head).await
    }

    fn events(&self) -> Vec<EgressEvent> {
        self.recorder.events.lock().unwrap().clone()
    }

    /// Waits for the proxy to record `count` events (a closed connection is
    /// recorded when its relay ends, just after the client sees the end).
    async fn wait_for_events(&self, count: usize) -> Vec<EgressEvent> {
        for _ in 0..200 {
            let events = self.events();
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {count} events, got {:?}", self.events());
    }
}

/// Reads the first line of an answer, through its `\r\n`.
async fn first_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let reading = async {
        while !line.ends_with(b"\r\n") {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            line.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the proxy answered in time");
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// Everything the stream sends until it closes.
async fn rest_of(stream: &mut TcpStream) -> String {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the connection closed in time")
        .ok();
    String::from_utf8_lossy(&rest).into_owned()
}

/// A server on loopback that answers each connection with `reply` once what
/// it read is `complete`, and hands over what it read.
async fn upstream(
    reply: &'static [u8],
    complete: fn(&[u8]) -> bool,
) -> (u16, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (heard, hearing) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let heard = heard.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut chunk = [0u8; 1024];
                while !complete(&received) {
                    match connection.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => received.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = connection.write_all(reply).await;
                let _ = heard.send(received).await;
            });
        }
    });
    (port, hearing)
}

fn four_bytes(received: &[u8]) -> bool {
    received.len() >= 4
}

fn a_whole_head(received: &[u8]) -> bool {
    received.windows(4).any(|w| w == b"\r\n\r\n")
}

fn never(_: &[u8]) -> bool {
    false
}

/// A server on loopback that sends `bytes` zeros to whoever connects.
async fn flood(bytes: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0u8; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if connection.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    port
}

fn refused(event: &EgressEvent) -> &str {
    match &event.verdict {
        Verdict::Refused(why) | Verdict::Unlisted(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_listed_name_is_tunnelled_to_the_address_it_maps_to() {
    let (port, mut heard) = upstream(b"pong", four_bytes).await;
    let proxy = Proxy::start(&[format!("allowed.test:{port}")], |_| {}).await;
    let (mut tunnel, line) = proxy.connect(&format!("allowed.test:{port}")).await;
    assert_eq!(line, "HTTP/1.1 200 Connection established");
    let mut blank = [0u8; 2];
    tunnel.read_exact(&mut blank).await.unwrap();
    tunnel.write_all(b"ping").await.unwrap();
    assert_eq!(rest_of(&mut tunnel).await, "pong");
    assert_eq!(heard.recv().await.unwrap(), b"ping");
    drop(tunnel);
    let events = proxy.wait_for_events(1).await;
    assert_eq!(
        events[0].verdict,
        Verdict::Closed {
            sent: 4,
            received: 4,
            cut_at_budget: false
        }
    );
    assert_eq!(
        (events[0].host.as_str(), events[0].port),
        ("allowed.test", port)
    );
}

#[tokio::test]
async fn a_plain_request_reaches_a_listed_name_with_its_host_set_and_without_the_agents_credentials()
 {
    let (port, mut heard) = upstream(b"HTTP/1.1 204 No Content\r\n\r\n", a_whole_head).await;
    let proxy = Proxy::start(&[format!("allowed.test:{port}")], |_| {}).await;
    let head = format!(
        "GET http://allowed.test:{port}/simple/pip/?x=1 HTTP/1.1\r\n\
         Host: somewhere-else.example\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n"
    );
    let (mut client, line) = proxy.ask(&head).await;
    assert_eq!(line, "HTTP/1.1 204 No Content");
    rest_of(&mut client).await;
    let origin_heard = String::from_utf8(heard.recv().await.unwrap()).unwrap();
    assert!(
        origin_heard.starts_with("GET /simple/pip/?x=1 HTTP/1.1\r\n"),
        "{origin_heard}"
    );
    assert!(
        origin_heard.contains(&format!("Host: allowed.test:{port}\r\n")),
        "{origin_heard}"
    );
    assert!(origin_heard.contains("Accept: */*\r\n"), "{origin_heard}");
    assert!(
        origin_heard.contains("Connection: close\r\n"),
        "{origin_heard}"
    );
    assert!(
        !origin_heard.to_ascii_lowercase().contains("proxy-"),
        "{origin_heard}"
    );
    assert!(!origin_heard.contains("somewhere-else"), "{origin_heard}");
}

#[tokio::test]
async fn an_unlisted_name_is_refused_and_recorded() {
    let proxy = Proxy::start(&["pypi.org".to_owned()], |_| {}).await;
    let (mut client, line) = proxy.connect("evil.example.com:443").await;
    assert_eq!(line, "HTTP/1.1 403 Forbidden");
    assert!(
        rest_of(&mut client)
            .await
            .contains("not on this agent's allow-list")
    );
    let events = proxy.wait_for_events(1).await;
    assert!(
        refused(&events[0]).contains("evil.example.com:443"),
        "{events:?}"
    );
}

#[tokio::test]
async fn ip_literals_are_refused_even_for_an_agent_allowed_everything_listed() {
    let (port, _) = upstream(b"", never).await;
    let proxy = Proxy::start(&[format!("allowed.test:{port}")], |_| {}).await;
    for target in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "169.254.169.254:80".to_owned(),
        format!("2130706433:{port}"),
        format!("0x7f.1:{port}"),
    ] {
        let (_, line) = proxy.connect(&target).await;
        assert_eq!(line, "HTTP/1.1 403 Forbidden", "{target}");
    }
    let events = proxy.wait_for_events(5).await;
    assert!(
        events.iter().all(|e| refused(e).contains("IP address")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_plain_request_to_the_metadata_address_is_refused() {
    let proxy = Proxy::start(&[], |_| {}).await;
    let head = "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n";
    let (_, line) = proxy.ask(head).await;
    assert_eq!(line, "HTTP/1.1 403 Forbidden");
}

#[tokio::test]
async fn a_listed_name_that_resolves_to_loopback_is_refused() {
    let (port, _) = upstream(b"secret", never).await;
    // `localhost` is listed, but DNS (here, the system's resolver) takes it
    // to loopback, which no agent may reach.
    let proxy = Proxy::start(&[format!("localhost:{port}")], |_| {}).await;
    let (mut client, line) = proxy.connect(&format!("localhost:{port}")).await;
    assert_eq!(line, "HTTP/1.1 403 Forbidden");
    let answer = rest_of(&mut client).await;
    assert!(
        answer.contains("loopback address no agent may reach"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_request_without_a_running_agents_credentials_is_refused_with_407() {
    let (port, _) = upstream(b"", never).await;
    let proxy = Proxy::start(&[format!("allowed.test:{port}")], |_| {}).await;
    let connect = format!("CONNECT allowed.test:{port} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (mut client, line) = proxy.ask_as_is(&connect).await;
    assert_eq!(line, "HTTP/1.1 407 Proxy Authentication Required");
    assert!(
        rest_of(&mut client)
            .await
            .contains("Proxy-Authenticate: Basic")
    );
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{AGENT}:guessed"));
    let guessed = connect.replace(
        "\r\n\r\n",
        &format!("\r\nProxy-Authorization: Basic {wrong}\r\n\r\n"),
    );
    let (_, line) = proxy.ask_as_is(&guessed).await;
    assert_eq!(line, "HTTP/1.1 407 Proxy Authentication Required");
}

#[tokio::test]
async fn a_flood_is_cut_at_the_jobs_byte_budget_and_its_agents_can_open_no_more() {
    let budget = 1024 * 1024;
    let port = flood(16 * budget as usize).await;
    let proxy = Proxy::start(&[format!("allowed.test:{port}")], |s| {
        s.max_bytes_per_job = budget;
    })
    .await;
    let (mut tunnel, line) = proxy.connect(&format!("allowed.test:{port}")).await;
    assert_eq!(line, "HTTP/1.1 200 Connection established");
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tunnel.read_to_end(&mut received))
        .await
        .expect("the proxy cut the flood off")
        .ok();
    assert!(
        received.len() as u64 <= budget + 2,
        "{} bytes got through",
        received.len()
    );
    let events = proxy.wait_for_events(1).await;
    let Verdict::Closed {
        received,
        cut_at_budget,
        ..
    } = events[0].verdict
    else {
        panic!("{events:?}")
    };
    assert!(cut_at_budget && received <= budget, "{events:?}");
    let (_, line) = proxy.connect(&format!("allowed.test:{port}")).await;
    assert_eq!(line, "HTTP/1.1 403 Forbidden");
    let events = proxy.wait_for_events(2).await;
    assert!(refused(&events[1]).contains("egress budget"), "{events:?}");
}

#[tokio::test]
async fn a_job_whose_record_shows_its_budget_spent_gets_no_connection() {
    let (port, _) = upstream(b"", never).await;
    let budget = 1024;
    let proxy = Proxy::start(&[format!("allowed.test:{port}")], |s| {
        s.max_bytes_per_job = budget;
    })
    .await;
    *proxy.recorder.spent.lock().unwrap() = budget;
    let (_, line) = proxy.connect(&format!("allowed.test:{port}")).await;
    assert_eq!(line, "HTTP/1.1 403 Forbidden");
    let events = proxy.wait_for_events(1).await;
    assert!(refused(&events[0]).contains("egress budget"), "{events:?}");
}

#[tokio::test]
async fn a_jobs_agents_share_one_connection_cap() {
    let (port, _) = upstream(b"", never).await;
    let proxy = Proxy::start(&[format!("allowed.test:{port}")], |s| {
        s.max_connections_per_job = 1;
    })
    .await;
    let target = format!("allowed.test:{port}");
    let (_builders, line) = proxy.connect_as(AGENT, &target).await;
    assert_eq!(line, "HTTP/1.1 200 Connection established");
    let (_, line) = proxy.connect_as(CHECKER, &target).await;
    assert_eq!(line, "HTTP/1.1 429 Too Many Requests");
}

#[tokio::test]
async fn connections_beyond_the_jobs_cap_are_refused_until_one_closes() {
    let (port, _) = upstream(b"", never).await;
    let proxy = Proxy::start(&[format!("allowed.test:{port}")], |s| {
        s.max_connections_per_job = 2;
    })
    .await;
    let target = format!("allowed.test:{port}");
    let (first, line) = proxy.connect(&target).await;
    assert_eq!(line, "HTTP/1.1 200 Connection established");
    let (_second, line) = proxy.connect(&target).await;
    assert_eq!(line, "HTTP/1.1 200 Connection established");
    let (_, line) = proxy.connect(&target).await;
    assert_eq!(line, "HTTP/1.1 429 Too Many Requests");
    drop(first);
    proxy.wait_for_events(2).await;
    let (_, line) = proxy.connect(&target).await;
    assert_eq!(line, "HTTP/1.1 200 Connection established");
}

#[tokio::test]
async fn a_domain_allowed_while_the_agent_runs_counts_from_its_next_connection() {
    let (port, _) = upstream(b"", never).await;
    let proxy = Proxy::start(&[], |_| {}).await;
    let target = format!("allowed.test:{port}");
    let (_, line) = proxy.connect(&target).await;
    assert_eq!(line, "HTTP/1.1 403 Forbidden");
    proxy.recorder.allowed.lock().unwrap().push(target.clone());
    let (_, line) = proxy.connect(&target).await;
    assert_eq!(line, "HTTP/1.1 200 Connection established");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let proxy = Proxy::start(&[], |s| s.head_timeout = Duration::from_millis(300)).await;
    let mut slow = TcpStream::connect(proxy.address).await.unwrap();
    slow.write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\n")
        .await
        .unwrap();
    assert_eq!(rest_of(&mut slow).await, "");
}

#[tokio::test]
async fn a_request_head_too_long_or_not_http_is_a_400() {
    let proxy = Proxy::start(&[], |_| {}).await;
    let long = format!("CONNECT a:1 HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let (_, line) = proxy.ask_as_is(&long).await;
    assert_eq!(line, "HTTP/1.1 400 Bad Request");
    let (_, line) = proxy.ask_as_is("\x16\x03\x01 a TLS hello\r\n\r\n").await;
    assert_eq!(line, "HTTP/1.1 400 Bad Request");
    let (_, line) = proxy
        .ask("GET https://pypi.org/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n")
        .await;
    assert_eq!(line, "HTTP/1.1 400 Bad Request");
}
