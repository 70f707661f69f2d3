//! The reference builder: turns its `TASK` into files in `/workspace`,
//! reporting progress on the way, and writes the job's `TEST_CODE`, if it
//! has some, beside them as `tests/test_<task>.py`. A stand-in for a
//! model-driven agent that follows the same contract, and a test fixture
//! (see `icarus_agents::Mode`;
//! in a `hostile=<attack>` mode it also plants an attack on the host, see
//! `icarus_agents::hostile`).

use std::path::Path;
use std::time::Duration;

use icarus_agents::hostile::{self, Attack, Targets};
use icarus_agents::{Contract, Mode, exhaust_memory, log, neighbours, probe_sandbox, ram_usage_mb};
use serde_json::json;

const WORKSPACE: &str = "/workspace";

fn main() {
    let contract = Contract::from_env("builder");
    let mode = contract.mode();
    log(&format!(
        "builder for job {} in mode {mode:?}",
        contract.job_id
    ));
    let code = run(&contract, mode);
    std::process::exit(code);
}

fn run(contract: &Contract, mode: Mode) -> i32 {
    let talk = mode != Mode::Silent;
    match mode {
        Mode::Hang => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Mode::Exit(code) => return code,
        Mode::Listen(port) => return neighbours::listen(port),
        Mode::Connect(address) => return neighbours::connect(address),
        Mode::Fetch(target) => return neighbours::fetch(target),
        Mode::Fail => {
            contract.report(&json!({"status": "error", "error": "builder was asked to fail"}));
            return 3;
        }
        Mode::Flood => flood(contract),
        Mode::Sleep(seconds) => std::thread::sleep(Duration::from_secs(seconds)),
        Mode::Talk(seconds) => icarus_agents::talk(seconds),
        Mode::Shout(lines) => icarus_agents::shout(lines),
        Mode::Tick(lines) => icarus_agents::tick(lines),
        Mode::Oom => exhaust_memory(),
        Mode::Probe => {
            log(&format!("probe: {}", probe_sandbox()));
            contract.report(&json!({"status": "completed", "message": "probed the sandbox"}));
            return 0;
        }
        Mode::Normal | Mode::Silent | Mode::Hostile(_) => {}
    }
    if talk {
        progress(contract, "plan(task)");
    }
    let workspace = Path::new(WORKSPACE);
    let written = write_files(workspace, contract).and_then(|files| match mode {
        Mode::Hostile(attack) => plant(workspace, contract, attack, files),
        _ => Ok(files),
    });
    match written {
        Ok(files) => {
            if talk {
                progress(contract, "write_files(workspace)");
                let message = format!(
                    "Builder agent finished successfully: wrote {}",
                    files.join(", ")
                );
                contract.report(&json!({"status": "completed", "message": message}));
            }
            0
        }
        Err(error) => {
            if talk {
                contract.report(&json!({"status": "error", "error": format!("cannot write the workspace: {error}")}));
            }
            log(&format!("cannot write the workspace: {error}"));
            4
        }
    }
}

/// The hostile modes' extra: a known legitimate change, then the attack,
/// which the completion report does not mention (only the log does).
fn plant(
    workspace: &Path,
    contract: &Contract,
    attack: Attack,
    mut files: Vec<String>,
) -> std::io::Result<Vec<String>> {
    std::fs::write(workspace.join(hostile::HELLO_PATH), hostile::HELLO_CONTENT)?;
    files.push(hostile::HELLO_PATH.to_owned());
    let targets = Targets::from_task(&contract.task, &contract.job_id);
    log(&format!("planting {attack:?} aimed at {targets:?}"));
    let planted: Vec<String> = hostile::plant(workspace, attack, &targets)?
        .iter()
        .map(|path| {
            path.strip_prefix(workspace)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    log(&format!(
        "planted {} paths: {}",
        planted.len(),
        planted.join(" ")
    ));
    Ok(files)
}

fn progress(contract: &Contract, tool: &str) {
    contract
        .report(&json!({"current_tool": tool, "cpu_usage": 0.0, "ram_usage_mb": ram_usage_mb()}));
}

fn flood(contract: &Contract) {
    for n in 0..500 {
        progress(contract, &format!("flood({n})"));
    }
}

/// Writes the task down, a module named after it and the job's tests.
/// Returns the paths written.
fn write_files(workspace: &Path, contract: &Contract) -> std::io::Result<Vec<String>> {
    let task = &contract.task;
    let slug = slug(task);
    std::fs::create_dir_all(workspace.join("src"))?;
    let notes = format!("# Task\n\n{task}\n\nWritten by the Icarus reference builder.\n");
    std::fs::write(workspace.join("TASK.md"), notes)?;
    let module = format!(
        "\"\"\"{}\"\"\"\n\n\ndef run():\n    \"\"\"Entry point for: {}\"\"\"\n    return {:?}\n",
        task.replace('"', "'"),
        task.replace('"', "'"),
        slug
    );
    let module_path = format!("src/{slug}.py");
    std::fs::write(workspace.join(&module_path), module)?;
    let mut written = vec!["TASK.md".to_owned(), module_path];
    if let Some(code) = &contract.test_code {
        written.push(write_tests(workspace, &slug, code)?);
    }
    Ok(written)
}

/// Writes the job's tests to `tests/test_<slug>.py`, as a new file: one
/// already there (a checkout's, or a link) is an error, never overwritten
/// or followed.
fn write_tests(workspace: &Path, slug: &str, code: &str) -> std::io::Result<String> {
    use std::io::Write;
    std::fs::create_dir_all(workspace.join("tests"))?;
    let path = format!("tests/test_{slug}.py");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(workspace.join(&path))?;
    file.write_all(code.as_bytes())?;
    log(&format!("wrote TEST_CODE ({} bytes) to {path}", code.len()));
    Ok(path)
}

/// A file-name-safe form of the task: lowercase words joined by `_`, at most 40 characters.
fn slug(task: &str) -> String {
    let words: Vec<String> = task
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut slug = words.join("_");
    slug.truncate(40);
    if slug.is_empty() {
        "task".to_owned()
    } else {
        slug
    }
}
