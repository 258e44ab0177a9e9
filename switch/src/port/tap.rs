//! `tap` and `internal` ports: TAP devices vswitchd creates and removes.
//!
//! A `tap` port is handed to a guest (moved into a container's namespace, or given to
//! a VM); an `internal` port stays in vswitchd's namespace so the host's own kernel has
//! a leg on the bridge (docker0, OVS internal ports). Both are the same device; the
//! difference is only who uses the kernel side. Closing the fd removes the device,
//! wherever it was moved; the port and its receive side ([`TapRx`]) share the fd, so
//! the device goes when both are gone (the worker drops its half before it
//! acknowledges the port's removal).

use super::sys::{netdev, tap};
use super::{Port, PortRx, RxResult, RxSlot, TxFrame, TxResult};
use crate::dp::Batch;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Reads per wake-up, so one busy TAP cannot starve the worker's other ports.
const READ_BUDGET: usize = 64;

pub struct TapPort {
    name: String,
    ifindex: u32,
    /// An `internal` port (the host's leg), not a `tap` handed to a guest.
    internal: bool,
    fd: Arc<OwnedFd>,
    rx: RxSlot<TapRx>,
}

/// The receive side of a TAP port.
pub struct TapRx {
    fd: Arc<OwnedFd>,
}

impl PortRx for TapRx {
    fn recv(&mut self, batch: &mut Batch) -> io::Result<RxResult> {
        tap::recv_batch(self.fd.as_raw_fd(), batch, READ_BUDGET)
    }
}

impl TapPort {
    /// Create TAP `name` (which must not exist yet) and bring it up; `internal`: the
    /// port is the host's own leg (its netdev stays in vswitchd's namespace).
    pub fn create(name: &str, mtu: Option<u32>, internal: bool) -> io::Result<TapPort> {
        if netdev::ifindex(name).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let fd = tap::create(name)?;
        if let Some(m) = mtu {
            netdev::set_mtu(name, m)?;
        }
        netdev::set_up(name)?;
        let ifindex = netdev::ifindex(name)?;
        let fd = Arc::new(fd);
        Ok(TapPort {
            name: name.to_string(),
            ifindex,
            internal,
            rx: RxSlot::new(TapRx { fd: fd.clone() }),
            fd,
        })
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
    fn ifindex(&self) -> Option<u32> {
        Some(self.ifindex)
    }
    fn take_rx(&self) -> Option<Box<dyn PortRx>> {
        self.rx.take()
    }
    fn send(&self, frames: &[TxFrame<'_>]) -> TxResult {
        tap::send_batch(self.fd.as_raw_fd(), frames)
    }
    fn tap_ifindex(&self) -> Option<u32> {
        // The ifindex it was created with: if the user moves the netdev to another
        // namespace later, the fast path notices (`FastPath::check_taps`).
        self.internal.then_some(self.ifindex)
    }
}
