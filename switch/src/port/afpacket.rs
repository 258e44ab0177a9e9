//! `system` ports: an existing netdev (a veth end, a physical NIC in a lab namespace)
//! attached through an AF_PACKET socket (OVS `netdev-linux`).
//!
//! The socket is shared: the port sends on it from any worker, and its receive side
//! ([`AfPacketRx`], which owns the mmap ring) reads it in the one worker that holds it.

use super::sys::{afpacket, netdev};
use super::{Port, PortRx, RxResult, RxSlot, TxFrame, TxResult};
use crate::dp::Batch;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct AfPacketPort {
    name: String,
    ifindex: u32,
    fd: Arc<OwnedFd>,
    rx: RxSlot<AfPacketRx>,
    kernel_drops: AtomicU64,
}

/// The receive side of a `system` port: the socket's receive ring (or recvmmsg when
/// the kernel granted none). The socket stays open while either half lives.
struct AfPacketRx {
    /// Declared before `fd`: the ring is unmapped before this half's socket reference
    /// goes.
    ring: Option<afpacket::RxRing>,
    fd: Arc<OwnedFd>,
}

impl AfPacketPort {
    /// Attach the existing netdev `name`: bring it up, open a promiscuous socket on it.
    pub fn open(name: &str) -> io::Result<AfPacketPort> {
        let ifindex = netdev::ifindex(name)?;
        netdev::set_up(name)?;
        let (fd, ring) = afpacket::open(ifindex)?;
        let fd = Arc::new(fd);
        Ok(AfPacketPort {
            name: name.to_string(),
            ifindex,
            rx: RxSlot::new(AfPacketRx {
                ring,
                fd: fd.clone(),
            }),
            fd,
            kernel_drops: AtomicU64::new(0),
        })
    }
}

impl PortRx for AfPacketRx {
    fn recv(&mut self, batch: &mut Batch) -> io::Result<RxResult> {
        let fd = self.fd.as_raw_fd();
        match &mut self.ring {
            Some(r) => r.recv(fd, batch),
            None => afpacket::recv_batch(fd, batch),
        }
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
    fn take_rx(&self) -> Option<Box<dyn PortRx>> {
        self.rx.take()
    }
    fn send(&self, frames: &[TxFrame<'_>]) -> TxResult {
        afpacket::send_batch(self.fd.as_raw_fd(), frames)
    }
    fn kernel_rx_drops(&self) -> u64 {
        let new = afpacket::take_drops(self.fd.as_raw_fd()).unwrap_or(0);
        self.kernel_drops.fetch_add(new, Ordering::Relaxed) + new
    }
    fn packet_socket(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}
