//! The attacks planted in a temporary workspace. Where `git` is installed,
//! it is asked whether the planted repository is valid and whether the bait
//! is live (a git that obeys the workspace does create the canary); without
//! git those tests say so and pass.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    workspace: PathBuf,
    targets: Targets,
}

impl Fixture {
    fn canary(&self) -> String {
        fs::read_to_string(&self.targets.canary).unwrap_or_default()
    }

    fn git_dir(&self) -> String {
        self.workspace.join(".git").display().to_string()
    }
}

fn planted(attack: Attack) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    let secrets = dir.path().join("secrets");
    fs::create_dir(&workspace).unwrap();
    fs::create_dir(&secrets).unwrap();
    fs::write(secrets.join("token"), "TOP-SECRET\n").unwrap();
    let targets = Targets {
        canary: dir.path().join("canary"),
        secret: secrets.join("token"),
        attacker: "https://attacker.invalid/stolen.git".to_owned(),
        job_id: "job-42".to_owned(),
    };
    plant(&workspace, attack, &targets).unwrap();
    Fixture {
        _dir: dir,
        workspace,
        targets,
    }
}

/// Runs git with no system or global config of this machine's, or `None` without git.
fn git(args: &[&str]) -> Option<Output> {
    let output = Command::new("git")
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output();
    match output {
        Ok(output) => Some(output),
        Err(error) => {
            eprintln!("skipping: cannot run git ({error})");
            None
        }
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "git failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_attack_is_selected_by_its_name() {
    for (name, attack) in [
        ("gitconfig", Attack::Gitconfig),
        ("hooks", Attack::Hooks),
        ("smuggle", Attack::Smuggle),
        ("attributes", Attack::Attributes),
        ("symlink", Attack::Symlink),
        ("all", Attack::All),
    ] {
        assert_eq!(Attack::parse(name), Some(attack));
    }
}

#[test]
fn markers_name_the_canary_the_secret_and_the_attacker() {
    let task = "say hello [builder:hostile=all] [canary:/tmp/c-1] [checker:hang] \
                [secret:/srv/keys/id] [attacker:ssh://evil.example/x.git]";
    let targets = Targets::from_task(task, "j1");
    assert_eq!(targets.canary, Path::new("/tmp/c-1"));
    assert_eq!(targets.secret, Path::new("/srv/keys/id"));
    assert_eq!(targets.secret_dir(), Path::new("/srv/keys"));
    assert_eq!(targets.attacker, "ssh://evil.example/x.git");
    assert_eq!(targets.job_id, "j1");
}

#[test]
fn missing_markers_fall_back_to_harmless_targets_of_the_job() {
    let targets = Targets::from_task("say hello [builder:hostile=all]", "abc-123");
    assert_eq!(targets.canary, Path::new("/tmp/icarus-canary-abc-123"));
    assert_eq!(
        targets.secret,
        Path::new("/tmp/icarus-secret-abc-123/secret")
    );
    assert_eq!(
        targets.attacker,
        "https://attacker.invalid/icarus-stolen.git"
    );
}

#[test]
fn a_marker_that_would_need_quoting_falls_back_to_the_harmless_target() {
    let task = "[canary:relative/path] [canary:/tmp/a b] [secret:/tmp/'x'] [attacker:https://x;rm]";
    let targets = Targets::from_task(task, "j/1");
    assert_eq!(targets.canary, Path::new("/tmp/icarus-canary-j_1"));
    assert_eq!(targets.secret, Path::new("/tmp/icarus-secret-j_1/secret"));
    assert_eq!(
        targets.attacker,
        "https://attacker.invalid/icarus-stolen.git"
    );
}

#[test]
fn the_planted_config_has_every_vector_the_orchestrator_must_ignore() {
    let targets = Targets::from_task("", "j");
    let names: Vec<String> = config_settings(&targets)
        .iter()
        .map(Setting::name)
        .collect();
    for wanted in [
        "core.fsmonitor",
        "core.hooksPath",
        "core.sshCommand",
        "core.pager",
        "core.editor",
        "core.askPass",
        "core.gitProxy",
        "core.worktree",
        "diff.external",
        "diff.evil.textconv",
        "filter.evil.clean",
        "filter.evil.smudge",
        "filter.evil.process",
        "credential.helper",
        "uploadpack.packObjectsHook",
        "alias.pwn",
        "include.path",
        "remote.origin.url",
        "remote.origin.pushurl",
        "http.extraHeader",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} is not planted");
    }
}

#[test]
fn every_command_in_the_config_writes_its_own_name_to_the_canary() {
    let targets = Targets::from_task("[canary:/tmp/c]", "j");
    for setting in config_settings(&targets) {
        if setting.value.contains(">>") && !setting.value.starts_with("ext::") {
            let command = format!("echo {} >> /tmp/c", setting.name());
            assert!(setting.value.ends_with(&command), "{setting:?}");
        }
    }
}

#[test]
fn git_reads_back_every_planted_setting() {
    let fixture = planted(Attack::Gitconfig);
    let config = format!("{}/config", fixture.git_dir());
    for setting in config_settings(&fixture.targets) {
        let Some(output) = git(&["config", "--file", &config, "--get-all", &setting.name()]) else {
            return;
        };
        let values = stdout(&output);
        assert!(
            values.lines().any(|line| line == setting.value),
            "{} reads back as {values:?}",
            setting.name()
        );
    }
}

#[test]
fn a_git_that_obeys_the_planted_config_creates_the_canary() {
    let fixture = planted(Attack::Gitconfig);
    let workspace = fixture.workspace.display().to_string();
    let Some(output) = git(&["-C", &workspace, "pwn"]) else {
        return;
    };
    stdout(&output);
    assert_eq!(fixture.canary(), "alias.pwn\n");
}

#[test]
fn a_git_that_obeys_the_planted_config_follows_its_include() {
    let fixture = planted(Attack::Gitconfig);
    let workspace = fixture.workspace.display().to_string();
    let Some(output) = git(&["-C", &workspace, "included"]) else {
        return;
    };
    stdout(&output);
    assert_eq!(fixture.canary(), "include:alias.included\n");
}

#[test]
fn the_gitconfig_attack_marks_every_file_for_the_evil_drivers() {
    let fixture = planted(Attack::Gitconfig);
    let attributes = fs::read_to_string(fixture.workspace.join(".git/info/attributes")).unwrap();
    assert_eq!(attributes, "* -diff filter=evil diff=evil\n");
}

/// Runs every hook in `dir` as git would (by its own `#!`), returning how many there were.
fn run_hooks(dir: &Path) -> usize {
    for name in HOOK_NAMES {
        let path = dir.join(name);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{name}");
        assert!(Command::new(&path).status().unwrap().success(), "{name}");
    }
    HOOK_NAMES.len()
}

#[test]
fn every_planted_hook_is_an_executable_script_that_writes_the_canary() {
    let fixture = planted(Attack::Hooks);
    let ran = run_hooks(&fixture.workspace.join(".git/hooks"));
    let canary = fixture.canary();
    assert_eq!(canary.lines().count(), ran);
    assert!(canary.lines().any(|line| line == "hook:pre-commit"));
}

#[test]
fn the_hooks_path_the_config_names_holds_a_hook_of_every_name() {
    let fixture = planted(Attack::Gitconfig);
    let ran = run_hooks(&fixture.workspace.join(HOOKS_PATH));
    assert_eq!(fixture.canary().lines().count(), ran);
}

#[test]
fn the_smuggled_repository_passes_a_strict_fsck() {
    let fixture = planted(Attack::Smuggle);
    let Some(output) = git(&[
        "--git-dir",
        &fixture.git_dir(),
        "fsck",
        "--strict",
        "--no-dangling",
    ]) else {
        return;
    };
    stdout(&output);
}

#[test]
fn the_smuggled_commit_carries_the_forged_job_trailer() {
    let fixture = planted(Attack::Smuggle);
    let format = "--format=%(trailers:key=Icarus-Job,valueonly)";
    let Some(output) = git(&["--git-dir", &fixture.git_dir(), "log", "-1", format, "main"]) else {
        return;
    };
    assert_eq!(stdout(&output).trim(), "job-42");
}

#[test]
fn the_smuggled_backdoor_is_an_executable_file_in_history() {
    let fixture = planted(Attack::Smuggle);
    let git_dir = fixture.git_dir();
    let Some(tree) = git(&["--git-dir", &git_dir, "ls-tree", "HEAD"]) else {
        return;
    };
    let listing = stdout(&tree);
    assert!(listing.contains("100755 blob "), "{listing}");
    assert!(listing.contains("\tbackdoor.sh\n"), "{listing}");
    let shown = git(&["--git-dir", &git_dir, "show", "main:backdoor.sh"]).unwrap();
    assert_eq!(stdout(&shown), "#!/bin/sh\necho backdoor\n");
}

#[test]
fn the_smuggled_backdoor_is_not_in_the_work_tree() {
    let fixture = planted(Attack::Smuggle);
    assert!(!fixture.workspace.join("backdoor.sh").exists());
    let refs = fs::read_to_string(fixture.workspace.join(".git/refs/heads/main")).unwrap();
    assert_eq!(refs.trim().len(), 40);
}

#[test]
fn the_attributes_attack_points_work_tree_files_outside_the_workspace() {
    let fixture = planted(Attack::Attributes);
    let read = |path: &str| fs::read_to_string(fixture.workspace.join(path)).unwrap();
    assert_eq!(
        read(".gitattributes"),
        "* -diff -text filter=evil diff=evil merge=evil\n"
    );
    assert!(read(".gitmodules").contains("\turl = https://attacker.invalid/stolen.git\n"));
    let gitfile = format!("gitdir: {}\n", fixture.targets.secret_dir().display());
    assert_eq!(read("sub/.git"), gitfile);
}

#[test]
fn the_symlinks_point_at_the_secret_its_directory_and_out_of_the_workspace() {
    let fixture = planted(Attack::Symlink);
    let link = |name: &str| fs::read_link(fixture.workspace.join(name)).unwrap();
    assert_eq!(link("leak"), fixture.targets.secret);
    assert_eq!(link("leakdir"), fixture.targets.secret_dir());
    assert_eq!(link("escape"), Path::new("../../../../../../etc/passwd"));
}

#[test]
fn all_attacks_share_one_git_directory_and_the_repository_stays_valid() {
    let fixture = planted(Attack::All);
    let dot_git = fixture.workspace.join(".git");
    let config = fs::read_to_string(dot_git.join("config")).unwrap();
    assert!(config.contains("fsmonitor"));
    assert!(dot_git.join("hooks/pre-commit").exists());
    assert!(fixture.workspace.join("leak").is_symlink());
    assert!(fixture.workspace.join(".gitattributes").exists());
    let Some(output) = git(&["--git-dir", &fixture.git_dir(), "fsck", "--strict"]) else {
        return;
    };
    // (This fsck obeys the planted config, so core.fsmonitor may well have
    // written the canary: the bait is live even for a read-only command.)
    stdout(&output);
}

#[test]
fn planting_twice_in_one_workspace_succeeds() {
    let fixture = planted(Attack::All);
    plant(&fixture.workspace, Attack::All, &fixture.targets).unwrap();
}
