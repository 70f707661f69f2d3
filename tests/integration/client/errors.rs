//! What the client commands say when they cannot do what was asked, and
//! with which exit code: a server that is not there, an unknown job, a
//! decision the job's state does not allow, a missing or wrong token, a role
//! that may not; and colours only on a terminal, never with `NO_COLOR`.

use icarus::config::AccessRole;

use super::{icarus, on_a_terminal, run};
use crate::support::{TestServer, token};

const VIEWER: &str = "viewer-token-0123456789";
const APPROVER: &str = "approver-token-0123456789";

#[tokio::test]
async fn a_server_that_is_not_there_is_named_and_exits_6() {
    let server = TestServer::sqlite().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = icarus(&server)
        .args(["list", "--server", &address])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "icarus: cannot reach Icarus at {address}: Connection refused"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--server or ICARUS_SERVER"), "{stderr}");
}

#[tokio::test]
async fn an_unknown_job_and_a_decision_out_of_turn_are_explained_and_exit_1() {
    let server = TestServer::sqlite().await;
    let unknown = icarus::job::JobId::new_random();
    let run_ = run(&server, &["get", &unknown.to_string()]).await;
    assert_eq!(run_.code, 1);
    assert_eq!(
        run_.stderr,
        format!(
            "icarus: Job {unknown} not found (404): `icarus list` shows the jobs {} has\n",
            server.api.base
        )
    );
    assert!(run_.stdout.is_empty());

    let building = server.spawn("Add login").await;
    server.wait_for_builder(building).await;
    let run_ = run(&server, &["approve", &building.to_string(), "-m", "LGTM"]).await;
    assert_eq!(run_.code, 1);
    assert!(
        run_.stderr
            .starts_with("icarus: the job is not in a state that allows this (409): ")
            && run_.stderr.contains("building"),
        "{}",
        run_.stderr
    );
    let run_ = run(&server, &["publish", &building.to_string()]).await;
    assert_eq!(run_.code, 1);
    assert!(run_.stderr.contains("(409)"), "{}", run_.stderr);
    let run_ = run(&server, &["diff", &building.to_string()]).await;
    assert!(
        run_.stderr.contains("(409)"),
        "no diff while building: {}",
        run_.stderr
    );
}

async fn secured() -> TestServer {
    TestServer::sqlite_with(|c| {
        c.auth.enabled = true;
        c.auth.tokens = vec![
            token("vic", AccessRole::Viewer, VIEWER),
            token("ann", AccessRole::Approver, APPROVER),
        ];
    })
    .await
}

#[tokio::test]
async fn with_authentication_on_a_missing_or_wrong_token_is_401_and_a_weak_role_403() {
    let server = secured().await;
    let run_ = run(&server, &["list"]).await;
    assert_eq!(run_.code, 1);
    assert!(
        run_.stderr
            .contains("needs an API token and none was given (401")
            && run_.stderr.contains("--token-file"),
        "{}",
        run_.stderr
    );

    let output = icarus(&server)
        .args(["list"])
        .env("ICARUS_TOKEN", "not-a-token-of-this-server")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("did not accept the API token given (401"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-a-token-of-this-server"),
        "never printed: {stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{VIEWER}\n")).unwrap();
    let output = icarus(&server)
        .args(["list", "-o", "json", "--token-file"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");

    let approver = server.as_holder_of(APPROVER);
    let id = approver.spawn("Add login").await;
    let output = icarus(&server)
        .args(["approve", &id.to_string()])
        .env("ICARUS_TOKEN_FILE", &file)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("does not allow this (403): approving or rejecting a job needs the approver role; vic is a viewer"),
        "{stderr}"
    );
    assert!(!stderr.contains(VIEWER), "never printed: {stderr}");

    // The stream takes the token as a header too: no refusal, no polling.
    let child = icarus(&server)
        .args(["watch", &id.to_string(), "--token", VIEWER])
        .spawn()
        .unwrap();
    server.pass_build_and_check_as(&approver, id).await;
    let run_ = super::finish(child).await;
    assert_eq!(run_.code, 0, "{}", run_.stderr);
    assert_eq!(run_.stderr, "", "followed on the stream");
}

#[tokio::test]
async fn an_unreadable_or_empty_token_file_is_named() {
    let server = secured().await;
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let run_ = run(&server, &["list", "--token-file", empty.to_str().unwrap()]).await;
    assert_eq!(run_.code, 1);
    assert_eq!(
        run_.stderr,
        format!("icarus: the token file {}: it is empty\n", empty.display())
    );
}

#[tokio::test]
async fn colours_are_for_terminals_and_no_color_turns_them_off() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("Add login").await;
    server.pass_build_and_check(id).await;
    let Some(coloured) = on_a_terminal(&server, "list", false).await else {
        return;
    };
    assert!(
        coloured.contains("\x1b[33mawaiting_approval\x1b[0m"),
        "{coloured:?}"
    );
    let plain = on_a_terminal(&server, "list", true).await.unwrap();
    assert!(plain.contains("awaiting_approval"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
    let piped = run(&server, &["list"]).await;
    assert!(!piped.stdout.contains('\x1b'), "{:?}", piped.stdout);
}
