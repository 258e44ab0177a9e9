//! What the agent knows, and the pure functions from it to what vswitchd should do.
//!
//! [`View`]: the cluster as read from etcd (rebuilt from the raw key/values after each
//! batch of watch events). [`Local`]: this host's overlay bridges as read from
//! vswitchd. From the two: the `overlay-set` each local bridge should get
//! ([`overlay_set`]), the endpoints this node should publish ([`local_endpoints`]),
//! and the DHCP blocks it holds or should claim ([`my_range`], [`block_to_claim`]).

use crate::keys::{BlockVal, Entry, EpVal, IpVal, Keys, NetVal, NodeVal};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vswitch_proto::cluster::{OverlaySet, RemoteEndpoint};
use vswitch_proto::{HostEntry, LeaseEntry, PortInfo, PortKind};

/// Addresses per DHCP block (a /28).
pub const BLOCK: u32 = 16;
/// Claim the next block when this share of the current range is leased.
const REFILL_PERCENT: usize = 75;

/// The cluster as read from etcd.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub nodes: BTreeMap<String, NodeVal>,
    pub nets: BTreeMap<String, NetVal>,
    /// (network, node, MAC) → endpoint.
    pub eps: BTreeMap<(String, String, String), EpVal>,
    /// (network, first address) → block.
    pub blocks: BTreeMap<(String, Ipv4Addr), BlockVal>,
    /// (network, address) → static claim (IPv4 or IPv6).
    pub ips: BTreeMap<(String, IpAddr), IpVal>,
}

impl View {
    /// Build from raw key/values; bad values are skipped, each reported once through
    /// the log.
    pub fn build(
        keys: &Keys,
        raw: &BTreeMap<String, Vec<u8>>,
        warned: &mut HashSet<String>,
    ) -> View {
        let mut v = View::default();
        for (k, val) in raw {
            v.apply(keys, k, Some(val), warned);
        }
        v
    }

    /// Apply one change of key `key` (`None`: deleted), parsing only that value; a bad
    /// value is skipped and reported once (key, reason) through the log.
    pub fn apply(
        &mut self,
        keys: &Keys,
        key: &str,
        value: Option<&[u8]>,
        warned: &mut HashSet<String>,
    ) {
        self.remove(keys, key);
        let Some(value) = value else { return };
        match keys.parse(key, value) {
            Ok(Some(Entry::Node(n))) => {
                self.nodes.insert(n.name.clone(), n);
            }
            Ok(Some(Entry::Network(n))) => {
                self.nets.insert(n.name.clone(), n);
            }
            Ok(Some(Entry::Endpoint { net, val })) => {
                self.eps
                    .insert((net, val.node.clone(), val.mac.clone()), val);
            }
            Ok(Some(Entry::Block { net, val })) => {
                self.blocks.insert((net, val.first), val);
            }
            Ok(Some(Entry::Ip { net, ip, val })) => {
                self.ips.insert((net, ip), val);
            }
            Ok(Some(Entry::Index)) | Ok(None) => {}
            Err(reason) => {
                if warned.insert(format!("{key}\0{reason}")) {
                    tracing::warn!(key = %key, %reason, "skipping a value under the prefix");
                }
            }
        }
    }

    /// Forget whatever key `key` held.
    fn remove(&mut self, keys: &Keys, key: &str) {
        let Some(rest) = key.strip_prefix(&keys.all()) else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let ip = crate::keys::unhex;
        match parts[..] {
            ["nodes", name] => {
                self.nodes.remove(name);
            }
            ["networks", name] => {
                self.nets.remove(name);
            }
            ["endpoints", net, node, mac] => {
                self.eps
                    .remove(&(net.to_string(), node.to_string(), mac.to_string()));
            }
            ["blocks", net, first] => {
                if let Some(IpAddr::V4(f)) = ip(first) {
                    self.blocks.remove(&(net.to_string(), f));
                }
            }
            ["ips", net, addr] => {
                if let Some(a) = ip(addr) {
                    self.ips.remove(&(net.to_string(), a));
                }
            }
            _ => {}
        }
    }

    /// Endpoints of `net` by node.
    pub fn endpoints_of<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a EpVal> + 'a {
        self.eps
            .iter()
            .filter(move |((n, _, _), _)| n == net)
            .map(|(_, e)| e)
    }
}

/// One local overlay bridge as vswitchd reports it.
#[derive(Debug, Clone, Default)]
pub struct LocalBridge {
    pub name: String,
    /// An overlay bridge (else a local bridge that may clash with a network's name).
    pub overlay: bool,
    pub ports: Vec<PortInfo>,
    pub leases: Vec<LeaseEntry>,
    pub hosts: Vec<HostEntry>,
    /// MACs learned per port (ports pipework did not record a MAC for).
    pub learned: BTreeMap<String, Vec<String>>,
}

/// A local endpoint to publish.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalEp {
    pub port: String,
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub name: Option<String>,
}

/// The endpoints behind the local ports of an overlay bridge: a port's MAC (pipework
/// records it; else the MACs learned on it), its address (recorded static address,
/// else the DHCP lease or reservation of that MAC) and its name (recorded DNS name,
/// else the lease's host name, else a name registered for the address).
pub fn local_endpoints(b: &LocalBridge) -> Vec<LocalEp> {
    let mut out = Vec::new();
    for p in b.ports.iter().filter(|p| p.kind != PortKind::Vxlan) {
        let id = |k: &str| p.external_ids.get(k).cloned();
        let macs = match id("mac") {
            Some(m) => vec![m.to_ascii_lowercase()],
            None => b.learned.get(&p.name).cloned().unwrap_or_default(),
        };
        // The recorded static addresses: `ip` (either family: pipework records an IPv6
        // address there) and `ip6` (the IPv6 address of a dual-stack port).
        let recorded: Vec<IpAddr> = [id("ip"), id("ip6")]
            .into_iter()
            .flatten()
            .filter_map(|i| i.split('/').next().and_then(|a| a.parse().ok()))
            .collect();
        for mac in macs {
            let lease = b.leases.iter().find(|l| l.mac == mac && l.duid.is_none());
            let lease6 = b.leases.iter().find(|l| l.mac == mac && l.duid.is_some());
            let ip: Option<Ipv4Addr> = recorded
                .iter()
                .find_map(|a| match a {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .or_else(|| lease.and_then(|l| l.ip.parse().ok()));
            let ip6: Option<Ipv6Addr> = recorded
                .iter()
                .find_map(|a| match a {
                    IpAddr::V6(a) => Some(*a),
                    IpAddr::V4(_) => None,
                })
                .or_else(|| lease6.and_then(|l| l.ip.parse().ok()));
            let name = id("dns")
                .or_else(|| lease.and_then(|l| l.hostname.clone()))
                .or_else(|| lease6.and_then(|l| l.hostname.clone()))
                .or_else(|| {
                    let addrs = [ip.map(IpAddr::V4), ip6.map(IpAddr::V6)];
                    b.hosts
                        .iter()
                        .find(|h| addrs.contains(&h.ip.parse().ok()))
                        .map(|h| h.name.clone())
                });
            out.push(LocalEp {
                port: p.name.clone(),
                mac,
                ip,
                ip6,
                name,
            });
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.mac == b.mac);
    out
}

/// The aligned blocks of network `n` that DHCP may use: [`BLOCK`]-address pieces of
/// its subnet, cut to its DHCP range, without the network and broadcast addresses.
pub fn blocks_of(n: &NetVal) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let (Some(subnet), Some(range)) = (&n.subnet, &n.dhcp) else {
        return Vec::new();
    };
    let Ok(net) = subnet.parse::<Ipv4Net>() else {
        return Vec::new();
    };
    let Some((a, z)) = range.split_once('-') else {
        return Vec::new();
    };
    let (Ok(lo), Ok(hi)) = (a.trim().parse::<Ipv4Addr>(), z.trim().parse::<Ipv4Addr>()) else {
        return Vec::new();
    };
    let base = u32::from(net.network());
    let top = u32::from(net.broadcast());
    let (lo, hi) = (
        u32::from(lo).max(base.saturating_add(1)),
        u32::from(hi).min(top.saturating_sub(1)),
    );
    let mut v = Vec::new();
    let mut start = base;
    while start <= top {
        let end = start.saturating_add(BLOCK - 1).min(top);
        let (f, l) = (start.max(lo), end.min(hi));
        if f <= l {
            v.push((Ipv4Addr::from(f), Ipv4Addr::from(l)));
        }
        match start.checked_add(BLOCK) {
            Some(s) => start = s,
            None => break,
        }
    }
    v
}

/// This node's DHCP range on `net`: the contiguous run of its blocks starting at its
/// lowest one (vswitchd serves one range per bridge).
pub fn my_range(view: &View, net: &str, me: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let mine: Vec<&BlockVal> = view
        .blocks
        .iter()
        .filter(|((n, _), b)| n == net && b.node == me)
        .map(|(_, b)| b)
        .collect();
    let first = mine.first()?;
    let mut range = (first.first, first.last);
    for b in &mine[1..] {
        if u32::from(b.first) == u32::from(range.1).wrapping_add(1) {
            range.1 = b.last;
        } else {
            break;
        }
    }
    Some(range)
}

/// The block this node should claim on `net` now, if any: a first one as soon as it
/// has the network (pipework's `dhcp` needs the bridge's DHCP server there before the
/// container's port exists), the next adjacent one when `leased` addresses fill
/// [`REFILL_PERCENT`] of its range. Blocks holding a static claim are skipped.
///
/// A first block is taken where its node can grow: at the start of the range when
/// nothing is taken, else in the middle of the longest run of free blocks that
/// follows another node's block (leaving that node room to grow), like a buddy
/// allocator.
pub fn block_to_claim(
    view: &View,
    net: &NetVal,
    me: &str,
    leased: usize,
) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let all = blocks_of(net);
    let free = |b: &(Ipv4Addr, Ipv4Addr)| {
        !view.blocks.contains_key(&(net.name.clone(), b.0))
            && !view
                .ips
                .keys()
                .any(|(n, ip)| n == &net.name && *ip >= IpAddr::V4(b.0) && *ip <= IpAddr::V4(b.1))
    };
    match my_range(view, &net.name, me) {
        None => {
            // Runs of free blocks: (start index, length).
            let mut runs: Vec<(usize, usize)> = Vec::new();
            for (i, b) in all.iter().enumerate() {
                if !free(b) {
                    continue;
                }
                match runs.last_mut() {
                    Some((s, l)) if *s + *l == i => *l += 1,
                    _ => runs.push((i, 1)),
                }
            }
            let (start, len) = runs
                .iter()
                .copied()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
            let at = if start == 0 { 0 } else { start + len / 2 };
            all.get(at).copied()
        }
        Some((f, l)) => {
            let size = (u32::from(l) - u32::from(f) + 1) as usize;
            if leased * 100 < size * REFILL_PERCENT {
                return None;
            }
            all.iter()
                .find(|b| u32::from(b.0) == u32::from(l).wrapping_add(1))
                .filter(|b| free(b))
                .copied()
        }
    }
}

/// The block of `net` holding `ip`, and who holds it.
pub fn block_owner<'a>(view: &'a View, net: &str, ip: Ipv4Addr) -> Option<&'a BlockVal> {
    view.blocks
        .iter()
        .filter(|((n, _), b)| n == net && ip >= b.first && ip <= b.last)
        .map(|(_, b)| b)
        .next()
}

/// Nodes alive (registered) with at least one endpoint on `net`, other than `me`.
pub fn remote_members(view: &View, net: &str, me: &str) -> BTreeSet<String> {
    view.endpoints_of(net)
        .filter(|e| e.node != me && view.nodes.contains_key(&e.node))
        .map(|e| e.node.clone())
        .collect()
}

/// What vswitchd's bridge for network `n` should be on node `me`.
pub fn overlay_set(view: &View, n: &NetVal, me: &str, vtep: Ipv4Addr) -> OverlaySet {
    let members = remote_members(view, &n.name, me);
    let remotes = members
        .iter()
        .filter_map(|m| view.nodes.get(m))
        .map(|node| node.vtep.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let endpoints = view
        .endpoints_of(&n.name)
        .filter(|e| members.contains(&e.node))
        .map(|e| RemoteEndpoint {
            mac: e.mac.clone(),
            ip: e.ip.map(|i| i.to_string()),
            ip6: e.ip6.map(|i| i.to_string()),
            name: e.name.clone(),
            node: e.node.clone(),
            vtep: view
                .nodes
                .get(&e.node)
                .map_or(e.vtep, |n| n.vtep)
                .to_string(),
        })
        .collect();
    OverlaySet {
        name: n.name.clone(),
        vni: n.vni,
        udp_port: n.udp_port,
        subnet: n.subnet.clone(),
        gateway: n.gateway.clone(),
        subnet6: n.subnet6.clone(),
        gateway6: n.gateway6.clone(),
        dhcp: n
            .dhcp
            .as_ref()
            .and_then(|_| my_range(view, &n.name, me))
            .map(|(f, l)| format!("{f}-{l}")),
        isolated: n.isolated,
        mtu: n.mtu,
        local_ip: vtep.to_string(),
        remotes,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetVal {
        NetVal {
            v: 1,
            name: "ov".into(),
            vni: 7,
            udp_port: 4789,
            subnet: Some("10.1.0.0/24".into()),
            gateway: Some("10.1.0.1".into()),
            subnet6: None,
            gateway6: None,
            dhcp: Some("10.1.0.0-10.1.0.255".into()),
            isolated: false,
            mtu: 1450,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn node(name: &str, vtep: &str) -> NodeVal {
        NodeVal {
            v: 1,
            name: name.into(),
            vtep: ip(vtep),
            agent: "t".into(),
            identity: String::new(),
            lease: 1,
            ttl: 3,
        }
    }

    #[test]
    fn changes_apply_one_key_at_a_time() {
        let k = Keys::new("/vswitch");
        let mut v = View::default();
        let mut warned = HashSet::new();
        let n = node("h1", "192.0.2.1");
        v.apply(
            &k,
            &k.node("h1"),
            Some(&crate::keys::encode(&n)),
            &mut warned,
        );
        let b = BlockVal {
            v: 1,
            node: "h1".into(),
            first: ip("10.1.0.16"),
            last: ip("10.1.0.31"),
        };
        let bk = k.block("ov", b.first);
        v.apply(&k, &bk, Some(&crate::keys::encode(&b)), &mut warned);
        assert_eq!(v.nodes.get("h1"), Some(&n));
        assert_eq!(v.blocks.len(), 1);
        v.apply(&k, &bk, None, &mut warned);
        v.apply(&k, &k.node("h1"), None, &mut warned);
        assert!(v.nodes.is_empty() && v.blocks.is_empty());
        // A bad value replaces a good one: the key holds nothing usable any more.
        v.apply(
            &k,
            &k.node("h1"),
            Some(&crate::keys::encode(&n)),
            &mut warned,
        );
        v.apply(&k, &k.node("h1"), Some(b"junk"), &mut warned);
        assert!(v.nodes.is_empty());
        assert_eq!(warned.len(), 1);
    }

    #[test]
    fn blocks_cover_the_range_without_network_and_broadcast() {
        let b = blocks_of(&net());
        assert_eq!(b.len(), 16);
        assert_eq!(b[0], (ip("10.1.0.1"), ip("10.1.0.15")));
        assert_eq!(b[15], (ip("10.1.0.240"), ip("10.1.0.254")));
        let mut n = net();
        n.dhcp = Some("10.1.0.100-10.1.0.140".into());
        assert_eq!(
            blocks_of(&n),
            vec![
                (ip("10.1.0.100"), ip("10.1.0.111")),
                (ip("10.1.0.112"), ip("10.1.0.127")),
                (ip("10.1.0.128"), ip("10.1.0.140"))
            ]
        );
        n.dhcp = None;
        assert!(blocks_of(&n).is_empty());
    }

    #[test]
    fn claims_first_free_block_then_the_adjacent_one() {
        let mut v = View::default();
        let n = net();
        v.nets.insert("ov".into(), n.clone());
        let first = block_to_claim(&v, &n, "h1", 0).unwrap();
        assert_eq!(first.0, ip("10.1.0.1"));
        v.blocks.insert(
            ("ov".into(), first.0),
            BlockVal {
                v: 1,
                node: "h2".into(),
                first: first.0,
                last: first.1,
            },
        );
        // Taken by h2; a static claim in the third block skips it too.
        v.ips.insert(
            ("ov".into(), IpAddr::V4(ip("10.1.0.40"))),
            IpVal {
                v: 1,
                node: "h2".into(),
                mac: None,
                port: "p".into(),
            },
        );
        // The middle of the longest free run (blocks 3..15), leaving h2 room to grow.
        let mine = block_to_claim(&v, &n, "h1", 0).unwrap();
        assert_eq!(mine, (ip("10.1.0.144"), ip("10.1.0.159")));
        v.blocks.insert(
            ("ov".into(), mine.0),
            BlockVal {
                v: 1,
                node: "h1".into(),
                first: mine.0,
                last: mine.1,
            },
        );
        assert_eq!(my_range(&v, "ov", "h1"), Some(mine));
        assert_eq!(block_to_claim(&v, &n, "h1", 10), None, "room left");
        let next = block_to_claim(&v, &n, "h1", 12).unwrap();
        assert_eq!(next.0, ip("10.1.0.160"));
        v.blocks.insert(
            ("ov".into(), next.0),
            BlockVal {
                v: 1,
                node: "h1".into(),
                first: next.0,
                last: next.1,
            },
        );
        assert_eq!(my_range(&v, "ov", "h1"), Some((mine.0, next.1)));
        assert_eq!(block_owner(&v, "ov", ip("10.1.0.5")).unwrap().node, "h2");
    }

    #[test]
    fn overlay_set_has_live_members_only() {
        let mut v = View::default();
        let n = net();
        v.nets.insert("ov".into(), n.clone());
        v.nodes.insert("h1".into(), node("h1", "192.0.2.1"));
        v.nodes.insert("h2".into(), node("h2", "192.0.2.2"));
        let ep = |node: &str, mac: &str| EpVal {
            v: 1,
            node: node.into(),
            vtep: ip("192.0.2.9"),
            mac: mac.into(),
            ip: Some(ip("10.1.0.50")),
            ip6: Some("fd00:10::50".parse().unwrap()),
            name: Some("web".into()),
            port: "p".into(),
        };
        for (nd, mac) in [("h1", "02:00:00:00:00:01"), ("h2", "02:00:00:00:00:02")] {
            v.eps
                .insert(("ov".into(), nd.into(), mac.into()), ep(nd, mac));
        }
        // h3's endpoint outlived its node (not registered): ignored.
        v.eps.insert(
            ("ov".into(), "h3".into(), "02:00:00:00:00:03".into()),
            ep("h3", "02:00:00:00:00:03"),
        );
        let s = overlay_set(&v, &n, "h1", ip("192.0.2.1"));
        assert_eq!(s.remotes, vec!["192.0.2.2".to_string()]);
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(s.endpoints[0].vtep, "192.0.2.2", "the node's VTEP wins");
        assert_eq!(s.dhcp, None, "no block yet");
        assert_eq!(s.endpoints[0].ip6.as_deref(), Some("fd00:10::50"));
    }

    #[test]
    fn local_endpoints_from_ports_leases_and_names() {
        let port = |name: &str, ids: &[(&str, &str)]| PortInfo {
            name: name.into(),
            bridge: "ov".into(),
            kind: PortKind::System,
            tag: None,
            trunks: vec![],
            state: "up".into(),
            ifindex: None,
            worker: None,
            owned: true,
            external_ids: ids
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            vxlan: None,
            lock_mac: None,
            lock_ip: vec![],
            impair: None,
        };
        let mut tunnel = port("ovx7", &[]);
        tunnel.kind = PortKind::Vxlan;
        let b = LocalBridge {
            name: "ov".into(),
            overlay: true,
            ports: vec![
                port(
                    "vs1",
                    &[
                        ("mac", "02:00:00:00:00:01"),
                        ("ip", "10.1.0.5/24"),
                        ("dns", "web"),
                    ],
                ),
                port("vd1", &[("mac", "02:00:00:00:00:02"), ("dhcp", "1")]),
                port("raw", &[]),
                // pipework records an IPv6 address in `ip`; a dual-stack port (Docker)
                // has `ip` and `ip6`.
                port(
                    "vs6",
                    &[("mac", "02:00:00:00:00:06"), ("ip", "fd00:10::6/64")],
                ),
                port(
                    "vz7",
                    &[
                        ("mac", "02:00:00:00:00:07"),
                        ("ip", "10.1.0.7/24"),
                        ("ip6", "fd00:10::7/64"),
                    ],
                ),
                tunnel,
            ],
            leases: vec![LeaseEntry {
                mac: "02:00:00:00:00:02".into(),
                ip: "10.1.0.70".into(),
                hostname: Some("db".into()),
                expires: 0,
                remaining: 0,
                reserved: false,
                duid: None,
                iaid: None,
            }],
            hosts: vec![],
            learned: [("raw".to_string(), vec!["02:00:00:00:00:03".to_string()])].into(),
        };
        let eps = local_endpoints(&b);
        assert_eq!(eps.len(), 5);
        assert_eq!(eps[1].ip, Some(ip("10.1.0.70")));
        assert_eq!(eps[1].name.as_deref(), Some("db"));
        assert_eq!(eps[2].name.as_deref(), Some("web"));
        assert_eq!(eps[0].mac, "02:00:00:00:00:03");
        assert_eq!(eps[0].ip, None);
        assert_eq!(eps[3].ip6, Some("fd00:10::6".parse().unwrap()));
        assert_eq!(eps[3].ip, None);
        assert_eq!(eps[4].ip6, Some("fd00:10::7".parse().unwrap()));
        assert_eq!(eps[4].ip, Some(ip("10.1.0.7")));
    }
}
