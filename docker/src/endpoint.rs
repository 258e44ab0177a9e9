//! Endpoints: a container's leg on a network.
//!
//! - CreateEndpoint holds the endpoint's address in vswitchd's allocator (owner
//!   `docker-ep:ID`, taking it over from the IPAM driver when that gave it), so DHCP
//!   and pipework never hand it out; an address already in use is refused here.
//! - Join makes a veth pair: the host end (`vd` + 11 hex digits of the endpoint id)
//!   in vswitchd's network namespace, attached as a port that vswitchd owns (deleting
//!   the port deletes the pair) and that records the endpoint and address; the
//!   container end (`vc…`) in this process's namespace, which is dockerd's, for
//!   Docker to move into the container and rename `eth0`. The container's name and
//!   `--network-alias`es are registered in the bridge's DNS once the Engine knows
//!   which container joined (a background thread: during Join it does not yet).
//! - ProgramExternalConnectivity publishes `-p` on the uplink's gateway address;
//!   Revoke removes the published ports that lead to the endpoint's address.
//! - Leave and DeleteEndpoint remove the names, published ports, port and address.

use crate::api::{
    self, CreateEndpoint, CreateEndpointReply, EndpointInterface, EndpointRef, InterfaceName,
    JoinReply, PortBinding,
};
use crate::server::decode;
use crate::vs::{self, EP_KEY, INTERNAL_KEY, NET_KEY};
use crate::{engine, network, Driver};
use anyhow::{anyhow, bail, Context, Result};
use ipnet::Ipv4Net;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vswitch_hostnet::netlink::Rtnl;
use vswitch_proto::{
    AddHost, AddPort, AllocAddress, BridgeInfo, Client, Command, PortKind, Publish, PublishedEntry,
};

/// How long the name registration waits for the Engine to show the container.
const NAME_WAIT: Duration = Duration::from_secs(30);
/// Host ports tried for `-p CONTAINER_PORT` without a host port (Docker's range).
const EPHEMERAL: (u16, u16) = (49153, 65535);

fn check_ids(net: &str, ep: &str) -> Result<()> {
    if !vs::valid_id(net) || !vs::valid_id(ep) {
        bail!("bad network or endpoint id from Docker: {net:?} {ep:?}");
    }
    Ok(())
}

/// Host and container ends of the endpoint's veth pair.
fn veth_names(ep: &str) -> (String, String) {
    let s = ep.get(..11).unwrap_or(ep);
    (format!("vd{s}"), format!("vc{s}"))
}

/// Docker's own MAC for an address: 02:42 and the four address bytes.
fn mac_of(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// The network's bridge, if it exists (no creation: for teardown).
fn existing_bridge(c: &mut Client, net: &str) -> Result<Option<BridgeInfo>> {
    Ok(vs::network_bridge(&vs::bridges(c)?, net))
}

/// The address held for endpoint `ep` on `bridge`.
fn held_address(c: &mut Client, bridge: &str, ep: &str) -> Result<Option<Ipv4Addr>> {
    let owner = vs::ep_owner(ep);
    Ok(vs::allocations(c, bridge)?
        .into_iter()
        .find(|a| a.owner == owner)
        .and_then(|a| a.ip.parse().ok()))
}

/// `/NetworkDriver.CreateEndpoint`.
pub fn create(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: CreateEndpoint = decode(body)?;
    check_ids(&req.network_id, &req.endpoint_id)?;
    if req.interface.address.is_empty() {
        bail!("no IPv4 address for the endpoint: the network's IPAM driver gave none");
    }
    let addr: Ipv4Net = req
        .interface
        .address
        .parse()
        .map_err(|_| anyhow!("bad address {:?} from Docker", req.interface.address))?;
    let b = network::ensure(d, &req.network_id)?;
    if !req.interface.address_ipv6.is_empty() {
        // Docker's IPAM gave it (unique on the network); it must fit the bridge.
        let a6: ipnet::Ipv6Net = req.interface.address_ipv6.parse().map_err(|_| {
            anyhow!(
                "bad IPv6 address {:?} from Docker: expected an IPv6 address such as fd00:40::2/64",
                req.interface.address_ipv6
            )
        })?;
        let net6 = b
            .subnet6
            .as_deref()
            .and_then(|s| s.parse::<ipnet::Ipv6Net>().ok());
        match net6 {
            None => bail!(
                "IPv6 address {} for a network whose bridge {} has no IPv6 subnet",
                a6.addr(),
                b.name
            ),
            Some(n) if !n.contains(&a6.addr()) => {
                bail!("IPv6 address {} is outside subnet {n}", a6.addr())
            }
            Some(_) => {}
        }
    }
    let ip = addr.addr();
    let _g = d.changes();
    let mut c = d.vs()?;
    let owner = vs::ep_owner(&req.endpoint_id);
    let held = c.call_value(Command::AllocAddress(AllocAddress {
        bridge: b.name.clone(),
        ip: Some(ip.to_string()),
        owner: owner.clone(),
        take_over: Some(vs::IPAM_OWNER.to_string()),
        ..Default::default()
    }));
    if let Err(e) = held {
        // Docker may repeat a call: an address this endpoint already holds is fine.
        if held_address(&mut c, &b.name, &req.endpoint_id)? != Some(ip) {
            bail!("{e}");
        }
    }
    let interface = if req.interface.mac_address.is_empty() {
        EndpointInterface {
            mac_address: mac_of(ip),
            ..Default::default()
        }
    } else {
        EndpointInterface::default()
    };
    tracing::info!(endpoint = vs::short(&req.endpoint_id), bridge = %b.name, %ip, "endpoint created");
    Ok(serde_json::to_value(CreateEndpointReply { interface })?)
}

/// Remove what Join and ProgramExternalConnectivity made for `ep` on `b`: its DNS
/// names, the ports published to its address, its port (and so its veth pair).
/// Goes on after a failure and reports them all.
pub(crate) fn teardown(c: &mut Client, b: &BridgeInfo, ep: &str) -> Result<()> {
    let mut errs = Vec::new();
    let source = vs::name_source(ep);
    match vs::hosts(c, &b.name) {
        Ok(hosts) => {
            for h in hosts.into_iter().filter(|h| h.source == source) {
                if let Err(e) = c.call_value(Command::DelHost {
                    bridge: b.name.clone(),
                    name: h.name.clone(),
                    if_exists: false,
                }) {
                    errs.push(format!("del-host {} {}: {e}", b.name, h.name));
                }
            }
        }
        Err(e) => errs.push(format!("list-hosts {}: {e:#}", b.name)),
    }
    let ip = match vs::endpoint_port(b, ep)
        .and_then(|p| p.external_ids.get("ip"))
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
    {
        Some(ip) => Some(ip),
        None => held_address(c, &b.name, ep).unwrap_or(None),
    };
    if let Some(ip) = ip {
        if let Err(e) = unpublish_to(c, ip) {
            errs.push(format!("{e:#}"));
        }
    }
    if let Some(p) = vs::endpoint_port(b, ep) {
        if let Err(e) = c.call_value(Command::DelPort {
            bridge: b.name.clone(),
            port: p.name.clone(),
            if_exists: false,
        }) {
            errs.push(format!("del-port {} {}: {e}", b.name, p.name));
        }
    }
    if !errs.is_empty() {
        bail!("{}", errs.join("; "));
    }
    Ok(())
}

/// `/NetworkDriver.DeleteEndpoint`.
pub fn delete(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: EndpointRef = decode(body)?;
    let _g = d.changes();
    let mut c = d.vs()?;
    let Some(b) = existing_bridge(&mut c, &req.network_id)? else {
        return Ok(json!({}));
    };
    let torn = teardown(&mut c, &b, &req.endpoint_id);
    c.call_value(Command::ReleaseAddress {
        bridge: b.name.clone(),
        owner: vs::ep_owner(&req.endpoint_id),
        ip: None,
    })?;
    torn?;
    tracing::info!(endpoint = vs::short(&req.endpoint_id), bridge = %b.name, "endpoint deleted");
    Ok(json!({}))
}

/// `/NetworkDriver.EndpointOperInfo`: the port, and the published ports.
pub fn oper_info(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: EndpointRef = decode(body)?;
    let mut c = d.vs()?;
    let mut v = serde_json::Map::new();
    if let Some(b) = existing_bridge(&mut c, &req.network_id)? {
        v.insert("vswitch.bridge".into(), json!(b.name));
        if let Some(p) = vs::endpoint_port(&b, &req.endpoint_id) {
            v.insert("vswitch.port".into(), json!(p.name));
            if let Some(ip) = p.external_ids.get("ip") {
                v.insert("vswitch.ip".into(), json!(ip));
            }
        }
        if let Some(ip) = held_address(&mut c, &b.name, &req.endpoint_id)? {
            let published: Vec<PublishedEntry> = c.call(Command::ListPublished)?;
            let map: Vec<PortBinding> = published
                .iter()
                .filter(|p| p.target_ip == ip.to_string())
                .map(|p| PortBinding {
                    proto: if p.proto == "udp" { 17 } else { 6 },
                    ip: p.target_ip.clone(),
                    port: p.target_port,
                    host_ip: p.ip.clone().unwrap_or_default(),
                    host_port: p.port,
                    host_port_end: p.port,
                })
                .collect();
            v.insert(api::PORTMAP.into(), serde_json::to_value(map)?);
        }
    }
    Ok(json!({ "Value": v }))
}

/// `/NetworkDriver.Join`.
pub fn join(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: EndpointRef = decode(body)?;
    check_ids(&req.network_id, &req.endpoint_id)?;
    let b = network::ensure(d, &req.network_id)?;
    let _g = d.changes();
    let (mut c, vsns) = vswitch_hostnet::daemon::connect(&d.socket)?;
    let ip = held_address(&mut c, &b.name, &req.endpoint_id)?.ok_or_else(|| {
        anyhow!(
            "unknown endpoint {}: no address is held for it on bridge {}",
            vs::short(&req.endpoint_id),
            b.name
        )
    })?;
    let prefix = b
        .subnet
        .as_deref()
        .and_then(|s| s.parse::<Ipv4Net>().ok())
        .map_or(32, |n| n.prefix_len());
    // A port left by an earlier attempt goes first.
    if let Some(p) = vs::endpoint_port(&b, &req.endpoint_id) {
        c.call_value(Command::DelPort {
            bridge: b.name.clone(),
            port: p.name.clone(),
            if_exists: false,
        })?;
    }
    let (host, peer) = veth_names(&req.endpoint_id);
    let mut hrt = Rtnl::open_in(&vsns)?;
    let mut own = Rtnl::open_in(&d.own_ns)?;
    for (rt, name) in [(&mut hrt, &host), (&mut own, &peer)] {
        if let Some(l) = rt.link(name)? {
            rt.del_link(l.index)?;
        }
    }
    hrt.add_veth(&host, &peer, &d.own_ns, b.mtu, None)?;
    let index = hrt
        .link(&host)?
        .ok_or_else(|| anyhow!("veth end {host} vanished"))?
        .index;
    let mut attach = || -> Result<()> {
        hrt.set_up(index)?;
        let mut ids = BTreeMap::new();
        ids.insert(EP_KEY.to_string(), req.endpoint_id.clone());
        ids.insert(NET_KEY.to_string(), req.network_id.clone());
        ids.insert("ip".to_string(), format!("{ip}/{prefix}"));
        c.call_value(Command::AddPort(AddPort {
            bridge: b.name.clone(),
            port: host.clone(),
            kind: PortKind::System,
            owned: true,
            external_ids: ids,
            ..Default::default()
        }))
        .with_context(|| format!("add-port {} {host}", b.name))?;
        Ok(())
    };
    if let Err(e) = attach() {
        if let Err(e2) = hrt.del_link(index) {
            return Err(e.context(format!("and deleting veth {host} failed: {e2:#}")));
        }
        return Err(e);
    }
    let internal = b.external_ids.get(INTERNAL_KEY).map(String::as_str) == Some("1");
    {
        let (d, net, ep, bridge) = (
            Arc::clone(d),
            req.network_id.clone(),
            req.endpoint_id.clone(),
            b.name.clone(),
        );
        std::thread::spawn(move || register_names(&d, &net, &ep, &bridge, ip));
    }
    tracing::info!(endpoint = vs::short(&req.endpoint_id), bridge = %b.name, port = %host, %ip, "joined");
    // An --internal network has no way out: no default route (as with Docker's bridge
    // driver), and no gateway service leg either.
    let gateway = match (&b.gateway, internal) {
        (Some(g), false) => g.clone(),
        _ => String::new(),
    };
    let gateway_ipv6 = match (&b.gateway6, internal) {
        (Some(g), false) => g.clone(),
        _ => String::new(),
    };
    Ok(serde_json::to_value(JoinReply {
        interface_name: InterfaceName {
            src_name: peer,
            dst_prefix: "eth".into(),
        },
        gateway,
        gateway_ipv6,
        disable_gateway_service: internal,
    })?)
}

/// `/NetworkDriver.Leave`.
pub fn leave(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: EndpointRef = decode(body)?;
    let _g = d.changes();
    let mut c = d.vs()?;
    if let Some(b) = existing_bridge(&mut c, &req.network_id)? {
        teardown(&mut c, &b, &req.endpoint_id)?;
        tracing::info!(endpoint = vs::short(&req.endpoint_id), bridge = %b.name, "left");
    }
    Ok(json!({}))
}

/// Unpublish every port published to `ip`.
fn unpublish_to(c: &mut Client, ip: Ipv4Addr) -> Result<()> {
    vs::unpublish_where(c, |t| t == ip)
}

/// `/NetworkDriver.ProgramExternalConnectivity`: `-p` as vswitchd `publish` on the
/// uplink's gateway address (or the `-p HOST_IP:…` given, if it is a router
/// address). All or nothing.
pub fn program_external(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: EndpointRef = decode(body)?;
    let map: Vec<PortBinding> = match req.options.get(api::PORTMAP) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).context("decode Docker's port map")?,
    };
    if map.is_empty() {
        return Ok(json!({}));
    }
    let _g = d.changes();
    let mut c = d.vs()?;
    let bridges = vs::bridges(&mut c)?;
    let b = vs::network_bridge(&bridges, &req.network_id)
        .ok_or_else(|| anyhow!("network {} has no bridge", vs::short(&req.network_id)))?;
    if b.external_ids.get(INTERNAL_KEY).map(String::as_str) == Some("1") {
        return Ok(json!({}));
    }
    let Some(uplink) = &d.uplink else {
        bail!("-p needs vswitch-docker --uplink BRIDGE (the vswitchd bridge leading outside, whose gateway address takes the published ports)");
    };
    let gw = bridges
        .iter()
        .find(|x| &x.name == uplink)
        .and_then(|x| x.gateway.clone())
        .ok_or_else(|| {
            anyhow!("uplink bridge {uplink} does not exist or has no gateway address")
        })?;
    let ip = held_address(&mut c, &b.name, &req.endpoint_id)?
        .ok_or_else(|| anyhow!("unknown endpoint {}", vs::short(&req.endpoint_id)))?;
    let mut done: Vec<(String, String)> = Vec::new();
    let result = (|| -> Result<()> {
        for p in &map {
            let proto = match p.proto {
                6 => "tcp",
                17 => "udp",
                n => bail!(
                    "-p {}: protocol {n} cannot be published (tcp and udp can)",
                    p.port
                ),
            };
            let host_ip = match p.host_ip.as_str() {
                "" | "0.0.0.0" => gw.clone(),
                a if a.parse::<Ipv4Addr>().is_ok() => a.to_string(),
                a => {
                    tracing::warn!(host_ip = a, "non-IPv4 host address of -p ignored");
                    continue;
                }
            };
            let (first, last) = match p.host_port {
                0 => EPHEMERAL,
                h => (h, p.host_port_end.max(h)),
            };
            let mut published = None;
            for port in first..=last {
                let listen = format!("{host_ip}:{port}");
                match c.call_value(Command::Publish(Publish {
                    proto: proto.into(),
                    listen: listen.clone(),
                    target: format!("{ip}:{}", p.port),
                    may_exist: false,
                })) {
                    Ok(_) => {
                        published = Some(listen);
                        break;
                    }
                    // A range or an ephemeral port: try the next one.
                    Err(e) if first < last && e.to_string().contains("already published") => {}
                    Err(e) => bail!("-p {host_ip}:{port}:{}/{proto}: {e}", p.port),
                }
            }
            let listen = published.ok_or_else(|| {
                anyhow!(
                    "-p {}/{proto}: no free host port in {first}-{last} on {host_ip}",
                    p.port
                )
            })?;
            done.push((proto.to_string(), listen));
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (proto, listen) in done {
            if let Err(e2) = c.call_value(Command::Unpublish {
                proto: proto.clone(),
                listen: listen.clone(),
                if_exists: false,
            }) {
                tracing::error!(%proto, %listen, error = %e2, "rollback of publish failed");
            }
        }
        return Err(e);
    }
    tracing::info!(endpoint = vs::short(&req.endpoint_id), published = ?done, "ports published");
    Ok(json!({}))
}

/// `/NetworkDriver.RevokeExternalConnectivity`: the ports published to the
/// endpoint's address (the endpoint holds that address, so they are its own).
pub fn revoke_external(d: &Arc<Driver>, body: &[u8]) -> Result<Value> {
    let req: EndpointRef = decode(body)?;
    let _g = d.changes();
    let mut c = d.vs()?;
    if let Some(b) = existing_bridge(&mut c, &req.network_id)? {
        if let Some(ip) = held_address(&mut c, &b.name, &req.endpoint_id)? {
            unpublish_to(&mut c, ip)?;
        }
    }
    Ok(json!({}))
}

/// The container attached through endpoint `ep` of network `net` and its names on
/// it (name, then aliases; not the short id Docker adds), once the Engine shows it.
fn names_of(net: &str, ep: &str) -> Result<Option<Vec<String>>> {
    let deadline = Instant::now() + NAME_WAIT;
    let (cid, net_name) = loop {
        let Some(n) = engine::network(net)? else {
            return Ok(None);
        };
        if let Some((cid, _)) = n
            .containers
            .iter()
            .find(|(cid, a)| a.endpoint_id == ep && !cid.starts_with("ep-"))
        {
            break (cid.clone(), n.name.clone());
        }
        if Instant::now() >= deadline {
            bail!(
                "the Docker engine did not show the container of endpoint {} within {} s",
                vs::short(ep),
                NAME_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(ct) = engine::container(&cid)? else {
        return Ok(None);
    };
    let mut names = vec![ct.name.trim_start_matches('/').to_string()];
    if let Some(s) = ct.network_settings.networks.get(&net_name) {
        names.extend(s.aliases.iter().flatten().cloned());
    }
    let short = vs::short(&cid).to_string();
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if let Some(n) = vswitch_hostnet::dns_name(&n) {
            if n != short && !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(Some(out))
}

/// Background: register the names of the container on endpoint `ep` in the DNS of
/// `bridge`, if the endpoint is still there by then.
pub(crate) fn register_names(d: &Driver, net: &str, ep: &str, bridge: &str, ip: Ipv4Addr) {
    let run = || -> Result<()> {
        let Some(names) = names_of(net, ep)? else {
            return Ok(());
        };
        let _g = d.changes();
        let mut c = d.vs()?;
        let Some(b) = existing_bridge(&mut c, net)? else {
            return Ok(());
        };
        if b.name != bridge || vs::endpoint_port(&b, ep).is_none() {
            return Ok(());
        }
        let source = vs::name_source(ep);
        let hosts = vs::hosts(&mut c, bridge)?;
        for n in names {
            match hosts.iter().find(|h| h.name == n) {
                Some(h) if h.source == source => {}
                Some(h) => tracing::warn!(name = %n, owner = %h.source, ip = %h.ip,
                    "DNS name already registered; not registered for this container"),
                None => {
                    c.call_value(Command::AddHost(AddHost {
                        bridge: bridge.to_string(),
                        name: n.clone(),
                        ip: ip.to_string(),
                        source: Some(source.clone()),
                        port: None,
                        may_exist: false,
                    }))
                    .with_context(|| format!("add-host {bridge} {n} {ip}"))?;
                    tracing::info!(name = %n, %ip, %bridge, "DNS name registered");
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        tracing::error!(endpoint = vs::short(ep), error = %format!("{e:#}"), "DNS names not registered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        let (h, p) = veth_names("0123456789abcdef0123");
        assert_eq!((h.as_str(), p.as_str()), ("vd0123456789a", "vc0123456789a"));
        assert!(h.len() <= 15);
        assert_eq!(mac_of(Ipv4Addr::new(10, 38, 0, 11)), "02:42:0a:26:00:0b");
    }
}
