//! Tells people when a job needs them or is done: a webhook call on every
//! transition to `awaiting_approval`, `completed`, `failed` or `rejected`.
//!
//! It follows the store's change broadcast in a task of its own and delivers
//! each message in another, retrying with exponential backoff, so a slow or
//! dead receiver never holds up the reconcile loop. Deliveries live in
//! memory: a message whose retries are still pending when the process stops
//! is not sent (the job's state and event log are, as always, in the store).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::NotificationsConfig;
use crate::job::plan::Transition;
use crate::job::{Job, Phase};
use crate::store::{Store, StoreEvent};

/// The phases someone wants to hear about.
const NOTIFIED: [Phase; 4] = [
    Phase::AwaitingApproval,
    Phase::Completed,
    Phase::Failed,
    Phase::Rejected,
];
/// Discord refuses longer messages.
const DISCORD_LIMIT: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `{"event": "job.completed", "job_id": ..., ...}`.
    Generic,
    /// `{"content": "..."}`, what a Discord webhook accepts.
    Discord,
}

#[derive(Debug, Clone)]
struct Target {
    url: String,
    format: Format,
}

/// Starts the notifier, if any webhook is configured.
pub fn spawn(
    store: &Store,
    config: &NotificationsConfig,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
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
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let delivery = Delivery {
        client,
        max_attempts: config.max_attempts.max(1),
        first_delay: Duration::from_millis(config.retry_delay_ms),
    };
    let events = store.subscribe();
    Some(tokio::spawn(follow(events, targets, delivery, shutdown)))
}

async fn follow(
    mut events: broadcast::Receiver<StoreEvent>,
    targets: Vec<Target>,
    delivery: Delivery,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(StoreEvent::Transitioned { job, transition })
                if NOTIFIED.contains(&transition.to) =>
            {
                for target in &targets {
                    let body = body(target.format, &job, &transition);
                    let delivery = delivery.clone();
                    let url = target.url.clone();
                    tokio::spawn(async move { delivery.send(&url, &body).await });
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "notifier fell behind; some notifications were not sent"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The message for one transition, in a target's format.
fn body(format: Format, job: &Job, transition: &Transition) -> Value {
    let task = job.spec.task.lines().next().unwrap_or_default();
    match format {
        Format::Generic => json!({
            "event": format!("job.{}", transition.to),
            "job_id": job.id.to_string(),
            "status": transition.to,
            "previous_status": transition.from,
            "reason": transition.reason,
            "message": transition.message,
            "task": job.spec.task,
            "branch": job.status.source.branch,
            "commit": job.status.source.commit,
            "timestamp": job.status.times.finished_at
                .or(job.status.times.awaiting_approval_at)
                .unwrap_or(job.created_at),
        }),
        Format::Discord => {
            let mut content = format!(
                "**Icarus** job `{}` is **{}** ({}): {}",
                job.id, transition.to, transition.reason, task
            );
            if let Some(message) = &transition.message {
                content.push_str(&format!("\n> {message}"));
            }
            let content: String = content.chars().take(DISCORD_LIMIT).collect();
            json!({"username": "Icarus", "content": content})
        }
    }
}

/// How one message is sent: a few tries, each wait twice the last.
#[derive(Clone)]
struct Delivery {
    client: reqwest::Client,
    max_attempts: u32,
    first_delay: Duration,
}

impl Delivery {
    async fn send(&self, url: &str, body: &Value) {
        let mut delay = self.first_delay;
        for attempt in 1..=self.max_attempts {
            match self.client.post(url).json(body).send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::warn!(attempt, status = %response.status(), "webhook refused a notification")
                }
                // Without the URL: it may carry a token (Discord's do).
                Err(error) => {
                    tracing::warn!(attempt, error = %error.without_url(), "webhook unreachable")
                }
            }
            if attempt < self.max_attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        tracing::error!(attempts = self.max_attempts, "gave up on a notification");
    }
}
