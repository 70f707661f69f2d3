//! What both reference agents share: the agent contract's environment, the
//! test modes, and a tiny HTTP client for the callback.
//!
//! - [`mode`]: the test modes (`[builder:fail]`, `[checker:exit=4]`, …).
//! - [`markers`]: the task's `[name:value]` markers the modes are read from.
//! - [`hostile`]: the builder's `hostile=<attack>` modes, which plant attacks
//!   on the host in the workspace (`gitconfig`, `hooks`, `smuggle`,
//!   `attributes`, `symlink`, `all`) to test the orchestrator's trust boundary;
//!   [`hostile::objects`] writes git objects without git.
//! - [`callback`]: the HTTP client for `ORCHESTRATOR_CALLBACK`.
//! - [`neighbours`]: the `listen=PORT` and `connect=IP:PORT` modes, for
//!   testing that agents of different jobs cannot reach one another.
//!
//! The agents are static binaries in `FROM scratch` images, so there is no
//! libc resolver to rely on: the callback host is looked up in `/etc/hosts`
//! (where Docker writes `host.docker.internal`) before the system resolver.
#![forbid(unsafe_code)]

pub mod callback;
pub mod hostile;
pub mod markers;
pub mod mode;
pub mod neighbours;

use std::time::Duration;

pub use callback::Callback;
pub use mode::Mode;

/// The agent contract's environment.
#[derive(Debug, Clone)]
pub struct Contract {
    pub job_id: String,
    pub task: String,
    pub role: String,
    /// `TEST_CODE`: tests the job came with (builders only; unset when none).
    pub test_code: Option<String>,
    pub callback: Option<Callback>,
    /// How long one report is retried: [`REPORT_PATIENCE`].
    pub patience: Duration,
}

impl Contract {
    /// Reads `JOB_ID`, `TASK`, `ORCHESTRATOR_CALLBACK`, `ICARUS_ROLE` and
    /// `TEST_CODE`.
    pub fn from_env(default_role: &str) -> Contract {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        let callback = std::env::var("ORCHESTRATOR_CALLBACK").ok().and_then(|url| {
            match Callback::parse(&url) {
                Ok(callback) => Some(callback),
                Err(error) => {
                    log(&format!("ignoring ORCHESTRATOR_CALLBACK: {error}"));
                    None
                }
            }
        });
        let role = Some(var("ICARUS_ROLE"))
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| default_role.to_owned());
        Contract {
            job_id: var("JOB_ID"),
            task: var("TASK"),
            role,
            test_code: std::env::var("TEST_CODE").ok(),
            callback,
            patience: REPORT_PATIENCE,
        }
    }

    /// Posts `body`, retrying with backoff for up to [`REPORT_PATIENCE`]: an
    /// agent must not lose its report to an orchestrator that is restarting
    /// (the agent contract, README "Agents"). A refusal (4xx: a report the
    /// orchestrator will not take, one it already has, too many) is not
    /// retried: sending it again would not change the answer.
    ///
    /// Returns whether the orchestrator answered (accepted or refused);
    /// `false` once the patience ran out.
    pub fn report(&self, body: &serde_json::Value) -> bool {
        let Some(callback) = &self.callback else {
            return true;
        };
        let started = std::time::Instant::now();
        for wait in report_waits() {
            match callback.post_json(body) {
                Ok(status) if (200..300).contains(&status) => return true,
                Ok(status) if (400..500).contains(&status) => {
                    log(&format!("callback refused with {status}; not retrying"));
                    return true;
                }
                Ok(status) => log(&format!("callback answered {status}")),
                Err(error) => log(&format!("callback failed: {error}")),
            }
            if started.elapsed() + wait > self.patience {
                break;
            }
            std::thread::sleep(wait);
        }
        log("giving up on this callback");
        false
    }

    /// Posts a report the orchestrator needs to judge the agent's success
    /// (the checker's audit) and returns the exit code to end with: `code`
    /// once delivered, else [`EXIT_TEMPFAIL`], so the orchestrator runs the
    /// agent again rather than judge it without its report. (A failure's
    /// exit code says enough without its report; a builder's success is
    /// its exit code.)
    pub fn conclude(&self, body: &serde_json::Value, code: i32) -> i32 {
        if self.report(body) {
            code
        } else {
            EXIT_TEMPFAIL
        }
    }

    /// The mode asked for this agent: `ICARUS_AGENT_MODE`, or a `[role:mode]` marker in the task.
    pub fn mode(&self) -> Mode {
        Mode::from_env_or_task(&self.task, &self.role)
    }
}

/// Resident memory of this process in MiB, from `/proc/self/status`.
pub fn ram_usage_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Logs to stderr, which the orchestrator keeps as the container's log.
pub fn log(message: &str) {
    eprintln!("[icarus-agent] {message}");
}

/// The `talk=SECONDS` mode: known lines on both streams, before, during
/// and after two pauses, and the callback URL as a client that logs its
/// requests prints it (the orchestrator must redact its token).
pub fn talk(seconds: u64) {
    use std::io::Write;
    let pause = Duration::from_secs(seconds);
    let url = std::env::var("ORCHESTRATOR_CALLBACK").unwrap_or_default();
    println!("talk: before the pause");
    eprintln!("talk: on stderr before the pause");
    println!("INFO POST {url}");
    let _ = std::io::stdout().flush();
    std::thread::sleep(pause);
    println!("talk: during the pause");
    let _ = std::io::stdout().flush();
    std::thread::sleep(pause);
    println!("talk: after the pause");
}

/// The `shout=LINES` mode: `lines` numbered lines as fast as they go.
pub fn shout(lines: u64) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for n in 0..lines {
        let _ = writeln!(out, "shout {n}: a noisy agent fills its log");
    }
}

/// The `tick=LINES` mode: a pause, then `lines` numbered lines, one
/// every 100 ms.
pub fn tick(lines: u64) {
    use std::io::Write;
    std::thread::sleep(Duration::from_secs(5));
    for n in 0..lines {
        println!("tick {n}");
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Touches ever more memory until the kernel kills the process at the
/// container's memory limit (the `oom` test mode). Never returns normally.
pub fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Written, not just reserved, so the pages really count.
        hoard.push(vec![1u8; 8 * 1024 * 1024]);
        log(&format!("holding {} MiB", hoard.len() * 8));
    }
}

/// What this process may do inside its sandbox, seen from inside: its user,
/// capabilities, privilege flag, which paths it can write, its process limit.
pub fn probe_sandbox() -> serde_json::Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
    };
    let writable: serde_json::Map<String, serde_json::Value> = ["/", "/etc", "/tmp", "/workspace"]
        .iter()
        .map(|dir| ((*dir).to_owned(), serde_json::Value::Bool(can_write(dir))))
        .collect();
    // cgroup v2, then v1.
    let pids_max = ["/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned());
    serde_json::json!({
        "uid": field("Uid:"),
        "gid": field("Gid:"),
        "capabilities_effective": field("CapEff:"),
        "capabilities_bounding": field("CapBnd:"),
        "no_new_privileges": field("NoNewPrivs:"),
        "writable": writable,
        "docker_socket_visible": std::path::Path::new("/var/run/docker.sock").exists(),
        "pids_max": pids_max,
    })
}

fn can_write(dir: &str) -> bool {
    let path = std::path::Path::new(dir).join(format!(".icarus-probe-{}", std::process::id()));
    let created = std::fs::write(&path, b"probe").is_ok();
    if created {
        let _ = std::fs::remove_file(&path);
    }
    created
}

/// How long an agent keeps trying to deliver one report: longer than an
/// orchestrator takes to restart, short enough that a dead one is given up.
pub const REPORT_PATIENCE: Duration = Duration::from_secs(60);

/// The exit code (sysexits' `EX_TEMPFAIL`) of an agent that could not
/// deliver its outcome: a fault outside it, which the orchestrator retries.
pub const EXIT_TEMPFAIL: i32 = 75;

/// The waits between tries: 200 ms doubling to 5 s, then 5 s.
fn report_waits() -> impl Iterator<Item = Duration> {
    (0u32..).map(|try_| Duration::from_millis((200u64 << try_.min(5)).min(5_000)))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    fn checker_reporting_to(port: u16) -> Contract {
        Contract {
            job_id: "j".to_owned(),
            task: "t".to_owned(),
            role: "checker".to_owned(),
            test_code: None,
            callback: Some(
                Callback::parse(&format!("http://127.0.0.1:{port}/jobs/j/callback")).unwrap(),
            ),
            patience: REPORT_PATIENCE,
        }
    }

    #[test]
    fn the_waits_between_tries_double_to_five_seconds_and_stay_there() {
        let waits: Vec<u64> = report_waits()
            .take(8)
            .map(|w| w.as_millis() as u64)
            .collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn a_report_sent_while_the_orchestrator_is_down_arrives_once_it_is_back() {
        // A port nothing listens on yet: the orchestrator is restarting.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let orchestrator = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = vec![0u8; 4096];
            let read = stream.read(&mut request).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        let contract = checker_reporting_to(port);
        contract.report(&serde_json::json!({"status": "completed"}));
        let received = orchestrator.join().unwrap();
        assert!(received.contains(r#"{"status":"completed"}"#), "{received}");
    }

    #[test]
    fn an_audit_that_cannot_be_delivered_ends_the_agent_with_tempfail_not_success() {
        // Nothing listens, and nothing will.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let contract = Contract {
            patience: Duration::from_millis(700),
            ..checker_reporting_to(port)
        };
        let report = serde_json::json!({"status": "completed", "audit_report": {}});
        assert_eq!(contract.conclude(&report, 0), EXIT_TEMPFAIL);
    }
}
