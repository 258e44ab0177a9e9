//! A whole data path in memory, for fuzzing and corpus replay: two routed bridges
//! (`br0` 10.0.0.0/24 with gateway 10.0.0.1 and ports 0 and 1; `wan`
//! 198.51.100.0/24 with gateway 198.51.100.2 and port 2), `br0` masqueraded behind
//! `wan`, TCP 8080 published to 10.0.0.5:80, known neighbours on both sides, and
//! in-memory ports. Both bridges are dual stack too (`br0` fd00:10::/64 gateway
//! fd00:10::1, `wan` fd00:ff::/64 gateway fd00:ff::2, default route via fd00:ff::1).
//! Frames go through the real L2, L3 and NAT stages and out of the
//! in-memory ports; nothing is punted (the slow path has its own fuzz targets).

use crate::dp::snapshot::{
    router_mac, BridgeRt, NatRt, PortEntry, PublishRt, Router6If, RouterIf, Snapshot, VlanMode,
};
use crate::dp::{Batch, PortCounters};
use crate::pipeline::{flush, process, Ctx, OutQueues};
use crate::port::mem::MemPort;
use crate::tables::conntrack::Conntrack;
use crate::tables::neigh::{Neigh, NeighMap};
use crate::tables::route::{Route, Route6, Route6Table, RouteTable};
use crate::tables::Fdb;
use crate::wire::MacAddr;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The data path under test.
pub struct Rig {
    snap: Snapshot,
    mems: Vec<Arc<MemPort>>,
    neigh: NeighMap,
    out: OutQueues,
    now: u32,
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

impl Rig {
    pub fn new() -> Rig {
        let mut ports = Vec::new();
        let mut mems = Vec::new();
        let modes = [
            (0, VlanMode::from_conf(None, &[])),
            (0, VlanMode::from_conf(Some(5), &[])),
            (1, VlanMode::from_conf(None, &[])),
        ];
        for (i, (bridge, vlan)) in modes.into_iter().enumerate() {
            let m = Arc::new(MemPort::new(&format!("p{i}")));
            mems.push(m.clone());
            ports.push(Some(PortEntry {
                id: i as u32,
                name: format!("p{i}"),
                bridge,
                vlan,
                dev: m,
                counters: Arc::new(PortCounters::new(1)),
                group: 0,
                lock: None,
                mirror_to: Vec::new(),
                mirror_out: false,
                impair: None,
            }));
        }
        let net = |s: &str| s.parse().unwrap_or_default();
        let mut br0 = BridgeRt::plain("br0", Arc::new(Fdb::new(256, 300)), vec![0, 1]);
        br0.router = Some(RouterIf {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            net: net("10.0.0.0/24"),
            mac: router_mac("br0"),
        });
        let mut wan = BridgeRt::plain("wan", Arc::new(Fdb::new(256, 300)), vec![2]);
        wan.router = Some(RouterIf {
            ip: Ipv4Addr::new(198, 51, 100, 2),
            net: net("198.51.100.0/24"),
            mac: router_mac("wan"),
        });
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED);
        let net6 = |s: &str| s.parse().unwrap_or_default();
        for (b, ip, n) in [
            (&mut br0, "fd00:10::1", "fd00:10::/64"),
            (&mut wan, "fd00:ff::2", "fd00:ff::/64"),
        ] {
            let mac = router_mac(&b.name);
            b.router6 = Some(Router6If {
                ip: v6(ip),
                ll: crate::wire::ipv6::link_local(mac),
                net: net6(n),
                mac,
            });
        }
        let mut routes6 = Route6Table::default();
        let mut router_ips6 = HashMap::new();
        for (bi, b) in [&br0, &wan].into_iter().enumerate() {
            if let Some(r) = b.router6 {
                routes6.insert(
                    r.net,
                    Route6 {
                        bridge: bi,
                        via: None,
                    },
                );
                router_ips6.insert(r.ip, bi);
                router_ips6.insert(r.ll, bi);
            }
        }
        routes6.insert(
            net6("::/0"),
            Route6 {
                bridge: 1,
                via: Some(v6("fd00:ff::1")),
            },
        );
        let mut routes = RouteTable::default();
        routes.insert(
            net("10.0.0.0/24"),
            Route {
                bridge: 0,
                via: None,
            },
        );
        routes.insert(
            net("198.51.100.0/24"),
            Route {
                bridge: 1,
                via: None,
            },
        );
        routes.insert(
            net("0.0.0.0/0"),
            Route {
                bridge: 1,
                via: Some(Ipv4Addr::new(198, 51, 100, 1)),
            },
        );
        let mut router_ips = HashMap::new();
        router_ips.insert(Ipv4Addr::new(10, 0, 0, 1), 0);
        router_ips.insert(Ipv4Addr::new(198, 51, 100, 2), 1);
        let mut publish = HashMap::new();
        publish.insert(
            (6u8, 8080u16),
            vec![PublishRt {
                ip: None,
                target_ip: Ipv4Addr::new(10, 0, 0, 5),
                target_port: 80,
            }],
        );
        let nat = NatRt {
            masq: vec![Some(1), None],
            publish,
            outside_ips: vec![Ipv4Addr::new(198, 51, 100, 2)],
        };
        let mut neigh = NeighMap::new();
        for (ip, last) in [([10, 0, 0, 5], 5u8), ([198, 51, 100, 1], 1)] {
            neigh.insert(
                Ipv4Addr::from(ip).into(),
                Neigh {
                    mac: MacAddr([2, 0, 0, 0, 0, last]),
                    learned: 1,
                },
            );
        }
        for (ip, last) in [("fd00:10::5", 5u8), ("fd00:ff::1", 1)] {
            neigh.insert(
                v6(ip).into(),
                Neigh {
                    mac: MacAddr([2, 0, 0, 0, 0, last]),
                    learned: 1,
                },
            );
        }
        let snap = Snapshot {
            generation: 1,
            ports,
            bridges: vec![br0, wan],
            routes,
            router_ips,
            nat,
            conntrack: Arc::new(Conntrack::new(256)),
            nat6: Default::default(),
            conntrack6: Arc::new(crate::tables::Conntrack6::new(256)),
            taps: Default::default(),
            impaired: Vec::new(),
            fastpath: None,
            routes6,
            router_ips6,
        };
        let mut out = OutQueues::default();
        out.fit(&snap);
        Rig {
            snap,
            mems,
            neigh,
            out,
            now: 10,
        }
    }

    /// Receive `frames` on port `port` (0..=2), run them through the pipeline, send
    /// what comes out; returns how many frames left by any port.
    pub fn feed(&mut self, port: usize, frames: &[&[u8]]) -> usize {
        let port = port % self.mems.len();
        let mut b = Batch::new();
        for f in frames {
            self.mems[port].inject(f);
        }
        // A receive error is a malformed input the port refused: nothing to switch.
        if self.mems[port].recv(&mut b).is_err() {
            return 0;
        }
        let ctx = Ctx {
            worker: 0,
            now: self.now,
            snap: &self.snap,
            neigh: &self.neigh,
            punt: None,
            trace: None,
        };
        process(&ctx, port as u32, &mut b, &mut self.out);
        flush(&ctx, &b, &mut self.out);
        self.now = self.now.wrapping_add(1);
        self.mems.iter().map(|m| m.take_sent().len()).sum()
    }
}

impl Rig {
    /// [`Rig::new`] with NAT66 too: `br0` masqueraded (IPv6) behind `wan`, and TCP and
    /// UDP 8080 on `wan`'s IPv6 gateway fd00:ff::2 published to [fd00:10::5]:80.
    pub fn with_nat6() -> Rig {
        use crate::dp::snapshot::{Nat6Rt, Publish6Rt};
        let mut r = Rig::new();
        let p = Publish6Rt {
            ip: "fd00:ff::2".parse().unwrap_or(Ipv6Addr::UNSPECIFIED),
            target_ip: "fd00:10::5".parse().unwrap_or(Ipv6Addr::UNSPECIFIED),
            target_port: 80,
        };
        r.snap.nat6 = Nat6Rt {
            masq: vec![Some(1), None],
            publish: [((6u8, 8080u16), vec![p]), ((17, 8080), vec![p])]
                .into_iter()
                .collect(),
        };
        r
    }

    /// The snapshot and the in-memory ports, for tests and fuzzing of other layers
    /// (the service thread) on the same two routed bridges.
    pub fn into_parts(self) -> (Snapshot, Vec<Arc<MemPort>>) {
        (self.snap, self.mems)
    }
}

#[cfg(test)]
impl Rig {
    /// Like [`Rig::feed`], returning the frames that left, with their port.
    fn feed_take(&mut self, port: usize, frames: &[&[u8]]) -> Vec<(usize, Vec<u8>)> {
        let mut b = Batch::new();
        for f in frames {
            self.mems[port].inject(f);
        }
        assert!(self.mems[port].recv(&mut b).is_ok());
        let ctx = Ctx {
            worker: 0,
            now: self.now,
            snap: &self.snap,
            neigh: &self.neigh,
            punt: None,
            trace: None,
        };
        process(&ctx, port as u32, &mut b, &mut self.out);
        flush(&ctx, &b, &mut self.out);
        self.now = self.now.wrapping_add(1);
        let mut out = Vec::new();
        for (i, m) in self.mems.iter().enumerate() {
            out.extend(m.take_sent().into_iter().map(|f| (i, f)));
        }
        out
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            worker: 0,
            now: self.now,
            snap: &self.snap,
            neigh: &self.neigh,
            punt: None,
            trace: None,
        }
    }

    fn drops(&self, port: usize, reason: &str) -> u64 {
        let Some(Some(p)) = self.snap.ports.get(port) else {
            return 0;
        };
        p.counters.totals().drops.get(reason).copied().unwrap_or(0)
    }
}

/// Fuzz entry point: `data` is a sequence of records `[port, len_hi, len_lo,
/// frame...]` (a short last record takes what is left); each batch of up to 16
/// frames for one port goes through the pipeline. Must never panic.
pub fn fuzz_pipeline(data: &[u8]) {
    fuzz_rig(Rig::new(), data);
}

/// [`fuzz_pipeline`] on [`Rig::with_nat6`]: the NAT66 stage (conntrack6, published
/// IPv6 ports, masquerade6, ICMPv6 errors) on arbitrary frames.
pub fn fuzz_pipeline_nat6(data: &[u8]) {
    fuzz_rig(Rig::with_nat6(), data);
}

fn fuzz_rig(mut rig: Rig, data: &[u8]) {
    let mut rest = data;
    let mut batch: Vec<&[u8]> = Vec::new();
    let mut batch_port = None;
    while let [port, hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (frame, next) = tail.split_at(len);
        let port = usize::from(*port) % 3;
        if batch_port.is_some_and(|p| p != port) || batch.len() == 16 {
            rig.feed(batch_port.unwrap_or(0), &batch);
            batch.clear();
        }
        batch_port = Some(port);
        batch.push(frame);
        rest = next;
    }
    if let Some(p) = batch_port {
        rig.feed(p, &batch);
    }
}

#[cfg(test)]
#[path = "rig_nat6_tests.rs"]
mod nat6_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::nat;
    use crate::tables::conntrack::{CtEntry, CtState, Tuple};
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    /// An ICMPv6 echo request from fd00:10::5 (port 0) to `dst` via br0's router.
    fn echo6(dst: &str, hop_limit: u8, payload: usize) -> Vec<u8> {
        let src: Ipv6Addr = "fd00:10::5".parse().unwrap();
        let dst: Ipv6Addr = dst.parse().unwrap();
        let mut msg = vec![128, 0, 0, 0, 0, 1, 0, 1];
        msg.resize(8 + payload, 0xab);
        let ip = crate::wire::ipv6::icmp_packet(src, dst, hop_limit, msg);
        crate::wire::ipv6::ethernet(router_mac("br0"), MacAddr([2, 0, 0, 0, 0, 5]), &ip)
    }

    #[test]
    fn routes_ipv6_with_hop_limit_and_mtu() {
        let mut rig = Rig::new();
        // Out of wan to the default route's next hop, hop limit 63, MACs rewritten.
        let out = rig.feed_take(0, &[&echo6("2001:db8::9", 64, 56)]);
        assert_eq!(out.len(), 1, "{out:?}");
        let (port, f) = &out[0];
        assert_eq!(*port, 2);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[6..12], &router_mac("wan").0);
        assert_eq!(f[14 + 7], 63, "hop limit decremented");
        let p = SlicedPacket::from_ethernet(f).expect("still IPv6");
        assert!(matches!(p.transport, Some(TransportSlice::Icmpv6(_))));
        // To a host of br0's own subnet: routed back to its learned port (hairpin).
        let out = rig.feed_take(0, &[&echo6("fd00:10::5", 64, 8)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].0, &out[0].1[0..6]), (0, &[2u8, 0, 0, 0, 0, 5][..]));
        // Hop limit 1, no route (none here: ::/0 exists, so use a link-local
        // destination), too big: nothing forwarded; punts are dropped without a slow
        // path and counted.
        assert!(rig.feed_take(0, &[&echo6("2001:db8::9", 1, 8)]).is_empty());
        assert!(rig.feed_take(0, &[&echo6("fe80::9", 64, 8)]).is_empty());
        assert!(rig
            .feed_take(0, &[&echo6("2001:db8::9", 64, 1500)])
            .is_empty());
        assert_eq!(rig.drops(0, "not_routable"), 1);
        assert!(rig.drops(0, "punt_queue_full") >= 2);
    }

    #[test]
    fn a_bridge_with_an_ipv6_gateway_only_routes_no_ipv4() {
        let mut rig = Rig::new();
        rig.snap.bridges[0].router = None;
        assert_eq!(
            rig.feed(0, &[&syn_out()]),
            0,
            "IPv4 routed from an IPv6-only leg"
        );
        assert_eq!(rig.drops(0, "not_routable"), 1);
        assert_eq!(
            rig.feed(0, &[&echo6("2001:db8::9", 64, 8)]),
            1,
            "IPv6 still routed"
        );
    }

    #[test]
    fn malformed_ipv6_is_dropped_not_panicking() {
        let mut rig = Rig::new();
        let good = echo6("2001:db8::9", 64, 8);
        for n in 14..good.len() {
            let mut f = good[..n].to_vec();
            rig.feed(0, &[&f]);
            // A payload length longer than the frame.
            if f.len() > 19 {
                f[18] = 0xff;
                rig.feed(0, &[&f]);
            }
        }
        assert!(rig.drops(0, "malformed") > 0);
    }

    /// A TCP SYN from 10.0.0.5 to the outside, addressed to br0's router.
    fn syn_out() -> Vec<u8> {
        tcp(
            router_mac("br0"),
            [2, 0, 0, 0, 0, 5],
            [10, 0, 0, 5],
            40000,
            [198, 51, 100, 1],
            80,
            b"",
        )
    }

    /// A TCP segment with valid checksums, built by etherparse (not by the code under
    /// test).
    fn tcp(
        dmac: MacAddr,
        smac: [u8; 6],
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(smac, dmac.0)
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 65535)
            .syn();
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        f
    }

    /// (src, sport, dst, dport, ttl, dst mac, src mac) of a frame, after checking its IPv4
    /// and TCP checksums against etherparse's.
    #[allow(clippy::type_complexity)]
    fn check(f: &[u8]) -> ([u8; 4], u16, [u8; 4], u16, u8, [u8; 6], [u8; 6]) {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!("not TCP")
        };
        let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
        assert_eq!(t.checksum(), want, "TCP checksum");
        let eth = p.link.as_ref().and_then(|l| l.to_header()).unwrap();
        let eth = match eth {
            etherparse::LinkHeader::Ethernet2(e) => e,
            _ => panic!("not Ethernet II"),
        };
        (
            h.source,
            t.source_port(),
            h.destination,
            t.destination_port(),
            h.time_to_live,
            eth.destination,
            eth.source,
        )
    }

    #[test]
    fn masquerade_rewrites_source_ttl_macs_and_checksums() {
        let mut r = Rig::new();
        let out = r.feed_take(0, &[&syn_out()]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 2, "leaves by the wan port");
        let (src, sport, dst, dport, ttl, dmac, smac) = check(&out[0].1);
        assert_eq!(src, [198, 51, 100, 2], "masqueraded behind wan's gateway");
        assert_eq!(sport, 40000, "port preserved (RFC 4787)");
        assert_eq!((dst, dport), ([198, 51, 100, 1], 80));
        assert_eq!(ttl, 63);
        assert_eq!(dmac, [2, 0, 0, 0, 0, 1], "next hop's MAC");
        assert_eq!(smac, router_mac("wan").0);

        // The answer comes back translated to the inside host.
        let reply = tcp(
            router_mac("wan"),
            [2, 0, 0, 0, 0, 1],
            [198, 51, 100, 1],
            80,
            [198, 51, 100, 2],
            40000,
            b"hello",
        );
        let back = r.feed_take(2, &[&reply]);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, 0);
        let (src, sport, dst, dport, ttl, dmac, smac) = check(&back[0].1);
        assert_eq!((src, sport), ([198, 51, 100, 1], 80));
        assert_eq!((dst, dport), ([10, 0, 0, 5], 40000));
        assert_eq!(ttl, 63);
        assert_eq!(dmac, [2, 0, 0, 0, 0, 5]);
        assert_eq!(smac, router_mac("br0").0);
    }

    #[test]
    fn published_port_rewrites_destination() {
        let mut r = Rig::new();
        let syn = tcp(
            router_mac("wan"),
            [2, 0, 0, 0, 0, 1],
            [203, 0, 113, 9],
            5555,
            [198, 51, 100, 2],
            8080,
            b"",
        );
        let out = r.feed_take(2, &[&syn]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 0);
        let (src, sport, dst, dport, ttl, ..) = check(&out[0].1);
        assert_eq!(
            (src, sport),
            ([203, 0, 113, 9], 5555),
            "client address kept"
        );
        assert_eq!((dst, dport), ([10, 0, 0, 5], 80));
        assert_eq!(ttl, 63);
    }

    #[test]
    fn routes_and_masquerades() {
        let mut r = Rig::new();
        assert_eq!(r.feed(0, &[&syn_out()]), 1);
        assert_eq!(
            r.snap.conntrack.entries(r.now).len(),
            2,
            "both directions tracked"
        );
    }

    fn meta_of(f: &[u8]) -> crate::pipeline::Meta {
        let mut m = crate::pipeline::Meta::parse(f).unwrap();
        m.parse_ipv4(f).unwrap();
        m
    }

    fn t_out() -> Tuple {
        Tuple {
            proto: 6,
            src: Ipv4Addr::new(10, 0, 0, 5),
            sport: 40000,
            dst: Ipv4Addr::new(198, 51, 100, 1),
            dport: 80,
        }
    }

    /// Hazard: a lookup of a live connection whose bucket a writer keeps busy must not
    /// read as "no connection" (the packet would be masqueraded again, behind another
    /// port). It is dropped and counted instead; the connection is unchanged.
    #[test]
    fn busy_conntrack_bucket_never_retranslates_a_live_connection() {
        let mut r = Rig::new();
        assert_eq!(r.feed_take(0, &[&syn_out()]).len(), 1);
        let ct = r.snap.conntrack.clone();
        let before = ct.entries(r.now);
        assert_eq!(before.len(), 2);
        let out = {
            let _held = ct.hold(&t_out());
            r.feed_take(0, &[&syn_out()])
        };
        for (_, f) in &out {
            let (_, sport, ..) = check(f);
            assert_eq!(sport, 40000, "left with another source port");
        }
        assert!(
            out.is_empty(),
            "a busy lookup must drop, not translate anew"
        );
        assert_eq!(r.drops(0, "conntrack_busy"), 1);
        let mut after = ct.entries(r.now);
        let mut before = before;
        after.sort_by_key(|(t, _)| (t.src, t.sport));
        before.sort_by_key(|(t, _)| (t.src, t.sport));
        assert_eq!(
            after.iter().map(|(t, e)| (*t, e.xlate)).collect::<Vec<_>>(),
            before
                .iter()
                .map(|(t, e)| (*t, e.xlate))
                .collect::<Vec<_>>(),
            "no second translation recorded"
        );
        // Once the bucket is free, the connection goes on with its port.
        let out = r.feed_take(0, &[&syn_out()]);
        assert_eq!(out.len(), 1);
        assert_eq!(check(&out[0].1).1, 40000);
    }

    /// Hazard: two workers see the first packet of one connection; the second to
    /// record it finds the original direction taken. It must use the first worker's
    /// translation and roll back the reply entry it inserted (which reserved a port).
    #[test]
    fn racing_commit_uses_the_first_translation_and_rolls_back() {
        let r = Rig::new();
        let ct = r.snap.conntrack.clone();
        let t = t_out();
        // The other worker's connection: t → 198.51.100.2:40000.
        let x = Tuple {
            src: Ipv4Addr::new(198, 51, 100, 2),
            ..t
        };
        let e = |xlate, original| CtEntry {
            xlate,
            state: CtState::New,
            original,
            last_seen: r.now,
        };
        ct.insert(&x.reversed(), e(t.reversed(), false), r.now);
        ct.insert(&t, e(x, true), r.now);
        // This worker looked up before those inserts and now masquerades the packet.
        let mut f = syn_out();
        let ctx = r.ctx();
        let meta = meta_of(&f);
        let res = nat::post(&ctx, 0, 1, &mut f, &meta, &Default::default());
        assert_eq!(res, Ok(()));
        let (src, sport, ..) = check(&f);
        assert_eq!(
            (src, sport),
            ([198, 51, 100, 2], 40000),
            "the first translation"
        );
        assert_eq!(
            ct.entries(r.now).len(),
            2,
            "the losing worker's reply entry was rolled back"
        );
    }

    /// A failed commit (original direction's bucket busy) leaves nothing behind and
    /// the packet is dropped, not sent untranslated.
    #[test]
    fn failed_commit_rolls_back_and_drops() {
        let r = Rig::new();
        let ct = r.snap.conntrack.clone();
        let mut f = syn_out();
        let ctx = r.ctx();
        let meta = meta_of(&f);
        let res = {
            let _held = ct.hold(&t_out());
            nat::post(&ctx, 0, 1, &mut f, &meta, &Default::default())
        };
        assert_eq!(res, Err(crate::dp::DropReason::CtBusy));
        assert!(ct.entries(r.now).is_empty(), "no half connection left");
    }

    #[test]
    fn fuzz_input_shapes_do_not_panic() {
        fuzz_pipeline(&[]);
        fuzz_pipeline(&[0]);
        fuzz_pipeline(&[1, 0xff, 0xff, 1, 2, 3]);
        let mut d = vec![0, 0, 54];
        d.extend_from_slice(&syn_out());
        d.extend_from_slice(&[2, 0, 3, 0xff, 0xff, 0xff]);
        fuzz_pipeline(&d);
    }
}
