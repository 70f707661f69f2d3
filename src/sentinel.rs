//! The sentinel: classifies host load as GREEN, YELLOW or RED.
//!
//! It samples CPU (from `/proc/stat`, as the busy share between two samples)
//! and memory (from `/proc/meminfo`, `MemAvailable`) every
//! `sentinel.poll_interval_seconds` and publishes the level on a watch
//! channel. Admission reads the level; the spawn route refuses at RED. When
//! `sentinel.enabled` is false, or `/proc` cannot be read, the level stays GREEN.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::SentinelConfig;
use crate::job::admission::LoadLevel;

/// Cumulative CPU time counters from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Maps a CPU and a memory percentage to a level.
pub fn classify(cpu_percent: f64, memory_percent: f64, config: &SentinelConfig) -> LoadLevel {
    let worst = cpu_percent.max(memory_percent);
    if worst >= config.red_threshold {
        LoadLevel::Red
    } else if worst >= config.yellow_threshold {
        LoadLevel::Yellow
    } else {
        LoadLevel::Green
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_cpu_times(proc_stat: &str) -> Option<CpuTimes> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if values.len() < 4 {
        return None;
    }
    let total: u64 = values.iter().sum();
    // idle + iowait are the only fields that are not busy time.
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Percentage of CPU time that was busy between two samples.
pub fn cpu_percent(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let busy = after.busy.saturating_sub(before.busy);
    100.0 * busy as f64 / total as f64
}

/// Percentage of memory in use, from `/proc/meminfo`.
pub fn memory_percent(meminfo: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| 100.0 * (total - available) / total)
}

/// Starts sampling; the returned receiver always holds the latest level.
pub fn spawn(config: SentinelConfig, shutdown: CancellationToken) -> watch::Receiver<LoadLevel> {
    let (sender, receiver) = watch::channel(LoadLevel::Green);
    if config.enabled {
        tokio::spawn(sample_forever(config, sender, shutdown));
    }
    receiver
}

async fn sample_forever(
    config: SentinelConfig,
    sender: watch::Sender<LoadLevel>,
    shutdown: CancellationToken,
) {
    let interval = Duration::from_secs(config.poll_interval_seconds);
    let mut previous = read_cpu_times().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let current = read_cpu_times().await;
        let memory = tokio::fs::read_to_string("/proc/meminfo").await.ok();
        let (Some(before), Some(after), Some(memory)) = (
            previous,
            current,
            memory.as_deref().and_then(memory_percent),
        ) else {
            previous = current;
            continue;
        };
        let level = classify(cpu_percent(before, after), memory, &config);
        if *sender.borrow() != level {
            tracing::warn!(?level, "host load level changed");
        }
        sender.send_replace(level);
        previous = current;
    }
}

async fn read_cpu_times() -> Option<CpuTimes> {
    let text = tokio::fs::read_to_string("/proc/stat").await.ok()?;
    parse_cpu_times(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> SentinelConfig {
        SentinelConfig {
            enabled: true,
            yellow_threshold: 80.0,
            red_threshold: 90.0,
            poll_interval_seconds: 5,
        }
    }

    #[test]
    fn the_worse_of_cpu_and_memory_decides_the_level() {
        assert_eq!(classify(10.0, 20.0, &thresholds()), LoadLevel::Green);
        assert_eq!(classify(85.0, 20.0, &thresholds()), LoadLevel::Yellow);
        assert_eq!(classify(10.0, 95.0, &thresholds()), LoadLevel::Red);
    }

    #[test]
    fn cpu_usage_is_the_busy_share_between_two_samples() {
        let before = parse_cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let after = parse_cpu_times("cpu  200 0 200 800 100 0 0 0 0 0\n").unwrap();
        assert!((cpu_percent(before, after) - 66.666).abs() < 0.01);
    }

    #[test]
    fn memory_usage_comes_from_mem_available() {
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory_percent(meminfo), Some(75.0));
        assert_eq!(memory_percent("garbage"), None);
    }
}
