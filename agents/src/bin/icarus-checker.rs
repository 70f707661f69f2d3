//! The reference checker: audits `/workspace` without changing it — which
//! files exist, their sizes, simple secret patterns, and whether the
//! workspace really is read-only — and posts the seed's audit-report shape.

use std::path::{Path, PathBuf};
use std::time::Duration;

use icarus_agents::{Contract, Mode, exhaust_memory, log, neighbours, probe_sandbox, ram_usage_mb};
use serde_json::{Value, json};

const WORKSPACE: &str = "/workspace";
/// Files larger than this are listed but not scanned.
const SCAN_LIMIT: u64 = 1024 * 1024;

fn main() {
    let contract = Contract::from_env("checker");
    let mode = contract.mode();
    log(&format!(
        "checker for job {} in mode {mode:?}",
        contract.job_id
    ));
    std::process::exit(run(&contract, mode));
}

fn run(contract: &Contract, mode: Mode) -> i32 {
    match mode {
        Mode::Hang => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Mode::Exit(code) => return code,
        Mode::Listen(port) => return neighbours::listen(port),
        Mode::Connect(address) => return neighbours::connect(address),
        Mode::Fetch(target) => return neighbours::fetch(target),
        Mode::Fail => {
            contract.report(&json!({"status": "error", "error": "checker was asked to fail"}));
            return 3;
        }
        Mode::Sleep(seconds) => std::thread::sleep(Duration::from_secs(seconds)),
        Mode::Talk(seconds) => icarus_agents::talk(seconds),
        Mode::Shout(lines) => icarus_agents::shout(lines),
        Mode::Tick(lines) => icarus_agents::tick(lines),
        Mode::Oom => exhaust_memory(),
        Mode::Probe => {
            let findings = probe_sandbox();
            log(&format!("probe: {findings}"));
            let report = json!({"status": "completed", "audit_report": {"summary": "sandbox probe", "probe": findings}});
            return contract.conclude(&report, 0);
        }
        // The hostile modes are the builder's; a checker given one audits as usual.
        Mode::Normal | Mode::Silent | Mode::Flood | Mode::Hostile(_) => {}
    }
    if mode != Mode::Silent {
        contract.report(&json!({"current_tool": "audit(workspace)", "cpu_usage": 0.0, "ram_usage_mb": ram_usage_mb()}));
    }
    let report = audit(Path::new(WORKSPACE));
    println!("{report}");
    if mode == Mode::Silent {
        return 0;
    }
    contract.conclude(&json!({"status": "completed", "audit_report": report}), 0)
}

/// The audit report, in the seed's shape: `logic_verification.file_list`
/// is the paths alone (the original dashboard shows each item as text), and
/// each file's size in bytes is in `static_analysis.file_sizes`.
fn audit(workspace: &Path) -> Value {
    let files = list_files(workspace);
    let mut findings = Vec::new();
    let mut total_bytes = 0;
    let mut file_list = Vec::new();
    let mut file_sizes = serde_json::Map::new();
    for path in &files {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        total_bytes += size;
        let relative = path
            .strip_prefix(workspace)
            .unwrap_or(path)
            .display()
            .to_string();
        if size <= SCAN_LIMIT
            && let Ok(text) = std::fs::read_to_string(path)
        {
            findings.extend(scan_secrets(&relative, &text));
        }
        file_sizes.insert(relative.clone(), json!(size));
        file_list.push(relative);
    }
    let read_only = is_read_only(workspace);
    let summary = match (findings.len(), read_only) {
        (0, true) => format!("✅ {} files checked, no secrets found", files.len()),
        (0, false) => "⚠️ the workspace was writable during the audit".to_owned(),
        (n, _) => format!("⚠️ {n} possible secret(s) found"),
    };
    json!({
        "static_analysis": {"files_scanned": files.len(), "total_bytes": total_bytes, "file_sizes": file_sizes},
        "security_scan": {"possible_secrets": findings, "high_severity": findings.len(), "workspace_read_only": read_only},
        "logic_verification": {"files_created": files.len(), "file_list": file_list},
        "summary": summary,
    })
}

/// Every file under `root` but Git's own metadata (a checked-out workspace
/// has a `.git` directory that is not the job's work).
fn list_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() && entry.file_name() != ".git" => {
                    pending.push(entry.path())
                }
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files.sort();
    files
}

/// Lines that look like credentials: AWS key ids, private keys, inline passwords.
fn scan_secrets(file: &str, text: &str) -> Vec<Value> {
    let mut findings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        let kind = if line.contains("-----BEGIN") && line.contains("PRIVATE KEY") {
            Some("private key")
        } else if has_aws_key_id(line) {
            Some("AWS access key id")
        } else if (lower.contains("password") || lower.contains("secret"))
            && (line.contains("=\"") || line.contains("= \""))
        {
            Some("inline password")
        } else {
            None
        };
        if let Some(kind) = kind {
            findings.push(json!({"file": file, "line": number + 1, "kind": kind}));
        }
    }
    findings
}

fn has_aws_key_id(line: &str) -> bool {
    line.match_indices("AKIA").any(|(start, _)| {
        let candidate = &line[start..];
        candidate.len() >= 20
            && candidate[..20]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    })
}

/// The checker must not be able to change what it audits.
fn is_read_only(workspace: &Path) -> bool {
    let probe = workspace.join(".icarus-checker-write-probe");
    match std::fs::write(&probe, b"probe") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            false
        }
        Err(_) => true,
    }
}
