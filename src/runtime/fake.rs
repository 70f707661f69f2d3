//! `FakeRuntime`: an in-memory test double of [`Runtime`].
//!
//! It keeps "workloads" in a map and lets a test play the agents: exit with a
//! code, be OOM-killed, vanish. It is never selected by configuration; it
//! exists so the controller and the API can be tested without a container
//! engine, and it counts every start so tests can prove nothing ran twice.
//! Clone it to share one "engine" across an orchestrator restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio::sync::{broadcast, watch};

use super::{Result, Runtime, RuntimeError, Usage, WorkloadSpec};
use crate::job::JobId;
use crate::job::workload::{ObservedWorkload, Role, WorkloadKey, WorkloadState};

#[derive(Debug, Clone)]
struct FakeWorkload {
    spec: WorkloadSpec,
    id: String,
    state: WorkloadState,
    log_tail: Option<String>,
    /// When it was made to exit.
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What `usage` answers while it runs.
    usage: Option<Usage>,
}

#[derive(Debug, Default)]
struct World {
    /// Keyed by workload name, as a container engine keys containers.
    workloads: BTreeMap<String, FakeWorkload>,
    workspaces: BTreeSet<JobId>,
    /// What `workspace_usage` says each workspace uses (0 unless set).
    workspace_bytes: BTreeMap<JobId, u64>,
    /// How many times each name was created (adoption does not count).
    creations: BTreeMap<String, u32>,
    next_id: u64,
    /// When set, `start` fails with this error (the engine answered one).
    start_failure: Option<String>,
    /// When set, `start` cannot reach the engine.
    unreachable: bool,
    /// Images `start` reports as not found.
    missing_images: BTreeSet<String>,
    /// When set, `usage` fails as an engine error would.
    usage_failure: bool,
    /// When set, `create_ahead` answers that it cannot.
    declines_ahead: bool,
    /// How many times `create_ahead` was asked for.
    ahead_asked: u32,
}

impl World {
    /// Adds a workload under the spec's name and returns its new id.
    fn create(&mut self, spec: &WorkloadSpec, state: WorkloadState) -> String {
        self.next_id += 1;
        let id = format!("fake-{:04}", self.next_id);
        let name = spec.key.name();
        *self.creations.entry(name.clone()).or_default() += 1;
        let workload = FakeWorkload {
            spec: spec.clone(),
            id: id.clone(),
            state,
            log_tail: None,
            finished_at: None,
            usage: None,
        };
        self.workloads.insert(name, workload);
        id
    }
}

/// An in-memory stand-in for a container engine, for tests only.
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    world: Arc<Mutex<World>>,
    changes: broadcast::Sender<JobId>,
    /// While true, `create_ahead` waits (an engine slow to create).
    hold_ahead: Arc<watch::Sender<bool>>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        FakeRuntime {
            world: Arc::default(),
            changes: broadcast::channel(1024).0,
            hold_ahead: Arc::new(watch::channel(false).0),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A test that panicked while holding the lock already failed; keep going.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self, job: JobId) {
        let _ = self.changes.send(job);
    }

    fn set_state(&self, job: JobId, role: Role, state: WorkloadState) -> bool {
        let changed = {
            let mut world = self.world();
            let found = world
                .workloads
                .values_mut()
                .rfind(|w| w.spec.key.job == job && w.spec.key.role == role);
            let finished_at =
                matches!(state, WorkloadState::Exited { .. }).then(crate::job::timestamp_now);
            found
                .map(|w| {
                    w.state = state;
                    w.finished_at = finished_at;
                })
                .is_some()
        };
        if changed {
            self.notify(job);
        }
        changed
    }

    /// Plays the agent exiting with `code`. Returns false if no such workload exists.
    pub fn exit(&self, job: JobId, role: Role, code: i64) -> bool {
        self.set_state(
            job,
            role,
            WorkloadState::Exited {
                exit_code: code,
                oom_killed: false,
            },
        )
    }

    /// Plays the agent printing `output` and then exiting with `code`.
    pub fn exit_with_output(&self, job: JobId, role: Role, code: i64, output: &str) -> bool {
        {
            let mut world = self.world();
            let found = world
                .workloads
                .values_mut()
                .rfind(|w| w.spec.key.job == job && w.spec.key.role == role);
            if let Some(workload) = found {
                workload.log_tail = Some(output.to_owned());
            }
        }
        self.exit(job, role, code)
    }

    /// Plays the kernel killing the agent for exceeding its memory limit.
    pub fn oom_kill(&self, job: JobId, role: Role) -> bool {
        self.set_state(
            job,
            role,
            WorkloadState::Exited {
                exit_code: 137,
                oom_killed: true,
            },
        )
    }

    /// Plays someone deleting the workload behind the orchestrator's back.
    pub fn vanish(&self, job: JobId, role: Role) {
        self.world()
            .workloads
            .retain(|_, w| !(w.spec.key.job == job && w.spec.key.role == role));
        self.notify(job);
    }

    /// Makes every following `start` fail with an error the engine
    /// answered, or succeed again with `None`.
    pub fn fail_starts(&self, error: Option<&str>) {
        self.world().start_failure = error.map(str::to_owned);
    }

    /// Makes every following `start` find the engine out of reach, or
    /// reach it again with `false`.
    pub fn make_unreachable(&self, unreachable: bool) {
        self.world().unreachable = unreachable;
    }

    /// Sets what the agent uses, as `usage` answers while it runs.
    /// Returns false if no such workload exists.
    pub fn set_usage(&self, job: JobId, role: Role, usage: Usage) -> bool {
        let mut world = self.world();
        let found = world
            .workloads
            .values_mut()
            .rfind(|w| w.spec.key.job == job && w.spec.key.role == role);
        found.map(|w| w.usage = Some(usage)).is_some()
    }

    /// Makes every following `usage` fail, or answer again with `false`.
    pub fn fail_usage(&self, failing: bool) {
        self.world().usage_failure = failing;
    }

    /// Makes every `create_ahead` wait until released with `false`, as an
    /// engine slow to create would.
    pub fn hold_creations_ahead(&self, hold: bool) {
        self.hold_ahead.send_replace(hold);
    }

    /// Makes `create_ahead` answer as a runtime that cannot create a
    /// workload without starting it.
    pub fn decline_creations_ahead(&self) {
        self.world().declines_ahead = true;
    }

    /// How many times `create_ahead` was asked for.
    pub fn creations_ahead_asked(&self) -> u32 {
        self.world().ahead_asked
    }

    /// Makes `start` answer "image not found" for this image.
    pub fn forget_image(&self, image: &str) {
        self.world().missing_images.insert(image.to_owned());
    }

    pub fn state_of(&self, job: JobId, role: Role) -> Option<WorkloadState> {
        self.world()
            .workloads
            .values()
            .filter(|w| w.spec.key.job == job && w.spec.key.role == role)
            .map(|w| w.state.clone())
            .next_back()
    }

    /// The spec the workload was started with, to check images and environment.
    pub fn spec_of(&self, job: JobId, role: Role) -> Option<WorkloadSpec> {
        self.world()
            .workloads
            .values()
            .filter(|w| w.spec.key.job == job && w.spec.key.role == role)
            .map(|w| w.spec.clone())
            .next_back()
    }

    /// How many times a workload with this key was created.
    pub fn creations(&self, key: WorkloadKey) -> u32 {
        self.world()
            .creations
            .get(&key.name())
            .copied()
            .unwrap_or(0)
    }

    pub fn workload_count(&self) -> usize {
        self.world().workloads.len()
    }

    pub fn running_count(&self) -> usize {
        let world = self.world();
        world
            .workloads
            .values()
            .filter(|w| w.state == WorkloadState::Running)
            .count()
    }

    pub fn has_workspace(&self, job: JobId) -> bool {
        self.world().workspaces.contains(&job)
    }

    /// Makes the job's workspace use `bytes` of disk, as `workspace_usage` says.
    pub fn set_workspace_bytes(&self, job: JobId, bytes: u64) {
        self.world().workspace_bytes.insert(job, bytes);
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn observe(&self, job: JobId) -> Result<Vec<ObservedWorkload>> {
        let world = self.world();
        Ok(world
            .workloads
            .values()
            .filter(|w| w.spec.key.job == job)
            .map(|w| ObservedWorkload {
                role: w.spec.key.role,
                attempt: w.spec.key.attempt,
                id: w.id.clone(),
                state: w.state.clone(),
                log_tail: w.log_tail.clone(),
                finished_at: w.finished_at,
            })
            .collect())
    }

    async fn prepare_workspace(&self, job: JobId) -> Result<()> {
        self.world().workspaces.insert(job);
        Ok(())
    }

    async fn start(&self, spec: &WorkloadSpec) -> Result<String> {
        let mut world = self.world();
        if world.unreachable {
            return Err(RuntimeError::unavailable("start", "connection refused"));
        }
        if let Some(detail) = world.start_failure.clone() {
            return Err(RuntimeError::failed("start", detail));
        }
        if world.missing_images.contains(&spec.image) {
            return Err(RuntimeError::ImageNotFound(spec.image.clone()));
        }
        let name = spec.key.name();
        if let Some(existing) = world.workloads.get_mut(&name) {
            if existing.state == WorkloadState::Created {
                existing.state = WorkloadState::Running;
            }
            return Ok(existing.id.clone());
        }
        Ok(world.create(spec, WorkloadState::Running))
    }

    async fn create_ahead(&self, spec: &WorkloadSpec) -> Result<bool> {
        {
            let mut world = self.world();
            world.ahead_asked += 1;
            if world.declines_ahead {
                return Ok(false);
            }
        }
        let _ = self.hold_ahead.subscribe().wait_for(|held| !held).await;
        let mut world = self.world();
        if world.missing_images.contains(&spec.image) {
            return Err(RuntimeError::ImageNotFound(spec.image.clone()));
        }
        if !world.workloads.contains_key(&spec.key.name()) {
            world.create(spec, WorkloadState::Created);
        }
        Ok(true)
    }

    async fn logs(&self, id: &str) -> Result<String> {
        let world = self.world();
        let workload = world.workloads.values().find(|w| w.id == id);
        Ok(workload
            .and_then(|w| w.log_tail.clone())
            .unwrap_or_default())
    }

    async fn usage(&self, id: &str) -> Result<Option<Usage>> {
        let world = self.world();
        if world.usage_failure {
            return Err(RuntimeError::failed(
                "read usage",
                "the engine answered 500",
            ));
        }
        let workload = world.workloads.values().find(|w| w.id == id);
        Ok(workload
            .filter(|w| w.state == WorkloadState::Running)
            .and_then(|w| w.usage))
    }

    async fn remove(&self, key: WorkloadKey, _id: &str) -> Result<()> {
        let removed = self.world().workloads.remove(&key.name()).is_some();
        if removed {
            self.notify(key.job);
        }
        Ok(())
    }

    async fn workspace_usage(&self) -> Result<Vec<(JobId, u64)>> {
        let world = self.world();
        Ok(world
            .workspaces
            .iter()
            .map(|job| (*job, world.workspace_bytes.get(job).copied().unwrap_or(0)))
            .collect())
    }

    async fn remove_workspace(&self, job: JobId) -> Result<()> {
        self.world().workspaces.remove(&job);
        Ok(())
    }

    async fn owners(&self) -> Result<Vec<JobId>> {
        let world = self.world();
        Ok(super::distinct_jobs(
            world.workloads.values().map(|w| w.spec.key.job),
        ))
    }

    fn changes(&self) -> BoxStream<'static, JobId> {
        super::wake_ups(&self.changes)
    }
}
