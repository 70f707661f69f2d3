//! The workspace is the attacker's: real builder containers plant every Git
//! trick they know (`[builder:hostile=...]`, see `agents/src/hostile.rs`)
//! and these tests check, on the real Docker engine with real git, that the
//! orchestrator obeys none of it. A canary path on the host stands for
//! "a command ran here"; a secret file for "a host file leaked"; a second
//! bare repository for "the push went elsewhere".

use std::path::PathBuf;
use std::time::Duration;

use icarus::job::JobId;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::docker::DockerServer;
use crate::git::Remote;

/// What the attacks aim at.
struct Targets {
    dir: TempDir,
    secret_text: String,
    attacker: Remote,
}

impl Targets {
    fn new() -> Targets {
        let dir = tempfile::tempdir().unwrap();
        let secret_text = format!("icarus-secret-{}", JobId::new_random());
        std::fs::create_dir(dir.path().join("secret")).unwrap();
        std::fs::write(dir.path().join("secret/shadow"), &secret_text).unwrap();
        Targets {
            dir,
            secret_text,
            attacker: Remote::new(),
        }
    }

    fn canary(&self) -> PathBuf {
        self.dir.path().join("canary")
    }

    /// A task that makes the reference builder plant `attack` aimed here.
    fn task(&self, attack: &str) -> String {
        format!(
            "Add hello [builder:hostile={attack}] [canary:{}] [secret:{}] [attacker:{}]",
            self.canary().display(),
            self.dir.path().join("secret/shadow").display(),
            self.attacker.url()
        )
    }

    fn assert_nothing_ran_on_the_host(&self) {
        let canary = self.canary();
        assert!(
            !canary.exists(),
            "a command planted in the workspace ran on the host: {}",
            std::fs::read_to_string(&canary).unwrap_or_default()
        );
    }

    fn assert_the_attacker_got_nothing(&self) {
        let branches = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(self.attacker.url())
            .args(["for-each-ref", "--format=%(refname)"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&branches.stdout).trim(),
            "refs/heads/main",
            "nothing was pushed to the attacker's remote"
        );
    }
}

async fn spawn(server: &DockerServer, task: &str, source: Option<&Remote>) -> JobId {
    let mut body = json!({"task": task});
    if let Some(remote) = source {
        body["source"] = json!({"repository": remote.url(), "ref": "main"});
    }
    let (code, body) = server.post("/jobs/spawn", body).await;
    assert_eq!(code, 201, "{body}");
    body["job_id"].as_str().unwrap().parse().unwrap()
}

/// The diff as text and the snapshot its header names.
async fn diff_text(server: &DockerServer, id: JobId) -> (String, String) {
    let response = reqwest::get(server.url(&format!("/jobs/{id}/diff")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let snapshot = response.headers()["x-icarus-snapshot"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.text().await.unwrap(), snapshot)
}

async fn review(server: &DockerServer, id: JobId) -> (String, String) {
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(60))
        .await;
    let workspace = server.workspace(id);
    assert!(
        workspace.join("hello.txt").is_file(),
        "the builder did its work"
    );
    diff_text(server, id).await
}

async fn approve(server: &DockerServer, id: JobId, snapshot: &str) -> Value {
    let (code, body) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "snapshot": snapshot}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    server
        .wait_for_within(id, "completed", Duration::from_secs(30))
        .await
}

#[tokio::test]
async fn git_config_and_hooks_planted_in_the_workspace_run_nothing_on_the_host() {
    let targets = Targets::new();
    let remote = Remote::new();
    let server = DockerServer::start(|c| remote.allow_in(c)).await;
    let id = spawn(&server, &targets.task("all"), Some(&remote)).await;
    let (_, snapshot) = review(&server, id).await;
    let planted = server.workspace(id).join(".git/config");
    assert!(planted.is_file(), "the attack was planted");
    approve(&server, id, &snapshot).await;
    targets.assert_nothing_ran_on_the_host();
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn a_job_without_a_source_does_not_take_its_builders_git_directory_for_a_repository() {
    let targets = Targets::new();
    let server = DockerServer::start(|_| {}).await;
    let id = spawn(&server, &targets.task("all"), None).await;
    let (text, snapshot) = review(&server, id).await;
    assert!(text.contains("+++ b/hello.txt"), "{text}");
    assert!(
        !text.contains("backdoor"),
        "the smuggled commit is not the change"
    );
    assert!(
        text.contains("# icarus: not in the snapshot: .git:"),
        "{text}"
    );
    approve(&server, id, &snapshot).await;
    targets.assert_nothing_ran_on_the_host();
}

#[tokio::test]
async fn no_host_file_reaches_the_diff_through_a_link_or_a_worktree_setting() {
    let targets = Targets::new();
    let server = DockerServer::start(|_| {}).await;
    let id = spawn(&server, &targets.task("all"), None).await;
    let (text, _) = review(&server, id).await;
    assert!(
        !text.contains(&targets.secret_text),
        "the secret leaked: {text}"
    );
    let (_, summary) = server.get(&format!("/jobs/{id}/diff?format=json")).await;
    let leak = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "leak")
        .expect("the link is part of the change");
    let added = leak["hunks"][0]["lines"][0].as_str().unwrap();
    assert!(
        added.ends_with("secret/shadow"),
        "a link is recorded as its target path, never followed: {added}"
    );
    assert!(text.contains("new file mode 120000"), "{text}");
}

#[tokio::test]
async fn the_pushed_tree_is_the_reviewed_snapshot_not_a_commit_the_builder_made() {
    let targets = Targets::new();
    let remote = Remote::new();
    let base = remote.tip("main").unwrap();
    let server = DockerServer::start(|c| remote.allow_in(c)).await;
    let id = spawn(&server, &targets.task("all"), Some(&remote)).await;
    let (text, snapshot) = review(&server, id).await;
    assert!(!snapshot.is_empty());
    let status = approve(&server, id, &snapshot).await;

    let tip = remote.tip(&format!("icarus/{id}")).unwrap();
    assert_eq!(status["commit"], tip);
    assert_eq!(remote.tree_of(&tip), snapshot, "exactly what was reviewed");
    let paths = remote.paths_at(&tip);
    assert!(paths.contains(&"hello.txt".to_owned()), "{paths:?}");
    assert!(!paths.contains(&"backdoor.sh".to_owned()), "{paths:?}");
    assert!(
        !paths
            .iter()
            .any(|p| p.split('/').any(|c| c.eq_ignore_ascii_case(".git"))),
        "{paths:?}"
    );
    let shown = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(remote.url())
        .args(["log", "-1", "--format=%P%n%B", &tip])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.starts_with(&base),
        "one commit on the recorded base: {shown}"
    );
    assert!(
        shown.contains(&format!("Icarus-Snapshot: {snapshot}")),
        "{shown}"
    );
    assert!(
        text.contains("+hello"),
        "the reviewer saw the change: {text}"
    );
    targets.assert_the_attacker_got_nothing();
}

#[tokio::test]
async fn attributes_the_agent_wrote_do_not_hide_its_change_from_the_reviewer() {
    let targets = Targets::new();
    let server = DockerServer::start(|_| {}).await;
    let id = spawn(&server, &targets.task("all"), None).await;
    let (text, _) = review(&server, id).await;
    assert!(
        text.contains("+++ b/hello.txt\n@@ -0,0 +1 @@\n+hello\n"),
        "{text}"
    );
    assert!(!text.contains("Binary files"), "{text}");
    assert!(
        text.contains("+++ b/.gitattributes"),
        "the attributes file is itself part of the change"
    );
}
