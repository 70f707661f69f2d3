//! What a submitted job may ask for: which images, which project path, which
//! Git source. Checked at the door, so a hostile request is refused with 422
//! before anything runs.

use std::path::{Component, Path, PathBuf};

use super::error::{ApiError, ApiResult};
use crate::config::{AgentsConfig, Config};

pub struct SpawnPolicy {
    agents: AgentsConfig,
    project_roots: Vec<String>,
    /// Canonical forms of `workspace.allowed_source_roots` that exist.
    source_roots: Vec<PathBuf>,
}

impl SpawnPolicy {
    pub fn from_config(config: &Config) -> SpawnPolicy {
        SpawnPolicy {
            agents: config.agents.clone(),
            project_roots: config.workspace.allowed_project_roots.clone(),
            source_roots: config
                .workspace
                .allowed_source_roots
                .iter()
                .filter_map(|root| root.canonicalize().ok())
                .collect(),
        }
    }

    pub fn check_image(&self, field: &str, image: &str) -> ApiResult<()> {
        if self.agents.allows_image(image) {
            Ok(())
        } else {
            Err(invalid(format!(
                "{field} '{image}' is not allowed here: add it to agents.allowed_images \
                 (e.g. ICARUS_CONFIG__AGENTS__ALLOWED_IMAGES='[\"{image}\"]') or make it \
                 agents.builder.image_name / agents.checker.image_name"
            )))
        }
    }

    /// An absolute path without `..`, under one of the allowed roots.
    pub fn check_project_path(&self, path: &str) -> ApiResult<()> {
        let candidate = Path::new(path);
        let plain = candidate.is_absolute()
            && candidate
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let inside = self
            .project_roots
            .iter()
            .any(|root| candidate.starts_with(Path::new(root)));
        if plain && inside {
            Ok(())
        } else {
            Err(invalid(format!(
                "project_path '{path}' must be an absolute path without '..' under one of {:?}",
                self.project_roots
            )))
        }
    }

    /// A network URL Git knows (https, http, ssh, git, or `user@host:path`),
    /// or a local repository inside an allowed source root, symlinks resolved.
    pub fn check_repository(&self, repository: &str) -> ApiResult<()> {
        let lower = repository.to_ascii_lowercase();
        let network = ["https://", "http://", "ssh://", "git://"]
            .iter()
            .any(|scheme| lower.starts_with(scheme));
        if network {
            let authority = lower.split("://").nth(1).unwrap_or_default();
            let authority = authority.split('/').next().unwrap_or_default();
            let user = authority.rsplit_once('@').map(|(user, _)| user);
            // HTTP(S) and git:// take no user at all; ssh:// a user name but
            // never a password.
            let carries_credentials = match user {
                None => false,
                Some(user) => !lower.starts_with("ssh://") || user.contains(':'),
            };
            if carries_credentials {
                return Err(credentials_refused(repository));
            }
            return Ok(());
        }
        if is_scp_like(repository) {
            return Ok(());
        }
        if repository.contains('@') && repository.contains(':') && !repository.starts_with('/') {
            return Err(credentials_refused(repository));
        }
        let local = repository.strip_prefix("file://").unwrap_or(repository);
        if !local.starts_with('/') {
            return Err(invalid(format!(
                "source.repository '{repository}' is neither an https/ssh/git URL nor an absolute path"
            )));
        }
        let resolved = Path::new(local).canonicalize().map_err(|_| {
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

/// A token in the URL would come back in every status response and every
/// git error message, and would go wherever the URL points.
fn credentials_refused(repository: &str) -> ApiError {
    invalid(format!(
        "source.repository must not carry credentials; configure publish.token \
         (or GITHUB_TOKEN) and publish.token_hosts instead of '{}'",
        redact_userinfo(repository)
    ))
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

/// `git@github.com:acme/api.git`: a user, a host, a colon, a path.
fn is_scp_like(repository: &str) -> bool {
    let Some((user_host, path)) = repository.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    word(user) && word(host) && !path.is_empty() && !path.starts_with('-')
}

fn invalid(message: String) -> ApiError {
    ApiError::Unprocessable(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SpawnPolicy {
        let mut config = Config::embedded_default().unwrap();
        config.agents.allowed_images = vec!["registry.example.com/agents/*".to_owned()];
        SpawnPolicy::from_config(&config)
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
}
