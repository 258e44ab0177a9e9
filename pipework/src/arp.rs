//! A gratuitous ARP (RFC 5227 §3 "ARP announcement") from the guest's new interface,
//! so the switch's router and the other guests learn the address → MAC binding at
//! once (it matters when an address moves to a new MAC on re-plumbing).

use crate::netns::NetNs;
use anyhow::{Context, Result};
use nix::sys::socket::{
    sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike,
};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;

/// The ARP payload of an announcement of `ip` at `mac`.
fn announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    p[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // Target hardware address stays zero; target protocol address is our own.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// Broadcast an announcement of `ip` on link `ifindex` of namespace `ns`.
pub fn announce(ns: &NetNs, ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> Result<()> {
    // Protocol 0: a send-only packet socket that receives nothing.
    let fd = ns.run(|| {
        socket(
            AddressFamily::Packet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context("open a packet socket")
    })?;
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
    };
    // SAFETY: `sll` is a fully initialised sockaddr_ll that lives across the call, and
    // the length passed is exactly its size, which `from_raw` checks.
    #[allow(unsafe_code)]
    let addr = unsafe {
        LinkAddr::from_raw(
            (&sll as *const libc::sockaddr_ll).cast(),
            Some(std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t),
        )
    }
    .context("build a link-layer address")?;
    sendto(
        fd.as_raw_fd(),
        &announcement(mac, ip),
        &addr,
        MsgFlags::empty(),
    )
    .context("send a gratuitous ARP")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_layout() {
        let p = announcement([2, 1, 2, 3, 4, 5], Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(&p[0..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 1, 2, 3, 4, 5]);
        assert_eq!(&p[14..18], &[10, 0, 0, 5]);
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &[10, 0, 0, 5]);
    }
}
