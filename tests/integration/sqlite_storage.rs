//! A SQLite file that cannot be written while Icarus serves: writes and
//! `/readyz` answer 503 saying why, never 500, and service resumes by
//! itself once the file can be written again.
//!
//! The tests run as root, which permission bits do not stop, so a file is
//! made unwritable the ways that stop root too: the immutable attribute
//! (`chattr +i`: no write, not even through a descriptor opened earlier,
//! and no open for writing), and a file system of its own that is full (a
//! small tmpfs). Where neither can be done (not root, no `chattr`, no
//! `mount`), a test says so and passes without running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use icarus::store::Unavailable;
use serde_json::json;

use crate::support::{TestServer, detail, eventually, sqlite_store};

/// Files no one may write until this is dropped (`chattr +i`).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: Vec<PathBuf>) -> Option<Immutable> {
        let frozen = Immutable(paths);
        if run("chattr", ["+i".as_ref()].into_iter().chain(frozen.args())) {
            Some(frozen)
        } else {
            eprintln!("skipped: cannot make files immutable here (needs root and chattr)");
            None
        }
    }

    fn args(&self) -> impl Iterator<Item = &std::ffi::OsStr> {
        self.0.iter().map(|path| path.as_os_str())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        run("chattr", ["-i".as_ref()].into_iter().chain(self.args()));
    }
}

/// A file system of its own, small enough to fill (a tmpfs), until dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let options = ["-t", "tmpfs", "-o", "size=8m", "tmpfs"].map(std::ffi::OsStr::new);
        if run("mount", options.into_iter().chain([dir.path().as_os_str()])) {
            Some(SmallDisk(dir))
        } else {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            None
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes a file until no byte more fits; removing it makes room again.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        let full = loop {
            if let Err(error) = file.write_all(&block).and_then(|()| file.sync_all()) {
                break error;
            }
        };
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the orchestrator's last connections may still be closing.
        run("umount", ["-l".as_ref(), self.path().as_os_str()]);
    }
}

fn run<'a>(program: &str, args: impl IntoIterator<Item = &'a std::ffi::OsStr>) -> bool {
    Command::new(program)
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The database file and its write-ahead log: what a write goes to.
fn written_files(database: &Path) -> Vec<PathBuf> {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    let files = vec![database.to_owned(), PathBuf::from(wal)];
    assert!(files.iter().all(|file| file.exists()), "{files:?}");
    files
}

/// Ready again by itself, and a spawn is created; of the jobs, only the
/// one spawned before ("before") and this one are stored.
async fn service_resumes_without_the_refused_job(server: &TestServer) {
    eventually(Duration::from_secs(15), || async {
        let (code, _) = server.get("/readyz").await;
        (code == 200).then_some(())
    })
    .await;
    server.spawn("after").await;
    let (code, jobs) = server.get("/jobs").await;
    assert_eq!(code, 200, "{jobs}");
    let mut stored: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["task"].as_str().unwrap())
        .collect();
    stored.sort_unstable();
    assert_eq!(
        stored,
        ["after", "before"],
        "a refused spawn stores nothing"
    );
}

#[tokio::test]
async fn an_unwritable_sqlite_file_makes_writes_answer_503_and_service_resumes_by_itself() {
    let server = TestServer::sqlite().await;
    let before = server.spawn("before").await;
    let Some(frozen) = Immutable::set(written_files(&server.sqlite_file())) else {
        return;
    };

    let (code, body) = server.post("/jobs/spawn", json!({"task": "refused"})).await;
    assert_eq!(code, 503, "{body}");
    // SQLite says SQLITE_IOERR where the descriptor it holds cannot write,
    // SQLITE_READONLY where it could open the file for reading only.
    let why = [Unavailable::Failing, Unavailable::ReadOnly];
    assert!(
        why.map(Unavailable::message).contains(&detail(&body)),
        "{body}"
    );
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    let why = why.map(|why| format!("database {why}"));
    assert!(why.iter().any(|why| why == detail(&body)), "{body}");

    drop(frozen);
    service_resumes_without_the_refused_job(&server).await;
    let (code, body) = server.get(&format!("/jobs/{before}/status")).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_full_disk_makes_writes_answer_503_and_service_resumes_once_there_is_space() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let url = format!("sqlite://{}/icarus.db", disk.path().display());
    let server = TestServer::on_database(&url, |_| {}).await;
    server.spawn("before").await;
    let filler = disk.fill();

    let (code, body) = server.post("/jobs/spawn", json!({"task": "refused"})).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(detail(&body), Unavailable::Full.message());
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(detail(&body), "database full");

    std::fs::remove_file(filler).unwrap();
    service_resumes_without_the_refused_job(&server).await;
}

/// SQLite opens a file it cannot open for writing read-only, without a
/// word; such a connection never writes again. None may join the pool.
#[tokio::test]
async fn connections_opened_while_the_file_is_unwritable_do_not_stay_read_only() {
    let (store, dir) = sqlite_store().await;
    let database = dir.path().join("db/icarus.db");
    let Some(frozen) = Immutable::set(written_files(&database)) else {
        return;
    };
    // More at once than the pool holds idle: it must open new connections.
    let pings = (0..16).map(|_| store.ping());
    for ping in futures::future::join_all(pings).await {
        assert!(ping.is_err(), "nothing can be written");
    }

    drop(frozen);
    let writes = (0..16).map(|n| {
        let store = store.clone();
        async move {
            store
                .create_job(&crate::support::new_job(&format!("{n}")))
                .await
        }
    });
    for write in futures::future::join_all(writes).await {
        write.expect("every connection in the pool can write");
    }
}
