//! The HTTP listener, with limits a slow or hostile client cannot outlast.
//!
//! `axum::serve` has none: a connection that never finishes its request
//! head is held forever, and any number of them may be open. Here each
//! connection must send its head within `orchestrator.header_read_timeout_seconds`,
//! and beyond `orchestrator.max_connections` open at once a new one is
//! closed as soon as it is accepted, so the orchestrator's memory and file
//! descriptors stay bounded. Shutdown stops accepting, then waits for the
//! connections in flight to finish their requests. A connection answered
//! before its request body was read closes lingeringly ([`linger`]), so the
//! client reads that answer (a 413) instead of a reset.
//!
//! With `orchestrator.reuse_port`, listeners are bound with `SO_REUSEPORT`:
//! replicas on one host then listen on the same port, the kernel spreads new
//! connections among them, and when one dies the others receive them all,
//! so clients and agents keep one address through a takeover.

mod linger;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::map_request_body::MapRequestBody;

use linger::{LingeringClose, UnreadBody};

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a connection may take to send a request's head.
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed on arrival.
    pub max_connections: usize,
}

/// Connections a listener queues before accepting them.
const BACKLOG: u32 = 1024;

/// Listens on `address`; with `reuse_port`, beside other processes that
/// listen on it with the option too.
pub fn bind(address: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// [`bind`] on `host:port`, a name resolved first (the first address that binds).
pub async fn bind_named(address: &str, reuse_port: bool) -> std::io::Result<TcpListener> {
    let mut failed = None;
    for resolved in tokio::net::lookup_host(address).await? {
        match bind(resolved, reuse_port) {
            Ok(listener) => return Ok(listener),
            Err(error) => failed = Some(error),
        }
    }
    Err(failed.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address to bind")
    }))
}

/// Serves `app` on `listener` until `stop`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    // HTTP/1.1 only, as before: nothing here needs HTTP/2.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut connections = JoinSet::new();
    let mut refused = 0u64;
    loop {
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, a connection reset before accept: the
                // listener itself is fine; pause so an error cannot spin.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused,
                    "connection limit reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        connections.spawn(connection(
            builder.clone(),
            stream,
            app.clone(),
            permit,
            stop.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One connection, to its end; on `stop`, the request in flight finishes
/// and the connection closes. An upgraded one (a WebSocket) is its
/// handler's from then on, and ends with the orchestrator's own shutdown.
async fn connection(
    builder: http1::Builder,
    stream: TcpStream,
    app: Router,
    permit: OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    let unread = UnreadBody::default();
    let app = MapRequestBody::new(app, {
        let unread = unread.clone();
        move |body| unread.watch(body)
    });
    let socket = LingeringClose::new(stream, unread);
    let connection = builder
        .serve_connection(TokioIo::new(socket), TowerToHyperService::new(app))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    // A client that went away or timed out is not the server's error.
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
    drop(permit);
}
