//! The core of Icarus: what a job is and how its lifecycle is decided, with
//! no I/O at all — no async runtime, database, container engine or
//! Kubernetes client. Everything else (the store, the runtimes, the API,
//! the controller) is an adapter around it, in the `icarus` crate.
//!
//! - [`job`]: the domain (`JobSpec` = desired state, `JobStatus` = observed),
//!   phases, the reasons a job is where it is ([`job::reason`]), what the
//!   controller observes of workloads ([`job::workload`]), admission
//!   ([`job::admission`]) and the pure planner ([`job::plan`]), specified by
//!   property tests.
//!
//! - [`egress`]: where agents may connect to: the allow-list's rules and
//!   the addresses no agent reaches, which the egress proxy applies.
//! - [`logs`]: what becomes of an agent's output on its way to the log:
//!   lines cut, secrets redacted, a rate and a budget per agent.
//! - [`names`]: the names and labels of every object Icarus makes.
//! - [`ports`]: the traits the adapters implement (runtime, source
//!   control, upstream), with their errors and the workload specification.
//!
//! `cargo test -p icarus-core` runs the planner's specification without
//! compiling any adapter, nor any procedural macro: what only the adapters
//! need is behind features, which the `icarus` crate turns on.
//!
//! - `serde`: the domain's (de)serialisation, as the stores and the API write it;
//! - `schema`: its JSON schema, for the IcarusJob CRD;
//! - `ports`: the port traits (async) and their errors.
#![forbid(unsafe_code)]

pub mod egress;
pub mod job;
pub mod logs;
pub mod names;
#[cfg(feature = "ports")]
pub mod ports;
