//! The labels every container of Icarus carries, and the engine events that
//! concern them: what both the runtime (writing and listing containers) and
//! the event follower (filtering the engine's stream) must spell alike.

pub const LABEL_JOB: &str = "icarus.job";
pub const LABEL_ROLE: &str = "icarus.role";
pub const LABEL_ATTEMPT: &str = "icarus.attempt";
pub const LABEL_INSTANCE: &str = "icarus.instance";

/// Engine events that can change what a job's reconcile decides.
pub const WATCHED_EVENTS: [&str; 5] = ["create", "start", "die", "oom", "destroy"];
