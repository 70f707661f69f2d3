//! Following the engine's event stream, and settling each exit (its code,
//! whether the OOM killer did it) before the controller is woken.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, WaitContainerOptions};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::names::docker::{INSTANCE as LABEL_INSTANCE, JOB as LABEL_JOB};

/// Engine events that can change what a job's reconcile decides.
const WATCHED_EVENTS: [&str; 5] = ["create", "start", "die", "oom", "destroy"];
use crate::job::JobId;
use crate::job::workload::WorkloadState;

/// How one container ended, as far as its events told.
#[derive(Clone, Copy)]
struct Exit {
    /// -1 until the exit is settled.
    code: i64,
    oom_killed: bool,
    /// The `die` event's time.
    at: Option<DateTime<Utc>>,
}

impl Default for Exit {
    fn default() -> Self {
        Exit {
            code: -1,
            oom_killed: false,
            at: None,
        }
    }
}

/// Exit codes, OOM kills and exit times of this runtime's containers, by
/// container id.
#[derive(Clone, Default)]
pub(super) struct Exits(Arc<std::sync::Mutex<HashMap<String, Exit>>>);

impl Exits {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Exit>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The settled exit of container `id`, and when it died.
    pub(super) fn get(&self, id: &str) -> Option<(WorkloadState, Option<DateTime<Utc>>)> {
        let exit = *self.map().get(id)?;
        (exit.code >= 0).then_some((
            WorkloadState::Exited {
                exit_code: exit.code,
                oom_killed: exit.oom_killed,
            },
            exit.at,
        ))
    }

    fn is_oom(&self, id: &str) -> bool {
        self.map().get(id).is_some_and(|exit| exit.oom_killed)
    }

    fn record_oom(&self, id: &str) {
        self.map().entry(id.to_owned()).or_default().oom_killed = true;
    }

    fn record_exit(&self, id: &str, code: i64, at: Option<DateTime<Utc>>) {
        let mut map = self.map();
        let exit = map.entry(id.to_owned()).or_default();
        exit.code = code;
        exit.at = at;
    }

    fn forget(&self, id: &str) {
        self.map().remove(id);
    }
}

/// Follows the engine's event stream for this instance's containers.
pub(super) struct EventFollower {
    pub(super) docker: Docker,
    pub(super) instance: String,
    pub(super) changes: broadcast::Sender<JobId>,
    pub(super) exits: Exits,
}

impl EventFollower {
    /// Reconnects after a short pause whenever the stream breaks, until `stop`.
    pub(super) async fn run(self, stop: CancellationToken) {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![format!("{LABEL_INSTANCE}={}", self.instance)],
            ),
            (
                "event".to_owned(),
                WATCHED_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            ),
        ]);
        loop {
            let options = EventsOptions {
                filters: Some(filters.clone()),
                ..Default::default()
            };
            let mut events = self.docker.events(Some(options));
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(message)) => self.handle(message),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "Docker event stream broke; reconnecting");
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    fn handle(&self, message: bollard::models::EventMessage) {
        let Some(actor) = message.actor else { return };
        let attributes = actor.attributes.unwrap_or_default();
        let Some(job) = attributes.get(LABEL_JOB).and_then(|j| j.parse().ok()) else {
            return;
        };
        let (Some(action), Some(id)) = (message.action, actor.id) else {
            return;
        };
        tracing::trace!(%job, action, container = %id, "engine event");
        match action.as_str() {
            "die" => {
                let at = message.time_nano.map(DateTime::from_timestamp_nanos);
                let code = attributes.get("exitCode").and_then(|c| c.parse().ok());
                self.settle_exit(job, id, code, at)
            }
            "oom" => self.exits.record_oom(&id),
            "destroy" => {
                self.exits.forget(&id);
                let _ = self.changes.send(job);
            }
            _ => {
                let _ = self.changes.send(job);
            }
        }
    }

    /// Reports a container's exit as soon as the engine tells it: the `die`
    /// event's exit code, so the next agent can start at once.
    ///
    /// An earlier version waited for the engine's wait API (which answers
    /// once the container is fully stopped, 70–90 ms later), because an
    /// agent started while the engine still released the previous one's
    /// network waited for the same locks. Agents on a network of their own
    /// now join their job's holder and have no network to release (see
    /// `holders`); the benchmark measures both ways. A `die` without an exit
    /// code (not seen on the engines tried) is still settled by the wait API.
    fn settle_exit(&self, job: JobId, id: String, code: Option<i64>, at: Option<DateTime<Utc>>) {
        let docker = self.docker.clone();
        let exits = self.exits.clone();
        let changes = self.changes.clone();
        if let Some(code) = code.filter(|code| *code != SIGKILL_EXIT) {
            exits.record_exit(&id, code, at);
            let _ = changes.send(job);
            return;
        }
        tokio::spawn(async move {
            let code = match code {
                Some(code) => Some(code),
                None => wait_for_exit(&docker, &id).await,
            };
            if let Some(code) = code {
                if code == SIGKILL_EXIT && !exits.is_oom(&id) {
                    await_oom_verdict(&docker, &exits, &id).await;
                }
                exits.record_exit(&id, code, at);
            }
            let _ = changes.send(job);
        });
    }
}

/// The exit code the engine's wait API gives once the container stopped;
/// `None` if it is gone or unreachable (the reconcile observes what is true).
async fn wait_for_exit(docker: &Docker, id: &str) -> Option<i64> {
    let mut wait = docker.wait_container(id, None::<WaitContainerOptions>);
    match wait.next().await {
        Some(Ok(response)) => Some(response.status_code),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Some(code),
        Some(Err(_)) | None => None,
    }
}

/// The exit code of a process killed with SIGKILL, as the kernel's OOM killer does.
const SIGKILL_EXIT: i64 = 137;

/// A SIGKILLed agent may have been the OOM killer's: the engine can report
/// the `oom` after the exit. Give that event a moment, then ask the engine.
async fn await_oom_verdict(docker: &Docker, exits: &Exits, id: &str) {
    for _ in 0..8 {
        if exits.is_oom(id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let inspected = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await;
    if let Ok(inspected) = inspected
        && inspected.state.and_then(|s| s.oom_killed) == Some(true)
    {
        exits.record_oom(id);
    }
}
