//! Replicas as a user runs them: two `icarus serve` processes on one
//! PostgreSQL and the real engine. Both serve the API, exactly one
//! reconciles, and when the leader is killed with SIGKILL in the middle of a
//! build the other takes over and adopts its containers, none made twice.
//! And a second `icarus serve` on one SQLite file refuses to run.
//!
//! The replicas share what replicas on one host share: the database, the
//! workspace directory (and with it the agents' callback key), and, with
//! `orchestrator.reuse_port`, the port of the agents' callback listener, so
//! an agent reaches whichever replica is alive. Each API listens on a
//! loopback address of its own (127.0.0.2, 127.0.0.3, same port) so that
//! the test can call each. The PostgreSQL is `POSTGRES_TEST_URL`'s (what
//! `scripts/test` starts); without it the replica test says so and passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use chrono::{DateTime, Utc};
use icarus::job::JobId;
use serde_json::{Value, json};

use super::{Process, containers_of, free_port, started_at};
use crate::support::eventually;

/// Two replicas on one new PostgreSQL database.
struct Replicas {
    processes: Vec<Process>,
    database_url: String,
}

impl Replicas {
    /// Two replicas whose APIs listen on `hosts` (one port for both); `None`
    /// (and a line saying so) when no PostgreSQL is given.
    async fn start(hosts: [&str; 2]) -> Option<Replicas> {
        if std::env::var("POSTGRES_TEST_URL").is_err() {
            eprintln!(
                "skipped: POSTGRES_TEST_URL is not set (scripts/test starts a PostgreSQL and sets it)"
            );
            return None;
        }
        super::super::docker::ensure_agent_images().await;
        let database_url = crate::support::postgres_database_url().await;
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let port = free_port();
        let mut processes = Vec::new();
        for (name, host) in ["a", "b"].into_iter().zip(hosts) {
            let config = format!(
                "orchestrator:\n  host: \"{host}\"\n  port: {port}\n  reuse_port: true\n\
                 sentinel:\n  enabled: false\n\
                 workspace:\n  base_path: {workspaces}\n\
                 database:\n  url: {database_url}\n\
                 agents:\n  builder:\n    network_mode: {network}\n  checker:\n    network_mode: {network}\n",
                workspaces = dir.path().join("workspaces").display(),
                network = crate::support::TEST_AGENTS_NETWORK,
            );
            let address = format!("{host}:{port}");
            processes.push(Process::start_in(dir.clone(), name, &address, &config).await);
        }
        Some(Replicas {
            processes,
            database_url,
        })
    }

    fn instance(&self) -> String {
        icarus::runtime::instance_name(&self.database_url)
    }

    /// The lease as stored: its holder's process id, when it was acquired,
    /// and whether it holds now.
    async fn lease(&self) -> Option<(u32, DateTime<Utc>, bool)> {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&self.database_url)
            .await
            .unwrap();
        let sql = "SELECT holder, acquired_at_ms, \
                   expires_at_ms > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
                   FROM leases WHERE name = 'icarus-controller'";
        let row: Option<(String, i64, bool)> =
            sqlx::query_as(sql).fetch_optional(&mut db).await.unwrap();
        let (holder, acquired_ms, holds) = row?;
        // The holder is `host/pid/nonce`.
        let pid = holder.split('/').nth(1)?.parse().ok()?;
        Some((pid, DateTime::from_timestamp_millis(acquired_ms)?, holds))
    }

    /// Waits until one replica holds the lease; returns the indices of
    /// (leader, standby).
    async fn leader_and_standby(&self) -> (usize, usize) {
        let pid = eventually(Duration::from_secs(30), || async {
            self.lease()
                .await
                .and_then(|(pid, _, holds)| holds.then_some(pid))
        })
        .await;
        if self.processes[0].pid() == pid {
            (0, 1)
        } else {
            (1, 0)
        }
    }
}

async fn post(process: &Process, path: &str, body: Value) -> u16 {
    let response = process.client.post(process.url(path)).json(&body).send();
    response.await.unwrap().status().as_u16()
}

fn timestamp(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

/// Spawns a quick job through `via`, waits for its checker's verdict on
/// `reader`, cancels it; how long from its creation until the leader
/// admitted it (`building_at`), and until its builder ran (the engine's
/// `StartedAt`).
async fn spawn_to_builder(via: &Process, reader: &Process) -> (Duration, Duration) {
    let id = via.spawn("latency").await;
    let status = reader.wait_for(id, "awaiting_approval").await;
    let created = timestamp(&status["created_at"]);
    let admitted = timestamp(&status["building_at"]) - created;
    let builder: DateTime<Utc> = started_at(&format!("icarus-{id}-builder-1"))
        .await
        .parse()
        .unwrap();
    assert_eq!(
        post(reader, &format!("/jobs/{id}/cancel"), json!({})).await,
        200
    );
    reader.wait_for(id, "cancelled").await;
    (
        admitted.to_std().unwrap(),
        (builder - created).to_std().unwrap(),
    )
}

/// The engine's id of container `name`, if it exists.
async fn existing_container_id(name: &str) -> Option<String> {
    let docker = Docker::connect_with_defaults().unwrap();
    docker.inspect_container(name, None).await.ok()?.id
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Lists the instance's containers, whatever their job.
fn containers_of_instance(instance: &str) -> usize {
    let output = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=icarus.instance={instance}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .count()
}

#[tokio::test]
async fn postgres_two_replicas_serve_the_api_one_reconciles_and_the_other_takes_over_a_leader_killed_mid_build()
 {
    let Some(mut replicas) = Replicas::start(["127.0.0.2", "127.0.0.3"]).await else {
        return;
    };
    let instance = replicas.instance();
    let created = crate::soak::count_creations(Docker::connect_with_defaults().unwrap());
    let (leader_at, standby_at) = replicas.leader_and_standby().await;
    let (leader, standby) = (
        &replicas.processes[leader_at],
        &replicas.processes[standby_at],
    );
    let standby_pid = standby.pid();

    // Both serve the API; a job spawned through either is reconciled at once.
    let mut latency: HashMap<&str, (Vec<Duration>, Vec<Duration>)> = HashMap::new();
    for _ in 0..3 {
        for (via, reader, through) in [(standby, leader, "standby"), (leader, standby, "leader")] {
            let (admitted, started) = spawn_to_builder(via, reader).await;
            let entry = latency.entry(through).or_default();
            entry.0.push(admitted);
            entry.1.push(started);
        }
    }
    for (through, (admitted, started)) in latency {
        eprintln!(
            "spawn through the {through}: admitted after {:?}, builder running after {:?} (median of 3)",
            median(admitted),
            median(started)
        );
    }

    let id: JobId = standby.spawn("outlive the leader [builder:sleep=10]").await;
    let building = leader
        .wait_until(id, |s| {
            s["status"] == "building" && s["builder_container_id"].is_string()
        })
        .await;
    // The checker is created ahead while the builder runs: wait until the
    // engine answers for it by name (a count of the job's containers can
    // see it before its name does).
    let builder = format!("icarus-{id}-builder-1");
    let checker = format!("icarus-{id}-checker-1");
    let checker_id = eventually(Duration::from_secs(20), || async {
        let found = existing_container_id(&checker).await?;
        (containers_of(id).await == 2).then_some(found)
    })
    .await;
    let builder_started = started_at(&builder).await;
    assert!(
        leader.log().contains("started agent") && !standby.log().contains("started agent"),
        "only the leader started agents"
    );

    let killed_at = Utc::now();
    replicas.processes[leader_at].kill();
    let standby = &replicas.processes[standby_at];
    let (_, acquired, _) = eventually(Duration::from_secs(30), || async {
        replicas
            .lease()
            .await
            .filter(|(pid, _, holds)| *pid == standby_pid && *holds)
    })
    .await;
    eprintln!(
        "the standby took the lease {:?} after the leader's SIGKILL",
        (acquired - killed_at).to_std().unwrap_or_default()
    );

    let awaiting = standby
        .wait_until(id, |s| s["status"] == "awaiting_approval")
        .await;
    assert_eq!(
        awaiting["builder_container_id"], building["builder_container_id"],
        "the builder was adopted"
    );
    assert_eq!(
        awaiting["checker_container_id"], checker_id,
        "the checker the old leader created ahead was adopted"
    );
    assert_eq!(
        started_at(&builder).await,
        builder_started,
        "never restarted"
    );
    assert_eq!(containers_of(id).await, 2);
    for name in [&builder, &checker] {
        let creations = created.lock().unwrap().get(name).copied();
        assert_eq!(
            creations,
            Some(1),
            "{name} created once, by the engine's events"
        );
    }

    assert_eq!(
        post(
            standby,
            &format!("/jobs/{id}/approve"),
            json!({"approved": true})
        )
        .await,
        200
    );
    standby.wait_for(id, "completed").await;
    eventually(Duration::from_secs(20), || async {
        (containers_of_instance(&instance) == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn postgres_replicas_on_one_host_share_one_port_which_answers_while_either_lives() {
    let Some(mut replicas) = Replicas::start(["127.0.0.1", "127.0.0.1"]).await else {
        return;
    };
    let (leader_at, standby_at) = replicas.leader_and_standby().await;
    let shared = &replicas.processes[standby_at];
    let id = shared.spawn("through the shared port").await;
    shared.wait_for(id, "awaiting_approval").await;

    replicas.processes[leader_at].kill();
    // A connection the client kept to the dead one breaks; a new one
    // reaches the live one.
    let shared = &replicas.processes[standby_at];
    let cancel = shared.url(&format!("/jobs/{id}/cancel"));
    let code = eventually(Duration::from_secs(10), || async {
        let sent = shared.client.post(&cancel).json(&json!({})).send().await;
        sent.ok().map(|response| response.status().as_u16())
    })
    .await;
    assert_eq!(code, 200);
    shared.wait_for(id, "cancelled").await;
    let instance = replicas.instance();
    eventually(Duration::from_secs(30), || async {
        (containers_of_instance(&instance) == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_second_serve_on_the_same_sqlite_file_exits_saying_that_sqlite_serves_one_process() {
    super::super::docker::ensure_agent_images().await;
    let first = Process::start().await;
    let config = std::fs::read_to_string(first.config_path()).unwrap();
    let (port, other_port) = (first.address.rsplit(':').next().unwrap(), free_port());
    let config = config.replace(&format!("port: {port}"), &format!("port: {other_port}"));
    let second = Process::prepare(
        first.dir.clone(),
        "second",
        &format!("127.0.0.1:{other_port}"),
        &config,
    );

    let status = second.launch_refused().await;
    assert!(!status.success());
    let log = second.log();
    assert!(
        log.contains("already served by another icarus process") && log.contains("PostgreSQL"),
        "{log}"
    );
    let ready = first.client.get(first.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "the first one serves on");
}
