//! The crash soak: the real `icarus` binary on the real Docker engine,
//! killed with SIGKILL at random moments while jobs of every kind move
//! through, and started again each time on the same SQLite file.
//!
//! Afterwards every job that was accepted (201) is there and ended as its
//! kind must (an outage of the orchestrator never fails a job that should
//! have succeeded, nor turns an agent's failure into another), the engine's
//! own create events show no container name created twice, and once every
//! job is decided no container of theirs is left.
//!
//! The suite runs a short soak; `scripts/soak` runs a long one
//! (`ICARUS_SOAK_CYCLES`, `ICARUS_SOAK_SEED` to replay one).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use icarus::job::JobId;
use serde_json::{Value, json};

use crate::process::{Process, containers_of};
use crate::support::eventually;

/// A kind of job: its task, and the phase and reason it must end in.
struct Kind {
    task: &'static str,
    phase: &'static str,
    reason: &'static str,
}

const KINDS: [Kind; 6] = [
    Kind {
        task: "soak",
        phase: "awaiting_approval",
        reason: "CheckerSucceeded",
    },
    Kind {
        task: "soak [builder:sleep=1] [checker:sleep=1]",
        phase: "awaiting_approval",
        reason: "CheckerSucceeded",
    },
    Kind {
        task: "soak [builder:fail]",
        phase: "failed",
        reason: "BuilderReportedError",
    },
    Kind {
        task: "soak [builder:exit=5]",
        phase: "failed",
        reason: "BuilderFailed",
    },
    Kind {
        task: "soak [checker:exit=4]",
        phase: "failed",
        reason: "CheckerFailed",
    },
    // Never reports: its own fault when the orchestrator served its whole
    // run, retried when it did not, and out of attempts the same verdict.
    Kind {
        task: "soak [checker:silent]",
        phase: "failed",
        reason: "CheckerReportMissing",
    },
];

/// A small deterministic generator (xorshift64*), so a failing run can be
/// replayed from the seed it prints.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every container the engine created for a job label, by name, counted.
pub fn count_creations(docker: Docker) -> Arc<Mutex<BTreeMap<String, u32>>> {
    count_engine_events(docker, "create")
}

/// The engine's `action` events (`create`, `start`...) of containers with
/// a job label, counted by container name from now on.
pub fn count_engine_events(docker: Docker, action: &str) -> Arc<Mutex<BTreeMap<String, u32>>> {
    let counted = Arc::new(Mutex::new(BTreeMap::new()));
    let sink = counted.clone();
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec![action.to_owned()]),
        ("label".to_owned(), vec!["icarus.job".to_owned()]),
    ]);
    let options = EventsOptions {
        filters: Some(filters),
        ..Default::default()
    };
    tokio::spawn(async move {
        let mut events = docker.events(Some(options));
        while let Some(Ok(event)) = events.next().await {
            let name = event
                .actor
                .and_then(|actor| actor.attributes)
                .and_then(|attributes| attributes.get("name").cloned());
            if let Some(name) = name {
                *sink.lock().unwrap().entry(name).or_default() += 1;
            }
        }
    });
    counted
}

/// Spawns `task`; the job id if the orchestrator accepted it (201). A
/// refused or unanswered spawn is not a job (it may be retried by a client).
async fn try_spawn(process: &Process, task: &str) -> Option<JobId> {
    let response = process
        .client
        .post(process.url("/jobs/spawn"))
        .json(&json!({ "task": task }))
        .send()
        .await
        .ok()?;
    if response.status() != 201 {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["job_id"].as_str()?.parse().ok()
}

fn is_settled(status: &Value) -> bool {
    matches!(
        status["status"].as_str(),
        Some("awaiting_approval" | "failed" | "completed" | "rejected" | "cancelled")
    )
}

/// What the soak saw, for its report.
#[derive(Default)]
struct Tally {
    restarts: u32,
    ready_after: Vec<Duration>,
}

/// Kills and restarts `process` `cycles` times at random moments, spawning
/// jobs of every kind between kills. Returns each accepted job's kind.
async fn soak(
    process: &mut Process,
    dice: &mut Dice,
    cycles: u64,
    tally: &mut Tally,
) -> Vec<(JobId, &'static Kind)> {
    let mut jobs = Vec::new();
    for cycle in 0..cycles {
        for _ in 0..2 {
            let kind = &KINDS[dice.roll(KINDS.len() as u64) as usize];
            if let Some(id) = try_spawn(process, kind.task).await {
                jobs.push((id, kind));
            }
        }
        tokio::time::sleep(Duration::from_millis(100 + dice.roll(1500))).await;
        process.kill();
        // Sometimes stay down a while, as an operator restarting would.
        if cycle % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(dice.roll(3000))).await;
        }
        let launched = Instant::now();
        process.launch().await;
        tally.restarts += 1;
        tally.ready_after.push(launched.elapsed());
    }
    jobs
}

#[tokio::test]
async fn sigkills_at_random_moments_lose_no_job_fail_none_wrongly_and_run_no_agent_twice() {
    super::docker::ensure_agent_images().await;
    let cycles = setting("ICARUS_SOAK_CYCLES", 8);
    let seed = std::env::var("ICARUS_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand_seed)
        .max(1);
    println!("soak: {cycles} cycles, seed {seed} (ICARUS_SOAK_SEED replays it)");
    let mut dice = Dice(seed);
    let docker = Docker::connect_with_defaults().unwrap();
    let created = count_creations(docker);
    let mut process = Process::start_with(&[
        ("orchestrator.max_concurrent_jobs", "4"),
        ("agents.retry_backoff_seconds", "0.5"),
    ])
    .await;
    let mut tally = Tally::default();
    let jobs = soak(&mut process, &mut dice, cycles, &mut tally).await;
    assert!(
        !jobs.is_empty(),
        "no spawn was accepted; log:\n{}",
        process.log()
    );

    let patience = Duration::from_secs(60 + 10 * jobs.len() as u64);
    let mut wrong = Vec::new();
    for (id, kind) in &jobs {
        let status = eventually(patience, || async {
            let status = process.status(*id).await;
            is_settled(&status).then_some(status)
        })
        .await;
        if status["status"] != kind.phase || status["reason"] != kind.reason {
            wrong.push(format!("{id} ({}): {status}", kind.task));
        }
    }
    assert!(
        wrong.is_empty(),
        "jobs that ended other than their kind must (seed {seed}):\n{}\nlog:\n{}",
        wrong.join("\n"),
        process.log()
    );

    for (id, kind) in &jobs {
        if kind.phase == "awaiting_approval" {
            let reject = process
                .client
                .post(process.url(&format!("/jobs/{id}/approve")))
                .json(&json!({"approved": false}));
            assert_eq!(reject.send().await.unwrap().status(), 200);
        }
    }
    for (id, _) in &jobs {
        eventually(Duration::from_secs(30), || async {
            (containers_of(*id).await == 0).then_some(())
        })
        .await;
    }
    let ids: Vec<String> = jobs.iter().map(|(id, _)| id.to_string()).collect();
    let created = created.lock().unwrap().clone();
    let twice: Vec<_> = created
        .iter()
        .filter(|(name, count)| **count > 1 && ids.iter().any(|id| name.contains(id.as_str())))
        .collect();
    assert!(
        twice.is_empty(),
        "created more than once (seed {seed}): {twice:?}"
    );
    report(&jobs, &tally, &created);
}

/// Prints what the soak did, for `scripts/soak`'s summary.
fn report(jobs: &[(JobId, &Kind)], tally: &Tally, created: &BTreeMap<String, u32>) {
    let mut ready: Vec<_> = tally.ready_after.clone();
    ready.sort();
    let median = ready.get(ready.len() / 2).copied().unwrap_or_default();
    let retried = created.keys().filter(|name| !name.ends_with("-1")).count();
    println!(
        "soak: {} restarts, {} jobs, all ended as their kind; {} containers created, none twice \
         ({retried} by retries); nothing left behind; start-to-ready median {median:?}",
        tally.restarts,
        jobs.len(),
        created.len(),
    );
}

/// A seed from the clock when none is given.
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
