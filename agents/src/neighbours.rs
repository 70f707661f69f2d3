//! The network test modes: whether one job's agent can reach another's,
//! and what it can reach out there. `listen=PORT` serves a line on a TCP
//! port until killed; `connect=IP:PORT` tries to read that line and exits 0
//! if it could, [`UNREACHABLE`] if not; `fetch=NAME:PORT` does the same
//! through the egress proxy its environment names. The orchestrator's
//! isolation and egress tests run them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::log;

/// What a listener answers every connection with.
pub const GREETING: &str = "icarus-neighbour\n";

/// The exit code of a `connect` that could not reach its neighbour.
pub const UNREACHABLE: i32 = 7;

/// Serves [`GREETING`] on `port` (every interface) until the process is
/// killed. Returns only if the port cannot be bound.
pub fn listen(port: u16) -> i32 {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(error) => {
            log(&format!("cannot listen on {port}: {error}"));
            return 1;
        }
    };
    log(&format!("listening on {port}"));
    for mut stream in listener.incoming().flatten() {
        let _ = stream.write_all(GREETING.as_bytes());
    }
    0
}

/// Tries for a few seconds to read [`GREETING`] from `address`: 0 once it
/// did, [`UNREACHABLE`] if it never could.
pub fn connect(address: SocketAddr) -> i32 {
    for _ in 0..5 {
        match greeting_from(address) {
            Ok(()) => {
                log(&format!("connect {address}: reached"));
                return 0;
            }
            Err(error) => log(&format!("connect {address}: {error}")),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    log(&format!("connect {address}: unreachable"));
    UNREACHABLE
}

fn greeting_from(address: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    read_greeting(&mut stream)
}

/// Reads the stream to its end: [`GREETING`], or an error saying what came.
fn read_greeting(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer == GREETING {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected answer {answer:?}"
        )))
    }
}

/// Asks the proxy of `HTTPS_PROXY` (or `HTTP_PROXY`) for a tunnel to
/// `target` (`name:port`) and reads [`GREETING`] through it: 0 if it did,
/// [`UNREACHABLE`] if the proxy refused (its answer is logged) or there is
/// no proxy.
pub fn fetch(target: &str) -> i32 {
    let proxy = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .find_map(|name| std::env::var(name).ok());
    let Some(proxy) = proxy else {
        log(&format!("fetch {target}: no proxy in the environment"));
        return UNREACHABLE;
    };
    match greeting_through(&proxy, target) {
        Ok(()) => {
            log(&format!("fetch {target}: reached"));
            0
        }
        Err(error) => {
            log(&format!("fetch {target}: {error}"));
            UNREACHABLE
        }
    }
}

fn greeting_through(proxy: &str, target: &str) -> std::io::Result<()> {
    let invalid = || std::io::Error::other(format!("not a proxy URL: {proxy:?}"));
    let rest = proxy.strip_prefix("http://").ok_or_else(invalid)?;
    let (credentials, address) = rest
        .trim_end_matches('/')
        .rsplit_once('@')
        .ok_or_else(invalid)?;
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {}\r\n\r\n",
        base64(credentials.as_bytes())
    );
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte)? == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        return Err(std::io::Error::other(format!(
            "{status}: {}",
            answer.trim()
        )));
    }
    read_greeting(&mut stream)
}

/// Standard base64 with padding, for a `Basic` credential.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                encoded.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_reached_and_a_closed_port_is_not() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(connect(([127, 0, 0, 1], port).into()), UNREACHABLE);
        std::thread::spawn(move || listen(port));
        assert_eq!(connect(([127, 0, 0, 1], port).into()), 0);
    }

    #[test]
    fn credentials_are_encoded_as_standard_base64() {
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(
            base64(b"job.builder.1:t0k-en_"),
            "am9iLmJ1aWxkZXIuMTp0MGstZW5f"
        );
    }
}
