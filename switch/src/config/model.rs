//! The configuration model and its validation. Every mutation is validated in full
//! before anything changes: a rejected request leaves the model as it was.

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use vswitch_proto::{AddBr, AddHost, AddPort, PortKind};

use crate::port::sys::netdev::valid_ifname;
use crate::tables::leases::PoolConf;
pub use crate::tables::leases6::Lease6;
use crate::tables::leases6::{Duid, Pool6Conf};
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
    /// `--may-exist` found the object with other settings (the message names them).
    #[error("{0}")]
    Conflict(String),
    #[error("bad DNS upstream {0:?}: expected IP or IP:PORT")]
    BadUpstream(String),
    #[error("--dns-upstream and --no-dns-upstream are mutually exclusive")]
    UpstreamAndNoUpstream,
    #[error("--dns-upstream/--no-dns-upstream need --gateway (the bridge's DNS answers on its gateway address)")]
    UpstreamWithoutGateway,
    #[error("bad port range {0:?}: expected PORT or FIRST-LAST with FIRST < LAST")]
    BadPortRange(String),
    #[error("target range {target} is not as long as the listening range {listen}")]
    RangeMismatch { listen: String, target: String },
    #[error(
        "{proto} port {port} is part of the published range {range}: unpublish {proto} {range}"
    )]
    InsideRange {
        proto: String,
        port: u16,
        range: String,
    },
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
    #[error("--dhcp {0} is an IPv6 range: it needs an IPv6 --subnet and --gateway")]
    Dhcp6WithoutGateway6(String),
    #[error("bad DHCPv6 range {0:?}: expected FIRST-LAST inside the IPv6 subnet, FIRST <= LAST")]
    BadDhcp6Range(String),
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
    #[error(
        "bridge {0} has no DHCPv6 server (add-br ... --subnet IPV6_CIDR --gateway IPV6 --dhcp)"
    )]
    NoDhcp6(String),
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
    #[error("bad IPv6 CIDR {0:?}: expected an IPv6 network such as fd00:10::/64")]
    BadCidr6(String),
    #[error("--gateway {0} is IPv6 but the bridge has no IPv6 --subnet")]
    Gateway6WithoutSubnet6(String),
    #[error("--subnet/--gateway: at most one {0} subnet and one {0} gateway per bridge")]
    TwoOfOneFamily(&'static str),
    #[error("IPv6 subnet {0}: prefixes longer than /127 leave no room for hosts")]
    Subnet6TooLong(String),
    #[error("bad MTU {0}: a bridge with an IPv6 subnet needs at least 1280 (IPv6's minimum)")]
    Mtu6(u32),
    #[error("route {cidr} and next hop {via} are of different address families")]
    MixedFamilies { cidr: String, via: String },
    /// IPv6 NAT (`masquerade6`, `publish` on IPv6): the message names the bad value.
    #[error("{0}")]
    Nat6(String),
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

/// A DHCPv6 address range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpRange6 {
    pub first: Ipv6Addr,
    pub last: Ipv6Addr,
}

impl std::fmt::Display for DhcpRange6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The default DHCPv6 range: every address of the subnet but the subnet-router
/// anycast address (the gateway and static addresses are skipped when leasing).
pub fn default_range6(net: Ipv6Net) -> DhcpRange6 {
    let n = u128::from(net.network());
    DhcpRange6 {
        first: Ipv6Addr::from(n.saturating_add(1)),
        last: net.broadcast(),
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
    /// Port security: allowed source MAC and (if any) IPv4/IPv6 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockConf>,
    /// Link impairment of what leaves the port (`set-port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair: Option<vswitch_proto::Impairment>,
}

/// Port security of a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockConf {
    pub mac: MacAddr,
    /// Both families, in the order given (a db written before IPv6 locks holds IPv4
    /// strings only, which read as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
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
    /// IPv4 (an A record) or IPv6 (AAAA); a name may have one of each.
    pub ip: IpAddr,
    pub source: String,
    /// The port the name was registered for: it leaves with the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// Where a bridge's DNS sends the names it does not own.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsForward {
    /// To the resolvers of vswitchd's own /etc/resolv.conf (read when used).
    #[default]
    System,
    /// To these (`--dns-upstream`).
    Servers(Vec<SocketAddr>),
    /// Nowhere: NXDOMAIN (`--no-dns-upstream`).
    Off,
}

impl DnsForward {
    fn is_system(&self) -> bool {
        *self == DnsForward::System
    }
}

impl std::fmt::Display for DnsForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsForward::System => f.write_str("vswitchd's resolv.conf"),
            DnsForward::Off => f.write_str("none"),
            DnsForward::Servers(s) => {
                let v: Vec<String> = s.iter().map(ToString::to_string).collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

/// An upstream resolver as typed: `IP` (port 53) or `IP:PORT` (`[IPv6]:PORT`).
pub fn parse_upstream(s: &str) -> Result<SocketAddr, ConfigError> {
    let t = s.trim();
    let a = match t.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(
            t.parse::<IpAddr>()
                .map_err(|_| ConfigError::BadUpstream(s.to_string()))?,
            53,
        ),
    };
    let bad = match a.ip() {
        IpAddr::V4(ip) => ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast(),
        IpAddr::V6(ip) => ip.is_unspecified() || ip.is_multicast(),
    };
    if bad || a.port() == 0 {
        return Err(ConfigError::BadUpstream(s.to_string()));
    }
    Ok(a)
}

/// A DHCP address reserved for one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub mac: crate::wire::MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A DHCPv6 address reserved for one client (by MAC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation6 {
    pub mac: crate::wire::MacAddr,
    pub ip: Ipv6Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A DHCP lease (the lease store's record, stored in the db with its bridge).
pub use crate::tables::leases::Lease;

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConf {
    pub cidr: Ipv4Net,
    pub via: Ipv4Addr,
}

/// A static IPv6 route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route6Conf {
    pub cidr: Ipv6Net,
    pub via: Ipv6Addr,
}

/// A static route of either family (what `add-route` validates into).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyRoute {
    V4(RouteConf),
    V6(Route6Conf),
}

impl AnyRoute {
    pub fn cidr(&self) -> String {
        match self {
            AnyRoute::V4(r) => r.cidr.to_string(),
            AnyRoute::V6(r) => r.cidr.to_string(),
        }
    }

    pub fn via(&self) -> IpAddr {
        match self {
            AnyRoute::V4(r) => IpAddr::V4(r.via),
            AnyRoute::V6(r) => IpAddr::V6(r.via),
        }
    }
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
    /// Last port of a range (`port`..=`port_end`, > `port`), mapped one to one onto
    /// `target_port`..; `None`: one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_end: Option<u16>,
}

impl PublishConf {
    /// How many ports after the first the mapping covers.
    pub fn extra(&self) -> u16 {
        self.port_end.map_or(0, |e| e - self.port)
    }

    /// The listening port(s) as typed: `8080` or `8000-8010`.
    pub fn ports(&self) -> String {
        match self.port_end {
            Some(e) => format!("{}-{e}", self.port),
            None => self.port.to_string(),
        }
    }

    fn overlaps(&self, port: u16, extra: u16) -> bool {
        let (a, b) = (
            u32::from(self.port),
            u32::from(self.port) + u32::from(self.extra()),
        );
        let (c, d) = (u32::from(port), u32::from(port) + u32::from(extra));
        a <= d && c <= b
    }
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
    /// IPv6 subnet and the router's address on it (dual stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpRange>,
    /// DHCPv6 (IA_NA addresses from this range; needs the IPv6 gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<DhcpRange6>,
    #[serde(default)]
    pub isolated: bool,
    pub mtu: u32,
    #[serde(default)]
    pub ports: Vec<PortConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostConf>,
    /// Only in the db file: at run time the leases live in the lease store
    /// (`tables::leases`), which `config::db` folds in when it writes the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<Lease>,
    /// DHCPv6 leases, as `leases` (only in the db file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases6: Vec<Lease6>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<Reservation>,
    /// DHCPv6 reservations (`dhcp-reserve BR MAC IPV6`): a client is known by the
    /// Ethernet source of its messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations6: Vec<Reservation6>,
    /// Where names the bridge does not own are forwarded.
    #[serde(default, skip_serializing_if = "DnsForward::is_system")]
    pub dns: DnsForward,
    /// A cluster-wide bridge (`add-br --overlay`), programmed by vswitch-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayConf>,
    /// Addresses held through `alloc-address` (config/alloc.rs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<crate::config::alloc::Allocation>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
    /// Mirrors (SPAN, `add-mirror`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorConf>,
}

/// A mirror: copies of what the `select` ports receive and send leave by `output`,
/// which takes no other part in forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorConf {
    pub name: String,
    pub select: Vec<String>,
    pub output: String,
}

/// What makes a bridge an overlay bridge (see `control::cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayConf {
    pub vni: u32,
    /// Underlay UDP port of the network's tunnel.
    pub udp_port: u16,
}

/// Everything the user configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub bridges: Vec<BridgeConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes6: Vec<Route6Conf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masquerade: Vec<MasqConf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishConf>,
    /// `masquerade6`: source NAT of a bridge's IPv6 subnet (opt-in; see config::nat6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masquerade6: Vec<MasqConf>,
    /// `publish` on an IPv6 address (see config::nat6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published6: Vec<super::nat6::Publish6Conf>,
}

impl BridgeConf {
    /// Addresses nobody may be handed (DHCP, alloc-address): the gateway, DNS names,
    /// DHCP reservations, held addresses and pipework's `ip` of static ports.
    pub fn addresses_in_use(&self) -> HashSet<Ipv4Addr> {
        let mut reserved: HashSet<Ipv4Addr> = self
            .hosts
            .iter()
            .filter_map(|h| match h.ip {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .collect();
        reserved.extend(self.reservations.iter().map(|r| r.ip));
        reserved.extend(self.allocations.iter().map(|a| a.ip));
        reserved.extend(self.gateway);
        for p in &self.ports {
            // pipework's `ip` (ADDR/PREFIX) of a port with a static address.
            if let Some(ip) = p.external_ids.get("ip") {
                let a = ip.split('/').next().unwrap_or(ip);
                if let Ok(a) = a.parse() {
                    reserved.insert(a);
                }
            }
        }
        reserved
    }

    /// IPv6 addresses nobody may be handed by DHCPv6: the gateway, add-host
    /// addresses, pipework's `ip6` (or an IPv6 `ip`) of static ports.
    pub fn addresses_in_use6(&self) -> HashSet<Ipv6Addr> {
        let mut reserved: HashSet<Ipv6Addr> = self
            .hosts
            .iter()
            .filter_map(|h| match h.ip {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            })
            .collect();
        reserved.extend(self.gateway6);
        reserved.extend(self.reservations6.iter().map(|r| r.ip));
        for p in &self.ports {
            for key in ["ip", "ip6"] {
                if let Some(ip) = p.external_ids.get(key) {
                    let a = ip.split('/').next().unwrap_or(ip);
                    if let Ok(a) = a.parse() {
                        reserved.insert(a);
                    }
                }
            }
        }
        reserved
    }

    /// What this bridge's DHCPv6 server hands out (`None`: no DHCPv6).
    pub fn dhcp6_pool(&self) -> Option<Pool6Conf> {
        let range = self.dhcp6?;
        Some(Pool6Conf {
            bridge: self.name.clone(),
            first: range.first,
            last: range.last,
            subnet: self.subnet6?,
            server: self.gateway6?,
            duid: Duid::ll(crate::dp::snapshot::router_mac(&self.name)),
            reserved: self.addresses_in_use6(),
            reservations: self.reservations6.iter().map(|r| (r.mac, r.ip)).collect(),
        })
    }

    /// What this bridge's DHCP server hands out (`None`: no DHCP).
    pub fn dhcp_pool(&self) -> Option<PoolConf> {
        let range = self.dhcp?;
        let reserved = self.addresses_in_use();
        Some(PoolConf {
            bridge: self.name.clone(),
            first: range.first,
            last: range.last,
            subnet: self.subnet?,
            server: self.gateway?,
            mtu: self.mtu,
            reserved,
            reservations: self.reservations.iter().map(|r| (r.mac, r.ip)).collect(),
        })
    }
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

pub(super) fn parse_proto(s: &str) -> Result<u8, ConfigError> {
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

/// `PORT` or `FIRST-LAST`: the first port and the last (`None` for one port).
pub(super) fn parse_ports(s: &str) -> Result<(u16, Option<u16>), ConfigError> {
    match s.split_once('-') {
        None => Ok((parse_port(s)?, None)),
        Some((a, b)) => {
            let (a, b) = (parse_port(a)?, parse_port(b)?);
            match a.cmp(&b) {
                std::cmp::Ordering::Less => Ok((a, Some(b))),
                std::cmp::Ordering::Equal => Ok((a, None)),
                std::cmp::Ordering::Greater => Err(ConfigError::BadPortRange(s.to_string())),
            }
        }
    }
}

/// `[IP:]PORT[-LAST]`
fn parse_listen(s: &str) -> Result<(Option<Ipv4Addr>, u16, Option<u16>), ConfigError> {
    match s.rsplit_once(':') {
        Some((ip, ports)) => {
            let (p, e) = parse_ports(ports)?;
            Ok((Some(parse_ip(ip)?), p, e))
        }
        None => {
            let (p, e) = parse_ports(s)?;
            Ok((None, p, e))
        }
    }
}

/// A copy of `m`'s option as text (`none` when absent), for conflict messages.
fn shown<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "none".to_string(), ToString::to_string)
}

/// One difference `what OLD, not NEW` when `old != new`.
fn differ<T: PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    old: &T,
    new: &T,
    show: impl Fn(&T) -> String,
) {
    if old != new {
        out.push(format!("{what} {}, not {}", show(old), show(new)));
    }
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| ConfigError::BadIp(s.to_string()))
}

fn parse_route6(cidr: &str, via: &str) -> Result<(Ipv6Net, Ipv6Addr), ConfigError> {
    if !is_v6(cidr) || !is_v6(via) {
        return Err(ConfigError::MixedFamilies {
            cidr: cidr.to_string(),
            via: via.to_string(),
        });
    }
    Ok((parse_net6(cidr)?, parse_ip6(via)?))
}

fn parse_any_ip(s: &str) -> Result<IpAddr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| ConfigError::BadIp(s.to_string()))
}

fn parse_ip6(s: &str) -> Result<Ipv6Addr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| ConfigError::BadIp(s.to_string()))
}

/// Whether `s` is written as an IPv6 address or network (has a colon).
pub fn is_v6(s: &str) -> bool {
    s.contains(':')
}

/// Parse an IPv6 network in CIDR form, refusing host bits.
pub fn parse_net6(s: &str) -> Result<Ipv6Net, ConfigError> {
    let net: Ipv6Net = s
        .trim()
        .parse()
        .map_err(|_| ConfigError::BadCidr6(s.to_string()))?;
    if net.trunc() != net {
        return Err(ConfigError::HostBitsSet {
            given: s.to_string(),
            network: net.trunc().to_string(),
        });
    }
    Ok(net)
}

/// An `add-br` request with its addresses sorted by family: an IPv6 CIDR or address
/// given in `subnet`/`gateway` (older clients, or one flag for both families) moves to
/// `subnet6`/`gateway6`; two of one family are refused.
pub fn split_families(req: &AddBr) -> Result<AddBr, ConfigError> {
    let mut r = req.clone();
    if r.subnet.as_deref().is_some_and(is_v6) {
        if r.subnet6.is_some() {
            return Err(ConfigError::TwoOfOneFamily("IPv6"));
        }
        r.subnet6 = r.subnet.take();
    }
    if r.gateway.as_deref().is_some_and(is_v6) {
        if r.gateway6.is_some() {
            return Err(ConfigError::TwoOfOneFamily("IPv6"));
        }
        r.gateway6 = r.gateway.take();
    }
    if r.dhcp.as_deref().is_some_and(is_v6) {
        if r.dhcp6.is_some() {
            return Err(ConfigError::TwoOfOneFamily("IPv6"));
        }
        r.dhcp6 = r.dhcp.take();
    }
    if r.dhcp6
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty() && !is_v6(s))
    {
        return Err(ConfigError::BadDhcp6Range(r.dhcp6.unwrap_or_default()));
    }
    if r.subnet6.as_deref().is_some_and(|s| !is_v6(s)) {
        return Err(ConfigError::BadCidr6(r.subnet6.unwrap_or_default()));
    }
    if r.gateway6.as_deref().is_some_and(|s| !is_v6(s)) {
        return Err(ConfigError::BadIp(r.gateway6.unwrap_or_default()));
    }
    Ok(r)
}

impl Model {
    /// The DHCP pools of every bridge with DHCP (for the lease store).
    pub fn dhcp_pools(&self) -> Vec<PoolConf> {
        self.bridges
            .iter()
            .filter_map(BridgeConf::dhcp_pool)
            .collect()
    }

    /// The DHCPv6 pools of every bridge with DHCPv6.
    pub fn dhcp6_pools(&self) -> Vec<Pool6Conf> {
        self.bridges
            .iter()
            .filter_map(BridgeConf::dhcp6_pool)
            .collect()
    }

    /// Move the DHCPv6 leases out (a model loaded from the db), by bridge.
    pub fn take_leases6(&mut self) -> Vec<(String, Vec<Lease6>)> {
        self.bridges
            .iter_mut()
            .map(|b| (b.name.clone(), std::mem::take(&mut b.leases6)))
            .filter(|(_, l)| !l.is_empty())
            .collect()
    }

    /// Move the leases out (a model loaded from the db), by bridge.
    pub fn take_leases(&mut self) -> Vec<(String, Vec<Lease>)> {
        self.bridges
            .iter_mut()
            .map(|b| (b.name.clone(), std::mem::take(&mut b.leases)))
            .filter(|(_, l)| !l.is_empty())
            .collect()
    }

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
        let req = &split_families(req)?;
        let subnet6 = match &req.subnet6 {
            None => None,
            Some(s) => Some(parse_net6(s)?),
        };
        let gateway6 = match (&req.gateway6, subnet6) {
            (None, _) => None,
            (Some(g), None) => return Err(ConfigError::Gateway6WithoutSubnet6(g.clone())),
            (Some(g), Some(net)) => {
                let gw = parse_ip6(g)?;
                if !net.contains(&gw) {
                    return Err(ConfigError::GatewayOutside {
                        gateway: gw.to_string(),
                        subnet: net.to_string(),
                    });
                }
                if net.prefix_len() > 127 {
                    return Err(ConfigError::Subnet6TooLong(net.to_string()));
                }
                if gw == net.network() {
                    // The subnet-router anycast address (RFC 4291 2.6.1).
                    return Err(ConfigError::GatewayReserved(gw.to_string()));
                }
                Some(gw)
            }
        };
        if let Some(net) = subnet6 {
            for b in &self.bridges {
                if let Some(other) = b.subnet6 {
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
        // A bare `--dhcp` ("") asks for every family the router serves: DHCPv6 where
        // the bridge has an IPv6 gateway; a range asks for its own family only.
        let bare = req.dhcp.as_deref().is_some_and(|r| r.trim().is_empty());
        let dhcp6 = match (&req.dhcp6, subnet6.zip(gateway6)) {
            (None, Some((net, _))) if bare => Some(default_range6(net)),
            (None, _) => None,
            (Some(r), None) if r.trim().is_empty() => None,
            (Some(r), None) => return Err(ConfigError::Dhcp6WithoutGateway6(r.clone())),
            (Some(r), Some((net, _))) if r.trim().is_empty() => Some(default_range6(net)),
            (Some(r), Some((net, _))) => {
                let bad = || ConfigError::BadDhcp6Range(r.clone());
                let (a, b) = r.split_once('-').ok_or_else(bad)?;
                let first: Ipv6Addr = a.trim().parse().map_err(|_| bad())?;
                let last: Ipv6Addr = b.trim().parse().map_err(|_| bad())?;
                if !net.contains(&first) || !net.contains(&last) || first > last {
                    return Err(bad());
                }
                Some(DhcpRange6 { first, last })
            }
        };
        let dhcp = match (&req.dhcp, subnet) {
            (None, _) => None,
            // `--dhcp` on an IPv6-only bridge: DHCPv6 only.
            (Some(_), None) if bare && dhcp6.is_some() => None,
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
        if subnet6.is_some() && mtu < 1280 {
            return Err(ConfigError::Mtu6(mtu));
        }
        let dns = match (req.dns_upstream.is_empty(), req.no_dns_upstream) {
            (true, false) => DnsForward::System,
            (false, true) => return Err(ConfigError::UpstreamAndNoUpstream),
            _ if gateway.is_none() && gateway6.is_none() => {
                return Err(ConfigError::UpstreamWithoutGateway)
            }
            (true, true) => DnsForward::Off,
            (false, false) => {
                let mut v = Vec::new();
                for u in req.dns_upstream.iter().flat_map(|u| u.split(',')) {
                    let a = parse_upstream(u)?;
                    if !v.contains(&a) {
                        v.push(a);
                    }
                }
                DnsForward::Servers(v)
            }
        };
        Ok(BridgeConf {
            name: req.name.clone(),
            subnet,
            gateway,
            subnet6,
            gateway6,
            dhcp,
            dhcp6,
            isolated: req.isolated,
            mtu,
            ports: Vec::new(),
            hosts: Vec::new(),
            leases: Vec::new(),
            leases6: Vec::new(),
            reservations: Vec::new(),
            reservations6: Vec::new(),
            dns,
            overlay: None,
            allocations: Vec::new(),
            external_ids: req.external_ids.clone(),
            mirrors: Vec::new(),
        })
    }

    /// `--may-exist add-br`: the bridge `req` names, if it exists with exactly the
    /// settings `req` asks for; `None` if there is no such bridge; an error naming the
    /// differences if it has others (or if `req` is invalid in itself).
    pub fn existing_bridge(&self, req: &AddBr) -> Result<Option<&BridgeConf>, ConfigError> {
        let Ok(b) = self.bridge(&req.name) else {
            return Ok(None);
        };
        let mut rest = self.clone();
        rest.bridges.retain(|x| x.name != req.name);
        let want = rest.check_add_bridge(req)?;
        let mut d = Vec::new();
        differ(&mut d, "subnet", &b.subnet, &want.subnet, shown);
        differ(&mut d, "gateway", &b.gateway, &want.gateway, shown);
        differ(&mut d, "IPv6 subnet", &b.subnet6, &want.subnet6, shown);
        differ(&mut d, "IPv6 gateway", &b.gateway6, &want.gateway6, shown);
        differ(&mut d, "dhcp", &b.dhcp, &want.dhcp, shown);
        differ(&mut d, "dhcp6", &b.dhcp6, &want.dhcp6, shown);
        differ(
            &mut d,
            "isolated",
            &b.isolated,
            &want.isolated,
            ToString::to_string,
        );
        differ(&mut d, "mtu", &b.mtu, &want.mtu, ToString::to_string);
        differ(
            &mut d,
            "dns upstream",
            &b.dns,
            &want.dns,
            ToString::to_string,
        );
        if d.is_empty() {
            return Ok(Some(b));
        }
        Err(ConfigError::Conflict(format!(
            "bridge {} already exists with other settings ({})",
            b.name,
            d.join("; ")
        )))
    }

    /// `--may-exist add-port`: as [`Model::existing_bridge`], for a port. A port of
    /// that name on another bridge is an error. `external_ids` are not compared.
    pub fn existing_port(&self, req: &AddPort) -> Result<Option<&PortConf>, ConfigError> {
        let Some(owner) = self.port_owner(&req.port) else {
            return Ok(None);
        };
        if owner.name != req.bridge {
            return Err(ConfigError::Conflict(format!(
                "port {} already exists on bridge {}, not {}",
                req.port, owner.name, req.bridge
            )));
        }
        let Some(p) = owner.ports.iter().find(|p| p.name == req.port) else {
            return Ok(None);
        };
        let mut rest = self.clone();
        rest.remove_port(&owner.name, &req.port)?;
        let want = rest.check_add_port(req)?;
        let mut d = Vec::new();
        differ(&mut d, "type", &p.kind, &want.kind, ToString::to_string);
        differ(&mut d, "tag", &p.tag, &want.tag, shown);
        differ(&mut d, "trunks", &p.trunks, &want.trunks, |t| {
            format!("{t:?}")
        });
        differ(&mut d, "vxlan", &p.vxlan, &want.vxlan, |v| format!("{v:?}"));
        differ(&mut d, "lock", &p.lock, &want.lock, |v| format!("{v:?}"));
        if d.is_empty() {
            return Ok(Some(p));
        }
        Err(ConfigError::Conflict(format!(
            "port {} already exists on bridge {} with other settings ({})",
            p.name,
            owner.name,
            d.join("; ")
        )))
    }

    /// `--may-exist add-route`: the route to `cidr`, if it goes via `via`.
    pub fn existing_route(&self, cidr: &str, via: &str) -> Result<Option<AnyRoute>, ConfigError> {
        if is_v6(cidr) || is_v6(via) {
            let (net, via) = parse_route6(cidr, via)?;
            return match self.routes6.iter().find(|r| r.cidr == net) {
                None => Ok(None),
                Some(r) if r.via == via => Ok(Some(AnyRoute::V6(r.clone()))),
                Some(r) => Err(ConfigError::Conflict(format!(
                    "route {net} already exists via {}, not via {via}",
                    r.via
                ))),
            };
        }
        let net = parse_net(cidr)?;
        let via = parse_ip(via)?;
        match self.routes.iter().find(|r| r.cidr == net) {
            None => Ok(None),
            Some(r) if r.via == via => Ok(Some(AnyRoute::V4(r.clone()))),
            Some(r) => Err(ConfigError::Conflict(format!(
                "route {net} already exists via {}, not via {via}",
                r.via
            ))),
        }
    }

    /// `--may-exist add-host`: the name, if it resolves to the same address.
    pub fn existing_host(&self, req: &AddHost) -> Result<Option<&HostConf>, ConfigError> {
        let b = self.bridge(&req.bridge)?;
        let name = req.name.trim().trim_end_matches('.').to_ascii_lowercase();
        let ip = parse_any_ip(&req.ip)?;
        match b
            .hosts
            .iter()
            .find(|h| h.name == name && h.ip.is_ipv6() == ip.is_ipv6())
        {
            None => Ok(None),
            Some(h) if h.ip == ip => Ok(Some(h)),
            Some(h) => Err(ConfigError::HostExists {
                bridge: b.name.clone(),
                name,
                ip: h.ip.to_string(),
            }),
        }
    }

    /// `--may-exist dhcp-reserve`: whether the MAC already has exactly this
    /// reservation; an error if it has another.
    pub fn existing_reservation(
        &self,
        bridge: &str,
        mac: &str,
        ip: &str,
        name: Option<&str>,
    ) -> Result<bool, ConfigError> {
        let b = self.bridge(bridge)?;
        let mac_a: MacAddr = mac
            .trim()
            .parse()
            .map_err(|_| ConfigError::BadMac(mac.to_string()))?;
        let name = name.map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase());
        if is_v6(ip) {
            let ip_a = parse_ip6(ip)?;
            return match b.reservations6.iter().find(|r| r.mac == mac_a) {
                None => Ok(false),
                Some(r) if r.ip == ip_a && r.name == name => Ok(true),
                Some(r) => Err(ConfigError::Conflict(format!(
                    "{mac_a} already has an IPv6 reservation on bridge {bridge}: {}{}",
                    r.ip,
                    r.name
                        .as_ref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                ))),
            };
        }
        let ip_a = parse_ip(ip)?;
        match b.reservations.iter().find(|r| r.mac == mac_a) {
            None => Ok(false),
            Some(r) if r.ip == ip_a && r.name == name => Ok(true),
            Some(r) => Err(ConfigError::Conflict(format!(
                "{mac_a} already has a reservation on bridge {bridge}: {}{}",
                r.ip,
                r.name
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ))),
        }
    }

    /// `--may-exist publish`: the published mapping, if it has the same target.
    pub fn existing_publish(
        &self,
        proto: &str,
        listen: &str,
        target: &str,
    ) -> Result<Option<&PublishConf>, ConfigError> {
        let proto_n = parse_proto(proto)?;
        let (ip, port, port_end) = parse_listen(listen)?;
        let Some(p) = self
            .published
            .iter()
            .find(|p| p.proto == proto_n && p.ip == ip && p.port == port && p.port_end == port_end)
        else {
            return Ok(None);
        };
        let (tip, tport, tend) = parse_target(target)?;
        let want_end = port_end.map(|e| u32::from(tport) + u32::from(e - port));
        if p.target_ip == tip && p.target_port == tport && tend.map(u32::from) == want_end {
            return Ok(Some(p));
        }
        Err(ConfigError::AlreadyPublished {
            proto: proto_name(proto_n).to_string(),
            listen: listen.to_string(),
            target: format!("{}:{}", p.target_ip, target_ports(p)),
        })
    }

    /// Forget the names registered for port `port` of `bridge` (just removed): names
    /// added for it (`add-host --port`, pipework), a pipework DHCP port's reservation
    /// and lease, and the hostnames of leases held by `macs` (the MACs seen on it).
    pub fn forget_port_names(
        &mut self,
        bridge: &str,
        port: &PortConf,
        macs: &[MacAddr],
    ) -> Result<(), ConfigError> {
        let ext = |k: &str| port.external_ids.get(k).map(String::as_str);
        let pipework = ext("pipework") == Some("1");
        let dns = ext("dns").map(str::to_string);
        let pipework_mac = ext("mac").and_then(|m| m.parse::<MacAddr>().ok());
        let b = self.bridge_mut(bridge)?;
        b.hosts.retain(|h| {
            let for_port = h.port.as_deref() == Some(port.name.as_str());
            // Names pipework registered before hosts recorded their port.
            let pipework_name = pipework
                && h.port.is_none()
                && h.source == "pipework"
                && dns.as_deref() == Some(h.name.as_str());
            !(for_port || pipework_name)
        });
        if let (true, Some(mac)) = (pipework, pipework_mac) {
            // The veth pair is deleted with the port: the guest's address is free.
            b.reservations.retain(|r| r.mac != mac);
            b.reservations6.retain(|r| r.mac != mac);
            b.leases.retain(|l| l.mac != mac);
            b.leases6.retain(|l| l.mac != Some(mac));
        }
        for l in b.leases.iter_mut().filter(|l| macs.contains(&l.mac)) {
            l.hostname = None;
        }
        Ok(())
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
        let (ip, port, port_end) = parse_listen(listen)?;
        if let Some(ip) = ip {
            if !self.bridges.iter().any(|b| b.gateway == Some(ip)) {
                return Err(ConfigError::NotRouterAddress(ip.to_string()));
            }
        }
        let (target_ip, target_port, target_end) = parse_target(target)?;
        let extra = port_end.map_or(0, |e| e - port);
        let target_extra = target_end.map_or(0, |e| e - target_port);
        if extra != target_extra {
            return Err(ConfigError::RangeMismatch {
                listen: listen.to_string(),
                target: target.to_string(),
            });
        }
        if !self
            .bridges
            .iter()
            .any(|b| b.subnet.is_some_and(|s| s.contains(&target_ip)))
        {
            return Err(ConfigError::TargetOutside(target_ip.to_string()));
        }
        if let Some(p) = self.published.iter().find(|p| {
            p.proto == proto_n
                && p.overlaps(port, extra)
                && (p.ip.is_none() || ip.is_none() || p.ip == ip)
        }) {
            return Err(ConfigError::AlreadyPublished {
                proto: proto_name(proto_n).to_string(),
                listen: match p.extra() {
                    0 => listen.to_string(),
                    _ => format!("{listen} (range {})", p.ports()),
                },
                target: format!("{}:{}", p.target_ip, target_ports(p)),
            });
        }
        Ok(PublishConf {
            proto: proto_n,
            ip,
            port,
            target_ip,
            target_port,
            port_end,
        })
    }

    pub fn remove_published(
        &mut self,
        proto: &str,
        listen: &str,
    ) -> Result<PublishConf, ConfigError> {
        let proto_n = parse_proto(proto)?;
        let (ip, port, port_end) = parse_listen(listen)?;
        let exact = |p: &&PublishConf| {
            p.proto == proto_n && p.port == port && p.port_end == port_end && p.ip == ip
        };
        if let Some(i) = self.published.iter().position(|p| exact(&p)) {
            return Ok(self.published.remove(i));
        }
        let extra = port_end.map_or(0, |e| e - port);
        if let Some(p) = self
            .published
            .iter()
            .find(|p| p.proto == proto_n && p.ip == ip && p.overlaps(port, extra))
        {
            return Err(ConfigError::InsideRange {
                proto: proto_name(proto_n).to_string(),
                port,
                range: match p.ip {
                    Some(i) => format!("{i}:{}", p.ports()),
                    None => p.ports(),
                },
            });
        }
        Err(ConfigError::NotPublished {
            proto: proto_name(proto_n).to_string(),
            listen: listen.to_string(),
        })
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
        if is_v6(ip) {
            return self.reserve6(bridge, mac_a, parse_ip6(ip)?, name);
        }
        let ip_a = parse_ip(ip)?;
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

    /// `dhcp-reserve BR MAC IPV6 [NAME]`: the bridge serves DHCPv6, the address is in
    /// its IPv6 subnet, not the gateway, not another MAC's.
    fn reserve6(
        &mut self,
        bridge: &str,
        mac: crate::wire::MacAddr,
        ip: Ipv6Addr,
        name: Option<String>,
    ) -> Result<(), ConfigError> {
        let b = self.bridge_mut(bridge)?;
        let (Some(_), Some(net)) = (b.dhcp6, b.subnet6) else {
            return Err(ConfigError::NoDhcp6(bridge.to_string()));
        };
        if !net.contains(&ip) || Some(ip) == b.gateway6 || ip == net.network() {
            return Err(ConfigError::AddressOutside {
                ip: ip.to_string(),
                subnet: net.to_string(),
                bridge: bridge.to_string(),
            });
        }
        if let Some(r) = b.reservations6.iter().find(|r| r.ip == ip && r.mac != mac) {
            return Err(ConfigError::ReservationTaken {
                ip: ip.to_string(),
                mac: r.mac.to_string(),
                bridge: bridge.to_string(),
            });
        }
        b.reservations6.retain(|r| r.mac != mac);
        b.reservations6.push(Reservation6 { mac, ip, name });
        Ok(())
    }

    /// `dhcp-unreserve BR MAC`: the MAC's reservations of both families go.
    pub fn unreserve(&mut self, bridge: &str, mac: &str) -> Result<(), ConfigError> {
        let mac_a: crate::wire::MacAddr = mac
            .trim()
            .parse()
            .map_err(|_| ConfigError::BadMac(mac.to_string()))?;
        let b = self.bridge_mut(bridge)?;
        let before = b.reservations.len() + b.reservations6.len();
        b.reservations.retain(|r| r.mac != mac_a);
        b.reservations6.retain(|r| r.mac != mac_a);
        if b.reservations.len() + b.reservations6.len() == before {
            return Err(ConfigError::NoSuchReservation {
                mac: mac_a.to_string(),
                bridge: bridge.to_string(),
            });
        }
        Ok(())
    }

    /// Validate an `add-route` request, without changing the model.
    pub fn check_add_route(&self, cidr: &str, via: &str) -> Result<AnyRoute, ConfigError> {
        if is_v6(cidr) || is_v6(via) {
            let (net, via) = parse_route6(cidr, via)?;
            if !self
                .bridges
                .iter()
                .any(|b| b.gateway6.is_some() && b.subnet6.is_some_and(|s| s.contains(&via)))
            {
                return Err(ConfigError::NextHopUnreachable(via.to_string()));
            }
            if self.routes6.iter().any(|r| r.cidr == net) {
                return Err(ConfigError::RouteExists(net.to_string()));
            }
            return Ok(AnyRoute::V6(Route6Conf { cidr: net, via }));
        }
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
        Ok(AnyRoute::V4(RouteConf { cidr: net, via }))
    }

    /// Add a validated route.
    pub fn insert_route(&mut self, r: AnyRoute) {
        match r {
            AnyRoute::V4(r) => self.routes.push(r),
            AnyRoute::V6(r) => self.routes6.push(r),
        }
    }

    pub fn remove_route(&mut self, cidr: &str) -> Result<AnyRoute, ConfigError> {
        if is_v6(cidr) {
            let net = parse_net6(cidr)?;
            let i = self
                .routes6
                .iter()
                .position(|r| r.cidr == net)
                .ok_or_else(|| ConfigError::NoSuchRoute(net.to_string()))?;
            return Ok(AnyRoute::V6(self.routes6.remove(i)));
        }
        let net = parse_net(cidr)?;
        let i = self
            .routes
            .iter()
            .position(|r| r.cidr == net)
            .ok_or_else(|| ConfigError::NoSuchRoute(net.to_string()))?;
        Ok(AnyRoute::V4(self.routes.remove(i)))
    }

    /// Validate an `add-host` request, without changing the model.
    pub fn check_add_host(&self, req: &AddHost) -> Result<HostConf, ConfigError> {
        let b = self.bridge(&req.bridge)?;
        let name = req.name.trim().trim_end_matches('.').to_ascii_lowercase();
        if !valid_dns_name(&name) {
            return Err(ConfigError::BadHostName(req.name.clone()));
        }
        let ip = parse_any_ip(&req.ip)?;
        let outside = match ip {
            IpAddr::V4(a) => b.subnet.filter(|n| !n.contains(&a)).map(|n| n.to_string()),
            IpAddr::V6(a) => b.subnet6.filter(|n| !n.contains(&a)).map(|n| n.to_string()),
        };
        if let Some(subnet) = outside {
            return Err(ConfigError::AddressOutside {
                ip: ip.to_string(),
                subnet,
                bridge: b.name.clone(),
            });
        }
        // One address of each family per name (an A and an AAAA record).
        if let Some(h) = b
            .hosts
            .iter()
            .find(|h| h.name == name && h.ip.is_ipv6() == ip.is_ipv6())
        {
            return Err(ConfigError::HostExists {
                bridge: b.name.clone(),
                name,
                ip: h.ip.to_string(),
            });
        }
        if let Some(p) = &req.port {
            if !b.ports.iter().any(|x| &x.name == p) {
                return Err(ConfigError::NoSuchPort {
                    bridge: b.name.clone(),
                    port: p.clone(),
                });
            }
        }
        Ok(HostConf {
            name,
            ip,
            source: req.source.clone().unwrap_or_else(|| "user".to_string()),
            port: req.port.clone(),
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
        let h = b.hosts.remove(i);
        // The name's address of the other family (its AAAA or A record) goes too.
        b.hosts.retain(|x| x.name != key);
        Ok(h)
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
            impair: None,
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
        let p = b.ports.remove(i);
        // A mirror loses the port; a mirror left with nothing to copy or nowhere to
        // send goes (as in Open vSwitch).
        for m in &mut b.mirrors {
            m.select.retain(|s| s != port);
        }
        b.mirrors
            .retain(|m| m.output != port && !m.select.is_empty());
        Ok(p)
    }

    /// Check and add a mirror; returns it.
    pub fn add_mirror(
        &mut self,
        req: &vswitch_proto::AddMirror,
    ) -> Result<MirrorConf, ConfigError> {
        let b = self.bridge_mut(&req.bridge)?;
        let on_bridge = |p: &str| b.ports.iter().any(|x| x.name == p);
        let missing = |p: &str| ConfigError::NoSuchPort {
            bridge: req.bridge.clone(),
            port: p.to_string(),
        };
        if req.select.is_empty() {
            return Err(ConfigError::Conflict(
                "a mirror needs at least one --select-port".into(),
            ));
        }
        let mut select: Vec<String> = Vec::new();
        for s in &req.select {
            if !on_bridge(s) {
                return Err(missing(s));
            }
            if *s == req.output {
                return Err(ConfigError::Conflict(format!(
                    "port {s} cannot be both selected and the mirror's output"
                )));
            }
            if !select.contains(s) {
                select.push(s.clone());
            }
        }
        if !on_bridge(&req.output) {
            return Err(missing(&req.output));
        }
        if let Some(m) = b
            .mirrors
            .iter()
            .find(|m| m.select.contains(&req.output) || select.contains(&m.output))
        {
            return Err(ConfigError::Conflict(format!(
                "mirror {} already uses these ports the other way round",
                m.name
            )));
        }
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("span-{}", req.output));
        if name.is_empty() || name.len() > 64 {
            return Err(ConfigError::Conflict(format!("bad mirror name {name:?}")));
        }
        if b.mirrors.iter().any(|m| m.name == name) {
            return Err(ConfigError::Conflict(format!(
                "mirror {name} already exists on bridge {}",
                req.bridge
            )));
        }
        let m = MirrorConf {
            name,
            select,
            output: req.output.clone(),
        };
        b.mirrors.push(m.clone());
        Ok(m)
    }

    /// Remove mirror `name` of `bridge`; false if there was none.
    pub fn del_mirror(&mut self, bridge: &str, name: &str) -> Result<bool, ConfigError> {
        let b = self.bridge_mut(bridge)?;
        let n = b.mirrors.len();
        b.mirrors.retain(|m| m.name != name);
        Ok(b.mirrors.len() != n)
    }
}

/// `IP:PORT[-LAST]` of a publish target.
fn parse_target(target: &str) -> Result<(Ipv4Addr, u16, Option<u16>), ConfigError> {
    let (tip, tports) = target
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::BadEndpoint(target.to_string()))?;
    let ip: Ipv4Addr = tip
        .trim()
        .parse()
        .map_err(|_| ConfigError::BadEndpoint(target.to_string()))?;
    let (p, e) = parse_ports(tports)?;
    Ok((ip, p, e))
}

/// The target port(s) of `p` as typed: `80` or `8000-8010`.
pub fn target_ports(p: &PublishConf) -> String {
    match p.extra() {
        0 => p.target_port.to_string(),
        n => format!(
            "{}-{}",
            p.target_port,
            u32::from(p.target_port) + u32::from(n)
        ),
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
        let ip: IpAddr = s.trim().parse().map_err(|_| {
            ConfigError::Lock(format!(
                "bad --lock-ip {s:?}: expected an IPv4 or IPv6 address"
            ))
        })?;
        let broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
        if ip.is_unspecified() || ip.is_multicast() || broadcast || ip.is_loopback() {
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
    fn dual_stack_bridges_and_routes() {
        let mut m = Model::default();
        let mut r = br("br1", Some("10.0.0.0/24"), Some("10.0.0.1"));
        r.subnet6 = Some("fd00:10::/64".into());
        r.gateway6 = Some("fd00:10::1".into());
        let b = m.check_add_bridge(&r).unwrap();
        assert_eq!(b.subnet6, Some("fd00:10::/64".parse().unwrap()));
        assert_eq!(b.gateway6, Some("fd00:10::1".parse().unwrap()));
        m.insert_bridge(b);
        let err = |r: AddBr| m.check_add_bridge(&r).unwrap_err().to_string();
        // An IPv6 CIDR in `subnet` (an older client) is taken as the IPv6 subnet.
        let only6 = br("br2", Some("fd00:20::/64"), Some("fd00:20::1"));
        let b2 = m.check_add_bridge(&only6).unwrap();
        assert_eq!((b2.subnet, b2.subnet6.is_some()), (None, true));
        assert_eq!(
            err(br("br2", Some("fd00:10:0:0:8000::/65"), None)),
            "subnet fd00:10:0:0:8000::/65 overlaps fd00:10::/64 of bridge br1"
        );
        assert_eq!(
            err(br("br2", Some("10.1.0.0/24"), Some("fd00:20::1"))),
            "--gateway fd00:20::1 is IPv6 but the bridge has no IPv6 --subnet"
        );
        assert_eq!(
            err(br("br2", Some("fd00:20::/64"), Some("fd00:21::1"))),
            "gateway fd00:21::1 is outside subnet fd00:20::/64"
        );
        assert!(err(br("br2", Some("fd00:20::5/64"), None)).contains("did you mean fd00:20::/64"));
        assert!(err(br("br2", Some("fd00:20::/129"), None)).starts_with("bad IPv6 CIDR"));
        let mut two = br("br2", Some("fd00:20::/64"), None);
        two.subnet6 = Some("fd00:21::/64".into());
        assert!(err(two).starts_with("--subnet/--gateway: at most one IPv6"));
        let mut small = only6.clone();
        small.mtu = Some(1000);
        assert!(err(small).contains("at least 1280"));
        // Routes of both families.
        m.insert_bridge(b2);
        let r6 = m.check_add_route("fd00:99::/48", "fd00:20::2").unwrap();
        assert_eq!(r6.cidr(), "fd00:99::/48");
        m.insert_route(r6);
        assert_eq!(m.routes6.len(), 1);
        assert!(m
            .check_add_route("fd00:99::/48", "fd00:20::3")
            .unwrap_err()
            .to_string()
            .starts_with("route already exists"));
        assert_eq!(
            m.check_add_route("fd00:98::/48", "10.0.0.2")
                .unwrap_err()
                .to_string(),
            "route fd00:98::/48 and next hop 10.0.0.2 are of different address families"
        );
        assert_eq!(
            m.check_add_route("fd00:98::/48", "fd00:30::2")
                .unwrap_err()
                .to_string(),
            "next hop fd00:30::2 is not inside the subnet of any bridge with a gateway"
        );
        assert!(m
            .existing_route("fd00:99::/48", "fd00:20::2")
            .unwrap()
            .is_some());
        m.remove_route("fd00:99::/48").unwrap();
        assert!(m.routes6.is_empty());
        // The db round trip keeps the IPv6 fields.
        let back: Model = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
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
    fn dhcp_reserve_ipv6() {
        let mut m = Model::default();
        let mut r = br("br1", Some("10.0.0.0/24"), Some("10.0.0.1"));
        r.subnet6 = Some("fd00:10::/64".into());
        r.gateway6 = Some("fd00:10::1".into());
        r.dhcp = Some(String::new());
        let b = m.check_add_bridge(&r).unwrap();
        m.insert_bridge(b);
        m.insert_bridge(
            m.check_add_bridge(&br("br4", Some("10.4.0.0/24"), Some("10.4.0.1")))
                .unwrap(),
        );
        let mac = "02:00:00:00:00:05";
        m.reserve("br1", mac, "10.0.0.5", None).unwrap();
        m.reserve("br1", mac, "fd00:10::5", Some("Web6.")).unwrap();
        let b = m.bridge("br1").unwrap();
        assert_eq!(b.reservations.len(), 1, "one of each family");
        assert_eq!(b.reservations6[0].name.as_deref(), Some("web6"));
        let pool = b.dhcp6_pool().unwrap();
        assert!(pool.reserved.contains(&"fd00:10::5".parse().unwrap()));
        assert_eq!(pool.reservations.len(), 1);
        let err = |m: &mut Model, br: &str, mac: &str, ip: &str| {
            m.reserve(br, mac, ip, None).unwrap_err().to_string()
        };
        assert!(err(&mut m, "br1", mac, "fd00:99::5").contains("outside subnet fd00:10::/64"));
        assert!(err(&mut m, "br1", mac, "fd00:10::1").contains("outside subnet"));
        assert!(err(&mut m, "br1", mac, "fd00:10::").contains("outside subnet"));
        assert!(err(&mut m, "br4", mac, "fd00:10::6").contains("has no DHCPv6 server"));
        assert!(err(&mut m, "br1", "02:00:00:00:00:06", "fd00:10::5").contains("already reserved"));
        assert_eq!(
            m.existing_reservation("br1", mac, "fd00:10::5", Some("web6")),
            Ok(true)
        );
        assert!(m
            .existing_reservation("br1", mac, "fd00:10::7", None)
            .is_err());
        m.unreserve("br1", mac).unwrap();
        let b = m.bridge("br1").unwrap();
        assert!(b.reservations.is_empty() && b.reservations6.is_empty());
    }

    #[test]
    fn dhcp_per_family() {
        let m = Model::default();
        let dual = |dhcp: Option<&str>, dhcp6: Option<&str>| AddBr {
            name: "br6".into(),
            subnet: Some("10.6.0.0/24".into()),
            gateway: Some("10.6.0.1".into()),
            subnet6: Some("fd00:6::/64".into()),
            gateway6: Some("fd00:6::1".into()),
            dhcp: dhcp.map(Into::into),
            dhcp6: dhcp6.map(Into::into),
            ..Default::default()
        };
        let show = |r: AddBr| {
            m.check_add_bridge(&r)
                .map(|b| {
                    (
                        b.dhcp.map(|d| d.to_string()),
                        b.dhcp6.map(|d| d.to_string()),
                    )
                })
                .map_err(|e| e.to_string())
        };
        let all6 = "fd00:6::1-fd00:6::ffff:ffff:ffff:ffff".to_string();
        // Bare: both families, the whole subnet each.
        assert_eq!(
            show(dual(Some(""), None)),
            Ok((Some("10.6.0.1-10.6.0.254".into()), Some(all6.clone())))
        );
        // A range names its family only (also an IPv6 range in `dhcp`, older clients).
        assert_eq!(
            show(dual(Some("10.6.0.10-10.6.0.20"), None)),
            Ok((Some("10.6.0.10-10.6.0.20".into()), None))
        );
        assert_eq!(
            show(dual(Some("fd00:6::10-fd00:6::20"), None)),
            Ok((None, Some("fd00:6::10-fd00:6::20".into())))
        );
        assert_eq!(show(dual(None, Some(""))), Ok((None, Some(all6))));
        assert!(show(dual(None, Some("fd00:7::10-fd00:7::20")))
            .unwrap_err()
            .starts_with("bad DHCPv6 range"));
        assert!(show(dual(None, Some("fd00:6::20-fd00:6::10")))
            .unwrap_err()
            .starts_with("bad DHCPv6 range"));
        // IPv6 only: bare --dhcp is DHCPv6; a v6 range without an IPv6 gateway is an error.
        let mut r = dual(Some(""), None);
        r.subnet = None;
        r.gateway = None;
        assert_eq!(show(r.clone()).unwrap().0, None);
        r.gateway6 = None;
        assert_eq!(show(r.clone()).unwrap_err(), "--dhcp needs --subnet");
        r.dhcp = Some("fd00:6::10-fd00:6::20".into());
        assert!(show(r)
            .unwrap_err()
            .contains("needs an IPv6 --subnet and --gateway"));
        // An IPv4-only bridge with a bare --dhcp: DHCPv4 only, as before.
        let mut r = dual(Some(""), None);
        r.subnet6 = None;
        r.gateway6 = None;
        assert_eq!(show(r), Ok((Some("10.6.0.1-10.6.0.254".into()), None)));
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
            ..Default::default()
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
    fn published_ranges() {
        let mut m = Model::default();
        for (n, s, g) in [
            ("br1", "10.0.0.0/24", None),
            ("wan", "198.51.100.0/24", Some("198.51.100.2")),
        ] {
            m.insert_bridge(m.check_add_bridge(&br(n, Some(s), g)).unwrap());
        }
        let p = m
            .check_publish("tcp", "8000-8010", "10.0.0.5:9000-9010")
            .unwrap();
        assert_eq!(
            (p.port, p.port_end, p.target_port, p.extra()),
            (8000, Some(8010), 9000, 10)
        );
        assert_eq!(target_ports(&p), "9000-9010");
        m.published.push(p);
        let err = |l: &str, t: &str| m.check_publish("tcp", l, t).unwrap_err().to_string();
        assert_eq!(
            err("8005", "10.0.0.6:80"),
            "tcp port 8005 (range 8000-8010) is already published (to 10.0.0.5:9000-9010)"
        );
        assert!(err("7990-8000", "10.0.0.6:7990-8000").contains("already published"));
        assert_eq!(
            err("7000-7005", "10.0.0.6:80"),
            "target range 10.0.0.6:80 is not as long as the listening range 7000-7005"
        );
        assert!(err("7010-7000", "10.0.0.6:80").starts_with("bad port range"));
        assert!(m.check_publish("tcp", "8011-8020", "10.0.0.6:1-10").is_ok());
        assert!(m.check_publish("udp", "8000-8010", "10.0.0.6:1-11").is_ok());
        // --may-exist: the same mapping is found; another target is an error.
        assert!(m
            .existing_publish("tcp", "8000-8010", "10.0.0.5:9000-9010")
            .unwrap()
            .is_some());
        assert!(m
            .existing_publish("tcp", "8000-8010", "10.0.0.5:9001-9011")
            .is_err());
        assert!(m
            .existing_publish("tcp", "7000", "10.0.0.5:80")
            .unwrap()
            .is_none());
        assert_eq!(
            m.remove_published("tcp", "8005").unwrap_err().to_string(),
            "tcp port 8005 is part of the published range 8000-8010: unpublish tcp 8000-8010"
        );
        assert!(m.remove_published("tcp", "8000-8010").is_ok());
        assert!(m.published.is_empty());
    }

    #[test]
    fn may_exist_identical_or_conflicting() {
        let mut m = Model::default();
        let mut r = br("br1", Some("10.0.0.0/24"), Some("10.0.0.1"));
        assert!(m.existing_bridge(&r).unwrap().is_none());
        m.insert_bridge(m.check_add_bridge(&r).unwrap());
        assert!(m.existing_bridge(&r).unwrap().is_some(), "identical");
        r.mtu = Some(9000);
        r.isolated = true;
        assert_eq!(
            m.existing_bridge(&r).unwrap_err().to_string(),
            "bridge br1 already exists with other settings (isolated false, not true; mtu 1500, not 9000)"
        );
        let mut r = br("br1", Some("10.0.0.0/24"), Some("10.0.0.1"));
        r.dns_upstream = vec!["203.0.113.53".into()];
        assert!(m
            .existing_bridge(&r)
            .unwrap_err()
            .to_string()
            .contains("dns upstream vswitchd's resolv.conf, not 203.0.113.53:53"));
        m.insert_bridge(m.check_add_bridge(&br("br2", None, None)).unwrap());
        let port = |bridge: &str, tag: Option<u16>| AddPort {
            bridge: bridge.into(),
            port: "v1".into(),
            tag,
            ..Default::default()
        };
        m.insert_port("br1", m.check_add_port(&port("br1", Some(10))).unwrap())
            .unwrap();
        assert!(m.existing_port(&port("br1", Some(10))).unwrap().is_some());
        assert_eq!(
            m.existing_port(&port("br1", Some(20)))
                .unwrap_err()
                .to_string(),
            "port v1 already exists on bridge br1 with other settings (tag 10, not 20)"
        );
        assert_eq!(
            m.existing_port(&port("br2", Some(10)))
                .unwrap_err()
                .to_string(),
            "port v1 already exists on bridge br1, not br2"
        );
        {
            let r = m.check_add_route("0.0.0.0/0", "10.0.0.254").unwrap();
            m.insert_route(r);
        }
        assert!(m
            .existing_route("0.0.0.0/0", "10.0.0.254")
            .unwrap()
            .is_some());
        assert_eq!(
            m.existing_route("0.0.0.0/0", "10.0.0.253")
                .unwrap_err()
                .to_string(),
            "route 0.0.0.0/0 already exists via 10.0.0.254, not via 10.0.0.253"
        );
        let host = |ip: &str| AddHost {
            bridge: "br1".into(),
            name: "web".into(),
            ip: ip.into(),
            ..Default::default()
        };
        m.insert_host("br1", m.check_add_host(&host("10.0.0.5")).unwrap())
            .unwrap();
        assert!(m.existing_host(&host("10.0.0.5")).unwrap().is_some());
        assert!(m.existing_host(&host("10.0.0.6")).is_err());
    }

    #[test]
    fn names_leave_with_their_port() {
        let mut m = Model::default();
        m.insert_bridge(
            m.check_add_bridge(&br("br1", Some("10.0.0.0/24"), Some("10.0.0.1")))
                .unwrap(),
        );
        let mut ids = BTreeMap::new();
        ids.insert("pipework".to_string(), "1".to_string());
        ids.insert("dns".to_string(), "old".to_string());
        let add = |m: &mut Model, port: &str, ids: BTreeMap<String, String>| {
            let p = m
                .check_add_port(&AddPort {
                    bridge: "br1".into(),
                    port: port.into(),
                    external_ids: ids,
                    ..Default::default()
                })
                .unwrap();
            m.insert_port("br1", p).unwrap();
        };
        add(&mut m, "vp1", ids);
        add(&mut m, "v2", BTreeMap::new());
        let host = |name: &str, ip: &str, port: Option<&str>, source: &str| AddHost {
            bridge: "br1".into(),
            name: name.into(),
            ip: ip.into(),
            source: Some(source.into()),
            port: port.map(str::to_string),
            ..Default::default()
        };
        for h in [
            host("web", "10.0.0.5", Some("vp1"), "pipework"),
            host("old", "10.0.0.6", None, "pipework"),
            host("db", "10.0.0.7", Some("v2"), "user"),
            host("kept", "10.0.0.8", None, "user"),
        ] {
            let c = m.check_add_host(&h).unwrap();
            m.insert_host("br1", c).unwrap();
        }
        assert!(m
            .check_add_host(&host("x", "10.0.0.9", Some("nope"), "user"))
            .is_err());
        let mac: MacAddr = "02:00:00:00:00:09".parse().unwrap();
        m.bridges[0].leases.push(Lease {
            mac,
            ip: "10.0.0.50".parse().unwrap(),
            hostname: Some("guest".into()),
            expires: u64::MAX,
        });
        let p = m.remove_port("br1", "vp1").unwrap();
        m.forget_port_names("br1", &p, &[mac]).unwrap();
        let names: Vec<&str> = m.bridges[0].hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db", "kept"]);
        assert_eq!(
            m.bridges[0].leases[0].hostname, None,
            "a lease's name goes too"
        );
        assert_eq!(m.bridges[0].leases.len(), 1, "the address stays leased");
    }

    #[test]
    fn mirrors_are_checked_and_follow_their_ports() {
        let mut m = Model::default();
        m.insert_bridge(m.check_add_bridge(&br("br1", None, None)).unwrap());
        for port in ["v1", "v2", "v3", "vm"] {
            let req = AddPort {
                bridge: "br1".into(),
                port: port.into(),
                ..Default::default()
            };
            m.insert_port("br1", m.check_add_port(&req).unwrap())
                .unwrap();
        }
        let req = |select: &[&str], output: &str| vswitch_proto::AddMirror {
            bridge: "br1".into(),
            name: None,
            select: select.iter().map(|s| s.to_string()).collect(),
            output: output.into(),
        };
        let err = |m: &mut Model, r| m.add_mirror(&r).unwrap_err().to_string();
        assert!(err(&mut m, req(&["v9"], "vm")).contains("v9"));
        assert!(err(&mut m, req(&["v1"], "v9")).contains("v9"));
        assert!(err(&mut m, req(&["vm"], "vm")).contains("both selected"));
        assert!(err(&mut m, req(&[], "vm")).contains("at least one"));
        let a = m.add_mirror(&req(&["v1", "v2", "v1"], "vm")).unwrap();
        assert_eq!((a.name.as_str(), a.select.len()), ("span-vm", 2));
        assert!(err(&mut m, req(&["v3"], "vm")).contains("already exists"));
        assert!(err(&mut m, req(&["vm"], "v3")).contains("other way round"));
        // A mirror loses a deleted port; without selected ports or output it goes.
        m.remove_port("br1", "v1").unwrap();
        assert_eq!(m.bridges[0].mirrors[0].select, vec!["v2".to_string()]);
        m.remove_port("br1", "v2").unwrap();
        assert!(m.bridges[0].mirrors.is_empty());
        m.add_mirror(&req(&["v3"], "vm")).unwrap();
        m.remove_port("br1", "vm").unwrap();
        assert!(m.bridges[0].mirrors.is_empty());
        assert!(!m.del_mirror("br1", "span-vm").unwrap());
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
            "bad --lock-ip \"10.0.0.x\": expected an IPv4 or IPv6 address"
        );
        assert_eq!(
            lock_err(locked(
                Some("02:00:00:00:00:01"),
                &["10.0.0.5,fe80::zz"],
                PortKind::System
            )),
            "bad --lock-ip \"fe80::zz\": expected an IPv4 or IPv6 address"
        );
        for bad in [
            "ff02::1",
            "::",
            "::1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(
                lock_err(locked(Some("02:00:00:00:00:01"), &[bad], PortKind::System)),
                format!("bad --lock-ip {bad}: not a unicast address")
            );
        }
        let mixed = m
            .check_add_port(&locked(
                Some("02:00:00:00:00:01"),
                &["10.0.0.5,fd00:1::5", "FD00:1::5", "fe80::1"],
                PortKind::System,
            ))
            .unwrap();
        assert_eq!(
            mixed.lock.map(|l| l.ips),
            Some(vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00:1::5".parse().unwrap(),
                "fe80::1".parse().unwrap(),
            ]),
            "both families, in order, deduplicated"
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
