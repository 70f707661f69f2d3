//! A minimal HTTP/1.1 client for one thing: POSTing JSON to the callback URL,
//! exactly as given, with no extra headers.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A parsed `http://host:port/path` callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub host: String,
    pub port: u16,
    /// Path and query, as given.
    pub target: String,
}

impl Callback {
    pub fn parse(url: &str) -> Result<Callback, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("'{url}' is not an http:// URL"))?;
        let (authority, target) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse().map_err(|_| format!("bad port in '{url}'"))?,
            ),
            _ => (authority, 80),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("no host in '{url}'"));
        }
        Ok(Callback { host, port, target })
    }

    /// POSTs `body` and returns the response status code.
    pub fn post_json(&self, body: &serde_json::Value) -> Result<u16, String> {
        let address = self.resolve()?;
        let timeout = Duration::from_secs(5);
        let mut stream =
            TcpStream::connect_timeout(&address, timeout).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let payload = body.to_string();
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.target,
            self.host,
            self.port,
            payload.len(),
            payload
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| "no HTTP status in the response".to_owned())
    }

    fn resolve(&self) -> Result<SocketAddr, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        if let Some(ip) = lookup_hosts_file(&self.host) {
            return Ok(SocketAddr::new(ip, self.port));
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("no address for {}", self.host))
    }
}

/// The address `/etc/hosts` gives `name`, if any.
fn lookup_hosts_file(name: &str) -> Option<IpAddr> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let line = line.split('#').next()?;
        let mut fields = line.split_whitespace();
        let ip: IpAddr = fields.next()?.parse().ok()?;
        fields
            .any(|alias| alias.eq_ignore_ascii_case(name))
            .then_some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_url_keeps_its_path_and_query() {
        let callback =
            Callback::parse("http://host.docker.internal:8000/jobs/abc/callback?token=s3cret")
                .unwrap();
        assert_eq!(callback.host, "host.docker.internal");
        assert_eq!(callback.port, 8000);
        assert_eq!(callback.target, "/jobs/abc/callback?token=s3cret");
    }

    #[test]
    fn a_url_without_a_port_uses_80_and_https_is_refused() {
        assert_eq!(Callback::parse("http://10.0.0.1/cb").unwrap().port, 80);
        assert!(Callback::parse("https://example/cb").is_err());
    }
}
