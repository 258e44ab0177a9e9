//! AF_PACKET sockets bound to one netdev: batched receive (recvmmsg) with the 802.1Q
//! tag restored from `PACKET_AUXDATA`, batched send (sendmmsg) from scatter lists.

use crate::dp::{Batch, BATCH_SIZE, FRAME_CAP, HEADROOM};
use crate::port::{RxResult, TxFrame, TxResult};
use crate::wire::{field, VnetHdr, ETHERTYPE_VLAN, VLAN_HLEN, VNET_HDR_LEN};
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// Room for one `tpacket_auxdata` control message.
const CMSG_BUF: usize = 64;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &val as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Open a non-blocking AF_PACKET socket that receives every frame of `ifindex`
/// (promiscuous, without our own transmissions) and transmits on it.
pub fn open(ifindex: u32) -> io::Result<OwnedFd> {
    // Protocol 0 receives nothing until bind: no frames of other devices sneak in.
    // SAFETY: plain socket(2).
    let raw = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
    // Frames come and go with a virtio-net header: GSO super-frames and partial
    // checksums cross the switch untouched (no segmentation, no checksum work).
    setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    // Kernels before 4.20 lack it; the receive path also filters PACKET_OUTGOING.
    let _ = setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
    // Transmit straight to the driver: a switch port queues in its own batches, and a
    // qdisc in between only adds a lock and a copy of the decision (as OVS does).
    let _ = setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
    // Bigger socket buffers absorb bursts between worker wake-ups.
    let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
    let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
    // SAFETY: all-zero sockaddr_ll is valid; we fill the fields bind needs.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL_BE;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the given size.
    check(unsafe {
        libc::bind(
            raw,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    // SAFETY: all-zero packet_mreq is valid.
    let mut mreq: libc::packet_mreq = unsafe { zeroed() };
    mreq.mr_ifindex = ifindex as i32;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    // SAFETY: mreq is a valid packet_mreq of the given size.
    check(unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq as *const libc::packet_mreq as *const libc::c_void,
            size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// Frames dropped by the kernel since the last call (`PACKET_STATISTICS`, which
/// resets on read).
pub fn take_drops(fd: RawFd) -> io::Result<u64> {
    // SAFETY: all-zero tpacket_stats is valid; getsockopt fills at most `len` bytes.
    let mut st: libc::tpacket_stats = unsafe { zeroed() };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut st as *mut libc::tpacket_stats as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(u64::from(st.tp_drops))
}

/// Receive up to the free capacity of `batch` in one recvmmsg.
pub fn recv_batch(fd: RawFd, batch: &mut Batch) -> io::Result<RxResult> {
    let mut res = RxResult::default();
    let bufs = batch.free_bufs();
    let n = bufs.len().min(BATCH_SIZE);
    if n == 0 {
        return Ok(res);
    }
    // SAFETY: arrays of plain C structs; all-zero is valid for each.
    let mut iov: [[libc::iovec; 2]; BATCH_SIZE] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
    let mut vnets = [[0u8; VNET_HDR_LEN]; BATCH_SIZE];
    let mut addrs: [libc::sockaddr_ll; BATCH_SIZE] = unsafe { zeroed() };
    let mut ctrl = [[0u64; CMSG_BUF / 8]; BATCH_SIZE];
    for i in 0..n {
        let area = &mut bufs[i][HEADROOM..HEADROOM + FRAME_CAP];
        iov[i] = [
            libc::iovec {
                iov_base: vnets[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: area.as_mut_ptr() as *mut libc::c_void,
                iov_len: area.len(),
            },
        ];
        let h = &mut msgs[i].msg_hdr;
        h.msg_iov = iov[i].as_mut_ptr();
        h.msg_iovlen = 2;
        h.msg_name = &mut addrs[i] as *mut libc::sockaddr_ll as *mut libc::c_void;
        h.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        h.msg_control = ctrl[i].as_mut_ptr() as *mut libc::c_void;
        h.msg_controllen = CMSG_BUF;
    }
    // SAFETY: every msghdr points at live buffers sized as declared, which outlive the call.
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
    // Kept frames are compacted to the front of the free slots by swapping buffer
    // boxes (pointer swaps, no copies), then committed in order.
    let mut kept = [(0usize, 0usize, VnetHdr::default()); BATCH_SIZE];
    let mut w = 0;
    for i in 0..got {
        let total = msgs[i].msg_len as usize;
        let h = &msgs[i].msg_hdr;
        if h.msg_flags & libc::MSG_TRUNC != 0
            || total < VNET_HDR_LEN
            || total - VNET_HDR_LEN > FRAME_CAP
            || addrs[i].sll_pkttype == libc::PACKET_OUTGOING
        {
            res.dropped += 1;
            continue;
        }
        let len = total - VNET_HDR_LEN;
        let mut vnet = VnetHdr::decode(&vnets[i]);
        let tag = vlan_from_cmsgs(h);
        if i != w {
            bufs.swap(w, i);
        }
        let buf = &mut bufs[w];
        let mut off = HEADROOM;
        let mut flen = len;
        if let Some((tpid, tci)) = tag {
            if len >= field::ETHERTYPE.start {
                // Put the tag the kernel stripped back in front of the EtherType.
                buf.copy_within(
                    HEADROOM..HEADROOM + field::ETHERTYPE.start,
                    HEADROOM - VLAN_HLEN,
                );
                off = HEADROOM - VLAN_HLEN;
                let t = tpid.to_be_bytes();
                let c = tci.to_be_bytes();
                buf[off + field::ETHERTYPE.start..off + field::INNER_ETHERTYPE.start]
                    .copy_from_slice(&[t[0], t[1], c[0], c[1]]);
                flen += VLAN_HLEN;
                vnet = vnet.shifted(VLAN_HLEN as i32);
            }
        }
        kept[w] = (off, flen, vnet);
        w += 1;
    }
    for &(off, len, vnet) in &kept[..w] {
        batch.commit(off, len, vnet);
    }
    res.received = w;
    Ok(res)
}

/// The (TPID, TCI) of a tag the kernel moved into `PACKET_AUXDATA`, if any.
fn vlan_from_cmsgs(h: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: the CMSG_* macros walk the control buffer recvmmsg filled, bounded by
    // msg_controllen; we read a tpacket_auxdata only from a cmsg of that type and size.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let hdr = &*c;
            if hdr.cmsg_level == libc::SOL_PACKET
                && hdr.cmsg_type == libc::PACKET_AUXDATA
                && hdr.cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::tpacket_auxdata>() as u32) as usize
            {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::tpacket_auxdata);
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 || aux.tp_vlan_tci != 0 {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        ETHERTYPE_VLAN
                    };
                    return Some((tpid, aux.tp_vlan_tci));
                }
                return None;
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Send `frames` with as few sendmmsg calls as the kernel allows.
pub fn send_batch(fd: RawFd, frames: &[TxFrame<'_>]) -> TxResult {
    let mut res = TxResult::default();
    for chunk in frames.chunks(BATCH_SIZE) {
        // SAFETY: arrays of plain C structs; all-zero is valid for each.
        let mut iov: [[libc::iovec; 4]; BATCH_SIZE] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH_SIZE] = unsafe { zeroed() };
        let tags: [[u8; 4]; BATCH_SIZE] =
            std::array::from_fn(|i| chunk.get(i).and_then(|f| f.tag).unwrap_or_default());
        let vnets: [[u8; VNET_HDR_LEN]; BATCH_SIZE] =
            std::array::from_fn(|i| chunk.get(i).map(|f| f.vnet.encode()).unwrap_or_default());
        for (i, f) in chunk.iter().enumerate() {
            let mut k = 0;
            let mut add = |p: *const u8, l: usize| {
                if l > 0 {
                    iov[i][k] = libc::iovec {
                        iov_base: p as *mut libc::c_void,
                        iov_len: l,
                    };
                    k += 1;
                }
            };
            add(vnets[i].as_ptr(), VNET_HDR_LEN);
            add(f.head.as_ptr(), f.head.len());
            if f.tag.is_some() {
                add(tags[i].as_ptr(), 4);
            }
            add(f.rest.as_ptr(), f.rest.len());
            msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = k;
        }
        let mut start = 0;
        while start < chunk.len() {
            // SAFETY: msgs[start..] point at iovecs and buffers that live across the call.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[start..].as_mut_ptr(),
                    (chunk.len() - start) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc <= 0 {
                // The first remaining frame failed (full queue, too big, link down):
                // count it and carry on with the rest.
                res.failed += 1;
                start += 1;
                continue;
            }
            for f in &chunk[start..start + rc as usize] {
                res.bytes += f.len();
            }
            // (sendmmsg counts the virtio header in msg_len; we report frame bytes.)
            res.sent += rc as usize;
            start += rc as usize;
        }
    }
    res
}
