//! Wires the parts into a running orchestrator and takes it down gracefully.
//!
//! [`Orchestrator::start`] connects and migrates the store, starts the
//! sentinel, the controller and the HTTP server, and returns once the
//! listener is bound. [`Orchestrator::stop`] stops accepting requests, lets
//! requests and reconciles in flight finish, and leaves agents running for the
//! next start to adopt.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::report_limit::ReportLimiter;
use crate::api::upstream::Upstream;
use crate::api::{self, AllowedHosts, ApiLimits, AppState, Authenticator, SpawnPolicy};
use crate::config::{Config, MountType};
use crate::controller::{Controller, ControllerSettings};
use crate::credentials::{AgentKeys, CredentialsError};
use crate::notify;
use crate::runtime::Runtime;
use crate::sentinel;
use crate::source::{GitLayout, LocalGit, RemoteCredentials, SnapshotLimits, SourceControl};
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
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "the controller stopped (leadership lost); exiting so a fresh start can campaign again"
    )]
    ControllerEnded,
}

/// Serves `app` on `listener` until `stop` is cancelled, then finishes requests in flight.
fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
) -> JoinHandle<Result<(), ServerError>> {
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(ServerError::Serve)
    })
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
            tracing::warn!(error = %error, "cannot find the agents' network gateway; agents call the API address");
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

/// What Kubernetes mode puts in place of local mode's parts.
pub struct InCluster {
    /// Whether this replica holds the controller's Lease.
    pub leadership: watch::Receiver<bool>,
    /// Where the API writes jobs first: their IcarusJobs.
    pub upstream: Arc<dyn Upstream>,
    /// Checkout, diff and publish, as Pods on the jobs' claims.
    pub source: Arc<dyn SourceControl>,
}

/// Git on this host, for workspaces that are host directories (`bind`).
fn local_source(config: &Config) -> Arc<dyn SourceControl> {
    let workspace = &config.workspace;
    let layout = GitLayout::new(workspace.base_path.clone(), workspace.repositories_path());
    let credentials = RemoteCredentials::new(config.publish.token(), config.publish.token_hosts());
    let limits = SnapshotLimits {
        max_bytes: workspace.snapshot_max_bytes,
        max_files: workspace.snapshot_max_files,
    };
    Arc::new(
        LocalGit::new(layout, workspace.mount_type == MountType::Bind, credentials)
            .with_limits(limits),
    )
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
        Self::start_gated(config, runtime, None).await
    }

    /// Like [`Orchestrator::start`], but the controller and the notifier
    /// work only while `leadership` says so; the API always serves.
    pub async fn start_gated(
        config: &Config,
        runtime: Arc<dyn Runtime>,
        leadership: Option<watch::Receiver<bool>>,
    ) -> Result<Orchestrator, ServerError> {
        Self::start_with(config, runtime, leadership, None, None).await
    }

    /// Kubernetes mode: gated on the Lease, the API writes jobs' desired
    /// state onto their resources before the store, and source control runs
    /// as Pods on the jobs' claims.
    pub async fn start_in_cluster(
        config: &Config,
        runtime: Arc<dyn Runtime>,
        cluster: InCluster,
    ) -> Result<Orchestrator, ServerError> {
        let InCluster {
            leadership,
            upstream,
            source,
        } = cluster;
        Self::start_with(
            config,
            runtime,
            Some(leadership),
            Some(upstream),
            Some(source),
        )
        .await
    }

    async fn start_with(
        config: &Config,
        runtime: Arc<dyn Runtime>,
        leadership: Option<watch::Receiver<bool>>,
        upstream: Option<Arc<dyn Upstream>>,
        source: Option<Arc<dyn SourceControl>>,
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

        warn_about_missing_images(config, runtime.as_ref()).await;
        let shutdown = CancellationToken::new();
        let load = sentinel::spawn(config.sentinel.clone(), shutdown.child_token());
        let (callback_base, agent_listener) =
            callback_endpoint(config, address, runtime.as_ref()).await?;
        let agent_keys = AgentKeys::load_or_create(&config.callback_key_file())?;
        let settings =
            ControllerSettings::from_config(config, callback_base.clone(), agent_keys.clone());
        let source = source.unwrap_or_else(|| local_source(config));
        let controller = Controller::new(store.clone(), runtime, source, settings, load.clone());
        let controller = tokio::spawn(controller.run(shutdown.child_token(), leadership.clone()));
        // Ends with the shutdown token; nothing to wait for.
        let _notifier = notify::spawn(
            &store,
            &config.notifications,
            leadership,
            shutdown.child_token(),
        );

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
            upstream,
        };
        let limits = ApiLimits {
            max_request_bytes: config.orchestrator.max_request_bytes,
            cors_allowed_origins: config.orchestrator.cors_allowed_origins.clone(),
            allowed_hosts: AllowedHosts::from_config(config),
        };
        let mut servers = vec![serve(
            listener,
            api::router(state.clone(), limits.clone()),
            shutdown.child_token(),
        )];
        if let Some(agent_listener) = agent_listener {
            servers.push(serve(
                agent_listener,
                api::agent_router(state, limits),
                shutdown.child_token(),
            ));
        }
        let http = tokio::spawn(async move {
            for result in futures::future::join_all(servers).await {
                result??;
            }
            Ok(())
        });
        tracing::info!(%address, callbacks = %callback_base, database = store.backend_name(), "Icarus is listening");
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
    /// Returns when the HTTP server fails, or the controller ends on its own
    /// (it lost its leadership): either way this process should go.
    pub async fn wait_for_failure(&mut self) -> Result<(), ServerError> {
        tokio::select! {
            served = &mut self.http => served?,
            _ = &mut self.controller => Err(ServerError::ControllerEnded),
        }
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
