//! The configuration model and its validation. Every mutation is validated in full
//! before anything changes: a rejected request leaves the model as it was.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use vswitch_proto::{AddBr, AddHost, AddPort, PortKind};

use crate::port::sys::netdev::valid_ifname;
use crate::wire::MacAddr;

/// Default bridge MTU.
pub const DEFAULT_MTU: u32 = 1500;
/// Longest bridge name.
pub const BRIDGE_NAME_MAX: usize = 32;

/// Why a change was refused. Messages are one lower-case line naming the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Lock(String),
    #[error("no such bridge: {0}")]
    NoSuchBridge(String),
    #[error("bridge already exists: {0}")]
    BridgeExists(String),
    #[error("bad bridge name {0:?}: use 1-32 characters from A-Z a-z 0-9 . _ -")]
    BadBridgeName(String),
    #[error("no such port: {port} (on bridge {bridge})")]
    NoSuchPort { bridge: String, port: String },
    #[error("port already exists: {port} (on bridge {bridge})")]
    PortExists { bridge: String, port: String },
    #[error("bad port name {0:?}: interface names are 1-15 characters without '/', ':' or spaces")]
    BadPortName(String),
    #[error("bad VLAN id {0}: must be 1..4094")]
    BadVlan(u32),
    #[error("--tag and --trunks are mutually exclusive")]
    TagAndTrunks,
    #[error("bad CIDR {0:?}: expected an IPv4 network such as 10.0.0.0/24")]
    BadCidr(String),
    #[error("bad subnet {given}: host bits set, did you mean {network}?")]
    HostBitsSet { given: String, network: String },
    #[error("bad IP address {0:?}")]
    BadIp(String),
    #[error("--gateway needs --subnet")]
    GatewayWithoutSubnet,
    #[error("--dhcp needs --subnet")]
    DhcpWithoutSubnet,
    #[error("--dhcp needs --gateway (the DHCP server answers from the gateway address)")]
    DhcpWithoutGateway,
    #[error("route already exists: {0}")]
    RouteExists(String),
    #[error("no such route: {0}")]
    NoSuchRoute(String),
    #[error("next hop {0} is not inside the subnet of any bridge with a gateway")]
    NextHopUnreachable(String),
    #[error("bridge {0} has no --subnet to masquerade")]
    MasqNoSubnet(String),
    #[error("bridge {0} has no gateway address to masquerade behind (add-br ... --gateway IP)")]
    MasqNoGateway(String),
    #[error("a bridge cannot masquerade behind itself: {0}")]
    MasqSelf(String),
    #[error("bridge {0} is already masqueraded")]
    MasqExists(String),
    #[error("bridge {0} is not masqueraded")]
    NoSuchMasq(String),
    #[error("bad protocol {0:?}: expected tcp or udp")]
    BadProto(String),
    #[error("bad port {0:?}: expected 1..65535")]
    BadPort(String),
    #[error("bad address {0:?}: expected IP:PORT")]
    BadEndpoint(String),
    #[error("{proto} port {listen} is already published (to {target})")]
    AlreadyPublished {
        proto: String,
        listen: String,
        target: String,
    },
    #[error("{proto} port {listen} is not published")]
    NotPublished { proto: String, listen: String },
    #[error("target {0} is outside every bridge's subnet")]
    TargetOutside(String),
    #[error("{0} is not a gateway address of any bridge")]
    NotRouterAddress(String),
    #[error("bad MAC address {0:?}: expected six colon-separated hex bytes")]
    BadMac(String),
    #[error("bridge {0} has no DHCP server (add-br ... --dhcp)")]
    NoDhcp(String),
    #[error("address {ip} is already reserved for {mac} on bridge {bridge}")]
    ReservationTaken {
        ip: String,
        mac: String,
        bridge: String,
    },
    #[error("no reservation for {mac} on bridge {bridge}")]
    NoSuchReservation { mac: String, bridge: String },
    #[error("gateway {gateway} is outside subnet {subnet}")]
    GatewayOutside { gateway: String, subnet: String },
    #[error("gateway {0} is the network or broadcast address of its subnet")]
    GatewayReserved(String),
    #[error("subnet {subnet} overlaps {other} of bridge {bridge}")]
    SubnetOverlap {
        subnet: String,
        other: String,
        bridge: String,
    },
    #[error("bad DHCP range {0:?}: expected FIRST-LAST inside the subnet, FIRST <= LAST")]
    BadDhcpRange(String),
    #[error("bad MTU {0}: must be 68..65535")]
    BadMtu(u32),
    #[error("port type {0} is not supported yet")]
    UnsupportedKind(PortKind),
    #[error("--remote-ip/--vni/--local-ip/--dst-port only apply to vxlan ports")]
    VxlanOptions,
    #[error("a vxlan port needs {0}")]
    VxlanNeeds(&'static str),
    #[error("bad VNI {0}: must be 1..16777215")]
    BadVni(u32),
    #[error("vxlan port {port} already uses UDP port {udp} (one vxlan port per local address and UDP port)")]
    VxlanPortTaken { port: String, udp: u16 },
    #[error("bad host name {0:?}: use DNS labels of a-z 0-9 - _ separated by dots")]
    BadHostName(String),
    #[error("host already exists: {name} ({ip}) on bridge {bridge}")]
    HostExists {
        bridge: String,
        name: String,
        ip: String,
    },
    #[error("no such host: {name} (on bridge {bridge})")]
    NoSuchHost { bridge: String, name: String },
    #[error("address {ip} is already in use on bridge {bridge} ({by})")]
    AddressInUse {
        ip: String,
        bridge: String,
        by: String,
    },
    #[error("no free address in {range} on bridge {bridge}")]
    NoFreeAddress { range: String, bridge: String },
    #[error("bad owner {0:?}: expected 1-128 printable characters")]
    BadOwner(String),
    #[error("bridge {0} has no --subnet to allocate addresses from")]
    AllocNoSubnet(String),
    #[error("address {ip} is outside subnet {subnet} of bridge {bridge}")]
    AddressOutside {
        ip: String,
        subnet: String,
        bridge: String,
    },
}

/// A DHCP address range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl std::fmt::Display for DhcpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// One port as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConf {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: PortKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunks: Vec<u16>,
    /// Delete the netdev (a veth pair pipework made) when the port is deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owned: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanConf>,
    /// Port security: allowed source MAC and (if any) IPv4 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockConf>,
}

/// Port security of a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockConf {
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<Ipv4Addr>,
}

/// VXLAN settings of a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanConf {
    pub remotes: Vec<Ipv4Addr>,
    pub vni: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Ipv4Addr>,
    pub dst_port: u16,
}

/// Default VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;

/// A DNS name on a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConf {
    /// Lower-case.
    pub name: String,
    pub ip: Ipv4Addr,
    pub source: String,
}

/// A DHCP address reserved for one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub mac: crate::wire::MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A DHCP lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: crate::wire::MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Seconds since the Unix epoch.
    pub expires: u64,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConf {
    pub cidr: Ipv4Net,
    pub via: Ipv4Addr,
}

/// Source NAT of a bridge's subnet behind another bridge's gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasqConf {
    pub bridge: String,
    pub out: String,
}

/// A published port: destination NAT from the router's outside address(es).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishConf {
    /// IP protocol number: 6 (tcp) or 17 (udp).
    pub proto: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    pub port: u16,
    pub target_ip: Ipv4Addr,
    pub target_port: u16,
}

pub fn proto_name(p: u8) -> &'static str {
    match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        _ => "ip",
    }
}

/// One bridge as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConf {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpRange>,
    #[serde(default)]
    pub isolated: bool,
    pub mtu: u32,
    #[serde(default)]
    pub ports: Vec<PortConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<Lease>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
    /// Addresses held through `alloc-address` (config/alloc.rs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<crate::config::alloc::Allocation>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
}

/// Everything the user configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub bridges: Vec<BridgeConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masquerade: Vec<MasqConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishConf>,
}

fn valid_bridge_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= BRIDGE_NAME_MAX
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn check_vlan(v: u16) -> Result<u16, ConfigError> {
    if (1..=4094).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::BadVlan(v.into()))
    }
}

/// Parse an IPv4 network in CIDR form, refusing host bits.
pub fn parse_net(s: &str) -> Result<Ipv4Net, ConfigError> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| ConfigError::BadCidr(s.to_string()))?;
    if net.trunc() != net {
        return Err(ConfigError::HostBitsSet {
            given: s.to_string(),
            network: net.trunc().to_string(),
        });
    }
    Ok(net)
}

fn parse_proto(s: &str) -> Result<u8, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        _ => Err(ConfigError::BadProto(s.to_string())),
    }
}

fn parse_port(s: &str) -> Result<u16, ConfigError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ConfigError::BadPort(s.to_string())),
    }
}

/// `[IP:]PORT`
fn parse_listen(s: &str) -> Result<(Option<Ipv4Addr>, u16), ConfigError> {
    match s.rsplit_once(':') {
        Some((ip, port)) => Ok((Some(parse_ip(ip)?), parse_port(port)?)),
        None => Ok((None, parse_port(s)?)),
    }
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| ConfigError::BadIp(s.to_string()))
}

impl Model {
    pub fn bridge(&self, name: &str) -> Result<&BridgeConf, ConfigError> {
        self.bridges
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| ConfigError::NoSuchBridge(name.to_string()))
    }

    fn bridge_mut(&mut self, name: &str) -> Result<&mut BridgeConf, ConfigError> {
        self.bridges
            .iter_mut()
            .find(|b| b.name == name)
            .ok_or_else(|| ConfigError::NoSuchBridge(name.to_string()))
    }

    /// The bridge holding port `port`, if any.
    pub fn port_owner(&self, port: &str) -> Option<&BridgeConf> {
        self.bridges
            .iter()
            .find(|b| b.ports.iter().any(|p| p.name == port))
    }

    /// Validate an `add-br` request into a bridge, without changing the model.
    pub fn check_add_bridge(&self, req: &AddBr) -> Result<BridgeConf, ConfigError> {
        if !valid_bridge_name(&req.name) {
            return Err(ConfigError::BadBridgeName(req.name.clone()));
        }
        if self.bridge(&req.name).is_ok() {
            return Err(ConfigError::BridgeExists(req.name.clone()));
        }
        let subnet = match &req.subnet {
            None => None,
            Some(s) => Some(parse_net(s)?),
        };
        let gateway = match (&req.gateway, subnet) {
            (None, _) => None,
            (Some(_), None) => return Err(ConfigError::GatewayWithoutSubnet),
            (Some(g), Some(net)) => {
                let gw = parse_ip(g)?;
                if !net.contains(&gw) {
                    return Err(ConfigError::GatewayOutside {
                        gateway: gw.to_string(),
                        subnet: net.to_string(),
                    });
                }
                if net.prefix_len() < 31 && (gw == net.network() || gw == net.broadcast()) {
                    return Err(ConfigError::GatewayReserved(gw.to_string()));
                }
                Some(gw)
            }
        };
        if let Some(net) = subnet {
            for b in &self.bridges {
                if let Some(other) = b.subnet {
                    if other.contains(&net.network()) || net.contains(&other.network()) {
                        return Err(ConfigError::SubnetOverlap {
                            subnet: net.to_string(),
                            other: other.to_string(),
                            bridge: b.name.clone(),
                        });
                    }
                }
            }
        }
        let dhcp = match (&req.dhcp, subnet) {
            (None, _) => None,
            (Some(_), None) => return Err(ConfigError::DhcpWithoutSubnet),
            (Some(_), Some(_)) if gateway.is_none() => return Err(ConfigError::DhcpWithoutGateway),
            (Some(r), Some(net)) if r.trim().is_empty() => Some(default_range(net)),
            (Some(r), Some(net)) => {
                let bad = || ConfigError::BadDhcpRange(r.clone());
                let (a, b) = r.split_once('-').ok_or_else(bad)?;
                let first: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
                let last: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
                if !net.contains(&first) || !net.contains(&last) || first > last {
                    return Err(bad());
                }
                Some(DhcpRange { first, last })
            }
        };
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        if !(68..=65535).contains(&mtu) {
            return Err(ConfigError::BadMtu(mtu));
        }
        Ok(BridgeConf {
            name: req.name.clone(),
            subnet,
            gateway,
            dhcp,
            isolated: req.isolated,
            mtu,
            ports: Vec::new(),
            hosts: Vec::new(),
            leases: Vec::new(),
            reservations: Vec::new(),
            allocations: Vec::new(),
            external_ids: req.external_ids.clone(),
        })
    }

    /// Validate a `masquerade` request.
    pub fn check_masquerade(&self, bridge: &str, out: &str) -> Result<MasqConf, ConfigError> {
        let b = self.bridge(bridge)?;
        let o = self.bridge(out)?;
        if b.name == o.name {
            return Err(ConfigError::MasqSelf(b.name.clone()));
        }
        if b.subnet.is_none() {
            return Err(ConfigError::MasqNoSubnet(b.name.clone()));
        }
        if o.gateway.is_none() {
            return Err(ConfigError::MasqNoGateway(o.name.clone()));
        }
        if self.masquerade.iter().any(|m| m.bridge == bridge) {
            return Err(ConfigError::MasqExists(bridge.to_string()));
        }
        Ok(MasqConf {
            bridge: bridge.to_string(),
            out: out.to_string(),
        })
    }

    /// Validate a `publish` request.
    pub fn check_publish(
        &self,
        proto: &str,
        listen: &str,
        target: &str,
    ) -> Result<PublishConf, ConfigError> {
        let proto_n = parse_proto(proto)?;
        let (ip, port) = parse_listen(listen)?;
        if let Some(ip) = ip {
            if !self.bridges.iter().any(|b| b.gateway == Some(ip)) {
                return Err(ConfigError::NotRouterAddress(ip.to_string()));
            }
        }
        let (tip, tport) = target
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::BadEndpoint(target.to_string()))?;
        let target_ip: Ipv4Addr = tip
            .trim()
            .parse()
            .map_err(|_| ConfigError::BadEndpoint(target.to_string()))?;
        let target_port = parse_port(tport)?;
        if !self
            .bridges
            .iter()
            .any(|b| b.subnet.is_some_and(|s| s.contains(&target_ip)))
        {
            return Err(ConfigError::TargetOutside(target_ip.to_string()));
        }
        if let Some(p) = self.published.iter().find(|p| {
            p.proto == proto_n && p.port == port && (p.ip.is_none() || ip.is_none() || p.ip == ip)
        }) {
            return Err(ConfigError::AlreadyPublished {
                proto: proto_name(proto_n).to_string(),
                listen: listen.to_string(),
                target: format!("{}:{}", p.target_ip, p.target_port),
            });
        }
        Ok(PublishConf {
            proto: proto_n,
            ip,
            port,
            target_ip,
            target_port,
        })
    }

    pub fn remove_published(
        &mut self,
        proto: &str,
        listen: &str,
    ) -> Result<PublishConf, ConfigError> {
        let proto_n = parse_proto(proto)?;
        let (ip, port) = parse_listen(listen)?;
        let i = self
            .published
            .iter()
            .position(|p| p.proto == proto_n && p.port == port && p.ip == ip)
            .ok_or_else(|| ConfigError::NotPublished {
                proto: proto_name(proto_n).to_string(),
                listen: listen.to_string(),
            })?;
        Ok(self.published.remove(i))
    }

    /// Validate and apply a `dhcp-reserve` request.
    pub fn reserve(
        &mut self,
        bridge: &str,
        mac: &str,
        ip: &str,
        name: Option<&str>,
    ) -> Result<(), ConfigError> {
        let mac_a: crate::wire::MacAddr = mac
            .trim()
            .parse()
            .map_err(|_| ConfigError::BadMac(mac.to_string()))?;
        let ip_a = parse_ip(ip)?;
        let name = match name {
            Some(n) => {
                let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
                if !valid_dns_name(&n) {
                    return Err(ConfigError::BadHostName(n));
                }
                Some(n)
            }
            None => None,
        };
        let b = self.bridge_mut(bridge)?;
        if b.dhcp.is_none() {
            return Err(ConfigError::NoDhcp(bridge.to_string()));
        }
        if let Some(net) = b.subnet {
            if !net.contains(&ip_a) || Some(ip_a) == b.gateway {
                return Err(ConfigError::AddressOutside {
                    ip: ip_a.to_string(),
                    subnet: net.to_string(),
                    bridge: bridge.to_string(),
                });
            }
        }
        if let Some(r) = b
            .reservations
            .iter()
            .find(|r| r.ip == ip_a && r.mac != mac_a)
        {
            return Err(ConfigError::ReservationTaken {
                ip: ip_a.to_string(),
                mac: r.mac.to_string(),
                bridge: bridge.to_string(),
            });
        }
        b.reservations.retain(|r| r.mac != mac_a);
        b.reservations.push(Reservation {
            mac: mac_a,
            ip: ip_a,
            name,
        });
        Ok(())
    }

    pub fn unreserve(&mut self, bridge: &str, mac: &str) -> Result<(), ConfigError> {
        let mac_a: crate::wire::MacAddr = mac
            .trim()
            .parse()
            .map_err(|_| ConfigError::BadMac(mac.to_string()))?;
        let b = self.bridge_mut(bridge)?;
        let before = b.reservations.len();
        b.reservations.retain(|r| r.mac != mac_a);
        if b.reservations.len() == before {
            return Err(ConfigError::NoSuchReservation {
                mac: mac_a.to_string(),
                bridge: bridge.to_string(),
            });
        }
        Ok(())
    }

    /// Validate an `add-route` request, without changing the model.
    pub fn check_add_route(&self, cidr: &str, via: &str) -> Result<RouteConf, ConfigError> {
        let net = parse_net(cidr)?;
        let via = parse_ip(via)?;
        if !self
            .bridges
            .iter()
            .any(|b| b.gateway.is_some() && b.subnet.is_some_and(|s| s.contains(&via)))
        {
            return Err(ConfigError::NextHopUnreachable(via.to_string()));
        }
        if self.routes.iter().any(|r| r.cidr == net) {
            return Err(ConfigError::RouteExists(net.to_string()));
        }
        Ok(RouteConf { cidr: net, via })
    }

    pub fn remove_route(&mut self, cidr: &str) -> Result<RouteConf, ConfigError> {
        let net = parse_net(cidr)?;
        let i = self
            .routes
            .iter()
            .position(|r| r.cidr == net)
            .ok_or_else(|| ConfigError::NoSuchRoute(net.to_string()))?;
        Ok(self.routes.remove(i))
    }

    /// Validate an `add-host` request, without changing the model.
    pub fn check_add_host(&self, req: &AddHost) -> Result<HostConf, ConfigError> {
        let b = self.bridge(&req.bridge)?;
        let name = req.name.trim().trim_end_matches('.').to_ascii_lowercase();
        if !valid_dns_name(&name) {
            return Err(ConfigError::BadHostName(req.name.clone()));
        }
        let ip = parse_ip(&req.ip)?;
        if let Some(net) = b.subnet {
            if !net.contains(&ip) {
                return Err(ConfigError::AddressOutside {
                    ip: ip.to_string(),
                    subnet: net.to_string(),
                    bridge: b.name.clone(),
                });
            }
        }
        if let Some(h) = b.hosts.iter().find(|h| h.name == name) {
            return Err(ConfigError::HostExists {
                bridge: b.name.clone(),
                name,
                ip: h.ip.to_string(),
            });
        }
        Ok(HostConf {
            name,
            ip,
            source: req.source.clone().unwrap_or_else(|| "user".to_string()),
        })
    }

    pub fn insert_host(&mut self, bridge: &str, h: HostConf) -> Result<(), ConfigError> {
        self.bridge_mut(bridge)?.hosts.push(h);
        Ok(())
    }

    pub fn remove_host(&mut self, bridge: &str, name: &str) -> Result<HostConf, ConfigError> {
        let key = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let b = self.bridge_mut(bridge)?;
        let i =
            b.hosts
                .iter()
                .position(|h| h.name == key)
                .ok_or_else(|| ConfigError::NoSuchHost {
                    bridge: bridge.to_string(),
                    name: name.to_string(),
                })?;
        Ok(b.hosts.remove(i))
    }

    /// Validate an `add-port` request into a port, without changing the model.
    pub fn check_add_port(&self, req: &AddPort) -> Result<PortConf, ConfigError> {
        self.bridge(&req.bridge)?;
        if !valid_ifname(&req.port) {
            return Err(ConfigError::BadPortName(req.port.clone()));
        }
        if let Some(b) = self.port_owner(&req.port) {
            return Err(ConfigError::PortExists {
                bridge: b.name.clone(),
                port: req.port.clone(),
            });
        }
        let vxlan = if req.kind == PortKind::Vxlan {
            Some(self.check_vxlan(req)?)
        } else {
            if !req.remote_ip.is_empty()
                || req.vni.is_some()
                || req.local_ip.is_some()
                || req.dst_port.is_some()
            {
                return Err(ConfigError::VxlanOptions);
            }
            None
        };
        if req.tag.is_some() && !req.trunks.is_empty() {
            return Err(ConfigError::TagAndTrunks);
        }
        let tag = req.tag.map(check_vlan).transpose()?;
        let mut trunks = req
            .trunks
            .iter()
            .map(|&v| check_vlan(v))
            .collect::<Result<Vec<_>, _>>()?;
        trunks.sort_unstable();
        trunks.dedup();
        let lock = check_lock(req)?;
        Ok(PortConf {
            name: req.port.clone(),
            kind: req.kind,
            tag,
            trunks,
            owned: req.owned,
            external_ids: req.external_ids.clone(),
            vxlan,
            lock,
        })
    }

    fn check_vxlan(&self, req: &AddPort) -> Result<VxlanConf, ConfigError> {
        if req.remote_ip.is_empty() {
            return Err(ConfigError::VxlanNeeds("--remote-ip"));
        }
        let vni = req.vni.ok_or(ConfigError::VxlanNeeds("--vni"))?;
        if !(1..=0xff_ffff).contains(&vni) {
            return Err(ConfigError::BadVni(vni));
        }
        let mut remotes = Vec::new();
        for r in req.remote_ip.iter().flat_map(|r| r.split(',')) {
            let ip = parse_ip(r)?;
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                return Err(ConfigError::BadIp(r.to_string()));
            }
            if !remotes.contains(&ip) {
                remotes.push(ip);
            }
        }
        let local = req.local_ip.as_deref().map(parse_ip).transpose()?;
        let dst_port = req.dst_port.unwrap_or(VXLAN_PORT);
        if dst_port == 0 {
            return Err(ConfigError::BadPort("0".into()));
        }
        for b in &self.bridges {
            for p in &b.ports {
                if let Some(v) = &p.vxlan {
                    if v.dst_port == dst_port
                        && (v.local == local || v.local.is_none() || local.is_none())
                    {
                        return Err(ConfigError::VxlanPortTaken {
                            port: p.name.clone(),
                            udp: dst_port,
                        });
                    }
                }
            }
        }
        Ok(VxlanConf {
            remotes,
            vni,
            local,
            dst_port,
        })
    }

    pub fn insert_bridge(&mut self, b: BridgeConf) {
        self.bridges.push(b);
    }

    pub fn remove_bridge(&mut self, name: &str) -> Result<BridgeConf, ConfigError> {
        let i = self
            .bridges
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| ConfigError::NoSuchBridge(name.to_string()))?;
        Ok(self.bridges.remove(i))
    }

    pub fn insert_port(&mut self, bridge: &str, p: PortConf) -> Result<(), ConfigError> {
        self.bridge_mut(bridge)?.ports.push(p);
        Ok(())
    }

    pub fn remove_port(&mut self, bridge: &str, port: &str) -> Result<PortConf, ConfigError> {
        let b = self.bridge_mut(bridge)?;
        let i =
            b.ports
                .iter()
                .position(|p| p.name == port)
                .ok_or_else(|| ConfigError::NoSuchPort {
                    bridge: bridge.to_string(),
                    port: port.to_string(),
                })?;
        Ok(b.ports.remove(i))
    }
}

/// A DNS name: dot-separated labels of 1-63 characters from a-z 0-9 - _, 253 at most.
pub fn valid_dns_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// The default DHCP range: every host address of the subnet (the gateway and static
/// addresses are skipped when leasing).
pub fn default_range(net: Ipv4Net) -> DhcpRange {
    let n = u32::from(net.network());
    let b = u32::from(net.broadcast());
    if net.prefix_len() >= 31 {
        return DhcpRange {
            first: net.network(),
            last: net.broadcast(),
        };
    }
    DhcpRange {
        first: Ipv4Addr::from(n + 1),
        last: Ipv4Addr::from(b - 1),
    }
}

/// Port security options of `add-port`.
fn check_lock(req: &AddPort) -> Result<Option<LockConf>, ConfigError> {
    let Some(m) = &req.lock_mac else {
        if req.lock_ip.is_empty() {
            return Ok(None);
        }
        return Err(ConfigError::Lock("--lock-ip needs --lock-mac".into()));
    };
    if req.kind == PortKind::Vxlan {
        return Err(ConfigError::Lock(
            "a vxlan port carries many hosts' frames: it cannot be locked".into(),
        ));
    }
    let mac: MacAddr = m.parse().map_err(|_| {
        ConfigError::Lock(format!("bad --lock-mac {m:?}: expected aa:bb:cc:dd:ee:ff"))
    })?;
    if mac.is_multicast() || mac.is_zero() {
        return Err(ConfigError::Lock(format!(
            "bad --lock-mac {m}: not a unicast address"
        )));
    }
    let mut ips = Vec::new();
    for s in req.lock_ip.iter().flat_map(|s| s.split(',')) {
        let ip: Ipv4Addr = s.trim().parse().map_err(|_| {
            ConfigError::Lock(format!("bad --lock-ip {s:?}: expected an IPv4 address"))
        })?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(ConfigError::Lock(format!(
                "bad --lock-ip {ip}: not a unicast address"
            )));
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(Some(LockConf { mac, ips }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn br(name: &str, subnet: Option<&str>, gw: Option<&str>) -> AddBr {
        AddBr {
            name: name.into(),
            subnet: subnet.map(Into::into),
            gateway: gw.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn bridge_validation() {
        let mut m = Model::default();
        let b = m
            .check_add_bridge(&br("br1", Some("10.0.0.0/24"), Some("10.0.0.1")))
            .unwrap();
        m.insert_bridge(b);
        let err = |r: AddBr| m.check_add_bridge(&r).unwrap_err().to_string();
        assert_eq!(err(br("br1", None, None)), "bridge already exists: br1");
        assert_eq!(
            err(br("br2", Some("10.0.0.0/25"), None)),
            "subnet 10.0.0.0/25 overlaps 10.0.0.0/24 of bridge br1"
        );
        assert_eq!(
            err(br("br2", Some("10.1.0.0/24"), Some("10.0.0.1"))),
            "gateway 10.0.0.1 is outside subnet 10.1.0.0/24"
        );
        assert!(err(br("br2", Some("10.1.0.0/33"), None)).starts_with("bad CIDR"));
        assert!(err(br("br2", Some("10.1.0.5/24"), None)).contains("did you mean 10.1.0.0/24"));
        assert_eq!(
            err(br("br2", None, Some("10.1.0.1"))),
            "--gateway needs --subnet"
        );
        assert!(err(br("bad name", None, None)).starts_with("bad bridge name"));
        let mut r = br("br2", Some("10.1.0.0/24"), None);
        r.dhcp = Some(String::new());
        assert!(err(r.clone()).starts_with("--dhcp needs --gateway"));
        r.gateway = Some("10.1.0.1".into());
        r.dhcp = Some("10.1.0.100-10.1.0.50".into());
        assert!(err(r.clone()).starts_with("bad DHCP range"));
        r.dhcp = Some(String::new());
        let b = m.check_add_bridge(&r).unwrap();
        assert_eq!(b.dhcp.unwrap().to_string(), "10.1.0.1-10.1.0.254");
        r.mtu = Some(10);
        assert_eq!(err(r), "bad MTU 10: must be 68..65535");
    }

    #[test]
    fn host_validation() {
        let mut m = Model::default();
        m.insert_bridge(
            m.check_add_bridge(&br("br1", Some("10.0.0.0/24"), None))
                .unwrap(),
        );
        let h = |name: &str, ip: &str| AddHost {
            bridge: "br1".into(),
            name: name.into(),
            ip: ip.into(),
            source: None,
        };
        let web = m.check_add_host(&h("Web.", "10.0.0.5")).unwrap();
        assert_eq!((web.name.as_str(), web.source.as_str()), ("web", "user"));
        m.insert_host("br1", web).unwrap();
        let err = |r: AddHost| m.check_add_host(&r).unwrap_err().to_string();
        assert_eq!(
            err(h("WEB", "10.0.0.6")),
            "host already exists: web (10.0.0.5) on bridge br1"
        );
        assert_eq!(
            err(h("db", "10.1.0.6")),
            "address 10.1.0.6 is outside subnet 10.0.0.0/24 of bridge br1"
        );
        assert!(err(h("bad name", "10.0.0.7")).starts_with("bad host name"));
        assert!(err(h("db", "10.0.0.300")).starts_with("bad IP address"));
        assert_eq!(
            m.remove_host("br1", "WEB").unwrap().ip.to_string(),
            "10.0.0.5"
        );
        assert!(m.remove_host("br1", "web").is_err());
    }

    #[test]
    fn nat_validation() {
        let mut m = Model::default();
        for (n, s, g) in [
            ("br1", "10.0.0.0/24", None),
            ("wan", "198.51.100.0/24", Some("198.51.100.2")),
        ] {
            m.insert_bridge(m.check_add_bridge(&br(n, Some(s), g)).unwrap());
        }
        assert_eq!(
            m.check_masquerade("wan", "br1").unwrap_err().to_string(),
            "bridge br1 has no gateway address to masquerade behind (add-br ... --gateway IP)"
        );
        assert_eq!(
            m.check_masquerade("br9", "wan").unwrap_err().to_string(),
            "no such bridge: br9"
        );
        m.masquerade.push(m.check_masquerade("br1", "wan").unwrap());
        assert!(m.check_masquerade("br1", "wan").is_err());
        let p = m.check_publish("tcp", "8080", "10.0.0.5:80").unwrap();
        assert_eq!((p.proto, p.ip, p.port, p.target_port), (6, None, 8080, 80));
        m.published.push(p);
        assert_eq!(
            m.check_publish("TCP", "198.51.100.2:8080", "10.0.0.6:80")
                .unwrap_err()
                .to_string(),
            "tcp port 198.51.100.2:8080 is already published (to 10.0.0.5:80)"
        );
        assert!(m.check_publish("udp", "8080", "10.0.0.6:80").is_ok());
        assert!(m
            .check_publish("sctp", "1", "10.0.0.6:80")
            .unwrap_err()
            .to_string()
            .starts_with("bad protocol"));
        assert_eq!(
            m.check_publish("tcp", "81", "192.168.1.1:80")
                .unwrap_err()
                .to_string(),
            "target 192.168.1.1 is outside every bridge's subnet"
        );
        assert!(m.check_publish("tcp", "0", "10.0.0.6:80").is_err());
        assert!(m
            .check_publish("tcp", "10.0.0.9:81", "10.0.0.6:80")
            .is_err());
        assert!(m.remove_published("tcp", "8081").is_err());
        assert!(m.remove_published("tcp", "8080").is_ok());
    }

    #[test]
    fn port_validation() {
        let mut m = Model::default();
        m.insert_bridge(m.check_add_bridge(&br("br1", None, None)).unwrap());
        let p = |port: &str, tag: Option<u16>, trunks: Vec<u16>| AddPort {
            bridge: "br1".into(),
            port: port.into(),
            kind: PortKind::System,
            tag,
            trunks,
            ..Default::default()
        };
        m.insert_port("br1", m.check_add_port(&p("veth1", None, vec![])).unwrap())
            .unwrap();
        let locked = |mac: Option<&str>, ips: &[&str], kind: PortKind| AddPort {
            bridge: "br1".into(),
            port: "veth9".into(),
            kind,
            lock_mac: mac.map(str::to_string),
            lock_ip: ips.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let lock_err = |r: AddPort| m.check_add_port(&r).unwrap_err().to_string();
        assert_eq!(
            lock_err(locked(None, &["10.0.0.5"], PortKind::System)),
            "--lock-ip needs --lock-mac"
        );
        assert_eq!(
            lock_err(locked(Some("01:00:00:00:00:01"), &[], PortKind::System)),
            "bad --lock-mac 01:00:00:00:00:01: not a unicast address"
        );
        assert_eq!(
            lock_err(locked(
                Some("02:00:00:00:00:01"),
                &["10.0.0.x"],
                PortKind::System
            )),
            "bad --lock-ip \"10.0.0.x\": expected an IPv4 address"
        );
        let ok = m
            .check_add_port(&locked(
                Some("02:00:00:00:00:01"),
                &["10.0.0.5,10.0.0.6", "10.0.0.5"],
                PortKind::System,
            ))
            .unwrap();
        assert_eq!(
            ok.lock.map(|l| l.ips.len()),
            Some(2),
            "addresses deduplicated"
        );
        let err = |r: AddPort| m.check_add_port(&r).unwrap_err().to_string();
        assert_eq!(
            err(p("veth1", None, vec![])),
            "port already exists: veth1 (on bridge br1)"
        );
        assert_eq!(
            err(p("veth2", Some(5000), vec![])),
            "bad VLAN id 5000: must be 1..4094"
        );
        assert_eq!(
            err(p("veth2", Some(0), vec![])),
            "bad VLAN id 0: must be 1..4094"
        );
        assert_eq!(
            err(p("veth2", None, vec![10, 4095])),
            "bad VLAN id 4095: must be 1..4094"
        );
        assert_eq!(
            err(p("veth2", Some(1), vec![2])),
            "--tag and --trunks are mutually exclusive"
        );
        assert!(err(p("abcdefghijklmnopq", None, vec![])).starts_with("bad port name"));
        let mut r = p("veth2", None, vec![]);
        r.bridge = "br9".into();
        assert_eq!(err(r), "no such bridge: br9");
        let t = m
            .check_add_port(&p("veth2", None, vec![20, 10, 20]))
            .unwrap();
        assert_eq!(t.trunks, vec![10, 20]);
    }
}
