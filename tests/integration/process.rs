//! The real `icarus` binary on the real Docker engine: killed with SIGKILL in
//! the middle of a build and of a check, or stopped with SIGTERM, then started
//! again. Every job continues; no agent is started twice or left behind.
//! Several of them on one database: [`replicas`]. One drained: [`drain`].

mod drain;
mod replicas;
mod traces;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use icarus::job::JobId;
use serde_json::{Value, json};

use crate::support::eventually;

/// A port free now, for a configuration to name.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One orchestrator process and everything it keeps on disk (a directory
/// replicas share; each has its own configuration and log in it).
pub struct Process {
    dir: Arc<tempfile::TempDir>,
    /// Names its configuration and log files in `dir`.
    name: String,
    /// Where its API listens.
    address: String,
    child: Option<Child>,
    /// Settings over the test configuration, as `ICARUS_CONFIG__…` variables.
    settings: Vec<(String, String)>,
    pub client: reqwest::Client,
}

impl Process {
    /// One orchestrator on a SQLite file of its own.
    async fn start() -> Process {
        Process::start_with(&[]).await
    }

    /// Starts one with `settings` (`("agents.max_attempts", "2")`) laid
    /// over the test configuration.
    pub async fn start_with(settings: &[(&str, &str)]) -> Process {
        let mut process = Process::configured(settings);
        process.launch().await;
        process
    }

    /// As [`Process::start_with`], not started yet.
    fn configured(settings: &[(&str, &str)]) -> Process {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let port = free_port();
        let config = format!(
            "orchestrator:\n  port: {port}\n  resync_interval_seconds: 1\nsentinel:\n  enabled: false\n\
             workspace:\n  base_path: {workspaces}\ndatabase:\n  url: sqlite://{db}\n\
             agents:\n  builder:\n    network_mode: {network}\n  checker:\n    network_mode: {network}\n",
            workspaces = dir.path().join("workspaces").display(),
            db = dir.path().join("icarus.db").display(),
            network = crate::support::TEST_AGENTS_NETWORK,
        );
        let mut process = Process::prepare(dir, "icarus", &format!("127.0.0.1:{port}"), &config);
        process.settings = settings
            .iter()
            .map(|(key, value)| {
                let key = key.replace('.', "__").to_uppercase();
                (format!("ICARUS_CONFIG__{key}"), (*value).to_owned())
            })
            .collect();
        process
    }

    /// The orchestrator `name` in `dir`, run with `config`, whose API is at `address`.
    async fn start_in(
        dir: Arc<tempfile::TempDir>,
        name: &str,
        address: &str,
        config: &str,
    ) -> Process {
        let mut process = Process::prepare(dir, name, address, config);
        process.launch().await;
        process
    }

    /// As [`Process::start_in`], not started yet.
    fn prepare(dir: Arc<tempfile::TempDir>, name: &str, address: &str, config: &str) -> Process {
        std::fs::write(dir.path().join(format!("{name}.yaml")), config).unwrap();
        Process {
            dir,
            name: name.to_owned(),
            address: address.to_owned(),
            child: None,
            settings: Vec::new(),
            client: reqwest::Client::new(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.yaml", self.name))
    }

    fn command(&self) -> Command {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_icarus"));
        command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .envs(self.settings.iter().map(|(k, v)| (k, v)))
            .env_remove("DATABASE_URL")
            .env_remove("ORCHESTRATOR_PORT")
            .env_remove("ORCHESTRATOR_HOST")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    /// Starts the binary and waits until it answers.
    pub async fn launch(&mut self) {
        self.child = Some(self.command().spawn().unwrap());
        eventually(Duration::from_secs(20), || async {
            let answered = self.client.get(self.url("/readyz")).send().await;
            answered.is_ok_and(|r| r.status() == 200).then_some(())
        })
        .await;
    }

    /// Starts the binary expecting it to refuse to run: its exit status
    /// once it has (within 20 s).
    async fn launch_refused(&self) -> ExitStatus {
        let mut child = self.command().spawn().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("it did not exit within 20 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to clean anything up.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and the exit status it ends with.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.take().unwrap().wait().unwrap()
    }

    pub async fn spawn(&self, task: &str) -> JobId {
        let response = self
            .client
            .post(self.url("/jobs/spawn"))
            .json(&json!({"task": task}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["job_id"].as_str().unwrap().parse().unwrap()
    }

    /// `POST /jobs/{id}/cancel`, which must be accepted.
    pub async fn cancel(&self, id: JobId) {
        let url = self.url(&format!("/jobs/{id}/cancel"));
        let answer = self.client.post(url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }

    pub async fn status(&self, id: JobId) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/jobs/{id}/status")))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    pub async fn wait_until(&self, id: JobId, done: impl Fn(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(30), || async {
            let status = self.status(id).await;
            done(&status).then_some(status)
        })
        .await
    }

    pub async fn wait_for(&self, id: JobId, phase: &str) -> Value {
        self.wait_until(id, |s| s["status"] == phase).await
    }

    /// The `icarus.instance` label of its agents, for one started with
    /// [`Process::start_with`] (on its own SQLite file).
    pub fn instance(&self) -> String {
        let database = self.dir.path().join("icarus.db");
        icarus::runtime::instance_name(&format!("sqlite://{}", database.display()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_containers_under(self.dir.path());
    }
}

/// Removes any container of a job whose workspace lives under `dir`: its
/// agents, and the network holder they shared (labelled apart).
fn remove_containers_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("workspaces")) else {
        return;
    };
    for entry in entries.flatten() {
        let job = entry.file_name().to_string_lossy().into_owned();
        remove_containers_labelled(&format!("icarus.job={job}"));
        remove_containers_labelled(&format!("icarus.network-holder-of={job}"));
    }
}

/// Removes every container carrying `label` (`name=value`), volumes too.
pub fn remove_containers_labelled(label: &str) {
    let filter = format!("label={label}");
    if let Ok(output) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    {
        for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
        }
    }
}

/// When the engine says the container last started.
async fn started_at(name: &str) -> String {
    let docker = Docker::connect_with_defaults().unwrap();
    let inspected = docker.inspect_container(name, None).await.unwrap();
    inspected.state.unwrap().started_at.unwrap()
}

pub async fn containers_of(id: JobId) -> usize {
    containers_labelled(&format!("icarus.job={id}")).await
}

/// Containers on the engine carrying `label` (`name=value`).
pub async fn containers_labelled(label: &str) -> usize {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output();
    String::from_utf8_lossy(&output.unwrap().stdout)
        .split_whitespace()
        .count()
}

#[tokio::test]
async fn a_job_survives_sigkill_mid_build_and_mid_check_without_running_an_agent_twice() {
    super::docker::ensure_agent_images().await;
    let mut process = Process::start().await;
    let id = process
        .spawn("survive [builder:sleep=3] [checker:sleep=3]")
        .await;

    let building = process
        .wait_until(id, |s| {
            s["status"] == "building" && s["builder_container_id"].is_string()
        })
        .await;
    let builder = format!("icarus-{id}-builder-1");
    let builder_started = started_at(&builder).await;
    process.kill();
    process.launch().await;

    let checking = process
        .wait_until(id, |s| {
            s["status"] == "checking" && s["checker_container_id"].is_string()
        })
        .await;
    assert_eq!(
        checking["builder_container_id"], building["builder_container_id"],
        "the builder was adopted"
    );
    let checker = format!("icarus-{id}-checker-1");
    let checker_started = started_at(&checker).await;
    process.kill();
    process.launch().await;

    let awaiting = process.wait_for(id, "awaiting_approval").await;
    assert_eq!(
        awaiting["checker_container_id"], checking["checker_container_id"],
        "the checker was adopted"
    );
    assert_eq!(
        started_at(&builder).await,
        builder_started,
        "the builder was never started again"
    );
    assert_eq!(
        started_at(&checker).await,
        checker_started,
        "the checker was never started again"
    );
    assert_eq!(containers_of(id).await, 2);

    let approve = process
        .client
        .post(process.url(&format!("/jobs/{id}/approve")))
        .json(&json!({"approved": true}));
    assert_eq!(approve.send().await.unwrap().status(), 200);
    process.wait_for(id, "completed").await;
    eventually(Duration::from_secs(10), || async {
        (containers_of(id).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_leaves_the_agent_for_the_next_start() {
    super::docker::ensure_agent_images().await;
    let mut process = Process::start().await;
    let id = process.spawn("graceful [builder:sleep=3]").await;
    process
        .wait_until(id, |s| {
            s["status"] == "building" && s["builder_container_id"].is_string()
        })
        .await;

    let status = process.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        process.log()
    );
    assert!(process.log().contains("shutting down"), "{}", process.log());
    assert_eq!(
        containers_of(id).await,
        2,
        "the builder keeps running while the orchestrator is away, and the checker created ahead of it waits"
    );

    process.launch().await;
    process.wait_for(id, "awaiting_approval").await;
    process.cancel(id).await;
    process.wait_for(id, "cancelled").await;
    eventually(Duration::from_secs(10), || async {
        (containers_of(id).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn jobs_and_their_history_survive_a_restart_of_the_binary() {
    super::docker::ensure_agent_images().await;
    let mut process = Process::start().await;
    let done = process.spawn("finish before the restart").await;
    process.wait_for(done, "awaiting_approval").await;
    let before = process.status(done).await;
    process.kill();
    process.launch().await;
    let after = process.status(done).await;
    assert_eq!(after, before);
    let events: Value = process
        .client
        .get(process.url(&format!("/jobs/{done}/events")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events.as_array().unwrap().len(), 4);
    process
        .client
        .post(process.url(&format!("/jobs/{done}/cancel")))
        .send()
        .await
        .unwrap();
    process.wait_for(done, "cancelled").await;
}

/// The first JSON log event with this message, once the process logged it.
async fn logged_event(process: &Process, message: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        process
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|event| event["fields"]["message"] == message)
    })
    .await
}

#[tokio::test]
async fn json_logs_carry_the_request_id_the_response_names_and_the_job() {
    super::docker::ensure_agent_images().await;
    let process = Process::start_with(&[("logging.format", "json")]).await;
    let response = process
        .client
        .post(process.url("/jobs/spawn"))
        .header("x-request-id", "spawn-under-test.1")
        .json(&json!({"task": "logged [builder:hang]"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "spawn-under-test.1");
    let body: Value = response.json().await.unwrap();
    let id: JobId = body["job_id"].as_str().unwrap().parse().unwrap();
    let created = logged_event(&process, "job created").await;
    let request = &created["span"];
    assert_eq!(request["name"], "request", "{created}");
    assert_eq!(request["request_id"], "spawn-under-test.1", "{created}");
    assert_eq!(request["job"], "", "the spawn's path names no job yet");
    // The controller's lines name the job in their reconcile span.
    let started = logged_event(&process, "started agent").await;
    let spans = started["spans"].as_array().unwrap();
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "reconcile" && s["job"] == id.to_string().as_str()),
        "{started}"
    );
    assert!(
        process
            .log()
            .lines()
            .all(|line| serde_json::from_str::<Value>(line).is_ok()),
        "every line is a JSON object:\n{}",
        process.log()
    );
    process.cancel(id).await;
}

#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_codes_and_a_forged_request_id_is_replaced() {
    super::docker::ensure_agent_images().await;
    let process = Process::start().await;
    let response = process
        .client
        .get(process.url("/jobs"))
        .header("x-request-id", "forged\" level=error msg=owned")
        .send()
        .await
        .unwrap();
    let given = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        given.parse::<uuid::Uuid>().is_ok(),
        "replaced by a new id: {given}"
    );
    let log = eventually(Duration::from_secs(10), || async {
        let log = process.log();
        log.contains("INFO").then_some(log)
    })
    .await;
    assert!(!log.contains('\u{1b}'), "no escape codes in a file:\n{log}");
}
