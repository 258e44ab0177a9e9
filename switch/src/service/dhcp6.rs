//! The DHCPv6 server of a bridge (RFC 8415), on the `dhcproto` codec: stateful
//! addresses (IA_NA) from the bridge's [`Pool6`] and stateless options (DNS server =
//! the IPv6 gateway, search domain = the bridge's name).
//!
//! Served: Solicit (Advertise, or Reply with Rapid Commit), Request, Renew, Rebind,
//! Confirm, Release, Decline and Information-request, from clients on the link (no
//! relays). One address per client DUID, for its first IA_NA; further IA_NAs get
//! NoAddrsAvail, IA_TA and IA_PD are not served. Release and Decline end a lease only
//! when they name the address the client's DUID holds (counted otherwise).
//!
//! Client FQDN (RFC 4704, option 39): the name a client sends becomes the lease's
//! host name (its first label, or the whole name less the bridge's domain), answered
//! by the bridge's DNS as AAAA and ip6.arpa PTR while the lease lives (first come,
//! first served); the reply carries the option back with the name as registered
//! (`NAME.BRIDGE`) and S=1 (the server updated the AAAA record), or N=1 when the name
//! was not taken. A client sending none gets the name its MAC's DHCPv4 lease
//! registered, if any (`fallback`).
//!
//! Like DHCPv4, the service thread calls [`serve`] with the pool locked: a decode, a
//! few table operations, an encode, no I/O.

use crate::tables::leases6::{Client6, Duid, Pool6, LEASE6_SECS};
use crate::wire::MacAddr;
use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, Message, MessageType, OptionCode, Status, StatusCode, IANA,
};
use dhcproto::{Decodable, Encodable};
use std::net::Ipv6Addr;

/// UDP ports: servers listen on 547, clients on 546.
pub const SERVER_PORT: u16 = 547;
pub const CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Option codes whose body `dhcproto` reads with a fixed size or a subtraction: the
/// length (exact, or at least) that is safe. Other options are read by their length.
fn length_ok(code: u16, len: usize) -> bool {
    match code {
        3 | 25 => len >= 12, // IA_NA, IA_PD
        4 => len >= 4,       // IA_TA
        5 => len >= 24,      // IAADDR
        26 => len >= 25,     // IAPREFIX
        7 | 19 => len == 1,  // Preference, Reconfigure Message
        8 => len == 2,       // Elapsed Time
        11 => len >= 11,     // Authentication
        12 => len == 16,     // Server Unicast
        13 => len >= 2,      // Status Code
        16 | 17 => len >= 4, // Vendor Class, Vendor-specific Information
        9 => false,          // Relay Message: no relays are served
        _ => true,
    }
}

/// Whether the options in `b` are well formed as far as the codec is concerned (it
/// underflows on some short options): every TLV within bounds, lengths of
/// fixed-layout options right, nested options (in IA_NA, IA_TA, IAADDR, IA_PD,
/// IAPREFIX, vendor options) likewise. `depth` bounds the recursion.
fn options_sane(mut b: &[u8], depth: u8) -> bool {
    if depth > 4 {
        return false;
    }
    while !b.is_empty() {
        let [c0, c1, l0, l1, rest @ ..] = b else {
            return false;
        };
        let code = u16::from_be_bytes([*c0, *c1]);
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some(body) = rest.get(..len) else {
            return false;
        };
        if !length_ok(code, len) {
            return false;
        }
        let nested = match code {
            3 | 25 => Some(12),
            4 | 17 => Some(4),
            5 => Some(24),
            26 => Some(25),
            _ => None,
        };
        if let Some(ofs) = nested {
            if !options_sane(&body[ofs..], depth + 1) {
                return false;
            }
        }
        b = &rest[len..];
    }
    true
}

/// Client FQDN option code (RFC 4704).
pub const OPT_CLIENT_FQDN: u16 = 39;

/// A Client FQDN option (RFC 4704 §4.1): flags and the name, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fqdn {
    /// S (server should update AAAA), O (server overrode S), N (no updates).
    pub flags: u8,
    /// The host name to register: valid, lower case, one label or more, without the
    /// bridge's domain. `None`: empty, malformed or not a DNS name.
    pub name: Option<String>,
}

/// The body of the first option `code` among the top-level options `b` (already
/// checked by [`options_sane`]).
fn raw_option(mut b: &[u8], code: u16) -> Option<&[u8]> {
    while let [c0, c1, l0, l1, rest @ ..] = b {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let body = rest.get(..len)?;
        if u16::from_be_bytes([*c0, *c1]) == code {
            return Some(body);
        }
        b = &rest[len..];
    }
    None
}

/// Decode a Client FQDN option body: a flags octet, then a domain name in DNS wire
/// form without compression (RFC 4704 §4.2), fully qualified (ending with the root
/// label) or partial (not). `domain` (the bridge's, lower case) is taken off the end.
/// `None`: no flags octet.
pub fn parse_fqdn(body: &[u8], domain: &str) -> Option<Fqdn> {
    let (&flags, mut wire) = body.split_first()?;
    let mut labels: Vec<String> = Vec::new();
    let mut ok = true;
    while let Some((&len, rest)) = wire.split_first() {
        let len = usize::from(len);
        if len == 0 {
            // The root label ends the name; nothing may follow it.
            ok = rest.is_empty();
            break;
        }
        // Compression (top bits set) is not allowed here; labels are ≤ 63 octets.
        let Some(label) = rest.get(..len).filter(|_| len <= 63) else {
            ok = false;
            break;
        };
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        wire = &rest[len..];
    }
    let d = domain.to_ascii_lowercase();
    if labels.last().is_some_and(|l| *l == d) && labels.len() > 1 {
        labels.pop();
    }
    let name = labels.join(".");
    let name = (ok && crate::config::model::valid_dns_name(&name)).then_some(name);
    Some(Fqdn {
        flags: flags & 0x07,
        name,
    })
}

/// The Client FQDN option of a reply (RFC 4704 §5): `name` registered (S=1, O=1 when
/// the client had asked the server not to, which here means nothing else), or not
/// (N=1, no name).
fn fqdn_reply(asked: &Fqdn, name: Option<&str>, domain: &str) -> DhcpOption {
    const S: u8 = 1;
    const O: u8 = 2;
    const N: u8 = 4;
    let mut body = Vec::new();
    match name {
        Some(n) => {
            body.push(if asked.flags & S == 0 { S | O } else { S });
            for l in n.split('.').chain(std::iter::once(domain)) {
                let l = &l.as_bytes()[..l.len().min(63)];
                body.push(l.len() as u8);
                body.extend_from_slice(l);
            }
            body.push(0);
        }
        None => body.push(N),
    }
    DhcpOption::Unknown(dhcproto::v6::UnknownOption::new(
        OptionCode::ClientFqdn,
        body,
    ))
}

fn client_id(m: &Message) -> Option<Duid> {
    match m.opts().get(OptionCode::ClientId) {
        Some(DhcpOption::ClientId(d)) => Duid::valid(d),
        _ => None,
    }
}

fn server_id(m: &Message) -> Option<&[u8]> {
    match m.opts().get(OptionCode::ServerId) {
        Some(DhcpOption::ServerId(d)) => Some(d),
        _ => None,
    }
}

/// The IA_NAs of `m`, in order.
fn ia_nas(m: &Message) -> Vec<&IANA> {
    m.opts()
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IANA(ia) => Some(ia),
            _ => None,
        })
        .collect()
}

/// The addresses an IA_NA names.
fn ia_addrs(ia: &IANA) -> Vec<Ipv6Addr> {
    ia.opts
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IAAddr(a) => Some(a.addr),
            _ => None,
        })
        .collect()
}

fn status(status: Status, msg: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode {
        status,
        msg: msg.into(),
    })
}

/// An IA_NA holding `addr` with the lease's lifetimes (0: the client must stop using
/// it), or a status.
fn ia_with(id: u32, addr: Option<(Ipv6Addr, u32)>, st: Option<(Status, &str)>) -> DhcpOption {
    let mut opts = DhcpOptions::new();
    let (t1, t2) = match addr {
        Some((a, life)) => {
            opts.insert(DhcpOption::IAAddr(IAAddr {
                addr: a,
                preferred_life: life,
                valid_life: life,
                opts: DhcpOptions::new(),
            }));
            (life / 2, life / 5 * 4)
        }
        None => (0, 0),
    };
    if let Some((s, msg)) = st {
        opts.insert(status(s, msg));
    }
    DhcpOption::IANA(IANA { id, t1, t2, opts })
}

/// A reply of type `ty` to `req`, with the server and client identifiers and the
/// stateless options.
fn answer(pool: &Pool6, req: &Message, ty: MessageType) -> Message {
    let c = pool.conf();
    let mut r = Message::new_with_id(ty, req.xid());
    let o = r.opts_mut();
    o.insert(DhcpOption::ServerId(c.duid.0.clone()));
    if let Some(DhcpOption::ClientId(d)) = req.opts().get(OptionCode::ClientId) {
        o.insert(DhcpOption::ClientId(d.clone()));
    }
    o.insert(DhcpOption::DomainNameServers(vec![c.server]));
    if let Ok(name) = dhcproto::Name::from_ascii(c.bridge.to_ascii_lowercase()) {
        o.insert(DhcpOption::DomainSearchList(vec![name]));
    }
    r
}

/// Answer one DHCPv6 message (the UDP payload sent to port 547, from Ethernet source
/// `mac`) from `pool`, updating it. `fallback`: the host name to register when the
/// client sends no usable FQDN (its MAC's DHCPv4 lease name). `None`: no answer
/// (garbage, another server's, a relay message, a Confirm without addresses).
pub fn serve(
    pool: &mut Pool6,
    data: &[u8],
    now: u64,
    mac: Option<MacAddr>,
    fallback: Option<String>,
) -> Option<Vec<u8>> {
    // Client message types only (Solicit 1, Request 3, Confirm 4, Renew 5, Rebind 6,
    // Release 8, Decline 9, Information-request 11).
    if !matches!(data.first(), Some(1 | 3 | 4 | 5 | 6 | 8 | 9 | 11)) {
        return None;
    }
    if !options_sane(data.get(4..)?, 0) {
        return None;
    }
    let m = Message::from_bytes(data).ok()?;
    let domain = pool.conf().bridge.to_ascii_lowercase();
    let fqdn = raw_option(data.get(4..)?, OPT_CLIENT_FQDN).and_then(|b| parse_fqdn(b, &domain));
    let ours = server_id(&m).map(|s| s == pool.conf().duid.0.as_slice());
    let ty = m.msg_type();
    if ty == MessageType::InformationRequest {
        // RFC 8415 §16.12: no IA options; a server identifier, if any, ours.
        if ours == Some(false) || !ia_nas(&m).is_empty() {
            return None;
        }
        let mut r = answer(pool, &m, MessageType::Reply);
        r.opts_mut()
            .insert(DhcpOption::InformationRefreshTime(86_400));
        return r.to_vec().ok();
    }
    let duid = client_id(&m)?;
    // The name it asks for; else, for a lease without a name, its MAC's DHCPv4 name
    // (a lease that has one keeps it).
    let client = Client6 {
        mac,
        hostname: fqdn.as_ref().and_then(|f| f.name.clone()).or_else(|| {
            fallback
                .filter(|h| crate::config::model::valid_dns_name(h))
                .filter(|_| pool.lease_name(&duid).is_none())
        }),
    };
    // §16: Solicit, Confirm and Rebind carry no server identifier; Request, Renew,
    // Release and Decline carry ours.
    let must_name_us = matches!(
        ty,
        MessageType::Request | MessageType::Renew | MessageType::Release | MessageType::Decline
    );
    match (must_name_us, ours) {
        (true, Some(true)) | (false, None) => {}
        _ => return None,
    }
    let ias = ia_nas(&m);
    let life = LEASE6_SECS;
    let reply = match ty {
        MessageType::Solicit => {
            let ia = ias.first()?;
            let hint = ia_addrs(ia).into_iter().next();
            let rapid = m.opts().get(OptionCode::RapidCommit).is_some();
            let got = if rapid {
                pool.bind(&duid, ia.id, &client, hint, now)
            } else {
                pool.offer(&duid, mac, hint, now)
            };
            let Ok(addr) = got else {
                // §18.3.9: an Advertise with only NoAddrsAvail.
                let mut r = answer(pool, &m, MessageType::Advertise);
                r.opts_mut()
                    .insert(status(Status::NoAddrsAvail, "no addresses available"));
                return r.to_vec().ok();
            };
            let ty = if rapid {
                MessageType::Reply
            } else {
                MessageType::Advertise
            };
            let mut r = answer(pool, &m, ty);
            if rapid {
                r.opts_mut().insert(DhcpOption::RapidCommit);
            }
            // The only server here: the client need not wait for others (§18.2.1).
            r.opts_mut().insert(DhcpOption::Preference(255));
            r.opts_mut()
                .insert(ia_with(ia.id, Some((addr, life)), None));
            add_refused(&mut r, &ias[1..]);
            r
        }
        MessageType::Request => {
            let ia = ias.first()?;
            let hint = ia_addrs(ia).into_iter().next();
            let mut r = answer(pool, &m, MessageType::Reply);
            let o = match pool.bind(&duid, ia.id, &client, hint, now) {
                Ok(addr) => ia_with(ia.id, Some((addr, life)), None),
                Err(_) => ia_with(ia.id, None, Some((Status::NoAddrsAvail, "pool exhausted"))),
            };
            r.opts_mut().insert(o);
            add_refused(&mut r, &ias[1..]);
            r
        }
        MessageType::Renew | MessageType::Rebind => {
            let ia = ias.first()?;
            let mut r = answer(pool, &m, MessageType::Reply);
            let addrs = ia_addrs(ia);
            let o = match addrs.first() {
                // No address named: as a Request.
                None => match pool.bind(&duid, ia.id, &client, None, now) {
                    Ok(addr) => ia_with(ia.id, Some((addr, life)), None),
                    Err(_) => ia_with(ia.id, None, Some((Status::NoAddrsAvail, "pool exhausted"))),
                },
                Some(&a) => match pool.renew(&duid, ia.id, &client, a, now) {
                    Ok(()) => ia_with(ia.id, Some((a, life)), None),
                    // §18.3.4: Renew of an unknown binding: NoBinding.
                    Err(_) if ty == MessageType::Renew => {
                        ia_with(ia.id, None, Some((Status::NoBinding, "no binding")))
                    }
                    // §18.3.5: Rebind of an address not for this link: lifetimes 0.
                    Err(_) => ia_with(ia.id, Some((a, 0)), None),
                },
            };
            r.opts_mut().insert(o);
            r
        }
        MessageType::Confirm => {
            let addrs: Vec<Ipv6Addr> = ias.iter().flat_map(|ia| ia_addrs(ia)).collect();
            if addrs.is_empty() {
                return None;
            }
            let net = pool.conf().subnet;
            let mut r = answer(pool, &m, MessageType::Reply);
            let st = match addrs.iter().all(|a| net.contains(a)) {
                true => status(Status::Success, "on link"),
                false => status(Status::NotOnLink, "not on link"),
            };
            r.opts_mut().insert(st);
            r
        }
        MessageType::Release | MessageType::Decline => {
            for ia in &ias {
                for a in ia_addrs(ia) {
                    if ty == MessageType::Release {
                        pool.release(&duid, a, now);
                    } else {
                        pool.decline(&duid, a, now);
                    }
                }
            }
            let mut r = answer(pool, &m, MessageType::Reply);
            r.opts_mut().insert(status(Status::Success, "done"));
            r
        }
        _ => return None,
    };
    let mut reply = reply;
    if let Some(f) = &fqdn {
        // The name the lease now has (an Advertise: the one it would get).
        let name = match ty {
            MessageType::Release | MessageType::Decline | MessageType::Confirm => None,
            _ => pool.lease_name(&duid).or_else(|| {
                (ty == MessageType::Solicit)
                    .then(|| client.hostname.clone())
                    .flatten()
                    .filter(|h| !pool.names().contains_key(h))
            }),
        };
        reply
            .opts_mut()
            .insert(fqdn_reply(f, name.as_deref(), &domain));
    }
    reply.to_vec().ok()
}

/// IA_NAs beyond the first: one address per client.
fn add_refused(r: &mut Message, rest: &[&IANA]) {
    for ia in rest {
        r.opts_mut().insert(ia_with(
            ia.id,
            None,
            Some((Status::NoAddrsAvail, "one address per client")),
        ));
    }
}

/// Fuzz entry point (the `dhcp6` fuzz target and its corpus replay): `data` is one
/// DHCPv6 message sent to a bridge with a small pool, twice (a fresh lease, then the same message against it). Must never panic, and
/// never leases outside the pool.
pub fn fuzz(data: &[u8]) {
    use crate::tables::leases6::{Pool6Conf, DUID_MAX};
    let conf = Pool6Conf {
        bridge: "br0".into(),
        first: Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x100),
        last: Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x103),
        subnet: "fd00:10::/64".parse().unwrap_or_default(),
        server: Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 1),
        // A fixed server DUID (00:03:00:01:02:76:00:00:00:00), so that corpus inputs
        // naming it reach Request, Renew, Release and Decline.
        duid: Duid::ll(crate::wire::MacAddr([2, 0x76, 0, 0, 0, 0])),
        reserved: Default::default(),
        reservations: Default::default(),
    };
    let (first, last) = (conf.first, conf.last);
    let mut pool = Pool6::new(conf);
    for now in [1000, 1_000_000] {
        let _ = serve(
            &mut pool,
            data,
            now,
            Some(crate::wire::MacAddr([2, 0, 0, 0, 0, 1])),
            None,
        );
    }
    // The FQDN decoder on the whole input as an option body: whatever it returns is a
    // valid DNS name.
    if let Some(f) = parse_fqdn(data, "br0") {
        assert!(
            f.name
                .iter()
                .all(|n| crate::config::model::valid_dns_name(n)),
            "{f:?}"
        );
    }
    for (n, ip) in pool.names().iter() {
        assert!(
            crate::config::model::valid_dns_name(n) && pool.leases().iter().any(|l| l.ip == *ip)
        );
    }
    let leases = pool.leases();
    assert!(leases.len() <= 4, "more leases than the pool holds");
    assert!(
        leases
            .iter()
            .all(|l| first <= l.ip && l.ip <= last && l.duid.0.len() <= DUID_MAX),
        "a lease outside the pool: {leases:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::leases6::Pool6Conf;
    use crate::wire::MacAddr;

    fn pool(first: &str, last: &str) -> Pool6 {
        Pool6::new(Pool6Conf {
            bridge: "BR1".into(),
            first: first.parse().unwrap(),
            last: last.parse().unwrap(),
            subnet: "fd00:1::/64".parse().unwrap(),
            server: "fd00:1::1".parse().unwrap(),
            duid: Duid::ll(MacAddr([2, 0x76, 0, 0, 0, 1])),
            reserved: ["fd00:1::1".parse().unwrap()].into_iter().collect(),
            reservations: Default::default(),
        })
    }

    fn client(n: u8) -> Vec<u8> {
        vec![0, 3, 0, 1, 2, 0, 0, 0, 0, n]
    }

    fn msg(ty: MessageType, n: u8, server: Option<&Pool6>, addr: Option<&str>) -> Vec<u8> {
        let mut m = Message::new_with_id(ty, [1, 2, 3]);
        m.opts_mut().insert(DhcpOption::ClientId(client(n)));
        if let Some(p) = server {
            m.opts_mut()
                .insert(DhcpOption::ServerId(p.conf().duid.0.clone()));
        }
        let mut ia = DhcpOptions::new();
        if let Some(a) = addr {
            ia.insert(DhcpOption::IAAddr(IAAddr {
                addr: a.parse().unwrap(),
                preferred_life: 0,
                valid_life: 0,
                opts: DhcpOptions::new(),
            }));
        }
        if ty != MessageType::InformationRequest {
            m.opts_mut().insert(DhcpOption::IANA(IANA {
                id: 9,
                t1: 0,
                t2: 0,
                opts: ia,
            }));
        }
        m.to_vec().unwrap()
    }

    fn serve6(p: &mut Pool6, d: &[u8], now: u64) -> Option<Vec<u8>> {
        serve(p, d, now, None, None)
    }

    fn decode(b: &[u8]) -> Message {
        Message::from_bytes(b).unwrap()
    }

    /// The address (and valid lifetime) of the first IA_NA of `m`, or its status.
    fn ia_of(m: &Message) -> Result<(Ipv6Addr, u32), Status> {
        let Some(DhcpOption::IANA(ia)) = m.opts().get(OptionCode::IANA) else {
            panic!("no IA_NA in {m:?}");
        };
        match (
            ia.opts.get(OptionCode::IAAddr),
            ia.opts.get(OptionCode::StatusCode),
        ) {
            (Some(DhcpOption::IAAddr(a)), _) => Ok((a.addr, a.valid_life)),
            (_, Some(DhcpOption::StatusCode(s))) => Err(s.status),
            _ => panic!("empty IA_NA {ia:?}"),
        }
    }

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn solicit_request_renew_release() {
        let mut p = pool("fd00:1::100", "fd00:1::1ff");
        let adv = decode(&serve6(&mut p, &msg(MessageType::Solicit, 1, None, None), 100).unwrap());
        assert_eq!(adv.msg_type(), MessageType::Advertise);
        assert_eq!(adv.xid(), [1, 2, 3]);
        assert_eq!(ia_of(&adv), Ok((ip("fd00:1::100"), LEASE6_SECS)));
        assert!(matches!(
            adv.opts().get(OptionCode::DomainNameServers),
            Some(DhcpOption::DomainNameServers(d)) if d == &vec![ip("fd00:1::1")]
        ));
        assert_eq!(p.stats().leases, 0, "an Advertise is not a lease");
        // A Request without our server identifier is not for us.
        assert!(serve6(
            &mut p,
            &msg(MessageType::Request, 1, None, Some("fd00:1::100")),
            100
        )
        .is_none());
        let req = msg(MessageType::Request, 1, Some(&p), Some("fd00:1::100"));
        let rep = decode(&serve6(&mut p, &req, 100).unwrap());
        assert_eq!(rep.msg_type(), MessageType::Reply);
        assert_eq!(ia_of(&rep), Ok((ip("fd00:1::100"), LEASE6_SECS)));
        assert_eq!(p.leases()[0].duid.0, client(1));
        assert_eq!(p.leases()[0].iaid, 9);
        let ren = msg(MessageType::Renew, 1, Some(&p), Some("fd00:1::100"));
        let rep = decode(&serve6(&mut p, &ren, 2000).unwrap());
        assert_eq!(ia_of(&rep), Ok((ip("fd00:1::100"), LEASE6_SECS)));
        assert_eq!(p.leases()[0].expires, 2000 + u64::from(LEASE6_SECS));
        // Another client renewing client 1's address: NoBinding; rebinding: lifetime 0.
        let ren = msg(MessageType::Renew, 2, Some(&p), Some("fd00:1::100"));
        let rep = decode(&serve6(&mut p, &ren, 2000).unwrap());
        assert_eq!(ia_of(&rep), Err(Status::NoBinding));
        let reb = msg(MessageType::Rebind, 2, None, Some("fd00:1::100"));
        let rep = decode(&serve6(&mut p, &reb, 2000).unwrap());
        assert_eq!(ia_of(&rep), Ok((ip("fd00:1::100"), 0)));
        // Release by another DUID does nothing; by the holder frees the address.
        let rel = msg(MessageType::Release, 2, Some(&p), Some("fd00:1::100"));
        serve6(&mut p, &rel, 2000);
        assert_eq!(p.leases().len(), 1);
        let rel = msg(MessageType::Release, 1, Some(&p), Some("fd00:1::100"));
        assert_eq!(
            decode(&serve6(&mut p, &rel, 2000).unwrap()).msg_type(),
            MessageType::Reply
        );
        assert!(p.leases().is_empty());
    }

    #[test]
    fn rapid_commit_decline_and_information_request() {
        let mut p = pool("fd00:1::100", "fd00:1::101");
        let mut m = decode(&msg(MessageType::Solicit, 1, None, None));
        m.opts_mut().insert(DhcpOption::RapidCommit);
        let rep = decode(&serve6(&mut p, &m.to_vec().unwrap(), 100).unwrap());
        assert_eq!(rep.msg_type(), MessageType::Reply);
        assert_eq!(p.leases().len(), 1);
        let a = ia_of(&rep).unwrap().0;
        let dec = msg(MessageType::Decline, 1, Some(&p), Some(&a.to_string()));
        serve6(&mut p, &dec, 100).unwrap();
        assert_eq!(p.stats().declined, 1);
        assert_eq!(p.stats().quarantined, 1);
        let rep = decode(&serve6(&mut p, &msg(MessageType::Solicit, 2, None, None), 100).unwrap());
        assert_ne!(
            ia_of(&rep).unwrap().0,
            a,
            "a declined address is not offered"
        );
        let before = p.leases().len();
        let info = decode(
            &serve6(
                &mut p,
                &msg(MessageType::InformationRequest, 3, None, None),
                100,
            )
            .unwrap(),
        );
        assert_eq!(info.msg_type(), MessageType::Reply);
        assert!(info.opts().get(OptionCode::DomainNameServers).is_some());
        assert!(info.opts().get(OptionCode::IANA).is_none());
        assert_eq!(p.leases().len(), before);
    }

    #[test]
    fn exhausted_pool_advertises_no_addrs() {
        let mut p = pool("fd00:1::100", "fd00:1::100");
        let req = |p: &Pool6, n| msg(MessageType::Request, n, Some(p), None);
        let r = req(&p, 1);
        serve6(&mut p, &r, 100).unwrap();
        let r = req(&p, 2);
        let rep = decode(&serve6(&mut p, &r, 100).unwrap());
        assert_eq!(ia_of(&rep), Err(Status::NoAddrsAvail));
        let adv = decode(&serve6(&mut p, &msg(MessageType::Solicit, 2, None, None), 100).unwrap());
        assert!(matches!(
            adv.opts().get(OptionCode::StatusCode),
            Some(DhcpOption::StatusCode(s)) if s.status == Status::NoAddrsAvail
        ));
        assert_eq!(p.stats().exhausted, 2);
    }

    #[test]
    fn garbage_and_short_options_are_dropped() {
        let mut p = pool("fd00:1::100", "fd00:1::1ff");
        assert!(serve6(&mut p, &[1, 2, 3], 1).is_none());
        assert!(serve6(&mut p, &[], 1).is_none());
        // A Status Code option of length 0 (the codec would underflow), an
        // Authentication of 3 bytes, an option running past the end, a relay message.
        for opts in [
            &[0u8, 13, 0, 0][..],
            &[0, 11, 0, 3, 1, 2, 3],
            &[0, 1, 0, 9, 1],
            &[0, 9, 0, 0],
        ] {
            let mut d = vec![1, 0, 0, 1];
            d.extend_from_slice(opts);
            assert!(serve6(&mut p, &d, 1).is_none(), "{opts:?}");
        }
        assert!(serve6(&mut p, &[12, 0, 0, 1], 1).is_none(), "relay-forward");
        // A Solicit naming a server is dropped.
        let s = msg(
            MessageType::Solicit,
            1,
            Some(&p.conf().clone().into_pool()),
            None,
        );
        assert!(serve6(&mut p, &s, 1).is_none());
        for d in [
            &[1u8, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 1][..],
            &[5, 0, 0, 0, 0, 5, 0, 1, 0],
        ] {
            fuzz(d);
        }
    }

    #[test]
    fn fuzz_server_duid_matches_the_corpus() {
        let req = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/dhcp6/request"
        ))
        .unwrap();
        let m = Message::from_bytes(&req).unwrap();
        assert_eq!(server_id(&m), Some(&[0, 3, 0, 1, 2, 0x76, 0, 0, 0, 0][..]));
    }

    /// `m` with a Client FQDN option (flags S, `name` in wire form, partial).
    fn with_fqdn(m: &[u8], name: &str) -> Vec<u8> {
        let mut body = vec![1u8];
        for l in name.split('.') {
            body.push(l.len() as u8);
            body.extend_from_slice(l.as_bytes());
        }
        let mut v = m.to_vec();
        v.extend_from_slice(&OPT_CLIENT_FQDN.to_be_bytes());
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(&body);
        v
    }

    /// The Client FQDN option body of `m`.
    fn fqdn_of(m: &Message) -> Option<Vec<u8>> {
        m.opts().iter().find_map(|o| match o {
            DhcpOption::Unknown(u) if u16::from(u.code()) == OPT_CLIENT_FQDN => {
                Some(u.data().to_vec())
            }
            _ => None,
        })
    }

    #[test]
    fn parse_fqdn_forms() {
        let f = |b: &[u8]| parse_fqdn(b, "br1").and_then(|f| f.name);
        assert_eq!(f(b"\x01\x02c1"), Some("c1".into()), "partial");
        assert_eq!(
            f(b"\x01\x02C1\x03br1\x00"),
            Some("c1".into()),
            "the bridge's domain"
        );
        assert_eq!(f(b"\x00\x02c1\x03lab\x00"), Some("c1.lab".into()));
        assert_eq!(f(b"\x01"), None, "empty");
        assert_eq!(f(b"\x01\x05c1"), None, "label past the end");
        assert_eq!(f(b"\x01\xc0\x0c"), None, "compression");
        assert_eq!(f(b"\x01\x02c1\x00\x01"), None, "data after the root");
        assert_eq!(f(b"\x01\x03a b"), None, "not a DNS name");
        assert!(parse_fqdn(b"", "br1").is_none());
    }

    #[test]
    fn fqdn_registers_a_name_for_the_lease() {
        let mut p = pool("fd00:1::100", "fd00:1::1ff");
        let mac = Some(MacAddr([2, 0, 0, 0, 0, 7]));
        let req = with_fqdn(&msg(MessageType::Request, 1, Some(&p), None), "C1");
        let rep = decode(&serve(&mut p, &req, 100, mac, None).unwrap());
        let a = ia_of(&rep).unwrap().0;
        assert_eq!(p.names().get("c1"), Some(&a));
        assert_eq!(p.leases()[0].hostname.as_deref(), Some("c1"));
        assert_eq!(p.leases()[0].mac, mac);
        // The reply carries the name as registered, S=1.
        assert_eq!(fqdn_of(&rep).unwrap(), b"\x01\x02c1\x03br1\x00");
        // Another client asking for the same name: a lease without it (N=1).
        let req2 = with_fqdn(&msg(MessageType::Request, 2, Some(&p), None), "c1");
        let rep2 = decode(&serve(&mut p, &req2, 100, None, None).unwrap());
        assert_eq!(fqdn_of(&rep2).unwrap(), [4]);
        assert_eq!(p.names().len(), 1);
        // A Renew without the option keeps the name.
        let ren = msg(MessageType::Renew, 1, Some(&p), Some(&a.to_string()));
        serve(&mut p, &ren, 200, mac, None).unwrap();
        assert_eq!(p.names().get("c1"), Some(&a));
        // Nor does its MAC's DHCPv4 name take the lease's own away.
        serve(&mut p, &ren, 250, mac, Some("alpha".into())).unwrap();
        assert_eq!(p.lease_name(&Duid(client(1))).as_deref(), Some("c1"));
        // Released: the name goes; expired likewise.
        let rel = msg(MessageType::Release, 1, Some(&p), Some(&a.to_string()));
        serve(&mut p, &rel, 300, mac, None).unwrap();
        assert!(p.names().get("c1").is_none());
        let req3 = with_fqdn(&msg(MessageType::Request, 3, Some(&p), None), "c3");
        serve(&mut p, &req3, 300, None, None).unwrap();
        assert!(p.names().contains_key("c3"));
        p.prune(300 + u64::from(LEASE6_SECS));
        assert!(p.names().is_empty());
    }

    #[test]
    fn fallback_name_and_reservation_by_mac() {
        let mut c = pool("fd00:1::100", "fd00:1::1ff").conf().clone();
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        c.reservations.insert(mac, ip("fd00:1::9"));
        c.reserved.insert(ip("fd00:1::9"));
        let mut p = Pool6::new(c);
        // The reserved MAC gets its address whatever DUID it uses, and the name its
        // DHCPv4 lease registered.
        let req = msg(MessageType::Request, 1, Some(&p), Some("fd00:1::100"));
        let rep = decode(&serve(&mut p, &req, 100, Some(mac), Some("printer".into())).unwrap());
        assert_eq!(ia_of(&rep), Ok((ip("fd00:1::9"), LEASE6_SECS)));
        assert_eq!(p.names().get("printer"), Some(&ip("fd00:1::9")));
        assert!(fqdn_of(&rep).is_none(), "no FQDN asked, none answered");
        // Nobody else gets it, even asking for it.
        let req = msg(MessageType::Request, 2, Some(&p), Some("fd00:1::9"));
        let rep = decode(&serve(&mut p, &req, 100, None, None).unwrap());
        assert_eq!(ia_of(&rep), Ok((ip("fd00:1::100"), LEASE6_SECS)));
        let adv = decode(
            &serve(
                &mut p,
                &msg(MessageType::Solicit, 3, None, Some("fd00:1::9")),
                100,
                None,
                None,
            )
            .unwrap(),
        );
        assert_ne!(ia_of(&adv).unwrap().0, ip("fd00:1::9"));
    }

    #[test]
    fn a_later_dhcpv4_name_goes_to_the_unnamed_lease_of_its_mac() {
        let mut p = pool("fd00:1::100", "fd00:1::1ff");
        let (m1, m2) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let req = msg(MessageType::Request, 1, Some(&p), None);
        serve(&mut p, &req, 100, Some(m1), None).unwrap();
        let req = with_fqdn(&msg(MessageType::Request, 2, Some(&p), None), "named");
        serve(&mut p, &req, 100, Some(m2), None).unwrap();
        assert!(!p.inherit_name(m2, "other"), "a lease with a name keeps it");
        assert!(!p.inherit_name(m1, "named"), "a name another lease holds");
        assert!(p.inherit_name(m1, "alpha"));
        assert_eq!(p.names().get("alpha"), Some(&ip("fd00:1::100")));
        assert!(!p.inherit_name(m1, "beta"), "named now");
    }

    #[test]
    fn lease_changes_are_journaled() {
        use crate::tables::leases::LeaseChange;
        use crate::tables::leases6::End6;
        let mut p = pool("fd00:1::100", "fd00:1::1ff");
        let req = with_fqdn(&msg(MessageType::Request, 1, Some(&p), None), "c1");
        serve(&mut p, &req, 100, None, None).unwrap();
        let ren = msg(MessageType::Renew, 1, Some(&p), Some("fd00:1::100"));
        serve(&mut p, &ren, 200, None, None).unwrap();
        let rel = msg(MessageType::Release, 1, Some(&p), Some("fd00:1::100"));
        serve(&mut p, &rel, 300, None, None).unwrap();
        let req = msg(MessageType::Request, 2, Some(&p), None);
        serve(&mut p, &req, 300, None, None).unwrap();
        p.prune(300 + u64::from(LEASE6_SECS));
        let (c, lost) = p.drain_changes();
        let kinds: Vec<String> = c
            .iter()
            .map(|c| match c {
                LeaseChange::Granted6(l) => format!("+{}{:?}", l.ip, l.hostname),
                LeaseChange::Ended6(l, why) => format!("-{} {}", l.ip, why.as_str()),
                _ => "v4".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "+fd00:1::100Some(\"c1\")",
                "-fd00:1::100 released",
                "+fd00:1::100None",
                "-fd00:1::100 expired"
            ],
            "the renewal is no change"
        );
        assert_eq!(lost, 0);
        assert!(matches!(End6::Declined.as_str(), "declined"));
    }

    #[test]
    fn fqdn_corpus_inputs_reach_the_name_registration() {
        let read = |n: &str| {
            std::fs::read(format!(
                "{}/../fuzz/corpus/dhcp6/{n}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let mut c = pool("fd00:10::100", "fd00:10::103").conf().clone();
        c.bridge = "br0".into();
        c.duid = Duid::ll(MacAddr([2, 0x76, 0, 0, 0, 0]));
        let mut p = Pool6::new(c);
        serve(&mut p, &read("request_fqdn"), 100, None, None).unwrap();
        assert!(p.names().contains_key("c1"), "{:?}", p.names());
        // The same client (DUID) renames itself: the old name goes.
        serve(&mut p, &read("solicit_rapid_fqdn"), 100, None, None).unwrap();
        assert!(p.names().contains_key("web"), "{:?}", p.names());
        assert!(!p.names().contains_key("c1"));
        // Malformed names are ignored: the lease keeps its name.
        serve(&mut p, &read("request_fqdn_bad"), 100, None, None);
        assert_eq!(p.names().keys().collect::<Vec<_>>(), ["web"]);
    }

    trait IntoPool {
        fn into_pool(self) -> Pool6;
    }
    impl IntoPool for Pool6Conf {
        fn into_pool(self) -> Pool6 {
            Pool6::new(self)
        }
    }
}
