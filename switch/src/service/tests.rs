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
