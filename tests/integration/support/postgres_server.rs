//! A PostgreSQL server of one test's own, to stop and start under load:
//! `initdb` into a temporary directory, `pg_ctl` on a free port. The
//! shared server `scripts/test` starts cannot be stopped by one test
//! without failing the others. The binaries are found where `scripts/test`
//! finds them (the newest `/usr/lib/postgresql/*/bin`), and run as the
//! `postgres` user when the tests run as root, since PostgreSQL refuses root.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

pub struct PostgresServer {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
}

impl PostgresServer {
    /// A new cluster, started; `None` (said on stderr) where PostgreSQL is
    /// not installed.
    pub async fn start() -> Option<PostgresServer> {
        let Some(bin) = server_binaries() else {
            eprintln!(
                "skipped: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin; install postgresql"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            run("chown", [os("postgres:"), dir.path().into()]).await;
        }
        let port = free_port();
        let server = PostgresServer { bin, dir, port };
        let data = server.data();
        server
            .pg(
                "initdb",
                [
                    os("-D"),
                    data,
                    os("-A"),
                    os("trust"),
                    os("-U"),
                    os("postgres"),
                ],
            )
            .await;
        server.start_again().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it on the same port and data, and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").into_os_string();
        let args = [os("-D"), self.data(), os("-l"), log, os("-w"), os("-o")];
        self.pg(
            "pg_ctl",
            args.into_iter().chain([options.into(), os("start")]),
        )
        .await;
    }

    /// Stops it as a crash would: no checkpoint, connections cut.
    pub async fn stop_immediately(&self) {
        self.pg("pg_ctl", self.stop_args()).await;
    }

    fn stop_args(&self) -> [OsString; 5] {
        [os("-D"), self.data(), os("-m"), os("immediate"), os("stop")]
    }

    fn data(&self) -> OsString {
        self.dir.path().join("data").into_os_string()
    }

    async fn pg(&self, program: &str, args: impl IntoIterator<Item = OsString>) {
        let (program, mut line) = self.command_line(program);
        line.extend(args);
        run(program, line).await;
    }

    /// What runs one of its programs: itself, or through `runuser` as root.
    fn command_line(&self, program: &str) -> (OsString, Vec<OsString>) {
        let program = self.bin.join(program).into_os_string();
        if running_as_root() {
            let line = vec![os("-u"), os("postgres"), os("--"), program];
            (os("runuser"), line)
        } else {
            (program, Vec::new())
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let (program, line) = self.command_line("pg_ctl");
        let _ = std::process::Command::new(program)
            .args(line)
            .args(self.stop_args())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn os(text: &str) -> OsString {
    OsString::from(text)
}

/// Runs a command to its end; fails the test with its output if it fails.
async fn run(program: impl AsRef<std::ffi::OsStr>, args: impl IntoIterator<Item = OsString>) {
    let program = program.as_ref();
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {program:?}: {error}"));
    assert!(
        output.status.success(),
        "{program:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The newest installed version's `bin` directory, as `scripts/test` picks it.
fn server_binaries() -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// `/proc/self` belongs to the process's effective user.
fn running_as_root() -> bool {
    Path::new("/proc/self")
        .metadata()
        .is_ok_and(|metadata| metadata.uid() == 0)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
