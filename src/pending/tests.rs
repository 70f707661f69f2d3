//! The queue in memory on a real SQLite store: it follows the feed, is read
//! again after a gap, and announces exactly the jobs that may take a slot.

use super::*;
use crate::job::Phase;
use crate::job::fixtures::at;
use crate::store::sql::temporary_sqlite as store;

fn job_created_at(seconds: i64) -> Job {
    let mut job = Job::pending();
    job.created_at = at(seconds);
    job
}

/// Moves a stored job to `phase`, as the controller would.
async fn move_to(store: &Store, job: &Job, phase: Phase) -> Job {
    let current = store.get_job(job.id).await.unwrap().unwrap();
    store
        .update_job(&current.in_phase(phase, at(100)), None)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_finished_job_wakes_exactly_the_head_of_the_queue() {
    let (store, _dir) = store().await;
    let running = store
        .create_job(&job_created_at(0).in_phase(Phase::Building, at(0)))
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for second in 1..=5 {
        waiting.push(store.create_job(&job_created_at(second)).await.unwrap());
    }
    let shutdown = CancellationToken::new();
    let (pending, follow) = PendingJobs::start(&store, None, 1, shutdown.clone())
        .await
        .unwrap();
    let follow = tokio::spawn(follow);
    assert_eq!(pending.head(), vec![], "the only slot is taken");
    let mut heads = pending.heads();
    heads.mark_unchanged();

    move_to(&store, &running, Phase::Failed).await;
    tokio::time::timeout(Duration::from_secs(5), heads.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.head(), vec![waiting[0].id]);
    assert_eq!((pending.active(), pending.len()), (0, 5));

    // The first takes the slot: nobody else is next.
    move_to(&store, &waiting[0], Phase::Building).await;
    tokio::time::timeout(Duration::from_secs(5), heads.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.head(), vec![]);
    shutdown.cancel();
    follow.await.unwrap();
}

#[tokio::test]
async fn the_queue_is_read_again_after_the_feed_lagged() {
    let (store, _dir) = store().await;
    let shutdown = CancellationToken::new();
    let (pending, follow) = PendingJobs::start(&store, None, 0, shutdown.clone())
        .await
        .unwrap();
    // More writes than the feed keeps for a subscriber that does not read.
    let jobs = 1100;
    let mut first = None;
    for second in 0..jobs {
        let job = store.create_job(&job_created_at(second)).await.unwrap();
        first.get_or_insert(job.id);
    }
    let follow = tokio::spawn(follow);
    eventually(|| pending.len() == jobs as usize).await;
    let gate = Gate::open(0);
    let first = first.unwrap();
    let places = pending.places_of(&[first], &gate, at(2000));
    assert_eq!(
        places[&first].position, 1,
        "the first write, lost in the lag"
    );
    shutdown.cancel();
    follow.await.unwrap();
}

#[tokio::test]
async fn the_controllers_own_write_counts_before_it_comes_round_the_feed() {
    let (store, _dir) = store().await;
    let job = store.create_job(&job_created_at(0)).await.unwrap();
    let pending = PendingJobs::new(None, 1);
    pending.rebuild(store.queue_entries().await.unwrap());
    let admitted = move_to(&store, &job, Phase::Building).await;
    pending.observe(&admitted);
    // The feed's copy of the older version changes nothing.
    pending.observe(&job);
    assert_eq!((pending.active(), pending.len()), (1, 0));
}

async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s");
}
