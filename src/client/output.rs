//! How the client commands print: aligned tables and text for people, JSON
//! or YAML documents for scripts, colours only on a terminal and never with
//! `NO_COLOR` set.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::args::Format;
use super::error::Result;
use crate::job::Phase;

/// A colour (or weight) for a piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Plain,
    Bold,
    Dim,
    Red,
    Green,
    Yellow,
    Blue,
    Cyan,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Plain => "",
            Colour::Bold => "1",
            Colour::Dim => "2",
            Colour::Red => "31",
            Colour::Green => "32",
            Colour::Yellow => "33",
            Colour::Blue => "34",
            Colour::Cyan => "36",
        }
    }

    /// How a phase is shown: green done, red ended badly, yellow waiting for
    /// a human, blue at work.
    pub fn of(phase: Phase) -> Colour {
        match phase {
            Phase::Completed => Colour::Green,
            Phase::Failed | Phase::Rejected | Phase::Cancelled | Phase::Expired => Colour::Red,
            Phase::AwaitingApproval => Colour::Yellow,
            Phase::Building | Phase::Checking | Phase::Approved => Colour::Blue,
            Phase::Pending => Colour::Plain,
        }
    }
}

/// Where standard output goes: whether it is a terminal, and whether it
/// may be coloured.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    /// Standard output is a terminal that can redraw (not `TERM=dumb`).
    pub interactive: bool,
    /// Colours are wanted: a terminal, and `NO_COLOR` unset or empty.
    pub colour: bool,
}

impl Terminal {
    pub fn detect() -> Terminal {
        let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
        let interactive = std::io::stdout().is_terminal() && !dumb;
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Terminal {
            interactive,
            colour: interactive && !no_colour,
        }
    }

    /// `text` in `colour`, when colours are wanted.
    pub fn paint(&self, colour: Colour, text: &str) -> String {
        if !self.colour || colour == Colour::Plain || text.is_empty() {
            return text.to_owned();
        }
        format!("\x1b[{}m{text}\x1b[0m", colour.code())
    }

    pub fn phase(&self, phase: Phase) -> String {
        self.paint(Colour::of(phase), phase.as_str())
    }
}

/// Writes `text` to standard output. A reader that went away (`| head`)
/// ends the output quietly, as for any Unix tool.
pub fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `value` as a JSON (pretty) or YAML document, ending with a newline.
pub fn document(value: &Value, format: Format) -> String {
    match format {
        Format::Yaml => serde_yaml::to_string(value).unwrap_or_default(),
        Format::Json | Format::Table => {
            let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
            text.push('\n');
            text
        }
    }
}

/// `value` on one line, for a stream of documents (`list --watch -o json`):
/// JSON lines, or YAML documents separated by `---`.
pub fn streamed(value: &Value, format: Format) -> String {
    match format {
        Format::Yaml => format!("---\n{}", document(value, format)),
        _ => format!("{}\n", serde_json::to_string(value).unwrap_or_default()),
    }
}

/// A table: a header row and aligned columns, the last one unpadded.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<(String, Colour)>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<(String, Colour)>) {
        self.rows.push(cells);
    }

    /// The widths every row is padded to (the header's included).
    pub fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (column, (text, _)) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(column) {
                    *w = (*w).max(width(text));
                }
            }
        }
        widths
    }

    /// The header line, padded to `widths`.
    pub fn header(&self, terminal: &Terminal, widths: &[usize]) -> String {
        let cells: Vec<(String, Colour)> = self
            .headers
            .iter()
            .map(|h| ((*h).to_owned(), Colour::Bold))
            .collect();
        line(terminal, &cells, widths)
    }

    /// The rows alone, padded to `widths`.
    pub fn body(&self, terminal: &Terminal, widths: &[usize]) -> String {
        self.rows
            .iter()
            .map(|row| line(terminal, row, widths))
            .collect()
    }

    pub fn render(&self, terminal: &Terminal) -> String {
        let widths = self.widths();
        self.header(terminal, &widths) + &self.body(terminal, &widths)
    }
}

fn line(terminal: &Terminal, cells: &[(String, Colour)], widths: &[usize]) -> String {
    let last = cells.len().saturating_sub(1);
    let mut text = String::new();
    for (column, (cell, colour)) in cells.iter().enumerate() {
        text.push_str(&terminal.paint(*colour, cell));
        if column < last {
            let pad = widths
                .get(column)
                .map_or(0, |w| w.saturating_sub(width(cell)));
            text.push_str(&" ".repeat(pad + 3));
        }
    }
    let mut text = text.trim_end().to_owned();
    text.push('\n');
    text
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// The first line of `text`, at most `max` characters (an ellipsis says
/// when something was cut).
pub fn one_line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("").trim_end();
    let cut = first.chars().count() > max || text.trim_end().lines().nth(1).is_some();
    let mut shown: String = first
        .chars()
        .take(max.saturating_sub(usize::from(cut)))
        .collect();
    if cut {
        shown.push('…');
    }
    shown
}

/// How long ago `then` was, as kubectl shows ages: `42s`, `5m`, `3h`, `2d`.
pub fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - then).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A duration in seconds with a tenth: `12.3s`, or `4m05s` past a minute.
pub fn duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = seconds as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// A timestamp as people read it: `2024-05-01 12:00:03 UTC`.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Terminal {
        Terminal {
            interactive: false,
            colour: false,
        }
    }

    #[test]
    fn a_table_aligns_its_columns_and_leaves_the_last_unpadded() {
        let mut table = Table::new(&["JOB", "STATUS", "TASK"]);
        table.row(vec![
            ("a".to_owned(), Colour::Plain),
            ("awaiting_approval".to_owned(), Colour::Yellow),
            ("Add login".to_owned(), Colour::Plain),
        ]);
        assert_eq!(
            table.render(&plain()),
            "JOB   STATUS              TASK\na     awaiting_approval   Add login\n"
        );
    }

    #[test]
    fn colours_only_when_wanted() {
        let colour = Terminal {
            interactive: true,
            colour: true,
        };
        assert_eq!(colour.phase(Phase::Failed), "\x1b[31mfailed\x1b[0m");
        assert_eq!(plain().phase(Phase::Failed), "failed");
    }

    #[test]
    fn long_or_many_lined_text_is_cut_to_one_line() {
        assert_eq!(one_line("Add login\n\nWith a test.", 40), "Add login…");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abc", 4), "abc");
    }

    #[test]
    fn ages_and_durations_read_as_kubectl_shows_them() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(42), now), "42s");
        assert_eq!(age(now - chrono::Duration::minutes(5), now), "5m");
        assert_eq!(age(now - chrono::Duration::hours(3), now), "3h");
        assert_eq!(age(now - chrono::Duration::days(2), now), "2d");
        assert_eq!(duration(12.34), "12.3s");
        assert_eq!(duration(245.0), "4m05s");
    }
}
