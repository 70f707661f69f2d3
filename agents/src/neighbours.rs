//! The network test modes: whether one job's agent can reach another's.
//! `listen=PORT` serves a line on a TCP port until killed; `connect=IP:PORT`
//! tries to read that line and exits 0 if it could, [`UNREACHABLE`] if not.
//! The orchestrator's isolation test runs one of each, in two jobs.

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
}
