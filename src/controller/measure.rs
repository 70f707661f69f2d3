//! What a status about to be written tells the metrics: how long a job
//! waited for admission, how long the hand-over from builder to checker
//! took, how long agents ran, how long each part of the job's life that
//! this write ends took. Worked out before the write, from the job as
//! read, the status planned and what was observed; reported only once the
//! write has landed, so a lost race counts nothing twice.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::plan::Transition;
use crate::job::timers::Stretch;
use crate::job::workload::{Observed, WorkloadState};
use crate::job::{Job, JobStatus, Phase, Role};
use crate::metrics::ControllerMetrics;

/// The durations one write completes.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Measures {
    transition: Option<Transition>,
    /// Submission → admission.
    admission_wait: Option<Duration>,
    /// The builder's exit → the checker's start.
    handover: Option<Duration>,
    /// Agents whose exit this write is the first to record: start → exit.
    runs: Vec<(Role, Duration)>,
    /// Parts of the job's life (queued, building...) this write ends.
    stretches: Vec<(Stretch, Duration)>,
}

impl Measures {
    /// Reports them; call once the write has landed.
    pub(super) fn report(self, metrics: &ControllerMetrics) {
        if let Some(transition) = &self.transition {
            metrics.transition(transition);
        }
        if let Some(waited) = self.admission_wait {
            metrics.admission_waited(waited);
        }
        if let Some(took) = self.handover {
            metrics.handed_over(took);
        }
        for (role, ran) in self.runs {
            metrics.agent_ran(role, ran);
        }
        for (stretch, took) in self.stretches {
            metrics.phase_ended(stretch, took);
        }
    }
}

/// What writing `next` over `job` completes, given what was `observed`.
pub(super) fn measure(
    job: &Job,
    next: &JobStatus,
    transition: Option<&Transition>,
    observed: &Observed,
) -> Measures {
    let moved = |from: Phase, to: Phase| transition.is_some_and(|t| t.from == from && t.to == to);
    let admission_wait = moved(Phase::Pending, Phase::Building)
        .then(|| between(Some(job.created_at), next.times.building_at))
        .flatten();
    let handover = moved(Phase::Building, Phase::Checking)
        .then(|| {
            let exited = exit_of(job, next, observed, Role::Builder);
            between(exited, next.times.checking_at)
        })
        .flatten();
    let runs = Role::ALL
        .into_iter()
        .filter(|role| first_to_record_exit(job, next, *role))
        .filter_map(|role| {
            let ran = between(
                job.status.attempt_start(role),
                exit_of(job, next, observed, role),
            )?;
            Some((role, ran))
        })
        .collect();
    Measures {
        transition: transition.cloned(),
        admission_wait,
        handover,
        runs,
        stretches: stretches_ended(job, next),
    }
}

/// The parts of the job's life measured in `next` and not before: those
/// this write ends.
fn stretches_ended(job: &Job, next: &JobStatus) -> Vec<(Stretch, Duration)> {
    let before = job.phase_durations();
    let after = Job {
        status: next.clone(),
        ..job.clone()
    }
    .phase_durations();
    Stretch::ALL
        .into_iter()
        .filter(|stretch| before.of(*stretch).is_none())
        .filter_map(|stretch| Some((stretch, after.of(stretch)?.to_std().ok()?)))
        .collect()
}

/// `to - from`, when both are known and in that order.
fn between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<Duration> {
    (to? - from?).to_std().ok()
}

/// When `role`'s agent of the job's current attempt exited: as its runtime
/// says, else when the controller first saw it.
fn exit_of(job: &Job, next: &JobStatus, observed: &Observed, role: Role) -> Option<DateTime<Utc>> {
    let workload = observed
        .workloads
        .iter()
        .find(|w| w.role == role && w.attempt == job.status.attempt)?;
    if !matches!(workload.state, WorkloadState::Exited { .. }) {
        return None;
    }
    workload.finished_at.or(next.workload(role).exited_at)
}

/// Whether this write is the one that records `role`'s exit: none was
/// recorded before, and after it one is, or the attempt is over (a retry).
fn first_to_record_exit(job: &Job, next: &JobStatus, role: Role) -> bool {
    job.status.workload(role).exited_at.is_none()
        && (next.workload(role).exited_at.is_some() || next.attempt != job.status.attempt)
}

#[cfg(test)]
mod tests;
