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
//!
//! The agents are static binaries in `FROM scratch` images, so there is no
//! libc resolver to rely on: the callback host is looked up in `/etc/hosts`
//! (where Docker writes `host.docker.internal`) before the system resolver.
#![forbid(unsafe_code)]

pub mod callback;
pub mod hostile;
pub mod markers;
pub mod mode;

use std::time::Duration;

pub use callback::Callback;
pub use mode::Mode;

/// The agent contract's environment.
#[derive(Debug, Clone)]
pub struct Contract {
    pub job_id: String,
    pub task: String,
    pub role: String,
    pub callback: Option<Callback>,
}

impl Contract {
    /// Reads `JOB_ID`, `TASK`, `ORCHESTRATOR_CALLBACK` and `ICARUS_ROLE`.
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
            callback,
        }
    }

    /// Posts `body`, retrying a few times; an agent must not die of a hiccup.
    /// A refusal (4xx: a report the orchestrator will not take, or too many
    /// of them) is not retried: sending it again would not change the answer.
    pub fn report(&self, body: &serde_json::Value) {
        let Some(callback) = &self.callback else {
            return;
        };
        for attempt in 1..=5u32 {
            match callback.post_json(body) {
                Ok(status) if (200..300).contains(&status) => return,
                Ok(status) if (400..500).contains(&status) => {
                    log(&format!("callback refused with {status}; not retrying"));
                    return;
                }
                Ok(status) => log(&format!("callback answered {status}")),
                Err(error) => log(&format!("callback failed: {error}")),
            }
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
        }
        log("giving up on this callback");
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
