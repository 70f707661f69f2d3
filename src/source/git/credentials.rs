//! Which remote the publish token may go to.
//!
//! A submitter chooses the source URL; configuration chooses where the
//! token goes. The token is sent only over HTTPS, only to a host listed in
//! `publish.token_hosts` (by default the forge's), and only as a header
//! scoped to that one URL; every other remote is spoken to anonymously.

use base64::Engine;

/// The token and the hosts it is for.
#[derive(Clone, Default)]
pub struct RemoteCredentials {
    token: Option<String>,
    hosts: Vec<String>,
}

/// Never prints the token.
impl std::fmt::Debug for RemoteCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCredentials")
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// An `Authorization` header for the URLs under `scope`.
pub struct Header {
    pub scope: String,
    pub value: String,
}

impl RemoteCredentials {
    pub fn new(token: Option<String>, hosts: Vec<String>) -> Self {
        RemoteCredentials {
            token: token.filter(|t| !t.is_empty()),
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    pub fn none() -> Self {
        RemoteCredentials::default()
    }

    /// The header for `url`, if the token may be sent there.
    pub fn header_for(&self, url: &str) -> Option<Header> {
        let token = self.token.as_ref()?;
        let authority = https_authority(url)?;
        let allowed = self.hosts.contains(&authority);
        allowed.then(|| {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            Header {
                scope: format!("https://{authority}/"),
                value: format!("Authorization: Basic {basic}"),
            }
        })
    }
}

/// `host[:port]` of an `https://` URL without user information, lowercased;
/// none for anything else.
fn https_authority(url: &str) -> Option<String> {
    let rest = url
        .get(..8)?
        .eq_ignore_ascii_case("https://")
        .then(|| &url[8..])?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    Some(
        authority
            .strip_suffix(":443")
            .map(str::to_owned)
            .unwrap_or(authority),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github() -> RemoteCredentials {
        RemoteCredentials::new(Some("secret".into()), vec!["github.com".into()])
    }

    #[test]
    fn the_token_goes_to_a_configured_host_over_https_scoped_to_it() {
        let header = github()
            .header_for("https://GitHub.com/acme/api.git")
            .unwrap();
        assert_eq!(header.scope, "https://github.com/");
        assert!(header.value.starts_with("Authorization: Basic "));
        assert!(github().header_for("https://github.com:443/a/b").is_some());
    }

    #[test]
    fn the_token_never_goes_over_plain_http_or_to_another_host() {
        for url in [
            "http://github.com/acme/api.git",
            "https://github.com.evil.example/acme/api.git",
            "https://evil.example/github.com/x.git",
            "https://github.com:8443/acme/api.git",
            "https://user@github.com/acme/api.git",
            "ssh://git@github.com/acme/api.git",
            "git@github.com:acme/api.git",
            "/srv/git/api.git",
            "http://127.0.0.1:9999/x.git",
        ] {
            assert!(github().header_for(url).is_none(), "{url}");
        }
    }

    #[test]
    fn without_a_token_nothing_is_sent_anywhere() {
        let credentials = RemoteCredentials::new(None, vec!["github.com".into()]);
        assert!(credentials.header_for("https://github.com/a/b").is_none());
    }
}
