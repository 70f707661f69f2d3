use std::sync::atomic::AtomicUsize;

use super::*;
use crate::job::{JobSpec, timestamp_now};

fn a_job(task: &str) -> Job {
    Job::new(JobSpec::new(task, "/p"), timestamp_now())
}

fn filled(view: &ReadView, job: &Job) -> Arc<CachedJob> {
    let fill = view.begin_fill(job.id);
    view.finish_fill(fill, job.clone())
}

#[test]
fn a_filled_job_is_served_until_it_changes() {
    let view = ReadView::new(true, ViewCounters::default());
    let job = a_job("t");
    assert!(view.get(job.id).is_none());
    filled(&view, &job);
    assert_eq!(view.get(job.id).map(|c| c.job.id), Some(job.id));
    assert_eq!(
        (view.counters().hits.get(), view.counters().misses.get()),
        (1, 1)
    );
    view.forget(job.id);
    assert!(view.get(job.id).is_none());
    assert_eq!(view.size(), (0, 0));
}

#[test]
fn a_fill_that_raced_a_change_is_served_to_its_reader_but_not_kept() {
    let view = ReadView::new(true, ViewCounters::default());
    let job = a_job("t");
    let fill = view.begin_fill(job.id);
    // The job is written between the fill's read and its end.
    view.forget(job.id);
    let served = view.finish_fill(fill, job.clone());
    assert_eq!(served.job.id, job.id);
    assert!(view.get(job.id).is_none());
}

#[test]
fn a_fill_that_raced_forgetting_everything_is_not_kept() {
    let view = ReadView::new(true, ViewCounters::default());
    let job = a_job("t");
    let fill = view.begin_fill(job.id);
    view.forget_all();
    view.finish_fill(fill, job.clone());
    assert!(view.get(job.id).is_none());
}

#[test]
fn a_fill_begun_after_the_change_is_kept() {
    let view = ReadView::new(true, ViewCounters::default());
    let job = a_job("t");
    let stale = view.begin_fill(job.id);
    view.forget(job.id);
    let fresh = view.begin_fill(job.id);
    view.finish_fill(stale, job.clone());
    assert!(view.get(job.id).is_none(), "the stale fill is not kept");
    view.finish_fill(fresh, job.clone());
    assert!(view.get(job.id).is_some());
}

#[test]
fn a_view_that_is_not_listening_serves_and_keeps_nothing() {
    let view = ReadView::new(false, ViewCounters::default());
    let job = a_job("t");
    assert!(view.begin_fill(job.id).is_none());
    filled(&view, &job);
    assert!(view.get(job.id).is_none());

    view.start_listening();
    filled(&view, &job);
    assert!(view.get(job.id).is_some());
    view.stop_listening();
    assert!(view.get(job.id).is_none());
    view.start_listening();
    assert!(view.get(job.id).is_none(), "listening again starts empty");
}

#[test]
fn an_abandoned_fill_leaves_nothing_behind() {
    let view = ReadView::new(true, ViewCounters::default());
    let job = a_job("t");
    let fill = view.begin_fill(job.id);
    view.abandon_fill(fill);
    assert!(view.lock().slots.is_empty());
}

#[test]
fn past_its_bound_the_view_forgets_the_jobs_kept_longest() {
    let job_size = CachedJob::new(a_job("t")).estimated_size();
    let view = ReadView::bounded(true, 3 * job_size, ViewCounters::default());
    let jobs: Vec<Job> = (0..5).map(|_| a_job("t")).collect();
    for job in &jobs {
        filled(&view, job);
    }
    let held: Vec<bool> = jobs.iter().map(|j| view.get(j.id).is_some()).collect();
    assert_eq!(held, [false, false, true, true, true]);
    assert_eq!(view.size(), (3, 3 * job_size));
}

#[test]
fn many_changes_do_not_grow_the_views_bookkeeping() {
    let view = ReadView::new(true, ViewCounters::default());
    let job = a_job("t");
    for _ in 0..10_000 {
        filled(&view, &job);
        view.forget(job.id);
    }
    filled(&view, &job);
    assert!(
        view.lock().order.len() <= 1025,
        "{}",
        view.lock().order.len()
    );
}

#[tokio::test]
async fn a_jobs_facts_are_read_once_per_version_held() {
    let cached = CachedJob::new(a_job("t"));
    let reads = AtomicUsize::new(0);
    for _ in 0..3 {
        let facts = cached
            .facts(|| async {
                reads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(JobFacts::default())
            })
            .await
            .unwrap();
        assert!(facts.usage.is_empty());
    }
    assert_eq!(reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn facts_that_failed_to_read_are_read_again() {
    let cached = CachedJob::new(a_job("t"));
    let failed = cached.facts(|| async { Err::<JobFacts, _>("down") }).await;
    assert!(failed.is_err());
    let read = cached
        .facts(|| async { Ok::<_, &str>(JobFacts::default()) })
        .await;
    assert!(read.is_ok());
}
