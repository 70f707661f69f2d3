//! The lifecycle on the real Docker engine with the reference agent images
//! (built by `scripts/build-images`). Every test runs on its own database, so
//! its agents carry their own instance label; each test ends by checking that
//! none of them is left behind.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use icarus::config::{Config, EgressMode};
use icarus::job::JobId;
use icarus::runtime::instance_name;
use icarus::serve::Orchestrator;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::OnceCell;

use crate::support::{Api, eventually, init_test_logging, test_config};

/// Builds the agent images once per test run (quick when they are current).
pub async fn ensure_agent_images() {
    static BUILT: OnceCell<()> = OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-images");
            let status = tokio::process::Command::new(script).status().await.unwrap();
            assert!(status.success(), "scripts/build-images failed");
        })
        .await;
}

/// An orchestrator with the Docker runtime, on a fresh SQLite file.
pub struct DockerServer {
    pub api: Api,
    pub config: Config,
    _dir: TempDir,
    orchestrator: Option<Orchestrator>,
}

impl std::ops::Deref for DockerServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl DockerServer {
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> DockerServer {
        ensure_agent_images().await;
        init_test_logging();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&format!("sqlite://{}/icarus.db", dir.path().display()));
        config.workspace.base_path = dir.path().join("workspaces");
        adjust(&mut config);
        let runtime = icarus::serve::local::docker_runtime(&config).await.unwrap();
        let orchestrator = icarus::serve::local::start_on(&config, runtime)
            .await
            .unwrap();
        DockerServer {
            api: Api::new(&orchestrator),
            config,
            _dir: dir,
            orchestrator: Some(orchestrator),
        }
    }

    /// Stops the orchestrator gracefully; its agents keep running.
    pub async fn stop(&mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.stop().await.unwrap();
        }
    }

    /// Starts a new orchestrator on the same database and workspaces.
    pub async fn resume(&mut self) {
        let runtime = icarus::serve::local::docker_runtime(&self.config)
            .await
            .unwrap();
        let orchestrator = icarus::serve::local::start_on(&self.config, runtime)
            .await
            .unwrap();
        self.api = Api::new(&orchestrator);
        self.orchestrator = Some(orchestrator);
    }

    pub fn workspace(&self, id: JobId) -> std::path::PathBuf {
        self.config.workspace.base_path.join(id.to_string())
    }

    /// Containers of this orchestrator still on the engine.
    pub async fn leftovers(&self) -> Vec<String> {
        let docker = Docker::connect_with_defaults().unwrap();
        let label = format!(
            "icarus.instance={}",
            instance_name(&self.config.database.url)
        );
        let filters = HashMap::from([("label".to_owned(), vec![label])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let containers = docker.list_containers(Some(options)).await.unwrap();
        containers
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .collect()
    }

    /// Volumes of this orchestrator still on the engine.
    pub async fn leftover_volumes(&self) -> Vec<String> {
        let docker = Docker::connect_with_defaults().unwrap();
        let label = format!(
            "icarus.instance={}",
            instance_name(&self.config.database.url)
        );
        let filters = HashMap::from([("label".to_owned(), vec![label])]);
        let options = bollard::query_parameters::ListVolumesOptions {
            filters: Some(filters),
        };
        let listing = docker.list_volumes(Some(options)).await.unwrap();
        listing
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    /// Asserts that every container and volume this orchestrator made is gone.
    pub async fn assert_nothing_left(&self) {
        eventually(Duration::from_secs(10), || async {
            let nothing =
                self.leftovers().await.is_empty() && self.leftover_volumes().await.is_empty();
            nothing.then_some(())
        })
        .await;
    }
}

impl Drop for DockerServer {
    fn drop(&mut self) {
        if let Some(orchestrator) = self.orchestrator.take() {
            orchestrator.abort();
        }
        // Whatever a failed test left running goes too.
        let label = format!(
            "label=icarus.instance={}",
            instance_name(&self.config.database.url)
        );
        if let Ok(output) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
        if let Ok(output) = std::process::Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", &label])
            .output()
        {
            for volume in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["volume", "rm", "-f", volume])
                    .output();
            }
        }
    }
}

async fn spawn(server: &DockerServer, task: &str) -> JobId {
    server.spawn(task).await
}

/// Spawns a job and waits (up to 30 s) for it to reach `phase`; returns its status then.
async fn spawn_until(server: &DockerServer, task: &str, phase: &str) -> (JobId, Value) {
    spawn_body_until(server, json!({"task": task}), phase).await
}

/// Spawns a job from `body` and waits (up to 30 s) for it to reach
/// `phase`; returns its status then.
async fn spawn_body_until(server: &DockerServer, body: Value, phase: &str) -> (JobId, Value) {
    let (code, answer) = server.post("/jobs/spawn", body).await;
    assert_eq!(code, 201, "{answer}");
    let id: JobId = answer["job_id"].as_str().unwrap().parse().unwrap();
    let status = server
        .wait_for_within(id, phase, Duration::from_secs(30))
        .await;
    (id, status)
}

/// Cancels the job and checks that nothing of it is left on the engine.
pub async fn cancel_and_wait(server: &DockerServer, id: JobId) {
    let (code, body) = server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(code, 200, "{body}");
    server.wait_for(id, "cancelled").await;
    server.assert_nothing_left().await;
}

async fn audit(server: &DockerServer, id: JobId) -> Value {
    let (code, body) = server.get(&format!("/jobs/{id}/audit")).await;
    assert_eq!(code, 200, "{body}");
    body["audit_report"].clone()
}

#[tokio::test]
async fn a_real_job_runs_builder_and_checker_and_completes_on_approval() {
    let server = DockerServer::start(|_| {}).await;
    let (id, status) = spawn_until(&server, "Add logging to the API", "awaiting_approval").await;
    assert_eq!(status["builder_exit_code"], 0);
    assert_eq!(status["checker_exit_code"], 0);

    let report = audit(&server, id).await;
    assert_eq!(
        report["logic_verification"]["file_list"],
        json!(["TASK.md", "src/add_logging_to_the_api.py"]),
        "the seed's shape: a list of paths"
    );
    let sizes = &report["static_analysis"]["file_sizes"];
    assert!(sizes["TASK.md"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        report["security_scan"]["workspace_read_only"], true,
        "the checker could write the workspace"
    );
    let (_, telemetry) = server.get(&format!("/jobs/{id}/telemetry")).await;
    assert_eq!(telemetry["current_tool"], "audit(workspace)");

    let (code, _) = server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": true, "comment": "LGTM"}),
        )
        .await;
    assert_eq!(code, 200);
    server.wait_for(id, "completed").await;
    assert!(
        server.workspace(id).join("TASK.md").is_file(),
        "completion keeps the workspace"
    );
    server.assert_nothing_left().await;

    let (_, logs) = server.get(&format!("/jobs/{id}/logs")).await;
    let logs = logs.as_array().unwrap();
    assert_eq!(logs.len(), 2, "{logs:?}");
    for log in logs {
        let role = log["role"].as_str().unwrap();
        let text = log["log"].as_str().unwrap();
        assert!(
            text.contains(&format!("{role} for job {id}")),
            "the {role}'s output was kept: {text}"
        );
    }
}

#[tokio::test]
async fn a_jobs_test_code_reaches_the_builder_as_its_test_code_variable() {
    let server = DockerServer::start(|_| {}).await;
    let tests =
        "from src.add_login import run\n\n\ndef test_run():\n    assert run() == \"add_login\"\n";
    let (id, status) = spawn_body_until(
        &server,
        json!({"task": "Add login", "test_code": tests, "project_id": "acme"}),
        "awaiting_approval",
    )
    .await;
    assert_eq!(status["test_code"], tests);
    assert_eq!(status["project_id"], "acme");
    // The reference builder writes what it got as TEST_CODE into the
    // workspace, byte for byte.
    let written = std::fs::read_to_string(server.workspace(id).join("tests/test_add_login.py"));
    assert_eq!(written.unwrap(), tests);
    let files = &audit(&server, id).await["logic_verification"]["file_list"];
    assert!(
        files
            .as_array()
            .unwrap()
            .contains(&json!("tests/test_add_login.py")),
        "{files}"
    );
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn a_flooding_builder_is_throttled_and_its_job_still_reaches_approval() {
    let server = DockerServer::start(|c| c.agents.progress_reports_per_second = 5).await;
    let id = spawn(&server, "Flood the callback [builder:flood]").await;
    let status = server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(60))
        .await;
    assert_eq!(status["builder_exit_code"], 0);
    cancel_and_wait(&server, id).await;

    let (_, logs) = server.get(&format!("/jobs/{id}/logs")).await;
    let builder_log = logs
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == "builder")
        .and_then(|l| l["log"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        builder_log.contains("refused with 429"),
        "the flood was never throttled: {builder_log}"
    );
}

#[tokio::test]
async fn a_job_with_a_git_source_is_built_on_a_checkout_and_published_on_approval() {
    let remote = crate::git::Remote::new();
    let server = DockerServer::start(|c| remote.allow_in(c)).await;
    let (id, _) = spawn_body_until(
        &server,
        json!({"task": "Add logging", "source": {"repository": remote.url()}}),
        "awaiting_approval",
    )
    .await;
    assert_eq!(
        audit(&server, id).await["logic_verification"]["file_list"],
        json!(["README.md", "TASK.md", "src/add_logging.py"]),
        "no .git"
    );
    let (_, diff) = server.get(&format!("/jobs/{id}/diff?format=json")).await;
    let changed: Vec<&str> = diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        ["TASK.md", "src/add_logging.py"],
        "exactly the builder's files"
    );

    server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": true}))
        .await;
    let status = server.wait_for(id, "completed").await;
    let tip = remote.tip(&format!("icarus/{id}")).unwrap();
    assert_eq!(status["commit"], tip);
    assert!(remote.file_at(&tip, "src/add_logging.py").contains("def"));
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn agents_run_unprivileged_on_a_read_only_root_with_only_their_workspace_writable() {
    let server = DockerServer::start(|_| {}).await;
    let (id, _) = spawn_until(
        &server,
        "look around [builder:probe] [checker:probe]",
        "awaiting_approval",
    )
    .await;
    let checker = audit(&server, id).await["probe"].clone();
    assert_eq!(checker["uid"], "65534", "{checker}");
    assert_eq!(checker["gid"], "65534", "{checker}");
    assert_eq!(
        checker["capabilities_effective"], "0000000000000000",
        "{checker}"
    );
    assert_eq!(
        checker["capabilities_bounding"], "0000000000000000",
        "{checker}"
    );
    assert_eq!(checker["no_new_privileges"], "1", "{checker}");
    assert_eq!(checker["docker_socket_visible"], false);
    assert_eq!(checker["pids_max"], "256");
    let writable = &checker["writable"];
    assert_eq!(
        (
            writable["/"].clone(),
            writable["/etc"].clone(),
            writable["/tmp"].clone(),
            writable["/workspace"].clone()
        ),
        (json!(false), json!(false), json!(true), json!(false)),
        "the checker writes only its private /tmp: {writable}"
    );

    cancel_and_wait(&server, id).await;
    let builder = builder_probe(&server, id).await;
    assert_eq!(builder["uid"], "65534");
    assert_eq!(builder["writable"]["/workspace"], true, "{builder}");
    assert_eq!(builder["writable"]["/"], false, "{builder}");
}

#[tokio::test]
async fn a_rejected_job_loses_its_workspace_and_its_containers() {
    let server = DockerServer::start(|_| {}).await;
    let id = spawn(&server, "Reject me").await;
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(30))
        .await;
    server
        .post(
            &format!("/jobs/{id}/approve"),
            json!({"approved": false, "comment": "no"}),
        )
        .await;
    server.wait_for(id, "rejected").await;
    assert!(!server.workspace(id).exists());
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn a_workspace_over_the_snapshot_limits_fails_the_job_and_the_checker_started_beside_it_goes()
{
    let server = DockerServer::start(|c| c.workspace.snapshot_max_files = 0).await;
    let started =
        crate::soak::count_engine_events(Docker::connect_with_defaults().unwrap(), "start");
    let (id, status) = spawn_until(&server, "Add hello", "failed").await;
    assert_eq!(status["reason"], "SnapshotFailed", "{status}");
    let message = status["error_message"].as_str().unwrap();
    assert!(
        message.contains("workspace.snapshot_max_files"),
        "{message}"
    );
    let checker = icarus::names::agent(id, "checker", 1);
    let started = started.lock().unwrap().clone();
    assert_eq!(
        started.get(&checker).copied(),
        Some(1),
        "the checker starts while the snapshot is taken: {started:?}"
    );
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn a_builder_that_exits_non_zero_fails_the_job_with_its_code_and_log() {
    let server = DockerServer::start(|_| {}).await;
    let (_, status) = spawn_until(&server, "break [builder:exit=5]", "failed").await;
    let message = status["error_message"].as_str().unwrap();
    assert!(
        message.starts_with("builder exited with code 5; last log lines:"),
        "{message}"
    );
    assert!(
        message.contains("mode Exit(5)"),
        "the agent's own output is quoted: {message}"
    );
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn a_builder_killed_at_its_memory_limit_fails_the_job_as_oom_killed() {
    let server = DockerServer::start(|c| c.agents.builder.memory_limit = 32 * 1024 * 1024).await;
    let (_, status) = spawn_until(&server, "hoard [builder:oom]", "failed").await;
    assert_eq!(status["reason"], "BuilderOOMKilled", "{status}");
    let message = status["error_message"].as_str().unwrap();
    assert!(
        message.starts_with("builder was killed for running out of memory"),
        "{message}"
    );
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn a_builder_that_never_calls_back_is_judged_by_its_exit_code() {
    let server = DockerServer::start(|_| {}).await;
    let (id, status) = spawn_until(&server, "quiet [builder:silent]", "awaiting_approval").await;
    assert_eq!(status["builder_exit_code"], 0);
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn a_checker_that_never_posts_its_report_fails_the_job() {
    let server = DockerServer::start(|_| {}).await;
    let (_, status) = spawn_until(&server, "quiet [checker:silent]", "failed").await;
    assert_eq!(status["reason"], "CheckerReportMissing");
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn cancelling_a_running_check_removes_both_agents() {
    let server = DockerServer::start(|_| {}).await;
    let id = spawn(&server, "audit forever [checker:hang]").await;
    server
        .wait_for_within(id, "checking", Duration::from_secs(30))
        .await;
    cancel_and_wait(&server, id).await;
    assert!(!server.workspace(id).exists());
}

#[tokio::test]
async fn a_checker_that_reports_an_error_fails_the_job() {
    let server = DockerServer::start(|_| {}).await;
    let (_, status) = spawn_until(&server, "audit fails [checker:fail]", "failed").await;
    assert_eq!(status["reason"], "CheckerReportedError");
    assert_eq!(
        status["error_message"],
        "checker reported an error: checker was asked to fail"
    );
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn a_builder_that_hangs_past_its_deadline_is_stopped_and_fails_the_job() {
    let server = DockerServer::start(|c| c.agents.builder.timeout_seconds = 2).await;
    let (_, status) = spawn_until(&server, "hang [builder:hang]", "failed").await;
    assert_eq!(status["reason"], "BuilderTimedOut");
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn cancelling_a_running_build_removes_its_container() {
    let server = DockerServer::start(|_| {}).await;
    let id = spawn(&server, "forever [builder:hang]").await;
    server
        .wait_for_within(id, "building", Duration::from_secs(30))
        .await;
    eventually(Duration::from_secs(10), || async {
        (!server.leftovers().await.is_empty()).then_some(())
    })
    .await;
    server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    server.wait_for(id, "cancelled").await;
    assert!(!server.workspace(id).exists());
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn a_missing_image_fails_the_job_without_pulling() {
    let server = DockerServer::start(|c| {
        c.agents.allowed_images = vec!["icarus-does-not-exist:*".to_owned()]
    })
    .await;
    let (_, status) = spawn_body_until(
        &server,
        json!({"task": "t", "builder_image": "icarus-does-not-exist:1"}),
        "failed",
    )
    .await;
    assert_eq!(status["reason"], "BuilderStartFailed");
    assert!(
        status["error_message"]
            .as_str()
            .unwrap()
            .contains("icarus-does-not-exist:1")
    );
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn an_agent_can_write_tmp_even_when_its_image_gives_tmp_to_root_only() {
    let server = DockerServer::start(|c| {
        c.agents.allowed_images = vec!["icarus-test-bare:*".to_owned()];
    })
    .await;
    let (id, _) = spawn_body_until(
        &server,
        json!({"task": "[builder:probe]", "builder_image": "icarus-test-bare:latest"}),
        "awaiting_approval",
    )
    .await;
    cancel_and_wait(&server, id).await;
    let probe = builder_probe(&server, id).await;
    assert_eq!(probe["uid"], "65534", "{probe}");
    assert_eq!(probe["writable"]["/tmp"], true, "{probe}");
    // Its private /tmp went with its container.
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn an_image_the_engine_refuses_fails_at_once_in_its_words_and_frees_its_slot() {
    let server = DockerServer::start(|c| {
        c.agents.allowed_images = vec!["icarus-test-nocommand:*".to_owned()];
        c.orchestrator.max_concurrent_jobs = 1;
    })
    .await;
    let (code, body) = server
        .post(
            "/jobs/spawn",
            json!({"task": "No command", "builder_image": "icarus-test-nocommand:latest"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let refused: JobId = body["job_id"].as_str().unwrap().parse().unwrap();
    let (_, body) = server
        .post("/jobs/spawn", json!({"task": "Next in line"}))
        .await;
    let next: JobId = body["job_id"].as_str().unwrap().parse().unwrap();

    let status = server
        .wait_for_within(refused, "failed", Duration::from_secs(30))
        .await;
    assert_eq!(status["reason"], "BuilderStartFailed", "{status}");
    let message = status["error_message"].as_str().unwrap();
    assert!(message.contains("No command specified"), "{message}");
    // The slot it held goes to the job behind it.
    server
        .wait_for_within(next, "awaiting_approval", Duration::from_secs(60))
        .await;
    cancel_and_wait(&server, next).await;
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn an_image_without_a_workspace_directory_can_write_its_volume_workspace() {
    let server = DockerServer::start(|c| {
        c.workspace.mount_type = icarus::config::MountType::Volume;
        c.agents.allowed_images = vec!["icarus-test-bare:*".to_owned()];
    })
    .await;
    let (id, status) = spawn_body_until(
        &server,
        json!({"task": "Bare image", "builder_image": "icarus-test-bare:latest"}),
        "awaiting_approval",
    )
    .await;
    assert_eq!(status["builder_exit_code"], 0, "{status}");
    assert_eq!(
        audit(&server, id).await["logic_verification"]["files_created"],
        2
    );
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn the_runtime_names_the_agent_images_the_engine_lacks() {
    ensure_agent_images().await;
    let config = test_config("sqlite::memory:");
    let runtime = icarus::serve::local::docker_runtime(&config).await.unwrap();
    let images = [
        "icarus-builder:latest".to_owned(),
        "icarus-test-never-built:latest".to_owned(),
    ];
    let missing = runtime.missing_images(&images).await;
    assert_eq!(missing, ["icarus-test-never-built:latest"]);
}

#[tokio::test]
async fn the_checker_mounts_the_workspace_read_only_and_the_builder_read_write() {
    let server = DockerServer::start(|_| {}).await;
    let id = spawn(&server, "mounts").await;
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(30))
        .await;
    let docker = Docker::connect_with_defaults().unwrap();
    let agents = &server.config.agents;
    for (role, read_only, agent) in [
        ("builder", false, &agents.builder),
        ("checker", true, &agents.checker),
    ] {
        let name = format!("icarus-{id}-{role}-1");
        let inspected = docker.inspect_container(&name, None).await.unwrap();
        let mounts = inspected.mounts.unwrap();
        let workspace = mounts
            .iter()
            .find(|m| m.destination.as_deref() == Some("/workspace"))
            .unwrap();
        assert_eq!(workspace.rw, Some(!read_only), "{role}");
        let host = inspected.host_config.unwrap();
        assert_eq!(host.memory, Some(agent.memory_limit as i64), "{role}");
        assert_eq!(
            host.nano_cpus,
            Some((agent.cpu_limit * 1e9) as i64),
            "{role}"
        );
        let labels = inspected.config.unwrap().labels.unwrap();
        assert_eq!(labels["icarus.job"], id.to_string());
        assert_eq!(labels["icarus.role"], role);
        assert_eq!(labels["icarus.attempt"], "1");
    }
    server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    server.wait_for(id, "cancelled").await;
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn containers_whose_job_is_unknown_are_collected() {
    let mut server = DockerServer::start(|_| {}).await;
    server.stop().await;
    let stranger = JobId::new_random();
    let runtime = icarus::serve::local::docker_runtime(&server.config)
        .await
        .unwrap();
    let spec = icarus::runtime::WorkloadSpec {
        key: icarus::job::workload::WorkloadKey {
            job: stranger,
            role: icarus::job::Role::Builder,
            attempt: 1,
        },
        image: "icarus-builder:latest".to_owned(),
        env: vec![("ICARUS_AGENT_MODE".to_owned(), "hang".to_owned())],
        cpu_limit: 0.5,
        memory_limit: 64 * 1024 * 1024,
        network_mode: "bridge".to_owned(),
        workspace_read_only: false,
    };
    runtime.prepare_workspace(stranger).await.unwrap();
    runtime.start(&spec).await.unwrap();
    assert_eq!(server.leftovers().await.len(), 1);
    // On start, the resync finds a container no job owns and removes it.
    server.resume().await;
    server.assert_nothing_left().await;
}

#[tokio::test]
async fn the_volume_workspace_mode_runs_a_job_and_removes_the_volume_on_rejection() {
    let server =
        DockerServer::start(|c| c.workspace.mount_type = icarus::config::MountType::Volume).await;
    let id = spawn(&server, "in a volume").await;
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(30))
        .await;
    let report = audit(&server, id).await;
    assert_eq!(report["logic_verification"]["files_created"], 2);
    assert_eq!(report["security_scan"]["workspace_read_only"], true);
    let (code, diff) = server.get(&format!("/jobs/{id}/diff")).await;
    assert_eq!(code, 200);
    assert!(
        diff.as_str()
            .unwrap()
            .contains("workspace.mount_type: bind"),
        "the diff says why there is none: {diff}"
    );
    let docker = Docker::connect_with_defaults().unwrap();
    let volume = format!("icarus-{id}-workspace");
    assert!(docker.inspect_volume(&volume).await.is_ok());
    server
        .post(&format!("/jobs/{id}/approve"), json!({"approved": false}))
        .await;
    server.wait_for(id, "rejected").await;
    server.assert_nothing_left().await;
    eventually(Duration::from_secs(10), || async {
        docker.inspect_volume(&volume).await.is_err().then_some(())
    })
    .await;
}

/// What a `[builder:probe]` builder saw of its sandbox, from its saved log.
async fn builder_probe(server: &DockerServer, id: JobId) -> Value {
    let (_, logs) = server.get(&format!("/jobs/{id}/logs")).await;
    let builder_log = logs
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == "builder")
        .and_then(|l| l["log"].as_str())
        .unwrap()
        .to_owned();
    builder_log
        .lines()
        .find_map(|l| l.split_once("probe: ").map(|(_, json)| json.to_owned()))
        .map(|json| serde_json::from_str(&json).unwrap())
        .expect("the builder printed its probe")
}

/// The bridge option that, off, keeps a network's containers from reaching
/// each other.
fn isolates(network: &bollard::models::NetworkInspect) -> bool {
    network
        .options
        .as_ref()
        .and_then(|o| o.get(icarus::runtime::docker::ISOLATING_OPTION))
        .is_some_and(|value| value == "false")
}

/// Makes a bridge network called `name` (with `labels`), starts a runtime
/// whose agents use it, and returns the network's id before, and the network
/// as the engine holds it after; the network is removed again.
async fn network_after_start(
    name: &str,
    labels: HashMap<String, String>,
) -> (String, bollard::models::NetworkInspect) {
    ensure_agent_images().await;
    let docker = Docker::connect_with_defaults().unwrap();
    let created = docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut config = test_config("sqlite::memory:");
    config.agents.builder.network_mode = name.to_owned();
    config.agents.checker.network_mode = name.to_owned();
    // These networks have a route out, which only the open egress mode
    // accepts (egress_agents tests the others).
    config.agents.egress.mode = EgressMode::Open;
    let runtime = icarus::serve::local::docker_runtime(&config).await.unwrap();
    let network = docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    let removed = docker.remove_network(name).await;
    drop(runtime);
    removed.unwrap();
    (created.id, network)
}

#[tokio::test]
async fn agents_of_different_jobs_share_a_network_that_keeps_them_apart() {
    let name = format!("icarus-test-isolation-{}", JobId::new_random());
    // A network as an older version of Icarus made it: containers on it may talk.
    let ours = HashMap::from([("icarus.managed".to_owned(), "true".to_owned())]);
    let (_, network) = network_after_start(&name, ours).await;
    assert!(
        isolates(&network),
        "made again, isolating: {:?}",
        network.options
    );
}

#[tokio::test]
async fn a_network_icarus_did_not_make_is_never_removed_or_changed() {
    let name = format!("icarus-test-operators-{}", JobId::new_random());
    let (created, network) = network_after_start(&name, HashMap::new()).await;
    assert_eq!(
        network.id,
        Some(created),
        "the operator's network is the same one"
    );
    assert!(!isolates(&network), "and unchanged: {:?}", network.options);
}

/// Spawns a job whose builder serves a line on port 7070 and never ends;
/// returns it and its builder's address on the agents' network.
async fn listening_neighbour(server: &DockerServer) -> (JobId, String) {
    let id = server.spawn("neighbour [builder:listen=7070]").await;
    let name = format!("icarus-{id}-builder-1");
    let docker = Docker::connect_with_defaults().unwrap();
    let ip = eventually(Duration::from_secs(20), || async {
        let networks = networks_of(&docker, &name).await?;
        let ip = networks.into_values().find_map(|n| n.ip_address)?;
        (!ip.is_empty()).then_some(ip)
    })
    .await;
    (id, format!("{ip}:7070"))
}

/// The networks container `name` is on: those of the container whose
/// namespace it joined (its job's network holder), if it joined one.
async fn networks_of(
    docker: &Docker,
    name: &str,
) -> Option<HashMap<String, bollard::models::EndpointSettings>> {
    let inspected = docker.inspect_container(name, None).await.ok()?;
    let mode = inspected.host_config.as_ref()?.network_mode.clone()?;
    let inspected = match mode.strip_prefix("container:") {
        Some(holder) => docker.inspect_container(holder, None).await.ok()?,
        None => inspected,
    };
    inspected.network_settings?.networks
}

/// A job whose builder tries to read from `address`: it exits 0 if it
/// could and 7 if it could not.
async fn neighbour_reached(server: &DockerServer, address: &str) -> bool {
    let prober = server
        .spawn(&format!("probe [builder:connect={address}]"))
        .await;
    let status = eventually(Duration::from_secs(60), || async {
        let (_, status) = server.get(&format!("/jobs/{prober}/status")).await;
        matches!(
            status["status"].as_str(),
            Some("awaiting_approval" | "failed")
        )
        .then_some(status)
    })
    .await;
    if status["status"] == "failed" {
        assert!(
            status["error_message"]
                .as_str()
                .is_some_and(|m| m.contains("exited with code 7")),
            "{status}"
        );
    }
    server
        .post(&format!("/jobs/{prober}/cancel"), json!({}))
        .await;
    status["status"] == "awaiting_approval"
}

#[tokio::test]
async fn an_agent_cannot_reach_another_jobs_agent_on_the_agents_network() {
    let server = DockerServer::start(|_| {}).await;
    let (listener, address) = listening_neighbour(&server).await;
    assert!(
        !neighbour_reached(&server, &address).await,
        "an agent read what another job's agent served at {address}"
    );
    server
        .post(&format!("/jobs/{listener}/cancel"), json!({}))
        .await;
    server.assert_nothing_left().await;
}

/// On a network of their own, a job's builder and checker join the
/// namespace of one network holder of that job, on that network (the
/// engine then sets up its DNS once per job, not per agent); agents of
/// another job are in another's, and every holder goes with its job.
#[tokio::test]
async fn a_jobs_agents_share_its_network_holder_which_goes_with_the_job() {
    let server = DockerServer::start(|_| {}).await;
    let docker = Docker::connect_with_defaults().unwrap();
    let first = spawn(&server, "held").await;
    let second = spawn(&server, "held too").await;
    for id in [first, second] {
        server
            .wait_for_within(id, "awaiting_approval", Duration::from_secs(60))
            .await;
    }
    // The container whose namespace an agent joined (the engine may name
    // it by name or by id).
    let joined = |name: String| {
        let docker = docker.clone();
        async move {
            let inspected = docker.inspect_container(&name, None).await.unwrap();
            let mode = inspected.host_config.unwrap().network_mode.unwrap();
            let holder = mode.strip_prefix("container:").unwrap().to_owned();
            docker.inspect_container(&holder, None).await.unwrap()
        }
    };
    let mut holders = Vec::new();
    for id in [first, second] {
        let inspected = joined(format!("icarus-{id}-builder-1")).await;
        let checker = joined(format!("icarus-{id}-checker-1")).await;
        assert_eq!(inspected.id, checker.id, "one namespace per job");
        let holder = inspected.name.clone().unwrap();
        assert!(
            holder.starts_with(&format!("/icarus-{id}-net-")),
            "{holder}"
        );
        let networks = inspected.network_settings.unwrap().networks.unwrap();
        assert_eq!(
            networks.into_keys().collect::<Vec<_>>(),
            [crate::support::TEST_AGENTS_NETWORK]
        );
        let host = inspected.host_config.unwrap();
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert!(
            host.extra_hosts
                .unwrap()
                .iter()
                .any(|h| h.starts_with("host.docker.internal:")),
            "agents reach the orchestrator through the holder's hosts file"
        );
        holders.push(holder);
    }
    assert_ne!(holders[0], holders[1], "two jobs, two namespaces");
    for id in [first, second] {
        server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
        server.wait_for(id, "cancelled").await;
    }
    server.assert_nothing_left().await;
}

/// A holder left behind (its job's agents removed while the orchestrator
/// was down) is swept by the next resync.
#[tokio::test]
async fn a_network_holder_whose_agents_are_gone_is_swept() {
    let mut server = DockerServer::start(|_| {}).await;
    let id = spawn(&server, "held").await;
    server
        .wait_for_within(id, "awaiting_approval", Duration::from_secs(60))
        .await;
    server.stop().await;
    let docker = Docker::connect_with_defaults().unwrap();
    for role in ["builder", "checker"] {
        let options = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        docker
            .remove_container(&format!("icarus-{id}-{role}-1"), Some(options))
            .await
            .unwrap();
    }
    let left = server.leftovers().await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with(&format!("/icarus-{id}-net-")),
        "{left:?}"
    );
    server.resume().await;
    server.assert_nothing_left().await;
}

/// The control for the test above: the same two agents on a network that
/// lets containers talk (an operator's, as Docker makes it by default) do
/// reach each other, so "not reached" there means isolation, not a probe
/// that cannot succeed.
#[tokio::test]
async fn on_a_network_that_lets_containers_talk_the_same_probe_reaches_its_neighbour() {
    let name = format!("icarus-test-talkative-{}", JobId::new_random());
    let docker = Docker::connect_with_defaults().unwrap();
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    let server = DockerServer::start(|c| {
        c.agents.builder.network_mode = name.clone();
        c.agents.checker.network_mode = name.clone();
        c.agents.egress.mode = EgressMode::Open;
    })
    .await;
    let (listener, address) = listening_neighbour(&server).await;
    let reached = neighbour_reached(&server, &address).await;
    server
        .post(&format!("/jobs/{listener}/cancel"), json!({}))
        .await;
    server.assert_nothing_left().await;
    let _ = docker.remove_network(&name).await;
    assert!(reached, "the probe did not reach {address} on {name}");
}

#[tokio::test]
async fn a_real_jobs_metrics_show_its_hand_over_from_the_engines_exit_time_and_its_agents() {
    let server = DockerServer::start(|_| {}).await;
    let (id, _) = spawn_until(&server, "Add metrics", "awaiting_approval").await;
    let scraped = server.metrics().await;
    assert_eq!(
        scraped.value("icarus_jobs{phase=\"awaiting_approval\"}"),
        1.0
    );
    assert_eq!(scraped.value("icarus_job_handover_seconds_count"), 1.0);
    let handover = scraped.value("icarus_job_handover_seconds_sum");
    assert!(
        handover > 0.0 && handover < 5.0,
        "builder exit (the engine's die event) to checker start: {handover} s"
    );
    for role in ["builder", "checker"] {
        let runs = format!("icarus_agent_run_duration_seconds_count{{role=\"{role}\"}}");
        assert_eq!(scraped.value(&runs), 1.0, "{role}");
        let starts = format!("icarus_agent_start_duration_seconds_count{{role=\"{role}\"}}");
        assert_eq!(scraped.value(&starts), 1.0, "{role}");
    }
    let accepted = |kind: &str| {
        scraped.value(&format!(
            "icarus_callback_reports_total{{kind=\"{kind}\",outcome=\"accepted\"}}"
        ))
    };
    assert_eq!(accepted("audit"), 1.0);
    assert!(accepted("progress") >= 1.0);
    assert_eq!(
        scraped.value(
            "icarus_job_transitions_total{from=\"checking\",to=\"awaiting_approval\",reason=\"CheckerSucceeded\"}"
        ),
        1.0
    );
    cancel_and_wait(&server, id).await;
}

#[tokio::test]
async fn a_running_agent_s_usage_is_read_from_its_cgroup_files_and_kept_after_it_is_gone() {
    let server = DockerServer::start(|c| c.agents.usage_interval_seconds = 1).await;
    measures_a_running_agent(&server, |id| {
        let root = std::path::Path::new("/sys/fs/cgroup");
        let found = [
            format!("docker/{id}"),
            format!("system.slice/docker-{id}.scope"),
            format!("memory/docker/{id}"),
            format!("memory/system.slice/docker-{id}.scope"),
        ]
        .iter()
        .any(|group| root.join(group).is_dir());
        assert!(found, "this host shows no cgroup of container {id}");
    })
    .await;
}

#[tokio::test]
async fn a_running_agent_s_usage_is_read_from_the_engine_s_stats_and_kept_after_it_is_gone() {
    let server = DockerServer::start(|c| {
        c.agents.usage_interval_seconds = 1;
        c.agents.usage_cgroup_root = Default::default();
    })
    .await;
    measures_a_running_agent(&server, |_| {}).await;
}

/// Runs a job whose builder idles, checks what was measured of it, cancels
/// the job and checks the measure outlives the agent. `check_container` is
/// given the builder's container id while it runs.
async fn measures_a_running_agent(server: &DockerServer, check_container: impl Fn(&str)) {
    let id = spawn(server, "forever [builder:hang]").await;
    server
        .wait_for_within(id, "building", Duration::from_secs(30))
        .await;
    let measured = eventually(Duration::from_secs(15), || async {
        let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
        let usage = status["builder_usage"].clone();
        usage.is_object().then_some((usage, status))
    })
    .await;
    let (measured, status) = measured;
    check_container(status["builder_container_id"].as_str().unwrap());
    let peak = measured["memory_peak_bytes"].as_u64().unwrap();
    assert!(peak > 0, "no memory measured: {measured}");
    assert!(peak >= measured["memory_bytes"].as_u64().unwrap());
    assert!(
        measured["cpu_seconds"].as_f64().unwrap() > 0.0,
        "starting the agent took CPU: {measured}"
    );
    let (_, telemetry) = server.get(&format!("/jobs/{id}/telemetry")).await;
    assert_eq!(telemetry["measured"]["source"], "icarus", "{telemetry}");
    assert_eq!(telemetry["measured"]["role"], "builder");
    assert!(telemetry["measured"]["ram_usage_mb"].as_f64().unwrap() > 0.0);

    cancel_and_wait(server, id).await;
    let (_, status) = server.get(&format!("/jobs/{id}/status")).await;
    let kept = status["builder_usage"]["memory_peak_bytes"].as_u64();
    assert!(
        kept.is_some_and(|kept| kept >= peak),
        "the peak outlives the agent: {status}"
    );
    // A container that is gone has no usage, and asking is no error.
    let runtime = icarus::serve::local::docker_runtime(&server.config)
        .await
        .unwrap();
    assert_eq!(
        runtime.usage("icarus-no-such-container").await.unwrap(),
        None
    );
}

/// The embedded default names the agents' network after the orchestrator's
/// instance (its database), so two orchestrators on one engine keep their
/// agents on networks of their own. (The other tests share one network,
/// named in `test_config`, so that none is left behind per test.)
#[tokio::test]
async fn by_default_each_orchestrator_puts_its_agents_on_a_network_of_its_own() {
    let default = Config::embedded_default()
        .unwrap()
        .agents
        .builder
        .network_mode;
    assert_eq!(default, "icarus-agents-{instance}");
    let own_network = |c: &mut Config| {
        c.agents.builder.network_mode = default.clone();
        c.agents.checker.network_mode = default.clone();
    };
    let first = DockerServer::start(own_network).await;
    let second = DockerServer::start(own_network).await;
    let docker = Docker::connect_with_defaults().unwrap();
    let network_of = |server: &DockerServer| {
        format!(
            "icarus-agents-{}",
            instance_name(&server.config.database.url)
        )
    };
    let (listener, _) = listening_neighbour(&first).await;
    let joined: Vec<String> = networks_of(&docker, &format!("icarus-{listener}-builder-1"))
        .await
        .unwrap_or_default()
        .into_keys()
        .collect();
    assert_eq!(joined, vec![network_of(&first)]);
    let inspect = |name: String| {
        let docker = docker.clone();
        async move {
            let options = None::<bollard::query_parameters::InspectNetworkOptions>;
            docker.inspect_network(&name, options).await.unwrap().id
        }
    };
    assert_ne!(
        inspect(network_of(&first)).await,
        inspect(network_of(&second)).await,
        "two orchestrators, two networks"
    );
    first
        .post(&format!("/jobs/{listener}/cancel"), json!({}))
        .await;
    first.assert_nothing_left().await;
    for server in [&first, &second] {
        docker.remove_network(&network_of(server)).await.unwrap();
    }
}
