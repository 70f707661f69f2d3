//! The commands around a job's review and decision: `logs`, `diff`,
//! `approve`, `reject`, `cancel`, `publish`.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::args::{ApproveArgs, DiffArgs, Format, JobArgs, LogsArgs, RejectArgs};
use super::commands::Session;
use super::error::Result;
use super::output::{Colour, Terminal, emit, streamed};
use crate::api::models::{AgentLogView, DecisionResponse, JobStatusResponse};
use crate::job::JobId;

/// How often `logs -f` reads the saved logs.
const LOGS_INTERVAL: Duration = Duration::from_secs(2);
/// How long `logs -f` waits, after the job ended, for the logs of its last
/// agents (saved as their containers are removed, just after the end).
const LAST_LOGS_GRACE: Duration = Duration::from_secs(10);

pub async fn logs(args: LogsArgs) -> Result<()> {
    let session = Session::new(&args.job.connection, &args.job.output)?;
    let id = args.job.job;
    let wanted = |log: &Value| {
        args.role
            .as_deref()
            .is_none_or(|role| log["role"].as_str() == Some(role))
    };
    if !args.follow {
        let all = session.client.get(&format!("/jobs/{id}/logs")).await?;
        let logs: Vec<Value> = all.as_array().cloned().unwrap_or_default();
        let shown: Vec<Value> = logs.into_iter().filter(|log| wanted(log)).collect();
        let headers = shown.len() > 1;
        return session.show(&Value::Array(shown.clone()), |_| {
            let texts = shown
                .iter()
                .map(|log| log_text(&session, log, headers))
                .collect::<Result<String>>()?;
            if texts.is_empty() {
                eprintln!("{}", no_logs_yet(id));
            }
            Ok(texts)
        });
    }
    follow_logs(&session, id, &wanted).await
}

/// `logs -f`: each agent's log as it appears and then what it adds (an
/// agent's lines are kept while it runs), until the job has ended and its
/// last agents' logs are in (or a grace period passed).
async fn follow_logs(session: &Session, id: JobId, wanted: &dyn Fn(&Value) -> bool) -> Result<()> {
    let mut printed: HashMap<(String, u64), usize> = HashMap::new();
    let mut ended_at = None;
    let mut interval = tokio::time::interval(LOGS_INTERVAL);
    loop {
        interval.tick().await;
        let status: JobStatusResponse =
            session.client.get_as(&format!("/jobs/{id}/status")).await?;
        let all = session.client.get(&format!("/jobs/{id}/logs")).await?;
        let logs = all.as_array().cloned().unwrap_or_default();
        let mut text = String::new();
        for log in logs.iter().filter(|log| wanted(log)) {
            text.push_str(&new_output(session, log, &mut printed)?);
        }
        emit(&text)?;
        if !status.status.is_terminal() {
            continue;
        }
        let ended = *ended_at.get_or_insert_with(tokio::time::Instant::now);
        let saved = |container: &Option<String>| {
            container.as_ref().is_none_or(|id| {
                logs.iter()
                    .any(|log| log["container_id"].as_str() == Some(id.as_str()))
            })
        };
        let all_in = saved(&status.builder_container_id) && saved(&status.checker_container_id);
        if all_in || ended.elapsed() >= LAST_LOGS_GRACE {
            return Ok(());
        }
    }
}

/// What `log` adds to what was printed of its agent: all of it, under a
/// header, the first time; then only its new end.
fn new_output(
    session: &Session,
    log: &Value,
    printed: &mut HashMap<(String, u64), usize>,
) -> Result<String> {
    let agent = (
        log["role"].as_str().unwrap_or_default().to_owned(),
        log["attempt"].as_u64().unwrap_or_default(),
    );
    let output = log["log"].as_str().unwrap_or_default();
    let Some(&done) = printed.get(&agent) else {
        printed.insert(agent, output.len());
        return Ok(match session.format {
            Format::Table => log_text(session, log, true)?,
            format => streamed(log, format),
        });
    };
    let added = output.get(done..).unwrap_or_default();
    if added.is_empty() {
        return Ok(String::new());
    }
    printed.insert(agent, output.len());
    Ok(match session.format {
        Format::Table => added.to_owned(),
        format => {
            let mut part = log.clone();
            part["log"] = Value::String(added.to_owned());
            streamed(&part, format)
        }
    })
}

fn no_logs_yet(id: JobId) -> String {
    format!(
        "icarus: job {id} has no saved logs yet: an agent's output is saved when its \
         container is removed (when the job ends, or before a retry)"
    )
}

/// One saved log as text, after a `==> builder, attempt 1 <==` line when
/// several are shown.
fn log_text(session: &Session, log: &Value, header: bool) -> Result<String> {
    let log: AgentLogView = session.client.decode("GET logs", log.clone())?;
    let mut text = String::new();
    if header {
        let title = format!(
            "==> {}, attempt {} (container {}) <==",
            log.role, log.attempt, log.container_id
        );
        text.push_str(&session.terminal.paint(Colour::Bold, &title));
        text.push('\n');
    }
    if header && log.log.is_empty() {
        text.push_str(&session.terminal.paint(Colour::Dim, "(no output)"));
        text.push('\n');
    }
    text.push_str(&log.log);
    if !log.log.is_empty() && !log.log.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

pub async fn diff(args: DiffArgs) -> Result<()> {
    let session = Session::new(&args.job.connection, &args.job.output)?;
    let id = args.job.job;
    if session.format == Format::Table && !args.stat {
        let text = session.client.get_text(&format!("/jobs/{id}/diff")).await?;
        return emit(&colour_diff(&text, &session.terminal));
    }
    let path = format!("/jobs/{id}/diff?format=json");
    let value = session.client.get(&path).await?;
    session.show(&value, |value| {
        let summary: DiffStat = session
            .client
            .decode(&format!("GET {path}"), value.clone())?;
        Ok(summary.render(&session.terminal))
    })
}

/// Added lines green, removed red, hunk headers cyan, on a terminal only.
fn colour_diff(text: &str, terminal: &Terminal) -> String {
    if !terminal.colour {
        return text.to_owned();
    }
    let mut coloured = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let colour = if body.starts_with("+++") || body.starts_with("---") {
            Colour::Bold
        } else if body.starts_with('+') {
            Colour::Green
        } else if body.starts_with('-') {
            Colour::Red
        } else if body.starts_with("@@") {
            Colour::Cyan
        } else if body.starts_with("diff ") {
            Colour::Bold
        } else {
            Colour::Plain
        };
        coloured.push_str(&terminal.paint(colour, body));
        coloured.push_str(end);
    }
    coloured
}

/// What `diff --stat` needs of `GET /jobs/{id}/diff?format=json`.
#[derive(Debug, Deserialize)]
struct DiffStat {
    snapshot: Option<String>,
    files: Vec<FileStat>,
    additions: usize,
    deletions: usize,
    truncated: bool,
    excluded: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct FileStat {
    path: String,
    old_path: Option<String>,
    binary: bool,
    additions: usize,
    deletions: usize,
}

impl DiffStat {
    /// As `git diff --stat` shows it, then the snapshot an approval may quote.
    fn render(&self, terminal: &Terminal) -> String {
        const BAR: usize = 40;
        let names: Vec<String> = self
            .files
            .iter()
            .map(|file| match &file.old_path {
                Some(old) => format!("{old} => {}", file.path),
                None => file.path.clone(),
            })
            .collect();
        let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let most = self
            .files
            .iter()
            .map(|f| f.additions + f.deletions)
            .max()
            .unwrap_or(0);
        let count_width = most.to_string().len();
        let mut text = String::new();
        for (file, name) in self.files.iter().zip(&names) {
            let changed = file.additions + file.deletions;
            let counts = if file.binary {
                "Bin".to_owned()
            } else {
                let scale = |n: usize| {
                    if most <= BAR {
                        n
                    } else {
                        (n * BAR).div_ceil(most)
                    }
                };
                format!(
                    "{changed:>count_width$} {}{}",
                    terminal.paint(Colour::Green, &"+".repeat(scale(file.additions))),
                    terminal.paint(Colour::Red, &"-".repeat(scale(file.deletions)))
                )
            };
            text.push_str(&format!(" {name:<name_width$} | {counts}\n"));
        }
        let plural = |n: usize, word: &str| {
            if n == 1 {
                word.to_owned()
            } else {
                format!("{word}s")
            }
        };
        text.push_str(&format!(
            " {} {} changed, {} {}(+), {} {}(-)\n",
            self.files.len(),
            plural(self.files.len(), "file"),
            self.additions,
            plural(self.additions, "insertion"),
            self.deletions,
            plural(self.deletions, "deletion"),
        ));
        for excluded in &self.excluded {
            text.push_str(&format!(" not in the snapshot: {excluded}\n"));
        }
        if self.truncated {
            text.push_str(
                " (the diff was cut at its size limit; the last file may be incomplete)\n",
            );
        }
        if let Some(snapshot) = &self.snapshot {
            text.push_str(&format!(" snapshot {snapshot}\n"));
        }
        text
    }
}

pub async fn approve(args: ApproveArgs) -> Result<()> {
    let mut body = json!({ "approved": true });
    if let Some(comment) = &args.message {
        body["comment"] = json!(comment);
    }
    if let Some(snapshot) = &args.snapshot {
        body["snapshot"] = json!(snapshot);
    }
    decide(&args.job, "approve", &body).await
}

pub async fn reject(args: RejectArgs) -> Result<()> {
    let body = json!({ "approved": false, "comment": args.message });
    decide(&args.job, "approve", &body).await
}

pub async fn cancel(args: JobArgs) -> Result<()> {
    decide(&args, "cancel", &json!({})).await
}

pub async fn publish(args: JobArgs) -> Result<()> {
    decide(&args, "publish", &json!({})).await
}

/// `POST /jobs/{id}/{action}`, and the server's answer.
async fn decide(args: &JobArgs, action: &str, body: &Value) -> Result<()> {
    let session = Session::new(&args.connection, &args.output)?;
    let path = format!("/jobs/{}/{action}", args.job);
    let answer = session.client.post(&path, body).await?;
    session.show(&answer, |value| {
        let decision: DecisionResponse = session
            .client
            .decode(&format!("POST {path}"), value.clone())?;
        Ok(format!("{}\n", decision.message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_reads_as_gits() {
        let stat: DiffStat = serde_json::from_value(json!({
            "snapshot": "abc",
            "files": [
                {"path": "README.md", "status": "modified", "binary": false, "additions": 1, "deletions": 1, "hunks": []},
                {"path": "src/login.py", "status": "added", "binary": false, "additions": 2, "deletions": 0, "hunks": []},
                {"path": "logo.png", "status": "added", "binary": true, "additions": 0, "deletions": 0, "hunks": []}
            ],
            "additions": 3, "deletions": 1, "truncated": false, "excluded": []
        }))
        .unwrap();
        let plain = Terminal {
            interactive: false,
            colour: false,
        };
        assert_eq!(
            stat.render(&plain),
            " README.md    | 2 +-\n src/login.py | 2 ++\n logo.png     | Bin\n \
             3 files changed, 3 insertions(+), 1 deletion(-)\n snapshot abc\n"
        );
    }

    #[test]
    fn a_diff_is_coloured_only_on_a_colour_terminal() {
        let diff = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n";
        let plain = Terminal {
            interactive: false,
            colour: false,
        };
        assert_eq!(colour_diff(diff, &plain), diff);
        let colour = Terminal {
            interactive: true,
            colour: true,
        };
        assert!(colour_diff(diff, &colour).contains("\x1b[32m+new\x1b[0m"));
    }
}
