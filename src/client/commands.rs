//! The commands that submit and read jobs: `submit`, `list`, `get`, `watch`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::args::{Connection, Format, JobArgs, ListArgs, OutputArgs, SubmitArgs};
use super::error::{Error, Result};
use super::http::Client;
use super::output::{Colour, Table, Terminal, age, document, emit, one_line, streamed, timestamp};
use super::watch::watch as watch_job;
use crate::api::models::{EventView, JobStatusResponse, JobSummary, SpawnResponse};
use crate::job::JobId;

/// How often `list --watch` reads the list.
const LIST_INTERVAL: Duration = Duration::from_secs(2);

/// What every command needs: the server, how to print, and where to.
pub(super) struct Session {
    pub client: Client,
    pub format: Format,
    pub terminal: Terminal,
}

impl Session {
    pub fn new(connection: &Connection, output: &OutputArgs) -> Result<Session> {
        Ok(Session {
            client: connection.client()?,
            format: output.output,
            terminal: Terminal::detect(),
        })
    }

    /// Prints `value` as the document asked for, or `table(value)` for people.
    pub fn show(&self, value: &Value, table: impl FnOnce(&Value) -> Result<String>) -> Result<()> {
        match self.format {
            Format::Table => emit(&table(value)?),
            format => emit(&document(value, format)),
        }
    }
}

pub async fn submit(args: SubmitArgs) -> Result<()> {
    let session = Session::new(&args.connection, &args.output)?;
    let mut body = json!({ "task": args.task });
    for (field, value) in [
        ("project_path", &args.project_path),
        ("builder_image", &args.builder_image),
        ("checker_image", &args.checker_image),
    ] {
        if let Some(value) = value {
            body[field] = json!(value);
        }
    }
    if let Some(priority) = args.priority {
        body["priority"] = json!(priority);
    }
    if let Some(repository) = &args.repo {
        body["source"] = json!({ "repository": repository });
        if let Some(reference) = &args.reference {
            body["source"]["ref"] = json!(reference);
        }
    }
    let answer = session.client.post("/jobs/spawn", &body).await?;
    let spawned: SpawnResponse = session.client.decode("POST /jobs/spawn", answer.clone())?;
    let id: JobId = spawned.job_id.parse().map_err(|error| Error::Unexpected {
        server: session.client.server().to_owned(),
        request: "POST /jobs/spawn".to_owned(),
        cause: format!("{error}"),
    })?;
    if !args.wait {
        return session.show(&answer, |_| {
            Ok(format!("job {id} submitted: {}\n", spawned.status))
        });
    }
    if session.format == Format::Table {
        emit(&format!("job {id} submitted\n"))?;
    }
    watch_job(&session.client, id, session.format, session.terminal).await
}

pub async fn watch(args: JobArgs) -> Result<()> {
    let session = Session::new(&args.connection, &args.output)?;
    watch_job(&session.client, args.job, session.format, session.terminal).await
}

pub async fn list(args: ListArgs) -> Result<()> {
    let session = Session::new(&args.connection, &args.output)?;
    let mut path = format!("/jobs?limit={}", args.limit);
    if let Some(phase) = args.status {
        path.push_str(&format!("&status={phase}"));
    }
    if let Some(project) = &args.project {
        path.push_str(&format!("&project_id={project}"));
    }
    let value = session.client.get(&path).await?;
    let jobs: Vec<JobSummary> = session
        .client
        .decode(&format!("GET {path}"), value.clone())?;
    if !args.watch {
        return session.show(&value, |_| Ok(jobs_table(&jobs).render(&session.terminal)));
    }
    // Watching: the list, then each job again whenever it appears or
    // changes phase (oldest change first), until interrupted.
    let table = jobs_table(&jobs);
    let mut widths = table.widths();
    // Room for any phase and a few digits of age, as rows come and go.
    widths[1] = widths[1].max("awaiting_approval".len());
    widths[3] = widths[3].max(4);
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut first = true;
    loop {
        let value = session.client.get(&path).await?;
        let rows = value.as_array().cloned().unwrap_or_default();
        let mut changed = Vec::new();
        for row in rows.iter().rev() {
            let key = row["job_id"].as_str().unwrap_or_default().to_owned();
            if seen.get(&key).map(|old| &old["status"]) != Some(&row["status"]) {
                changed.push(row.clone());
                seen.insert(key, row.clone());
            }
        }
        if session.format == Format::Table {
            let jobs: Vec<JobSummary> = session
                .client
                .decode(&format!("GET {path}"), Value::Array(changed))?;
            let table = jobs_table(&jobs);
            let mut text = String::new();
            if first {
                text.push_str(&table.header(&session.terminal, &widths));
            }
            text.push_str(&table.body(&session.terminal, &widths));
            emit(&text)?;
        } else {
            let text: String = changed
                .iter()
                .map(|row| streamed(row, session.format))
                .collect();
            emit(&text)?;
        }
        first = false;
        tokio::time::sleep(LIST_INTERVAL).await;
    }
}

fn jobs_table(jobs: &[JobSummary]) -> Table {
    let now = Utc::now();
    let mut table = Table::new(&["JOB ID", "STATUS", "PROJECT", "AGE", "TASK"]);
    for job in jobs {
        table.row(vec![
            (job.job_id.clone(), Colour::Plain),
            (job.status.to_string(), Colour::of(job.status)),
            (job.project_id.clone(), Colour::Plain),
            (age(job.created_at, now), Colour::Plain),
            (one_line(&job.task, 60), Colour::Plain),
        ]);
    }
    table
}

pub async fn get(args: JobArgs) -> Result<()> {
    let session = Session::new(&args.connection, &args.output)?;
    let id = args.job;
    let client = &session.client;
    let mut value = client.get(&format!("/jobs/{id}/status")).await?;
    let events = client.get(&format!("/jobs/{id}/events")).await?;
    // A 404 here, the job being there, means no audit report yet.
    let audit = match client.get(&format!("/jobs/{id}/audit")).await {
        Ok(audit) => audit,
        Err(Error::JobNotFound { .. }) => Value::Null,
        Err(error) => return Err(error),
    };
    let status: JobStatusResponse = client.decode("GET status", value.clone())?;
    let events_list: Vec<EventView> = client.decode("GET events", events.clone())?;
    value["events"] = events;
    value["audit"] = audit.clone();
    session.show(&value, |_| {
        Ok(describe(&status, &events_list, &audit, &session.terminal))
    })
}

/// `icarus get` for people.
fn describe(
    status: &JobStatusResponse,
    events: &[EventView],
    audit: &Value,
    terminal: &Terminal,
) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("Job", status.job_id.clone()),
        (
            "Task",
            status.task.trim_end().replace('\n', "\n             "),
        ),
        (
            "Status",
            format!("{} ({})", terminal.phase(status.status), status.reason),
        ),
    ];
    if let Some(waiting) = &status.waiting {
        fields.push(("Waiting", waiting.clone()));
    }
    if let Some(error) = &status.error_message {
        fields.push(("Error", error.trim_end().replace('\n', "\n             ")));
    }
    fields.push((
        "Submitted",
        format!(
            "{} by {}",
            timestamp(status.created_at),
            status.submitted_by.as_deref().unwrap_or("?")
        ),
    ));
    fields.push((
        "Project",
        format!("{} (phase {})", status.project_id, status.phase),
    ));
    if let Some(code) = &status.test_code {
        let lines = code.lines().count();
        fields.push(("Tests", format!("{lines} lines, {} bytes", code.len())));
    }
    fields.push(("Attempt", status.attempt.to_string()));
    if let Some(source) = &status.source {
        let mut text = source.repository.clone();
        if let Some(reference) = &source.reference {
            text.push_str(&format!(" @ {reference}"));
        }
        if let Some(base) = &status.base_commit {
            text.push_str(&format!(" (base {base})"));
        }
        fields.push(("Source", text));
    }
    if let Some(snapshot) = &status.snapshot {
        fields.push(("Snapshot", snapshot.clone()));
    }
    if let (Some(branch), Some(commit)) = (&status.branch, &status.commit) {
        fields.push(("Published", format!("{commit} on {branch}")));
    }
    if let Some(url) = &status.pull_request_url {
        fields.push(("Pull request", url.clone()));
    }
    if let Some(approval) = &status.approval {
        let verdict = if approval.approved {
            "approved"
        } else {
            "rejected"
        };
        let mut text = format!(
            "{verdict} by {} at {}",
            approval.decided_by.as_deref().unwrap_or("?"),
            timestamp(approval.decided_at)
        );
        if !approval.comment.is_empty() {
            text.push_str(&format!(": {}", approval.comment));
        }
        fields.push(("Decision", text));
    }
    if status.required_approvals > 1 || status.approved_by.len() > 1 {
        let mut text = format!(
            "{} of {}",
            status.approved_by.len(),
            status.required_approvals
        );
        if !status.approved_by.is_empty() {
            text.push_str(&format!(" ({})", status.approved_by.join(", ")));
        }
        fields.push(("Approvals", text));
    }
    let mut text: String = fields
        .iter()
        .map(|(name, value)| {
            let label = format!("{name}:");
            format!(
                "{} {value}\n",
                terminal.paint(Colour::Bold, &format!("{label:<12}"))
            )
        })
        .collect();
    text.push_str(&format!(
        "\n{}\n",
        terminal.paint(Colour::Bold, "Timeline:")
    ));
    let mut timeline = Table::new(&["AT", "PHASE", "REASON", "MESSAGE"]);
    for event in events {
        timeline.row(vec![
            (timestamp(event.created_at), Colour::Plain),
            (event.to.to_string(), Colour::of(event.to)),
            (event.reason.clone(), Colour::Plain),
            (
                one_line(event.message.as_deref().unwrap_or(""), 80),
                Colour::Plain,
            ),
        ]);
    }
    for line in timeline.render(terminal).lines() {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str(&format!("\n{}\n", terminal.paint(Colour::Bold, "Audit:")));
    match audit.get("audit_report") {
        Some(report) => {
            for line in audit_summary(report) {
                text.push_str(&format!("  {line}\n"));
            }
        }
        None => text.push_str("  no audit report yet\n"),
    }
    text
}

/// The audit report in a few lines: its `summary` first, then each other
/// section's plain values, and how many items each list holds.
fn audit_summary(report: &Value) -> Vec<String> {
    let Value::Object(sections) = report else {
        return vec![one_line(&report.to_string(), 100)];
    };
    let mut lines = Vec::new();
    if let Some(Value::String(summary)) = sections.get("summary") {
        lines.push(format!("summary: {summary}"));
    }
    let mut names: Vec<&String> = sections.keys().filter(|n| *n != "summary").collect();
    names.sort();
    for name in names {
        let section = &sections[name];
        let shown = match section {
            Value::Object(fields) => {
                let mut shown: Vec<String> = fields
                    .iter()
                    .map(|(key, value)| format!("{key}={}", plain(value)))
                    .collect();
                shown.sort();
                shown.join(", ")
            }
            other => plain(other),
        };
        lines.push(format!("{name}: {}", one_line(&shown, 100)));
    }
    if lines.is_empty() {
        lines.push("(empty)".to_owned());
    }
    lines
}

/// A value on one line: scalars as they are, lists and objects counted.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => format!("{} item(s)", items.len()),
        Value::Object(fields) => format!("{} field(s)", fields.len()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_report_reads_as_its_summary_then_each_section() {
        let report = json!({
            "static_analysis": {"files_scanned": 3, "total_bytes": 120},
            "security_scan": {"possible_secrets": [], "high_severity": 0, "workspace_read_only": true},
            "summary": "✅ 3 files checked, no secrets found",
        });
        assert_eq!(
            audit_summary(&report),
            [
                "summary: ✅ 3 files checked, no secrets found",
                "security_scan: high_severity=0, possible_secrets=0 item(s), workspace_read_only=true",
                "static_analysis: files_scanned=3, total_bytes=120",
            ]
        );
        assert_eq!(audit_summary(&json!({})), ["(empty)"]);
    }
}
