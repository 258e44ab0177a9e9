//! vswitchd, through `vswitch-proto` only: a fresh connection per request (vswitchd
//! may have restarted since the last one), and the names under which the driver's
//! state is kept there.

use crate::Driver;
use anyhow::Result;
use std::net::Ipv4Addr;
use vswitch_proto::{AllocEntry, BridgeInfo, Client, Command, HostEntry, PortInfo, PublishedEntry};

/// Bridge `external_ids` key: the Docker network's id.
pub const NET_KEY: &str = "docker_network";
/// Bridge `external_ids` key: the Docker network's name.
pub const NAME_KEY: &str = "docker_name";
/// Bridge `external_ids` key, "1" for `--internal` networks.
pub const INTERNAL_KEY: &str = "docker_internal";
/// Port `external_ids` key: the endpoint's id.
pub const EP_KEY: &str = "docker_endpoint";
/// Owner of the addresses the IPAM driver hands out, until an endpoint takes them.
pub const IPAM_OWNER: &str = "docker-ipam";

/// Docker's short form of an id.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Owner of an endpoint's address.
pub fn ep_owner(ep: &str) -> String {
    format!("docker-ep:{}", short(ep))
}

/// Owner of a network's `--aux-address` addresses.
pub fn aux_owner(net: &str) -> String {
    format!("docker-aux:{}", short(net))
}

/// Source of the DNS names registered for an endpoint.
pub fn name_source(ep: &str) -> String {
    format!("docker:{}", short(ep))
}

impl Driver {
    /// A new connection to vswitchd.
    pub(crate) fn vs(&self) -> Result<Client> {
        Ok(Client::connect(&self.socket)?)
    }
}

pub fn bridges(c: &mut Client) -> Result<Vec<BridgeInfo>> {
    Ok(c.call(Command::ListBr)?)
}

/// The bridge made for Docker network `net`.
pub fn network_bridge(bridges: &[BridgeInfo], net: &str) -> Option<BridgeInfo> {
    bridges
        .iter()
        .find(|b| b.external_ids.get(NET_KEY).map(String::as_str) == Some(net))
        .cloned()
}

/// The port of endpoint `ep` on `b`.
pub fn endpoint_port<'a>(b: &'a BridgeInfo, ep: &str) -> Option<&'a PortInfo> {
    b.ports
        .iter()
        .find(|p| p.external_ids.get(EP_KEY).map(String::as_str) == Some(ep))
}

pub fn allocations(c: &mut Client, bridge: &str) -> Result<Vec<AllocEntry>> {
    Ok(c.call(Command::ListAllocations {
        bridge: bridge.to_string(),
    })?)
}

pub fn hosts(c: &mut Client, bridge: &str) -> Result<Vec<HostEntry>> {
    Ok(c.call(Command::ListHosts {
        bridge: bridge.to_string(),
    })?)
}

/// Whether `id` looks like a Docker id (hex; it ends up in paths and names).
pub fn valid_id(id: &str) -> bool {
    id.len() >= 12 && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Unpublish every published port whose target address satisfies `to`; goes on after
/// a failure and reports them all.
pub fn unpublish_where(c: &mut Client, to: impl Fn(Ipv4Addr) -> bool) -> Result<()> {
    let published: Vec<PublishedEntry> = c.call(Command::ListPublished)?;
    let mut errs = Vec::new();
    for p in published {
        if !p.target_ip.parse().is_ok_and(&to) {
            continue;
        }
        let listen = match &p.ip {
            Some(a) => format!("{a}:{}", p.port),
            None => p.port.to_string(),
        };
        if let Err(e) = c.call_value(Command::Unpublish {
            proto: p.proto.clone(),
            listen: listen.clone(),
            if_exists: false,
        }) {
            errs.push(format!("unpublish {} {listen}: {e}", p.proto));
        }
    }
    if !errs.is_empty() {
        anyhow::bail!("{}", errs.join("; "));
    }
    Ok(())
}
