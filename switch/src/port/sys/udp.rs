//! Kernel UDP sockets for VXLAN (the syscalls only; the tunnel's protocol work —
//! decapsulation, coalescing, segmentation — is in `port::vxlan` and `wire::gro`/`gso`):
//! one bound to the VTEP's port receives, with UDP GRO on (a train of datagrams arrives
//! in one read); a few more, each bound to its own ephemeral port, send, so the outer
//! source port can follow the inner flow (RFC 7348 §5: the flow hash picks the socket),
//! with UDP GSO (`UDP_SEGMENT`: a train of equal-sized datagrams leaves in one write
//! and crosses the stack as one packet).
//!
//! Read first: udp(7) (`UDP_SEGMENT`, `UDP_GRO`), Linux `net/ipv4/udp_offload.c`.

use super::{SendError, MAX_RETRIES};
use crate::dp::BATCH_SIZE;
use crate::port::TxFrame;
use crate::wire::gso::{Piece, Wire};
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

/// One message read from a UDP socket: a datagram, or a train of equal-sized
/// datagrams the kernel joined (UDP GRO).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes read (the whole train).
    pub len: usize,
    /// Size of each datagram of the train (the last may be shorter); `len` for one.
    pub seg: usize,
    /// The sender's address.
    pub src: Ipv4Addr,
    /// The message did not fit its buffer.
    pub truncated: bool,
}

impl Received {
    pub const NONE: Received = Received {
        len: 0,
        seg: 0,
        src: Ipv4Addr::UNSPECIFIED,
        truncated: false,
    };
}

/// Read up to `bufs.len()` messages from `fd` without blocking, message `i` into
/// `bufs[i][at..at + cap]`, described in `out[i]`. Returns how many were read, `0` when
/// none was waiting.
pub fn recv_msgs(
    fd: RawFd,
    bufs: &mut [Box<[u8]>],
    at: usize,
    cap: usize,
    out: &mut [Received],
) -> io::Result<usize> {
    let n = bufs.len().min(out.len()).min(BATCH_SIZE);
    // SAFETY: arrays of plain C structs; all-zero is valid for each.
    let mut iov: [libc::iovec; BATCH_SIZE] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
    let mut addrs: [libc::sockaddr_in; BATCH_SIZE] = unsafe { zeroed() };
    let mut ctl: [Cmsg; BATCH_SIZE] = [[0; 4]; BATCH_SIZE];
    for i in 0..n {
        let Some(area) = bufs[i].get_mut(at..at + cap) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
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
            return Ok(0);
        }
        return Err(e);
    }
    let got = got as usize;
    for i in 0..got {
        let len = msgs[i].msg_len as usize;
        out[i] = Received {
            len,
            seg: match gro_size(&msgs[i].msg_hdr) {
                0 => len,
                g => g.min(len),
            },
            src: Ipv4Addr::from(u32::from_be(addrs[i].sin_addr.s_addr)),
            truncated: msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(got)
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
        unsafe { super::sendmmsg(fd, msgs) }
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
