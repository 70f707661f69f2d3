//! The egress proxy's place in a running orchestrator: on the agents'
//! gateway, beside the callback listener, on every replica (an agent's
//! credentials are checked against the shared key and the job's record, so
//! any replica can serve it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use icarus_core::egress::AllowList;
use tokio_util::sync::CancellationToken;

use super::supervisor::Supervisor;
use super::{ServerError, http};
use crate::config::{Config, EgressMode};
use crate::credentials::AgentKeys;
use crate::egress::{AgentGate, EgressProxy, ProxySettings};
use crate::runtime::Runtime;
use crate::store::Store;

/// How long the proxy waits for a name to resolve and its server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often what agents did through the proxy is written to their jobs.
const LEDGER_INTERVAL: Duration = Duration::from_secs(1);

/// What the proxy needs from the rest of the orchestrator.
pub(super) struct ProxyParts<'a> {
    pub config: &'a Config,
    pub runtime: &'a dyn Runtime,
    pub store: &'a Store,
    pub keys: &'a AgentKeys,
    /// Where agents call back, whose host they reach the proxy by in
    /// Kubernetes mode.
    pub callback_base: &'a str,
}

/// Says what agents may reach, and in allow-list mode starts the proxy
/// there; returns the `host:port` agents reach it at, if it serves them.
pub(super) async fn start_proxy(
    parts: ProxyParts<'_>,
    tasks: &mut Supervisor,
    stop: CancellationToken,
) -> Result<Option<String>, ServerError> {
    let config = parts.config;
    let enforced_by = if config.kubernetes.enabled {
        "the NetworkPolicy of deploy/networkpolicy.yaml, where the cluster's CNI enforces policies"
    } else {
        "the agents' network, which has no route out"
    };
    match config.agents.egress.mode {
        EgressMode::Open => {
            tracing::info!(
                "agents.egress.mode is open: agents reach whatever their network reaches"
            );
            return Ok(None);
        }
        EgressMode::Sealed => {
            tracing::info!(
                enforced_by,
                "agents.egress.mode is none: agents reach the orchestrator's callback and nothing else"
            );
            return Ok(None);
        }
        EgressMode::AllowList => {}
    }
    let Some((address, advertised)) = where_agents_reach_it(&parts).await else {
        tracing::warn!(
            "agents.egress.mode is allow-list, but the agents' network has no gateway for the \
             egress proxy (network_mode none?): agents reach nothing"
        );
        return Ok(None);
    };
    let listener = http::bind(address, config.orchestrator.reuse_port).map_err(|source| {
        ServerError::Bind {
            address: address.to_string(),
            source,
        }
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            address: address.to_string(),
            source,
        })?
        .port();
    let builder = AllowList::parse(&config.agents.builder.allowed_domains)?;
    let checker = AllowList::parse(&config.agents.checker.allowed_domains)?;
    tracing::info!(
        %address,
        port,
        enforced_by,
        builder = %summary(&builder),
        checker = %summary(&checker),
        "agents.egress.mode is allow-list: agents have no way out but the egress proxy, to \
         their role's allowed domains"
    );
    let gate = AgentGate::new(parts.keys.clone(), parts.store.clone(), builder, checker);
    let ledger = gate
        .ledger()
        .keep(parts.store.clone(), LEDGER_INTERVAL, stop.clone());
    tasks.spawn("egress ledger", ledger);
    let proxy = EgressProxy::new(proxy_settings(config), Arc::new(gate));
    tasks.spawn("egress proxy", proxy.serve(listener, stop));
    Ok(Some(format!("{advertised}:{port}")))
}

/// Where the proxy listens, and the host agents reach it by: in local mode
/// the agents' network's gateway, as `host.docker.internal` (beside the
/// callback); in Kubernetes mode the orchestrator's own address, reached
/// by the host of the callback URL (the Service, which must carry
/// `proxy_port` too: deploy/service.yaml).
async fn where_agents_reach_it(parts: &ProxyParts<'_>) -> Option<(SocketAddr, String)> {
    let config = parts.config;
    let port = config.agents.egress.proxy_port;
    if config.kubernetes.enabled {
        let host = match config.orchestrator.host.as_str() {
            "localhost" => IpAddr::from(Ipv4Addr::LOCALHOST),
            other => other.parse().ok()?,
        };
        let advertised = parts
            .callback_base
            .parse::<axum::http::Uri>()
            .ok()?
            .host()?
            .to_owned();
        return Some((SocketAddr::new(host, port), advertised));
    }
    let gateway = parts.runtime.agent_gateway().await.ok().flatten()?;
    Some((
        SocketAddr::new(gateway, port),
        "host.docker.internal".to_owned(),
    ))
}

fn proxy_settings(config: &Config) -> ProxySettings {
    let egress = &config.agents.egress;
    ProxySettings {
        max_bytes_per_job: egress.max_bytes_per_job,
        max_connections_per_job: egress.max_connections_per_job,
        head_timeout: Duration::from_secs(config.orchestrator.header_read_timeout_seconds.max(1)),
        connect_timeout: CONNECT_TIMEOUT,
        hosts: egress.hosts.clone().into_iter().collect(),
    }
}

fn summary(list: &AllowList) -> String {
    if list.rules().is_empty() {
        return "nothing".to_owned();
    }
    let rules: Vec<String> = list.rules().iter().map(ToString::to_string).collect();
    rules.join(", ")
}
