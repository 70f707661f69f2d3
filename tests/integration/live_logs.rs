//! Agents' output followed live, on the real Docker engine with the
//! reference agents' `talk=SECONDS` (known lines before, during and after
//! two pauses, and the callback URL as a client that logs its requests
//! prints it) and `shout=LINES` (a flood) modes.

use std::time::{Duration, Instant};

use futures::StreamExt;
use icarus::credentials::AgentKeys;
use icarus::job::{JobId, Role};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{finish, icarus};
use crate::docker::{DockerServer, cancel_and_wait};
use crate::stream::{Socket, connect_url, next_update};

/// Every message of the job's stream until `until` holds for one (or the
/// stream closes), with when each arrived.
async fn collect(socket: &mut Socket, until: impl Fn(&Value) -> bool) -> Vec<(Instant, Value)> {
    let mut messages = Vec::new();
    while let Some(message) = next_update(socket).await {
        let done = until(&message);
        messages.push((Instant::now(), message));
        if done {
            break;
        }
    }
    messages
}

fn is_status(message: &Value, phase: &str) -> bool {
    message["type"] == "status_update" && message["status"] == phase
}

/// The position of the first message that satisfies `find`.
fn position(messages: &[(Instant, Value)], find: impl Fn(&Value) -> bool) -> usize {
    messages
        .iter()
        .position(|(_, message)| find(message))
        .unwrap_or_else(|| panic!("no such message in {:#?}", texts(messages)))
}

fn line(text: &'static str) -> impl Fn(&Value) -> bool {
    move |message: &Value| message["type"] == "log" && message["message"] == text
}

fn texts(messages: &[(Instant, Value)]) -> Vec<String> {
    messages.iter().map(|(_, m)| m.to_string()).collect()
}

fn seqs(messages: &[(Instant, Value)]) -> Vec<i64> {
    messages
        .iter()
        .map(|(_, m)| m["seq"].as_i64().expect("every message has a seq"))
        .collect()
}

async fn stream_of(server: &DockerServer, id: JobId, query: &str) -> Socket {
    let url = server.api.url(&format!("/jobs/{id}/stream{query}"));
    connect_url(&url.replacen("http://", "ws://", 1)).await
}

/// A server and a job whose builder talked without pauses and that now
/// awaits approval.
async fn job_that_talked() -> (DockerServer, JobId) {
    let server = DockerServer::start(|_| {}).await;
    let id = server.spawn("say hello [builder:talk=0]").await;
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(60))
        .await;
    (server, id)
}

/// The `id:` of every server-sent event in `text`.
fn event_ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter_map(|line| line.strip_prefix("id: ")?.parse().ok())
        .collect()
}

fn builder_token(server: &DockerServer, id: JobId) -> String {
    AgentKeys::load_or_create(&server.config.callback_key_file())
        .unwrap()
        .token(id, Role::Builder, 1)
}

#[tokio::test]
async fn an_agents_lines_arrive_live_in_order_between_its_status_updates() {
    let server = DockerServer::start(|_| {}).await;
    let id = server.spawn("say hello [builder:talk=2]").await;
    let mut socket = stream_of(&server, id, "").await;
    let messages = collect(&mut socket, |m| is_status(m, "awaiting_approval")).await;

    let before = position(&messages, line("talk: before the pause"));
    let during = position(&messages, line("talk: during the pause"));
    let after = position(&messages, line("talk: after the pause"));
    let building = position(&messages, |m| is_status(m, "building"));
    let checking = position(&messages, |m| is_status(m, "checking"));
    assert!(building < before && before < during && during < after && after < checking);
    // Live: the first line came while the agent still had two pauses to go.
    let waited = messages[after].0 - messages[before].0;
    assert!(
        waited >= Duration::from_secs(3),
        "lines came together: {waited:?}"
    );
    let stderr = &messages[position(&messages, line("talk: on stderr before the pause"))].1;
    assert_eq!(stderr["stream"], "stderr");
    assert_eq!(stderr["role"], "builder");
    assert_eq!(stderr["attempt"], 1);
    let seqs = seqs(&messages);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(
        messages
            .iter()
            .all(|(_, m)| m["timestamp"].is_string() || m["type"] != "log")
    );
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn every_line_a_builder_prints_as_it_exits_comes_before_the_hand_over_and_the_checkers_lines()
{
    // Thousands of lines at once, then the exit: most are still being read
    // and stored when the exit is seen.
    let server = DockerServer::start(|config| config.agents.logs.lines_per_second = 0).await;
    let id = server.spawn("last words [builder:shout=5000]").await;
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(60))
        .await;

    let mut socket = stream_of(&server, id, "?since=0").await;
    let all = collect(&mut socket, |m| is_status(m, "awaiting_approval")).await;
    let of = |role: &'static str| {
        move |(_, m): &(Instant, Value)| m["type"] == "log" && m["role"] == role
    };
    let builder: Vec<usize> = (0..all.len()).filter(|n| of("builder")(&all[*n])).collect();
    let shouted = builder
        .iter()
        .filter(|n| {
            all[**n].1["message"]
                .as_str()
                .unwrap()
                .starts_with("shout ")
        })
        .count();
    assert_eq!(
        shouted,
        5000,
        "every line kept: {:?}",
        texts(&all[all.len().saturating_sub(5)..])
    );
    let checking = position(&all, |m| is_status(m, "checking"));
    let checker = all
        .iter()
        .position(of("checker"))
        .expect("the checker's report");
    assert!(
        builder.last() < Some(&checking) && checking < checker,
        "last builder line at {:?}, checking at {checking}, first checker line at {checker}",
        builder.last()
    );
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn the_agents_token_never_reaches_a_line_or_the_saved_log() {
    let (server, id) = job_that_talked().await;
    let token = builder_token(&server, id);

    let mut socket = stream_of(&server, id, "?since=0").await;
    let messages = collect(&mut socket, |m| is_status(m, "awaiting_approval")).await;
    let request = position(&messages, |m| {
        m["message"]
            .as_str()
            .is_some_and(|text| text.starts_with("INFO POST"))
    });
    let logged = messages[request].1["message"].as_str().unwrap();
    assert!(logged.contains("token=[redacted]"), "{logged}");
    let everything = texts(&messages).join("\n");
    assert!(!everything.contains(&token));
    let (status, logs) = server.get(&format!("/jobs/{id}/logs")).await;
    assert_eq!(status, 200);
    assert!(!logs.to_string().contains(&token));
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn reconnecting_with_since_replays_every_later_message_once() {
    let (server, id) = job_that_talked().await;

    let mut socket = stream_of(&server, id, "?since=0").await;
    let all = collect(&mut socket, |m| is_status(m, "awaiting_approval")).await;
    let positions = seqs(&all);
    assert_eq!(
        positions,
        (1..=positions.len() as i64).collect::<Vec<_>>(),
        "a gap"
    );

    let middle = positions[positions.len() / 2];
    let mut socket = stream_of(&server, id, &format!("?since={middle}")).await;
    let rest = collect(&mut socket, |m| is_status(m, "awaiting_approval")).await;
    assert_eq!(texts(&rest), texts(&all[positions.len() / 2 + 1..]));
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn the_saved_log_is_what_was_streamed_while_the_job_awaits_approval() {
    let (server, id) = job_that_talked().await;

    let (status, logs) = server.get(&format!("/jobs/{id}/logs")).await;
    assert_eq!(status, 200);
    let builders: Vec<&Value> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter(|log| log["role"] == "builder")
        .collect();
    assert_eq!(builders.len(), 1, "one entry per agent: {logs:#}");
    let text = builders[0]["log"].as_str().unwrap();
    assert_eq!(text.matches("talk: during the pause").count(), 1, "{text}");
    let before = text.find("talk: before the pause").unwrap();
    assert!(before < text.find("talk: after the pause").unwrap());
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn following_the_logs_as_server_sent_events_resumes_from_the_last_event_id() {
    let (server, id) = job_that_talked().await;
    cancel_and_wait(&server, id).await;

    let url = server
        .api
        .url(&format!("/jobs/{id}/logs?follow=true&role=builder"));
    let client = reqwest::Client::new();
    let first = client
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let events = tokio::time::timeout(Duration::from_secs(10), first.text())
        .await
        .unwrap()
        .unwrap();
    assert!(events.contains("event: log\ndata: {"), "{events}");
    assert!(
        events.contains("\"message\":\"talk: after the pause\""),
        "{events}"
    );
    let ids = event_ids(&events);
    let resumed = client
        .get(&url)
        .header("accept", "text/event-stream")
        .header("last-event-id", ids[1].to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(event_ids(&resumed), ids[2..]);

    let plain = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        plain.contains("[builder #1 stdout] talk: before the pause\n"),
        "{plain}"
    );
    assert!(plain.contains("[icarus] status: cancelled"), "{plain}");
}

#[tokio::test]
async fn a_restarted_orchestrator_resumes_following_without_repeating_or_losing_lines() {
    // The same port after the restart: the agent calls back where it was told.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = DockerServer::start(|config| config.orchestrator.port = port).await;
    let id = server.spawn("say hello [builder:talk=3]").await;
    let mut socket = stream_of(&server, id, "").await;
    collect(&mut socket, line("talk: before the pause")).await;
    server.stop().await;
    server.resume().await;
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(60))
        .await;

    let mut socket = stream_of(&server, id, "?since=0").await;
    let all = collect(&mut socket, |m| is_status(m, "awaiting_approval")).await;
    for text in [
        "talk: before the pause",
        "talk: on stderr before the pause",
        "talk: during the pause",
        "talk: after the pause",
    ] {
        let count = all.iter().filter(|(_, m)| line(text)(m)).count();
        assert_eq!(count, 1, "{text} came {count} times: {:#?}", texts(&all));
    }
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn a_flooding_agent_is_cut_at_its_budget_without_slowing_another_job() {
    let server = DockerServer::start(|config| {
        config.agents.logs.max_bytes = 20_000;
        config.agents.logs.lines_per_second = 0;
    })
    .await;
    let flood = server.spawn("flood [builder:shout=300000]").await;
    let quiet = server.spawn("quiet [builder:talk=1]").await;
    let started = Instant::now();
    server
        .wait_for_within(quiet, "awaiting_approval", Duration::from_secs(60))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    server
        .wait_for_within(flood, "awaiting_approval", Duration::from_secs(120))
        .await;

    let mut socket = stream_of(&server, flood, "?since=0").await;
    let all = collect(&mut socket, |m| is_status(m, "awaiting_approval")).await;
    let kept: usize = all
        .iter()
        .filter(|(_, m)| m["type"] == "log" && m["role"] == "builder")
        .filter(|(_, m)| m["message"].as_str().unwrap().starts_with("shout"))
        .map(|(_, m)| m["message"].as_str().unwrap().len())
        .sum();
    assert!(kept <= 20_000 && kept > 15_000, "kept {kept} bytes");
    let summary = all
        .iter()
        .filter_map(|(_, m)| m["message"].as_str())
        .find(|text| text.contains("lines dropped"))
        .expect("a summary of what was dropped");
    // Counted while the follower read on (until the agent was removed).
    let dropped: u64 = summary
        .strip_prefix("[icarus] ")
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(dropped >= 1000, "{summary}");
    let (code, _) = server
        .post(&format!("/jobs/{quiet}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200);
    server.wait_for(quiet, "cancelled").await;
    cancel_and_wait(&server, flood).await;
}

#[tokio::test]
async fn a_subscriber_too_slow_for_the_live_stream_is_closed_and_resumes_with_since() {
    let server = DockerServer::start(|config| {
        config.agents.logs.subscriber_buffer = 4;
        config.agents.logs.lines_per_second = 0;
        config.agents.logs.max_bytes = 64 << 20;
    })
    .await;
    let id = server.spawn("flood [builder:shout=200000]").await;
    let mut socket = stream_of(&server, id, "").await;
    // Not reading: the server's socket buffers fill, then its queue.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let mut last_seq = 0;
    let frame = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("the stream went quiet")
            .expect("the stream ended without a close frame")
            .unwrap();
        match message {
            Message::Text(text) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                last_seq = message["seq"].as_i64().unwrap();
            }
            Message::Close(frame) => break frame.expect("a close reason"),
            _ => {}
        }
    };
    assert_eq!(u16::from(frame.code), 1013);
    assert_eq!(
        frame.reason.as_str(),
        format!("subscriber too slow; reconnect with since={last_seq}")
    );
    let mut socket = stream_of(&server, id, &format!("?since={last_seq}")).await;
    let next = next_update(&mut socket).await.unwrap();
    assert_eq!(next["seq"], last_seq + 1);
    drop(socket);
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(120))
        .await;
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn the_clients_logs_follow_prints_each_line_once_while_the_agent_prints_them() {
    let server = DockerServer::start(|_| {}).await;
    let id = server.spawn("say hello [builder:talk=2]").await;
    let follow = icarus(&server)
        .args(["logs", &id.to_string(), "--role", "builder", "-f"])
        .spawn()
        .unwrap();
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(60))
        .await;
    cancel_and_wait(&server, id).await;

    let run = finish(follow).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("==> builder, attempt 1"),
        "{}",
        run.stdout
    );
    for text in ["before the pause", "during the pause", "after the pause"] {
        let line = format!("talk: {text}\n");
        assert_eq!(run.stdout.matches(&line).count(), 1, "{}", run.stdout);
    }
}
