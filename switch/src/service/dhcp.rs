//! The DHCPv4 server of a bridge (RFC 2131, options RFC 2132), on the `dhcproto` codec.
//!
//! Pure logic over the bridge's configuration and leases; the control state calls it
//! under its lock and persists the leases it changes. Addresses never handed out: the
//! gateway, names registered with add-host/pipework, addresses recorded on ports
//! (pipework's `ip`), addresses held with alloc-address, and addresses leased to other clients and not yet expired.
//! An exhausted pool gets no offer (counted by the caller); existing leases are kept.

use crate::config::{BridgeConf, Lease};
use crate::wire::MacAddr;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Lease time handed out, seconds.
pub const LEASE_SECS: u32 = 3600;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the server answers, and how to deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reply: Vec<u8>,
    /// Unicast to this address (a renewing client); `None`: broadcast.
    pub unicast: Option<Ipv4Addr>,
}

/// Result of [`serve`]: the reply (if any), and whether leases changed.
#[derive(Debug, Default)]
pub struct Served {
    pub outcome: Option<Outcome>,
    pub changed: bool,
    pub exhausted: bool,
}

/// Addresses of `b` that DHCP must not hand out, whoever asks.
pub fn reserved(b: &BridgeConf) -> HashSet<Ipv4Addr> {
    let mut r: HashSet<Ipv4Addr> = b.hosts.iter().map(|h| h.ip).collect();
    r.extend(b.reservations.iter().map(|x| x.ip));
    r.extend(b.allocations.iter().map(|x| x.ip));
    r.extend(b.gateway);
    for p in &b.ports {
        if let Some(ip) = p.external_ids.get("ip") {
            let a = ip.split('/').next().unwrap_or(ip);
            if let Ok(a) = a.parse() {
                r.insert(a);
            }
        }
    }
    r
}

fn free_for(
    b: &BridgeConf,
    reserved: &HashSet<Ipv4Addr>,
    ip: Ipv4Addr,
    mac: MacAddr,
    now: u64,
) -> bool {
    let Some(range) = b.dhcp else { return false };
    if let Some(r) = b.reservations.iter().find(|r| r.mac == mac) {
        // A reserved client gets its address and nothing else, in range or not.
        return r.ip == ip;
    }
    if ip < range.first || ip > range.last || reserved.contains(&ip) {
        return false;
    }
    !b.leases
        .iter()
        .any(|l| l.ip == ip && l.mac != mac && l.expires > now)
}

fn pick(
    b: &BridgeConf,
    reserved: &HashSet<Ipv4Addr>,
    mac: MacAddr,
    wanted: Option<Ipv4Addr>,
    now: u64,
) -> Option<Ipv4Addr> {
    if let Some(r) = b.reservations.iter().find(|r| r.mac == mac) {
        return Some(r.ip);
    }
    if let Some(l) = b.leases.iter().find(|l| l.mac == mac) {
        if free_for(b, reserved, l.ip, mac, now) {
            return Some(l.ip);
        }
    }
    if let Some(w) = wanted.filter(|w| free_for(b, reserved, *w, mac, now)) {
        return Some(w);
    }
    let range = b.dhcp?;
    (u32::from(range.first)..=u32::from(range.last))
        .map(Ipv4Addr::from)
        .find(|ip| free_for(b, reserved, *ip, mac, now))
}

fn hostname_of(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => {
            let h = h.trim().to_ascii_lowercase();
            crate::config::model::valid_dns_name(&h).then_some(h)
        }
        _ => None,
    }
}

fn requested_ip(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ if !m.ciaddr().is_unspecified() => Some(m.ciaddr()),
        _ => None,
    }
}

fn reply(b: &BridgeConf, req: &Message, ty: MessageType, yiaddr: Ipv4Addr) -> Option<Vec<u8>> {
    let gw = b.gateway?;
    let net = b.subnet?;
    let mut r = Message::default();
    r.set_opcode(Opcode::BootReply)
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr())
        .set_chaddr(req.chaddr())
        .set_htype(req.htype())
        .set_yiaddr(yiaddr)
        .set_ciaddr(req.ciaddr());
    let o = r.opts_mut();
    o.insert(DhcpOption::MessageType(ty));
    o.insert(DhcpOption::ServerIdentifier(gw));
    if ty != MessageType::Nak {
        o.insert(DhcpOption::SubnetMask(net.netmask()));
        o.insert(DhcpOption::Router(vec![gw]));
        o.insert(DhcpOption::DomainNameServer(vec![gw]));
        o.insert(DhcpOption::InterfaceMtu(b.mtu.min(0xffff) as u16));
        // The bridge's DNS domain: `web.br1` resolves like `web`.
        o.insert(DhcpOption::DomainName(b.name.to_ascii_lowercase()));
        if ty != MessageType::Ack || !yiaddr.is_unspecified() {
            o.insert(DhcpOption::AddressLeaseTime(LEASE_SECS));
            o.insert(DhcpOption::Renewal(LEASE_SECS / 2));
            o.insert(DhcpOption::Rebinding(LEASE_SECS / 8 * 7));
        }
    }
    r.to_vec().ok()
}

/// Answer one DHCP message (the UDP payload) for bridge `b`, updating its leases.
pub fn serve(b: &mut BridgeConf, data: &[u8], now: u64) -> Served {
    let mut out = Served::default();
    if !vswitch_proto::dhcp_options_sane(data) {
        return out;
    }
    let Ok(m) = Message::from_bytes(data) else {
        return out;
    };
    if m.opcode() != Opcode::BootRequest || b.dhcp.is_none() {
        return out;
    }
    // dhcproto's chaddr() slices its 16-byte field by the header's hlen and panics
    // when hlen > 16 (found by the fuzzer): only Ethernet (6) is served at all.
    if m.hlen() != 6 {
        return out;
    }
    let Some(mac) = MacAddr::from_slice(m.chaddr()) else {
        return out;
    };
    let Some(ty) = m.opts().msg_type() else {
        return out;
    };
    let reserved = reserved(b);
    let gw = b.gateway;
    let server_id = match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    };
    let unicast = (!m.ciaddr().is_unspecified()).then_some(m.ciaddr());
    let broadcast_or_ciaddr = |reply: Vec<u8>| Outcome { reply, unicast };
    match ty {
        MessageType::Discover => match pick(b, &reserved, mac, requested_ip(&m), now) {
            Some(ip) => out.outcome = reply(b, &m, MessageType::Offer, ip).map(broadcast_or_ciaddr),
            None => out.exhausted = true,
        },
        MessageType::Request => {
            if server_id.is_some() && server_id != gw {
                // The client chose another server.
                return out;
            }
            let Some(want) = requested_ip(&m) else {
                return out;
            };
            if free_for(b, &reserved, want, mac, now) {
                let hostname = hostname_of(&m);
                b.leases.retain(|l| l.mac != mac && l.ip != want);
                b.leases.push(Lease {
                    mac,
                    ip: want,
                    hostname,
                    expires: now + u64::from(LEASE_SECS),
                });
                out.changed = true;
                out.outcome = reply(b, &m, MessageType::Ack, want).map(broadcast_or_ciaddr);
            } else {
                out.outcome =
                    reply(b, &m, MessageType::Nak, Ipv4Addr::UNSPECIFIED).map(|reply| Outcome {
                        reply,
                        unicast: None,
                    });
            }
        }
        MessageType::Release => {
            let before = b.leases.len();
            b.leases.retain(|l| l.mac != mac);
            out.changed = b.leases.len() != before;
        }
        MessageType::Decline => {
            if let Some(ip) = requested_ip(&m) {
                // Someone else answers on it: quarantine the address for a lease time.
                b.leases.retain(|l| l.ip != ip);
                b.leases.push(Lease {
                    mac: MacAddr::default(),
                    ip,
                    hostname: None,
                    expires: now + u64::from(LEASE_SECS),
                });
                out.changed = true;
            }
        }
        MessageType::Inform => {
            out.outcome =
                reply(b, &m, MessageType::Ack, Ipv4Addr::UNSPECIFIED).map(broadcast_or_ciaddr);
        }
        _ => {}
    }
    out
}

/// Whether the client asked for a broadcast reply.
pub fn wants_broadcast(f: Flags) -> bool {
    f.broadcast()
}

/// Fuzz entry point: `data` is one DHCP message (the UDP payload) sent to a bridge with
/// a small pool, twice (a fresh lease, then the same message against it). Must never
/// panic, and never leases outside the pool.
pub fn fuzz(data: &[u8]) {
    use crate::config::Model;
    use vswitch_proto::AddBr;
    let Ok(mut b) = Model::default().check_add_bridge(&AddBr {
        name: "br0".into(),
        subnet: Some("10.0.0.0/24".into()),
        gateway: Some("10.0.0.1".into()),
        dhcp: Some("10.0.0.100-10.0.0.103".into()),
        ..Default::default()
    }) else {
        return;
    };
    for now in [1000, 1_000_000] {
        let _ = serve(&mut b, data, now);
    }
    assert!(b.leases.len() <= 4, "more leases than the pool holds");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Model;
    use vswitch_proto::AddBr;

    fn bridge(range: &str) -> BridgeConf {
        Model::default()
            .check_add_bridge(&AddBr {
                name: "br1".into(),
                subnet: Some("10.0.0.0/24".into()),
                gateway: Some("10.0.0.1".into()),
                dhcp: Some(range.into()),
                ..Default::default()
            })
            .unwrap()
    }

    fn msg(ty: MessageType, mac: u8, requested: Option<Ipv4Addr>) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(42)
            .set_chaddr(&[2, 0, 0, 0, 0, mac]);
        m.opts_mut().insert(DhcpOption::MessageType(ty));
        m.opts_mut()
            .insert(DhcpOption::Hostname(format!("Host{mac}")));
        if let Some(r) = requested {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(r));
        }
        m.to_vec().unwrap()
    }

    fn decode(o: &Outcome) -> Message {
        Message::from_bytes(&o.reply).unwrap()
    }

    #[test]
    fn dora_then_restart_keeps_address() {
        let mut b = bridge("");
        let s = serve(&mut b, &msg(MessageType::Discover, 1, None), 100);
        let offer = decode(&s.outcome.unwrap());
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        // The gateway .1 is skipped.
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(!s.changed, "an offer is not a lease");
        let s = serve(
            &mut b,
            &msg(MessageType::Request, 1, Some(offer.yiaddr())),
            100,
        );
        let ack = decode(&s.outcome.unwrap());
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert!(s.changed);
        assert_eq!(b.leases[0].hostname.as_deref(), Some("host1"));
        match ack.opts().get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => assert_eq!(r, &vec![Ipv4Addr::new(10, 0, 0, 1)]),
            other => panic!("no router option: {other:?}"),
        }
        match ack.opts().get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) => assert_eq!(d, "br1"),
            other => panic!("no domain option: {other:?}"),
        }
        // Same client later (after a restart the leases come from the db): same address.
        let s = serve(&mut b, &msg(MessageType::Discover, 1, None), 5000);
        assert_eq!(
            decode(&s.outcome.unwrap()).yiaddr(),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        // Another client gets another address.
        let s = serve(&mut b, &msg(MessageType::Discover, 2, None), 100);
        assert_eq!(
            decode(&s.outcome.unwrap()).yiaddr(),
            Ipv4Addr::new(10, 0, 0, 3)
        );
    }

    #[test]
    fn nak_for_taken_address_and_exhaustion() {
        let mut b = bridge("10.0.0.10-10.0.0.11");
        for mac in [1, 2] {
            let s = serve(&mut b, &msg(MessageType::Discover, mac, None), 100);
            let ip = decode(&s.outcome.unwrap()).yiaddr();
            serve(&mut b, &msg(MessageType::Request, mac, Some(ip)), 100);
        }
        assert_eq!(b.leases.len(), 2);
        let s = serve(&mut b, &msg(MessageType::Discover, 3, None), 100);
        assert!(s.outcome.is_none() && s.exhausted);
        let s = serve(
            &mut b,
            &msg(MessageType::Request, 3, Some(Ipv4Addr::new(10, 0, 0, 10))),
            100,
        );
        assert_eq!(
            decode(&s.outcome.unwrap()).opts().msg_type(),
            Some(MessageType::Nak)
        );
        assert_eq!(b.leases.len(), 2, "existing leases untouched");
        // Release frees the address for the next client.
        serve(&mut b, &msg(MessageType::Release, 1, None), 100);
        let s = serve(&mut b, &msg(MessageType::Discover, 3, None), 100);
        assert_eq!(
            decode(&s.outcome.unwrap()).yiaddr(),
            Ipv4Addr::new(10, 0, 0, 10)
        );
    }

    #[test]
    fn reservation_wins() {
        let mut b = bridge("10.0.0.100-10.0.0.110");
        let mut m = Model::default();
        m.bridges.push(b.clone());
        m.reserve("br1", "02:00:00:00:00:07", "10.0.0.50", Some("seven"))
            .unwrap();
        b = m.bridges[0].clone();
        let s = serve(&mut b, &msg(MessageType::Discover, 7, None), 100);
        assert_eq!(
            decode(&s.outcome.unwrap()).yiaddr(),
            Ipv4Addr::new(10, 0, 0, 50)
        );
        let s = serve(
            &mut b,
            &msg(MessageType::Request, 7, Some(Ipv4Addr::new(10, 0, 0, 50))),
            100,
        );
        assert_eq!(
            decode(&s.outcome.unwrap()).opts().msg_type(),
            Some(MessageType::Ack)
        );
        // Nobody else gets it, and the reserved client gets nothing else.
        let s = serve(
            &mut b,
            &msg(MessageType::Request, 8, Some(Ipv4Addr::new(10, 0, 0, 50))),
            100,
        );
        assert_eq!(
            decode(&s.outcome.unwrap()).opts().msg_type(),
            Some(MessageType::Nak)
        );
        let s = serve(
            &mut b,
            &msg(MessageType::Request, 7, Some(Ipv4Addr::new(10, 0, 0, 100))),
            100,
        );
        assert_eq!(
            decode(&s.outcome.unwrap()).opts().msg_type(),
            Some(MessageType::Nak)
        );
        assert!(m
            .reserve("br1", "02:00:00:00:00:08", "10.0.0.50", None)
            .is_err());
        assert!(m.reserve("br1", "zz", "10.0.0.51", None).is_err());
    }

    #[test]
    fn decline_quarantines_and_inform_leases_nothing() {
        let mut b = bridge("10.0.0.10-10.0.0.11");
        let s = serve(
            &mut b,
            &msg(MessageType::Decline, 1, Some(Ipv4Addr::new(10, 0, 0, 10))),
            100,
        );
        assert!(s.changed && s.outcome.is_none());
        // The declined address is not offered to anyone while quarantined.
        let s = serve(&mut b, &msg(MessageType::Discover, 2, None), 100);
        assert_eq!(
            decode(&s.outcome.unwrap()).yiaddr(),
            Ipv4Addr::new(10, 0, 0, 11)
        );
        let before = b.leases.len();
        let s = serve(&mut b, &msg(MessageType::Inform, 3, None), 100);
        let ack = decode(&s.outcome.unwrap());
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert!(ack.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert_eq!(b.leases.len(), before);
    }

    #[test]
    fn garbage_is_ignored() {
        let mut b = bridge("");
        assert!(serve(&mut b, &[1, 2, 3], 1).outcome.is_none());
    }
}
