//! What a text field of a request may hold, said once: a handler checks the
//! field with its [`TextRule`] and the OpenAPI document states the same rule
//! (`maxLength`, `pattern`), so what the document allows is what the server
//! accepts and nothing else.
//!
//! Patterns are written in the part of regular-expression syntax that
//! ECMA 262 (JSON Schema's dialect), Python's `re` (what contract-testing
//! and client tools run) and the `regex` crate (what checks requests here)
//! read alike: character classes of `\xHH` and `\uHHHH` escapes, groups,
//! alternation, `*`, `+`, `?`, `^` and `$`. No lookaround, and no `\s`, `\d`
//! or `.`, which each dialect reads its own way.

use regex::Regex;
use serde_json::{Value, json};

/// What `char::is_whitespace` or `char::is_control` is true of: the C0 and
/// C1 control characters and every other `White_Space` character.
pub const SPACE_OR_CONTROL: &str =
    r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// What `char::is_control` is true of, but tab, newline and carriage return.
pub const CONTROL_BUT_LINE_BREAKS: &str = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f";
/// The white space a text may hold: tab, newline, carriage return and every
/// `White_Space` character that is not a control character.
pub const BLANK: &str = r"\t\n\r\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// A limit in characters (JSON Schema's `maxLength` counts characters too,
/// not bytes) and, for some fields, a pattern the whole value must match.
#[derive(Debug, Clone)]
pub struct TextRule {
    max_chars: usize,
    pattern: Option<Regex>,
}

impl TextRule {
    /// Any text of at most `max_chars` characters.
    pub fn length(max_chars: usize) -> TextRule {
        TextRule {
            max_chars,
            pattern: None,
        }
    }

    /// At most `max_chars` characters, matching `pattern` (anchored by the
    /// caller with `^...$`).
    pub fn matching(max_chars: usize, pattern: &str) -> Result<TextRule, regex::Error> {
        Ok(TextRule {
            max_chars,
            pattern: Some(Regex::new(pattern)?),
        })
    }

    pub fn allows(&self, value: &str) -> bool {
        value.chars().count() <= self.max_chars
            && self.pattern.as_ref().is_none_or(|p| p.is_match(value))
    }

    pub fn max_chars(&self) -> usize {
        self.max_chars
    }

    pub fn pattern(&self) -> Option<&str> {
        self.pattern.as_ref().map(Regex::as_str)
    }

    /// Writes the rule into the schema of a string property.
    pub fn describe(&self, property: &mut Value) {
        property["maxLength"] = json!(self.max_chars);
        if let Some(pattern) = self.pattern() {
            property["pattern"] = json!(pattern);
        }
    }
}

/// `text` as a pattern matching exactly it: the characters every dialect
/// reads as operators escaped. (`regex::escape` escapes more, such as `-`,
/// which ECMA 262 refuses to see escaped outside a class.)
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A pattern no value matches (an end of text followed by a character).
pub const NOTHING: &str = "^$x";

/// One path segment, neither `.` nor `..`, without `/` or NUL.
pub const PATH_SEGMENT: &str = r"(?:[^/.\x00][^/\x00]*|\.[^/.\x00][^/\x00]*|\.\.[^/\x00]+)";

/// `/a/b` from `/a//b/`, or `None` for a path that is not absolute or has a
/// `.` or `..` segment (nothing could be under it, as a request sees it).
pub fn plain_absolute(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    Some(segments.iter().map(|s| format!("/{s}")).collect())
}

/// The paths at or under one of `roots` (plain absolute paths, as
/// [`plain_absolute`] gives): segments joined by single slashes, a trailing
/// slash allowed, no `.` or `..`. No anchors: callers add them.
pub fn paths_under(roots: &[String]) -> String {
    let alternatives: Vec<String> = roots
        .iter()
        .map(|root| {
            if root.is_empty() {
                format!("/(?:{PATH_SEGMENT}(?:/{PATH_SEGMENT})*/?)?")
            } else {
                format!("{}(?:/{PATH_SEGMENT})*/?", escape(root))
            }
        })
        .collect();
    format!("(?:{})", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character of the Basic Multilingual Plane but the surrogates,
    /// and a few above it.
    fn characters() -> impl Iterator<Item = char> {
        (0..=0xFFFF_u32)
            .chain([0x1_F600, 0x10_FFFF])
            .filter_map(char::from_u32)
    }

    #[test]
    fn the_space_and_control_class_is_what_rust_calls_whitespace_or_control() {
        let class = Regex::new(&format!("^[{SPACE_OR_CONTROL}]$")).unwrap();
        for c in characters() {
            let expected = c.is_whitespace() || c.is_control();
            assert_eq!(
                class.is_match(&c.to_string()),
                expected,
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn the_blank_and_control_classes_split_whitespace_and_control_characters() {
        let blank = Regex::new(&format!("^[{BLANK}]$")).unwrap();
        let control = Regex::new(&format!("^[{CONTROL_BUT_LINE_BREAKS}]$")).unwrap();
        for c in characters() {
            let text = c.to_string();
            let line_break = matches!(c, '\t' | '\n' | '\r');
            assert_eq!(
                blank.is_match(&text),
                line_break || (c.is_whitespace() && !c.is_control()),
                "U+{:04X}",
                c as u32
            );
            assert_eq!(
                control.is_match(&text),
                c.is_control() && !line_break,
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn escaped_text_matches_only_itself() {
        let text = r"registry.example.com:5000/a+b(c)|[d]{e}^$\*?";
        let rule = TextRule::matching(100, &format!("^{}$", escape(text))).unwrap();
        assert!(rule.allows(text));
        assert!(!rule.allows("registryXexample.com:5000/a+b(c)|[d]{e}^$\\*?"));
    }

    #[test]
    fn the_nothing_pattern_matches_nothing() {
        let rule = TextRule::matching(10, NOTHING).unwrap();
        for value in ["", "x", "\n", "$x", "\nx"] {
            assert!(!rule.allows(value), "{value:?}");
        }
    }

    #[test]
    fn paths_under_a_root_are_plain_and_stay_under_it() {
        let roots = ["/workspace".to_owned(), "/srv/jobs".to_owned()];
        let rule = TextRule::matching(4096, &format!("^{}$", paths_under(&roots))).unwrap();
        for path in [
            "/workspace",
            "/workspace/",
            "/workspace/api",
            "/workspace/api/src/",
            "/workspace/.hidden/...",
            "/srv/jobs/x",
        ] {
            assert!(rule.allows(path), "{path}");
        }
        for path in [
            "",
            "/",
            "/etc",
            "/workspacex",
            "workspace",
            "/workspace/../etc",
            "/workspace/..",
            "/workspace/./api",
            "//workspace",
            "/workspace//api",
            "/workspace/a\0b",
            "/srv",
        ] {
            assert!(!rule.allows(path), "{path:?}");
        }
    }

    #[test]
    fn every_absolute_path_is_under_the_root_of_all() {
        let rule =
            TextRule::matching(4096, &format!("^{}$", paths_under(&[String::new()]))).unwrap();
        for path in ["/", "/etc", "/a/b/", "/..."] {
            assert!(rule.allows(path), "{path}");
        }
        for path in ["", "a", "/..", "/a/./b", "//"] {
            assert!(!rule.allows(path), "{path:?}");
        }
    }

    #[test]
    fn roots_are_made_plain_or_left_out() {
        assert_eq!(plain_absolute("/workspace/"), Some("/workspace".to_owned()));
        assert_eq!(plain_absolute("//a//b"), Some("/a/b".to_owned()));
        assert_eq!(plain_absolute("/"), Some(String::new()));
        assert_eq!(plain_absolute("workspace"), None);
        assert_eq!(plain_absolute("/a/../b"), None);
    }

    #[test]
    fn a_rule_counts_characters_not_bytes() {
        let rule = TextRule::length(3);
        assert!(rule.allows("ééé"));
        assert!(!rule.allows("éééé"));
    }
}
