//! Kubernetes mode: jobs as `IcarusJob` custom resources, agents as Pods.
//!
//! Built so far, all pure and tested: the resource itself ([`crd`]),
//! generated from these Rust types and checked in under `crds/`; the objects
//! a job runs on ([`workloads`]: a workspace PVC, restricted agent Pods owned
//! by their job); and the translation between the cluster and the planner
//! ([`observe`]: Pods as observed workloads, domain status as `.status` with
//! conditions); and [`runtime::KubeRuntime`], the [`crate::runtime::Runtime`]
//! over Pods and PVCs, tested against a mocked API server; and the [`bridge`]
//! decisions between IcarusJobs and the job store (a resource becomes a job
//! with its uid as id; spec approval and cancel go through the domain rules;
//! status is merge-patched back), run by the [`sync`] loops (an IcarusJob
//! watch into the store; store writes back onto the resources). The
//! manifests are under `deploy/`. Not yet: leader election, Kubernetes
//! Events, REST writes going to the resource, and wiring it all into
//! `icarus serve`; see the README's "Kubernetes mode" section.

pub mod bridge;
pub mod crd;
pub mod observe;
pub mod runtime;
pub mod sync;
pub mod workloads;
