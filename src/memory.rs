//! Handing memory back to the system once a crowd of stream subscribers
//! has left.
//!
//! glibc's allocator keeps what a program frees in its arenas, for the
//! program's next allocations, and gives the system back only the top of
//! the main heap. So a server that held 1,000 WebSocket subscribers kept
//! their memory once they had closed (measured: 25 MiB idle, 49 with them,
//! 51 after they left). `malloc_trim` hands back the free pages of every
//! arena. It is asked for once [`RETURN_AFTER_DEPARTED`] streams or more
//! have closed since the most were open, after [`QUIET`] without a close,
//! so a crowd leaving costs one trim, and a client reconnecting now and
//! then costs none.
//!
//! A build on another C library (a static musl build) keeps its
//! allocator's own behaviour: the trim is glibc's.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use crate::api::stream_limit::StreamLimiter;

/// How many streams must have closed, from the most open at once, before
/// memory is handed back: a crowd, not a client now and then.
pub const RETURN_AFTER_DEPARTED: usize = 64;

/// How long closes must stop before the trim: a crowd leaves over a while,
/// and one trim after it is enough.
pub const QUIET: Duration = Duration::from_secs(1);

/// Hands memory back after each crowd of streams leaves, until `shutdown`.
/// `returns` counts the trims.
pub async fn return_after_streams_leave(
    streams: Arc<StreamLimiter>,
    returns: Counter,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = streams.closed() => {}
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = streams.closed() => continue,
                () = tokio::time::sleep(QUIET) => break,
            }
        }
        if let Some(departed) = streams.take_departed(RETURN_AFTER_DEPARTED) {
            // A trim walks every arena under its lock: off the runtime's threads.
            let returned = tokio::task::spawn_blocking(return_free_memory).await;
            returns.inc();
            tracing::debug!(
                departed,
                ?returned,
                "freed memory handed back to the system"
            );
        }
    }
}

/// Gives the system back the allocator's free pages; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_free_memory() -> bool {
    // SAFETY: `malloc_trim` only releases memory the allocator holds free;
    // it takes the arenas' own locks and is safe to call from any thread.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators keep their own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_free_memory() -> bool {
    false
}
