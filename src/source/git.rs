//! [`SourceControl`] with the `git` command on the orchestrator's host, for
//! workspaces that are directories under `workspace.base_path` (`bind` mode).
//!
//! The `git` CLI rather than a library: it speaks every transport and
//! credential helper users already have configured, and its diff is the one
//! reviewers know. Credentials (`publish.token` or `GITHUB_TOKEN`) go to git
//! through `GIT_CONFIG_*` variables as an HTTP header, never on a command
//! line and never in a log.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use base64::Engine;
use tokio::process::Command;

use super::{CapturedDiff, PublishRequest, Published, Result, SourceControl, SourceError};
use crate::job::{JobId, JobSource};

/// Records the base commit inside the checkout, so it survives a builder
/// that commits or moves `HEAD`.
const BASE_REF: &str = "refs/icarus/base";
/// Where a checkout is cloned, inside the workspace, before it moves into place.
const STAGING_DIR: &str = ".icarus-checkout";
/// Present while a staged checkout is moved into place; a run that finds it
/// knows the workspace holds a half-moved checkout of its own.
const MOVING_MARKER: &str = ".icarus-checkout-moving";
/// Git's empty tree: the base of a job without a source.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
/// The trailer that marks the orchestrator's commit, so a retried publish
/// finds it instead of committing twice.
pub const JOB_TRAILER: &str = "Icarus-Job";

pub struct LocalGit {
    /// Parent of the per-job workspace directories.
    base_path: PathBuf,
    /// Whether workspaces are host directories at all (`bind`).
    enabled: bool,
    /// A token for HTTPS remotes (sent as a basic-auth header), if any.
    token: Option<String>,
    /// Diffs longer than this are cut.
    max_diff_bytes: usize,
}

impl LocalGit {
    /// A relative `base_path` is taken from the current directory now: git
    /// runs with `-C` elsewhere, where a relative path would mean something else.
    pub fn new(base_path: PathBuf, enabled: bool, token: Option<String>) -> LocalGit {
        let base_path = std::path::absolute(&base_path).unwrap_or(base_path);
        LocalGit {
            base_path,
            enabled,
            token: token.filter(|t| !t.is_empty()),
            max_diff_bytes: 2 * 1024 * 1024,
        }
    }

    fn workspace(&self, job: JobId) -> PathBuf {
        self.base_path.join(job.to_string())
    }

    fn require_host_workspaces(&self) -> Result<()> {
        if self.enabled {
            Ok(())
        } else {
            Err(SourceError::Permanent(
                "Git sources, diffs and publishing need workspaces on this host \
                 (workspace.mount_type: bind)"
                    .to_owned(),
            ))
        }
    }

    /// A `git` command run in `dir`, with no prompt and no stray config.
    fn git(&self, dir: &Path) -> Command {
        let mut command = Command::new("git");
        command
            .arg("-C")
            .arg(dir)
            // Agents write files as whatever user their image runs as.
            .args(["-c", "safe.directory=*"])
            .env("GIT_TERMINAL_PROMPT", "0")
            // No `ext::` or other transports that run commands.
            .env("GIT_ALLOW_PROTOCOL", "https:http:ssh:git:file")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some(token) = &self.token {
            let credentials =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {credentials}"),
                );
        }
        command
    }
}

/// Runs a command and returns its stdout; a failure carries git's own words.
async fn run(mut command: Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .await
        .map_err(|e| SourceError::Transient(format!("{what}: cannot run the command: {e}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(SourceError::Permanent(format!(
            "{what} failed: {}",
            last_lines(stderr.trim(), 5)
        )))
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[async_trait]
impl SourceControl for LocalGit {
    async fn checkout(&self, job: JobId, source: &JobSource) -> Result<String> {
        self.require_host_workspaces()?;
        let workspace = self.workspace(job);
        let moving = workspace.join(MOVING_MARKER);
        if workspace.join(".git").exists() && !moving.exists() {
            return self.recorded_base(&workspace).await;
        }
        // Staged inside the workspace, so that moving it into place stays on
        // one filesystem whether the workspace is a host directory or a
        // mounted claim (a Pod cannot replace its own mount point).
        let staging = workspace.join(STAGING_DIR);
        tokio::fs::create_dir_all(&workspace)
            .await
            .map_err(transient("create the workspace directory"))?;
        if moving.exists() {
            // A previous run stopped half-way through the move: start over.
            clear_dir(&workspace).await?;
        }
        remove_dir_if_present(&staging).await?;
        require_empty(&workspace).await?;
        let mut clone = self.git(&workspace);
        clone
            .args(["clone", "--quiet", "--no-hardlinks", "--"])
            .arg(&source.repository)
            .arg(&staging);
        run(clone, &format!("cloning {}", source.repository)).await?;
        let base = self.resolve(&staging, source.reference.as_deref()).await?;
        let mut detach = self.git(&staging);
        detach.args(["checkout", "--quiet", "--detach", &base]);
        run(detach, "checking out the base commit").await?;
        open_to_every_user(&staging).await?;
        // The recorded base, written last, says the checkout is whole.
        tokio::fs::write(&moving, b"")
            .await
            .map_err(transient("mark the checkout as moving"))?;
        move_entries_up(&staging, &workspace).await?;
        let mut record = self.git(&workspace);
        record.args(["update-ref", BASE_REF, &base]);
        run(record, "recording the base commit").await?;
        tokio::fs::remove_file(&moving)
            .await
            .map_err(transient("finish the checkout"))?;
        Ok(base)
    }

    async fn diff(&self, job: JobId) -> Result<CapturedDiff> {
        self.require_host_workspaces()?;
        let workspace = self.workspace(job);
        if !workspace.exists() {
            return Ok(CapturedDiff {
                text: String::new(),
                truncated: false,
            });
        }
        // Everything in the workspace, staged into a throw-away index (and,
        // without a checkout, a throw-away repository), against the base.
        let scratch = tempfile::tempdir().map_err(transient("create a scratch directory"))?;
        let index = scratch.path().join("index");
        let (git_dir, base) = if workspace.join(".git").exists() {
            (None, self.recorded_base(&workspace).await?)
        } else {
            let git_dir = scratch.path().join("repository");
            let mut init = self.git(&self.base_path);
            init.args(["init", "--quiet", "--bare"]).arg(&git_dir);
            run(init, "preparing the diff").await?;
            (Some(git_dir), EMPTY_TREE.to_owned())
        };
        let with_index = |args: &[&str]| {
            let mut command = self.git(&workspace);
            if let Some(git_dir) = &git_dir {
                command
                    .arg("--git-dir")
                    .arg(git_dir)
                    .arg("--work-tree")
                    .arg(&workspace);
            }
            command.args(args).env("GIT_INDEX_FILE", &index);
            command
        };
        run(
            with_index(&["add", "--all", "--force"]),
            "staging the workspace",
        )
        .await?;
        let text = run(
            with_index(&["diff", "--cached", "--no-color", "--no-ext-diff", &base]),
            "computing the diff",
        )
        .await?;
        Ok(cut(text, self.max_diff_bytes))
    }

    async fn publish(&self, request: &PublishRequest) -> Result<Published> {
        self.require_host_workspaces()?;
        let workspace = self.workspace(request.job);
        if !workspace.join(".git").exists() {
            return Err(SourceError::Permanent(
                "the workspace is not a Git checkout".to_owned(),
            ));
        }
        let branch_ref = format!("refs/heads/{}", request.branch);
        let mut current = self.git(&workspace);
        current.args(["symbolic-ref", "--quiet", "HEAD"]);
        if run(current, "reading HEAD")
            .await
            .ok()
            .as_deref()
            .map(str::trim)
            != Some(&branch_ref)
        {
            let mut switch = self.git(&workspace);
            switch.args(["checkout", "--quiet", "-B", &request.branch]);
            run(switch, "creating the job's branch").await?;
        }
        if !self.tip_is_job_commit(&workspace, request.job).await? {
            let mut stage = self.git(&workspace);
            stage.args(["add", "--all"]);
            run(stage, "staging the change").await?;
            let mut commit = self.git(&workspace);
            commit
                .args(["-c", &format!("user.name={}", request.author_name)])
                .args(["-c", &format!("user.email={}", request.author_email)])
                .args(["commit", "--quiet", "--allow-empty", "--no-verify", "-m"])
                .arg(&request.message);
            run(commit, "committing the change").await?;
        }
        let mut head = self.git(&workspace);
        head.args(["rev-parse", "HEAD"]);
        let commit = run(head, "reading the commit").await?.trim().to_owned();
        let mut push = self.git(&workspace);
        push.args(["push", "--quiet", "--porcelain", "origin"])
            .arg(format!("{branch_ref}:{branch_ref}"));
        run(push, &format!("pushing {}", request.branch)).await?;
        Ok(Published {
            branch: request.branch.clone(),
            commit,
        })
    }
}

impl LocalGit {
    async fn recorded_base(&self, workspace: &Path) -> Result<String> {
        let mut base = self.git(workspace);
        base.args(["rev-parse", "--verify", "--quiet", BASE_REF]);
        Ok(run(base, "reading the base commit")
            .await?
            .trim()
            .to_owned())
    }

    /// The commit `reference` names: a remote branch, a tag or a commit; the
    /// default branch's tip when there is none.
    async fn resolve(&self, checkout: &Path, reference: Option<&str>) -> Result<String> {
        let candidates: Vec<String> = match reference {
            None => vec!["HEAD".to_owned()],
            Some(reference) => vec![
                format!("refs/remotes/origin/{reference}"),
                format!("refs/tags/{reference}"),
                reference.to_owned(),
            ],
        };
        for candidate in &candidates {
            let mut verify = self.git(checkout);
            verify.args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{candidate}^{{commit}}"),
            ]);
            if let Ok(commit) = run(verify, "resolving the base").await {
                return Ok(commit.trim().to_owned());
            }
        }
        Err(SourceError::Permanent(format!(
            "the source has no branch, tag or commit '{}'",
            reference.unwrap_or("HEAD")
        )))
    }

    /// Whether the branch tip is the commit a previous publish of this job made.
    async fn tip_is_job_commit(&self, workspace: &Path, job: JobId) -> Result<bool> {
        let mut trailer = self.git(workspace);
        trailer.args([
            "log",
            "-1",
            &format!("--format=%(trailers:key={JOB_TRAILER},valueonly)"),
        ]);
        let value = run(trailer, "reading the branch tip").await?;
        Ok(value.trim() == job.to_string())
    }
}

/// Cuts a diff at a line boundary below `limit` bytes, with a marker saying so.
fn cut(text: String, limit: usize) -> CapturedDiff {
    if text.len() <= limit {
        return CapturedDiff {
            text,
            truncated: false,
        };
    }
    let end = text[..limit].rfind('\n').map_or(0, |n| n + 1);
    let mut kept = text[..end].to_owned();
    kept.push_str(&format!(
        "{}{} more bytes not shown\n",
        super::patch::TRUNCATION_MARKER,
        text.len() - end
    ));
    CapturedDiff {
        text: kept,
        truncated: true,
    }
}

fn transient(what: &'static str) -> impl Fn(std::io::Error) -> SourceError {
    move |error| SourceError::Transient(format!("{what}: {error}"))
}

async fn remove_dir_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(transient("remove a stale checkout")(error)),
    }
}

/// A checkout goes into an empty workspace only: anything in it means
/// someone else's files, which are never deleted.
async fn require_empty(path: &Path) -> Result<()> {
    let mut entries = tokio::fs::read_dir(path)
        .await
        .map_err(transient("read the workspace"))?;
    match entries.next_entry().await {
        Ok(None) => Ok(()),
        Ok(Some(entry)) => Err(SourceError::Permanent(format!(
            "the workspace {} is not empty (it holds {})",
            path.display(),
            entry.file_name().to_string_lossy()
        ))),
        Err(error) => Err(transient("read the workspace")(error)),
    }
}

/// Removes everything inside `path`, keeping `path` (it may be a mount point).
async fn clear_dir(path: &Path) -> Result<()> {
    let mut entries = tokio::fs::read_dir(path)
        .await
        .map_err(transient("read the workspace"))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(transient("read the workspace"))?
    {
        let entry_path = entry.path();
        let removed = if entry_path.is_dir() && !entry_path.is_symlink() {
            tokio::fs::remove_dir_all(&entry_path).await
        } else {
            tokio::fs::remove_file(&entry_path).await
        };
        removed.map_err(transient("clear a half-moved checkout"))?;
    }
    Ok(())
}

/// Moves the staged checkout's entries into the workspace, then removes the
/// emptied staging directory.
async fn move_entries_up(staging: &Path, workspace: &Path) -> Result<()> {
    let mut entries = tokio::fs::read_dir(staging)
        .await
        .map_err(transient("read the staged checkout"))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(transient("read the staged checkout"))?
    {
        tokio::fs::rename(entry.path(), workspace.join(entry.file_name()))
            .await
            .map_err(transient("move the checkout into place"))?;
    }
    tokio::fs::remove_dir(staging)
        .await
        .map_err(transient("remove the staging directory"))
}

/// Agents may run as any user: the checkout is theirs to change.
async fn open_to_every_user(path: &Path) -> Result<()> {
    let mut chmod = Command::new("chmod");
    chmod.args(["-R", "a+rwX"]).arg(path);
    run(chmod, "opening the checkout to the agents").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_diff_is_cut_at_a_line_with_a_marker() {
        let text = "line one\nline two\nline three\n".to_owned();
        let diff = cut(text, 14);
        assert!(diff.truncated);
        assert!(diff.text.starts_with("line one\n"));
        assert!(
            diff.text.contains("20 more bytes not shown"),
            "{}",
            diff.text
        );
    }

    #[test]
    fn a_relative_workspace_root_is_made_absolute() {
        let git = LocalGit::new(PathBuf::from("data/workspaces"), true, None);
        let job = JobId::new_random();
        assert!(git.workspace(job).is_absolute());
        assert!(
            git.workspace(job)
                .ends_with(format!("data/workspaces/{job}"))
        );
    }

    #[test]
    fn a_short_diff_is_kept_whole() {
        let diff = cut("a\n".to_owned(), 14);
        assert_eq!(diff.text, "a\n");
        assert!(!diff.truncated);
    }
}
