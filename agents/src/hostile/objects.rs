//! Git's loose-object format, written without the git program (the agent
//! images have none): enough to build a real repository of blobs, trees and
//! commits that `git fsck --strict` accepts. The `smuggle` attack uses it to
//! hand the orchestrator a history it did not make.
//!
//! An object is `"<type> <length>\0<body>"`; its id is the SHA-1 of exactly
//! those bytes, and it is stored zlib-compressed at `objects/<2 hex>/<38 hex>`.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::ZlibEncoder;
use sha1::{Digest, Sha1};

/// A SHA-1 object id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectId([u8; 20]);

impl ObjectId {
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// The kinds of object this writer makes (no tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Blob,
    Tree,
    Commit,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Tree => "tree",
            Kind::Commit => "commit",
        }
    }
}

/// The bytes git hashes and stores: header, NUL, body.
fn framed(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{} {}\0", kind.name(), body.len()).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The id git gives this object.
pub fn id_of(kind: Kind, body: &[u8]) -> ObjectId {
    ObjectId(Sha1::digest(framed(kind, body)).into())
}

/// One entry of a tree: a file (`100644`, `100755`), a symlink (`120000`) or a subtree (`40000`).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub mode: &'a str,
    pub name: &'a str,
    pub id: ObjectId,
}

/// A tree's body: `"<mode> <name>\0<20-byte id>"` per entry, in git's order
/// (by name, a subtree sorting as if its name ended in `/`).
pub fn tree_body(entries: &[Entry<'_>]) -> Vec<u8> {
    let sort_key = |entry: &Entry<'_>| {
        let mut key = entry.name.as_bytes().to_vec();
        if entry.mode == "40000" {
            key.push(b'/');
        }
        key
    };
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(sort_key);
    let mut body = Vec::new();
    for entry in sorted {
        body.extend_from_slice(format!("{} {}\0", entry.mode, entry.name).as_bytes());
        body.extend_from_slice(entry.id.as_bytes());
    }
    body
}

/// A root commit (no parents), author and committer the same.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    pub tree: ObjectId,
    /// `Name <email>`.
    pub identity: &'a str,
    /// Seconds since the epoch, written as UTC.
    pub time: i64,
    pub message: &'a str,
}

impl Commit<'_> {
    pub fn body(&self) -> Vec<u8> {
        let Commit {
            tree,
            identity,
            time,
            message,
        } = self;
        format!(
            "tree {tree}\nauthor {identity} {time} +0000\ncommitter {identity} {time} +0000\n\n{message}"
        )
        .into_bytes()
    }
}

/// Writes loose objects into one git directory's `objects/`.
#[derive(Debug, Clone)]
pub struct ObjectWriter {
    objects: PathBuf,
}

impl ObjectWriter {
    pub fn new(git_dir: &Path) -> ObjectWriter {
        ObjectWriter {
            objects: git_dir.join("objects"),
        }
    }

    /// Stores the object (again, if it exists: the content is the same) and returns its id.
    pub fn write(&self, kind: Kind, body: &[u8]) -> io::Result<ObjectId> {
        let id = id_of(kind, body);
        let hex = id.to_string();
        let dir = self.objects.join(&hex[..2]);
        std::fs::create_dir_all(&dir)?;
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&framed(kind, body))?;
        std::fs::write(dir.join(&hex[2..]), encoder.finish()?)?;
        Ok(id)
    }

    pub fn blob(&self, content: &[u8]) -> io::Result<ObjectId> {
        self.write(Kind::Blob, content)
    }

    pub fn tree(&self, entries: &[Entry<'_>]) -> io::Result<ObjectId> {
        self.write(Kind::Tree, &tree_body(entries))
    }

    pub fn commit(&self, commit: &Commit<'_>) -> io::Result<ObjectId> {
        self.write(Kind::Commit, &commit.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_blob_has_the_id_git_gives_it() {
        // `git hash-object --stdin </dev/null`
        assert_eq!(
            id_of(Kind::Blob, b"").to_string(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    #[test]
    fn the_empty_tree_has_the_id_git_gives_it() {
        assert_eq!(
            id_of(Kind::Tree, &tree_body(&[])).to_string(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
    }

    #[test]
    fn a_blob_of_hello_has_the_id_git_gives_it() {
        assert_eq!(
            id_of(Kind::Blob, b"hello\n").to_string(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn a_tree_of_one_file_has_the_id_git_gives_it() {
        // `printf 'hello\n' > hello.txt && git add hello.txt && git write-tree`
        let hello = id_of(Kind::Blob, b"hello\n");
        let entry = Entry {
            mode: "100644",
            name: "hello.txt",
            id: hello,
        };
        assert_eq!(
            id_of(Kind::Tree, &tree_body(&[entry])).to_string(),
            "aaa96ced2d9a1c8e72c56b253a0e2fe78393feb7"
        );
    }

    #[test]
    fn a_subtree_sorts_as_if_its_name_ended_in_a_slash() {
        let id = id_of(Kind::Blob, b"");
        let file = Entry {
            mode: "100644",
            name: "a.txt",
            id,
        };
        let dir = Entry {
            mode: "40000",
            name: "a",
            id,
        };
        // "a.txt" < "a/" because '.' < '/'.
        let body = tree_body(&[dir, file]);
        assert!(body.starts_with(b"100644 a.txt\0"));
    }

    #[test]
    fn a_written_object_is_stored_compressed_under_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = ObjectWriter::new(dir.path()).blob(b"hello\n").unwrap();
        let stored = std::fs::read(
            dir.path()
                .join("objects/ce/013625030ba8dba906f756967f9e9ca394464a"),
        )
        .unwrap();
        let mut inflated = Vec::new();
        flate2::write::ZlibDecoder::new(&mut inflated)
            .write_all(&stored)
            .unwrap();
        assert_eq!(id, id_of(Kind::Blob, b"hello\n"));
        assert_eq!(inflated, b"blob 6\0hello\n");
    }
}
