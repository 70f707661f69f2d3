//! Kubernetes mode: jobs as `IcarusJob` custom resources, agents as Pods.
//!
//! The pieces, from the cluster inwards:
//! - [`crd`]: the resource, generated from these Rust types (`crds/`);
//! - [`workloads`]: the objects a job runs on (two PVCs, its workspace and
//!   its repository; restricted agent Pods and git Pods; all owned by the
//!   job's resource), and who mounts what;
//! - [`claims`]: making and deleting those PVCs, the same way for both;
//! - [`observe`]: Pods as the planner's observed workloads, and the domain
//!   status as the resource's `.status` with conditions;
//! - [`runtime::KubeRuntime`]: the [`crate::runtime::Runtime`] over Pods and PVCs;
//! - [`source_pods`]: checkout, snapshot and publish as short-lived Pods;
//! - [`bridge`] and [`sync`]: resources into the job store (uid = job id; spec
//!   decisions through the domain rules) and statuses and Events back;
//! - [`upstream`]: the REST routes writing the resource first;
//! - [`lease`]: leader election.
//!
//! [`KubernetesMode`] wires them into `icarus serve` when `kubernetes.enabled`.
//! The manifests are under `deploy/`; see the README's "Kubernetes mode".

pub mod bridge;
pub mod claims;
pub mod crd;
pub mod lease;
#[cfg(test)]
mod mock_api;
pub mod objects;
pub mod observe;
pub mod runtime;
pub mod source_pods;
pub mod sync;
pub mod upstream;
pub mod workloads;

use std::sync::Arc;

use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::job::JobId;
use crate::server::{InCluster, Orchestrator, ServerError};
use crate::store::Store;

/// Kubernetes mode's pieces for `icarus serve`: the runtime now, the sync
/// loops once the store is open.
pub struct KubernetesMode {
    client: kube::Client,
    namespace: String,
    seen: sync::Seen,
    settings: workloads::WorkloadSettings,
}

impl KubernetesMode {
    /// Connects to the cluster (in-cluster, else `KUBECONFIG`) and builds the
    /// Pod runtime, owning each job's objects by its IcarusJob.
    pub async fn connect(
        config: &Config,
    ) -> Result<(Self, Arc<dyn crate::runtime::Runtime>), kube::Error> {
        let client = client(
            kube::Config::infer()
                .await
                .map_err(kube::Error::InferConfig)?,
        )?;
        Ok(Self::with_client(client, config))
    }

    /// Like [`KubernetesMode::connect`], with a client made elsewhere (tests
    /// give one backed by a mocked API server).
    pub fn with_client(
        client: kube::Client,
        config: &Config,
    ) -> (Self, Arc<dyn crate::runtime::Runtime>) {
        let namespace = config.kubernetes.namespace.clone();
        let seen = sync::Seen::default();
        let settings = workloads::WorkloadSettings::from_config(config);
        let runtime = runtime::KubeRuntime::new(client.clone(), &namespace, settings.clone())
            .watching()
            .owned_by(seen.clone());
        let mode = KubernetesMode {
            client,
            namespace,
            seen,
            settings,
        };
        (mode, Arc::new(runtime))
    }

    /// Starts the IcarusJob ↔ store loops, which also record transitions as
    /// Kubernetes Events.
    pub fn sync(&self, store: Store, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let api = Api::namespaced(self.client.clone(), &self.namespace);
        let reporter = kube::runtime::events::Reporter {
            controller: "icarus".to_owned(),
            instance: Some(identity()),
        };
        let recorder = kube::runtime::events::Recorder::new(self.client.clone(), reporter);
        sync::spawn(api, recorder, store, self.seen.clone(), shutdown)
    }

    /// What the orchestrator runs differently here: the Lease decides who
    /// reconciles, the REST routes write IcarusJobs, git runs in Pods.
    pub fn in_cluster(&self, leadership: watch::Receiver<bool>) -> InCluster {
        let jobs = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = Api::namespaced(self.client.clone(), &self.namespace);
        let claims = Api::namespaced(self.client.clone(), &self.namespace);
        InCluster {
            leadership,
            upstream: Arc::new(upstream::ResourceUpstream::new(jobs, self.seen.clone())),
            source: Arc::new(source_pods::PodSourceControl::new(
                pods,
                claims,
                self.seen.clone(),
                self.settings.clone(),
            )),
        }
    }

    /// Campaigns for the controller's Lease as this Pod (`POD_NAME`, else the
    /// host name); the receiver says whether this replica leads.
    pub fn campaign(&self, shutdown: CancellationToken) -> watch::Receiver<bool> {
        let api = Api::namespaced(self.client.clone(), &self.namespace);
        lease::Elector::new(api, LEASE_NAME, &identity(), LEASE_DURATION).spawn(shutdown)
    }

    /// Starts the orchestrator as `icarus serve` does in this mode: a Lease
    /// campaign, the API and the Lease-gated controller, and the sync loops
    /// once this replica leads. `stop` ends the campaign and the loops.
    pub async fn start(
        self,
        config: &Config,
        runtime: Arc<dyn crate::runtime::Runtime>,
        stop: CancellationToken,
    ) -> Result<Orchestrator, ServerError> {
        let leadership = self.campaign(stop.clone());
        let orchestrator =
            Orchestrator::start_in_cluster(config, runtime, self.in_cluster(leadership.clone()))
                .await?;
        self.sync_when_leading(orchestrator.store().clone(), leadership, stop);
        Ok(orchestrator)
    }

    /// Starts the sync loops once this replica leads.
    pub fn sync_when_leading(
        self,
        store: Store,
        mut leadership: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        tokio::spawn(async move {
            let leading = tokio::select! {
                _ = shutdown.cancelled() => false,
                leading = leadership.wait_for(|lead| *lead) => leading.is_ok(),
            };
            if leading {
                for task in self.sync(store, shutdown) {
                    let _ = task.await;
                }
            }
        });
    }
}

/// A client for `config` that reports a 429, 503 or 504 at once instead of
/// retrying it. kube's default (15 tries, waits doubling to minutes) would
/// hold a REST caller far past any proxy's patience; everything else here
/// tries again by itself (the controller requeues with backoff, watches
/// restart, the Lease is renewed every few seconds).
pub fn client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    kube::Client::try_from(config)
}

/// This replica's name: `POD_NAME`, else the host name, else a random one.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| JobId::new_random().to_string())
}

/// The Lease replicas campaign for.
const LEASE_NAME: &str = "icarus-controller";
/// A holder that has not renewed for this long is replaced.
const LEASE_DURATION: std::time::Duration = std::time::Duration::from_secs(15);
