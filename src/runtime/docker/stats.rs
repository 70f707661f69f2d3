//! What a container uses, read from the engine's stats API once per call
//! (`stream=false, one-shot=true`: no second reading for a CPU percentage).
//! Where this host shows the engine's cgroups, [`super::cgroups`] answers
//! first at no cost to the engine: a stats call costs the engine several
//! milliseconds of CPU, and Docker 20.10 answers them one at a time, about
//! one a second (README "Benchmark").
//!
//! Memory is counted as `docker stats` counts it: the cgroup's usage less
//! the page cache the kernel can reclaim (`inactive_file` on cgroup v2,
//! `total_inactive_file` on v1), so an agent that reads many files does not
//! look as if it used that memory.

use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptions;
use futures::StreamExt;

use super::{DockerRuntime, failed, is_status};
use crate::runtime::{Result, Usage};

impl DockerRuntime {
    /// One reading of the container's usage; `None` when it is gone or not running.
    pub(super) async fn one_shot_usage(&self, id: &str) -> Result<Option<Usage>> {
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stats = self.docker.stats(id, Some(options));
        match stats.next().await {
            Some(Ok(stats)) => Ok(usage_of(&stats)),
            Some(Err(error)) if is_status(&error, 404) => Ok(None),
            Some(Err(error)) => Err(failed("read container stats", error)),
            None => Ok(None),
        }
    }
}

/// The usage in one stats answer; `None` for a container that is not
/// running (the engine then answers with its fields empty).
fn usage_of(stats: &ContainerStatsResponse) -> Option<Usage> {
    let memory = stats.memory_stats.as_ref()?;
    let used = memory.usage?;
    // As the Docker CLI counts it: cgroup v1 reports both counters (the
    // `total_` one includes nested groups), v2 only `inactive_file`; a
    // counter not below the usage is not subtracted.
    let counters = memory.stats.as_ref();
    let counter = |name: &str| counters.and_then(|counters| counters.get(name).copied());
    let cache = counter("total_inactive_file")
        .filter(|cache| *cache < used)
        .or_else(|| counter("inactive_file").filter(|cache| *cache < used))
        .unwrap_or(0);
    let cpu_nanoseconds = stats
        .cpu_stats
        .as_ref()
        .and_then(|cpu| cpu.cpu_usage.as_ref())
        .and_then(|usage| usage.total_usage)
        .unwrap_or(0);
    Some(Usage {
        cpu_seconds: cpu_nanoseconds as f64 / 1e9,
        memory_bytes: used - cache,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    use super::*;

    fn stats(total_ns: u64, usage: u64, counters: &[(&str, u64)]) -> ContainerStatsResponse {
        ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(total_ns),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(usage),
                stats: Some(
                    counters
                        .iter()
                        .map(|(name, value)| (name.to_string(), *value))
                        .collect::<HashMap<_, _>>(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn memory_leaves_out_the_page_cache_on_cgroup_v2_and_v1() {
        let v2 = usage_of(&stats(
            2_500_000_000,
            100 << 20,
            &[("inactive_file", 30 << 20)],
        ));
        assert_eq!(
            v2,
            Some(Usage {
                cpu_seconds: 2.5,
                memory_bytes: 70 << 20
            })
        );
        let v1 = usage_of(&stats(
            0,
            100 << 20,
            &[
                ("total_inactive_file", 60 << 20),
                ("inactive_file", 50 << 20),
            ],
        ));
        assert_eq!(v1.map(|usage| usage.memory_bytes), Some(40 << 20));
        let odd = usage_of(&stats(0, 10 << 20, &[("inactive_file", 20 << 20)]));
        assert_eq!(
            odd.map(|usage| usage.memory_bytes),
            Some(10 << 20),
            "a cache over the usage is not subtracted"
        );
    }

    #[test]
    fn a_container_that_is_not_running_has_no_usage() {
        assert_eq!(usage_of(&ContainerStatsResponse::default()), None);
    }
}
