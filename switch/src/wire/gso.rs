//! Software segmentation for ports that cannot take a virtio-net header (VXLAN): cut a
//! GSO super-frame — TCP over IPv4 or IPv6, or UDP (USO, a sender's `UDP_SEGMENT`) —
//! into its segments, each with its checksums completed (what the kernel's
//! `tcp_gso_segment` and `__udp_gso_segment` do when a device lacks the offload).
//! Checksums are [`super::csum`]'s; the inverse (software GRO) is [`super::gro`].
//!
//! Read first: RFC 9293 §3.1 (TCP header and checksum), Linux `net/ipv4/tcp_offload.c`.

use super::csum::{checksum, complete_csum, fold, sum16};
use super::l4::{TCP_CWR, TCP_FIN, TCP_PSH, UDP_HLEN};
use super::vnet::{VnetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use super::{ipv4, EthFrame};

/// Why a frame could not be prepared (the offload error of [`super::vnet`]).
pub use super::vnet::OffloadError as GsoError;

/// A piece of a wire frame: bytes in [`Prepared::arena`], or bytes of the `rest` of
/// frame number `frame` of the caller's (payloads are referenced, not copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Arena {
        start: usize,
        len: usize,
    },
    Frame {
        frame: usize,
        start: usize,
        len: usize,
    },
}

/// One wire frame: `count` pieces from `first` on in [`Prepared::pieces`], `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    pub first: usize,
    pub count: usize,
    pub len: usize,
}

/// Wire frames made by [`prepare_into`], as pieces to gather (writev-style).
#[derive(Debug, Default)]
pub struct Prepared {
    pub arena: Vec<u8>,
    pub pieces: Vec<Piece>,
    pub wires: Vec<Wire>,
}

impl Prepared {
    pub fn clear(&mut self) {
        self.arena.clear();
        self.pieces.clear();
        self.wires.clear();
    }
}

/// Append to `out` the wire frames for frame number `frame`, `head ++ rest` (a frame in
/// two pieces, as a port's send gets it: `head` short, up to the VLAN tag), each
/// preceded by `prefix` (a tunnel header, or nothing): the frame itself (copied, its
/// checksum completed), or its TCP segments if it is a GSO super-frame: rewritten
/// headers in the arena, payloads by reference into `rest`. On error nothing is
/// appended.
pub fn prepare_into(
    head: &[u8],
    rest: &[u8],
    frame: usize,
    vnet: &VnetHdr,
    prefix: &[u8],
    out: &mut Prepared,
) -> Result<(), GsoError> {
    let gso = vnet.gso_type & !GSO_ECN;
    let arena = &mut out.arena;
    let mark = arena.len();
    if gso == GSO_NONE {
        arena.extend_from_slice(prefix);
        arena.extend_from_slice(head);
        arena.extend_from_slice(rest);
        if let Err(e) = complete_csum(&mut arena[mark + prefix.len()..], vnet) {
            arena.truncate(mark);
            return Err(e);
        }
        let len = arena.len() - mark;
        out.pieces.push(Piece::Arena { start: mark, len });
        out.wires.push(Wire {
            first: out.pieces.len() - 1,
            count: 1,
            len,
        });
        return Ok(());
    }
    let udp = match gso {
        GSO_TCPV4 | GSO_TCPV6 => false,
        GSO_UDP_L4 => true,
        _ => return Err(GsoError::Unsupported),
    };
    // The headers, in one piece: Ethernet (+ tags), IPv4 (with options) or IPv6, TCP
    // (with options) or UDP.
    let mut hb = [0u8; 14 + 8 + IPV6_HLEN + IPV6_EXT_MAX + 60];
    let hn = hb.len().min(head.len() + rest.len());
    let from_head = head.len().min(hn);
    hb[..from_head].copy_from_slice(&head[..from_head]);
    hb[from_head..hn].copy_from_slice(&rest[..hn - from_head]);
    let hdr = &hb[..hn];
    let eth = EthFrame::parse(hdr).map_err(|_| GsoError::Malformed)?;
    let l3 = eth.payload_ofs + 2;
    let ip = hdr.get(l3..).ok_or(GsoError::Malformed)?;
    let v6 = match ip.first().map(|b| b >> 4) {
        Some(4) if gso != GSO_TCPV6 => false,
        Some(6) if gso != GSO_TCPV4 => true,
        _ => return Err(GsoError::Malformed),
    };
    let (hlen, proto) = if v6 {
        ipv6_transport(ip)?
    } else {
        let hlen = usize::from(ip[0] & 0x0f) * 4;
        if ip.len() < ipv4::MIN_HLEN || hlen < ipv4::MIN_HLEN {
            return Err(GsoError::Malformed);
        }
        (hlen, ip[ipv4::field::PROTOCOL])
    };
    if proto
        != if udp {
            ipv4::PROTO_UDP
        } else {
            ipv4::PROTO_TCP
        }
    {
        return Err(GsoError::Unsupported);
    }
    let l4 = l3 + hlen;
    if hdr.len() < l4 + if udp { UDP_HLEN } else { 20 } {
        return Err(GsoError::Malformed);
    }
    let thlen = if udp {
        UDP_HLEN
    } else {
        usize::from(hdr[l4 + 12] >> 4) * 4
    };
    let hdrs = l4 + thlen;
    let mss = usize::from(vnet.gso_size);
    if thlen < if udp { UDP_HLEN } else { 20 } || hdr.len() < hdrs || mss == 0 || hdrs < head.len()
    {
        return Err(GsoError::Malformed);
    }
    let pay0 = hdrs - head.len();
    let payload = &rest[pay0..];
    let (seq0, flags0) = if udp {
        (0, 0)
    } else {
        let s = u32::from_be_bytes([hdr[l4 + 4], hdr[l4 + 5], hdr[l4 + 6], hdr[l4 + 7]]);
        (s, hdr[l4 + 13])
    };
    let id0 = u16::from_be_bytes([hdr[l3 + 4], hdr[l3 + 5]]);
    let n = payload.len().div_ceil(mss).max(1);
    let p = prefix.len();
    // The pseudo-header sum without the length: the same for every segment
    // (RFC 9293 §3.1, RFC 8200 §8.1).
    let addrs = if v6 {
        &hdr[l3 + 8..l3 + IPV6_HLEN]
    } else {
        &hdr[l3 + ipv4::field::SRC..l3 + ipv4::field::DST + 4]
    };
    let pseudo = sum16(addrs, 0) + u32::from(proto);
    let csum_at = l4 + if udp { 6 } else { 16 };
    let mut chunks = payload.chunks(mss);
    for k in 0..n {
        let chunk = chunks.next().unwrap_or(&[]);
        let at = arena.len();
        arena.extend_from_slice(prefix);
        arena.extend_from_slice(&hdr[..hdrs]);
        let b = &mut arena[at + p..];
        let l4_len = thlen + chunk.len();
        if v6 {
            // The payload length counts the extension headers too.
            let plen = (hlen - IPV6_HLEN + l4_len) as u16;
            b[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let total = (hlen + l4_len) as u16;
            b[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            b[l3 + 4..l3 + 6].copy_from_slice(&id0.wrapping_add(k as u16).to_be_bytes());
            b[l3 + ipv4::field::CHECKSUM..l3 + ipv4::field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
            let c = checksum(&b[l3..l3 + hlen]);
            b[l3 + ipv4::field::CHECKSUM..l3 + ipv4::field::CHECKSUM + 2]
                .copy_from_slice(&c.to_be_bytes());
        }
        if udp {
            b[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            let seq = seq0.wrapping_add((k * mss) as u32);
            b[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut fl = flags0;
            if k + 1 < n {
                fl &= !(TCP_FIN | TCP_PSH); // only on the last segment
            }
            if k > 0 {
                fl &= !TCP_CWR; // only on the first
            }
            b[l4 + 13] = fl;
        }
        b[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
        // The transport header is a multiple of 4 bytes: its sum and the payload's add up.
        let mut c = !fold(sum16(chunk, sum16(&b[l4..hdrs], pseudo + l4_len as u32)));
        if udp && c == 0 {
            c = 0xffff; // zero means "no checksum" in UDP
        }
        b[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        out.pieces.push(Piece::Arena {
            start: at,
            len: p + hdrs,
        });
        let mut count = 1;
        if !chunk.is_empty() {
            out.pieces.push(Piece::Frame {
                frame,
                start: pay0 + k * mss,
                len: chunk.len(),
            });
            count = 2;
        }
        out.wires.push(Wire {
            first: out.pieces.len() - count,
            count,
            len: p + hdrs + chunk.len(),
        });
    }
    Ok(())
}

const IPV6_HLEN: usize = 40;
/// The most IPv6 extension-header bytes in front of TCP/UDP that segmentation walks.
pub const IPV6_EXT_MAX: usize = 256;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_DEST_OPTS: u8 = 60;

/// The offset of the transport header from the IPv6 header `ip` and its protocol,
/// past hop-by-hop and destination options (RFC 8200 §4: next header, then length in
/// 8-byte units after the first 8). Other extension headers end the walk: their
/// protocol number then fails the caller's TCP/UDP check. A routing header is not
/// walked because the checksum's pseudo-header would need its final destination.
fn ipv6_transport(ip: &[u8]) -> Result<(usize, u8), GsoError> {
    let mut nh = *ip.get(6).ok_or(GsoError::Malformed)?;
    let mut off = IPV6_HLEN;
    while nh == IPV6_HOP_BY_HOP || nh == IPV6_DEST_OPTS {
        let h = ip.get(off..off + 2).ok_or(GsoError::Malformed)?;
        nh = h[0];
        off += (usize::from(h[1]) + 1) * 8;
        if off - IPV6_HLEN > IPV6_EXT_MAX {
            return Err(GsoError::Unsupported);
        }
    }
    Ok((off, nh))
}

/// Fuzzing entry point (the `gso` fuzz target and its corpus replay): arbitrary frames
/// and offload headers through [`prepare_into`], the result joined again with
/// [`join`] and [`coalesce`] (which must give back the payload, if they join at all),
/// and arbitrary byte ranges straight into [`coalesce`] and [`mark_partial`]. Panics on a violated
/// property; malformed input must only be refused.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz(data: &[u8]) {
    use super::csum::mark_partial;
    use super::gro::{coalesce, join};
    use super::vnet::F_NEEDS_CSUM;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 != 0 {
        // Garbage trains: lengths from the first bytes, ranges over the rest.
        let n = usize::from(mode & 0x0f).min(rest.len());
        let (lens, body) = rest.split_at(n);
        let mut buf = body.to_vec();
        let mut segs = Vec::new();
        let mut at = 0;
        for &l in lens {
            let l = usize::from(l) * 4;
            segs.push((at, l));
            at += l + 8;
        }
        if let Some((len, _)) = coalesce(&mut buf, &segs) {
            assert!(len <= buf.len());
        }
        let _ = mark_partial(&mut buf);
        return;
    }
    let [a, b, c, d, frame @ ..] = rest else {
        return;
    };
    let vnet = VnetHdr {
        flags: if mode & 1 != 0 { F_NEEDS_CSUM } else { 0 },
        gso_type: [GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4][usize::from(mode >> 1 & 3)],
        hdr_len: 0,
        gso_size: u16::from_be_bytes([*a, *b]),
        csum_start: u16::from(*c),
        csum_offset: u16::from(*d),
    };
    let split = frame.len().min(12);
    let (head, tail) = frame.split_at(split);
    let prefix = [0x08, 0, 0, 0, 0, 0, 42, 0];
    let mut out = Prepared::default();
    if prepare_into(head, tail, 0, &vnet, &prefix, &mut out).is_err() {
        assert!(out.arena.is_empty() && out.pieces.is_empty() && out.wires.is_empty());
        return;
    }
    // Lay the wire frames out as a received train.
    let mut train = Vec::new();
    let mut segs = Vec::new();
    for w in &out.wires {
        let start = train.len();
        for p in &out.pieces[w.first..w.first + w.count] {
            match *p {
                Piece::Arena { start, len } => {
                    train.extend_from_slice(&out.arena[start..start + len])
                }
                Piece::Frame {
                    frame: 0,
                    start,
                    len,
                } => train.extend_from_slice(&tail[start..start + len]),
                Piece::Frame { .. } => panic!("a piece of another frame"),
            }
        }
        assert_eq!(train.len() - start, w.len, "wire length");
        assert!(w.len >= prefix.len());
        segs.push((start + prefix.len(), w.len - prefix.len()));
    }
    // The same segments in buffers of their own, joined across buffers.
    if let Some((&(s0, l0), rest)) = segs.split_first() {
        let mut buf = vec![0u8; 70_000];
        buf[..l0].copy_from_slice(&train[s0..s0 + l0]);
        let next: Vec<(&[u8], usize)> = rest.iter().map(|&(s, l)| (&train[s..s + l], 0)).collect();
        if let Some((len, n, h)) = join(&mut buf, l0, 0, &next) {
            assert!(n >= 1 && n <= next.len());
            let hdrs = usize::from(h.hdr_len);
            let want: Vec<u8> = std::iter::once(&train[s0..s0 + l0])
                .chain(next[..n].iter().map(|&(f, _)| f))
                .flat_map(|f| f[hdrs..].iter().copied())
                .collect();
            assert_eq!(&buf[hdrs..len], &want[..], "joined payload across buffers");
        }
    }
    // The train cut in two, each half coalesced on its own (two UDP GRO datagrams),
    // then the halves joined: the payload of the halves it took, in order.
    if segs.len() >= 4 {
        let half = segs.len() / 2;
        let mut a = train.clone();
        let mut b = train.clone();
        if let (Some((la, ha)), Some((lb, hb))) = (
            coalesce(&mut a, &segs[..half]),
            coalesce(&mut b, &segs[half..]),
        ) {
            let (sa, sb) = (segs[0].0, segs[half].0);
            let want: Vec<u8> = [&a[sa..sa + la], &b[sb..sb + lb]]
                .iter()
                .flat_map(|f| f[usize::from(ha.hdr_len)..].iter().copied())
                .collect();
            let mut buf = vec![0u8; 140_000];
            buf[..la].copy_from_slice(&a[sa..sa + la]);
            let next = [(&b[sb..sb + lb], usize::from(hb.gso_size))];
            if let Some((len, n, h)) = join(&mut buf, la, usize::from(ha.gso_size), &next) {
                assert_eq!(n, 1);
                assert_eq!(
                    &buf[usize::from(h.hdr_len)..len],
                    &want[..],
                    "joined halves"
                );
            }
        }
    }
    if let Some((len, h)) = coalesce(&mut train, &segs) {
        let joined = &train[prefix.len()..prefix.len() + len];
        let hdrs = usize::from(h.hdr_len);
        let pay = &frame[frame.len() - (len - hdrs)..];
        assert_eq!(&joined[hdrs..], pay, "joined payload");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::csum::{fold, mark_partial, sum16};
    use crate::wire::ipv4::checksum;
    use crate::wire::vnet::F_NEEDS_CSUM;

    /// A TCP/IPv4 frame with `n` payload bytes and a partial checksum, as a veth hands
    /// it over with GSO.
    pub(crate) fn superframe(n: usize) -> (Vec<u8>, VnetHdr) {
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

    pub(crate) fn verify_tcp(seg: &[u8]) {
        let ip = &seg[14..];
        assert_eq!(checksum(&ip[..20]), 0, "IP checksum");
        let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        assert_eq!(tot, seg.len() - 14);
        let mut acc = sum16(&ip[12..20], 0) + 6 + (tot - 20) as u32;
        acc = sum16(&ip[20..tot], acc);
        assert_eq!(fold(acc), 0xffff, "TCP checksum");
    }

    /// A TCP/IPv6 super-frame with `n` payload bytes, as a veth hands it over.
    pub(crate) fn superframe6(n: usize) -> (Vec<u8>, VnetHdr) {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((20 + n) as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[
            0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        f.extend((0..n).map(|i| (i * 3) as u8));
        let v = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 74,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        (f, v)
    }

    /// A UDP super-frame (a sender's UDP_SEGMENT) over IPv4 or IPv6, `n` payload bytes.
    pub(crate) fn udp_superframe(v6: bool, n: usize) -> (Vec<u8>, VnetHdr) {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        let l4 = if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&((8 + n) as u16).to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            54
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((28 + n) as u16).to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
            let c = checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            34
        };
        f.extend_from_slice(&[0x11, 0x51, 0x01, 0xbb]);
        f.extend_from_slice(&((8 + n) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend((0..n).map(|i| (i * 5 + 1) as u8));
        let v = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (l4 + 8) as u16,
            gso_size: 1200,
            csum_start: l4 as u16,
            csum_offset: 6,
        };
        (f, v)
    }

    /// The transport checksum of a segment verifies (pseudo-header of its IP version).
    pub(crate) fn verify_l4(seg: &[u8], proto: u8) -> usize {
        let (l4, pseudo) = if seg[12..14] == [0x86, 0xdd] {
            let plen = usize::from(u16::from_be_bytes([seg[18], seg[19]]));
            assert_eq!(plen, seg.len() - 54, "IPv6 payload length");
            (54, sum16(&seg[22..54], 0) + u32::from(proto) + plen as u32)
        } else {
            assert_eq!(checksum(&seg[14..34]), 0, "IP checksum");
            let tot = usize::from(u16::from_be_bytes([seg[16], seg[17]]));
            assert_eq!(tot, seg.len() - 14);
            (
                34,
                sum16(&seg[26..34], 0) + u32::from(proto) + (tot - 20) as u32,
            )
        };
        assert_eq!(fold(sum16(&seg[l4..], pseudo)), 0xffff, "L4 checksum");
        l4
    }

    #[test]
    fn tcp_over_ipv6_segments_with_valid_checksums() {
        let (f, v) = superframe6(3000);
        let out = segments(&f, &v);
        let lens: Vec<usize> = out.iter().map(|s| s.len() - 74).collect();
        assert_eq!(lens, vec![1428, 1428, 144]);
        for (k, s) in out.iter().enumerate() {
            assert_eq!(verify_l4(s, 6), 54);
            let seq = u32::from_be_bytes([s[58], s[59], s[60], s[61]]);
            assert_eq!(seq, 1 + 1428 * k as u32);
            assert_eq!(s[67] & 0x08 != 0, k == 2, "PSH only on the last");
        }
        let joined: Vec<u8> = out.iter().flat_map(|s| s[74..].to_vec()).collect();
        assert_eq!(joined, f[74..].to_vec());
    }

    /// `superframe6` with extension headers `ext` (chained: the first's type in `first`,
    /// the last's next header already TCP) between the IPv6 and the TCP header.
    fn superframe6_ext(n: usize, first: u8, ext: &[u8]) -> (Vec<u8>, VnetHdr) {
        let (f, mut v) = superframe6(n);
        let mut g = f[..54].to_vec();
        g[20] = first;
        g[18..20].copy_from_slice(&((ext.len() + 20 + n) as u16).to_be_bytes());
        g.extend_from_slice(ext);
        g.extend_from_slice(&f[54..]);
        v.hdr_len += ext.len() as u16;
        v.csum_start += ext.len() as u16;
        (g, v)
    }

    #[test]
    fn tcp_over_ipv6_segments_past_hop_by_hop_and_destination_options() {
        // Hop-by-hop (8 bytes, PadN) → destination options (16 bytes, PadN) → TCP.
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[6, 1, 1, 12]);
        ext.extend_from_slice(&[0; 12]);
        let (f, v) = superframe6_ext(3000, 0, &ext);
        let hdrs = usize::from(v.hdr_len);
        assert_eq!(hdrs, 74 + 24);
        let out = segments(&f, &v);
        let lens: Vec<usize> = out.iter().map(|s| s.len() - hdrs).collect();
        assert_eq!(lens, vec![1428, 1428, 144]);
        for (k, s) in out.iter().enumerate() {
            assert_eq!(&s[..18], &f[..18], "Ethernet and IPv6 header kept");
            assert_eq!(
                &s[20..78],
                &f[20..78],
                "addresses and extension headers kept"
            );
            let plen = usize::from(u16::from_be_bytes([s[18], s[19]]));
            assert_eq!(plen, s.len() - 54, "payload length counts the options");
            let l4 = 54 + 24;
            let pseudo = sum16(&s[22..54], 0) + 6 + (s.len() - l4) as u32;
            assert_eq!(fold(sum16(&s[l4..], pseudo)), 0xffff, "TCP checksum");
            let seq = u32::from_be_bytes([s[l4 + 4], s[l4 + 5], s[l4 + 6], s[l4 + 7]]);
            assert_eq!(seq, 1 + 1428 * k as u32);
        }
        let joined: Vec<u8> = out.iter().flat_map(|s| s[hdrs..].to_vec()).collect();
        assert_eq!(joined, f[hdrs..].to_vec());
    }

    #[test]
    fn ipv6_extension_headers_not_walked_are_refused() {
        let mut out = Prepared::default();
        // A routing header (type 43): its final destination is not the header's.
        let (f, v) = superframe6_ext(3000, 43, &[6, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            prepare_into(&f[..12], &f[12..], 0, &v, &[], &mut out),
            Err(GsoError::Unsupported)
        );
        // Options longer than the walk's limit.
        let mut ext = vec![6, 33];
        ext.resize(34 * 8, 0);
        let (f, v) = superframe6_ext(3000, 60, &ext);
        assert_eq!(
            prepare_into(&f[..12], &f[12..], 0, &v, &[], &mut out),
            Err(GsoError::Unsupported)
        );
        // An options header cut off by the end of the frame.
        let (f, v) = superframe6_ext(0, 0, &[]);
        assert_eq!(
            prepare_into(&f[..12], &f[12..54], 0, &v, &[], &mut out),
            Err(GsoError::Malformed)
        );
        assert!(out.wires.is_empty());
    }

    #[test]
    fn udp_segments_over_both_ip_versions() {
        for v6 in [false, true] {
            let (f, v) = udp_superframe(v6, 3000);
            let hdrs = usize::from(v.hdr_len);
            let out = segments(&f, &v);
            let lens: Vec<usize> = out.iter().map(|s| s.len() - hdrs).collect();
            assert_eq!(lens, vec![1200, 1200, 600], "v6={v6}");
            let mut ids = Vec::new();
            for s in &out {
                let l4 = verify_l4(s, 17);
                let ulen = usize::from(u16::from_be_bytes([s[l4 + 4], s[l4 + 5]]));
                assert_eq!(ulen, s.len() - l4, "UDP length");
                assert_ne!(&s[l4 + 6..l4 + 8], &[0, 0], "UDP checksum present");
                ids.push(u16::from_be_bytes([s[18], s[19]]));
            }
            if !v6 {
                assert_eq!(ids, vec![0x1234, 0x1235, 0x1236], "IPv4 ids");
            }
            let joined: Vec<u8> = out.iter().flat_map(|s| s[hdrs..].to_vec()).collect();
            assert_eq!(joined, f[hdrs..].to_vec());
        }
    }

    #[test]
    fn segments_with_valid_checksums() {
        let (f, v) = superframe(4000);
        let out = segments(&f, &v);
        assert_eq!(out.len(), 3);
        let lens: Vec<usize> = out.iter().map(|s| s.len() - 54).collect();
        assert_eq!(lens, vec![1448, 1448, 1104]);
        for (k, s) in out.iter().enumerate() {
            verify_tcp(s);
            let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
            assert_eq!(seq, 1 + 1448 * k as u32);
            assert_eq!(s[47] & 0x08 != 0, k == 2, "PSH only on the last");
        }
        // Payload survives in order.
        let joined: Vec<u8> = out.iter().flat_map(|s| s[54..].to_vec()).collect();
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
        verify_tcp(&segments(&f, &v)[0]);
    }

    #[test]
    fn mark_partial_then_complete_gives_a_valid_checksum() {
        let (f, v) = superframe(300);
        let mut plain = v;
        plain.gso_type = GSO_NONE;
        // A frame with a correct full checksum...
        let mut tmp = f.clone();
        let mut acc = sum16(&tmp[26..34], 0) + 6 + 320;
        acc = fold(acc).into();
        tmp[50..52].copy_from_slice(&(acc as u16).to_be_bytes());
        let mut full = segments(&tmp, &plain).remove(0);
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
        let mut out = Prepared::default();
        assert_eq!(
            prepare_into(&f[..12], &f[12..40], 0, &v, &[], &mut out),
            Err(GsoError::Malformed)
        );
        // A GSO type that does not match the frame.
        let mut v6 = v;
        v6.gso_type = GSO_TCPV6;
        assert_eq!(
            prepare_into(&f[..12], &f[12..], 0, &v6, &[], &mut out),
            Err(GsoError::Malformed)
        );
        let mut uso = v;
        uso.gso_type = GSO_UDP_L4;
        assert_eq!(
            prepare_into(&f[..12], &f[12..], 0, &uso, &[], &mut out),
            Err(GsoError::Unsupported)
        );
        let mut ufo = v;
        ufo.gso_type = crate::wire::vnet::GSO_UDP;
        assert_eq!(
            prepare_into(&f[..12], &f[12..], 0, &ufo, &[], &mut out),
            Err(GsoError::Unsupported)
        );
        // A UDP header cut short must be refused, not read past.
        let (u, uv) = udp_superframe(false, 100);
        assert_eq!(
            prepare_into(&u[..12], &u[12..40], 0, &uv, &[], &mut out),
            Err(GsoError::Malformed)
        );
        assert!(out.arena.is_empty() && out.pieces.is_empty() && out.wires.is_empty());
    }

    /// The wire frames `prepare_into` makes of `f` behind `prefix`, one Vec each.
    pub(crate) fn prepared(f: &[u8], v: &VnetHdr, prefix: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Prepared::default();
        prepare_into(&f[..12], &f[12..], 0, v, prefix, &mut out).unwrap();
        out.wires
            .iter()
            .map(|w| {
                let mut b = Vec::new();
                for p in &out.pieces[w.first..w.first + w.count] {
                    match *p {
                        Piece::Arena { start, len } => {
                            b.extend_from_slice(&out.arena[start..start + len])
                        }
                        Piece::Frame { frame, start, len } => {
                            assert_eq!(frame, 0);
                            b.extend_from_slice(&f[12 + start..12 + start + len])
                        }
                    }
                }
                assert_eq!(b.len(), w.len);
                b
            })
            .collect()
    }

    /// The frames `prepare_into` makes of `f`.
    pub(crate) fn segments(f: &[u8], v: &VnetHdr) -> Vec<Vec<u8>> {
        prepared(f, v, &[])
    }

    /// Segments laid out as a UDP GRO train: each behind an 8-byte tunnel header.
    pub(crate) fn train(f: &[u8], v: &VnetHdr) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut buf = Vec::new();
        let mut segs = Vec::new();
        for w in prepared(f, v, &[0x08, 0, 0, 0, 0, 0, 42, 0]) {
            segs.push((buf.len() + 8, w.len() - 8));
            buf.extend_from_slice(&w);
        }
        (buf, segs)
    }
}
