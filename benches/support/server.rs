//! One `icarus serve` process (this build's binary: release under
//! `cargo bench`, debug in the suite's test) on a SQLite file in a
//! directory of its own, with the Docker runtime and the default agents'
//! network. The sentinel is off: the benchmarks load the host on purpose,
//! and admission must not answer that with 503s.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// An orchestrator's files: its configuration, database, workspaces and log.
pub struct Server {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    pub client: reqwest::Client,
}

impl Server {
    /// An orchestrator in `dir` (not started), with `max_concurrent_jobs`.
    pub fn configured(dir: &Path, max_concurrent_jobs: usize) -> Server {
        let port = free_port();
        let config = format!(
            "orchestrator:\n  port: {port}\n  max_concurrent_jobs: {max_concurrent_jobs}\n\
             sentinel:\n  enabled: false\n\
             workspace:\n  base_path: {workspaces}\n\
             database:\n  url: {database}\n\
             logging:\n  level: warn\n",
            workspaces = dir.join("workspaces").display(),
            database = database_url(dir),
        );
        std::fs::write(dir.join("icarus.yaml"), config).unwrap();
        Server {
            dir: dir.to_owned(),
            port,
            child: None,
            client: reqwest::Client::new(),
        }
    }

    /// Starts the binary and waits until `/readyz` answers 200: how long that took.
    pub async fn start(&mut self) -> Duration {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("icarus.log"))
            .unwrap();
        let started = Instant::now();
        let child = Command::new(super::icarus_binary())
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join("icarus.yaml"))
            .env_remove("DATABASE_URL")
            .env_remove("ORCHESTRATOR_PORT")
            .env_remove("ORCHESTRATOR_HOST")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_until_ready().await;
        started.elapsed()
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = self.url("/readyz");
        loop {
            if let Ok(answer) = self.client.get(&url).send().await
                && answer.status() == 200
            {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "icarus serve did not become ready ({exited:?}); its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGKILL: nothing is cleaned up, as in a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// SIGTERM, as an operator stops it, and waits for it to exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn database_url(&self) -> String {
        database_url(&self.dir)
    }

    /// The `icarus.instance` label of its agents (and the suffix of their network).
    pub fn instance(&self) -> String {
        icarus::runtime::instance_name(&self.database_url())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("icarus.log")).unwrap_or_default()
    }

    /// A number from its `/metrics`: the first sample whose series starts with `series`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|line| line.starts_with(series))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Server {
    /// Whatever happened, no agent or network of this orchestrator is left:
    /// a process still running is killed, then its containers and its
    /// agents' network are removed.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
        remove_leftovers_of(&self.instance());
    }
}

/// Removes what an orchestrator of `instance` left on the engine: its
/// containers (volumes too) and its agents' network, which would otherwise
/// use up the engine's address pools over many runs.
pub fn remove_leftovers_of(instance: &str) {
    let label = format!("label=icarus.instance={instance}");
    if let Ok(output) = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &label])
        .output()
    {
        let ids = String::from_utf8_lossy(&output.stdout);
        for id in ids.split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v", id])
                .output();
        }
    }
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &format!("icarus-agents-{instance}")])
        .output();
}

/// The SQLite database of an orchestrator whose files are in `dir`.
pub fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("icarus.db").display())
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
