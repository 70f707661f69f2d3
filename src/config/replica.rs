//! `orchestrator.replica_name`: this orchestrator's name among replicas,
//! which its drain is kept under, and what such a name may be. Checked the
//! same way in the configuration and in the API's `?replica=`.

/// The longest replica name: a DNS name's (a Pod's or a host's name fits).
pub const MAX_REPLICA_NAME_CHARS: usize = 253;

/// What a replica name may be, for the OpenAPI document: ASCII letters,
/// digits, `.`, `_` and `-`, beginning and ending with a letter or digit.
/// [`replica_name_problem`] checks exactly this.
pub const REPLICA_NAME_PATTERN: &str = "^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$";

/// Why `name` cannot name a replica, if it cannot: empty, longer than
/// [`MAX_REPLICA_NAME_CHARS`], a character other than ASCII letters,
/// digits, `.`, `_` and `-`, or one of the last three at either end.
pub fn replica_name_problem(name: &str) -> Option<String> {
    let length = name.chars().count();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if length > MAX_REPLICA_NAME_CHARS {
        Some(format!(
            "is {length} characters long; the limit is {MAX_REPLICA_NAME_CHARS}"
        ))
    } else if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        Some(format!(
            "'{}' holds {bad:?}: only ASCII letters, digits, '.', '_' and '-' may name a replica",
            name.escape_debug()
        ))
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some(format!(
            "'{name}' must begin and end with a letter or digit"
        ))
    } else {
        None
    }
}

/// This host's name (in a Pod, the Pod's name): the default replica name.
pub fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_pod_names_are_replica_names() {
        for name in [
            "a",
            "7",
            "icarus-0",
            "icarus-7d9f8c6b5-x2kqp",
            "build-host.example.com",
            "Host_2",
            &"a".repeat(MAX_REPLICA_NAME_CHARS),
        ] {
            assert_eq!(replica_name_problem(name), None, "{name}");
        }
    }

    #[test]
    fn a_replica_name_out_of_shape_is_refused_saying_why() {
        let too_long = "a".repeat(MAX_REPLICA_NAME_CHARS + 1);
        for (name, says) in [
            ("", "must not be empty"),
            (too_long.as_str(), "the limit is 253"),
            ("two words", "' '"),
            ("a/b", "'/'"),
            ("a:b", "':'"),
            ("é", "'é'"),
            ("line\nbreak", "'\\n'"),
            ("-leading", "begin and end"),
            ("trailing.", "begin and end"),
            ("_", "begin and end"),
        ] {
            let problem = replica_name_problem(name).unwrap_or_default();
            assert!(problem.contains(says), "{name:?}: {problem:?}");
        }
    }

    #[test]
    fn the_documented_pattern_accepts_exactly_the_names_the_check_accepts() {
        let pattern = regex::Regex::new(REPLICA_NAME_PATTERN).unwrap();
        let alphabet = ['a', 'Z', '0', '.', '_', '-', ' ', '/', 'é', '\n'];
        let mut names = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|name| alphabet.iter().map(move |c| format!("{name}{c}")))
                .collect();
            names.extend(longer);
        }
        for name in &names {
            assert_eq!(
                pattern.is_match(name),
                replica_name_problem(name).is_none(),
                "{name:?}"
            );
        }
    }
}
