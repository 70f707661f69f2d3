//! The orchestrator's [`Gatekeeper`]: agents known by their callback
//! credentials, allowed what their role's configuration lists, their
//! traffic logged and tallied into the job's record by the [`Ledger`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use icarus_core::egress::AllowList;
use tokio_util::sync::CancellationToken;

use super::{Admission, EgressEvent, Gatekeeper, Verdict};
use crate::credentials::AgentKeys;
use crate::job::{Job, JobId, Role};
use crate::store::{EgressTally, EgressTraffic, EgressVerdict, Store};

/// The proxy user an agent is given: `<job>.<role>.<attempt>`, with its
/// callback token as the password.
pub fn proxy_user(job: JobId, role: Role, attempt: u32) -> String {
    format!("{job}.{role}.{attempt}")
}

fn parse_proxy_user(user: &str) -> Option<(JobId, Role, u32)> {
    let mut parts = user.splitn(3, '.');
    let job = parts.next()?.parse().ok()?;
    let role = Role::parse(parts.next()?)?;
    let attempt = parts.next()?.parse().ok()?;
    Some((job, role, attempt))
}

/// Admits an agent whose token is right and which its job may be running
/// now (a finished agent's credentials open nothing), with its role's list.
pub struct AgentGate {
    keys: AgentKeys,
    store: Store,
    builder: AllowList,
    checker: AllowList,
    ledger: Arc<Ledger>,
    /// What each agent (whose token checked out) was last admitted with,
    /// when, and the store's count of allowances then: the database is
    /// asked at most once per `kept_for` per agent, however fast it opens
    /// connections, and again at once after an allowance written here or
    /// (on PostgreSQL, while the store listens) relayed from another replica.
    recent: Mutex<HashMap<String, Remembered>>,
    /// How long an admission is reused ([`ADMISSION_KEPT`]).
    kept_for: Duration,
}

/// An agent's admission (or refusal) as last read.
#[derive(Clone)]
struct Remembered {
    at: Instant,
    allowances_written: u64,
    admission: Option<Admission>,
}

/// How long an agent's admission (or refusal) is reused.
const ADMISSION_KEPT: Duration = Duration::from_secs(1);

/// Admissions remembered before the stale ones are dropped.
const RECENT_PRUNED_AT: usize = 1024;

impl AgentGate {
    pub fn new(keys: AgentKeys, store: Store, builder: AllowList, checker: AllowList) -> Self {
        AgentGate {
            keys,
            store,
            builder,
            checker,
            ledger: Arc::default(),
            recent: Mutex::default(),
            kept_for: ADMISSION_KEPT,
        }
    }

    /// Reuses admissions for `kept_for` instead of [`ADMISSION_KEPT`]: a
    /// test's long memory shows what else than time makes the gate read again.
    pub fn remembering_admissions_for(mut self, kept_for: Duration) -> Self {
        self.kept_for = kept_for;
        self
    }

    /// The agent's admission from the record: running, and what it may reach.
    async fn admission(
        &self,
        user: &str,
        job: JobId,
        role: Role,
        attempt: u32,
    ) -> Option<Admission> {
        let record = match self.store.get_job(job).await {
            Ok(found) => found.filter(|job| job.may_be_running(role, attempt))?,
            Err(error) => {
                let error = crate::errors::error_chain(&error);
                tracing::warn!(%job, %error, "egress proxy: cannot read the job; refused");
                return None;
            }
        };
        Some(Admission {
            agent: user.to_owned(),
            allowed: self.allowed(&record, role).await,
            budget: job.to_string(),
            spent: self.spent(job).await,
        })
    }

    /// What the job's record says its agents have moved; none if it cannot
    /// be read (this proxy's own count still applies).
    async fn spent(&self, job: JobId) -> u64 {
        self.store.egress_bytes(job).await.unwrap_or_else(|error| {
            let error = crate::errors::error_chain(&error);
            tracing::warn!(%job, %error, "egress proxy: cannot read the job's bytes so far");
            0
        })
    }

    /// What `job`'s `role` agent may reach now: its role's configured list,
    /// narrowed to the job's own if it has one, and what people have
    /// allowed since (read again at most a second after the last reading,
    /// so an allowance counts from the agent's next connection after that).
    async fn allowed(&self, record: &Job, role: Role) -> AllowList {
        let job = record.id;
        let mut configured = match role {
            Role::Builder => self.builder.clone(),
            Role::Checker => self.checker.clone(),
        };
        if let Some(narrowing) = &record.spec.allowed_domains {
            let rules: Vec<&String> = narrowing.iter().collect();
            // Checked at spawn (and by the IcarusJob's schema): a rule that
            // no longer parses narrows to nothing rather than widening.
            let requested = AllowList::parse(&rules).unwrap_or_default();
            configured = configured.narrowed_to(&requested).0;
        }
        let allowances = match self.store.egress_allowances(job).await {
            Ok(allowances) => allowances,
            Err(error) => {
                let error = crate::errors::error_chain(&error);
                tracing::warn!(%job, %error, "egress proxy: cannot read the allowances; the configured list alone applies");
                Vec::new()
            }
        };
        allowances
            .into_iter()
            .filter(|allowance| allowance.role == role)
            .filter_map(|allowance| allowance.rule.parse().ok())
            .fold(configured, AllowList::with)
    }

    /// Where this gate tallies what it records, for [`Ledger::keep`].
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }
}

#[async_trait]
impl Gatekeeper for AgentGate {
    async fn admit(&self, user: &str, secret: &str) -> Option<Admission> {
        let (job, role, attempt) = parse_proxy_user(user)?;
        if !self.keys.verify(job, role, attempt, secret) {
            tracing::warn!(%job, %role, attempt, "egress proxy: a request with a foreign token refused");
            return None;
        }
        let now = Instant::now();
        let allowances_written = self.store.allowances_written();
        let kept = lock(&self.recent)
            .get(user)
            .filter(|kept| now.duration_since(kept.at) < self.kept_for)
            .filter(|kept| kept.allowances_written == allowances_written)
            .map(|kept| kept.admission.clone());
        if let Some(admission) = kept {
            return admission;
        }
        let admission = self.admission(user, job, role, attempt).await;
        let mut recent = lock(&self.recent);
        if recent.len() >= RECENT_PRUNED_AT {
            recent.retain(|_, kept| now.duration_since(kept.at) < self.kept_for);
        }
        let remembered = Remembered {
            at: now,
            allowances_written,
            admission: admission.clone(),
        };
        recent.insert(user.to_owned(), remembered);
        admission
    }

    fn record(&self, event: EgressEvent) {
        match &event.verdict {
            Verdict::Refused(why) | Verdict::Unlisted(why) => {
                tracing::warn!(agent = %event.agent, host = %event.host, port = event.port, %why, "egress refused");
            }
            Verdict::Closed {
                sent,
                received,
                cut_at_budget,
            } => {
                tracing::info!(agent = %event.agent, host = %event.host, port = event.port, sent, received, cut_at_budget, "egress connection closed");
            }
        }
        if let Some((job, role, attempt)) = parse_proxy_user(&event.agent) {
            self.ledger.add(job, role, attempt, &event);
        }
    }
}

/// The longest host name kept, in characters (a DNS name's longest); a
/// refused "name" can be anything an agent wrote.
const MAX_HOST_CHARS: usize = 253;

/// Tallies kept in memory between writes, at most; beyond, new destinations
/// are tallied as `*`, as the store does past its own bound.
const MAX_PENDING: usize = 10_000;

/// What an agent did with one destination, under one verdict.
type TallyKey = (JobId, Role, u32, String, u16, EgressVerdict);

/// The proxy's events, tallied per agent, destination and verdict between
/// writes: a flood of refusals costs the database one write a second, not
/// one each.
#[derive(Default)]
pub struct Ledger {
    pending: Mutex<HashMap<TallyKey, EgressTraffic>>,
}

impl Ledger {
    fn add(&self, job: JobId, role: Role, attempt: u32, event: &EgressEvent) {
        let now = Utc::now();
        let (verdict, reason, sent, received, cut) = match &event.verdict {
            Verdict::Refused(why) => (EgressVerdict::Refused, Some(why.clone()), 0, 0, false),
            Verdict::Unlisted(why) => (EgressVerdict::Unlisted, Some(why.clone()), 0, 0, false),
            Verdict::Closed {
                sent,
                received,
                cut_at_budget,
            } => (
                EgressVerdict::Allowed,
                None,
                *sent,
                *received,
                *cut_at_budget,
            ),
        };
        let mut pending = lock(&self.pending);
        let host: String = event.host.chars().take(MAX_HOST_CHARS).collect();
        let mut key = (job, role, attempt, host, event.port, verdict);
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            key = (job, role, attempt, "*".to_owned(), 0, verdict);
        }
        let tally = pending.entry(key.clone()).or_insert_with(|| EgressTraffic {
            role,
            attempt,
            host: key.3.clone(),
            port: key.4,
            verdict,
            reason: None,
            connections: 0,
            bytes_sent: 0,
            bytes_received: 0,
            cut_at_budget: 0,
            first_at: now,
            last_at: now,
        });
        tally.connections += 1;
        tally.bytes_sent += sent;
        tally.bytes_received += received;
        tally.cut_at_budget += u64::from(cut);
        tally.last_at = now;
        if reason.is_some() {
            tally.reason = reason;
        }
    }

    fn take(&self) -> Vec<EgressTally> {
        let mut pending = lock(&self.pending);
        pending
            .drain()
            .map(|((job, ..), traffic)| EgressTally { job, traffic })
            .collect()
    }

    /// Writes the tallies to `store` every `interval`, and once more on
    /// `stop`. A tally the store refuses (the database is down, the job was
    /// deleted) is dropped with a warning: the log keeps every event.
    pub async fn keep(self: Arc<Self>, store: Store, interval: Duration, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(interval) => false,
            };
            for tally in self.take() {
                if let Err(error) = store.add_egress_traffic(&tally).await {
                    let error = crate::errors::error_chain(&error);
                    tracing::warn!(job = %tally.job, %error, "egress traffic not recorded");
                }
            }
            if stopping {
                return;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_user_names_its_job_role_and_attempt() {
        let job = JobId::new_random();
        let user = proxy_user(job, Role::Checker, 2);
        assert_eq!(parse_proxy_user(&user), Some((job, Role::Checker, 2)));
        assert_eq!(parse_proxy_user("not-a-job.builder.1"), None);
        assert_eq!(parse_proxy_user(&format!("{job}.admin.1")), None);
        assert_eq!(parse_proxy_user(&format!("{job}.builder")), None);
    }

    fn refusal(host: &str) -> EgressEvent {
        EgressEvent {
            agent: String::new(),
            host: host.to_owned(),
            port: 443,
            verdict: Verdict::Refused(format!("{host} is not listed")),
        }
    }

    #[test]
    fn a_flood_of_refusals_is_one_tally_until_written() {
        let ledger = Ledger::default();
        let job = JobId::new_random();
        for _ in 0..1000 {
            ledger.add(job, Role::Builder, 1, &refusal("evil.example"));
        }
        let tallies = ledger.take();
        assert_eq!(tallies.len(), 1);
        assert_eq!(tallies[0].traffic.connections, 1000);
        assert!(ledger.take().is_empty(), "written once");
    }

    #[test]
    fn new_destinations_beyond_the_pending_bound_are_tallied_together_and_long_names_cut() {
        let ledger = Ledger::default();
        let job = JobId::new_random();
        for n in 0..MAX_PENDING + 50 {
            ledger.add(job, Role::Builder, 1, &refusal(&format!("n{n}.example")));
        }
        ledger.add(job, Role::Builder, 1, &refusal(&"x".repeat(10_000)));
        let tallies = ledger.take();
        assert_eq!(tallies.len(), MAX_PENDING + 1);
        let rest = tallies.iter().find(|t| t.traffic.host == "*").unwrap();
        assert_eq!(rest.traffic.connections, 51);
        let ledger = Ledger::default();
        ledger.add(job, Role::Builder, 1, &refusal(&"x".repeat(10_000)));
        assert_eq!(ledger.take()[0].traffic.host.len(), MAX_HOST_CHARS);
    }
}
