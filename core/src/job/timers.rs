//! How long a job spent in each part of its life, from the moments its
//! status recorded: queued (submission to admission), building, checking,
//! awaiting approval, and in all (submission to its end).
//!
//! A part is measured once it is over, so the numbers never depend on when
//! they are read; the part under way shows its start instead (the status's
//! `<phase>_at`). A job that ended early (cancelled while building, say)
//! has the part it ended in measured up to its end, and none after.

use chrono::{DateTime, TimeDelta, Utc};

use super::Job;

/// The parts of a job's life, as metrics and the status name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stretch {
    Queued,
    Building,
    Checking,
    AwaitingApproval,
    Total,
}

impl Stretch {
    pub const ALL: [Stretch; 5] = [
        Stretch::Queued,
        Stretch::Building,
        Stretch::Checking,
        Stretch::AwaitingApproval,
        Stretch::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stretch::Queued => "queued",
            Stretch::Building => "building",
            Stretch::Checking => "checking",
            Stretch::AwaitingApproval => "awaiting_approval",
            Stretch::Total => "total",
        }
    }
}

/// How long each part of a job's life that is over took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseDurations {
    pub queued: Option<TimeDelta>,
    pub building: Option<TimeDelta>,
    pub checking: Option<TimeDelta>,
    pub awaiting_approval: Option<TimeDelta>,
    pub total: Option<TimeDelta>,
}

impl PhaseDurations {
    pub fn of(&self, stretch: Stretch) -> Option<TimeDelta> {
        match stretch {
            Stretch::Queued => self.queued,
            Stretch::Building => self.building,
            Stretch::Checking => self.checking,
            Stretch::AwaitingApproval => self.awaiting_approval,
            Stretch::Total => self.total,
        }
    }
}

impl Job {
    /// How long each part of the job's life that is over took.
    pub fn phase_durations(&self) -> PhaseDurations {
        let times = &self.status.times;
        let end = times.finished_at;
        // Each part runs from its start to the next part's start, or to
        // the job's end if it ended there.
        let starts = [
            Some(self.created_at),
            times.building_at,
            times.checking_at,
            times.awaiting_approval_at,
            times.approved_at,
        ];
        let span = |index: usize| -> Option<TimeDelta> {
            let start = starts[index]?;
            let next = starts[index + 1].or(end)?;
            non_negative(start, next)
        };
        PhaseDurations {
            queued: span(0),
            building: span(1),
            checking: span(2),
            awaiting_approval: span(3),
            total: end.and_then(|end| non_negative(self.created_at, end)),
        }
    }
}

fn non_negative(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<TimeDelta> {
    let span = to - from;
    (span >= TimeDelta::zero()).then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Phase;
    use crate::job::fixtures::at;

    #[test]
    fn a_completed_job_has_every_part_measured() {
        let mut job = Job::pending();
        job.status.times.building_at = Some(at(10));
        job.status.times.checking_at = Some(at(70));
        job.status.times.awaiting_approval_at = Some(at(100));
        job.status.times.approved_at = Some(at(400));
        job.status.times.finished_at = Some(at(405));
        job.status.phase = Phase::Completed;
        let durations = job.phase_durations();
        let seconds = |s: Stretch| durations.of(s).map(|d| d.num_seconds());
        assert_eq!(seconds(Stretch::Queued), Some(10));
        assert_eq!(seconds(Stretch::Building), Some(60));
        assert_eq!(seconds(Stretch::Checking), Some(30));
        assert_eq!(seconds(Stretch::AwaitingApproval), Some(300));
        assert_eq!(seconds(Stretch::Total), Some(405));
    }

    #[test]
    fn the_part_under_way_is_not_measured_yet() {
        let job = Job::pending().in_phase(Phase::Checking, at(20));
        let durations = job.phase_durations();
        assert_eq!(durations.queued, Some(TimeDelta::seconds(20)));
        assert_eq!(durations.building, Some(TimeDelta::zero()));
        assert_eq!(durations.checking, None);
        assert_eq!(durations.total, None);
    }

    #[test]
    fn a_job_cancelled_while_building_is_measured_up_to_its_end_and_no_further() {
        let mut job = Job::pending();
        job.status.times.building_at = Some(at(5));
        job.status.times.finished_at = Some(at(50));
        job.status.phase = Phase::Cancelled;
        let durations = job.phase_durations();
        assert_eq!(durations.building, Some(TimeDelta::seconds(45)));
        assert_eq!(durations.checking, None);
        assert_eq!(durations.awaiting_approval, None);
        assert_eq!(durations.total, Some(TimeDelta::seconds(50)));
    }
}
