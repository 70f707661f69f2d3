//! The task's `[name:value]` markers: how a test asks the reference agents
//! for a mode (`[builder:fail]`) or aims an attack (`[canary:/tmp/x]`).
//! Read by both the modes and the hostile attacks, so it depends on neither.

/// The values of every `[name:value]` marker in the task, in order, trimmed.
/// The rest of the task (prose, other roles' markers) is ignored.
pub fn markers<'a>(task: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("[{name}:");
    let mut values = Vec::new();
    let mut rest = task;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(']') else {
            break;
        };
        values.push(rest[..end].trim());
        rest = &rest[end + 1..];
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_among_prose_and_other_markers() {
        let task = "fix it [checker:hang] [canary: /tmp/a ] and [canary:/tmp/b] [canary:unclosed";
        assert_eq!(markers(task, "canary"), ["/tmp/a", "/tmp/b"]);
        assert!(markers(task, "secret").is_empty());
    }
}
