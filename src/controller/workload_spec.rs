//! Turns a planner's `Start` into a concrete [`WorkloadSpec`]: which image,
//! which limits, which environment. Assembly only; no lifecycle decision.

use crate::config::{AgentConfig, AgentsConfig};
use crate::egress::proxy_user;
use crate::job::Job;
use crate::job::workload::{Role, WorkloadKey};
use crate::runtime::WorkloadSpec;

/// The spec for `job`'s `role` agent of `attempt`, per the agent contract:
/// `JOB_ID`, `TASK`, `ORCHESTRATOR_CALLBACK` (the full callback URL, with the
/// agent's token), plus the role, the attempt, the job's phase and project,
/// and for the builder the job's `TEST_CODE` when it has some; and where an
/// egress proxy serves agents (`egress_proxy`, its `host:port`), the proxy
/// variables every common client reads, carrying the agent's credentials,
/// with the callback's host exempt.
pub fn workload_spec(
    job: &Job,
    role: Role,
    attempt: u32,
    agents: &AgentsConfig,
    callback_base: &str,
    token: &str,
    egress_proxy: Option<&str>,
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
    if let Some(proxy) = egress_proxy {
        let user = proxy_user(job.id, role, attempt);
        env.extend(proxy_env(
            &format!("http://{user}:{token}@{proxy}"),
            callback_base,
        ));
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

/// `HTTP(S)_PROXY` in both cases (clients differ in which they read), and
/// `NO_PROXY` naming the callback's host, which agents reach directly.
fn proxy_env(proxy_url: &str, callback_base: &str) -> Vec<(String, String)> {
    let callback_host = callback_base
        .parse::<axum::http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_owned))
        .unwrap_or_default();
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        env.push((name.to_owned(), proxy_url.to_owned()));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.to_owned(), callback_host.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::job::{JobSpec, ProjectPhase, timestamp_now};

    fn env_of(job: &Job, role: Role) -> Vec<(String, String)> {
        let agents = Config::embedded_default().unwrap().agents;
        workload_spec(job, role, 1, &agents, "http://callback", "token", None).env
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

    #[test]
    fn with_an_egress_proxy_each_agent_gets_it_with_its_own_credentials_and_the_callback_exempt() {
        let job = Job::new(JobSpec::new("t", "/workspace"), timestamp_now());
        let agents = Config::embedded_default().unwrap().agents;
        let callback = "http://host.docker.internal:8000";
        let proxy = Some("host.docker.internal:3128");
        let env = workload_spec(&job, Role::Checker, 2, &agents, callback, "tok", proxy).env;
        let expected = format!("http://{}.checker.2:tok@host.docker.internal:3128", job.id);
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert_eq!(value(&env, name), Some(expected.as_str()), "{name}");
        }
        for name in ["NO_PROXY", "no_proxy"] {
            assert_eq!(value(&env, name), Some("host.docker.internal"), "{name}");
        }
    }

    #[test]
    fn without_an_egress_proxy_no_proxy_variable_is_set() {
        let job = Job::new(JobSpec::new("t", "/workspace"), timestamp_now());
        let env = env_of(&job, Role::Builder);
        assert!(
            env.iter()
                .all(|(name, _)| !name.to_ascii_lowercase().contains("proxy"))
        );
    }
}
