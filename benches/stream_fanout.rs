//! What one job's stream costs with many subscribers, on the real Docker
//! engine, in one run.
//!
//! An `icarus serve` process (this build's binary, SQLite, the Docker
//! runtime) runs one job whose builder (the reference agent in its
//! `tick=LINES` mode) pauses five seconds, then prints a numbered line
//! every 100 ms. Before it starts printing, S WebSocket subscribers
//! (1,000 by default) connect to `/jobs/{id}/stream`; each records, for
//! every line, the time from the line's timestamp (when the engine received
//! it) to its arrival: the fan-out latency, follower and store included.
//! The server's resident memory (VmRSS) is read idle, with the subscribers
//! connected, at its highest while lines flow, and after they closed.
//!
//! Run with `scripts/build-images && cargo bench --bench stream_fanout`
//! (`BENCH_SUBSCRIBERS=1000`, `BENCH_LINES=100`; `BENCH_BUILDER_IMAGE` for
//! another image of the reference builder). Prints a Markdown table.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

#[allow(
    dead_code,
    reason = "each bench binary uses part of what the benches share"
)]
mod support;

#[tokio::main]
async fn main() {
    let subscribers = env_number("BENCH_SUBSCRIBERS", 1000);
    let lines = env_number("BENCH_LINES", 100);
    let dir = tempfile::tempdir().unwrap();
    let port = support::server::free_port();
    let mut server = start_server(dir.path(), port, subscribers).await;
    let pid = server.id().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until_healthy(&client, &base).await;
    let idle = rss_kib(pid);

    let job = spawn(&client, &base, &format!("fan out [builder:tick={lines}]")).await;
    let url = format!("ws://127.0.0.1:{port}/jobs/{job}/stream");
    let connecting = Instant::now();
    let mut sockets = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        sockets.push(tokio_tungstenite::connect_async(&url).await.unwrap().0);
    }
    let connected_in = connecting.elapsed();
    let with_subscribers = rss_kib(pid);

    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(read_lines(socket)))
        .collect();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
            if rss_kib(pid) == 0 {
                return peak;
            }
        }
    });
    let mut latencies = Vec::new();
    let mut complete = 0;
    for reader in readers {
        let received = reader.await.unwrap();
        complete += usize::from(received.len() == lines);
        latencies.extend(received);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    cancel(&client, &base, &job).await;
    stop(&mut server).await;
    // What the stopped server left on the engine goes (its network would
    // use up the engine's address pools over many runs).
    let url = support::server::database_url(dir.path());
    support::server::remove_leftovers_of(&icarus::runtime::instance_name(&url));
    let peak = sampler.await.unwrap();

    latencies.sort_unstable();
    let percentile = |p: f64| {
        let at = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies.get(at).copied().unwrap_or_default()
    };
    println!(
        "| subscribers | lines | got every line | connect all | fan-out p50 | fan-out p99 | max | RSS idle | RSS connected | RSS peak | RSS after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {subscribers} | {lines} | {complete}/{subscribers} | {:.1} s | {:.1} ms | {:.1} ms | {:.1} ms | {} MiB | {} MiB | {} MiB | {} MiB |",
        connected_in.as_secs_f64(),
        percentile(0.50) as f64 / 1000.0,
        percentile(0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or_default() as f64 / 1000.0,
        idle / 1024,
        with_subscribers / 1024,
        peak / 1024,
        after / 1024,
    );
}

/// The latency of every `tick` line one subscriber got, in microseconds,
/// until the builder's part ends.
async fn read_lines(
    mut socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Vec<i64> {
    let mut latencies = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(120), socket.next()).await
    {
        let Message::Text(text) = message else {
            continue;
        };
        let arrived = Utc::now();
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "status_update" && message["status"] == "checking" {
            break;
        }
        let is_tick = message["message"]
            .as_str()
            .is_some_and(|line| line.starts_with("tick "));
        if message["type"] == "log" && is_tick {
            let printed: DateTime<Utc> = message["timestamp"].as_str().unwrap().parse().unwrap();
            latencies.push((arrived - printed).num_microseconds().unwrap_or(i64::MAX));
        }
    }
    latencies
}

async fn start_server(dir: &std::path::Path, port: u16, subscribers: usize) -> Child {
    let streams = (subscribers + 16).to_string();
    Command::new(support::icarus_binary())
        .arg("serve")
        .env(
            "ICARUS_CONFIG__DATABASE__URL",
            support::server::database_url(dir),
        )
        .env(
            "ICARUS_CONFIG__WORKSPACE__BASE_PATH",
            dir.join("workspaces"),
        )
        .env("ICARUS_CONFIG__ORCHESTRATOR__HOST", "127.0.0.1")
        .env("ICARUS_CONFIG__ORCHESTRATOR__PORT", port.to_string())
        .env("ICARUS_CONFIG__ORCHESTRATOR__MAX_STREAMS", &streams)
        .env(
            "ICARUS_CONFIG__ORCHESTRATOR__MAX_STREAMS_PER_CALLER",
            &streams,
        )
        .env("ICARUS_CONFIG__SENTINEL__ENABLED", "false")
        .env(
            "ICARUS_CONFIG__AGENTS__BUILDER__IMAGE_NAME",
            std::env::var("BENCH_BUILDER_IMAGE")
                .unwrap_or_else(|_| "icarus-builder:latest".to_owned()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_until_healthy(client: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not become healthy");
}

async fn spawn(client: &reqwest::Client, base: &str, task: &str) -> String {
    let response = client
        .post(format!("{base}/jobs/spawn"))
        .json(&json!({"task": task, "project_path": "/workspace"}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["job_id"].as_str().unwrap().to_owned()
}

async fn cancel(client: &reqwest::Client, base: &str, job: &str) {
    let _ = client
        .post(format!("{base}/jobs/{job}/cancel"))
        .json(&json!({}))
        .send()
        .await;
    for _ in 0..100 {
        let status: Value = client
            .get(format!("{base}/jobs/{job}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "cancelled" {
            // Its agents are removed once the cancellation is recorded.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the server gracefully (SIGTERM), as an operator would.
async fn stop(server: &mut Child) {
    if let Some(pid) = server.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), server.wait()).await;
}

/// The process's resident memory in KiB; 0 once it is gone.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
