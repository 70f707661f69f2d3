//! The loops that run the [`bridge`](super::bridge): IcarusJobs into the job
//! store, and job statuses back onto the IcarusJobs.
//!
//! Both directions are level-triggered like the controller: a resource seen
//! again (a resync, a restart) leads to the same store change or none, and a
//! status is written whenever the stored one differs from the resource's.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use kube::api::DeleteParams;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Resource};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::bridge::{
    BridgeError, DecisionRules, job_id, new_job, spec_update, status_patch, write_status,
};
use super::index::ResourceIndex;
use crate::cluster::crd::IcarusJob;
use crate::job::plan::Transition;
use crate::job::{Deletion, Job, JobId, Phase};
use crate::store::{SpecUpdate, Store, StoreError, StoreEvent};

/// Starts both directions; they end with `shutdown`. `seen` is shared with
/// the runtime, for owner references.
pub fn spawn(
    api: Api<IcarusJob>,
    recorder: Recorder,
    store: Store,
    seen: ResourceIndex,
    default_priority: i32,
    rules: DecisionRules,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let sink = Sink {
        store,
        default_priority,
        rules,
    };
    vec![
        tokio::spawn(resources_into_store(
            api.clone(),
            sink.clone(),
            seen.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(statuses_onto_resources(api, recorder, sink, seen, shutdown)),
    ]
}

/// Where resources go: the store, what a new job gets when its resource
/// leaves it out (`queue.default_priority`), and the rules its spec's
/// decisions follow.
#[derive(Clone)]
struct Sink {
    store: Store,
    default_priority: i32,
    rules: DecisionRules,
}

async fn resources_into_store(
    api: Api<IcarusJob>,
    sink: Sink,
    seen: ResourceIndex,
    shutdown: CancellationToken,
) {
    let store = &sink.store;
    let mut events = watcher(api, watcher::Config::default()).boxed();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        let resource = match event {
            Some(Ok(watcher::Event::Apply(resource) | watcher::Event::InitApply(resource))) => {
                resource
            }
            Some(Ok(watcher::Event::Delete(resource))) => {
                if let Ok(id) = job_id(&resource) {
                    seen.forget(id);
                    if let Err(error) = cancel_deleted(store, id).await {
                        tracing::warn!(job = %id, %error, "a deleted IcarusJob's job could not be cancelled");
                    }
                }
                continue;
            }
            Some(Ok(_)) => continue,
            // The watcher retries by itself, with backoff.
            Some(Err(error)) => {
                tracing::warn!(%error, "IcarusJob watch interrupted");
                continue;
            }
            None => return,
        };
        // Being deleted (a foreground deletion removes the Pods first): the
        // job is not wanted any more, before its Pods vanish.
        if resource.metadata.deletion_timestamp.is_some() {
            if let Ok(id) = job_id(&resource)
                && let Err(error) = cancel_deleted(store, id).await
            {
                tracing::warn!(job = %id, %error, "a deleted IcarusJob's job could not be cancelled");
            }
            continue;
        }
        if let Err(error) = bring_into_store(&sink, &seen, resource).await {
            tracing::warn!(%error, "an IcarusJob could not be brought into the store");
        }
    }
}

/// A deleted resource is a job nobody wants any more, and deleting it is
/// deleting the job, as `DELETE /jobs/{id}` does: an unfinished job is
/// cancelled (so it ends as `cancelled` rather than failing when the
/// garbage collector takes its Pods), and once finished its record, events
/// and output go. A job never stored is left alone.
async fn cancel_deleted(store: &Store, id: JobId) -> Result<(), BridgeError> {
    let cancel = |job: &Job| {
        let mut spec = job.request_cancel().unwrap_or_else(|_| job.spec.clone());
        // A deletion asked for already (retention's) keeps what it keeps.
        spec.delete_requested
            .get_or_insert(Deletion { keep_events: false });
        Ok(if spec == job.spec {
            SpecUpdate::Unchanged
        } else {
            SpecUpdate::write(spec)
        })
    };
    match store.update_spec(id, cancel).await {
        Ok(write) => {
            if write.written {
                tracing::info!(job = %id, "IcarusJob deleted: job cancelled if unfinished, then deleted");
            }
            Ok(())
        }
        Err(BridgeError::Store(StoreError::NotFound(_))) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates or updates the job for `resource`.
async fn bring_into_store(
    sink: &Sink,
    seen: &ResourceIndex,
    resource: IcarusJob,
) -> Result<(), BridgeError> {
    let store = &sink.store;
    let id = job_id(&resource)?;
    seen.remember(id, resource.clone());
    let update = |job: &Job| Ok(spec_update(&resource, job, Utc::now(), &sink.rules));
    match store.update_spec(id, update).await {
        Ok(_) => Ok(()),
        // A resource with a status was a job once, deleted since (its
        // IcarusJob is going too): it is not brought back as a new one.
        Err(BridgeError::Store(StoreError::NotFound(_)))
            if resource
                .status
                .as_ref()
                .is_some_and(|status| status.phase.is_some()) =>
        {
            Ok(())
        }
        Err(BridgeError::Store(StoreError::NotFound(_))) => {
            let job = new_job(&resource, Utc::now(), sink.default_priority, &sink.rules)?;
            match store.create_job(&job).await {
                Ok(_) => {
                    tracing::info!(job = %id, name = ?resource.metadata.name, "IcarusJob accepted");
                    Ok(())
                }
                // Stored meanwhile: a REST spawn writes the store right after
                // creating the resource. Bring the resource's spec over it.
                Err(_) if store.get_job(id).await?.is_some() => {
                    store.update_spec(id, update).await.map(|_| ())
                }
                Err(error) => Err(error.into()),
            }
        }
        Err(error) => Err(error),
    }
}

async fn statuses_onto_resources(
    api: Api<IcarusJob>,
    recorder: Recorder,
    sink: Sink,
    seen: ResourceIndex,
    shutdown: CancellationToken,
) {
    let store = &sink.store;
    let mut events = store.subscribe();
    // Jobs whose last status write failed: written again on each tick, from
    // what the store holds then, until it takes.
    let mut unwritten: HashSet<JobId> = HashSet::new();
    let mut retry = tokio::time::interval(STATUS_RETRY_INTERVAL);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = retry.tick(), if !unwritten.is_empty() => {
                for id in std::mem::take(&mut unwritten) {
                    let job = match store.get_job(id).await {
                        Ok(Some(job)) => job,
                        Ok(None) => continue,
                        Err(error) => {
                            tracing::warn!(job = %id, %error, "job unreadable for its status write");
                            unwritten.insert(id);
                            continue;
                        }
                    };
                    write_status_of(&api, &sink, &seen, &job, &mut unwritten).await;
                }
                continue;
            }
            event = events.recv() => event,
        };
        let job = match event {
            Ok(StoreEvent::JobWritten(job)) => job,
            Ok(StoreEvent::Transitioned { job, transition }) => {
                let resource = seen.get(job.id);
                if let Some(resource) = resource {
                    announce(&recorder, &resource, &transition).await;
                }
                continue;
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "status writer fell behind; the next writes catch up"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if job.status.phase.is_terminal() && job.spec.delete_requested.is_some() {
            delete_resource_of(&api, &seen, &job).await;
            continue;
        }
        write_status_of(&api, &sink, &seen, &job, &mut unwritten).await;
    }
}

/// A finished job asked to go (retention, `DELETE /jobs/{id}`) takes its
/// IcarusJob with it (and the resource's Pods and claim with that), so
/// that deleting either is one deletion. Best effort: a resource left
/// behind is deleted at the job's next write, and is never brought back
/// as a new job (see [`bring_into_store`]).
async fn delete_resource_of(api: &Api<IcarusJob>, seen: &ResourceIndex, job: &Job) {
    let Some(name) = seen.name_of(job.id) else {
        return;
    };
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => tracing::info!(job = %job.id, %name, "IcarusJob of a deleted job deleted"),
        Err(kube::Error::Api(response)) if response.code == 404 => {}
        Err(error) => {
            tracing::warn!(job = %job.id, %name, %error, "IcarusJob of a deleted job not deleted")
        }
    }
}

/// How often failed status writes are tried again.
const STATUS_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Writes the job's status onto its resource; remembers it in `unwritten` if that failed.
async fn write_status_of(
    api: &Api<IcarusJob>,
    sink: &Sink,
    seen: &ResourceIndex,
    job: &Job,
    unwritten: &mut HashSet<JobId>,
) {
    let resource = seen.get(job.id);
    let Some(resource) = resource else { return };
    if let Err(error) = write_back(api, sink, seen, &resource, job).await {
        tracing::warn!(job = %job.id, %error, "IcarusJob status not written; trying again shortly");
        unwritten.insert(job.id);
    }
}

/// A transition as a Kubernetes Event on the resource (`kubectl describe ijob`):
/// `Warning` for a failure, `Normal` otherwise. Best effort: a lost Event
/// changes nothing, the status holds the truth.
async fn announce(recorder: &Recorder, resource: &IcarusJob, transition: &Transition) {
    let event = Event {
        type_: if transition.to == Phase::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: transition.reason.to_string(),
        note: Some(match &transition.message {
            Some(message) => format!("{} → {}: {message}", transition.from, transition.to),
            None => format!("{} → {}", transition.from, transition.to),
        }),
        action: "Transition".to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &resource.object_ref(&())).await {
        tracing::warn!(%error, "Kubernetes Event not recorded");
    }
}

/// Writes the job's status onto its resource if it changed, then gives a
/// decision waiting in the resource's spec its chance (the job may just have
/// reached `awaiting_approval`).
async fn write_back(
    api: &Api<IcarusJob>,
    sink: &Sink,
    seen: &ResourceIndex,
    resource: &IcarusJob,
    job: &Job,
) -> Result<(), BridgeError> {
    let name = resource.metadata.name.clone().unwrap_or_default();
    let patch = status_patch(
        job,
        resource.status.as_ref(),
        resource.metadata.generation,
        Utc::now(),
    );
    // Unchanged conditions keep their times, so an unchanged status is equal.
    let current = serde_json::to_value(&resource.status)?;
    if patch["status"] != current {
        write_status(api, &name, &patch).await?;
        let mut updated = resource.clone();
        updated.status = serde_json::from_value(patch["status"].clone()).ok();
        seen.remember(job.id, updated);
    }
    bring_into_store(sink, seen, resource.clone()).await
}

#[cfg(test)]
mod tests {
    //! Against a mocked API server and a real SQLite store.

    use std::time::Duration;

    use http::{Method, Request, Response};
    use kube::Client;
    use kube::client::Body;
    use serde_json::json;
    use tower_test::mock::pair;

    use super::*;
    use crate::job::{Phase, Reason};

    const UID: &str = "6b1f0b4e-1111-4222-8333-944444444444";

    fn listed() -> serde_json::Value {
        json!({
            "apiVersion": "icarus.dev/v1alpha1", "kind": "IcarusJobList",
            "metadata": {"resourceVersion": "1"},
            "items": [{
                "apiVersion": "icarus.dev/v1alpha1", "kind": "IcarusJob",
                "metadata": {"name": "add-logging", "namespace": "icarus", "uid": UID,
                             "generation": 1, "resourceVersion": "1"},
                "spec": {"task": "Add logging"}
            }]
        })
    }

    #[tokio::test]
    async fn mock_api_an_applied_icarusjob_becomes_a_job_and_its_status_follows_the_job() {
        let (store, _dir) = crate::store::sql::temporary_sqlite().await;
        let (service, mut server) = pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "icarus");
        let api: Api<IcarusJob> = Api::namespaced(client.clone(), "icarus");
        let recorder = Recorder::new(client, "icarus".into());
        let shutdown = CancellationToken::new();
        let _tasks = spawn(
            api,
            recorder,
            store.clone(),
            ResourceIndex::default(),
            0,
            DecisionRules::default(),
            shutdown.clone(),
        );

        // The API server: the list holds one IcarusJob, watches stay open
        // and silent, status patches are recorded.
        let (patches_tx, mut patches) = tokio::sync::mpsc::unbounded_channel();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let mut open_watches = Vec::new();
        tokio::spawn(async move {
            while let Some((request, respond)) = server.next_request().await {
                let query = request.uri().query().unwrap_or_default().to_owned();
                if request.method() == Method::PATCH {
                    let body = http_body_util::BodyExt::collect(request.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    let _ = patches_tx
                        .send(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
                    let item = listed()["items"][0].clone();
                    respond.send_response(
                        Response::builder()
                            .body(Body::from(serde_json::to_vec(&item).unwrap()))
                            .unwrap(),
                    );
                } else if request.uri().path().contains("/events") {
                    let body = http_body_util::BodyExt::collect(request.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let _ = events_tx.send(event.clone());
                    respond.send_response(
                        Response::builder()
                            .status(201)
                            .body(Body::from(serde_json::to_vec(&event).unwrap()))
                            .unwrap(),
                    );
                } else if query.contains("watch=true") {
                    open_watches.push(respond);
                } else {
                    respond.send_response(
                        Response::builder()
                            .body(Body::from(serde_json::to_vec(&listed()).unwrap()))
                            .unwrap(),
                    );
                }
            }
        });

        let id: JobId = UID.parse().unwrap();
        let job = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(job) = store.get_job(id).await.unwrap() {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the IcarusJob became a job");
        assert_eq!(job.spec.task, "Add logging");

        // The controller moves the job on; its status reaches the resource.
        let mut building = job.clone();
        building.status.phase = Phase::Building;
        building.status.reason = Reason::Admitted;
        let transition = Transition {
            from: Phase::Pending,
            to: Phase::Building,
            reason: Reason::Admitted,
            message: None,
        };
        store
            .update_job(&building, Some(&transition))
            .await
            .unwrap();
        let patch = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let patch = patches.recv().await.unwrap();
                if patch["status"]["phase"] == "building" {
                    return patch;
                }
            }
        })
        .await
        .expect("a status patch for building");
        assert_eq!(patch["status"]["reason"], "Admitted");
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("a Kubernetes Event for the transition")
            .unwrap();
        assert_eq!(event["reason"], "Admitted");
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["regarding"]["name"], "add-logging");
        assert_eq!(event["note"], "pending → building");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_deleted_icarusjob_cancels_its_unfinished_job_and_deletes_both_once_finished() {
        let (store, _dir) = crate::store::sql::temporary_sqlite().await;
        let at = crate::job::fixtures::at(0);
        let building = store
            .create_job(&Job::pending().in_phase(Phase::Building, at))
            .await
            .unwrap();
        let finished = store
            .create_job(&Job::pending().in_phase(Phase::Completed, at))
            .await
            .unwrap();

        cancel_deleted(&store, building.id).await.unwrap();
        cancel_deleted(&store, finished.id).await.unwrap();
        cancel_deleted(&store, JobId::new_random()).await.unwrap();

        let building = store.get_job(building.id).await.unwrap().unwrap();
        assert!(building.spec.cancel_requested);
        assert!(building.spec.delete_requested.is_some());
        let after = store.get_job(finished.id).await.unwrap().unwrap();
        assert!(
            !after.spec.cancel_requested,
            "a finished job is not cancelled"
        );
        assert_eq!(
            after.spec.delete_requested,
            Some(Deletion { keep_events: false }),
            "deleting its IcarusJob deletes the job"
        );
    }
}
