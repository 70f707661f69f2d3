//! Who is calling the API, and what they may do.
//!
//! Callers present a bearer token (`Authorization: Bearer ...`; on the
//! WebSocket route, where browsers cannot set headers, `?access_token=...`
//! too). Tokens are configured by their SHA-256 only, each with a name and an
//! [`AccessRole`]; handlers ask the [`Caller`] for the role they need. With
//! `auth.enabled: false` everyone is an anonymous admin — the server refuses
//! that off loopback unless told `--insecure`.

use std::collections::HashMap;
use std::num::NonZeroU32;

use axum::extract::FromRequestParts;

use axum::http::request::Parts;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::config::{AccessRole, ApiToken};

/// The name recorded for callers when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

pub struct Authenticator {
    enabled: bool,
    /// Token hash → (holder, role).
    tokens: HashMap<String, (String, AccessRole)>,
    spawns: DefaultKeyedRateLimiter<String>,
    spawns_per_minute: NonZeroU32,
}

impl Authenticator {
    pub fn new(enabled: bool, tokens: &[ApiToken], spawns_per_minute: u32) -> Self {
        let spawns_per_minute = NonZeroU32::new(spawns_per_minute).unwrap_or(NonZeroU32::MIN);
        Authenticator {
            enabled,
            tokens: tokens
                .iter()
                .map(|t| (t.sha256.to_ascii_lowercase(), (t.name.clone(), t.role)))
                .collect(),
            spawns: RateLimiter::keyed(Quota::per_minute(spawns_per_minute)),
            spawns_per_minute,
        }
    }

    /// Whether callers must present a token (`auth.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn identify(&self, token: Option<&str>) -> ApiResult<Caller> {
        if !self.enabled {
            return Ok(Caller {
                name: ANONYMOUS.to_owned(),
                role: AccessRole::Admin,
            });
        }
        let Some(token) = token else {
            return Err(ApiError::Unauthorized(
                "this API needs a bearer token (Authorization: Bearer ...)".to_owned(),
            ));
        };
        let digest = hex(&Sha256::digest(token.as_bytes()));
        match self.tokens.get(&digest) {
            Some((name, role)) => Ok(Caller {
                name: name.clone(),
                role: *role,
            }),
            None => {
                tracing::warn!("request with an unknown API token refused");
                Err(ApiError::Unauthorized("the token is not valid".to_owned()))
            }
        }
    }

    /// Counts one spawn against the caller's budget. Without authentication
    /// there are no tokens to budget, and the laptop user is not throttled.
    pub fn allow_spawn(&self, caller: &Caller) -> ApiResult<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.spawns.len() > 10_000 {
            self.spawns.retain_recent();
        }
        self.spawns.check_key(&caller.name).map_err(|_| {
            ApiError::TooManyRequests(format!(
                "{} may submit at most {} jobs per minute",
                caller.name, self.spawns_per_minute
            ))
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: AccessRole,
}

impl Caller {
    /// Refuses with 403 unless the caller has at least `role`.
    pub fn require(&self, role: AccessRole, action: &str) -> ApiResult<()> {
        if self.role >= role {
            Ok(())
        } else {
            tracing::warn!(caller = %self.name, ?role, action, "forbidden");
            Err(ApiError::Forbidden(format!(
                "{action} needs the {} role; {} is a {}",
                role_name(role),
                self.name,
                role_name(self.role)
            )))
        }
    }
}

impl Caller {
    /// The caller's role as the configuration spells it.
    pub fn role_name(&self) -> &'static str {
        role_name(self.role)
    }
}

pub(super) fn role_name(role: AccessRole) -> &'static str {
    match role {
        AccessRole::Viewer => "viewer",
        AccessRole::Submitter => "submitter",
        AccessRole::Approver => "approver",
        AccessRole::Admin => "admin",
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let bearer = super::extract::bearer_token(&parts.headers).map(str::to_owned);
        let token = bearer.or_else(|| websocket_query_token(parts));
        state.auth.identify(token.as_deref())
    }
}

/// `?access_token=` on the stream route only: elsewhere a token in a URL
/// would end up in browser history and proxy logs for no reason.
fn websocket_query_token(parts: &Parts) -> Option<String> {
    if !parts.uri.path().ends_with("/stream") {
        return None;
    }
    parts
        .uri
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token=").map(percent_decode))
}

/// Tokens are URL-safe, but a client may still percent-encode them.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: AccessRole, secret: &str) -> ApiToken {
        ApiToken {
            name: name.to_owned(),
            role,
            sha256: hex(&Sha256::digest(secret.as_bytes())),
        }
    }

    #[test]
    fn a_known_token_names_its_holder_and_role_and_others_are_refused() {
        let auth = Authenticator::new(true, &[token("ann", AccessRole::Approver, "s3cret")], 5);
        let ann = auth.identify(Some("s3cret")).unwrap();
        assert_eq!((ann.name.as_str(), ann.role), ("ann", AccessRole::Approver));
        assert!(auth.identify(Some("guess")).is_err());
        assert!(auth.identify(None).is_err());
    }

    #[test]
    fn roles_include_the_ones_below_them() {
        let submitter = Caller {
            name: "sam".to_owned(),
            role: AccessRole::Submitter,
        };
        assert!(submitter.require(AccessRole::Viewer, "reading").is_ok());
        assert!(submitter.require(AccessRole::Submitter, "spawning").is_ok());
        assert!(
            submitter
                .require(AccessRole::Approver, "approving")
                .is_err()
        );
    }

    #[test]
    fn percent_encoded_query_tokens_are_decoded() {
        assert_eq!(percent_decode("a%2Db_c"), "a-b_c");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn without_authentication_spawning_is_not_throttled() {
        let auth = Authenticator::new(false, &[], 1);
        let anyone = auth.identify(None).unwrap();
        for _ in 0..5 {
            assert!(auth.allow_spawn(&anyone).is_ok());
        }
    }
}
