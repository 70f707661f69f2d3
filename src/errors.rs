//! Errors as people read them.
//!
//! Every layer's error keeps the error it came from as its `source`, and
//! its own message says only what failed at that layer; [`error_chain`]
//! puts them back together, for logs and for the messages a job records.

/// An error and its sources on one line: `what failed: why: why that`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
