//! What the notifier records: each message delivered or given up, by the
//! kind of target (never its URL, which can hold a token).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The kind of target a message went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationTarget {
    Webhook,
    Discord,
}

impl NotificationTarget {
    fn as_str(self) -> &'static str {
        match self {
            NotificationTarget::Webhook => "webhook",
            NotificationTarget::Discord => "discord",
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationOutcome {
    /// The target answered 2xx.
    Delivered,
    /// Every try failed; the message was given up.
    Failed,
}

impl NotificationOutcome {
    fn as_str(self) -> &'static str {
        match self {
            NotificationOutcome::Delivered => "delivered",
            NotificationOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    target: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone)]
pub struct NotificationMetrics {
    messages: Family<NotificationLabels, Counter>,
}

impl NotificationMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let messages = Family::default();
        registry.register(
            "notifications",
            "Notification messages delivered or given up after every try, by kind of target",
            Family::clone(&messages),
        );
        NotificationMetrics { messages }
    }

    pub fn message(&self, target: NotificationTarget, outcome: NotificationOutcome) {
        self.messages
            .get_or_create(&NotificationLabels {
                target: target.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }
}
