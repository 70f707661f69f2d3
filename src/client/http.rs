//! The HTTP client of the client commands: one server, one optional bearer
//! token, JSON in and out, and every failure turned into an [`Error`] that
//! says what happened.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::error::{Error, Result};

/// How long a connection may take to open, and a request to be answered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An API token. Never printed: `Debug` shows that one is set, not what it is.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A token from its text, surrounding whitespace (a file's newline) removed;
    /// none for empty text.
    pub fn new(text: &str) -> Option<Token> {
        let text = text.trim();
        (!text.is_empty()).then(|| Token(text.to_owned()))
    }

    fn header(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(set)")
    }
}

/// A client of one Icarus server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The server's base address, without a trailing `/`.
    server: String,
    token: Option<Token>,
}

impl Client {
    /// A client of `server` (`http://host:port`, optionally with a path
    /// prefix), calling with `token` if there is one.
    pub fn new(server: &str, token: Option<Token>) -> Result<Client> {
        let bad = |cause: String| Error::BadServer {
            server: server.to_owned(),
            cause,
        };
        let url = Url::parse(server).map_err(|error| bad(error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad(
                "it needs an http:// or https:// scheme and a host".to_owned()
            ));
        }
        if let Some(token) = &token
            && token.header().is_none()
        {
            return Err(Error::BadToken);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("icarus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| bad(error.to_string()))?;
        Ok(Client {
            http,
            server: server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The server's base address, as the user named it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `GET path`, as JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(Method::GET, path, None).await
    }

    /// `GET path`, as `T`.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let value = self.get(path).await?;
        self.decode(&format!("GET {path}"), value)
    }

    /// `GET path`, as text.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let request = format!("GET {path}");
        let response = self.send(Method::GET, path, None).await?;
        response
            .text()
            .await
            .map_err(|error| self.transport(&request, error))
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// `value`, read as the `T` the API documents for `request`.
    pub fn decode<T: DeserializeOwned>(&self, request: &str, value: Value) -> Result<T> {
        serde_json::from_value(value).map_err(|error| Error::Unexpected {
            server: self.server.clone(),
            request: request.to_owned(),
            cause: error.to_string(),
        })
    }

    /// The WebSocket request for `path` (`ws://` or `wss://` as the server is
    /// `http://` or `https://`), carrying the token as a header rather than
    /// in the address.
    pub fn stream_request(
        &self,
        path: &str,
    ) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
        let address = match self.server.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}{path}"),
            Some((_, rest)) => format!("ws://{rest}{path}"),
            None => format!("ws://{}{path}", self.server),
        };
        let mut request = address
            .into_client_request()
            .map_err(|error| Error::BadServer {
                server: self.server.clone(),
                cause: error.to_string(),
            })?;
        if let Some(value) = self.token.as_ref().and_then(Token::header) {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        Ok(request)
    }

    async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let request = format!("{method} {path}");
        let response = self.send(method, path, body).await?;
        let text = response
            .text()
            .await
            .map_err(|error| self.transport(&request, error))?;
        serde_json::from_str(&text).map_err(|error| Error::Unexpected {
            server: self.server.clone(),
            request,
            cause: format!("not JSON ({error})"),
        })
    }

    /// Sends the request; an answer other than 2xx is an [`Error`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let request = format!("{method} {path}");
        let mut builder = self.http.request(method, format!("{}{path}", self.server));
        if let Some(value) = self.token.as_ref().and_then(Token::header) {
            builder = builder.header(AUTHORIZATION, value);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|error| self.transport(&request, error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(self.refusal(&request, status, detail_of(&text)))
    }

    /// What an answer other than 2xx means.
    pub(super) fn refusal(&self, request: &str, status: StatusCode, detail: String) -> Error {
        let server = self.server.clone();
        match status.as_u16() {
            401 if self.token.is_none() => Error::TokenMissing { server, detail },
            401 => Error::TokenRefused { server, detail },
            403 => Error::Forbidden { server, detail },
            // axum's own answer for a route it does not have.
            404 if detail == "Not Found" => Error::RouteNotFound {
                server,
                request: request.to_owned(),
            },
            404 => Error::JobNotFound { server, detail },
            409 => Error::Conflict { detail },
            503 => Error::Unavailable { server, detail },
            code if code >= 500 => Error::ServerFault {
                server,
                request: request.to_owned(),
                status: code,
                detail,
            },
            code => Error::Refused {
                server,
                request: request.to_owned(),
                status: code,
                detail,
            },
        }
    }

    /// A request that got no answer (or no whole one).
    fn transport(&self, request: &str, error: reqwest::Error) -> Error {
        if error.is_decode() {
            return Error::Unexpected {
                server: self.server.clone(),
                request: request.to_owned(),
                cause: root_cause(&error),
            };
        }
        let cause = if error.is_timeout() {
            format!("{request} got no answer in time")
        } else {
            root_cause(&error)
        };
        Error::Unreachable {
            server: self.server.clone(),
            cause,
        }
    }
}

/// The innermost cause: "Connection refused (os error 111)" rather than
/// reqwest's "error sending request for url (...)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The `detail` of an error body in the API's (FastAPI's) format, or the
/// body itself when it has none.
pub(super) fn detail_of(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(object)) => match object.get("detail") {
            Some(Value::String(detail)) => detail.clone(),
            Some(other) => other.to_string(),
            None => body.trim().to_owned(),
        },
        _ if body.trim().is_empty() => "no details given".to_owned(),
        _ => body.trim().chars().take(500).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let client = Client::new("http://127.0.0.1:8000/", Token::new("s3cret\n")).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(client.server(), "http://127.0.0.1:8000");
    }

    #[test]
    fn an_empty_token_is_no_token() {
        assert!(Token::new(" \n").is_none());
    }

    #[test]
    fn a_server_needs_an_http_scheme() {
        assert!(matches!(
            Client::new("127.0.0.1:8000", None),
            Err(Error::BadServer { .. })
        ));
        assert!(matches!(
            Client::new("ftp://example.com", None),
            Err(Error::BadServer { .. })
        ));
    }

    #[test]
    fn the_stream_follows_the_servers_scheme_and_carries_the_token_as_a_header() {
        let client = Client::new("https://icarus.example/api", Token::new("t")).unwrap();
        let request = client.stream_request("/jobs/x/stream").unwrap();
        assert_eq!(
            request.uri().to_string(),
            "wss://icarus.example/api/jobs/x/stream"
        );
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer t");
        let plain = Client::new("http://127.0.0.1:8000", None).unwrap();
        let request = plain.stream_request("/jobs/x/stream").unwrap();
        assert_eq!(
            request.uri().to_string(),
            "ws://127.0.0.1:8000/jobs/x/stream"
        );
        assert!(request.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn error_bodies_give_their_detail() {
        assert_eq!(
            detail_of(r#"{"detail": "Job x not found"}"#),
            "Job x not found"
        );
        assert_eq!(detail_of(""), "no details given");
        assert_eq!(detail_of("Bad Gateway"), "Bad Gateway");
    }

    #[test]
    fn each_refusal_is_explained() {
        let anonymous = Client::new("http://h:1", None).unwrap();
        let holder = Client::new("http://h:1", Token::new("t")).unwrap();
        let explain = |client: &Client, code: u16, detail: &str| {
            client
                .refusal(
                    "GET /jobs",
                    StatusCode::from_u16(code).unwrap(),
                    detail.to_owned(),
                )
                .to_string()
        };
        assert!(explain(&anonymous, 401, "x").contains("none was given"));
        assert!(explain(&holder, 401, "x").contains("did not accept the API token"));
        assert!(
            explain(&holder, 403, "approving needs the approver role").contains("does not allow")
        );
        assert!(explain(&holder, 404, "Job 1 not found").starts_with("Job 1 not found (404)"));
        assert!(explain(&holder, 404, "Not Found").contains("does not serve GET /jobs"));
        assert!(explain(&holder, 409, "already decided").contains("not in a state that allows"));
        assert!(explain(&holder, 503, "database busy").contains("unavailable"));
        assert!(explain(&holder, 500, "Internal Server Error").contains("failed to answer"));
    }
}
