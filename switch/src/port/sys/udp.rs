//! VXLAN transport over kernel UDP sockets: one bound to the VTEP's port receives, with
//! UDP GRO on (a train of datagrams arrives in one read); a few more, each bound to its
//! own ephemeral port, send, so the outer source port can follow the inner flow (RFC
//! 7348 §5: the flow hash picks the socket), with UDP GSO (`UDP_SEGMENT`: a train of
//! equal-sized datagrams leaves in one write and crosses the stack as one packet).
//!
//! Read first: udp(7) (`UDP_SEGMENT`, `UDP_GRO`), Linux `net/ipv4/udp_offload.c`.

use super::{SendError, MAX_RETRIES};
use crate::dp::{Batch, BATCH_SIZE, FRAME_CAP, HEADROOM};
use crate::port::{RxResult, TxFrame};
use crate::wire::gso::{Piece, Wire};
use crate::wire::VnetHdr;
use crate::wire::{csum, gro};
use libc::c_int;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Outer IPv4 + UDP + VXLAN headers.
pub const VXLAN_OVERHEAD: usize = 20 + 8 + 8;
/// Most payload one UDP/IPv4 write can carry (GSO or not).
pub const MAX_UDP_PAYLOAD: usize = 0xffff - 20 - 8;
/// Most datagrams in one UDP GSO write (the kernel's `UDP_MAX_SEGMENTS`, 64 on older
/// kernels).
pub const MAX_SEGMENTS: usize = 64;
const UDP_SEGMENT: c_int = 103;
const UDP_GRO: c_int = 104;
/// Control buffer for one `cmsghdr` with an `int` (or `u16`) payload, 8-byte aligned.
type Cmsg = [u64; 4];

fn setsockopt_int(fd: RawFd, level: c_int, name: c_int, v: c_int) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const _ as *const libc::c_void,
            size_of::<c_int>() as u32,
        )
    })
    .map(drop)
}

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
    // Trains of datagrams in one read (kernels without it: one datagram per read).
    let _ = setsockopt_int(fd.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1);
    bind_to(&fd, local, port)?;
    Ok(fd)
}

fn bind_to(fd: &OwnedFd, local: Ipv4Addr, port: u16) -> io::Result<()> {
    let a = sockaddr(local, port);
    // SAFETY: a is a valid sockaddr_in.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &a as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_in>() as u32,
        )
    })
    .map(drop)
}

/// A UDP socket to send from, bound to `local` and an ephemeral port: DF clear (the
/// underlay may fragment, as the kernel's VXLAN does by default), a large send buffer
/// and the smallest receive buffer (nothing is meant to arrive on it).
pub fn sender(local: Ipv4Addr) -> io::Result<OwnedFd> {
    let fd = socket(libc::SOCK_DGRAM, 0)?;
    let raw = fd.as_raw_fd();
    setsockopt_int(
        raw,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )?;
    let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
    let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, 0);
    bind_to(&fd, local, 0)?;
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

/// The `UDP_GRO` segment size a received message carries in its control data (0:
/// one datagram).
fn gro_size(h: &libc::msghdr) -> usize {
    // SAFETY: the kernel filled `msg_control` up to `msg_controllen`; the CMSG macros
    // stay inside it, and the payload is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const c_int);
                return usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

/// Receive VXLAN datagrams into `batch`: each 8-byte VXLAN header is checked (I flag,
/// `vni`) and dropped; `origin(src_ip)` names the port each frame is attributed to
/// (`None`: not one of our remote VTEPs, dropped).
///
/// A read may return a train of datagrams (UDP GRO). A train of segments of one TCP
/// flow becomes one GSO super-frame ([`gro::coalesce`]); any other train is split into
/// one frame per datagram, in the free slots kept for that (half the batch), and what
/// does not fit is dropped and counted.
pub fn recv_batch(
    fd: RawFd,
    batch: &mut Batch,
    vni: u32,
    origin: impl Fn(Ipv4Addr) -> Option<u32>,
) -> io::Result<RxResult> {
    let mut res = RxResult::default();
    let bufs = batch.free_bufs();
    let free = bufs.len().min(BATCH_SIZE);
    let n = free.div_ceil(2);
    if n == 0 {
        return Ok(res);
    }
    // Messages land in the last `n` free slots; frames are laid out from slot 0 on.
    let base = free - n;
    // SAFETY: arrays of plain C structs; all-zero is valid for each.
    let mut iov: [libc::iovec; BATCH_SIZE] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
    let mut addrs: [libc::sockaddr_in; BATCH_SIZE] = unsafe { zeroed() };
    let mut ctl: [Cmsg; BATCH_SIZE] = [[0; 4]; BATCH_SIZE];
    for i in 0..n {
        // The VXLAN header lands in the headroom, the inner frame at HEADROOM.
        let area = &mut bufs[base + i][HEADROOM - 8..HEADROOM + FRAME_CAP];
        iov[i] = libc::iovec {
            iov_base: area.as_mut_ptr() as *mut libc::c_void,
            iov_len: area.len(),
        };
        let h = &mut msgs[i].msg_hdr;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
        h.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
        h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        h.msg_control = ctl[i].as_mut_ptr() as *mut libc::c_void;
        h.msg_controllen = size_of::<Cmsg>();
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
    // (offset, length, port, offloads) of the frame in slot w.
    let mut kept = [(0usize, 0usize, 0u32, VnetHdr::default()); BATCH_SIZE];
    let mut w = 0;
    let mut segs = [(0usize, 0usize); MAX_SEGMENTS];
    for i in 0..got {
        let p = base + i;
        let len = msgs[i].msg_len as usize;
        let g = match gro_size(&msgs[i].msg_hdr) {
            0 => len,
            g => g.min(len),
        };
        // An empty datagram is one (malformed) datagram too.
        let count = len.div_ceil(g.max(1)).max(1);
        let src = Ipv4Addr::from(u32::from_be(addrs[i].sin_addr.s_addr));
        let port = match origin(src) {
            Some(port) if msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC == 0 => port,
            _ => {
                res.dropped += count;
                continue;
            }
        };
        let mut m = 0;
        for k in 0..count {
            let s = HEADROOM - 8 + k * g;
            let l = g.min(len - k * g);
            let h = &bufs[p][s..s + 8];
            let this_vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
            if l < 8 + 14 || h[0] & 0x08 == 0 || this_vni != vni || m == segs.len() {
                res.dropped += 1;
                continue;
            }
            segs[m] = (s + 8, l - 8);
            m += 1;
        }
        if m == 0 {
            continue;
        }
        if m > 1 {
            if let Some((flen, vnet)) = gro::coalesce(&mut bufs[p], &segs[..m]) {
                bufs.swap(w, p);
                kept[w] = (segs[0].0, flen, port, vnet);
                w += 1;
                continue;
            }
        }
        // One frame per datagram: the first stays in the message's buffer (moved to
        // slot w), the others are copied into the slots after it, up to slot p.
        let fit = m.min(p - w + 1);
        res.dropped += m - fit;
        for (k, &(s, l)) in segs[..fit].iter().enumerate().skip(1) {
            if w + k < p {
                let (lo, hi) = bufs.split_at_mut(p);
                lo[w + k][HEADROOM..HEADROOM + l].copy_from_slice(&hi[0][s..s + l]);
            }
        }
        bufs.swap(w, p);
        if fit > 1 && w + fit - 1 == p {
            // The last one goes into the slot the message left (now free).
            let (s, l) = segs[fit - 1];
            let (lo, hi) = bufs.split_at_mut(p);
            hi[0][HEADROOM..HEADROOM + l].copy_from_slice(&lo[w][s..s + l]);
        }
        for (k, &(s, l)) in segs[..fit].iter().enumerate() {
            let off = if k == 0 { s } else { HEADROOM };
            let vnet = csum::mark_partial(&mut bufs[w + k][off..off + l]);
            kept[w + k] = (off, l, port, vnet);
        }
        w += fit;
    }
    let w = join_runs(bufs, &mut kept, w);
    for &(off, len, port, vnet) in &kept[..w] {
        batch.commit(off, len, vnet);
        batch.set_origin(batch.len() - 1, port);
    }
    res.received = w;
    Ok(res)
}

/// Software GRO across datagrams (a peer that sends one datagram per segment, a
/// train the sender's kernel had to fragment, or a 64 KB super-frame that left as two
/// UDP GSO trains): consecutive frames of one port — single segments, or super-frames
/// coalesced from one datagram train — that continue one TCP train are joined into
/// the first one's buffer
/// ([`gro::join`]). `kept[..w]` describes the frames in `bufs[..w]`; returns how many
/// are left, moved to the front.
fn join_runs(bufs: &mut [Box<[u8]>], kept: &mut [(usize, usize, u32, VnetHdr)], w: usize) -> usize {
    use crate::wire::vnet::{GSO_NONE, GSO_TCPV4};
    // One segment (0) or a super-frame `coalesce` made (its segment size).
    let mss = |v: &VnetHdr| match v.gso_type {
        GSO_NONE => Some(0),
        GSO_TCPV4 => Some(usize::from(v.gso_size)),
        _ => None,
    };
    let mut out = 0;
    let mut i = 0;
    while i < w {
        let (off, len, port, vnet) = kept[i];
        let mut taken = 0;
        let mut joined = None;
        if let Some(mss0) = mss(&vnet) {
            let mut j = i + 1;
            while j < w && j - i <= MAX_SEGMENTS && kept[j].2 == port && mss(&kept[j].3).is_some() {
                j += 1;
            }
            if j > i + 1 {
                let (lo, hi) = bufs.split_at_mut(i + 1);
                let mut next: [(&[u8], usize); MAX_SEGMENTS] = [(&[], 0); MAX_SEGMENTS];
                let cnt = j - i - 1;
                for (k, n) in next[..cnt].iter_mut().enumerate() {
                    let (o, l, _, v) = kept[i + 1 + k];
                    *n = (&hi[k][o..o + l], mss(&v).unwrap_or(0));
                }
                if let Some((total, n, h)) = gro::join(&mut lo[i][off..], len, mss0, &next[..cnt]) {
                    joined = Some((total, h));
                    taken = n;
                }
            }
        }
        bufs.swap(out, i);
        kept[out] = match joined {
            Some((total, h)) => (off, total, port, h),
            None => kept[i],
        };
        out += 1;
        i += 1 + taken;
    }
    out
}

/// Datagrams to send: `count` [`Piece`]s from `first` on, `len` bytes in all; one
/// datagram (`seg == 0`) or a train of `seg`-byte datagrams, the last possibly
/// shorter, sent in one write with UDP GSO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dgram {
    pub first: usize,
    pub count: usize,
    pub len: usize,
    pub seg: usize,
}

impl Dgram {
    /// No datagram (array filler).
    pub const NONE: Dgram = Dgram {
        first: 0,
        count: 0,
        len: 0,
        seg: 0,
    };

    /// Datagrams on the wire.
    pub fn datagrams(&self) -> usize {
        if self.seg == 0 {
            1
        } else {
            self.len.div_ceil(self.seg)
        }
    }
}

/// What [`send_dgrams`] did: datagrams sent and failed, datagrams not tried because
/// the socket's queue was full (`full`), and bytes sent; `refused`: the kernel would
/// not segment a train (it went one datagram at a time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: usize,
    pub failed: usize,
    pub full: usize,
    pub bytes: usize,
    pub refused: bool,
}

/// iovecs per `sendmmsg` call, at most.
const IOV_BATCH: usize = 1024;

/// The bytes of a piece: in `arena`, or in the `rest` of `frames[frame]`.
fn piece_bytes<'a>(p: &Piece, arena: &'a [u8], frames: &[TxFrame<'a>]) -> Option<&'a [u8]> {
    match *p {
        Piece::Arena { start, len } => arena.get(start..start + len),
        Piece::Frame { frame, start, len } => frames.get(frame)?.rest.get(start..start + len),
    }
}

/// Send `dgrams`, gathered from `pieces` (of `arena` and of the frames' payloads), to
/// `remote:dport` from the UDP socket `fd`. A train the kernel will not segment (a
/// datagram larger than the route's MTU, a kernel without UDP GSO) goes one datagram
/// at a time, fragmented by IP if need be.
/// A full socket buffer ends the send: what is left is counted in `full`.
pub fn send_dgrams(
    fd: RawFd,
    remote: Ipv4Addr,
    dport: u16,
    arena: &[u8],
    frames: &[TxFrame<'_>],
    pieces: &[Piece],
    dgrams: &[Dgram],
) -> Sent {
    let mut sys = |msgs: &mut [libc::mmsghdr]| {
        // SAFETY: every msghdr in `msgs` points at live iovecs (over arena and frame
        // bytes borrowed for this call), control data and the destination address, as
        // `send_dgrams_with` built them.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    };
    send_dgrams_with(&mut sys, remote, dport, arena, frames, pieces, dgrams)
}

/// `sendmmsg(msgs)`: sends a prefix of `msgs` and says how many, or fails on the first.
type SendMmsg<'s> = &'s mut dyn FnMut(&mut [libc::mmsghdr]) -> io::Result<usize>;

/// [`send_dgrams`] with the system call given.
fn send_dgrams_with(
    sys: SendMmsg<'_>,
    remote: Ipv4Addr,
    dport: u16,
    arena: &[u8],
    frames: &[TxFrame<'_>],
    pieces: &[Piece],
    dgrams: &[Dgram],
) -> Sent {
    let mut out = Sent::default();
    let mut dst = sockaddr(remote, dport);
    // SAFETY: arrays of plain C structs; all-zero is valid for each.
    let mut iov: [libc::iovec; IOV_BATCH] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
    let mut ctl: [Cmsg; BATCH_SIZE] = [[0; 4]; BATCH_SIZE];
    let none = Dgram::NONE;
    let mut which = [none; BATCH_SIZE];
    let mut i = 0;
    while i < dgrams.len() {
        // Fill a batch: as many datagrams as fit the message and iovec arrays.
        let (mut k, mut used) = (0, 0);
        while i < dgrams.len() && k < BATCH_SIZE {
            let d = dgrams[i];
            if d.count > IOV_BATCH {
                out.failed += d.datagrams();
                i += 1;
                continue;
            }
            if used + d.count > IOV_BATCH {
                break;
            }
            i += 1;
            let ok = d.len <= MAX_UDP_PAYLOAD
                && (d.seg == 0 || d.datagrams() <= MAX_SEGMENTS)
                && pieces.get(d.first..d.first + d.count).is_some_and(|ps| {
                    ps.iter()
                        .enumerate()
                        .all(|(j, p)| match piece_bytes(p, arena, frames) {
                            Some(b) => {
                                iov[used + j] = libc::iovec {
                                    iov_base: b.as_ptr() as *mut libc::c_void,
                                    iov_len: b.len(),
                                };
                                true
                            }
                            None => false,
                        })
                });
            if !ok {
                out.failed += d.datagrams();
                continue;
            }
            which[k] = d;
            // SAFETY: all-zero is a valid mmsghdr (a reused one may hold control data).
            msgs[k] = unsafe { zeroed() };
            let h = &mut msgs[k].msg_hdr;
            h.msg_iov = &mut iov[used];
            h.msg_iovlen = d.count;
            h.msg_name = &mut dst as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            if d.seg > 0 {
                h.msg_control = ctl[k].as_mut_ptr() as *mut libc::c_void;
                // SAFETY: CMSG_SPACE/LEN are arithmetic; CMSG_FIRSTHDR points into
                // ctl[k], which is large enough for one u16 payload; the write is
                // unaligned-safe.
                unsafe {
                    h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, d.seg as u16);
                }
            }
            used += d.count;
            k += 1;
        }
        let mut start = 0;
        let mut retries = 0;
        while start < k {
            let e = match sys(&mut msgs[start..k]) {
                Ok(n) if n > 0 => {
                    let n = n.min(k - start);
                    for d in &which[start..start + n] {
                        out.sent += d.datagrams();
                        out.bytes += d.len;
                    }
                    start += n;
                    continue;
                }
                // Nothing sent and no error: the kernel had no room.
                Ok(_) => io::Error::from_raw_os_error(libc::ENOBUFS),
                Err(e) => e,
            };
            let d = which[start];
            let refused = matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::EMSGSIZE | libc::EIO | libc::ENOPROTOOPT)
            );
            if d.seg > 0 && refused {
                out.refused = true;
                let r = send_singly(sys, remote, dport, arena, frames, pieces, d);
                out.sent += r.sent;
                out.failed += r.failed;
                out.full += r.full;
                out.bytes += r.bytes;
                start += 1;
                if r.full > 0 {
                    // The queue filled up meanwhile: the rest would meet it too.
                    out.full += which[start..k].iter().map(Dgram::datagrams).sum::<usize>()
                        + dgrams[i..].iter().map(Dgram::datagrams).sum::<usize>();
                    return out;
                }
                continue;
            }
            // What is left: the rest of this batch and the datagrams not yet batched.
            let left = || {
                which[start..k].iter().map(Dgram::datagrams).sum::<usize>()
                    + dgrams[i..].iter().map(Dgram::datagrams).sum::<usize>()
            };
            match SendError::of(&e) {
                SendError::Retry if retries < MAX_RETRIES => retries += 1,
                SendError::Frame => {
                    out.failed += d.datagrams();
                    start += 1;
                }
                // A full socket buffer: stop, as the rest would meet the same queue.
                SendError::Full => {
                    out.full += left();
                    return out;
                }
                SendError::Retry | SendError::Device => {
                    out.failed += left();
                    return out;
                }
            }
        }
    }
    out
}

/// Send train `d` one datagram at a time: its pieces cut where `d.seg` bytes add up.
fn send_singly(
    sys: SendMmsg<'_>,
    remote: Ipv4Addr,
    dport: u16,
    arena: &[u8],
    frames: &[TxFrame<'_>],
    pieces: &[Piece],
    d: Dgram,
) -> Sent {
    let none = Dgram::NONE;
    let mut singles = [none; MAX_SEGMENTS];
    let mut n = 0;
    let mut cur = Dgram {
        first: d.first,
        ..none
    };
    for j in d.first..d.first + d.count {
        let l = pieces
            .get(j)
            .and_then(|p| piece_bytes(p, arena, frames))
            .map_or(0, <[u8]>::len);
        cur.count += 1;
        cur.len += l;
        if cur.len >= d.seg || j + 1 == d.first + d.count {
            if n == MAX_SEGMENTS {
                break;
            }
            singles[n] = cur;
            n += 1;
            cur = Dgram {
                first: j + 1,
                ..none
            };
        }
    }
    let mut r = send_dgrams_with(sys, remote, dport, arena, frames, pieces, &singles[..n]);
    r.failed += d.datagrams().saturating_sub(r.sent + r.failed + r.full);
    r
}

/// Group the wire frames of one frame into [`Dgram`]s: runs of equal lengths (the last
/// of a run may be shorter) become trains, as long as a train fits one write (`gso`
/// false: no trains). The wires' pieces are consecutive.
pub fn trains(wires: &[Wire], gso: bool, out: &mut Vec<Dgram>) {
    let mut i = 0;
    while i < wires.len() {
        let g = wires[i].len;
        let cap = if gso {
            (MAX_UDP_PAYLOAD / g.max(1)).clamp(1, MAX_SEGMENTS)
        } else {
            1
        };
        let mut j = i + 1;
        while j < wires.len() && j - i < cap && wires[j - 1].len == g && wires[j].len <= g {
            j += 1;
        }
        let run = &wires[i..j];
        out.push(Dgram {
            first: wires[i].first,
            count: run.iter().map(|w| w.count).sum(),
            len: run.iter().map(|w| w.len).sum(),
            seg: if j - i > 1 { g } else { 0 },
        });
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` single datagrams of 50 bytes each, all in one arena.
    fn singles(n: usize) -> (Vec<u8>, Vec<Piece>, Vec<Dgram>) {
        let arena = vec![0u8; 50 * n];
        let pieces = (0..n)
            .map(|i| Piece::Arena {
                start: 50 * i,
                len: 50,
            })
            .collect();
        let dgrams = (0..n)
            .map(|i| Dgram {
                first: i,
                count: 1,
                len: 50,
                seg: 0,
            })
            .collect();
        (arena, pieces, dgrams)
    }

    /// The socket takes 3 datagrams, then its buffer is full: the send stops (one more
    /// call, not one per datagram left) and counts the other 97 as `full`.
    #[test]
    fn a_full_socket_stops_the_send() {
        let (arena, pieces, dgrams) = singles(100);
        let (mut calls, mut room) = (0, 3);
        let mut sys = |msgs: &mut [libc::mmsghdr]| {
            calls += 1;
            if room == 0 {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
            let n = msgs.len().min(room);
            room -= n;
            Ok(n)
        };
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let r = send_dgrams_with(&mut sys, ip, 4789, &arena, &[], &pieces, &dgrams);
        assert_eq!((r.sent, r.failed, r.full, r.bytes), (3, 0, 97, 150));
        assert_eq!(calls, 2, "sendmmsg called again after the buffer was full");
    }

    /// A datagram the kernel refuses alone is skipped; an unreachable network ends the
    /// send.
    #[test]
    fn errors_skip_one_datagram_or_end_the_send() {
        let (arena, pieces, dgrams) = singles(10);
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let mut first = true;
        let mut sys = |msgs: &mut [libc::mmsghdr]| {
            if std::mem::take(&mut first) {
                Err(io::Error::from_raw_os_error(libc::EMSGSIZE))
            } else {
                Ok(msgs.len())
            }
        };
        let r = send_dgrams_with(&mut sys, ip, 4789, &arena, &[], &pieces, &dgrams);
        assert_eq!((r.sent, r.failed, r.full), (9, 1, 0));
        let mut calls = 0;
        let mut sys = |_: &mut [libc::mmsghdr]| {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::ENETUNREACH))
        };
        let r = send_dgrams_with(&mut sys, ip, 4789, &arena, &[], &pieces, &dgrams);
        assert_eq!((r.sent, r.failed, r.full, calls), (0, 10, 0, 1));
    }

    fn wires(lens: &[usize]) -> Vec<Wire> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| Wire {
                first: 2 * i,
                count: 2,
                len,
            })
            .collect()
    }

    #[test]
    fn trains_group_equal_runs() {
        let mut out = Vec::new();
        trains(
            &wires(&[1522, 1522, 1522, 700, 60, 1522, 1522]),
            true,
            &mut out,
        );
        let d = |first, count, len, seg| Dgram {
            first,
            count,
            len,
            seg,
        };
        assert_eq!(
            out,
            vec![
                d(0, 8, 1522 * 3 + 700, 1522),
                d(8, 2, 60, 0),
                d(10, 4, 3044, 1522),
            ]
        );
        // A train never exceeds one write.
        out.clear();
        trains(&wires(&[1522; 45]), true, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|d| d.len <= MAX_UDP_PAYLOAD));
        assert_eq!(out.iter().map(Dgram::datagrams).sum::<usize>(), 45);
        out.clear();
        trains(&wires(&[1522; 3]), false, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out
            .iter()
            .all(|d| d.seg == 0 && d.len == 1522 && d.count == 2));
    }
}
