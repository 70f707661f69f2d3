//! The lease in the database and the fence on a leader's writes, run on a
//! SQLite file and on PostgreSQL; and, on PostgreSQL, one store hearing of
//! another's writes.

use std::time::Duration;

use icarus::job::plan::Transition;
use icarus::job::{Phase, Reason};
use icarus::store::{Fence, Store, StoreError, StoreEvent};

use crate::support::{eventually, first_heard_write, new_job, two_stores_on_one_postgres_database};

on_both_databases!(
    a_free_lease_goes_to_the_first_candidate_at_version_one,
    a_held_lease_is_not_taken_by_another_candidate,
    the_holder_renews_its_lease_and_no_one_else_can,
    an_expired_lease_is_taken_over_at_the_next_version_and_the_old_holder_cannot_renew,
    a_holder_that_let_its_lease_expire_gets_a_new_version_to_take_it_back,
    a_released_lease_is_free_at_once,
    candidates_racing_for_a_free_lease_elect_exactly_one,
    a_fenced_write_lands_while_its_lease_holds,
    a_fenced_write_is_refused_after_a_takeover_and_changes_nothing,
    a_fenced_write_is_refused_once_its_lease_expired_even_if_nobody_took_it,
    an_unfenced_write_does_not_look_at_the_lease,
);

const LEASE: &str = "icarus-controller";
const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(300);

/// Waits until the lease has expired by the database's clock.
async fn until_expired(store: &Store) {
    eventually(Duration::from_secs(10), || async {
        let lease = store.lease(LEASE).await.unwrap().unwrap();
        lease.expires_in.is_zero().then_some(())
    })
    .await;
}

fn fence(holder: &str, version: i64) -> Fence {
    Fence {
        lease: LEASE.to_owned(),
        holder: holder.to_owned(),
        version,
    }
}

/// A job created, and a status write of it to make through some store.
async fn job_to_write(store: &Store) -> icarus::job::Job {
    let mut job = store.create_job(&new_job("t")).await.unwrap();
    job.status.phase = Phase::Building;
    job
}

fn transition() -> Transition {
    Transition {
        from: Phase::Pending,
        to: Phase::Building,
        reason: Reason::Admitted,
        message: None,
    }
}

async fn a_free_lease_goes_to_the_first_candidate_at_version_one(store: Store) {
    assert_eq!(store.lease(LEASE).await.unwrap(), None);
    assert_eq!(
        store.acquire_lease(LEASE, "a", LONG).await.unwrap(),
        Some(1)
    );
    let lease = store.lease(LEASE).await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.version), ("a", 1));
    assert!(lease.expires_in > Duration::from_secs(50), "{lease:?}");
}

async fn a_held_lease_is_not_taken_by_another_candidate(store: Store) {
    store.acquire_lease(LEASE, "a", LONG).await.unwrap();
    assert_eq!(store.acquire_lease(LEASE, "b", LONG).await.unwrap(), None);
    assert_eq!(
        store.acquire_lease(LEASE, "a", LONG).await.unwrap(),
        None,
        "acquiring is for a free or expired lease; the holder renews"
    );
    assert_eq!(store.lease(LEASE).await.unwrap().unwrap().holder, "a");
}

async fn the_holder_renews_its_lease_and_no_one_else_can(store: Store) {
    store.acquire_lease(LEASE, "a", SHORT).await.unwrap();
    assert!(store.renew_lease(LEASE, "a", 1, LONG).await.unwrap());
    let lease = store.lease(LEASE).await.unwrap().unwrap();
    assert!(
        lease.expires_in > Duration::from_secs(50),
        "renewed for LONG"
    );
    assert_eq!(lease.version, 1, "a renewal is the same term");
    assert!(!store.renew_lease(LEASE, "b", 1, LONG).await.unwrap());
    assert!(
        !store.renew_lease(LEASE, "a", 2, LONG).await.unwrap(),
        "not at a version it never held"
    );
}

async fn an_expired_lease_is_taken_over_at_the_next_version_and_the_old_holder_cannot_renew(
    store: Store,
) {
    store.acquire_lease(LEASE, "a", SHORT).await.unwrap();
    until_expired(&store).await;
    assert_eq!(
        store.acquire_lease(LEASE, "b", LONG).await.unwrap(),
        Some(2)
    );
    assert!(!store.renew_lease(LEASE, "a", 1, LONG).await.unwrap());
    let lease = store.lease(LEASE).await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.version), ("b", 2));
}

async fn a_holder_that_let_its_lease_expire_gets_a_new_version_to_take_it_back(store: Store) {
    store.acquire_lease(LEASE, "a", SHORT).await.unwrap();
    until_expired(&store).await;
    assert!(
        !store.renew_lease(LEASE, "a", 1, LONG).await.unwrap(),
        "an expired lease is not renewed: another may have begun to take it"
    );
    assert_eq!(
        store.acquire_lease(LEASE, "a", LONG).await.unwrap(),
        Some(2)
    );
}

async fn a_released_lease_is_free_at_once(store: Store) {
    store.acquire_lease(LEASE, "a", LONG).await.unwrap();
    assert!(
        !store.release_lease(LEASE, "b", 1).await.unwrap(),
        "only the holder releases"
    );
    assert!(store.release_lease(LEASE, "a", 1).await.unwrap());
    assert_eq!(
        store.acquire_lease(LEASE, "b", LONG).await.unwrap(),
        Some(2)
    );
}

async fn candidates_racing_for_a_free_lease_elect_exactly_one(store: Store) {
    let candidates: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.acquire_lease(LEASE, &format!("c{n}"), LONG).await })
        })
        .collect();
    let mut won = Vec::new();
    for candidate in candidates {
        won.extend(candidate.await.unwrap().unwrap());
    }
    assert_eq!(won, vec![1], "exactly one acquisition, at version 1");
}

async fn a_fenced_write_lands_while_its_lease_holds(store: Store) {
    store.acquire_lease(LEASE, "a", LONG).await.unwrap();
    let job = job_to_write(&store).await;
    let leader = store.fenced(fence("a", 1));
    let written = leader.update_job(&job, Some(&transition())).await.unwrap();
    assert_eq!(written.resource_version, 2);
    assert_eq!(store.job_events(job.id).await.unwrap().len(), 2);
}

async fn a_fenced_write_is_refused_after_a_takeover_and_changes_nothing(store: Store) {
    store.acquire_lease(LEASE, "a", SHORT).await.unwrap();
    let job = job_to_write(&store).await;
    let old_leader = store.fenced(fence("a", 1));
    until_expired(&store).await;
    store.acquire_lease(LEASE, "b", LONG).await.unwrap();

    let refused = old_leader.update_job(&job, Some(&transition())).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { ref lease, version: 1 }) if lease == LEASE),
        "{refused:?}"
    );
    let stored = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.resource_version, 1);
    assert_eq!(stored.status.phase, Phase::Pending);
    assert_eq!(store.job_events(job.id).await.unwrap().len(), 1);
    let new_leader = store.fenced(fence("b", 2));
    new_leader.update_job(&job, None).await.unwrap();
}

async fn a_fenced_write_is_refused_once_its_lease_expired_even_if_nobody_took_it(store: Store) {
    store.acquire_lease(LEASE, "a", SHORT).await.unwrap();
    let job = job_to_write(&store).await;
    until_expired(&store).await;
    let refused = store.fenced(fence("a", 1)).update_job(&job, None).await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
}

async fn an_unfenced_write_does_not_look_at_the_lease(store: Store) {
    store.acquire_lease(LEASE, "a", LONG).await.unwrap();
    let job = job_to_write(&store).await;
    assert!(store.fence().is_none());
    store.update_job(&job, None).await.unwrap();
}

#[tokio::test]
async fn postgres_a_write_by_one_store_reaches_the_subscribers_of_another() {
    let (writer, reader) = two_stores_on_one_postgres_database().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = reader
        .relay_changes(shutdown.clone())
        .expect("PostgreSQL relays");
    let relay = tokio::spawn(relay);
    let mut events = reader.subscribe();
    let job = first_heard_write(&writer, &mut events).await;

    let mut building = job.clone();
    building.status.phase = Phase::Building;
    writer.update_job(&building, None).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("the write is heard")
        .unwrap();
    let StoreEvent::JobWritten(heard) = heard else {
        panic!("{heard:?}")
    };
    assert_eq!(
        (heard.resource_version, heard.status.phase),
        (2, Phase::Building),
        "the job as the other store wrote it"
    );
    shutdown.cancel();
    relay.await.unwrap();
}

#[tokio::test]
async fn postgres_a_store_does_not_hear_its_own_writes_twice() {
    let (other, store) = two_stores_on_one_postgres_database().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = tokio::spawn(store.relay_changes(shutdown.clone()).unwrap());
    let mut events = store.subscribe();
    // The listener is up: an echo would be heard.
    first_heard_write(&other, &mut events).await;
    let job = store.create_job(&new_job("t")).await.unwrap();
    assert!(matches!(events.recv().await, Ok(StoreEvent::JobWritten(j)) if j.id == job.id));
    let echo = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
    assert!(echo.is_err(), "heard again: {echo:?}");
    shutdown.cancel();
    relay.await.unwrap();
}
