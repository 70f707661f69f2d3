//! The composition roots: what `icarus serve` builds, in each mode.
//!
//! [`local`] and [`kubernetes`] each choose the adapters for their mode and
//! hand them over as one [`Parts`]; [`Orchestrator::start`] wires the rest
//! the same way for both (store, sentinel, controller, notifier, HTTP),
//! supervises every task it starts ([`supervisor`]), and returns once the
//! listener is bound. [`Orchestrator::stop`] stops accepting requests, lets
//! requests and reconciles in flight finish, and leaves agents running for
//! the next start to adopt.

mod http;
pub mod kubernetes;
pub mod local;
mod supervisor;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::report_limit::ReportLimiter;
use crate::api::stream_limit::StreamLimiter;
use crate::api::{self, AllowedHosts, ApiLimits, AppState, Authenticator, SpawnPolicy};
use crate::config::Config;
use crate::controller::{Controller, ControllerSettings};
use crate::credentials::{AgentKeys, CredentialsError};
use crate::notify;
use crate::ports::upstream::Upstream;
use crate::runtime::Runtime;
use crate::sentinel;
use crate::source::SourceControl;
use crate::store::{Store, StoreError};

pub use supervisor::LeaderLoop;
use supervisor::Supervisor;

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
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "the controller stopped (leadership lost); exiting so a fresh start can campaign again"
    )]
    ControllerEnded,
    #[error("the {0} stopped unexpectedly; exiting so a fresh start can begin again")]
    TaskEnded(&'static str),
}

/// Serves `app` on `listener` until `stop` is cancelled, then finishes requests in flight.
fn serve(
    listener: TcpListener,
    app: Router,
    limits: http::ConnectionLimits,
    stop: CancellationToken,
) -> JoinHandle<Result<(), ServerError>> {
    tokio::spawn(async move {
        http::serve(listener, app, limits, stop)
            .await
            .map_err(ServerError::Serve)
    })
}

fn connection_limits(config: &Config) -> http::ConnectionLimits {
    http::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_secs(
            config.orchestrator.header_read_timeout_seconds.max(1),
        ),
        max_connections: config.orchestrator.max_connections.max(1),
    }
}

/// The default agent images are built locally (no registry is assumed), so
/// say so at start rather than at the first job's failure.
async fn warn_about_missing_images(config: &Config, runtime: &dyn Runtime) {
    let images = [
        config.agents.builder.image_name.clone(),
        config.agents.checker.image_name.clone(),
    ];
    for image in runtime.missing_images(&images).await {
        tracing::warn!(
            %image,
            "agent image not found; jobs will fail until it exists (the reference agents: scripts/build-images)"
        );
    }
}

/// Where agents send callbacks, and the extra listener that receives them.
///
/// In order: `agents.callback_base_url` if set; the API itself if it listens
/// on every interface; else a callback-only listener on the container
/// network's gateway (same port when free), reached as `host.docker.internal`;
/// else (no container network) the API's own address.
async fn callback_endpoint(
    config: &Config,
    api: SocketAddr,
    runtime: &dyn Runtime,
) -> Result<(String, Option<TcpListener>), ServerError> {
    let configured = config.agents.callback_base_url.trim_end_matches('/');
    if !configured.is_empty() {
        return Ok((configured.to_owned(), None));
    }
    if api.ip().is_unspecified() {
        return Ok((format!("http://host.docker.internal:{}", api.port()), None));
    }
    let gateway = match runtime.agent_gateway().await {
        Ok(gateway) => gateway,
        Err(error) => {
            tracing::warn!(error = %crate::errors::error_chain(&error), "cannot find the agents' network gateway; agents call the API address");
            None
        }
    };
    let Some(gateway) = gateway else {
        return Ok((format!("http://{api}"), None));
    };
    let listener = match TcpListener::bind((gateway, api.port())).await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind((gateway, 0))
            .await
            .map_err(|source| ServerError::Bind {
                address: gateway.to_string(),
                source,
            })?,
    };
    let port = listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            address: gateway.to_string(),
            source,
        })?
        .port();
    Ok((
        format!("http://host.docker.internal:{port}"),
        Some(listener),
    ))
}

/// What a mode plugs into the orchestrator: the one parameters struct both
/// composition roots build.
pub struct Parts {
    /// Where agents run.
    pub runtime: Arc<dyn Runtime>,
    /// Checkout, snapshot and publish.
    pub source: Arc<dyn SourceControl>,
    /// Where the API writes a job's desired state first; `None`: the store
    /// is the only record (local mode).
    pub upstream: Option<Arc<dyn Upstream>>,
    /// Whether this replica may reconcile and notify; `None`: it always may
    /// (one replica). The API serves either way.
    pub leadership: Option<watch::Receiver<bool>>,
    /// Loops that run beside the controller once this replica leads
    /// (Kubernetes mode: the IcarusJob sync).
    pub leader_loops: Vec<LeaderLoop>,
}

impl Parts {
    /// Local mode's parts: `runtime`, git on this host, no upstream, one replica.
    pub fn local(config: &Config, runtime: Arc<dyn Runtime>) -> Parts {
        Parts {
            runtime,
            source: local::source_control(config),
            upstream: None,
            leadership: None,
            leader_loops: Vec::new(),
        }
    }
}

/// A running orchestrator: API, controller, notifier and sentinel.
pub struct Orchestrator {
    address: SocketAddr,
    store: Store,
    shutdown: CancellationToken,
    tasks: Supervisor,
}

impl Orchestrator {
    /// Starts everything from a mode's `parts`; returns once the API
    /// accepts connections.
    pub async fn start(config: &Config, parts: Parts) -> Result<Orchestrator, ServerError> {
        let Parts {
            runtime,
            source,
            upstream,
            leadership,
            leader_loops,
        } = parts;
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

        warn_about_missing_images(config, runtime.as_ref()).await;
        let shutdown = CancellationToken::new();
        let load = sentinel::spawn(config.sentinel.clone(), shutdown.child_token());
        let (callback_base, agent_listener) =
            callback_endpoint(config, address, runtime.as_ref()).await?;
        let agent_keys = AgentKeys::load_or_create(&config.callback_key_file())?;
        let settings =
            ControllerSettings::from_config(config, callback_base.clone(), agent_keys.clone());
        let mut tasks = Supervisor::new();
        let controller = Controller::new(store.clone(), runtime, source, settings, load.clone());
        tasks.spawn(
            "controller",
            controller.run(shutdown.child_token(), leadership.clone()),
        );
        for notifier in notify::spawn(
            &store,
            &config.notifications,
            leadership.clone(),
            shutdown.child_token(),
        ) {
            tasks.watch("notifier", notifier);
        }
        for leader_loop in leader_loops {
            let run = (leader_loop.run)(store.clone(), shutdown.child_token());
            tasks.spawn(
                leader_loop.name,
                supervisor::when_leading(leadership.clone(), shutdown.child_token(), run),
            );
        }

        let auth = Authenticator::new(
            config.auth.enabled,
            &config.api_tokens()?,
            config.auth.spawns_per_minute,
        );
        let state = AppState {
            auth: Arc::new(auth),
            policy: Arc::new(SpawnPolicy::from_config(config)),
            store: store.clone(),
            load,
            shutdown: shutdown.child_token(),
            agent_keys: Arc::new(agent_keys),
            progress_reports: Arc::new(ReportLimiter::new(
                NonZeroU32::new(config.agents.progress_reports_per_second)
                    .unwrap_or(NonZeroU32::MIN),
            )),
            streams: Arc::new(StreamLimiter::new(
                config.orchestrator.max_streams,
                config.orchestrator.max_streams_per_caller,
            )),
            upstream,
        };
        let limits = ApiLimits {
            max_request_bytes: config.orchestrator.max_request_bytes,
            cors_allowed_origins: config.orchestrator.cors_allowed_origins.clone(),
            allowed_hosts: AllowedHosts::from_config(config),
        };
        tasks.watch_result(
            "HTTP server",
            serve(
                listener,
                api::router(state.clone(), limits.clone()),
                connection_limits(config),
                shutdown.child_token(),
            ),
        );
        if let Some(agent_listener) = agent_listener {
            tasks.watch_result(
                "agents' callback server",
                serve(
                    agent_listener,
                    api::agent_router(state, limits),
                    connection_limits(config),
                    shutdown.child_token(),
                ),
            );
        }
        tracing::info!(%address, callbacks = %callback_base, database = store.backend_name(), "Icarus is listening");
        Ok(Orchestrator {
            address,
            store,
            shutdown,
            tasks,
        })
    }

    /// Where the API listens (useful when the configured port was 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Returns when a task ends on its own: the HTTP server failed, the
    /// controller lost its leadership, a loop stopped. Either way this
    /// process should go, and a fresh start takes over.
    pub async fn wait_for_failure(&mut self) -> Result<(), ServerError> {
        self.tasks.first_end().await
    }

    /// Graceful shutdown: stop accepting, finish in-flight work, close the database.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        let ended = self.tasks.join_all().await;
        self.store.close().await;
        tracing::info!("Icarus stopped");
        ended
    }

    /// Stops every task at once without finishing anything: what a crash
    /// leaves behind, for tests of recovery.
    pub fn abort(self) {
        self.tasks.abort_all();
        self.shutdown.cancel();
    }
}
