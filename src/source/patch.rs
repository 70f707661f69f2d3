//! The JSON form of a unified diff, parsed from the text Git wrote. Pure: the
//! API serves either form from the one stored text.

use serde::Serialize;
use utoipa::ToSchema;

/// Starts the last line of a diff that was cut at its size limit.
pub const TRUNCATION_MARKER: &str = "# icarus: diff truncated, ";
/// Starts the only line of a diff that could not be made, and says why.
pub const NO_DIFF_MARKER: &str = "# icarus: no diff: ";
/// Starts a line, before the diff, naming a workspace path that is not part
/// of the snapshot (`<path>: <why>`).
pub const EXCLUDED_MARKER: &str = "# icarus: not in the snapshot: ";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DiffSummary {
    pub files: Vec<FileChange>,
    pub additions: usize,
    pub deletions: usize,
    /// The diff was longer than the limit; the last file may be incomplete.
    pub truncated: bool,
    /// Workspace paths left out of the snapshot (`.git` metadata, FIFOs...),
    /// each as `<path>: <why>`.
    pub excluded: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileChange {
    pub path: String,
    /// The path before a rename, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// `added`, `modified`, `deleted` or `renamed`.
    pub status: &'static str,
    pub binary: bool,
    pub additions: usize,
    pub deletions: usize,
    pub hunks: Vec<Hunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Hunk {
    /// The `@@ -a,b +c,d @@ context` line.
    pub header: String,
    /// The hunk's lines, each starting with ` `, `+`, `-` or `\`.
    pub lines: Vec<String>,
}

/// Parses `git diff` output (without `--binary`) into files and hunks.
pub fn parse(text: &str) -> DiffSummary {
    let mut files: Vec<FileChange> = Vec::new();
    let mut truncated = false;
    let mut excluded = Vec::new();
    for line in text.lines() {
        if files.is_empty()
            && let Some(path) = line.strip_prefix(EXCLUDED_MARKER)
        {
            excluded.push(path.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("diff --git ") {
            files.push(new_file(rest));
            continue;
        }
        if line.starts_with(TRUNCATION_MARKER) {
            truncated = true;
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        read_line(file, line);
    }
    DiffSummary {
        additions: files.iter().map(|f| f.additions).sum(),
        deletions: files.iter().map(|f| f.deletions).sum(),
        files,
        truncated,
        excluded,
    }
}

fn new_file(header: &str) -> FileChange {
    // `a/<old> b/<new>`; paths with spaces are split at the last " b/".
    let (old, new) = header
        .rsplit_once(" b/")
        .map(|(a, b)| (a.trim_start_matches("a/"), b))
        .unwrap_or((header, header));
    FileChange {
        path: new.to_owned(),
        old_path: (old != new).then(|| old.to_owned()),
        status: if old != new { "renamed" } else { "modified" },
        binary: false,
        additions: 0,
        deletions: 0,
        hunks: Vec::new(),
    }
}

fn read_line(file: &mut FileChange, line: &str) {
    // Inside a hunk every line is content, even one like `--- x` (a removed
    // `-- x`): the file's own `---`/`+++` header comes before its first hunk.
    if let Some(hunk) = file.hunks.last_mut()
        && matches!(line.chars().next(), Some(' ' | '+' | '-' | '\\'))
    {
        match line.as_bytes()[0] {
            b'+' => file.additions += 1,
            b'-' => file.deletions += 1,
            _ => {}
        }
        hunk.lines.push(line.to_owned());
        return;
    }
    if line.starts_with("@@") {
        file.hunks.push(Hunk {
            header: line.to_owned(),
            lines: Vec::new(),
        });
    } else if line.starts_with("new file mode") {
        file.status = "added";
    } else if line.starts_with("deleted file mode") {
        file.status = "deleted";
    } else if line.starts_with("Binary files ") {
        file.binary = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "\
diff --git a/schema.sql b/schema.sql
index 4444444..5555555 100644
--- a/schema.sql
+++ b/schema.sql
@@ -1 +1 @@
--- old comment
+-- new comment
diff --git a/TASK.md b/TASK.md
new file mode 100644
index 0000000..45b983b
--- /dev/null
+++ b/TASK.md
@@ -0,0 +1,2 @@
+# Task
+hello
diff --git a/src/app.py b/src/app.py
index 1111111..2222222 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,3 @@
 import os
-print('old')
+print('new')
 x = 1
diff --git a/logo.png b/logo.png
deleted file mode 100644
index 3333333..0000000
Binary files a/logo.png and /dev/null differ
";

    #[test]
    fn files_are_classified_and_their_lines_counted() {
        let summary = parse(DIFF);
        let statuses: Vec<(&str, &str, usize, usize)> = summary
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.status, f.additions, f.deletions))
            .collect();
        assert_eq!(
            statuses,
            [
                ("schema.sql", "modified", 1, 1),
                ("TASK.md", "added", 2, 0),
                ("src/app.py", "modified", 1, 1),
                ("logo.png", "deleted", 0, 0)
            ]
        );
        assert!(summary.files[3].binary);
        assert_eq!(summary.files[2].hunks[0].header, "@@ -1,3 +1,3 @@");
        assert_eq!(summary.files[2].hunks[0].lines.len(), 4);
        assert_eq!((summary.additions, summary.deletions), (4, 2));
        assert!(!summary.truncated);
    }

    #[test]
    fn a_cut_diff_says_it_is_truncated() {
        let text = format!("{DIFF}{TRUNCATION_MARKER}1234 more bytes not shown\n");
        assert!(parse(&text).truncated);
        assert_eq!(parse(&text).files.len(), 4);
    }

    #[test]
    fn paths_left_out_of_the_snapshot_are_listed_apart_from_the_files() {
        let text = format!("{EXCLUDED_MARKER}.git: Git metadata\n{DIFF}");
        let summary = parse(&text);
        assert_eq!(summary.excluded, [".git: Git metadata"]);
        assert_eq!(summary.files.len(), 4);
    }

    #[test]
    fn an_empty_diff_has_no_files() {
        assert_eq!(parse("").files, []);
    }
}
