//! `system` ports: an existing netdev (a veth end, a physical NIC in a lab namespace)
//! attached through an AF_PACKET socket (OVS `netdev-linux`).

use super::sys::{afpacket, netdev};
use super::{Port, RxResult, TxFrame, TxResult};
use crate::dp::Batch;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct AfPacketPort {
    name: String,
    ifindex: u32,
    /// Declared before `fd`: the ring is unmapped before the socket closes.
    ring: Option<afpacket::RxRing>,
    fd: OwnedFd,
    kernel_drops: AtomicU64,
}

impl AfPacketPort {
    /// Attach the existing netdev `name`: bring it up, open a promiscuous socket on it.
    pub fn open(name: &str) -> io::Result<AfPacketPort> {
        let ifindex = netdev::ifindex(name)?;
        netdev::set_up(name)?;
        let (fd, ring) = afpacket::open(ifindex)?;
        Ok(AfPacketPort {
            name: name.to_string(),
            ifindex,
            ring,
            fd,
            kernel_drops: AtomicU64::new(0),
        })
    }
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
    fn ifindex(&self) -> Option<u32> {
        Some(self.ifindex)
    }
    fn recv(&self, batch: &mut Batch) -> io::Result<RxResult> {
        match &self.ring {
            Some(r) => r.recv(self.fd.as_raw_fd(), batch),
            None => afpacket::recv_batch(self.fd.as_raw_fd(), batch),
        }
    }
    fn send(&self, frames: &[TxFrame<'_>]) -> TxResult {
        afpacket::send_batch(self.fd.as_raw_fd(), frames)
    }
    fn kernel_rx_drops(&self) -> u64 {
        let new = afpacket::take_drops(self.fd.as_raw_fd()).unwrap_or(0);
        self.kernel_drops.fetch_add(new, Ordering::Relaxed) + new
    }
}
