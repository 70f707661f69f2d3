//! Why a job is where it is: the cause of its last transition, or of a
//! pending job's wait.
//!
//! A typed value, so the planner and the controller match on causes instead
//! of on text; written and read everywhere (the REST API, the database, the
//! IcarusJob's `.status.reason`, Events) as the same short CamelCase string
//! as always (`Admitted`, `BuilderFailed`, `CheckerTimedOut`...).

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use super::Role;

/// The machine-readable cause of a job's state.
///
/// Reasons about one agent carry its [`Role`]; their text is the role's
/// name followed by what happened (`BuilderVanished`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Just submitted.
    Created,
    /// Admission let the pending job start building.
    Admitted,
    /// Pending: the host is too loaded to start anything new.
    HostBusy,
    /// Pending: as many jobs as allowed are building or checking.
    ConcurrencyLimit,
    /// Pending: older pending jobs get the free slots first.
    QueuedBehindOlderJobs,
    /// Pending: jobs ahead in the queue include younger ones of a higher
    /// (effective) priority.
    QueuedBehindHigherPriority,
    /// Pending: an admin held the queue; nothing new is admitted.
    QueueHeld,
    /// Pending: the orchestrator is being drained; it admits nothing new.
    Draining,
    /// Someone asked for the job to stop.
    CancelRequested,
    /// The job's IcarusJob was deleted.
    ResourceDeleted,
    /// The workspace could not be made a checkout of the job's source.
    SourceCheckoutFailed,
    /// The runtime can never start this agent (its image is missing...).
    StartFailed(Role),
    /// The agent posted an error report.
    ReportedError(Role),
    /// The agent's workload disappeared after it had been seen.
    Vanished(Role),
    /// The agent's runtime stopped it (evicted, preempted, its node lost).
    Lost(Role),
    /// The infrastructure cut the agent's attempt short (it vanished, was
    /// lost, could not be started or reach the orchestrator): the next
    /// attempt runs it again.
    Retried(Role),
    /// The agent was killed for running out of memory.
    OomKilled(Role),
    /// The agent exited with a non-zero code.
    Failed(Role),
    /// The agent ran past its deadline.
    TimedOut(Role),
    /// The job ran past its deadline.
    JobTimedOut,
    /// The agent exited 0 (and, for the builder, its work was recorded).
    Succeeded(Role),
    /// The checker exited 0 without posting its audit report.
    CheckerReportMissing,
    /// The builder's work could not be recorded.
    SnapshotFailed,
    /// The decision names a snapshot other than the job's.
    SnapshotMismatch,
    /// Approved, but no snapshot was recorded to publish.
    SnapshotMissing,
    Approved,
    Rejected,
    /// Awaiting approval past `approval.timeout_seconds`: rejected or
    /// expired, as `approval.on_timeout` says.
    ApprovalTimedOut,
    /// Awaiting approval for `approval.reminder_fraction` of the timeout:
    /// the reminder was sent (an event of the phase to itself).
    ApprovalReminder,
    /// The approved snapshot was pushed.
    Published,
    /// Approved, with no source to publish to.
    Completed,
    /// The push failed: the one terminal state a retry leaves.
    PublishFailed,
    /// A failed publish was asked to try again.
    PublishRetried,
    /// A reason this version does not know (written by another version),
    /// kept verbatim so that reading a job never fails and writing it back
    /// changes nothing.
    Unrecognized(Unrecognized),
}

/// The text of a reason no variant is written as. Only parsing makes one,
/// so a known reason always compares equal to itself, however it was read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unrecognized(String);

impl Unrecognized {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The reasons that name no agent, for parsing.
const ABOUT_NO_AGENT: &[Reason] = &[
    Reason::Created,
    Reason::Admitted,
    Reason::HostBusy,
    Reason::ConcurrencyLimit,
    Reason::QueuedBehindOlderJobs,
    Reason::QueuedBehindHigherPriority,
    Reason::QueueHeld,
    Reason::Draining,
    Reason::CancelRequested,
    Reason::ResourceDeleted,
    Reason::SourceCheckoutFailed,
    Reason::JobTimedOut,
    Reason::CheckerReportMissing,
    Reason::SnapshotFailed,
    Reason::SnapshotMismatch,
    Reason::SnapshotMissing,
    Reason::Approved,
    Reason::Rejected,
    Reason::ApprovalTimedOut,
    Reason::ApprovalReminder,
    Reason::Published,
    Reason::Completed,
    Reason::PublishFailed,
    Reason::PublishRetried,
];

/// The reasons about one agent, for parsing.
const ABOUT_AN_AGENT: &[fn(Role) -> Reason] = &[
    Reason::StartFailed,
    Reason::ReportedError,
    Reason::Vanished,
    Reason::Lost,
    Reason::Retried,
    Reason::OomKilled,
    Reason::Failed,
    Reason::TimedOut,
    Reason::Succeeded,
];

/// How a reason is written.
enum Text<'a> {
    Fixed(&'a str),
    /// The agent's CamelCase name, then this.
    AboutAgent(Role, &'static str),
}

impl Reason {
    /// Every reason this version knows: all but [`Reason::Unrecognized`].
    pub fn known() -> impl Iterator<Item = Reason> {
        let about_agents = Role::ALL
            .into_iter()
            .flat_map(|role| ABOUT_AN_AGENT.iter().map(move |make| make(role)));
        ABOUT_NO_AGENT.iter().cloned().chain(about_agents)
    }

    fn text(&self) -> Text<'_> {
        use Reason::*;
        match self {
            StartFailed(role) => Text::AboutAgent(*role, "StartFailed"),
            ReportedError(role) => Text::AboutAgent(*role, "ReportedError"),
            Vanished(role) => Text::AboutAgent(*role, "Vanished"),
            Lost(role) => Text::AboutAgent(*role, "Lost"),
            Retried(role) => Text::AboutAgent(*role, "Retried"),
            OomKilled(role) => Text::AboutAgent(*role, "OOMKilled"),
            Failed(role) => Text::AboutAgent(*role, "Failed"),
            TimedOut(role) => Text::AboutAgent(*role, "TimedOut"),
            Succeeded(role) => Text::AboutAgent(*role, "Succeeded"),
            Unrecognized(text) => Text::Fixed(text.as_str()),
            Created => Text::Fixed("Created"),
            Admitted => Text::Fixed("Admitted"),
            HostBusy => Text::Fixed("HostBusy"),
            ConcurrencyLimit => Text::Fixed("ConcurrencyLimit"),
            QueuedBehindOlderJobs => Text::Fixed("QueuedBehindOlderJobs"),
            QueuedBehindHigherPriority => Text::Fixed("QueuedBehindHigherPriority"),
            QueueHeld => Text::Fixed("QueueHeld"),
            Draining => Text::Fixed("Draining"),
            CancelRequested => Text::Fixed("CancelRequested"),
            ResourceDeleted => Text::Fixed("ResourceDeleted"),
            SourceCheckoutFailed => Text::Fixed("SourceCheckoutFailed"),
            JobTimedOut => Text::Fixed("JobTimedOut"),
            CheckerReportMissing => Text::Fixed("CheckerReportMissing"),
            SnapshotFailed => Text::Fixed("SnapshotFailed"),
            SnapshotMismatch => Text::Fixed("SnapshotMismatch"),
            SnapshotMissing => Text::Fixed("SnapshotMissing"),
            Approved => Text::Fixed("Approved"),
            Rejected => Text::Fixed("Rejected"),
            ApprovalTimedOut => Text::Fixed("ApprovalTimedOut"),
            ApprovalReminder => Text::Fixed("ApprovalReminder"),
            Published => Text::Fixed("Published"),
            Completed => Text::Fixed("Completed"),
            PublishFailed => Text::Fixed("PublishFailed"),
            PublishRetried => Text::Fixed("PublishRetried"),
        }
    }

    /// Whether `text` is how this reason is written, without writing it.
    fn is_written_as(&self, text: &str) -> bool {
        match self.text() {
            Text::Fixed(fixed) => fixed == text,
            Text::AboutAgent(role, rest) => text.strip_prefix(agent_prefix(role)) == Some(rest),
        }
    }

    /// The known reason written as `text`, if there is one.
    fn parse_known(text: &str) -> Option<Reason> {
        Reason::known().find(|reason| reason.is_written_as(text))
    }
}

/// How an agent's name starts a reason about it (`Builder`, `Checker`).
fn agent_prefix(role: Role) -> &'static str {
    match role {
        Role::Builder => "Builder",
        Role::Checker => "Checker",
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Text::Fixed(text) => f.write_str(text),
            Text::AboutAgent(role, rest) => write!(f, "{}{rest}", agent_prefix(role)),
        }
    }
}

impl From<&str> for Reason {
    fn from(text: &str) -> Self {
        Reason::parse_known(text)
            .unwrap_or_else(|| Reason::Unrecognized(Unrecognized(text.to_owned())))
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Self {
        Reason::parse_known(&text).unwrap_or(Reason::Unrecognized(Unrecognized(text)))
    }
}

/// Never fails: a text no known reason is written as is [`Reason::Unrecognized`].
impl FromStr for Reason {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Reason::from(text))
    }
}

/// Written and read as its text, so stores, the API and the CRD keep the
/// strings they always had.
#[cfg(feature = "serde")]
impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(deserializer).map(Reason::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to compile when a variant is added, as a reminder to list it
    /// in `ABOUT_NO_AGENT` or `ABOUT_AN_AGENT` (or parsing would not know it).
    fn is_listed(reason: &Reason) -> bool {
        use Reason::*;
        match reason {
            Unrecognized(_) => false,
            StartFailed(_) | ReportedError(_) | Vanished(_) | Lost(_) | Retried(_)
            | OomKilled(_) | Failed(_) | TimedOut(_) | Succeeded(_) => {
                Reason::known().any(|known| &known == reason)
            }
            Created
            | Admitted
            | HostBusy
            | ConcurrencyLimit
            | QueuedBehindOlderJobs
            | QueuedBehindHigherPriority
            | QueueHeld
            | Draining
            | CancelRequested
            | ResourceDeleted
            | SourceCheckoutFailed
            | JobTimedOut
            | CheckerReportMissing
            | SnapshotFailed
            | SnapshotMismatch
            | SnapshotMissing
            | Approved
            | Rejected
            | ApprovalTimedOut
            | ApprovalReminder
            | Published
            | Completed
            | PublishFailed
            | PublishRetried => ABOUT_NO_AGENT.contains(reason),
        }
    }

    #[test]
    fn every_known_reason_round_trips_through_its_text() {
        for reason in Reason::known() {
            assert!(is_listed(&reason), "{reason:?}");
            let text = reason.to_string();
            assert_eq!(text.parse::<Reason>(), Ok(reason.clone()), "{text}");
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn every_reason_is_written_and_read_as_its_text() {
        let unknown = Reason::from("SomethingNewer");
        for reason in Reason::known().chain([unknown]) {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{reason}\""));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
        }
    }

    #[test]
    fn every_known_reason_has_its_own_text() {
        let mut texts: Vec<String> = Reason::known().map(|r| r.to_string()).collect();
        let count = texts.len();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), count);
    }

    #[test]
    fn reasons_read_as_they_always_were_written() {
        let cases = [
            ("Created", Reason::Created),
            ("Admitted", Reason::Admitted),
            ("HostBusy", Reason::HostBusy),
            ("ConcurrencyLimit", Reason::ConcurrencyLimit),
            ("QueuedBehindOlderJobs", Reason::QueuedBehindOlderJobs),
            (
                "QueuedBehindHigherPriority",
                Reason::QueuedBehindHigherPriority,
            ),
            ("QueueHeld", Reason::QueueHeld),
            ("Draining", Reason::Draining),
            ("CancelRequested", Reason::CancelRequested),
            ("ResourceDeleted", Reason::ResourceDeleted),
            ("SourceCheckoutFailed", Reason::SourceCheckoutFailed),
            ("BuilderStartFailed", Reason::StartFailed(Role::Builder)),
            ("CheckerStartFailed", Reason::StartFailed(Role::Checker)),
            ("BuilderReportedError", Reason::ReportedError(Role::Builder)),
            ("CheckerReportedError", Reason::ReportedError(Role::Checker)),
            ("BuilderVanished", Reason::Vanished(Role::Builder)),
            ("CheckerVanished", Reason::Vanished(Role::Checker)),
            ("BuilderLost", Reason::Lost(Role::Builder)),
            ("CheckerLost", Reason::Lost(Role::Checker)),
            ("BuilderRetried", Reason::Retried(Role::Builder)),
            ("CheckerRetried", Reason::Retried(Role::Checker)),
            ("BuilderOOMKilled", Reason::OomKilled(Role::Builder)),
            ("CheckerOOMKilled", Reason::OomKilled(Role::Checker)),
            ("BuilderFailed", Reason::Failed(Role::Builder)),
            ("CheckerFailed", Reason::Failed(Role::Checker)),
            ("BuilderTimedOut", Reason::TimedOut(Role::Builder)),
            ("CheckerTimedOut", Reason::TimedOut(Role::Checker)),
            ("JobTimedOut", Reason::JobTimedOut),
            ("BuilderSucceeded", Reason::Succeeded(Role::Builder)),
            ("CheckerSucceeded", Reason::Succeeded(Role::Checker)),
            ("CheckerReportMissing", Reason::CheckerReportMissing),
            ("SnapshotFailed", Reason::SnapshotFailed),
            ("SnapshotMismatch", Reason::SnapshotMismatch),
            ("SnapshotMissing", Reason::SnapshotMissing),
            ("Approved", Reason::Approved),
            ("Rejected", Reason::Rejected),
            ("ApprovalTimedOut", Reason::ApprovalTimedOut),
            ("ApprovalReminder", Reason::ApprovalReminder),
            ("Published", Reason::Published),
            ("Completed", Reason::Completed),
            ("PublishFailed", Reason::PublishFailed),
            ("PublishRetried", Reason::PublishRetried),
        ];
        assert_eq!(cases.len(), Reason::known().count());
        for (text, reason) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(Reason::from(text), reason);
        }
    }

    #[test]
    fn an_unknown_reason_is_kept_verbatim() {
        for text in [
            "SomethingNewer",
            "",
            "Builder",
            "builderfailed",
            "BuilderFailed ",
        ] {
            let reason: Reason = text.parse().unwrap();
            assert_eq!(reason, Reason::Unrecognized(Unrecognized(text.to_owned())));
            assert_eq!(reason.to_string(), text);
        }
    }
}
