//! What the original service's clients say of a job besides its task: the
//! project it belongs to, its `phase` and the tests it comes with. Kept
//! here, as plain data, so that both modes (a REST spawn, an IcarusJob)
//! carry them the same way.
//!
//! The original dashboard sends `"phase": "I"` with every job; the seed
//! says nothing of what a phase means. Icarus stores and shows it, hands it
//! to the agents (`ICARUS_PHASE`) and decides nothing by it: a job of
//! phase II runs exactly as one of phase I.

use std::fmt;
use std::str::FromStr;

/// The project a job belongs to when its submitter names none.
pub const DEFAULT_PROJECT_ID: &str = "default";

/// The longest project id, in characters (a Kubernetes label value's).
pub const MAX_PROJECT_ID_CHARS: usize = 63;

/// A project id: letters, digits, `.`, `_` and `-`, starting and ending with
/// a letter or digit — a Kubernetes label value, so it can become one. In
/// the syntax ECMA 262, Python, Go and Rust read alike.
pub const PROJECT_ID_PATTERN: &str = r"^[A-Za-z0-9](?:[A-Za-z0-9._\-]*[A-Za-z0-9])?$";

/// The most bytes of test code any configuration may allow: the builder
/// gets it as one environment variable, and Linux holds one (`TEST_CODE=`,
/// the value and its NUL) to 128 KiB (`MAX_ARG_STRLEN`), or the agent
/// cannot start. A kilobyte is kept spare.
pub const TEST_CODE_CEILING_BYTES: usize = 128 * 1024 - 1024;

/// The original service's `phase` of a job: `I` (the default) or `II`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ProjectPhase {
    #[default]
    I,
    II,
}

impl ProjectPhase {
    pub const ALL: [ProjectPhase; 2] = [ProjectPhase::I, ProjectPhase::II];

    pub fn as_str(self) -> &'static str {
        match self {
            ProjectPhase::I => "I",
            ProjectPhase::II => "II",
        }
    }
}

impl fmt::Display for ProjectPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProjectPhase(pub String);

impl fmt::Display for UnknownProjectPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phase must be \"I\" or \"II\", not {:?}", self.0)
    }
}

impl std::error::Error for UnknownProjectPhase {}

impl FromStr for ProjectPhase {
    type Err = UnknownProjectPhase;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProjectPhase::ALL
            .into_iter()
            .find(|phase| phase.as_str() == text)
            .ok_or_else(|| UnknownProjectPhase(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_reads_back_as_it_is_spelled() {
        for phase in ProjectPhase::ALL {
            assert_eq!(phase.as_str().parse::<ProjectPhase>(), Ok(phase));
        }
        assert_eq!(ProjectPhase::default(), ProjectPhase::I);
    }

    #[test]
    fn any_other_spelling_is_not_a_phase_and_the_error_names_the_two() {
        for text in ["", "i", "III", "1", " I"] {
            let error = text.parse::<ProjectPhase>().unwrap_err().to_string();
            assert!(error.contains("\"I\" or \"II\""), "{error}");
        }
    }
}
