//! Tracing: the pipeline's decisions for one frame, stage by stage, recorded while the
//! frame runs through the real stages in a dry run (`vswitchctl trace`, like
//! `ovs-appctl ofproto/trace`).
//!
//! A [`Tracer`] rides in the [`Ctx`] (`ctx.trace`, `None` on the data path). When it is
//! there, the stages do everything they normally do to decide, but change nothing
//! shared: no MAC learning, no conntrack writes (a new NAT connection is checked for a
//! free port, not recorded), no punt to the service thread and no counters; and the
//! caller never flushes the output queues. Each stage notes what it decided with
//! [`note`]; the closure that formats the note runs only when tracing, so the data
//! path pays one untaken branch per note.

use super::l3::Verdict;
use super::punt::PuntKind;
use super::{Ctx, Meta};
use crate::dp::snapshot::{PortEntry, PortLock, VlanMode};
use crate::dp::DropReason;
use crate::tables::conntrack::Tuple;
use crate::wire::{ipv4, ipv6, EthFrame};
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv6Addr};

/// One stage's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `parse`, `vlan`, `security`, `learn`, `l2`, `nat`, `l3`, `rewrite`, `router`.
    pub stage: &'static str,
    pub text: String,
}

/// How the frame's journey ended, when it did not end in output queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Drop(DropReason),
    Punt(PuntKind),
}

/// The record of one traced frame.
#[derive(Debug, Default)]
pub struct Tracer {
    steps: RefCell<Vec<Step>>,
    end: RefCell<Option<End>>,
    flooded: Cell<bool>,
}

impl Tracer {
    pub fn new() -> Tracer {
        Tracer::default()
    }

    pub fn push(&self, stage: &'static str, text: String) {
        self.steps.borrow_mut().push(Step { stage, text });
    }

    /// The frame was dropped (the first reason sticks: a frame is dropped once).
    pub fn dropped(&self, r: DropReason) {
        self.end.borrow_mut().get_or_insert(End::Drop(r));
    }

    /// The frame went to the service thread (instead of, or besides, the output).
    pub fn punted(&self, k: PuntKind) {
        self.end.borrow_mut().get_or_insert(End::Punt(k));
    }

    /// The L2 stage flooded the frame (rather than sending it to a learned port).
    pub fn set_flooded(&self) {
        self.flooded.set(true);
    }

    pub fn flooded(&self) -> bool {
        self.flooded.get()
    }

    pub fn steps(&self) -> Vec<Step> {
        self.steps.borrow().clone()
    }

    pub fn end(&self) -> Option<End> {
        *self.end.borrow()
    }
}

/// Note a decision of `stage` when tracing; `text` runs only then.
#[inline(always)]
pub fn note(ctx: &Ctx<'_>, stage: &'static str, text: impl FnOnce() -> String) {
    if let Some(t) = ctx.trace {
        t.push(stage, text());
    }
}

/// The stage a drop reason belongs to (for the trace's last line).
pub fn stage_of(r: DropReason) -> &'static str {
    use DropReason as D;
    match r {
        D::Malformed => "parse",
        D::VlanFiltered => "vlan",
        D::BadSource | D::SpoofedMac | D::SpoofedIp | D::RogueRouter => "security",
        D::SameSegment => "l2",
        D::NoPort | D::MirrorOutput => "input",
        D::NotRoutable | D::Isolated | D::TooBig => "l3",
        D::CtBusy | D::NatExhausted => "nat",
        D::PuntQueueFull | D::Service => "router",
        D::TxError | D::TxQueueFull | D::Impaired => "output",
    }
}

/// What the service thread does with a punted frame, in words.
pub fn punt_text(k: PuntKind) -> String {
    match k {
        PuntKind::Local => {
            "to the router itself: answered by its services (ARP, ICMP echo, DHCP, DNS)".into()
        }
        PuntKind::Resolve => {
            "next hop's MAC unknown: the router would ARP for it and queue the packet".into()
        }
        PuntKind::TtlExceeded => "TTL expires: the router would answer ICMP time exceeded".into(),
        PuntKind::NoRoute => "no route: the router would answer ICMP network unreachable".into(),
        PuntKind::FragNeeded { mtu } => format!(
            "too big for the egress MTU with DF set: the router would answer ICMP fragmentation needed (mtu {mtu})"
        ),
    }
}

/// Short name of a punt (JSON).
pub fn punt_name(k: PuntKind) -> &'static str {
    match k {
        PuntKind::Local => "local",
        PuntKind::Resolve => "resolve",
        PuntKind::TtlExceeded => "ttl_exceeded",
        PuntKind::NoRoute => "no_route",
        PuntKind::FragNeeded { .. } => "frag_needed",
    }
}

/// A 5-tuple as `tcp 10.0.0.5:40000 → 198.51.100.1:80` (ICMP: the echo identifier).
pub fn tuple_text(t: &Tuple) -> String {
    let proto = match t.proto {
        ipv4::PROTO_TCP => "tcp",
        ipv4::PROTO_UDP => "udp",
        ipv4::PROTO_ICMP => "icmp",
        _ => "ip",
    };
    format!("{proto} {}:{} → {}:{}", t.src, t.sport, t.dst, t.dport)
}

/// Notes for a frame the port admitted: its VLAN, the source checks, and the MAC it
/// would learn.
pub(super) fn admitted(ctx: &Ctx<'_>, inp: &PortEntry, meta: &Meta, f: &[u8]) {
    let Some(t) = ctx.trace else { return };
    let how = match (&inp.vlan, meta.eth.tagged) {
        (VlanMode::Access(v), _) => format!("access port of vlan {v}: untagged frame, vlan {v}"),
        (VlanMode::Trunk(_), true) => format!("trunk port: tagged frame, vlan {}", meta.vlan),
        (VlanMode::Trunk(_), false) => "trunk port: untagged frame, vlan 0".to_string(),
    };
    t.push("vlan", how);
    t.push(
        "security",
        match &inp.lock {
            Some(l) if !l.locks_addresses() => {
                format!("port locked to {}: source allowed", l.mac)
            }
            Some(l) => lock_text(l, meta, f),
            None => format!("source {} allowed", meta.eth.src),
        },
    );
    t.push(
        "learn",
        format!(
            "{} on vlan {} would be learned on port {} (not in a trace)",
            meta.eth.src, meta.vlan, inp.name
        ),
    );
}

/// "port locked to MAC and its addresses" (the addresses listed).
fn lock_prefix(l: &PortLock) -> String {
    let mut addrs: Vec<String> = l.ips.iter().map(ToString::to_string).collect();
    addrs.extend(l.ips6.iter().map(ToString::to_string));
    format!("port locked to {} and {}", l.mac, addrs.join(", "))
}

/// The source address of frame `f`: IPv4, ARP's sender, IPv6.
fn frame_src(eth: &EthFrame, f: &[u8]) -> Option<IpAddr> {
    let l3 = f.get(eth.payload_ofs + 2..)?;
    match eth.ethertype {
        ipv4::ETHERTYPE_IPV4 => Some(<[u8; 4]>::try_from(l3.get(12..16)?).ok()?.into()),
        ipv4::ETHERTYPE_ARP => Some(<[u8; 4]>::try_from(l3.get(14..18)?).ok()?.into()),
        ipv6::ETHERTYPE_IPV6 => Some(<[u8; 16]>::try_from(l3.get(8..24)?).ok()?.into()),
        _ => None,
    }
}

/// What frame `f` is, for port security's notes: `IPv6 from fd00:1::5, a Neighbor
/// Advertisement for fd00:1::1`.
fn lock_subject(eth: &EthFrame, f: &[u8]) -> String {
    let fam = match eth.ethertype {
        ipv4::ETHERTYPE_IPV4 => "IPv4",
        ipv4::ETHERTYPE_ARP => "ARP",
        ipv6::ETHERTYPE_IPV6 => "IPv6",
        t => return format!("EtherType 0x{t:04x}"),
    };
    let Some(src) = frame_src(eth, f) else {
        return format!("{fam}, cut short");
    };
    let mut s = format!("{fam} from {src}");
    // ICMPv6 right after the fixed header (Neighbor Discovery never has extension
    // headers in front).
    let l3 = f.get(eth.payload_ofs + 2..).unwrap_or_default();
    if eth.ethertype == ipv6::ETHERTYPE_IPV6 && l3.get(6) == Some(&ipv6::NEXT_ICMPV6) {
        let msg = l3.get(ipv6::HLEN..).unwrap_or_default();
        let target = msg
            .get(8..24)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from);
        let what = match (msg.first(), target) {
            (Some(&ipv6::icmp::NEIGHBOR_ADVERT), Some(t)) => {
                format!("a Neighbor Advertisement for {t}")
            }
            (Some(&ipv6::icmp::NEIGHBOR_SOLICIT), Some(t)) => {
                format!("a Neighbor Solicitation for {t}")
            }
            (Some(&ipv6::icmp::ROUTER_ADVERT), _) => "a Router Advertisement".into(),
            (Some(&137), _) => "a Redirect".into(),
            _ => String::new(),
        };
        if !what.is_empty() {
            s = format!("{s}, {what}");
        }
    }
    s
}

/// What an address lock let through, naming the source address (and for IPv6, why
/// it may send from it).
fn lock_text(l: &PortLock, meta: &Meta, f: &[u8]) -> String {
    let locked = lock_prefix(l);
    match frame_src(&meta.eth, f) {
        Some(IpAddr::V6(a)) if a == l.ll => {
            format!("{locked}: source {a} allowed (the locked MAC's link-local address)")
        }
        Some(a) if a.is_unspecified() && a.is_ipv6() => {
            format!("{locked}: source :: allowed (duplicate address detection or MLD)")
        }
        Some(a) if a.is_unspecified() => {
            format!("{locked}: source 0.0.0.0 allowed (DHCP client or ARP probe)")
        }
        Some(a) => format!("{locked}: source {a} allowed"),
        None => format!("{locked}: source allowed"),
    }
}

/// Why port security refused frame `f` (`r`: the drop reason), for the trace.
pub(super) fn lock_refused(l: &PortLock, eth: &EthFrame, f: &[u8], r: DropReason) -> String {
    let v6 = eth.ethertype == ipv6::ETHERTYPE_IPV6;
    let why = match r {
        DropReason::SpoofedMac => format!(
            "{} (or the MAC it names) is not the locked MAC {}",
            eth.src, l.mac
        ),
        DropReason::SpoofedIp if v6 && l.ips6.is_empty() => {
            "no IPv6 address is locked, so no IPv6 passes".into()
        }
        DropReason::SpoofedIp
            if !v6
                && eth.ethertype != ipv4::ETHERTYPE_IPV4
                && eth.ethertype != ipv4::ETHERTYPE_ARP =>
        {
            "only IPv4, ARP and IPv6 pass a port locked to addresses".into()
        }
        DropReason::SpoofedIp => "not an address the port may use".into(),
        DropReason::RogueRouter => "a locked port may not act as a router".into(),
        DropReason::Malformed => "headers cut short or malformed".into(),
        r => r.as_str().into(),
    };
    let who = if l.locks_addresses() {
        lock_prefix(l)
    } else {
        format!("port locked to {}", l.mac)
    };
    format!("{who}: {}: {why}", lock_subject(eth, f))
}

/// The L3 decision in words: the route (and next hop) behind `verdict`.
pub(super) fn l3_text(ctx: &Ctx<'_>, in_bridge: usize, meta: &Meta, verdict: &Verdict) -> String {
    let snap = ctx.snap;
    let Some(ip) = meta.ip else {
        return "not IPv4".into();
    };
    let bridge = |i: usize| snap.bridges.get(i).map_or("?", |b| b.name.as_str());
    let route = snap.routes.lookup(ip.dst).map(|r| match r.via {
        Some(via) => format!(
            "route to {} via {via} on bridge {}",
            ip.dst,
            bridge(r.bridge)
        ),
        None => format!(
            "route to {}: connected subnet of bridge {}",
            ip.dst,
            bridge(r.bridge)
        ),
    });
    let route = route.unwrap_or_else(|| format!("no route to {}", ip.dst));
    match verdict {
        Verdict::Forward { bridge: b, mac } => {
            let hop = snap
                .routes
                .lookup(ip.dst)
                .and_then(|r| r.via)
                .unwrap_or(ip.dst);
            let n = match mac {
                Some(m) => format!("next hop {hop} is at {m} (neighbour cache)"),
                None => format!("next hop {hop}: MAC not known yet"),
            };
            let from = if *b == in_bridge {
                " (same bridge)"
            } else {
                ""
            };
            format!("{route}{from}; TTL {}; {n}", ip.ttl)
        }
        Verdict::Punt(PuntKind::Local) => format!("{} is the router's own address", ip.dst),
        Verdict::Punt(_) => route,
        Verdict::Drop(DropReason::Isolated) => format!(
            "{route}: between bridge {} and another bridge, one of them --isolated",
            bridge(in_bridge)
        ),
        Verdict::Drop(_) => route,
    }
}

#[cfg(test)]
mod tests {
    //! The trace's decision must be what the data path then does to the same frame.
    use super::*;
    use crate::dp::snapshot::{router_mac, Snapshot};
    use crate::dp::Batch;
    use crate::pipeline::punt::Punt;
    use crate::pipeline::rig::Rig;
    use crate::pipeline::{flush, process, OutQueues};
    use crate::port::mem::MemPort;
    use crate::tables::neigh::{Neigh, NeighMap};
    use crate::wire::MacAddr;
    use etherparse::PacketBuilder;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    /// What happened to a frame: ports it left by, why it was dropped, where it was
    /// punted.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    struct Outcome {
        ports: Vec<usize>,
        drop: Option<&'static str>,
        punt: Option<PuntKind>,
    }

    struct World {
        snap: Snapshot,
        mems: Vec<Arc<MemPort>>,
        neigh: NeighMap,
        now: u32,
    }

    fn world() -> World {
        let (snap, mems) = Rig::new().into_parts();
        let mut neigh = NeighMap::new();
        for (ip, last) in [([10, 0, 0, 5], 5u8), ([198, 51, 100, 1], 1)] {
            neigh.insert(
                std::net::IpAddr::from(Ipv4Addr::from(ip)),
                Neigh {
                    mac: MacAddr([2, 0, 0, 0, 0, last]),
                    learned: 1,
                },
            );
        }
        World {
            snap,
            mems,
            neigh,
            now: 10,
        }
    }

    impl World {
        fn drops(&self) -> BTreeMap<(usize, &'static str), u64> {
            let mut m = BTreeMap::new();
            for (i, p) in self.snap.ports.iter().enumerate() {
                if let Some(p) = p {
                    let t = p.counters.totals();
                    for (r, n) in t.drops {
                        m.insert((i, r), n);
                    }
                    m.insert((i, "rx"), t.rx_packets);
                }
            }
            m
        }

        fn traced(&self, port: usize, f: &[u8]) -> (Outcome, Tracer) {
            let tracer = Tracer::new();
            let ctx = Ctx {
                worker: usize::MAX,
                now: self.now,
                snap: &self.snap,
                neigh: &self.neigh,
                punt: None,
                trace: Some(&tracer),
            };
            let mut b = Batch::new();
            assert!(b.push_copy(f));
            let mut out = OutQueues::default();
            let before = self.drops();
            let ct = self.snap.conntrack.entries(self.now).len();
            let fdb = self.snap.bridges[0].fdb.entries(self.now).len();
            process(&ctx, port as u32, &mut b, &mut out);
            assert_eq!(self.drops(), before, "a trace counted something");
            assert_eq!(
                self.snap.conntrack.entries(self.now).len(),
                ct,
                "a trace recorded a connection"
            );
            assert_eq!(
                self.snap.bridges[0].fdb.entries(self.now).len(),
                fdb,
                "a trace learned a MAC"
            );
            let mut ports: Vec<usize> = out.queued_ports().iter().map(|q| q.0).collect();
            ports.sort_unstable();
            out.discard();
            let mut o = Outcome {
                ports,
                ..Default::default()
            };
            match tracer.end() {
                Some(End::Drop(r)) => o.drop = Some(r.as_str()),
                Some(End::Punt(k)) => o.punt = Some(k),
                None => {}
            }
            for m in &self.mems {
                assert!(m.take_sent().is_empty(), "a trace sent a frame");
            }
            (o, tracer)
        }

        fn real(&self, port: usize, f: &[u8]) -> Outcome {
            let (tx, rx) = crossbeam_channel::bounded::<Punt>(4);
            let ctx = Ctx {
                worker: 0,
                now: self.now,
                snap: &self.snap,
                neigh: &self.neigh,
                punt: Some(&tx),
                trace: None,
            };
            let mut b = Batch::new();
            assert!(b.push_copy(f));
            let mut out = OutQueues::default();
            let before = self.drops();
            process(&ctx, port as u32, &mut b, &mut out);
            flush(&ctx, &b, &mut out);
            let after = self.drops();
            let mut o = Outcome::default();
            for (k, n) in &after {
                if k.1 != "rx" && before.get(k).copied().unwrap_or(0) < *n {
                    o.drop = Some(k.1);
                }
            }
            o.punt = rx.try_recv().ok().map(|p| p.kind);
            for (i, m) in self.mems.iter().enumerate() {
                if !m.take_sent().is_empty() {
                    o.ports.push(i);
                }
            }
            o
        }

        /// Trace `f`, then send it for real: the two must agree.
        fn agree(&self, port: usize, f: &[u8]) -> (Outcome, Tracer) {
            let (t, tracer) = self.traced(port, f);
            let r = self.real(port, f);
            assert_eq!(
                t,
                r,
                "trace and data path disagree; trace: {:?}",
                tracer.steps()
            );
            (t, tracer)
        }
    }

    fn eth(dst: MacAddr, src: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0, (v >> 8) as u8, v as u8]);
        }
        f
    }

    fn tcp(dst: MacAddr, src: [u8; 6], s: [u8; 4], d: [u8; 4], dport: u16, ttl: u8) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(src, dst.0)
            .ipv4(s, d, ttl)
            .tcp(40000, dport, 1, 65535)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        f
    }

    fn icmp(dst: MacAddr, src: [u8; 6], s: [u8; 4], d: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(src, dst.0)
            .ipv4(s, d, 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut f, &[0; 16])
            .unwrap();
        f
    }

    const H5: [u8; 6] = [2, 0, 0, 0, 0, 5];
    const OUT: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn text(t: &Tracer) -> String {
        t.steps()
            .iter()
            .map(|s| format!("{}: {}", s.stage, s.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn switching_flood_and_learned_unicast() {
        let w = world();
        // Broadcast on vlan 5 from the trunk: flooded to the access port of vlan 5.
        let mut bc = eth(MacAddr::BROADCAST, H5, Some(5));
        bc.extend_from_slice(&[0x08, 0x00]);
        bc.resize(60, 0);
        let (o, t) = w.agree(0, &bc);
        assert_eq!(o.ports, vec![1]);
        assert!(t.flooded());
        // Learn a host behind port 1 for real, then a unicast to it is forwarded.
        let mut from1 = eth(MacAddr::BROADCAST, [2, 0, 0, 0, 0, 9], None);
        from1.extend_from_slice(&[0x08, 0x00]);
        from1.resize(60, 0);
        w.real(1, &from1);
        let mut uni = eth(MacAddr([2, 0, 0, 0, 0, 9]), H5, Some(5));
        uni.extend_from_slice(&[0x08, 0x00]);
        uni.resize(60, 0);
        let (o, t) = w.agree(0, &uni);
        assert_eq!(o.ports, vec![1]);
        assert!(!t.flooded());
        assert!(text(&t).contains("learned on port p1"), "{}", text(&t));
    }

    #[test]
    fn routing_masquerade_and_publish() {
        let w = world();
        let syn = tcp(
            router_mac("br0"),
            H5,
            [10, 0, 0, 5],
            [198, 51, 100, 1],
            80,
            64,
        );
        let (o, t) = w.agree(0, &syn);
        assert_eq!(o.ports, vec![2]);
        let s = text(&t);
        assert!(
            s.contains("masquerade: new connection tcp 10.0.0.5:40000 → 198.51.100.1:80 becomes tcp 198.51.100.2:40000 → 198.51.100.1:80"),
            "{s}"
        );
        // The second packet of the connection: the data path recorded it just now.
        let (_, t) = w.agree(0, &syn);
        assert!(text(&t).contains("existing connection"), "{}", text(&t));
        // A published port, from outside.
        let web = tcp(
            router_mac("wan"),
            OUT,
            [203, 0, 113, 9],
            [198, 51, 100, 2],
            8080,
            64,
        );
        let (o, t) = w.agree(2, &web);
        assert_eq!(o.ports, vec![0]);
        assert!(text(&t).contains("published port"), "{}", text(&t));
    }

    #[test]
    fn punts_to_the_router() {
        let w = world();
        let r = router_mac("br0");
        // To the gateway itself.
        let (o, _) = w.agree(0, &icmp(r, H5, [10, 0, 0, 5], [10, 0, 0, 1]));
        assert_eq!(o.punt, Some(PuntKind::Local));
        // TTL 1.
        let (o, _) = w.agree(0, &tcp(r, H5, [10, 0, 0, 5], [198, 51, 100, 1], 80, 1));
        assert_eq!(o.punt, Some(PuntKind::TtlExceeded));
        // A neighbour the router does not know yet.
        let (o, t) = w.agree(
            2,
            &tcp(
                router_mac("wan"),
                OUT,
                [198, 51, 100, 1],
                [10, 0, 0, 9],
                80,
                64,
            ),
        );
        assert_eq!(o.punt, Some(PuntKind::Resolve));
        assert!(text(&t).contains("MAC not known"), "{}", text(&t));
        // ARP broadcast: a copy to the router, and flooded.
        let mut arp = eth(MacAddr::BROADCAST, H5, None);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&H5);
        arp.extend_from_slice(&[10, 0, 0, 5, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        arp.resize(60, 0);
        let (o, t) = w.agree(0, &arp);
        assert_eq!(o.punt, Some(PuntKind::Local));
        assert!(t.flooded());
    }

    #[test]
    fn every_drop_reason_we_can_provoke() {
        let mut w = world();
        let r = router_mac("br0");
        let mut cases: Vec<(usize, Vec<u8>, &str)> = Vec::new();
        cases.push((0, vec![1, 2, 3], "malformed"));
        // Tagged frame on the access port.
        let mut tagged = eth(MacAddr::BROADCAST, H5, Some(7));
        tagged.extend_from_slice(&[0x08, 0x00]);
        tagged.resize(60, 0);
        cases.push((1, tagged, "vlan_filtered"));
        let mut mc = eth(MacAddr::BROADCAST, [1, 0, 0, 0, 0, 5], None);
        mc.extend_from_slice(&[0x08, 0x00]);
        mc.resize(60, 0);
        cases.push((0, mc, "bad_source"));
        // Multicast destination address, sent to the router.
        cases.push((
            0,
            icmp(r, H5, [10, 0, 0, 5], [224, 0, 0, 9]),
            "not_routable",
        ));
        // A host on the ingress port talking to itself: same segment.
        let mut learn = eth(MacAddr::BROADCAST, [2, 0, 0, 0, 0, 0x33], None);
        learn.extend_from_slice(&[0x08, 0x00]);
        learn.resize(60, 0);
        w.real(0, &learn);
        let mut same = eth(MacAddr([2, 0, 0, 0, 0, 0x33]), H5, None);
        same.extend_from_slice(&[0x08, 0x00]);
        same.resize(60, 0);
        cases.push((0, same, "same_segment"));
        for (port, f, want) in &cases {
            let (o, t) = w.agree(*port, f);
            assert_eq!(o.drop, Some(*want), "{}", text(&t));
        }
        // Isolation: br0 isolated and not masqueraded, routing to wan is refused.
        w.snap.bridges[0].isolated = true;
        w.snap.nat.masq[0] = None;
        let syn = tcp(r, H5, [10, 0, 0, 5], [198, 51, 100, 1], 80, 64);
        let (o, t) = w.agree(0, &syn);
        assert_eq!(o.drop, Some("isolated"), "{}", text(&t));
        assert!(text(&t).contains("--isolated"), "{}", text(&t));
    }

    #[test]
    fn ipv6_port_lock_decisions_agree() {
        use crate::dp::snapshot::PortLock;
        use crate::wire::ipv6::{self, icmp};
        use std::net::Ipv6Addr;
        let mut w = world();
        let mine: Ipv6Addr = "fd00:1::5".parse().unwrap();
        let lock = PortLock::new(
            MacAddr(H5),
            &[Ipv4Addr::new(10, 0, 0, 5).into(), mine.into()],
        );
        let ll = lock.ll;
        if let Some(Some(p)) = w.snap.ports.get_mut(0) {
            p.lock = Some(Arc::new(lock));
        }
        let gw: Ipv6Addr = "fd00:1::1".parse().unwrap();
        let f6 = |src: Ipv6Addr, msg: Vec<u8>| {
            let pkt = ipv6::icmp_packet(src, gw, 255, msg);
            ipv6::ethernet(MacAddr::BROADCAST, MacAddr(H5), &pkt)
        };
        let echo = vec![icmp::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1];
        let (o, t) = w.agree(0, &f6(mine, echo.clone()));
        assert_eq!(o.drop, None, "{}", text(&t));
        assert!(
            text(&t).contains("port locked to 02:00:00:00:00:05 and 10.0.0.5, fd00:1::5: source fd00:1::5 allowed"),
            "{}",
            text(&t)
        );
        let (o, t) = w.agree(0, &f6(ll, echo.clone()));
        assert_eq!(o.drop, None, "{}", text(&t));
        assert!(text(&t).contains("link-local"), "{}", text(&t));
        let (o, t) = w.agree(0, &f6("fd00:1::9".parse().unwrap(), echo));
        assert_eq!(o.drop, Some("spoofed_ip"), "{}", text(&t));
        let na = ipv6::neighbor_advert(gw, MacAddr(H5), ipv6::NA_OVERRIDE);
        let (o, t) = w.agree(0, &f6(mine, na));
        assert_eq!(
            o.drop,
            Some("spoofed_ip"),
            "NA for the gateway: {}",
            text(&t)
        );
        assert!(
            text(&t).contains("security: port locked to 02:00:00:00:00:05 and 10.0.0.5, fd00:1::5: IPv6 from fd00:1::5, a Neighbor Advertisement for fd00:1::1: not an address the port may use"),
            "{}",
            text(&t)
        );
        let mut ra = vec![icmp::ROUTER_ADVERT, 0, 0, 0, 64, 0, 7, 8];
        ra.resize(16, 0);
        let (o, t) = w.agree(0, &f6(ll, ra));
        assert_eq!(o.drop, Some("rogue_router"), "{}", text(&t));
        assert!(
            text(&t).contains("a Router Advertisement: a locked port may not act as a router"),
            "{}",
            text(&t)
        );
        // Locked to IPv4 only: the trace says why IPv6 stops.
        if let Some(Some(p)) = w.snap.ports.get_mut(0) {
            p.lock = Some(Arc::new(PortLock::new(
                MacAddr(H5),
                &[Ipv4Addr::new(10, 0, 0, 5).into()],
            )));
        }
        let echo = vec![icmp::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1];
        let (o, t) = w.agree(0, &f6(ll, echo));
        assert_eq!(o.drop, Some("spoofed_ip"), "{}", text(&t));
        assert!(
            text(&t).contains("no IPv6 address is locked, so no IPv6 passes"),
            "{}",
            text(&t)
        );
    }
}
