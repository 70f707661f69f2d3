//! Kubernetes mode: jobs as `IcarusJob` custom resources, agents as Pods.
//!
//! Built so far: the resource itself ([`crd`]), generated from these Rust
//! types and checked in under `crds/`, and the manifests under `deploy/`.
//! The controller that drives IcarusJobs with the same planner as local mode
//! is the next step (see the README's "Kubernetes mode" section).

pub mod crd;
