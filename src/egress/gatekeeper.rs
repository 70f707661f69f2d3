//! The orchestrator's [`Gatekeeper`]: agents known by their callback
//! credentials, allowed what their role's configuration lists, their
//! traffic logged.

use async_trait::async_trait;
use icarus_core::egress::AllowList;

use super::{Admission, EgressEvent, Gatekeeper, Verdict};
use crate::credentials::AgentKeys;
use crate::job::{JobId, Role};
use crate::store::Store;

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
}

impl AgentGate {
    pub fn new(keys: AgentKeys, store: Store, builder: AllowList, checker: AllowList) -> Self {
        AgentGate {
            keys,
            store,
            builder,
            checker,
        }
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
        let running = match self.store.get_job(job).await {
            Ok(found) => found.is_some_and(|job| job.may_be_running(role, attempt)),
            Err(error) => {
                let error = crate::errors::error_chain(&error);
                tracing::warn!(%job, %error, "egress proxy: cannot read the job; refused");
                false
            }
        };
        let allowed = match role {
            Role::Builder => self.builder.clone(),
            Role::Checker => self.checker.clone(),
        };
        running.then(|| Admission {
            agent: user.to_owned(),
            allowed,
        })
    }

    fn record(&self, event: EgressEvent) {
        let EgressEvent {
            agent,
            host,
            port,
            verdict,
        } = event;
        match verdict {
            Verdict::Refused(why) => {
                tracing::warn!(%agent, %host, port, %why, "egress refused");
            }
            Verdict::Closed {
                sent,
                received,
                cut_at_budget,
            } => {
                tracing::info!(%agent, %host, port, sent, received, cut_at_budget, "egress connection closed");
            }
        }
    }
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
}
