//! The Internet checksum (RFC 1071): one sum for every user (IPv4 headers, TCP/UDP,
//! ICMP), incremental updates (RFC 1624) for in-place header rewrites, and the software
//! checksum offloads (complete a partial checksum; turn a full one into a partial one).
//!
//! A full checksum field holds the complement of the one's-complement sum:
//! `HC' = ~(~HC + ~m + m')`. A *partial* checksum (virtio `NEEDS_CSUM`, Linux
//! `CHECKSUM_PARTIAL`) holds the plain folded sum of the pseudo-header, which the
//! device completes; it is updated without the complements, and only for pseudo-header
//! fields (addresses), never for ports.

use super::ipv4;
use super::vnet::{OffloadError, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use super::EthFrame;

/// One's-complement sum of `data` as 16-bit big-endian words, plus `acc`, folded to 16
/// bits. The sum is byte-order independent (RFC 1071 §2): eight bytes at a time in
/// native order, byte-swapped once at the end.
pub fn sum16(data: &[u8], acc: u32) -> u32 {
    let mut s = 0u64;
    let mut it = data.chunks_exact(8);
    for c in &mut it {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        s += (v >> 32) + (v & 0xffff_ffff);
    }
    let mut rest = it.remainder().chunks_exact(2);
    for c in &mut rest {
        s += u64::from(u16::from_le_bytes([c[0], c[1]]));
    }
    if let [b] = rest.remainder() {
        s += u64::from(*b);
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    let mut t = u64::from((s as u16).swap_bytes()) + u64::from(acc);
    while t >> 16 != 0 {
        t = (t & 0xffff) + (t >> 16);
    }
    t as u32
}

/// Fold a 32-bit one's-complement accumulator to 16 bits (not complemented).
#[inline]
pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum field value for `data` (complement of its folded sum): IPv4 header,
/// ICMP message. Over a whole header, a valid one gives 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum16(data, 0))
}
/// Fill in the checksum a sender left partial (`NEEDS_CSUM`): the field already holds
/// the pseudo-header sum, so the checksum over `csum_start..` is the final value.
pub fn complete_csum(frame: &mut [u8], vnet: &VnetHdr) -> Result<(), OffloadError> {
    if vnet.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(vnet.csum_start);
    let at = start + usize::from(vnet.csum_offset);
    if at + 2 > frame.len() || start > frame.len() {
        return Err(OffloadError::Malformed);
    }
    let c = !fold(sum16(&frame[start..], 0));
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Turn the L4 checksum of a TCP or UDP over IPv4 frame into a *partial* one: the
/// field gets the pseudo-header sum and the returned header says `NEEDS_CSUM`.
///
/// Frames decapsulated from a tunnel may carry a checksum the sender left partial (a
/// kernel VXLAN peer with checksum offload), and there is no metadata to tell. Marking
/// them partial is correct either way: a local receiver trusts it (as for any frame
/// from a veth), and a transmitter that cannot offload completes it in software.
pub fn mark_partial(frame: &mut [u8]) -> VnetHdr {
    let none = VnetHdr::default();
    let Ok(eth) = EthFrame::parse(frame) else {
        return none;
    };
    if eth.ethertype != ipv4::ETHERTYPE_IPV4 {
        return none;
    }
    let l3 = eth.payload_ofs + 2;
    let Some(ip) = frame.get(l3..) else {
        return none;
    };
    let Ok(m) = ipv4::Ipv4Meta::parse(ip) else {
        return none;
    };
    if m.fragment {
        return none;
    }
    let l4 = l3 + m.hlen;
    let off = match m.protocol {
        ipv4::PROTO_TCP => 16,
        ipv4::PROTO_UDP => 6,
        _ => return none,
    };
    let at = l4 + off;
    if at + 2 > l3 + m.total_len {
        return none;
    }
    if m.protocol == ipv4::PROTO_UDP && frame[at..at + 2] == [0, 0] {
        return none; // no checksum
    }
    let l4_len = (m.total_len - m.hlen) as u32;
    let acc = sum16(&frame[l3 + ipv4::field::SRC..l3 + ipv4::field::DST + 4], 0)
        + u32::from(m.protocol)
        + l4_len;
    frame[at..at + 2].copy_from_slice(&fold(acc).to_be_bytes());
    let mut h = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: off as u16,
        ..VnetHdr::default()
    };
    // A peer's receive offload (GRO on the underlay) can hand us a TCP super-frame
    // inside one datagram: declare it GSO so the next device cuts it to a normal MTU.
    if m.protocol == ipv4::PROTO_TCP && m.total_len > GRO_MTU {
        let thlen = usize::from(frame[l4 + 12] >> 4) * 4;
        if thlen >= 20 && m.hlen + thlen < GRO_MTU {
            h.gso_type = GSO_TCPV4;
            h.gso_size = (GRO_MTU - m.hlen - thlen) as u16;
            h.hdr_len = (l4 + thlen) as u16;
        }
    }
    h
}

/// The IP MTU assumed for segments of a super-frame that arrived coalesced.
const GRO_MTU: usize = 1500;

/// Update a full checksum for 16-bit words `old` → `new`.
#[inline]
pub fn update(hc: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut s = u32::from(!hc);
    for &o in old {
        s += u32::from(!o);
    }
    for &n in new {
        s += u32::from(n);
    }
    !fold(s)
}

/// Update a partial (pseudo-header) checksum for words `old` → `new`.
#[inline]
pub fn update_partial(sum: u16, old: &[u16], new: &[u16]) -> u16 {
    let mut s = u32::from(sum);
    for &o in old {
        s += u32::from(!o);
    }
    for &n in new {
        s += u32::from(n);
    }
    fold(s)
}

/// The two 16-bit words of an IPv4 address.
#[inline]
pub fn words(a: std::net::Ipv4Addr) -> [u16; 2] {
    let o = a.octets();
    [
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum16_matches_the_rfc_1071_loop() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 100, 1001] {
            for acc in [0u32, 1, 0xffff, 0x1_2345] {
                let d = &data[..len];
                let mut r = acc;
                for c in d.chunks(2) {
                    r += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
                }
                assert_eq!(fold(sum16(d, acc)), fold(r), "len {len} acc {acc}");
            }
        }
        assert_eq!(fold(sum16(&[0xff; 64], 0)), 0xffff);
    }

    #[test]
    fn incremental_equals_recomputed() {
        let mut data = vec![
            0x45u8, 0, 0, 40, 1, 2, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 5, 203, 0, 113, 10,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        let old = words("10.0.0.5".parse().unwrap());
        let new = words("198.51.100.2".parse().unwrap());
        data[12..16].copy_from_slice(&[198, 51, 100, 2]);
        let c2 = update(c, &old, &new);
        data[10..12].copy_from_slice(&c2.to_be_bytes());
        assert_eq!(checksum(&data), 0);
    }

    #[test]
    fn partial_tracks_plain_sum() {
        // A partial checksum is the folded sum; replacing a word keeps it the folded sum.
        let words_before = [0x0a00u16, 0x0005, 0xcb00, 0x710a];
        let sum = fold(words_before.iter().map(|&w| u32::from(w)).sum());
        let after = [0xc633u16, 0x6402, 0xcb00, 0x710a];
        let want = fold(after.iter().map(|&w| u32::from(w)).sum());
        assert_eq!(update_partial(sum, &words_before[..2], &after[..2]), want);
    }
}
