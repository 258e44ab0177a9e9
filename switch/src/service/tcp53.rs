//! DNS over TCP (RFC 7766) on the gateway addresses, IPv4 and IPv6, without a TCP
//! stack.
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
//!
//! Over IPv6 the segments carry the checksum over IPv6's pseudo-header (RFC 8200
//! §8.1) and the MSS leaves room for its 40-byte header (MTU − 60).

use crate::wire::ipv4::{self, checksum};
use crate::wire::ipv6;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

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

/// The two ends of a connection to port 53: the client and the gateway address it
/// asked, of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ends {
    V4 { client: Ipv4Addr, server: Ipv4Addr },
    V6 { client: Ipv6Addr, server: Ipv6Addr },
}

impl Ends {
    /// IP and TCP headers (without options) of a segment.
    fn headers(&self) -> usize {
        match self {
            Ends::V4 { .. } => 40,
            Ends::V6 { .. } => ipv6::HLEN + 20,
        }
    }

    /// Largest segment payload on a bridge whose frames carry `mtu` bytes of IP:
    /// the MTU less the headers, never below what every host of the family takes
    /// (576 − 40 for IPv4, 1280 − 60 for IPv6), never above that of a 1500-byte
    /// Ethernet.
    fn mss(&self, mtu: u32) -> usize {
        let (min, max) = match self {
            Ends::V4 { .. } => (536, 1460),
            Ends::V6 { .. } => (ipv6::MIN_MTU - 60, 1440),
        };
        (mtu as usize)
            .saturating_sub(self.headers())
            .clamp(min, max)
    }
}

/// What to do with a segment.
#[derive(Debug)]
pub enum Out {
    /// Nothing: the segment needs no answer (the client's ACK of our answer, its
    /// reset).
    None,
    /// Nothing, and the segment is counted as dropped: too short, a bad data offset, a
    /// query cut short.
    Drop,
    /// Send this IP packet, of the query's family (SYN-ACK, ACK, RST).
    Packet(Vec<u8>),
    /// A whole query arrived: answer it with [`TcpReply::segments`].
    Query(Vec<u8>, TcpReply),
}

/// Where and how the answer to a query that came over TCP goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpReply {
    ends: Ends,
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
    /// The client and the gateway address the query was sent to.
    pub fn ends(&self) -> Ends {
        self.ends
    }

    /// The IP packets carrying `answer` (length-prefixed), the last with FIN.
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
                self.ends,
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

/// The packet carrying segment `s` from the server to the client of `ends`.
fn segment(ends: Ends, s: &Seg<'_>) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + s.data.len());
    t.extend_from_slice(&s.sport.to_be_bytes());
    t.extend_from_slice(&s.dport.to_be_bytes());
    t.extend_from_slice(&s.seq.to_be_bytes());
    t.extend_from_slice(&s.ack.to_be_bytes());
    t.extend_from_slice(&[5 << 4, s.flags]);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(s.data);
    match ends {
        Ends::V4 { client, server } => {
            let mut pseudo = Vec::with_capacity(12 + t.len());
            pseudo.extend_from_slice(&server.octets());
            pseudo.extend_from_slice(&client.octets());
            pseudo.extend_from_slice(&[0, ipv4::PROTO_TCP]);
            pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(&t);
            let c = checksum(&pseudo);
            t[CSUM].copy_from_slice(&c.to_be_bytes());
            super::ipbuild::ipv4(server, client, ipv4::PROTO_TCP, &t)
        }
        Ends::V6 { client, server } => {
            let c = ipv6::checksum(&server, &client, ipv6::NEXT_TCP, &t);
            t[CSUM].copy_from_slice(&c.to_be_bytes());
            ipv6::packet(server, client, ipv6::NEXT_TCP, HOP_LIMIT, &t)
        }
    }
}

/// Where the checksum is in a TCP header.
const CSUM: std::ops::Range<usize> = 16..18;
/// Hop limit of our IPv6 segments (Linux's default).
const HOP_LIMIT: u8 = 64;

impl Tcp53 {
    fn isn(&self, ends: Ends, cport: u16) -> u32 {
        let mut h = self.key.build_hasher();
        match ends {
            Ends::V4 { client, server } => {
                h.write(&client.octets());
                h.write_u16(cport);
                h.write(&server.octets());
            }
            Ends::V6 { client, server } => {
                h.write(&client.octets());
                h.write_u16(cport);
                h.write(&server.octets());
            }
        }
        h.finish() as u32
    }

    /// Handle one TCP segment `tcp` between `ends` (to the server's port 53) on a
    /// bridge whose frames carry `mtu` bytes of IP.
    pub fn handle(&self, ends: Ends, tcp: &[u8], mtu: u32) -> Out {
        self.segment_in(ends, tcp, mtu).unwrap_or(Out::Drop)
    }

    fn segment_in(&self, ends: Ends, tcp: &[u8], mtu: u32) -> Option<Out> {
        if tcp.len() < 20 {
            return None;
        }
        let cport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let sport = u16::from_be_bytes([tcp[2], tcp[3]]);
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        let off = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        if off < 20 || off > tcp.len() {
            return None;
        }
        if flags & RST != 0 {
            return Some(Out::None);
        }
        let data = &tcp[off..];
        let isn = self.isn(ends, cport);
        let reply = |seq, ack, flags, data: &[u8]| {
            Some(Out::Packet(segment(
                ends,
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
            return Some(Out::Query(
                query.to_vec(),
                TcpReply {
                    ends,
                    cport,
                    sport,
                    seq: isn.wrapping_add(1),
                    ack: their_next,
                    mss: ends.mss(mtu),
                },
            ));
        }
        if flags & FIN != 0 {
            return reply(ack, seq.wrapping_add(1), ACK, &[]);
        }
        Some(Out::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    /// The same connection seen from the client: a packet it sends to the server.
    fn from_client(ends: Ends) -> Ends {
        match ends {
            Ends::V4 { client, server } => Ends::V4 {
                client: server,
                server: client,
            },
            Ends::V6 { client, server } => Ends::V6 {
                client: server,
                server: client,
            },
        }
    }

    /// (seq, ack, flags, payload) of a packet we sent, after checking it with
    /// etherparse: IP addresses, the IPv4 header checksum, and the TCP checksum
    /// computed by etherparse over the family's pseudo-header.
    fn seg_of(ends: Ends, pkt: &[u8]) -> (u32, u32, u8, Vec<u8>) {
        let p = SlicedPacket::from_ip(pkt).expect("a valid IP packet");
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("not TCP: {pkt:02x?}");
        };
        let hdr = tcp.to_header();
        let want = match (p.net, ends) {
            (Some(NetSlice::Ipv4(ip)), Ends::V4 { client, server }) => {
                let h = ip.header();
                assert_eq!((h.source_addr(), h.destination_addr()), (server, client));
                assert_eq!(checksum(&pkt[..20]), 0, "IPv4 header checksum");
                hdr.calc_checksum_ipv4_raw(server.octets(), client.octets(), tcp.payload())
            }
            (Some(NetSlice::Ipv6(ip)), Ends::V6 { client, server }) => {
                let h = ip.header();
                assert_eq!((h.source_addr(), h.destination_addr()), (server, client));
                assert_eq!(h.next_header().0, ipv6::NEXT_TCP);
                assert_eq!(h.hop_limit(), 64);
                hdr.calc_checksum_ipv6_raw(server.octets(), client.octets(), tcp.payload())
            }
            (net, _) => panic!("wrong family: {net:?}"),
        };
        assert_eq!(Ok(hdr.checksum), want, "TCP checksum");
        (
            hdr.sequence_number,
            hdr.acknowledgment_number,
            pkt[pkt.len() - tcp.payload().len() - 7],
            tcp.payload().to_vec(),
        )
    }

    fn handshake_query_answer(ends: Ends, mss: usize) {
        let ip_hlen = ends.headers() - 20;
        let t = Tcp53::default();
        let client = |seq, ack, flags, data: &[u8]| {
            let p = segment(
                from_client(ends),
                &Seg {
                    sport: 40000,
                    dport: 53,
                    seq,
                    ack,
                    flags,
                    data,
                },
            );
            p[ip_hlen..].to_vec()
        };
        let pkt = |o: Out| match o {
            Out::Packet(p) => p,
            o => panic!("{o:?}"),
        };
        let synack = pkt(t.handle(ends, &client(1000, 0, SYN, &[]), 1500));
        let (isn, ack, flags, _) = seg_of(ends, &synack);
        assert_eq!((ack, flags), (1001, SYN | ACK));
        let q = [0, 3, b'a', b'b', b'c'];
        let data = client(1001, isn + 1, ACK | PSH, &q);
        let Out::Query(query, r) = t.handle(ends, &data, 1500) else {
            panic!("no query");
        };
        assert_eq!(query, b"abc");
        assert_eq!(r.ends(), ends);
        let resp = r.segments(&query);
        assert_eq!(resp.len(), 1);
        let (seq, ack, flags, payload) = seg_of(ends, &resp[0]);
        assert_eq!((seq, ack, flags), (isn + 1, 1006, ACK | PSH | FIN));
        assert_eq!(payload, q.to_vec());
        // A long answer: MSS-sized segments in sequence, FIN on the last only.
        let long = vec![7u8; 3000];
        let segs = r.segments(&long);
        assert_eq!(
            segs.len(),
            3002usize.div_ceil(mss),
            "3002 bytes in {mss}-byte segments"
        );
        let mut next = isn + 1;
        let mut got = Vec::new();
        for (i, p) in segs.iter().enumerate() {
            let (seq, ack, flags, payload) = seg_of(ends, p);
            assert_eq!((seq, ack), (next, 1006));
            assert_eq!(flags & FIN != 0, i == segs.len() - 1);
            assert!(payload.len() <= mss);
            next += payload.len() as u32;
            got.extend(payload);
        }
        assert_eq!(&got[..2], &3000u16.to_be_bytes());
        assert_eq!(&got[2..], &long[..]);
        // The client's FIN is acknowledged.
        let fin = pkt(t.handle(ends, &client(1006, next + 1, ACK | FIN, &[]), 1500));
        assert_eq!(seg_of(ends, &fin).1, 1007);
        // A stray segment gets a reset.
        let stray = client(5, isn + 99_999, ACK, &q);
        assert_eq!(seg_of(ends, &pkt(t.handle(ends, &stray, 1500))).2, RST);
        // A reset is never answered.
        assert!(matches!(
            t.handle(ends, &client(5, 0, RST, &[]), 1500),
            Out::None
        ));
    }

    #[test]
    fn handshake_query_answer_ipv4() {
        let ends = Ends::V4 {
            client: Ipv4Addr::new(10, 0, 0, 5),
            server: Ipv4Addr::new(10, 0, 0, 1),
        };
        handshake_query_answer(ends, 1460);
    }

    #[test]
    fn handshake_query_answer_ipv6() {
        let ends = Ends::V6 {
            client: "fd00:1::5".parse().unwrap(),
            server: "fd00:1::1".parse().unwrap(),
        };
        handshake_query_answer(ends, 1440);
    }

    #[test]
    fn mss_by_family_and_mtu() {
        let v4 = Ends::V4 {
            client: Ipv4Addr::LOCALHOST,
            server: Ipv4Addr::LOCALHOST,
        };
        let v6 = Ends::V6 {
            client: Ipv6Addr::LOCALHOST,
            server: Ipv6Addr::LOCALHOST,
        };
        assert_eq!((v4.mss(1500), v6.mss(1500)), (1460, 1440));
        assert_eq!((v4.mss(1280), v6.mss(1280)), (1240, 1220));
        assert_eq!((v4.mss(9000), v6.mss(9000)), (1460, 1440));
        assert_eq!(v6.mss(600), 1220, "never below IPv6's minimum MTU");
    }
}
