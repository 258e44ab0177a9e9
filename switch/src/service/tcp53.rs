//! DNS over TCP (RFC 7766) on the gateway addresses, without a TCP stack.
//!
//! A DNS-over-TCP exchange is one query and one answer, so the responder is stateless:
//! the initial sequence number is a keyed hash of the connection's addresses and ports
//! (a SYN cookie), which lets a later segment prove it belongs to a handshake we
//! answered. SYN → SYN-ACK; a segment carrying a whole length-prefixed query → the
//! length-prefixed answer with FIN; FIN → ACK; anything else → RST. Queries split over
//! several segments are not supported (clients send them in one).
//!
//! The answer may come later (a forwarded query): everything needed to send it is in
//! a [`TcpReply`], which cuts it into segments of at most one MSS; if those are lost,
//! the client sends its query again and gets the answer again.

use crate::wire::ipv4::{self, checksum};
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Per-process secret for the SYN cookies.
pub struct Tcp53 {
    key: std::collections::hash_map::RandomState,
}

impl Default for Tcp53 {
    fn default() -> Self {
        Tcp53 {
            key: std::collections::hash_map::RandomState::new(),
        }
    }
}

/// What to do with a segment.
#[derive(Debug)]
pub enum Out {
    /// Nothing.
    None,
    /// Send this IPv4 packet (SYN-ACK, ACK, RST).
    Packet(Vec<u8>),
    /// A whole query arrived: answer it with [`TcpReply::segments`].
    Query(Vec<u8>, TcpReply),
}

/// Where and how the answer to a query that came over TCP goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpReply {
    client: Ipv4Addr,
    server: Ipv4Addr,
    cport: u16,
    sport: u16,
    /// Our sequence number for the first byte of the answer.
    seq: u32,
    /// The client's next sequence number (what we acknowledge).
    ack: u32,
    /// Largest segment payload.
    mss: usize,
}

impl TcpReply {
    /// The gateway address the query was sent to.
    pub fn server(&self) -> Ipv4Addr {
        self.server
    }

    /// The IPv4 packets carrying `answer` (length-prefixed), the last with FIN.
    pub fn segments(&self, answer: &[u8]) -> Vec<Vec<u8>> {
        let Ok(len) = u16::try_from(answer.len()) else {
            return Vec::new();
        };
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(answer);
        let chunks: Vec<&[u8]> = out.chunks(self.mss.max(1)).collect();
        let last = chunks.len().saturating_sub(1);
        let mut seq = self.seq;
        let mut pkts = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.into_iter().enumerate() {
            let flags = if i == last { ACK | PSH | FIN } else { ACK };
            pkts.push(segment(
                self.server,
                self.client,
                &Seg {
                    sport: self.sport,
                    dport: self.cport,
                    seq,
                    ack: self.ack,
                    flags,
                    data: c,
                },
            ));
            seq = seq.wrapping_add(c.len() as u32);
        }
        pkts
    }
}

/// A TCP segment to send back: (source port, destination port, seq, ack, flags, data).
struct Seg<'a> {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &'a [u8],
}

fn segment(src: Ipv4Addr, dst: Ipv4Addr, s: &Seg<'_>) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + s.data.len());
    t.extend_from_slice(&s.sport.to_be_bytes());
    t.extend_from_slice(&s.dport.to_be_bytes());
    t.extend_from_slice(&s.seq.to_be_bytes());
    t.extend_from_slice(&s.ack.to_be_bytes());
    t.extend_from_slice(&[5 << 4, s.flags]);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(s.data);
    let mut pseudo = Vec::with_capacity(12 + t.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, ipv4::PROTO_TCP]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&t);
    let c = checksum(&pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    super::ipbuild::ipv4(src, dst, ipv4::PROTO_TCP, &t)
}

impl Tcp53 {
    fn isn(&self, client: Ipv4Addr, cport: u16, server: Ipv4Addr) -> u32 {
        let mut h = self.key.build_hasher();
        h.write(&client.octets());
        h.write_u16(cport);
        h.write(&server.octets());
        h.finish() as u32
    }

    /// Handle one TCP segment `tcp` from `client` to `server`:53 on a bridge whose
    /// frames carry `mtu` bytes of IP.
    pub fn handle(&self, client: Ipv4Addr, server: Ipv4Addr, tcp: &[u8], mtu: u32) -> Out {
        self.segment_in(client, server, tcp, mtu)
            .unwrap_or(Out::None)
    }

    fn segment_in(&self, client: Ipv4Addr, server: Ipv4Addr, tcp: &[u8], mtu: u32) -> Option<Out> {
        if tcp.len() < 20 {
            return None;
        }
        let cport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let sport = u16::from_be_bytes([tcp[2], tcp[3]]);
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        let off = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        if off < 20 || off > tcp.len() || flags & RST != 0 {
            return None;
        }
        let data = &tcp[off..];
        let isn = self.isn(client, cport, server);
        let reply = |seq, ack, flags, data: &[u8]| {
            Some(Out::Packet(segment(
                server,
                client,
                &Seg {
                    sport,
                    dport: cport,
                    seq,
                    ack,
                    flags,
                    data,
                },
            )))
        };
        if flags & SYN != 0 {
            return reply(isn, seq.wrapping_add(1), SYN | ACK, &[]);
        }
        if flags & ACK == 0 || ack.wrapping_sub(isn.wrapping_add(1)) > 0x1_0000 {
            // Not part of a handshake we answered.
            return reply(ack, 0, RST, &[]);
        }
        if !data.is_empty() {
            let len = usize::from(u16::from_be_bytes([data[0], *data.get(1)?]));
            let Some(query) = data.get(2..2 + len) else {
                return reply(ack, 0, RST, &[]);
            };
            let their_next = seq.wrapping_add(data.len() as u32);
            // IPv4 and TCP headers (no options) out of the MTU; never below the
            // minimum every host takes.
            let mss = (mtu as usize).saturating_sub(40).clamp(536, 1460);
            return Some(Out::Query(
                query.to_vec(),
                TcpReply {
                    client,
                    server,
                    cport,
                    sport,
                    seq: isn.wrapping_add(1),
                    ack: their_next,
                    mss,
                },
            ));
        }
        if flags & FIN != 0 {
            return reply(ack, seq.wrapping_add(1), ACK, &[]);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg_of(pkt: &[u8]) -> (u32, u32, u8, Vec<u8>) {
        let t = &pkt[20..];
        (
            u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            t[13],
            t[20..].to_vec(),
        )
    }

    #[test]
    fn handshake_query_answer() {
        let t = Tcp53::default();
        let c = Ipv4Addr::new(10, 0, 0, 5);
        let s = Ipv4Addr::new(10, 0, 0, 1);
        let syn = segment(
            c,
            s,
            &Seg {
                sport: 40000,
                dport: 53,
                seq: 1000,
                ack: 0,
                flags: SYN,
                data: &[],
            },
        );
        let pkt = |o: Out| match o {
            Out::Packet(p) => p,
            o => panic!("{o:?}"),
        };
        let synack = pkt(t.handle(c, s, &syn[20..], 1500));
        assert_eq!(checksum(&synack[..20]), 0);
        let (isn, ack, flags, _) = seg_of(&synack);
        assert_eq!((ack, flags), (1001, SYN | ACK));
        let q = [0, 3, b'a', b'b', b'c'];
        let data = segment(
            c,
            s,
            &Seg {
                sport: 40000,
                dport: 53,
                seq: 1001,
                ack: isn + 1,
                flags: ACK | PSH,
                data: &q,
            },
        );
        let Out::Query(query, r) = t.handle(c, s, &data[20..], 1500) else {
            panic!("no query");
        };
        assert_eq!(query, b"abc");
        let resp = r.segments(&query);
        assert_eq!(resp.len(), 1);
        let (seq, ack, flags, payload) = seg_of(&resp[0]);
        assert_eq!((seq, ack, flags), (isn + 1, 1006, ACK | PSH | FIN));
        assert_eq!(payload, q.to_vec());
        // A long answer: MSS-sized segments in sequence, FIN on the last only.
        let long = vec![7u8; 3000];
        let segs = r.segments(&long);
        assert_eq!(segs.len(), 3, "3002 bytes in 1460-byte segments");
        let mut next = isn + 1;
        let mut got = Vec::new();
        for (i, p) in segs.iter().enumerate() {
            assert_eq!(checksum(&p[..20]), 0);
            let (seq, ack, flags, payload) = seg_of(p);
            assert_eq!((seq, ack), (next, 1006));
            assert_eq!(flags & FIN != 0, i == 2);
            next += payload.len() as u32;
            got.extend(payload);
        }
        assert_eq!(&got[..2], &3000u16.to_be_bytes());
        assert_eq!(&got[2..], &long[..]);
        // A stray segment gets a reset.
        let stray = segment(
            c,
            s,
            &Seg {
                sport: 40000,
                dport: 53,
                seq: 5,
                ack: isn + 99_999,
                flags: ACK,
                data: &q,
            },
        );
        assert_eq!(seg_of(&pkt(t.handle(c, s, &stray[20..], 1500))).2, RST);
    }
}
