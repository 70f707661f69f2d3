//! Icarus: an orchestrator for autonomous coding jobs.
//!
//! A map of the crate, from the pure core outwards:
//!
//! - [`job`] (the `icarus-core` crate, re-exported): the domain (jobs,
//!   phases, workloads) and [`job::plan`], the pure function that decides
//!   every step of the lifecycle. It does no I/O and depends on no adapter.
//! - [`config`]: the typed configuration, layered embedded default → file → environment.
//!
//! The ports, each a folder with its adapters:
//! - [`store`]: where state is kept: desired state and history in SQL
//!   ([`store::sql`], SQLite or PostgreSQL) with compare-and-swap writes and
//!   a broadcast of every change, and in Kubernetes mode the IcarusJob
//!   resources in front of it ([`store::kubernetes`]).
//! - [`runtime`]: where agents run, behind the [`runtime::Runtime`] trait:
//!   Docker containers ([`runtime::docker`]) or Pods ([`runtime::kubernetes`]).
//! - [`source`]: the job's code in Git, behind the [`source::SourceControl`]
//!   trait: the checkout, the snapshot and its diff for review, the push of
//!   exactly that snapshot on approval; on this host or as Pods ([`source::pods`]).
//!
//! Around them:
//! - [`controller`]: the reconcile loop: a work queue keyed by job id, woken by
//!   store changes, runtime events and a periodic resync; it observes, plans and applies.
//! - [`notify`]: webhooks when a job needs a human or is done.
//! - [`pending`]: the queue of unfinished jobs in memory, kept current by
//!   the store's change feed: admission and queue places read it.
//! - [`retention`]: the sweep that deletes finished jobs past their days or
//!   over the workspaces' disk budget, and measures that disk.
//! - [`api`]: the HTTP and WebSocket API (axum), one error type mapped to JSON once.
//! - [`credentials`]: the per-agent callback tokens.
//! - [`drain`]: a replica's drain before maintenance (it admits no new job), kept
//!   in the database under its name.
//! - [`egress`]: the egress proxy, agents' one way out where their network
//!   has none: allow-listed names only, no private destination, a byte budget.
//! - [`errors`]: an error and its sources on one line.
//! - [`logging`]: the log's format (text for a terminal, JSON lines).
//! - [`traces`]: the optional OpenTelemetry exporter of the same spans
//!   (OTLP/HTTP), off unless `tracing.otlp_endpoint` is set.
//! - [`sentinel`]: host load → admission level.
//! - [`memory`]: freed memory handed back to the system once a crowd of
//!   stream subscribers left (the one `unsafe` call of the crate, glibc's
//!   `malloc_trim`).
//! - [`usage`]: the leader's sampler of what running agents use, measured
//!   through the runtime (CPU time, memory and its peak).
//! - [`metrics`]: the Prometheus registry every part records into, and the
//!   process metrics; served at `/metrics`.
//! - [`leadership`]: which replica reconciles: a lease campaigned for, with
//!   two backends (a row in the job store's database, a Kubernetes Lease),
//!   and the terms that gate and fence the leader loops.
//! - [`cluster`]: what the Kubernetes adapters share: the client, the
//!   IcarusJob resource, object labels, the Kubernetes Lease.
//! - [`serve`]: the composition roots, one per mode ([`serve::local`],
//!   [`serve::kubernetes`]), wiring the adapters into a supervised
//!   orchestrator that shuts down gracefully.
//! - [`client`]: the client commands (`submit`, `list`, `get`, `watch`,
//!   `logs`, `diff`, `approve`, ...), talking to an Icarus over its API.
//! - [`cli`]: the command line (`serve`, `migrate`, `config`, `crd`,
//!   `source-step`, the client commands, `completion`): it parses and dispatches.
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod credentials;
pub mod drain;
pub mod egress;
pub mod errors;
pub use icarus_core::{job, logs, names, ports};
pub mod leadership;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod pending;
pub mod retention;
pub mod runtime;
pub mod sentinel;
pub mod serve;
pub mod source;
pub mod store;
pub mod traces;
pub mod usage;
