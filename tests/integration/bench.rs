//! The benchmark suite's own code (`benches/support`, which `benches/requests.rs`
//! and `benches/recovery.rs` print and `scripts/bench` puts in the README),
//! run short against this build's binary on the real Docker engine, so that
//! a change to the API, the configuration or the metrics it relies on breaks
//! the suite rather than the next benchmark run. No number is judged here:
//! only that every request succeeded and every figure was measured.

use std::time::Duration;

#[path = "../../benches/support/mod.rs"]
#[allow(dead_code, reason = "the bench binaries use what the test does not")]
mod benches;

use benches::{recovery, requests, wrk};

#[tokio::test(flavor = "multi_thread")]
async fn a_short_benchmark_run_answers_every_request_and_adopts_every_live_job_after_sigkill() {
    let settings = recovery::Settings {
        jobs: 2,
        baseline_runs: 1,
    };
    let recovery = recovery::measure(&settings).await;
    assert_eq!(recovery.kept, 2, "both jobs kept their builder");
    assert!(recovery.adopted >= recovery.ready);
    assert!(recovery.baseline_median() > Duration::ZERO);
    assert_eq!(recovery.rows().len(), 2);

    if !wrk::installed() {
        eprintln!("wrk is not installed (scripts/bench installs it): the request mix is not run");
        return;
    }
    let settings = requests::Settings {
        jobs: 200,
        seconds: 1,
        threads: 1,
        connections: 4,
        spawn_connections: 2,
    };
    let report = requests::measure(&settings).await;
    for figure in report.reads.iter().chain([&report.spawn, &report.backlog]) {
        for outcome in [&figure.measured, &figure.baseline] {
            assert!(outcome.requests > 0, "{}: {outcome:?}", figure.what);
            assert_eq!(
                (outcome.failed, outcome.socket_errors),
                (0, 0),
                "{}: every request succeeded",
                figure.what
            );
            assert!(outcome.p50 <= outcome.p99, "{}: {outcome:?}", figure.what);
        }
    }
    let answered = report.spawn.measured.requests;
    let in_flight = settings.spawn_connections as u64;
    assert!(
        (answered..=answered + in_flight).contains(&report.spawned),
        "each answered spawn stored a job: {answered} answered, {} stored",
        report.spawned
    );
    assert_eq!(report.rows().len(), 6);
}
