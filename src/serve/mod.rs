//! The composition roots: what `icarus serve` builds, in each mode.
//!
//! [`local`] and [`kubernetes`] each choose the adapters for their mode and
//! hand them over as one [`Parts`]; [`Orchestrator::start`] wires the rest
//! the same way for both (store, sentinel, controller, notifier, HTTP),
//! supervises every task it starts ([`supervisor`]), and returns once the
//! listener is bound. [`Orchestrator::stop`] stops accepting requests, lets
//! requests and reconciles in flight finish, and leaves agents running for
//! the next start to adopt.

mod egress;
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
use crate::api::{
    self, AllowedHosts, ApiLimits, AppState, Authenticator, MetricsState, SpawnPolicy,
};
use crate::config::Config;
use crate::controller::{Controller, ControllerSettings};
use crate::credentials::{AgentKeys, CredentialsError};
use crate::drain::Drain;
use crate::job::admission::LoadLevel;
use crate::leadership::sql::StoreLease;
use crate::leadership::{self, Election, Leadership, Lease, LeaseTiming};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::pending::PendingJobs;
use crate::ports::upstream::Upstream;
use crate::runtime::Runtime;
use crate::sentinel;
use crate::source::SourceControl;
use crate::store::{SoleUse, Store, StoreError};
use crate::usage::UsageSampler;

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
        "the allowed images and roots of the configuration make a pattern too large to compile"
    )]
    Policy(#[from] regex::Error),
    #[error(transparent)]
    Egress(#[from] icarus_core::egress::RuleError),
    #[error("the controller stopped unexpectedly; exiting so a fresh start can begin again")]
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
    let reuse_port = config.orchestrator.reuse_port;
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
    let listener = match http::bind(SocketAddr::new(gateway, api.port()), reuse_port) {
        Ok(listener) => listener,
        Err(error) => {
            if reuse_port {
                tracing::warn!(%gateway, port = api.port(), %error, "the agents' port cannot be shared; agents of this replica call another port, which dies with it");
            }
            http::bind(SocketAddr::new(gateway, 0), false).map_err(|source| ServerError::Bind {
                address: gateway.to_string(),
                source,
            })?
        }
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

/// The listener of `metrics.listen`, if one is configured. Never shared
/// with `SO_REUSEPORT`: each replica is scraped on its own.
async fn metrics_listener(config: &Config) -> Result<Option<TcpListener>, ServerError> {
    let address = &config.metrics.listen;
    if address.is_empty() {
        return Ok(None);
    }
    let listener = http::bind_named(address, false)
        .await
        .map_err(|source| ServerError::Bind {
            address: address.clone(),
            source,
        })?;
    if let Ok(bound) = listener.local_addr() {
        tracing::info!(address = %bound, "metrics served at /metrics without authentication");
    }
    Ok(Some(listener))
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
    /// How this replica comes to lead, and so reconcile and notify. The
    /// API serves either way.
    pub election: Election,
    /// Loops that run beside the controller while this replica leads
    /// (Kubernetes mode: the IcarusJob sync).
    pub leader_loops: Vec<LeaderLoop>,
}

impl Parts {
    /// Local mode's parts: `runtime`, git on this host, no upstream; on
    /// PostgreSQL a campaign for the lease in the database (replicas), on
    /// SQLite the only process.
    pub fn local(config: &Config, runtime: Arc<dyn Runtime>) -> Parts {
        Parts {
            runtime,
            source: local::source_control(config),
            upstream: None,
            election: local::election(config),
            leader_loops: Vec::new(),
        }
    }
}

/// How replicas hold the lease that says which one reconciles.
pub fn lease_timing(config: &Config) -> LeaseTiming {
    let o = &config.orchestrator;
    LeaseTiming {
        duration: std::time::Duration::from_secs(o.lease_duration_seconds),
        renew_every: std::time::Duration::from_secs(o.lease_renew_seconds),
    }
}

/// What the leader loops are run with.
struct Leading {
    /// `None`: this replica leads from start to shutdown.
    leadership: Option<Leadership>,
    /// The lease campaigned for, to release at a graceful stop.
    lease: Option<Arc<dyn Lease>>,
    /// A SQLite file this process alone serves, for as long as it runs.
    _sole_use: Option<SoleUse>,
}

impl Leading {
    /// Releases the lease if this replica holds it, once the leader loops
    /// have stopped: a standby takes over at once instead of waiting for it
    /// to expire.
    async fn release(&self) {
        let (Some(lease), Some(leadership)) = (&self.lease, &self.leadership) else {
            return;
        };
        let Some(term) = leadership.current() else {
            return;
        };
        match lease.release(&term).await {
            Ok(()) => tracing::info!(term = term.version, "lease released"),
            Err(error) => {
                tracing::warn!(error = %crate::errors::error_chain(&error), "the lease could not be released; a standby takes over when it expires")
            }
        }
    }
}

/// Starts `election`'s campaign under `tasks`, if it has one; a sole
/// replica claims its SQLite file instead.
fn elect(
    election: Election,
    store: &Store,
    tasks: &mut Supervisor,
    shutdown: CancellationToken,
) -> Result<Leading, ServerError> {
    let (lease, timing) = match election {
        Election::Sole => {
            return Ok(Leading {
                leadership: None,
                lease: None,
                _sole_use: store.claim_sole_use()?,
            });
        }
        Election::Given(leadership) => {
            return Ok(Leading {
                leadership: Some(leadership),
                lease: None,
                _sole_use: None,
            });
        }
        Election::StoreLease(timing) => {
            let holder = leadership::holder_identity();
            tracing::info!(%holder, "campaigning for the lease in the database");
            let lease: Arc<dyn Lease> =
                Arc::new(StoreLease::new(store.clone(), holder, timing.duration));
            (lease, timing)
        }
        Election::Campaign(lease, timing) => (lease, timing),
    };
    let (leadership, campaign) = leadership::campaign(lease.clone(), timing, shutdown);
    tasks.spawn("lease campaign", campaign);
    Ok(Leading {
        leadership: Some(leadership),
        lease: Some(lease),
        _sole_use: None,
    })
}

/// The controller as a leader loop: a fresh one, on the term's store, in
/// each term.
fn controller_loop(
    runtime: Arc<dyn Runtime>,
    source: Arc<dyn SourceControl>,
    settings: ControllerSettings,
    pending: Arc<PendingJobs>,
    load: watch::Receiver<LoadLevel>,
    metrics: Arc<Metrics>,
) -> LeaderLoop {
    LeaderLoop {
        name: "controller",
        run: Box::new(move |store, stop| {
            let controller = Controller::new(
                store,
                runtime.clone(),
                source.clone(),
                settings.clone(),
                pending.clone(),
                load.clone(),
                &metrics,
            );
            Box::pin(controller.run(stop))
        }),
    }
}

fn notifier_loop(notifier: Notifier) -> LeaderLoop {
    LeaderLoop {
        name: "notifier",
        run: Box::new(move |store, stop| Box::pin(notifier.run(store, stop))),
    }
}

fn retention_loop(retention: crate::retention::Retention) -> LeaderLoop {
    LeaderLoop {
        name: "retention",
        run: Box::new(move |store, stop| Box::pin(retention.clone().run(store, stop))),
    }
}

fn usage_loop(sampler: UsageSampler) -> LeaderLoop {
    LeaderLoop {
        name: "usage sampler",
        run: Box::new(move |store, stop| Box::pin(sampler.clone().run(store, stop))),
    }
}

/// A running orchestrator: API, controller, notifier and sentinel.
pub struct Orchestrator {
    address: SocketAddr,
    metrics_address: Option<SocketAddr>,
    store: Store,
    shutdown: CancellationToken,
    tasks: Supervisor,
    leading: Leading,
}

impl Orchestrator {
    /// Starts everything from a mode's `parts`; returns once the API
    /// accepts connections.
    pub async fn start(config: &Config, parts: Parts) -> Result<Orchestrator, ServerError> {
        let Parts {
            runtime,
            source,
            upstream,
            election,
            leader_loops,
        } = parts;
        let metrics = Arc::new(Metrics::new());
        let store = Store::connect(&config.database.url)
            .await?
            .with_metrics(metrics.database.clone());
        store.migrate().await?;
        // This replica's drain, read before any controller can admit.
        let drain = Arc::new(Drain::new(config.replica_name()?));
        if let Some(kept) = drain.load(&store).await? {
            tracing::warn!(replica = %kept.replica, drained_by = %kept.drained_by, since = %kept.drained_at, "this replica is drained: it admits no new job until POST /queue/resume");
        }
        let mut tasks = Supervisor::new();
        let shutdown = CancellationToken::new();
        let leading = elect(election, &store, &mut tasks, shutdown.child_token())?;
        let address = format!("{}:{}", config.orchestrator.host, config.orchestrator.port);
        let listener = http::bind_named(&address, config.orchestrator.reuse_port)
            .await
            .map_err(|source| ServerError::Bind {
                address: address.clone(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { address, source })?;

        warn_about_missing_images(config, runtime.as_ref()).await;
        let load = sentinel::spawn(config.sentinel.clone(), shutdown.child_token());
        let (callback_base, agent_listener) =
            callback_endpoint(config, address, runtime.as_ref()).await?;
        let agent_keys = AgentKeys::load_or_create(&config.callback_key_file())?;
        let proxy_parts = egress::ProxyParts {
            config,
            runtime: runtime.as_ref(),
            store: &store,
            keys: &agent_keys,
            callback_base: &callback_base,
        };
        let egress_proxy =
            egress::start_proxy(proxy_parts, &mut tasks, shutdown.child_token()).await?;
        let mut settings = ControllerSettings::from_config(
            config,
            callback_base.clone(),
            agent_keys.clone(),
            drain.clone(),
        );
        settings.egress_proxy = egress_proxy;
        let (pending, follow_pending) = PendingJobs::start(
            &store,
            config.queue.ageing(),
            config.orchestrator.max_concurrent_jobs as usize,
            shutdown.child_token(),
        )
        .await?;
        tasks.spawn("queue in memory", follow_pending);
        if let Some(relay) = store.relay_changes(shutdown.child_token()) {
            tasks.spawn("relay of other replicas' changes", relay);
        }
        let sampler = UsageSampler::new(
            runtime.clone(),
            config.agents.usage_interval_seconds,
            metrics.usage.clone(),
        );
        let retention = crate::retention::Retention::new(
            config.retention.clone(),
            runtime.clone(),
            metrics.clone(),
        );
        let mut loops = vec![controller_loop(
            runtime,
            source,
            settings,
            pending.clone(),
            load.clone(),
            metrics.clone(),
        )];
        let notifier = Notifier::from_config(&config.notifications, metrics.notifications.clone());
        loops.extend(notifier.map(notifier_loop));
        loops.extend(sampler.map(usage_loop));
        loops.push(retention_loop(retention));
        loops.extend(leader_loops);
        for leader_loop in loops {
            tasks.spawn(
                leader_loop.name,
                supervisor::while_leading(
                    leading.leadership.clone(),
                    store.clone(),
                    shutdown.child_token(),
                    leader_loop,
                ),
            );
        }

        let auth = Authenticator::new(
            config.auth.enabled,
            &config.api_tokens()?,
            config.auth.spawns_per_minute,
        );
        let state = AppState {
            auth: Arc::new(auth),
            policy: Arc::new(SpawnPolicy::from_config(config)?),
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
            stream_buffer: config.agents.logs.subscriber_buffer,
            upstream,
            metrics,
            leadership: leading.leadership.clone(),
            rendered: Arc::default(),
            queue: config.queue.clone(),
            max_active_jobs: config.orchestrator.max_concurrent_jobs as usize,
            drain: drain.clone(),
            pending,
        };
        tasks.spawn(
            "memory return",
            crate::memory::return_after_streams_leave(
                state.streams.clone(),
                state.metrics.memory_returns.clone(),
                shutdown.child_token(),
            ),
        );
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
        let metrics_listener = metrics_listener(config).await?;
        let metrics_address = metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        if let Some(listener) = metrics_listener {
            tasks.watch_result(
                "metrics server",
                serve(
                    listener,
                    api::metrics_router(MetricsState::from(&state)),
                    connection_limits(config),
                    shutdown.child_token(),
                ),
            );
        }
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
        tracing::info!(%address, callbacks = %callback_base, database = store.backend_name(), replica = %drain.replica(), "Icarus is listening");
        Ok(Orchestrator {
            address,
            metrics_address,
            store,
            shutdown,
            tasks,
            leading,
        })
    }

    /// Where the API listens (useful when the configured port was 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `metrics.listen` serves `/metrics`, if it is set.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Returns when a task ends on its own: the HTTP server failed, a loop
    /// stopped. Either way this process should go, and a fresh start takes
    /// over.
    pub async fn wait_for_failure(&mut self) -> Result<(), ServerError> {
        self.tasks.first_end().await
    }

    /// Whether this replica leads now (always, without an election).
    pub fn leads(&self) -> bool {
        self.leading
            .leadership
            .as_ref()
            .is_none_or(|leadership| leadership.current().is_some())
    }

    /// Graceful shutdown: stop accepting, finish in-flight work, hand the
    /// lease over, close the database.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        let ended = self.tasks.join_all().await;
        self.leading.release().await;
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
