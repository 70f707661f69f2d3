//! Allowing agents a destination beyond their configured list, over real
//! HTTP (the proxy's use of an allowance, from inside a container, is in
//! `egress_agents`).

use icarus::config::AccessRole;
use icarus::egress::Gatekeeper;
use serde_json::json;

use crate::support::{TestServer, detail, token};

#[tokio::test]
async fn an_approver_allows_a_domain_for_one_job_recorded_with_who_and_when() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("needs a mirror").await;
    let body = json!({"domain": "mirror.example.com:8443"});
    let (code, answer) = server.post(&format!("/jobs/{id}/egress/allow"), body).await;
    assert_eq!(code, 200, "{answer}");
    let (code, egress) = server.get(&format!("/jobs/{id}/egress")).await;
    assert_eq!(code, 200, "{egress}");
    let allowance = &egress["allowances"][0];
    assert_eq!(allowance["rule"], "mirror.example.com:8443");
    assert_eq!(
        (&allowance["role"], &allowance["scope"]),
        (&json!("builder"), &json!("job"))
    );
    assert_eq!(allowance["allowed_by"], "anonymous");
    assert!(allowance["allowed_at"].is_string(), "{allowance}");
    let other = server.spawn("another job").await;
    let (_, theirs) = server.get(&format!("/jobs/{other}/egress")).await;
    assert_eq!(
        theirs["allowances"],
        json!([]),
        "one job's allowance is its own"
    );
}

#[tokio::test]
async fn an_allowance_for_everyone_counts_for_every_job() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("first").await;
    let body = json!({"domain": "*.example.org", "role": "checker", "everyone": true});
    let (code, _) = server.post(&format!("/jobs/{id}/egress/allow"), body).await;
    assert_eq!(code, 200);
    let later = server.spawn("later").await;
    let (_, egress) = server.get(&format!("/jobs/{later}/egress")).await;
    let allowance = &egress["allowances"][0];
    assert_eq!(
        (&allowance["role"], &allowance["scope"]),
        (&json!("checker"), &json!("everyone"))
    );
}

#[tokio::test]
async fn a_spawn_names_the_rules_its_agents_keep_and_bad_ones_are_refused() {
    let server = TestServer::sqlite().await;
    let narrowing = json!(["pypi.org", "*.github.com:443"]);
    let body = json!({"task": "t", "project_path": "/workspace", "allowed_domains": narrowing});
    let (code, spawned) = server.post("/jobs/spawn", body).await;
    assert_eq!(code, 201, "{spawned}");
    let (_, status) = server
        .get(&format!(
            "/jobs/{}/status",
            spawned["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status["allowed_domains"], narrowing);
    let too_many: Vec<String> = (0..101).map(|n| format!("n{n}.example")).collect();
    for (bad, said) in [
        (json!(["10.0.0.1"]), "domain"),
        (json!(too_many), "the limit is 100"),
    ] {
        let body = json!({"task": "t", "project_path": "/workspace", "allowed_domains": bad});
        let (code, answer) = server.post("/jobs/spawn", body).await;
        assert_eq!(code, 422, "{answer}");
        assert!(detail(&answer).contains(said), "{answer}");
    }
}

#[tokio::test]
async fn a_domain_that_is_not_a_rule_is_refused_naming_it() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("t").await;
    for bad in ["10.0.0.1", "evil.com:0", "http://evil.com", "*", "a b", ""] {
        let (code, body) = server
            .post(&format!("/jobs/{id}/egress/allow"), json!({"domain": bad}))
            .await;
        assert_eq!(code, 422, "{bad:?}: {body}");
        assert!(detail(&body).contains("domain"), "{bad:?}: {body}");
    }
    let (_, egress) = server.get(&format!("/jobs/{id}/egress")).await;
    assert_eq!(egress["allowances"], json!([]));
}

#[tokio::test]
async fn only_an_approver_may_allow_and_only_for_a_job_that_exists() {
    let server = TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![
            token("sue", AccessRole::Submitter, "submitter-token-0123456789"),
            token("ann", AccessRole::Approver, "approver-token-0123456789"),
        ];
    })
    .await;
    let submitter = server.as_holder_of("submitter-token-0123456789");
    let approver = server.as_holder_of("approver-token-0123456789");
    let (_, spawned) = submitter
        .post(
            "/jobs/spawn",
            json!({"task": "t", "project_path": "/workspace"}),
        )
        .await;
    let id = spawned["job_id"].as_str().unwrap();
    let body = json!({"domain": "pypi.org"});
    let (code, _) = submitter
        .post(&format!("/jobs/{id}/egress/allow"), body.clone())
        .await;
    assert_eq!(code, 403, "a submitter may not widen its own job's egress");
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (code, _) = approver
        .post(&format!("/jobs/{unknown}/egress/allow"), body.clone())
        .await;
    assert_eq!(code, 404);
    let (code, _) = approver
        .post(&format!("/jobs/{id}/egress/allow"), body)
        .await;
    assert_eq!(code, 200);
    let (_, egress) = approver.get(&format!("/jobs/{id}/egress")).await;
    assert_eq!(egress["allowances"][0]["allowed_by"], "ann");
}

/// The proxy's gate asks the database about an agent at most once a second,
/// however fast the agent opens connections: an allowance another replica
/// recorded in between counts from the agent's first connection after that
/// second; one recorded through this replica's store, from its next.
#[tokio::test]
async fn the_gate_reads_an_agents_admission_at_most_once_a_second() {
    let (store, dir) = crate::support::sqlite_store().await;
    let url = format!("sqlite://{}/db/icarus.db", dir.path().display());
    let other_replica = icarus::store::Store::connect(&url).await.unwrap();
    let agent = GatedAgent::new(&store, &dir).await;
    assert!(!agent.allowed("mirror.example").await);
    other_replica
        .allow_egress(&agent.allowance("mirror.example"))
        .await
        .unwrap();
    assert!(
        !agent.allowed("mirror.example").await,
        "within the second: the admission read before"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(
        agent.allowed("mirror.example").await,
        "after it: read again"
    );
    assert!(
        agent.gate.admit(&agent.user, "forged").await.is_none(),
        "the token is checked every time"
    );
}

#[tokio::test]
async fn an_allowance_recorded_through_this_replica_counts_from_the_agents_next_connection() {
    let (store, dir) = crate::support::sqlite_store().await;
    let agent = GatedAgent::new(&store, &dir).await;
    assert!(!agent.allowed("mirror.example").await);
    store
        .allow_egress(&agent.allowance("mirror.example"))
        .await
        .unwrap();
    assert!(agent.allowed("mirror.example").await);
}

#[tokio::test]
async fn an_agent_is_admitted_with_the_bytes_its_job_has_already_moved() {
    let (store, dir) = crate::support::sqlite_store().await;
    let agent = GatedAgent::new(&store, &dir).await;
    let traffic = |role, bytes| icarus::store::EgressTally {
        job: agent.job,
        traffic: icarus::store::EgressTraffic {
            role,
            attempt: 1,
            host: "pypi.org".to_owned(),
            port: 443,
            verdict: icarus::store::EgressVerdict::Allowed,
            reason: None,
            connections: 1,
            bytes_sent: bytes,
            bytes_received: 2 * bytes,
            cut_at_budget: 0,
            first_at: icarus::job::timestamp_now(),
            last_at: icarus::job::timestamp_now(),
        },
    };
    store
        .add_egress_traffic(&traffic(icarus::job::Role::Builder, 100))
        .await
        .unwrap();
    store
        .add_egress_traffic(&traffic(icarus::job::Role::Checker, 10))
        .await
        .unwrap();
    let admission = agent.gate.admit(&agent.user, &agent.secret).await.unwrap();
    assert_eq!(admission.spent, 330, "both roles' bytes, both ways");
    assert_eq!(admission.budget, agent.job.to_string());
}

/// On PostgreSQL, another replica's allowance reaches the gate with its
/// notification, not a second later: the gate here remembers admissions
/// for an hour, so only the notification can make it read again.
#[tokio::test]
async fn postgres_another_replicas_allowance_counts_from_the_agents_next_connection_once_notified()
{
    let (writer, reader) = crate::support::two_stores_on_one_postgres_database().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = tokio::spawn(reader.relay_changes(shutdown.clone()).unwrap());
    crate::support::first_heard_write(&writer, &mut reader.subscribe()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = GatedAgent::new(&reader, &dir).await;
    agent.gate = agent
        .gate
        .remembering_admissions_for(std::time::Duration::from_secs(3600));
    assert!(!agent.allowed("mirror.example").await);
    writer
        .allow_egress(&agent.allowance("mirror.example"))
        .await
        .unwrap();
    crate::support::eventually(std::time::Duration::from_secs(10), || async {
        agent.allowed("mirror.example").await.then_some(())
    })
    .await;
    shutdown.cancel();
    relay.await.unwrap();
}

/// A job's builder as the proxy's gate sees it.
struct GatedAgent {
    gate: icarus::egress::AgentGate,
    job: icarus::job::JobId,
    user: String,
    secret: String,
}

impl GatedAgent {
    async fn new(store: &icarus::store::Store, dir: &tempfile::TempDir) -> GatedAgent {
        use icarus::job::Role;
        use icarus_core::egress::AllowList;
        let keys = icarus::credentials::AgentKeys::load_or_create(&dir.path().join("key")).unwrap();
        let job = store
            .create_job(&crate::support::new_job("t"))
            .await
            .unwrap();
        let attempt = job.status.attempt;
        let gate = icarus::egress::AgentGate::new(
            keys.clone(),
            store.clone(),
            AllowList::default(),
            AllowList::default(),
        );
        GatedAgent {
            gate,
            job: job.id,
            user: icarus::egress::proxy_user(job.id, Role::Builder, attempt),
            secret: keys.token(job.id, Role::Builder, attempt),
        }
    }

    async fn allowed(&self, name: &str) -> bool {
        let admission = self.gate.admit(&self.user, &self.secret).await;
        let destination = icarus_core::egress::Destination::parse(name).unwrap();
        admission
            .expect("a running agent")
            .allowed
            .allows(&destination, 443)
    }

    fn allowance(&self, rule: &str) -> icarus::store::EgressAllowance {
        icarus::store::EgressAllowance {
            job: Some(self.job),
            role: icarus::job::Role::Builder,
            rule: rule.to_owned(),
            allowed_by: "ann".to_owned(),
            allowed_at: icarus::job::timestamp_now(),
        }
    }
}

#[tokio::test]
async fn a_jobs_status_has_no_egress_until_its_agents_ask_for_something() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("quiet").await;
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert!(status["egress"].is_null(), "{status}");
}

#[tokio::test]
async fn a_jobs_status_lists_its_pending_domain_requests_until_an_approver_allows_them() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("needs a mirror").await;
    let store = server.orchestrator.as_ref().unwrap().store();
    let job = id;
    let tally = |host: &str, verdict, bytes| icarus::store::EgressTally {
        job,
        traffic: icarus::store::EgressTraffic {
            role: icarus::job::Role::Builder,
            attempt: 1,
            host: host.to_owned(),
            port: 443,
            verdict,
            reason: None,
            connections: 2,
            bytes_sent: bytes,
            bytes_received: bytes,
            cut_at_budget: 0,
            first_at: icarus::job::timestamp_now(),
            last_at: icarus::job::timestamp_now(),
        },
    };
    use icarus::store::EgressVerdict::{Allowed, Refused, Unlisted};
    for (host, verdict, bytes) in [
        ("pypi.org", Allowed, 1000),
        ("mirror.example", Unlisted, 0),
        ("169.254.169.254", Refused, 0),
    ] {
        store
            .add_egress_traffic(&tally(host, verdict, bytes))
            .await
            .unwrap();
    }
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    let egress = &status["egress"];
    assert_eq!(
        egress["requests"],
        json!(["mirror.example:443"]),
        "{status}"
    );
    assert_eq!(
        (&egress["allowed"], &egress["refused"]),
        (&json!(2), &json!(4))
    );
    assert_eq!(
        (&egress["bytes_sent"], &egress["bytes_received"]),
        (&json!(1000), &json!(1000))
    );
    let body = json!({"domain": "mirror.example"});
    let (code, _) = server.post(&format!("/jobs/{id}/egress/allow"), body).await;
    assert_eq!(code, 200);
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["egress"]["requests"], json!([]), "{status}");
}
