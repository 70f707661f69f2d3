//! The client commands: the same binary talking to a local or remote Icarus
//! over its REST and WebSocket API, as `argo` or `tkn` do (`icarus submit`,
//! `list`, `get`, `logs`, `diff`, `approve`, `reject`, `cancel`, `publish`,
//! `watch`).
//!
//! - [`args`]: what each command takes (clap), and where the server and the
//!   token come from.
//! - [`http`]: the HTTP client; every failure, of the transport or a
//!   `{"detail": ...}` answer, becomes one [`Error`] that says in a sentence
//!   what happened.
//! - [`output`]: tables for people, JSON or YAML for scripts, colours only on
//!   a terminal.
//! - [`follow`]: a job's phases as they change, from the WebSocket stream or,
//!   when it cannot be had, by polling.
//! - [`watch`]: the live view of one job, and what its end means for the
//!   exit code.
//! - [`commands`] and [`review`]: the commands themselves.
//!
//! Nothing here exits the process: a command returns an [`Error`], and
//! `main` turns it into an exit code ([`Error::exit_code`]).

pub mod args;
mod commands;
mod error;
mod follow;
pub mod http;
mod output;
mod review;
mod watch;

pub use args::ClientCommand;
pub use error::{Error, ExitCodes, Result};

/// Runs one client command to completion.
pub async fn run(command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Submit(args) => commands::submit(args).await,
        ClientCommand::List(args) => commands::list(args).await,
        ClientCommand::Get(args) => commands::get(args).await,
        ClientCommand::Watch(args) => commands::watch(args).await,
        ClientCommand::Logs(args) => review::logs(args).await,
        ClientCommand::Diff(args) => review::diff(args).await,
        ClientCommand::Approve(args) => review::approve(args).await,
        ClientCommand::Reject(args) => review::reject(args).await,
        ClientCommand::Cancel(args) => review::cancel(args).await,
        ClientCommand::Publish(args) => review::publish(args).await,
    }
}
