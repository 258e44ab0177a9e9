//! Byte-level tests of the service thread on the in-memory rig (`pipeline::rig`: br0
//! 10.0.0.0/24 with gateway 10.0.0.1 on ports 0 and 1, wan 198.51.100.0/24 with
//! gateway 198.51.100.2 on port 2): the answers are parsed back with etherparse and
//! every address, type and checksum is checked.

use super::Service;
use crate::dp::snapshot::router_mac;
use crate::pipeline::punt::{Punt, PuntKind};
use crate::pipeline::rig::Rig;
use crate::port::mem::MemPort;
use crate::tables::leases::LeaseStore;
use crate::tables::NeighCache;
use crate::wire::{MacAddr, VnetHdr};
use arc_swap::ArcSwap;
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv4Type, LinkSlice, NetSlice,
    PacketBuilder, SlicedPacket, TransportSlice,
};
use std::sync::Arc;

const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 5];
const HOST_IP: [u8; 4] = [10, 0, 0, 5];
const GW_IP: [u8; 4] = [10, 0, 0, 1];

fn service() -> (Service, Vec<Arc<MemPort>>) {
    let (snap, mems) = Rig::new().into_parts();
    // The host is a known neighbour (as after its first ARP exchange).
    let neigh = Arc::new(NeighCache::new(64));
    neigh.update(
        &[(HOST_IP.into(), MacAddr(HOST_MAC))],
        crate::dp::clock::now_secs(),
    );
    let s = Service::new(
        Arc::new(ArcSwap::from_pointee(snap)),
        neigh,
        Arc::new(LeaseStore::new()),
        0,
    );
    (s, mems)
}

fn punt(s: &mut Service, kind: PuntKind, frame: Vec<u8>) {
    s.handle(Punt {
        in_port: 0,
        kind,
        vnet: VnetHdr::default(),
        frame,
    });
}

/// IPv4 header (checksum verified) and ICMP slice of an answer.
fn icmp_of(
    f: &[u8],
) -> (
    etherparse::Ipv4Header,
    Icmpv4Type,
    Vec<u8>,
    [u8; 6],
    [u8; 6],
) {
    let p = SlicedPacket::from_ethernet(f).expect("an Ethernet frame");
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        panic!("not Ethernet II")
    };
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4: {:02x?} {:?}", f, p.net)
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP")
    };
    let want = icmp.icmp_type().calc_checksum(icmp.payload());
    assert_eq!(icmp.checksum(), want, "ICMP checksum");
    (
        h,
        icmp.icmp_type(),
        icmp.payload().to_vec(),
        eth.destination(),
        eth.source(),
    )
}

#[test]
fn answers_arp_for_its_gateway() {
    let (mut s, mems) = service();
    let req = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &HOST_MAC,
        &HOST_IP,
        &[0; 6],
        &GW_IP,
    )
    .unwrap();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, [0xff; 6])
        .arp(req)
        .write(&mut f)
        .unwrap();
    punt(&mut s, PuntKind::Local, f);
    let out = mems[0].take_sent();
    assert_eq!(out.len(), 1, "one ARP reply on the asking port");
    let p = SlicedPacket::from_ethernet(&out[0]).unwrap();
    let Some(NetSlice::Arp(a)) = &p.net else {
        panic!("not ARP")
    };
    assert_eq!(a.operation(), ArpOperation::REPLY);
    assert_eq!(a.sender_hw_addr(), router_mac("br0").0);
    assert_eq!(a.sender_protocol_addr(), GW_IP);
    assert_eq!(a.target_hw_addr(), HOST_MAC);
    assert_eq!(a.target_protocol_addr(), HOST_IP);
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        panic!("not Ethernet II")
    };
    assert_eq!(eth.destination(), HOST_MAC);
    assert_eq!(eth.source(), router_mac("br0").0);
    // Nobody else asked: nothing on the other ports.
    assert!(mems[1].take_sent().is_empty() && mems[2].take_sent().is_empty());
}

#[test]
fn answers_ping_to_its_gateway() {
    let (mut s, mems) = service();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, router_mac("br0").0)
        .ipv4(HOST_IP, GW_IP, 64)
        .icmpv4_echo_request(0x1234, 7)
        .write(&mut f, b"ping payload")
        .unwrap();
    punt(&mut s, PuntKind::Local, f);
    let out = mems[0].take_sent();
    assert_eq!(out.len(), 1);
    let (ip, ty, payload, dmac, smac) = icmp_of(&out[0]);
    assert_eq!((ip.source, ip.destination), (GW_IP, HOST_IP));
    let Icmpv4Type::EchoReply(e) = ty else {
        panic!("not an echo reply: {ty:?}")
    };
    assert_eq!((e.id, e.seq), (0x1234, 7));
    assert_eq!(payload, b"ping payload");
    assert_eq!((dmac, smac), (HOST_MAC, router_mac("br0").0));
}

#[test]
fn sends_time_exceeded_quoting_the_packet() {
    let (mut s, mems) = service();
    // A UDP datagram with TTL 1, routed towards the outside.
    let mut f = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, router_mac("br0").0)
        .ipv4(HOST_IP, [203, 0, 113, 9], 1)
        .udp(33434, 33435)
        .write(&mut f, b"traceroute probe")
        .unwrap();
    let orig_ip = f[14..14 + 20 + 8].to_vec();
    punt(&mut s, PuntKind::TtlExceeded, f);
    let out = mems[0].take_sent();
    assert_eq!(
        out.len(),
        1,
        "the error goes back out of the ingress bridge"
    );
    let (ip, ty, payload, dmac, _) = icmp_of(&out[0]);
    assert_eq!((ip.source, ip.destination), (GW_IP, HOST_IP));
    assert!(
        matches!(
            ty,
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
        ),
        "{ty:?}"
    );
    assert_eq!(
        &payload[..orig_ip.len()],
        &orig_ip[..],
        "quotes the IPv4 header and 8 bytes (RFC 792)"
    );
    assert_eq!(dmac, HOST_MAC);
}

mod ipv6 {
    use super::*;
    use crate::wire::ipv6::{self as w6, icmp, Ipv6Meta};
    use std::net::Ipv6Addr;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// An IPv6 packet with the ICMPv6 message `msg` from `src` to `dst`, in a frame
    /// from the host's MAC to `dmac`.
    fn frame(dmac: MacAddr, src: &str, dst: &str, hop: u8, msg: Vec<u8>) -> Vec<u8> {
        let ip = w6::icmp_packet(a(src), a(dst), hop, msg);
        w6::ethernet(dmac, MacAddr(HOST_MAC), &ip)
    }

    /// The one frame sent on port 0: its destination MAC, IPv6 header and ICMPv6
    /// message, checksum verified with etherparse.
    fn answer(mems: &[Arc<MemPort>]) -> ([u8; 6], Ipv6Meta, Vec<u8>) {
        let out = mems[0].take_sent();
        assert_eq!(out.len(), 1, "one answer on the asking port: {out:02x?}");
        let f = &out[0];
        let p = SlicedPacket::from_ethernet(f).expect("an Ethernet frame");
        let Some(TransportSlice::Icmpv6(i)) = &p.transport else {
            panic!("not ICMPv6")
        };
        let m = Ipv6Meta::parse(&f[14..]).unwrap();
        let want = i
            .icmp_type()
            .calc_checksum(m.src.octets(), m.dst.octets(), i.payload())
            .unwrap();
        assert_eq!(i.checksum(), want, "ICMPv6 checksum");
        let mut d = [0; 6];
        d.copy_from_slice(&f[0..6]);
        (d, m, m.payload(&f[14..]).to_vec())
    }

    /// A TCP segment from the host (fd00:10::5, port 40000) to the gateway's port 53,
    /// checksum left zero (as a kernel with offload leaves it partial).
    fn tcp6(seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut t = 40000u16.to_be_bytes().to_vec();
        t.extend_from_slice(&53u16.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(data);
        let ip = w6::packet(a("fd00:10::5"), a("fd00:10::1"), w6::NEXT_TCP, 64, &t);
        w6::ethernet(router_mac("br0"), MacAddr(HOST_MAC), &ip)
    }

    /// The TCP segments sent on port 0, each checked with etherparse (addresses,
    /// TCP checksum over the IPv6 pseudo-header): (seq, ack, SYN/FIN/RST, payload).
    fn tcp_answers(mems: &[Arc<MemPort>]) -> Vec<(u32, u32, [bool; 3], Vec<u8>)> {
        let mut v = Vec::new();
        for f in mems[0].take_sent() {
            assert_eq!(f[..6], HOST_MAC, "back to the asking MAC");
            assert_eq!(f[6..12], router_mac("br0").0);
            let p = SlicedPacket::from_ethernet(&f).expect("an Ethernet frame");
            let (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(t))) = (&p.net, &p.transport)
            else {
                panic!("not TCP over IPv6: {f:02x?}");
            };
            let h = ip.header();
            assert_eq!(
                (h.source_addr(), h.destination_addr()),
                (a("fd00:10::1"), a("fd00:10::5"))
            );
            let hdr = t.to_header();
            let want = hdr
                .calc_checksum_ipv6_raw(
                    h.source_addr().octets(),
                    h.destination_addr().octets(),
                    t.payload(),
                )
                .unwrap();
            assert_eq!(
                hdr.checksum, want,
                "TCP checksum over the IPv6 pseudo-header"
            );
            assert_eq!((hdr.source_port, hdr.destination_port), (53, 40000));
            v.push((
                hdr.sequence_number,
                hdr.acknowledgment_number,
                [hdr.syn, hdr.fin, hdr.rst],
                t.payload().to_vec(),
            ));
        }
        v
    }

    #[test]
    fn answers_dns_over_tcp_at_the_ipv6_gateway() {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RData, RecordType};
        let (snap, mems) = Rig::new().into_parts();
        let mut snap = snap;
        let mut names6 = crate::dp::Names6::new();
        names6.insert("web".to_string(), a("fd00:10::80"));
        snap.bridges[0].names6 = Arc::new(names6);
        let mut s = Service::new(
            Arc::new(ArcSwap::from_pointee(snap)),
            Arc::new(NeighCache::new(64)),
            Arc::new(LeaseStore::new()),
            0,
        );
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        const PSH: u8 = 0x08;
        const FIN: u8 = 0x01;
        punt(&mut s, PuntKind::Local, tcp6(1000, 0, SYN, &[]));
        let got = tcp_answers(&mems);
        assert_eq!(got.len(), 1, "a SYN-ACK");
        let (isn, ack, flags, _) = &got[0];
        assert_eq!((*ack, *flags), (1001, [true, false, false]));
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(
            Name::from_ascii("web").unwrap(),
            RecordType::AAAA,
        ));
        let q = q.to_vec().unwrap();
        let mut data = (q.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&q);
        punt(
            &mut s,
            PuntKind::Local,
            tcp6(1001, isn + 1, ACK | PSH, &data),
        );
        let got = tcp_answers(&mems);
        assert_eq!(got.len(), 1, "the answer in one segment");
        let (seq, ack, flags, payload) = &got[0];
        assert_eq!((*seq, *ack), (isn + 1, 1001 + data.len() as u32));
        assert_eq!(*flags, [false, true, false], "FIN with the answer");
        let len = usize::from(u16::from_be_bytes([payload[0], payload[1]]));
        assert_eq!(len, payload.len() - 2, "length-prefixed (RFC 7766)");
        let m = Message::from_vec(&payload[2..]).expect("a DNS message");
        assert_eq!(m.metadata.id, 7);
        let aaaa: Vec<_> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(v) => Some(v.0),
                _ => None,
            })
            .collect();
        assert_eq!(aaaa, vec![a("fd00:10::80")]);
        // The client's FIN is acknowledged; a segment from nowhere is reset.
        punt(
            &mut s,
            PuntKind::Local,
            tcp6(
                1001 + data.len() as u32,
                seq + payload.len() as u32 + 1,
                ACK | FIN,
                &[],
            ),
        );
        let got = tcp_answers(&mems);
        assert_eq!(
            (got[0].1, got[0].2),
            (1002 + data.len() as u32, [false, false, false])
        );
        punt(&mut s, PuntKind::Local, tcp6(5, 12345, ACK, &data));
        assert_eq!(tcp_answers(&mems)[0].2, [false, false, true]);
    }

    #[test]
    fn answers_neighbor_solicitation_and_learns_the_sender() {
        let (mut s, mems) = service();
        let gw = a("fd00:10::1");
        let group = w6::solicited_node(&gw);
        let ns = w6::neighbor_solicit(gw, MacAddr(HOST_MAC));
        let f = frame(
            w6::multicast_mac(&group),
            "fd00:10::7",
            &group.to_string(),
            255,
            ns,
        );
        punt(&mut s, PuntKind::Local, f);
        let (dmac, m, body) = answer(&mems);
        assert_eq!(dmac, HOST_MAC);
        assert_eq!((m.src, m.dst, m.hop_limit), (gw, a("fd00:10::7"), 255));
        let n = w6::parse_neighbor(&m, &body).expect("a valid NA");
        assert_eq!(n.ty, icmp::NEIGHBOR_ADVERT);
        assert_eq!(n.target, gw);
        assert_eq!(n.lla, Some(router_mac("br0")));
        assert_eq!(n.flags, w6::NA_ROUTER | w6::NA_SOLICITED | w6::NA_OVERRIDE);
        s.flush_learned();
        let learned = NeighCache::lookup(
            &s.neigh.load(),
            a("fd00:10::7"),
            crate::dp::clock::now_secs(),
        );
        assert_eq!(learned, Some(MacAddr(HOST_MAC)));
        // Hop limit other than 255 (not from the link), or an option of length 0:
        // ignored.
        let mut bad = w6::neighbor_solicit(gw, MacAddr(HOST_MAC));
        let f = frame(
            router_mac("br0"),
            "fd00:10::7",
            "fd00:10::1",
            64,
            bad.clone(),
        );
        punt(&mut s, PuntKind::Local, f);
        bad[25] = 0;
        let f = frame(router_mac("br0"), "fd00:10::7", "fd00:10::1", 255, bad);
        punt(&mut s, PuntKind::Local, f);
        assert!(mems[0].take_sent().is_empty());
    }

    #[test]
    fn answers_echo_and_router_solicitation() {
        let (mut s, mems) = service();
        let echo = vec![icmp::ECHO_REQUEST, 0, 0, 0, 0, 7, 0, 1, b'h', b'i'];
        let f = frame(router_mac("br0"), "fd00:10::5", "fd00:10::1", 64, echo);
        punt(&mut s, PuntKind::Local, f);
        let (dmac, m, body) = answer(&mems);
        assert_eq!(
            (dmac, m.src, m.dst),
            (HOST_MAC, a("fd00:10::1"), a("fd00:10::5"))
        );
        assert_eq!(&body[..1], &[icmp::ECHO_REPLY]);
        assert_eq!(&body[4..], &[0, 7, 0, 1, b'h', b'i']);
        // RS from a link-local address: a unicast RA from the router's link-local.
        let rs = vec![icmp::ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
        let f = frame(
            w6::multicast_mac(&a("ff02::2")),
            "fe80::5",
            "ff02::2",
            255,
            rs,
        );
        punt(&mut s, PuntKind::Local, f);
        let (dmac, m, body) = answer(&mems);
        assert_eq!(dmac, HOST_MAC);
        assert_eq!(m.src, w6::link_local(router_mac("br0")));
        assert_eq!(body[0], icmp::ROUTER_ADVERT);
        let opts = w6::ndp_options(&body[16..]).expect("well-formed options");
        let get = |t| {
            opts.iter()
                .find(|(ty, _)| *ty == t)
                .map(|(_, b)| b.to_vec())
        };
        let pi = get(w6::opt::PREFIX_INFO).expect("prefix information");
        assert_eq!(
            (pi[0], pi[1] & 0xc0),
            (64, 0xc0),
            "/64, on-link + autonomous"
        );
        assert_eq!(&pi[14..30], &a("fd00:10::").octets());
        assert_eq!(get(w6::opt::MTU).unwrap()[2..6], 1500u32.to_be_bytes());
        assert_eq!(
            get(w6::opt::RDNSS).unwrap()[6..22],
            a("fd00:10::1").octets()
        );
    }

    #[test]
    fn icmpv6_errors_quote_the_packet() {
        let (mut s, mems) = service();
        let echo = vec![icmp::ECHO_REQUEST, 0, 0, 0, 0, 7, 0, 1];
        let f = frame(
            router_mac("br0"),
            "fd00:10::5",
            "2001:db8::1",
            1,
            echo.clone(),
        );
        punt(&mut s, PuntKind::TtlExceeded, f.clone());
        let (_, m, body) = answer(&mems);
        assert_eq!((m.src, m.dst), (a("fd00:10::1"), a("fd00:10::5")));
        assert_eq!((body[0], body[1]), (icmp::TIME_EXCEEDED, 0));
        assert_eq!(
            &body[8..],
            &f[14..14 + 48],
            "the whole offending packet quoted"
        );
        punt(&mut s, PuntKind::FragNeeded { mtu: 1280 }, f.clone());
        let (_, _, body) = answer(&mems);
        assert_eq!(
            (body[0], &body[4..8]),
            (icmp::PACKET_TOO_BIG, &1280u32.to_be_bytes()[..])
        );
        // Never about an ICMPv6 error.
        let err = w6::error(icmp::DEST_UNREACH, 0, 0, &[0x60; 48]);
        let f = frame(router_mac("br0"), "fd00:10::5", "2001:db8::1", 1, err);
        punt(&mut s, PuntKind::TtlExceeded, f);
        assert!(mems[0].take_sent().is_empty());
    }

    /// Truncated and garbled ICMPv6/NDP frames of every kind never panic.
    #[test]
    fn malformed_ndp_never_panics() {
        let (mut s, _mems) = service();
        let gw = a("fd00:10::1");
        let msgs = [
            w6::neighbor_solicit(gw, MacAddr(HOST_MAC)),
            w6::neighbor_advert(a("fd00:10::5"), MacAddr(HOST_MAC), 0),
            vec![icmp::ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            vec![icmp::ECHO_REQUEST, 0, 0, 0],
        ];
        for msg in msgs {
            let f = frame(router_mac("br0"), "fd00:10::5", "fd00:10::1", 255, msg);
            for n in 0..f.len() {
                for kind in [PuntKind::Local, PuntKind::Resolve, PuntKind::TtlExceeded] {
                    punt(&mut s, kind, f[..n].to_vec());
                    let mut g = f.clone();
                    g[n] ^= 0xff;
                    punt(&mut s, kind, g);
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// The `ndp` fuzz target's entry point on random input (no cargo-fuzz needed).
        #[test]
        fn ndp_fuzz_entry_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            crate::service::ndp::fuzz(&b);
        }
    }
}
