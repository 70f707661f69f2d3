//! What a submitted job may ask for: its task, which images, which project
//! path, which Git source, how many approvals; and who may decide on it. Checked at the door, so a hostile request is
//! refused with 422 before anything runs. Each field's rule is a
//! [`TextRule`], which the OpenAPI document states as it is (see
//! `docs::document`): the images, project roots and source roots come from
//! the configuration, so the document does too.

use std::path::{Path, PathBuf};

use super::error::{ApiError, ApiResult};
use super::rules::{
    self, BLANK, CONTROL_BUT_LINE_BREAKS, NOTHING, SPACE_OR_CONTROL, TextRule, escape,
};
use crate::config::{ApprovalConfig, Config};
use crate::job::{ApprovalRules, MAX_PROJECT_ID_CHARS, PROJECT_ID_PATTERN};
use icarus_core::egress::{MAX_JOB_RULES, MAX_RULE_CHARS, RULE_PATTERN};

/// Longest task description accepted, in characters.
pub const MAX_TASK_CHARS: usize = 32_768;
/// Longest path, image name, repository or ref accepted, in characters.
pub const MAX_NAME_CHARS: usize = 4096;

/// The rules of a spawn request's fields.
pub struct SpawnPolicy {
    pub task: TextRule,
    pub project_path: TextRule,
    /// `builder_image` and `checker_image`.
    pub image: TextRule,
    pub repository: TextRule,
    /// `source.ref`.
    pub reference: TextRule,
    /// `project_id`, in a spawn and as a filter of the listing.
    pub project_id: TextRule,
    /// An egress allow-list rule a person adds (`domain` of an allowance).
    pub egress_rule: TextRule,
    /// `test_code`: no NUL, and (checked apart, as no schema can say it) at
    /// most `test_code_max_bytes` bytes of UTF-8.
    pub test_code: TextRule,
    test_code_max_bytes: usize,
    /// The images a job may name, as configured (`GET /images`).
    pub images: ImageChoice,
    project_roots: Vec<String>,
    /// Canonical forms of `workspace.allowed_source_roots` that exist.
    source_roots: Vec<PathBuf>,
    /// The shape of a local repository path, when any source root exists.
    local_repository: Option<TextRule>,
    /// How many approvals a job needs, and may ask for (`approval.*`).
    pub approvals: ApprovalConfig,
    /// Whether a job's submitter may decide on it (`auth.separation_of_duties`).
    separation_of_duties: bool,
}

/// The configured agent images, and what else a job may name.
#[derive(Debug, Clone)]
pub struct ImageChoice {
    /// `agents.builder.image_name`.
    pub builder: String,
    /// `agents.checker.image_name`.
    pub checker: String,
    /// `agents.allowed_images`: names, or prefixes ending in `*`.
    pub allowed: Vec<String>,
}

impl SpawnPolicy {
    pub fn from_config(config: &Config) -> Result<SpawnPolicy, regex::Error> {
        let source_roots: Vec<PathBuf> = config
            .workspace
            .allowed_source_roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .collect();
        let local_roots: Vec<String> = source_roots
            .iter()
            .filter_map(|root| rules::plain_absolute(&root.to_string_lossy()))
            .collect();
        let local_repository = (!local_roots.is_empty())
            .then(|| format!("(?:file://)?{}", rules::paths_under(&local_roots)));
        let project_roots: Vec<String> = config
            .workspace
            .allowed_project_roots
            .iter()
            .filter_map(|root| rules::plain_absolute(root))
            .collect();
        let project_path = if project_roots.is_empty() {
            NOTHING.to_owned()
        } else {
            format!("^{}$", rules::paths_under(&project_roots))
        };
        Ok(SpawnPolicy {
            task: TextRule::matching(
                MAX_TASK_CHARS,
                &format!("^[{BLANK}]*[^{SPACE_OR_CONTROL}][^{CONTROL_BUT_LINE_BREAKS}]*$"),
            )?,
            project_path: TextRule::matching(MAX_NAME_CHARS, &project_path)?,
            image: TextRule::matching(MAX_NAME_CHARS, &image_pattern(config))?,
            repository: TextRule::matching(
                MAX_NAME_CHARS,
                &repository_pattern(local_repository.as_deref()),
            )?,
            reference: TextRule::matching(
                MAX_NAME_CHARS,
                &format!(r"^[^{SPACE_OR_CONTROL}\-][^{SPACE_OR_CONTROL}]*$"),
            )?,
            project_id: TextRule::matching(MAX_PROJECT_ID_CHARS, PROJECT_ID_PATTERN)?,
            egress_rule: TextRule::matching(MAX_RULE_CHARS, RULE_PATTERN)?,
            // A string of at most N bytes has at most N characters: the
            // document states that much, and the bytes in its description.
            test_code: TextRule::matching(config.agents.max_test_code_bytes, r"^[^\x00]*$")?,
            test_code_max_bytes: config.agents.max_test_code_bytes,
            images: ImageChoice {
                builder: config.agents.builder.image_name.clone(),
                checker: config.agents.checker.image_name.clone(),
                allowed: config.agents.allowed_images.clone(),
            },
            project_roots: config.workspace.allowed_project_roots.clone(),
            local_repository: local_repository
                .map(|pattern| TextRule::matching(MAX_NAME_CHARS, &format!("^{pattern}$")))
                .transpose()?,
            source_roots,
            approvals: config.approval.clone(),
            separation_of_duties: config.auth.separation_of_duties,
        })
    }

    /// The rules every decision on a job is checked against.
    pub fn approval_rules(&self) -> ApprovalRules {
        ApprovalRules {
            separation_of_duties: self.separation_of_duties,
        }
    }

    /// Text with something to read in it: lines and tabs, but no other
    /// control character. (The task reaches the agent as an environment
    /// variable, which cannot hold a NUL: such a job could never start.)
    pub fn check_task(&self, task: &str) -> ApiResult<()> {
        if self.task.allows(task) {
            return Ok(());
        }
        let length = task.chars().count();
        Err(invalid(if task.trim().is_empty() {
            "task must not be empty".to_owned()
        } else if length > MAX_TASK_CHARS {
            format!("task is {length} characters long; the limit is {MAX_TASK_CHARS}")
        } else if let Some(bad) = task
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
        {
            format!(
                "task must not contain control characters other than newline and tab (found U+{:04X})",
                u32::from(bad)
            )
        } else {
            mismatch("task", &self.task)
        }))
    }

    /// One of the configured images, or one `agents.allowed_images` allows.
    pub fn check_image(&self, field: &str, image: &str) -> ApiResult<()> {
        check_name(field, image, &self.image, || {
            if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                format!("{field} must not contain whitespace or control characters")
            } else {
                format!(
                    "{field} '{image}' is not allowed here: add it to agents.allowed_images \
                     (e.g. ICARUS_CONFIG__AGENTS__ALLOWED_IMAGES='[\"{image}\"]') or make it \
                     agents.builder.image_name / agents.checker.image_name"
                )
            }
        })
    }

    /// An absolute path under one of the allowed roots, its segments joined
    /// by single slashes, none of them `.` or `..`.
    pub fn check_project_path(&self, path: &str) -> ApiResult<()> {
        check_name("project_path", path, &self.project_path, || {
            format!(
                "project_path '{path}' must be an absolute path without '.' or '..' segments \
                 under one of {:?}",
                self.project_roots
            )
        })
    }

    /// A project id as [`PROJECT_ID_PATTERN`] says (the spawn body's
    /// `project_id`, and the listing's filter).
    pub fn check_project_id(&self, project_id: &str) -> ApiResult<()> {
        check_name("project_id", project_id, &self.project_id, || {
            format!(
                "project_id '{project_id}' must be letters, digits, '.', '_' or '-', \
                 starting and ending with a letter or digit"
            )
        })
    }

    /// Test code of at most `agents.max_test_code_bytes` bytes, with no NUL
    /// (it reaches the builder as an environment variable, which can hold
    /// neither more nor a NUL).
    pub fn check_test_code(&self, code: &str) -> ApiResult<()> {
        let limit = self.test_code_max_bytes;
        if code.len() > limit {
            return Err(invalid(format!(
                "test_code is {} bytes long; the limit is {limit} bytes (agents.max_test_code_bytes)",
                code.len()
            )));
        }
        if !self.test_code.allows(code) {
            return Err(invalid("test_code must not contain a NUL byte".to_owned()));
        }
        Ok(())
    }

    /// The most bytes a job's `test_code` may hold.
    pub fn test_code_max_bytes(&self) -> usize {
        self.test_code_max_bytes
    }

    /// An allow-list rule as [`RULE_PATTERN`] says, at most
    /// [`MAX_RULE_CHARS`] characters (within which every match parses).
    pub fn check_egress_rule(&self, rule: &str) -> ApiResult<()> {
        check_name("domain", rule, &self.egress_rule, || {
            format!(
                "domain '{rule}' must be a DNS name (its last label starting with a letter), \
                 or `*.` and one, with an optional :port from 1 to 65535"
            )
        })
    }

    /// A job's narrowing of its agents' egress: at most [`MAX_JOB_RULES`]
    /// rules, each one [`Self::check_egress_rule`] takes.
    pub fn check_job_egress(&self, rules: &[String]) -> ApiResult<()> {
        if rules.len() > MAX_JOB_RULES {
            return Err(invalid(format!(
                "allowed_domains has {} rules; the limit is {MAX_JOB_RULES}",
                rules.len()
            )));
        }
        rules
            .iter()
            .try_for_each(|rule| self.check_egress_rule(rule))
    }

    /// A branch, tag or commit name: no white space or control character,
    /// and not starting with `-` (refs reach git as arguments).
    pub fn check_reference(&self, reference: &str) -> ApiResult<()> {
        check_name("source.ref", reference, &self.reference, || {
            format!("source.ref '{reference}' is not a branch, tag or commit name")
        })
    }

    /// A network URL Git knows (https, http, ssh, git, or `user@host:path`)
    /// carrying no credentials, or a local repository inside an allowed
    /// source root, symlinks resolved.
    pub fn check_repository(&self, repository: &str) -> ApiResult<()> {
        check_name("source.repository", repository, &self.repository, || {
            if carries_credentials(repository) {
                credentials_message(repository)
            } else {
                format!(
                    "source.repository '{repository}' is neither an https/ssh/git URL nor an \
                     absolute path under workspace.allowed_source_roots"
                )
            }
        })?;
        let local = self
            .local_repository
            .as_ref()
            .is_some_and(|rule| rule.allows(repository));
        if !local {
            return Ok(());
        }
        let path = repository.strip_prefix("file://").unwrap_or(repository);
        let resolved = Path::new(path).canonicalize().map_err(|_| {
            invalid(format!(
                "source.repository '{repository}' does not exist here"
            ))
        })?;
        if self
            .source_roots
            .iter()
            .any(|root| resolved.starts_with(root))
        {
            Ok(())
        } else {
            Err(invalid(format!(
                "source.repository '{repository}' is outside workspace.allowed_source_roots"
            )))
        }
    }
}

/// `Ok` if `rule` allows `value`; otherwise 422 saying why: empty, too long,
/// a NUL, or what `explain` says.
fn check_name(
    field: &str,
    value: &str,
    rule: &TextRule,
    explain: impl FnOnce() -> String,
) -> ApiResult<()> {
    if rule.allows(value) {
        return Ok(());
    }
    let length = value.chars().count();
    Err(invalid(if value.trim().is_empty() {
        format!("{field} must not be empty")
    } else if length > rule.max_chars() {
        format!(
            "{field} is {length} characters long; the limit is {}",
            rule.max_chars()
        )
    } else if value.contains('\0') {
        format!("{field} must not contain a NUL byte")
    } else {
        explain()
    }))
}

fn mismatch(field: &str, rule: &TextRule) -> String {
    format!(
        "{field} does not match {}",
        rule.pattern().unwrap_or_default()
    )
}

/// The configured images exactly, and anything with no white space or
/// control character after a `prefix*` of `agents.allowed_images`.
fn image_pattern(config: &Config) -> String {
    let agents = &config.agents;
    let named = [&agents.builder.image_name, &agents.checker.image_name]
        .into_iter()
        .chain(&agents.allowed_images);
    let mut alternatives: Vec<String> = named
        .map(|image| match image.strip_suffix('*') {
            Some(prefix) => format!("{}[^{SPACE_OR_CONTROL}]*", escape(prefix)),
            None => escape(image),
        })
        .collect();
    alternatives.sort();
    alternatives.dedup();
    format!("^(?:{})$", alternatives.join("|"))
}

/// https, http and git URLs with no user in their authority; ssh URLs with
/// at most a user name (never a password); `user@host:path`; and local
/// paths of the given shape.
fn repository_pattern(local: Option<&str>) -> String {
    let rest = r"(?:/[^\x00]*)?";
    let mut alternatives = vec![
        format!(r"(?:[Hh][Tt][Tt][Pp][Ss]?|[Gg][Ii][Tt])://[^/@\x00]+{rest}"),
        format!(r"[Ss][Ss][Hh]://(?:[^/@:\x00]+@)?[^/@\x00]+{rest}"),
        r"[A-Za-z0-9._\-]+@[A-Za-z0-9._\-]+:[^\-\x00][^\x00]*".to_owned(),
    ];
    alternatives.extend(local.map(str::to_owned));
    format!("^(?:{})$", alternatives.join("|"))
}

/// A user (and maybe a password) where the authority of a URL is, or before
/// the host of `user@host:path`.
fn carries_credentials(repository: &str) -> bool {
    let authority = match repository.split_once("://") {
        Some((_, rest)) => rest.split('/').next().unwrap_or_default(),
        None => repository.split('/').next().unwrap_or_default(),
    };
    authority.contains('@')
}

/// A token in the URL would come back in every status response and every
/// git error message, and would go wherever the URL points.
fn credentials_message(repository: &str) -> String {
    format!(
        "source.repository must not carry credentials; configure publish.token \
         (or GITHUB_TOKEN) and publish.token_hosts instead of '{}'",
        redact_userinfo(repository)
    )
}

/// The URL with whatever stands before `@` in its authority replaced, so
/// the error quoting it does not repeat the secret.
fn redact_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::Unprocessable(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use icarus_core::egress::Rule;

    /// What the schema states of an allowance's `domain` is what the server
    /// takes: every candidate the pattern matches parses as a rule, and
    /// every one it does not is refused.
    #[test]
    fn the_egress_rule_pattern_accepts_exactly_the_rules_that_parse() {
        let policy = policy();
        let long_name = format!("{}.example", "a".repeat(60).repeat(4));
        for candidate in [
            "pypi.org",
            "PyPI.org.",
            "*.github.com",
            "*.x.y.example:8443",
            "a:65535",
            "a-b.c1",
            "localhost",
            "10.0.0.1",
            "a.1",
            "a:0",
            "a:65536",
            "*.",
            "*",
            "-a.com",
            "a..b",
            "a_b.com",
            " pypi.org",
            "pypi.org:",
            "[::1]:443",
            long_name.as_str(),
        ] {
            let accepted = policy.check_egress_rule(candidate).is_ok();
            let parses = candidate.parse::<Rule>().is_ok();
            assert!(
                !accepted || parses,
                "{candidate:?} accepted but does not parse"
            );
            let plain = !candidate.starts_with(' ') && candidate.chars().count() <= 253;
            assert_eq!(accepted, parses && plain, "{candidate:?}");
        }
    }

    fn policy() -> SpawnPolicy {
        let mut config = Config::embedded_default().unwrap();
        config.agents.allowed_images = vec!["registry.example.com/agents/*".to_owned()];
        SpawnPolicy::from_config(&config).unwrap()
    }

    #[test]
    fn images_are_the_configured_ones_or_match_the_allow_list() {
        let policy = policy();
        assert!(
            policy
                .check_image("builder_image", "icarus-builder:latest")
                .is_ok()
        );
        assert!(
            policy
                .check_image("builder_image", "registry.example.com/agents/coder:2")
                .is_ok()
        );
        assert!(
            policy
                .check_image("builder_image", "evil/miner:latest")
                .is_err()
        );
    }

    #[test]
    fn project_paths_stay_under_their_roots() {
        let policy = policy();
        assert!(policy.check_project_path("/workspace").is_ok());
        assert!(policy.check_project_path("/workspace/api").is_ok());
        assert!(policy.check_project_path("/workspace/../etc").is_err());
        assert!(policy.check_project_path("/etc").is_err());
        assert!(policy.check_project_path("workspace").is_err());
        assert!(policy.check_project_path("/workspacex").is_err());
    }

    #[test]
    fn repositories_are_network_urls_or_allowed_local_paths() {
        let policy = policy();
        assert!(
            policy
                .check_repository("https://github.com/acme/api.git")
                .is_ok()
        );
        assert!(
            policy
                .check_repository("git@github.com:acme/api.git")
                .is_ok()
        );
        assert!(
            policy
                .check_repository("ext::sh -c touch% /tmp/pwned")
                .is_err()
        );
        assert!(policy.check_repository("--upload-pack=x").is_err());
        assert!(
            policy
                .check_repository("ssh://git@github.com/acme/api.git")
                .is_ok()
        );
        let leaked = policy
            .check_repository("https://x-access-token:ghp_secret@github.com/acme/api.git")
            .unwrap_err()
            .to_string();
        assert!(!leaked.contains("ghp_secret"), "{leaked}");
        assert!(leaked.contains("publish.token"), "{leaked}");
        assert!(
            policy.check_repository("/etc").is_err(),
            "no source roots allowed"
        );
    }

    #[test]
    fn credentials_in_a_url_of_any_scheme_are_refused_without_being_repeated() {
        let policy = policy();
        for url in [
            "https://user@github.com/acme/api.git",
            "http://x:ghp_secret@127.0.0.1:9/x.git",
            "ssh://git:ghp_secret@github.com/acme/api.git",
            "git://ghp_secret@example.com/api.git",
            "git:ghp_secret@github.com:acme/api.git",
        ] {
            let refused = policy.check_repository(url).unwrap_err().to_string();
            assert!(refused.contains("credentials"), "{url}: {refused}");
            assert!(!refused.contains("ghp_secret"), "{url}: {refused}");
        }
    }

    /// Every character of the Basic Multilingual Plane but the surrogates.
    fn characters() -> impl Iterator<Item = char> {
        (0..=0xFFFF_u32).filter_map(char::from_u32)
    }

    #[test]
    fn a_task_is_refused_for_a_control_character_but_a_line_break_and_when_blank() {
        let policy = policy();
        for c in characters() {
            let line_break = matches!(c, '\n' | '\t' | '\r');
            let control = c.is_control() && !line_break;
            assert_eq!(
                policy.check_task(&format!("a{c}")).is_ok(),
                !control,
                "U+{:04X}",
                c as u32
            );
            assert_eq!(
                policy.check_task(&c.to_string()).is_ok(),
                !c.is_whitespace() && !c.is_control(),
                "U+{:04X} alone",
                c as u32
            );
        }
        assert!(policy.check_task(" \t\n  add logging\r\n").is_ok());
        let long = "x".repeat(MAX_TASK_CHARS + 1);
        assert!(
            policy
                .check_task(&long)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
    }

    #[test]
    fn a_ref_is_refused_for_white_space_a_control_character_or_a_leading_dash() {
        let policy = policy();
        for c in characters() {
            let refused = c.is_whitespace() || c.is_control();
            assert_eq!(
                policy.check_reference(&format!("v1{c}")).is_ok(),
                !refused,
                "U+{:04X}",
                c as u32
            );
        }
        for reference in ["main", "v1.2", "feature/x-y", "0123abc"] {
            assert!(policy.check_reference(reference).is_ok(), "{reference}");
        }
        for reference in ["", "-x", "--upload-pack=x", "a b"] {
            assert!(policy.check_reference(reference).is_err(), "{reference:?}");
        }
    }

    #[test]
    fn an_allowed_prefix_takes_no_white_space_and_other_images_nothing_at_all() {
        let policy = policy();
        for image in [
            "registry.example.com/agents/coder:2 --privileged",
            "registry.example.com/agents/a\tb",
            "registry.example.comXagents/coder",
            "icarus-builder:latest2",
            "",
        ] {
            assert!(
                policy.check_image("builder_image", image).is_err(),
                "{image:?}"
            );
        }
    }

    #[test]
    fn a_project_id_is_a_label_value() {
        let policy = policy();
        for id in [
            "default",
            "a",
            "acme-api",
            "team_1.web",
            "A9",
            &"x".repeat(63),
        ] {
            assert!(policy.check_project_id(id).is_ok(), "{id}");
        }
        for id in [
            "",
            "-a",
            "a-",
            ".a",
            "a b",
            "a/b",
            "é",
            &"x".repeat(64),
            "a\0",
        ] {
            assert!(policy.check_project_id(id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn test_code_is_held_to_its_bytes_and_refused_with_a_nul() {
        let mut config = Config::embedded_default().unwrap();
        config.agents.max_test_code_bytes = 8;
        let policy = SpawnPolicy::from_config(&config).unwrap();
        assert!(policy.check_test_code("").is_ok());
        assert!(policy.check_test_code("assert 1\n").is_err());
        assert!(policy.check_test_code("assert\t1").is_ok());
        let bytes = policy.check_test_code("éééé1").unwrap_err().to_string();
        assert!(
            bytes.contains("9 bytes") && bytes.contains("limit is 8"),
            "{bytes}"
        );
        let nul = policy.check_test_code("a\0b").unwrap_err().to_string();
        assert!(nul.contains("NUL"), "{nul}");
    }

    #[test]
    fn local_repositories_must_exist_under_a_source_root() {
        let roots = tempfile::tempdir().unwrap();
        let inside = roots.path().join("api");
        std::fs::create_dir(&inside).unwrap();
        let mut config = Config::embedded_default().unwrap();
        config.workspace.allowed_source_roots = vec![roots.path().to_owned()];
        let policy = SpawnPolicy::from_config(&config).unwrap();
        let root = roots.path().canonicalize().unwrap();
        let root = root.display();
        assert!(policy.check_repository(&format!("{root}/api")).is_ok());
        assert!(
            policy
                .check_repository(&format!("file://{root}/api"))
                .is_ok()
        );
        let missing = policy
            .check_repository(&format!("{root}/nope"))
            .unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        assert!(policy.check_repository(&format!("{root}/../etc")).is_err());
        assert!(policy.check_repository("/etc").is_err());
    }
}
