//! The real `icarus` binary: configuration errors stop start-up with a message
//! naming the key, `migrate` creates the database, `config` shows the merge.

use std::process::Command;

fn icarus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_icarus"));
    for variable in ["ORCHESTRATOR_HOST", "ORCHESTRATOR_PORT", "DATABASE_URL"] {
        command.env_remove(variable);
    }
    command
}

fn write_config(dir: &tempfile::TempDir, yaml: &str) -> std::path::PathBuf {
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn an_unknown_key_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "orchestrator:\n  max_concurent_jobs: 3\n");
    let output = icarus()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_concurent_jobs"), "{stderr}");
}

#[test]
fn a_bad_value_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "orchestrator:\n  max_concurrent_jobs: 0\n");
    let output = icarus()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("orchestrator.max_concurrent_jobs must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let output = icarus()
        .args(["serve", "--config", "/nonexistent/icarus.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/icarus.yaml"));
}

#[test]
fn migrate_creates_the_sqlite_database_and_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("nested/icarus.db");
    let output = icarus()
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite://{}", database.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(database.is_file());
}

#[test]
fn the_environment_overrides_the_file_in_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "orchestrator:\n  port: 9000\n  max_concurrent_jobs: 5\n",
    );
    let output = icarus()
        .args(["config", "--config"])
        .arg(&path)
        .env("ORCHESTRATOR_PORT", "9100")
        .output()
        .unwrap();
    assert!(output.status.success());
    let config: serde_json::Value = serde_yaml::from_slice(&output.stdout).unwrap();
    assert_eq!(config["orchestrator"]["port"], 9100);
    assert_eq!(config["orchestrator"]["max_concurrent_jobs"], 5);
    assert_eq!(
        config["agents"]["builder"]["image_name"],
        "icarus-builder:latest"
    );
}

#[test]
fn serving_without_authentication_off_loopback_is_refused_without_insecure() {
    let output = icarus()
        .arg("serve")
        .env("ORCHESTRATOR_HOST", "0.0.0.0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve without authentication"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure"), "{stderr}");
}

#[test]
fn kubernetes_mode_without_a_callback_url_is_a_configuration_error() {
    let output = icarus()
        .args(["config"])
        .env("ICARUS_CONFIG__KUBERNETES__ENABLED", "true")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("agents.callback_base_url"), "{stderr}");
}

#[test]
fn kubernetes_mode_without_a_cluster_stops_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = icarus()
        .arg("serve")
        .env("ICARUS_CONFIG__KUBERNETES__ENABLED", "true")
        .env(
            "ICARUS_CONFIG__AGENTS__CALLBACK_BASE_URL",
            "http://icarus:8000",
        )
        .env("ICARUS_CONFIG__WORKSPACE__BASE_PATH", dir.path().join("ws"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/db", dir.path().display()),
        )
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("config"), "{stderr}");
}
