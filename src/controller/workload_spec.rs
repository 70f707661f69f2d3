//! Turns a planner's `Start` into a concrete [`WorkloadSpec`]: which image,
//! which limits, which environment. Assembly only; no lifecycle decision.

use crate::config::{AgentConfig, AgentsConfig};
use crate::egress::proxy_user;
use crate::job::Job;
use crate::job::workload::{Role, WorkloadKey};
use crate::runtime::WorkloadSpec;

/// The spec for `job`'s `role` agent of `attempt`, per the agent contract:
/// `JOB_ID`, `TASK`, `ORCHESTRATOR_CALLBACK` (the full callback URL, with the
/// agent's token), plus the role; and where an egress proxy serves agents
/// (`egress_proxy`, its `host:port`), the proxy variables every common
/// client reads, carrying the agent's credentials, with the callback's
/// host exempt.
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
    ];
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
