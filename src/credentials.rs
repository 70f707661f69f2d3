//! Per-agent callback credentials.
//!
//! Every agent gets its own token: an HMAC of its job, role and attempt under
//! a key only the orchestrator holds (a file, `agents.callback_key_file`,
//! created with mode 0600 on first start). The token travels inside
//! `ORCHESTRATOR_CALLBACK` (`...&token=...`), so agents written for the
//! original service, which post to the URL exactly as given, carry it without
//! knowing; it is also accepted as `Authorization: Bearer <token>`.
//!
//! Deriving rather than storing: nothing secret is in the database, a
//! restarted orchestrator can still check the tokens of the agents it adopts,
//! and one agent's token is worthless for another job, role or attempt — a
//! builder cannot post the checker's audit report.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::job::{JobId, Role};

const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read or create the agent key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the agent key file {0} must hold at least {KEY_BYTES} bytes")]
    ShortKey(String),
}

/// The key that signs agent tokens.
#[derive(Clone)]
pub struct AgentKeys {
    key: Vec<u8>,
}

impl std::fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentKeys(..)")
    }
}

impl AgentKeys {
    /// Reads the key file, or creates it with a fresh random key.
    pub fn load_or_create(path: &Path) -> Result<AgentKeys, CredentialsError> {
        let key_file_error = |source| CredentialsError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(key) if key.len() >= KEY_BYTES => Ok(AgentKeys { key }),
            Ok(_) => Err(CredentialsError::ShortKey(path.display().to_string())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Self::create(path).map_err(key_file_error)?;
                Self::load_or_create(path)
            }
            Err(error) => Err(key_file_error(error)),
        }
    }

    /// Writes a new key beside `path` and links it into place, so a reader
    /// never sees half a key and two starting processes agree on one.
    fn create(path: &Path) -> std::io::Result<()> {
        let mut key = vec![0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            std::fs::create_dir_all(parent)?;
        }
        let staging = tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(parent.unwrap_or(Path::new(".")))?;
        staging.as_file().write_all(&key)?;
        staging.as_file().sync_all()?;
        match std::fs::hard_link(staging.path(), path) {
            Ok(()) => Ok(()),
            // Another process made one first: theirs is the key.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn mac(&self, job: JobId, role: Role, attempt: u32) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(format!("icarus-agent:{job}:{role}:{attempt}").as_bytes());
        mac
    }

    /// The token of one agent.
    pub fn token(&self, job: JobId, role: Role, attempt: u32) -> String {
        let digest = self.mac(job, role, attempt).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    }

    /// Whether `token` is that agent's, compared in constant time.
    pub fn verify(&self, job: JobId, role: Role, attempt: u32, token: &str) -> bool {
        let Ok(presented) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        self.mac(job, role, attempt)
            .verify_slice(&presented)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AgentKeys {
        let dir = tempfile::tempdir().unwrap();
        AgentKeys::load_or_create(&dir.path().join("key")).unwrap()
    }

    #[test]
    fn a_token_verifies_only_for_its_own_job_role_and_attempt() {
        let keys = keys();
        let (a, b) = (JobId::new_random(), JobId::new_random());
        let token = keys.token(a, Role::Builder, 1);
        assert!(keys.verify(a, Role::Builder, 1, &token));
        assert!(!keys.verify(b, Role::Builder, 1, &token));
        assert!(!keys.verify(a, Role::Checker, 1, &token));
        assert!(!keys.verify(a, Role::Builder, 2, &token));
        assert!(!keys.verify(a, Role::Builder, 1, "not-base64!"));
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/agent.key");
        let first = AgentKeys::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = AgentKeys::load_or_create(&path).unwrap();
        let job = JobId::new_random();
        assert_eq!(
            first.token(job, Role::Checker, 1),
            again.token(job, Role::Checker, 1)
        );
    }
}
