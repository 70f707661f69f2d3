//! Wires the parts into a running orchestrator and takes it down gracefully.
//!
//! [`Orchestrator::start`] connects and migrates the store, starts the
//! sentinel, the controller and the HTTP server, and returns once the
//! listener is bound. [`Orchestrator::stop`] stops accepting requests, lets
//! requests and reconciles in flight finish, and leaves agents running for the
//! next start to adopt.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiLimits, AppState};
use crate::config::Config;
use crate::controller::{Controller, ControllerSettings};
use crate::runtime::Runtime;
use crate::sentinel;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("a server task ended unexpectedly")]
    TaskFailed(#[from] tokio::task::JoinError),
}

/// A running orchestrator: API, controller and sentinel.
pub struct Orchestrator {
    address: SocketAddr,
    store: Store,
    shutdown: CancellationToken,
    http: JoinHandle<Result<(), ServerError>>,
    controller: JoinHandle<()>,
}

impl Orchestrator {
    /// Starts everything; returns once the API accepts connections.
    pub async fn start(
        config: &Config,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Orchestrator, ServerError> {
        let store = Store::connect(&config.database.url).await?;
        store.migrate().await?;
        let address = format!("{}:{}", config.orchestrator.host, config.orchestrator.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| ServerError::Bind {
                address: address.clone(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { address, source })?;

        let shutdown = CancellationToken::new();
        let load = sentinel::spawn(config.sentinel.clone(), shutdown.child_token());
        let callback_base = format!("http://host.docker.internal:{}", address.port());
        let settings = ControllerSettings::from_config(config, callback_base);
        let controller = Controller::new(store.clone(), runtime, settings, load.clone());
        let controller = tokio::spawn(controller.run(shutdown.child_token()));

        let state = AppState {
            store: store.clone(),
            load,
            shutdown: shutdown.child_token(),
        };
        let limits = ApiLimits {
            max_request_bytes: config.orchestrator.max_request_bytes,
        };
        let app = api::router(state, limits);
        let stop_accepting = shutdown.child_token();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop_accepting.cancelled_owned())
                .await
                .map_err(ServerError::Serve)
        });
        tracing::info!(%address, database = store.backend_name(), "Icarus is listening");
        Ok(Orchestrator {
            address,
            store,
            shutdown,
            http,
            controller,
        })
    }

    /// Where the API listens (useful when the configured port was 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Resolves when the HTTP server stops on its own, which means it failed.
    pub async fn wait_for_failure(&mut self) -> Result<(), ServerError> {
        (&mut self.http).await?
    }

    /// Graceful shutdown: stop accepting, finish in-flight work, close the database.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        let served = self.http.await;
        self.controller.await?;
        self.store.close().await;
        tracing::info!("Icarus stopped");
        served?
    }

    /// Stops every task at once without finishing anything: what a crash
    /// leaves behind, for tests of recovery.
    pub fn abort(self) {
        self.http.abort();
        self.controller.abort();
        self.shutdown.cancel();
    }
}
