//! Kubernetes mode's state: `IcarusJob` resources in front of the job store.
//!
//! - [`bridge`]: the rules between a resource and a stored job (uid = job
//!   id; spec changes through the domain's decisions; status patches);
//! - [`sync`]: the loops running them, resources into the store and
//!   statuses and Events back;
//! - [`upstream`]: the REST routes' writes, onto the resource first;
//! - [`status`]: a domain status as the resource's `.status` and conditions;
//! - [`index`]: the resources this replica has seen, shared with the Pod
//!   runtime and the git Pods for owner references.

pub mod bridge;
mod index;
pub mod status;
pub mod sync;
pub mod upstream;

pub use index::ResourceIndex;
