//! What a container uses, read from its cgroup files when this host shows
//! the engine's cgroup tree (Icarus beside the engine, not in a container of
//! its own): a few small reads, no engine call. The engine's stats API
//! ([`super::stats`]) answers otherwise, and for a container whose cgroup is
//! not found.
//!
//! The layouts looked for, under the root (`/sys/fs/cgroup`): cgroup v2 with
//! the `cgroupfs` driver (`docker/<id>`) or `systemd`
//! (`system.slice/docker-<id>.scope`), each with `cpu.stat` and
//! `memory.current`; cgroup v1 the same two under the `cpuacct` and
//! `memory` hierarchies. Memory leaves out the reclaimable page cache as
//! the stats path does.

use std::path::{Path, PathBuf};

use crate::runtime::Usage;

/// The usage of the container `id` from the cgroup tree at `root`, if it is there.
pub(super) async fn usage(root: &Path, id: &str) -> Option<Usage> {
    // The id goes into a path: only an engine's full id (64 hex digits) may.
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (root, id) = (root.to_owned(), id.to_owned());
    tokio::task::spawn_blocking(move || read(&root, &id))
        .await
        .ok()
        .flatten()
}

fn read(root: &Path, id: &str) -> Option<Usage> {
    let groups = [
        format!("docker/{id}"),
        format!("system.slice/docker-{id}.scope"),
    ];
    groups
        .iter()
        .find_map(|group| v2(&root.join(group)))
        .or_else(|| groups.iter().find_map(|group| v1(root, group)))
}

fn v2(dir: &Path) -> Option<Usage> {
    let cpu_microseconds = counter(
        &std::fs::read_to_string(dir.join("cpu.stat")).ok()?,
        "usage_usec",
    )?;
    let used = number(&dir.join("memory.current"))?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    Some(Usage {
        cpu_seconds: cpu_microseconds as f64 / 1e6,
        memory_bytes: less_cache(used, counter(&stat, "inactive_file")),
    })
}

fn v1(root: &Path, group: &str) -> Option<Usage> {
    let cpu_nanoseconds = number(&root.join("cpuacct").join(group).join("cpuacct.usage"))?;
    let memory: PathBuf = root.join("memory").join(group);
    let used = number(&memory.join("memory.usage_in_bytes"))?;
    let stat = std::fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
    let cache = counter(&stat, "total_inactive_file").or_else(|| counter(&stat, "inactive_file"));
    Some(Usage {
        cpu_seconds: cpu_nanoseconds as f64 / 1e9,
        memory_bytes: less_cache(used, cache),
    })
}

/// `used` less the page cache, unless the cache is not below it (as the
/// Docker CLI counts).
fn less_cache(used: u64, cache: Option<u64>) -> u64 {
    used - cache.filter(|cache| *cache < used).unwrap_or(0)
}

/// A file holding one number.
fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `name value` in a flat-keyed file (`cpu.stat`, `memory.stat`).
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[tokio::test]
    async fn cgroup_v2_files_give_cpu_time_and_memory_less_the_page_cache() {
        let root = tempfile::tempdir().unwrap();
        let dir = format!("system.slice/docker-{ID}.scope");
        write(
            root.path(),
            &format!("{dir}/cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\n",
        );
        write(root.path(), &format!("{dir}/memory.current"), "104857600\n");
        write(
            root.path(),
            &format!("{dir}/memory.stat"),
            "anon 1\ninactive_file 31457280\n",
        );
        let usage = usage(root.path(), ID).await;
        assert_eq!(
            usage,
            Some(Usage {
                cpu_seconds: 2.5,
                memory_bytes: 70 << 20
            })
        );
    }

    #[tokio::test]
    async fn cgroup_v1_files_give_cpu_time_and_memory_less_the_page_cache() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            &format!("cpuacct/docker/{ID}/cpuacct.usage"),
            "1500000000\n",
        );
        write(
            root.path(),
            &format!("memory/docker/{ID}/memory.usage_in_bytes"),
            "104857600\n",
        );
        write(
            root.path(),
            &format!("memory/docker/{ID}/memory.stat"),
            "inactive_file 1\ntotal_inactive_file 62914560\n",
        );
        let usage = usage(root.path(), ID).await;
        assert_eq!(
            usage,
            Some(Usage {
                cpu_seconds: 1.5,
                memory_bytes: 40 << 20
            })
        );
    }

    #[tokio::test]
    async fn no_cgroup_or_an_id_that_is_not_an_engine_s_gives_nothing() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(usage(root.path(), ID).await, None);
        write(root.path(), "docker/../../etc/cpu.stat", "usage_usec 1\n");
        assert_eq!(usage(root.path(), "../../etc").await, None);
    }
}
