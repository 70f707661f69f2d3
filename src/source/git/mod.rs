//! [`SourceControl`] with the `git` command, on workspaces this process can
//! read: host directories in local mode (`bind`), a mounted claim in a
//! Kubernetes git Pod.
//!
//! Each job has two directories. Its **workspace** is the agents': only
//! ever a work tree, filled from the base at checkout and read back into a
//! snapshot when the builder succeeds. Its **repository** (a bare one,
//! `<repositories>/<job>/git`) is the orchestrator's: the clone of the
//! source, the base ref, the snapshot and the published commit. No agent
//! ever sees it, and git is only run on it with the fixed configuration of
//! [`command`], so nothing an agent writes changes how git runs.
//!
//! The `git` CLI rather than a library: it speaks every transport, and its
//! diff is the one reviewers know.

mod command;
mod credentials;
mod snapshot;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

pub use command::EMPTY_TREE;
use command::{git, run, run_with_input, with_header};
pub use credentials::RemoteCredentials;
use snapshot::Excluded;
pub use snapshot::SnapshotLimits;

use super::patch::{EXCLUDED_MARKER, TRUNCATION_MARKER};
use super::{
    CapturedDiff, Progress, PublishRequest, Published, Result, Snapshot, SourceControl, SourceError,
};
use crate::job::{JobId, JobSource};

/// The commit the workspace was filled from; written last, so its presence
/// says the checkout is whole.
const BASE_REF: &str = "refs/icarus/base";

/// Where jobs' work trees and repositories are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLayout {
    /// Parent of the per-job workspaces (`<workspaces>/<job>`).
    pub workspaces: PathBuf,
    /// Parent of the per-job repositories (`<repositories>/<job>/git`).
    pub repositories: PathBuf,
}

impl GitLayout {
    /// Relative roots are taken from the current directory now: git runs
    /// elsewhere, where a relative path would mean something else.
    pub fn new(workspaces: PathBuf, repositories: PathBuf) -> Self {
        let absolute = |path: PathBuf| std::path::absolute(&path).unwrap_or(path);
        GitLayout {
            workspaces: absolute(workspaces),
            repositories: absolute(repositories),
        }
    }

    pub fn workspace(&self, job: JobId) -> PathBuf {
        self.workspaces.join(job.to_string())
    }

    /// The job's directory under the repositories root (a mount point in
    /// a git Pod, so it is never itself renamed or removed there).
    fn job_dir(&self, job: JobId) -> PathBuf {
        self.repositories.join(job.to_string())
    }

    pub fn repository(&self, job: JobId) -> PathBuf {
        self.job_dir(job).join("git")
    }
}

pub struct LocalGit {
    layout: GitLayout,
    /// Whether workspaces can be read here at all (`bind`, or a git Pod).
    enabled: bool,
    credentials: RemoteCredentials,
    limits: SnapshotLimits,
    /// Diffs longer than this are cut.
    max_diff_bytes: usize,
}

impl LocalGit {
    pub fn new(layout: GitLayout, enabled: bool, credentials: RemoteCredentials) -> LocalGit {
        LocalGit {
            layout,
            enabled,
            credentials,
            limits: SnapshotLimits::default(),
            max_diff_bytes: 2 * 1024 * 1024,
        }
    }

    pub fn with_limits(mut self, limits: SnapshotLimits) -> LocalGit {
        self.limits = limits;
        self
    }

    fn require_readable_workspaces(&self) -> Result<()> {
        if self.enabled {
            Ok(())
        } else {
            Err(SourceError::Unsupported(
                "workspaces are Docker volumes the orchestrator cannot read \
                 (workspace.mount_type: bind makes snapshots, diffs and Git sources possible)"
                    .to_owned(),
            ))
        }
    }

    async fn read_ref(&self, repository: &Path, name: &str) -> Option<String> {
        if !repository.exists() {
            return None;
        }
        let mut command = git(Some(repository));
        command.args(["rev-parse", "--verify", "--quiet", "--end-of-options", name]);
        let found = run(command, "reading a ref").await.ok()?;
        Some(found.trim().to_owned()).filter(|id| !id.is_empty())
    }

    /// Clones `url` into the job's repository, unless it is there already.
    /// Cloned beside it and renamed, so a half-done clone is never taken
    /// for a whole one.
    async fn clone_once(&self, job: JobId, url: &str) -> Result<PathBuf> {
        let repository = self.layout.repository(job);
        if repository.exists() {
            return Ok(repository);
        }
        let partial = repository.with_file_name("git.partial");
        remove_dir_if_present(&partial).await?;
        create_dir(&self.layout.job_dir(job)).await?;
        let mut clone = git(None);
        clone.args(["clone", "--bare", "--no-local", "--quiet"]);
        with_header(&mut clone, self.credentials.header_for(url).as_ref());
        clone.arg("--").arg(url).arg(&partial);
        run(clone, &format!("cloning {url}")).await?;
        tokio::fs::rename(&partial, &repository)
            .await
            .map_err(transient("move the clone into place"))?;
        Ok(repository)
    }

    /// A repository of our own for a job without a source (`init` again is harmless).
    async fn init_once(&self, job: JobId) -> Result<PathBuf> {
        let repository = self.layout.repository(job);
        create_dir(&self.layout.job_dir(job)).await?;
        let mut init = git(None);
        // No template: no sample hooks (never run) nor files to copy.
        init.args(["init", "--bare", "--quiet", "--template=", "--"])
            .arg(&repository);
        run(init, "creating the job's repository").await?;
        Ok(repository)
    }

    /// The commit `reference` names: a branch, a tag or a commit id; the
    /// default branch's tip when there is none.
    async fn resolve(&self, repository: &Path, reference: Option<&str>) -> Result<String> {
        let candidates: Vec<String> = match reference {
            None => vec!["HEAD".to_owned()],
            Some(reference) => vec![
                format!("refs/heads/{reference}"),
                format!("refs/tags/{reference}"),
                reference.to_owned(),
            ],
        };
        for candidate in &candidates {
            if let Some(commit) = self
                .read_ref(repository, &format!("{candidate}^{{commit}}"))
                .await
            {
                return Ok(commit);
            }
        }
        Err(SourceError::Permanent(format!(
            "the source has no branch, tag or commit '{}'",
            reference.unwrap_or("HEAD")
        )))
    }

    /// Writes the base's files into the (emptied) workspace: the bytes of
    /// the blobs, with no filter or line-ending conversion.
    async fn fill_workspace(&self, repository: &Path, workspace: &Path, base: &str) -> Result<()> {
        create_dir(workspace).await?;
        clear_dir(workspace).await?;
        let index = repository.join("icarus-checkout.index");
        let mut read_tree = git(Some(repository));
        read_tree
            .arg("--work-tree")
            .arg(workspace)
            .args(["read-tree", "--reset", "-u", "--end-of-options", base])
            .env("GIT_INDEX_FILE", &index);
        run(read_tree, "checking out the base commit").await?;
        remove_file_if_present(&index).await?;
        open_to_every_user(workspace).await
    }

    /// Base → snapshot as a unified diff, with what was left out on top.
    async fn diff(
        &self,
        repository: &Path,
        base: &str,
        tree: &str,
        excluded: &[Excluded],
    ) -> Result<CapturedDiff> {
        let mut diff = git(Some(repository));
        diff.args([
            "diff-tree",
            "-p",
            "-r",
            "-M",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            "--end-of-options",
            base,
            tree,
        ]);
        let text = run(diff, "computing the diff").await?;
        let mut notes: String = excluded
            .iter()
            .map(|e| {
                format!(
                    "{EXCLUDED_MARKER}{}: {}\n",
                    e.path.replace('\n', "\\n"),
                    e.why
                )
            })
            .collect();
        notes.push_str(&text);
        Ok(cut(notes, self.max_diff_bytes))
    }

    async fn commit_of(&self, repository: &Path, request: &PublishRequest) -> Result<String> {
        for id in [&request.base, &request.snapshot] {
            if !is_object_id(id) {
                return Err(SourceError::Permanent(format!(
                    "'{id}' is not a Git object id"
                )));
            }
        }
        let date = format!("{} +0000", request.committed_at.timestamp());
        let mut commit = git(Some(repository));
        commit
            .args([
                "commit-tree",
                "-p",
                &request.base,
                "-F",
                "-",
                &request.snapshot,
            ])
            .env("GIT_AUTHOR_NAME", &request.author_name)
            .env("GIT_AUTHOR_EMAIL", &request.author_email)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_NAME", &request.author_name)
            .env("GIT_COMMITTER_EMAIL", &request.author_email)
            .env("GIT_COMMITTER_DATE", &date);
        let id = run_with_input(
            commit,
            "committing the snapshot",
            Some(request.message.as_bytes()),
        )
        .await?;
        Ok(id.trim().to_owned())
    }
}

/// The steps themselves: local git finishes each before it answers (what
/// a git Pod runs, and what [`SourceControl`] gives as `Done` in local mode).
impl LocalGit {
    /// See [`SourceControl::checkout`].
    pub async fn checkout(&self, job: JobId, source: &JobSource) -> Result<String> {
        self.require_readable_workspaces()?;
        let repository = self.layout.repository(job);
        if let Some(base) = self.read_ref(&repository, BASE_REF).await {
            return Ok(base);
        }
        let repository = self.clone_once(job, &source.repository).await?;
        let base = self
            .resolve(&repository, source.reference.as_deref())
            .await?;
        self.fill_workspace(&repository, &self.layout.workspace(job), &base)
            .await?;
        let mut record = git(Some(&repository));
        record.args(["update-ref", BASE_REF, &base]);
        run(record, "recording the base commit").await?;
        Ok(base)
    }

    /// See [`SourceControl::snapshot`].
    pub async fn snapshot(&self, job: JobId, base: Option<&str>) -> Result<Snapshot> {
        self.require_readable_workspaces()?;
        let repository = match base {
            Some(_) if self.layout.repository(job).exists() => self.layout.repository(job),
            Some(_) => {
                return Err(SourceError::Permanent(
                    "the job's repository is missing: its checkout was lost".to_owned(),
                ));
            }
            None => self.init_once(job).await?,
        };
        let workspace = self.layout.workspace(job);
        let limits = self.limits;
        let into = repository.clone();
        let snapshot::Recorded { tree, excluded } =
            tokio::task::spawn_blocking(move || snapshot::record(&into, &workspace, limits))
                .await
                .map_err(|e| SourceError::transient("the snapshot stopped", e))??;
        let diff = self
            .diff(&repository, base.unwrap_or(EMPTY_TREE), &tree, &excluded)
            .await?;
        Ok(Snapshot { tree, diff })
    }

    /// See [`SourceControl::publish`].
    pub async fn publish(&self, request: &PublishRequest) -> Result<Published> {
        let repository = self.layout.repository(request.job);
        if !repository.exists() {
            return Err(SourceError::Permanent(
                "the job's repository is missing: nothing to publish".to_owned(),
            ));
        }
        let commit = self.commit_of(&repository, request).await?;
        let branch_ref = format!("refs/heads/{}", request.branch);
        let mut push = git(Some(&repository));
        push.args(["push", "--quiet", "--porcelain", "--no-verify"]);
        with_header(
            &mut push,
            self.credentials.header_for(&request.repository).as_ref(),
        );
        push.arg("--")
            .arg(&request.repository)
            .arg(format!("{commit}:{branch_ref}"));
        run(push, &format!("pushing {}", request.branch)).await?;
        Ok(Published {
            branch: request.branch.clone(),
            commit,
        })
    }
}

#[async_trait]
impl SourceControl for LocalGit {
    async fn checkout(&self, job: JobId, source: &JobSource) -> Result<Progress<String>> {
        LocalGit::checkout(self, job, source)
            .await
            .map(Progress::Done)
    }

    async fn snapshot(&self, job: JobId, base: Option<&str>) -> Result<Progress<Snapshot>> {
        LocalGit::snapshot(self, job, base)
            .await
            .map(Progress::Done)
    }

    async fn publish(&self, request: &PublishRequest) -> Result<Progress<Published>> {
        LocalGit::publish(self, request).await.map(Progress::Done)
    }

    async fn discard(&self, job: JobId) -> Result<()> {
        let repository = self.layout.repository(job);
        remove_dir_if_present(&repository).await?;
        remove_dir_if_present(&repository.with_file_name("git.partial")).await
    }
}

/// Forty (SHA-1) or sixty-four (SHA-256) hex digits.
fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
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
        "{TRUNCATION_MARKER}{} more bytes not shown\n",
        text.len() - end
    ));
    CapturedDiff {
        text: kept,
        truncated: true,
    }
}

fn transient(what: &'static str) -> impl Fn(std::io::Error) -> SourceError {
    move |error| SourceError::transient(what, error)
}

async fn create_dir(path: &Path) -> Result<()> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(transient("create a directory"))
}

async fn remove_dir_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(transient("remove a directory")(error)),
    }
}

async fn remove_file_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(transient("remove a file")(error)),
    }
}

/// Removes everything inside `path`, keeping `path` (it may be a mount
/// point). Before the builder starts the workspace holds at most a
/// half-done checkout of our own.
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
        let is_dir = tokio::fs::symlink_metadata(&entry_path)
            .await
            .is_ok_and(|m| m.is_dir());
        let removed = if is_dir {
            tokio::fs::remove_dir_all(&entry_path).await
        } else {
            tokio::fs::remove_file(&entry_path).await
        };
        removed.map_err(transient("clear a half-done checkout"))?;
    }
    Ok(())
}

/// Agents may run as any user: the checkout is theirs to change.
async fn open_to_every_user(path: &Path) -> Result<()> {
    let mut chmod = std::process::Command::new("chmod");
    chmod.args(["-R", "a+rwX", "--"]).arg(path);
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
    fn relative_roots_are_made_absolute_and_kept_apart() {
        let layout = GitLayout::new("data/workspaces".into(), "data/repositories".into());
        let job = JobId::new_random();
        assert!(layout.workspace(job).is_absolute());
        assert!(
            layout
                .workspace(job)
                .ends_with(format!("data/workspaces/{job}"))
        );
        assert!(
            layout
                .repository(job)
                .ends_with(format!("data/repositories/{job}/git"))
        );
    }

    #[test]
    fn a_short_diff_is_kept_whole() {
        let diff = cut("a\n".to_owned(), 14);
        assert_eq!(diff.text, "a\n");
        assert!(!diff.truncated);
    }
}
