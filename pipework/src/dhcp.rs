//! A one-shot DHCPv4 client (RFC 2131) run by pipework itself from inside the guest's
//! namespace, so nothing needs to exist in the container: DISCOVER → OFFER →
//! REQUEST → ACK on a UDP socket bound to the guest interface (`SO_BINDTODEVICE`,
//! `SO_BROADCAST`, port 68), retried with backoff until a deadline, on the `dhcproto`
//! codec. The hostname (option 12) is sent so the server registers it in DNS.
//! [`release`] sends DHCPRELEASE for `--remove`.
//!
//! The socket is created on a thread inside the guest's namespace and used from the
//! main thread: a socket keeps the namespace it was born in.

use crate::netns::NetNs;
use anyhow::{bail, Context, Result};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: Option<u32>,
}

/// A UDP socket on port 68 bound to `ifname`, created inside `ns`.
fn client_socket(ns: &NetNs, ifname: &str) -> Result<UdpSocket> {
    let ifname = ifname.to_string();
    ns.run(move || {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Udp,
        )
        .context("open a UDP socket")?;
        // Another DHCP client of the guest may hold port 68 on another interface.
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
        setsockopt(&fd, sockopt::Broadcast, &true).context("SO_BROADCAST")?;
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(&ifname))
            .with_context(|| format!("bind the DHCP socket to {ifname}"))?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)),
        )
        .context("bind UDP port 68")?;
        Ok(UdpSocket::from(fd))
    })
}

fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    // A netmask is ones then zeros.
    (m.leading_ones() + m.trailing_zeros() == 32).then_some(m.leading_ones() as u8)
}

fn base_request(mac: [u8; 6], xid: u32, ty: MessageType, hostname: Option<&str>) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_chaddr(&mac)
        // Ask for broadcast answers: the interface has no address to unicast to yet.
        .set_flags(Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(ty));
    let mut id = vec![1u8];
    id.extend_from_slice(&mac);
    o.insert(DhcpOption::ClientIdentifier(id));
    if let Some(h) = hostname {
        o.insert(DhcpOption::Hostname(h.to_string()));
    }
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::InterfaceMtu,
    ]));
    o.insert(DhcpOption::MaxMessageSize(1500));
    m
}

fn xid() -> u32 {
    // Unpredictable enough for a transaction id: time and PID mixed.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let x = t ^ (u64::from(std::process::id()) << 32);
    (x ^ (x >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
}

/// Wait until `deadline` for a reply to `xid` from the server; `None` on timeout.
fn recv_reply(
    sock: &UdpSocket,
    xid: u32,
    mac: [u8; 6],
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
            Err(e) => return Err(e).context("receive a DHCP reply"),
        };
        // Anything that is not a well-formed answer to us is ignored.
        if !vswitch_proto::dhcp_options_sane(&buf[..n]) {
            continue;
        }
        let Ok(m) = Message::from_bytes(&buf[..n]) else {
            continue;
        };
        if m.opcode() != Opcode::BootReply
            || m.xid() != xid
            // Check hlen first: dhcproto's chaddr() panics when hlen > 16.
            || m.hlen() != 6
            || m.chaddr().get(..6) != Some(&mac[..])
        {
            continue;
        }
        match m.opts().msg_type() {
            Some(t) if want.contains(&t) => return Ok(Some(m)),
            _ => continue,
        }
    }
}

fn send(sock: &UdpSocket, m: &Message, to: Ipv4Addr) -> Result<()> {
    let bytes = m.to_vec().context("encode a DHCP message")?;
    sock.send_to(&bytes, SocketAddrV4::new(to, SERVER_PORT))
        .with_context(|| format!("send a DHCP message to {to}"))?;
    Ok(())
}

/// Obtain a lease for `mac` on `ifname` inside `ns`, trying until `timeout` passes.
pub fn obtain(
    ns: &NetNs,
    ifname: &str,
    mac: [u8; 6],
    hostname: Option<&str>,
    timeout: Duration,
) -> Result<Lease> {
    let sock = client_socket(ns, ifname)?;
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(500);
    let mut last = "no DHCPOFFER";
    while Instant::now() < deadline {
        let try_until = (Instant::now() + wait).min(deadline);
        wait = (wait * 2).min(Duration::from_secs(4));
        let x = xid();
        let discover = base_request(mac, x, MessageType::Discover, hostname);
        send(&sock, &discover, Ipv4Addr::BROADCAST)?;
        let Some(offer) = recv_reply(&sock, x, mac, try_until, &[MessageType::Offer])? else {
            continue;
        };
        let offered = offer.yiaddr();
        let server = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => offer.siaddr(),
        };
        let mut req = base_request(mac, x, MessageType::Request, hostname);
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offered));
        req.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        // The REQUEST gets its own (short) window, then we start over.
        let ack_until = (Instant::now() + Duration::from_secs(2)).min(deadline);
        send(&sock, &req, Ipv4Addr::BROADCAST)?;
        let Some(ack) = recv_reply(
            &sock,
            x,
            mac,
            ack_until,
            &[MessageType::Ack, MessageType::Nak],
        )?
        else {
            last = "no DHCPACK";
            continue;
        };
        if ack.opts().msg_type() == Some(MessageType::Nak) {
            last = "DHCPNAK";
            continue;
        }
        let ip = ack.yiaddr();
        if ip.is_unspecified() {
            last = "DHCPACK without an address";
            continue;
        }
        let prefix = match ack.opts().get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(m)) => prefix_of(*m).unwrap_or(24),
            _ => 24,
        };
        let router = match ack.opts().get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => r.first().copied(),
            _ => None,
        };
        let lease_secs = match ack.opts().get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
            _ => None,
        };
        return Ok(Lease {
            ip,
            prefix,
            router,
            server,
            lease_secs,
        });
    }
    bail!(
        "no DHCP lease on {ifname} within {} s ({last}): is the bridge's DHCP pool exhausted?",
        timeout.as_secs()
    )
}

/// Send DHCPRELEASE for `ip` leased to `mac` by `server`, from `ifname` inside `ns`:
/// unicast to the server as RFC 2131 says, broadcast if the guest has no route to it.
pub fn release(
    ns: &NetNs,
    ifname: &str,
    mac: [u8; 6],
    ip: Ipv4Addr,
    server: Ipv4Addr,
) -> Result<()> {
    let sock = client_socket(ns, ifname)?;
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(xid())
        .set_chaddr(&mac)
        .set_ciaddr(ip);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Release));
    o.insert(DhcpOption::ServerIdentifier(server));
    let mut id = vec![1u8];
    id.extend_from_slice(&mac);
    o.insert(DhcpOption::ClientIdentifier(id));
    if send(&sock, &m, server).is_err() {
        send(&sock, &m, Ipv4Addr::BROADCAST)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_to_prefix() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 0, 0)), Some(16));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    #[test]
    fn discover_carries_hostname_and_broadcast_flag() {
        let mac = [2, 0, 0, 0, 0, 9];
        let m = base_request(mac, 7, MessageType::Discover, Some("web"));
        let back = Message::from_bytes(&m.to_vec().unwrap()).unwrap();
        assert_eq!(back.xid(), 7);
        assert!(back.flags().broadcast());
        assert_eq!(&back.chaddr()[..6], &mac);
        assert_eq!(back.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            back.opts().get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("web".into()))
        );
    }
}
