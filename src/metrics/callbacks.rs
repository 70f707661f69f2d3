//! What the agents' callback route records: each report by what it carried
//! and how it was answered.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What a report carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// Progress alone (`current_tool`, `cpu_usage`, `ram_usage_mb`).
    Progress,
    /// `{"status": "completed"}` without an audit report.
    Completed,
    /// `{"status": "error"}`.
    Error,
    /// The checker's audit report.
    Audit,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Progress => "progress",
            ReportKind::Completed => "completed",
            ReportKind::Error => "error",
            ReportKind::Audit => "audit",
        }
    }
}

/// How a report was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// 200: stored.
    Accepted,
    /// 401: no token, or not this agent's.
    Unauthorized,
    /// 409: no agent of the job runs, or it already reported.
    Conflict,
    /// 429: over the agent's progress-report rate.
    RateLimited,
    /// 422: malformed or over a size limit.
    Invalid,
    /// 404: no such job.
    NotFound,
    /// 503: the database could not take it.
    Unavailable,
    /// Anything else (a server fault).
    Failed,
}

impl CallbackOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackOutcome::Accepted => "accepted",
            CallbackOutcome::Unauthorized => "unauthorized",
            CallbackOutcome::Conflict => "conflict",
            CallbackOutcome::RateLimited => "rate_limited",
            CallbackOutcome::Invalid => "invalid",
            CallbackOutcome::NotFound => "not_found",
            CallbackOutcome::Unavailable => "unavailable",
            CallbackOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone)]
pub struct CallbackMetrics {
    reports: Family<ReportLabels, Counter>,
}

impl CallbackMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let reports = Family::default();
        registry.register(
            "callback_reports",
            "Agents' reports by what they carried and how they were answered",
            Family::clone(&reports),
        );
        CallbackMetrics { reports }
    }

    pub fn report(&self, kind: ReportKind, outcome: CallbackOutcome) {
        self.reports
            .get_or_create(&ReportLabels {
                kind: kind.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }
}
