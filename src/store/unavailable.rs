//! Which database failures mean "not now" rather than "wrong".
//!
//! A database that is down, busy, read-only, full or failing its disk is
//! an outage: the same request succeeds once it is over, so callers answer
//! 503 and retry, and Icarus never needs restarting for it. Everything else
//! (a constraint, a malformed query, a decoding error) is a bug or bad data.
//! sqlx reports SQLite's *extended* result code and PostgreSQL's SQLSTATE as
//! [`sqlx::error::DatabaseError::code`]; both are sorted here, once, so no
//! other layer needs to know a database's error codes.

use sqlx::postgres::PgDatabaseError;

/// Why the database cannot serve now, in terms an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No connection: refused, lost, timed out, or the server shutting down.
    Unreachable,
    /// Another writer held it longer than the store waits.
    Busy,
    /// It can be read but not written: a read-only file, file system or server.
    ReadOnly,
    /// Its storage is full.
    Full,
    /// Its storage reports I/O errors.
    Failing,
}

impl Unavailable {
    /// The outage `error` reports, if it is one.
    pub fn of(error: &sqlx::Error) -> Option<Unavailable> {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Some(Unavailable::Unreachable),
            sqlx::Error::Database(error) => {
                let code = error.code()?;
                if error.try_downcast_ref::<PgDatabaseError>().is_some() {
                    of_sqlstate(&code)
                } else {
                    let outage = code.parse().ok().and_then(of_sqlite);
                    if matches!(
                        outage,
                        Some(Unavailable::ReadOnly | Unavailable::Full | Unavailable::Failing)
                    ) {
                        super::sql::pooled_sqlite::write_failed();
                    }
                    outage
                }
            }
            _ => None,
        }
    }

    /// The outage as a metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            Unavailable::Unreachable => "unreachable",
            Unavailable::Busy => "busy",
            Unavailable::ReadOnly => "read_only",
            Unavailable::Full => "full",
            Unavailable::Failing => "failing",
        }
    }

    /// What a client is told: what is wrong, never the database's own words.
    pub fn message(self) -> &'static str {
        match self {
            Unavailable::Unreachable => "The database is unavailable; retry later",
            Unavailable::Busy => "The database is busy; retry later",
            Unavailable::ReadOnly => {
                "The database cannot be written: it is read-only; retry once it is writable again"
            }
            Unavailable::Full => {
                "The database cannot be written: its storage is full; retry once there is space"
            }
            Unavailable::Failing => "The database's storage is failing (I/O errors); retry later",
        }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unavailable::Unreachable => "unreachable",
            Unavailable::Busy => "busy",
            Unavailable::ReadOnly => "read-only",
            Unavailable::Full => "full",
            Unavailable::Failing => "failing (I/O errors)",
        })
    }
}

/// SQLite's primary result codes (the low byte of an extended one):
/// BUSY 5, LOCKED 6, READONLY 8, IOERR 10, FULL 13, CANTOPEN 14.
fn of_sqlite(code: i32) -> Option<Unavailable> {
    match code & 0xff {
        5 | 6 => Some(Unavailable::Busy),
        8 => Some(Unavailable::ReadOnly),
        10 => Some(Unavailable::Failing),
        13 => Some(Unavailable::Full),
        14 => Some(Unavailable::Unreachable),
        _ => None,
    }
}

/// PostgreSQL: 53100 disk full, 25006 a read-only transaction (a standby),
/// 58030 an I/O error; classes 08 (connection), 53 (other resources) and
/// 57 (operator intervention: shutdown, crash, not accepting connections
/// yet), and 55000 (connections to the database disallowed).
fn of_sqlstate(code: &str) -> Option<Unavailable> {
    match code {
        "53100" => Some(Unavailable::Full),
        "25006" => Some(Unavailable::ReadOnly),
        "58030" => Some(Unavailable::Failing),
        "55000" => Some(Unavailable::Unreachable),
        _ if ["08", "53", "57"]
            .iter()
            .any(|class| code.starts_with(class)) =>
        {
            Some(Unavailable::Unreachable)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{Unavailable, of_sqlite, of_sqlstate};

    #[test]
    fn sqlite_extended_codes_are_sorted_by_their_primary_code() {
        for (code, expected) in [
            (5, Some(Unavailable::Busy)),
            (517, Some(Unavailable::Busy)),
            (8, Some(Unavailable::ReadOnly)),
            (1032, Some(Unavailable::ReadOnly)),
            (778, Some(Unavailable::Failing)),
            (13, Some(Unavailable::Full)),
            (14, Some(Unavailable::Unreachable)),
            (19, None),
            (2067, None),
            (1, None),
        ] {
            assert_eq!(of_sqlite(code), expected, "{code}");
        }
    }

    #[test]
    fn postgres_sqlstates_are_sorted_by_their_class() {
        for (code, expected) in [
            ("08006", Some(Unavailable::Unreachable)),
            ("57P01", Some(Unavailable::Unreachable)),
            ("57P03", Some(Unavailable::Unreachable)),
            ("53300", Some(Unavailable::Unreachable)),
            ("55000", Some(Unavailable::Unreachable)),
            ("53100", Some(Unavailable::Full)),
            ("25006", Some(Unavailable::ReadOnly)),
            ("58030", Some(Unavailable::Failing)),
            ("23505", None),
            ("42P01", None),
            ("40001", None),
        ] {
            assert_eq!(of_sqlstate(code), expected, "{code}");
        }
    }
}
