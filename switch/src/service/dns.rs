//! The DNS responder of a bridge (Docker's embedded DNS, dnsmasq's `domain-needed`):
//! A, AAAA and PTR (in-addr.arpa and ip6.arpa) answers for the names registered on
//! that bridge; other names are
//! forwarded upstream (by [`super::forward`], off this thread) when the bridge forwards
//! and the name may leave: never a plain name without a dot, a name in the bridge's own
//! domain, or a reverse name of a private address — those get NXDOMAIN, so container
//! names never leak upstream. Names are case-insensitive. Codec: hickory-proto.

use super::tcp53::TcpReply;
use crate::dp::{NameMap, Names6};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TTL of answers, seconds.
pub const TTL: u32 = 60;

/// Largest UDP answer sent without the client asking for more (RFC 1035).
const UDP_MIN: usize = 512;
/// IPv4 + UDP headers.
const IP_UDP_HDR: usize = 28;

/// Where the answer to a query goes: back over UDP or over the stateless TCP responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Udp {
        client: Ipv4Addr,
        /// The gateway address the query was sent to.
        server: Ipv4Addr,
        cport: u16,
        /// Largest answer the client takes over UDP (512, or its EDNS size within the
        /// bridge's MTU); a longer one goes out truncated (TC), and the client asks
        /// again over TCP.
        limit: usize,
    },
    /// Over TCP and IPv4, routed back to the client.
    Tcp(TcpReply),
    /// Over TCP and IPv6, back out of the port the query came in on, to the MAC it
    /// came from (as `Udp6`).
    Tcp6 {
        reply: TcpReply,
        port: crate::tables::PortId,
        mac: crate::wire::MacAddr,
    },
    /// Over UDP and IPv6, back out of the port the query came in on, to the MAC it
    /// came from (the client, or the router in front of it).
    Udp6 {
        client: Ipv6Addr,
        server: Ipv6Addr,
        cport: u16,
        limit: usize,
        port: crate::tables::PortId,
        mac: crate::wire::MacAddr,
    },
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Answered here.
    Local(Vec<u8>),
    /// Not a name of the bridge, and one that may leave: ask upstream.
    Forward,
}

/// The UDP size limit for the answer to `query` on a bridge of MTU `mtu`.
pub fn udp_limit(query: &[u8], mtu: u32) -> usize {
    let asked = Message::from_vec(query).map_or(UDP_MIN, |m| usize::from(m.max_payload()));
    let fits = (mtu as usize).saturating_sub(IP_UDP_HDR).max(UDP_MIN);
    asked.clamp(UDP_MIN, fits)
}

/// `answer` as it may go over UDP within `limit`: as it is, or truncated (header,
/// question and TC flag only).
pub fn fit_udp(answer: Vec<u8>, limit: usize) -> Vec<u8> {
    if answer.len() <= limit {
        return answer;
    }
    match Message::from_vec(&answer)
        .ok()
        .and_then(|m| m.truncate().to_vec().ok())
    {
        Some(t) if t.len() <= limit => t,
        // Undecodable or still too long: the 12-byte header alone, with TC set.
        _ => {
            let mut h = answer[..12.min(answer.len())].to_vec();
            if h.len() == 12 {
                h[2] |= 0x02;
                h[4..12].fill(0);
            }
            h
        }
    }
}

/// The address a reverse name asks for (in-addr.arpa or ip6.arpa).
fn ptr_addr(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        // 32 nibbles, least significant first.
        let nibbles: Vec<u8> = rest
            .split('.')
            .map(|p| match p.len() {
                1 => u8::from_str_radix(p, 16).ok(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        if nibbles.len() != 32 {
            return None;
        }
        let mut o = [0u8; 16];
        for (i, n) in nibbles.iter().rev().enumerate() {
            o[i / 2] |= if i % 2 == 0 { n << 4 } else { *n };
        }
        return Some(IpAddr::V6(Ipv6Addr::from(o)));
    }
    ptr_addr4(name).map(IpAddr::V4)
}

fn ptr_addr4(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse::<u8>().ok())
        .collect::<Option<Vec<_>>>()?;
    match parts[..] {
        [d, c, b, a] => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    }
}

/// Whether `full` (lower-case, no trailing dot) is a name under the reverse zones of
/// private or link-local addresses (dnsmasq's `bogus-priv`): 10/8, 172.16/12,
/// 192.168/16, 169.254/16, 127/8; for IPv6 (RFC 6303) fc00::/7 (ULA), fe80::/10 and
/// the loopback.
fn private_reverse(full: &str) -> bool {
    if let Some(rest) = full.strip_suffix("ip6.arpa") {
        let top: String = rest.trim_end_matches('.').rsplit('.').take(3).collect();
        return top.starts_with("fc")
            || top.starts_with("fd")
            || ["fe8", "fe9", "fea", "feb"].contains(&top.as_str())
            || full == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa";
    }
    let Some(rest) = full.strip_suffix("in-addr.arpa") else {
        return false;
    };
    let labels: Vec<&str> = rest.trim_end_matches('.').rsplit('.').collect();
    match labels[..] {
        ["10", ..] | ["127", ..] => true,
        ["192", "168", ..] | ["169", "254", ..] => true,
        ["172", b, ..] => b.parse::<u8>().is_ok_and(|b| (16..=31).contains(&b)),
        _ => false,
    }
}

/// Whether a name the bridge does not know may be asked upstream.
fn may_leave(full: &str, domain: &str) -> bool {
    full.contains('.')
        && full != domain
        && !full.ends_with(&format!(".{domain}"))
        && !private_reverse(full)
}

/// The answer to the query `data`, or `None` if it is not a query we can parse.
/// `names`: the bridge's name maps, the first that knows a name answers for it (static
/// names, then DHCP lease names); `names6` likewise for AAAA (static, DHCPv6 leases). `domain` is the bridge's DNS domain (the DHCP domain-name option): `web.br1`
/// answers like `web`. With `forward`, a name the bridge does not own (and that may
/// leave) is [`Answer::Forward`]; without, NXDOMAIN.
pub fn answer(
    names: &[&NameMap],
    names6: &[&Names6],
    domain: &str,
    data: &[u8],
    now_unix: u64,
    forward: bool,
) -> Option<Answer> {
    let q = Message::from_vec(data).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = forward;
    r.metadata.authoritative = true;
    if q.metadata.op_code != OpCode::Query || q.queries.len() != 1 {
        r.metadata.response_code = ResponseCode::NotImp;
        return r.to_vec().ok().map(Answer::Local);
    }
    let query = q.queries[0].clone();
    let qname = query.name().to_ascii().to_ascii_lowercase();
    let full = qname.trim_end_matches('.');
    let key = full
        .strip_suffix(domain)
        .and_then(|k| k.strip_suffix('.'))
        .filter(|k| !k.is_empty())
        .unwrap_or(full)
        .to_string();
    let live = |exp: u64| exp == 0 || exp > now_unix;
    let forwardable = forward && may_leave(full, domain);
    r.add_query(query.clone());
    match (query.query_type(), ptr_addr(&key)) {
        (RecordType::PTR, Some(ip)) => {
            let mut hits: Vec<&String> = match ip {
                IpAddr::V4(ip) => names
                    .iter()
                    .flat_map(|m| m.iter())
                    .filter(|(_, (a, e))| *a == ip && live(*e))
                    .map(|(n, _)| n)
                    .collect(),
                IpAddr::V6(ip) => names6
                    .iter()
                    .flat_map(|m| m.iter())
                    .filter(|(_, a)| **a == ip)
                    .map(|(n, _)| n)
                    .collect(),
            };
            hits.sort();
            hits.dedup();
            if hits.is_empty() {
                if forwardable {
                    return Some(Answer::Forward);
                }
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            for n in hits {
                let target = Name::from_ascii(format!("{n}.")).ok()?;
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    TTL,
                    RData::PTR(PTR(target)),
                ));
            }
        }
        (ty, _) => {
            let v4 = names
                .iter()
                .find_map(|m| m.get(&key).filter(|(_, e)| live(*e)))
                .map(|(ip, _)| *ip);
            let v6 = names6.iter().find_map(|m| m.get(&key)).copied();
            if v4.is_none() && v6.is_none() {
                if forwardable {
                    return Some(Answer::Forward);
                }
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            let any = ty == RecordType::ANY;
            if let Some(ip) = v4.filter(|_| ty == RecordType::A || any) {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    TTL,
                    RData::A(A(ip)),
                ));
            }
            if let Some(ip) = v6.filter(|_| ty == RecordType::AAAA || any) {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    TTL,
                    RData::AAAA(AAAA(ip)),
                ));
            }
            // Other types of a known name: NOERROR without answers.
        }
    }
    r.to_vec().ok().map(Answer::Local)
}

/// DNS counters of one bridge since vswitchd started: queries to its gateway (UDP and
/// TCP, IPv4 and IPv6), those forwarded upstream, and the answers sent back by
/// response code (local and forwarded answers alike; a forward that fails is answered
/// SERVFAIL here and counted so).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnsCounts {
    pub queries: u64,
    pub forwarded: u64,
    pub noerror: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub refused: u64,
    /// FORMERR, NOTIMP and the rarer codes.
    pub other: u64,
}

impl DnsCounts {
    /// Count one answer by the response code in its header (the low 4 bits of byte
    /// 3; an EDNS extended code is rare enough to count as its low bits).
    pub fn count_answer(&mut self, msg: &[u8]) {
        match msg.get(3).map(|b| b & 0x0f) {
            Some(0) => self.noerror += 1,
            Some(2) => self.servfail += 1,
            Some(3) => self.nxdomain += 1,
            Some(5) => self.refused += 1,
            _ => self.other += 1,
        }
    }
}

/// The DNS counters of every bridge, by name: written by the service thread, read by
/// the control plane (`show`, `list-br`, `--metrics`) under one short lock.
#[derive(Debug, Default)]
pub struct DnsStats {
    by_bridge: parking_lot::Mutex<std::collections::HashMap<String, DnsCounts>>,
}

impl DnsStats {
    /// Change the counters of `bridge`.
    pub fn update(&self, bridge: &str, f: impl FnOnce(&mut DnsCounts)) {
        let mut m = self.by_bridge.lock();
        match m.get_mut(bridge) {
            Some(c) => f(c),
            None => f(m.entry(bridge.to_string()).or_default()),
        }
    }

    /// The counters of `bridge` (zero when it was never asked anything).
    pub fn get(&self, bridge: &str) -> DnsCounts {
        self.by_bridge
            .lock()
            .get(bridge)
            .copied()
            .unwrap_or_default()
    }
}

/// Fuzz entry point: `data` is one DNS message (UDP payload) for a bridge that knows
/// two names and forwards. Must never panic; an answer is never larger than a UDP
/// reply can be, and fits the limit it is cut to.
pub fn fuzz(data: &[u8]) {
    let mut n = NameMap::new();
    n.insert("web".into(), (Ipv4Addr::new(10, 0, 0, 5), 0));
    n.insert("db".into(), (Ipv4Addr::new(10, 0, 0, 6), 50));
    let mut n6 = Names6::new();
    n6.insert("web".into(), Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 5));
    if let Some(Answer::Local(reply)) = answer(&[&n], &[&n6], "lab", data, 100, true) {
        assert!(reply.len() <= 65_535, "oversized DNS reply");
        let limit = udp_limit(data, 1500);
        assert!(
            fit_udp(reply, limit).len() <= limit,
            "UDP answer over its limit"
        );
    }
    let _ = super::forward::servfail(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn query(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    fn local(names: &NameMap, q: &[u8]) -> Message {
        match answer(&[names], &[&Names6::new()], "br1", q, 100, true) {
            Some(Answer::Local(r)) => Message::from_vec(&r).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn names() -> NameMap {
        let mut n = NameMap::new();
        n.insert("web".into(), (Ipv4Addr::new(10, 0, 0, 5), 0));
        n.insert("old".into(), (Ipv4Addr::new(10, 0, 0, 6), 50));
        n
    }

    #[test]
    fn static_names_before_lease_names() {
        let mut leased = NameMap::new();
        leased.insert("web".into(), (Ipv4Addr::new(10, 0, 0, 99), 1000));
        leased.insert("laptop".into(), (Ipv4Addr::new(10, 0, 0, 5), 1000));
        let statics = names();
        let maps = [&statics, &leased];
        let a = |n: &str| {
            let r = match answer(
                &maps,
                &[&Names6::new()],
                "br1",
                &query(n, RecordType::A),
                100,
                false,
            ) {
                Some(Answer::Local(r)) => Message::from_vec(&r).unwrap(),
                other => panic!("{other:?}"),
            };
            r.answers.first().map(|a| a.data.clone())
        };
        assert_eq!(a("web."), Some(RData::A(A(Ipv4Addr::new(10, 0, 0, 5)))));
        assert_eq!(a("laptop."), Some(RData::A(A(Ipv4Addr::new(10, 0, 0, 5)))));
        // PTR: every live name of the address, from both maps.
        let r = match answer(
            &maps,
            &[&Names6::new()],
            "br1",
            &query("5.0.0.10.in-addr.arpa.", RecordType::PTR),
            100,
            false,
        ) {
            Some(Answer::Local(r)) => Message::from_vec(&r).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(r.answers.len(), 2);
    }

    #[test]
    fn aaaa_and_ip6_arpa() {
        let v4 = names();
        let mut v6 = Names6::new();
        let web6: Ipv6Addr = "fd00:10::5".parse().unwrap();
        v6.insert("web".into(), web6);
        v6.insert("only6".into(), "fd00:10::6".parse().unwrap());
        let ask = |n: &str, ty| match answer(&[&v4], &[&v6], "br1", &query(n, ty), 100, false) {
            Some(Answer::Local(r)) => Message::from_vec(&r).unwrap(),
            other => panic!("{other:?}"),
        };
        let r = ask("web.br1.", RecordType::AAAA);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::AAAA(AAAA(web6)));
        let r = ask("web.", RecordType::A);
        assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 5))));
        // A name with only an IPv6 address: no A record, but it exists (NOERROR).
        let r = ask("only6.", RecordType::A);
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::NoError, 0)
        );
        let rev = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa.";
        let r = ask(rev, RecordType::PTR);
        assert_eq!(r.answers.len(), 1, "{r:?}");
        assert_eq!(
            r.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("web.").unwrap()))
        );
        // Unknown ULA and link-local reverse names never leave; a global one may.
        assert!(private_reverse(
            &rev.replace("5.0.0", "9.0.0")[..rev.len() - 1]
        ));
        assert!(private_reverse(
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa"
        ));
        assert!(!private_reverse(
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        ));
        assert_eq!(ptr_addr("1.2.ip6.arpa"), None);
    }

    #[test]
    fn a_ptr_nxdomain() {
        let r = local(&names(), &query("WEB.", RecordType::A));
        assert_eq!(r.metadata.id, 7);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 5))));

        let r = local(&names(), &query("5.0.0.10.in-addr.arpa.", RecordType::PTR));
        assert_eq!(r.answers.len(), 1);

        for (n, ty) in [("nope.", RecordType::A), ("old.", RecordType::A)] {
            let r = local(&names(), &query(n, ty));
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{n}");
        }
        let r = local(&names(), &query("web.", RecordType::AAAA));
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert!(answer(&[&names()], &[&Names6::new()], "br1", b"junk", 1, true).is_none());
        let r = local(&names(), &query("web.br1.", RecordType::A));
        assert_eq!(r.answers.len(), 1, "name in the bridge's domain");
    }

    #[test]
    fn only_names_that_may_leave_are_forwarded() {
        let fwd = |n: &str, ty| {
            answer(
                &[&names()],
                &[&Names6::new()],
                "br1",
                &query(n, ty),
                100,
                true,
            )
        };
        for n in ["www.example.com.", "Example.ORG.", "x.y.z."] {
            assert_eq!(fwd(n, RecordType::A), Some(Answer::Forward), "{n}");
        }
        assert_eq!(fwd("example.com.", RecordType::MX), Some(Answer::Forward));
        assert_eq!(
            fwd("7.113.0.203.in-addr.arpa.", RecordType::PTR),
            Some(Answer::Forward),
            "reverse of a public address"
        );
        // Never: dotless names, the bridge's own domain, private reverse zones.
        for (n, ty) in [
            ("nope.", RecordType::A),
            ("nope.br1.", RecordType::A),
            ("br1.", RecordType::A),
            ("9.0.0.10.in-addr.arpa.", RecordType::PTR),
            ("1.1.168.192.in-addr.arpa.", RecordType::PTR),
            ("1.1.20.172.in-addr.arpa.", RecordType::PTR),
            ("10.in-addr.arpa.", RecordType::SOA),
        ] {
            let r = local(&names(), &query(n, ty));
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{n}");
            assert!(r.metadata.recursion_available);
        }
        // Known names still answer here.
        assert_eq!(
            local(&names(), &query("web.", RecordType::A)).answers.len(),
            1
        );
        // Not forwarding: NXDOMAIN.
        assert!(matches!(
            answer(
                &[&names()],
                &[&Names6::new()],
                "br1",
                &query("www.example.com.", RecordType::A),
                100,
                false
            ),
            Some(Answer::Local(_))
        ));
    }

    #[test]
    fn udp_answers_fit_their_limit() {
        let q = query("web.", RecordType::A);
        assert_eq!(udp_limit(&q, 1500), 512, "no EDNS: 512");
        let mut m = Message::from_vec(&q).unwrap();
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
        let big = m.to_vec().unwrap();
        assert_eq!(udp_limit(&big, 1500), 1472, "EDNS within the MTU");
        assert_eq!(udp_limit(&big, 9000), 4096);
        // An answer over the limit goes out with TC, question kept.
        let mut r = Message::response(7, OpCode::Query);
        r.add_query(m.queries[0].clone());
        for i in 0..60u8 {
            r.add_answer(Record::from_rdata(
                m.queries[0].name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(10, 0, 1, i))),
            ));
        }
        let long = r.to_vec().unwrap();
        assert!(long.len() > 512);
        let cut = Message::from_vec(&fit_udp(long.clone(), 512)).unwrap();
        assert!(cut.metadata.truncation);
        assert_eq!(
            (cut.metadata.id, cut.queries.len(), cut.answers.len()),
            (7, 1, 0)
        );
        assert_eq!(fit_udp(long.clone(), 4096), long);
    }

    #[test]
    fn counts_answers_by_response_code() {
        let stats = DnsStats::default();
        let names = names();
        for (name, forward) in [("web.", false), ("nope.", false), ("example.com.", true)] {
            let q = query(name, RecordType::A);
            stats.update("br1", |c| c.queries += 1);
            match answer(&[&names], &[], "br1", &q, 100, forward) {
                Some(Answer::Local(r)) => stats.update("br1", |c| c.count_answer(&r)),
                Some(Answer::Forward) => {
                    stats.update("br1", |c| c.forwarded += 1);
                    let r = super::super::forward::servfail(&q).unwrap();
                    stats.update("br1", |c| c.count_answer(&r));
                }
                None => panic!("no answer to {name}"),
            }
        }
        let c = stats.get("br1");
        assert_eq!(
            (c.queries, c.forwarded, c.noerror, c.nxdomain, c.servfail),
            (3, 1, 1, 1, 1)
        );
        assert_eq!(stats.get("br2"), DnsCounts::default());
    }
}
