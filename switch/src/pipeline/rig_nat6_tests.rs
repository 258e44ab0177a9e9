//! NAT66 through the whole in-memory data path ([`Rig::with_nat6`]): masquerade6 and
//! published IPv6 ports in both directions, ICMPv6 echo identifiers, ICMPv6 errors
//! translated back, isolation, and the routed default (no NAT66 configured).

use super::*;
use crate::wire::ipv6::{self, Ipv6Meta};
use etherparse::PacketBuilder;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const C_MAC: [u8; 6] = [2, 0, 0, 0, 0, 5];
const UP_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// A TCP SYN over IPv6 with a valid checksum, built by etherparse.
fn tcp6(dmac: MacAddr, smac: [u8; 6], src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac.0)
        .ipv6(a(src).octets(), a(dst).octets(), 64)
        .tcp(sport, dport, 1, 65535)
        .syn();
    let mut f = Vec::new();
    b.write(&mut f, b"hello").unwrap();
    f
}

fn udp6(dmac: MacAddr, smac: [u8; 6], src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac.0)
        .ipv6(a(src).octets(), a(dst).octets(), 64)
        .udp(sport, dport);
    let mut f = Vec::new();
    b.write(&mut f, b"datagram").unwrap();
    f
}

fn echo6(dmac: MacAddr, smac: [u8; 6], src: &str, dst: &str, ty: u8, id: u16) -> Vec<u8> {
    let mut msg = vec![ty, 0, 0, 0];
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0, 1, 0xab, 0xcd]);
    let ip = ipv6::icmp_packet(a(src), a(dst), 64, msg);
    ipv6::ethernet(dmac, MacAddr(smac), &ip)
}

/// (src, sport or echo id, dst, dport) of an untagged IPv6 frame, after checking its
/// L4 checksum over the pseudo-header.
fn check6(f: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16) {
    let m = Ipv6Meta::parse(&f[14..]).unwrap();
    let body = &f[54..54 + m.payload_len];
    assert_eq!(
        ipv6::checksum(&m.src, &m.dst, m.next, body),
        0,
        "L4 checksum of {m:?}"
    );
    let p16 = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
    match m.next {
        ipv6::NEXT_ICMPV6 => (m.src, p16(4), m.dst, p16(4)),
        _ => (m.src, p16(0), m.dst, p16(2)),
    }
}

fn one(out: &[(usize, Vec<u8>)], port: usize) -> Vec<u8> {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, port, "left by the wrong port");
    out[0].1.clone()
}

#[test]
fn without_nat66_ipv6_is_routed_with_the_containers_own_source() {
    let mut r = Rig::new();
    let syn = tcp6(
        router_mac("br0"),
        C_MAC,
        "fd00:10::5",
        40000,
        "2001:db8::9",
        80,
    );
    let f = one(&r.feed_take(0, &[&syn]), 2);
    assert_eq!(check6(&f), (a("fd00:10::5"), 40000, a("2001:db8::9"), 80));
    assert!(r.snap.conntrack6.entries(r.now).is_empty());
}

#[test]
fn masquerade6_rewrites_source_and_translates_the_answers_back() {
    let mut r = Rig::with_nat6();
    let syn = tcp6(
        router_mac("br0"),
        C_MAC,
        "fd00:10::5",
        40000,
        "2001:db8::9",
        80,
    );
    let f = one(&r.feed_take(0, &[&syn]), 2);
    assert_eq!(check6(&f), (a("fd00:ff::2"), 40000, a("2001:db8::9"), 80));
    assert_eq!(f[14 + 7], 63, "hop limit");
    assert_eq!(&f[0..6], &UP_MAC);
    assert_eq!(r.snap.conntrack6.entries(r.now).len(), 2);
    // The answer, to the router's address, goes back to the container.
    let ack = tcp6(
        router_mac("wan"),
        UP_MAC,
        "2001:db8::9",
        80,
        "fd00:ff::2",
        40000,
    );
    let f = one(&r.feed_take(2, &[&ack]), 0);
    assert_eq!(check6(&f), (a("2001:db8::9"), 80, a("fd00:10::5"), 40000));
    assert_eq!(&f[0..6], &C_MAC);
    // UDP as well; a second client with the same port gets another one.
    let u = udp6(
        router_mac("br0"),
        C_MAC,
        "fd00:10::5",
        5000,
        "2001:db8::9",
        53,
    );
    let f = one(&r.feed_take(0, &[&u]), 2);
    assert_eq!(check6(&f), (a("fd00:ff::2"), 5000, a("2001:db8::9"), 53));
    let u = udp6(
        router_mac("br0"),
        [2, 0, 0, 0, 0, 6],
        "fd00:10::6",
        5000,
        "2001:db8::9",
        53,
    );
    let f = one(&r.feed_take(0, &[&u]), 2);
    let (src, sport, _, _) = check6(&f);
    assert_eq!(src, a("fd00:ff::2"));
    assert!((32768..=60999).contains(&sport), "{sport}");
}

#[test]
fn masquerade6_echo_identifiers() {
    let mut r = Rig::with_nat6();
    let req = echo6(
        router_mac("br0"),
        C_MAC,
        "fd00:10::5",
        "2001:db8::9",
        128,
        7,
    );
    let f = one(&r.feed_take(0, &[&req]), 2);
    assert_eq!(check6(&f), (a("fd00:ff::2"), 7, a("2001:db8::9"), 7));
    // Another client's echo with the same identifier gets another one.
    let req = echo6(
        router_mac("br0"),
        [2, 0, 0, 0, 0, 6],
        "fd00:10::6",
        "2001:db8::9",
        128,
        7,
    );
    let f = one(&r.feed_take(0, &[&req]), 2);
    let (_, id, _, _) = check6(&f);
    assert_ne!(id, 7);
    let rep = echo6(
        router_mac("wan"),
        UP_MAC,
        "2001:db8::9",
        "fd00:ff::2",
        129,
        7,
    );
    let f = one(&r.feed_take(2, &[&rep]), 0);
    assert_eq!(check6(&f), (a("2001:db8::9"), 7, a("fd00:10::5"), 7));
}

#[test]
fn published_ipv6_port_rewrites_destination_both_ways() {
    let mut r = Rig::with_nat6();
    let syn = tcp6(
        router_mac("wan"),
        UP_MAC,
        "2001:db8::9",
        5555,
        "fd00:ff::2",
        8080,
    );
    let f = one(&r.feed_take(2, &[&syn]), 0);
    assert_eq!(check6(&f), (a("2001:db8::9"), 5555, a("fd00:10::5"), 80));
    let ack = tcp6(
        router_mac("br0"),
        C_MAC,
        "fd00:10::5",
        80,
        "2001:db8::9",
        5555,
    );
    let f = one(&r.feed_take(0, &[&ack]), 2);
    assert_eq!(check6(&f), (a("fd00:ff::2"), 8080, a("2001:db8::9"), 5555));
    // UDP too; a port that is not published is the router's own (punted, not routed).
    let u = udp6(
        router_mac("wan"),
        UP_MAC,
        "2001:db8::9",
        6000,
        "fd00:ff::2",
        8080,
    );
    let f = one(&r.feed_take(2, &[&u]), 0);
    assert_eq!(check6(&f), (a("2001:db8::9"), 6000, a("fd00:10::5"), 80));
    let other = tcp6(
        router_mac("wan"),
        UP_MAC,
        "2001:db8::9",
        5555,
        "fd00:ff::2",
        8081,
    );
    assert!(r.feed_take(2, &[&other]).is_empty());
}

#[test]
fn icmpv6_error_about_a_masqueraded_packet_reaches_the_container() {
    let mut r = Rig::with_nat6();
    let syn = tcp6(
        router_mac("br0"),
        C_MAC,
        "fd00:10::5",
        40000,
        "2001:db8::9",
        80,
    );
    let sent = one(&r.feed_take(0, &[&syn]), 2);
    // An upstream router's packet too big, quoting the packet as it left.
    let mut msg = vec![ipv6::icmp::PACKET_TOO_BIG, 0, 0, 0, 0, 0, 5, 0];
    msg.extend_from_slice(&sent[14..]);
    let ip = ipv6::icmp_packet(a("2001:db8::1"), a("fd00:ff::2"), 64, msg);
    let err = ipv6::ethernet(router_mac("wan"), MacAddr(UP_MAC), &ip);
    let f = one(&r.feed_take(2, &[&err]), 0);
    let m = Ipv6Meta::parse(&f[14..]).unwrap();
    assert_eq!((m.src, m.dst), (a("2001:db8::1"), a("fd00:10::5")));
    let body = &f[54..54 + m.payload_len];
    assert_eq!(ipv6::checksum(&m.src, &m.dst, m.next, body), 0);
    let quoted = Ipv6Meta::parse(&body[8..]).unwrap();
    assert_eq!(quoted.src, a("fd00:10::5"), "quoted source translated back");
    assert_eq!(quoted.dst, a("2001:db8::9"));
    assert_eq!(u16::from_be_bytes([body[48], body[49]]), 40000);
}

#[test]
fn isolated_bridges_reach_out_only_through_nat66() {
    let mut r = Rig::new();
    r.snap.bridges[0].isolated = true;
    let syn = tcp6(
        router_mac("br0"),
        C_MAC,
        "fd00:10::5",
        40000,
        "2001:db8::9",
        80,
    );
    assert!(r.feed_take(0, &[&syn]).is_empty());
    assert_eq!(r.drops(0, "isolated"), 1);
    let mut r = Rig::with_nat6();
    r.snap.bridges[0].isolated = true;
    let f = one(&r.feed_take(0, &[&syn]), 2);
    assert_eq!(check6(&f).0, a("fd00:ff::2"));
    let ack = tcp6(
        router_mac("wan"),
        UP_MAC,
        "2001:db8::9",
        80,
        "fd00:ff::2",
        40000,
    );
    one(&r.feed_take(2, &[&ack]), 0);
    // Routed (not NATed) IPv6 from outside into the isolated bridge stays out.
    let direct = tcp6(
        router_mac("wan"),
        UP_MAC,
        "2001:db8::9",
        80,
        "fd00:10::5",
        40001,
    );
    assert!(r.feed_take(2, &[&direct]).is_empty());
}

#[test]
fn a_flood_of_new_ipv6_flows_stays_within_the_table() {
    let mut r = Rig::with_nat6();
    let cap = r.snap.conntrack6.capacity();
    for i in 0..3000u16 {
        let syn = tcp6(
            router_mac("br0"),
            C_MAC,
            "fd00:10::5",
            1024 + i,
            "2001:db8::9",
            80,
        );
        r.feed(0, &[&syn]);
    }
    assert!(r.snap.conntrack6.entries(r.now).len() <= cap);
    assert!(r.snap.conntrack6.evictions() > 0);
}

#[test]
fn mutated_nat66_frames_never_panic() {
    // The fuzz target's seeds, mutated with a fixed xorshift: a stable-Rust stand-in
    // for `cargo fuzz run pipeline_nat6`, bounded in count.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pipeline_nat6");
    let mut seeds = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        seeds.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    assert!(!seeds.is_empty());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..1500 {
        let mut d = seeds[i % seeds.len()].clone();
        for _ in 0..(next() % 8 + 1) {
            let at = (next() as usize) % d.len();
            d[at] = next() as u8;
        }
        if next() % 4 == 0 {
            d.truncate((next() as usize) % d.len());
        }
        fuzz_pipeline_nat6(&d);
    }
}

#[test]
fn hairpin_to_a_published_ipv6_port_gets_the_gateway_as_source() {
    let mut r = Rig::with_nat6();
    let mac6 = [2, 0, 0, 0, 0, 6];
    let syn = tcp6(
        router_mac("br0"),
        mac6,
        "fd00:10::6",
        5555,
        "fd00:ff::2",
        8080,
    );
    let f = one(&r.feed_take(0, &[&syn]), 0);
    assert_eq!(check6(&f), (a("fd00:10::1"), 5555, a("fd00:10::5"), 80));
    // The answer goes to the gateway, and back to the client from the published address.
    let ack = tcp6(
        router_mac("br0"),
        C_MAC,
        "fd00:10::5",
        80,
        "fd00:10::1",
        5555,
    );
    let out = r.feed_take(0, &[&ack]);
    // fd00:10::6 is no known neighbour in the rig: the answer waits for resolution
    // (punted), but it was translated back, not answered by the router itself.
    assert!(out.is_empty(), "{out:?}");
    let e = r
        .snap
        .conntrack6
        .lookup(
            &crate::tables::conntrack6::Tuple6 {
                proto: 6,
                src: a("fd00:10::5"),
                sport: 80,
                dst: a("fd00:10::1"),
                dport: 5555,
            },
            r.now,
        )
        .found()
        .expect("reply direction recorded");
    assert_eq!(e.xlate.src, a("fd00:ff::2"));
    assert_eq!(e.xlate.dst, a("fd00:10::6"));
    assert_eq!(e.xlate.dport, 5555);
}
