//! Turns a planner's `Start` into a concrete [`WorkloadSpec`]: which image,
//! which limits, which environment. Assembly only; no lifecycle decision.

use crate::config::{AgentConfig, AgentsConfig};
use crate::job::Job;
use crate::job::workload::{Role, WorkloadKey};
use crate::runtime::WorkloadSpec;

/// The spec for `job`'s `role` agent of `attempt`, per the agent contract:
/// `JOB_ID`, `TASK`, `ORCHESTRATOR_CALLBACK` (the full callback URL, with the
/// agent's token), plus the role, the attempt, the job's phase and project,
/// and for the builder the job's `TEST_CODE` when it has some.
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
    let mut env = vec![
        ("JOB_ID".to_owned(), job.id.to_string()),
        ("TASK".to_owned(), job.spec.task.clone()),
        ("ORCHESTRATOR_CALLBACK".to_owned(), callback),
        ("ICARUS_ROLE".to_owned(), role.as_str().to_owned()),
        ("ICARUS_ATTEMPT".to_owned(), attempt.to_string()),
        ("ICARUS_PHASE".to_owned(), job.spec.phase.to_string()),
        ("ICARUS_PROJECT_ID".to_owned(), job.spec.project_id.clone()),
    ];
    if let (Role::Builder, Some(code)) = (role, &job.spec.test_code) {
        env.push(("TEST_CODE".to_owned(), code.clone()));
    }
    WorkloadSpec {
        key: WorkloadKey {
            job: job.id,
            role,
            attempt,
        },
        image: image_override
            .clone()
            .unwrap_or_else(|| agent.image_name.clone()),
        env,
        cpu_limit: agent.cpu_limit,
        memory_limit: agent.memory_limit,
        network_mode: agent.network_mode.clone(),
        workspace_read_only: role == Role::Checker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::job::{JobSpec, ProjectPhase, timestamp_now};

    fn env_of(job: &Job, role: Role) -> Vec<(String, String)> {
        let agents = Config::embedded_default().unwrap().agents;
        workload_spec(job, role, 1, &agents, "http://callback", "token").env
    }

    fn value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn the_builder_gets_the_test_code_and_the_checker_does_not() {
        let spec = JobSpec {
            test_code: Some("def test_it():\n    assert True\n".to_owned()),
            ..JobSpec::new("t", "/workspace")
        };
        let job = Job::new(spec, timestamp_now());
        assert_eq!(
            value(&env_of(&job, Role::Builder), "TEST_CODE"),
            Some("def test_it():\n    assert True\n")
        );
        assert_eq!(value(&env_of(&job, Role::Checker), "TEST_CODE"), None);
    }

    #[test]
    fn a_job_without_test_code_sets_no_test_code_variable() {
        let job = Job::new(JobSpec::new("t", "/workspace"), timestamp_now());
        assert_eq!(value(&env_of(&job, Role::Builder), "TEST_CODE"), None);
    }

    #[test]
    fn both_agents_are_told_the_phase_and_the_project() {
        let spec = JobSpec {
            phase: ProjectPhase::II,
            project_id: "acme".to_owned(),
            ..JobSpec::new("t", "/workspace")
        };
        let job = Job::new(spec, timestamp_now());
        for role in Role::ALL {
            let env = env_of(&job, role);
            assert_eq!(value(&env, "ICARUS_PHASE"), Some("II"), "{role}");
            assert_eq!(value(&env, "ICARUS_PROJECT_ID"), Some("acme"), "{role}");
        }
    }
}
