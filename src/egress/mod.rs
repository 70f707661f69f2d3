//! The egress proxy: the one way out for agents whose network has no route
//! out of its own.
//!
//! An agent authenticates with its own callback credentials
//! (`Proxy-Authorization: Basic`, which every common client sends when its
//! `HTTP(S)_PROXY` carries `user:password@`), asks for a name — `CONNECT
//! name:port` for TLS and anything else, or a plain `GET http://name/...` —
//! and the proxy:
//!
//! - decides with [`icarus_core::egress`]: a DNS name, never an IP literal,
//!   on the agent's allow-list (as the [`Gatekeeper`] gives it for this very
//!   connection, so a domain a person allows counts from the next one);
//! - resolves the name itself and refuses it if any address it resolves to
//!   is loopback, private, link-local (cloud metadata) and the like, then
//!   connects to an address it checked: no second lookup for DNS to change;
//! - counts bytes (both ways) and open connections per job, cutting a
//!   connection off when the job's byte budget is spent;
//! - tells the [`Gatekeeper`] of every refusal and of every connection that
//!   ends, with its bytes, so that each becomes an event of the job.
//!
//! What it cannot see: inside a `CONNECT` tunnel the bytes are TLS, so the
//! name in the TLS handshake or an HTTP `Host` inside it is not checked
//! against the list (a listed CDN could front for another site). Plain HTTP
//! is forwarded with its `Host` set to the name that was checked.

mod gatekeeper;
mod proxy;
mod request;

use async_trait::async_trait;
use icarus_core::egress::AllowList;

pub use gatekeeper::{AgentGate, Ledger, proxy_user};
pub use proxy::{EgressProxy, ProxySettings};

/// What the proxy asks of the orchestrator: who an agent is, what it may
/// reach, and where its traffic is recorded.
#[async_trait]
pub trait Gatekeeper: Send + Sync + 'static {
    /// The agent these proxy credentials belong to, with what it may reach
    /// now; `None` if they are no running agent's.
    async fn admit(&self, user: &str, secret: &str) -> Option<Admission>;

    /// Records a refusal, or a connection that has ended.
    fn record(&self, event: EgressEvent);
}

/// An agent the proxy serves.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Names the agent in events.
    pub agent: String,
    pub allowed: AllowList,
    /// What its bytes and connections count against: its job, whose
    /// agents (every role and attempt) share one budget.
    pub budget: String,
    /// Bytes already recorded against that budget (by any replica, before
    /// any restart): the proxy counts from here if it has counted less.
    pub spent: u64,
}

/// One decision of the proxy, for the job's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressEvent {
    pub agent: String,
    /// The host as the agent named it.
    pub host: String,
    pub port: u16,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Refused before any byte went out, and why (as the agent was told).
    Refused(String),
    /// Refused because no rule lists the destination: what a person may
    /// allow (for the job, or for everyone), and why, as the agent was told.
    Unlisted(String),
    /// Allowed, and now closed: the bytes each way, and whether the
    /// proxy cut it off at the job's byte budget.
    Closed {
        sent: u64,
        received: u64,
        cut_at_budget: bool,
    },
}
