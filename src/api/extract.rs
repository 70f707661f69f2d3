//! Extractors whose rejections speak the API's error format: a malformed body
//! or query is a 422 with a message saying what was wrong, an oversized body a
//! 413, a body that does not say it is JSON a 415.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};

use super::error::ApiError;
use crate::job::JobId;

/// A JSON body, sent as `Content-Type: application/json` (parameters such as
/// `; charset=utf-8` allowed, as is `application/*+json`); anything else is a
/// 415 before the body is read. The content type is insisted on because it is
/// what keeps a web page from posting: a page may send `text/plain` to any
/// address without asking, but `application/json` only after a CORS preflight,
/// which fails for origins not configured. Every known client sends it: the
/// reference agents (`agents/src/callback.rs`) and the original service's
/// Python and JavaScript clients (`requests.post(json=...)`, axios). The
/// bytes must then parse as `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        require_json(request.headers())?;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        if bytes.is_empty() {
            return Err(ApiError::Unprocessable(
                "request body is empty; expected JSON".to_owned(),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::Unprocessable(format!("invalid JSON body: {e}")))
    }
}

/// The body of a route that takes none, read and thrown away. A handler that
/// answered without reading it would leave it in the connection, and hyper
/// then closes a kept-alive connection whose body has not arrived yet (a
/// client that sends its body in a segment after its head loses the
/// connection under its next request). Nothing is refused: a body over the
/// limit is left unread, and that connection closes after the answer.
#[derive(Debug)]
pub struct IgnoredBody;

impl<S: Send + Sync> FromRequest<S> for IgnoredBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let _unread_past_the_limit = Bytes::from_request(request, state).await;
        Ok(IgnoredBody)
    }
}

/// Refuses with 415 unless the content type is JSON.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "the request has no Content-Type; expected application/json".to_owned(),
        ));
    };
    let sent = String::from_utf8_lossy(value.as_bytes());
    if is_json(&sent) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type is '{sent}'; expected application/json"
        )))
    }
}

/// `application/json` or `application/<anything>+json`, any case, any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.strip_prefix("application/") {
        Some("json") => true,
        Some(subtype) => subtype.len() > "+json".len() && subtype.ends_with("+json"),
        None => false,
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("request body is too large".to_owned())
    } else {
        ApiError::Unprocessable(format!(
            "cannot read request body: {}",
            rejection.body_text()
        ))
    }
}

/// Query parameters; a value of the wrong type is a 422.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::Unprocessable(format!("invalid query: {}", rejection.body_text()))
            })
    }
}

/// The `{job_id}` path segment, parsed; anything but a UUID is a 422.
/// Documents itself: `params(JobIdPath)` in a route's `utoipa::path`.
#[derive(Debug, Clone, Copy)]
pub struct JobIdPath(pub JobId);

impl IntoParams for JobIdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let uuid = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
        vec![
            ParameterBuilder::new()
                .name("job_id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The job's UUID"))
                .schema(Some(uuid))
                .build(),
        ]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::Unprocessable(rejection.body_text()))?;
        Ok(JobIdPath(raw.parse()?))
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are accepted.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types_are_recognised_with_any_case_and_parameters() {
        for sent in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(sent), "{sent}");
        }
    }

    #[test]
    fn other_content_types_are_not_json() {
        for sent in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "application/+json",
            "text/json",
            "",
        ] {
            assert!(!is_json(sent), "{sent}");
        }
    }
}
