//! The lifecycle phases. Their strings are part of the public API (the seed's
//! `status` values, plus `cancelled`), so they are spelled out once, here.

use std::fmt;
use std::str::FromStr;

/// Where a job is in its lifecycle.
///
/// `pending -> building -> checking -> awaiting_approval -> approved -> completed`,
/// with `rejected`, `failed`, `cancelled` and `expired` (awaiting approval
/// past its deadline, when so configured) as the other ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Phase {
    Pending,
    Building,
    Checking,
    AwaitingApproval,
    Approved,
    Completed,
    Rejected,
    Failed,
    Cancelled,
    Expired,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::Pending,
        Phase::Building,
        Phase::Checking,
        Phase::AwaitingApproval,
        Phase::Approved,
        Phase::Completed,
        Phase::Rejected,
        Phase::Failed,
        Phase::Cancelled,
        Phase::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Building => "building",
            Phase::Checking => "checking",
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::Approved => "approved",
            Phase::Completed => "completed",
            Phase::Rejected => "rejected",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
            Phase::Expired => "expired",
        }
    }

    /// A terminal phase is never left: nothing starts, nothing changes.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::Rejected | Phase::Failed | Phase::Cancelled | Phase::Expired
        )
    }

    /// Phases in which an agent runs and a concurrency slot is taken.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Building | Phase::Checking)
    }

    /// Position along the lifecycle; every terminal phase shares the last rank.
    /// A transition never lowers it ("phases never go backwards").
    pub fn rank(self) -> u8 {
        match self {
            Phase::Pending => 0,
            Phase::Building => 1,
            Phase::Checking => 2,
            Phase::AwaitingApproval => 3,
            Phase::Approved => 4,
            Phase::Completed
            | Phase::Rejected
            | Phase::Failed
            | Phase::Cancelled
            | Phase::Expired => 5,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the phase strings.
#[derive(Debug)]
pub struct UnknownPhase(pub String);

impl fmt::Display for UnknownPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected = Phase::ALL.map(Phase::as_str).join(", ");
        write!(
            f,
            "unknown status '{}'; expected one of: {expected}",
            self.0
        )
    }
}

impl std::error::Error for UnknownPhase {}

impl FromStr for Phase {
    type Err = UnknownPhase;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|phase| phase.as_str() == text)
            .ok_or_else(|| UnknownPhase(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_round_trips_through_its_string() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>().unwrap(), phase);
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn every_phase_is_written_as_its_string() {
        for phase in Phase::ALL {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.as_str()));
        }
    }

    #[test]
    fn an_unknown_status_string_is_rejected_with_the_valid_ones_listed() {
        let err = "done".parse::<Phase>().unwrap_err();
        assert!(err.to_string().contains("awaiting_approval"));
    }
}
