//! What the usage sampler records: each agent reading by outcome, and how
//! long a whole round over the running agents took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What became of one reading of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    /// Measured and stored.
    Recorded,
    /// The runtime could not say (not running, or it cannot measure).
    Unmeasured,
    /// The runtime or the store failed; logged, and the next round tries again.
    Failed,
}

impl UsageOutcome {
    fn as_str(self) -> &'static str {
        match self {
            UsageOutcome::Recorded => "recorded",
            UsageOutcome::Unmeasured => "unmeasured",
            UsageOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone)]
pub struct UsageMetrics {
    samples: Family<UsageLabels, Counter>,
    round: Histogram,
}

impl UsageMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let samples = Family::default();
        registry.register(
            "usage_samples",
            "Readings of running agents' CPU and memory through the runtime, by outcome",
            Family::clone(&samples),
        );
        let round = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "usage_round_duration_seconds",
            "How long one round of readings over every running agent took",
            round.clone(),
        );
        UsageMetrics { samples, round }
    }

    pub fn sample(&self, outcome: UsageOutcome) {
        self.samples
            .get_or_create(&UsageLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn round(&self, seconds: f64) {
        self.round.observe(seconds);
    }
}
