//! The only `unsafe` in the crate: raw AF_PACKET and TAP syscalls and netdev ioctls.
//!
//! Read first: packet(7), tuntap.txt in the kernel docs, netdevice(7).
//! Every function here checks its arguments (name lengths, buffer sizes) before a
//! syscall, and turns errno into `io::Error`.

#![allow(unsafe_code)]

pub mod afpacket;
pub mod netdev;
pub mod signal;
pub mod tap;
pub mod udp;

use std::io;

/// `sendmmsg(2)` without blocking: how many of `msgs` the kernel took.
///
/// # Safety
/// Every `msghdr` in `msgs` must point at iovecs, buffers, control data and addresses
/// that are valid for the duration of the call.
unsafe fn sendmmsg(fd: std::os::fd::RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: the caller vouches for the pointers inside `msgs`; the array itself is a
    // live slice of `msgs.len()` entries.
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
}

/// What a failed send of one message means for the rest of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Interrupted: try again.
    Retry,
    /// The queue (device or socket buffer) is full: the frames after it would meet the
    /// same queue, so stop and count them all as `full`.
    Full,
    /// This frame is at fault (too big, malformed): count it, go on with the next.
    Frame,
    /// The device is at fault (down, gone): stop and count the rest as failed.
    Device,
}

impl SendError {
    pub fn of(e: &io::Error) -> SendError {
        match e.raw_os_error() {
            Some(libc::EINTR) => SendError::Retry,
            Some(libc::EAGAIN | libc::ENOBUFS) => SendError::Full,
            Some(libc::EMSGSIZE | libc::EINVAL) => SendError::Frame,
            _ => SendError::Device,
        }
    }
}

/// Retries of an interrupted call before it counts as a device error.
pub const MAX_RETRIES: usize = 3;
