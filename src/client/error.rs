//! What can go wrong in a client command, each said in a sentence, and the
//! exit code each means.

use crate::job::{JobId, Phase};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit codes of the client commands (documented in `--help` and the
/// README). `2` is clap's, for a command line it cannot parse.
pub struct ExitCodes;

impl ExitCodes {
    /// The command did what it was asked; a watched job awaits approval or completed.
    pub const SUCCESS: u8 = 0;
    /// The server refused the request or answered with an error, or the
    /// command could not do its part (an unreadable token file, ...).
    pub const ERROR: u8 = 1;
    /// The watched job failed.
    pub const FAILED: u8 = 3;
    /// The watched job was rejected.
    pub const REJECTED: u8 = 4;
    /// The watched job was cancelled.
    pub const CANCELLED: u8 = 5;
    /// The server could not be reached (refused, unknown name, timed out):
    /// worth trying again.
    pub const UNREACHABLE: u8 = 6;
    /// The watched job's approval deadline passed without a decision.
    pub const EXPIRED: u8 = 7;
}

/// One client command's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach Icarus at {server}: {cause}; is it running there? \
         (another server is named with --server or ICARUS_SERVER)"
    )]
    Unreachable { server: String, cause: String },
    #[error(
        "{server} needs an API token and none was given (401: {detail}); \
         give one with --token, --token-file, ICARUS_TOKEN or ICARUS_TOKEN_FILE"
    )]
    TokenMissing { server: String, detail: String },
    #[error(
        "{server} did not accept the API token given (401: {detail}); \
         check --token, --token-file, ICARUS_TOKEN or ICARUS_TOKEN_FILE"
    )]
    TokenRefused { server: String, detail: String },
    #[error("{server} does not allow this (403): {detail}")]
    Forbidden { server: String, detail: String },
    #[error("{detail} (404): `icarus list` shows the jobs {server} has")]
    JobNotFound { server: String, detail: String },
    #[error("{server} does not serve {request} (404): is it an Icarus server, and a recent one?")]
    RouteNotFound { server: String, request: String },
    #[error(
        "the job is not in a state that allows this (409): {detail}; \
         `icarus get <job>` shows where it is"
    )]
    Conflict { detail: String },
    #[error("{server} refused {request} ({status}): {detail}")]
    Refused {
        server: String,
        request: String,
        status: u16,
        detail: String,
    },
    #[error("{server} is unavailable (503): {detail}; try again later")]
    Unavailable { server: String, detail: String },
    #[error("{server} failed to answer {request} ({status}): {detail}")]
    ServerFault {
        server: String,
        request: String,
        status: u16,
        detail: String,
    },
    #[error("the answer of {server} to {request} is not what Icarus sends: {cause}")]
    Unexpected {
        server: String,
        request: String,
        cause: String,
    },
    #[error("--server {server} is not an http:// or https:// address: {cause}")]
    BadServer { server: String, cause: String },
    #[error("the API token holds characters an HTTP header cannot carry")]
    BadToken,
    #[error("the token file {path}: {cause}")]
    TokenFile { path: String, cause: String },
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// The watched job ended in a phase other than the ones that say "done"
    /// (awaiting approval, completed).
    #[error("job {job} ended {phase} ({reason}){message}")]
    JobEnded {
        job: JobId,
        phase: Phase,
        reason: String,
        /// `: ` and the first line of its error message, or nothing.
        message: String,
    },
}

impl Error {
    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unreachable { .. } => ExitCodes::UNREACHABLE,
            Error::JobEnded { phase, .. } => match phase {
                Phase::Rejected => ExitCodes::REJECTED,
                Phase::Cancelled => ExitCodes::CANCELLED,
                Phase::Expired => ExitCodes::EXPIRED,
                _ => ExitCodes::FAILED,
            },
            _ => ExitCodes::ERROR,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::Output(error)
    }
}
