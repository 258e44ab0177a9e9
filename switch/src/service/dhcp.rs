//! The DHCPv4 server of a bridge (RFC 2131, options RFC 2132), on the `dhcproto` codec.
//!
//! Protocol logic over one bridge's [`Pool`] (`tables::leases`), which holds the leases,
//! offers and quarantined addresses and keeps them bounded. The service thread calls
//! [`serve`] with the pool locked (a decode, a few table operations, an encode; no I/O):
//! DHCP never takes the control mutex, and the db is written in batches by the daemon.
//! Addresses never handed out: the gateway, names registered with add-host/pipework,
//! addresses recorded on ports (pipework's `ip`), addresses held with alloc-address
//! (`BridgeConf::addresses_in_use`), and addresses leased to other clients
//! and not yet expired. An exhausted pool gets no offer (counted); existing leases are
//! kept. DHCPDECLINE and DHCPRELEASE, which end a lease, count only from the frame's
//! own source MAC, for the lease that MAC holds.

use crate::tables::leases::{Pool, Refused};
use crate::wire::MacAddr;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::net::Ipv4Addr;

pub use crate::tables::leases::LEASE_SECS;

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

fn hostname_of(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => {
            let h = h.trim().to_ascii_lowercase();
            crate::config::model::valid_dns_name(&h).then_some(h)
        }
        _ => None,
    }
}

/// The address a DHCPREQUEST asks for: option 50, else ciaddr (renewing, rebinding).
fn requested_ip(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ if !m.ciaddr().is_unspecified() => Some(m.ciaddr()),
        _ => None,
    }
}

fn reply(pool: &Pool, req: &Message, ty: MessageType, yiaddr: Ipv4Addr) -> Option<Vec<u8>> {
    let c = pool.conf();
    let gw = c.server;
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
        o.insert(DhcpOption::SubnetMask(c.subnet.netmask()));
        o.insert(DhcpOption::Router(vec![gw]));
        o.insert(DhcpOption::DomainNameServer(vec![gw]));
        o.insert(DhcpOption::InterfaceMtu(c.mtu.min(0xffff) as u16));
        // The bridge's DNS domain: `web.br1` resolves like `web`.
        o.insert(DhcpOption::DomainName(c.bridge.to_ascii_lowercase()));
        if ty != MessageType::Ack || !yiaddr.is_unspecified() {
            o.insert(DhcpOption::AddressLeaseTime(LEASE_SECS));
            o.insert(DhcpOption::Renewal(LEASE_SECS / 2));
            o.insert(DhcpOption::Rebinding(LEASE_SECS / 8 * 7));
        }
    }
    r.to_vec().ok()
}

/// Answer one DHCP message (the UDP payload of a frame from Ethernet source `src`) from
/// `pool`, updating it. `None`: no answer (garbage, another server's, a release or
/// decline, an exhausted pool).
pub fn serve(pool: &mut Pool, data: &[u8], src: MacAddr, now: u64) -> Option<Outcome> {
    if !vswitch_proto::dhcp_options_sane(data) {
        return None;
    }
    let m = Message::from_bytes(data).ok()?;
    // dhcproto's chaddr() slices its 16-byte field by the header's hlen and panics
    // when hlen > 16 (found by the fuzzer): only Ethernet (6) is served at all.
    if m.opcode() != Opcode::BootRequest || m.hlen() != 6 {
        return None;
    }
    let mac = MacAddr::from_slice(m.chaddr())?;
    let ty = m.opts().msg_type()?;
    let server_id = match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    };
    let ours = server_id.is_none_or(|s| s == pool.conf().server);
    let unicast = (!m.ciaddr().is_unspecified()).then_some(m.ciaddr());
    let broadcast_or_ciaddr = |reply: Vec<u8>| Outcome { reply, unicast };
    match ty {
        MessageType::Discover => {
            let ip = pool.offer(mac, requested_ip(&m), now).ok()?;
            reply(pool, &m, MessageType::Offer, ip).map(broadcast_or_ciaddr)
        }
        MessageType::Request => {
            if !ours {
                // The client chose another server.
                pool.forget_offer(mac);
                return None;
            }
            let want = requested_ip(&m)?;
            match pool.request(mac, want, hostname_of(&m), now) {
                Ok(()) => reply(pool, &m, MessageType::Ack, want).map(broadcast_or_ciaddr),
                Err(Refused::NotFree | Refused::Capped) => {
                    reply(pool, &m, MessageType::Nak, Ipv4Addr::UNSPECIFIED).map(|reply| Outcome {
                        reply,
                        unicast: None,
                    })
                }
                Err(Refused::BadClient) => None,
            }
        }
        MessageType::Release => {
            if ours && src == mac {
                pool.release(mac, m.ciaddr(), now);
            }
            None
        }
        MessageType::Decline => {
            // RFC 2131 §4.3.3: the declined address is in option 50.
            match m.opts().get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) if ours && src == mac => {
                    pool.decline(mac, *ip, now);
                }
                _ => pool.ignore_decline(),
            }
            None
        }
        MessageType::Inform => {
            reply(pool, &m, MessageType::Ack, Ipv4Addr::UNSPECIFIED).map(broadcast_or_ciaddr)
        }
        _ => None,
    }
}

/// Whether the client asked for a broadcast reply.
pub fn wants_broadcast(f: Flags) -> bool {
    f.broadcast()
}

/// Fuzz entry point: `data` is one DHCP message (the UDP payload) sent to a bridge with
/// a small pool, twice (a fresh lease, then the same message against it), from the MAC
/// in its chaddr field. Must never panic, and never leases outside the pool.
pub fn fuzz(data: &[u8]) {
    use crate::config::Model;
    use vswitch_proto::AddBr;
    let Some(conf) = Model::default()
        .check_add_bridge(&AddBr {
            name: "br0".into(),
            subnet: Some("10.0.0.0/24".into()),
            gateway: Some("10.0.0.1".into()),
            dhcp: Some("10.0.0.100-10.0.0.103".into()),
            ..Default::default()
        })
        .ok()
        .and_then(|b| b.dhcp_pool())
    else {
        return;
    };
    let mut pool = Pool::new(conf);
    // chaddr is at offset 28 of the BOOTP header.
    let src = data
        .get(28..34)
        .and_then(MacAddr::from_slice)
        .unwrap_or_default();
    for now in [1000, 1_000_000] {
        let _ = serve(&mut pool, data, src, now);
    }
    let leases = pool.leases();
    assert!(leases.len() <= 4, "more leases than the pool holds");
    assert!(
        leases.iter().all(|l| !l.mac.is_zero()
            && Ipv4Addr::new(10, 0, 0, 100) <= l.ip
            && l.ip <= Ipv4Addr::new(10, 0, 0, 103)),
        "a lease outside the pool or with a zero MAC: {leases:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Model;
    use vswitch_proto::AddBr;

    fn pool_of(m: &Model) -> Pool {
        Pool::new(m.bridges[0].dhcp_pool().unwrap())
    }

    fn model(range: &str) -> Model {
        let mut m = Model::default();
        let b = m
            .check_add_bridge(&AddBr {
                name: "br1".into(),
                subnet: Some("10.0.0.0/24".into()),
                gateway: Some("10.0.0.1".into()),
                dhcp: Some(range.into()),
                ..Default::default()
            })
            .unwrap();
        m.insert_bridge(b);
        m
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn msg(ty: MessageType, n: u8, requested: Option<Ipv4Addr>) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(42)
            .set_chaddr(&mac(n).0);
        m.opts_mut().insert(DhcpOption::MessageType(ty));
        m.opts_mut()
            .insert(DhcpOption::Hostname(format!("Host{n}")));
        if let Some(r) = requested {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(r));
        }
        m.to_vec().unwrap()
    }

    /// `msg` from client `n`'s own MAC.
    fn send(
        p: &mut Pool,
        ty: MessageType,
        n: u8,
        req: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Outcome> {
        serve(p, &msg(ty, n, req), mac(n), now)
    }

    fn decode(o: &Outcome) -> Message {
        Message::from_bytes(&o.reply).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn dora_then_restart_keeps_address() {
        let mut p = pool_of(&model(""));
        let offer = decode(&send(&mut p, MessageType::Discover, 1, None, 100).unwrap());
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        // The gateway .1 is skipped.
        assert_eq!(offer.yiaddr(), ip("10.0.0.2"));
        assert!(p.leases().is_empty(), "an offer is not a lease");
        let ack =
            decode(&send(&mut p, MessageType::Request, 1, Some(offer.yiaddr()), 100).unwrap());
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(p.leases()[0].hostname.as_deref(), Some("host1"));
        match ack.opts().get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => assert_eq!(r, &vec![ip("10.0.0.1")]),
            other => panic!("no router option: {other:?}"),
        }
        match ack.opts().get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) => assert_eq!(d, "br1"),
            other => panic!("no domain option: {other:?}"),
        }
        // Same client later: same address.
        let o = send(&mut p, MessageType::Discover, 1, None, 2000).unwrap();
        assert_eq!(decode(&o).yiaddr(), ip("10.0.0.2"));
        // Another client gets another address.
        let o = send(&mut p, MessageType::Discover, 2, None, 2000).unwrap();
        assert_eq!(decode(&o).yiaddr(), ip("10.0.0.3"));
    }

    #[test]
    fn nak_for_taken_address_and_exhaustion() {
        let mut p = pool_of(&model("10.0.0.10-10.0.0.11"));
        for n in [1, 2] {
            let a = decode(&send(&mut p, MessageType::Discover, n, None, 100).unwrap()).yiaddr();
            send(&mut p, MessageType::Request, n, Some(a), 100).unwrap();
        }
        assert_eq!(p.leases().len(), 2);
        assert!(send(&mut p, MessageType::Discover, 3, None, 100).is_none());
        let o = send(&mut p, MessageType::Request, 3, Some(ip("10.0.0.10")), 100).unwrap();
        assert_eq!(decode(&o).opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(p.leases().len(), 2, "existing leases untouched");
        // Release (from the client itself) frees the address for the next client.
        send(&mut p, MessageType::Release, 1, None, 100);
        let o = send(&mut p, MessageType::Discover, 3, None, 100).unwrap();
        assert_eq!(decode(&o).yiaddr(), ip("10.0.0.10"));
    }

    #[test]
    fn reservation_wins() {
        let mut m = model("10.0.0.100-10.0.0.110");
        m.reserve("br1", "02:00:00:00:00:07", "10.0.0.50", Some("seven"))
            .unwrap();
        let mut p = pool_of(&m);
        let o = send(&mut p, MessageType::Discover, 7, None, 100).unwrap();
        assert_eq!(decode(&o).yiaddr(), ip("10.0.0.50"));
        let ty = |o: Option<Outcome>| decode(&o.unwrap()).opts().msg_type();
        let r = send(&mut p, MessageType::Request, 7, Some(ip("10.0.0.50")), 100);
        assert_eq!(ty(r), Some(MessageType::Ack));
        // Nobody else gets it, and the reserved client gets nothing else.
        let r = send(&mut p, MessageType::Request, 8, Some(ip("10.0.0.50")), 100);
        assert_eq!(ty(r), Some(MessageType::Nak));
        let r = send(&mut p, MessageType::Request, 7, Some(ip("10.0.0.100")), 100);
        assert_eq!(ty(r), Some(MessageType::Nak));
        assert!(m
            .reserve("br1", "02:00:00:00:00:08", "10.0.0.50", None)
            .is_err());
        assert!(m.reserve("br1", "zz", "10.0.0.51", None).is_err());
    }

    #[test]
    fn decline_quarantines_and_inform_leases_nothing() {
        let mut p = pool_of(&model("10.0.0.10-10.0.0.11"));
        let a = decode(&send(&mut p, MessageType::Discover, 1, None, 100).unwrap()).yiaddr();
        send(&mut p, MessageType::Request, 1, Some(a), 100).unwrap();
        assert_eq!(a, ip("10.0.0.10"));
        assert!(send(&mut p, MessageType::Decline, 1, Some(a), 100).is_none());
        assert_eq!(p.stats().declined, 1);
        // The declined address is not offered to anyone while quarantined.
        let o = send(&mut p, MessageType::Discover, 2, None, 100).unwrap();
        assert_eq!(decode(&o).yiaddr(), ip("10.0.0.11"));
        let before = p.leases().len();
        let ack = decode(&send(&mut p, MessageType::Inform, 3, None, 100).unwrap());
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert!(ack.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert_eq!(p.leases().len(), before);
    }

    #[test]
    fn decline_and_release_count_only_from_the_holder() {
        let mut p = pool_of(&model("10.0.0.10-10.0.0.19"));
        let a = decode(&send(&mut p, MessageType::Discover, 1, None, 100).unwrap()).yiaddr();
        send(&mut p, MessageType::Request, 1, Some(a), 100).unwrap();
        // Another client declines or releases client 1's address; client 1's chaddr
        // in a frame from another MAC; outside the subnet; no address at all.
        assert!(send(&mut p, MessageType::Decline, 2, Some(a), 100).is_none());
        assert!(serve(&mut p, &msg(MessageType::Decline, 1, Some(a)), mac(2), 100).is_none());
        assert!(serve(&mut p, &msg(MessageType::Release, 1, None), mac(2), 100).is_none());
        send(&mut p, MessageType::Decline, 1, Some(ip("192.0.2.10")), 100);
        send(&mut p, MessageType::Decline, 1, None, 100);
        send(&mut p, MessageType::Release, 2, None, 100);
        assert_eq!(p.stats().declines_ignored, 4);
        assert_eq!(p.stats().declined, 0);
        let l = p.leases();
        assert_eq!((l.len(), l[0].mac, l[0].ip), (1, mac(1), a));
        // Client 1 renews (a unicast REQUEST from its address: ciaddr, no option 50).
        let mut m = Message::from_bytes(&msg(MessageType::Request, 1, None)).unwrap();
        m.set_ciaddr(a);
        let o = serve(&mut p, &m.to_vec().unwrap(), mac(1), 200).unwrap();
        assert_eq!(o.unicast, Some(a));
        assert_eq!(decode(&o).opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(decode(&o).yiaddr(), a);
    }

    #[test]
    fn zero_mac_gets_nothing() {
        let mut p = pool_of(&model("10.0.0.10-10.0.0.19"));
        let mut m =
            Message::from_bytes(&msg(MessageType::Request, 0, Some(ip("10.0.0.12")))).unwrap();
        m.set_chaddr(&[0; 6]);
        assert!(serve(&mut p, &m.to_vec().unwrap(), MacAddr::default(), 100).is_none());
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        assert!(serve(&mut p, &m.to_vec().unwrap(), MacAddr::default(), 100).is_none());
        assert!(p.leases().is_empty());
    }

    #[test]
    fn garbage_is_ignored() {
        let mut p = pool_of(&model(""));
        assert!(serve(&mut p, &[1, 2, 3], mac(1), 1).is_none());
    }
}
