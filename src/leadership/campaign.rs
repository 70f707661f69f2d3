//! The campaign: one loop per replica that holds the lease, or tries to,
//! every `renew_every`, and publishes where the replica stands.
//!
//! Leading is trusted on this replica's own clock: from the moment a
//! renewal that succeeded was *sent* (the lease cannot have been extended
//! from any earlier instant) for [`LeaseTiming::trusted_for`]. A renewal that
//! fails or hangs (each step is bounded by `renew_every`) does not end the
//! term by itself, since the lease still holds; reaching the end of the
//! trusted time does, at that instant, whatever the step under way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Leadership, Lease, LeaseTiming, Standing, Term};

/// The soonest a follower tries again, however soon the lease expires.
const MIN_RETRY: Duration = Duration::from_millis(20);

/// Campaigns for `lease` until `shutdown`: the leadership it decides, and
/// the loop to run (supervised by the caller). The loop never releases the
/// lease: whoever stops the leader loops does, once they have stopped.
pub fn campaign(
    lease: Arc<dyn Lease>,
    timing: LeaseTiming,
    shutdown: CancellationToken,
) -> (Leadership, impl Future<Output = ()> + Send + 'static) {
    let (sender, terms) = watch::channel(None);
    let campaign = Campaign {
        lease,
        timing,
        sender,
        held: None,
        holder: None,
    };
    (Leadership::given(terms), campaign.run(shutdown))
}

/// The term held, and until when to believe in it.
struct Held {
    term: Term,
    trusted_until: Instant,
}

struct Campaign {
    lease: Arc<dyn Lease>,
    timing: LeaseTiming,
    sender: watch::Sender<Option<Term>>,
    held: Option<Held>,
    /// Who leads when it is not us, as last seen (for the log).
    holder: Option<String>,
}

impl Campaign {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let sent = Instant::now();
            let retry_in = tokio::select! {
                _ = shutdown.cancelled() => return,
                retry_in = self.step(sent) => retry_in,
            };
            self.distrust_if_due();
            let mut wake = sent + retry_in;
            if let Some(held) = &self.held {
                wake = wake.min(held.trusted_until);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            self.distrust_if_due();
        }
    }

    /// Holds the lease once, giving up at the end of the trusted time if
    /// that comes first; returns when to try again.
    async fn step(&mut self, sent: Instant) -> Duration {
        let every = self.timing.renew_every;
        let limit = self.held.as_ref().map_or(every, |held| {
            every.min(held.trusted_until.saturating_duration_since(sent))
        });
        let held = self.held.as_ref().map(|held| &held.term);
        let standing = match tokio::time::timeout(limit, self.lease.hold(held)).await {
            Ok(Ok(standing)) => standing,
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::errors::error_chain(&error), "holding the lease failed; trying again");
                return every;
            }
            Err(_) => {
                tracing::warn!(
                    ?limit,
                    "holding the lease got no answer in time; trying again"
                );
                return every;
            }
        };
        match standing {
            Standing::Leading(term) => {
                let trusted_until = sent + self.timing.trusted_for();
                self.lead(Held {
                    term,
                    trusted_until,
                });
                every
            }
            Standing::Following { holder, expires_in } => {
                self.follow(holder);
                expires_in.map_or(every, |expires_in| expires_in.clamp(MIN_RETRY, every))
            }
        }
    }

    fn lead(&mut self, held: Held) {
        let term = held.term.clone();
        self.held = Some(held);
        self.holder = None;
        self.sender.send_if_modified(|now| {
            if now.as_ref() == Some(&term) {
                return false;
            }
            tracing::info!(
                version = term.version,
                "leading: this replica holds the lease"
            );
            *now = Some(term);
            true
        });
    }

    fn follow(&mut self, holder: String) {
        if self.held.take().is_some() {
            tracing::warn!(%holder, "the lease was lost to another replica: no longer leading");
        }
        if self.holder.as_ref() != Some(&holder) {
            tracing::info!(%holder, "following: another replica holds the lease");
            self.holder = Some(holder);
        }
        self.sender.send_if_modified(|now| now.take().is_some());
    }

    /// Stops leading once the last renewal is no longer to be trusted.
    fn distrust_if_due(&mut self) {
        let due = self
            .held
            .as_ref()
            .is_some_and(|held| Instant::now() >= held.trusted_until);
        if due {
            self.held = None;
            tracing::warn!("the lease was not renewed in time: no longer leading");
            self.sender.send_if_modified(|now| now.take().is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::leadership::LeaseError;

    /// A lease that answers each step from a script, and records what it was asked.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<Standing, ()>>>,
        asked: Mutex<Vec<Option<i64>>>,
    }

    #[async_trait]
    impl Lease for Scripted {
        async fn hold(&self, held: Option<&Term>) -> Result<Standing, LeaseError> {
            self.asked
                .lock()
                .unwrap()
                .push(held.map(|term| term.version));
            let next = self.answers.lock().unwrap().pop_front();
            match next {
                Some(Ok(standing)) => Ok(standing),
                Some(Err(())) => Err(LeaseError::Store(crate::store::StoreError::InUse {
                    path: "scripted failure".to_owned(),
                })),
                None => std::future::pending().await,
            }
        }

        async fn release(&self, _term: &Term) -> Result<(), LeaseError> {
            Ok(())
        }
    }

    fn leading(version: i64) -> Result<Standing, ()> {
        Ok(Standing::Leading(Term {
            version,
            fence: None,
        }))
    }

    fn timing() -> LeaseTiming {
        LeaseTiming {
            duration: Duration::from_secs(8),
            renew_every: Duration::from_secs(2),
        }
    }

    fn start(answers: Vec<Result<Standing, ()>>) -> (Arc<Scripted>, Leadership) {
        let lease = Arc::new(Scripted {
            answers: Mutex::new(answers.into()),
            ..Scripted::default()
        });
        let (leadership, run) = campaign(lease.clone(), timing(), CancellationToken::new());
        tokio::spawn(run);
        (lease, leadership)
    }

    /// Sleeps until `seconds` after `start` (time is paused: exact).
    async fn at(start: Instant, seconds: f64) {
        tokio::time::sleep_until(start + Duration::from_secs_f64(seconds)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_held_is_renewed_in_the_same_term_and_a_new_acquisition_is_a_new_term() {
        let t0 = Instant::now();
        let (lease, leadership) = start(vec![leading(1), leading(1), leading(2)]);
        at(t0, 0.5).await;
        assert_eq!(leadership.current().map(|t| t.version), Some(1));
        at(t0, 4.5).await;
        assert_eq!(leadership.current().map(|t| t.version), Some(2));
        assert_eq!(
            *lease.asked.lock().unwrap(),
            vec![None, Some(1), Some(1)],
            "each step names the term it holds, so the backend can renew it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_renewals_keep_the_lead_until_the_trusted_time_is_over_then_let_go() {
        let t0 = Instant::now();
        // Leading at 0 s; every renewal after fails. Trusted for 8 - 2 = 6 s.
        let (_lease, leadership) = start(vec![leading(1), Err(()), Err(()), Err(())]);
        at(t0, 5.9).await;
        assert!(
            leadership.current().is_some(),
            "within 6 s of the last renewal sent"
        );
        at(t0, 6.1).await;
        assert!(
            leadership.current().is_none(),
            "6 s after the last renewal, before the lease can expire at 8 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_hangs_does_not_hold_the_lead_past_the_trusted_time() {
        let t0 = Instant::now();
        // Leading at 0 s; the renewal at 2 s never answers.
        let (_lease, leadership) = start(vec![leading(1)]);
        at(t0, 5.9).await;
        assert!(leadership.current().is_some());
        at(t0, 6.1).await;
        assert!(leadership.current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_tries_again_when_the_lease_it_saw_expires_and_takes_it() {
        let t0 = Instant::now();
        let following = Ok(Standing::Following {
            holder: "other".to_owned(),
            expires_in: Some(Duration::from_millis(700)),
        });
        let (lease, leadership) = start(vec![following, leading(3)]);
        at(t0, 0.6).await;
        assert!(leadership.current().is_none());
        assert_eq!(lease.asked.lock().unwrap().len(), 1);
        at(t0, 0.8).await;
        assert_eq!(
            leadership.current().map(|t| t.version),
            Some(3),
            "tried again when the lease expired, not a whole period later"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn losing_the_lease_to_another_replica_ends_the_term_at_once() {
        let lost = Ok(Standing::Following {
            holder: "other".to_owned(),
            expires_in: None,
        });
        let (_lease, mut leadership) = start(vec![leading(1), lost]);
        let term = leadership.next_term().await.unwrap();
        tokio::time::timeout(Duration::from_secs(3), leadership.term_over(&term))
            .await
            .expect("the term is over at the step that saw another holder");
        assert!(leadership.current().is_none());
    }
}
