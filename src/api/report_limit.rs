//! Keeps one chatty agent from crowding the store that every job shares.
//!
//! Progress reports (telemetry only) are limited per agent — a job's builder
//! or checker — with a token bucket; a report over the limit is refused with
//! 429 and not stored, and the telemetry route keeps showing the latest one
//! that was. Reports that change what the controller decides (completion,
//! error, the audit report) are never limited.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::job::{JobId, Role};

/// Buckets of agents that stopped reporting are dropped past this many.
const TRACKED_AGENTS: usize = 10_000;

pub struct ReportLimiter {
    limiter: DefaultKeyedRateLimiter<(JobId, Role)>,
    per_second: NonZeroU32,
}

impl ReportLimiter {
    /// `per_second` reports per agent on average, in bursts of as many.
    pub fn new(per_second: NonZeroU32) -> Self {
        ReportLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            per_second,
        }
    }

    pub fn per_second(&self) -> NonZeroU32 {
        self.per_second
    }

    /// Whether one more progress report from this agent may be stored now.
    pub fn allows(&self, job: JobId, role: Role) -> bool {
        if self.limiter.len() > TRACKED_AGENTS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&(job, role)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_over_its_rate_is_refused_while_another_agent_is_not() {
        let limiter = ReportLimiter::new(NonZeroU32::new(5).unwrap());
        let flooding = JobId::new_random();
        let quiet = JobId::new_random();
        let allowed = (0..50)
            .filter(|_| limiter.allows(flooding, Role::Builder))
            .count();
        assert!(
            (5..50).contains(&allowed),
            "a burst of 50 let {allowed} through"
        );
        assert!(limiter.allows(quiet, Role::Builder));
        assert!(limiter.allows(flooding, Role::Checker));
    }
}
