//! The command line: `icarus serve`, `migrate`, `config`, `crd` and
//! `source-step`, the client commands ([`crate::client`]: `submit`, `list`,
//! `get`, `watch`, ...) and `completion`.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::serve::kubernetes::KubernetesMode;
use crate::source::{GitLayout, LocalGit, RemoteCredentials, SnapshotLimits};
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "icarus",
    version,
    about = "Orchestrator for autonomous coding jobs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and the controller (the embedded default config unless --config is given).
    Serve {
        /// A YAML file laid over the embedded default configuration.
        #[arg(long, short, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Serve without authentication on an address other machines can
        /// reach. Anyone who can connect can then approve anything.
        #[arg(long)]
        insecure: bool,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (default, file and environment merged) as YAML.
    Config {
        #[arg(long, short, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print the IcarusJob CustomResourceDefinition (what `crds/icarusjob.yaml` holds).
    Crd,
    /// Run one source step (checkout, snapshot, publish) on a job's
    /// workspace and repository and print its outcome as a JSON line: what
    /// Kubernetes mode's git Pods run. The step is read from
    /// `ICARUS_SOURCE_STEP`; a token for HTTPS remotes from `GITHUB_TOKEN`,
    /// sent only to the `--token-host`s.
    SourceStep {
        /// The directory holding the job's workspace (as `<root>/<job id>`).
        #[arg(long, value_name = "DIR")]
        workspace_root: PathBuf,
        /// The directory holding the job's repository (as `<root>/<job id>/git`).
        #[arg(long, value_name = "DIR")]
        repository_root: PathBuf,
        #[arg(long, value_name = "JOB_ID")]
        job: crate::job::JobId,
        /// A host (`host` or `host:port`) the token may be sent to, over HTTPS.
        #[arg(long = "token-host", value_name = "HOST")]
        token_hosts: Vec<String>,
        #[arg(long, value_name = "BYTES", default_value_t = SnapshotLimits::default().max_bytes)]
        snapshot_max_bytes: u64,
        #[arg(long, value_name = "COUNT", default_value_t = SnapshotLimits::default().max_files)]
        snapshot_max_files: u64,
        /// Also write the outcome here when it is small enough for a
        /// container's termination message (4 KiB): `/dev/termination-log`.
        #[arg(long, value_name = "PATH")]
        outcome_file: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(crate::client::ClientCommand),
    /// Print a shell completion script: `icarus completion bash > /etc/bash_completion.d/icarus`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, insecure } => {
            let config = Config::load(config.as_deref())?;
            let mode = crate::traces::mode_name(config.kubernetes.enabled);
            let traces = crate::logging::init_with_traces(&config.logging, &config.tracing, mode)?;
            refuse_open_exposure(&config, insecure)?;
            let served = serve(config).await;
            let interrupted = served.as_ref().is_err_and(|e| e.is::<Interrupted>());
            if let Some(traces) = traces.filter(|_| !interrupted) {
                traces.flush().await;
            }
            served
        }
        Command::Migrate { config } => {
            let config = Config::load(config.as_deref())?;
            crate::logging::init(&config.logging);
            let store = Store::connect(&config.database.url).await?;
            store.migrate().await?;
            store.close().await;
            tracing::info!(database = store.backend_name(), "migrations applied");
            Ok(())
        }
        Command::Config { config } => {
            let config = Config::load(config.as_deref())?;
            print!("{}", serde_yaml::to_string(&config)?);
            Ok(())
        }
        Command::Crd => {
            print!("{}", crate::cluster::crd::crd_yaml());
            Ok(())
        }
        Command::SourceStep {
            workspace_root,
            repository_root,
            job,
            token_hosts,
            snapshot_max_bytes,
            snapshot_max_files,
            outcome_file,
        } => {
            let token = std::env::var("GITHUB_TOKEN").ok();
            let git = LocalGit::new(
                GitLayout::new(workspace_root, repository_root),
                true,
                RemoteCredentials::new(token, token_hosts),
            )
            .with_limits(SnapshotLimits {
                max_bytes: snapshot_max_bytes,
                max_files: snapshot_max_files,
            });
            source_step(&git, job, outcome_file).await
        }
        Command::Client(command) => Ok(crate::client::run(command).await?),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "icarus", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Runs the step in `ICARUS_SOURCE_STEP` with local git; a failed step is an
/// outcome (printed, exit 0), only an unreadable request is an error.
async fn source_step(
    git: &LocalGit,
    job: crate::job::JobId,
    outcome_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use crate::source::step::{SOURCE_STEP_VARIABLE, SourceStep, perform};
    let request = std::env::var(SOURCE_STEP_VARIABLE)
        .map_err(|_| anyhow::anyhow!("{SOURCE_STEP_VARIABLE} is not set"))?;
    let step: SourceStep = serde_json::from_str(&request)
        .map_err(|error| anyhow::anyhow!("{SOURCE_STEP_VARIABLE} is not a source step: {error}"))?;
    let outcome = serde_json::to_string(&perform(git, job, &step).await)?;
    println!("{outcome}");
    if let Some(path) = outcome_file
        && outcome.len() <= TERMINATION_MESSAGE_BYTES
    {
        std::fs::write(&path, &outcome)?;
    }
    Ok(())
}

/// What the kubelet keeps of a container's termination message.
const TERMINATION_MESSAGE_BYTES: usize = 4096;

/// An API without authentication is for this machine only, unless the
/// operator says otherwise in so many words.
fn refuse_open_exposure(config: &Config, insecure: bool) -> anyhow::Result<()> {
    if config.auth.enabled || config.listens_on_loopback_only() {
        return Ok(());
    }
    if !insecure {
        anyhow::bail!(
            "refusing to serve without authentication on {}: set auth.enabled with tokens, \
             listen on 127.0.0.1, or pass --insecure",
            config.orchestrator.host
        );
    }
    tracing::warn!(
        host = %config.orchestrator.host,
        "serving WITHOUT authentication on a reachable address (--insecure): anyone can approve anything"
    );
    Ok(())
}

/// Serves until a signal (then stops gracefully) or a failure. The log
/// (and trace exporter) is installed already.
async fn serve(config: Config) -> anyhow::Result<()> {
    // Signals are watched from before the start: a SIGTERM as soon as the
    // API answers is a graceful stop, never the default action's kill.
    let (graceful, forced) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(watch_signals(graceful.clone(), forced.clone()));
    let start = async {
        if config.kubernetes.enabled {
            let (mode, runtime) = KubernetesMode::connect(&config).await?;
            Ok::<_, anyhow::Error>(mode.start(&config, runtime).await?)
        } else {
            crate::serve::local::start(&config).await
        }
    };
    let mut orchestrator = tokio::select! {
        started = start => started?,
        _ = graceful.cancelled() => {
            tracing::info!("a signal came while starting: not starting");
            return Ok(());
        }
    };
    tokio::select! {
        _ = graceful.cancelled() => {
            tracing::info!("shutting down: no new requests, finishing work in flight; agents keep running");
            tokio::select! {
                stopped = orchestrator.stop() => stopped?,
                _ = forced.cancelled() => {
                    tracing::warn!("second signal: exiting immediately");
                    return Err(Interrupted.into());
                }
            }
        }
        result = orchestrator.wait_for_failure() => result?,
    }
    Ok(())
}

/// A second signal cut the graceful shutdown short: `main` exits with 130,
/// as a shell does for an interrupted command.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a second signal")]
pub struct Interrupted;

/// Cancels `graceful` on the first Ctrl-C or SIGTERM, `forced` on the second.
async fn watch_signals(graceful: CancellationToken, forced: CancellationToken) {
    shutdown_signal().await;
    graceful.cancel();
    shutdown_signal().await;
    forced.cancel();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
