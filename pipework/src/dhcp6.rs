//! A one-shot DHCPv6 client (RFC 8415) run by pipework from inside the guest's
//! namespace, beside the DHCPv4 one (`dhcp`), for bridges that serve DHCPv6: a Solicit
//! with Rapid Commit (answered by a Reply, vswitchd's way) or, if the server answers
//! with an Advertise, a Request; on a UDP socket bound to the guest interface, port
//! 546, to All_DHCP_Relay_Agents_and_Servers (`ff02::1:2`), retried with backoff until
//! a deadline. The client is DUID-LL of the interface's MAC; the name goes in a Client
//! FQDN option (RFC 4704) so the server registers it (AAAA).
//!
//! The guest interface has just come up: its link-local address may still be going
//! through duplicate address detection, and a message cannot leave before it is
//! usable (sending fails): such a failure is retried like a lost answer.

use crate::netns::NetNs;
use anyhow::{bail, Context, Result};
use dhcproto::v6::{DhcpOption, IAAddr, Message, MessageType, OptionCode, UnknownOption, IANA};
use dhcproto::{Decodable, Encodable};
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn6,
};
use std::ffi::OsString;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const CLIENT_PORT: u16 = 546;
const SERVER_PORT: u16 = 547;
const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6 {
    pub ip: Ipv6Addr,
    pub valid_secs: u32,
}

/// A UDP socket on port 546 bound to `ifname`, created inside `ns`, and the
/// interface's index there.
fn client_socket(ns: &NetNs, ifname: &str) -> Result<(UdpSocket, u32)> {
    let ifname = ifname.to_string();
    ns.run(move || {
        let index = nix::net::if_::if_nametoindex(ifname.as_str())
            .with_context(|| format!("no interface {ifname}"))?;
        let fd = socket(
            AddressFamily::Inet6,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Udp,
        )
        .context("open a UDP/IPv6 socket")?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(&ifname))
            .with_context(|| format!("bind the DHCPv6 socket to {ifname}"))?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, CLIENT_PORT, 0, 0)),
        )
        .context("bind UDP port 546")?;
        Ok((UdpSocket::from(fd), index))
    })
}

/// DUID-LL (type 3, Ethernet) of `mac`.
fn duid(mac: [u8; 6]) -> Vec<u8> {
    let mut v = vec![0, 3, 0, 1];
    v.extend_from_slice(&mac);
    v
}

/// A Client FQDN option body: flags S=1 (the server updates AAAA), `name` partial.
fn fqdn(name: &str) -> Vec<u8> {
    let mut b = vec![1u8];
    for l in name.split('.') {
        let l = &l.as_bytes()[..l.len().min(63)];
        b.push(l.len() as u8);
        b.extend_from_slice(l);
    }
    b
}

fn xid() -> [u8; 3] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let x = (t ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = x.to_be_bytes();
    [b[0], b[1], b[2]]
}

/// A Solicit (with Rapid Commit) or a Request (naming `server` and `addr`).
fn request(
    ty: MessageType,
    x: [u8; 3],
    mac: [u8; 6],
    hostname: Option<&str>,
    server: Option<(&[u8], Ipv6Addr)>,
) -> Message {
    let mut m = Message::new_with_id(ty, x);
    let o = m.opts_mut();
    o.insert(DhcpOption::ClientId(duid(mac)));
    o.insert(DhcpOption::ElapsedTime(0));
    let mut ia = dhcproto::v6::DhcpOptions::new();
    if let Some((sid, addr)) = server {
        o.insert(DhcpOption::ServerId(sid.to_vec()));
        ia.insert(DhcpOption::IAAddr(IAAddr {
            addr,
            preferred_life: 0,
            valid_life: 0,
            opts: dhcproto::v6::DhcpOptions::new(),
        }));
    } else {
        o.insert(DhcpOption::RapidCommit);
    }
    o.insert(DhcpOption::IANA(IANA {
        id: u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]),
        t1: 0,
        t2: 0,
        opts: ia,
    }));
    if let Some(h) = hostname {
        o.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::ClientFqdn,
            fqdn(h),
        )));
    }
    m
}

/// The address (and valid lifetime) of the first IA_NA of `m`, if it has one.
fn leased(m: &Message) -> Option<(Ipv6Addr, u32)> {
    let Some(DhcpOption::IANA(ia)) = m.opts().get(OptionCode::IANA) else {
        return None;
    };
    match ia.opts.get(OptionCode::IAAddr) {
        Some(DhcpOption::IAAddr(a)) if a.valid_life > 0 => Some((a.addr, a.valid_life)),
        _ => None,
    }
}

fn server_id(m: &Message) -> Option<Vec<u8>> {
    match m.opts().get(OptionCode::ServerId) {
        Some(DhcpOption::ServerId(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Wait until `deadline` for an answer to `x` of a type in `want`; `None` on timeout.
fn recv_reply(
    sock: &UdpSocket,
    x: [u8; 3],
    deadline: Instant,
    want: &[MessageType],
) -> Result<Option<Message>> {
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        sock.set_read_timeout(Some(deadline - now))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e).context("receive a DHCPv6 reply"),
        };
        // dhcproto decodes server messages from vswitchd only here; a decoding
        // error or another transaction is ignored.
        let Ok(m) = Message::from_bytes(&buf[..n]) else {
            continue;
        };
        if m.xid() == x && want.contains(&m.msg_type()) {
            return Ok(Some(m));
        }
    }
}

/// Send `m` to the servers on the link; `false` when it could not leave yet (the
/// link-local address is not usable yet).
fn send(sock: &UdpSocket, m: &Message, index: u32) -> Result<bool> {
    let bytes = m.to_vec().context("encode a DHCPv6 message")?;
    Ok(sock
        .send_to(
            &bytes,
            SocketAddrV6::new(ALL_SERVERS, SERVER_PORT, 0, index),
        )
        .is_ok())
}

/// Obtain an IPv6 lease for `mac` on `ifname` inside `ns`, trying until `timeout`.
pub fn obtain(
    ns: &NetNs,
    ifname: &str,
    mac: [u8; 6],
    hostname: Option<&str>,
    timeout: Duration,
) -> Result<Lease6> {
    let (sock, index) = client_socket(ns, ifname)?;
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(500);
    let mut last = "no answer to Solicit";
    while Instant::now() < deadline {
        let try_until = (Instant::now() + wait).min(deadline);
        wait = (wait * 2).min(Duration::from_secs(4));
        let x = xid();
        let sol = request(MessageType::Solicit, x, mac, hostname, None);
        if !send(&sock, &sol, index)? {
            last = "the link-local address is not usable";
            std::thread::sleep(Duration::from_millis(200).min(try_until - Instant::now()));
            continue;
        }
        let want = [MessageType::Reply, MessageType::Advertise];
        let Some(ans) = recv_reply(&sock, x, try_until, &want)? else {
            continue;
        };
        let Some((addr, valid)) = leased(&ans) else {
            last = "no address available";
            continue;
        };
        if ans.msg_type() == MessageType::Reply {
            return Ok(Lease6 {
                ip: addr,
                valid_secs: valid,
            });
        }
        // An Advertise: request the address from that server.
        let Some(sid) = server_id(&ans) else {
            continue;
        };
        let req = request(MessageType::Request, x, mac, hostname, Some((&sid, addr)));
        let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
        send(&sock, &req, index)?;
        match recv_reply(&sock, x, until, &[MessageType::Reply])? {
            Some(r) => match leased(&r) {
                Some((ip, valid_secs)) => return Ok(Lease6 { ip, valid_secs }),
                None => last = "Reply without an address",
            },
            None => last = "no Reply to Request",
        }
    }
    bail!(
        "no DHCPv6 lease on {ifname} within {} s ({last}): is the bridge's DHCPv6 range exhausted?",
        timeout.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicit_carries_duid_rapid_commit_and_fqdn() {
        let mac = [2, 0, 0, 0, 0, 9];
        let m = request(MessageType::Solicit, [1, 2, 3], mac, Some("web"), None);
        let back = Message::from_bytes(&m.to_vec().unwrap()).unwrap();
        assert_eq!(back.msg_type(), MessageType::Solicit);
        assert_eq!(
            back.opts().get(OptionCode::ClientId),
            Some(&DhcpOption::ClientId(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 9]))
        );
        assert!(back.opts().get(OptionCode::RapidCommit).is_some());
        assert!(back.opts().get(OptionCode::IANA).is_some());
        let f = back.opts().iter().find_map(|o| match o {
            DhcpOption::Unknown(u) if u16::from(u.code()) == 39 => Some(u.data().to_vec()),
            _ => None,
        });
        assert_eq!(f, Some(b"\x01\x03web".to_vec()));
    }
}
