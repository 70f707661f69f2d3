//! The disk jobs' workspaces use on this host (bind mounts): each
//! `<workspace.base_path>/<job id>` directory added up.
//!
//! An agent writes what it likes in its workspace: no link is followed
//! (only the link itself is counted), and a walk stops after
//! [`MAX_ENTRIES`] entries per workspace (what it counted so far stands),
//! so a workspace of millions of files cannot hold the sweep up for long.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::job::JobId;

/// Entries counted at most per workspace.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Every workspace under `base` and the bytes of disk it uses (its blocks).
/// Entries that are not a job's workspace are left out.
pub fn workspace_usage(base: &Path) -> std::io::Result<Vec<(JobId, u64)>> {
    let entries = match std::fs::read_dir(base) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut usage = Vec::new();
    for entry in entries.flatten() {
        let Some(job) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<JobId>().ok())
        else {
            continue;
        };
        usage.push((job, tree_bytes(&entry.path(), MAX_ENTRIES)));
    }
    Ok(usage)
}

/// The disk `root` uses, itself included, following no link, counting at
/// most `max_entries` entries.
pub fn tree_bytes(root: &Path, max_entries: usize) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        seen += 1;
        total = total.saturating_add(metadata.blocks().saturating_mul(512));
        if seen >= max_entries {
            break;
        }
        if metadata.is_dir()
            && let Ok(children) = std::fs::read_dir(&path)
        {
            pending.extend(children.flatten().map(|child| child.path()));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_is_counted_without_following_its_links() {
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 1 << 20]).unwrap();
        let job = JobId::new_random();
        let workspace = base.path().join(job.to_string());
        std::fs::create_dir_all(workspace.join("src")).unwrap();
        std::fs::write(workspace.join("src/a"), vec![1u8; 64 * 1024]).unwrap();
        std::os::unix::fs::symlink(outside.path(), workspace.join("escape")).unwrap();
        std::fs::create_dir(base.path().join("not-a-job")).unwrap();

        let usage = workspace_usage(base.path()).unwrap();
        assert_eq!(usage.len(), 1);
        let (counted, bytes) = usage[0];
        assert_eq!(counted, job);
        assert!(bytes >= 64 * 1024, "{bytes}");
        assert!(
            bytes < 1 << 20,
            "the link's target was not counted: {bytes}"
        );
    }

    #[test]
    fn a_walk_stops_at_its_entry_limit() {
        let root = tempfile::tempdir().unwrap();
        for n in 0..10 {
            std::fs::write(root.path().join(n.to_string()), vec![1u8; 8192]).unwrap();
        }
        assert!(tree_bytes(root.path(), 3) < tree_bytes(root.path(), 100));
    }

    #[test]
    fn no_base_directory_is_no_workspace() {
        let base = tempfile::tempdir().unwrap();
        assert!(
            workspace_usage(&base.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }
}
