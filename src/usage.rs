//! The usage sampler: what agents really use, measured by Icarus itself.
//!
//! Agents report their progress (`current_tool`, and CPU and memory as they
//! see it) through the callback; this leader loop measures instead, through
//! the runtime ([`Runtime::usage`]: the engine's stats in local mode). Every
//! `agents.usage_interval_seconds` it reads the agent each building or
//! checking job is running now, a bounded number at once, and stores the
//! reading ([`Store::record_usage`]: the latest, the peak memory, and a
//! measured telemetry sample). The rows outlive the agent, so a finished
//! job's status still shows what its agents used.
//!
//! Sampling never touches a job: a failed reading is logged, counted
//! ([`UsageMetrics`]) and tried again next round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::job::{Job, JobId, Phase, Role};
use crate::metrics::{UsageMetrics, UsageOutcome};
use crate::runtime::Runtime;
use crate::store::{JobFilter, Store, UsageReading};

/// Agents read at once: the engine answers each in milliseconds, and a
/// round over many should not queue behind one slow answer.
const READINGS_AT_ONCE: usize = 16;

/// Most jobs in one phase a round looks at (as many as can run at once in
/// any sensible configuration).
const JOBS_PER_PHASE: u32 = 1000;

/// One agent to read: the job, which agent, and its runtime id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    job: JobId,
    role: Role,
    attempt: u32,
    workload_id: String,
}

impl Target {
    /// The agent `job` is running now, if it runs one and it was seen.
    fn of(job: &Job) -> Option<Target> {
        let role = match job.status.phase {
            Phase::Building => Role::Builder,
            Phase::Checking => Role::Checker,
            _ => return None,
        };
        let workload_id = job.status.workload(role).workload_id.clone()?;
        Some(Target {
            job: job.id,
            role,
            attempt: job.status.attempt,
            workload_id,
        })
    }
}

/// What one round did, for tests and the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub recorded: usize,
    pub unmeasured: usize,
    pub failed: usize,
}

/// Reads running agents' usage through the runtime into the store.
#[derive(Clone)]
pub struct UsageSampler {
    runtime: Arc<dyn Runtime>,
    interval: Duration,
    metrics: UsageMetrics,
}

impl UsageSampler {
    /// A sampler every `interval_seconds`; none for 0 (sampling off).
    pub fn new(
        runtime: Arc<dyn Runtime>,
        interval_seconds: u64,
        metrics: UsageMetrics,
    ) -> Option<UsageSampler> {
        (interval_seconds > 0).then(|| UsageSampler {
            runtime,
            interval: Duration::from_secs(interval_seconds),
            metrics,
        })
    }

    /// Samples every interval until `stop`.
    pub async fn run(self, store: Store, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let round = self
                .round(&store)
                .instrument(tracing::debug_span!("usage round"))
                .await;
            tracing::trace!(?round, "usage sampled");
        }
    }

    /// One round: every running agent read once, the readings stored.
    pub async fn round(&self, store: &Store) -> Round {
        let started = Instant::now();
        let targets = match running_agents(store).await {
            Ok(targets) => targets,
            Err(error) => {
                tracing::warn!(error = %crate::errors::error_chain(&error), "the running agents could not be listed; usage is sampled next round");
                return Round::default();
            }
        };
        let outcomes: Vec<UsageOutcome> = futures::stream::iter(targets)
            .map(|target| self.read(store, target))
            .buffer_unordered(READINGS_AT_ONCE)
            .collect()
            .await;
        self.metrics.round(started.elapsed().as_secs_f64());
        let mut round = Round::default();
        for outcome in outcomes {
            self.metrics.sample(outcome);
            match outcome {
                UsageOutcome::Recorded => round.recorded += 1,
                UsageOutcome::Unmeasured => round.unmeasured += 1,
                UsageOutcome::Failed => round.failed += 1,
            }
        }
        round
    }

    /// Reads one agent and stores the reading; never fails its job.
    async fn read(&self, store: &Store, target: Target) -> UsageOutcome {
        let usage = match self.runtime.usage(&target.workload_id).await {
            Ok(Some(usage)) => usage,
            Ok(None) => return UsageOutcome::Unmeasured,
            Err(error) => {
                tracing::warn!(job = %target.job, role = %target.role, error = %crate::errors::error_chain(&error), "an agent's usage could not be read");
                return UsageOutcome::Failed;
            }
        };
        let reading = UsageReading {
            role: target.role,
            attempt: target.attempt,
            cpu_seconds: usage.cpu_seconds,
            memory_bytes: usage.memory_bytes,
            sampled_at: crate::job::timestamp_now(),
        };
        match store.record_usage(target.job, &reading).await {
            Ok(_) => UsageOutcome::Recorded,
            Err(error) => {
                tracing::warn!(job = %target.job, role = %target.role, error = %crate::errors::error_chain(&error), "an agent's usage could not be stored");
                UsageOutcome::Failed
            }
        }
    }
}

/// The agents of every building or checking job.
async fn running_agents(store: &Store) -> crate::store::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for phase in [Phase::Building, Phase::Checking] {
        let filter = JobFilter {
            phase: Some(phase),
            project_id: None,
            limit: JOBS_PER_PHASE,
            after: None,
        };
        let jobs = store.list_jobs(filter).await?;
        targets.extend(jobs.iter().filter_map(Target::of));
    }
    Ok(targets)
}
