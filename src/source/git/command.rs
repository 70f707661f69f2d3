//! `git` as the orchestrator runs it: with a fixed, minimal configuration
//! that nothing outside this file can change.
//!
//! Git obeys a great deal besides its arguments: system, global and
//! repository config, hooks, attributes, an fsmonitor, textconv and
//! external diff drivers, credential helpers, `GIT_*` variables. Any of
//! them can make it run a program. So every command here starts from an
//! empty environment, reads no config file but the job repository's own
//! (which only the orchestrator writes), takes its attributes from the
//! empty tree, and has hooks, fsmonitor and helpers switched off. The
//! workspace is only ever a `--work-tree` (never a repository git finds by
//! itself), so a `.git` an agent wrote there is just a directory of files.

use std::path::Path;
use std::process::{Command, Stdio};

use super::super::{Result, SourceError};
use super::credentials::Header;

/// Git's empty tree: the base of a job without a source, and the only
/// source of attributes git is allowed.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Transports a source may use. None that runs a command (`ext::`, `fd::`).
const ALLOWED_PROTOCOLS: &str = "https:http:ssh:git:file";

/// Settings given on every command line, above anything in a config file.
const FIXED_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.attributesFile=/dev/null",
    "core.excludesFile=/dev/null",
    "core.autocrlf=false",
    "core.symlinks=true",
    "core.pager=cat",
    "credential.helper=",
    "gc.auto=0",
    "maintenance.auto=false",
    "submodule.recurse=false",
    "transfer.fsckObjects=true",
    "init.defaultBranch=main",
    "advice.detachedHead=false",
];

/// A `git` command for the job repository at `git_dir` (or none, for a
/// clone or an init that creates one).
pub fn git(git_dir: Option<&Path>) -> Command {
    let mut command = Command::new("git");
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .env("HOME", "/nonexistent")
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ATTR_SOURCE", EMPTY_TREE)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null());
    for setting in FIXED_CONFIG {
        command.arg("-c").arg(setting);
    }
    if let Some(git_dir) = git_dir {
        command.arg("--git-dir").arg(git_dir);
    }
    command
}

/// Adds a credential header for the one remote it is scoped to. Redirects
/// are not followed, so the header cannot be carried to another host.
pub fn with_header(command: &mut Command, header: Option<&Header>) {
    let Some(header) = header else {
        return;
    };
    command
        .env("GIT_CONFIG_COUNT", "2")
        .env(
            "GIT_CONFIG_KEY_0",
            format!("http.{}.extraHeader", header.scope),
        )
        .env("GIT_CONFIG_VALUE_0", &header.value)
        .env("GIT_CONFIG_KEY_1", "http.followRedirects")
        .env("GIT_CONFIG_VALUE_1", "false");
}

/// Runs a command to its end and returns its stdout; a failure carries
/// git's own last words.
pub async fn run(command: Command, what: &str) -> Result<String> {
    run_with_input(command, what, None).await
}

/// Like [`run`], with `input` on standard input.
pub async fn run_with_input(command: Command, what: &str, input: Option<&[u8]>) -> Result<String> {
    let mut command = tokio::process::Command::from(command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .map_err(|e| SourceError::transient(format!("{what}: cannot run git"), e))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(input)
            .await
            .map_err(|e| SourceError::transient(format!("{what}: cannot write to git"), e))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| SourceError::transient(what, e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(SourceError::Permanent(format!(
            "{what} failed: {}",
            last_lines(String::from_utf8_lossy(&output.stderr).trim(), 5)
        )))
    }
}

pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn no_variable_of_the_orchestrators_environment_reaches_git_but_path() {
        let command = git(None);
        let names: Vec<&OsStr> = command.get_envs().map(|(name, _)| name).collect();
        assert!(names.iter().all(|n| {
            let n = n.to_string_lossy();
            n == "PATH" || n == "HOME" || n == "LC_ALL" || n.starts_with("GIT_")
        }));
        assert!(
            command
                .get_envs()
                .any(|(n, v)| n == "GIT_CONFIG_GLOBAL" && v == Some(OsStr::new("/dev/null")))
        );
    }

    #[test]
    fn hooks_and_fsmonitor_are_switched_off_on_every_command() {
        let args: Vec<String> = git(Some(Path::new("/r")))
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"core.hooksPath=/dev/null".to_owned()));
        assert!(args.contains(&"core.fsmonitor=false".to_owned()));
        assert_eq!(args[args.len() - 2..], ["--git-dir", "/r"]);
    }
}
