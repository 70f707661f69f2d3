//! Reviewing and deciding with the client commands: the agents' saved logs
//! (at once and followed), the diff as text, as `--stat` and as JSON, an
//! approval bound to the snapshot reviewed, and a publish retried after a
//! refused push — on real Git, with a local bare repository as the remote.

use std::time::Duration;

use icarus::job::{JobId, Role};
use serde_json::json;

use super::{finish, icarus, run};
use crate::git::{Remote, build_and_check};
use crate::support::TestServer;

/// Plays a builder and a checker that print `built it` and `checked it`.
async fn pass_with_output(server: &TestServer, id: JobId) {
    server.wait_for_builder(id).await;
    server
        .runtime
        .exit_with_output(id, Role::Builder, 0, "compiling\nbuilt it\n");
    server.wait_for(id, "checking").await;
    let (code, body) = server
        .post(
            &server.agent_path(id, Role::Checker, 1),
            json!({"status": "completed", "audit_report": {"summary": "ok"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    server
        .runtime
        .exit_with_output(id, Role::Checker, 0, "checked it");
    server.wait_for(id, "awaiting_approval").await;
}

#[tokio::test]
async fn logs_show_what_each_agent_printed_once_saved() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("Add login").await;
    pass_with_output(&server, id).await;
    let early = run(&server, &["logs", &id.to_string()]).await;
    assert_eq!(early.code, 0);
    assert_eq!(early.stdout, "");
    assert!(
        early.stderr.contains("no saved logs yet") && early.stderr.contains("container is removed"),
        "{}",
        early.stderr
    );

    let approved = run(&server, &["approve", &id.to_string(), "-m", "LGTM"]).await;
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    assert_eq!(approved.stdout, format!("Job {id} approved\n"));
    let status = server.wait_for(id, "completed").await;
    assert_eq!(status["approval"]["comment"], "LGTM");

    let follow = icarus(&server)
        .args(["logs", &id.to_string(), "-f"])
        .spawn()
        .unwrap();
    let both = finish(follow).await;
    assert_eq!(both.code, 0, "{}", both.stderr);
    assert!(
        both.stdout.contains("==> builder, attempt 1 (container ")
            && both
                .stdout
                .contains("compiling\nbuilt it\n==> checker, attempt 1")
            && both.stdout.ends_with("checked it\n"),
        "{}",
        both.stdout
    );
    let builder = run(&server, &["logs", &id.to_string(), "--role", "builder"]).await;
    assert_eq!(
        builder.stdout, "compiling\nbuilt it\n",
        "one log, no header"
    );
    let json = run(
        &server,
        &["logs", &id.to_string(), "--role", "checker", "-o", "json"],
    )
    .await;
    let logs = json.json();
    assert_eq!(logs.as_array().unwrap().len(), 1);
    assert_eq!(logs[0]["log"], "checked it");
}

#[tokio::test]
async fn logs_follow_waits_for_the_logs_until_the_job_ends() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("Add login").await;
    server.wait_for_builder(id).await;
    let follow = icarus(&server)
        .args(["logs", &id.to_string(), "--follow"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
        .runtime
        .exit_with_output(id, Role::Builder, 2, "error: it does not compile\n");
    server.wait_for(id, "failed").await;
    let run = finish(follow).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("==> builder, attempt 1")
            && run.stdout.contains(" <==\nerror: it does not compile\n"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_change_is_reviewed_approved_for_its_snapshot_and_published_again_after_a_refused_push() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let submitted = run(
        &server,
        &[
            "submit",
            "Add login",
            "--repo",
            &remote.url(),
            "--ref",
            "main",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let id: JobId = submitted.json()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    build_and_check(&server, id).await;

    let diff = run(&server, &["diff", &id.to_string()]).await;
    assert!(
        diff.stdout.contains("+++ b/src/login.py"),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("-old line\n+new line"),
        "{}",
        diff.stdout
    );
    let stat = run(&server, &["diff", &id.to_string(), "--stat"]).await;
    let snapshot = server.get(&format!("/jobs/{id}/status")).await.1["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        stat.stdout,
        format!(
            " README.md    | 2 +-\n src/login.py | 2 ++\n \
             2 files changed, 3 insertions(+), 1 deletion(-)\n snapshot {snapshot}\n"
        )
    );
    let json = run(&server, &["diff", &id.to_string(), "-o", "json"]).await;
    assert_eq!(json.json()["snapshot"], snapshot.as_str());

    let stale = run(&server, &["approve", &id.to_string(), "--snapshot", "0000"]).await;
    assert_eq!(stale.code, 1, "another snapshot decides nothing");
    assert!(stale.stderr.contains("(409)"), "{}", stale.stderr);

    remote.refuse_pushes();
    let approved = run(
        &server,
        &["approve", &id.to_string(), "--snapshot", &snapshot],
    )
    .await;
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    let watched = run(&server, &["watch", &id.to_string()]).await;
    assert_eq!(watched.code, 3, "the push failed: {}", watched.stdout);
    assert!(
        watched.stderr.contains("(PublishFailed)"),
        "{}",
        watched.stderr
    );

    remote.accept_pushes();
    server.wait_for(id, "failed").await;
    let published = run(&server, &["publish", &id.to_string()]).await;
    assert_eq!(published.code, 0, "{}", published.stderr);
    assert_eq!(
        published.stdout,
        format!("Job {id} will try to publish again\n")
    );
    // Acted on by the next reconcile: `watch` at once could still see `failed`.
    server.wait_for(id, "completed").await;
    let watched = run(&server, &["watch", &id.to_string()]).await;
    assert_eq!(watched.code, 0, "{}", watched.stderr);
    let commit = remote.tip(&format!("icarus/{id}")).unwrap();
    assert!(
        watched
            .stdout
            .ends_with(&format!("published {commit} to branch icarus/{id}\n")),
        "{}",
        watched.stdout
    );
}
