//! Following agents' output while they run: at most one follower task per
//! running workload, on the reconciling replica only (it belongs to the
//! controller's term, like every other leader task).
//!
//! Every reconcile hands the followers what it observed
//! ([`LogFollowers::track`]): a running workload without a follower gets one
//! (so a restart or a new leader adopts the running agents), so does one that
//! ended without ever being followed in this term (it ran between two
//! reconciles, or while no replica led), and the last lines of a workload
//! that ended are waited for briefly ([`LastLines`]) before the reconcile
//! starts or removes an agent or writes the status, so what follows comes
//! after them in the job's stream. A follower reads the runtime's log stream
//! ([`Runtime::follow_logs`]), splits it into lines, cuts long ones, redacts
//! the agent's callback token, applies the agent's rate and budget
//! ([`crate::logs::Gate`]) and appends the lines in small batches
//! ([`Store::append_log`], fenced: a replica whose term ended writes nothing
//! more). Any failure ends the follower; the next reconcile starts another,
//! which resumes after the last stored line.
//!
//! Resuming: the runtime is asked for the output from the last stored line's
//! timestamp on (Docker counts in whole seconds, so it may send more);
//! lines before that timestamp are skipped, and of the lines with exactly
//! that timestamp, as many as are stored already.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::SubsecRound;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::job::JobId;
use crate::job::workload::{ObservedWorkload, Role, WorkloadKey, WorkloadState};
use crate::logs::{Gate, LineSplitter, LogLimits, LogStream, Verdict, redact};
use crate::runtime::{LogChunk, Runtime};
use crate::store::{LogLine, LogResume, Store};

/// Lines stored in one write at most.
const BATCH_LINES: usize = 256;
/// The least time between two writes of a follower's lines (unless a batch
/// is full): lines that come within it share the next write.
const BATCH_DELAY: Duration = Duration::from_millis(50);
/// How long a reconcile waits for the last lines of an agent that ended.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// The followers of one controller term.
pub(crate) struct LogFollowers {
    limits: LogLimits,
    enabled: bool,
    running: Mutex<HashMap<WorkloadKey, Running>>,
    stop: CancellationToken,
}

/// A follower under way: which workload, and a flag set once it ended.
struct Running {
    workload_id: String,
    ended: watch::Receiver<bool>,
}

/// What a follower needs, owned, for its task.
struct Follower {
    store: Store,
    runtime: Arc<dyn Runtime>,
    key: WorkloadKey,
    workload_id: String,
    /// The agent's callback token: never stored.
    token: String,
    limits: LogLimits,
    /// The job's followers that were still storing when this one began: an
    /// agent's lines come after those of the agents before it in the job's
    /// stream, whenever it was started (a start does not wait for them).
    after: Vec<watch::Receiver<bool>>,
}

impl LogFollowers {
    pub(crate) fn new(config: &crate::config::AgentLogsConfig) -> LogFollowers {
        LogFollowers {
            limits: config.limits(),
            enabled: config.follow,
            running: Mutex::default(),
            stop: CancellationToken::new(),
        }
    }

    /// Starts a follower for each running workload that has none; returns
    /// the wait for those of workloads that are no longer running.
    pub(crate) fn track(
        &self,
        context: &super::Context,
        job: JobId,
        workloads: &[ObservedWorkload],
    ) -> LastLines {
        let mut last = LastLines::default();
        if !self.enabled {
            return last;
        }
        let keys: Vec<WorkloadKey> = workloads
            .iter()
            .map(|workload| WorkloadKey {
                job,
                role: workload.role,
                attempt: workload.attempt,
            })
            .collect();
        for (key, workload) in keys.iter().zip(workloads) {
            match workload.state {
                WorkloadState::Running => self.ensure(context, *key, &workload.id, true),
                // An agent that ended before it was followed (between two
                // reconciles, or while no replica led) is read to its end.
                WorkloadState::Exited { .. } => {
                    self.ensure(context, *key, &workload.id, false);
                    last.add(*key, &self.running);
                }
                _ => {}
            }
        }
        // Workloads removed: their followers ended with them.
        lock(&self.running).retain(|key, _| key.job != job || keys.contains(key));
        last
    }

    /// Stops every follower (the term is over).
    pub(crate) fn stop_all(&self) {
        self.stop.cancel();
    }

    /// Starts a follower for the workload unless one runs; unless one has
    /// run, when `again` is false (a workload that ended: its output is
    /// complete once read).
    fn ensure(&self, context: &super::Context, key: WorkloadKey, workload_id: &str, again: bool) {
        let mut running = lock(&self.running);
        if let Some(follower) = running.get(&key)
            && follower.workload_id == workload_id
            && (!again || !*follower.ended.borrow())
        {
            return;
        }
        let after = running
            .iter()
            .filter(|(other, follower)| comes_before(other, &key) && !*follower.ended.borrow())
            .map(|(_, follower)| follower.ended.clone())
            .collect();
        let (ended_tx, ended) = watch::channel(false);
        let follower = Follower {
            store: context.store.clone(),
            runtime: context.runtime.clone(),
            key,
            workload_id: workload_id.to_owned(),
            token: context
                .settings
                .agent_keys
                .token(key.job, key.role, key.attempt),
            limits: self.limits,
            after,
        };
        let stop = self.stop.clone();
        // A root span: it outlives the reconcile that starts it, and would
        // otherwise keep that reconcile's span (and its trace) open.
        let span = tracing::info_span!(parent: None, "log follower", job = %key.job, role = %key.role, attempt = key.attempt);
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = follower.run() => {}
                }
                let _ = ended_tx.send(true);
            }
            .instrument(span),
        );
        running.insert(
            key,
            Running {
                workload_id: workload_id.to_owned(),
                ended,
            },
        );
    }
}

/// The last lines of agents that ended, which their followers are storing.
/// The followers run on their own; [`LastLines::stored`] waits (briefly)
/// until they are done, and a reconcile calls it before whatever must come
/// after those lines in the job's stream: a status write (its transition),
/// a removal (which ends the reading). Work that touches neither overlaps
/// the wait: a snapshot, and another agent's start, whose own follower
/// waits for these lines before it stores any (`Follower::after`).
#[derive(Default)]
#[must_use = "the lines are waited for with `stored`"]
pub(crate) struct LastLines(Vec<(WorkloadKey, watch::Receiver<bool>)>);

impl LastLines {
    fn add(&mut self, key: WorkloadKey, running: &Mutex<HashMap<WorkloadKey, Running>>) {
        if let Some(follower) = lock(running).get(&key) {
            self.0.push((key, follower.ended.clone()));
        }
    }

    /// Waits up to [`DRAIN_WAIT`] in all for the followers to store the
    /// last lines; at once if they have, or were waited for already.
    pub(crate) async fn stored(&mut self) {
        let deadline = Instant::now() + DRAIN_WAIT;
        for (key, mut ended) in std::mem::take(&mut self.0) {
            if !ended_by(deadline, &mut ended).await {
                tracing::warn!(job = %key.job, role = %key.role, "the agent ended but its output is still being read; going on");
            }
        }
    }
}

/// Whether `earlier`'s agent ran before `later`'s in the same job: an
/// earlier attempt, or the builder of the same one. (A follower never waits
/// for one of an agent that came after, which may run for its whole life.)
fn comes_before(earlier: &WorkloadKey, later: &WorkloadKey) -> bool {
    let order = |key: &WorkloadKey| (key.attempt, key.role == Role::Checker);
    earlier.job == later.job && order(earlier) < order(later)
}

/// Waits up to [`DRAIN_WAIT`] in all for the followers in `after` to end.
async fn after_predecessors(after: Vec<watch::Receiver<bool>>) {
    let deadline = Instant::now() + DRAIN_WAIT;
    for mut ended in after {
        if !ended_by(deadline, &mut ended).await {
            tracing::warn!(
                "an earlier agent's output is still being read; following this one's meanwhile"
            );
            return;
        }
    }
}

/// Whether the follower whose flag is `ended` ended by `deadline` (one
/// whose task is gone counts as ended).
async fn ended_by(deadline: Instant, ended: &mut watch::Receiver<bool>) -> bool {
    tokio::time::timeout_at(deadline, ended.wait_for(|ended| *ended))
        .await
        .is_ok()
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Follower {
    async fn run(mut self) {
        after_predecessors(std::mem::take(&mut self.after)).await;
        let resume = match self
            .store
            .log_resume(self.key.job, self.key.role, self.key.attempt)
            .await
        {
            Ok(resume) => resume,
            Err(error) => {
                tracing::warn!(error = %crate::errors::error_chain(&error), "where to resume the agent's output could not be read");
                return;
            }
        };
        let Some(mut chunks) = self.runtime.follow_logs(&self.workload_id, resume.last_at) else {
            return;
        };
        tracing::debug!(?resume, "following the agent's output");
        let mut lines = Lines::new(&self, resume);
        let mut pending: Vec<LogLine> = Vec::new();
        // A line after a quiet spell is written at once; lines that follow
        // within BATCH_DELAY of a write share the next one.
        let mut flush_at = None;
        let mut last_write = None;
        loop {
            let due = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now));
            let chunk = tokio::select! {
                chunk = chunks.next() => chunk,
                _ = due, if flush_at.is_some() => {
                    flush_at = None;
                    if !self.store_lines(&mut pending).await {
                        return;
                    }
                    last_write = Some(Instant::now());
                    continue;
                }
            };
            match chunk {
                Some(Ok(chunk)) => {
                    lines.take(&chunk, &mut pending);
                    if !pending.is_empty() && flush_at.is_none() {
                        flush_at = Some(next_write(Instant::now(), last_write));
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(error = %crate::errors::error_chain(&error), "the agent's output could not be followed further");
                    break;
                }
                None => break,
            }
            if pending.len() >= BATCH_LINES {
                flush_at = None;
                if !self.store_lines(&mut pending).await {
                    return;
                }
                last_write = Some(Instant::now());
            }
        }
        lines.finish(&mut pending);
        self.store_lines(&mut pending).await;
    }

    /// Stores and empties `pending`; false if the store refused.
    async fn store_lines(&self, pending: &mut Vec<LogLine>) -> bool {
        let batch = std::mem::take(pending);
        match self.store.append_log(self.key.job, &batch).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(error = %crate::errors::error_chain(&error), lines = batch.len(), "the agent's output could not be stored; following again at the next reconcile");
                false
            }
        }
    }
}

/// When lines waiting now are written: at once after a quiet spell (a
/// subscriber sees a lone line without delay), else `BATCH_DELAY` after the
/// last write (a flood costs at most one write per `BATCH_DELAY`).
fn next_write(now: Instant, last_write: Option<Instant>) -> Instant {
    last_write.map_or(now, |at| (at + BATCH_DELAY).max(now))
}

/// From chunks to the lines that are kept: split per stream, resumed,
/// redacted, gated.
struct Lines {
    key: WorkloadKey,
    token: String,
    splitters: HashMap<LogStream, LineSplitter>,
    max_line_bytes: usize,
    resume: LogResume,
    skipped_at_last: u32,
    gate: Gate,
    /// The last line's time, for the summary at the end.
    last_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Lines {
    fn new(follower: &Follower, resume: LogResume) -> Lines {
        Lines {
            key: follower.key,
            token: follower.token.clone(),
            splitters: HashMap::new(),
            max_line_bytes: follower.limits.max_line_bytes,
            resume,
            skipped_at_last: 0,
            gate: Gate::new(follower.limits, resume.kept),
            last_at: None,
        }
    }

    fn take(&mut self, chunk: &LogChunk, out: &mut Vec<LogLine>) {
        let max = self.max_line_bytes;
        let splitter = self
            .splitters
            .entry(chunk.stream)
            .or_insert_with(|| LineSplitter::new(max));
        // To the microsecond, as PostgreSQL keeps it: what is compared on
        // resuming is exactly what was stored.
        let at = chunk.timestamp.trunc_subsecs(6);
        for line in splitter.push(at, &chunk.bytes) {
            self.keep(chunk.stream, line, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<LogLine>) {
        let rests: Vec<_> = self
            .splitters
            .iter_mut()
            .filter_map(|(stream, splitter)| Some((*stream, splitter.finish()?)))
            .collect();
        for (stream, line) in rests {
            self.keep(stream, line, out);
        }
        if let (Some(summary), Some(at)) = (self.gate.take_summary(), self.last_at) {
            out.push(self.line(LogStream::Stderr, summary, at, true));
        }
    }

    /// Whether a line was stored before the restart this follower resumes.
    fn stored_already(&mut self, at: chrono::DateTime<chrono::Utc>) -> bool {
        match self.resume.last_at {
            Some(last) if at < last => true,
            Some(last) if at == last && self.skipped_at_last < self.resume.lines_at_last => {
                self.skipped_at_last += 1;
                true
            }
            _ => false,
        }
    }

    fn keep(&mut self, stream: LogStream, line: crate::logs::SplitLine, out: &mut Vec<LogLine>) {
        if self.stored_already(line.at) {
            return;
        }
        self.last_at = Some(line.at);
        let text = redact(&line.text, &[self.token.as_str()]).into_owned();
        let was_exhausted = self.gate.is_exhausted();
        match self.gate.admit(line.at, &text) {
            Verdict::Keep => {
                if let Some(summary) = self.gate.take_summary() {
                    out.push(self.line(LogStream::Stderr, summary, line.at, true));
                }
                out.push(self.line(stream, text, line.at, false));
            }
            Verdict::Drop if !was_exhausted && self.gate.is_exhausted() => {
                let note = "[icarus] the agent's log reached its budget (agents.logs.max_bytes); \
                            further lines are dropped and counted"
                    .to_owned();
                out.push(self.line(LogStream::Stderr, note, line.at, true));
            }
            Verdict::Drop => {}
        }
    }

    fn line(
        &self,
        stream: LogStream,
        message: String,
        at: chrono::DateTime<chrono::Utc>,
        note: bool,
    ) -> LogLine {
        LogLine {
            role: self.key.role,
            attempt: self.key.attempt,
            stream,
            message,
            at,
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_after_a_quiet_spell_is_written_at_once_and_a_flood_once_per_batch_delay() {
        let now = Instant::now();
        assert_eq!(next_write(now, None), now, "nothing written yet");
        let long_ago = now - 2 * BATCH_DELAY;
        assert_eq!(next_write(now, Some(long_ago)), now, "after a quiet spell");
        let just_now = now - BATCH_DELAY / 5;
        assert_eq!(
            next_write(now, Some(just_now)),
            just_now + BATCH_DELAY,
            "right after a write: the next one waits out the delay"
        );
    }

    #[test]
    fn an_agents_lines_wait_only_for_the_agents_of_its_job_that_ran_before_it() {
        let job = JobId::new_random();
        let key = |role, attempt| WorkloadKey { job, role, attempt };
        let checker = key(Role::Checker, 1);
        assert!(comes_before(&key(Role::Builder, 1), &checker));
        assert!(comes_before(&checker, &key(Role::Builder, 2)));
        assert!(!comes_before(&checker, &key(Role::Builder, 1)));
        assert!(!comes_before(&checker, &checker));
        let elsewhere = WorkloadKey {
            job: JobId::new_random(),
            ..key(Role::Builder, 1)
        };
        assert!(!comes_before(&elsewhere, &checker));
    }
}
