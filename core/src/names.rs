//! The names and labels of everything Icarus makes, for both runtimes and
//! the tests, in one place.
//!
//! Names are deterministic, derived from the job id (and role, attempt or
//! step): creating an object that exists adopts it, so a restarted
//! orchestrator finds what it made instead of making it twice. Labels say
//! which job an object belongs to, so a resync can find every object of a
//! job, and a job that no longer exists, from the objects alone.
//!
//! It takes the job id as anything that prints (a `JobId`), so that it
//! depends on nothing of the domain and the domain may use it.

use std::fmt::Display;

/// An agent's container or Pod: `icarus-<job>-<role>-<attempt>`.
pub fn agent(job: impl Display, role: impl Display, attempt: u32) -> String {
    format!("icarus-{job}-{role}-{attempt}")
}

/// A job's workspace: the Docker volume (volume mode) or the
/// PersistentVolumeClaim the agents mount.
pub fn workspace(job: impl Display) -> String {
    format!("icarus-{job}-workspace")
}

/// The claim holding a job's bare Git repository (Kubernetes mode), which
/// no agent mounts.
pub fn repository(job: impl Display) -> String {
    format!("icarus-{job}-repository")
}

/// A git step's Pod (Kubernetes mode): `icarus-<job>-git-<step>`, with
/// `step` one of `checkout`, `snapshot`, `publish`.
pub fn git_step(job: impl Display, step: &str) -> String {
    format!("icarus-{job}-git-{step}")
}

/// Docker's labels. Their keys predate the Kubernetes ones and stay as they
/// are: a running orchestrator adopts its containers by these labels, and a
/// rename would orphan every agent running across an upgrade.
pub mod docker {
    pub const JOB: &str = "icarus.job";
    pub const ROLE: &str = "icarus.role";
    pub const ATTEMPT: &str = "icarus.attempt";
    /// Which orchestrator (by database) owns the container.
    pub const INSTANCE: &str = "icarus.instance";
}

/// Kubernetes labels, on every Pod and claim.
pub mod kubernetes {
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// `MANAGED_BY`'s value.
    pub const MANAGER: &str = "icarus";
    pub const JOB: &str = "icarus.dev/job-id";
    pub const ROLE: &str = "icarus.dev/role";
    pub const ATTEMPT: &str = "icarus.dev/attempt";
    /// A git Pod's step.
    pub const STEP: &str = "icarus.dev/step";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobId, Role};

    const JOB: &str = "6b1f0b4e-1111-4222-8333-944444444444";

    #[test]
    fn every_name_is_the_job_id_and_what_the_object_is() {
        let job: JobId = JOB.parse().unwrap();
        assert_eq!(
            agent(job, Role::Checker, 2),
            format!("icarus-{JOB}-checker-2")
        );
        assert_eq!(workspace(job), format!("icarus-{JOB}-workspace"));
        assert_eq!(repository(job), format!("icarus-{JOB}-repository"));
        assert_eq!(
            git_step(job, "publish"),
            format!("icarus-{JOB}-git-publish")
        );
    }
}
