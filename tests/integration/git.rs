//! Jobs with a Git source, with real `git` and a local bare repository as the
//! remote. The agents are played by the in-memory runtime test double: the
//! test writes the builder's files into the workspace itself, then plays its
//! exit, so these tests are about checkout, diff and publish.

use std::path::{Path, PathBuf};
use std::process::Command;

use icarus::job::{JobId, Role};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{TestServer, eventually};

/// A bare repository with one commit on `main` (a README), as a remote.
pub struct Remote {
    dir: TempDir,
}

impl Remote {
    pub fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("remote.git");
        let seed = dir.path().join("seed");
        git(
            dir.path(),
            &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
        );
        git(dir.path(), &["init", "--quiet", "-b", "main", "seed"]);
        std::fs::write(seed.join("README.md"), "# Demo\n\nold line\n").unwrap();
        git(&seed, &["add", "."]);
        git(
            &seed,
            &[
                "-c",
                "user.name=Seed",
                "-c",
                "user.email=seed@example.com",
                "commit",
                "--quiet",
                "-m",
                "initial",
            ],
        );
        git(&seed, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
        Remote { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    /// Lets `config` take sources from this remote's directory.
    pub fn allow_in(&self, config: &mut icarus::config::Config) {
        config.workspace.allowed_source_roots = vec![self.dir.path().to_owned()];
    }

    pub fn url(&self) -> String {
        self.path().display().to_string()
    }

    pub fn tip(&self, branch: &str) -> Option<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ])
            .output()
            .unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn show(&self, what: &str) -> String {
        git(
            &self.path(),
            &[
                "show",
                "--no-color",
                "--quiet",
                "--format=%an <%ae>%n%P%n%B",
                what,
            ],
        )
    }

    pub fn tree_of(&self, commit: &str) -> String {
        git(&self.path(), &["rev-parse", &format!("{commit}^{{tree}}")])
            .trim()
            .to_owned()
    }

    /// Every path in `commit`'s tree.
    pub fn paths_at(&self, commit: &str) -> Vec<String> {
        git(&self.path(), &["ls-tree", "-r", "--name-only", commit])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn file_at(&self, commit: &str, path: &str) -> String {
        git(&self.path(), &["show", &format!("{commit}:{path}")])
    }

    fn branches(&self) -> String {
        git(&self.path(), &["branch", "--list"])
    }

    /// Makes every push fail, with the hook's words on stderr.
    pub(crate) fn refuse_pushes(&self) {
        let hook = self.path().join("hooks/pre-receive");
        std::fs::write(
            &hook,
            "#!/bin/sh\necho 'pushes are frozen for the release' >&2\nexit 1\n",
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    }

    pub(crate) fn accept_pushes(&self) {
        std::fs::remove_file(self.path().join("hooks/pre-receive")).unwrap();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn spawn_from(server: &TestServer, remote: &Remote, task: &str) -> JobId {
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": task, "source": {"repository": remote.url(), "ref": "main"}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    body["job_id"].as_str().unwrap().parse().unwrap()
}

fn workspace(server: &TestServer, id: JobId) -> PathBuf {
    server.config.workspace.base_path.join(id.to_string())
}

/// Plays a builder that adds a module and edits the README, then a checker
/// that reports and exits; returns the job's status at `awaiting_approval`.
pub(crate) async fn build_and_check(server: &TestServer, id: JobId) -> Value {
    server.wait_for_builder(id).await;
    eventually(std::time::Duration::from_secs(10), || async {
        server.runtime.state_of(id, Role::Builder).map(|_| ())
    })
    .await;
    let dir = workspace(server, id);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/login.py"), "def login():\n    return True\n").unwrap();
    std::fs::write(dir.join("README.md"), "# Demo\n\nnew line\n").unwrap();
    server.pass_build_and_check(id).await
}

async fn approve(server: &TestServer, id: JobId, comment: &str) {
    let (code, body) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "comment": comment}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn the_builder_starts_on_a_checkout_of_the_source_at_its_recorded_base() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login").await;
    eventually(std::time::Duration::from_secs(10), || async {
        server.runtime.state_of(id, Role::Builder).map(|_| ())
    })
    .await;
    // The builder starts in the reconcile that records the base, just before
    // the status is written: wait for the write, not only the start.
    let status = eventually(std::time::Duration::from_secs(10), || async {
        let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
        (!status["base_commit"].is_null()).then_some(status)
    })
    .await;
    assert_eq!(status["base_commit"], remote.tip("main").unwrap());
    assert_eq!(status["source"]["ref"], "main");
    let readme = std::fs::read_to_string(workspace(&server, id).join("README.md")).unwrap();
    assert!(readme.contains("old line"));
}

#[tokio::test]
async fn the_diff_shows_exactly_the_builders_change_as_text_and_as_json() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login").await;
    server.wait_for_builder(id).await;
    let (code, body) = server.get(&format!("/jobs/{id}/diff")).await;
    assert_eq!(code, 409, "no diff before awaiting_approval: {body}");

    build_and_check(&server, id).await;
    let (code, text) = server.get(&format!("/jobs/{id}/diff")).await;
    assert_eq!(code, 200);
    let text = text.as_str().unwrap();
    assert!(text.contains("+++ b/src/login.py"), "{text}");
    assert!(text.contains("-old line\n+new line"), "{text}");

    let (code, summary) = server.get(&format!("/jobs/{id}/diff?format=json")).await;
    assert_eq!(code, 200);
    let files: Vec<(&str, &str, u64, u64)> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap(),
                f["status"].as_str().unwrap(),
                f["additions"].as_u64().unwrap(),
                f["deletions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("README.md", "modified", 1, 1),
            ("src/login.py", "added", 2, 0)
        ]
    );
    assert_eq!(summary["base_commit"], remote.tip("main").unwrap());
    assert_eq!(summary["truncated"], false);
    let (code, _) = server.get(&format!("/jobs/{id}/diff?format=xml")).await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn approval_pushes_one_commit_to_the_jobs_branch_with_its_metadata() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login\n\nWith a test.").await;
    let base = remote.tip("main").unwrap();
    build_and_check(&server, id).await;
    approve(&server, id, "Ship it").await;
    let status = server.wait_for(id, "completed").await;

    let branch = format!("icarus/{id}");
    assert_eq!(status["reason"], "Published");
    assert_eq!(status["branch"], branch);
    let tip = remote.tip(&branch).expect("the branch was pushed");
    assert_eq!(status["commit"], tip);
    let shown = remote.show(&tip);
    let mut lines = shown.lines();
    assert_eq!(lines.next(), Some("Icarus <icarus@localhost>"));
    assert_eq!(
        lines.next(),
        Some(base.as_str()),
        "one commit on top of the base"
    );
    assert_eq!(lines.next(), Some("Add login"));
    assert!(shown.contains(&format!("Icarus-Job: {id}")), "{shown}");
    assert!(shown.contains("Approval-comment: Ship it"), "{shown}");
    assert_eq!(
        remote.file_at(&tip, "src/login.py"),
        "def login():\n    return True\n"
    );
    assert_eq!(remote.tip("main").unwrap(), base, "main is untouched");
}

#[tokio::test]
async fn a_refused_push_fails_the_job_and_a_retry_pushes_the_same_single_commit() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login").await;
    let base = remote.tip("main").unwrap();
    build_and_check(&server, id).await;
    remote.refuse_pushes();
    approve(&server, id, "").await;
    let status = server.wait_for(id, "failed").await;
    assert_eq!(status["reason"], "PublishFailed");
    let message = status["error_message"].as_str().unwrap();
    assert!(
        message.contains("pushes are frozen for the release"),
        "{message}"
    );
    assert!(
        workspace(&server, id).join("src/login.py").is_file(),
        "the work is kept"
    );

    remote.accept_pushes();
    let (code, body) = server.post(&format!("/jobs/{id}/publish"), json!({})).await;
    assert_eq!(code, 200, "{body}");
    let status = server.wait_for(id, "completed").await;
    let tip = remote.tip(&format!("icarus/{id}")).unwrap();
    assert_eq!(status["commit"], tip);
    let parents = remote.show(&tip).lines().nth(1).unwrap().to_owned();
    assert_eq!(
        parents, base,
        "the retry pushed the first commit, not a second one"
    );
    let (_, events) = server.get(&format!("/jobs/{id}/events")).await;
    let reasons: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.ends_with(&["Approved", "PublishFailed", "PublishRetried", "Published"]),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn what_the_workspace_gains_after_its_snapshot_is_not_published() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login").await;
    let status = build_and_check(&server, id).await;
    let snapshot = status["snapshot"].as_str().unwrap().to_owned();
    std::fs::write(workspace(&server, id).join("late.sh"), "echo late\n").unwrap();
    approve(&server, id, "").await;
    let status = server.wait_for(id, "completed").await;
    let tip = status["commit"].as_str().unwrap();
    assert_eq!(remote.tree_of(tip), snapshot);
    assert!(!remote.paths_at(tip).contains(&"late.sh".to_owned()));
}

#[tokio::test]
async fn an_approval_that_names_another_snapshot_is_a_conflict_and_decides_nothing() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login").await;
    build_and_check(&server, id).await;
    let stale = "0123456789abcdef0123456789abcdef01234567";
    let (code, body) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "snapshot": stale}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains(stale), "{body}");
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    assert_eq!(status["status"], "awaiting_approval");
    assert_eq!(status["approval"], Value::Null);
}

#[tokio::test]
async fn the_diff_names_its_snapshot_in_a_header_and_in_its_json() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login").await;
    let status = build_and_check(&server, id).await;
    let snapshot = status["snapshot"].as_str().unwrap();
    assert_eq!(snapshot.len(), 40, "{status}");
    let response = reqwest::get(server.url(&format!("/jobs/{id}/diff")))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-icarus-snapshot"], snapshot);
    let (_, summary) = server.get(&format!("/jobs/{id}/diff?format=json")).await;
    assert_eq!(summary["snapshot"], snapshot);
}

/// A plain-HTTP listener that records what it was sent and answers 404:
/// a submitter's "repository" that wants the token.
async fn token_catcher() -> (String, std::sync::Arc<std::sync::Mutex<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x.git", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = vec![0u8; 16 * 1024];
            let read = stream.read(&mut buffer).await.unwrap_or(0);
            record
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    (url, seen)
}

#[tokio::test]
async fn the_publish_token_never_reaches_a_source_url_the_submitter_chose() {
    let (url, seen) = token_catcher().await;
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let server = TestServer::sqlite_with(|c| {
        c.publish.token = "ghp_CANARY_TOKEN".to_owned();
        // Even a listed host gets nothing over plain HTTP.
        c.publish.token_hosts = vec!["github.com".to_owned(), host];
    })
    .await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "source": {"repository": url}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let id: JobId = body["job_id"].as_str().unwrap().parse().unwrap();
    server.wait_for(id, "failed").await;
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains("GET /x.git/info/refs"), "git asked: {seen}");
    assert!(
        !seen.to_ascii_lowercase().contains("authorization"),
        "{seen}"
    );
    assert!(!seen.contains("ghp_CANARY_TOKEN"), "{seen}");
}

#[tokio::test]
async fn publishing_again_is_refused_unless_the_push_failed() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login").await;
    build_and_check(&server, id).await;
    let (code, body) = server.post(&format!("/jobs/{id}/publish"), json!({})).await;
    assert_eq!(code, 409, "{body}");
}

#[tokio::test]
async fn rejection_leaves_the_remote_untouched_and_removes_the_workspace() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let id = spawn_from(&server, &remote, "Add login").await;
    build_and_check(&server, id).await;
    let before = remote.branches();
    let (code, _) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": false, "comment": "no"}),
        )
        .await;
    assert_eq!(code, 200);
    server.wait_for(id, "rejected").await;
    assert_eq!(remote.branches(), before);
    assert!(!server.runtime.has_workspace(id));
}

#[tokio::test]
async fn a_source_that_cannot_be_cloned_fails_the_job_with_gits_words() {
    let server = TestServer::sqlite().await;
    // Nothing listens on port 1: the clone fails at once.
    let url = "https://127.0.0.1:1/nowhere.git";
    let (_, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "source": {"repository": url}}),
        )
        .await;
    let id: JobId = body["job_id"].as_str().unwrap().parse().unwrap();
    let status = server.wait_for(id, "failed").await;
    assert_eq!(status["reason"], "SourceCheckoutFailed");
    let message = status["error_message"].as_str().unwrap();
    assert!(message.contains(url), "{message}");
    assert!(
        server.runtime.state_of(id, Role::Builder).is_none(),
        "no builder ran"
    );
}

#[tokio::test]
async fn an_unknown_base_ref_fails_the_job_and_names_it() {
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let (_, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "source": {"repository": remote.url(), "ref": "no-such-branch"}}),
        )
        .await;
    let id: JobId = body["job_id"].as_str().unwrap().parse().unwrap();
    let status = server.wait_for(id, "failed").await;
    assert_eq!(status["reason"], "SourceCheckoutFailed");
    assert!(
        status["error_message"]
            .as_str()
            .unwrap()
            .contains("'no-such-branch'")
    );
}

#[tokio::test]
async fn a_ref_that_looks_like_an_option_is_refused_at_spawn() {
    let server = TestServer::sqlite().await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "source": {"repository": "/tmp/x", "ref": "--upload-pack=touch /tmp/pwned"}}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
}

#[tokio::test]
async fn a_job_without_a_source_shows_every_file_it_wrote_as_added() {
    let server = TestServer::sqlite().await;
    let id = server.spawn("Write notes").await;
    server.wait_for_builder(id).await;
    let dir = workspace(&server, id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("NOTES.md"), "one\ntwo\n").unwrap();
    server.pass_build_and_check(id).await;
    let (code, summary) = server.get(&format!("/jobs/{id}/diff?format=json")).await;
    assert_eq!(code, 200);
    assert_eq!(summary["files"][0]["path"], "NOTES.md");
    assert_eq!(summary["files"][0]["status"], "added");
    assert_eq!(summary["additions"], 2);
    assert_eq!(summary["base_commit"], Value::Null);
    approve(&server, id, "").await;
    let status = server.wait_for(id, "completed").await;
    assert_eq!(status["branch"], Value::Null, "nothing to publish to");
}

#[tokio::test]
async fn local_sources_outside_the_allowed_roots_and_command_transports_are_refused() {
    let remote = Remote::new();
    let server = TestServer::sqlite().await;
    for repository in [remote.url(), "/etc".to_owned(), "ext::sh -c id".to_owned()] {
        let (code, body) = server
            .post(
                "/jobs/spawn",
                json!({"task": "t", "source": {"repository": repository}}),
            )
            .await;
        assert_eq!(code, 422, "{repository}: {body}");
    }
    let link = remote.dir.path().join("escape");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let server = TestServer::sqlite_with(|c| remote.allow_in(c)).await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "t", "source": {"repository": link.display().to_string()}}),
        )
        .await;
    assert_eq!(code, 422, "a symlink out of the root: {body}");
}

/// `icarus source-step`, what Kubernetes mode's git Pods run, as a process:
/// the step from the environment, its outcome as the last line of output.
/// The small outcomes here also go to the termination-message file.
fn source_step(root: &Path, job: JobId, step: Value) -> Value {
    let outcome_file = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_icarus"))
        .args(["source-step", "--workspace-root"])
        .arg(root.join("workspaces"))
        .arg("--repository-root")
        .arg(root.join("repositories"))
        .args(["--job", &job.to_string(), "--outcome-file"])
        .arg(outcome_file.path())
        .env("ICARUS_SOURCE_STEP", step.to_string())
        .env_remove("GITHUB_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcome = stdout.lines().last().unwrap();
    assert_eq!(
        std::fs::read_to_string(outcome_file.path()).unwrap(),
        outcome
    );
    serde_json::from_str(outcome).unwrap()
}

#[test]
fn the_source_step_command_checks_out_snapshots_and_publishes_a_workspace() {
    let remote = Remote::new();
    let root = tempfile::tempdir().unwrap();
    let job = JobId::new_random();
    let source = json!({"repository": remote.url(), "reference": "main"});

    let checked_out = source_step(
        root.path(),
        job,
        json!({"step": "checkout", "source": source}),
    );
    let base = checked_out["base_commit"].as_str().unwrap().to_owned();
    assert_eq!(Some(base.clone()), remote.tip("main"));
    let workspace = root.path().join("workspaces").join(job.to_string());
    assert!(workspace.join("README.md").exists());
    assert!(
        !workspace.join(".git").exists(),
        "the repository is kept apart"
    );
    assert!(root.path().join(format!("repositories/{job}/git")).is_dir());
    // Checking out again finds the checkout and changes nothing.
    let again = source_step(
        root.path(),
        job,
        json!({"step": "checkout", "source": source}),
    );
    assert_eq!(again["base_commit"], base.as_str());

    std::fs::write(workspace.join("LOGGING.md"), "log everything\n").unwrap();
    let snapshot = source_step(root.path(), job, json!({"step": "snapshot", "base": base}));
    let text = snapshot["snapshot"]["diff"]["text"].as_str().unwrap();
    assert!(text.contains("+++ b/LOGGING.md"), "{text}");
    assert_eq!(snapshot["snapshot"]["diff"]["truncated"], false);
    let tree = snapshot["snapshot"]["tree"].as_str().unwrap();

    let request = json!({"job": job, "repository": remote.url(), "base": base, "snapshot": tree,
                         "branch": format!("icarus/{job}"), "message": "Add logging",
                         "author_name": "Icarus", "author_email": "icarus@example.com",
                         "committed_at": "2026-12-03T08:00:00Z"});
    let published = source_step(
        root.path(),
        job,
        json!({"step": "publish", "request": request}),
    );
    let commit = published["published"]["commit"].as_str().unwrap();
    assert_eq!(
        remote.tip(&format!("icarus/{job}")).as_deref(),
        Some(commit)
    );
    assert_eq!(remote.tree_of(commit), tree, "exactly the snapshot");
}

#[test]
fn a_source_step_that_cannot_work_reports_a_permanent_failure() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("no-such-repository.git");
    let source = json!({"repository": missing.display().to_string()});
    let outcome = source_step(
        root.path(),
        JobId::new_random(),
        json!({"step": "checkout", "source": source}),
    );
    assert_eq!(outcome["failed"]["permanent"], true, "{outcome}");
    assert!(
        outcome["failed"]["message"]
            .as_str()
            .unwrap()
            .contains("cloning")
    );
}

/// A stand-in for a forge's pull-request API (GitHub's shape), on a local
/// port: nothing here reaches a real forge. Answers the first create with
/// 201 and later ones with GitHub's "already exists" 422.
struct MockForge {
    url: String,
    /// (authorization header, body) of every create.
    creates: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

impl MockForge {
    async fn start() -> MockForge {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        type Creates = std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>;
        let creates: Creates = Default::default();
        let pull = "https://forge.example/acme/api/pull/7";
        let app = axum::Router::new()
            .route(
                "/repos/acme/api/pulls",
                axum::routing::post(
                    move |State(creates): State<Creates>,
                          headers: HeaderMap,
                          axum::Json(body): axum::Json<Value>| async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let mut seen = creates.lock().unwrap();
                        seen.push((auth, body));
                        if seen.len() == 1 {
                            (StatusCode::CREATED, axum::Json(json!({"html_url": pull})))
                        } else {
                            let exists = json!({"message": "Validation Failed",
                                "errors": [{"message": "A pull request already exists for acme:icarus/x."}]});
                            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(exists))
                        }
                    },
                )
                .get(move || async move { axum::Json(json!([{"html_url": pull}])) }),
            )
            .with_state(creates.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockForge { url, creates }
    }
}

/// A server that opens pull requests on `repository` through `forge`, where
/// configuration allows `acme/*` only.
async fn with_pull_requests(remote: &Remote, forge: &MockForge, repository: &str) -> TestServer {
    TestServer::sqlite_with(|c| {
        remote.allow_in(c);
        c.publish.token = "forge-token".to_owned();
        c.publish.pull_request.enabled = true;
        c.publish.pull_request.api_url = forge.url.clone();
        c.publish.pull_request.repository = repository.to_owned();
        c.publish.pull_request.allowed_repositories = vec!["acme/*".to_owned()];
    })
    .await
}

#[tokio::test]
async fn mock_forge_publishing_opens_a_pull_request_for_the_branch_and_records_it() {
    let remote = Remote::new();
    let forge = MockForge::start().await;
    let server = with_pull_requests(&remote, &forge, "acme/api").await;
    let id = spawn_from(&server, &remote, "Add login\n\nWith a test.").await;
    build_and_check(&server, id).await;
    approve(&server, id, "Ship it").await;
    let status = server.wait_for(id, "completed").await;

    let url = "https://forge.example/acme/api/pull/7";
    assert_eq!(status["pull_request_url"], url);
    let creates = forge.creates.lock().unwrap().clone();
    assert_eq!(creates.len(), 1);
    let (auth, body) = &creates[0];
    assert_eq!(auth, "Bearer forge-token");
    assert_eq!(body["head"], format!("icarus/{id}"));
    assert_eq!(body["base"], "main", "the source's ref");
    assert_eq!(body["title"], "Add login");
    let (_, events) = server.get(&format!("/jobs/{id}/events")).await;
    assert!(events.to_string().contains(url), "{events}");
}

#[tokio::test]
async fn mock_forge_no_pull_request_is_opened_on_a_repository_configuration_does_not_allow() {
    let remote = Remote::new();
    let forge = MockForge::start().await;
    let server = with_pull_requests(&remote, &forge, "victim/secrets").await;
    let id = spawn_from(&server, &remote, "Add login").await;
    build_and_check(&server, id).await;
    approve(&server, id, "").await;
    let status = server.wait_for(id, "completed").await;
    assert_eq!(status["pull_request_url"], Value::Null);
    assert!(
        forge.creates.lock().unwrap().is_empty(),
        "the forge was never asked"
    );
    let (_, events) = server.get(&format!("/jobs/{id}/events")).await;
    assert!(
        events.to_string().contains("allowed_repositories"),
        "{events}"
    );
}

#[tokio::test]
async fn mock_forge_a_pull_request_already_open_is_found_not_opened_twice() {
    let forge = MockForge::start().await;
    let forge_api = icarus::source::forge::Forge::new(&forge.url, None);
    let request = icarus::source::forge::PullRequest {
        repository: "acme/api".to_owned(),
        head: "icarus/x".to_owned(),
        base: "main".to_owned(),
        title: "t".to_owned(),
        body: "b".to_owned(),
    };
    let first = forge_api.open(&request).await.unwrap();
    let again = forge_api.open(&request).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(forge.creates.lock().unwrap().len(), 2);
}

/// Git on a scratch layout, as the controller uses it, for snapshot tests.
fn scratch_git(root: &Path) -> (icarus::source::LocalGit, icarus::source::GitLayout) {
    use icarus::source::{GitLayout, LocalGit, RemoteCredentials};
    let layout = GitLayout::new(root.join("workspaces"), root.join("repositories"));
    let git = LocalGit::new(layout.clone(), true, RemoteCredentials::none());
    (git, layout)
}

/// `mode path` of every entry of the job's snapshot tree (paths as git
/// quotes them), and each link's target.
fn snapshot_entries(layout: &icarus::source::GitLayout, job: JobId, tree: &str) -> Vec<String> {
    let repository = layout.repository(job);
    let listing = Command::new("git")
        .arg("--git-dir")
        .arg(&repository)
        .args(["ls-tree", "-r", "--full-tree", tree])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            let mode = meta.split(' ').next().unwrap();
            format!("{mode} {path}")
        })
        .collect()
}

#[tokio::test]
async fn a_snapshot_records_modes_links_and_odd_names_exactly_and_lists_what_git_cannot_store() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let (git, layout) = scratch_git(root.path());
    let job = JobId::new_random();
    let ws = layout.workspace(job);
    std::fs::create_dir_all(ws.join("sub/.git")).unwrap();
    std::fs::write(ws.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(ws.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(ws.join("plain.txt"), "text\n").unwrap();
    std::fs::write(ws.join("line\nbreak"), "x").unwrap();
    std::fs::write(ws.join("\"quoted"), "y").unwrap();
    std::fs::write(ws.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "z").unwrap();
    std::fs::write(
        ws.join("sub/.git/config"),
        "[core]\n\tfsmonitor = touch /tmp/x\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ws.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc", ws.join("dirlink")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(ws.join("pipe"))
            .status()
            .unwrap()
            .success()
    );

    let snapshot = git.snapshot(job, None).await.unwrap();
    let entries = snapshot_entries(&layout, job, &snapshot.tree);
    assert_eq!(
        entries,
        [
            "100644 \"\\\"quoted\"",
            "100644 \"caf\\351\"",
            "120000 dirlink",
            "100644 \"line\\nbreak\"",
            "120000 link",
            "100644 plain.txt",
            "100755 run.sh",
        ]
    );
    let text = &snapshot.diff.text;
    assert!(
        text.contains("+/etc/passwd"),
        "a link is its target: {text}"
    );
    assert!(!text.contains("root:"), "never followed: {text}");
    assert!(
        text.starts_with("# icarus: not in the snapshot: pipe: "),
        "{text}"
    );
    assert!(
        text.contains("# icarus: not in the snapshot: sub/.git: "),
        "{text}"
    );
    let again = git.snapshot(job, None).await.unwrap();
    assert_eq!(
        again.tree, snapshot.tree,
        "the same files, the same snapshot"
    );
}

#[tokio::test]
async fn a_workspace_over_the_snapshot_limits_is_refused_with_the_limit_named() {
    use icarus::source::SnapshotLimits;
    let root = tempfile::tempdir().unwrap();
    let (git, layout) = scratch_git(root.path());
    let job = JobId::new_random();
    let ws = layout.workspace(job);
    std::fs::create_dir_all(&ws).unwrap();
    for n in 0..3 {
        std::fs::write(ws.join(format!("f{n}")), "0123456789").unwrap();
    }
    let few_files = git.with_limits(SnapshotLimits {
        max_bytes: 1 << 20,
        max_files: 2,
    });
    let refused = few_files.snapshot(job, None).await.unwrap_err();
    assert!(refused.is_permanent());
    assert!(
        refused.to_string().contains("workspace.snapshot_max_files"),
        "{refused}"
    );
    let (git, _) = scratch_git(root.path());
    let few_bytes = git.with_limits(SnapshotLimits {
        max_bytes: 25,
        max_files: 100,
    });
    let refused = few_bytes.snapshot(job, None).await.unwrap_err();
    assert!(
        refused.to_string().contains("workspace.snapshot_max_bytes"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_workspace_nested_without_end_is_refused_not_walked_to_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let (git, layout) = scratch_git(root.path());
    let job = JobId::new_random();
    let mut deep = layout.workspace(job);
    for _ in 0..300 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let refused = git.snapshot(job, None).await.unwrap_err();
    assert!(refused.is_permanent());
    assert!(refused.to_string().contains("deeper than"), "{refused}");
}

#[tokio::test]
async fn a_job_approved_by_two_people_is_published_with_a_trailer_for_each() {
    use icarus::config::AccessRole;
    const ANN: &str = "approver-ann-0123456789";
    const BEN: &str = "approver-ben-0123456789";
    let remote = Remote::new();
    let server = TestServer::sqlite_with(|c| {
        remote.allow_in(c);
        c.auth.enabled = true;
        c.auth.tokens = vec![
            crate::support::token("ann", AccessRole::Approver, ANN),
            crate::support::token("ben", AccessRole::Approver, BEN),
        ];
        c.approval.required = 2;
    })
    .await;
    let ann = server.as_holder_of(ANN);
    let body = json!({"task": "Add login", "source": {"repository": remote.url(), "ref": "main"}});
    let (code, body) = ann.post("/jobs/spawn", body).await;
    assert_eq!(code, 201, "{body}");
    let id: JobId = body["job_id"].as_str().unwrap().parse().unwrap();
    server.wait_for_builder_as(&ann, id).await;
    let dir = workspace(&server, id);
    std::fs::write(dir.join("README.md"), "# Demo\n\nnew line\n").unwrap();
    server.pass_build_and_check_as(&ann, id).await;
    for (api, comment) in [(&ann, "looks right"), (&server.as_holder_of(BEN), "")] {
        let (code, body) = api
            .post(
                &format!("/jobs/{id}/approve"),
                json!({"approved": true, "comment": comment}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let status = ann.wait_for(id, "completed").await;
    let shown = remote.show(status["commit"].as_str().unwrap());
    let approvers: Vec<&str> = shown
        .lines()
        .filter_map(|line| line.strip_prefix("Approved-by: "))
        .collect();
    assert_eq!(approvers, ["ann", "ben"], "{shown}");
    assert!(shown.contains("Approval-comment: looks right"), "{shown}");
}
