//! What the controller does with a job's code: check it out, capture the
//! diff for review, publish it. Each returns a [`Fact`] for the planner when
//! it learned something (a base commit, a pushed commit, a permanent failure).

use crate::config::PublishConfig;
use crate::job::workload::PublishedChange;
use crate::job::{Job, timestamp_now};
use crate::source::forge::{self, Forge, PullRequest};
use crate::source::patch::NO_DIFF_MARKER;
use crate::source::{JOB_TRAILER, PublishRequest, SourceError};
use crate::store::DiffRecord;

use super::reconcile::Fact;
use super::{Context, ControllerError};

/// A source failure that retrying cannot fix becomes a fact; others are errors.
fn source_outcome<T>(
    result: Result<T, SourceError>,
    fact: impl FnOnce(T) -> Fact,
) -> Result<Option<Fact>, ControllerError> {
    match result {
        Ok(value) => Ok(Some(fact(value))),
        Err(error) if error.is_permanent() => Ok(Some(Fact::SourceFailed(error.to_string()))),
        Err(error) => Err(error.into()),
    }
}

pub(super) async fn checkout(
    context: &Context,
    job: &Job,
) -> Result<Option<Fact>, ControllerError> {
    let Some(source) = &job.spec.source else {
        return Ok(None);
    };
    let result = context.source.checkout(job.id, source).await;
    if let Ok(base) = &result {
        tracing::info!(repository = %source.repository, %base, "checked out the source");
    }
    source_outcome(result, Fact::BaseCommit)
}

/// Keeps the change for review. A diff that cannot be made (a workspace in a
/// Docker volume) must not hold the job back: the record then says why.
pub(super) async fn capture_diff(context: &Context, job: &Job) -> Result<(), ControllerError> {
    let (diff, truncated) = match context.source.diff(job.id).await {
        Ok(captured) => (captured.text, captured.truncated),
        Err(error) if error.is_permanent() => {
            tracing::warn!(%error, "no diff for this job");
            (format!("{NO_DIFF_MARKER}{error}\n"), false)
        }
        Err(error) => return Err(error.into()),
    };
    let record = DiffRecord {
        base_commit: job.status.source.base_commit.clone(),
        diff,
        truncated,
        created_at: timestamp_now(),
    };
    context.store.save_diff(job.id, &record).await?;
    Ok(())
}

pub(super) async fn publish(context: &Context, job: &Job) -> Result<Option<Fact>, ControllerError> {
    let request = publish_request(job, &context.settings.publish);
    let result = context.source.publish(&request).await;
    match &result {
        Ok(published) => {
            tracing::info!(branch = %published.branch, commit = %published.commit, "published")
        }
        Err(error) => tracing::warn!(%error, "publishing failed"),
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
    let Some(repository) = repository else {
        let why = format!("{} is not a repository on a forge", source.repository);
        return Some(Err(why));
    };
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
        Err(error) => tracing::warn!(%error, "pull request not opened"),
    }
    Some(opened.map_err(|e| e.to_string()))
}

/// The commit's author, branch and message: the task on the first line, the
/// approval in trailers, and the job trailer that makes a retry find it.
fn publish_request(job: &Job, settings: &PublishConfig) -> PublishRequest {
    let first_task_line = job.spec.task.lines().next().unwrap_or_default();
    let subject: String = settings
        .message_template
        .replace("{job_id}", &job.id.to_string())
        .replace("{task}", first_task_line)
        .chars()
        .take(120)
        .collect();
    let mut message = format!(
        "{subject}\n\n{}\n\n{JOB_TRAILER}: {}",
        job.spec.task, job.id
    );
    if let Some(approval) = &job.spec.approval {
        if let Some(by) = &approval.decided_by {
            message.push_str(&format!("\nApproved-by: {by}"));
        }
        message.push_str(&format!(
            "\nApproved-at: {}",
            approval.decided_at.to_rfc3339()
        ));
        let comment = approval.comment.replace('\n', " ");
        if !comment.trim().is_empty() {
            message.push_str(&format!("\nApproval-comment: {comment}"));
        }
    }
    PublishRequest {
        job: job.id,
        branch: format!("{}{}", settings.branch_prefix, job.id),
        message,
        author_name: settings.author_name.clone(),
        author_email: settings.author_email.clone(),
    }
}
