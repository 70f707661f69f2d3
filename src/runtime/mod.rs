//! Where agents actually run: the adapters of the [`Runtime`] port (the
//! trait itself is in the core, `icarus_core::ports::runtime`, re-exported
//! here): Docker containers ([`docker`]), Pods ([`kubernetes`]), and an
//! in-memory double for tests ([`fake`]).

pub mod docker;
pub mod fake;
pub mod kubernetes;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use crate::job::JobId;

pub use icarus_core::ports::runtime::{
    Cause, LogChunk, Result, Runtime, RuntimeError, Usage, WorkloadSpec,
};

/// A runtime's wake-ups as the stream [`Runtime::changes`] returns. A
/// subscriber that falls behind loses wake-ups rather than blocking the
/// runtime; the controller's periodic resync makes up for them.
pub fn wake_ups(changes: &broadcast::Sender<JobId>) -> BoxStream<'static, JobId> {
    BroadcastStream::new(changes.subscribe())
        .filter_map(|wake_up| async move { wake_up.ok() })
        .boxed()
}

/// The jobs that own some workloads, each once, in order: what
/// [`Runtime::owners`] returns.
pub fn distinct_jobs(owners: impl IntoIterator<Item = JobId>) -> Vec<JobId> {
    let owners: std::collections::BTreeSet<JobId> = owners.into_iter().collect();
    owners.into_iter().collect()
}

/// Names this orchestrator's agents after its database: whoever holds the
/// jobs owns their agents. FNV-1a, so the name is stable across builds.
pub fn instance_name(database_url: &str) -> String {
    let hash = database_url
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::errors::error_chain;

    #[test]
    fn a_failed_call_keeps_what_the_engine_said_as_its_source() {
        let engine = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no access");
        let error = RuntimeError::failed("create volume", engine);
        assert_eq!(error.to_string(), "create volume failed");
        let source = error.source().expect("the engine's error is kept");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(error_chain(&error), "create volume failed: no access");
        assert!(!error.is_permanent());
    }

    #[test]
    fn an_unreachable_runtime_says_which_call_and_is_retried() {
        let error = RuntimeError::unavailable("list pods", "connection refused");
        assert_eq!(
            error_chain(&error),
            "the runtime is unreachable (list pods): connection refused"
        );
        assert!(!error.is_permanent());
        assert!(RuntimeError::ImageNotFound("agent:1".to_owned()).is_permanent());
    }
}
