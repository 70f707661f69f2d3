//! The ports: what the controller and the API need of the world, as traits
//! the adapters in the `icarus` crate implement. They hold no I/O
//! themselves, so the core depends on no async runtime, database, engine or
//! Kubernetes client.
//!
//! - [`runtime`]: where agents run (Docker containers, Pods);
//! - [`source`]: the job's code in Git (on this host, as Pods);
//! - [`upstream`]: the first record of a job's desired state when the job
//!   store is not (Kubernetes mode's IcarusJobs).
//!
//! The job store is not a port: both modes keep their jobs in the same SQL
//! store (`icarus::store::Store`), with the IcarusJobs in front of it in
//! Kubernetes mode.

pub mod runtime;
pub mod source;
pub mod upstream;
