//! Recovery after SIGKILL of a real `icarus serve` (this build, SQLite, the
//! Docker engine) with 100 live jobs whose reference builders hang: restart
//! to ready, and to every job adopted again, as ratios against the same
//! restart with no job (see `support::recovery`). Every container is
//! removed afterwards.
//!
//! Run with `scripts/build-images && cargo bench --bench recovery`
//! (`BENCH_JOBS` live jobs). `scripts/bench` runs it with the rest of the
//! suite. Prints a Markdown table.

#[allow(
    dead_code,
    reason = "each bench binary uses part of what the benches share"
)]
mod support;

#[tokio::main]
async fn main() {
    let report = support::recovery::measure(&support::recovery::Settings::from_env()).await;
    report.print();
}
