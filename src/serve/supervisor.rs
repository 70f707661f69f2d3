//! Every task the orchestrator starts, watched in one place.
//!
//! No task of a running orchestrator is meant to end before shutdown: the
//! HTTP servers, the lease campaign, the leader loops (the controller, the
//! notifiers, the IcarusJob sync). So the first that ends on its own — failed
//! or panicked — is logged by name and ends [`Orchestrator::wait_for_failure`](super::Orchestrator::wait_for_failure),
//! and `icarus serve` exits for a fresh start (the process supervisor, a
//! Deployment or systemd, restarts it). Nothing is left running unseen.
//!
//! A lost lease is not such an end: [`while_leading`] stops the leader loops
//! of the term that ended, and starts them again in the next one.

use std::future::Future;

use futures::future::BoxFuture;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::ServerError;
use crate::leadership::{Leadership, Term};
use crate::store::Store;

/// A loop that runs only while this replica leads, started afresh in each
/// term.
pub struct LeaderLoop {
    /// How logs and errors name it.
    pub name: &'static str,
    /// Given the term's store (fenced by the term, if its lease can) and a
    /// token cancelled when the term or the process ends, the future of the
    /// whole loop for that term.
    pub run: Box<dyn Fn(Store, CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>,
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

/// Runs `leader_loop` in every term `leadership` grants (from start to
/// shutdown without one), on `store` fenced by the term; stops it as soon
/// as the term is over and waits for the next. Returns at shutdown, or when
/// the loop ends by itself, which the supervisor reports as a failure.
pub async fn while_leading(
    leadership: Option<Leadership>,
    store: Store,
    shutdown: CancellationToken,
    leader_loop: LeaderLoop,
) {
    let Some(mut leadership) = leadership else {
        return (leader_loop.run)(store, shutdown).await;
    };
    loop {
        let term = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            term = leadership.next_term() => term,
        };
        // The campaign ended: at shutdown, or it failed (reported by itself).
        let Some(term) = term else { return };
        let stop = shutdown.child_token();
        let run = (leader_loop.run)(store_for(&store, &term), stop.clone());
        tokio::pin!(run);
        tokio::select! {
            _ = &mut run => return,
            _ = leadership.term_over(&term) => {}
        }
        if !shutdown.is_cancelled() {
            tracing::warn!(
                task = leader_loop.name,
                term = term.version,
                "the term is over: stopped until this replica leads again"
            );
        }
        stop.cancel();
        run.await;
    }
}

/// The store a term writes through: refusing its writes once it is over.
fn store_for(store: &Store, term: &Term) -> Store {
    match &term.fence {
        Some(fence) => store.fenced(fence.clone()),
        None => store.clone(),
    }
}
