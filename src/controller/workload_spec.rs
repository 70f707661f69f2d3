//! Turns a planner's `Start` into a concrete [`WorkloadSpec`]: which image,
//! which limits, which environment. Assembly only; no lifecycle decision.

use crate::config::{AgentConfig, AgentsConfig};
use crate::job::Job;
use crate::job::workload::{Role, WorkloadKey};
use crate::runtime::WorkloadSpec;

/// The spec for `job`'s `role` agent of `attempt`, per the agent contract:
/// `JOB_ID`, `TASK`, `ORCHESTRATOR_CALLBACK` (the full callback URL, with the
/// agent's token), plus the role.
pub fn workload_spec(
    job: &Job,
    role: Role,
    attempt: u32,
    agents: &AgentsConfig,
    callback_base: &str,
    token: &str,
) -> WorkloadSpec {
    let (agent, image_override): (&AgentConfig, _) = match role {
        Role::Builder => (&agents.builder, &job.spec.builder_image),
        Role::Checker => (&agents.checker, &job.spec.checker_image),
    };
    // The query names the caller, so a report is attributed to the right
    // agent even when it arrives before the phase change is written, and
    // carries its credential (see `credentials`).
    let callback = format!(
        "{}/jobs/{}/callback?role={role}&attempt={attempt}&token={token}",
        callback_base.trim_end_matches('/'),
        job.id
    );
    WorkloadSpec {
        key: WorkloadKey {
            job: job.id,
            role,
            attempt,
        },
        image: image_override
            .clone()
            .unwrap_or_else(|| agent.image_name.clone()),
        env: vec![
            ("JOB_ID".to_owned(), job.id.to_string()),
            ("TASK".to_owned(), job.spec.task.clone()),
            ("ORCHESTRATOR_CALLBACK".to_owned(), callback),
            ("ICARUS_ROLE".to_owned(), role.as_str().to_owned()),
            ("ICARUS_ATTEMPT".to_owned(), attempt.to_string()),
        ],
        cpu_limit: agent.cpu_limit,
        memory_limit: agent.memory_limit,
        network_mode: agent.network_mode.clone(),
        workspace_read_only: role == Role::Checker,
    }
}
