//! At start, before serving: what changed in Docker while the driver was down.
//!
//! A network removed meanwhile loses its bridge; an endpoint Docker no longer knows
//! (its container removed) loses its port, names, published ports and address; an
//! endpoint that joined but whose names were not registered gets them. Docker cannot
//! create endpoints while the driver does not answer, so nothing found here is being
//! made right now. Without the Engine or vswitchd this is skipped (with a warning):
//! the driver keeps working from vswitchd's state alone.

use crate::endpoint::{register_names, teardown};
use crate::vs::{self, EP_KEY, NET_KEY};
use crate::{engine, Driver};
use anyhow::Result;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use vswitch_proto::Command;

pub fn resync(d: &Arc<Driver>) {
    if let Err(e) = run(d) {
        tracing::warn!(error = %format!("{e:#}"), "no resync with Docker at start");
    }
}

fn run(d: &Arc<Driver>) -> Result<()> {
    let _g = d.changes();
    let mut c = d.vs()?;
    for b in vs::bridges(&mut c)? {
        let Some(net) = b.external_ids.get(NET_KEY).cloned() else {
            continue;
        };
        let Some(n) = engine::network(&net)? else {
            tracing::info!(bridge = %b.name, network = vs::short(&net), "network gone from Docker: removing its bridge");
            crate::network::remove_bridge(&mut c, &b)?;
            continue;
        };
        // Endpoints Docker knows: attached ones by their EndpointID, the others as
        // `ep-ID` keys.
        let mut known: HashSet<String> = HashSet::new();
        for (k, a) in &n.containers {
            known.insert(vs::short(&a.endpoint_id).to_string());
            if let Some(ep) = k.strip_prefix("ep-") {
                known.insert(vs::short(ep).to_string());
            }
        }
        let hosts = vs::hosts(&mut c, &b.name)?;
        for p in &b.ports {
            let Some(ep) = p.external_ids.get(EP_KEY) else {
                continue;
            };
            if !known.contains(vs::short(ep)) {
                tracing::info!(bridge = %b.name, endpoint = vs::short(ep), "endpoint gone from Docker: removing its port");
                teardown(&mut c, &b, ep)?;
                continue;
            }
            let ip = p
                .external_ids
                .get("ip")
                .and_then(|s| s.split('/').next())
                .and_then(|s| s.parse::<Ipv4Addr>().ok());
            let source = vs::name_source(ep);
            if let (Some(ip), false) = (ip, hosts.iter().any(|h| h.source == source)) {
                let (d, net, ep, bridge) = (Arc::clone(d), net.clone(), ep.clone(), b.name.clone());
                std::thread::spawn(move || register_names(&d, &net, &ep, &bridge, ip));
            }
        }
        for a in vs::allocations(&mut c, &b.name)? {
            if let Some(ep) = a.owner.strip_prefix("docker-ep:") {
                if !known.contains(ep) {
                    c.call_value(Command::ReleaseAddress {
                        bridge: b.name.clone(),
                        owner: a.owner.clone(),
                        ip: None,
                    })?;
                }
            }
        }
    }
    Ok(())
}
