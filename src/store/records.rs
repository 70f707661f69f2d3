//! The history rows the store keeps beside jobs, as the rest of the crate sees them.

use chrono::{DateTime, Utc};

use crate::job::{Phase, Reason, Role};

/// Which jobs to list: newest first, at most `limit`, optionally of one
/// phase, one project, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobFilter {
    pub phase: Option<Phase>,
    pub project_id: Option<String>,
    pub limit: u32,
    /// Only the jobs listed after this one (keyset pagination).
    pub after: Option<crate::job::JobId>,
}

/// One telemetry row (the seed's `telemetry` table): a progress report
/// from an agent, or a sample Icarus measured itself.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySample {
    pub timestamp: DateTime<Utc>,
    pub cpu_usage: Option<f64>,
    pub ram_usage_mb: Option<f64>,
    pub current_tool: Option<String>,
    pub role: Role,
    pub attempt: u32,
    pub source: TelemetrySource,
}

/// Who a telemetry row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetrySource {
    /// The agent's own progress report (callback).
    Agent,
    /// Icarus's measurement through the runtime: `cpu_usage` is the percent
    /// of one CPU over the last sampling interval, `ram_usage_mb` the memory
    /// in use then.
    Icarus,
}

impl TelemetrySource {
    pub fn as_str(self) -> &'static str {
        match self {
            TelemetrySource::Agent => "agent",
            TelemetrySource::Icarus => "icarus",
        }
    }

    pub fn parse(text: &str) -> Option<TelemetrySource> {
        match text {
            "agent" => Some(TelemetrySource::Agent),
            "icarus" => Some(TelemetrySource::Icarus),
            _ => None,
        }
    }
}

/// What Icarus measured of one agent (job, role and attempt): the latest
/// reading and the peak memory over every reading, kept after it ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgentUsage {
    pub role: Role,
    pub attempt: u32,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub sampled_at: DateTime<Utc>,
}

/// The checker's audit report (the seed's `audit_logs` row).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub report: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub attempt: u32,
}

/// One phase transition, from the append-only `job_events` log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub from: Option<Phase>,
    pub to: Phase,
    pub reason: Reason,
    pub message: Option<String>,
    pub resource_version: i64,
    pub created_at: DateTime<Utc>,
}

/// How an agent said it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Completed,
    Error,
}

impl ReportOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportOutcome::Completed => "completed",
            ReportOutcome::Error => "error",
        }
    }
}

/// A completion or error report posted through the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    pub role: Role,
    pub attempt: u32,
    pub outcome: ReportOutcome,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An agent's output, saved when its workload was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLog {
    pub role: Role,
    pub attempt: u32,
    pub workload_id: String,
    pub log: String,
    pub created_at: DateTime<Utc>,
}

/// The builder's change as recorded for review when the builder succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRecord {
    /// The base it is against; none for a job without a source.
    pub base_commit: Option<String>,
    /// The snapshot it shows; none where workspaces cannot be read.
    pub snapshot: Option<String>,
    /// Unified diff text, possibly cut (then `truncated`).
    pub diff: String,
    pub truncated: bool,
    pub created_at: DateTime<Utc>,
}

/// What one agent did through the egress proxy with one destination, under
/// one verdict: the `egress_traffic` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressTraffic {
    pub role: Role,
    pub attempt: u32,
    /// The host as the agent named it; `*` for the destinations beyond the
    /// hundredth of its attempt.
    pub host: String,
    pub port: u16,
    pub verdict: EgressVerdict,
    /// The latest refusal's words.
    pub reason: Option<String>,
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Connections cut off at the agent's byte budget.
    pub cut_at_budget: u64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
}

/// What the egress proxy decided of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EgressVerdict {
    Allowed,
    /// Refused for what no person can lift: an IP literal, a private
    /// address, a spent budget.
    Refused,
    /// Refused because no rule lists it: a request an approver may grant.
    Unlisted,
}

impl EgressVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressVerdict::Allowed => "allowed",
            EgressVerdict::Refused => "refused",
            EgressVerdict::Unlisted => "unlisted",
        }
    }

    pub fn parse(text: &str) -> Option<EgressVerdict> {
        [
            EgressVerdict::Allowed,
            EgressVerdict::Refused,
            EgressVerdict::Unlisted,
        ]
        .into_iter()
        .find(|verdict| verdict.as_str() == text)
    }
}

/// A destination a person allowed agents of `role` beyond their configured
/// list: for one job's agents, or (`job` `None`) for every job's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressAllowance {
    pub job: Option<crate::job::JobId>,
    pub role: Role,
    /// An allow-list rule (`name`, `*.name`, optional `:port`).
    pub rule: String,
    pub allowed_by: String,
    pub allowed_at: DateTime<Utc>,
}
