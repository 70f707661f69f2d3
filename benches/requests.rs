//! The request mix and spawn throughput of a real `icarus serve` (this
//! build, SQLite, 10,000 finished jobs stored), measured with `wrk`, each
//! route as a ratio against `GET /healthz` measured just before it with the
//! same load (see `support::requests`).
//!
//! Run with `cargo bench --bench requests` (`wrk` installed; `BENCH_JOBS`
//! stored jobs, `BENCH_SECONDS` per wrk run). `scripts/bench` runs it with
//! the rest of the suite. Prints a Markdown table.

#[allow(
    dead_code,
    reason = "each bench binary uses part of what the benches share"
)]
mod support;

#[tokio::main]
async fn main() {
    assert!(
        support::wrk::installed(),
        "wrk is not installed: apt-get install wrk"
    );
    let report = support::requests::measure(&support::requests::Settings::from_env()).await;
    report.print();
}
