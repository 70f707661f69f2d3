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
use tokio_util::sync::CancellationToken;

use super::{LeaderLoop, Orchestrator, Parts, ServerError};
use crate::cluster::{self, lease};
use crate::config::Config;
use crate::leadership::Election;
use crate::runtime::kubernetes::KubeRuntime;
use crate::runtime::kubernetes::workloads::WorkloadSettings;
use crate::source::pods::{GitPodSettings, PodSourceControl};
use crate::store::Store;
use crate::store::kubernetes::bridge::DecisionRules;
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
    /// `queue.default_priority`, for IcarusJobs that name none.
    default_priority: i32,
    decisions: DecisionRules,
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
            default_priority: config.queue.default_priority,
            decisions: DecisionRules::from_config(config),
        };
        (mode, Arc::new(runtime))
    }

    /// The IcarusJob ↔ store loops, which also record transitions as
    /// Kubernetes Events: run while this replica leads.
    fn sync_loops(&self) -> LeaderLoop {
        let api: Api<_> = Api::namespaced(self.client.clone(), &self.namespace);
        let reporter = kube::runtime::events::Reporter {
            controller: "icarus".to_owned(),
            instance: Some(cluster::identity()),
        };
        let recorder = kube::runtime::events::Recorder::new(self.client.clone(), reporter);
        let index = self.index.clone();
        let default_priority = self.default_priority;
        let decisions = self.decisions.clone();
        LeaderLoop {
            name: "IcarusJob sync",
            run: Box::new(move |store: Store, shutdown: CancellationToken| {
                let loops = sync::spawn(
                    api.clone(),
                    recorder.clone(),
                    store,
                    index.clone(),
                    default_priority,
                    decisions.clone(),
                    shutdown.clone(),
                );
                Box::pin(async move {
                    // Both run until the term ends; either ending first is
                    // the loop's end, and the other is stopped with it.
                    let (_, _, others) = futures::future::select_all(loops).await;
                    shutdown.cancel();
                    futures::future::join_all(others).await;
                })
            }),
        }
    }

    /// This mode's parts: the REST routes write IcarusJobs, git runs in
    /// Pods, the sync loops run while `election` makes this replica lead.
    pub fn parts(&self, runtime: Arc<dyn crate::runtime::Runtime>, election: Election) -> Parts {
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
            election,
            leader_loops: vec![self.sync_loops()],
        }
    }

    /// The campaign for the controller's Lease as this Pod (`POD_NAME`, else
    /// the host name).
    pub fn election(&self, config: &Config) -> Election {
        let api = Api::namespaced(self.client.clone(), &self.namespace);
        let timing = super::lease_timing(config);
        let elector = lease::Elector::new(api, LEASE_NAME, &cluster::identity(), timing.duration);
        Election::Campaign(Arc::new(elector), timing)
    }

    /// Starts the orchestrator as `icarus serve` does in this mode: a Lease
    /// campaign, the API, and the Lease-gated controller and sync loops.
    pub async fn start(
        self,
        config: &Config,
        runtime: Arc<dyn crate::runtime::Runtime>,
    ) -> Result<Orchestrator, ServerError> {
        let election = self.election(config);
        Orchestrator::start(config, self.parts(runtime, election)).await
    }
}

/// The Lease replicas campaign for.
const LEASE_NAME: &str = "icarus-controller";
