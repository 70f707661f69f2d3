//! Every task the orchestrator starts, watched in one place.
//!
//! No task of a running orchestrator is meant to end before shutdown: the
//! HTTP servers, the controller, the notifiers, the IcarusJob sync. So the
//! first that ends on its own — failed, panicked, or lost its leadership —
//! is logged by name and ends [`Orchestrator::wait_for_failure`](super::Orchestrator::wait_for_failure),
//! and `icarus serve` exits for a fresh start (the process supervisor, a
//! Deployment or systemd, restarts it). Nothing is left running unseen.

use std::future::Future;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::ServerError;
use crate::store::Store;

/// A loop a mode adds, run once this replica leads.
pub struct LeaderLoop {
    /// How logs and errors name it.
    pub name: &'static str,
    /// Given the store and the shutdown token, the future of the whole loop.
    pub run: Box<dyn FnOnce(Store, CancellationToken) -> BoxFuture<'static, ()> + Send>,
}

type Ended = (&'static str, Result<(), ServerError>);

/// The orchestrator's tasks, by name.
pub struct Supervisor {
    tasks: JoinSet<Ended>,
    /// Tasks spawned elsewhere and watched here: aborted with the rest.
    foreign: Vec<AbortHandle>,
}

impl Supervisor {
    pub fn new() -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            foreign: Vec::new(),
        }
    }

    /// Runs `task` under `name`.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(async move {
            task.await;
            (name, Ok(()))
        });
    }

    /// Watches a task spawned elsewhere.
    pub fn watch(&mut self, name: &'static str, task: JoinHandle<()>) {
        self.foreign.push(task.abort_handle());
        self.tasks
            .spawn(async move { (name, task.await.map_err(ServerError::from)) });
    }

    /// Watches a task spawned elsewhere whose end carries an error.
    pub fn watch_result(&mut self, name: &'static str, task: JoinHandle<Result<(), ServerError>>) {
        self.foreign.push(task.abort_handle());
        self.tasks.spawn(async move {
            let ended = match task.await {
                Ok(result) => result,
                Err(join) => Err(ServerError::from(join)),
            };
            (name, ended)
        });
    }

    /// Waits for the first task to end, which before shutdown is always a
    /// failure: its own error, or that it stopped.
    pub async fn first_end(&mut self) -> Result<(), ServerError> {
        let Some(joined) = self.tasks.join_next().await else {
            return std::future::pending().await;
        };
        let (name, ended) = joined?;
        let error = match ended {
            Err(error) => error,
            Ok(()) if name == "controller" => ServerError::ControllerEnded,
            Ok(()) => ServerError::TaskEnded(name),
        };
        tracing::error!(task = name, error = %crate::errors::error_chain(&error), "a task ended before shutdown");
        Err(error)
    }

    /// After shutdown was asked: waits for every task to finish what it
    /// holds; the first error among them is the answer.
    pub async fn join_all(mut self) -> Result<(), ServerError> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let ended = joined
                .map_err(ServerError::from)
                .and_then(|(_, ended)| ended);
            if let Err(error) = ended {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops everything at once, finishing nothing.
    pub fn abort_all(mut self) {
        self.foreign.iter().for_each(AbortHandle::abort);
        self.tasks.abort_all();
    }
}

/// `task` once `leadership` says this replica leads (at once without one);
/// nothing if shutdown comes first.
pub async fn when_leading(
    leadership: Option<watch::Receiver<bool>>,
    shutdown: CancellationToken,
    task: impl Future<Output = ()>,
) {
    if let Some(mut leadership) = leadership {
        let leading = tokio::select! {
            _ = shutdown.cancelled() => false,
            leading = leadership.wait_for(|lead| *lead) => leading.is_ok(),
        };
        if !leading {
            return;
        }
    }
    task.await;
}
