//! TAP devices: create (TUNSETIFF), read frames, write scatter lists.

use super::netdev::ifreq_for;
use crate::dp::{Batch, FRAME_CAP, HEADROOM};
use crate::port::{RxResult, TxFrame, TxResult};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Create the TAP device `name` (no packet-info header, non-blocking). The device lives
/// as long as the returned fd: closing it removes the device.
pub fn create(name: &str) -> io::Result<OwnedFd> {
    let mut ifr = ifreq_for(name)?;
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as libc::c_short;
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
    Ok(fd)
}

/// Read frames until the batch is full or `budget` reads were made.
pub fn recv_batch(fd: RawFd, batch: &mut Batch, budget: usize) -> io::Result<RxResult> {
    let mut res = RxResult::default();
    for _ in 0..budget {
        if batch.is_full() {
            return Ok(res);
        }
        let buf = &mut batch.free_bufs()[0][HEADROOM..HEADROOM + FRAME_CAP];
        // SAFETY: buf is a live, writable region of the stated length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
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
        if n == 0 {
            res.drained = true;
            return Ok(res);
        }
        batch.commit(HEADROOM, n as usize);
        res.received += 1;
    }
    Ok(res)
}

/// Write each frame with one writev.
pub fn send_batch(fd: RawFd, frames: &[TxFrame<'_>]) -> TxResult {
    let mut res = TxResult::default();
    for f in frames {
        let tag = f.tag.unwrap_or_default();
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 3];
        let mut k = 0;
        for (p, l) in [
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
        if rc < 0 {
            res.failed += 1;
        } else {
            res.sent += 1;
            res.bytes += rc as usize;
        }
    }
    res
}
