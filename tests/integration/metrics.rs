//! `/metrics` scraped while a real job runs through the in-process
//! orchestrator (the in-memory runtime plays the agents): the numbers move
//! as the job does, jobs by phase are right after a restart, a database
//! outage leaves the rest of the scrape, and with authentication on the
//! route needs a token, or a listener of its own.

use icarus::config::AccessRole;
use icarus::job::Role;
use serde_json::json;

use crate::support::{Api, TestServer, token};

fn jobs(phase: &str) -> String {
    format!("icarus_jobs{{phase=\"{phase}\"}}")
}

fn transitions(from: &str, to: &str, reason: &str) -> String {
    format!("icarus_job_transitions_total{{from=\"{from}\",to=\"{to}\",reason=\"{reason}\"}}")
}

fn reports(kind: &str, outcome: &str) -> String {
    format!("icarus_callback_reports_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}")
}

#[tokio::test]
async fn the_numbers_move_as_a_job_goes_from_spawn_to_completion() {
    let server = TestServer::sqlite().await;
    let before = server.metrics().await;
    assert_eq!(before.value("icarus_leader"), 1.0, "a sole replica leads");
    assert!(before.has(&jobs("pending")), "every phase has a series");
    assert_eq!(before.value(&jobs("building")), 0.0);
    assert!(before.value("process_resident_memory_bytes") > 0.0);

    let id = server.spawn("Add logging to the API endpoints").await;
    server.wait_for_builder(id).await;
    let building = server.metrics().await;
    assert_eq!(building.value(&jobs("building")), 1.0);
    assert_eq!(building.value(&jobs("pending")), 0.0);
    assert_eq!(
        building.value(&transitions("pending", "building", "Admitted")),
        1.0
    );
    assert_eq!(
        building.value("icarus_job_admission_wait_seconds_count"),
        1.0
    );
    assert_eq!(
        building.value("icarus_agent_start_duration_seconds_count{role=\"builder\"}"),
        1.0
    );
    assert!(building.value("icarus_reconcile_duration_seconds_count{outcome=\"success\"}") >= 1.0);
    assert!(building.value("icarus_workqueue_adds_total") >= 1.0);

    let progress = json!({"current_tool": "edit(src/api.py)"});
    let (code, _) = server
        .post(&server.agent_path(id, Role::Builder, 1), progress.clone())
        .await;
    assert_eq!(code, 200);
    let forged = format!("/jobs/{id}/callback?role=builder&attempt=1&token=forged");
    let (code, _) = server.post(&forged, progress).await;
    assert_eq!(code, 401);
    let reported = server.metrics().await;
    assert_eq!(reported.value(&reports("progress", "accepted")), 1.0);
    assert_eq!(reported.value(&reports("progress", "unauthorized")), 1.0);

    assert!(server.runtime.exit(id, Role::Builder, 0));
    server.wait_for(id, "checking").await;
    let checking = server.metrics().await;
    assert_eq!(checking.value(&jobs("checking")), 1.0);
    assert_eq!(checking.value(&jobs("building")), 0.0);
    assert_eq!(
        checking.value(&transitions("building", "checking", "BuilderSucceeded")),
        1.0
    );
    assert_eq!(checking.value("icarus_job_handover_seconds_count"), 1.0);
    let handover = checking.value("icarus_job_handover_seconds_sum");
    assert!(
        (0.0..5.0).contains(&handover),
        "the hand-over took {handover} s"
    );
    assert_eq!(
        checking.value("icarus_agent_run_duration_seconds_count{role=\"builder\"}"),
        1.0
    );

    let audit = json!({"status": "completed", "audit_report": {"summary": "clean"}});
    let checker = server.agent_path(id, Role::Checker, 1);
    let (code, _) = server.post(&checker, audit.clone()).await;
    assert_eq!(code, 200);
    let (code, _) = server.post(&checker, audit).await;
    assert_eq!(code, 409, "a second audit report is refused");
    server.wait_until_running(id, Role::Checker).await;
    assert!(server.runtime.exit(id, Role::Checker, 0));
    server.wait_for(id, "awaiting_approval").await;
    let awaiting = server.metrics().await;
    assert_eq!(awaiting.value(&jobs("awaiting_approval")), 1.0);
    assert_eq!(awaiting.value(&reports("audit", "accepted")), 1.0);
    assert_eq!(awaiting.value(&reports("audit", "conflict")), 1.0);
    assert_eq!(
        awaiting.value("icarus_agent_run_duration_seconds_count{role=\"checker\"}"),
        1.0
    );

    let (code, _) = server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    assert_eq!(code, 200);
    server.wait_for(id, "completed").await;
    let done = server.metrics().await;
    assert_eq!(done.value(&jobs("completed")), 1.0);
    assert_eq!(done.value(&jobs("awaiting_approval")), 0.0);
    assert_eq!(
        done.value(&transitions("approved", "completed", "Completed")),
        1.0
    );
    assert_eq!(done.value("icarus_job_handover_seconds_count"), 1.0);
}

#[tokio::test]
async fn jobs_by_phase_are_right_at_once_after_a_restart() {
    let server = TestServer::sqlite().await;
    let finished = server.spawn("one that is approved").await;
    server.pass_build_and_check(finished).await;
    let waiting = server.spawn("one that waits for a human").await;
    server.pass_build_and_check(waiting).await;
    let (code, _) = server
        .post(
            &format!("/jobs/{finished}/approve"),
            json!({"approved": false}),
        )
        .await;
    assert_eq!(code, 200);
    server.wait_for(finished, "rejected").await;
    let (config, runtime, _dir) = server.stop().await;

    let restarted = TestServer::start(config, runtime).await;
    let scraped = restarted.metrics().await;
    assert_eq!(scraped.value(&jobs("rejected")), 1.0);
    assert_eq!(scraped.value(&jobs("awaiting_approval")), 1.0);
    assert_eq!(
        scraped.value(&transitions("awaiting_approval", "rejected", "Rejected")),
        0.0,
        "counters start again with the process; the jobs are counted in the store"
    );
}

#[tokio::test]
async fn a_scrape_while_the_database_is_gone_answers_without_the_jobs_and_counts_the_error() {
    let server = TestServer::sqlite().await;
    server.spawn("a job to count").await;
    let file = server.sqlite_file();
    let aside = file.with_extension("aside");
    std::fs::rename(&file, &aside).unwrap();
    let scraped = server.metrics().await;
    std::fs::rename(&aside, &file).unwrap();
    assert!(
        !scraped.has("icarus_jobs{"),
        "no stale count of jobs:\n{}",
        scraped.0
    );
    assert!(scraped.value("icarus_database_errors_total{kind=\"file_replaced\"}") >= 1.0);
    assert!(scraped.has("process_cpu_seconds_total"));
    let back = server.metrics().await;
    assert_eq!(
        back.value(&jobs("pending")) + back.value(&jobs("building")),
        1.0
    );
}

#[tokio::test]
async fn with_authentication_on_metrics_need_a_token_or_the_metrics_listener() {
    let server = TestServer::sqlite_with(|config| {
        config.auth.enabled = true;
        config.auth.tokens = vec![token("grafana", AccessRole::Viewer, "viewer-secret")];
        config.metrics.listen = "127.0.0.1:0".to_owned();
    })
    .await;
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let viewer = server.as_holder_of("viewer-secret");
    assert!(viewer.metrics().await.has("icarus_jobs{"));

    let address = server
        .orchestrator
        .as_ref()
        .unwrap()
        .metrics_address()
        .expect("metrics.listen is set");
    let listener = Api {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
    };
    let scraped = listener.metrics().await;
    assert_eq!(scraped.value("icarus_leader"), 1.0);
    let (code, _) = listener.get("/jobs").await;
    assert_eq!(code, 404, "the metrics listener serves nothing else");
    let openmetrics = listener
        .client
        .get(listener.url("/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        openmetrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(openmetrics.text().await.unwrap().ends_with("# EOF\n"));
}
