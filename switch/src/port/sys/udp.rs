//! VXLAN transport: a kernel UDP socket bound to the VTEP's port for receiving, and a
//! raw IPv4 socket for sending, because every frame gets its own UDP source port (a
//! hash of the inner flow, RFC 7348 §5) and a UDP socket could only use its own.

use crate::dp::{Batch, BATCH_SIZE, FRAME_CAP, HEADROOM};
use crate::port::RxResult;
use crate::wire::{gso, VnetHdr};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Outer IPv4 + UDP + VXLAN headers.
pub const VXLAN_OVERHEAD: usize = 20 + 8 + 8;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero sockaddr_in is valid.
    let mut a: libc::sockaddr_in = unsafe { zeroed() };
    a.sin_family = libc::AF_INET as libc::sa_family_t;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from(ip).to_be();
    a
}

fn socket(ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let raw = check(unsafe {
        libc::socket(
            libc::AF_INET,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto,
        )
    })?;
    // SAFETY: raw is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The UDP socket a VTEP receives on.
pub fn bind(local: Ipv4Addr, port: u16) -> io::Result<OwnedFd> {
    let fd = socket(libc::SOCK_DGRAM, 0)?;
    let one: libc::c_int = 1;
    let big: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with pointers to live c_ints.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        );
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &big as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        );
    }
    let a = sockaddr(local, port);
    // SAFETY: a is a valid sockaddr_in.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &a as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_in>() as u32,
        )
    })?;
    Ok(fd)
}

/// A raw socket that sends complete IPv4 packets (IPPROTO_RAW implies IP_HDRINCL and
/// receives nothing).
pub fn raw_sender() -> io::Result<OwnedFd> {
    let fd = socket(libc::SOCK_RAW, libc::IPPROTO_RAW)?;
    let big: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with a pointer to a live c_int.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &big as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        );
    }
    Ok(fd)
}

/// The local address the kernel would use to reach `remote` (a connected UDP
/// socket's name; nothing is sent).
pub fn source_for(remote: Ipv4Addr) -> io::Result<Ipv4Addr> {
    let fd = socket(libc::SOCK_DGRAM, 0)?;
    let a = sockaddr(remote, 4789);
    // SAFETY: a is a valid sockaddr_in.
    check(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &a as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_in>() as u32,
        )
    })?;
    // SAFETY: getsockname fills at most `len` bytes of a live sockaddr_in.
    let mut out: libc::sockaddr_in = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as u32;
    check(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            &mut out as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    })?;
    Ok(Ipv4Addr::from(u32::from_be(out.sin_addr.s_addr)))
}

/// Receive VXLAN datagrams into `batch`: the 8-byte VXLAN header is checked (I flag,
/// `vni`) and dropped; `origin(src_ip)` names the port each frame is attributed to
/// (`None`: not one of our remote VTEPs, dropped).
pub fn recv_batch(
    fd: RawFd,
    batch: &mut Batch,
    vni: u32,
    origin: impl Fn(Ipv4Addr) -> Option<u32>,
) -> io::Result<RxResult> {
    let mut res = RxResult::default();
    let bufs = batch.free_bufs();
    let n = bufs.len().min(BATCH_SIZE);
    if n == 0 {
        return Ok(res);
    }
    // SAFETY: arrays of plain C structs; all-zero is valid for each.
    let mut iov: [[libc::iovec; 2]; BATCH_SIZE] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
    let mut addrs: [libc::sockaddr_in; BATCH_SIZE] = unsafe { zeroed() };
    let mut hdrs = [[0u8; 8]; BATCH_SIZE];
    for i in 0..n {
        let area = &mut bufs[i][HEADROOM..HEADROOM + FRAME_CAP];
        iov[i] = [
            libc::iovec {
                iov_base: hdrs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: 8,
            },
            libc::iovec {
                iov_base: area.as_mut_ptr() as *mut libc::c_void,
                iov_len: area.len(),
            },
        ];
        let h = &mut msgs[i].msg_hdr;
        h.msg_iov = iov[i].as_mut_ptr();
        h.msg_iovlen = 2;
        h.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
        h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
    }
    // SAFETY: every msghdr points at live buffers sized as declared.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            n as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            res.drained = true;
            return Ok(res);
        }
        return Err(e);
    }
    let got = got as usize;
    res.drained = got < n;
    let mut kept = [(0usize, 0u32, VnetHdr::default()); BATCH_SIZE];
    let mut w = 0;
    for i in 0..got {
        let len = msgs[i].msg_len as usize;
        let h = hdrs[i];
        let this_vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
        let src = Ipv4Addr::from(u32::from_be(addrs[i].sin_addr.s_addr));
        let port = origin(src);
        if len < 8 + 14
            || h[0] & 0x08 == 0
            || this_vni != vni
            || msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
            || port.is_none()
        {
            res.dropped += 1;
            continue;
        }
        if i != w {
            bufs.swap(w, i);
        }
        let vnet = gso::mark_partial(&mut bufs[w][HEADROOM..HEADROOM + len - 8]);
        kept[w] = (len - 8, port.unwrap_or_default(), vnet);
        w += 1;
    }
    for &(len, port, vnet) in &kept[..w] {
        batch.commit(HEADROOM, len, vnet);
        batch.set_origin(batch.len() - 1, port);
    }
    res.received = w;
    Ok(res)
}

/// Send already-prepared inner frames (no offloads pending) to `remote`, each in an
/// outer IPv4/UDP/VXLAN header whose UDP source port hashes the inner flow.
pub fn send_batch(
    fd: RawFd,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    dport: u16,
    vni: u32,
    frames: &[Vec<u8>],
) -> (usize, usize) {
    let (mut sent, mut failed) = (0, 0);
    for chunk in frames.chunks(BATCH_SIZE) {
        let mut outer = [[0u8; VXLAN_OVERHEAD]; BATCH_SIZE];
        // SAFETY: arrays of plain C structs; all-zero is valid for each.
        let mut iov: [[libc::iovec; 2]; BATCH_SIZE] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
        let mut dst = sockaddr(remote, 0);
        for (i, f) in chunk.iter().enumerate() {
            let o = &mut outer[i];
            let total = (VXLAN_OVERHEAD + f.len()).min(0xffff) as u16;
            // IPv4: DF clear (the underlay may fragment, as the kernel's VXLAN does by
            // default), TTL 64, id 0 (the kernel fills it), checksum filled by the kernel.
            o[0] = 0x45;
            o[2..4].copy_from_slice(&total.to_be_bytes());
            o[8] = 64;
            o[9] = 17;
            o[12..16].copy_from_slice(&local.octets());
            o[16..20].copy_from_slice(&remote.octets());
            let sport = 49152 + (flow_hash(f) % 16384) as u16;
            o[20..22].copy_from_slice(&sport.to_be_bytes());
            o[22..24].copy_from_slice(&dport.to_be_bytes());
            o[24..26].copy_from_slice(&(total - 20).to_be_bytes());
            // UDP checksum 0: allowed for VXLAN over IPv4 (RFC 7348 §5).
            o[28] = 0x08;
            o[32..35].copy_from_slice(&vni.to_be_bytes()[1..]);
            iov[i] = [
                libc::iovec {
                    iov_base: o.as_mut_ptr() as *mut libc::c_void,
                    iov_len: VXLAN_OVERHEAD,
                },
                libc::iovec {
                    iov_base: f.as_ptr() as *mut libc::c_void,
                    iov_len: f.len(),
                },
            ];
            let h = &mut msgs[i].msg_hdr;
            h.msg_iov = iov[i].as_mut_ptr();
            h.msg_iovlen = 2;
            h.msg_name = &mut dst as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
        let mut start = 0;
        while start < chunk.len() {
            // SAFETY: msgs[start..] point at live headers, frames and address.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[start..].as_mut_ptr(),
                    (chunk.len() - start) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc <= 0 {
                failed += 1;
                start += 1;
            } else {
                sent += rc as usize;
                start += rc as usize;
            }
        }
    }
    (sent, failed)
}

/// FNV-1a over the inner MACs and the first bytes after them (addresses, ports).
fn flow_hash(f: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in f.iter().take(14 + 24) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}
