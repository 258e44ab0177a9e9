//! A small synchronous route-netlink client: exactly the link, address and route
//! operations pipework and vswitch-docker need, on `netlink-packet-route` messages over a blocking
//! `netlink-sys` socket (no async runtime: a runtime's worker threads would not share
//! the namespace the socket was opened in).
//!
//! Every request carries `NLM_F_ACK`, so each ends with the kernel's acknowledgement
//! (or error) or, for dumps, `NLMSG_DONE`. A socket opened with [`Rtnl::open_in`]
//! acts in that namespace for its whole life.
//!
//! Read first: rtnetlink(7), netlink(7); `ip link add ... type veth peer ... netns`.

use crate::netns::NetNs;
use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Largest datagram read at once (a dump part is at most a few pages).
const RECV_BUF: usize = 256 * 1024;
/// The kernel answers at once; this only bounds a wedged socket.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// What pipework wants to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// The lower layer is up (for a veth: its peer is up too).
    pub lower_up: bool,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gw: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// The errno a netlink request failed with, if that is what `e` is (e.g.
/// `ENODEV`: no such link, `EEXIST`: already there).
pub fn errno(e: &anyhow::Error) -> Option<i32> {
    e.chain()
        .find_map(|c| c.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

/// A route netlink socket, bound to the namespace it was opened in.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Format a MAC as lower-case colon hex.
pub fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse lower- or upper-case colon hex.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Rtnl {
    /// A socket in the calling thread's namespace.
    pub fn open() -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE).context("open a route netlink socket")?;
        sock.bind_auto().context("bind the route netlink socket")?;
        sock.connect(&SocketAddr::new(0, 0))
            .context("connect the route netlink socket")?;
        nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0),
        )
        .context("set the netlink receive timeout")?;
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// A socket acting in namespace `ns`.
    pub fn open_in(ns: &NetNs) -> Result<Rtnl> {
        ns.run(Rtnl::open)
    }

    /// Send one request and collect the messages of its answer.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        hdr.sequence_number = seq;
        let mut m = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        self.sock.send(&out, 0)?;
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0)?;
            if n > self.buf.len() {
                return Err(io::Error::other("netlink reply truncated"));
            }
            let mut off = 0;
            while off + 16 <= self.buf.len() {
                let len = u32::from_ne_bytes([
                    self.buf[off],
                    self.buf[off + 1],
                    self.buf[off + 2],
                    self.buf[off + 3],
                ]) as usize;
                if len < 16 || off + len > self.buf.len() {
                    return Err(io::Error::other("malformed netlink reply"));
                }
                let part = &self.buf[off..off + len];
                off += (len + 3) & !3;
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(part)
                    .map_err(|e| io::Error::other(format!("bad netlink reply: {e}")))?;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => {
                        // A single answer to a GET is followed by the
                        // acknowledgement we asked for: keep reading.
                        replies.push(inner);
                    }
                    _ => {}
                }
            }
        }
    }

    /// The link called `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("look up link {name}")),
        }
    }

    /// Create a veth pair: `name` here, `peer` directly in the namespace `peer_ns`
    /// (so it never appears anywhere else), both with `mtu`, the peer with `peer_mac`.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: &NetNs,
        mtu: u32,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::Mtu(mtu));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.file().as_raw_fd()));
        if let Some(mac) = peer_mac {
            p.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("create veth pair {name} / {peer}"))?;
        Ok(())
    }

    /// Bring link `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0)
            .with_context(|| format!("set link {index} up"))?;
        Ok(())
    }

    /// Delete link `index` (for a veth: both ends).
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(m), 0)
            .with_context(|| format!("delete link {index}"))?;
        Ok(())
    }

    /// Add `ip/prefix` (with its broadcast address) to link `index`.
    pub fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        if prefix < 31 {
            let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            let brd = Ipv4Addr::from(u32::from(ip) | host_bits);
            m.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .with_context(|| format!("add address {ip}/{prefix}"))?;
        Ok(())
    }

    /// Add the IPv6 address `ip/prefix` to link `index`, without duplicate address
    /// detection (the address is usable at once; pipework checked it is not in use).
    pub fn add_addr6(&mut self, index: u32, ip: std::net::Ipv6Addr, prefix: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.header.flags = netlink_packet_route::address::AddressHeaderFlags::Nodad;
        m.attributes.push(AddressAttribute::Address(IpAddr::V6(ip)));
        m.attributes.push(AddressAttribute::Flags(
            netlink_packet_route::address::AddressFlags::Nodad,
        ));
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .with_context(|| format!("add address {ip}/{prefix}"))?;
        Ok(())
    }

    /// IPv4 addresses (with prefix length) on link `index`.
    pub fn addrs(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let mut q = AddressMessage::default();
        q.header.family = AddressFamily::Inet;
        let replies = self
            .request(RouteNetlinkMessage::GetAddress(q), NLM_F_DUMP)
            .context("list addresses")?;
        let mut out = Vec::new();
        for r in replies {
            if let RouteNetlinkMessage::NewAddress(a) = r {
                if a.header.index != index {
                    continue;
                }
                for at in &a.attributes {
                    if let AddressAttribute::Local(IpAddr::V4(ip)) = at {
                        out.push((*ip, a.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    }

    /// `ip route replace default via gw` (or `ip -6 …`) in the main table.
    pub fn replace_default_route(&mut self, gw: IpAddr) -> Result<()> {
        let (family, via) = match gw {
            IpAddr::V4(a) => (AddressFamily::Inet, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, RouteAddress::Inet6(a)),
        };
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Gateway(via));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .with_context(|| format!("set the default route via {gw}"))?;
        Ok(())
    }

    /// `ip route add DST/PREFIX [via GW] [dev OIF]` in the main table (IPv4). A route
    /// without a gateway is on-link (scope link). Fails with `EEXIST` (see
    /// [`errno`]) when the main table has that destination already.
    pub fn add_route4(
        &mut self,
        dst: Ipv4Addr,
        prefix: u8,
        gw: Option<Ipv4Addr>,
        oif: Option<u32>,
    ) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        if prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        }
        if let Some(g) = gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(g)));
        }
        if let Some(i) = oif {
            m.attributes.push(RouteAttribute::Oif(i));
        }
        let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("add route {dst}/{prefix}{via}"))?;
        Ok(())
    }

    /// The IPv4 routes of the main table.
    pub fn routes4(&mut self) -> Result<Vec<Route4>> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let replies = self
            .request(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)
            .context("list routes")?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewRoute(m) = r else {
                continue;
            };
            let mut table = u32::from(m.header.table);
            let mut route = Route4 {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: m.header.destination_prefix_length,
                gw: None,
                oif: None,
            };
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => route.dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gw = Some(*g),
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if table == u32::from(RouteHeader::RT_TABLE_MAIN) {
                out.push(route);
            }
        }
        Ok(out)
    }

    /// Wait (bounded) until link `name` satisfies `ok`; `Ok(false)` on timeout.
    pub fn wait_link(
        &mut self,
        name: &str,
        timeout: Duration,
        mut ok: impl FnMut(&mut Rtnl, &Link) -> Result<bool>,
    ) -> Result<bool> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.link(name)? {
                if ok(self, &l)? {
                    return Ok(true);
                }
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn link_of(l: &LinkMessage) -> Link {
    let mut out = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        up: l.header.flags.contains(LinkFlags::Up),
        lower_up: l.header.flags.contains(LinkFlags::LowerUp),
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::Mtu(m) => out.mtu = Some(*m),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(a);
                out.mac = Some(m);
            }
            _ => {}
        }
    }
    out
}

/// Fail unless `name` is a valid Linux interface name.
pub fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        bail!("bad interface name {name:?}: 1-15 characters, no '/', ':' or spaces");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("02:AB:cd:00:11:ff").unwrap();
        assert_eq!(mac_string(&m), "02:ab:cd:00:11:ff");
        assert!(parse_mac("02:ab:cd:00:11").is_none());
        assert!(parse_mac("02:ab:cd:00:11:ff:00").is_none());
        assert!(parse_mac("02:ab:cd:00:11:f").is_none());
        assert!(parse_mac("zz:ab:cd:00:11:ff").is_none());
    }

    #[test]
    fn interface_names() {
        assert!(check_ifname("eth1").is_ok());
        assert!(check_ifname("abcdefghijklmno").is_ok());
        assert!(check_ifname("abcdefghijklmnop").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("").is_err());
    }
}
