//! How the domain's values sit in columns, for every query module: an
//! attempt as an `INTEGER`, a role as its name, and the error for a row
//! that does not read back.

use crate::job::{JobId, Role};
use crate::store::{Result, StoreError};

/// A row that does not read back as what was written.
pub(super) fn corrupt(job: JobId, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: job.to_string(),
        detail: detail.into(),
    }
}

pub(super) fn parse_role(job: JobId, text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| corrupt(job, format!("unknown role '{text}'")))
}

pub(super) fn attempt_column(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}
