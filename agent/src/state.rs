//! What the agent knows, and the pure functions from it to what vswitchd should do.
//!
//! [`View`]: the cluster as read from etcd (rebuilt from the raw key/values after each
//! batch of watch events). [`Local`]: this host's overlay bridges as read from
//! vswitchd. From the two: the `overlay-set` each local bridge should get
//! ([`overlay_set`]), the endpoints this node should publish ([`local_endpoints`]),
//! and the DHCP blocks it holds or should claim ([`my_range`], [`block_to_claim`]; for
//! DHCPv6 [`my_range6`], [`block6_to_claim`]).

use crate::keys::{Block6Val, BlockVal, Entry, EpVal, IpVal, Keys, NetVal, NodeVal};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vswitch_proto::cluster::{OverlaySet, RemoteEndpoint};
use vswitch_proto::{HostEntry, LeaseEntry, PortInfo, PortKind};

/// Addresses per DHCP block (a /28).
pub const BLOCK: u32 = 16;
/// Addresses per DHCPv6 block (a /120): an IPv6 range is as large as one likes (a
/// whole /64 by default), so blocks are never listed, only computed.
pub const BLOCK6: u128 = 256;
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
    /// (network, first address) → DHCPv6 block.
    pub blocks6: BTreeMap<(String, Ipv6Addr), Block6Val>,
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
            Ok(Some(Entry::Block6 { net, val })) => {
                self.blocks6.insert((net, val.first), val);
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
            ["blocks6", net, first] => {
                if let Some(IpAddr::V6(f)) = ip(first) {
                    self.blocks6.remove(&(net.to_string(), f));
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
    run_of(&view.blocks, net, me)
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
            // Blocks by index in `all`.
            let taken = (0..all.len())
                .filter(|i| !free(&all[*i]))
                .map(|i| i as u128);
            let at = first_block(taken, 0, (all.len() as u128).checked_sub(1)?)?;
            all.get(usize::try_from(at).ok()?).copied()
        }
        Some((f, l)) => {
            if !range_full(leased, f, l) {
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
    owner_of(&view.blocks, net, ip)
}

/// The DHCPv6 range of network `n` as block numbers and addresses: `(first block,
/// last block, first address, last address)`, block `i` holding the addresses
/// `i * BLOCK6 ..= i * BLOCK6 + BLOCK6 - 1` cut to the range, without the subnet's
/// first address (the subnet-router anycast address).
fn range6(n: &NetVal) -> Option<(u128, u128, u128, u128)> {
    let net: Ipv6Net = n.subnet6.as_deref()?.parse().ok()?;
    let (a, z) = n.dhcp6.as_deref()?.split_once('-')?;
    let (lo, hi): (Ipv6Addr, Ipv6Addr) = (a.trim().parse().ok()?, z.trim().parse().ok()?);
    let base = u128::from(net.network());
    let top = u128::from(net.broadcast());
    let (lo, hi) = (
        u128::from(lo).max(base.saturating_add(1)),
        u128::from(hi).min(top),
    );
    (lo <= hi).then_some((lo / BLOCK6, hi / BLOCK6, lo, hi))
}

/// Block number `i` of a range from [`range6`], as addresses.
fn block6_at(r: (u128, u128, u128, u128), i: u128) -> (Ipv6Addr, Ipv6Addr) {
    let f = (i * BLOCK6).max(r.2);
    let l = (i * BLOCK6).saturating_add(BLOCK6 - 1).min(r.3);
    (Ipv6Addr::from(f), Ipv6Addr::from(l))
}

/// The number of DHCPv6 blocks of network `n` (0: no DHCPv6).
pub fn blocks6_count(n: &NetVal) -> u128 {
    range6(n).map_or(0, |r| r.1 - r.0 + 1)
}

/// The DHCPv6 block of network `n` holding `ip`, if it is in the range.
pub fn block6_of(n: &NetVal, ip: Ipv6Addr) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let r = range6(n)?;
    let a = u128::from(ip);
    (a >= r.2 && a <= r.3).then(|| block6_at(r, a / BLOCK6))
}

/// This node's DHCPv6 range on `net`: the contiguous run of its blocks starting at its
/// lowest one (vswitchd serves one range per bridge), as for IPv4 ([`my_range`]).
pub fn my_range6(view: &View, net: &str, me: &str) -> Option<(Ipv6Addr, Ipv6Addr)> {
    run_of(&view.blocks6, net, me)
}

/// The DHCPv6 block this node should claim on `net` now, if any, chosen as for IPv4
/// ([`block_to_claim`]): a first one as soon as it has the network, in the middle of
/// the longest run of free blocks after another node's (the first block when nothing
/// is taken); the adjacent one when `leased` fills [`REFILL_PERCENT`] of its range.
/// Computed from the taken blocks only (a /64 has 2^56 blocks).
pub fn block6_to_claim(
    view: &View,
    net: &NetVal,
    me: &str,
    leased: usize,
) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let r = range6(net)?;
    // Block numbers held by a node or holding a static claim, in order.
    let mut taken: BTreeSet<u128> = view
        .blocks6
        .iter()
        .filter(|((n, _), _)| n == &net.name)
        .map(|(_, b)| u128::from(b.first) / BLOCK6)
        .collect();
    taken.extend(view.ips.keys().filter_map(|(n, ip)| match ip {
        IpAddr::V6(a) if n == &net.name => Some(u128::from(*a) / BLOCK6),
        _ => None,
    }));
    match my_range6(view, &net.name, me) {
        None => Some(block6_at(r, first_block(taken.iter().copied(), r.0, r.1)?)),
        Some((f, l)) => {
            if !range_full(leased, f, l) {
                return None;
            }
            let next = u128::from(l).checked_add(1)? / BLOCK6;
            (next <= r.1 && !taken.contains(&next)).then(|| block6_at(r, next))
        }
    }
}

/// The DHCPv6 block of `net` holding `ip`, and who holds it.
pub fn block6_owner<'a>(view: &'a View, net: &str, ip: Ipv6Addr) -> Option<&'a Block6Val> {
    owner_of(&view.blocks6, net, ip)
}

/// An address of one family, as the block logic shared by IPv4 and IPv6 sees it.
trait Addr: Copy + Ord {
    /// The address as a number (`u32` or `u128` widened).
    fn num(self) -> u128;
}

impl Addr for Ipv4Addr {
    fn num(self) -> u128 {
        u32::from(self).into()
    }
}

impl Addr for Ipv6Addr {
    fn num(self) -> u128 {
        self.into()
    }
}

/// A DHCP block of either family ([`BlockVal`], [`Block6Val`]).
trait Block {
    type Addr: Addr;
    fn node(&self) -> &str;
    /// First and last address.
    fn span(&self) -> (Self::Addr, Self::Addr);
}

/// [`Block`] for the block values, which both have `node`, `first` and `last`.
macro_rules! impl_block {
    ($($t:ty => $a:ty),*) => {$(
        impl Block for $t {
            type Addr = $a;
            fn node(&self) -> &str {
                &self.node
            }
            fn span(&self) -> ($a, $a) {
                (self.first, self.last)
            }
        }
    )*};
}

impl_block!(BlockVal => Ipv4Addr, Block6Val => Ipv6Addr);

/// [`my_range`] / [`my_range6`]: the contiguous run of `me`'s blocks of `net` starting
/// at its lowest one.
fn run_of<B: Block>(
    blocks: &BTreeMap<(String, B::Addr), B>,
    net: &str,
    me: &str,
) -> Option<(B::Addr, B::Addr)> {
    let mut mine = blocks
        .iter()
        .filter(|((n, _), b)| n == net && b.node() == me)
        .map(|(_, b)| b.span());
    let mut range = mine.next()?;
    for (f, l) in mine {
        if f.num() == range.1.num().wrapping_add(1) {
            range.1 = l;
        } else {
            break;
        }
    }
    Some(range)
}

/// [`block_owner`] / [`block6_owner`]: the block of `net` holding `ip`.
fn owner_of<'a, B: Block>(
    blocks: &'a BTreeMap<(String, B::Addr), B>,
    net: &str,
    ip: B::Addr,
) -> Option<&'a B> {
    blocks
        .iter()
        .filter(|((n, _), b)| n == net && ip >= b.span().0 && ip <= b.span().1)
        .map(|(_, b)| b)
        .next()
}

/// Where a node's first block goes among the blocks numbered `lo..=hi`, given the
/// numbers of the taken ones in ascending order: in the middle of the longest run of
/// free blocks (the earliest of equally long ones), or at the run's start when it
/// starts at `lo` (nothing taken before it).
fn first_block(taken: impl IntoIterator<Item = u128>, lo: u128, hi: u128) -> Option<u128> {
    // Runs of free blocks between the taken ones: (start, length).
    let mut best: Option<(u128, u128)> = None;
    let mut start = lo;
    for t in taken
        .into_iter()
        .filter(|t| *t >= lo && *t <= hi)
        .chain(std::iter::once(hi.saturating_add(1)))
    {
        if t > start {
            let len = t - start;
            if best.is_none_or(|(_, l)| len > l) {
                best = Some((start, len));
            }
        }
        start = start.max(t.saturating_add(1));
    }
    let (s, len) = best?;
    Some(if s == lo { s } else { s + len / 2 })
}

/// Whether `leased` addresses fill [`REFILL_PERCENT`] of the range `first..=last`.
fn range_full<A: Addr>(leased: usize, first: A, last: A) -> bool {
    let size = (last.num() - first.num()).saturating_add(1);
    (leased as u128).saturating_mul(100) >= size.saturating_mul(REFILL_PERCENT as u128)
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
        dhcp6: n
            .dhcp6
            .as_ref()
            .and_then(|_| my_range6(view, &n.name, me))
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
            dhcp6: None,
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

    fn net6() -> NetVal {
        let mut n = net();
        n.subnet6 = Some("fd00:10::/64".into());
        n.gateway6 = Some("fd00:10::1".into());
        n.dhcp6 = Some("fd00:10::-fd00:10::ffff:ffff:ffff:ffff".into());
        n
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn hold6(v: &mut View, node: &str, b: (Ipv6Addr, Ipv6Addr)) {
        v.blocks6.insert(
            ("ov".into(), b.0),
            Block6Val {
                v: 1,
                node: node.into(),
                first: b.0,
                last: b.1,
            },
        );
    }

    /// A /64 has 2^56 blocks of 256: they are computed, never listed; the subnet's
    /// first address (subnet-router anycast) is never handed out; a range is cut at
    /// its ends.
    #[test]
    fn ipv6_blocks_are_cut_from_huge_ranges() {
        let mut n = net6();
        assert_eq!(blocks6_count(&n), 1 << 56);
        assert_eq!(
            block6_of(&n, ip6("fd00:10::1234")),
            Some((ip6("fd00:10::1200"), ip6("fd00:10::12ff")))
        );
        assert_eq!(
            block6_of(&n, ip6("fd00:10::5")),
            Some((ip6("fd00:10::1"), ip6("fd00:10::ff")))
        );
        assert_eq!(block6_of(&n, ip6("fd00:11::5")), None);
        n.dhcp6 = Some("fd00:10::180-fd00:10::2ff".into());
        assert_eq!(blocks6_count(&n), 2);
        assert_eq!(
            block6_of(&n, ip6("fd00:10::1a0")),
            Some((ip6("fd00:10::180"), ip6("fd00:10::1ff")))
        );
        assert_eq!(block6_of(&n, ip6("fd00:10::17f")), None);
        n.dhcp6 = None;
        assert_eq!(blocks6_count(&n), 0);
        assert_eq!(block6_to_claim(&View::default(), &n, "h1", 0), None);
    }

    /// The first node takes the first block, the second the middle of the rest (room
    /// for both to grow), nobody a block another node holds or one with a static
    /// claim; a node grows into the adjacent block at 75 % leased.
    #[test]
    fn ipv6_blocks_are_claimed_like_ipv4_ones() {
        let mut v = View::default();
        let mut n = net6();
        n.dhcp6 = Some("fd00:10::100-fd00:10::10ff".into()); // 16 blocks
        let a = block6_to_claim(&v, &n, "h1", 0).unwrap();
        assert_eq!(a, (ip6("fd00:10::100"), ip6("fd00:10::1ff")));
        hold6(&mut v, "h1", a);
        assert_eq!(my_range6(&v, "ov", "h1"), Some(a));
        assert_eq!(block6_to_claim(&v, &n, "h1", 0), None, "room left");
        // h2: the middle of the 15 free blocks after h1's.
        let b = block6_to_claim(&v, &n, "h2", 0).unwrap();
        assert_eq!(b, (ip6("fd00:10::900"), ip6("fd00:10::9ff")));
        assert_ne!(b, a, "two nodes never get one block");
        hold6(&mut v, "h2", b);
        assert_eq!(
            block6_owner(&v, "ov", ip6("fd00:10::9aa")).unwrap().node,
            "h2"
        );
        assert_eq!(block6_owner(&v, "ov", ip6("fd00:10::aaa")), None);
        // h1 at 192 of 256 leased takes the adjacent block, unless a static address
        // sits in it.
        assert_eq!(block6_to_claim(&v, &n, "h1", 191), None);
        v.ips.insert(
            ("ov".into(), IpAddr::V6(ip6("fd00:10::205"))),
            IpVal {
                v: 1,
                node: "h3".into(),
                mac: None,
                port: "p".into(),
            },
        );
        assert_eq!(block6_to_claim(&v, &n, "h1", 192), None, "static claim");
        v.ips.clear();
        let next = block6_to_claim(&v, &n, "h1", 192).unwrap();
        assert_eq!(next, (ip6("fd00:10::200"), ip6("fd00:10::2ff")));
        hold6(&mut v, "h1", next);
        assert_eq!(my_range6(&v, "ov", "h1"), Some((a.0, next.1)));
        // h3: the middle of the longest free run (0xa00..0x10ff, 7 blocks).
        let c = block6_to_claim(&v, &n, "h3", 0).unwrap();
        assert_eq!(c, (ip6("fd00:10::d00"), ip6("fd00:10::dff")));
        // Every block held: nothing to claim.
        for i in 0..16u128 {
            let f = 0xfd00_0010_0000_0000_0000_0000_0000_0100u128 + i * 256;
            if !v
                .blocks6
                .contains_key(&("ov".to_string(), Ipv6Addr::from(f)))
            {
                hold6(&mut v, "h9", (Ipv6Addr::from(f), Ipv6Addr::from(f + 255)));
            }
        }
        assert_eq!(block6_to_claim(&v, &n, "h4", 0), None);
        // vswitchd gets this node's range as its bridge's DHCPv6 range.
        v.nodes.insert("h1".into(), node("h1", "192.0.2.1"));
        let s = overlay_set(&v, &n, "h1", ip("192.0.2.1"));
        assert_eq!(s.dhcp6.as_deref(), Some("fd00:10::100-fd00:10::2ff"));
        assert_eq!(s.dhcp, None, "no IPv4 block");
    }

    /// Blocks6 keys are read and forgotten one at a time, apart from IPv4 blocks.
    #[test]
    fn ipv6_block_keys_apply() {
        let k = Keys::new("/vswitch");
        let mut v = View::default();
        let mut warned = HashSet::new();
        let b = Block6Val {
            v: 1,
            node: "h1".into(),
            first: ip6("fd00:10::100"),
            last: ip6("fd00:10::1ff"),
        };
        let key = k.block6("ov", b.first);
        assert_eq!(key, "/vswitch/blocks6/ov/fd000010000000000000000000000100");
        v.apply(&k, &key, Some(&crate::keys::encode(&b)), &mut warned);
        assert_eq!(v.blocks6.len(), 1);
        assert!(v.blocks.is_empty());
        v.apply(&k, &key, None, &mut warned);
        assert!(v.blocks6.is_empty() && warned.is_empty());
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
