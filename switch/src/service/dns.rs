//! The DNS responder of a bridge (Docker's embedded DNS): A and PTR answers for the
//! names registered on that bridge, NXDOMAIN for anything else. Names are
//! case-insensitive. Codec: hickory-proto.

use crate::dp::NameMap;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::Ipv4Addr;

/// TTL of answers, seconds.
pub const TTL: u32 = 60;

fn ptr_addr(name: &str) -> Option<Ipv4Addr> {
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

/// The reply to the query `data`, or `None` if it is not a query we can parse.
/// `domain` is the bridge's DNS domain (the DHCP domain-name option): `web.br1`
/// answers like `web`.
pub fn answer(names: &NameMap, domain: &str, data: &[u8], now_unix: u64) -> Option<Vec<u8>> {
    let q = Message::from_vec(data).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.authoritative = true;
    if q.metadata.op_code != OpCode::Query || q.queries.len() != 1 {
        r.metadata.response_code = ResponseCode::NotImp;
        return r.to_vec().ok();
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
    r.add_query(query.clone());
    match (query.query_type(), ptr_addr(&key)) {
        (RecordType::PTR, Some(ip)) => {
            let mut hits: Vec<&String> = names
                .iter()
                .filter(|(_, (a, e))| *a == ip && live(*e))
                .map(|(n, _)| n)
                .collect();
            hits.sort();
            if hits.is_empty() {
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
        (ty, _) => match names.get(&key).filter(|(_, e)| live(*e)) {
            Some((ip, _)) => {
                if ty == RecordType::A || ty == RecordType::ANY {
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        TTL,
                        RData::A(A(*ip)),
                    ));
                }
                // Other types of a known name: NOERROR without answers.
            }
            None => r.metadata.response_code = ResponseCode::NXDomain,
        },
    }
    r.to_vec().ok()
}

/// Fuzz entry point: `data` is one DNS message (UDP payload) for a bridge that knows
/// two names. Must never panic; an answer is never larger than a UDP reply can be.
pub fn fuzz(data: &[u8]) {
    let mut n = NameMap::new();
    n.insert("web".into(), (Ipv4Addr::new(10, 0, 0, 5), 0));
    n.insert("db".into(), (Ipv4Addr::new(10, 0, 0, 6), 50));
    if let Some(reply) = answer(&n, "lab", data, 100) {
        assert!(reply.len() <= 65_535, "oversized DNS reply");
    }
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

    fn names() -> NameMap {
        let mut n = NameMap::new();
        n.insert("web".into(), (Ipv4Addr::new(10, 0, 0, 5), 0));
        n.insert("old".into(), (Ipv4Addr::new(10, 0, 0, 6), 50));
        n
    }

    #[test]
    fn a_ptr_nxdomain() {
        let r = Message::from_vec(
            &answer(&names(), "br1", &query("WEB.", RecordType::A), 100).unwrap(),
        )
        .unwrap();
        assert_eq!(r.metadata.id, 7);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 5))));

        let r = Message::from_vec(
            &answer(
                &names(),
                "br1",
                &query("5.0.0.10.in-addr.arpa.", RecordType::PTR),
                100,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.answers.len(), 1);

        for (n, ty) in [("nope.", RecordType::A), ("old.", RecordType::A)] {
            let r =
                Message::from_vec(&answer(&names(), "br1", &query(n, ty), 100).unwrap()).unwrap();
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{n}");
        }
        let r = Message::from_vec(
            &answer(&names(), "br1", &query("web.", RecordType::AAAA), 100).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert!(answer(&names(), "br1", b"junk", 1).is_none());
        let r = Message::from_vec(
            &answer(&names(), "br1", &query("web.br1.", RecordType::A), 100).unwrap(),
        )
        .unwrap();
        assert_eq!(r.answers.len(), 1, "name in the bridge's domain");
    }
}
