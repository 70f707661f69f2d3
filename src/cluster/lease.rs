//! Leader election on a `coordination.k8s.io` Lease: Kubernetes mode's
//! backend of [`crate::leadership::Lease`] (the campaign, the terms and what
//! they gate are [`crate::leadership`]'s, shared with local mode).
//!
//! The holder renews the Lease at every step of the campaign; a candidate
//! takes it over once it has gone unrenewed for a whole duration. Every write
//! names the `resourceVersion` it read, so two candidates racing for an
//! expired Lease cannot both win: the second gets 409 and stays a follower.
//! A term's version is the Lease's `leaseTransitions` after the acquisition.
//! The terms carry no fence: the job store is not where the Lease is.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use crate::leadership::{Lease as LeaderLease, LeaseError, Standing, Term};

/// What to do about the Lease, decided from what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// There is none: create it, naming ourselves.
    Create,
    /// It is ours: renew it.
    Renew,
    /// Its holder stopped renewing it: take it over.
    TakeOver,
    /// Someone else holds it and renews it.
    Follow { holder: String },
}

/// Pure: the next step for candidate `me`.
pub fn next_step(lease: Option<&Lease>, me: &str, now: DateTime<Utc>) -> LeaseStep {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return match lease {
            None => LeaseStep::Create,
            Some(_) => LeaseStep::TakeOver,
        };
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return LeaseStep::Renew;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let renewed = spec
        .renew_time
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp_micros(t.0.as_microsecond()));
    let expired = holder.is_empty()
        || renewed.is_none_or(|renewed| now >= renewed + chrono::TimeDelta::seconds(duration));
    if expired {
        LeaseStep::TakeOver
    } else {
        LeaseStep::Follow { holder }
    }
}

fn micro_time(at: DateTime<Utc>) -> MicroTime {
    MicroTime(Timestamp::from_microsecond(at.timestamp_micros()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// One candidate for the Lease `name`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    duration: Duration,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, me: &str, duration: Duration) -> Self {
        Elector {
            api,
            name: name.to_owned(),
            me: me.to_owned(),
            duration,
        }
    }

    /// Reads the Lease and takes the next step; true while we hold it.
    pub async fn step(&self) -> Result<bool, kube::Error> {
        Ok(matches!(self.standing().await?, Standing::Leading(_)))
    }

    /// Reads the Lease and takes the next step: where we stand after it.
    async fn standing(&self) -> Result<Standing, kube::Error> {
        let now = Utc::now();
        let current = self.api.get_opt(&self.name).await?;
        let step = next_step(current.as_ref(), &self.me, now);
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: acquired.or(Some(micro_time(now))),
            renew_time: Some(micro_time(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let (written, transitions) = match (step, current) {
            (LeaseStep::Follow { holder }, _) => return Ok(following(holder)),
            (LeaseStep::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(0, None)),
                };
                (self.api.create(&PostParams::default(), &lease).await, 0)
            }
            (step, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                let (new_spec, transitions) = match step {
                    LeaseStep::Renew => (spec(transitions, old.acquire_time), transitions),
                    _ => (spec(transitions + 1, None), transitions + 1),
                };
                lease.spec = Some(new_spec);
                // Names the resourceVersion it read: a racing writer gets 409.
                let written = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await;
                (written, transitions)
            }
            (_, None) => return Ok(following(String::new())),
        };
        match written {
            Ok(_) => Ok(Standing::Leading(Term {
                version: i64::from(transitions),
                fence: None,
            })),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(following(String::new())),
            Err(error) => Err(error),
        }
    }
}

/// Another holds the Lease (unnamed: it won a race we lost); when it
/// expires is not known here, so candidates retry at their pace.
fn following(holder: String) -> Standing {
    Standing::Following {
        holder,
        expires_in: None,
    }
}

#[async_trait]
impl LeaderLease for Elector {
    async fn hold(&self, _held: Option<&Term>) -> Result<Standing, LeaseError> {
        Ok(self.standing().await?)
    }

    /// Not released: a standby takes over once it expires.
    async fn release(&self, _term: &Term) -> Result<(), LeaseError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response};
    use kube::Client;
    use kube::client::Body;
    use serde_json::json;
    use tower_test::mock::pair;

    use std::sync::Arc;

    use super::*;
    use crate::leadership::LeaseTiming;
    use tokio_util::sync::CancellationToken;

    fn lease(holder: &str, renewed: DateTime<Utc>, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("icarus-controller".to_owned()),
                resource_version: Some("7".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(seconds),
                renew_time: Some(micro_time(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn the_lease_goes_to_whoever_finds_it_missing_or_expired_and_stays_with_its_holder() {
        let now = Utc::now();
        assert_eq!(next_step(None, "a", now), LeaseStep::Create);
        let fresh = lease("b", now, 15);
        assert_eq!(
            next_step(Some(&fresh), "a", now),
            LeaseStep::Follow {
                holder: "b".to_owned()
            }
        );
        assert_eq!(next_step(Some(&fresh), "b", now), LeaseStep::Renew);
        let stale = lease("b", now - chrono::TimeDelta::seconds(16), 15);
        assert_eq!(next_step(Some(&stale), "a", now), LeaseStep::TakeOver);
    }

    async fn answer(
        server: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>,
        method: Method,
        status: u16,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (request, respond) = server.next_request().await.unwrap();
        assert_eq!(request.method(), method);
        assert!(
            request.uri().path().ends_with("/leases/icarus-controller") || method == Method::POST
        );
        let bytes = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        respond.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }

    fn elector() -> (
        Elector,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (service, server) = pair::<Request<Body>, Response<Body>>();
        let api: Api<Lease> = Api::namespaced(Client::new(service, "icarus"), "icarus");
        let elector = Elector::new(api, "icarus-controller", "pod-a", Duration::from_secs(15));
        (elector, server)
    }

    fn not_found() -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
    }

    #[tokio::test]
    async fn mock_api_a_missing_lease_is_created_and_makes_us_leader() {
        let (elector, mut server) = elector();
        let step = tokio::spawn(async move { elector.step().await });
        answer(&mut server, Method::GET, 404, not_found()).await;
        let created = answer(
            &mut server,
            Method::POST,
            201,
            serde_json::to_value(lease("pod-a", Utc::now(), 15)).unwrap(),
        )
        .await;
        assert!(step.await.unwrap().unwrap());
        assert_eq!(created["spec"]["holderIdentity"], "pod-a");
        assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
    }

    #[tokio::test]
    async fn mock_api_a_lease_renewed_by_another_makes_us_follow_without_writing() {
        let (elector, mut server) = elector();
        let step = tokio::spawn(async move { elector.step().await });
        answer(
            &mut server,
            Method::GET,
            200,
            serde_json::to_value(lease("pod-b", Utc::now(), 15)).unwrap(),
        )
        .await;
        assert!(!step.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn mock_api_losing_the_race_for_an_expired_lease_leaves_us_a_follower() {
        let (elector, mut server) = elector();
        let step = tokio::spawn(async move { elector.step().await });
        let stale = lease("pod-b", Utc::now() - chrono::TimeDelta::seconds(60), 15);
        answer(
            &mut server,
            Method::GET,
            200,
            serde_json::to_value(&stale).unwrap(),
        )
        .await;
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409});
        let written = answer(&mut server, Method::PUT, 409, conflict).await;
        assert_eq!(
            written["metadata"]["resourceVersion"], "7",
            "the write names the version read"
        );
        assert_eq!(written["spec"]["holderIdentity"], "pod-a");
        assert!(!step.await.unwrap().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn mock_api_a_failed_renewal_keeps_the_lead_while_our_lease_holds_then_lets_go() {
        let (elector, mut server) = elector();
        let timing = LeaseTiming {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let (leadership, campaign) =
            crate::leadership::campaign(Arc::new(elector), timing, CancellationToken::new());
        tokio::spawn(campaign);
        answer(&mut server, Method::GET, 404, not_found()).await;
        let ours = serde_json::to_value(lease("pod-a", Utc::now(), 15)).unwrap();
        answer(&mut server, Method::POST, 201, ours).await;
        let unavailable = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable", "code": 503});
        // 5 s after the Lease was written: a renewal fails.
        let (request, respond) = server.next_request().await.unwrap();
        assert!(
            leadership.current().is_some(),
            "5 s into a 15 s Lease, we still lead"
        );
        respond.send_response(
            Response::builder()
                .status(503)
                .body(Body::from(serde_json::to_vec(&unavailable).unwrap()))
                .unwrap(),
        );
        drop(request);
        // 10 s in, with no renewal since the first: let go before asking again.
        let _next = server.next_request().await.unwrap();
        assert!(
            leadership.current().is_none(),
            "no longer sure to hold the Lease"
        );
    }
}
