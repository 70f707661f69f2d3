//! `icarus watch` (and `submit --wait`): one job followed live until it
//! awaits approval or ends, and what that end means for the exit code.
//!
//! On a terminal the view is redrawn in place: the phases with a spinner on
//! the current one and how long each took, the agent's latest progress
//! report, and the last line of its saved log once there is one (the API
//! has no live log stream). Elsewhere each change is one line, so a CI log
//! reads top to bottom. With `-o json|yaml` only the final status is printed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::args::Format;
use super::error::{Error, Result};
use super::follow::{POLL_INTERVAL, Update, follow};
use super::http::Client;
use super::output::{Colour, Terminal, document, duration, emit, one_line};
use crate::api::models::{AgentLogView, JobStatusResponse, TelemetryResponse};
use crate::job::{JobId, Phase};

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const FRAME: Duration = Duration::from_millis(100);

/// Whether following stops here: a human must decide, or nothing more will
/// happen. A decision or a cancel already recorded but not yet acted on
/// (`approve` then `watch`) is followed to its end.
pub fn settled(status: &JobStatusResponse) -> bool {
    match status.status {
        Phase::AwaitingApproval => status.approval.is_none() && !status.cancel_requested,
        phase => phase.is_terminal(),
    }
}

/// What a settled job means for the command: success, or the
/// [`Error::JobEnded`] whose exit code says how it ended.
pub fn outcome(status: &JobStatusResponse, id: JobId) -> Result<()> {
    match status.status {
        Phase::Failed | Phase::Rejected | Phase::Cancelled | Phase::Expired => {
            Err(Error::JobEnded {
                job: id,
                phase: status.status,
                reason: status.reason.clone(),
                message: status
                    .error_message
                    .as_deref()
                    .map(|m| format!(": {}", one_line(m, 200)))
                    .unwrap_or_default(),
            })
        }
        _ => Ok(()),
    }
}

/// Follows job `id` until it settles; prints as `format` says, and returns
/// the outcome.
pub async fn watch(client: &Client, id: JobId, format: Format, terminal: Terminal) -> Result<()> {
    let status: JobStatusResponse = client.get_as(&format!("/jobs/{id}/status")).await?;
    let mut view = View {
        terminal,
        format,
        status,
        progress: None,
        log_line: None,
        note: None,
        frame: 0,
        drawn: 0,
    };
    view.start(client).await?;
    if !settled(&view.status) {
        follow_until_settled(client, id, &mut view).await?;
    }
    view.finish()?;
    outcome(&view.status, id)
}

async fn follow_until_settled(client: &Client, id: JobId, view: &mut View) -> Result<()> {
    let mut following = follow(client.clone(), id, view.status.status);
    let mut frames = tokio::time::interval(FRAME);
    let mut progress = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            update = following.updates.recv() => match update {
                Some(Update::Status(status)) => {
                    view.reached(*status, client).await?;
                    if settled(&view.status) {
                        return Ok(());
                    }
                }
                Some(Update::Polling(why)) => view.noted(why)?,
                Some(Update::Failed(error)) => return Err(error),
                // The follower ends only at a terminal phase, which it sent.
                None => return Ok(()),
            },
            _ = frames.tick(), if view.live() => view.redraw()?,
            _ = progress.tick(), if view.status.status.is_active() => {
                // Progress is a nicety: a read that fails shows none.
                let telemetry = client
                    .get_as::<TelemetryResponse>(&format!("/jobs/{id}/telemetry"))
                    .await;
                if let Ok(telemetry) = telemetry {
                    view.progressed(telemetry.current_tool)?;
                }
            }
        }
    }
}

struct View {
    terminal: Terminal,
    format: Format,
    status: JobStatusResponse,
    /// The agent's latest `current_tool`.
    progress: Option<String>,
    /// The last line of the newest saved log.
    log_line: Option<String>,
    /// Why the status is polled rather than streamed.
    note: Option<String>,
    frame: usize,
    /// Lines drawn last time, to redraw over (live view only).
    drawn: usize,
}

impl View {
    /// Redrawn in place: a terminal, and a table (not a document) asked for.
    fn live(&self) -> bool {
        self.terminal.interactive && self.format == Format::Table
    }

    fn lines(&self) -> bool {
        !self.terminal.interactive && self.format == Format::Table
    }

    async fn start(&mut self, client: &Client) -> Result<()> {
        self.log_line = last_log_line(client, &self.status.job_id).await;
        if self.live() {
            return self.redraw();
        }
        if self.lines() {
            let header = format!(
                "job {}: {}\n",
                self.status.job_id,
                one_line(&self.status.task, 72)
            );
            emit(&(header + &self.phase_line()))?;
        }
        Ok(())
    }

    async fn reached(&mut self, status: JobStatusResponse, client: &Client) -> Result<()> {
        self.status = status;
        self.progress = None;
        self.log_line = last_log_line(client, &self.status.job_id)
            .await
            .or(self.log_line.take());
        if self.live() {
            return self.redraw();
        }
        if self.lines() {
            emit(&self.phase_line())?;
        }
        Ok(())
    }

    fn progressed(&mut self, current_tool: Option<String>) -> Result<()> {
        if current_tool.is_none() || current_tool == self.progress {
            return Ok(());
        }
        self.progress = current_tool;
        if self.lines()
            && let Some(tool) = &self.progress
        {
            emit(&format!("{:>19}progress: {}\n", "", one_line(tool, 100)))?;
        }
        Ok(())
    }

    fn noted(&mut self, why: String) -> Result<()> {
        let note = format!(
            "{why}; reading the status every {} s instead",
            POLL_INTERVAL.as_secs()
        );
        if !self.live() {
            eprintln!("icarus: {note}");
        }
        self.note = Some(note);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        match self.format {
            Format::Json | Format::Yaml => {
                let value = serde_json::to_value(&self.status).unwrap_or(Value::Null);
                emit(&document(&value, self.format))
            }
            Format::Table => {
                if self.live() {
                    self.redraw()?;
                }
                emit(&self.summary())
            }
        }
    }

    /// What to do next, or what went wrong, under the view.
    fn summary(&self) -> String {
        let id = &self.status.job_id;
        let paint = |colour, text: &str| self.terminal.paint(colour, text);
        match self.status.status {
            Phase::AwaitingApproval => format!(
                "{} `icarus diff {id}`, then `icarus approve {id}` or `icarus reject {id} -m REASON`\n",
                paint(Colour::Yellow, "awaiting approval:"),
            ),
            Phase::Failed => {
                let message = self.status.error_message.as_deref().unwrap_or("");
                format!("{} {message}\n", paint(Colour::Red, "error:"))
            }
            Phase::Completed => match (&self.status.branch, &self.status.commit) {
                (Some(branch), Some(commit)) => {
                    format!("published {commit} to branch {branch}\n")
                }
                _ => String::new(),
            },
            _ => String::new(),
        }
    }

    /// One line for the phase just reached (line mode).
    fn phase_line(&self) -> String {
        let status = &self.status;
        let at = stages(status)
            .last()
            .and_then(|stage| stage.started)
            .unwrap_or_else(Utc::now);
        let name = format!("{:<17}", status.status.as_str());
        format!(
            "{}  {}  {}\n",
            at.format("%H:%M:%S"),
            self.terminal.paint(Colour::of(status.status), &name),
            status.reason
        )
    }

    fn redraw(&mut self) -> Result<()> {
        let lines = self.render(Utc::now());
        let mut text = String::new();
        if self.drawn > 0 {
            text.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for line in &lines {
            text.push_str("\r\x1b[2K");
            text.push_str(line);
            text.push('\n');
        }
        self.drawn = lines.len();
        self.frame = (self.frame + 1) % SPINNER.len();
        emit(&text)
    }

    /// The live view's lines at `now`.
    fn render(&self, now: DateTime<Utc>) -> Vec<String> {
        let status = &self.status;
        let paint = |colour, text: &str| self.terminal.paint(colour, text);
        let mut lines = vec![format!(
            "{} {}  {}",
            paint(Colour::Bold, "job"),
            status.job_id,
            one_line(&status.task, 60)
        )];
        let reached = stages(status);
        let ended_badly = matches!(
            status.status,
            Phase::Failed | Phase::Rejected | Phase::Cancelled | Phase::Expired
        );
        for (index, stage) in reached.iter().enumerate() {
            let current = index + 1 == reached.len();
            let name = format!("{:<17}", stage.phase.as_str());
            let took = stage
                .started
                .map(|start| {
                    let end = stage.ended.unwrap_or(now);
                    duration((end - start).num_milliseconds() as f64 / 1000.0)
                })
                .unwrap_or_default();
            let line = if current
                && !stage.phase.is_terminal()
                && stage.phase != Phase::AwaitingApproval
            {
                let mark = SPINNER[self.frame].to_string();
                let why = waiting(status);
                format!(
                    "  {} {} {took:>7}{why}",
                    paint(Colour::Blue, &mark),
                    paint(Colour::Bold, &name)
                )
            } else if current && stage.phase.is_terminal() {
                let (mark, colour) = if ended_badly {
                    ("✗", Colour::Red)
                } else {
                    ("✓", Colour::Green)
                };
                format!(
                    "  {} {} {:>7}  {}",
                    paint(colour, mark),
                    paint(colour, &name),
                    "",
                    status.reason
                )
            } else if current {
                format!(
                    "  {} {}",
                    paint(Colour::Yellow, "●"),
                    paint(Colour::Yellow, &name)
                )
            } else {
                let failed_here = ended_badly && index + 2 == reached.len();
                let (mark, colour) = if failed_here {
                    ("✗", Colour::Red)
                } else {
                    ("✓", Colour::Green)
                };
                format!("  {} {name} {took:>7}", paint(colour, mark))
            };
            lines.push(line);
        }
        for phase in upcoming(status.status) {
            lines.push(paint(Colour::Dim, &format!("  · {}", phase.as_str())));
        }
        if let Some(progress) = &self.progress {
            lines.push(format!("  progress: {}", one_line(progress, 100)));
        }
        if let Some(line) = &self.log_line {
            lines.push(format!("  log: {}", one_line(line, 100)));
        }
        if let Some(note) = &self.note {
            lines.push(paint(Colour::Dim, &format!("  ({note})")));
        }
        lines
    }
}

/// Why a pending job waits, or an agent has not started.
fn waiting(status: &JobStatusResponse) -> String {
    match (&status.waiting, status.status) {
        (Some(why), _) => format!("  {}", one_line(why, 80)),
        (None, Phase::Pending) => format!("  {}", status.reason),
        _ => String::new(),
    }
}

/// A phase the job went through, and when.
struct Stage {
    phase: Phase,
    started: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
}

/// The phases the job has reached, in order, each with its start and (but
/// the current one) its end, read from the status's timestamps.
fn stages(status: &JobStatusResponse) -> Vec<Stage> {
    let marks = [
        (Phase::Pending, Some(status.created_at)),
        (Phase::Building, status.building_at),
        (Phase::Checking, status.checking_at),
        (Phase::AwaitingApproval, status.awaiting_approval_at),
        (Phase::Approved, status.approved_at),
    ];
    let mut reached: Vec<Stage> = marks
        .into_iter()
        .filter(|(phase, at)| at.is_some() && phase.rank() <= status.status.rank())
        .map(|(phase, started)| Stage {
            phase,
            started,
            ended: None,
        })
        .collect();
    if status.status.is_terminal() {
        reached.push(Stage {
            phase: status.status,
            started: status.completed_at,
            ended: status.completed_at,
        });
    }
    let starts: Vec<Option<DateTime<Utc>>> = reached.iter().map(|s| s.started).collect();
    for (stage, next) in reached.iter_mut().zip(starts.into_iter().skip(1)) {
        stage.ended = next;
    }
    reached
}

/// The phases still ahead on the way to a decision or an end.
fn upcoming(phase: Phase) -> Vec<Phase> {
    let path = [
        Phase::Pending,
        Phase::Building,
        Phase::Checking,
        Phase::AwaitingApproval,
    ];
    match phase {
        Phase::Approved => vec![Phase::Completed],
        phase if phase.is_terminal() => Vec::new(),
        phase => path
            .into_iter()
            .filter(|p| p.rank() > phase.rank())
            .collect(),
    }
}

/// The last non-empty line of the newest saved log, if any log is saved.
async fn last_log_line(client: &Client, job: &str) -> Option<String> {
    let logs: Vec<AgentLogView> = client.get_as(&format!("/jobs/{job}/logs")).await.ok()?;
    let newest = logs.last()?;
    let line = newest.log.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(format!("{}: {}", newest.role, line.trim()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status_json(phase: &str, extra: Value) -> JobStatusResponse {
        let mut value = serde_json::json!({
            "job_id": "3f0c1f8e-0000-4000-8000-000000000000",
            "status": phase,
            "task": "Add login",
            "created_at": "2024-05-01T12:00:00Z",
            "completed_at": null,
            "error_message": null,
            "reason": "Admitted",
            "waiting": null,
            "project_path": "/workspace",
            "builder_image": null,
            "checker_image": null,
            "builder_container_id": null,
            "checker_container_id": null,
            "builder_exit_code": null,
            "checker_exit_code": null,
            "building_at": "2024-05-01T12:00:01Z",
            "checking_at": null,
            "awaiting_approval_at": null,
            "approved_at": null,
            "attempt": 1,
            "retry_at": null,
            "submitted_by": "anonymous",
            "source": null,
            "base_commit": null,
            "snapshot": null,
            "branch": null,
            "commit": null,
            "pull_request_url": null,
            "approval": null,
            "cancel_requested": false,
            "resource_version": 3
        });
        for (key, field) in extra.as_object().unwrap() {
            value[key] = field.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    fn plain_view(status: JobStatusResponse) -> View {
        View {
            terminal: Terminal {
                interactive: true,
                colour: false,
            },
            format: Format::Table,
            status,
            progress: Some("cargo build".to_owned()),
            log_line: None,
            note: None,
            frame: 0,
            drawn: 0,
        }
    }

    #[test]
    fn a_building_job_shows_the_spinner_on_building_and_the_phases_ahead() {
        let view = plain_view(status_json("building", serde_json::json!({})));
        let now = "2024-05-01T12:00:04Z".parse().unwrap();
        let lines = view.render(now);
        assert_eq!(lines[1], "  ✓ pending              1.0s");
        assert_eq!(lines[2], "  ⠋ building             3.0s");
        assert_eq!(lines[3], "  · checking");
        assert_eq!(lines[4], "  · awaiting_approval");
        assert_eq!(lines[5], "  progress: cargo build");
    }

    #[test]
    fn a_failed_job_marks_where_it_failed_and_ends_with_code_3() {
        let status = status_json(
            "failed",
            serde_json::json!({
                "reason": "BuilderFailed",
                "completed_at": "2024-05-01T12:00:05Z",
                "error_message": "builder exited with 1\nlast lines..."
            }),
        );
        let view = plain_view(status.clone());
        let lines = view.render(Utc::now());
        assert_eq!(lines[2], "  ✗ building             4.0s");
        assert_eq!(
            lines[3],
            format!("  ✗ {:<17} {:>7}  BuilderFailed", "failed", "")
        );
        let id: JobId = status.job_id.parse().unwrap();
        let error = outcome(&status, id).unwrap_err();
        assert_eq!(error.exit_code(), 3);
        assert!(
            error
                .to_string()
                .ends_with("failed (BuilderFailed): builder exited with 1…")
        );
    }

    #[test]
    fn following_stops_where_a_human_must_decide_or_nothing_more_happens() {
        let settles = |phase: &str, extra| settled(&status_json(phase, extra));
        assert!(settles("awaiting_approval", json!({})));
        assert!(settles("completed", json!({})));
        assert!(!settles("approved", json!({})));
        assert!(!settles("pending", json!({})));
        let decided = json!({"approval": {
            "approved": true, "comment": "", "decided_at": "2024-05-01T12:01:00Z", "decided_by": "ann"
        }});
        assert!(
            !settles("awaiting_approval", decided),
            "an approval not yet acted on is followed"
        );
        assert!(!settles(
            "awaiting_approval",
            json!({"cancel_requested": true})
        ));
    }
}
