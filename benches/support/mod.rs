//! What the benchmarks that drive a real `icarus serve` share, and the
//! measurements themselves, so that the bench binaries (`benches/requests.rs`,
//! `benches/recovery.rs`) print them and the suite's `bench::` test runs a
//! short version of the same code against the debug binary: the benchmarks
//! cannot rot unnoticed between two runs of `scripts/bench`.
//!
//! - [`server`]: one `icarus serve` process on a SQLite file of its own.
//! - [`wrk`]: runs `wrk` and reads its report.
//! - [`requests`]: the request mix and spawn throughput against a baseline.
//! - [`recovery`]: restart after SIGKILL with live jobs against an empty one.

pub mod recovery;
pub mod requests;
pub mod server;
pub mod wrk;

use std::time::Duration;

/// The suite's table: every figure beside its baseline, measured in the same run.
pub const TABLE_HEADER: &str =
    "| figure | result | baseline, same run | ratio |\n|---|---|---|---|";

/// The `icarus` binary a bench runs: this build's, or `BENCH_ICARUS` (another
/// build's, to compare two builds with the same bench in one session).
pub fn icarus_binary() -> std::path::PathBuf {
    std::env::var_os("BENCH_ICARUS")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_icarus").into())
}

/// `BENCH_*` settings: a number from the environment, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Milliseconds with one decimal, as the tables show them.
pub fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// A ratio as the README writes it: `0.52x`, with a third decimal below
/// 0.1 (`0.004x`) so a small one does not read as nothing.
pub fn ratio(measured: f64, baseline: f64) -> String {
    if baseline <= 0.0 {
        return "n/a".to_owned();
    }
    let ratio = measured / baseline;
    if ratio < 0.1 {
        format!("{ratio:.3}x")
    } else {
        format!("{ratio:.2}x")
    }
}

/// The median of some durations (the lower middle one of an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples
        .get(samples.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}
