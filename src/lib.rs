//! Icarus: an orchestrator for autonomous coding jobs.
//!
//! A map of the crate, from the pure core outwards:
//!
//! - [`job`] (the `icarus-core` crate, re-exported): the domain (jobs,
//!   phases, workloads) and [`job::plan`], the pure function that decides
//!   every step of the lifecycle. It does no I/O and depends on no adapter.
//! - [`config`]: the typed configuration, layered embedded default → file → environment.
//! - [`store`]: desired state and history in SQL (SQLite or PostgreSQL), with
//!   compare-and-swap writes and a broadcast of every change.
//! - [`runtime`]: where agents actually run, behind the [`runtime::Runtime`] trait.
//! - [`source`]: the job's code in Git: the checkout, the snapshot and its
//!   diff for review, the push of exactly that snapshot on approval, behind
//!   the [`source::SourceControl`] trait.
//! - [`controller`]: the reconcile loop: a work queue keyed by job id, woken by
//!   store changes, runtime events and a periodic resync; it observes, plans and applies.
//! - [`notify`]: webhooks when a job needs a human or is done.
//! - [`api`]: the HTTP and WebSocket API (axum), one error type mapped to JSON once.
//! - [`credentials`]: the per-agent callback tokens.
//! - [`sentinel`]: host load → admission level.
//! - [`k8s`]: Kubernetes mode: the IcarusJob resource, Pods and claims as a
//!   runtime, git steps as Pods, the sync between resources and the store,
//!   leader election.
//! - [`server`]: wires everything together and shuts it down gracefully.
//! - [`cli`]: the command line (`serve`, `migrate`, `config`, `crd`, `source-step`).
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod credentials;
pub use icarus_core::job;
pub mod k8s;
pub mod notify;
pub mod runtime;
pub mod sentinel;
pub mod server;
pub mod source;
pub mod store;
