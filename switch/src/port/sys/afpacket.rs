//! AF_PACKET sockets bound to one netdev: receive from a TPACKET_V2 ring the kernel
//! fills (recvmmsg for frames too big for a ring slot, and as the fallback when no ring
//! can be set up), with the 802.1Q tag restored; batched send (sendmmsg) from scatter
//! lists.
//!
//! # Why a ring, and why V2
//! With recvmmsg the kernel only queues each frame's skb on the socket, and the worker
//! pays for the copy, the skb free and a message header per frame. With a receive ring
//! the copy into shared memory happens in the softirq that delivered the frame (the
//! sender's CPU) and the worker reads frames with no syscall at all. TPACKET_V3 hands
//! frames over per block (retired when full or after a timeout, milliseconds), which
//! adds latency at low rates; V2 hands over each frame at once. Ring slots are 2 KB:
//! a GSO super-frame does not fit, so the socket gets `PACKET_COPY_THRESH` and the
//! kernel also queues such a frame whole on the socket, marking its slot
//! `TP_STATUS_COPY`; the worker then reads such frames from the socket, in ring order
//! (a run of consecutive ones in one recvmmsg).

use super::{SendError, MAX_RETRIES};
use crate::dp::{Batch, BATCH_SIZE, FRAME_CAP, HEADROOM};
use crate::port::{RxResult, TxFrame, TxResult};
use crate::wire::{field, VnetHdr, ETHERTYPE_VLAN, VLAN_HLEN, VNET_HDR_LEN};
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

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
/// (promiscuous, without our own transmissions) and transmits on it, with a receive
/// ring when the kernel grants one.
pub fn open(ifindex: u32) -> io::Result<(OwnedFd, Option<RxRing>)> {
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
    // The ring must exist before bind: a frame queued on the socket before it would
    // later be taken for a TP_STATUS_COPY frame.
    let ring = match RxRing::setup(raw) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!(error = %e, "no AF_PACKET receive ring; using recvmmsg");
            None
        }
    };
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
    Ok((fd, ring))
}

/// Bytes per ring slot: header, address, virtio-net header and a 1500-byte-MTU frame
/// with room to spare; bigger frames take the `TP_STATUS_COPY` path.
const RING_FRAME: usize = 2048;
/// Slots per ring (2 MB per port).
const RING_FRAMES: usize = 1024;
/// Ring block size (the kernel allocates blocks; frames never straddle one).
const RING_BLOCK: usize = 64 << 10;

/// A TPACKET_V2 receive ring mapped from one AF_PACKET socket.
///
/// # Safety contract
/// One reader at a time, by construction: `RxRing` is neither `Clone` nor `Sync`, and
/// `recv` takes `&mut self`, so only the thread that owns the ring (the worker holding
/// the port's receive side, which moves between workers by value through a channel:
/// the channel orders the cursor and the slots read before the move) can read it.
/// Slot ownership between us and the kernel follows `tp_status`: the kernel writes a
/// slot only while it is `TP_STATUS_KERNEL`; we read it only after seeing
/// `TP_STATUS_USER` (acquire) and give it back by storing `TP_STATUS_KERNEL` (release).
pub struct RxRing {
    base: *mut u8,
    len: usize,
    /// Next slot to read; only the owner touches it.
    cursor: usize,
}

// SAFETY: the mapping is process-wide memory and the raw pointer is only dereferenced
// by `&mut self` methods, so moving the ring to another thread moves the sole right to
// read it. `RxRing` is deliberately not `Sync` (no shared-reference access at all).
unsafe impl Send for RxRing {}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `setup`, unmapped once.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

impl RxRing {
    fn setup(fd: RawFd) -> io::Result<RxRing> {
        setsockopt_int(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as libc::c_int,
        )?;
        setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)?;
        let req = libc::tpacket_req {
            tp_block_size: RING_BLOCK as u32,
            tp_block_nr: (RING_FRAMES * RING_FRAME / RING_BLOCK) as u32,
            tp_frame_size: RING_FRAME as u32,
            tp_frame_nr: RING_FRAMES as u32,
        };
        // SAFETY: passes a pointer to a live tpacket_req and its size.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                &req as *const libc::tpacket_req as *const libc::c_void,
                size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        })?;
        let len = RING_FRAMES * RING_FRAME;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // A ring we cannot read would swallow every frame: free it (a request with
            // no blocks), so the recvmmsg fallback receives them.
            let none = libc::tpacket_req {
                tp_block_size: 0,
                tp_block_nr: 0,
                tp_frame_size: 0,
                tp_frame_nr: 0,
            };
            // SAFETY: passes a pointer to a live tpacket_req and its size.
            let freed = check(unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_RX_RING,
                    &none as *const libc::tpacket_req as *const libc::c_void,
                    size_of::<libc::tpacket_req>() as libc::socklen_t,
                )
            });
            return Err(match freed {
                Ok(_) => e,
                Err(f) => io::Error::new(f.kind(), format!("mmap: {e}; freeing the ring: {f}")),
            });
        }
        Ok(RxRing {
            base: base as *mut u8,
            len,
            cursor: 0,
        })
    }

    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: slot < RING_FRAMES, so the header lies inside the mapping; tp_status
        // is the first, 4-byte aligned field of a 16-byte aligned slot.
        unsafe { &*(self.base.add(slot * RING_FRAME) as *const AtomicU32) }
    }

    /// Receive ready frames into the free slots of `batch` (copying them out of the
    /// ring); frames marked `TP_STATUS_COPY` are read whole from the socket.
    pub fn recv(&mut self, fd: RawFd, batch: &mut Batch) -> io::Result<RxResult> {
        let mut res = RxResult::default();
        let mut slot = self.cursor;
        loop {
            if batch.is_full() {
                break;
            }
            let st = self.status(slot);
            let status = st.load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                res.drained = true;
                break;
            }
            if status & libc::TP_STATUS_COPY != 0 {
                // Whole frames wait on the socket, each queued before its slot was
                // marked: take the run of consecutive COPY slots (as far as the batch
                // has room) and read their frames in one recvmmsg. A frame that cannot
                // be read is counted as dropped.
                let room = BATCH_SIZE - batch.len();
                let mut run = 0;
                while run < room {
                    let st = self.status(slot);
                    let v = st.load(Ordering::Acquire);
                    if v & libc::TP_STATUS_USER == 0 || v & libc::TP_STATUS_COPY == 0 {
                        break;
                    }
                    st.store(libc::TP_STATUS_KERNEL, Ordering::Release);
                    slot = (slot + 1) % RING_FRAMES;
                    run += 1;
                }
                match recv_msgs(fd, batch, run) {
                    Ok(r) => {
                        res.received += r.received;
                        res.dropped += run - r.received;
                    }
                    Err(_) => res.dropped += run,
                }
                continue;
            }
            // SAFETY: the slot is ours (TP_STATUS_USER seen with acquire) until we
            // store TP_STATUS_KERNEL below.
            let frame =
                unsafe { std::slice::from_raw_parts(self.base.add(slot * RING_FRAME), RING_FRAME) };
            if push_slot(frame, batch) {
                res.received += 1;
            } else {
                res.dropped += 1;
            }
            st.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            slot = (slot + 1) % RING_FRAMES;
        }
        self.cursor = slot;
        Ok(res)
    }
}

/// Copy the frame in ring slot `slot` (its whole bytes) into `batch`, restoring a VLAN
/// tag the kernel stripped. False (dropped) when the slot is malformed, truncated or
/// one of our own transmissions.
fn push_slot(slot: &[u8], batch: &mut Batch) -> bool {
    let u16_at = |o: usize| u16::from_ne_bytes([slot[o], slot[o + 1]]);
    let u32_at = |o: usize| u32::from_ne_bytes([slot[o], slot[o + 1], slot[o + 2], slot[o + 3]]);
    // struct tpacket2_hdr: status, len, snaplen (u32), mac, net (u16), sec, nsec (u32),
    // vlan_tci, vlan_tpid (u16); then, 16-byte aligned, struct sockaddr_ll.
    let (status, len, snaplen) = (u32_at(0), u32_at(4) as usize, u32_at(8) as usize);
    let mac = usize::from(u16_at(12));
    let (tci, tpid) = (u16_at(24), u16_at(26));
    let sll = (size_of::<libc::tpacket2_hdr>() + 15) & !15;
    let pkttype = slot.get(sll + 10).copied().unwrap_or(0);
    if len != snaplen
        || mac < VNET_HDR_LEN
        || mac + snaplen > slot.len()
        || snaplen > FRAME_CAP
        || pkttype == libc::PACKET_OUTGOING
    {
        return false;
    }
    let Some(buf) = batch.free_bufs().first_mut() else {
        return false;
    };
    let mut vh = [0u8; VNET_HDR_LEN];
    vh.copy_from_slice(&slot[mac - VNET_HDR_LEN..mac]);
    let mut vnet = VnetHdr::decode(&vh);
    let data = &slot[mac..mac + snaplen];
    let tagged =
        (status & libc::TP_STATUS_VLAN_VALID != 0 || tci != 0) && snaplen >= field::ETHERTYPE.start;
    if tagged {
        let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
            tpid
        } else {
            ETHERTYPE_VLAN
        };
        let off = HEADROOM - VLAN_HLEN;
        let e = field::ETHERTYPE.start;
        buf[off..off + e].copy_from_slice(&data[..e]);
        buf[off + e..off + e + 2].copy_from_slice(&tpid.to_be_bytes());
        buf[off + e + 2..off + e + 4].copy_from_slice(&tci.to_be_bytes());
        buf[off + e + 4..off + VLAN_HLEN + snaplen].copy_from_slice(&data[e..]);
        vnet = vnet.shifted(VLAN_HLEN as i32);
        batch.commit(off, snaplen + VLAN_HLEN, vnet);
    } else {
        buf[HEADROOM..HEADROOM + snaplen].copy_from_slice(data);
        batch.commit(HEADROOM, snaplen, vnet);
    }
    true
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
    recv_msgs(fd, batch, BATCH_SIZE)
}

/// Receive up to `max` frames (and the free capacity of `batch`) in one recvmmsg.
fn recv_msgs(fd: RawFd, batch: &mut Batch, max: usize) -> io::Result<RxResult> {
    let mut res = RxResult::default();
    let bufs = batch.free_bufs();
    let n = bufs.len().min(BATCH_SIZE).min(max);
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

/// Send `frames` with as few sendmmsg calls as the kernel allows. A full queue ends the
/// send: the frames left are counted in `full`, as OVS does, rather than offered one
/// sendmmsg each to a queue that has no room (and sent out of order if it drains in
/// between).
pub fn send_batch(fd: RawFd, frames: &[TxFrame<'_>]) -> TxResult {
    send_batch_with(frames, |msgs| {
        // SAFETY: every msghdr in `msgs` points at iovecs and buffers that live across
        // the call (built by `send_batch_with` from `frames`).
        unsafe { super::sendmmsg(fd, msgs) }
    })
}

/// [`send_batch`] with the system call given: `sendmmsg(msgs)` sends a prefix of
/// `msgs` and says how many, or fails on the first.
fn send_batch_with(
    frames: &[TxFrame<'_>],
    mut sendmmsg: impl FnMut(&mut [libc::mmsghdr]) -> io::Result<usize>,
) -> TxResult {
    let mut res = TxResult::default();
    for (c, chunk) in frames.chunks(BATCH_SIZE).enumerate() {
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
        let mut retries = 0;
        while start < chunk.len() {
            let left = frames.len() - (c * BATCH_SIZE + start);
            let err = match sendmmsg(&mut msgs[start..chunk.len()]) {
                // Nothing sent and no error: the kernel had no room.
                Ok(0) => SendError::Full,
                Ok(n) => {
                    let n = n.min(chunk.len() - start);
                    // (sendmmsg counts the virtio header in msg_len; we report frame bytes.)
                    res.bytes += chunk[start..start + n]
                        .iter()
                        .map(TxFrame::len)
                        .sum::<usize>();
                    res.sent += n;
                    start += n;
                    continue;
                }
                Err(e) => SendError::of(&e),
            };
            match err {
                SendError::Retry if retries < MAX_RETRIES => retries += 1,
                SendError::Frame => {
                    res.failed += 1;
                    start += 1;
                }
                SendError::Full => {
                    res.full += left;
                    return res;
                }
                SendError::Retry | SendError::Device => {
                    res.failed += left;
                    return res;
                }
            }
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::VnetHdr;

    fn tx_frames(data: &[Vec<u8>]) -> Vec<TxFrame<'_>> {
        data.iter()
            .map(|d| TxFrame {
                vnet: VnetHdr::default(),
                head: &d[..12],
                tag: None,
                rest: &d[12..],
            })
            .collect()
    }

    /// The queue takes 3 frames, then is full: the send stops there (one more call,
    /// not one per remaining frame) and counts the other 97 frames as `full`.
    #[test]
    fn a_full_queue_stops_the_send() {
        let data = vec![vec![0u8; 60]; 100];
        let frames = tx_frames(&data);
        let mut calls = 0;
        let mut room = 3;
        let r = send_batch_with(&frames, |msgs| {
            calls += 1;
            if room == 0 {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
            let n = msgs.len().min(room);
            room -= n;
            Ok(n)
        });
        assert_eq!((r.sent, r.failed, r.full, r.bytes), (3, 0, 97, 180));
        assert_eq!(calls, 2, "sendmmsg called again after the queue was full");
    }

    /// ENOBUFS (a device queue full under PACKET_QDISC_BYPASS) is a full queue too; a
    /// frame too big is skipped alone; a device that is down ends the send.
    #[test]
    fn errors_end_the_send_or_skip_one_frame() {
        let data = vec![vec![0u8; 60]; 10];
        let frames = tx_frames(&data);
        let r = send_batch_with(&frames, |_| {
            Err(io::Error::from_raw_os_error(libc::ENOBUFS))
        });
        assert_eq!((r.sent, r.failed, r.full), (0, 0, 10));
        let mut first = true;
        let r = send_batch_with(&frames, |msgs| {
            if std::mem::take(&mut first) {
                Err(io::Error::from_raw_os_error(libc::EMSGSIZE))
            } else {
                Ok(msgs.len())
            }
        });
        assert_eq!((r.sent, r.failed, r.full), (9, 1, 0));
        let mut calls = 0;
        let r = send_batch_with(&frames, |_| {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::ENETDOWN))
        });
        assert_eq!((r.sent, r.failed, r.full, calls), (0, 10, 0, 1));
        let mut intr = 2;
        let r = send_batch_with(&frames, |msgs| {
            if intr > 0 {
                intr -= 1;
                Err(io::Error::from_raw_os_error(libc::EINTR))
            } else {
                Ok(msgs.len())
            }
        });
        assert_eq!((r.sent, r.failed, r.full), (10, 0, 0));
    }

    /// The real system call on a socket whose peer's queue is full (a Unix datagram
    /// pair nobody reads): every frame that does not fit is counted as `full`.
    #[test]
    fn a_real_full_socket_counts_the_rest_as_full() {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills two descriptors we then own.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
        // SAFETY: fresh descriptors from socketpair, owned from here on.
        let (a, _b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let data = vec![vec![0u8; 60]; 2000];
        let frames = tx_frames(&data);
        let r = send_batch(a.as_raw_fd(), &frames);
        assert!(r.sent > 0 && r.sent < 2000, "{r:?}");
        assert_eq!(r.failed, 0, "{r:?}");
        assert_eq!(r.sent + r.full, 2000, "{r:?}");
    }

    const SLL: usize = (size_of::<libc::tpacket2_hdr>() + 15) & !15;
    const MAC: usize = 96;

    /// A ring slot as the kernel fills it: header, address, virtio header, frame.
    fn slot(
        frame: &[u8],
        len: usize,
        status: u32,
        tci: u16,
        pkttype: u8,
        vnet: VnetHdr,
    ) -> Vec<u8> {
        let mut s = vec![0u8; RING_FRAME];
        s[0..4].copy_from_slice(&(status | libc::TP_STATUS_USER).to_ne_bytes());
        s[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
        s[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        s[12..14].copy_from_slice(&(MAC as u16).to_ne_bytes());
        s[24..26].copy_from_slice(&tci.to_ne_bytes());
        s[26..28].copy_from_slice(&0x88a8u16.to_ne_bytes());
        s[SLL + 10] = pkttype;
        s[MAC - VNET_HDR_LEN..MAC].copy_from_slice(&vnet.encode());
        s[MAC..MAC + frame.len()].copy_from_slice(frame);
        s
    }

    fn frame() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f
    }

    #[test]
    fn plain_frame_is_copied_with_its_offloads() {
        let f = frame();
        let v = VnetHdr {
            flags: 1,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        let mut b = Batch::new();
        assert!(push_slot(&slot(&f, f.len(), 0, 0, 0, v), &mut b));
        assert_eq!(b.len(), 1);
        assert_eq!(b.frame(0), &f[..]);
        assert_eq!(b.vnet(0), v);
    }

    #[test]
    fn stripped_tag_is_put_back_with_its_tpid() {
        let f = frame();
        let mut b = Batch::new();
        let st = libc::TP_STATUS_VLAN_VALID | libc::TP_STATUS_VLAN_TPID_VALID;
        let v = VnetHdr {
            flags: 1,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        assert!(push_slot(&slot(&f, f.len(), st, 0x2064, 0, v), &mut b));
        let got = b.frame(0);
        assert_eq!(got.len(), f.len() + VLAN_HLEN);
        assert_eq!(&got[..12], &f[..12]);
        assert_eq!(&got[12..16], &[0x88, 0xa8, 0x20, 0x64]);
        assert_eq!(&got[16..], &f[12..]);
        assert_eq!(b.vnet(0).csum_start, 38);
    }

    #[test]
    fn truncated_outgoing_or_bogus_slots_are_dropped() {
        let f = frame();
        let mut b = Batch::new();
        // Cut to the slot (no TP_STATUS_COPY): the rest of the frame is lost.
        assert!(!push_slot(
            &slot(&f, 3000, 0, 0, 0, VnetHdr::default()),
            &mut b
        ));
        // Our own transmission looped back.
        let out = libc::PACKET_OUTGOING;
        assert!(!push_slot(
            &slot(&f, f.len(), 0, 0, out, VnetHdr::default()),
            &mut b
        ));
        // A MAC offset that points outside the slot.
        let mut s = slot(&f, f.len(), 0, 0, 0, VnetHdr::default());
        s[12..14].copy_from_slice(&(RING_FRAME as u16 - 10).to_ne_bytes());
        assert!(!push_slot(&s, &mut b));
        s[12..14].copy_from_slice(&2u16.to_ne_bytes());
        assert!(!push_slot(&s, &mut b));
        assert!(b.is_empty());
    }
}
