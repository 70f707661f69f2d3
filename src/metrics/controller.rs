//! What the controller records: transitions, reconciles, the work queue,
//! agents' starts and runs, the hand-over from builder to checker and the
//! wait for admission.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::job::plan::Transition;
use crate::job::timers::Stretch;
use crate::job::{Reason, Role};

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StretchLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// It returned when to look again (a lost compare-and-swap included:
    /// it is planned again at once).
    Success,
    /// It failed, and is retried after a backoff.
    Error,
}

impl ReconcileOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ReconcileOutcome::Success => "success",
            ReconcileOutcome::Error => "error",
        }
    }
}

/// 1 ms to about 16 s: a reconcile, a wait in the work queue.
fn short_durations() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// 5 ms to about 20 s: an agent's start, the hand-over.
fn starts() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// 1 s to about 2.3 hours: an agent's run, a job's wait for admission.
fn long_durations() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

/// 1 s to about 12 days: a part of a job's life, a wait on a person included.
fn phase_durations() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 21))
}

/// The controller's families.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    transitions: Family<TransitionLabels, Counter>,
    reconcile_duration: HistogramFamily<OutcomeLabels>,
    reconcile_errors: Family<KindLabels, Counter>,
    admission_wait: Histogram,
    handover: Histogram,
    agent_start: HistogramFamily<RoleLabels>,
    agent_run: HistogramFamily<RoleLabels>,
    phase_duration: HistogramFamily<StretchLabels>,
}

impl ControllerMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = ControllerMetrics {
            transitions: Family::default(),
            reconcile_duration: Family::new_with_constructor(short_durations),
            reconcile_errors: Family::default(),
            admission_wait: long_durations(),
            handover: starts(),
            agent_start: Family::new_with_constructor(starts),
            agent_run: Family::new_with_constructor(long_durations),
            phase_duration: Family::new_with_constructor(phase_durations),
        };
        registry.register(
            "job_transitions",
            "Phase changes the controller recorded, by phase left, phase entered and reason (a retry is a change to the same phase)",
            metrics.transitions.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile took, by outcome",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed (and are retried after a backoff), by the kind of error",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "job_admission_wait_seconds",
            "From a job's submission to its admission (pending to building)",
            metrics.admission_wait.clone(),
        );
        registry.register(
            "job_handover_seconds",
            "From the builder's exit (as its runtime reports it) to the controller starting the checker",
            metrics.handover.clone(),
        );
        registry.register(
            "agent_start_duration_seconds",
            "How long the runtime took to start an agent (create and start, or start alone when it was created ahead), by role",
            metrics.agent_start.clone(),
        );
        registry.register(
            "agent_run_duration_seconds",
            "From an agent's start to its exit, by role",
            metrics.agent_run.clone(),
        );
        registry.register(
            "job_phase_duration_seconds",
            "How long jobs spent in each part of their life, observed when it ends: phase queued (submission to admission), building, checking, awaiting_approval (to the decision or the job's end), total (submission to the end)",
            metrics.phase_duration.clone(),
        );
        metrics
    }

    /// A part of a job's life that ended after `took`.
    pub fn phase_ended(&self, stretch: Stretch, took: Duration) {
        self.phase_duration
            .get_or_create(&StretchLabels {
                phase: stretch.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// A transition the controller wrote.
    pub fn transition(&self, transition: &Transition) {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: transition.from.as_str(),
                to: transition.to.as_str(),
                reason: reason_label(&transition.reason),
            })
            .inc();
    }

    /// A reconcile that ended with `outcome` after `took`; a failed one's
    /// `error_kind` is counted too.
    pub fn reconciled(
        &self,
        took: Duration,
        outcome: ReconcileOutcome,
        error_kind: Option<&'static str>,
    ) {
        self.reconcile_duration
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .observe(took.as_secs_f64());
        if let Some(kind) = error_kind {
            self.reconcile_errors
                .get_or_create(&KindLabels { kind })
                .inc();
        }
    }

    pub fn admission_waited(&self, waited: Duration) {
        self.admission_wait.observe(waited.as_secs_f64());
    }

    pub fn handed_over(&self, took: Duration) {
        self.handover.observe(took.as_secs_f64());
    }

    pub fn agent_started(&self, role: Role, took: Duration) {
        self.agent_start
            .get_or_create(&RoleLabels {
                role: role.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn agent_ran(&self, role: Role, ran: Duration) {
        self.agent_run
            .get_or_create(&RoleLabels {
                role: role.as_str(),
            })
            .observe(ran.as_secs_f64());
    }
}

/// The reason as written everywhere, but a reason another version wrote,
/// which could be any text, as one value.
fn reason_label(reason: &Reason) -> String {
    match reason {
        Reason::Unrecognized(_) => "Unrecognized".to_owned(),
        known => known.to_string(),
    }
}

/// The work queue's families, after client-go's `workqueue_*`.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    depth: Gauge,
    adds: Counter,
    retries: Counter,
    queue_duration: Histogram,
}

impl QueueMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = QueueMetrics {
            depth: Gauge::default(),
            adds: Counter::default(),
            retries: Counter::default(),
            queue_duration: short_durations(),
        };
        registry.register(
            "workqueue_depth",
            "Jobs waiting in the controller's work queue for a worker",
            metrics.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Jobs put in the controller's work queue (a job already waiting is not put in again)",
            metrics.adds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Jobs put back in the work queue after a failed reconcile",
            metrics.retries.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long a job waited in the work queue before a worker took it",
            metrics.queue_duration.clone(),
        );
        metrics
    }

    /// A key was put in the queue, which now holds `depth`.
    pub fn added(&self, depth: usize) {
        self.adds.inc();
        self.set_depth(depth);
    }

    /// A worker took a key that waited `waited`; `depth` are left.
    pub fn taken(&self, waited: Duration, depth: usize) {
        self.queue_duration.observe(waited.as_secs_f64());
        self.set_depth(depth);
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    pub fn set_depth(&self, depth: usize) {
        self.depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_another_version_wrote_is_one_label_value() {
        assert_eq!(
            reason_label(&Reason::from("SomethingNew: with text")),
            "Unrecognized"
        );
        assert_eq!(
            reason_label(&Reason::Failed(Role::Builder)),
            "BuilderFailed"
        );
    }
}
