//! The agents' own bridge network, and the gateway they call back through.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use bollard::Docker;
use bollard::models::{IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptions};

use crate::runtime::{Result, RuntimeError};

/// Creates the agents' own bridge network unless it exists, and returns its
/// id. A network of their own keeps agents off the default bridge, away from
/// other containers.
///
/// Docker lets two networks share a name, so orchestrators starting at once
/// may both create one: each then keeps the oldest of that name and removes
/// the others it can, and containers name the network by id, never by the
/// (possibly ambiguous) name.
pub(super) async fn ensure_network(docker: &Docker, name: &str) -> Result<String> {
    if named_networks(docker, name).await?.is_empty() {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(HashMap::from([(
                "icarus.managed".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        docker
            .create_network(request)
            .await
            .map_err(|e| RuntimeError::failed("create network", e))?;
        tracing::info!(network = name, "created the agents' network");
    }
    let mut networks = named_networks(docker, name).await?;
    networks.sort();
    let Some((_, canonical)) = networks.first().cloned() else {
        return Err(RuntimeError::failed(
            "create network",
            format!("network {name} vanished"),
        ));
    };
    for (_, duplicate) in networks.iter().skip(1) {
        // In use by someone's containers: then it stays, harmlessly.
        let _ = docker.remove_network(duplicate).await;
    }
    Ok(canonical)
}

/// `(created, id)` of every network called exactly `name`.
async fn named_networks(docker: &Docker, name: &str) -> Result<Vec<(String, String)>> {
    let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
    let options = ListNetworksOptions {
        filters: Some(filters),
    };
    let networks = docker
        .list_networks(Some(options))
        .await
        .map_err(|e| RuntimeError::failed("list networks", e))?;
    // The name filter matches substrings; keep exact names only.
    Ok(networks
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| Some((n.created.unwrap_or_default(), n.id?)))
        .collect())
}

pub(super) async fn network_gateway(docker: &Docker, name: &str) -> Result<Option<IpAddr>> {
    let network = docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
        .map_err(|e| RuntimeError::failed("inspect network", e))?;
    let configs = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default();
    Ok(configs.iter().find_map(gateway_of))
}

/// The gateway an IPAM entry names, or by Docker's convention the first
/// address of its IPv4 subnet (the default bridge often omits the gateway).
fn gateway_of(config: &IpamConfig) -> Option<IpAddr> {
    if let Some(gateway) = config.gateway.as_deref().and_then(|g| g.parse().ok()) {
        return Some(gateway);
    }
    let (network, _) = config.subnet.as_deref()?.split_once('/')?;
    let network: Ipv4Addr = network.parse().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(u32::from(network) + 1)))
}
