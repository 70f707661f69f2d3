//! Every request gets an id: the caller's `x-request-id` if it sent a sane
//! one, else a new UUID. It is in the request's log span and in the
//! response's `x-request-id` header, so a user reporting a failed request
//! can name the log lines that belong to it.
//!
//! A caller's id reaches the logs, so only a short token of letters,
//! digits, `-`, `_` and `.` is taken as is: nothing that could forge a log
//! line or fill it.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

/// The longest id taken from a caller.
const MAX_LEN: usize = 64;

/// Gives the request its id and the response the same.
pub async fn tag(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .filter(|value| is_sane(value))
        .cloned()
        .unwrap_or_else(new_id);
    request.headers_mut().insert(HEADER, id.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(HEADER, id);
    response
}

/// The id [`tag`] gave the request.
pub fn of<B>(request: &axum::http::Request<B>) -> &str {
    request
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn new_id() -> HeaderValue {
    let id = uuid::Uuid::new_v4().to_string();
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_tokens_are_taken_from_a_caller() {
        let sane = |s: &str| is_sane(&HeaderValue::from_str(s).unwrap());
        assert!(sane("build-42_a.b"));
        assert!(sane(&"a".repeat(MAX_LEN)));
        assert!(!sane(&"a".repeat(MAX_LEN + 1)));
        assert!(!sane(""));
        assert!(!sane("two words"));
        assert!(!sane("line\"break"));
        assert!(!sane("x=1 level=error"));
    }
}
