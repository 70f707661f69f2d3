use std::sync::atomic::AtomicUsize;
use std::time::Duration;

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

fn every_job(limit: u32) -> JobFilter {
    JobFilter {
        phase: None,
        project_id: None,
        limit,
        after: None,
    }
}

fn a_page(body: &str) -> Arc<Page> {
    Arc::new(Page::new(Bytes::copy_from_slice(body.as_bytes()), None))
}

fn kept_page(view: &ReadView, filter: &JobFilter, body: &str) {
    let fill = view.begin_page(filter);
    view.finish_page(fill, a_page(body));
}

#[test]
fn a_list_page_is_served_until_any_job_changes() {
    let view = ReadView::new(true, ViewCounters::default());
    let (fifty, ten) = (every_job(50), every_job(10));
    kept_page(&view, &fifty, "[1]");
    kept_page(&view, &ten, "[2]");
    assert_eq!(
        view.page(&fifty).map(|p| p.body.clone()),
        Some("[1]".into())
    );
    assert_eq!(view.page(&ten).map(|p| p.body.clone()), Some("[2]".into()));
    view.job_changed(a_job("another job").id);
    assert!(
        view.page(&fifty).is_none(),
        "any job's change drops every page"
    );
    assert!(view.page(&ten).is_none());
}

#[test]
fn what_a_status_shows_beside_a_job_changing_keeps_the_pages() {
    let view = ReadView::new(true, ViewCounters::default());
    let job = a_job("t");
    kept_page(&view, &every_job(50), "[]");
    view.forget(job.id);
    assert!(view.page(&every_job(50)).is_some());
}

#[test]
fn a_page_kept_for_a_while_is_served_until_then_or_until_the_queue_changes() {
    let view = ReadView::new(true, ViewCounters::default());
    let (fresh, stale) = (every_job(50), every_job(10));
    let body = |text: &str| Bytes::copy_from_slice(text.as_bytes());
    let keep = |filter: &JobFilter, page: Page| {
        let fill = view.begin_page(filter);
        view.finish_page(fill, Arc::new(page));
    };
    keep(
        &fresh,
        Page::fresh_for(body("[1]"), None, Duration::from_secs(3600)),
    );
    keep(&stale, Page::fresh_for(body("[2]"), None, Duration::ZERO));
    assert!(view.page(&fresh).is_some());
    assert!(view.page(&stale).is_none(), "past its time");
    view.forget_pages();
    assert!(
        view.page(&fresh).is_none(),
        "a hold or a drain drops every page"
    );
}

#[tokio::test]
async fn readers_of_a_page_being_made_wait_for_it_instead_of_making_it_too() {
    let view = Arc::new(ReadView::new(true, ViewCounters::default()));
    let filter = every_job(50);
    let fill = view.page_or_fill(&filter).await.expect_err("nothing kept");
    let fill = fill.expect("the view listens");
    let waiting = tokio::spawn({
        let (view, filter) = (view.clone(), filter.clone());
        async move {
            view.page_or_fill(&filter)
                .await
                .map(|page| page.body.clone())
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "the second reader waits for the first"
    );

    view.finish_page(Some(fill), a_page("[made once]"));

    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken by the fill")
        .unwrap();
    assert_eq!(answer.ok(), Some("[made once]".into()));
}

#[tokio::test]
async fn a_fill_given_up_lets_the_next_reader_make_the_page() {
    let view = Arc::new(ReadView::new(true, ViewCounters::default()));
    let filter = every_job(50);
    let fill = view.page_or_fill(&filter).await.unwrap_err().unwrap();
    let waiting = tokio::spawn({
        let (view, filter) = (view.clone(), filter.clone());
        async move { view.page_or_fill(&filter).await.is_err() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    drop(fill); // the first reader's read of the database failed

    let told_to_fill = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("woken at once, not after the wait's bound")
        .unwrap();
    assert!(told_to_fill);
}

#[test]
fn a_page_read_while_a_job_changed_is_not_kept() {
    let view = ReadView::new(true, ViewCounters::default());
    let filter = every_job(50);
    let fill = view.begin_page(&filter);
    view.job_changed(a_job("t").id);
    view.finish_page(fill, a_page("[stale]"));
    assert!(view.page(&filter).is_none());
    let fill = view.begin_page(&filter);
    view.forget_all();
    view.finish_page(fill, a_page("[stale]"));
    assert!(view.page(&filter).is_none());
}

#[test]
fn no_page_is_kept_or_served_while_the_view_does_not_listen() {
    let view = ReadView::new(false, ViewCounters::default());
    let filter = every_job(50);
    assert!(view.begin_page(&filter).is_none());
    kept_page(&view, &filter, "[]");
    assert!(view.page(&filter).is_none());
    view.start_listening();
    kept_page(&view, &filter, "[]");
    assert!(view.page(&filter).is_some());
    view.stop_listening();
    assert!(view.page(&filter).is_none());
    view.start_listening();
    assert!(view.page(&filter).is_none(), "listening again starts empty");
}

#[test]
fn a_kept_pages_encoding_is_made_once() {
    let view = ReadView::new(true, ViewCounters::default());
    kept_page(&view, &every_job(50), "[1,2,3]");
    let page = view.page(&every_job(50)).unwrap();
    let encodings = AtomicUsize::new(0);
    for _ in 0..3 {
        let encoded = page.encoded(|body| {
            encodings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Bytes::copy_from_slice(&body[1..2])
        });
        assert_eq!(encoded, Bytes::from("1"));
    }
    assert_eq!(encodings.into_inner(), 1);
}

/// A page counts twice its body (room for its encoding).
#[test]
fn pages_past_their_bound_are_dropped_and_kept_again_as_read() {
    let view = ReadView::new(true, ViewCounters::default());
    let big = "x".repeat(pages::MAX_PAGE_BYTES / 4 + 1);
    kept_page(&view, &every_job(1), &big);
    kept_page(&view, &every_job(2), &big);
    assert!(view.page(&every_job(1)).is_none(), "dropped for the second");
    assert!(view.page(&every_job(2)).is_some());
    let too_big = "x".repeat(pages::MAX_PAGE_BYTES / 2 + 1);
    kept_page(&view, &every_job(3), &too_big);
    assert!(view.page(&every_job(3)).is_none(), "never kept");
}
