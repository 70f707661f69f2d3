//! Runs `wrk` (the HTTP load generator; `scripts/bench` installs it) and
//! reads its report: requests per second, the latency percentiles of
//! `--latency`, and anything that was not a success.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// One run of `wrk`.
pub struct Load<'a> {
    pub url: String,
    pub threads: usize,
    pub connections: usize,
    /// Whole seconds (wrk's resolution).
    pub seconds: u64,
    /// A Lua script (`-s`), e.g. to POST a body.
    pub script: Option<&'a Path>,
    /// Request headers (`-H`), e.g. `Accept-Encoding: gzip` as a browser sends.
    pub headers: &'a [&'a str],
}

/// What `wrk --latency` reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub requests: u64,
    pub requests_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Answers outside 2xx and 3xx.
    pub failed: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
}

impl Outcome {
    /// `12,345 req/s, p50 1.2 ms, p99 3.4 ms`, and any failure.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} req/s, p50 {}, p99 {}",
            thousands(self.requests_per_second),
            super::millis(self.p50),
            super::millis(self.p99)
        );
        if self.failed > 0 || self.socket_errors > 0 {
            text.push_str(&format!(
                " ({} non-2xx, {} socket errors)",
                self.failed, self.socket_errors
            ));
        }
        text
    }
}

/// Whether `wrk` can be run here.
pub fn installed() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

pub async fn run(load: &Load<'_>) -> Outcome {
    let mut command = Command::new("wrk");
    command
        .arg("--latency")
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.seconds))
        .arg("--timeout")
        .arg("10s");
    if let Some(script) = load.script {
        command.arg("-s").arg(script);
    }
    for header in load.headers {
        command.arg("-H").arg(header);
    }
    let output = command
        .arg(&load.url)
        .output()
        .await
        .expect("wrk runs (scripts/bench installs it)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {report}");
    parse(&report).unwrap_or_else(|| panic!("wrk's report is not understood:\n{report}"))
}

/// Reads wrk's report (`--latency`); `None` if a part is missing.
pub fn parse(report: &str) -> Option<Outcome> {
    let mut outcome = Outcome::default();
    let mut seen = (false, false, false, false);
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => (outcome.p50, seen.0) = (duration(value)?, true),
            ["99%", value] => (outcome.p99, seen.1) = (duration(value)?, true),
            ["Requests/sec:", value] => {
                (outcome.requests_per_second, seen.2) = (value.parse().ok()?, true);
            }
            [count, "requests", "in", ..] => {
                (outcome.requests, seen.3) = (count.parse().ok()?, true)
            }
            ["Non-2xx", "or", "3xx", "responses:", count] => outcome.failed = count.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                outcome.socket_errors = rest
                    .iter()
                    .filter_map(|word| word.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    (seen == (true, true, true, true)).then_some(outcome)
}

/// wrk's `812.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// `12345.6` as `12,346`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut grouped = String::new();
    for (n, digit) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}
