//! Tells people when a job needs them or is done: a webhook call on every
//! transition to `awaiting_approval`, `completed`, `failed`, `rejected` or
//! `expired`, and on the reminder of a job awaiting approval
//! (`approval.reminder_fraction`; event `job.approval_reminder`).
//!
//! The job event log is the outbox. Each target (webhook URL) has a cursor in
//! the store: the last event it was sent. A task per target sends what lies
//! after its cursor, in order, retrying each message with exponential backoff,
//! and moves the cursor on; store changes wake it, and a timer covers a missed
//! wake-up. A slow or dead receiver holds up only its own queue, never a job,
//! and a crash loses nothing: the next start resumes at the cursor (a message
//! whose delivery finished just before the crash may be sent twice). A new
//! target starts at the end of the log rather than replaying history.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::NotificationsConfig;
use crate::job::{Job, JobId, Phase, Reason};
use crate::metrics::{NotificationMetrics, NotificationOutcome, NotificationTarget};
use crate::store::{JobEvent, Store, StoreError, StoreEvent};

/// The phases someone wants to hear about.
const NOTIFIED: [Phase; 5] = [
    Phase::AwaitingApproval,
    Phase::Completed,
    Phase::Failed,
    Phase::Rejected,
    Phase::Expired,
];
/// Discord refuses longer messages.
const DISCORD_LIMIT: usize = 2000;
/// How often a target looks at the log without being woken.
const POLL_FALLBACK: Duration = Duration::from_secs(5);
/// Events read from the log at a time.
const PAGE: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `{"event": "job.completed", "job_id": ..., ...}`.
    Generic,
    /// `{"content": "..."}`, what a Discord webhook accepts.
    Discord,
}

impl Format {
    /// The kind of target messages in this format go to, for the metrics.
    fn target(self) -> NotificationTarget {
        match self {
            Format::Generic => NotificationTarget::Webhook,
            Format::Discord => NotificationTarget::Discord,
        }
    }
}

#[derive(Debug, Clone)]
struct Target {
    url: String,
    format: Format,
}

impl Target {
    /// The cursor's key: a digest, since webhook URLs can embed tokens.
    fn key(&self) -> String {
        Sha256::digest(self.url.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The configured targets' senders: run while this replica leads, so one
/// replica notifies (a handover may send a message twice; at-least-once).
#[derive(Clone)]
pub struct Notifier {
    targets: Vec<Target>,
    client: reqwest::Client,
    max_attempts: u32,
    first_delay: Duration,
    metrics: NotificationMetrics,
}

impl Notifier {
    /// The notifier `config` asks for, counting its messages in `metrics`;
    /// none if it names no target.
    pub fn from_config(
        config: &NotificationsConfig,
        metrics: NotificationMetrics,
    ) -> Option<Notifier> {
        let mut targets: Vec<Target> = config
            .webhooks
            .iter()
            .map(|url| Target {
                url: url.clone(),
                format: Format::Generic,
            })
            .collect();
        if let Some(url) = config.discord_webhook_url() {
            targets.push(Target {
                url,
                format: Format::Discord,
            });
        }
        if targets.is_empty() {
            return None;
        }
        let Ok(client) = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        else {
            tracing::error!("no HTTP client for notifications; none will be sent");
            return None;
        };
        Some(Notifier {
            targets,
            client,
            max_attempts: config.max_attempts.max(1),
            first_delay: Duration::from_millis(config.retry_delay_ms),
            metrics,
        })
    }

    /// One sender per target on `store`, until `shutdown`; returns early if
    /// a sender ends before it (a failure, which the caller reports).
    pub fn run(
        &self,
        store: Store,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let notifier = self.clone();
        async move {
            let mut senders = JoinSet::new();
            for target in notifier.targets {
                let sender = Sender {
                    store: store.clone(),
                    client: notifier.client.clone(),
                    max_attempts: notifier.max_attempts,
                    first_delay: notifier.first_delay,
                    target,
                    metrics: notifier.metrics.clone(),
                };
                senders.spawn(sender.run(store.subscribe(), shutdown.clone()));
            }
            senders.join_next().await;
            if shutdown.is_cancelled() {
                while senders.join_next().await.is_some() {}
            }
        }
    }
}

/// Sends one target's messages, in order, from its cursor.
struct Sender {
    store: Store,
    client: reqwest::Client,
    max_attempts: u32,
    first_delay: Duration,
    target: Target,
    metrics: NotificationMetrics,
}

impl Sender {
    async fn run(self, mut wakes: broadcast::Receiver<StoreEvent>, shutdown: CancellationToken) {
        loop {
            let caught_up = match self.send_pending(&shutdown).await {
                Ok(caught_up) => caught_up,
                Err(error) => {
                    tracing::warn!(error = %error, "notifications wait for the database");
                    true
                }
            };
            if shutdown.is_cancelled() {
                return;
            }
            if caught_up {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    woken = wakes.recv() => {
                        if matches!(woken, Err(broadcast::error::RecvError::Closed)) {
                            return;
                        }
                    }
                    _ = tokio::time::sleep(POLL_FALLBACK) => {}
                }
            }
        }
    }

    /// Sends one page after the cursor; true when nothing was left to send.
    async fn send_pending(&self, shutdown: &CancellationToken) -> Result<bool, StoreError> {
        let key = self.target.key();
        let cursor = match self.store.notification_cursor(&key).await? {
            Some(cursor) => cursor,
            None => {
                let end = self.store.last_event_id().await?;
                self.store.set_notification_cursor(&key, end).await?;
                end
            }
        };
        let events = self.store.events_after(cursor, &NOTIFIED, PAGE).await?;
        for (id, job_id, event) in &events {
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            let job = self.store.get_job(*job_id).await?;
            let body = body(self.target.format, *job_id, job.as_ref(), event);
            if !self.deliver(&body, shutdown).await {
                // Interrupted: the cursor stays, the next start sends it.
                return Ok(false);
            }
            self.store.set_notification_cursor(&key, *id).await?;
        }
        Ok(events.is_empty())
    }

    /// A few tries, each wait twice the last; a message that never gets
    /// through is logged and given up, so one bad message cannot stall the
    /// rest. False only when shutdown interrupted it (it is still owed).
    async fn deliver(&self, body: &Value, shutdown: &CancellationToken) -> bool {
        let mut delay = self.first_delay;
        let target = self.target.format.target();
        for attempt in 1..=self.max_attempts {
            match self.client.post(&self.target.url).json(body).send().await {
                Ok(response) if response.status().is_success() => {
                    self.metrics.message(target, NotificationOutcome::Delivered);
                    return true;
                }
                Ok(response) => {
                    tracing::warn!(attempt, status = %response.status(), "webhook refused a notification")
                }
                // Without the URL: it may carry a token (Discord's do).
                Err(error) => {
                    tracing::warn!(attempt, error = %error.without_url(), "webhook unreachable")
                }
            }
            if attempt < self.max_attempts {
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay *= 2;
            }
        }
        tracing::error!(attempts = self.max_attempts, "gave up on a notification");
        self.metrics.message(target, NotificationOutcome::Failed);
        true
    }
}

/// The message for one transition, in a target's format.
fn body(format: Format, id: JobId, job: Option<&Job>, event: &JobEvent) -> Value {
    let task = job.map(|j| j.spec.task.as_str()).unwrap_or_default();
    // A reminder is an event of awaiting_approval to itself: named apart.
    let name = if event.reason == Reason::ApprovalReminder {
        "job.approval_reminder".to_owned()
    } else {
        format!("job.{}", event.to)
    };
    match format {
        Format::Generic => json!({
            "event": name,
            "job_id": id.to_string(),
            "status": event.to,
            "previous_status": event.from,
            "reason": event.reason,
            "message": event.message,
            "task": task,
            "branch": job.and_then(|j| j.status.source.branch.clone()),
            "commit": job.and_then(|j| j.status.source.commit.clone()),
            "timestamp": event.created_at,
        }),
        Format::Discord => {
            let first_line = task.lines().next().unwrap_or_default();
            let mut content = format!(
                "**Icarus** job `{id}` is **{}** ({}): {first_line}",
                event.to, event.reason
            );
            if let Some(message) = &event.message {
                content.push_str(&format!("\n> {message}"));
            }
            let content: String = content.chars().take(DISCORD_LIMIT).collect();
            json!({"username": "Icarus", "content": content})
        }
    }
}
