//! Prometheus metrics: one registry, built once at start.
//!
//! [`Metrics::new`] registers every family; each part of the orchestrator is
//! handed the part it records into (the controller [`ControllerMetrics`] and
//! [`QueueMetrics`], the callback route [`CallbackMetrics`], the notifier
//! [`NotificationMetrics`], the store [`DatabaseMetrics`], the usage sampler
//! [`UsageMetrics`]), all cheap clones
//! of the same families, as kube-rs's controller-rs carries its metrics in its
//! context. The API's `/metrics` route encodes the whole registry.
//!
//! Labels are few and fixed: a phase, a role, the typed reason's string, an
//! outcome named here. Never an error's text, an id or a URL, so a series
//! count is bounded by the code, not by what happens.
//!
//! Two values are read when scraped rather than kept in step: jobs by phase
//! (counted in the store, so they are right after a restart, on every
//! replica, and whoever changed the job) and leadership (from the campaign's
//! own state). The caller sets them ([`Metrics::set_jobs_by_phase`],
//! [`Metrics::set_leading`]) just before [`Metrics::encode`]. What
//! `process_*` reports is read from `/proc` at each scrape ([`process`]).

mod callbacks;
mod controller;
mod database;
mod notifications;
mod process;
mod usage;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use callbacks::{CallbackMetrics, CallbackOutcome, ReportKind};
pub use controller::{ControllerMetrics, QueueMetrics, ReconcileOutcome};
pub use database::DatabaseMetrics;
pub use notifications::{NotificationMetrics, NotificationOutcome, NotificationTarget};
pub use usage::{UsageMetrics, UsageOutcome};

use crate::job::Phase;

/// The media type of the Prometheus text format (0.0.4), what a scrape
/// gets unless it asks for OpenMetrics.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The media type of the OpenMetrics text format (1.0.0).
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which text format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what `curl` and older scrapers read.
    Prometheus,
    /// OpenMetrics 1.0, which Prometheus asks for first in its `Accept`.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else the Prometheus format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_TEXT,
            Format::OpenMetrics => OPENMETRICS_TEXT,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The registry and every family in it.
pub struct Metrics {
    registry: Registry,
    pub controller: ControllerMetrics,
    pub queue: QueueMetrics,
    pub callbacks: CallbackMetrics,
    pub notifications: NotificationMetrics,
    pub database: DatabaseMetrics,
    pub usage: UsageMetrics,
    /// Times freed memory was handed back after streams left ([`crate::memory`]).
    pub memory_returns: Counter,
    jobs: Family<PhaseLabels, Gauge>,
    leader: Gauge,
    queue_held: Gauge,
    draining: Gauge,
    workspace_bytes: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family, registered once: `icarus_*` and `process_*`.
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("icarus");
        registry.register(
            "build",
            "The running version of Icarus (always 1)",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let jobs = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs by phase, counted in the store when scraped (the same on every replica)",
            jobs.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads (reconciles and notifies), else 0",
            leader.clone(),
        );
        let queue_held = Gauge::default();
        registry.register(
            "queue_held",
            "1 while an admin holds the queue (nothing new is admitted), else 0; read from the store when scraped",
            queue_held.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 while this replica is drained (it admits nothing new), else 0; read from the store when scraped",
            draining.clone(),
        );
        let workspace_bytes = Gauge::default();
        registry.register(
            "workspace_bytes",
            "Disk used by the jobs' workspaces on this host, in bytes, as last measured by retention",
            workspace_bytes.clone(),
        );
        let memory_returns = Counter::default();
        registry.register(
            "memory_returns",
            "Times the allocator's free memory was handed back to the system after a crowd of stream subscribers left",
            memory_returns.clone(),
        );
        Metrics {
            controller: ControllerMetrics::register(registry),
            queue: QueueMetrics::register(registry),
            callbacks: CallbackMetrics::register(registry),
            notifications: NotificationMetrics::register(registry),
            database: DatabaseMetrics::register(registry),
            usage: UsageMetrics::register(registry),
            memory_returns,
            jobs,
            leader,
            queue_held,
            draining,
            workspace_bytes,
            registry: root,
        }
    }

    /// The number of jobs in each phase (phases not listed have none);
    /// `None`: they could not be counted, and the series are left out
    /// rather than shown stale.
    pub fn set_jobs_by_phase(&self, counts: Option<&[(Phase, i64)]>) {
        let Some(counts) = counts else {
            self.jobs.clear();
            return;
        };
        for phase in Phase::ALL {
            let count = counts
                .iter()
                .filter(|(counted, _)| *counted == phase)
                .map(|(_, count)| count)
                .sum();
            self.jobs
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(count);
        }
    }

    /// Whether this replica leads now.
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Whether the queue is held and whether this replica is drained
    /// (`None`: unknown, the store did not answer; the last value stays).
    pub fn set_queue(&self, held: Option<bool>, draining: Option<bool>) {
        if let Some(held) = held {
            self.queue_held.set(i64::from(held));
        }
        if let Some(draining) = draining {
            self.draining.set(i64::from(draining));
        }
    }

    /// The disk the workspaces use, as last measured.
    pub fn set_workspace_bytes(&self, bytes: u64) {
        self.workspace_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The whole registry in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug
        // in a collector, and a partial answer is still worth serving.
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        };
        if encoded.is_err() {
            tracing::error!("the metrics could not all be encoded");
        }
        text
    }
}

#[cfg(test)]
mod tests;
