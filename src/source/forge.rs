//! Opening a pull request for a published branch, on a forge that speaks
//! GitHub's REST API (github.com, GitHub Enterprise, and the forges that
//! copy its `POST /repos/{owner}/{repo}/pulls`). Off by default
//! (`publish.pull_request.enabled`).
//!
//! Idempotent like the rest of publishing: when the forge says a pull
//! request for the branch exists already (a retry after a crash), the open
//! one is looked up and returned.

use serde::Deserialize;
use serde_json::json;

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// `owner/name` on the forge.
    pub repository: String,
    /// The published branch.
    pub head: String,
    /// The branch it should merge into.
    pub base: String,
    pub title: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ForgeError(String);

#[derive(Deserialize)]
struct Opened {
    html_url: String,
}

/// The forge API's client: its base URL (`https://api.github.com`) and token.
pub struct Forge {
    http: reqwest::Client,
    api_url: String,
    token: Option<String>,
}

impl Forge {
    pub fn new(api_url: &str, token: Option<String>) -> Forge {
        Forge {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// Opens the pull request, or finds the one already open for its branch;
    /// returns its web address.
    pub async fn open(&self, request: &PullRequest) -> Result<String, ForgeError> {
        let url = format!("{}/repos/{}/pulls", self.api_url, request.repository);
        let body = json!({
            "title": request.title, "head": request.head,
            "base": request.base, "body": request.body,
        });
        let response = self
            .authorized(self.http.post(&url))
            .json(&body)
            .send()
            .await
            .map_err(|e| ForgeError(format!("the forge is unreachable: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return read_url(response).await;
        }
        let detail = response.text().await.unwrap_or_default();
        if status.as_u16() == 422 && detail.contains("already exists") {
            return self.find_open(request).await;
        }
        Err(ForgeError(format!(
            "the forge refused the pull request ({status}): {}",
            detail.chars().take(300).collect::<String>()
        )))
    }

    async fn find_open(&self, request: &PullRequest) -> Result<String, ForgeError> {
        let owner = request.repository.split('/').next().unwrap_or_default();
        let url = format!("{}/repos/{}/pulls", self.api_url, request.repository);
        let head = format!("{owner}:{}", request.head);
        let response = self
            .authorized(self.http.get(&url))
            .query(&[("head", head.as_str()), ("state", "open")])
            .send()
            .await
            .map_err(|e| ForgeError(format!("the forge is unreachable: {e}")))?;
        let open: Vec<Opened> = response
            .json()
            .await
            .map_err(|e| ForgeError(format!("the forge's answer is unreadable: {e}")))?;
        open.into_iter()
            .next()
            .map(|pull| pull.html_url)
            .ok_or_else(|| ForgeError("the forge says a pull request exists but lists none".into()))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request
            .header("Accept", "application/vnd.github+json")
            .header("User-Agent", "icarus");
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

async fn read_url(response: reqwest::Response) -> Result<String, ForgeError> {
    let opened: Opened = response
        .json()
        .await
        .map_err(|e| ForgeError(format!("the forge's answer is unreadable: {e}")))?;
    Ok(opened.html_url)
}

/// `owner/name` of a repository URL on a forge (`https://host/owner/name.git`,
/// `git@host:owner/name.git`); none for a local path.
pub fn repository_of(url: &str) -> Option<String> {
    let path = if let Some(rest) = url.strip_prefix("https://").or(url.strip_prefix("http://")) {
        rest.split_once('/')?.1
    } else if let Some(rest) = url.strip_prefix("git@") {
        rest.split_once(':')?.1
    } else {
        return None;
    };
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    Some(path.to_owned()).filter(|p| is_repository_name(p))
}

/// `owner/name` of characters a forge allows (letters, digits, `.`, `-`,
/// `_`; no `.` or `..` alone): the only thing ever put in an API path.
pub fn is_repository_name(text: &str) -> bool {
    let mut parts = text.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(owner), Some(name), None) if is_name_part(owner) && is_name_part(name)
    )
}

fn is_name_part(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// `owner/name` or `owner/*`.
pub fn is_repository_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(owner) => is_name_part(owner),
        None => is_repository_name(pattern),
    }
}

/// Whether configuration lets a pull request be opened on `repository`.
pub fn is_allowed(patterns: &[String], repository: &str) -> bool {
    let Some((owner, _)) = repository.split_once('/') else {
        return false;
    };
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix("/*") {
            Some(allowed_owner) => allowed_owner.eq_ignore_ascii_case(owner),
            None => pattern.eq_ignore_ascii_case(repository),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forge_repository_is_read_from_its_https_or_ssh_url_and_a_path_has_none() {
        for url in [
            "https://github.com/acme/api.git",
            "https://github.com/acme/api",
            "git@github.com:acme/api.git",
        ] {
            assert_eq!(repository_of(url).as_deref(), Some("acme/api"), "{url}");
        }
        assert_eq!(repository_of("/srv/git/api.git"), None);
        assert_eq!(repository_of("https://example.com/a/b/c.git"), None);
        assert_eq!(repository_of("https://example.com/../pulls"), None);
        assert_eq!(repository_of("https://example.com/a/b?x=1"), None);
    }

    #[test]
    fn a_pull_request_goes_only_to_a_repository_configuration_allows() {
        let patterns = vec!["acme/*".to_owned(), "other/tool".to_owned()];
        assert!(is_allowed(&patterns, "acme/api"));
        assert!(is_allowed(&patterns, "other/tool"));
        assert!(!is_allowed(&patterns, "other/secret"));
        assert!(!is_allowed(&patterns, "evil/api"));
        assert!(!is_allowed(&[], "acme/api"));
    }

    #[test]
    fn repository_patterns_are_owner_and_name_or_owner_and_star() {
        assert!(is_repository_pattern("acme/api"));
        assert!(is_repository_pattern("acme/*"));
        assert!(!is_repository_pattern("*"));
        assert!(!is_repository_pattern("acme/../x"));
        assert!(!is_repository_pattern("acme/a b"));
    }
}
