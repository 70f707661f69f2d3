//! Agents' usage in Kubernetes mode, from the metrics API (`metrics.k8s.io`,
//! served where the cluster runs metrics-server): each Pod's CPU rate and
//! working-set memory over the kubelet's latest window.
//!
//! The API gives a rate; the sampler keeps CPU time (as the engine's stats
//! do in local mode). So each new reading adds its rate times the time since
//! the reading before (the first, times its own window): CPU time as the
//! windows saw it, not to the nanosecond. A cluster without the API, or a
//! Pod it has no window for yet, is no reading at all (`None`), never an
//! error: the sampler tries again next round.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::Value;

use super::{failed, status_of};
use crate::runtime::{Result, Usage};

/// One window of one Pod, summed over its containers.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    at: DateTime<Utc>,
    window_seconds: f64,
    cpu_cores: f64,
    memory_bytes: u64,
}

pub(super) struct PodMetrics {
    api: Api<DynamicObject>,
    cpu: CpuTime,
}

/// Per Pod: the last window's end, and the CPU time up to it.
#[derive(Debug, Default)]
struct CpuTime(Mutex<HashMap<String, (DateTime<Utc>, f64)>>);

impl PodMetrics {
    pub(super) fn new(client: Client, namespace: &str) -> PodMetrics {
        let resource = ApiResource {
            group: "metrics.k8s.io".to_owned(),
            version: "v1beta1".to_owned(),
            api_version: "metrics.k8s.io/v1beta1".to_owned(),
            kind: "PodMetrics".to_owned(),
            plural: "pods".to_owned(),
        };
        PodMetrics {
            api: Api::namespaced_with(client, namespace, &resource),
            cpu: CpuTime::default(),
        }
    }

    pub(super) async fn usage(&self, pod: &str) -> Result<Option<Usage>> {
        let object = match self.api.get_opt(pod).await {
            Ok(Some(object)) => object,
            Ok(None) => return Ok(None),
            // No metrics API in this cluster.
            Err(error) if status_of(&error) == Some(404) => return Ok(None),
            Err(error) => return Err(failed("read pod metrics", error)),
        };
        let Some(reading) = read(&object.data) else {
            return Ok(None);
        };
        Ok(Some(self.cpu.add(pod, reading)))
    }

    pub(super) fn forget(&self, pod: &str) {
        self.cpu.forget(pod);
    }
}

impl CpuTime {
    /// Adds the reading's CPU to the Pod's total, once per window.
    fn add(&self, pod: &str, reading: Reading) -> Usage {
        let mut cpu = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (last_at, total) = cpu
            .get(pod)
            .copied()
            .unwrap_or((reading.at, reading.cpu_cores * reading.window_seconds));
        let since = (reading.at - last_at).as_seconds_f64().max(0.0);
        let total = total + reading.cpu_cores * since;
        cpu.insert(pod.to_owned(), (reading.at.max(last_at), total));
        Usage {
            cpu_seconds: total,
            memory_bytes: reading.memory_bytes,
        }
    }

    fn forget(&self, pod: &str) {
        let mut cpu = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cpu.remove(pod);
    }
}

/// A PodMetrics object's window, summed over its containers; `None` if it
/// says nothing readable.
fn read(data: &Value) -> Option<Reading> {
    let at = data["timestamp"].as_str()?.parse().ok()?;
    let window_seconds = seconds(data["window"].as_str()?)?;
    let mut cpu_cores = 0.0;
    let mut memory_bytes = 0;
    for container in data["containers"].as_array()? {
        cpu_cores += cores(container["usage"]["cpu"].as_str()?)?;
        memory_bytes += bytes(container["usage"]["memory"].as_str()?)?;
    }
    Some(Reading {
        at,
        window_seconds,
        cpu_cores,
        memory_bytes,
    })
}

/// A CPU quantity in cores: `250m`, `123456789n`, `5u`, `2`.
fn cores(quantity: &str) -> Option<f64> {
    let scaled = |suffix: &str, scale: f64| {
        quantity
            .strip_suffix(suffix)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * scale)
    };
    scaled("n", 1e-9)
        .or_else(|| scaled("u", 1e-6))
        .or_else(|| scaled("m", 1e-3))
        .or_else(|| quantity.parse().ok())
        .filter(|cores: &f64| cores.is_finite() && *cores >= 0.0)
}

/// A memory quantity in bytes: `123`, `12Ki`, `3Mi`, `1Gi`, `1k`, `2M`.
fn bytes(quantity: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, scale) in UNITS {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<u64>().ok()?.checked_mul(scale);
        }
    }
    quantity.parse().ok()
}

/// A Go duration as the API writes a window: `30s`, `1m0s`, `10.5s`.
fn seconds(duration: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut number = String::new();
    for c in duration.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'h' | 'm' | 's' => {
                let value: f64 = number.parse().ok()?;
                total += value
                    * match c {
                        'h' => 3600.0,
                        'm' => 60.0,
                        _ => 1.0,
                    };
                number.clear();
            }
            _ => return None,
        }
    }
    number.is_empty().then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_read_as_the_api_writes_them() {
        assert_eq!(cores("250m"), Some(0.25));
        assert_eq!(cores("2"), Some(2.0));
        assert!((cores("123456789n").unwrap() - 0.123_456_789).abs() < 1e-12);
        assert_eq!(cores("-1"), None);
        assert_eq!(bytes("12Ki"), Some(12 * 1024));
        assert_eq!(bytes("3Mi"), Some(3 << 20));
        assert_eq!(bytes("2M"), Some(2_000_000));
        assert_eq!(bytes("123"), Some(123));
        assert_eq!(bytes("lots"), None);
        assert_eq!(seconds("30s"), Some(30.0));
        assert_eq!(seconds("1m0s"), Some(60.0));
        assert_eq!(seconds("10.5s"), Some(10.5));
        assert_eq!(seconds("5x"), None);
    }

    fn window(at: &str, cpu: &str, memory: &str) -> Value {
        json!({
            "timestamp": at, "window": "10s",
            "containers": [
                {"name": "agent", "usage": {"cpu": cpu, "memory": memory}},
                {"name": "other", "usage": {"cpu": "0", "memory": "1Mi"}},
            ],
        })
    }

    #[test]
    fn a_pods_containers_are_summed() {
        let reading = read(&window("2026-12-06T10:00:00Z", "500m", "100Mi")).unwrap();
        assert_eq!(reading.cpu_cores, 0.5);
        assert_eq!(reading.memory_bytes, 101 << 20);
        assert_eq!(read(&json!({"timestamp": "x"})), None);
    }

    #[test]
    fn cpu_time_adds_each_windows_rate_over_the_time_since_the_last() {
        let cpu = CpuTime::default();
        let first = read(&window("2026-12-06T10:00:00Z", "500m", "1Mi")).unwrap();
        assert_eq!(
            cpu.add("p", first).cpu_seconds,
            5.0,
            "0.5 × its 10 s window"
        );
        assert_eq!(
            cpu.add("p", first).cpu_seconds,
            5.0,
            "a window is counted once"
        );
        let later = read(&window("2026-12-06T10:00:20Z", "1", "1Mi")).unwrap();
        assert_eq!(cpu.add("p", later).cpu_seconds, 25.0, "+ 1 × 20 s");
        cpu.forget("p");
        assert_eq!(
            cpu.add("p", later).cpu_seconds,
            10.0,
            "a forgotten Pod starts again"
        );
    }
}
