//! Recording a work tree as a Git tree, reading it the way an attacker
//! cannot bend.
//!
//! The orchestrator walks the workspace itself and hands git the bytes
//! (`git fast-import`), so nothing in the tree steers what is recorded:
//! no `.gitattributes` filter or line-ending rule, no `.gitignore`, no
//! `.git` directory taken for a repository. Regular files are recorded
//! with their executable bit, symbolic links as links (their target is
//! the content; they are never followed), and a file is opened without
//! following links. What Git cannot store (a `.git` path, a FIFO or a
//! device) is left out and listed, so the reviewer sees it. Every byte
//! is bounded: a workspace over the limits fails the job.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{ChildStdin, Stdio};

use super::super::{Result, SourceError};

/// The ref the snapshot's commit is written to; its tree is the snapshot.
pub const SNAPSHOT_REF: &str = "refs/icarus/snapshot";
/// Directories nested deeper than this fail the snapshot: the walk recurses,
/// and no real project needs more.
const MAX_DEPTH: usize = 256;

/// How much of a workspace is recorded before the job fails instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    pub max_bytes: u64,
    pub max_files: u64,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        SnapshotLimits {
            max_bytes: 1024 * 1024 * 1024,
            max_files: 100_000,
        }
    }
}

/// A path that is not part of the snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub path: String,
    pub why: &'static str,
}

/// A work tree recorded: its tree's id, and what was left out.
#[derive(Debug)]
pub struct Recorded {
    pub tree: String,
    pub excluded: Vec<Excluded>,
}

/// Writes the work tree at `workspace` into the repository `git_dir` as the
/// commit of [`SNAPSHOT_REF`]; returns its tree and what was left out.
/// Blocking. The tree's id is fast-import's own answer (an `ls` of the
/// commit's root at its end), so no second git asks for it.
pub fn record(git_dir: &Path, workspace: &Path, limits: SnapshotLimits) -> Result<Recorded> {
    let mut command = super::command::git(Some(git_dir));
    // A small import is kept as the pack it is written as: unpacking it
    // into loose objects would run a second git (`unpack-objects`).
    command
        .args(["-c", "fastimport.unpackLimit=0"])
        .args(["fast-import", "--quiet", "--done", "--force"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| SourceError::transient("cannot run git fast-import", e))?;
    let stdin = child.stdin.take().expect("stdin was piped");
    let mut writer = Writer {
        out: io::BufWriter::with_capacity(256 * 1024, stdin),
        limits,
        bytes: 0,
        files: 0,
        excluded: Vec::new(),
    };
    let written = writer.write_all_of(workspace);
    // Closing stdin ends the stream; without `done` git keeps nothing.
    let Writer { out, excluded, .. } = writer;
    drop(out);
    let output = child
        .wait_with_output()
        .map_err(|e| SourceError::transient("git fast-import", e))?;
    match written {
        // Our own refusal (a limit, an unreadable file) says most.
        Err(error @ SourceError::Permanent(_)) => Err(error),
        _ if !output.status.success() => Err(SourceError::Permanent(format!(
            "recording the snapshot failed: {}",
            super::command::last_lines(String::from_utf8_lossy(&output.stderr).trim(), 5)
        ))),
        Err(error) => Err(error),
        Ok(()) => match root_tree(&output.stdout) {
            Some(tree) => Ok(Recorded { tree, excluded }),
            None => Err(SourceError::transient(
                "record the snapshot",
                "git fast-import did not name the snapshot's tree",
            )),
        },
    }
}

/// The tree id in fast-import's answer to `ls ""`: `040000 tree <id>\t`.
fn root_tree(answer: &[u8]) -> Option<String> {
    let answer = std::str::from_utf8(answer).ok()?;
    let mut fields = answer.split(['\t', ' ']);
    let (Some("040000"), Some("tree"), Some(id)) = (fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    let is_id = matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit());
    is_id.then(|| id.to_owned())
}

struct Writer {
    out: io::BufWriter<ChildStdin>,
    limits: SnapshotLimits,
    bytes: u64,
    files: u64,
    excluded: Vec<Excluded>,
}

impl Writer {
    fn write_all_of(&mut self, workspace: &Path) -> Result<()> {
        self.out
            .write_all(
                format!(
                    "commit {SNAPSHOT_REF}\ncommitter Icarus <icarus@localhost> 0 +0000\ndata 0\ndeleteall\n"
                )
                .as_bytes(),
            )
            .map_err(stream_error)?;
        if workspace.exists() {
            self.walk(workspace, b"", 0)?;
        }
        // Still in the commit: its root tree, answered on standard output.
        self.out
            .write_all(b"ls \"\"\ndone\n")
            .map_err(stream_error)?;
        self.out.flush().map_err(stream_error)
    }

    /// Records the entries of `dir`, whose path in the tree is `prefix`.
    fn walk(&mut self, dir: &Path, prefix: &[u8], depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(SourceError::Permanent(format!(
                "the workspace nests directories deeper than {MAX_DEPTH} levels, at {}",
                String::from_utf8_lossy(&prefix[..prefix.len().min(200)])
            )));
        }
        let mut entries = std::fs::read_dir(dir)
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .map_err(|e| unreadable(prefix, &e))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name();
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let full = entry.path();
            if is_git_metadata_name(name.as_bytes()) {
                self.exclude(
                    &path,
                    "Git metadata: a repository's own files are never part of a change",
                );
                continue;
            }
            let metadata = std::fs::symlink_metadata(&full).map_err(|e| unreadable(&path, &e))?;
            let kind = metadata.file_type();
            if kind.is_symlink() {
                self.link(&path, &full)?;
            } else if kind.is_dir() {
                self.walk(&full, &path, depth + 1)?;
            } else if kind.is_file() {
                self.file(&path, &full, metadata.permissions().mode())?;
            } else {
                self.exclude(&path, "not a regular file, directory or symbolic link");
            }
        }
        Ok(())
    }

    fn exclude(&mut self, path: &[u8], why: &'static str) {
        self.excluded.push(Excluded {
            path: String::from_utf8_lossy(path).into_owned(),
            why,
        });
    }

    fn count(&mut self, path: &[u8], bytes: u64) -> Result<()> {
        self.files += 1;
        self.bytes += bytes;
        if self.files > self.limits.max_files {
            return Err(SourceError::Permanent(format!(
                "the workspace holds more than {} files (workspace.snapshot_max_files)",
                self.limits.max_files
            )));
        }
        if self.bytes > self.limits.max_bytes {
            return Err(SourceError::Permanent(format!(
                "the workspace holds more than {} bytes (workspace.snapshot_max_bytes), reached at {}",
                self.limits.max_bytes,
                String::from_utf8_lossy(path)
            )));
        }
        Ok(())
    }

    fn link(&mut self, path: &[u8], full: &Path) -> Result<()> {
        let target = std::fs::read_link(full).map_err(|e| unreadable(path, &e))?;
        let target = target.as_os_str().as_bytes();
        self.count(path, target.len() as u64)?;
        self.entry_header("120000", path, target.len() as u64)?;
        self.out.write_all(target).map_err(stream_error)?;
        self.out.write_all(b"\n").map_err(stream_error)
    }

    fn file(&mut self, path: &[u8], full: &Path, mode: u32) -> Result<()> {
        // Opened without following a link and without blocking on a FIFO
        // swapped in since it was looked at; then checked again.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(full)
            .map_err(|e| unreadable(path, &e))?;
        let metadata = file.metadata().map_err(|e| unreadable(path, &e))?;
        if !metadata.is_file() {
            self.exclude(path, "not a regular file, directory or symbolic link");
            return Ok(());
        }
        let length = metadata.len();
        self.count(path, length)?;
        let git_mode = if mode & 0o100 != 0 {
            "100755"
        } else {
            "100644"
        };
        self.entry_header(git_mode, path, length)?;
        let copied = copy_exactly(&mut file, &mut self.out, length).map_err(stream_error)?;
        if copied != length {
            return Err(SourceError::transient(
                "record the snapshot",
                format!(
                    "{} changed while it was being recorded",
                    String::from_utf8_lossy(path)
                ),
            ));
        }
        self.out.write_all(b"\n").map_err(stream_error)
    }

    fn entry_header(&mut self, mode: &str, path: &[u8], length: u64) -> Result<()> {
        let mut line = format!("M {mode} inline ").into_bytes();
        line.extend_from_slice(&quote_path(path));
        line.extend_from_slice(format!("\ndata {length}\n").as_bytes());
        self.out.write_all(&line).map_err(stream_error)
    }
}

/// Copies at most `length` bytes; returns how many there were.
fn copy_exactly(file: &mut File, out: &mut impl Write, length: u64) -> io::Result<u64> {
    io::copy(&mut file.take(length), out)
}

/// A name Git treats as its own metadata in any spelling a checkout on some
/// filesystem would resolve to `.git` (`.GIT`, `.git.`, `git~1`).
fn is_git_metadata_name(name: &[u8]) -> bool {
    let trimmed = name
        .iter()
        .rposition(|&b| b != b'.' && b != b' ')
        .map_or(&name[..0], |end| &name[..=end]);
    trimmed.eq_ignore_ascii_case(b".git") || name.eq_ignore_ascii_case(b"git~1")
}

/// fast-import takes a path as it is unless it starts with a quote or
/// holds a line break; then it is C-quoted.
fn quote_path(path: &[u8]) -> Vec<u8> {
    if !path.starts_with(b"\"") && !path.contains(&b'\n') {
        return path.to_vec();
    }
    let mut quoted = vec![b'"'];
    for &byte in path {
        match byte {
            b'"' => quoted.extend_from_slice(b"\\\""),
            b'\\' => quoted.extend_from_slice(b"\\\\"),
            b'\n' => quoted.extend_from_slice(b"\\n"),
            other => quoted.push(other),
        }
    }
    quoted.push(b'"');
    quoted
}

fn unreadable(path: &[u8], error: &io::Error) -> SourceError {
    SourceError::Permanent(format!(
        "cannot read {} in the workspace: {error}",
        if path.is_empty() {
            "the top directory".into()
        } else {
            String::from_utf8_lossy(path)
        }
    ))
}

fn stream_error(error: io::Error) -> SourceError {
    SourceError::transient("writing the snapshot to git", error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_read_from_fast_imports_answer_and_nothing_else_passes_for_one() {
        let tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        assert_eq!(
            root_tree(format!("040000 tree {tree}\t\n").as_bytes()).as_deref(),
            Some(tree)
        );
        for answer in [
            "".to_owned(),
            "missing \n".to_owned(),
            format!("100644 blob {tree}\t\n"),
            "040000 tree not-an-object-id\t\n".to_owned(),
            format!("040000 tree {}\t\n", &tree[..39]),
        ] {
            assert_eq!(root_tree(answer.as_bytes()), None, "{answer:?}");
        }
    }

    #[test]
    fn every_spelling_of_the_git_directory_is_metadata() {
        for name in [".git", ".GIT", ".Git", ".git.", ".git ", "git~1", "GIT~1"] {
            assert!(is_git_metadata_name(name.as_bytes()), "{name}");
        }
        for name in [".github", "git", ".gitignore", ".gitattributes", "a.git"] {
            assert!(!is_git_metadata_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_path_with_a_line_break_or_a_leading_quote_is_quoted() {
        assert_eq!(quote_path(b"src/a b.rs"), b"src/a b.rs");
        assert_eq!(quote_path(b"a\nb"), b"\"a\\nb\"");
        assert_eq!(quote_path(b"\"x\\"), b"\"\\\"x\\\\\"");
    }
}
