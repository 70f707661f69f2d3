//! Allowing agents a destination beyond their configured list, over real
//! HTTP (the proxy's use of an allowance, from inside a container, is in
//! `egress_agents`).

use icarus::config::AccessRole;
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
/// however fast the agent opens connections: an allowance recorded in
/// between counts from the agent's first connection after that second.
#[tokio::test]
async fn the_gate_reads_an_agents_admission_at_most_once_a_second() {
    use icarus::egress::{AgentGate, Gatekeeper, proxy_user};
    use icarus::job::Role;
    use icarus::store::EgressAllowance;
    use icarus_core::egress::{AllowList, Destination};

    let (store, dir) = crate::support::sqlite_store().await;
    let keys = icarus::credentials::AgentKeys::load_or_create(&dir.path().join("key")).unwrap();
    let job = store
        .create_job(&crate::support::new_job("t"))
        .await
        .unwrap();
    let attempt = job.status.attempt;
    let gate = AgentGate::new(
        keys.clone(),
        store.clone(),
        AllowList::default(),
        AllowList::default(),
    );
    let user = proxy_user(job.id, Role::Builder, attempt);
    let secret = keys.token(job.id, Role::Builder, attempt);
    let mirror = Destination::parse("mirror.example").unwrap();
    let allows_mirror = || async {
        let admission = gate.admit(&user, &secret).await.expect("a running agent");
        admission.allowed.allows(&mirror, 443)
    };
    assert!(!allows_mirror().await);
    let allowance = EgressAllowance {
        job: Some(job.id),
        role: Role::Builder,
        rule: "mirror.example".to_owned(),
        allowed_by: "ann".to_owned(),
        allowed_at: icarus::job::timestamp_now(),
    };
    store.allow_egress(&allowance).await.unwrap();
    assert!(
        !allows_mirror().await,
        "within the second: the admission read before"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(allows_mirror().await, "after it: read again");
    assert!(
        gate.admit(&user, "forged").await.is_none(),
        "the token is checked every time"
    );
}
