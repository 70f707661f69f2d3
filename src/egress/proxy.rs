//! The proxy server: one task per client connection, from its request head
//! to the end of its relay.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use icarus_core::egress::{Destination, Refusal, forbidden_address};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::request::{ProxyRequest, TUNNEL_OPEN, Target, answer, read_request};
use super::{Admission, EgressEvent, Gatekeeper, Verdict};

/// The proxy's limits, and the names the operator maps to addresses.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Bytes, both ways together, one job's agents may move.
    pub max_bytes_per_job: u64,
    /// Connections one job's agents may hold open at once.
    pub max_connections_per_job: u32,
    /// How long a client may take to send its request head.
    pub head_timeout: Duration,
    /// How long resolving a name and connecting to it may take.
    pub connect_timeout: Duration,
    /// Names resolved by configuration instead of DNS, like `/etc/hosts`:
    /// the operator's word, so their addresses are not checked (a package
    /// mirror on a private network, a test server on loopback).
    pub hosts: HashMap<String, IpAddr>,
}

/// What one job's agents have used so far, as this proxy counted it.
#[derive(Debug, Default)]
struct JobUse {
    bytes: AtomicU64,
    connections: AtomicU32,
}

/// An open connection of a job's agents, counted until dropped.
struct Held(Arc<JobUse>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct EgressProxy {
    settings: ProxySettings,
    gatekeeper: Arc<dyn Gatekeeper>,
    /// By [`Admission::budget`]; an entry with no open connection goes
    /// past [`USES_PRUNED_AT`] entries (what it counted is in the record
    /// by then, and [`Admission::spent`] brings it back).
    jobs: Mutex<HashMap<String, Arc<JobUse>>>,
}

/// Jobs counted in memory before those with no open connection are dropped.
const USES_PRUNED_AT: usize = 1024;

/// A refusal as the client hears it, and whether it is one a person may
/// lift by allowing the destination.
struct Refused {
    status: u16,
    reason: &'static str,
    message: String,
    unlisted: bool,
}

impl Refused {
    fn new(status: u16, reason: &'static str, message: String) -> Refused {
        Refused {
            status,
            reason,
            message,
            unlisted: false,
        }
    }

    fn forbidden(message: impl ToString) -> Refused {
        Refused::new(403, "Forbidden", message.to_string())
    }

    /// Not on the list: what an approver can allow.
    fn unlisted(refusal: Refusal) -> Refused {
        Refused {
            unlisted: true,
            ..Refused::forbidden(refusal)
        }
    }
}

impl EgressProxy {
    pub fn new(settings: ProxySettings, gatekeeper: Arc<dyn Gatekeeper>) -> Arc<EgressProxy> {
        Arc::new(EgressProxy {
            settings,
            gatekeeper,
            jobs: Mutex::new(HashMap::new()),
        })
    }

    /// Serves clients from `listener` until `stop`; connections already
    /// relaying end with their clients or their budget.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((client, _)) => {
                    tokio::spawn(self.clone().handle(client));
                }
                Err(error) => {
                    tracing::warn!(%error, "the egress proxy could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn handle(self: Arc<Self>, mut client: TcpStream) {
        let head = tokio::time::timeout(self.settings.head_timeout, read_request(&mut client));
        let request = match head.await {
            Ok(Ok(request)) => request,
            Ok(Err(error)) => {
                let refusal = answer(400, "Bad Request", &error.to_string());
                let _ = client.write_all(&refusal).await;
                return;
            }
            Err(_) => return,
        };
        let Some(admission) = self.admit(&request).await else {
            let message = "proxy credentials missing or not a running agent's";
            let _ = client
                .write_all(&answer(407, "Proxy Authentication Required", message))
                .await;
            return;
        };
        let event = |verdict| EgressEvent {
            agent: admission.agent.clone(),
            host: request.host.clone(),
            port: request.port,
            verdict,
        };
        match self.open(&admission, &request).await {
            Ok((upstream, held)) => {
                let verdict = self.relay(client, upstream, &request, held).await;
                self.gatekeeper.record(event(verdict));
            }
            Err(refused) => {
                let answered = answer(refused.status, refused.reason, &refused.message);
                let _ = client.write_all(&answered).await;
                let verdict = if refused.unlisted {
                    Verdict::Unlisted(refused.message)
                } else {
                    Verdict::Refused(refused.message)
                };
                self.gatekeeper.record(event(verdict));
            }
        }
    }

    async fn admit(&self, request: &ProxyRequest) -> Option<Admission> {
        let (user, secret) = request.credentials.as_ref()?;
        self.gatekeeper.admit(user, secret).await
    }

    /// Decides, resolves and connects: a connection to a checked address,
    /// counted against the agent, or why not.
    async fn open(
        &self,
        admission: &Admission,
        request: &ProxyRequest,
    ) -> Result<(TcpStream, Held), Refused> {
        let held = self.hold(admission)?;
        let destination = Destination::parse(&request.host).map_err(Refused::forbidden)?;
        if !admission.allowed.allows(&destination, request.port) {
            let port = request.port;
            return Err(Refused::unlisted(Refusal::NotListed { destination, port }));
        }
        let connecting = async {
            let addresses = self.resolve(&destination, request.port).await?;
            connect(&addresses).await
        };
        let upstream = tokio::time::timeout(self.settings.connect_timeout, connecting)
            .await
            .map_err(|_| {
                Refused::new(
                    504,
                    "Gateway Timeout",
                    format!("{destination}: timed out connecting"),
                )
            })??;
        Ok((upstream, held))
    }

    /// Counts a new connection against the agent's job, unless the job is
    /// at its cap or has spent its bytes: what this proxy counted, or what
    /// the job's record says (other replicas', or before a restart),
    /// whichever is more.
    fn hold(&self, admission: &Admission) -> Result<Held, Refused> {
        let usage = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if jobs.len() >= USES_PRUNED_AT && !jobs.contains_key(&admission.budget) {
                jobs.retain(|_, usage| usage.connections.load(Ordering::Acquire) > 0);
            }
            jobs.entry(admission.budget.clone()).or_default().clone()
        };
        let spent = usage.bytes.fetch_max(admission.spent, Ordering::AcqRel);
        let limit = self.settings.max_bytes_per_job;
        if spent.max(admission.spent) >= limit {
            return Err(Refused::forbidden(format!(
                "this job has used its egress budget of {limit} bytes"
            )));
        }
        let cap = self.settings.max_connections_per_job;
        let open = usage.connections.fetch_add(1, Ordering::AcqRel);
        let held = Held(usage);
        if open >= cap {
            return Err(Refused::new(
                429,
                "Too Many Requests",
                format!("this job's agents already have {cap} connections open"),
            ));
        }
        Ok(held)
    }

    /// The addresses of a name: the operator's, or DNS's if every one of
    /// them is one an agent may reach.
    async fn resolve(
        &self,
        destination: &Destination,
        port: u16,
    ) -> Result<Vec<SocketAddr>, Refused> {
        if let Some(&address) = self.settings.hosts.get(destination.as_str()) {
            return Ok(vec![SocketAddr::new(address, port)]);
        }
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((destination.as_str(), port))
            .await
            .map_err(|error| {
                Refused::new(
                    502,
                    "Bad Gateway",
                    format!("{destination} cannot be resolved: {error}"),
                )
            })?
            .collect();
        for address in &addresses {
            if let Some(kind) = forbidden_address(address.ip()) {
                return Err(Refused::forbidden(Refusal::ForbiddenAddress {
                    destination: destination.clone(),
                    address: address.ip(),
                    kind,
                }));
            }
        }
        if addresses.is_empty() {
            let message = format!("{destination} has no address");
            return Err(Refused::new(502, "Bad Gateway", message));
        }
        Ok(addresses)
    }

    /// Moves bytes both ways until both sides are done or the agent's
    /// budget is spent, whichever comes first.
    async fn relay(
        &self,
        client: TcpStream,
        upstream: TcpStream,
        request: &ProxyRequest,
        held: Held,
    ) -> Verdict {
        let budget = Budget {
            usage: &held.0,
            limit: self.settings.max_bytes_per_job,
        };
        let sent = AtomicU64::new(0);
        let received = AtomicU64::new(0);
        let ended = exchange(client, upstream, request, &budget, [&sent, &received]).await;
        Verdict::Closed {
            sent: sent.into_inner(),
            received: received.into_inner(),
            cut_at_budget: matches!(ended, Err(Cut::Budget)),
        }
    }
}

/// Opens the exchange (the tunnel's answer, or the forwarded head), sends
/// what the client sent after its head, then pumps both ways.
async fn exchange(
    mut client: TcpStream,
    mut upstream: TcpStream,
    request: &ProxyRequest,
    budget: &Budget<'_>,
    [sent, received]: [&AtomicU64; 2],
) -> Result<(), Cut> {
    match &request.target {
        Target::Tunnel => client.write_all(TUNNEL_OPEN).await,
        Target::Forward { head } => {
            if !budget.charge(sent, head.len()) {
                return Err(Cut::Budget);
            }
            upstream.write_all(head).await
        }
    }
    .map_err(|_| Cut::Io)?;
    if !budget.charge(sent, request.rest.len()) {
        return Err(Cut::Budget);
    }
    upstream
        .write_all(&request.rest)
        .await
        .map_err(|_| Cut::Io)?;
    let (mut client_in, mut client_out) = client.split();
    let (mut upstream_in, mut upstream_out) = upstream.split();
    tokio::try_join!(
        pump(&mut client_in, &mut upstream_out, budget, sent),
        pump(&mut upstream_in, &mut client_out, budget, received),
    )?;
    Ok(())
}

/// Connects to the first address that answers.
async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, Refused> {
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    let why = last_error.map_or_else(|| "no address".to_owned(), |e| e.to_string());
    Err(Refused::new(
        502,
        "Bad Gateway",
        format!("cannot connect: {why}"),
    ))
}

/// A job's byte budget, charged as bytes pass.
struct Budget<'a> {
    usage: &'a JobUse,
    limit: u64,
}

impl Budget<'_> {
    /// Charges `bytes` to the job and to `counter`; false if that spends
    /// more than the job has left (the bytes are then not sent).
    fn charge(&self, counter: &AtomicU64, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let before = self.usage.bytes.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > self.limit {
            return false;
        }
        counter.fetch_add(bytes, Ordering::Relaxed);
        true
    }
}

/// Why a relay ended early.
enum Cut {
    Budget,
    Io,
}

/// Copies one direction until its end of file (then shuts the other side's
/// writing half, so the far end sees the end too).
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    budget: &Budget<'_>,
    counter: &AtomicU64,
) -> Result<(), Cut> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await.map_err(|_| Cut::Io)?;
        if read == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        if !budget.charge(counter, read) {
            return Err(Cut::Budget);
        }
        to.write_all(&buffer[..read]).await.map_err(|_| Cut::Io)?;
    }
}
