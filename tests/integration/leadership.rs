//! Replicas in one test process: which one reconciles. With leadership
//! given by the test (it plays the campaign with a watch), and on PostgreSQL
//! with the real campaign for the lease in the database, orchestrators
//! sharing one in-memory runtime as replicas share one engine. The real
//! binaries on the real engine: `process::replicas`.

use std::sync::Arc;
use std::time::Duration;

use icarus::config::Config;
use icarus::job::workload::WorkloadKey;
use icarus::job::{JobId, Role, WorkloadState};
use icarus::leadership::sql::LEASE_NAME as LEASE;
use icarus::leadership::{Election, Leadership, Term};
use icarus::runtime::Runtime;
use icarus::runtime::fake::FakeRuntime;
use icarus::serve::{LeaderLoop, Orchestrator, Parts, ServerError};
use icarus::store::{Fence, Store, StoreError};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::watch;

use crate::support::{Api, TestServer, eventually, postgres_database_url, test_config};

fn term(version: i64) -> Option<Term> {
    Some(Term {
        version,
        fence: None,
    })
}

/// Waits until the job's builder runs (the phase may be recorded first).
async fn builder_running(runtime: &FakeRuntime, id: JobId) {
    eventually(Duration::from_secs(10), || async {
        (runtime.state_of(id, Role::Builder) == Some(WorkloadState::Running)).then_some(())
    })
    .await;
}

fn key(job: JobId, role: Role) -> WorkloadKey {
    WorkloadKey {
        job,
        role,
        attempt: 1,
    }
}

/// An orchestrator on a new SQLite file, leading when the test says so.
struct Given {
    orchestrator: Orchestrator,
    api: Api,
    runtime: FakeRuntime,
    leading: watch::Sender<Option<Term>>,
    database_url: String,
    _dir: TempDir,
}

impl Given {
    async fn start(leader_loops: Vec<LeaderLoop>) -> Given {
        crate::support::init_test_logging();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&format!("sqlite://{}/icarus.db", dir.path().display()));
        config.workspace.base_path = dir.path().join("workspaces");
        let runtime = FakeRuntime::new();
        let shared: Arc<dyn Runtime> = Arc::new(runtime.clone());
        let (leading, terms) = watch::channel(None);
        let parts = Parts {
            election: Election::Given(Leadership::given(terms)),
            leader_loops,
            ..Parts::local(&config, shared)
        };
        let orchestrator = Orchestrator::start(&config, parts).await.unwrap();
        Given {
            api: Api::new(&orchestrator),
            orchestrator,
            runtime,
            leading,
            database_url: config.database.url,
            _dir: dir,
        }
    }

    /// Lets 300 ms pass: long enough for a controller that runs to act.
    async fn a_moment(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_replica_that_does_not_lead_serves_the_api_but_reconciles_nothing_until_it_leads() {
    let replica = Given::start(Vec::new()).await;
    let id = replica.api.spawn("t").await;
    replica.a_moment().await;
    assert_eq!(
        replica.api.phase(id).await,
        "pending",
        "a follower starts nothing"
    );
    assert_eq!(replica.runtime.workload_count(), 0);

    replica.leading.send_replace(term(1));
    replica.api.wait_for(id, "building").await;
    replica.orchestrator.abort();
}

#[tokio::test]
async fn a_replica_that_loses_the_lead_stops_reconciling_keeps_serving_and_resumes_in_its_next_term()
 {
    let mut replica = Given::start(Vec::new()).await;
    replica.leading.send_replace(term(1));
    let first = replica.api.spawn("first").await;
    replica.api.wait_for(first, "building").await;

    replica.leading.send_replace(None);
    let second = replica.api.spawn("second").await;
    let still_running = tokio::time::timeout(
        Duration::from_millis(300),
        replica.orchestrator.wait_for_failure(),
    );
    assert!(still_running.await.is_err(), "the process stays up");
    assert_eq!(replica.api.phase(second).await, "pending");

    replica.leading.send_replace(term(2));
    replica.api.wait_for(second, "building").await;
    assert_eq!(
        replica.runtime.creations(key(first, Role::Builder)),
        1,
        "the first job's builder was adopted, not made again"
    );
    replica.orchestrator.abort();
}

#[tokio::test]
async fn a_loop_that_ends_before_shutdown_is_named_and_tells_the_process_to_go() {
    let quitter = LeaderLoop {
        name: "quitter",
        run: Box::new(|_, _| Box::pin(async {})),
    };
    let mut replica = Given::start(vec![quitter]).await;
    // A follower runs no leader loop: nothing has ended yet.
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        replica.orchestrator.wait_for_failure(),
    );
    assert!(early.await.is_err(), "nothing ends while following");

    replica.leading.send_replace(term(1));
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        replica.orchestrator.wait_for_failure(),
    )
    .await
    .expect("the loop's end is seen");
    assert!(
        matches!(ended, Err(ServerError::TaskEnded("quitter"))),
        "{ended:?}"
    );
    replica.orchestrator.abort();
}

#[tokio::test]
async fn a_leader_that_still_believes_in_a_term_its_lease_lost_records_nothing_and_its_successor_does()
 {
    let replica = Given::start(Vec::new()).await;
    let store = Store::connect(&replica.database_url).await.unwrap();
    let fenced_by = |holder: &str, version| {
        Some(Term {
            version,
            fence: Some(Fence {
                lease: LEASE.to_owned(),
                holder: holder.to_owned(),
                version,
            }),
        })
    };
    let long = Duration::from_secs(60);
    assert_eq!(
        store.acquire_lease(LEASE, "paused", long).await.unwrap(),
        Some(1)
    );
    replica.leading.send_replace(fenced_by("paused", 1));
    let id = replica.api.spawn("t").await;
    replica.api.wait_for(id, "building").await;
    builder_running(&replica.runtime, id).await;

    // The lease passes on; the replica, as if paused meanwhile, still
    // believes in its term and reconciles on.
    assert!(store.release_lease(LEASE, "paused", 1).await.unwrap());
    assert_eq!(
        store.acquire_lease(LEASE, "successor", long).await.unwrap(),
        Some(2)
    );
    replica.runtime.exit(id, Role::Builder, 0);
    replica.a_moment().await;
    assert_eq!(
        replica.api.phase(id).await,
        "building",
        "the builder's exit is not recorded under the lost term"
    );

    replica.leading.send_replace(fenced_by("successor", 2));
    replica.api.wait_for(id, "checking").await;
    replica.orchestrator.abort();
}

#[tokio::test]
async fn a_second_orchestrator_on_the_same_sqlite_file_refuses_to_start_and_says_why() {
    let server = TestServer::sqlite().await;
    let shared: Arc<dyn Runtime> = Arc::new(server.runtime.clone());
    let second = icarus::serve::local::start_on(&server.config, shared).await;
    let Err(ServerError::Store(refused)) = second else {
        panic!("a second orchestrator started on the same SQLite file");
    };
    assert!(matches!(refused, StoreError::InUse { .. }), "{refused:?}");
    let message = refused.to_string();
    assert!(message.contains("icarus.db"), "{message}");
    assert!(message.contains("PostgreSQL"), "{message}");

    let (config, runtime, _dir) = server.stop().await;
    let restarted = TestServer::start(config, runtime).await;
    let id = restarted.spawn("t").await;
    restarted.wait_for(id, "building").await;
}

/// Two replicas on one new PostgreSQL database, sharing one runtime and
/// one workspace directory as replicas on one host do, each with a name of
/// its own (`replica-a`, `replica-b`) as replicas on one host need.
async fn replicas_on_postgres(adjust: impl Fn(&mut Config)) -> (TestServer, TestServer, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&postgres_database_url().await);
    config.workspace.base_path = dir.path().join("workspaces");
    adjust(&mut config);
    let runtime = FakeRuntime::new();
    let named = |name: &str| {
        let mut config = config.clone();
        config.orchestrator.replica_name = name.to_owned();
        config
    };
    let first = TestServer::start(named("replica-a"), runtime.clone()).await;
    let second = TestServer::start(named("replica-b"), runtime).await;
    (first, second, dir)
}

fn leads(server: &TestServer) -> bool {
    server
        .orchestrator
        .as_ref()
        .is_some_and(Orchestrator::leads)
}

/// Waits until exactly one of the two leads; returns (leader, standby).
async fn leader_and_standby(a: TestServer, b: TestServer) -> (TestServer, TestServer) {
    eventually(Duration::from_secs(20), || async {
        (leads(&a) != leads(&b)).then_some(())
    })
    .await;
    if leads(&a) { (a, b) } else { (b, a) }
}

fn short_lease(config: &mut Config) {
    config.orchestrator.lease_duration_seconds = 2;
    config.orchestrator.lease_renew_seconds = 1;
}

#[tokio::test]
async fn postgres_two_replicas_elect_one_leader_and_jobs_spawned_on_either_run_once() {
    let (a, b, _dir) = replicas_on_postgres(|_| {}).await;
    let (leader, standby) = leader_and_standby(a, b).await;
    let on_leader = leader.spawn("through the leader").await;
    let on_standby = standby.spawn("through the standby").await;
    for id in [on_leader, on_standby] {
        leader.wait_for(id, "building").await;
        standby.wait_for(id, "building").await;
        builder_running(&leader.runtime, id).await;
        assert_eq!(leader.runtime.creations(key(id, Role::Builder)), 1);
    }
    assert!(leads(&leader) && !leads(&standby), "still one leader");
}

#[tokio::test]
async fn postgres_a_job_spawned_through_the_standby_is_reconciled_by_the_leader_without_a_resync() {
    // An hour between resyncs: only the standby's notification can wake the leader.
    let (a, b, _dir) =
        replicas_on_postgres(|c| c.orchestrator.resync_interval_seconds = 3600).await;
    let (leader, standby) = leader_and_standby(a, b).await;
    // The leader's first resync, at the start of its term, is behind us.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = standby.spawn("wake the leader").await;
    standby.wait_for(id, "building").await;
    builder_running(&leader.runtime, id).await;
    leader.runtime.exit(id, Role::Builder, 0);
    standby.wait_for(id, "checking").await;
}

#[tokio::test]
async fn postgres_a_stream_on_the_standby_follows_the_transitions_the_leader_records() {
    // An hour between resyncs, and streams never poll: only the leader's
    // notification can bring its write to the standby's stream.
    let (a, b, _dir) =
        replicas_on_postgres(|c| c.orchestrator.resync_interval_seconds = 3600).await;
    let (leader, standby) = leader_and_standby(a, b).await;
    let id = standby.spawn("watched on the standby").await;
    builder_running(&leader.runtime, id).await;
    let mut stream = crate::stream::connect(&standby, &format!("/jobs/{id}/stream")).await;
    assert_eq!(
        crate::stream::next_update(&mut stream).await.unwrap()["status"],
        "building"
    );
    leader.runtime.exit(id, Role::Builder, 0);
    let update = crate::stream::next_update(&mut stream).await.unwrap();
    assert_eq!(update["status"], "checking", "{update}");
}

#[tokio::test]
async fn postgres_a_standby_takes_over_from_a_crashed_leader_and_adopts_its_agents() {
    let (a, b, _dir) = replicas_on_postgres(short_lease).await;
    let (leader, standby) = leader_and_standby(a, b).await;
    let id = standby.spawn("outlive the leader").await;
    standby.wait_for(id, "building").await;
    builder_running(&leader.runtime, id).await;
    let (_, runtime, _) = leader.crash();

    eventually(Duration::from_secs(20), || async {
        leads(&standby).then_some(())
    })
    .await;
    runtime.exit(id, Role::Builder, 0);
    standby.wait_for(id, "checking").await;
    assert_eq!(runtime.creations(key(id, Role::Builder)), 1, "adopted");
    assert_eq!(runtime.creations(key(id, Role::Checker)), 1);
}

#[tokio::test]
async fn postgres_a_leader_stopped_gracefully_hands_its_lease_over_at_once() {
    // A minute-long lease: a standby that took over within seconds was
    // handed it, not left to wait for it to expire.
    let (a, b, _dir) = replicas_on_postgres(|c| {
        c.orchestrator.lease_duration_seconds = 60;
        c.orchestrator.lease_renew_seconds = 1;
    })
    .await;
    let (leader, standby) = leader_and_standby(a, b).await;
    leader.stop().await;
    eventually(Duration::from_secs(10), || async {
        leads(&standby).then_some(())
    })
    .await;
}

/// Waits until the pending job's own reason, the leader's last word, is `reason`.
async fn said(api: &Api, id: JobId, reason: &str) {
    eventually(Duration::from_secs(10), || async {
        let (_, body) = api.get(&format!("/jobs/{id}/status")).await;
        (body["reason"] == reason).then_some(())
    })
    .await;
}

#[tokio::test]
async fn postgres_a_drained_leader_admits_nothing_and_its_successor_admits_what_waited() {
    let (a, b, _dir) = replicas_on_postgres(|_| {}).await;
    let (leader, standby) = leader_and_standby(a, b).await;
    let (code, body) = leader.post("/queue/drain", json!({})).await;
    assert_eq!(code, 200, "{body}");
    let id = standby.spawn("waits out the maintenance").await;
    said(&standby, id, "Draining").await;
    let (_, queue) = standby.get("/queue").await;
    assert_eq!(
        queue["draining"], false,
        "the standby is not drained: {queue}"
    );
    let drained = &queue["drained_replicas"];
    assert_eq!(drained.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(
        drained[0]["replica"],
        leader.config.orchestrator.replica_name.as_str()
    );

    // The maintenance: the drained leader stops, the other replica leads
    // and admits, the drain being the stopped one's alone.
    leader.stop().await;
    eventually(Duration::from_secs(10), || async {
        leads(&standby).then_some(())
    })
    .await;
    standby.wait_for(id, "building").await;
}

#[tokio::test]
async fn postgres_a_leader_drained_and_resumed_by_name_through_another_replica_obeys() {
    let (a, b, _dir) = replicas_on_postgres(|_| {}).await;
    let (leader, standby) = leader_and_standby(a, b).await;
    let name = leader.config.orchestrator.replica_name.clone();
    let (code, body) = standby
        .post(&format!("/queue/drain?replica={name}"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["replica"], name.as_str(), "{body}");
    let id = standby.spawn("held back by the row").await;
    said(&standby, id, "Draining").await;
    let (_, ready) = leader.get("/readyz").await;
    assert_eq!(ready["draining"], true, "{ready}");

    let (code, body) = standby
        .post(&format!("/queue/resume?replica={name}"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    // The leader obeys at its next look (a resync, every second here).
    standby.wait_for(id, "building").await;
    assert!(leads(&leader), "{name} still leads");
}
