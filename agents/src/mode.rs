//! Test modes, so the orchestrator's behaviour on misbehaving agents can be
//! exercised with the reference images: chosen by `ICARUS_AGENT_MODE`, or by
//! a marker in the task such as `[builder:fail]`, `[checker:exit=4]` or
//! `[builder:hostile=gitconfig]` (the attacks are in [`crate::hostile`]).

use crate::hostile::Attack;
use crate::markers::markers;

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
    /// Do the work, then plant this attack on the host in the workspace
    /// (see [`crate::hostile`]); report and exit 0 as if nothing happened.
    Hostile(Attack),
    /// Serve a line on this TCP port until killed (see [`crate::neighbours`]).
    Listen(u16),
    /// Print known lines before, during and after two pauses of this many
    /// seconds (stdout and stderr, and the callback URL as an HTTP client
    /// that logs its requests would), then finish normally.
    Talk(u64),
    /// Print this many lines as fast as possible, then finish normally.
    Shout(u64),
    /// After a pause of five seconds, print this many numbered lines, one
    /// every 100 ms, then finish normally (the fan-out benchmark).
    Tick(u64),
    /// Try to reach a listener at this address, then exit: 0 if it answered,
    /// [`crate::neighbours::UNREACHABLE`] if not.
    Connect(std::net::SocketAddr),
    /// The same through the egress proxy of `HTTPS_PROXY`, to this
    /// `name:port` (see [`crate::neighbours::fetch`]).
    Fetch(&'static str),
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
                ("talk", seconds) => seconds.parse().ok().map(Mode::Talk),
                ("shout", lines) => lines.parse().ok().map(Mode::Shout),
                ("tick", lines) => lines.parse().ok().map(Mode::Tick),
                ("hostile", attack) => Attack::parse(attack).map(Mode::Hostile),
                ("listen", port) => port.parse().ok().map(Mode::Listen),
                ("connect", address) => address.parse().ok().map(Mode::Connect),
                // Parsed once per process: leaking the text keeps `Mode` `Copy`.
                ("fetch", target) => Some(Mode::Fetch(target.to_owned().leak())),
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
        markers(task, role)
            .into_iter()
            .find_map(Mode::parse)
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

    #[test]
    fn a_hostile_marker_selects_its_attack() {
        let task = "say hello [canary:/tmp/c] [builder:hostile=smuggle] [checker:probe]";
        assert_eq!(
            Mode::from_env_or_task(task, "builder"),
            Mode::Hostile(Attack::Smuggle)
        );
        assert_eq!(Mode::parse("hostile=all"), Some(Mode::Hostile(Attack::All)));
    }

    #[test]
    fn an_unknown_attack_is_not_a_mode() {
        assert_eq!(Mode::parse("hostile=rootkit"), None);
        assert_eq!(Mode::parse("hostile="), None);
    }

    #[test]
    fn a_marker_that_does_not_parse_gives_way_to_a_later_one() {
        let task = "[builder:nonsense] then [builder:hostile=hooks]";
        assert_eq!(
            Mode::from_env_or_task(task, "builder"),
            Mode::Hostile(Attack::Hooks)
        );
    }
}
