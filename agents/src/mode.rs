//! Test modes, so the orchestrator's behaviour on misbehaving agents can be
//! exercised with the reference images: chosen by `ICARUS_AGENT_MODE`, or by
//! a marker in the task such as `[builder:fail]` or `[checker:exit=4]`.

/// How the agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Do the work, report, exit 0.
    Normal,
    /// Post `{"status": "error"}` and exit 3.
    Fail,
    /// Never finish.
    Hang,
    /// Exit with this code without reporting completion.
    Exit(i32),
    /// Do the work but never call back.
    Silent,
    /// Post progress reports as fast as possible for a while, then finish normally.
    Flood,
    /// Wait this many seconds, then finish normally.
    Sleep(u64),
    /// Allocate memory until the container's limit kills the process.
    Oom,
    /// Report what the sandbox allows (user, capabilities, writable paths)
    /// instead of working: the checker as its audit report, both in the log.
    Probe,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "normal" => Some(Mode::Normal),
            "fail" => Some(Mode::Fail),
            "hang" => Some(Mode::Hang),
            "silent" => Some(Mode::Silent),
            "flood" => Some(Mode::Flood),
            "oom" => Some(Mode::Oom),
            "probe" => Some(Mode::Probe),
            other => match other.split_once('=')? {
                ("exit", code) => code.parse().ok().map(Mode::Exit),
                ("sleep", seconds) => seconds.parse().ok().map(Mode::Sleep),
                _ => None,
            },
        }
    }

    pub fn from_env_or_task(task: &str, role: &str) -> Mode {
        if let Some(mode) = std::env::var("ICARUS_AGENT_MODE")
            .ok()
            .as_deref()
            .and_then(Mode::parse)
        {
            return mode;
        }
        let marker = format!("[{role}:");
        task.split(&marker)
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .and_then(Mode::parse)
            .unwrap_or(Mode::Normal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_marker_selects_the_mode_of_its_role_only() {
        let task = "add logging [builder:exit=5] [checker:hang]";
        assert_eq!(Mode::from_env_or_task(task, "builder"), Mode::Exit(5));
        assert_eq!(Mode::from_env_or_task(task, "checker"), Mode::Hang);
        assert_eq!(
            Mode::from_env_or_task("plain task", "builder"),
            Mode::Normal
        );
        assert_eq!(
            Mode::from_env_or_task("[checker:sleep=3]", "checker"),
            Mode::Sleep(3)
        );
    }
}
