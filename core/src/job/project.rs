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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_i_is_the_default_and_each_phase_is_spelled_as_the_original_service_did() {
        assert_eq!(ProjectPhase::default(), ProjectPhase::I);
        let spelled: Vec<String> = ProjectPhase::ALL.iter().map(|p| p.to_string()).collect();
        assert_eq!(spelled, ["I", "II"]);
    }
}
