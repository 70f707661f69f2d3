//! Browser safety: what keeps a web page in the developer's browser from
//! driving a local Icarus.
//!
//! With authentication off (the laptop default) anyone who can reach the API
//! is an admin, and a browser can reach `127.0.0.1`. Three ways a foreign page
//! could use that, and what stops each:
//!
//! - **A cross-site request.** A page may send a "simple" request (a form
//!   post, a `text/plain` body) anywhere without asking. Bodies must be
//!   `application/json` (see `extract::JsonBody`), which a browser sends
//!   cross-site only after a CORS preflight; and a state-changing request that
//!   carries a foreign `Origin` is refused here, preflight or not.
//! - **DNS rebinding.** A page at `attacker.example` whose name is re-pointed
//!   at `127.0.0.1` is same-origin with itself, so CORS does not apply. Its
//!   requests still name `Host: attacker.example`: with authentication off,
//!   only loopback hosts, the host of `agents.callback_base_url` and those in
//!   `orchestrator.allowed_hosts` are answered. (With authentication on, a page
//!   has no token to send, and the `Host` is not checked.)
//! - **A cross-site WebSocket.** Browsers open WebSockets to any address
//!   without CORS; the upgrade carries the page's `Origin`, checked like a
//!   state-changing request.
//!
//! The `Host` check is a route layer, left off the routes that must answer
//! any name: the agents' callback (agents call `host.docker.internal`, a
//! gateway address or a Service name, with a per-agent token) and the health
//! probes (the kubelet calls the Pod's IP; they reveal nothing). The `Origin`
//! check covers every route. Requests without `Origin` (curl, agents,
//! server-side clients) and reads without an upgrade pass it: CORS already
//! keeps a foreign page from reading the answers.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::config::Config;

/// The `Host` names a request may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Any: authentication is on, and a page has no token to send.
    Any,
    /// Loopback names and addresses, and these names (lowercase, no port).
    LoopbackAnd(Vec<String>),
}

impl AllowedHosts {
    /// Any host with authentication on; otherwise loopback, the configured
    /// `orchestrator.allowed_hosts` and the host of `agents.callback_base_url`.
    pub fn from_config(config: &Config) -> AllowedHosts {
        if config.auth.enabled {
            return AllowedHosts::Any;
        }
        let callback = config
            .agents
            .callback_base_url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(host_name));
        let configured = config.orchestrator.allowed_hosts.iter();
        AllowedHosts::LoopbackAnd(configured.map(|h| host_name(h)).chain(callback).collect())
    }

    fn allow(&self, host: &str) -> bool {
        match self {
            AllowedHosts::Any => true,
            AllowedHosts::LoopbackAnd(names) => {
                is_loopback(host) || names.iter().any(|name| name == host)
            }
        }
    }
}

/// The two checks' settings, shared by the middleware.
#[derive(Debug)]
pub struct BrowserGuard {
    hosts: AllowedHosts,
    /// `orchestrator.cors_allowed_origins`, lowercase, without a trailing `/`.
    origins: Vec<String>,
}

impl BrowserGuard {
    pub fn new(hosts: AllowedHosts, origins: &[String]) -> Arc<BrowserGuard> {
        let origins = origins.iter().map(|o| normal_origin(o)).collect();
        Arc::new(BrowserGuard { hosts, origins })
    }

    fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.hosts == AllowedHosts::Any {
            return Ok(());
        }
        let Some(authority) = host_header(headers) else {
            return Err(ApiError::Forbidden(
                "the request names no Host; with authentication off only requests to \
                 localhost, 127.0.0.1 or [::1] are answered (DNS-rebinding protection)"
                    .to_owned(),
            ));
        };
        if self.hosts.allow(&host_name(authority)) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "Host '{authority}' is not answered: with authentication off only localhost, \
             127.0.0.1, [::1] and the names in orchestrator.allowed_hosts are, so that a web \
             page cannot reach the API through DNS rebinding; add the name to \
             orchestrator.allowed_hosts or turn on auth.enabled"
        )))
    }

    fn check_origin(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        if !changes_state(method, headers) {
            return Ok(());
        }
        let origin = origin.to_str().unwrap_or("null");
        if origin != "null" && (self.lists(origin) || same_origin(origin, headers)) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "Origin '{origin}' may not change anything or open a stream here: only this \
             API's own origin and those in orchestrator.cors_allowed_origins may \
             (cross-site request protection)"
        )))
    }

    fn lists(&self, origin: &str) -> bool {
        self.origins.contains(&normal_origin(origin))
    }
}

/// Middleware: refuses a request for a `Host` that is not allowed (403).
pub async fn host_check(
    State(guard): State<Arc<BrowserGuard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.check_host(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refused(&request, refusal),
    }
}

/// Middleware: refuses a state change or an upgrade from a foreign `Origin` (403).
pub async fn origin_check(
    State(guard): State<Arc<BrowserGuard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.check_origin(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refused(&request, refusal),
    }
}

fn refused(request: &Request, refusal: ApiError) -> Response {
    tracing::warn!(method = %request.method(), path = %request.uri().path(), reason = %refusal, "request refused for browser safety");
    refusal.into_response()
}

/// Anything but a plain read: an unsafe method, or an upgrade (a WebSocket).
fn changes_state(method: &Method, headers: &HeaderMap) -> bool {
    let read = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    !read || headers.contains_key(header::UPGRADE)
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    match (authority, host_header(headers)) {
        (Some(origin), Some(host)) => origin.eq_ignore_ascii_case(host),
        _ => false,
    }
}

fn host_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST)?.to_str().ok()
}

/// The name in a `Host` value or a configured host: no port, no brackets,
/// no trailing dot, lowercase.
fn host_name(authority: &str) -> String {
    let host = if authority.parse::<IpAddr>().is_ok() {
        authority
    } else if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(name, _)| name)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `localhost`, `*.localhost`, `127.0.0.0/8`, `::1`.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn normal_origin(origin: &str) -> String {
    origin.trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::middleware::from_fn_with_state;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    /// Two routes behind both checks, as the API's are.
    fn app(hosts: AllowedHosts, origins: &[&str]) -> Router {
        let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
        let guard = BrowserGuard::new(hosts, &origins);
        Router::new()
            .route("/read", get(|| async { "read" }))
            .route("/write", post(|| async { "written" }))
            .route_layer(from_fn_with_state(guard.clone(), host_check))
            .layer(from_fn_with_state(guard, origin_check))
    }

    fn loopback_only() -> AllowedHosts {
        AllowedHosts::LoopbackAnd(vec![])
    }

    async fn status(
        app: Router,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> StatusCode {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        response.status()
    }

    #[tokio::test]
    async fn loopback_hosts_with_any_port_are_answered() {
        for host in [
            "localhost:8000",
            "LOCALHOST",
            "dash.localhost:3000",
            "127.0.0.1:8000",
            "127.8.9.10",
            "[::1]:8000",
            "[::1]",
        ] {
            let headers = [("host", host)];
            let answered = status(app(loopback_only(), &[]), Method::GET, "/read", &headers);
            assert_eq!(answered.await, StatusCode::OK, "{host}");
        }
    }

    #[tokio::test]
    async fn a_foreign_host_is_refused_when_authentication_is_off() {
        for host in [
            "attacker.example",
            "attacker.example:8000",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "10.0.0.5:8000",
            "[::ffff:7f00:1]:8000",
        ] {
            let headers = [("host", host)];
            let refused = status(app(loopback_only(), &[]), Method::GET, "/read", &headers);
            assert_eq!(refused.await, StatusCode::FORBIDDEN, "{host}");
        }
    }

    #[tokio::test]
    async fn a_request_without_a_host_is_refused_when_authentication_is_off() {
        let refused = status(app(loopback_only(), &[]), Method::GET, "/read", &[]);
        assert_eq!(refused.await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn any_host_is_answered_when_authentication_is_on() {
        let headers = [("host", "attacker.example")];
        let answered = status(app(AllowedHosts::Any, &[]), Method::GET, "/read", &headers);
        assert_eq!(answered.await, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_listed_host_is_answered_with_any_port_and_case() {
        let hosts = AllowedHosts::LoopbackAnd(vec!["icarus.lan".to_owned()]);
        let headers = [("host", "Icarus.LAN:8000")];
        assert_eq!(
            status(app(hosts, &[]), Method::GET, "/read", &headers).await,
            StatusCode::OK
        );
    }

    #[test]
    fn the_callback_base_url_host_and_the_configured_hosts_are_allowed_with_authentication_off() {
        let mut config = Config::embedded_default().unwrap();
        config.agents.callback_base_url = "http://icarus.icarus.svc:8000".to_owned();
        config.orchestrator.allowed_hosts = vec!["Icarus.LAN".to_owned(), "[fd00::1]".to_owned()];
        let hosts = AllowedHosts::from_config(&config);
        for host in ["icarus.icarus.svc", "icarus.lan", "fd00::1", "localhost"] {
            assert!(hosts.allow(host), "{host}");
        }
        config.auth.enabled = true;
        assert_eq!(AllowedHosts::from_config(&config), AllowedHosts::Any);
    }

    #[tokio::test]
    async fn a_foreign_origin_cannot_post() {
        let headers = [
            ("host", "127.0.0.1:8000"),
            ("origin", "https://evil.example"),
        ];
        let refused = status(app(loopback_only(), &[]), Method::POST, "/write", &headers);
        assert_eq!(refused.await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_foreign_origin_cannot_post_even_with_authentication_on() {
        let headers = [
            ("host", "icarus.example"),
            ("origin", "https://evil.example"),
        ];
        let refused = status(
            app(AllowedHosts::Any, &[]),
            Method::POST,
            "/write",
            &headers,
        );
        assert_eq!(refused.await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_foreign_origin_cannot_upgrade_a_get() {
        let headers = [
            ("host", "127.0.0.1:8000"),
            ("origin", "https://evil.example"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ];
        let refused = status(app(loopback_only(), &[]), Method::GET, "/read", &headers);
        assert_eq!(refused.await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_foreign_origin_may_read_without_an_upgrade() {
        let headers = [
            ("host", "127.0.0.1:8000"),
            ("origin", "https://evil.example"),
        ];
        let answered = status(app(loopback_only(), &[]), Method::GET, "/read", &headers);
        assert_eq!(answered.await, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_null_origin_cannot_post_even_when_configured() {
        let headers = [("host", "127.0.0.1:8000"), ("origin", "null")];
        let refused = status(
            app(loopback_only(), &["null"]),
            Method::POST,
            "/write",
            &headers,
        );
        assert_eq!(refused.await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_configured_origin_may_post() {
        let headers = [
            ("host", "127.0.0.1:8000"),
            ("origin", "https://Dash.example"),
        ];
        let answered = status(
            app(loopback_only(), &["https://dash.example/"]),
            Method::POST,
            "/write",
            &headers,
        );
        assert_eq!(answered.await, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_apis_own_origin_may_post() {
        let headers = [
            ("host", "localhost:8000"),
            ("origin", "http://localhost:8000"),
        ];
        let answered = status(app(loopback_only(), &[]), Method::POST, "/write", &headers);
        assert_eq!(answered.await, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_origin_on_another_port_of_the_same_host_is_foreign() {
        let headers = [
            ("host", "localhost:8000"),
            ("origin", "http://localhost:3000"),
        ];
        let refused = status(app(loopback_only(), &[]), Method::POST, "/write", &headers);
        assert_eq!(refused.await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_request_without_an_origin_may_post() {
        let headers = [("host", "127.0.0.1:8000")];
        let answered = status(app(loopback_only(), &[]), Method::POST, "/write", &headers);
        assert_eq!(answered.await, StatusCode::OK);
    }
}
