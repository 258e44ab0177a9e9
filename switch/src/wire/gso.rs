//! Software offloads for ports that cannot take a virtio-net header (VXLAN): complete a
//! partial checksum, and cut a TCP/IPv4 GSO super-frame into MSS-sized segments
//! (what the kernel's `tcp_gso_segment` does when a device lacks TSO).
//!
//! Read first: RFC 9293 §3.1 (TCP header and checksum), Linux `net/ipv4/tcp_offload.c`.

use super::ipv4::{self, checksum};
use super::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4};
use super::EthFrame;

/// Why a frame could not be prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoError {
    /// Headers shorter than they claim, or offsets outside the frame.
    Malformed,
    /// A GSO type we do not segment (IPv6, UDP).
    Unsupported,
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut it = data.chunks_exact(2);
    for c in &mut it {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = it.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Fill in the checksum a sender left partial (`NEEDS_CSUM`): the field already holds
/// the pseudo-header sum, so the checksum over `csum_start..` is the final value.
pub fn complete_csum(frame: &mut [u8], vnet: &VnetHdr) -> Result<(), GsoError> {
    if vnet.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(vnet.csum_start);
    let at = start + usize::from(vnet.csum_offset);
    if at + 2 > frame.len() || start > frame.len() {
        return Err(GsoError::Malformed);
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

/// Append to `out` the wire frames for `frame`: itself (checksum completed), or its
/// TCP segments if it is a GSO super-frame. `out` buffers are reused.
pub fn prepare(
    frame: &[u8],
    vnet: &VnetHdr,
    out: &mut Vec<Vec<u8>>,
    used: &mut usize,
) -> Result<(), GsoError> {
    let mut next = |out: &mut Vec<Vec<u8>>| -> usize {
        if *used == out.len() {
            out.push(Vec::with_capacity(2048));
        }
        *used += 1;
        *used - 1
    };
    let gso = vnet.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        let i = next(out);
        let b = &mut out[i];
        b.clear();
        b.extend_from_slice(frame);
        return complete_csum(b, vnet);
    }
    if gso != GSO_TCPV4 {
        return Err(GsoError::Unsupported);
    }
    let eth = EthFrame::parse(frame).map_err(|_| GsoError::Malformed)?;
    let l3 = eth.payload_ofs + 2;
    let ip = frame.get(l3..).ok_or(GsoError::Malformed)?;
    if ip.len() < ipv4::MIN_HLEN || ip[0] >> 4 != 4 {
        return Err(GsoError::Malformed);
    }
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    let l4 = l3 + hlen;
    if frame.len() < l4 + 20 {
        return Err(GsoError::Malformed);
    }
    let thlen = usize::from(frame[l4 + 12] >> 4) * 4;
    let hdrs = l4 + thlen;
    let mss = usize::from(vnet.gso_size);
    if thlen < 20 || frame.len() < hdrs || mss == 0 {
        return Err(GsoError::Malformed);
    }
    let payload = &frame[hdrs..];
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let id0 = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    let flags0 = frame[l4 + 13];
    let n = payload.len().div_ceil(mss).max(1);
    for (k, chunk) in payload.chunks(mss).enumerate() {
        let i = next(out);
        let b = &mut out[i];
        b.clear();
        b.extend_from_slice(&frame[..hdrs]);
        b.extend_from_slice(chunk);
        let total = (hlen + thlen + chunk.len()) as u16;
        b[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        b[l3 + 4..l3 + 6].copy_from_slice(&id0.wrapping_add(k as u16).to_be_bytes());
        b[l3 + ipv4::field::CHECKSUM..l3 + ipv4::field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let c = checksum(&b[l3..l3 + hlen]);
        b[l3 + ipv4::field::CHECKSUM..l3 + ipv4::field::CHECKSUM + 2]
            .copy_from_slice(&c.to_be_bytes());
        let seq = seq0.wrapping_add((k * mss) as u32);
        b[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut fl = flags0;
        if k + 1 < n {
            fl &= !(0x01 | 0x08); // FIN, PSH only on the last segment
        }
        if k > 0 {
            fl &= !0x80; // CWR only on the first
        }
        b[l4 + 13] = fl;
        b[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let tcp_len = (thlen + chunk.len()) as u32;
        let mut acc = sum16(&b[l3 + ipv4::field::SRC..l3 + ipv4::field::DST + 4], 0);
        acc += u32::from(ipv4::PROTO_TCP) + tcp_len;
        let c = !fold(sum16(&b[l4..], acc));
        b[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet::GSO_TCPV4;

    /// A TCP/IPv4 frame with `n` payload bytes and a partial checksum, as a veth hands
    /// it over with GSO.
    fn superframe(n: usize) -> (Vec<u8>, VnetHdr) {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let total = (20 + 20 + n) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[
            0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f.extend((0..n).map(|i| i as u8));
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let v = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        (f, v)
    }

    fn verify_tcp(seg: &[u8]) {
        let ip = &seg[14..];
        assert_eq!(checksum(&ip[..20]), 0, "IP checksum");
        let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        assert_eq!(tot, seg.len() - 14);
        let mut acc = sum16(&ip[12..20], 0) + 6 + (tot - 20) as u32;
        acc = sum16(&ip[20..tot], acc);
        assert_eq!(fold(acc), 0xffff, "TCP checksum");
    }

    #[test]
    fn segments_with_valid_checksums() {
        let (f, v) = superframe(4000);
        let mut out = Vec::new();
        let mut used = 0;
        prepare(&f, &v, &mut out, &mut used).unwrap();
        assert_eq!(used, 3);
        let lens: Vec<usize> = out[..used].iter().map(|s| s.len() - 54).collect();
        assert_eq!(lens, vec![1448, 1448, 1104]);
        for (k, s) in out[..used].iter().enumerate() {
            verify_tcp(s);
            let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
            assert_eq!(seq, 1 + 1448 * k as u32);
            assert_eq!(s[47] & 0x08 != 0, k == 2, "PSH only on the last");
        }
        // Payload survives in order.
        let joined: Vec<u8> = out[..used].iter().flat_map(|s| s[54..].to_vec()).collect();
        assert_eq!(joined, f[54..].to_vec());
    }

    #[test]
    fn completes_a_partial_checksum() {
        let (mut f, mut v) = superframe(100);
        v.gso_type = GSO_NONE;
        // Put the pseudo-header sum in the field, as the sender's stack does.
        let mut acc = sum16(&f[26..34], 0) + 6 + 120;
        acc = fold(acc).into();
        f[50..52].copy_from_slice(&(acc as u16).to_be_bytes());
        let mut out = Vec::new();
        let mut used = 0;
        prepare(&f, &v, &mut out, &mut used).unwrap();
        verify_tcp(&out[0]);
    }

    #[test]
    fn mark_partial_then_complete_gives_a_valid_checksum() {
        let (f, v) = superframe(300);
        let mut out = Vec::new();
        let mut used = 0;
        let mut plain = v;
        plain.gso_type = GSO_NONE;
        // A frame with a correct full checksum...
        let mut tmp = f.clone();
        let mut acc = sum16(&tmp[26..34], 0) + 6 + 320;
        acc = fold(acc).into();
        tmp[50..52].copy_from_slice(&(acc as u16).to_be_bytes());
        prepare(&tmp, &plain, &mut out, &mut used).unwrap();
        let mut full = out[0].clone();
        verify_tcp(&full);
        // ...marked partial and completed again is still valid.
        let h = mark_partial(&mut full);
        assert_eq!(
            (h.flags, h.csum_start, h.csum_offset),
            (F_NEEDS_CSUM, 34, 16)
        );
        complete_csum(&mut full, &h).unwrap();
        verify_tcp(&full);
    }

    #[test]
    fn bad_input_is_an_error() {
        let (f, v) = superframe(10);
        let mut out = Vec::new();
        let mut used = 0;
        assert_eq!(
            prepare(&f[..40], &v, &mut out, &mut used),
            Err(GsoError::Malformed)
        );
        let mut v6 = v;
        v6.gso_type = crate::wire::vnet::GSO_TCPV6;
        assert_eq!(
            prepare(&f, &v6, &mut out, &mut used),
            Err(GsoError::Unsupported)
        );
    }
}
