//! What becomes of an agent's output on its way to the log: pure decisions,
//! no I/O, so every rule is tested here on plain values.
//!
//! An agent is hostile input. Each line it prints is cut to a configured
//! length, has its callback token (and any `token=...` value) redacted, and
//! passes a [`Gate`] that enforces a rate (lines per second of the line's own
//! timestamp, so the decision does not depend on when the orchestrator reads
//! it) and a total budget of bytes per agent. What the gate drops is counted
//! and summarised as one line ("N lines dropped"), never silently lost.
//!
//! Time is the runtime's timestamp of each line, so a follower that resumes
//! after a restart decides exactly as the first one did.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

/// Which of an agent's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    pub fn parse(text: &str) -> Option<LogStream> {
        match text {
            "stdout" => Some(LogStream::Stdout),
            "stderr" => Some(LogStream::Stderr),
            _ => None,
        }
    }
}

/// The limits on one agent's log (`agents.logs.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Longer lines are cut at this many bytes (at a character boundary).
    pub max_line_bytes: usize,
    /// Lines kept per second of the agent's own timestamps; 0: no limit.
    pub lines_per_second: u32,
    /// Bytes of lines kept per agent (job, role and attempt); the rest is dropped.
    pub max_bytes: u64,
}

/// What replaces a secret in a line.
pub const REDACTED: &str = "[redacted]";

/// Marks a line that was cut.
pub const CUT_MARK: &str = " [cut]";

/// `line` without its trailing newline, cut to `max_bytes` at a character
/// boundary (with [`CUT_MARK`] appended when it was cut).
pub fn cut(line: &str, max_bytes: usize) -> Cow<'_, str> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() <= max_bytes {
        return Cow::Borrowed(line);
    }
    let mut end = max_bytes;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{CUT_MARK}", &line[..end]))
}

/// The shortest part of a secret, at a cut end of a text, that is
/// redacted too: a line cut in the middle of a token, a saved log whose
/// start was dropped.
const PARTIAL_SECRET: usize = 8;

/// `text` with every occurrence of each secret, and the value of every
/// `token=` parameter (a URL's query, a form), replaced by [`REDACTED`];
/// so is the part of a secret that a cut left at either end of the text
/// (before a [`CUT_MARK`] too), from [`PARTIAL_SECRET`] characters on.
pub fn redact<'a>(text: &'a str, secrets: &[&str]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        if out.contains(secret) {
            out = Cow::Owned(out.replace(secret, REDACTED));
        }
        if let Some(cut) = redact_cut_ends(&out, secret) {
            out = Cow::Owned(cut);
        }
    }
    match redact_token_parameters(&out) {
        Some(redacted) => Cow::Owned(redacted),
        None => out,
    }
}

/// `text` with a secret's end at its start, or a secret's start at its end
/// (before a [`CUT_MARK`]), replaced; `None` if it has neither.
fn redact_cut_ends(text: &str, secret: &str) -> Option<String> {
    let body = text.strip_suffix(CUT_MARK).unwrap_or(text);
    let mark = &text[body.len()..];
    let ends_with_start = (PARTIAL_SECRET..secret.len())
        .rev()
        .filter(|n| secret.is_char_boundary(*n))
        .find(|n| body.ends_with(&secret[..*n]));
    let starts_with_end = (1..=secret.len() - PARTIAL_SECRET.min(secret.len()))
        .filter(|n| secret.is_char_boundary(*n))
        .find(|n| body.starts_with(&secret[*n..]));
    if ends_with_start.is_none() && starts_with_end.is_none() {
        return None;
    }
    let start = starts_with_end.map_or(0, |n| secret.len() - n);
    let end = ends_with_start.map_or(body.len(), |n| body.len() - n);
    let mut out = String::new();
    if starts_with_end.is_some() {
        out.push_str(REDACTED);
    }
    out.push_str(body.get(start..end.max(start)).unwrap_or_default());
    if ends_with_start.is_some() {
        out.push_str(REDACTED);
    }
    out.push_str(mark);
    Some(out)
}

/// The value of each `token=` (any case, not part of a longer name such as
/// `mytoken=`) up to the next delimiter, replaced; `None` if there is none.
fn redact_token_parameters(text: &str) -> Option<String> {
    const NAME: &str = "token=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(NAME) {
        let start = from + found;
        let value_start = start + NAME.len();
        from = value_start;
        let preceded_by_name = lower[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if preceded_by_name {
            continue;
        }
        if text[value_start..].starts_with(REDACTED) {
            continue;
        }
        let value_end = text[value_start..]
            .find(|c: char| c.is_whitespace() || "&\"'<>;,)]}".contains(c))
            .map_or(text.len(), |end| value_start + end);
        if value_end == value_start {
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(REDACTED);
        copied = value_end;
        from = value_end;
    }
    (copied > 0).then(|| {
        out.push_str(&text[copied..]);
        out
    })
}

/// Turns one output stream's chunks into lines: a line is complete at its
/// newline, or at the end of the output. A line longer than `max_bytes` is
/// held only up to that length (plus a character's worth, to cut it at a
/// boundary): the rest until its newline is never buffered.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    max_bytes: usize,
    buffer: Vec<u8>,
    /// When the line in the buffer started.
    started: Option<DateTime<Utc>>,
    /// The line in the buffer is over the limit: its rest is discarded.
    overflowed: bool,
}

/// One complete line from a [`LineSplitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitLine {
    pub at: DateTime<Utc>,
    /// Cut to the limit, without its newline, invalid UTF-8 replaced.
    pub text: String,
}

impl LineSplitter {
    pub fn new(max_bytes: usize) -> LineSplitter {
        LineSplitter {
            max_bytes,
            buffer: Vec::new(),
            started: None,
            overflowed: false,
        }
    }

    /// The lines `bytes` (printed at `at`) completes.
    pub fn push(&mut self, at: DateTime<Utc>, bytes: &[u8]) -> Vec<SplitLine> {
        let mut lines = Vec::new();
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            self.started.get_or_insert(at);
            let room = (self.max_bytes + 4).saturating_sub(self.buffer.len());
            let content = piece.strip_suffix(b"\n").unwrap_or(piece);
            if content.len() > room {
                self.overflowed = true;
            }
            self.buffer
                .extend_from_slice(&content[..content.len().min(room)]);
            if piece.ends_with(b"\n") {
                lines.extend(self.finish());
            }
        }
        lines
    }

    /// The line left unterminated at the end of the output, if any.
    pub fn finish(&mut self) -> Option<SplitLine> {
        let at = self.started.take()?;
        let text = String::from_utf8_lossy(&self.buffer).into_owned();
        self.buffer.clear();
        let overflowed = std::mem::take(&mut self.overflowed);
        let mut text = cut(&text, self.max_bytes).into_owned();
        if overflowed && !text.ends_with(CUT_MARK) {
            text.push_str(CUT_MARK);
        }
        Some(SplitLine { at, text })
    }
}

/// What the gate decided for one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it (possibly after a summary of what was dropped before it).
    Keep,
    /// Drop it: over the rate or the budget; counted for the summary.
    Drop,
}

/// The rate and budget of one agent's log.
#[derive(Debug, Clone)]
pub struct Gate {
    limits: LogLimits,
    /// Bytes kept so far (including those kept before a restart).
    used: u64,
    /// The second (of the lines' timestamps) being counted, and how many
    /// lines were kept in it.
    second: i64,
    kept_in_second: u32,
    /// Lines dropped since the last summary.
    dropped: u64,
    /// Whether the budget was reached: everything after is dropped.
    exhausted: bool,
}

impl Gate {
    /// A gate for an agent that already kept `used` bytes.
    pub fn new(limits: LogLimits, used: u64) -> Gate {
        Gate {
            limits,
            used,
            second: i64::MIN,
            kept_in_second: 0,
            dropped: 0,
            exhausted: used >= limits.max_bytes,
        }
    }

    /// Whether `line` (cut and redacted already), printed at `at`, is kept.
    pub fn admit(&mut self, at: DateTime<Utc>, line: &str) -> Verdict {
        if self.exhausted {
            self.dropped += 1;
            return Verdict::Drop;
        }
        if self.used + line.len() as u64 > self.limits.max_bytes {
            self.exhausted = true;
            self.dropped += 1;
            return Verdict::Drop;
        }
        let second = at.timestamp();
        if second != self.second {
            self.second = second;
            self.kept_in_second = 0;
        }
        if self.limits.lines_per_second > 0 && self.kept_in_second >= self.limits.lines_per_second {
            self.dropped += 1;
            return Verdict::Drop;
        }
        self.kept_in_second += 1;
        self.used += line.len() as u64;
        Verdict::Keep
    }

    /// The summary of the lines dropped since the last one, if any were;
    /// taking it starts the count again.
    pub fn take_summary(&mut self) -> Option<String> {
        if self.dropped == 0 {
            return None;
        }
        let dropped = std::mem::take(&mut self.dropped);
        let why = if self.exhausted {
            format!(
                "the agent's log reached its budget of {} bytes (agents.logs.max_bytes)",
                self.limits.max_bytes
            )
        } else {
            format!(
                "over {} lines per second (agents.logs.lines_per_second)",
                self.limits.lines_per_second
            )
        };
        let lines = if dropped == 1 { "line" } else { "lines" };
        Some(format!("[icarus] {dropped} {lines} dropped: {why}"))
    }

    /// Whether a summary is waiting and the next kept line should carry it
    /// first: after a burst over the rate, once lines are kept again.
    pub fn has_dropped(&self) -> bool {
        self.dropped > 0
    }

    /// Whether the budget is used up: nothing more will be kept.
    pub fn is_exhausted(&self) -> bool {
        self.exhausted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64, nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + second, nanos).unwrap()
    }

    fn limits() -> LogLimits {
        LogLimits {
            max_line_bytes: 16,
            lines_per_second: 3,
            max_bytes: 40,
        }
    }

    #[test]
    fn chunks_become_lines_at_newlines_with_the_time_each_line_started() {
        let mut splitter = LineSplitter::new(16);
        assert_eq!(splitter.push(at(0, 0), b"par"), vec![]);
        let lines = splitter.push(at(1, 0), b"tial\nwhole\nrest");
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["partial", "whole"]);
        assert_eq!(lines[0].at, at(0, 0));
        assert_eq!(lines[1].at, at(1, 0));
        assert_eq!(splitter.finish().unwrap().text, "rest");
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_and_its_rest_never_buffered() {
        let mut splitter = LineSplitter::new(8);
        for _ in 0..1000 {
            assert!(splitter.push(at(0, 0), b"0123456789").is_empty());
        }
        assert!(splitter.buffer.len() <= 12);
        let lines = splitter.push(at(0, 1), b"end\nnext\n");
        assert_eq!(lines[0].text, format!("01234567{CUT_MARK}"));
        assert_eq!(lines[1].text, "next");
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary_and_marked() {
        assert_eq!(cut("short\n", 16), "short");
        assert_eq!(cut("crlf\r\n", 16), "crlf");
        assert_eq!(cut("ééééé", 5), format!("éé{CUT_MARK}"));
    }

    #[test]
    fn the_agents_token_is_redacted_wherever_it_appears() {
        let line = "GET http://icarus:8000/jobs/x/callback?role=builder&token=abc123XYZ done";
        assert_eq!(
            redact(line, &["abc123XYZ"]),
            "GET http://icarus:8000/jobs/x/callback?role=builder&token=[redacted] done"
        );
        assert_eq!(redact("echo abc123XYZ", &["abc123XYZ"]), "echo [redacted]");
    }

    #[test]
    fn a_token_cut_at_either_end_of_the_text_is_redacted_too() {
        let secret = "abcdefghijklmnopqrstuvwxyz";
        let cut_line = format!("calling abcdefghijkl{CUT_MARK}");
        assert_eq!(
            redact(&cut_line, &[secret]),
            format!("calling [redacted]{CUT_MARK}")
        );
        assert_eq!(
            redact("nopqrstuvwxyz and then", &[secret]),
            "[redacted] and then"
        );
        assert_eq!(
            redact("ends with abc", &[secret]),
            "ends with abc",
            "too short to tell"
        );
    }

    #[test]
    fn any_token_parameter_is_redacted_but_not_a_longer_name() {
        assert_eq!(
            redact("url ?TOKEN=s3cr3t&x=1", &[]),
            "url ?TOKEN=[redacted]&x=1"
        );
        assert_eq!(redact("mytoken=visible", &[]), "mytoken=visible");
        assert_eq!(redact("token= empty", &[]), "token= empty");
        assert_eq!(
            redact("a token=1 b token=2", &[]),
            "a token=[redacted] b token=[redacted]"
        );
    }

    #[test]
    fn lines_over_the_rate_are_dropped_and_summarised_when_lines_pass_again() {
        let mut gate = Gate::new(limits(), 0);
        let verdicts: Vec<Verdict> = (0..5).map(|n| gate.admit(at(0, n), "x")).collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Keep).count(), 3);
        assert!(gate.has_dropped());
        assert_eq!(gate.admit(at(1, 0), "y"), Verdict::Keep);
        let summary = gate.take_summary().unwrap();
        assert!(summary.contains("2 lines dropped"), "{summary}");
        assert!(summary.contains("lines_per_second"), "{summary}");
        assert_eq!(gate.take_summary(), None);
    }

    #[test]
    fn the_budget_counts_what_was_kept_before_and_drops_everything_after() {
        let mut gate = Gate::new(limits(), 30);
        assert_eq!(gate.admit(at(0, 0), "0123456789"), Verdict::Keep);
        assert_eq!(gate.admit(at(1, 0), "z"), Verdict::Drop);
        assert!(gate.is_exhausted());
        assert_eq!(gate.admit(at(9, 0), ""), Verdict::Drop);
        let summary = gate.take_summary().unwrap();
        assert!(summary.contains("2 lines dropped"), "{summary}");
        assert!(summary.contains("max_bytes"), "{summary}");
    }

    #[test]
    fn no_rate_limit_when_lines_per_second_is_zero() {
        let mut gate = Gate::new(
            LogLimits {
                lines_per_second: 0,
                ..limits()
            },
            0,
        );
        assert!((0..10).all(|n| gate.admit(at(0, n), "ab") == Verdict::Keep));
    }
}
