//! Service layer: the slow path. One thread receives frames the workers punted (ARP,
//! ICMP to the router, DHCP, DNS, frames waiting for ARP resolution, ICMP errors to
//! generate) over a bounded channel, answers them, and injects replies straight into
//! ports. A flood fills the channel and is dropped and counted by the workers; this
//! thread's own queues (ARP pending packets) are bounded per entry and in entries.
//!
//! The thread never takes the control mutex: it reads the configuration from the
//! snapshot, and DHCP leases (and the DNS names they bring) from the lease store
//! (`tables::leases`), under that store's own short lock.
//!
//! Read first: RFC 826 (ARP), RFC 792 (ICMP), RFC 1812 §4.3 (ICMP errors from routers),
//! RFC 2131/2132 (DHCP), RFC 1035 (DNS).

pub mod dhcp;
pub mod dhcp6;
pub mod dns;
pub mod forward;
mod ipbuild;
pub mod ndp;
mod tcp53;

use crate::dp::snapshot::{slot_of, BridgeRt, Snapshot, Upstream};
use crate::dp::{clock, DropReason};
use crate::pipeline::l3;
use crate::pipeline::punt::{Punt, PuntKind, PuntRx};
use crate::port::TxFrame;
use crate::tables::neigh::NeighCache;
use crate::tables::{LeaseStore, PortId};
use crate::wire::arp::{self, Arp};
use crate::wire::ipv4::{self, Ipv4Meta};
use crate::wire::ipv6;
use crate::wire::{EthFrame, MacAddr, VnetHdr};
use arc_swap::ArcSwap;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets queued per unresolved next hop.
const PENDING_PER_ENTRY: usize = 16;
/// Unresolved next hops tracked at once.
const PENDING_ENTRIES: usize = 1024;
/// ARP requests before giving up on a next hop.
const ARP_TRIES: u8 = 3;
const ARP_INTERVAL: Duration = Duration::from_secs(1);
/// ICMP errors per second (token bucket), as Linux's icmp_ratelimit.
const ICMP_ERRORS_PER_SEC: f64 = 100.0;

struct Queued {
    frame: Vec<u8>,
    vnet: VnetHdr,
    /// Routed through us (TTL to decrement) rather than originated by us.
    forwarded: bool,
}

struct Pending {
    frames: VecDeque<Queued>,
    tries: u8,
    next_try: Instant,
}

/// The service thread's state.
pub struct Service {
    snap: Arc<ArcSwap<Snapshot>>,
    neigh: Arc<NeighCache>,
    /// DHCP leases, shared with the control plane under their own short lock.
    leases: Arc<LeaseStore>,
    /// Counter slot of this thread in every port's counters.
    slot: usize,
    pending: HashMap<IpAddr, Pending>,
    learned: Vec<(IpAddr, MacAddr)>,
    icmp_tokens: f64,
    icmp_refill: Instant,
    tcp53: tcp53::Tcp53,
    /// Router Advertisements: when each bridge (by name) is due, how many were sent.
    ra: HashMap<String, ndp::RaState>,
    /// The snapshot generation `ra` was last pruned against.
    ra_generation: u64,
    /// Router Solicitations answered per second (token bucket).
    rs_tokens: f64,
    rs_refill: Instant,
    /// Names the bridges do not own go upstream through it (off this thread).
    forwarder: forward::Forwarder<dns::Reply>,
    /// DNS counters by bridge, read by the control plane.
    dns_stats: Arc<dns::DnsStats>,
}

impl Service {
    pub fn new(
        snap: Arc<ArcSwap<Snapshot>>,
        neigh: Arc<NeighCache>,
        leases: Arc<LeaseStore>,
        slot: usize,
    ) -> Service {
        Service {
            snap,
            neigh,
            leases,
            slot,
            pending: HashMap::new(),
            learned: Vec::new(),
            icmp_tokens: ICMP_ERRORS_PER_SEC,
            icmp_refill: Instant::now(),
            tcp53: tcp53::Tcp53::default(),
            ra: HashMap::new(),
            ra_generation: u64::MAX,
            rs_tokens: ndp::RS_ANSWERS_PER_SEC,
            rs_refill: Instant::now(),
            forwarder: forward::Forwarder::default(),
            dns_stats: Arc::default(),
        }
    }

    /// The DNS counters this thread keeps, for the control plane.
    pub fn dns_stats(&self) -> Arc<dns::DnsStats> {
        self.dns_stats.clone()
    }

    /// Serve punts until every sender is gone.
    pub fn run(mut self, rx: PuntRx) {
        let answers = self.forwarder.answers().clone();
        loop {
            let got = crossbeam_channel::select! {
                recv(rx) -> p => p.map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected),
                recv(answers) -> a => {
                    if let Ok(a) = a {
                        self.send_dns_guarded(a);
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                }
                default(Duration::from_millis(250)) => Err(crossbeam_channel::RecvTimeoutError::Timeout),
            };
            match got {
                Ok(p) => {
                    self.handle_guarded(p);
                    // Drain a bounded burst, then publish what was learned once.
                    for _ in 0..255 {
                        match rx.try_recv() {
                            Ok(p) => self.handle_guarded(p),
                            Err(_) => break,
                        }
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            self.flush_learned();
            self.tick(Instant::now());
        }
    }

    fn flush_learned(&mut self) {
        if !self.learned.is_empty() {
            if self.neigh.update(&self.learned, clock::now_secs()) {
                // A next hop changed its MAC (or was evicted): routed entries of the
                // kernel fast path made with the old one must miss from now on.
                if let Some(fp) = &self.snap.load().fastpath {
                    fp.bump();
                }
            }
            self.learned.clear();
        }
    }

    fn count_drop(&self, snap: &Snapshot, port: PortId) {
        if let Some(p) = snap.port(port) {
            p.counters.dropped(self.slot, DropReason::Service, 1);
        }
    }

    /// [`Service::handle`], but a panic on one frame (a bug, in our code or a codec's)
    /// costs that frame, not the whole slow path: it is logged and counted as a
    /// `service` drop, and the thread goes on.
    fn handle_guarded(&mut self, p: Punt) {
        let port = p.in_port;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(p)));
        if r.is_err() {
            tracing::error!(
                port,
                "slow path: a punted frame caused a panic; frame dropped"
            );
            let snap = self.snap.load_full();
            self.count_drop(&snap, port);
        }
    }

    /// Handle one punted frame.
    pub fn handle(&mut self, p: Punt) {
        let snap = self.snap.load_full();
        let Some(inp) = snap.port(p.in_port) else {
            return;
        };
        let bi = inp.bridge;
        let Ok(eth) = EthFrame::parse(&p.frame) else {
            return;
        };
        let l3_ofs = eth.payload_ofs + 2;
        match p.kind {
            PuntKind::Local => match eth.ethertype {
                ipv4::ETHERTYPE_ARP => self.arp(&snap, bi, p.in_port, &p.frame[l3_ofs..]),
                ipv4::ETHERTYPE_IPV4 => {
                    self.local_ip(&snap, bi, p.in_port, &eth, &p.frame[l3_ofs..])
                }
                ipv6::ETHERTYPE_IPV6 => {
                    self.local_ip6(&snap, bi, p.in_port, &eth, &p.frame[l3_ofs..])
                }
                _ => {}
            },
            _ if eth.ethertype == ipv6::ETHERTYPE_IPV6 => {
                self.punt6(&snap, bi, p.in_port, &eth, p.kind, &p.frame, p.vnet)
            }
            PuntKind::Resolve => self.resolve(&snap, p, l3_ofs),
            PuntKind::TtlExceeded => self.icmp_error(&snap, bi, &p.frame[l3_ofs..], 11, 0, 0),
            PuntKind::NoRoute => self.icmp_error(&snap, bi, &p.frame[l3_ofs..], 3, 0, 0),
            PuntKind::FragNeeded { mtu } => {
                self.icmp_error(&snap, bi, &p.frame[l3_ofs..], 3, 4, mtu)
            }
        }
    }

    /// Retry or give up on unresolved next hops.
    pub fn tick(&mut self, now: Instant) {
        self.ra_tick(now);
        if self.pending.is_empty() {
            return;
        }
        let snap = self.snap.load_full();
        let due: Vec<IpAddr> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let give_up = self.pending.get(&ip).is_none_or(|p| p.tries >= ARP_TRIES);
            if give_up {
                if let Some(p) = self.pending.remove(&ip) {
                    for q in p.frames {
                        if q.forwarded && ip.is_ipv6() {
                            self.unreachable6(&snap, &q.frame);
                        } else if q.forwarded {
                            if let Ok(eth) = EthFrame::parse(&q.frame) {
                                let l3 = eth.payload_ofs + 2;
                                if let Some(b) = bridge_of_source(&snap, &q.frame[l3..]) {
                                    // Host unreachable.
                                    self.icmp_error(&snap, b, &q.frame[l3..], 3, 1, 0);
                                }
                            }
                        }
                    }
                }
                continue;
            }
            self.send_arp_request(&snap, ip);
            if let Some(p) = self.pending.get_mut(&ip) {
                p.tries += 1;
                p.next_try = now + ARP_INTERVAL;
            }
        }
    }

    fn arp(&mut self, snap: &Snapshot, bi: usize, in_port: PortId, payload: &[u8]) {
        let Some(a) = Arp::parse(payload) else { return };
        // Overlay bridges: a remote endpoint's address is answered here (ARP suppression).
        let remote = snap.bridges[bi]
            .overlay
            .as_ref()
            .and_then(|o| o.arp.get(&a.tpa));
        if let Some(&mac) = remote.filter(|_| a.op == arp::OP_REQUEST) {
            let reply = Arp {
                op: arp::OP_REPLY,
                sha: mac,
                spa: a.tpa,
                tha: a.sha,
                tpa: a.spa,
            };
            self.send_port(snap, in_port, &reply.to_frame(a.sha, mac));
            return;
        }
        let Some(rif) = snap.bridges[bi].router else {
            return;
        };
        if !a.spa.is_unspecified() && rif.net.contains(&a.spa) && a.spa != rif.ip {
            self.learned.push((a.spa.into(), a.sha));
            if self.pending.contains_key(&a.spa.into()) {
                self.flush_learned();
                self.release(snap, a.spa.into(), a.sha);
            }
        }
        if a.op == arp::OP_REQUEST && a.tpa == rif.ip {
            let reply = Arp {
                op: arp::OP_REPLY,
                sha: rif.mac,
                spa: rif.ip,
                tha: a.sha,
                tpa: a.spa,
            };
            self.send_port(snap, in_port, &reply.to_frame(a.sha, rif.mac));
        }
    }

    fn local_ip(&mut self, snap: &Snapshot, bi: usize, in_port: PortId, eth: &EthFrame, ip: &[u8]) {
        let Ok(m) = Ipv4Meta::parse(ip) else { return };
        if m.fragment {
            return;
        }
        let body = &ip[m.hlen..m.total_len];
        let bridge = &snap.bridges[bi];
        // Which router address was asked, and may this bridge reach it?
        let target = snap.router_ip(m.dst);
        if let Some(t) = target {
            if t != bi && (bridge.isolated || snap.bridges[t].isolated) {
                self.count_drop(snap, in_port);
                return;
            }
        }
        match m.protocol {
            ipv4::PROTO_ICMP if target.is_some() => {
                if body.len() >= 8 && body[0] == 8 {
                    let mut reply = body.to_vec();
                    reply[0] = 0;
                    reply[2] = 0;
                    reply[3] = 0;
                    let c = ipv4::checksum(&reply);
                    reply[2..4].copy_from_slice(&c.to_be_bytes());
                    let pkt = ipbuild::ipv4(m.dst, m.src, ipv4::PROTO_ICMP, &reply);
                    self.emit(snap, pkt);
                }
            }
            ipv4::PROTO_UDP if body.len() >= 8 => {
                let sport = u16::from_be_bytes([body[0], body[1]]);
                let dport = u16::from_be_bytes([body[2], body[3]]);
                let data = &body[8..];
                if dport == 67 && bridge.dhcp.is_some() {
                    self.dhcp(snap, bi, in_port, eth, data);
                } else if dport == 53 && target == Some(bi) {
                    let reply = dns::Reply::Udp {
                        client: m.src,
                        server: m.dst,
                        cport: sport,
                        limit: dns::udp_limit(data, bridge.mtu),
                    };
                    self.dns_query(snap, bi, in_port, data, reply);
                } else if target.is_some() {
                    // Port unreachable.
                    self.icmp_error(snap, bi, ip, 3, 3, 0);
                }
            }
            ipv4::PROTO_TCP if target == Some(bi) && body.len() >= 20 && body[2..4] == [0, 53] => {
                let ends = tcp53::Ends::V4 {
                    client: m.src,
                    server: m.dst,
                };
                match self.tcp53.handle(ends, body, bridge.mtu) {
                    tcp53::Out::Packet(pkt) => self.emit(snap, pkt),
                    tcp53::Out::Query(q, reply) => {
                        self.dns_query(snap, bi, in_port, &q, dns::Reply::Tcp(reply))
                    }
                    tcp53::Out::None => {}
                    tcp53::Out::Drop => self.count_drop(snap, in_port),
                }
            }
            _ => self.count_drop(snap, in_port),
        }
    }

    /// A DNS query to bridge `bi`'s gateway: answered here, or handed to the forwarder
    /// (whose answer comes back through [`Service::run`]).
    fn dns_query(
        &mut self,
        snap: &Snapshot,
        bi: usize,
        in_port: PortId,
        q: &[u8],
        reply: dns::Reply,
    ) {
        let bridge = &snap.bridges[bi];
        let now = dhcp::unix_now();
        let forwards = bridge.dns != Upstream::Off;
        // Static names first, then the names of live DHCP leases (the lease store's
        // own short lock, never the control mutex).
        let leased = self.leases.names(&bridge.name).unwrap_or_default();
        let names = [&*bridge.names, &leased];
        let leased6 = self.leases.names6(&bridge.name, now).unwrap_or_default();
        let names6 = [&*bridge.names6, &leased6];
        self.dns_stats.update(&bridge.name, |c| c.queries += 1);
        match dns::answer(&names, &names6, &bridge.name, q, now, forwards) {
            Some(dns::Answer::Local(resp)) => self.send_dns(snap, reply, resp),
            Some(dns::Answer::Forward) => {
                self.dns_stats.update(&bridge.name, |c| c.forwarded += 1);
                let req = forward::Request {
                    upstream: bridge.dns.clone(),
                    query: q.to_vec(),
                    reply,
                    avoid: snap.router_ips.keys().copied().collect(),
                };
                if let Err(req) = self.forwarder.forward(req) {
                    if let Some(resp) = forward::servfail(&req.query) {
                        self.send_dns(snap, req.reply, resp);
                    }
                }
            }
            None => self.count_drop(snap, in_port),
        }
    }

    /// [`Service::send_dns`] of a forwarded answer: upstream bytes are parsed on the
    /// way (to fit a UDP limit), so a panic in the codec costs that answer only.
    fn send_dns_guarded(&mut self, a: forward::Answer<dns::Reply>) {
        let snap = self.snap.load_full();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.send_dns(&snap, a.reply, a.message)
        }));
        if r.is_err() {
            tracing::error!("slow path: a forwarded DNS answer caused a panic; answer dropped");
        }
    }

    /// Send the DNS answer `msg` back the way its query came, counted by its response
    /// code on the bridge whose gateway was asked.
    fn send_dns(&mut self, snap: &Snapshot, reply: dns::Reply, msg: Vec<u8>) {
        let bi = match &reply {
            dns::Reply::Udp { server, .. } => snap.router_ip(*server),
            dns::Reply::Tcp(r) => match r.ends() {
                tcp53::Ends::V4 { server, .. } => snap.router_ip(server),
                tcp53::Ends::V6 { server, .. } => snap.router_ip6(&server),
            },
            dns::Reply::Udp6 { port, .. } | dns::Reply::Tcp6 { port, .. } => {
                snap.port(*port).map(|p| p.bridge)
            }
        };
        if let Some(b) = bi.and_then(|i| snap.bridges.get(i)) {
            self.dns_stats.update(&b.name, |c| c.count_answer(&msg));
        }
        match reply {
            dns::Reply::Udp {
                client,
                server,
                cport,
                limit,
            } => {
                let msg = dns::fit_udp(msg, limit);
                let udp = ipbuild::udp(server, client, 53, cport, &msg);
                self.emit(snap, ipbuild::ipv4(server, client, ipv4::PROTO_UDP, &udp));
            }
            dns::Reply::Tcp(r) => {
                for pkt in r.segments(&msg) {
                    self.emit(snap, pkt);
                }
            }
            dns::Reply::Tcp6 { reply, port, mac } => {
                let Some(rif) = router6_of(snap, port) else {
                    return;
                };
                for pkt in reply.segments(&msg) {
                    self.send_port(snap, port, &ipv6::ethernet(mac, rif.mac, &pkt));
                }
            }
            dns::Reply::Udp6 {
                client,
                server,
                cport,
                limit,
                port,
                mac,
            } => {
                let msg = dns::fit_udp(msg, limit);
                let Some(rif) = router6_of(snap, port) else {
                    return;
                };
                let udp = ndp::udp6(server, client, 53, cport, &msg);
                let pkt = ipv6::packet(server, client, ipv6::NEXT_UDP, 64, &udp);
                self.send_port(snap, port, &ipv6::ethernet(mac, rif.mac, &pkt));
            }
        }
    }

    /// Answer a DHCP message from the bridge's lease pool: its own short lock, never
    /// the control mutex; the daemon writes changed leases to the db in batches.
    fn dhcp(&mut self, snap: &Snapshot, bi: usize, in_port: PortId, eth: &EthFrame, data: &[u8]) {
        let bridge = &snap.bridges[bi];
        let Some(rif) = bridge.router else { return };
        let now = dhcp::unix_now();
        let out = self
            .leases
            .with_pool(&bridge.name, |pool| dhcp::serve(pool, data, eth.src, now))
            .flatten();
        // A DHCPv6 lease of the same MAC without a name of its own takes this one.
        if bridge.dhcp6 {
            if let Some(h) = self.leases.hostname_of(&bridge.name, eth.src, now) {
                self.leases
                    .with_pool6(&bridge.name, |p6| p6.inherit_name(eth.src, &h));
            }
        }
        let Some(out) = out else {
            self.count_drop(snap, in_port);
            return;
        };
        let (dst_ip, dst_mac) = match out.unicast {
            Some(ip) => (ip, eth.src),
            None => (Ipv4Addr::BROADCAST, MacAddr::BROADCAST),
        };
        let udp = ipbuild::udp(rif.ip, dst_ip, 67, 68, &out.reply);
        let pkt = ipbuild::ipv4(rif.ip, dst_ip, ipv4::PROTO_UDP, &udp);
        let frame = ipbuild::ethernet(dst_mac, rif.mac, &pkt);
        self.send_port(snap, in_port, &frame);
    }

    /// A routed frame whose next hop is unknown: queue it and ask.
    fn resolve(&mut self, snap: &Snapshot, p: Punt, l3_ofs: usize) {
        let Ok(m) = Ipv4Meta::parse(&p.frame[l3_ofs..]) else {
            return;
        };
        let Some(r) = snap.routes.lookup(m.dst) else {
            return;
        };
        let nh = r.via.unwrap_or(m.dst);
        // An overlay bridge knows its remote endpoints' MACs without asking (and then the
        // workers do too).
        let remote = snap.bridges[r.bridge]
            .overlay
            .as_ref()
            .and_then(|o| o.arp.get(&nh));
        if let Some(&mac) = remote {
            self.learned.push((nh.into(), mac));
        }
        // It may have been learned since the worker looked.
        let cached = NeighCache::lookup(&self.neigh.load(), nh, clock::now_secs());
        if let Some(mac) = cached.or(remote.copied()) {
            let mut f = p.frame;
            if let Some(rif) = snap.bridges[r.bridge].router {
                l3::rewrite(&mut f, l3_ofs, mac, rif.mac);
                self.send_bridge(snap, r.bridge, &f, p.vnet);
            }
            return;
        }
        self.enqueue(
            snap,
            nh.into(),
            Queued {
                frame: p.frame,
                vnet: p.vnet,
                forwarded: true,
            },
        );
    }

    fn enqueue(&mut self, snap: &Snapshot, nh: IpAddr, q: Queued) {
        if !self.pending.contains_key(&nh) {
            if self.pending.len() >= PENDING_ENTRIES {
                return;
            }
            self.pending.insert(
                nh,
                Pending {
                    frames: VecDeque::new(),
                    tries: 1,
                    next_try: Instant::now() + ARP_INTERVAL,
                },
            );
            self.send_arp_request(snap, nh);
        }
        if let Some(p) = self.pending.get_mut(&nh) {
            if p.frames.len() >= PENDING_PER_ENTRY {
                p.frames.pop_front();
            }
            p.frames.push_back(q);
        }
    }

    fn send_arp_request(&self, snap: &Snapshot, nh: IpAddr) {
        let nh = match nh {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => return self.send_neighbor_solicit(snap, a),
        };
        let Some((bi, rif)) = snap
            .bridges
            .iter()
            .enumerate()
            .find_map(|(i, b)| b.router.filter(|r| r.net.contains(&nh)).map(|r| (i, r)))
        else {
            return;
        };
        let req = Arp {
            op: arp::OP_REQUEST,
            sha: rif.mac,
            spa: rif.ip,
            tha: MacAddr::default(),
            tpa: nh,
        };
        self.send_bridge(
            snap,
            bi,
            &req.to_frame(MacAddr::BROADCAST, rif.mac),
            VnetHdr::default(),
        );
    }

    /// `nh` answered: send everything that waited for it.
    fn release(&mut self, snap: &Snapshot, nh: IpAddr, mac: MacAddr) {
        let Some(p) = self.pending.remove(&nh) else {
            return;
        };
        let (bi, rmac) = match nh {
            IpAddr::V4(a) => {
                let Some(bi) = snap
                    .routes
                    .lookup(a)
                    .filter(|r| r.via.is_none())
                    .map(|r| r.bridge)
                else {
                    return;
                };
                let Some(rif) = snap.bridges[bi].router else {
                    return;
                };
                (bi, rif.mac)
            }
            IpAddr::V6(a) => {
                let Some(bi) = snap
                    .routes6
                    .lookup(a)
                    .filter(|r| r.via.is_none())
                    .map(|r| r.bridge)
                else {
                    return;
                };
                let Some(rif) = snap.bridges[bi].router6 else {
                    return;
                };
                (bi, rif.mac)
            }
        };
        for mut q in p.frames {
            let Ok(eth) = EthFrame::parse(&q.frame) else {
                continue;
            };
            let l3_ofs = eth.payload_ofs + 2;
            if q.forwarded {
                l3::rewrite(&mut q.frame, l3_ofs, mac, rmac);
            } else {
                q.frame[0..6].copy_from_slice(&mac.0);
                q.frame[6..12].copy_from_slice(&rmac.0);
            }
            self.send_bridge(snap, bi, &q.frame, q.vnet);
        }
    }

    /// Send an IP packet the router originates (ICMP, DNS reply) towards its
    /// destination through the route table.
    fn emit(&mut self, snap: &Snapshot, pkt: Vec<u8>) {
        let Ok(m) = Ipv4Meta::parse(&pkt) else { return };
        let Some(r) = snap.routes.lookup(m.dst) else {
            return;
        };
        let Some(rif) = snap.bridges[r.bridge].router else {
            return;
        };
        let nh = r.via.unwrap_or(m.dst);
        match NeighCache::lookup(&self.neigh.load(), nh, clock::now_secs()) {
            Some(mac) => {
                let f = ipbuild::ethernet(mac, rif.mac, &pkt);
                self.send_bridge(snap, r.bridge, &f, VnetHdr::default());
            }
            None => {
                let f = ipbuild::ethernet(MacAddr::default(), rif.mac, &pkt);
                self.enqueue(
                    snap,
                    nh.into(),
                    Queued {
                        frame: f,
                        vnet: VnetHdr::default(),
                        forwarded: false,
                    },
                );
            }
        }
    }

    /// Answer `orig` (an IPv4 packet that arrived on bridge `bi`) with an ICMP error.
    fn icmp_error(&mut self, snap: &Snapshot, bi: usize, orig: &[u8], ty: u8, code: u8, mtu: u16) {
        let Ok(m) = Ipv4Meta::parse(orig) else { return };
        // RFC 1812 4.3.2.7: never about ICMP errors, fragments, or non-unicast sources.
        if m.fragment || m.src.is_broadcast() || m.src.is_multicast() || m.src.is_unspecified() {
            return;
        }
        if m.protocol == ipv4::PROTO_ICMP && orig.get(m.hlen).is_some_and(|t| ![0, 8].contains(t)) {
            return;
        }
        if !self.icmp_token() {
            return;
        }
        let Some(rif) = snap.bridges.get(bi).and_then(|b| b.router) else {
            return;
        };
        let quote = &orig[..(m.hlen + 8).min(m.total_len)];
        let mut icmp = vec![ty, code, 0, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(quote);
        let c = ipv4::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let pkt = ipbuild::ipv4(rif.ip, m.src, ipv4::PROTO_ICMP, &icmp);
        self.emit(snap, pkt);
    }

    /// Take one token of the ICMP error budget (both families): false when spent.
    fn icmp_token(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.icmp_refill).as_secs_f64();
        self.icmp_refill = now;
        self.icmp_tokens = (self.icmp_tokens + dt * ICMP_ERRORS_PER_SEC).min(ICMP_ERRORS_PER_SEC);
        if self.icmp_tokens < 1.0 {
            return false;
        }
        self.icmp_tokens -= 1.0;
        true
    }

    fn send_port(&self, snap: &Snapshot, port: PortId, frame: &[u8]) {
        let Some(p) = snap.port(port) else { return };
        let tx = [tx_frame(frame, VnetHdr::default(), None)];
        crate::dp::impair::transmit(snap, self.slot, p, &tx, snap.taps.active());
    }

    /// L2 output of an untagged frame on bridge `bi`: to the port its destination was
    /// learned on, else to every port carrying untagged traffic.
    fn send_bridge(&self, snap: &Snapshot, bi: usize, frame: &[u8], vnet: VnetHdr) {
        let Some(b) = snap.bridges.get(bi) else {
            return;
        };
        let Ok(eth) = EthFrame::parse(frame) else {
            return;
        };
        let now = clock::now_secs();
        let targets: Vec<usize> = match b
            .fdb
            .lookup(0, eth.dst, now)
            .filter(|_| !eth.dst.is_multicast())
        {
            Some(pid) if snap.port(pid).is_some_and(|p| p.bridge == bi) => vec![slot_of(pid)],
            _ => flood_slots(snap, b),
        };
        for s in targets {
            if let Some(Some(p)) = snap.ports.get(s) {
                let tx = [tx_frame(frame, vnet, p.vlan.egress_tag(0))];
                crate::dp::impair::transmit(snap, self.slot, p, &tx, snap.taps.active());
            }
        }
    }
}

fn flood_slots(snap: &Snapshot, b: &BridgeRt) -> Vec<usize> {
    b.ports
        .iter()
        .map(|s| usize::from(*s))
        .filter(
            |s| matches!(snap.ports.get(*s), Some(Some(p)) if p.vlan.carries(0) && !p.mirror_out),
        )
        .collect()
}

fn tx_frame(frame: &[u8], vnet: VnetHdr, tag: Option<u16>) -> TxFrame<'_> {
    let split = crate::wire::field::ETHERTYPE.start.min(frame.len());
    TxFrame {
        vnet,
        head: &frame[..split],
        tag: tag.map(crate::wire::vlan_tag),
        rest: &frame[split..],
    }
}

/// The bridge whose subnet holds the source of `ip` (where an ICMP error goes).
fn bridge_of_source(snap: &Snapshot, ip: &[u8]) -> Option<usize> {
    let m = Ipv4Meta::parse(ip).ok()?;
    snap.bridges
        .iter()
        .position(|b| b.router.is_some_and(|r| r.net.contains(&m.src)))
}

/// The IPv6 router interface of the bridge port `port` is on, if it routes IPv6.
fn router6_of(snap: &Snapshot, port: PortId) -> Option<crate::dp::snapshot::Router6If> {
    snap.port(port)
        .and_then(|p| snap.bridges.get(p.bridge))
        .and_then(|b| b.router6)
}

#[cfg(test)]
mod tests;
