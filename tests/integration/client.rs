//! The client commands of the real `icarus` binary against a real server
//! (in this process, on an ephemeral port, agents played by the in-memory
//! runtime): what `submit --wait` and `watch` print and how they exit, and
//! `list` and `get` as tables and as documents. Errors and authentication:
//! [`errors`]; logs, diffs and decisions: [`review`].

mod errors;
mod review;

use std::process::Stdio;
use std::time::Duration;

use icarus::job::{JobId, Role};
use serde_json::{Value, json};

use crate::support::{Api, TestServer, eventually};

/// What one run of the binary left.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.stdout))
    }
}

/// The binary as a client of `server`, nothing in the environment deciding for it.
pub fn icarus(server: &Api) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_icarus"));
    for variable in [
        "ICARUS_SERVER",
        "ICARUS_TOKEN",
        "ICARUS_TOKEN_FILE",
        "NO_COLOR",
    ] {
        command.env_remove(variable);
    }
    command
        .env("ICARUS_SERVER", &server.base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `icarus args...` against `server` to its end (at most 30 s).
pub async fn run(server: &TestServer, args: &[&str]) -> Run {
    finish(icarus(server).args(args).spawn().unwrap()).await
}

/// Waits for a started run to end (at most 30 s).
pub async fn finish(child: tokio::process::Child) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the command did not end within 30 s")
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `command` run by `script`, so that its standard output is a terminal.
pub async fn on_a_terminal(server: &TestServer, command: &str, no_color: bool) -> Option<String> {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return None;
    }
    let binary = env!("CARGO_BIN_EXE_icarus");
    let mut script = tokio::process::Command::new("script");
    script
        .args(["--quiet", "--return", "--command"])
        .arg(format!("{binary} {command} --server {}", server.api.base))
        .arg("/dev/null")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    if no_color {
        script.env("NO_COLOR", "1");
    }
    let output = script.output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The one job the server has, once it has one.
async fn only_job(server: &TestServer) -> JobId {
    eventually(Duration::from_secs(10), || async {
        let (_, jobs) = server.get("/jobs").await;
        let id = jobs.as_array()?.first()?["job_id"].as_str()?.parse().ok()?;
        Some(id)
    })
    .await
}

#[tokio::test]
async fn submit_wait_follows_the_job_until_it_awaits_approval_and_exits_0() {
    let server = TestServer::sqlite().await;
    let child = icarus(&server)
        .args(["submit", "Add login", "--wait"])
        .spawn()
        .unwrap();
    let id = only_job(&server).await;
    server.pass_build_and_check(id).await;
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], format!("job {id} submitted"));
    assert_eq!(lines[1], format!("job {id}: Add login"));
    // `12:00:03  checking  BuilderSucceeded`
    let phases: Vec<&str> = lines[2..]
        .iter()
        .filter(|line| line.chars().nth(2) == Some(':') && line.chars().nth(5) == Some(':'))
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    assert!(
        phases.ends_with(&["checking", "awaiting_approval"]),
        "a line per phase, in order: {}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("icarus approve {id}")));
    assert!(
        !run.stdout.contains('\x1b'),
        "no terminal, no escape codes: {:?}",
        run.stdout
    );
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["task"], "Add login");
}

#[tokio::test]
async fn submit_wait_exits_3_when_the_job_fails_and_says_why() {
    let server = TestServer::sqlite().await;
    let child = icarus(&server)
        .args(["submit", "Add login", "--wait", "-o", "json"])
        .spawn()
        .unwrap();
    let id = only_job(&server).await;
    server.wait_for_builder(id).await;
    server.runtime.exit(id, Role::Builder, 1);
    let run = finish(child).await;
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    let status = run.json();
    assert_eq!(
        status["status"], "failed",
        "only the final status is printed"
    );
    assert_eq!(status["reason"], "BuilderFailed");
    assert!(
        run.stderr
            .contains(&format!("job {id} ended failed (BuilderFailed)")),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn watch_exits_with_a_code_for_each_way_a_job_ends() {
    let server = TestServer::sqlite().await;
    let waiting = server.spawn("to review").await;
    server.pass_build_and_check(waiting).await;
    let run = run(&server, &["watch", &waiting.to_string()]).await;
    assert_eq!(run.code, 0, "awaiting approval: {}", run.stderr);

    let rejected = self::run(&server, &["reject", &waiting.to_string(), "-m", "not this"]).await;
    assert_eq!(rejected.code, 0, "{}", rejected.stderr);
    assert_eq!(rejected.stdout, format!("Job {waiting} rejected\n"));
    let run = self::run(&server, &["watch", &waiting.to_string()]).await;
    assert_eq!(run.code, 4, "rejected: {}", run.stderr);

    let cancelled = server.spawn("to cancel").await;
    server.wait_for_builder(cancelled).await;
    let run = self::run(&server, &["cancel", &cancelled.to_string(), "-o", "json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["status"], "cancelled");
    server.wait_for(cancelled, "cancelled").await;
    let run = self::run(&server, &["watch", &cancelled.to_string()]).await;
    assert_eq!(run.code, 5, "cancelled: {}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("job {cancelled} ended cancelled (")),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn watch_falls_back_to_polling_when_the_stream_is_refused() {
    let server = TestServer::sqlite_with(|c| c.orchestrator.max_streams = 1).await;
    let id = server.spawn("Add login").await;
    // The one stream the server keeps, held by someone else.
    let ws = server.api.base.replace("http://", "ws://");
    let (_held, _) = tokio_tungstenite::connect_async(format!("{ws}/jobs/{id}/stream"))
        .await
        .unwrap();
    let child = icarus(&server)
        .args(["watch", &id.to_string(), "-o", "yaml"])
        .spawn()
        .unwrap();
    server.pass_build_and_check(id).await;
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("the live stream was refused")
            && run.stderr.contains("(429)")
            && run.stderr.contains("reading the status every 1 s instead"),
        "{}",
        run.stderr
    );
    let status: Value = serde_yaml::from_str(&run.stdout).unwrap();
    assert_eq!(status["status"], "awaiting_approval");
}

#[tokio::test]
async fn list_shows_a_table_for_people_and_the_apis_rows_for_scripts() {
    let server = TestServer::sqlite().await;
    let first = server.spawn("First task\nwith more lines").await;
    server.pass_build_and_check(first).await;
    let second = server.spawn("Second task").await;

    let run = run(&server, &["list"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|cell| !cell.is_empty())
        .collect();
    assert_eq!(header, ["JOB ID", "STATUS", "PROJECT", "AGE", "TASK"]);
    assert!(lines[1].starts_with(&second.to_string()), "newest first");
    assert!(lines[2].contains("awaiting_approval") && lines[2].ends_with("First task…"));
    let status_column = lines[0].find("STATUS").unwrap();
    assert_eq!(lines[2].find("awaiting_approval"), Some(status_column));

    let run = self::run(&server, &["list", "-o", "json"]).await;
    let rows = run.json();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["job_id"], second.to_string());
    let run = self::run(
        &server,
        &["list", "--status", "awaiting_approval", "-o", "yaml"],
    )
    .await;
    let rows: Value = serde_yaml::from_str(&run.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["job_id"], first.to_string());

    let run = self::run(&server, &["list", "--status", "done"]).await;
    assert_eq!(run.code, 2, "an unknown status is a usage error");
    assert!(run.stderr.contains("awaiting_approval"), "{}", run.stderr);
}

#[tokio::test]
async fn list_shows_each_jobs_project_and_lists_one_project_with_project() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "Acme's", "project_id": "acme"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    server.spawn("The default project's").await;

    let run = run(&server, &["list"]).await;
    let project_column = run.stdout.find("PROJECT").unwrap();
    let projects: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .map(|line| line[project_column..].split_whitespace().next().unwrap())
        .collect();
    assert_eq!(projects, ["default", "acme"], "{}", run.stdout);

    let run = self::run(&server, &["list", "--project", "acme", "-o", "json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = run.json();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["task"], "Acme's");

    let run = self::run(&server, &["list", "--project", "acme/api"]).await;
    assert_eq!(run.code, 2, "not a project id: a usage error");
    assert!(run.stderr.contains("not a project id"), "{}", run.stderr);
}

#[tokio::test]
async fn list_watch_prints_each_job_again_when_it_appears_or_changes_phase() {
    use tokio::io::AsyncBufReadExt;
    let server = TestServer::sqlite().await;
    let first = server.spawn("First").await;
    server.wait_for_builder(first).await;
    let mut child = icarus(&server)
        .args(["list", "--watch", "-o", "json"])
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let row = next().await;
    assert_eq!(
        (row["job_id"].as_str(), row["status"].as_str()),
        (Some(first.to_string().as_str()), Some("building"))
    );
    let second = server.spawn("Second").await;
    let row = next().await;
    assert_eq!(row["job_id"], second.to_string());
    server.runtime.exit(first, Role::Builder, 1);
    let row = next().await;
    assert_eq!(
        (row["job_id"].as_str(), row["status"].as_str()),
        (Some(first.to_string().as_str()), Some("failed"))
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn get_shows_the_status_the_timeline_and_the_audits_summary() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("Add login").await;
    server.pass_build_and_check(id).await;

    let run = run(&server, &["get", &id.to_string()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = &run.stdout;
    for expected in [
        format!("Job:         {id}"),
        "Task:        Add login".to_owned(),
        "Status:      awaiting_approval (CheckerSucceeded)".to_owned(),
        "Submitted:".to_owned(),
        "Project:     default (phase I)".to_owned(),
        "Timeline:".to_owned(),
        "Audit:\n  summary: ok".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected:?} in:\n{text}");
    }
    let timeline: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("Timeline:"))
        .skip(2)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().nth(3))
        .collect();
    assert_eq!(
        timeline,
        ["pending", "building", "checking", "awaiting_approval"]
    );

    let run = self::run(&server, &["get", &id.to_string(), "-o", "json"]).await;
    let job = run.json();
    assert_eq!(job["status"], "awaiting_approval");
    let events = job["events"].as_array().unwrap();
    assert_eq!(events.last().unwrap()["to"], "awaiting_approval");
    assert_eq!(job["audit"]["audit_report"], json!({"summary": "ok"}));

    let fresh = server.spawn("Not audited").await;
    let run = self::run(&server, &["get", &fresh.to_string(), "-o", "json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["audit"], Value::Null);
}

#[tokio::test]
async fn completions_are_generated_for_bash() {
    let server = TestServer::sqlite().await;
    let run = run(&server, &["completion", "bash"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("_icarus()"), "{}", run.stdout);
    for command in ["submit", "watch", "approve", "--token-file"] {
        assert!(run.stdout.contains(command), "{command} completes");
    }
}

#[tokio::test]
async fn watch_on_a_terminal_draws_the_phases_in_place() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("Add login").await;
    server.pass_build_and_check(id).await;
    let Some(screen) = on_a_terminal(&server, &format!("watch {id}"), false).await else {
        return;
    };
    for expected in [
        format!("job\x1b[0m {id}  Add login"),
        "✓\x1b[0m pending".to_owned(),
        "✓\x1b[0m checking".to_owned(),
        "\x1b[33m●\x1b[0m \x1b[33mawaiting_approval".to_owned(),
        format!("`icarus approve {id}`"),
    ] {
        assert!(screen.contains(&expected), "{expected:?} in {screen:?}");
    }
    assert!(screen.contains("\r\x1b[2K"), "lines are redrawn in place");
}
