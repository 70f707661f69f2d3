//! What each client command takes on the command line, and where the
//! server and the token come from.

use std::path::{Path, PathBuf};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand, ValueEnum};

use super::error::{Error, Result};
use super::http::{Client, Token};
use crate::job::{JobId, MAX_PROJECT_ID_CHARS, PROJECT_ID_PATTERN, Phase};

/// The exit codes of `watch` and `submit --wait`, for their `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the job awaits approval or completed
  1  the server refused a request or answered with an error
  2  the command line is not valid
  3  the job failed
  4  the job was rejected
  5  the job was cancelled
  6  the server could not be reached
  7  the job's approval deadline passed without a decision (expired)";

/// The client commands, each a subcommand of `icarus`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a job: print its id, or with --wait follow it until it awaits approval or ends.
    #[command(after_help = EXIT_CODES_HELP)]
    Submit(SubmitArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job: status, reason, phase timeline and the audit's summary.
    Get(JobArgs),
    /// Follow one job live: its phases, the agent's latest progress, until it awaits approval or ends.
    #[command(after_help = EXIT_CODES_HELP)]
    Watch(JobArgs),
    /// Print the saved output of a job's agents.
    Logs(LogsArgs),
    /// Show the builder's change: the unified diff, or with --stat the files and line counts.
    Diff(DiffArgs),
    /// Approve a job that awaits approval: its snapshot is then published.
    Approve(ApproveArgs),
    /// Reject a job that awaits approval, saying why.
    Reject(RejectArgs),
    /// Cancel a job that has not finished; its agents are stopped and removed.
    Cancel(JobArgs),
    /// Try again to publish a job whose publishing failed (the same commit is pushed).
    Publish(JobArgs),
}

/// Which Icarus to talk to, and as whom.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The Icarus API to talk to.
    #[arg(
        long,
        env = "ICARUS_SERVER",
        default_value = "http://127.0.0.1:8000",
        value_name = "URL"
    )]
    pub server: String,
    /// The API token (a bearer token), when the server has authentication
    /// on. Else ICARUS_TOKEN. A command line can be seen by other users of
    /// the machine: prefer --token-file.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the API token. Else ICARUS_TOKEN_FILE. The order:
    /// --token, --token-file, ICARUS_TOKEN, ICARUS_TOKEN_FILE.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl Connection {
    /// A client of the server, with the first token found: `--token`,
    /// `--token-file`, `ICARUS_TOKEN`, `ICARUS_TOKEN_FILE`.
    pub fn client(&self) -> Result<Client> {
        let token = if let Some(text) = &self.token {
            Token::new(text)
        } else if let Some(path) = &self.token_file {
            Some(read_token(path)?)
        } else if let Some(text) = std::env::var("ICARUS_TOKEN").ok().filter(|t| !t.is_empty()) {
            Token::new(&text)
        } else if let Some(path) = std::env::var_os("ICARUS_TOKEN_FILE").filter(|p| !p.is_empty()) {
            Some(read_token(Path::new(&path))?)
        } else {
            None
        };
        Client::new(&self.server, token)
    }
}

fn read_token(path: &Path) -> Result<Token> {
    let failed = |cause: String| Error::TokenFile {
        path: path.display().to_string(),
        cause,
    };
    let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
    Token::new(&text).ok_or_else(|| failed("it is empty".to_owned()))
}

/// How to print what a command shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and text, for people.
    Table,
    /// JSON as the API answers it, for scripts.
    Json,
    /// The same as YAML.
    Yaml,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// How to print: tables for people, or JSON or YAML (the API's own
    /// fields) for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// What the builder should do.
    pub task: String,
    /// A Git repository (a URL, or a path the server allows) to check the
    /// workspace out from and publish back to.
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// The branch, tag or commit of --repo to start from (its default branch without it).
    #[arg(long = "ref", value_name = "REF", requires = "repo")]
    pub reference: Option<String>,
    /// The workspace path the task is about (the server's default without it).
    #[arg(long, value_name = "PATH")]
    pub project_path: Option<String>,
    /// A builder image other than the configured one (the server must allow it).
    #[arg(long, value_name = "IMAGE")]
    pub builder_image: Option<String>,
    /// A checker image other than the configured one (the server must allow it).
    #[arg(long, value_name = "IMAGE")]
    pub checker_image: Option<String>,
    /// Where the job stands in the queue, -1000 to 1000, higher first (the
    /// server's default without it; your role's cap at most).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Follow the job until it awaits approval or ends, as `icarus watch`
    /// does, and exit with a code that says how it ended.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this phase.
    #[arg(long, value_name = "STATUS", value_parser = phase_parser())]
    pub status: Option<Phase>,
    /// Only jobs of this project.
    #[arg(long, value_name = "PROJECT_ID", value_parser = project_parser())]
    pub project: Option<String>,
    /// At most this many jobs (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Keep listing: print a job again whenever it appears or changes phase
    /// (the list is read every 2 s; there is no stream of all jobs). Stop with Ctrl-C.
    #[arg(long, short = 'w')]
    pub watch: bool,
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A project id as the server takes it (so it needs no escaping in a query).
fn project_parser() -> impl TypedValueParser<Value = String> {
    |text: &str| {
        let valid = regex::Regex::new(PROJECT_ID_PATTERN)
            .is_ok_and(|pattern| pattern.is_match(text) && text.len() <= MAX_PROJECT_ID_CHARS);
        if valid {
            Ok(text.to_owned())
        } else {
            Err(format!(
                "'{text}' is not a project id: letters, digits, '.', '_' or '-', starting and \
                 ending with a letter or digit, at most {MAX_PROJECT_ID_CHARS}"
            ))
        }
    }
}

fn phase_parser() -> impl TypedValueParser<Value = Phase> {
    PossibleValuesParser::new(Phase::ALL.map(Phase::as_str)).try_map(|text| text.parse::<Phase>())
}

/// A command about one job.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job's id (a UUID, as `icarus list` shows).
    #[arg(value_name = "JOB")]
    pub job: JobId,
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Keep printing each agent's log as it is saved, until the job ends.
    /// The API has no live log stream: an agent's output is saved when its
    /// container is removed (when the job ends, or before a retry), so this
    /// polls the saved logs every 2 s.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only this agent's logs.
    #[arg(long, value_name = "ROLE", value_parser = PossibleValuesParser::new(["builder", "checker"]))]
    pub role: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Only the files changed, with their added and removed line counts.
    #[arg(long)]
    pub stat: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// A comment recorded with the approval (and in the published commit).
    #[arg(long, short = 'm', value_name = "COMMENT")]
    pub message: Option<String>,
    /// The snapshot you reviewed (`icarus diff` prints it); the server
    /// refuses the approval if the job's is another.
    #[arg(long, value_name = "TREE")]
    pub snapshot: Option<String>,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Why the change is rejected.
    #[arg(long, short = 'm', value_name = "REASON")]
    pub message: String,
}
