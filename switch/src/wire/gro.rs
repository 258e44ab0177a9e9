//! Software GRO for frames that arrive without offload metadata (VXLAN over UDP GRO):
//! join consecutive segments of one TCP/IPv4 flow, cut as a sender's TSO would, back
//! into one GSO super-frame (what the kernel's `tcp_gro_receive` does), so the receiving
//! veth or TAP gets one frame instead of forty-five. The inverse of [`super::gso`].
//!
//! Read first: Linux `net/ipv4/tcp_offload.c` (`tcp_gro_receive`).

use super::csum::{checksum, fold, sum16};
use super::ipv4;
use super::l4::{TCP_CWR, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG};
use super::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};

const L3: usize = 14;
const L4: usize = L3 + ipv4::MIN_HLEN;

/// The checks of one TCP/IPv4 train, made one segment at a time (what the kernel's
/// `tcp_gro_receive` checks, without the checksum): same headers, sequence numbers
/// back to back, every payload but the last of the first one's size, FIN/PSH only on
/// the last. Untagged Ethernet, IPv4 without options.
struct Train {
    hdrs: usize,
    mss: usize,
    seq: u32,
    total: usize,
    last_flags: u8,
    /// More segments may follow.
    open: bool,
}

fn seq_of(f: &[u8]) -> u32 {
    u32::from_be_bytes([f[L4 + 4], f[L4 + 5], f[L4 + 6], f[L4 + 7]])
}

impl Train {
    /// A train that `f0` starts: one segment (`mss0 == 0`), or a super-frame of
    /// `mss0`-byte segments (the last possibly shorter) that more may continue.
    fn start(f0: &[u8], mss0: usize) -> Option<Train> {
        let l0 = f0.len();
        if l0 < L4 + 20
            || f0[12..14] != ipv4::ETHERTYPE_IPV4.to_be_bytes()
            || f0[L3] != 0x45
            || f0[L3 + ipv4::field::PROTOCOL] != ipv4::PROTO_TCP
            || u16::from_be_bytes([f0[L3 + 6], f0[L3 + 7]]) & ipv4::FRAG_MASK != 0
            || usize::from(u16::from_be_bytes([f0[L3 + 2], f0[L3 + 3]])) != l0 - L3
        {
            return None;
        }
        let thlen = usize::from(f0[L4 + 12] >> 4) * 4;
        let hdrs = L4 + thlen;
        if thlen < 20 || l0 <= hdrs {
            return None;
        }
        let pay = l0 - hdrs;
        let mss = if mss0 == 0 { pay } else { mss0 };
        let flags = f0[L4 + 13];
        Some(Train {
            hdrs,
            mss,
            seq: seq_of(f0).wrapping_add(pay as u32),
            total: l0,
            last_flags: flags,
            open: pay.is_multiple_of(mss)
                && flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_URG) == 0,
        })
    }

    /// Count `f` in if it continues the train that `f0` starts: one segment
    /// (`mss == 0`) or a super-frame of segments of the train's size (`mss`).
    fn push(&mut self, f0: &[u8], f: &[u8], mss: usize) -> bool {
        let (l, hdrs) = (f.len(), self.hdrs);
        let Some(pay) = l.checked_sub(hdrs) else {
            return false;
        };
        let flags = f[L4 + 13];
        if !self.open
            || f[..L3 + 2] != f0[..L3 + 2]
            || f[L3 + 6..L3 + 10] != f0[L3 + 6..L3 + 10]
            || f[L3 + 12..L4] != f0[L3 + 12..L4]
            || usize::from(u16::from_be_bytes([f[L3 + 2], f[L3 + 3]])) != l - L3
            || f[L4..L4 + 4] != f0[L4..L4 + 4]
            || f[L4 + 8..L4 + 13] != f0[L4 + 8..L4 + 13]
            || f[L4 + 14..L4 + 16] != f0[L4 + 14..L4 + 16]
            || f[L4 + 20..hdrs] != f0[L4 + 20..hdrs]
            || seq_of(f) != self.seq
            || (flags ^ f0[L4 + 13]) & !(TCP_FIN | TCP_PSH | TCP_CWR) != 0
            || flags & TCP_CWR != 0
            || pay == 0
            || (mss == 0 && pay > self.mss)
            || (mss != 0 && mss != self.mss)
            || self.total + pay - L3 > 0xffff
        {
            return false;
        }
        self.seq = self.seq.wrapping_add(pay as u32);
        self.total += pay;
        self.last_flags = flags;
        self.open = pay.is_multiple_of(self.mss) && flags & (TCP_FIN | TCP_PSH) == 0;
        true
    }

    /// Turn the first segment, now followed by every payload (`f`, `total` bytes),
    /// into the super-frame: IPv4 length and checksum, FIN/PSH of the last segment,
    /// TCP checksum partial (pseudo-header sum), GSO of the segments' size.
    fn finish(&self, f: &mut [u8]) -> VnetHdr {
        let total = self.total;
        f[L3 + 2..L3 + 4].copy_from_slice(&((total - L3) as u16).to_be_bytes());
        f[L3 + ipv4::field::CHECKSUM..L3 + ipv4::field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let c = checksum(&f[L3..L4]);
        f[L3 + ipv4::field::CHECKSUM..L3 + ipv4::field::CHECKSUM + 2]
            .copy_from_slice(&c.to_be_bytes());
        f[L4 + 13] |= self.last_flags & (TCP_FIN | TCP_PSH);
        let pseudo = sum16(&f[L3 + ipv4::field::SRC..L4], 0)
            + u32::from(ipv4::PROTO_TCP)
            + (total - L4) as u32;
        f[L4 + 16..L4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: self.hdrs as u16,
            gso_size: self.mss as u16,
            csum_start: L4 as u16,
            csum_offset: 16,
        }
    }
}
/// Software GRO, the inverse of [`super::gso::prepare_into`]: if the frames at `segs` (ranges of
/// `buf`, in order) are all consecutive segments of one TCP/IPv4 flow, cut as a
/// sender's TSO would, join them in place into one GSO super-frame at `segs[0].0` and
/// return its length and offload header (checksum partial, `GSO_TCPV4` with the
/// segments' size). `None`: left as they were.
///
/// The checksum is not verified: the caller vouches for the segments' integrity (they
/// came in one UDP datagram train whose checksums the kernel verified).
pub fn coalesce(buf: &mut [u8], segs: &[(usize, usize)]) -> Option<(usize, VnetHdr)> {
    let (&(s0, l0), rest) = segs.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let f0 = buf.get(s0..s0 + l0)?;
    let mut t = Train::start(f0, 0)?;
    for &(s, l) in rest {
        if !t.push(f0, buf.get(s..s + l)?, 0) {
            return None;
        }
    }
    let mut at = s0 + l0;
    for &(s, l) in rest {
        buf.copy_within(s + t.hdrs..s + l, at);
        at += l - t.hdrs;
    }
    let h = t.finish(&mut buf[s0..s0 + t.total]);
    Some((t.total, h))
}

/// Software GRO across buffers: the frame `buf[..len0]` and as many of the frames in
/// `next` as continue its TCP train (from the first on) become one GSO super-frame in
/// `buf` (which must have room). Each frame is one segment (segment size 0) or a
/// super-frame [`coalesce`] made of one datagram train (its segment size): a
/// super-frame cut into two UDP GSO trains on the way (a train carries at most 64 KB)
/// becomes one again. Returns its length, how many of `next` it took in (at least
/// one) and its offload header; `None`: `buf` unchanged.
pub fn join(
    buf: &mut [u8],
    len0: usize,
    mss0: usize,
    next: &[(&[u8], usize)],
) -> Option<(usize, usize, VnetHdr)> {
    let f0 = buf.get(..len0)?;
    let mut t = Train::start(f0, mss0)?;
    let mut n = 0;
    for &(f, mss) in next {
        if t.total + f.len() > buf.len() || !t.push(f0, f, mss) {
            break;
        }
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let mut at = len0;
    for &(f, _) in &next[..n] {
        let pay = &f[t.hdrs..];
        buf[at..at + pay.len()].copy_from_slice(pay);
        at += pay.len();
    }
    let h = t.finish(&mut buf[..t.total]);
    Some((t.total, n, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::gso::tests::{segments, superframe, train, verify_tcp};

    #[test]
    fn coalesce_undoes_segmentation() {
        let (f, v) = superframe(40_000);
        let (mut buf, segs) = train(&f, &v);
        assert_eq!(segs.len(), 28);
        let (len, h) = coalesce(&mut buf, &segs).expect("coalesced");
        let out = &buf[8..8 + len];
        assert_eq!(len, f.len());
        assert_eq!(
            (
                h.gso_type,
                h.gso_size,
                h.hdr_len,
                h.flags,
                h.csum_start,
                h.csum_offset
            ),
            (GSO_TCPV4, 1448, 54, F_NEEDS_CSUM, 34, 16)
        );
        assert_eq!(out[54..], f[54..], "payload in order");
        assert_eq!(checksum(&out[14..34]), 0, "IP checksum");
        assert_eq!(out[47], f[47], "PSH back on the joined frame");
        // And it segments again into valid wire frames.
        let again = segments(out, &h);
        assert_eq!(again.len(), 28);
        again.iter().for_each(|s| verify_tcp(s));
    }

    #[test]
    fn join_takes_the_frames_that_continue_the_train() {
        let (f, v) = superframe(10_000);
        let segs = segments(&f, &v);
        assert_eq!(segs.len(), 7);
        let mut buf = vec![0u8; 70_000];
        buf[..segs[0].len()].copy_from_slice(&segs[0]);
        let next: Vec<(&[u8], usize)> = segs[1..].iter().map(|s| (&s[..], 0)).collect();
        let (len, n, h) = join(&mut buf, segs[0].len(), 0, &next).expect("joined");
        assert_eq!((len, n), (f.len(), 6));
        assert_eq!(buf[54..len], f[54..], "payload in order");
        assert_eq!(checksum(&buf[14..34]), 0, "IP checksum");
        assert_eq!((h.gso_type, h.gso_size, h.hdr_len), (GSO_TCPV4, 1448, 54));
        segments(&buf[..len], &h).iter().for_each(|s| verify_tcp(s));
        // Another flow's segment ends the run; the frames before it are joined.
        let mut other = segs[3].clone();
        other[37] ^= 1;
        buf[..segs[0].len()].copy_from_slice(&segs[0]);
        let next = [&segs[1][..], &segs[2][..], &other[..], &segs[4][..]].map(|s| (s, 0));
        let (len, n, _) = join(&mut buf, segs[0].len(), 0, &next).expect("joined");
        assert_eq!((len, n), (54 + 3 * 1448, 2));
        // Nothing continues it, or no room: unchanged.
        buf[..segs[0].len()].copy_from_slice(&segs[0]);
        let before = buf.clone();
        assert!(join(&mut buf, segs[0].len(), 0, &[(&other[..], 0)]).is_none());
        assert!(join(&mut buf[..2000], segs[0].len(), 0, &[(&segs[1][..], 0)]).is_none());
        assert!(join(&mut buf, segs[0].len(), 0, &[]).is_none());
        assert_eq!(buf, before);
        // A pure ACK (no payload) starts nothing.
        assert!(join(&mut buf, 54, 0, &[(&segs[1][..], 0)]).is_none());
    }

    /// A 64 KB super-frame leaves as two UDP GSO trains (43 + 2 segments: a train
    /// carries at most 64 KB) and arrives as two GRO datagrams, each coalesced on its
    /// own; joined, they are the sender's super-frame again.
    #[test]
    fn join_takes_a_super_frame_cut_into_two_trains() {
        let (f, v) = superframe(45 * 1448);
        let segs = segments(&f, &v);
        assert_eq!(segs.len(), 45);
        let halves = |cut: usize, segs: &[Vec<u8>]| {
            let mut out = Vec::new();
            for part in [&segs[..cut], &segs[cut..]] {
                let mut buf = Vec::new();
                let mut at = Vec::new();
                for s in part {
                    at.push((buf.len(), s.len()));
                    buf.extend_from_slice(s);
                }
                buf.resize(buf.len() + 100, 0);
                let (len, h) = coalesce(&mut buf, &at).expect("coalesced");
                buf.truncate(len);
                out.push((buf, usize::from(h.gso_size)));
            }
            out
        };
        let parts = halves(43, &segs);
        let (a, mss_a) = &parts[0];
        let (b, mss_b) = &parts[1];
        assert_eq!((*mss_a, *mss_b), (1448, 1448));
        let mut buf = vec![0u8; 70_000];
        buf[..a.len()].copy_from_slice(a);
        let (len, n, h) = join(&mut buf, a.len(), *mss_a, &[(&b[..], *mss_b)]).expect("joined");
        assert_eq!((len, n), (f.len(), 1));
        assert_eq!(buf[54..len], f[54..], "payload in order");
        assert_eq!(buf[47] & 0x08, 0x08, "PSH of the last segment");
        assert_eq!(checksum(&buf[14..34]), 0, "IP checksum");
        assert_eq!((h.gso_type, h.gso_size, h.hdr_len), (GSO_TCPV4, 1448, 54));
        segments(&buf[..len], &h).iter().for_each(|s| verify_tcp(s));
        // A super-frame whose last segment is short ends its train.
        let mut short = segs.clone();
        let cut = short[42].len() - 100;
        short[42].truncate(cut);
        let total = (short[42].len() - 14) as u16;
        short[42][16..18].copy_from_slice(&total.to_be_bytes());
        let parts = halves(43, &short);
        let (a, mss_a) = &parts[0];
        buf[..a.len()].copy_from_slice(a);
        assert!(join(&mut buf, a.len(), *mss_a, &[(&parts[1].0[..], 1448)]).is_none());
        // Segments of another size do not continue it.
        let parts = halves(43, &segs);
        let (a, mss_a) = &parts[0];
        buf[..a.len()].copy_from_slice(a);
        assert!(join(&mut buf, a.len(), *mss_a, &[(&parts[1].0[..], 1000)]).is_none());
        // No PSH on the last segment: the train stays open, but a 46th segment would
        // make the IP datagram longer than 64 KB.
        let mut open = segs.clone();
        open[44][47] &= !0x08;
        let parts = halves(43, &open);
        buf[..parts[0].0.len()].copy_from_slice(&parts[0].0);
        let (len, _, _) =
            join(&mut buf, parts[0].0.len(), 1448, &[(&parts[1].0[..], 1448)]).expect("joined");
        let mut more = open[44].clone();
        let seq = u32::from_be_bytes([more[38], more[39], more[40], more[41]]) + 1448;
        more[38..42].copy_from_slice(&seq.to_be_bytes());
        assert!(join(&mut buf, len, 1448, &[(&more[..], 0)]).is_none());
    }

    #[test]
    fn coalesce_refuses_what_is_not_one_train() {
        let (f, v) = superframe(5000);
        // A gap in the sequence numbers.
        let (mut buf, segs) = train(&f, &v);
        let (s, _) = segs[2];
        buf[s + 41] ^= 1;
        let before = buf.clone();
        assert!(coalesce(&mut buf, &segs).is_none());
        assert_eq!(buf, before, "left as it was");
        // Another flow (destination port) in the middle.
        let (mut buf, segs) = train(&f, &v);
        buf[segs[1].0 + 37] ^= 1;
        assert!(coalesce(&mut buf, &segs).is_none());
        // A short segment before the last.
        let (mut buf, mut segs) = train(&f, &v);
        segs[1].1 -= 1;
        assert!(coalesce(&mut buf, &segs).is_none());
        // PSH on a segment that is not the last.
        let (mut buf, segs) = train(&f, &v);
        buf[segs[0].0 + 47] |= 0x08;
        assert!(coalesce(&mut buf, &segs).is_none());
        // Out of bounds ranges and a single frame.
        let (mut buf, segs) = train(&f, &v);
        let end = buf.len() - 4;
        assert!(coalesce(&mut buf, &[segs[0], (end, 100)]).is_none());
        assert!(coalesce(&mut buf, &segs[..1]).is_none());
        assert!(coalesce(&mut [], &[]).is_none());
    }
}
