//! The OpenAPI document against the real `icarus` binary (on the real
//! Docker engine with the reference agents): Schemathesis finds no request
//! the server answers otherwise than the document says, with
//! authentication off and on; and a client generated from the document by
//! openapi-python-client spawns, follows and approves a job.
//!
//! The Python tools come from `scripts/python-tools` (a virtual environment
//! with pinned versions, made once), which `scripts/test` runs first and
//! each test runs again (quick once installed). What they run with lives in
//! `tests/contract/`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::docker::ensure_agent_images;
use crate::process::{Process, containers_labelled, containers_of, remove_containers_labelled};
use crate::support::{APPROVED_JOB_PHASES, eventually};

/// The admin token configured (by its SHA-256) when authentication is on.
const TOKEN: &str = "contract-admin-token-0123456789";

/// The checks run, all of Schemathesis's conformance checks for a server.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,negative_data_rejection,positive_data_acceptance";

/// Test cases per operation and phase, and the seed; `ICARUS_CONTRACT_EXAMPLES`
/// and `ICARUS_CONTRACT_SEED` change them (a longer search, another one).
fn examples_and_seed() -> (String, String) {
    let setting = |name: &str, default: &str| std::env::var(name).unwrap_or(default.to_owned());
    (
        setting("ICARUS_CONTRACT_EXAMPLES", "25"),
        setting("ICARUS_CONTRACT_SEED", "1"),
    )
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The virtual environment with the Python tools, installed if needed.
fn python_tools() -> PathBuf {
    let output = std::process::Command::new(repository().join("scripts/python-tools"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/python-tools: {}",
        text(&output)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `ICARUS_CONFIG__…` settings for authentication on with [`TOKEN`] an admin's.
fn authenticated() -> Vec<(&'static str, String)> {
    let digest: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    vec![
        ("auth.enabled", "true".to_owned()),
        (
            "auth.tokens",
            format!(r#"[{{name = "contract", role = "admin", sha256 = "{digest}"}}]"#),
        ),
    ]
}

/// A real `icarus serve` on its own SQLite file, at most one job building
/// or checking at a time; its client carries [`TOKEN`] when `auth` is on.
async fn serve(auth: bool) -> Process {
    ensure_agent_images().await;
    let mut settings = vec![("orchestrator.max_concurrent_jobs", "1".to_owned())];
    if auth {
        settings.extend(authenticated());
    }
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut process = Process::start_with(&settings).await;
    if auth {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {TOKEN}").parse().unwrap();
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        process.client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
    }
    process
}

/// Stops the server (SIGKILL: its agents stay, as after a crash), removes
/// every container of its own, and checks that none is left behind.
async fn finish(process: Process) {
    let label = format!("icarus.instance={}", process.instance());
    drop(process);
    remove_containers_labelled(&label);
    assert_eq!(
        containers_labelled(&label).await,
        0,
        "containers left behind"
    );
}

/// Runs Schemathesis against `process` and asserts it found nothing.
async fn schemathesis_finds_nothing(auth: bool) {
    let venv = python_tools();
    let process = serve(auth).await;
    // One job with a diff, an audit report and logs, so that their
    // answers are checked too (Schemathesis finds it by the links from
    // `GET /jobs`, and spawns more of its own).
    let seeded = process.spawn("Add a greeting").await;
    process.wait_for(seeded, "awaiting_approval").await;

    let reports = tempfile::tempdir().unwrap();
    let report = reports.path().join("report.json");
    let (examples, seed) = examples_and_seed();
    let contract = repository().join("tests/contract");
    let mut command = tokio::process::Command::new(venv.join("bin/st"));
    command
        .current_dir(reports.path())
        .env("SCHEMATHESIS_HOOKS", contract.join("hooks.py"))
        .arg("--config-file")
        .arg(contract.join("schemathesis.toml"))
        .args(["run", &process.url("/openapi.json")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "1", "--continue-on-failure", "--no-color"])
        .args(["--report", "json", "--report-json-path"])
        .arg(&report);
    if auth {
        command.args(["--header", &format!("Authorization: Bearer {TOKEN}")]);
    }
    let started = Instant::now();
    let output = command.output().await.unwrap();
    let took = started.elapsed();
    let summary: Value = std::fs::read_to_string(&report)
        .ok()
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or(Value::Null);
    println!(
        "schemathesis (auth {}): {} test cases in {took:.1?}",
        if auth { "on" } else { "off" },
        summary["test_cases"]["generated"]
    );
    assert!(
        output.status.success()
            && summary["failures"] == json!([])
            && summary["errors"] == json!([]),
        "Schemathesis found requests the server answers otherwise than its document says:\n{}\n\
         failures: {}\nerrors: {}\nserver log:\n{}",
        text(&output),
        summary["failures"],
        summary["errors"],
        process.log()
    );
    finish(process).await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_undocumented_with_authentication_off() {
    schemathesis_finds_nothing(false).await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_undocumented_with_authentication_on() {
    schemathesis_finds_nothing(true).await;
}

#[tokio::test]
async fn a_generated_python_client_spawns_follows_and_approves_a_job() {
    let venv = python_tools();
    let process = serve(true).await;
    let work = tempfile::tempdir().unwrap();
    let document = process
        .client
        .get(process.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = work.path().join("openapi.json");
    std::fs::write(&spec, document).unwrap();
    // The generator formats its output with ruff, found on PATH.
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let generated = tokio::process::Command::new(venv.join("bin/openapi-python-client"))
        .env("PATH", &path)
        .args(["generate", "--meta", "none", "--path"])
        .arg(&spec)
        .arg("--output-path")
        .arg(work.path().join("icarus_client"))
        .output()
        .await
        .unwrap();
    let said = text(&generated);
    assert!(generated.status.success(), "{said}");
    assert!(
        !said.contains("Warning"),
        "the generator skipped something:\n{said}"
    );

    let flow = tokio::process::Command::new(venv.join("bin/python"))
        .env("PYTHONPATH", work.path())
        .arg(repository().join("tests/contract/client_flow.py"))
        .arg(process.url(""))
        .arg(TOKEN)
        .output();
    let flow = tokio::time::timeout(Duration::from_secs(180), flow)
        .await
        .expect("the client's job finished within 3 minutes")
        .unwrap();
    assert!(
        flow.status.success(),
        "{}\nserver log:\n{}",
        text(&flow),
        process.log()
    );
    let seen: Value = serde_json::from_slice(&flow.stdout).unwrap();
    println!("the generated client saw {seen}");
    assert_eq!(seen["decision"], "approved", "{seen}");
    assert_eq!(seen["approved_by"], "contract", "{seen}");
    assert_eq!(seen["events"], json!(APPROVED_JOB_PHASES), "{seen}");
    assert!(!seen["diff_files"].as_array().unwrap().is_empty(), "{seen}");

    let id = seen["job_id"].as_str().unwrap().parse().unwrap();
    let status = process.status(id).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["approval"]["comment"], "LGTM", "{status}");
    eventually(Duration::from_secs(10), || async {
        (containers_of(id).await == 0).then_some(())
    })
    .await;
    finish(process).await;
}
