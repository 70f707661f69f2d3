//! Kubernetes mode's composition root (`kubernetes.enabled`): jobs as
//! `IcarusJob` resources, agents and git steps as Pods.
//!
//! [`KubernetesMode`] picks the adapters — [`KubeRuntime`] for agents,
//! [`PodSourceControl`] for git, [`ResourceUpstream`] and the
//! [`sync`] loops for the resources in front of the store, a Lease for
//! leadership — and hands them to [`Orchestrator::start`] as one [`Parts`].
//! The manifests are under `deploy/`; see the README's "Kubernetes mode".

use std::sync::Arc;

use kube::Api;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{LeaderLoop, Orchestrator, Parts, ServerError};
use crate::cluster::{self, lease};
use crate::config::Config;
use crate::runtime::kubernetes::KubeRuntime;
use crate::runtime::kubernetes::workloads::WorkloadSettings;
use crate::source::pods::{GitPodSettings, PodSourceControl};
use crate::store::Store;
use crate::store::kubernetes::upstream::ResourceUpstream;
use crate::store::kubernetes::{ResourceIndex, sync};

/// Kubernetes mode's pieces for `icarus serve`: the runtime now, the sync
/// loops once the store is open.
pub struct KubernetesMode {
    client: kube::Client,
    namespace: String,
    index: ResourceIndex,
    settings: WorkloadSettings,
    git: GitPodSettings,
}

impl KubernetesMode {
    /// Connects to the cluster (in-cluster, else `KUBECONFIG`) and builds the
    /// Pod runtime, owning each job's objects by its IcarusJob.
    pub async fn connect(
        config: &Config,
    ) -> Result<(Self, Arc<dyn crate::runtime::Runtime>), kube::Error> {
        let client = cluster::client(
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
        let index = ResourceIndex::default();
        let settings = WorkloadSettings::from_config(config);
        let runtime = KubeRuntime::new(client.clone(), &namespace, settings.clone())
            .watching()
            .owned_by(index.clone());
        let mode = KubernetesMode {
            client,
            namespace,
            index,
            settings,
            git: GitPodSettings::from_config(config),
        };
        (mode, Arc::new(runtime))
    }

    /// The IcarusJob ↔ store loops, which also record transitions as
    /// Kubernetes Events: run once this replica leads.
    fn sync_loops(&self) -> LeaderLoop {
        let api = Api::namespaced(self.client.clone(), &self.namespace);
        let reporter = kube::runtime::events::Reporter {
            controller: "icarus".to_owned(),
            instance: Some(cluster::identity()),
        };
        let recorder = kube::runtime::events::Recorder::new(self.client.clone(), reporter);
        let index = self.index.clone();
        LeaderLoop {
            name: "IcarusJob sync",
            run: Box::new(move |store: Store, shutdown: CancellationToken| {
                Box::pin(async move {
                    let loops = sync::spawn(api, recorder, store, index, shutdown);
                    // Both run until shutdown; either ending is the loop's end.
                    let _ = futures::future::select_all(loops).await;
                })
            }),
        }
    }

    /// This mode's parts: the Lease decides who reconciles, the REST routes
    /// write IcarusJobs, git runs in Pods, the sync loops run when leading.
    pub fn parts(
        &self,
        runtime: Arc<dyn crate::runtime::Runtime>,
        leadership: watch::Receiver<bool>,
    ) -> Parts {
        let jobs = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = Api::namespaced(self.client.clone(), &self.namespace);
        let claims = Api::namespaced(self.client.clone(), &self.namespace);
        Parts {
            runtime,
            source: Arc::new(PodSourceControl::new(
                pods,
                claims,
                self.index.clone(),
                self.settings.clone(),
                self.git.clone(),
            )),
            upstream: Some(Arc::new(ResourceUpstream::new(jobs, self.index.clone()))),
            leadership: Some(leadership),
            leader_loops: vec![self.sync_loops()],
        }
    }

    /// Campaigns for the controller's Lease as this Pod (`POD_NAME`, else the
    /// host name); the receiver says whether this replica leads.
    pub fn campaign(&self, shutdown: CancellationToken) -> watch::Receiver<bool> {
        let api = Api::namespaced(self.client.clone(), &self.namespace);
        lease::Elector::new(api, LEASE_NAME, &cluster::identity(), LEASE_DURATION).spawn(shutdown)
    }

    /// Starts the orchestrator as `icarus serve` does in this mode: a Lease
    /// campaign (ended by `stop`), the API, and the Lease-gated controller
    /// and sync loops.
    pub async fn start(
        self,
        config: &Config,
        runtime: Arc<dyn crate::runtime::Runtime>,
        stop: CancellationToken,
    ) -> Result<Orchestrator, ServerError> {
        let leadership = self.campaign(stop);
        Orchestrator::start(config, self.parts(runtime, leadership)).await
    }
}

/// The Lease replicas campaign for.
const LEASE_NAME: &str = "icarus-controller";
/// A holder that has not renewed for this long is replaced.
const LEASE_DURATION: std::time::Duration = std::time::Duration::from_secs(15);
