//! DNS over TCP (RFC 7766) on the gateway addresses, without a TCP stack.
//!
//! A DNS-over-TCP exchange is one query and one answer, so the responder is stateless:
//! the initial sequence number is a keyed hash of the connection's addresses and ports
//! (a SYN cookie), which lets a later segment prove it belongs to a handshake we
//! answered. SYN → SYN-ACK; a segment carrying a whole length-prefixed query → the
//! length-prefixed answer with FIN; FIN → ACK; anything else → RST. Queries split over
//! several segments are not supported (clients send them in one).

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

    /// Handle one TCP segment `tcp` from `client` to `server`:53; returns the IPv4
    /// packet to send back, if any. `resolve` turns a DNS query into its answer.
    pub fn handle(
        &self,
        client: Ipv4Addr,
        server: Ipv4Addr,
        tcp: &[u8],
        resolve: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
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
            Some(segment(
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
            ))
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
            let answer = resolve(query)?;
            let mut out = (answer.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&answer);
            let their_next = seq.wrapping_add(data.len() as u32);
            return reply(isn.wrapping_add(1), their_next, ACK | PSH | FIN, &out);
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
        let synack = t.handle(c, s, &syn[20..], |_| None).unwrap();
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
        let resp = t.handle(c, s, &data[20..], |q| Some(q.to_vec())).unwrap();
        let (seq, ack, flags, payload) = seg_of(&resp);
        assert_eq!((seq, ack, flags), (isn + 1, 1006, ACK | PSH | FIN));
        assert_eq!(payload, q.to_vec());
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
        assert_eq!(
            seg_of(&t.handle(c, s, &stray[20..], |_| None).unwrap()).2,
            RST
        );
    }
}
