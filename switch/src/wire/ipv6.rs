//! IPv6, ICMPv6 and Neighbor Discovery: the fixed header the router reads, the
//! ICMPv6 checksum, NDP option parsing, and builders for what the router originates
//! (Neighbor Solicitations/Advertisements, Router Advertisements, echo replies and
//! errors).
//!
//! Parsing never panics: every length is checked against the slice, an NDP option of
//! length 0 ends the walk as malformed (RFC 4861 §4.6: such a packet is discarded).
//!
//! Read first: RFC 8200 (IPv6), RFC 4443 (ICMPv6), RFC 4861 (Neighbor Discovery),
//! RFC 4862 (SLAAC), RFC 8106 (RDNSS option).

use super::csum;
use super::MacAddr;
use std::net::Ipv6Addr;

pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const HLEN: usize = 40;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_UDP: u8 = 17;
pub const NEXT_TCP: u8 = 6;
/// The minimum link MTU (RFC 8200 §5): ICMPv6 errors quote at most this much.
pub const MIN_MTU: usize = 1280;

/// ICMPv6 types.
pub mod icmp {
    pub const DEST_UNREACH: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// NDP option types.
pub mod opt {
    pub const SOURCE_LLA: u8 = 1;
    pub const TARGET_LLA: u8 = 2;
    pub const PREFIX_INFO: u8 = 3;
    pub const MTU: u8 = 5;
    pub const RDNSS: u8 = 25;
}

/// All-nodes multicast, ff02::1.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The fields of an IPv6 header the router reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Meta {
    pub next: u8,
    pub hop_limit: u8,
    /// Payload length from the header (40 + this is the packet's length).
    pub payload_len: usize,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Error {
    Truncated,
    NotIpv6,
}

impl Ipv6Meta {
    /// Parse the fixed header of `b`. The payload length must fit in `b` (trailing
    /// Ethernet padding is allowed).
    pub fn parse(b: &[u8]) -> Result<Ipv6Meta, Ipv6Error> {
        let h = b.get(..HLEN).ok_or(Ipv6Error::Truncated)?;
        if h[0] >> 4 != 6 {
            return Err(Ipv6Error::NotIpv6);
        }
        let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if HLEN + payload_len > b.len() {
            return Err(Ipv6Error::Truncated);
        }
        Ok(Ipv6Meta {
            next: h[6],
            hop_limit: h[7],
            payload_len,
            src: addr(&h[8..24]),
            dst: addr(&h[24..40]),
        })
    }

    /// The payload (after the fixed header) of the packet `b` this was parsed from.
    pub fn payload<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        b.get(HLEN..HLEN + self.payload_len).unwrap_or_default()
    }
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Decrement the hop limit of the IPv6 header at the start of `b` (no checksum in
/// IPv6's header).
#[inline]
pub fn decrement_hop_limit(b: &mut [u8]) {
    if let Some(h) = b.get_mut(7) {
        *h = h.saturating_sub(1);
    }
}

/// Whether `a` is link-local unicast (fe80::/10).
pub fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The solicited-node multicast address of `a` (ff02::1:ffXX:XXXX).
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33 + its last 32 bits).
pub fn multicast_mac(a: &Ipv6Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The EUI-64 link-local address of `mac` (fe80::/64, RFC 4291 appendix A).
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// The ICMPv6 (or UDP/TCP) checksum of `body` over the IPv6 pseudo-header.
pub fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, next: u8, body: &[u8]) -> u16 {
    let mut acc = csum::sum16(&src.octets(), 0);
    acc = csum::sum16(&dst.octets(), acc);
    let len = body.len() as u32;
    acc = csum::sum16(&len.to_be_bytes(), acc);
    acc = csum::sum16(&[0, 0, 0, next], acc);
    acc = csum::sum16(body, acc);
    !csum::fold(acc)
}

/// Whether an ICMPv6 message's checksum is right.
pub fn icmp_checksum_ok(m: &Ipv6Meta, body: &[u8]) -> bool {
    checksum(&m.src, &m.dst, NEXT_ICMPV6, body) == 0
}

/// An IPv6 packet around `payload`.
pub fn packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(HLEN + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(payload.len().min(0xffff) as u16).to_be_bytes());
    p.extend_from_slice(&[next, hop_limit]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet carrying the ICMPv6 message `msg` (checksum filled in).
pub fn icmp_packet(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, mut msg: Vec<u8>) -> Vec<u8> {
    if msg.len() >= 4 {
        msg[2] = 0;
        msg[3] = 0;
        let c = checksum(&src, &dst, NEXT_ICMPV6, &msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    packet(src, dst, NEXT_ICMPV6, hop_limit, &msg)
}

/// An Ethernet II frame carrying an IPv6 packet, padded to the 60-byte minimum.
pub fn ethernet(dst: MacAddr, src: MacAddr, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    f.extend_from_slice(ip);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// NDP options of a message: `(type, body)` per option, or `None` when one is
/// truncated or has length 0 (the whole message is then invalid).
pub fn ndp_options(mut b: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let ty = *b.first()?;
        let len = usize::from(*b.get(1)?) * 8;
        if len == 0 || len > b.len() {
            return None;
        }
        v.push((ty, &b[2..len]));
        b = &b[len..];
    }
    Some(v)
}

/// The link-layer address of a source/target LLA option body.
pub fn lla(body: &[u8]) -> Option<MacAddr> {
    MacAddr::from_slice(body.get(..6)?)
}

/// A Neighbor Solicitation or Advertisement, parsed (RFC 4861 §4.3, §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub ty: u8,
    pub target: Ipv6Addr,
    /// NA flags (router, solicited, override), 0 for NS.
    pub flags: u8,
    /// Source LLA (NS) or target LLA (NA) option, if present.
    pub lla: Option<MacAddr>,
}

/// Parse an NS or NA ICMPv6 message (`body` from its type byte on), with RFC 4861's
/// validity checks: hop limit 255, code 0, at least 24 bytes, options well formed.
pub fn parse_neighbor(m: &Ipv6Meta, body: &[u8]) -> Option<Neighbor> {
    let ty = *body.first()?;
    if !(ty == icmp::NEIGHBOR_SOLICIT || ty == icmp::NEIGHBOR_ADVERT)
        || m.hop_limit != 255
        || body.get(1) != Some(&0)
        || body.len() < 24
    {
        return None;
    }
    let target = addr(&body[8..24]);
    if target.is_multicast() {
        return None;
    }
    let want = match ty {
        icmp::NEIGHBOR_SOLICIT => opt::SOURCE_LLA,
        _ => opt::TARGET_LLA,
    };
    let opts = ndp_options(&body[24..])?;
    let lla = opts
        .iter()
        .find(|(t, _)| *t == want)
        .and_then(|(_, b)| lla(b));
    Some(Neighbor {
        ty,
        target,
        flags: if ty == icmp::NEIGHBOR_ADVERT {
            body[4]
        } else {
            0
        },
        lla,
    })
}

/// NA flags.
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// A Neighbor Solicitation for `target` with our source LLA option.
pub fn neighbor_solicit(target: Ipv6Addr, mac: MacAddr) -> Vec<u8> {
    let mut m = vec![icmp::NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[opt::SOURCE_LLA, 1]);
    m.extend_from_slice(&mac.0);
    m
}

/// A Neighbor Advertisement for `target` with our target LLA option.
pub fn neighbor_advert(target: Ipv6Addr, mac: MacAddr, flags: u8) -> Vec<u8> {
    let mut m = vec![icmp::NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[opt::TARGET_LLA, 1]);
    m.extend_from_slice(&mac.0);
    m
}

/// What a Router Advertisement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterAdvert {
    pub mac: MacAddr,
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    pub mtu: u32,
    /// RDNSS: the recursive DNS server (the gateway).
    pub dns: Option<Ipv6Addr>,
    /// Router lifetime in seconds (0: not a default router).
    pub lifetime: u16,
    /// DHCPv6 is served: the M (managed address) and O (other configuration) flags.
    pub managed: bool,
}

/// Prefix lifetimes (RFC 4861 §6.2.1 defaults: 30 days valid, 7 days preferred).
pub const PREFIX_VALID: u32 = 2_592_000;
pub const PREFIX_PREFERRED: u32 = 604_800;
/// RDNSS lifetime: 3 × MaxRtrAdvInterval at our interval would be short; the RFC 8106
/// default (§5.1) is at least 3 × the interval, we use 30 min.
pub const RDNSS_LIFETIME: u32 = 1800;

/// Build a Router Advertisement (RFC 4861 §4.2): cur hop limit 64, the M and O flags
/// when DHCPv6 is served (`managed`), the
/// source LLA, the MTU, the prefix (on-link; autonomous when it is a /64, the only
/// length SLAAC forms addresses from on Ethernet) and the RDNSS option (RFC 8106).
pub fn router_advert(ra: &RouterAdvert) -> Vec<u8> {
    let mo = if ra.managed { 0xc0 } else { 0 };
    let mut m = vec![icmp::ROUTER_ADVERT, 0, 0, 0, 64, mo];
    m.extend_from_slice(&ra.lifetime.to_be_bytes());
    m.extend_from_slice(&[0; 8]); // reachable time, retrans timer: unspecified
    m.extend_from_slice(&[opt::SOURCE_LLA, 1]);
    m.extend_from_slice(&ra.mac.0);
    m.extend_from_slice(&[opt::MTU, 1, 0, 0]);
    m.extend_from_slice(&ra.mtu.to_be_bytes());
    let flags = 0x80 | if ra.prefix_len == 64 { 0x40 } else { 0 };
    m.extend_from_slice(&[opt::PREFIX_INFO, 4, ra.prefix_len, flags]);
    m.extend_from_slice(&PREFIX_VALID.to_be_bytes());
    m.extend_from_slice(&PREFIX_PREFERRED.to_be_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&ra.prefix.octets());
    if let Some(dns) = ra.dns {
        m.extend_from_slice(&[opt::RDNSS, 3, 0, 0]);
        m.extend_from_slice(&RDNSS_LIFETIME.to_be_bytes());
        m.extend_from_slice(&dns.octets());
    }
    m
}

/// An ICMPv6 error (type, code, the 32-bit parameter: the MTU for packet too big)
/// quoting as much of `orig` as fits in the minimum MTU (RFC 4443 §2.4 (c)).
pub fn error(ty: u8, code: u8, param: u32, orig: &[u8]) -> Vec<u8> {
    let room = MIN_MTU - HLEN - 8;
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&param.to_be_bytes());
    m.extend_from_slice(&orig[..orig.len().min(room)]);
    m
}

/// Whether `orig` (an IPv6 packet) may be answered with an ICMPv6 error (RFC 4443
/// §2.4 (e)): not an ICMPv6 error or redirect itself, not from an unspecified,
/// multicast source. (Hop-by-hop options before ICMPv6 are not walked: such a packet
/// is never answered, which errs on the quiet side.)
pub fn may_answer_error(m: &Ipv6Meta, orig: &[u8]) -> bool {
    if m.src.is_unspecified() || m.src.is_multicast() || m.dst.is_multicast() {
        return false;
    }
    match m.next {
        NEXT_ICMPV6 => orig.get(HLEN).is_some_and(|t| *t >= 128 && *t != 137),
        0 => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses() {
        assert_eq!(solicited_node(&a("fd00:10::1")), a("ff02::1:ff00:1"));
        assert_eq!(
            multicast_mac(&a("ff02::1:ff00:1")),
            MacAddr([0x33, 0x33, 0xff, 0, 0, 1])
        );
        let mac = MacAddr([0x02, 0x76, 0x12, 0x34, 0x56, 0x78]);
        assert_eq!(link_local(mac), a("fe80::76:12ff:fe34:5678"));
        assert!(is_link_local(&a("fe80::1")) && !is_link_local(&a("fd00::1")));
    }

    /// Checksums checked against etherparse, an independent implementation.
    #[test]
    fn icmp_checksum_matches_etherparse() {
        let src = a("fd00:10::1");
        let dst = a("fd00:10::5");
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        for msg in [
            neighbor_advert(src, mac, NA_ROUTER | NA_SOLICITED),
            neighbor_solicit(dst, mac),
            router_advert(&RouterAdvert {
                mac,
                prefix: a("fd00:10::"),
                prefix_len: 64,
                mtu: 1500,
                dns: Some(src),
                lifetime: 1800,
                managed: true,
            }),
            error(icmp::TIME_EXCEEDED, 0, 0, &[0x60; 100]),
        ] {
            let p = icmp_packet(src, dst, 255, msg);
            let s = etherparse::SlicedPacket::from_ip(&p).expect("parses");
            match s.transport {
                Some(etherparse::TransportSlice::Icmpv6(i)) => {
                    let h = i.header();
                    let want = h
                        .icmp_type
                        .calc_checksum(src.octets(), dst.octets(), i.payload())
                        .unwrap();
                    assert_eq!(h.checksum, want);
                }
                other => panic!("not ICMPv6: {other:?}"),
            }
            let m = Ipv6Meta::parse(&p).unwrap();
            assert!(icmp_checksum_ok(&m, m.payload(&p)));
            assert_eq!((m.hop_limit, m.src, m.dst), (255, src, dst));
        }
    }

    #[test]
    fn ndp_parse_and_malformed() {
        let src = a("fd00:10::5");
        let dst = solicited_node(&a("fd00:10::1"));
        let mac = MacAddr([2, 0, 0, 0, 0, 5]);
        let p = icmp_packet(src, dst, 255, neighbor_solicit(a("fd00:10::1"), mac));
        let m = Ipv6Meta::parse(&p).unwrap();
        let n = parse_neighbor(&m, m.payload(&p)).unwrap();
        assert_eq!(
            (n.ty, n.target, n.lla),
            (icmp::NEIGHBOR_SOLICIT, a("fd00:10::1"), Some(mac))
        );
        // Hop limit other than 255: off-link, refused.
        let mut m2 = m;
        m2.hop_limit = 64;
        assert!(parse_neighbor(&m2, m.payload(&p)).is_none());
        // An option of length 0, or running past the end: refused, no panic.
        let mut bad = neighbor_solicit(a("fd00:10::1"), mac);
        bad[25] = 0;
        assert!(parse_neighbor(&m, &bad).is_none());
        bad[25] = 9;
        assert!(parse_neighbor(&m, &bad).is_none());
        // Truncated messages and packets.
        for n in 0..p.len() {
            let _ = Ipv6Meta::parse(&p[..n]).map(|m| parse_neighbor(&m, m.payload(&p[..n])));
            let _ = parse_neighbor(&m, &p[HLEN..HLEN + n.min(p.len() - HLEN)]);
            let _ = ndp_options(&p[..n]);
        }
        assert_eq!(Ipv6Meta::parse(&p[..39]), Err(Ipv6Error::Truncated));
        assert_eq!(Ipv6Meta::parse(&p[..60]), Err(Ipv6Error::Truncated));
    }

    #[test]
    fn errors_quote_at_most_the_minimum_mtu() {
        let e = error(icmp::PACKET_TOO_BIG, 0, 1280, &[0; 2000]);
        assert_eq!(e.len(), MIN_MTU - HLEN);
        assert_eq!(&e[4..8], &1280u32.to_be_bytes());
        let m = |next, src: &str, dst: &str| Ipv6Meta {
            next,
            hop_limit: 64,
            payload_len: 8,
            src: a(src),
            dst: a(dst),
        };
        let mut pkt = vec![0u8; 48];
        pkt[HLEN] = icmp::DEST_UNREACH;
        assert!(!may_answer_error(
            &m(NEXT_ICMPV6, "fd00::1", "fd00::2"),
            &pkt
        ));
        pkt[HLEN] = icmp::ECHO_REQUEST;
        assert!(may_answer_error(
            &m(NEXT_ICMPV6, "fd00::1", "fd00::2"),
            &pkt
        ));
        assert!(!may_answer_error(&m(NEXT_UDP, "::", "fd00::2"), &pkt));
        assert!(!may_answer_error(&m(NEXT_UDP, "fd00::1", "ff02::1"), &pkt));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(m) = Ipv6Meta::parse(&b) {
                let _ = parse_neighbor(&m, m.payload(&b));
                let _ = may_answer_error(&m, &b);
            }
            let _ = ndp_options(&b);
        }
    }
}
