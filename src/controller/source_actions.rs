//! What the controller does with a job's code: check it out, record the
//! builder's work as a snapshot (and its diff for review), publish exactly
//! that snapshot. Each returns a [`Fact`] for the planner when it learned
//! something (a base commit, a snapshot, a pushed commit, a permanent
//! failure), or that the step is still running: then there is no fact, and
//! the job is looked at again when the step changes. Nothing here waits.

use crate::config::PublishConfig;
use crate::job::workload::{PublishedChange, SnapshotTaken};
use crate::job::{Job, timestamp_now};
use crate::source::forge::{self, Forge, PullRequest};
use crate::source::patch::NO_DIFF_MARKER;
use crate::source::{CapturedDiff, Progress, PublishRequest, SourceError};
use crate::store::DiffRecord;

use super::fact::{Applied, Fact};
use super::{Context, ControllerError};

/// The trailer naming the job a published commit is for.
pub const JOB_TRAILER: &str = "Icarus-Job";
/// The trailer naming the snapshot a published commit holds.
pub const SNAPSHOT_TRAILER: &str = "Icarus-Snapshot";

/// A source failure that retrying cannot fix becomes a fact; others are errors.
fn source_outcome<T>(
    result: Result<T, SourceError>,
    fact: impl FnOnce(T) -> Fact,
) -> Result<Applied, ControllerError> {
    match result {
        Ok(value) => Ok(Applied::Learned(fact(value))),
        Err(error) if error.is_permanent() => Ok(Applied::Learned(Fact::SourceFailed(
            super::error_chain(&error),
        ))),
        Err(error) => Err(error.into()),
    }
}

/// A step's answer once it has one; `None` while it runs.
fn answered<T>(result: Result<Progress<T>, SourceError>) -> Option<Result<T, SourceError>> {
    match result {
        Ok(Progress::Done(value)) => Some(Ok(value)),
        Ok(Progress::Running) => None,
        Err(error) => Some(Err(error)),
    }
}

#[tracing::instrument(level = "info", name = "git", skip_all, fields(step = "checkout"))]
pub(super) async fn checkout(context: &Context, job: &Job) -> Result<Applied, ControllerError> {
    let Some(source) = &job.spec.source else {
        return Ok(Applied::Done);
    };
    let Some(result) = answered(context.source.checkout(job.id, source).await) else {
        tracing::debug!("the checkout is under way");
        return Ok(Applied::Running);
    };
    if let Ok(base) = &result {
        tracing::info!(repository = %source.repository, %base, "checked out the source");
    }
    source_outcome(result, Fact::BaseCommit)
}

/// Records the builder's work and keeps its diff for review. Where
/// workspaces cannot be read (Docker volumes) the job goes on without a
/// snapshot, and the diff record says why.
#[tracing::instrument(level = "info", name = "git", skip_all, fields(step = "take_snapshot"))]
pub(super) async fn take_snapshot(
    context: &Context,
    job: &Job,
) -> Result<Applied, ControllerError> {
    let base = job.status.source.base_commit.as_deref();
    let Some(result) = answered(context.source.snapshot(job.id, base).await) else {
        tracing::debug!("the snapshot is under way");
        return Ok(Applied::Running);
    };
    let (record, taken) = match result {
        Ok(snapshot) => {
            tracing::info!(tree = %snapshot.tree, "recorded the builder's work");
            let tree = snapshot.tree;
            let record = diff_record(job, Some(tree.clone()), snapshot.diff);
            (record, SnapshotTaken::Tree(tree))
        }
        Err(SourceError::Unsupported(why)) => {
            tracing::warn!(%why, "no snapshot for this job");
            let text = format!("{NO_DIFF_MARKER}{why}\n");
            let record = diff_record(
                job,
                None,
                CapturedDiff {
                    text,
                    truncated: false,
                },
            );
            (record, SnapshotTaken::Unreadable)
        }
        Err(error) => return source_outcome(Err(error), Fact::Snapshot),
    };
    context.store.save_diff(job.id, &record).await?;
    Ok(Applied::Learned(Fact::Snapshot(taken)))
}

fn diff_record(job: &Job, snapshot: Option<String>, diff: CapturedDiff) -> DiffRecord {
    DiffRecord {
        base_commit: job.status.source.base_commit.clone(),
        snapshot,
        diff: diff.text,
        truncated: diff.truncated,
        created_at: timestamp_now(),
    }
}

#[tracing::instrument(level = "info", name = "git", skip_all, fields(step = "publish"))]
pub(super) async fn publish(context: &Context, job: &Job) -> Result<Applied, ControllerError> {
    let Some(request) = publish_request(job, &context.settings.publish) else {
        let why = "the job has no source, base or snapshot to publish".to_owned();
        return Ok(Applied::Learned(Fact::SourceFailed(why)));
    };
    let Some(result) = answered(context.source.publish(&request).await) else {
        tracing::debug!("the publish is under way");
        return Ok(Applied::Running);
    };
    match &result {
        Ok(published) => {
            tracing::info!(branch = %published.branch, commit = %published.commit, "published")
        }
        Err(error) => tracing::warn!(error = %super::error_chain(error), "publishing failed"),
    }
    let pull_request = match &result {
        Ok(published) => open_pull_request(job, &published.branch, &context.settings.publish).await,
        Err(_) => None,
    };
    source_outcome(result, |published| {
        Fact::Published(PublishedChange {
            branch: published.branch,
            commit: published.commit,
            pull_request,
        })
    })
}

/// When pull requests are enabled: opens one for the pushed branch (or
/// finds it open). A forge that refuses does not undo the push; the job
/// completes and its message says why there is no pull request.
async fn open_pull_request(
    job: &Job,
    branch: &str,
    settings: &PublishConfig,
) -> Option<Result<String, String>> {
    let config = &settings.pull_request;
    if !config.enabled {
        return None;
    }
    let source = job.spec.source.as_ref()?;
    let repository = Some(config.repository.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| forge::repository_of(&source.repository));
    let Some(repository) = repository.filter(|r| forge::is_repository_name(r)) else {
        let why = format!("{} is not a repository on a forge", source.repository);
        return Some(Err(why));
    };
    if !forge::is_allowed(&config.allowed_repositories, &repository) {
        let why = format!("{repository} is not in publish.pull_request.allowed_repositories");
        return Some(Err(why));
    }
    let base = Some(config.base.clone())
        .filter(|b| !b.is_empty())
        .or_else(|| source.reference.clone())
        .unwrap_or_else(|| "main".to_owned());
    let request = PullRequest {
        repository,
        head: branch.to_owned(),
        base,
        title: job
            .spec
            .task
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(120)
            .collect(),
        body: format!(
            "{}

Opened by Icarus for job {}.",
            job.spec.task, job.id
        ),
    };
    let opened = Forge::new(&config.api_url, settings.token())
        .open(&request)
        .await;
    match &opened {
        Ok(url) => tracing::info!(%url, "pull request open"),
        Err(error) => tracing::warn!(error = %super::error_chain(error), "pull request not opened"),
    }
    Some(opened.map_err(|e| e.to_string()))
}

/// A trailer's value on one line, so no value can forge another trailer.
fn one_line(value: &str) -> String {
    value.replace(['\n', '\r'], " ")
}

/// Everything the commit and the push are made of, from the job's record
/// alone: the remote recorded at spawn, the base, the approved snapshot;
/// the task on the first line of the message and the job, the snapshot and
/// the approval in trailers. None for a job with nothing to publish.
fn publish_request(job: &Job, settings: &PublishConfig) -> Option<PublishRequest> {
    let repository = job.spec.source.as_ref()?.repository.clone();
    let base = job.status.source.base_commit.clone()?;
    let snapshot = job.status.source.snapshot.clone()?;
    let first_task_line = job.spec.task.lines().next().unwrap_or_default();
    let subject: String = settings
        .message_template
        .replace("{job_id}", &job.id.to_string())
        .replace("{task}", first_task_line)
        .chars()
        .take(120)
        .collect();
    let mut message = format!(
        "{subject}\n\n{}\n\n{JOB_TRAILER}: {}\n{SNAPSHOT_TRAILER}: {snapshot}",
        job.spec.task, job.id
    );
    // Every approval counted, in the order they came: a trailer group each.
    let approvers = job.tally().approvers;
    for approval in &approvers {
        if let Some(by) = &approval.decided_by {
            message.push_str(&format!("\nApproved-by: {}", one_line(by)));
        }
        message.push_str(&format!(
            "\nApproved-at: {}",
            approval.decided_at.to_rfc3339()
        ));
        let comment = one_line(&approval.comment);
        if !comment.trim().is_empty() {
            message.push_str(&format!("\nApproval-comment: {comment}"));
        }
    }
    // Dated at the approval that completed the count: the same commit
    // whenever it is made again.
    let committed_at = approvers
        .last()
        .map_or(job.created_at, |approval| approval.decided_at);
    Some(PublishRequest {
        job: job.id,
        repository,
        base,
        snapshot,
        branch: format!("{}{}", settings.branch_prefix, job.id),
        message,
        author_name: settings.author_name.clone(),
        author_email: settings.author_email.clone(),
        committed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::job::fixtures::at;
    use crate::job::{ApprovalDecision, JobSource, Phase};

    fn approved_job(decided_by: &str, comment: &str) -> Job {
        let mut job = Job::pending()
            .with_snapshot("1111111111111111111111111111111111111111")
            .in_phase(Phase::Approved, at(1));
        job.spec.source = Some(JobSource {
            repository: "https://github.com/acme/api.git".to_owned(),
            reference: None,
        });
        job.status.source.base_commit = Some("2222222222222222222222222222222222222222".into());
        job.spec.approvals.push(ApprovalDecision {
            approved: true,
            comment: comment.to_owned(),
            decided_at: at(5),
            decided_by: Some(decided_by.to_owned()),
            snapshot: job.status.source.snapshot.clone(),
        });
        job
    }

    #[test]
    fn the_published_commit_names_every_approver_in_a_trailer_and_is_dated_at_the_last() {
        let publish = Config::embedded_default().unwrap().publish;
        let mut job = approved_job("alice", "looks right");
        job.spec.required_approvals = 2;
        job.spec.approvals.push(ApprovalDecision {
            approved: true,
            comment: String::new(),
            decided_at: at(9),
            decided_by: Some("bob".to_owned()),
            snapshot: job.status.source.snapshot.clone(),
        });
        let request = publish_request(&job, &publish).unwrap();
        let approvers: Vec<&str> = request
            .message
            .lines()
            .filter_map(|line| line.strip_prefix("Approved-by: "))
            .collect();
        assert_eq!(approvers, ["alice", "bob"], "{}", request.message);
        assert!(request.message.contains("Approval-comment: looks right"));
        assert_eq!(request.committed_at, at(9));
    }

    #[test]
    fn the_publish_request_is_the_recorded_remote_base_and_snapshot_dated_at_the_approval() {
        let publish = Config::embedded_default().unwrap().publish;
        let request = publish_request(&approved_job("alice", "ok"), &publish).unwrap();
        assert_eq!(request.repository, "https://github.com/acme/api.git");
        assert_eq!(request.base, "2".repeat(40));
        assert_eq!(request.snapshot, "1".repeat(40));
        assert_eq!(request.committed_at, at(5));
        assert!(
            request
                .message
                .contains(&format!("{SNAPSHOT_TRAILER}: {}", "1".repeat(40)))
        );
    }

    #[test]
    fn no_value_can_forge_a_trailer_line() {
        let publish = Config::embedded_default().unwrap().publish;
        let forged = format!("alice\n{SNAPSHOT_TRAILER}: {}", "3".repeat(40));
        let job = approved_job(&forged, "fine\r\nApproved-by: root");
        let message = publish_request(&job, &publish).unwrap().message;
        let trailers: Vec<&str> = message
            .lines()
            .filter(|line| line.starts_with(SNAPSHOT_TRAILER) || line.starts_with("Approved-by"))
            .collect();
        assert_eq!(trailers.len(), 2, "{message}");
        assert!(
            !message.contains(&format!("\n{SNAPSHOT_TRAILER}: 333")),
            "{message}"
        );
    }

    #[test]
    fn a_job_without_a_snapshot_has_nothing_to_publish() {
        let publish = Config::embedded_default().unwrap().publish;
        let mut job = approved_job("alice", "");
        job.status.source.snapshot = None;
        assert!(publish_request(&job, &publish).is_none());
    }
}
