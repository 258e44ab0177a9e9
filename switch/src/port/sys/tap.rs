//! TAP devices: create (TUNSETIFF), read frames, write scatter lists.

use super::netdev::ifreq_for;
use super::{SendError, MAX_RETRIES};
use crate::dp::{Batch, FRAME_CAP, HEADROOM};
use crate::port::{RxResult, TxFrame, TxResult};
use crate::wire::{VnetHdr, VNET_HDR_LEN};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Create the TAP device `name` (no packet-info header, non-blocking). The device lives
/// as long as the returned fd: closing it removes the device.
pub fn create(name: &str) -> io::Result<OwnedFd> {
    let mut ifr = ifreq_for(name)?;
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL)
            as libc::c_short;
    // SAFETY: open(2) of a constant NUL-terminated path.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: TUNSETIFF reads a valid ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Let the kernel hand us partial checksums and TCP/UDP super-frames; we pass them
    // on with their virtio-net header.
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            offloads as libc::c_ulong,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Read frames until the batch is full or `budget` reads were made.
pub fn recv_batch(fd: RawFd, batch: &mut Batch, budget: usize) -> io::Result<RxResult> {
    let mut res = RxResult::default();
    for _ in 0..budget {
        if batch.is_full() {
            return Ok(res);
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        let buf = &mut batch.free_bufs()[0][HEADROOM..HEADROOM + FRAME_CAP];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr() as *mut libc::c_void,
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            },
        ];
        // SAFETY: both iovecs point at live, writable regions of the stated lengths.
        let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                res.drained = true;
                return Ok(res);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        if n == 0 {
            res.drained = true;
            return Ok(res);
        }
        if n < VNET_HDR_LEN {
            res.dropped += 1;
            continue;
        }
        batch.commit(HEADROOM, n - VNET_HDR_LEN, VnetHdr::decode(&hdr));
        res.received += 1;
    }
    Ok(res)
}

/// Write each frame with one writev. A full queue (`EAGAIN`/`ENOBUFS`) or a device
/// that is down (`EIO`) ends the send, the rest counted as `full` or `failed`.
pub fn send_batch(fd: RawFd, frames: &[TxFrame<'_>]) -> TxResult {
    let mut res = TxResult::default();
    let mut retries = 0;
    let mut i = 0;
    while i < frames.len() {
        let f = &frames[i];
        let tag = f.tag.unwrap_or_default();
        let hdr = f.vnet.encode();
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 4];
        let mut k = 0;
        for (p, l) in [
            (hdr.as_ptr(), VNET_HDR_LEN),
            (f.head.as_ptr(), f.head.len()),
            (tag.as_ptr(), if f.tag.is_some() { 4 } else { 0 }),
            (f.rest.as_ptr(), f.rest.len()),
        ] {
            if l > 0 {
                iov[k] = libc::iovec {
                    iov_base: p as *mut libc::c_void,
                    iov_len: l,
                };
                k += 1;
            }
        }
        // SAFETY: iov[..k] point at buffers that live across the call.
        let rc = unsafe { libc::writev(fd, iov.as_ptr(), k as libc::c_int) };
        if rc >= 0 {
            res.sent += 1;
            res.bytes += f.len();
            i += 1;
            continue;
        }
        let e = io::Error::last_os_error();
        // TAP writes fail with EIO while the device is down: the device's fault.
        let err = match e.raw_os_error() {
            Some(libc::EIO) => SendError::Device,
            _ => SendError::of(&e),
        };
        match err {
            SendError::Retry if retries < MAX_RETRIES => retries += 1,
            SendError::Frame => {
                res.failed += 1;
                i += 1;
            }
            SendError::Full => {
                res.full += frames.len() - i;
                return res;
            }
            SendError::Retry | SendError::Device => {
                res.failed += frames.len() - i;
                return res;
            }
        }
    }
    res
}
