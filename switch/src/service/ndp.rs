//! The slow path for IPv6: Neighbor Discovery (answering solicitations for the
//! router's addresses, learning neighbours, resolving next hops), Router
//! Advertisements (periodic and solicited), ICMPv6 echo to the router, and the ICMPv6
//! errors the workers punt (time exceeded, destination unreachable, packet too big).
//!
//! Replies to a punted frame go back out of the port it came in on, to its Ethernet
//! source: that is the sender or the router in front of it, so no resolution is needed.
//!
//! Read first: RFC 4861 (NDP) §6–7, RFC 4443 (ICMPv6), RFC 8106 (RDNSS).

use super::{dns, tcp53, Queued, Service};
use crate::dp::clock;
use crate::dp::snapshot::{BridgeRt, Router6If, Snapshot};
use crate::pipeline::l3;
use crate::pipeline::punt::PuntKind;
use crate::tables::neigh::NeighCache;
use crate::tables::PortId;
use crate::wire::ipv6::{self, icmp, Ipv6Meta};
use crate::wire::{EthFrame, MacAddr, VnetHdr};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Unsolicited Router Advertisements: the first few at this interval
/// (MAX_INITIAL_RTR_ADVERT_INTERVAL, RFC 4861 §6.2.4, is 16 s), then every
/// `RA_INTERVAL` (within MinRtrAdvInterval..MaxRtrAdvInterval, 3 s..1800 s).
const RA_INITIAL_INTERVAL: Duration = Duration::from_secs(4);
const RA_INITIAL_COUNT: u32 = 3;
const RA_INTERVAL: Duration = Duration::from_secs(60);
/// Router lifetime advertised (3 × the RFC's default MaxRtrAdvInterval of 600 s).
const ROUTER_LIFETIME: u16 = 1800;
/// Router Solicitations answered per second, all bridges together.
pub(super) const RS_ANSWERS_PER_SEC: f64 = 50.0;

/// When a bridge's next unsolicited RA is due.
pub(super) struct RaState {
    next: Instant,
    sent: u32,
}

impl Service {
    /// An IPv6 packet for the router (its gateway or link-local address, or a
    /// multicast group: NDP, RS, echo).
    pub(super) fn local_ip6(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        in_port: PortId,
        eth: &EthFrame,
        ip: &[u8],
    ) {
        let bridge = &snap.bridges[bi];
        if self.overlay_neighbor(snap, bi, in_port, eth, ip) {
            return;
        }
        let Some(rif) = bridge.router6 else { return };
        let Ok(m) = Ipv6Meta::parse(ip) else {
            self.count_drop(snap, in_port);
            return;
        };
        let body = m.payload(ip);
        if m.next == ipv6::NEXT_UDP && m.dst == super::dhcp6::ALL_SERVERS && bridge.dhcp6 {
            return self.dhcp6(snap, bi, in_port, eth, (&m, ip));
        }
        if m.next == ipv6::NEXT_UDP && snap.router_ip6(&m.dst) == Some(bi) {
            return self.udp6(snap, bi, in_port, eth, (&m, ip));
        }
        if m.next == ipv6::NEXT_TCP && snap.router_ip6(&m.dst) == Some(bi) {
            return self.tcp6(snap, bi, in_port, eth, (&m, ip));
        }
        if m.next != ipv6::NEXT_ICMPV6 || body.len() < 4 || !ipv6::icmp_checksum_ok(&m, body) {
            // Not ICMPv6 (TCP to another bridge's gateway, another protocol), or corrupt.
            self.count_drop(snap, in_port);
            return;
        }
        match body[0] {
            icmp::NEIGHBOR_SOLICIT | icmp::NEIGHBOR_ADVERT => {
                let Some(n) = ipv6::parse_neighbor(&m, body) else {
                    self.count_drop(snap, in_port);
                    return;
                };
                self.neighbor(snap, bi, in_port, eth, &m, &n);
            }
            icmp::ROUTER_SOLICIT => {
                // RFC 4861 §6.1.1: hop limit 255, code 0, options well formed; an
                // unspecified source carries no source LLA.
                let opts = body.get(8..).and_then(ipv6::ndp_options);
                if m.hop_limit != 255 || body[1] != 0 || opts.is_none() {
                    self.count_drop(snap, in_port);
                    return;
                }
                if !self.rs_token() {
                    self.count_drop(snap, in_port);
                    return;
                }
                let (dst, dmac) = if m.src.is_unspecified() {
                    (ipv6::ALL_NODES, ipv6::multicast_mac(&ipv6::ALL_NODES))
                } else {
                    (m.src, eth.src)
                };
                let pkt =
                    ipv6::icmp_packet(rif.ll, dst, 255, ipv6::router_advert(&advert(bridge, &rif)));
                self.send_port(snap, in_port, &ipv6::ethernet(dmac, rif.mac, &pkt));
            }
            icmp::ECHO_REQUEST if body[1] == 0 && !m.dst.is_multicast() => {
                let Some(t) = snap.router_ip6(&m.dst) else {
                    self.count_drop(snap, in_port);
                    return;
                };
                // Isolated bridges reach their own gateway only; link-local
                // addresses are answered on their own link only.
                let other = t != bi;
                if other
                    && (ipv6::is_link_local(&m.dst) || bridge.isolated || snap.bridges[t].isolated)
                {
                    self.count_drop(snap, in_port);
                    return;
                }
                let mut reply = body.to_vec();
                reply[0] = icmp::ECHO_REPLY;
                let pkt = ipv6::icmp_packet(m.dst, m.src, 64, reply);
                self.send_port(snap, in_port, &ipv6::ethernet(eth.src, rif.mac, &pkt));
            }
            _ => self.count_drop(snap, in_port),
        }
    }

    /// UDP to this bridge's own IPv6 gateway: DNS on port 53; port unreachable for
    /// anything else.
    fn udp6(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        in_port: PortId,
        eth: &EthFrame,
        (m, ip): (&Ipv6Meta, &[u8]),
    ) {
        let body = m.payload(ip);
        // The checksum is not verified: a kernel peer leaves it partial (checksum
        // offload, the virtio-net header's NEEDS_CSUM), as for IPv4's DNS.
        if body.len() < 8 || usize::from(u16::from_be_bytes([body[4], body[5]])) != body.len() {
            self.count_drop(snap, in_port);
            return;
        }
        let sport = u16::from_be_bytes([body[0], body[1]]);
        let dport = u16::from_be_bytes([body[2], body[3]]);
        if dport != 53 {
            // Port unreachable (RFC 4443 §3.1 code 4).
            if let Some(f) = self.error6(snap, bi, eth.src, ip, icmp::DEST_UNREACH, 4, 0) {
                self.send_port(snap, in_port, &f);
            }
            return;
        }
        let data = &body[8..];
        let reply = dns::Reply::Udp6 {
            client: m.src,
            server: m.dst,
            cport: sport,
            limit: dns::udp_limit(data, snap.bridges[bi].mtu.saturating_sub(20)),
            port: in_port,
            mac: eth.src,
        };
        self.dns_query(snap, bi, in_port, data, reply);
    }

    /// TCP to this bridge's own IPv6 gateway: DNS over TCP on port 53, by the same
    /// stateless responder as IPv4's; its segments go back out of the port the query
    /// came in on, to the MAC it came from.
    fn tcp6(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        in_port: PortId,
        eth: &EthFrame,
        (m, ip): (&Ipv6Meta, &[u8]),
    ) {
        let body = m.payload(ip);
        let bridge = &snap.bridges[bi];
        let Some(rif) = bridge.router6 else { return };
        // The checksum is not verified (a kernel peer leaves it partial), as for IPv4.
        if body.len() < 20 || body[2..4] != [0, 53] {
            self.count_drop(snap, in_port);
            return;
        }
        let ends = tcp53::Ends::V6 {
            client: m.src,
            server: m.dst,
        };
        match self.tcp53.handle(ends, body, bridge.mtu) {
            tcp53::Out::Packet(pkt) => {
                self.send_port(snap, in_port, &ipv6::ethernet(eth.src, rif.mac, &pkt));
            }
            tcp53::Out::Query(q, reply) => {
                let reply = dns::Reply::Tcp6 {
                    reply,
                    port: in_port,
                    mac: eth.src,
                };
                self.dns_query(snap, bi, in_port, &q, reply);
            }
            tcp53::Out::None => {}
            tcp53::Out::Drop => self.count_drop(snap, in_port),
        }
    }

    /// DHCPv6 from a client on bridge `bi` (to All_DHCP_Relay_Agents_and_Servers):
    /// answered from the bridge's DHCPv6 pool under the lease store's own short lock,
    /// from the router's link-local address to the client's, out of the port it came
    /// in on.
    fn dhcp6(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        in_port: PortId,
        eth: &EthFrame,
        (m, ip): (&Ipv6Meta, &[u8]),
    ) {
        let bridge = &snap.bridges[bi];
        let Some(rif) = bridge.router6 else { return };
        let body = m.payload(ip);
        let ok_len =
            body.len() >= 8 && usize::from(u16::from_be_bytes([body[4], body[5]])) == body.len();
        // Clients send from their link-local address, port 546 (RFC 8415 §7.2, §13.1).
        if !ok_len
            || u16::from_be_bytes([body[2], body[3]]) != super::dhcp6::SERVER_PORT
            || !ipv6::is_link_local(&m.src)
        {
            self.count_drop(snap, in_port);
            return;
        }
        let sport = u16::from_be_bytes([body[0], body[1]]);
        let now = super::dhcp::unix_now();
        // A client sending no FQDN gets the name its MAC's DHCPv4 lease registered.
        let fallback = self.leases.hostname_of(&bridge.name, eth.src, now);
        let out = self
            .leases
            .with_pool6(&bridge.name, |pool| {
                super::dhcp6::serve(pool, &body[8..], now, Some(eth.src), fallback)
            })
            .flatten();
        let Some(reply) = out else {
            self.count_drop(snap, in_port);
            return;
        };
        let udp = udp6(rif.ll, m.src, super::dhcp6::SERVER_PORT, sport, &reply);
        let pkt = ipv6::packet(rif.ll, m.src, ipv6::NEXT_UDP, 64, &udp);
        self.send_port(snap, in_port, &ipv6::ethernet(eth.src, rif.mac, &pkt));
    }

    /// Overlay bridges: a Neighbor Solicitation for a remote endpoint's IPv6 address is
    /// answered here with its MAC (as ARP is: no NDP crosses the underlay). True when
    /// `ip` was such a solicitation (answered, or dropped as malformed).
    fn overlay_neighbor(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        in_port: PortId,
        eth: &EthFrame,
        ip: &[u8],
    ) -> bool {
        let Some(o) = snap.bridges[bi]
            .overlay
            .as_ref()
            .filter(|o| !o.nd.is_empty())
        else {
            return false;
        };
        let Ok(m) = Ipv6Meta::parse(ip) else {
            return false;
        };
        let body = m.payload(ip);
        if m.next != ipv6::NEXT_ICMPV6
            || body.first() != Some(&icmp::NEIGHBOR_SOLICIT)
            || !ipv6::icmp_checksum_ok(&m, body)
        {
            return false;
        }
        let Some(n) = ipv6::parse_neighbor(&m, body) else {
            return false;
        };
        let Some(&mac) = o.nd.get(&n.target) else {
            return false;
        };
        // RFC 4861 §7.2.4, as for our own addresses, but from the endpoint's MAC and
        // without the router flag.
        let (dst, dmac, flags) = if m.src.is_unspecified() {
            (
                ipv6::ALL_NODES,
                ipv6::multicast_mac(&ipv6::ALL_NODES),
                ipv6::NA_OVERRIDE,
            )
        } else {
            (
                m.src,
                n.lla.unwrap_or(eth.src),
                ipv6::NA_SOLICITED | ipv6::NA_OVERRIDE,
            )
        };
        let na = ipv6::neighbor_advert(n.target, mac, flags);
        let pkt = ipv6::icmp_packet(n.target, dst, 255, na);
        self.send_port(snap, in_port, &ipv6::ethernet(dmac, mac, &pkt));
        true
    }

    /// A Neighbor Solicitation or Advertisement on bridge `bi`: learn the sender,
    /// release what waited for it, answer a solicitation for one of our addresses.
    fn neighbor(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        in_port: PortId,
        eth: &EthFrame,
        m: &Ipv6Meta,
        n: &ipv6::Neighbor,
    ) {
        let Some(rif) = snap.bridges[bi].router6 else {
            return;
        };
        let ours = n.target == rif.ip || n.target == rif.ll;
        // Who to learn: the NS sender (with its source LLA), or the NA target.
        let learn = match n.ty {
            icmp::NEIGHBOR_SOLICIT if !m.src.is_unspecified() => n.lla.map(|mac| (m.src, mac)),
            icmp::NEIGHBOR_ADVERT if !ours => Some((n.target, n.lla.unwrap_or(eth.src))),
            _ => None,
        };
        if let Some((ip, mac)) = learn {
            if rif.net.contains(&ip) && !mac.is_multicast() && !mac.is_zero() {
                self.learned.push((ip.into(), mac));
                if self.pending.contains_key(&IpAddr::V6(ip)) {
                    self.flush_learned();
                    self.release(snap, ip.into(), mac);
                }
            }
        }
        if n.ty != icmp::NEIGHBOR_SOLICIT || !ours {
            return;
        }
        // RFC 4861 §7.2.4: to the solicitor (its LLA option, else the frame's
        // source); a DAD probe (unspecified source) to all-nodes, not solicited.
        let (dst, dmac, flags) = if m.src.is_unspecified() {
            (
                ipv6::ALL_NODES,
                ipv6::multicast_mac(&ipv6::ALL_NODES),
                ipv6::NA_ROUTER | ipv6::NA_OVERRIDE,
            )
        } else {
            (
                m.src,
                n.lla.unwrap_or(eth.src),
                ipv6::NA_ROUTER | ipv6::NA_SOLICITED | ipv6::NA_OVERRIDE,
            )
        };
        let na = ipv6::neighbor_advert(n.target, rif.mac, flags);
        let pkt = ipv6::icmp_packet(n.target, dst, 255, na);
        self.send_port(snap, in_port, &ipv6::ethernet(dmac, rif.mac, &pkt));
    }

    /// An IPv6 frame punted to be routed (`Resolve`) or answered with an error.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn punt6(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        in_port: PortId,
        eth: &EthFrame,
        kind: PuntKind,
        frame: &[u8],
        vnet: VnetHdr,
    ) {
        let l3_ofs = eth.payload_ofs + 2;
        let Some(ip) = frame.get(l3_ofs..) else {
            return;
        };
        let (ty, code, param) = match kind {
            PuntKind::Resolve => return self.resolve6(snap, frame, l3_ofs, vnet),
            PuntKind::TtlExceeded => (icmp::TIME_EXCEEDED, 0, 0),
            // No route to destination.
            PuntKind::NoRoute => (icmp::DEST_UNREACH, 0, 0),
            PuntKind::FragNeeded { mtu } => (icmp::PACKET_TOO_BIG, 0, u32::from(mtu)),
            PuntKind::Local => return,
        };
        if let Some(f) = self.error6(snap, bi, eth.src, ip, ty, code, param) {
            self.send_port(snap, in_port, &f);
        }
    }

    /// The frame of an ICMPv6 error about `orig` (arrived on bridge `bi` from `to`),
    /// from the gateway of `bi`; `None` when none may be sent (RFC 4443 §2.4) or the
    /// budget is spent.
    #[allow(clippy::too_many_arguments)]
    fn error6(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        to: MacAddr,
        orig: &[u8],
        ty: u8,
        code: u8,
        param: u32,
    ) -> Option<Vec<u8>> {
        let rif = snap.bridges.get(bi)?.router6?;
        let m = Ipv6Meta::parse(orig).ok()?;
        if !ipv6::may_answer_error(&m, orig) || !self.icmp_token() {
            return None;
        }
        let end = (ipv6::HLEN + m.payload_len).min(orig.len());
        let msg = ipv6::error(ty, code, param, &orig[..end]);
        let pkt = ipv6::icmp_packet(rif.ip, m.src, 64, msg);
        Some(ipv6::ethernet(to, rif.mac, &pkt))
    }

    /// A routed IPv6 frame whose next hop is unknown: send it if it has been learned
    /// since, else queue it and solicit.
    fn resolve6(&mut self, snap: &Snapshot, frame: &[u8], l3_ofs: usize, vnet: VnetHdr) {
        let Some(m) = frame.get(l3_ofs..).and_then(|b| Ipv6Meta::parse(b).ok()) else {
            return;
        };
        let Some(r) = snap.routes6.lookup(m.dst) else {
            return;
        };
        let nh = r.via.unwrap_or(m.dst);
        // An overlay bridge knows its remote endpoints' MACs without asking (and then
        // the workers do too): the endpoint's NA would reach its own host's router,
        // which has the same MAC, never this one.
        let remote = snap.bridges[r.bridge]
            .overlay
            .as_ref()
            .and_then(|o| o.nd.get(&nh))
            .copied();
        if let Some(mac) = remote {
            self.learned.push((nh.into(), mac));
        }
        let cached = NeighCache::lookup(&self.neigh.load(), nh, clock::now_secs());
        if let Some(mac) = cached.or(remote) {
            if let Some(rif) = snap.bridges[r.bridge].router6 {
                let mut f = frame.to_vec();
                l3::rewrite(&mut f, l3_ofs, mac, rif.mac);
                self.send_bridge(snap, r.bridge, &f, vnet);
            }
            return;
        }
        self.enqueue(
            snap,
            nh.into(),
            Queued {
                frame: frame.to_vec(),
                vnet,
                forwarded: true,
            },
        );
    }

    /// Solicit `nh` on the bridge whose IPv6 subnet holds it (RFC 4861 §7.2.2: to its
    /// solicited-node multicast address, from our address on that link).
    pub(super) fn send_neighbor_solicit(&self, snap: &Snapshot, nh: Ipv6Addr) {
        let Some((bi, rif)) = snap
            .bridges
            .iter()
            .enumerate()
            .find_map(|(i, b)| b.router6.filter(|r| r.net.contains(&nh)).map(|r| (i, r)))
        else {
            return;
        };
        let group = ipv6::solicited_node(&nh);
        let pkt = ipv6::icmp_packet(rif.ip, group, 255, ipv6::neighbor_solicit(nh, rif.mac));
        let f = ipv6::ethernet(ipv6::multicast_mac(&group), rif.mac, &pkt);
        self.send_bridge(snap, bi, &f, VnetHdr::default());
    }

    /// A queued IPv6 packet whose next hop never answered: address unreachable
    /// (RFC 4443 §3.1 code 3) to its sender.
    pub(super) fn unreachable6(&mut self, snap: &Snapshot, frame: &[u8]) {
        let Ok(eth) = EthFrame::parse(frame) else {
            return;
        };
        let Some(ip) = frame.get(eth.payload_ofs + 2..) else {
            return;
        };
        let Ok(m) = Ipv6Meta::parse(ip) else { return };
        let Some(bi) = snap
            .bridges
            .iter()
            .position(|b| b.router6.is_some_and(|r| r.net.contains(&m.src)))
        else {
            return;
        };
        if let Some(f) = self.error6(snap, bi, eth.src, ip, icmp::DEST_UNREACH, 3, 0) {
            self.send_bridge(snap, bi, &f, VnetHdr::default());
        }
    }

    /// Unsolicited Router Advertisements to all-nodes on every bridge with an IPv6
    /// gateway, when due.
    pub(super) fn ra_tick(&mut self, now: Instant) {
        let snap = self.snap.load_full();
        if snap.generation != self.ra_generation {
            // Forget bridges that left (or lost their IPv6 gateway) once per snapshot.
            self.ra_generation = snap.generation;
            let live: std::collections::HashSet<&str> = snap
                .bridges
                .iter()
                .filter(|b| b.router6.is_some())
                .map(|b| b.name.as_str())
                .collect();
            self.ra.retain(|name, _| live.contains(name.as_str()));
        }
        for (bi, b) in snap.bridges.iter().enumerate() {
            let Some(rif) = b.router6 else { continue };
            let st = self
                .ra
                .entry(b.name.clone())
                .or_insert(RaState { next: now, sent: 0 });
            if st.next > now {
                continue;
            }
            st.sent = st.sent.saturating_add(1);
            st.next = now
                + if st.sent < RA_INITIAL_COUNT {
                    RA_INITIAL_INTERVAL
                } else {
                    RA_INTERVAL
                };
            let pkt = ipv6::icmp_packet(
                rif.ll,
                ipv6::ALL_NODES,
                255,
                ipv6::router_advert(&advert(b, &rif)),
            );
            let f = ipv6::ethernet(ipv6::multicast_mac(&ipv6::ALL_NODES), rif.mac, &pkt);
            self.send_bridge(&snap, bi, &f, VnetHdr::default());
        }
    }

    /// Take one token of the Router Solicitation budget: false when spent.
    fn rs_token(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.rs_refill).as_secs_f64();
        self.rs_refill = now;
        self.rs_tokens = (self.rs_tokens + dt * RS_ANSWERS_PER_SEC).min(RS_ANSWERS_PER_SEC);
        if self.rs_tokens < 1.0 {
            return false;
        }
        self.rs_tokens -= 1.0;
        true
    }
}

/// A UDP datagram with its checksum over the IPv6 pseudo-header (mandatory in IPv6).
pub(super) fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = (8 + data.len()).min(0xffff) as u16;
    let mut u = Vec::with_capacity(usize::from(len));
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let c = match ipv6::checksum(&src, &dst, ipv6::NEXT_UDP, &u) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// What bridge `b`'s Router Advertisement says (`rif`: its IPv6 interface).
fn advert(b: &BridgeRt, rif: &Router6If) -> ipv6::RouterAdvert {
    ipv6::RouterAdvert {
        mac: rif.mac,
        prefix: rif.net.network(),
        prefix_len: rif.net.prefix_len(),
        mtu: b.mtu,
        dns: Some(rif.ip),
        lifetime: ROUTER_LIFETIME,
        managed: b.dhcp6,
    }
}

/// Fuzz entry point (the `ndp` fuzz target and its corpus replay): `data` is
/// `[port, kind, hop limit, addresses, ICMPv6 message...]`; the message (checksum
/// fixed, so the fuzzer gets past it) is punted to the slow path of the in-memory rig
/// (`pipeline::rig`: br0 fd00:10::/64, wan fd00:ff::/64) from a host, addressed to
/// the router's gateway, link-local or multicast address; then the raw bytes are
/// punted once more unfixed as a whole frame. Must never panic.
pub fn fuzz(data: &[u8]) {
    use crate::pipeline::punt::Punt;
    use crate::tables::LeaseStore;
    use std::sync::Arc;
    let [port, kind, hop, sel, msg @ ..] = data else {
        return;
    };
    let (snap, _mems) = crate::pipeline::rig::Rig::new().into_parts();
    let mut s = Service::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(snap)),
        Arc::new(NeighCache::new(64)),
        Arc::new(LeaseStore::new()),
        0,
    );
    let addrs = [
        "fd00:10::5",
        "fd00:10::1",
        "ff02::1:ff00:1",
        "ff02::2",
        "fe80::5",
        "::",
        "2001:db8::1",
        "fd00:ff::1",
    ];
    let pick = |i: u8| -> Ipv6Addr {
        addrs[usize::from(i) % addrs.len()]
            .parse()
            .unwrap_or(Ipv6Addr::UNSPECIFIED)
    };
    let (src, dst) = (pick(*sel), pick(*sel >> 4));
    let kind = match kind % 5 {
        0 => PuntKind::Local,
        1 => PuntKind::Resolve,
        2 => PuntKind::TtlExceeded,
        3 => PuntKind::NoRoute,
        _ => PuntKind::FragNeeded { mtu: 1280 },
    };
    let ip = ipv6::icmp_packet(src, dst, *hop, msg.to_vec());
    let host = MacAddr([2, 0, 0, 0, 0, 5]);
    let dmac = match dst.is_multicast() {
        true => ipv6::multicast_mac(&dst),
        false => crate::dp::snapshot::router_mac("br0"),
    };
    let in_port = u32::from(*port % 3);
    for frame in [ipv6::ethernet(dmac, host, &ip), data.to_vec()] {
        s.handle(Punt {
            in_port,
            kind,
            vnet: VnetHdr::default(),
            frame,
        });
    }
    s.tick(Instant::now());
}
