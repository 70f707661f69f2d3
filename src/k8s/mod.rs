//! Kubernetes mode: jobs as `IcarusJob` custom resources, agents as Pods.
//!
//! Built so far, all pure and tested: the resource itself ([`crd`]),
//! generated from these Rust types and checked in under `crds/`; the objects
//! a job runs on ([`workloads`]: a workspace PVC, restricted agent Pods owned
//! by their job); and the translation between the cluster and the planner
//! ([`observe`]: Pods as observed workloads, domain status as `.status` with
//! conditions). The manifests are under `deploy/`. The controller that ties
//! them to the API server (kube-runtime, leader election) is the next step;
//! see the README's "Kubernetes mode" section.

pub mod crd;
pub mod observe;
pub mod workloads;
