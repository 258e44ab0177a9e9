//! IPv4 header view for the router's in-place rewrites (TTL, checksum), and the
//! Internet checksum.
//!
//! Read first: RFC 791 (header), RFC 1071 (checksum), RFC 1624 (incremental update).

use std::net::Ipv4Addr;

/// Byte offsets inside an IPv4 header.
pub mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

pub const MIN_HLEN: usize = 20;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// Don't Fragment, in the flags/fragment-offset word.
pub const FLAG_DF: u16 = 0x4000;
/// More Fragments flag and fragment offset.
pub const FRAG_MASK: u16 = 0x3fff;

/// The facts of an IPv4 header the router needs, checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Meta {
    pub hlen: usize,
    pub total_len: usize,
    pub ttl: u8,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub df: bool,
    /// Offset or MF set: a fragment.
    pub fragment: bool,
}

/// Why an IPv4 header is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    Truncated,
    BadVersion,
    BadHeaderLen,
    BadTotalLen,
}

impl Ipv4Meta {
    /// Parse the header at the start of `b` (the bytes after the EtherType).
    pub fn parse(b: &[u8]) -> Result<Ipv4Meta, Ipv4Error> {
        if b.len() < MIN_HLEN {
            return Err(Ipv4Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Ipv4Error::BadVersion);
        }
        let hlen = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hlen < MIN_HLEN || hlen > b.len() {
            return Err(Ipv4Error::BadHeaderLen);
        }
        let total_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        // GSO super-frames may carry 0 or the super-frame length; never less than hlen
        // unless zero.
        if total_len != 0 && (total_len < hlen || total_len > b.len()) {
            return Err(Ipv4Error::BadTotalLen);
        }
        let ff = u16::from_be_bytes([b[6], b[7]]);
        Ok(Ipv4Meta {
            hlen,
            total_len: if total_len == 0 { b.len() } else { total_len },
            ttl: b[field::TTL],
            protocol: b[field::PROTOCOL],
            src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
            dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
            df: ff & FLAG_DF != 0,
            fragment: ff & FRAG_MASK != 0,
        })
    }
}

/// Decrement the TTL of the header at `b` and patch its checksum incrementally
/// (RFC 1624: HC' = ~(~HC + ~m + m')). `b` must hold at least [`MIN_HLEN`] bytes.
#[inline]
pub fn decrement_ttl(b: &mut [u8]) {
    if b.len() < MIN_HLEN {
        return;
    }
    let old = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
    b[field::TTL] = b[field::TTL].wrapping_sub(1);
    let new = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
    let hc = u16::from_be_bytes([b[field::CHECKSUM], b[field::CHECKSUM + 1]]);
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let c = !(sum as u16);
    b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
}

/// The Internet checksum of `data` (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    super::csum::checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An IPv4 header shaped like a default `ping` (84 bytes, DF, TTL 64, ICMP) from
    // 10.0.0.1 to 10.1.0.2, with its header checksum 0xea87.
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x54, 0x3c, 0x1e, 0x40, 0x00, 0x40, 0x01, 0xea, 0x87, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x01, 0x00, 0x02,
    ];

    fn packet() -> Vec<u8> {
        let mut p = HDR.to_vec();
        p.resize(84, 0);
        p
    }

    #[test]
    fn parses_and_checksums() {
        let m = Ipv4Meta::parse(&packet()).unwrap();
        assert_eq!((m.hlen, m.total_len, m.ttl, m.protocol), (20, 84, 64, 1));
        assert_eq!(m.dst, Ipv4Addr::new(10, 1, 0, 2));
        assert!(m.df && !m.fragment);
        assert_eq!(checksum(&HDR), 0);
        assert_eq!(
            Ipv4Meta::parse(&HDR),
            Err(Ipv4Error::BadTotalLen),
            "shorter than total length"
        );
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut h = HDR;
        for _ in 0..64 {
            decrement_ttl(&mut h);
            assert_eq!(checksum(&h), 0);
        }
        assert_eq!(h[field::TTL], 0);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Ipv4Meta::parse(&HDR[..19]), Err(Ipv4Error::Truncated));
        let mut h = packet();
        h[0] = 0x65;
        assert_eq!(Ipv4Meta::parse(&h), Err(Ipv4Error::BadVersion));
        h[0] = 0x44;
        assert_eq!(Ipv4Meta::parse(&h), Err(Ipv4Error::BadHeaderLen));
        let mut h = packet();
        h[3] = 0x10;
        assert_eq!(Ipv4Meta::parse(&h), Err(Ipv4Error::BadTotalLen));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = Ipv4Meta::parse(&b);
            let mut b = b;
            decrement_ttl(&mut b);
        }
    }
}
