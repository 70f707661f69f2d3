//! The agents' own bridge network, and the gateway they call back through.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use bollard::Docker;
use bollard::models::{IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptions};

use crate::runtime::{Result, RuntimeError};

/// Creates the agents' own bridge network unless it exists, and returns its
/// id. A network of their own keeps agents off the default bridge, away from
/// other containers; with inter-container traffic off, agents on it cannot
/// reach one another either (one job's builder cannot talk to another's),
/// while each still reaches the host's gateway, where the callback (and the
/// egress proxy) listen. `sealed`: the network is `internal`, with no route
/// out of the host: agents reach the gateway and nothing beyond it.
///
/// A network of that name made by Icarus (labelled `icarus.managed`)
/// without isolation, or sealed differently, is made again when no
/// container uses it; while one does, a network that lets agents meet is
/// kept with a warning, and one that is not sealed as asked is an error:
/// agents would get out. A network Icarus did not make is the operator's:
/// never removed, only warned about when it lets agents meet, and an error
/// when it should be sealed and is not.
///
/// Docker lets two networks share a name, so orchestrators starting at once
/// may both create one: each then keeps the oldest of that name and removes
/// the others it can, and containers name the network by id, never by the
/// (possibly ambiguous) name.
pub(super) async fn ensure_network(docker: &Docker, name: &str, sealed: bool) -> Result<String> {
    replace_if_unfit(docker, name, sealed).await?;
    if named_networks(docker, name).await?.is_empty() {
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            internal: Some(sealed),
            labels: Some(HashMap::from([(
                MANAGED_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            options: Some(HashMap::from([(
                ISOLATING_OPTION.to_owned(),
                "false".to_owned(),
            )])),
            ..Default::default()
        };
        docker
            .create_network(request)
            .await
            .map_err(|e| RuntimeError::failed("create network", e))?;
        tracing::info!(network = name, sealed, "created the agents' network");
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

/// The bridge driver's switch for traffic between its containers.
pub const ISOLATING_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// Marks the networks Icarus made, and may therefore make again.
const MANAGED_LABEL: &str = "icarus.managed";

/// What a network called `name` is, of what matters to agents.
struct Fitness {
    ours: bool,
    in_use: bool,
    isolating: bool,
    sealed: bool,
}

/// Removes the networks called `name` that Icarus made and that are not
/// what agents need (isolating, sealed as asked), where no container uses
/// them (then [`ensure_network`] makes a new one); warns about, or refuses,
/// the others.
async fn replace_if_unfit(docker: &Docker, name: &str, sealed: bool) -> Result<()> {
    for (_, id) in named_networks(docker, name).await? {
        let network = docker
            .inspect_network(&id, None::<InspectNetworkOptions>)
            .await
            .map_err(|e| RuntimeError::failed("inspect network", e))?;
        let fitness = Fitness {
            ours: network
                .labels
                .as_ref()
                .is_some_and(|labels| labels.contains_key(MANAGED_LABEL)),
            in_use: network.containers.as_ref().is_some_and(|c| !c.is_empty()),
            isolating: network
                .options
                .as_ref()
                .and_then(|options| options.get(ISOLATING_OPTION))
                .is_some_and(|value| value == "false"),
            sealed: network.internal.unwrap_or(false),
        };
        if fitness.isolating && fitness.sealed == sealed {
            continue;
        }
        if fitness.ours && !fitness.in_use {
            if docker.remove_network(&id).await.is_ok() {
                tracing::info!(network = name, sealed, "made the agents' network again");
            }
            continue;
        }
        if sealed && !fitness.sealed {
            return Err(RuntimeError::failed(
                "prepare the agents' network",
                unsealed_network(name, fitness.ours),
            ));
        }
        warn_about(name, &fitness);
    }
    Ok(())
}

fn unsealed_network(name: &str, ours: bool) -> String {
    if ours {
        format!(
            "network {name} has a route out (made with agents.egress.mode: open) and agents \
             still use it; it is made again, sealed, once they have ended — or name another \
             network in agents.<role>.network_mode"
        )
    } else {
        format!(
            "network {name} is not Icarus's and has a route out; agents.egress.mode needs an \
             internal network (docker network create --internal) or one Icarus makes"
        )
    }
}

fn warn_about(name: &str, fitness: &Fitness) {
    if !fitness.isolating && !fitness.ours {
        tracing::warn!(
            network = name,
            "the agents' network was not made by Icarus and lets its containers reach each \
             other; it is left as it is"
        );
    } else if !fitness.isolating {
        tracing::warn!(
            network = name,
            "the agents' network lets its containers reach each other (made by an older version \
             and in use); it is made again, isolating, once no container uses it"
        );
    } else if fitness.sealed {
        tracing::warn!(
            network = name,
            "the agents' network has no route out though agents.egress.mode is open (it is in \
             use, or not Icarus's): agents on it cannot get out"
        );
    }
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
