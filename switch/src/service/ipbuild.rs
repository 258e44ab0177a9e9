//! Building the few packets the router originates (slow path only: allocates).

use crate::wire::ipv4::{self, checksum};
use crate::wire::MacAddr;
use std::net::Ipv4Addr;

/// An IPv4 packet (no options, TTL 64, DF clear) around `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (ipv4::MIN_HLEN + payload.len()).min(0xffff) as u16;
    let mut p = Vec::with_capacity(total as usize);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p);
    p[ipv4::field::CHECKSUM..ipv4::field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A UDP datagram with its checksum over the IPv4 pseudo-header.
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = (8 + data.len()).min(0xffff) as u16;
    let mut u = Vec::with_capacity(len as usize);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let mut pseudo = Vec::with_capacity(12 + u.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, ipv4::PROTO_UDP]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&u);
    let c = match checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// An Ethernet II frame carrying an IPv4 packet, padded to the 60-byte minimum.
pub fn ethernet(dst: MacAddr, src: MacAddr, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ipv4::ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(ip);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_check_out() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        let u = udp(a, b, 53, 40000, b"hello");
        let p = ipv4(a, b, ipv4::PROTO_UDP, &u);
        assert_eq!(checksum(&p[..20]), 0);
        let m = ipv4::Ipv4Meta::parse(&p).unwrap();
        assert_eq!((m.total_len, m.src, m.dst), (33, a, b));
        // Verify the UDP checksum with etherparse, an independent implementation.
        let s = etherparse::SlicedPacket::from_ip(&p).unwrap();
        match s.transport {
            Some(etherparse::TransportSlice::Udp(udp)) => {
                let h = udp.to_header();
                assert_eq!(
                    h.calc_checksum_ipv4_raw(a.octets(), b.octets(), udp.payload())
                        .unwrap(),
                    h.checksum
                );
            }
            other => panic!("not UDP: {other:?}"),
        }
    }
}
