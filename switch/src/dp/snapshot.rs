//! The Snapshot: the immutable runtime view of the configuration that workers (and the
//! service thread) read. It sits with its readers, below `config/`: the control plane
//! builds it from the Model (`control::snapshot::build`), nothing here knows the Model.
//!
//! # Thread safety
//! Built by the control thread, published with `ArcSwap::store`, read by workers with
//! `ArcSwap::load` once per batch. Never mutated after publication; the FDB and counters
//! it points to are the only shared mutable state, and they are lock-free.

use crate::dp::{DropReason, PortCounters};
use crate::port::Port;
use crate::tables::{Conntrack, Conntrack6, Fdb, PortId, Route6Table, RouteTable};
use crate::wire::MacAddr;
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Ingress/egress VLAN behaviour of a port.
#[derive(Clone)]
pub enum VlanMode {
    /// Untagged frames belong to this VLAN; tagged frames are dropped.
    Access(u16),
    /// Tagged frames keep their VLAN (if allowed); untagged frames are VLAN 0.
    /// `None`: every VLAN is allowed.
    Trunk(Option<Arc<VlanSet>>),
}

/// A set of VLAN ids, one bit each.
#[derive(Clone)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    pub fn from_ids(ids: &[u16]) -> VlanSet {
        let mut s = [0u64; 64];
        for &v in ids {
            let v = usize::from(v & 0x0fff);
            s[v / 64] |= 1 << (v % 64);
        }
        VlanSet(s)
    }

    #[inline]
    pub fn contains(&self, v: u16) -> bool {
        let v = usize::from(v & 0x0fff);
        self.0[v / 64] & (1 << (v % 64)) != 0
    }
}

impl VlanMode {
    pub fn from_conf(tag: Option<u16>, trunks: &[u16]) -> VlanMode {
        match tag {
            Some(t) => VlanMode::Access(t),
            None if trunks.is_empty() => VlanMode::Trunk(None),
            None => VlanMode::Trunk(Some(Arc::new(VlanSet::from_ids(trunks)))),
        }
    }

    /// Whether the port carries VLAN `v` (0: untagged).
    #[inline]
    pub fn carries(&self, v: u16) -> bool {
        match self {
            VlanMode::Access(t) => *t == v,
            VlanMode::Trunk(None) => true,
            VlanMode::Trunk(Some(set)) => v == 0 || set.contains(v),
        }
    }

    /// The tag to put on a frame of VLAN `v` leaving this port (`None`: untagged).
    #[inline]
    pub fn egress_tag(&self, v: u16) -> Option<u16> {
        match self {
            VlanMode::Access(_) => None,
            VlanMode::Trunk(_) if v == 0 => None,
            VlanMode::Trunk(_) => Some(v),
        }
    }
}

/// One attached port.
pub struct PortEntry {
    pub id: PortId,
    pub name: String,
    /// Index of the bridge in [`Snapshot::bridges`].
    pub bridge: usize,
    pub vlan: VlanMode,
    pub dev: Arc<dyn Port>,
    pub counters: Arc<PortCounters>,
    /// Split-horizon group (0: none): frames never go from a port to another port of
    /// the same group (the remote VTEPs of one vxlan port).
    pub group: u32,
    /// Port security, if the port is locked.
    pub lock: Option<Arc<PortLock>>,
    /// Link impairment of what leaves the port (`set-port`), if any.
    pub impair: Option<crate::dp::impair::PortImpair>,
    /// Mirrors: slots of the output ports that get a copy of what this port receives
    /// and sends (`add-mirror`).
    pub mirror_to: Vec<u16>,
    /// A mirror's output port: it receives nothing into the bridge and is never a
    /// destination of forwarding.
    pub mirror_out: bool,
}

/// Port security: what a locked port may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLock {
    pub mac: MacAddr,
    /// Allowed IPv4 sources.
    pub ips: Vec<Ipv4Addr>,
    /// Allowed IPv6 sources (besides `ll`).
    pub ips6: Vec<Ipv6Addr>,
    /// The EUI-64 link-local address of `mac`: allowed whenever `ips6` is not empty.
    pub ll: Ipv6Addr,
}

/// Where a locked IPv6 packet's ICMPv6 message is, after the extension headers.
enum Upper<'a> {
    /// The ICMPv6 message (at least its type byte).
    Icmp(&'a [u8]),
    /// Another protocol, or a fragment after the first (its header is not there).
    Other,
}

/// Extension headers walked to find an ICMPv6 message (MLD comes after a hop-by-hop
/// header with the router alert option).
const MAX_EXT_HEADERS: usize = 8;

impl PortLock {
    /// The lock of a port whose frames must come from `mac` and, when `ips` is not
    /// empty, from those addresses (both families).
    pub fn new(mac: MacAddr, ips: &[std::net::IpAddr]) -> PortLock {
        use std::net::IpAddr;
        PortLock {
            mac,
            ips: ips
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            ips6: ips
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V6(a) => Some(*a),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            ll: crate::wire::ipv6::link_local(mac),
        }
    }

    /// Whether the lock names addresses (else only the MAC is locked).
    pub fn locks_addresses(&self) -> bool {
        !self.ips.is_empty() || !self.ips6.is_empty()
    }

    /// Whether `a` may be an IPv6 source (or a Neighbor Advertisement's target).
    fn allowed6(&self, a: &Ipv6Addr) -> bool {
        *a == self.ll || self.ips6.contains(a)
    }

    /// Whether frame `f` (Ethernet header parsed as `eth`) may enter from this port.
    ///
    /// The source MAC must be the locked one, and ARP must name it as its sender.
    /// With addresses locked, each family passes only from its own addresses:
    /// - IPv4 from a locked IPv4 address or 0.0.0.0 (a DHCP client), ARP with one of
    ///   them as the sender address (an IPv6-only lock leaves just 0.0.0.0);
    /// - IPv6 only when IPv6 addresses are locked: from one of them or the MAC's
    ///   EUI-64 link-local address, or from `::` for duplicate address detection
    ///   (a Neighbor Solicitation for an allowed address) and MLD reports. A Neighbor
    ///   Advertisement must advertise an allowed target, and Neighbor Discovery must
    ///   name the locked MAC in its link-layer address option; Router Advertisements
    ///   and Redirects are dropped (`rogue_router`);
    /// - nothing else (other EtherTypes).
    pub fn check(&self, eth: &crate::wire::EthFrame, f: &[u8]) -> Result<(), DropReason> {
        if eth.src != self.mac {
            return Err(DropReason::SpoofedMac);
        }
        // `payload_ofs` is where the EtherType field is; the L3 header follows it.
        let l3 = f.get(eth.payload_ofs + 2..).unwrap_or_default();
        let allowed = |b: &[u8]| {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            ip.is_unspecified() || self.ips.contains(&ip)
        };
        match eth.ethertype {
            crate::wire::ipv4::ETHERTYPE_ARP => {
                // htype(2) ptype(2) hlen plen op(2) sha(6) spa(4)
                let Some(arp) = l3.get(..18) else {
                    return Err(DropReason::Malformed);
                };
                if arp[8..14] != self.mac.0 {
                    return Err(DropReason::SpoofedMac);
                }
                if self.locks_addresses() && !allowed(&arp[14..18]) {
                    return Err(DropReason::SpoofedIp);
                }
                Ok(())
            }
            _ if !self.locks_addresses() => Ok(()),
            crate::wire::ipv4::ETHERTYPE_IPV4 => match l3.get(12..16) {
                Some(src) if allowed(src) => Ok(()),
                Some(_) => Err(DropReason::SpoofedIp),
                None => Err(DropReason::Malformed),
            },
            // Locked to IPv4 addresses only: no IPv6 at all.
            crate::wire::ipv6::ETHERTYPE_IPV6 if self.ips6.is_empty() => Err(DropReason::SpoofedIp),
            crate::wire::ipv6::ETHERTYPE_IPV6 => self.check6(l3),
            _ => Err(DropReason::SpoofedIp),
        }
    }

    /// [`PortLock::check`] of an IPv6 packet `ip` (with `ips6` not empty).
    fn check6(&self, ip: &[u8]) -> Result<(), DropReason> {
        use crate::wire::ipv6::{icmp, opt, HLEN};
        let Some(h) = ip.get(..HLEN).filter(|h| h[0] >> 4 == 6) else {
            return Err(DropReason::Malformed);
        };
        let src = ipv6_at(&h[8..24]);
        let unspecified = src.is_unspecified();
        if !unspecified && !self.allowed6(&src) {
            return Err(DropReason::SpoofedIp);
        }
        // Ethernet padding is not part of the packet (and not of its ICMPv6 message).
        let len = HLEN + usize::from(u16::from_be_bytes([h[4], h[5]]));
        let ip = ip.get(..len).unwrap_or(ip);
        let msg = match upper_icmp6(ip, h[6])? {
            Upper::Icmp(m) => m,
            Upper::Other if unspecified => return Err(DropReason::SpoofedIp),
            Upper::Other => return Ok(()),
        };
        const MLD_REPORT: u8 = 131;
        const MLD2_REPORT: u8 = 143;
        const REDIRECT: u8 = 137;
        let lla = match msg[0] {
            icmp::ROUTER_ADVERT | REDIRECT => return Err(DropReason::RogueRouter),
            icmp::NEIGHBOR_SOLICIT | icmp::NEIGHBOR_ADVERT => {
                let Some(target) = msg.get(8..24).map(ipv6_at) else {
                    return Err(DropReason::Malformed);
                };
                // A solicitation from `::` is duplicate address detection: for an
                // address the port may take only (it would fail another host's DAD);
                // an advertisement claims its target.
                let claims = msg[0] == icmp::NEIGHBOR_ADVERT || unspecified;
                if claims && !self.allowed6(&target) {
                    return Err(DropReason::SpoofedIp);
                }
                if unspecified && msg[0] == icmp::NEIGHBOR_ADVERT {
                    return Err(DropReason::SpoofedIp);
                }
                if msg[0] == icmp::NEIGHBOR_SOLICIT {
                    opt::SOURCE_LLA
                } else {
                    opt::TARGET_LLA
                }
            }
            MLD_REPORT | MLD2_REPORT => return Ok(()),
            _ if unspecified => return Err(DropReason::SpoofedIp),
            _ => return Ok(()),
        };
        // The link-layer address option must be the locked MAC (as ARP's sender).
        let mut opts = msg.get(24..).unwrap_or_default();
        while let &[ty, n, ..] = opts {
            let olen = usize::from(n) * 8;
            let Some(o) = opts.get(..olen).filter(|_| olen != 0) else {
                return Err(DropReason::Malformed);
            };
            if ty == lla && o.get(2..8).is_some_and(|m| m != self.mac.0) {
                return Err(DropReason::SpoofedMac);
            }
            opts = &opts[olen..];
        }
        Ok(())
    }
}

fn ipv6_at(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// The ICMPv6 message of IPv6 packet `ip` whose first next header is `next`, past
/// hop-by-hop, routing and destination options headers and a first fragment's header.
fn upper_icmp6(ip: &[u8], mut next: u8) -> Result<Upper<'_>, DropReason> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DEST_OPTS: u8 = 60;
    let mut off = crate::wire::ipv6::HLEN;
    for _ in 0..MAX_EXT_HEADERS {
        let Some(&[n, hlen]) = ip.get(off..off + 2) else {
            return match next {
                crate::wire::ipv6::NEXT_ICMPV6 | HOP_BY_HOP | ROUTING | FRAGMENT | DEST_OPTS => {
                    Err(DropReason::Malformed)
                }
                _ => Ok(Upper::Other),
            };
        };
        match next {
            crate::wire::ipv6::NEXT_ICMPV6 => return Ok(Upper::Icmp(&ip[off..])),
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                next = n;
                off += (usize::from(hlen) + 1) * 8;
            }
            FRAGMENT => {
                // Offset (13 bits) and flags: a later fragment has no upper header.
                let Some(&[a, b]) = ip.get(off + 2..off + 4) else {
                    return Err(DropReason::Malformed);
                };
                if u16::from_be_bytes([a, b]) >> 3 != 0 {
                    return Ok(Upper::Other);
                }
                next = n;
                off += 8;
            }
            _ => return Ok(Upper::Other),
        }
    }
    Err(DropReason::Malformed)
}

/// The router's interface on a bridge with a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterIf {
    /// The gateway address.
    pub ip: Ipv4Addr,
    pub net: Ipv4Net,
    pub mac: MacAddr,
}

/// The router's IPv6 interface on a bridge with an IPv6 gateway (same MAC as the IPv4
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Router6If {
    /// The gateway address.
    pub ip: Ipv6Addr,
    /// The router's link-local address on the bridge (EUI-64 of `mac`): the source of
    /// its Router Advertisements, the next hop hosts configure from them.
    pub ll: Ipv6Addr,
    pub net: Ipv6Net,
    pub mac: MacAddr,
}

/// A DNS name's address and expiry (Unix seconds; 0: never).
pub type NameMap = HashMap<String, (Ipv4Addr, u64)>;

/// A bridge's IPv6 names (AAAA records): name → address.
pub type Names6 = HashMap<String, Ipv6Addr>;

/// Where a bridge's DNS forwards the names it does not own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Upstream {
    /// Nowhere: NXDOMAIN.
    #[default]
    Off,
    /// The resolvers of vswitchd's own /etc/resolv.conf, read when used.
    System,
    /// These.
    Servers(Arc<[SocketAddr]>),
}

/// One bridge.
pub struct BridgeRt {
    pub name: String,
    pub fdb: Arc<Fdb>,
    /// Slots (into [`Snapshot::ports`]) of its attached ports.
    pub ports: Vec<u16>,
    pub router: Option<RouterIf>,
    pub router6: Option<Router6If>,
    pub isolated: bool,
    pub mtu: u32,
    /// First and last address of the DHCP pool, when the bridge serves DHCP.
    pub dhcp: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The bridge serves DHCPv6 (needs `router6`).
    pub dhcp6: bool,
    /// DNS names on this bridge (add-host, pipework, reservations), lower-case. Names
    /// from DHCP leases live in the lease store (`tables::leases`), which the DNS
    /// service reads beside these.
    pub names: Arc<NameMap>,
    /// IPv6 addresses of names (add-host with an IPv6 address), lower-case.
    pub names6: Arc<Names6>,
    /// Where other names are forwarded.
    pub dns: Upstream,
    /// Overlay bridges: the remote endpoints the cluster agent installed.
    pub overlay: Option<Arc<OverlayRt>>,
}

/// What an overlay bridge knows of the rest of the cluster (`control::cluster`): remote
/// endpoints as static Fdb entries (never learned over, never aged) and as ARP answers
/// given locally (ARP suppression), so no ARP crosses the underlay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OverlayRt {
    /// Remote MAC → the tunnel port of its node (untagged traffic only).
    pub statics: HashMap<MacAddr, PortId>,
    /// Remote IPv4 address → its MAC.
    pub arp: HashMap<Ipv4Addr, MacAddr>,
    /// Remote IPv6 address → its MAC (Neighbor Solicitations answered locally).
    pub nd: HashMap<Ipv6Addr, MacAddr>,
    /// The bridge's gateway (answered by every host's own router).
    pub gateway: Option<Ipv4Addr>,
    /// The bridge's IPv6 gateway (likewise).
    pub gateway6: Option<Ipv6Addr>,
    /// DHCP is served on this host (its own address blocks).
    pub dhcp: bool,
    /// DHCPv6 is served on this host (its own IPv6 address blocks).
    pub dhcp6: bool,
}

/// The UDP port DHCPv6 clients send to (RFC 8415).
const DHCP6_SERVER_PORT: u16 = 547;

impl OverlayRt {
    /// Whether broadcast frame `f` stays on this host instead of being flooded to the
    /// other nodes: an ARP request for a remote endpoint or the gateway (answered
    /// here), or a DHCP client's request (served by this host's DHCP server); for
    /// IPv6, a multicast Neighbor Solicitation for a remote endpoint or the gateway, or
    /// a DHCPv6 client's message (UDP to port 547, served by this host's DHCPv6 server
    /// from its own blocks: another host's server must not answer it).
    pub fn keeps_local(&self, eth: &crate::wire::EthFrame, f: &[u8]) -> bool {
        use crate::wire::ipv4::{ETHERTYPE_ARP, ETHERTYPE_IPV4, PROTO_UDP};
        use crate::wire::ipv6;
        let l3 = f.get(eth.payload_ofs + 2..).unwrap_or_default();
        if eth.ethertype == ipv6::ETHERTYPE_IPV6 {
            // ICMPv6 right after the fixed header (NDP has no extension headers): an
            // NS (type 135) whose target (bytes 8..24 of the message) we answer.
            let h = ipv6::HLEN;
            if self.dhcp6
                && eth.dst.is_multicast()
                && l3.len() >= h + 8
                && l3[6] == ipv6::NEXT_UDP
                && l3[h + 2..h + 4] == DHCP6_SERVER_PORT.to_be_bytes()
            {
                return true;
            }
            if !eth.dst.is_multicast()
                || l3.len() < h + 24
                || l3[6] != ipv6::NEXT_ICMPV6
                || l3[h] != ipv6::icmp::NEIGHBOR_SOLICIT
            {
                return false;
            }
            let mut t = [0u8; 16];
            t.copy_from_slice(&l3[h + 8..h + 24]);
            let target = Ipv6Addr::from(t);
            return self.nd.contains_key(&target) || Some(target) == self.gateway6;
        }
        if eth.dst != MacAddr::BROADCAST {
            return false;
        }
        match eth.ethertype {
            ETHERTYPE_ARP => match crate::wire::arp::Arp::parse(l3) {
                Some(a) if a.op == crate::wire::arp::OP_REQUEST => {
                    self.arp.contains_key(&a.tpa) || Some(a.tpa) == self.gateway
                }
                _ => false,
            },
            // UDP to port 67 (20-byte header: DHCP clients send no IP options).
            ETHERTYPE_IPV4 if self.dhcp => {
                l3.len() >= 24
                    && l3[0] == 0x45
                    && l3[crate::wire::ipv4::field::PROTOCOL] == PROTO_UDP
                    && l3[22..24] == [0, 67]
            }
            _ => false,
        }
    }
}

impl BridgeRt {
    /// The router's MAC on this bridge, if it has a gateway of either family.
    #[inline]
    pub fn router_mac(&self) -> Option<MacAddr> {
        self.router.map(|r| r.mac).or(self.router6.map(|r| r.mac))
    }

    /// A bridge with no router or services (tests, benches).
    pub fn plain(name: &str, fdb: Arc<Fdb>, ports: Vec<u16>) -> BridgeRt {
        BridgeRt {
            name: name.to_string(),
            fdb,
            ports,
            router: None,
            router6: None,
            isolated: false,
            mtu: 1500,
            dhcp: None,
            dhcp6: false,
            names: Arc::default(),
            names6: Arc::default(),
            dns: Upstream::Off,
            overlay: None,
        }
    }
}

/// The stable, locally administered MAC of the router's interface on `bridge`, so hosts'
/// ARP caches stay valid across restarts.
pub fn router_mac(bridge: &str) -> MacAddr {
    // FNV-1a: stable across builds and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in bridge.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let x = h.to_be_bytes();
    MacAddr([0x02, 0x76, x[0], x[1], x[2], x[3]])
}

/// A published port as the data path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRt {
    /// Listening address; `None`: every outside address.
    pub ip: Option<Ipv4Addr>,
    pub target_ip: Ipv4Addr,
    pub target_port: u16,
}

/// NAT rules.
#[derive(Debug, Default, Clone)]
pub struct NatRt {
    /// By bridge index: the outside bridge it is masqueraded behind.
    pub masq: Vec<Option<usize>>,
    /// By (protocol, port).
    pub publish: HashMap<(u8, u16), Vec<PublishRt>>,
    /// Gateway addresses of bridges used with `masquerade --out`.
    pub outside_ips: Vec<Ipv4Addr>,
}

impl NatRt {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.masq.iter().all(Option::is_none)
    }
}

/// An IPv6 published port as the data path sees it (always on one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish6Rt {
    pub ip: Ipv6Addr,
    pub target_ip: Ipv6Addr,
    pub target_port: u16,
}

/// IPv6 NAT rules (`masquerade6`, `publish` on an IPv6 address); empty by default:
/// IPv6 is routed without NAT.
#[derive(Debug, Default, Clone)]
pub struct Nat6Rt {
    /// By bridge index: the outside bridge it is masqueraded (IPv6) behind.
    pub masq: Vec<Option<usize>>,
    /// By (protocol, port).
    pub publish: HashMap<(u8, u16), Vec<Publish6Rt>>,
}

impl Nat6Rt {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.masq.iter().all(Option::is_none)
    }
}

/// The whole datapath configuration at one instant.
pub struct Snapshot {
    pub generation: u64,
    /// Attached ports by slot (the low 16 bits of their [`PortId`]).
    pub ports: Vec<Option<PortEntry>>,
    pub bridges: Vec<BridgeRt>,
    /// Connected subnets of bridges with a gateway, and static routes.
    pub routes: RouteTable,
    /// Gateway address → bridge index.
    pub router_ips: HashMap<Ipv4Addr, usize>,
    /// Connected IPv6 subnets and static IPv6 routes.
    pub routes6: Route6Table,
    /// IPv6 gateway and link-local addresses → bridge index.
    pub router_ips6: HashMap<Ipv6Addr, usize>,
    pub nat: NatRt,
    /// Shared by every snapshot (its entries outlive configuration changes).
    pub conntrack: Arc<Conntrack>,
    pub nat6: Nat6Rt,
    /// IPv6 connections, shared by every snapshot like `conntrack`.
    pub conntrack6: Arc<Conntrack6>,
    /// Running captures (`vswitchctl capture`), shared by every snapshot.
    pub taps: Arc<crate::dp::capture::Taps>,
    /// Slots of the ports with an impairment (the workers service their queues).
    pub impaired: Vec<u16>,
    /// The kernel fast path, when it runs (`vswitchd --fastpath`).
    pub fastpath: Option<Arc<crate::fastpath::FastPath>>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            generation: 0,
            ports: Vec::new(),
            bridges: Vec::new(),
            routes: RouteTable::default(),
            router_ips: HashMap::new(),
            routes6: Route6Table::default(),
            router_ips6: HashMap::new(),
            nat: NatRt::default(),
            conntrack: Arc::new(Conntrack::new(64)),
            nat6: Nat6Rt::default(),
            conntrack6: Arc::new(Conntrack6::new(64)),
            taps: Arc::default(),
            impaired: Vec::new(),
            fastpath: None,
        }
    }
}

/// Slot of a port id.
#[inline]
pub fn slot_of(id: PortId) -> usize {
    (id & 0xffff) as usize
}

impl Snapshot {
    /// Index of the bridge whose gateway is `ip`.
    #[inline]
    pub fn router_ip(&self, ip: Ipv4Addr) -> Option<usize> {
        if self.router_ips.is_empty() {
            return None;
        }
        self.router_ips.get(&ip).copied()
    }

    /// Index of the bridge whose IPv6 gateway (or router link-local address) is `ip`.
    #[inline]
    pub fn router_ip6(&self, ip: &Ipv6Addr) -> Option<usize> {
        if self.router_ips6.is_empty() {
            return None;
        }
        self.router_ips6.get(ip).copied()
    }

    /// The port with exactly this id (slot and generation), if attached.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortEntry> {
        match self.ports.get(slot_of(id)) {
            Some(Some(p)) if p.id == id => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_modes() {
        let a = VlanMode::from_conf(Some(10), &[]);
        assert!(a.carries(10) && !a.carries(0) && !a.carries(20));
        assert_eq!(a.egress_tag(10), None);
        let t = VlanMode::from_conf(None, &[10, 20]);
        assert!(t.carries(0) && t.carries(10) && t.carries(20) && !t.carries(30));
        assert_eq!(t.egress_tag(10), Some(10));
        assert_eq!(t.egress_tag(0), None);
        let all = VlanMode::from_conf(None, &[]);
        assert!(all.carries(4094) && all.carries(0));
    }

    /// An Ethernet frame from `src` (optionally 802.1Q-tagged) carrying `ethertype`
    /// and `l3`.
    fn frame(src: [u8; 6], tag: bool, ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        if tag {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn ipv4_from(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&[10, 0, 0, 1]);
        h
    }

    fn arp_from(sha: [u8; 6], spa: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&sha);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&[0; 10]);
        a
    }

    #[test]
    fn port_lock_checks_mac_ip_and_arp() {
        let me = [2, 0, 0, 0, 0, 1];
        let other = [2, 0, 0, 0, 0, 2];
        let lock = PortLock::new(MacAddr(me), &[Ipv4Addr::new(10, 0, 0, 5).into()]);
        let check = |f: Vec<u8>| {
            let eth = crate::wire::EthFrame::parse(&f).expect("frame parses");
            lock.check(&eth, &f)
        };
        for tag in [false, true] {
            assert_eq!(
                check(frame(me, tag, 0x0800, &ipv4_from([10, 0, 0, 5]))),
                Ok(())
            );
            assert_eq!(
                check(frame(me, tag, 0x0800, &ipv4_from([0, 0, 0, 0]))),
                Ok(())
            );
            assert_eq!(
                check(frame(me, tag, 0x0800, &ipv4_from([10, 0, 0, 6]))),
                Err(DropReason::SpoofedIp)
            );
            assert_eq!(
                check(frame(other, tag, 0x0800, &ipv4_from([10, 0, 0, 5]))),
                Err(DropReason::SpoofedMac)
            );
            assert_eq!(
                check(frame(me, tag, 0x0806, &arp_from(me, [10, 0, 0, 5]))),
                Ok(())
            );
            assert_eq!(
                check(frame(me, tag, 0x0806, &arp_from(other, [10, 0, 0, 5]))),
                Err(DropReason::SpoofedMac)
            );
            assert_eq!(
                check(frame(me, tag, 0x0806, &arp_from(me, [10, 0, 0, 9]))),
                Err(DropReason::SpoofedIp)
            );
            assert_eq!(
                check(frame(me, tag, 0x86dd, &[0; 40])),
                Err(DropReason::SpoofedIp)
            );
            assert_eq!(
                check(frame(me, tag, 0x0800, &[0x45, 0])),
                Err(DropReason::Malformed)
            );
        }
        // Only the MAC locked: any address, any protocol from that MAC.
        let mac_only = PortLock::new(MacAddr(me), &[]);
        let f = frame(me, false, 0x86dd, &[0; 40]);
        let eth = crate::wire::EthFrame::parse(&f).expect("frame parses");
        assert_eq!(mac_only.check(&eth, &f), Ok(()));
    }

    #[test]
    fn port_lock_ipv6_sources_nd_and_routers() {
        use crate::wire::ipv6::{self, icmp};
        use std::net::IpAddr;
        let me = [2, 0, 0, 0, 0, 5];
        let other = [2, 0, 0, 0, 0, 6];
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        let mine: Ipv6Addr = "fd00:1::5".parse().unwrap();
        let theirs: Ipv6Addr = "fd00:1::6".parse().unwrap();
        let gw: Ipv6Addr = "fd00:1::1".parse().unwrap();
        let ll = ipv6::link_local(MacAddr(me));
        assert_eq!(ll, "fe80::ff:fe00:5".parse::<Ipv6Addr>().unwrap());
        let dual = PortLock::new(MacAddr(me), &[v4, mine.into()]);
        let only4 = PortLock::new(MacAddr(me), &[v4]);
        let only6 = PortLock::new(MacAddr(me), &[mine.into()]);
        let check = |lock: &PortLock, f: Vec<u8>| {
            let eth = crate::wire::EthFrame::parse(&f).expect("frame parses");
            lock.check(&eth, &f)
        };
        let udp = |src: Ipv6Addr| ipv6::packet(src, gw, ipv6::NEXT_UDP, 64, &[0; 12]);
        let icmp6 =
            |src: Ipv6Addr, dst: Ipv6Addr, msg: Vec<u8>| ipv6::icmp_packet(src, dst, 255, msg);
        let echo = |src| icmp6(src, gw, vec![icmp::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1]);
        for tag in [false, true] {
            let f6 = |l3: &[u8]| frame(me, tag, 0x86dd, l3);
            // Sources: the locked address, the MAC's link-local address; nothing else.
            assert_eq!(check(&dual, f6(&udp(mine))), Ok(()));
            assert_eq!(check(&dual, f6(&echo(ll))), Ok(()));
            assert_eq!(check(&dual, f6(&udp(theirs))), Err(DropReason::SpoofedIp));
            assert_eq!(
                check(&dual, f6(&udp("fe80::1".parse().unwrap()))),
                Err(DropReason::SpoofedIp)
            );
            assert_eq!(
                check(&dual, frame(other, tag, 0x86dd, &udp(mine))),
                Err(DropReason::SpoofedMac)
            );
            assert_eq!(
                check(&dual, f6(&udp(mine)[..30])),
                Err(DropReason::Malformed)
            );
            // `::`: duplicate address detection of an allowed address, MLD reports.
            let unspec = Ipv6Addr::UNSPECIFIED;
            let dad = |t| {
                icmp6(
                    unspec,
                    ipv6::solicited_node(&t),
                    ipv6::neighbor_solicit(t, MacAddr(me))[..24].to_vec(),
                )
            };
            assert_eq!(check(&dual, f6(&dad(mine))), Ok(()));
            assert_eq!(check(&dual, f6(&dad(ll))), Ok(()));
            assert_eq!(check(&dual, f6(&dad(theirs))), Err(DropReason::SpoofedIp));
            let mld2: Ipv6Addr = "ff02::16".parse().unwrap();
            let mut hbh = vec![icmp::ECHO_REPLY, 0, 5, 2, 0, 0, 1, 0]; // next, len, router alert, padn
            hbh[0] = ipv6::NEXT_ICMPV6;
            let mut report = vec![143, 0, 0, 0, 0, 0, 0, 0];
            let c = ipv6::checksum(&unspec, &mld2, ipv6::NEXT_ICMPV6, &report);
            report[2..4].copy_from_slice(&c.to_be_bytes());
            let mut pl = hbh.clone();
            pl.extend_from_slice(&report);
            let mld = ipv6::packet(unspec, mld2, 0, 1, &pl);
            assert_eq!(check(&dual, f6(&mld)), Ok(()));
            assert_eq!(check(&dual, f6(&udp(unspec))), Err(DropReason::SpoofedIp));
            assert_eq!(check(&dual, f6(&echo(unspec))), Err(DropReason::SpoofedIp));
            // Neighbor Advertisements claim their target; the LLA must be ours.
            let na = |src, t, mac| {
                icmp6(
                    src,
                    gw,
                    ipv6::neighbor_advert(t, MacAddr(mac), ipv6::NA_OVERRIDE),
                )
            };
            assert_eq!(check(&dual, f6(&na(mine, mine, me))), Ok(()));
            assert_eq!(check(&dual, f6(&na(ll, mine, me))), Ok(()));
            assert_eq!(
                check(&dual, f6(&na(mine, theirs, me))),
                Err(DropReason::SpoofedIp)
            );
            assert_eq!(
                check(&dual, f6(&na(mine, gw, me))),
                Err(DropReason::SpoofedIp)
            );
            assert_eq!(
                check(&dual, f6(&na(mine, mine, other))),
                Err(DropReason::SpoofedMac)
            );
            assert_eq!(
                check(&dual, f6(&na(unspec, mine, me))),
                Err(DropReason::SpoofedIp)
            );
            let ns = |t, mac| {
                icmp6(
                    mine,
                    ipv6::solicited_node(&t),
                    ipv6::neighbor_solicit(t, MacAddr(mac)),
                )
            };
            assert_eq!(
                check(&dual, f6(&ns(gw, me))),
                Ok(()),
                "resolving the gateway"
            );
            assert_eq!(
                check(&dual, f6(&ns(gw, other))),
                Err(DropReason::SpoofedMac)
            );
            let mut bad_opt = ns(gw, me);
            let n = bad_opt.len();
            bad_opt[n - 7] = 0; // option length 0
            assert_eq!(check(&dual, f6(&bad_opt)), Err(DropReason::Malformed));
            // Routers: never from a locked port.
            let ra = icmp6(
                ll,
                ipv6::ALL_NODES,
                vec![
                    icmp::ROUTER_ADVERT,
                    0,
                    0,
                    0,
                    64,
                    0,
                    7,
                    8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
            );
            assert_eq!(check(&dual, f6(&ra)), Err(DropReason::RogueRouter));
            let mut redirect = vec![137, 0, 0, 0, 0, 0, 0, 0];
            redirect.extend_from_slice(&mine.octets());
            redirect.extend_from_slice(&gw.octets());
            assert_eq!(
                check(&dual, f6(&icmp6(ll, theirs, redirect))),
                Err(DropReason::RogueRouter)
            );
            let rs = icmp6(
                ll,
                "ff02::2".parse().unwrap(),
                vec![icmp::ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0],
            );
            assert_eq!(check(&dual, f6(&rs)), Ok(()));
            // A later fragment shows no ICMPv6 header: its source still counts.
            let frag = |src| {
                ipv6::packet(
                    src,
                    gw,
                    44,
                    64,
                    &[ipv6::NEXT_ICMPV6, 0, 0x05, 0xa8, 0, 0, 0, 1, 0, 0],
                )
            };
            assert_eq!(check(&dual, f6(&frag(mine))), Ok(()));
            assert_eq!(check(&dual, f6(&frag(theirs))), Err(DropReason::SpoofedIp));
            // IPv4 beside IPv6: the dual lock passes its IPv4 address.
            assert_eq!(
                check(&dual, frame(me, tag, 0x0800, &ipv4_from([10, 0, 0, 5]))),
                Ok(())
            );
            // Locked to IPv4 only: no IPv6 at all, not even link-local (as before).
            assert_eq!(check(&only4, f6(&udp(mine))), Err(DropReason::SpoofedIp));
            assert_eq!(check(&only4, f6(&echo(ll))), Err(DropReason::SpoofedIp));
            // Locked to IPv6 only: IPv4 and ARP from 0.0.0.0 (DHCP, probes) and no other.
            assert_eq!(check(&only6, f6(&udp(mine))), Ok(()));
            assert_eq!(
                check(&only6, frame(me, tag, 0x0800, &ipv4_from([0, 0, 0, 0]))),
                Ok(())
            );
            assert_eq!(
                check(&only6, frame(me, tag, 0x0800, &ipv4_from([10, 0, 0, 5]))),
                Err(DropReason::SpoofedIp)
            );
            assert_eq!(
                check(&only6, frame(me, tag, 0x0806, &arp_from(me, [0, 0, 0, 0]))),
                Ok(())
            );
            assert_eq!(
                check(&only6, frame(me, tag, 0x0806, &arp_from(me, [10, 0, 0, 5]))),
                Err(DropReason::SpoofedIp)
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
        /// Any bytes after an IPv6, IPv4 or ARP EtherType from the locked MAC: the
        /// check decides without panicking (extension header chains, options, cut
        /// headers), and a packet from an address the port may not use never passes.
        #[test]
        fn port_lock_never_panics(
            ethertype in proptest::sample::select(vec![0x86ddu16, 0x0800, 0x0806]),
            l3 in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            icmp in proptest::prelude::any::<bool>(),
        ) {
            let me = [2, 0, 0, 0, 0, 5];
            let lock = PortLock::new(
                MacAddr(me),
                &[Ipv4Addr::new(10, 0, 0, 5).into(), "fd00:1::5".parse::<Ipv6Addr>().unwrap().into()],
            );
            let mut l3 = l3;
            if icmp && l3.len() >= 40 {
                l3[0] = 0x60;
                l3[6] = 58;
            }
            let f = frame(me, false, ethertype, &l3);
            let eth = crate::wire::EthFrame::parse(&f).expect("frame parses");
            let r = lock.check(&eth, &f);
            if ethertype == 0x86dd && l3.len() >= 40 && l3[0] >> 4 == 6 {
                let src = ipv6_at(&l3[8..24]);
                if !src.is_unspecified() && src != lock.ll && !lock.ips6.contains(&src) {
                    proptest::prop_assert!(r.is_err());
                }
            }
        }
    }

    #[test]
    fn router_mac_is_stable_and_local() {
        let m = router_mac("br1");
        assert_eq!(m, router_mac("br1"));
        assert_ne!(m, router_mac("br2"));
        assert_eq!(m.0[0] & 0x03, 0x02, "locally administered unicast");
    }
}
