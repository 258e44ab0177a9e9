//! vswitchd, through `vswitch-proto` only, and the marks CNI leaves there.
//!
//! Every port CNI makes carries `external_ids` naming it as CNI's and its attachment
//! (network, container id, interface), so DEL finds it again and GC never touches a
//! port it did not make. Addresses are held in vswitchd's allocator, and DNS names
//! registered, under one owner string per attachment ([`crate::config::owner`]).

use crate::config::NetConf;
use crate::error::{
    CniError, CniResult, ALREADY_EXISTS, INTERNAL, INVALID_CONFIG, TRY_AGAIN_LATER,
};
use std::collections::BTreeMap;
use std::path::Path;
use vswitch_hostnet::netns::NetNs;
use vswitch_proto::{
    AddBr, AllocEntry, BridgeInfo, Client, ClientError, Command, HostEntry, PortInfo,
    PublishedEntry,
};

/// Port `external_ids` keys. `cni` = "1" marks a port CNI made.
pub const MARK: &str = "cni";
pub const NETWORK: &str = "cni_network";
pub const CONTAINER: &str = "cni_container";
pub const IFNAME: &str = "cni_ifname";
pub const NETNS: &str = "cni_netns";
/// The attachment's owner string (addresses, DNS names).
pub const OWNER: &str = "cni_owner";
/// The published ports, `PROTO/[IP:]PORT/CONTAINER_PORT,…`.
pub const PORTS: &str = "cni_ports";
/// The delegated IPAM plugin, if any.
pub const IPAM: &str = "cni_ipam";
/// Bridge `external_ids` key: the network whose ADD created the bridge.
pub const CREATED_BY: &str = "cni_created_by";

/// A connection to vswitchd.
pub struct Vs {
    pub client: Client,
}

/// What a failed request to vswitchd means for the runtime: a lost daemon is
/// transient (11), a refusal because something exists is 101, the rest 999.
pub fn map_err(e: ClientError, what: &str) -> CniError {
    let code = match &e {
        ClientError::NotRunning { .. } | ClientError::Io { .. } | ClientError::Closed => {
            TRY_AGAIN_LATER
        }
        ClientError::Daemon(m)
            if m.contains("already in use")
                || m.contains("already published")
                || m.contains("already exists") =>
        {
            ALREADY_EXISTS
        }
        _ => INTERNAL,
    };
    if what.is_empty() {
        CniError::new(code, e.to_string())
    } else {
        CniError::new(code, format!("{what}: {e}"))
    }
}

impl Vs {
    /// Connect to vswitchd at `socket`; not running is code 11 (try again later).
    pub fn connect(socket: &Path) -> CniResult<Vs> {
        let client = Client::connect(socket).map_err(|e| map_err(e, ""))?;
        Ok(Vs { client })
    }

    /// Connect, and open vswitchd's network namespace (where host ends go).
    pub fn connect_with_ns(socket: &Path) -> CniResult<(Vs, NetNs)> {
        match vswitch_hostnet::daemon::connect(socket) {
            Ok((client, ns)) => Ok((Vs { client }, ns)),
            Err(e) => match e.downcast::<ClientError>() {
                Ok(c) => Err(map_err(c, "")),
                Err(e) => Err(CniError::new(INTERNAL, format!("{e:#}"))),
            },
        }
    }

    /// Send `cmd`; `what` names it in the error.
    pub fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        cmd: Command,
        what: &str,
    ) -> CniResult<T> {
        self.client.call(cmd).map_err(|e| map_err(e, what))
    }

    /// Send `cmd`, ignoring its result.
    pub fn run(&mut self, cmd: Command, what: &str) -> CniResult<()> {
        self.client
            .call_value(cmd)
            .map(|_| ())
            .map_err(|e| map_err(e, what))
    }

    pub fn bridges(&mut self) -> CniResult<Vec<BridgeInfo>> {
        self.call(Command::ListBr, "list-br")
    }

    pub fn hosts(&mut self, bridge: &str) -> CniResult<Vec<HostEntry>> {
        self.call(
            Command::ListHosts {
                bridge: bridge.to_string(),
            },
            &format!("list-hosts {bridge}"),
        )
    }

    pub fn allocations(&mut self, bridge: &str) -> CniResult<Vec<AllocEntry>> {
        self.call(
            Command::ListAllocations {
                bridge: bridge.to_string(),
            },
            &format!("list-allocations {bridge}"),
        )
    }

    pub fn published(&mut self) -> CniResult<Vec<PublishedEntry>> {
        self.call(Command::ListPublished, "list-published")
    }

    /// The configured bridge, made (with the configuration's subnet and gateway) if
    /// it does not exist yet; its subnet and gateway must match the configuration's.
    pub fn ensure_bridge(&mut self, conf: &NetConf) -> CniResult<BridgeInfo> {
        for _ in 0..2 {
            let found = self.bridges()?.into_iter().find(|b| b.name == conf.bridge);
            if let Some(b) = found {
                check_matches(&b, conf)?;
                return Ok(b);
            }
            let Some(subnet) = conf.subnet else {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!(
                        "bridge {} does not exist in vswitchd: create it (vswitchctl add-br {} --subnet CIDR --gateway IP) or give \"subnet\" and \"gateway\" in the configuration",
                        conf.bridge, conf.bridge
                    ),
                ));
            };
            let mut ids = BTreeMap::new();
            ids.insert(CREATED_BY.to_string(), conf.name.clone());
            let made: Result<BridgeInfo, _> = self.client.call(Command::AddBr(AddBr {
                name: conf.bridge.clone(),
                subnet: Some(subnet.to_string()),
                gateway: conf.gateway.map(|g| g.to_string()),
                external_ids: ids,
                ..Default::default()
            }));
            match made {
                Ok(b) => return Ok(b),
                // Another ADD made it meanwhile: read it again.
                Err(ClientError::Daemon(m)) if m.contains("exists") => continue,
                Err(e) => return Err(map_err(e, &format!("add-br {}", conf.bridge))),
            }
        }
        Err(CniError::new(
            INTERNAL,
            format!("bridge {} keeps changing under us", conf.bridge),
        ))
    }
}

/// A bridge that exists must have the subnet and gateway the configuration names.
pub fn check_matches(b: &BridgeInfo, conf: &NetConf) -> CniResult<()> {
    if let Some(want) = conf.subnet {
        if b.subnet.as_deref() != Some(want.to_string().as_str()) {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!(
                    "bridge {} has subnet {}, the configuration says {want}",
                    b.name,
                    b.subnet.as_deref().unwrap_or("none")
                ),
            ));
        }
    }
    if let Some(want) = conf.gateway {
        if b.gateway.as_deref() != Some(want.to_string().as_str()) {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!(
                    "bridge {} has gateway {}, the configuration says {want}",
                    b.name,
                    b.gateway.as_deref().unwrap_or("none")
                ),
            ));
        }
    }
    Ok(())
}

fn id<'a>(p: &'a PortInfo, k: &str) -> Option<&'a str> {
    p.external_ids.get(k).map(String::as_str)
}

/// Whether `p` is a port CNI made for network `network`.
pub fn is_cni_port(p: &PortInfo, network: &str) -> bool {
    id(p, MARK) == Some("1") && id(p, NETWORK) == Some(network)
}

/// The owner string recorded on a CNI port.
pub fn port_owner(p: &PortInfo) -> Option<&str> {
    id(p, OWNER)
}

/// The port of attachment `owner` of network `network`, and its bridge.
pub fn find_port(
    bridges: &[BridgeInfo],
    network: &str,
    owner: &str,
) -> Option<(BridgeInfo, PortInfo)> {
    bridges.iter().find_map(|b| {
        b.ports
            .iter()
            .find(|p| is_cni_port(p, network) && port_owner(p) == Some(owner))
            .map(|p| (b.clone(), p.clone()))
    })
}

/// A published port as recorded on a CNI port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub proto: String,
    /// `[IP:]PORT`, as `publish` takes it.
    pub listen: String,
    pub container_port: u16,
}

impl Published {
    pub fn record(list: &[Published]) -> String {
        list.iter()
            .map(|p| format!("{}/{}/{}", p.proto, p.listen, p.container_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn parse_record(s: &str) -> Vec<Published> {
        s.split(',')
            .filter_map(|e| {
                let mut it = e.split('/');
                let (proto, listen, port) = (it.next()?, it.next()?, it.next()?);
                Some(Published {
                    proto: proto.to_string(),
                    listen: listen.to_string(),
                    container_port: port.parse().ok()?,
                })
            })
            .collect()
    }

    /// Whether `e` is this publication to `target_ip` (and not someone else's use of
    /// the same host port).
    pub fn is(&self, e: &PublishedEntry, target_ip: &str) -> bool {
        let listen = match &e.ip {
            Some(ip) => format!("{ip}:{}", e.port),
            None => e.port.to_string(),
        };
        e.proto == self.proto
            && listen == self.listen
            && e.target_ip == target_ip
            && e.target_port == self.container_port
    }
}

/// Remove what `owner` made on bridge `b` apart from its port: the ports published
/// (to `ip`) as `published` records, its DNS names, its addresses. Errors are
/// collected, the rest goes on.
pub fn release(
    vs: &mut Vs,
    bridge: &str,
    owner: &str,
    ip: Option<&str>,
    published: &[Published],
    errs: &mut Vec<String>,
) {
    if let (Some(ip), false) = (ip, published.is_empty()) {
        match vs.published() {
            Ok(list) => {
                for p in published {
                    if let Some(e) = list.iter().find(|e| p.is(e, ip)) {
                        let listen = p.listen.clone();
                        if let Err(err) = vs.run(
                            Command::Unpublish {
                                proto: e.proto.clone(),
                                listen: listen.clone(),
                                if_exists: false,
                            },
                            &format!("unpublish {} {listen}", e.proto),
                        ) {
                            errs.push(err.msg);
                        }
                    }
                }
            }
            Err(e) => errs.push(e.msg),
        }
    }
    match vs.hosts(bridge) {
        Ok(hosts) => {
            for h in hosts.into_iter().filter(|h| h.source == owner) {
                if let Err(e) = vs.run(
                    Command::DelHost {
                        bridge: bridge.to_string(),
                        name: h.name.clone(),
                        if_exists: false,
                    },
                    &format!("del-host {bridge} {}", h.name),
                ) {
                    errs.push(e.msg);
                }
            }
        }
        Err(e) => errs.push(e.msg),
    }
    if let Err(e) = vs.run(
        Command::ReleaseAddress {
            bridge: bridge.to_string(),
            owner: owner.to_string(),
            ip: None,
        },
        &format!("release-address {bridge} {owner}"),
    ) {
        errs.push(e.msg);
    }
}

/// Tear down CNI port `p` on bridge `b`: its publications, names and addresses, then
/// the port (vswitchd owns it, so the veth pair goes with it).
pub fn teardown_port(vs: &mut Vs, b: &BridgeInfo, p: &PortInfo, errs: &mut Vec<String>) {
    let ip = id(p, "ip").and_then(|s| s.split('/').next());
    let published = id(p, PORTS)
        .map(Published::parse_record)
        .unwrap_or_default();
    if let Some(owner) = port_owner(p) {
        release(vs, &b.name, owner, ip, &published, errs);
    }
    if let Err(e) = vs.run(
        Command::DelPort {
            bridge: b.name.clone(),
            port: p.name.clone(),
            if_exists: false,
        },
        &format!("del-port {} {}", b.name, p.name),
    ) {
        if !e.msg.contains("no such port") {
            errs.push(e.msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_records_round_trip_and_match_exactly() {
        let list = vec![
            Published {
                proto: "tcp".into(),
                listen: "8080".into(),
                container_port: 80,
            },
            Published {
                proto: "udp".into(),
                listen: "198.51.100.2:5353".into(),
                container_port: 53,
            },
        ];
        let rec = Published::record(&list);
        assert_eq!(rec, "tcp/8080/80,udp/198.51.100.2:5353/53");
        assert_eq!(Published::parse_record(&rec), list);
        let e = PublishedEntry {
            proto: "tcp".into(),
            ip: None,
            port: 8080,
            target_ip: "10.0.0.5".into(),
            target_port: 80,
            port_end: None,
            target_port_end: None,
        };
        assert!(list[0].is(&e, "10.0.0.5"));
        // The same host port leading to another container is not ours.
        assert!(!list[0].is(&e, "10.0.0.6"));
    }
}
