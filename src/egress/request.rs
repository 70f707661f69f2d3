//! Reading a proxy request's head, and the proxy's own short answers.

use axum::http::Uri;
use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest request head the proxy reads.
pub(super) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header lines a request may have.
const MAX_HEADERS: usize = 64;

/// A request to the proxy, parsed.
#[derive(Debug)]
pub(super) struct ProxyRequest {
    pub target: Target,
    pub host: String,
    pub port: u16,
    /// The `Proxy-Authorization: Basic` user and password, if sent.
    pub credentials: Option<(String, String)>,
    /// What the client sent after the head: the start of a body, or a TLS
    /// hello sent without waiting for the tunnel's answer.
    pub rest: Vec<u8>,
}

#[derive(Debug)]
pub(super) enum Target {
    /// `CONNECT host:port`: a tunnel.
    Tunnel,
    /// A plain HTTP request, rewritten for the origin server: origin-form
    /// target, `Host` the checked name, no proxy headers, one request per
    /// connection.
    Forward { head: Vec<u8> },
}

#[derive(Debug, thiserror::Error)]
pub(super) enum HeadError {
    #[error("the request head is longer than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("the client closed the connection before its request head ended")]
    Closed,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("reading the request failed")]
    Io(#[from] std::io::Error),
}

/// Reads and parses one request head, bounded by [`MAX_HEAD_BYTES`].
pub(super) async fn read_request(
    client: &mut (impl AsyncRead + Unpin),
) -> Result<ProxyRequest, HeadError> {
    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Err(HeadError::Closed);
        }
        received.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&received) {
            Ok(httparse::Status::Complete(length)) => {
                return parse(&request, received[length..].to_vec());
            }
            Ok(httparse::Status::Partial) if received.len() < MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
            Err(error) => return Err(HeadError::Malformed(error.to_string())),
        }
    }
}

fn parse(request: &httparse::Request<'_, '_>, rest: Vec<u8>) -> Result<ProxyRequest, HeadError> {
    let method = request.method.unwrap_or_default();
    let path = request.path.unwrap_or_default();
    let credentials = request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("proxy-authorization"))
        .and_then(|header| basic_credentials(header.value));
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = authority(path)?;
        return Ok(ProxyRequest {
            target: Target::Tunnel,
            host,
            port,
            credentials,
            rest,
        });
    }
    let uri: Uri = path
        .parse()
        .map_err(|_| HeadError::Malformed(format!("{path:?} is not a URL")))?;
    if uri.scheme_str() != Some("http") {
        return Err(HeadError::Malformed(
            "only http:// URLs are forwarded; use CONNECT for anything else".to_owned(),
        ));
    }
    let host = uri.host().unwrap_or_default().to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let origin_target = uri.path_and_query().map_or("/", |p| p.as_str());
    let head = forwarded_head(request, method, origin_target, &host, port);
    Ok(ProxyRequest {
        target: Target::Forward { head },
        host,
        port,
        credentials,
        rest,
    })
}

/// `host:port` of a `CONNECT`.
fn authority(target: &str) -> Result<(String, u16), HeadError> {
    let malformed = || HeadError::Malformed(format!("CONNECT needs host:port, not {target:?}"));
    let (host, port) = target.rsplit_once(':').ok_or_else(malformed)?;
    let port = port.parse().ok().filter(|&p| p > 0).ok_or_else(malformed)?;
    Ok((host.to_owned(), port))
}

/// Headers that speak to the proxy or of this hop, never forwarded; the
/// `Host` is set from the checked name instead of the client's.
const HOP_HEADERS: [&str; 6] = [
    "proxy-authorization",
    "proxy-connection",
    "connection",
    "keep-alive",
    "host",
    "upgrade",
];

fn forwarded_head(
    request: &httparse::Request<'_, '_>,
    method: &str,
    target: &str,
    host: &str,
    port: u16,
) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    let authority = if port == 80 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    head.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    for header in request.headers.iter() {
        if HOP_HEADERS
            .iter()
            .any(|h| header.name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        head.extend_from_slice(header.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(header.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    head
}

fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A whole short answer of the proxy's own, after which it closes.
pub(super) fn answer(status: u16, reason: &str, message: &str) -> Vec<u8> {
    let body = format!("{message}\n");
    let challenge = if status == 407 {
        "Proxy-Authenticate: Basic realm=\"icarus-egress\"\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\n{challenge}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer that opens a tunnel.
pub(super) const TUNNEL_OPEN: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
